//! Two or more `Peers`/`serve` pairs on one glommio executor over 127.0.0.1.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

use super::outbound::jitter;
use super::*;
use crate::server::port::BIND_RETRY;
use shoal_cluster::frame::{self, FrameBuf};

/// How long any awaited condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// Poll period while awaiting a condition.
const POLL: Duration = Duration::from_millis(2);
const MAX_PAYLOAD: usize = 1 << 20;

fn run<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { test().await })
        .unwrap()
        .join()
        .unwrap();
}

/// Awaits `cond` for up to [`WAIT`]; false if it never held.
async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(POLL).await;
    }
    true
}

fn frame_of(id: u64, payload: &[u8]) -> FrameBuf {
    let mut buf = frame::start(payload.len());
    buf.extend_from_slice(payload);
    frame::seal(&mut buf, id).unwrap();
    buf
}

fn fast_options() -> PeerOptions {
    PeerOptions {
        connect_timeout: Duration::from_millis(200),
        write_timeout: Duration::from_millis(200),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..PeerOptions::default()
    }
}

/// A base port with `n` consecutive free ports (checked, then released: racy but rare).
fn free_base(n: u16) -> SocketAddr {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap();
        let rest: Vec<_> = (1..n)
            .map(|s| {
                base.port()
                    .checked_add(s)
                    .and_then(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            })
            .collect();
        if rest.iter().all(Option::is_some) {
            return base;
        }
    }
}

/// Resolves once `fire` was called.
#[derive(Default)]
struct Stop {
    fired: Cell<bool>,
    event: Event,
}

impl Stop {
    fn fire(&self) {
        self.fired.set(true);
        self.event.notify(usize::MAX);
    }

    async fn wait(self: Rc<Self>) {
        loop {
            if self.fired.get() {
                return;
            }
            let l = self.event.listen();
            if self.fired.get() {
                return;
            }
            l.await;
        }
    }
}

type Received = Rc<RefCell<Vec<(u16, u64, Vec<u8>)>>>;

/// A receiving node: one serve per shard, recording (shard, request id, payload).
struct Receiver {
    addr: PeerAddr,
    got: Received,
    stop: Rc<Stop>,
    tasks: Vec<glommio::Task<()>>,
}

impl Receiver {
    fn start(node: NodeId, base: SocketAddr, shards: u16) -> Receiver {
        let got: Received = Rc::default();
        let stop = Rc::new(Stop::default());
        let addr = PeerAddr { node, base, shards };
        let tasks = (0..shards)
            .map(|s| {
                let listener = listen(addr.shard_addr(s).unwrap()).unwrap();
                let got = Rc::clone(&got);
                let on_frame: Rc<dyn Fn(Inbound)> = Rc::new(move |m: Inbound| {
                    got.borrow_mut()
                        .push((s, m.request_id(), m.payload().to_vec()));
                });
                glommio::spawn_local(serve(
                    listener,
                    MAX_PAYLOAD,
                    on_frame,
                    Rc::clone(&stop).wait(),
                ))
            })
            .collect();
        Receiver {
            addr,
            got,
            stop,
            tasks,
        }
    }

    async fn stop(self) {
        self.stop.fire();
        for t in self.tasks {
            t.await;
        }
    }

    fn ids(&self, shard: u16) -> Vec<u64> {
        let got = self.got.borrow();
        got.iter().filter(|m| m.0 == shard).map(|m| m.1).collect()
    }
}

#[test]
fn frames_arrive_in_order_on_every_shard() {
    run(|| async {
        const SHARDS: u16 = 3;
        const PER_SHARD: u64 = 3000;
        let b = Receiver::start(2, free_base(SHARDS), SHARDS);
        let a = Peers::new(1, vec![b.addr], PeerOptions::default());
        let mut next = [0u64; SHARDS as usize];
        let deadline = Instant::now() + WAIT;
        while next.iter().any(|&n| n < PER_SHARD) {
            assert!(Instant::now() < deadline, "sending took too long");
            for s in 0..SHARDS {
                let id = next[s as usize];
                if id == PER_SHARD {
                    continue;
                }
                let payload = id.to_le_bytes().repeat(1 + (id % 7) as usize);
                match a.send(2, s, frame_of(id, &payload)).map_err(|r| r.error) {
                    Ok(()) => next[s as usize] += 1,
                    Err(PeerError::QueueFull { .. }) => {
                        glommio::executor().yield_task_queue_now().await
                    }
                    Err(e) => panic!("send: {e}"),
                }
            }
            if next[0] % 256 == 0 {
                glommio::executor().yield_task_queue_now().await;
            }
        }
        assert!(wait_until(|| b.got.borrow().len() as u64 == PER_SHARD * SHARDS as u64).await);
        for s in 0..SHARDS {
            assert_eq!(b.ids(s), (0..PER_SHARD).collect::<Vec<_>>(), "shard {s}");
        }
        for (_, id, payload) in b.got.borrow().iter() {
            assert_eq!(payload, &id.to_le_bytes().repeat(1 + (id % 7) as usize));
        }
        let stats = a.stats();
        assert_eq!(stats.frames_sent, PER_SHARD * SHARDS as u64);
        assert_eq!(stats.connects, SHARDS as u64);
        assert_eq!(stats.frames_dropped, 0);
        assert_eq!(stats.up, vec![(2, true)]);
        assert!(a.is_up(2));
        b.stop().await;
    });
}

#[test]
fn a_gone_listener_fails_sends_fast_and_delivery_resumes_when_it_returns() {
    run(|| async {
        let base = free_base(1);
        let b = Receiver::start(2, base, 1);
        let a = Peers::new(1, vec![b.addr], fast_options());
        a.send(2, 0, frame_of(1, b"before")).unwrap();
        assert!(wait_until(|| b.ids(0) == [1]).await);
        b.stop().await;

        // The writer notices the hang-up, the next connect is refused, and the link backs off.
        let mut id = 100;
        assert!(
            wait_until(|| {
                id += 1;
                let _ = a.send(2, 0, frame_of(id, b"lost"));
                !a.is_up(2)
            })
            .await
        );
        assert!(matches!(
            a.send(2, 0, frame_of(0, b"refused")).map_err(|r| r.error),
            Err(PeerError::Backoff { node: 2, shard: 0 })
        ));
        let stats = a.stats();
        assert!(stats.connect_failures >= 1);
        assert!(stats.frames_rejected >= 1);
        assert_eq!(stats.up, vec![(2, false)]);

        // Back on the same port: once the backoff deadline passes, a send reconnects.
        let b = Receiver::start(2, base, 1);
        let mut id = 1000;
        assert!(
            wait_until(|| {
                if b.ids(0).is_empty() {
                    id += 1;
                    let _ = a.send(2, 0, frame_of(id, b"after"));
                }
                !b.ids(0).is_empty()
            })
            .await
        );
        assert!(b.ids(0).iter().all(|&i| i > 1000));
        assert!(a.is_up(2));
        b.stop().await;
    });
}

#[test]
fn hearing_from_a_node_ends_the_backoff_of_its_links() {
    run(|| async {
        let base = free_base(1);
        let options = PeerOptions {
            backoff_min: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            ..fast_options()
        };
        let b_addr = PeerAddr {
            node: 2,
            base,
            shards: 1,
        };
        // Nothing listens yet: the connect is refused and the link backs off for a minute.
        let a = Peers::new(1, vec![b_addr], options);
        let mut id = 0;
        assert!(
            wait_until(|| {
                id += 1;
                matches!(
                    a.send(2, 0, frame_of(id, b"refused")).map_err(|r| r.error),
                    Err(PeerError::Backoff { node: 2, shard: 0 })
                )
            })
            .await
        );
        let b = Receiver::start(2, base, 1);
        assert!(
            a.send(2, 0, frame_of(1000, b"early")).is_err(),
            "still backing off"
        );
        a.heard_from(3);
        assert!(
            a.send(2, 0, frame_of(1001, b"early")).is_err(),
            "another node"
        );

        a.heard_from(2);
        a.send(2, 0, frame_of(2000, b"after")).unwrap();
        assert!(wait_until(|| b.ids(0) == [2000]).await);
        b.stop().await;
    });
}

#[test]
fn a_peer_that_never_reads_fails_sends_without_blocking() {
    run(|| async {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let base = listener.local_addr().unwrap();
        let held: Rc<RefCell<Vec<TcpStream>>> = Rc::default();
        let accepted = Rc::clone(&held);
        let acceptor = glommio::spawn_local(async move {
            while let Ok(s) = listener.accept().await {
                accepted.borrow_mut().push(s);
            }
        });
        let options = PeerOptions {
            queue_frames: 64,
            ..fast_options()
        };
        let a = Peers::new(
            1,
            vec![PeerAddr {
                node: 2,
                base,
                shards: 1,
            }],
            options,
        );
        let payload = vec![0xabu8; 64 << 10];
        let (mut full, mut backoff, mut id) = (0, 0, 0u64);
        // `send` is synchronous, so it cannot wait for the stalled peer; what is checked is
        // that it starts failing (queue full, then backoff after the write timeout) in time.
        assert!(
            wait_until(|| {
                id += 1;
                match a.send(2, 0, frame_of(id, &payload)).map_err(|r| r.error) {
                    Ok(()) => {}
                    Err(PeerError::QueueFull { .. }) => full += 1,
                    Err(PeerError::Backoff { .. }) => backoff += 1,
                    Err(e) => panic!("send: {e}"),
                }
                backoff > 0
            })
            .await
        );
        assert!(full > 0, "the queue filled before the write timed out");
        let stats = a.stats();
        assert!(stats.write_failures >= 1);
        assert!(stats.frames_dropped >= 1);
        assert!(!a.is_up(2));
        assert_eq!(held.borrow().len(), 1);
        drop(acceptor);
    });
}

#[test]
fn garbage_closes_only_its_own_connection() {
    run(|| async {
        let b = Receiver::start(2, free_base(1), 1);
        let a = Peers::new(1, vec![b.addr], PeerOptions::default());
        a.send(2, 0, frame_of(1, b"first")).unwrap();
        assert!(wait_until(|| b.ids(0) == [1]).await);

        let mut raw = TcpStream::connect(b.addr.base).await.unwrap();
        let mut bytes = frame_of(500, b"valid before the damage").to_vec();
        bytes.extend_from_slice(&[0xffu8; 64]);
        raw.write_all(&bytes).await.unwrap();
        let mut buf = [0u8; 16];
        let closed = raw.read(&mut buf).await;
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "server closed it: {closed:?}"
        );
        assert!(wait_until(|| b.ids(0) == [1, 500]).await);

        for id in 2..100 {
            a.send(2, 0, frame_of(id, b"still flowing")).unwrap();
        }
        let want: Vec<u64> = [1, 500].into_iter().chain(2..100).collect();
        assert!(wait_until(|| b.ids(0) == want).await);
        assert_eq!(a.stats().connects, 1);
        b.stop().await;
    });
}

#[test]
fn an_oversized_frame_closes_the_connection() {
    run(|| async {
        let b = Receiver::start(2, free_base(1), 1);
        let mut raw = TcpStream::connect(b.addr.base).await.unwrap();
        raw.write_all(&frame_of(1, &vec![0u8; MAX_PAYLOAD + 1]))
            .await
            .ok();
        let mut buf = [0u8; 16];
        assert!(matches!(raw.read(&mut buf).await, Ok(0) | Err(_)));
        assert!(b.ids(0).is_empty());
        b.stop().await;
    });
}

#[test]
fn listen_on_a_taken_port_is_an_error() {
    run(|| async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let started = Instant::now();
        assert!(matches!(listen(addr), Err(PeerError::PortInUse { addr: a }) if a == addr));
        assert!(started.elapsed() >= BIND_RETRY);
    });
}

#[test]
fn unknown_targets_and_removed_members() {
    run(|| async {
        let b = Receiver::start(2, free_base(2), 2);
        let a = Peers::new(1, vec![b.addr], PeerOptions::default());
        assert!(matches!(
            a.send(3, 0, frame_of(1, b"")).map_err(|r| r.error),
            Err(PeerError::UnknownNode(3))
        ));
        assert!(matches!(
            a.send(2, 2, frame_of(1, b"")).map_err(|r| r.error),
            Err(PeerError::UnknownShard { node: 2, shard: 2 })
        ));
        assert!(!a.is_up(3));
        a.send(2, 1, frame_of(1, b"x")).unwrap();
        assert!(wait_until(|| b.ids(1) == [1]).await);

        a.set_members(vec![]);
        assert!(matches!(
            a.send(2, 1, frame_of(2, b"")).map_err(|r| r.error),
            Err(PeerError::UnknownNode(2))
        ));
        assert!(!a.is_up(2));
        assert_eq!(a.stats().up, vec![]);
        // The removed link's writer closed its connection: the receiver sees it end.
        a.set_members(vec![b.addr]);
        a.send(2, 1, frame_of(3, b"y")).unwrap();
        assert!(wait_until(|| b.ids(1) == [1, 3]).await);
        assert_eq!(a.stats().connects, 2);
        b.stop().await;
    });
}

#[test]
fn jitter_stays_within_half_to_all_of_the_step() {
    let mut rng = 7;
    let step = Duration::from_millis(100);
    for _ in 0..1000 {
        let wait = jitter(&mut rng, step);
        assert!(wait >= step / 2 && wait <= step, "{wait:?}");
    }
    assert_eq!(jitter(&mut rng, Duration::ZERO), Duration::ZERO);
}

#[test]
fn frames_dropped_unsent_reach_the_hook() {
    run(|| async {
        // A port with no listener: the connect is refused.
        let base = free_base(1);
        let a = Peers::new(
            1,
            vec![PeerAddr {
                node: 2,
                base,
                shards: 1,
            }],
            fast_options(),
        );
        let seen: Rc<RefCell<Vec<(NodeId, u64)>>> = Rc::default();
        let record = Rc::clone(&seen);
        a.on_dropped(Rc::new(move |node, _shard, frame: &FrameBuf| {
            let (id, _) = frame::open(frame).unwrap();
            record.borrow_mut().push((node, id));
        }));
        for id in 1..=3 {
            a.send(2, 0, frame_of(id, b"never sent")).unwrap();
        }
        assert!(wait_until(|| seen.borrow().len() == 3).await);
        assert_eq!(*seen.borrow(), [(2, 1), (2, 2), (2, 3)]);
        let stats = a.stats();
        assert_eq!(stats.frames_dropped, 3);
        assert_eq!(stats.connect_failures, 1);
        assert_eq!(stats.frames_sent, 0);
        assert!(!a.is_up(2));
    });
}
