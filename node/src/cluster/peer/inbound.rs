//! The receiving half of the transport: a shard's peer listener and the connections it
//! accepted, cut into verified frames.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::rc::Rc;

use event_listener::Event;
use futures_lite::{AsyncReadExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use shoal_cluster::frame::{Decoder, FrameBuf, HEADER_LEN};

use super::{ACCEPT_ERROR_PAUSE, INBOUND_CONNECTIONS_MAX, PeerError, READ_CHUNK_BYTES};

/// A verified frame received from a peer.
#[derive(Debug)]
pub struct Inbound {
    frame: FrameBuf,
    request_id: u64,
}

impl Inbound {
    /// Wraps a frame the [`Decoder`] verified.
    fn new(frame: FrameBuf) -> Inbound {
        let h = &frame[..HEADER_LEN];
        let request_id = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        Inbound { frame, request_id }
    }

    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The payload: 16-aligned and checksum-verified, ready for `rkyv::access`.
    pub fn payload(&self) -> &[u8] {
        &self.frame[HEADER_LEN..]
    }

    /// The whole frame, header included.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }
}

/// Binds a peer listener for one shard without SO_REUSEPORT ([`crate::server::port::claim`], then the
/// socket goes to glommio), so a port another process holds is [`PeerError::PortInUse`] rather
/// than a silently shared port. Call on the executor that will serve it.
pub fn listen(addr: SocketAddr) -> Result<TcpListener, PeerError> {
    let listener = crate::server::port::claim(addr).map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => PeerError::PortInUse { addr },
        _ => PeerError::Listen { addr, source },
    })?;
    // SAFETY: `into_raw_fd` hands over a bound, listening socket that nothing else owns.
    Ok(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) })
}

/// Inbound connections of one [`serve`] call, so it can close them when it stops.
#[derive(Default)]
struct Connections {
    open: Cell<usize>,
    stopping: Cell<bool>,
    changed: Event,
}

impl Connections {
    async fn stopped(&self) {
        loop {
            if self.stopping.get() {
                return;
            }
            let listener = self.changed.listen();
            if self.stopping.get() {
                return;
            }
            listener.await;
        }
    }
}

/// Counts an open connection; uncounts it however its task ends.
struct ConnectionGuard(Rc<Connections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
        self.0.changed.notify(usize::MAX);
    }
}

/// Accepts connections until `stop` resolves and calls `on_frame` for each valid frame, in
/// arrival order per connection. A connection whose stream does not decode (payloads over
/// `max_payload` included) is closed with a warning; the others are unaffected. Returns once
/// every connection is closed, so no `on_frame` call follows.
pub async fn serve(
    listener: TcpListener,
    max_payload: usize,
    on_frame: Rc<dyn Fn(Inbound)>,
    stop: impl Future<Output = ()>,
) {
    let conns = Rc::new(Connections::default());
    let accept = async {
        loop {
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    glommio::timer::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let from = stream.peer_addr().ok();
            if conns.open.get() >= INBOUND_CONNECTIONS_MAX {
                tracing::warn!(
                    ?from,
                    limit = INBOUND_CONNECTIONS_MAX,
                    "too many peer connections: refusing one"
                );
                continue;
            }
            conns.open.set(conns.open.get() + 1);
            let guard = ConnectionGuard(Rc::clone(&conns));
            let on_frame = Rc::clone(&on_frame);
            glommio::spawn_local(async move {
                let conns = Rc::clone(&guard.0);
                read_connection(stream, from, max_payload, &*on_frame)
                    .or(async {
                        conns.stopped().await;
                    })
                    .await;
                drop(guard);
            })
            .detach();
        }
    };
    accept.or(stop).await;
    conns.stopping.set(true);
    conns.changed.notify(usize::MAX);
    while conns.open.get() > 0 {
        let listener = conns.changed.listen();
        if conns.open.get() == 0 {
            break;
        }
        listener.await;
    }
}

/// Reads frames from one accepted connection until it ends or fails to decode.
async fn read_connection(
    mut stream: TcpStream,
    from: Option<SocketAddr>,
    max_payload: usize,
    on_frame: &dyn Fn(Inbound),
) {
    let mut decoder = Decoder::new(max_payload);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => {
                if !decoder.at_boundary() {
                    tracing::debug!(?from, "peer connection ended inside a frame");
                }
                return;
            }
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(?from, error = %e, "peer connection read failed");
                return;
            }
        };
        let mut input = &buf[..n];
        while !input.is_empty() {
            match decoder.decode(input) {
                Ok((used, frame)) => {
                    input = &input[used..];
                    if let Some(frame) = frame {
                        on_frame(Inbound::new(frame));
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        ?from,
                        error = %e,
                        "closing peer connection: stream does not decode"
                    );
                    return;
                }
            }
        }
    }
}
