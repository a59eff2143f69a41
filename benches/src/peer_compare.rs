//! Shoal's peer transport (`shoal_node::cluster::peer`) against raw glommio TCP in the same run, on
//! two executors (sender and receiver) of one process over 127.0.0.1.
//!
//! - **Stream**: the sender queues `frames` sealed frames with `Peers::send` (retrying on a
//!   full queue) and the receiver's `serve` verifies and counts them. The peer writes the same
//!   frames, copied back to back into 256 KiB buffers, with `write_all` on one connection, and
//!   its receiver only counts bytes (the most this runtime moves over loopback), or also
//!   decodes and verifies the frames (what any framed transport must do).
//! - **Round trip**: one frame out and one back, `rounds` times, over two one-way peer
//!   connections (each node's `Peers` to the other's `serve`). The peer bounces the frame over
//!   one raw connection.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use shoal_cluster::frame::{self, FrameBuf};
use shoal_node::cluster::peer::{self, Inbound, PeerAddr, PeerError, PeerOptions, Peers};

/// Bytes the raw sender copies into one write, as `Peers` batches queued frames.
const RAW_BATCH_BYTES: usize = peer::WRITE_BATCH_BYTES;
/// Bytes a receiver reads at a time.
const READ_BYTES: usize = 64 << 10;
/// Pause of the streaming sender when its queue is full: a fraction of the ~300 us the
/// writer needs to drain a full queue of small frames.
const FULL_PAUSE: Duration = Duration::from_micros(50);
/// Longest any run may take before it is abandoned as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer transport: {0}")]
    Peer(#[from] PeerError),
    #[error("executor: {0}")]
    Executor(String),
    #[error("the run did not finish within {RUN_TIMEOUT:?}")]
    Timeout,
}

#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub frames: u64,
    pub payload: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamResult {
    pub elapsed: Duration,
    pub frames_per_sec: f64,
    pub mib_per_sec: f64,
}

impl StreamResult {
    fn new(run: Stream, elapsed: Duration) -> StreamResult {
        let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let bytes = run.frames as f64 * (frame::HEADER_LEN + run.payload) as f64;
        StreamResult {
            elapsed,
            frames_per_sec: run.frames as f64 / secs,
            mib_per_sec: bytes / secs / (1 << 20) as f64,
        }
    }
}

fn sealed(id: u64, payload: usize) -> FrameBuf {
    let mut buf = frame::start(payload);
    buf.extend_from_slice(&vec![0x5a; payload]);
    // Payloads here are far below the frame limit.
    let _ = frame::seal(&mut buf, id);
    buf
}

/// Runs `receiver` on CPU 1 (it sends its address once it listens) and `sender(addr)` on
/// CPU 0, and returns what each returned.
fn two_executors<R, S, TR, TS>(receiver: R, sender: S) -> Result<(TR, TS), CompareError>
where
    R: AsyncFnOnce(mpsc::Sender<SocketAddr>) -> Result<TR, CompareError> + Send + 'static,
    S: AsyncFnOnce(SocketAddr) -> Result<TS, CompareError> + Send + 'static,
    TR: Send + 'static,
    TS: Send + 'static,
{
    let (addr_tx, addr_rx) = mpsc::channel();
    let exec = |cpu| LocalExecutorBuilder::new(Placement::Fixed(cpu)).io_memory(1 << 20);
    let recv = exec(1)
        .spawn(move || async move { with_timeout(receiver(addr_tx)).await })
        .map_err(|e| CompareError::Executor(e.to_string()))?;
    let addr = addr_rx
        .recv_timeout(RUN_TIMEOUT)
        .map_err(|_| CompareError::Timeout)?;
    let send = exec(0)
        .spawn(move || async move { with_timeout(sender(addr)).await })
        .map_err(|e| CompareError::Executor(e.to_string()))?;
    let sent = send
        .join()
        .map_err(|e| CompareError::Executor(e.to_string()))??;
    let received = recv
        .join()
        .map_err(|e| CompareError::Executor(e.to_string()))??;
    Ok((received, sent))
}

/// A port free a moment ago on 127.0.0.1 (bind and release: racy, fine for a benchmark).
fn free_addr() -> Result<SocketAddr, CompareError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn with_timeout<T>(
    run: impl Future<Output = Result<T, CompareError>>,
) -> Result<T, CompareError> {
    run.or(async {
        glommio::timer::sleep(RUN_TIMEOUT).await;
        Err(CompareError::Timeout)
    })
    .await
}

/// Resolves once `count` reaches `target`.
async fn reached(count: &Cell<u64>, changed: &Event, target: u64) {
    loop {
        if count.get() >= target {
            return;
        }
        let l = changed.listen();
        if count.get() >= target {
            return;
        }
        l.await;
    }
}

/// Streams frames through `Peers` and `serve`.
pub fn stream_peers(run: Stream) -> Result<StreamResult, CompareError> {
    let (ended, started) = two_executors(
        async move |addr_tx: mpsc::Sender<SocketAddr>| {
            let listener = peer::listen(free_addr()?)?;
            let _ = addr_tx.send(listener.local_addr().map_err(std::io::Error::from)?);
            let count = Rc::new(Cell::new(0u64));
            let changed = Rc::new(Event::new());
            let (c, e) = (Rc::clone(&count), Rc::clone(&changed));
            let target = run.frames;
            let on_frame: Rc<dyn Fn(Inbound)> = Rc::new(move |_| {
                c.set(c.get() + 1);
                if c.get() == target {
                    e.notify(1);
                }
            });
            let done = async {
                reached(&count, &changed, target).await;
            };
            peer::serve(listener, 1 << 20, on_frame, done).await;
            Ok(Instant::now())
        },
        async move |addr: SocketAddr| {
            let member = PeerAddr {
                node: 2,
                base: addr,
                shards: 1,
            };
            let peers = Peers::new(1, vec![member], PeerOptions::default());
            let template = sealed(0, run.payload);
            let started = Instant::now();
            for _ in 0..run.frames {
                loop {
                    match peers.send(2, 0, template.clone()).map_err(|r| r.error) {
                        Ok(()) => break,
                        // Wait for the writer to drain some (spinning on yields would
                        // take the CPU the kernel needs for the loopback traffic).
                        Err(PeerError::QueueFull { .. }) => glommio::timer::sleep(FULL_PAUSE).await,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            while peers.stats().frames_sent < run.frames {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            Ok(started)
        },
    )?;
    Ok(StreamResult::new(
        run,
        ended.saturating_duration_since(started),
    ))
}

/// Streams the same bytes over one raw connection; with `decode`, the receiver also cuts and
/// verifies the frames with `frame::Decoder`, as `serve` does, so the difference to
/// [`stream_peers`] is the transport's own cost.
pub fn stream_raw(run: Stream, decode: bool) -> Result<StreamResult, CompareError> {
    let total = run.frames * (frame::HEADER_LEN + run.payload) as u64;
    let (ended, started) = two_executors(
        async move |addr_tx: mpsc::Sender<SocketAddr>| {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(std::io::Error::from)?;
            let _ = addr_tx.send(listener.local_addr().map_err(std::io::Error::from)?);
            let mut stream = listener.accept().await.map_err(std::io::Error::from)?;
            let mut buf = vec![0u8; READ_BYTES];
            let mut decoder = frame::Decoder::new(1 << 20);
            let (mut got, mut frames) = (0u64, 0u64);
            while got < total {
                let n = match stream.read(&mut buf).await? {
                    0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                    n => n,
                };
                got += n as u64;
                let mut input = &buf[..n];
                while decode && !input.is_empty() {
                    let (used, frame) = decoder
                        .decode(input)
                        .map_err(|e| CompareError::Executor(e.to_string()))?;
                    input = &input[used..];
                    frames += u64::from(frame.is_some());
                }
            }
            if decode && frames != run.frames {
                return Err(CompareError::Executor(format!("decoded {frames} frames")));
            }
            Ok(Instant::now())
        },
        async move |addr: SocketAddr| {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(std::io::Error::from)?;
            stream.set_nodelay(true).map_err(std::io::Error::from)?;
            let template = sealed(0, run.payload);
            let mut batch = Vec::with_capacity(RAW_BATCH_BYTES + template.len());
            let started = Instant::now();
            for _ in 0..run.frames {
                // A new buffer per frame, as callers of `Peers::send` build one per message.
                let frame = template.clone();
                batch.extend_from_slice(&frame);
                if batch.len() >= RAW_BATCH_BYTES {
                    stream.write_all(&batch).await?;
                    batch.clear();
                }
            }
            stream.write_all(&batch).await?;
            Ok(started)
        },
    )?;
    Ok(StreamResult::new(
        run,
        ended.saturating_duration_since(started),
    ))
}

/// Mean round trip of one frame through two `Peers`/`serve` pairs.
pub fn round_trip_peers(rounds: u64, payload: usize) -> Result<Duration, CompareError> {
    let back = free_addr()?;
    let (_, elapsed) = two_executors(
        // Node 2 (CPU 1) answers each frame by sending it back to node 1's listener.
        async move |addr_tx: mpsc::Sender<SocketAddr>| {
            let listener = peer::listen(free_addr()?)?;
            let _ = addr_tx.send(listener.local_addr().map_err(std::io::Error::from)?);
            let node1 = PeerAddr {
                node: 1,
                base: back,
                shards: 1,
            };
            let peers = Peers::new(2, vec![node1], PeerOptions::default());
            let count = Rc::new(Cell::new(0u64));
            let changed = Rc::new(Event::new());
            let (c, e, p) = (Rc::clone(&count), Rc::clone(&changed), Rc::clone(&peers));
            let on_frame: Rc<dyn Fn(Inbound)> = Rc::new(move |m: Inbound| {
                let mut reply = frame::start(m.payload().len());
                reply.extend_from_slice(m.payload());
                if frame::seal(&mut reply, m.request_id()).is_ok() && p.send(1, 0, reply).is_ok() {
                    c.set(c.get() + 1);
                }
                e.notify(1);
            });
            let done = async {
                reached(&count, &changed, rounds).await;
            };
            peer::serve(listener, 1 << 20, on_frame, done).await;
            Ok(())
        },
        async move |addr: SocketAddr| {
            let listener = peer::listen(back)?;
            let node2 = PeerAddr {
                node: 2,
                base: addr,
                shards: 1,
            };
            let peers = Peers::new(1, vec![node2], PeerOptions::default());
            let count = Rc::new(Cell::new(0u64));
            let changed = Rc::new(Event::new());
            let (c, e) = (Rc::clone(&count), Rc::clone(&changed));
            let on_frame: Rc<dyn Fn(Inbound)> = Rc::new(move |_| {
                c.set(c.get() + 1);
                e.notify(1);
            });
            let (started, elapsed) = (Cell::new(Instant::now()), Cell::new(Duration::ZERO));
            let rounds_done = async {
                started.set(Instant::now());
                for i in 0..rounds {
                    if peers.send(2, 0, sealed(i, payload)).is_err() {
                        return;
                    }
                    reached(&count, &changed, i + 1).await;
                }
                elapsed.set(started.get().elapsed());
            };
            peer::serve(listener, 1 << 20, on_frame, rounds_done).await;
            if count.get() < rounds {
                return Err(CompareError::Executor(
                    "a round trip frame was refused".into(),
                ));
            }
            Ok(elapsed.get())
        },
    )?;
    Ok(elapsed / u32::try_from(rounds.max(1)).unwrap_or(u32::MAX))
}

/// Mean round trip of one frame bounced over one raw connection.
pub fn round_trip_raw(rounds: u64, payload: usize) -> Result<Duration, CompareError> {
    let len = frame::HEADER_LEN + payload;
    let (_, elapsed) = two_executors(
        async move |addr_tx: mpsc::Sender<SocketAddr>| {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(std::io::Error::from)?;
            let _ = addr_tx.send(listener.local_addr().map_err(std::io::Error::from)?);
            let mut stream = listener.accept().await.map_err(std::io::Error::from)?;
            stream.set_nodelay(true).map_err(std::io::Error::from)?;
            let mut buf = vec![0u8; len];
            for _ in 0..rounds {
                stream.read_exact(&mut buf).await?;
                stream.write_all(&buf).await?;
            }
            Ok(())
        },
        async move |addr: SocketAddr| {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(std::io::Error::from)?;
            stream.set_nodelay(true).map_err(std::io::Error::from)?;
            let mut buf = vec![0u8; len];
            let started = Instant::now();
            for i in 0..rounds {
                stream.write_all(&sealed(i, payload)).await?;
                stream.read_exact(&mut buf).await?;
            }
            Ok(started.elapsed())
        },
    )?;
    Ok(elapsed / u32::try_from(rounds.max(1)).unwrap_or(u32::MAX))
}
