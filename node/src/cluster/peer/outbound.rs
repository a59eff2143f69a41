//! The sending half of the transport: one shard's [`Peers`], its links and their writer
//! tasks (see the reconnect policy in [`super`]).

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::future::poll_once;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use shoal_cluster::NodeId;
use shoal_cluster::frame::FrameBuf;

use super::{PeerAddr, PeerError, PeerOptions, PeerStats, WRITE_BATCH_BYTES};

/// One shard's outbound connections to the shards of the other nodes. Lives on that shard's
/// executor; writer tasks are spawned there.
pub struct Peers {
    me: NodeId,
    options: PeerOptions,
    state: RefCell<State>,
    dropped_hook: RefCell<Option<DroppedHook>>,
}

/// Sees each frame that was queued for a node's shard but dropped unsent because its
/// connection failed.
pub type DroppedHook = Rc<dyn Fn(NodeId, u16, &FrameBuf)>;

/// A frame [`Peers::send`] refused, handed back with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Refused {
    pub error: PeerError,
    pub frame: FrameBuf,
}

struct State {
    members: HashMap<NodeId, PeerAddr>,
    links: HashMap<(NodeId, u16), Rc<Link>>,
    /// Outcome of the last connect or write to any shard of the node; true until one fails.
    up: HashMap<NodeId, bool>,
    stats: PeerStats,
    /// splitmix64 state for backoff jitter.
    rng: u64,
    /// When a link to the node last went into backoff: until `backoff_max` after it, a link of
    /// the node may still be backing off, which `heard_from` then ends.
    backed_off: HashMap<NodeId, Instant>,
}

/// One outbound connection's queue and state, shared by [`Peers`] and its writer task.
struct Link {
    node: NodeId,
    shard: u16,
    addr: SocketAddr,
    queue: RefCell<VecDeque<FrameBuf>>,
    queued_bytes: Cell<usize>,
    phase: Cell<Phase>,
    /// The next backoff step; back to `backoff_min` after a successful write.
    step: Cell<Duration>,
    /// Set when the link is removed: its task drops the queue and ends.
    closed: Cell<bool>,
    /// Notified when a frame is queued or the link closes.
    wake: Event,
    /// Whether the writer task waits on `wake` (a send that finds it busy need not notify).
    waiting: Cell<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection and no writer task.
    Idle,
    /// A writer task is connecting or connected.
    Active,
    /// The last connect or write failed; sends fail until this deadline.
    Backoff(Instant),
}

impl Link {
    /// Removes every queued frame and returns them.
    fn drain(&self) -> VecDeque<FrameBuf> {
        self.queued_bytes.set(0);
        std::mem::take(&mut *self.queue.borrow_mut())
    }
}

impl Peers {
    /// Outbound connections for node `me` to `members` (which may include `me`).
    pub fn new(me: NodeId, members: Vec<PeerAddr>, options: PeerOptions) -> Rc<Peers> {
        let peers = Peers {
            me,
            options,
            state: RefCell::new(State {
                members: HashMap::new(),
                links: HashMap::new(),
                up: HashMap::new(),
                stats: PeerStats::default(),
                rng: RandomState::new().hash_one(me),
                backed_off: HashMap::new(),
            }),
            dropped_hook: RefCell::new(None),
        };
        peers.set_members(members);
        Rc::new(peers)
    }

    /// Queues a sealed frame for `shard` of `node`; never waits. Fails at once when the node
    /// or shard is unknown, the connection is in backoff after a failed connect or write, or
    /// its queue is full, so the caller can count the replica as failed immediately.
    pub fn send(self: &Rc<Self>, node: NodeId, shard: u16, frame: FrameBuf) -> Result<(), Refused> {
        let result = self.enqueue(node, shard, frame);
        if result.is_err() {
            self.state.borrow_mut().stats.frames_rejected += 1;
        }
        result
    }

    fn enqueue(self: &Rc<Self>, node: NodeId, shard: u16, frame: FrameBuf) -> Result<(), Refused> {
        let link = match self.link(node, shard) {
            Ok(link) => link,
            Err(error) => return Err(Refused { error, frame }),
        };
        match link.phase.get() {
            Phase::Backoff(until) if Instant::now() < until => {
                let error = PeerError::Backoff { node, shard };
                return Err(Refused { error, frame });
            }
            Phase::Idle | Phase::Backoff(_) => {
                link.phase.set(Phase::Active);
                glommio::spawn_local(drive(
                    Rc::downgrade(self),
                    Rc::clone(&link),
                    self.options.clone(),
                ))
                .detach();
            }
            Phase::Active => {}
        }
        let mut queue = link.queue.borrow_mut();
        let bytes = link.queued_bytes.get() + frame.len();
        // An empty queue takes any frame, or one larger than the byte limit could never go.
        if !queue.is_empty()
            && (queue.len() >= self.options.queue_frames || bytes > self.options.queue_bytes)
        {
            let error = PeerError::QueueFull { node, shard };
            return Err(Refused { error, frame });
        }
        queue.push_back(frame);
        link.queued_bytes.set(bytes);
        if link.waiting.get() {
            link.wake.notify(1);
        }
        Ok(())
    }

    /// The link to (node, shard), made on first use.
    fn link(&self, node: NodeId, shard: u16) -> Result<Rc<Link>, PeerError> {
        let mut state = self.state.borrow_mut();
        if let Some(link) = state.links.get(&(node, shard)) {
            return Ok(Rc::clone(link));
        }
        let member = state
            .members
            .get(&node)
            .ok_or(PeerError::UnknownNode(node))?;
        let addr = member
            .shard_addr(shard)
            .ok_or(PeerError::UnknownShard { node, shard })?;
        let link = Rc::new(Link {
            node,
            shard,
            addr,
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            phase: Cell::new(Phase::Idle),
            step: Cell::new(self.options.backoff_min),
            closed: Cell::new(false),
            wake: Event::new(),
            waiting: Cell::new(false),
        });
        state.links.insert((node, shard), Rc::clone(&link));
        Ok(link)
    }

    /// Sets the hook that sees frames dropped unsent (see the module docs). It runs with no
    /// borrow of the transport held, so it may send.
    pub fn on_dropped(&self, hook: DroppedHook) {
        *self.dropped_hook.borrow_mut() = Some(hook);
    }

    fn report_dropped(&self, node: NodeId, shard: u16, frames: VecDeque<FrameBuf>) {
        let hook = self.dropped_hook.borrow().clone();
        if let Some(hook) = hook {
            for frame in &frames {
                hook(node, shard, frame);
            }
        }
    }

    /// Whether the last connect or write to any shard of `node` succeeded (true for a member
    /// not tried yet, false for a non-member): a failure-detector hint for ordering replicas.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.state.borrow().up.get(&node).copied().unwrap_or(false)
    }

    /// A frame from `node` arrived, so it is running: links to it that are backing off after
    /// a failure connect again at the next send instead of failing sends until their deadline.
    /// Cheap when no link to `node` failed lately: one map lookup per received frame.
    pub fn heard_from(&self, node: NodeId) {
        let mut state = self.state.borrow_mut();
        let Some(&failed_at) = state.backed_off.get(&node) else {
            return;
        };
        state.backed_off.remove(&node);
        if failed_at.elapsed() > self.options.backoff_max {
            return;
        }
        let shards = state.members.get(&node).map_or(0, |m| m.shards);
        for shard in 0..shards {
            if let Some(link) = state.links.get(&(node, shard)) {
                if matches!(link.phase.get(), Phase::Backoff(_)) {
                    link.phase.set(Phase::Idle);
                    link.step.set(self.options.backoff_min);
                }
            }
        }
    }

    pub fn stats(&self) -> PeerStats {
        let state = self.state.borrow();
        let mut stats = state.stats.clone();
        stats.up = state.up.iter().map(|(n, up)| (*n, *up)).collect();
        stats.up.sort_unstable();
        stats
    }

    /// Replaces the member list. Connections to removed nodes, to shards a node no longer
    /// has, or to a changed address close, dropping their queues.
    pub fn set_members(&self, members: Vec<PeerAddr>) {
        let mut state = self.state.borrow_mut();
        let members: HashMap<NodeId, PeerAddr> = members.into_iter().map(|m| (m.node, m)).collect();
        let mut dropped = 0;
        state.links.retain(|&(node, shard), link| {
            let keep = members
                .get(&node)
                .and_then(|m| m.shard_addr(shard))
                .is_some_and(|addr| addr == link.addr);
            if !keep {
                dropped += close(link).len() as u64;
            }
            keep
        });
        state.stats.frames_dropped += dropped;
        state.up.retain(|node, _| members.contains_key(node));
        state
            .backed_off
            .retain(|node, _| members.contains_key(node));
        for node in members.keys() {
            state.up.entry(*node).or_insert(true);
        }
        state.members = members;
    }

    /// Records a connect or write outcome for the node.
    fn record(&self, link: &Link, outcome: Outcome) {
        let mut state = self.state.borrow_mut();
        let up = matches!(outcome, Outcome::Connected | Outcome::Wrote { .. });
        // A link removed by set_members has no entry and must not resurrect one.
        let was_up = state
            .up
            .get_mut(&link.node)
            .map(|entry| std::mem::replace(entry, up));
        match outcome {
            Outcome::Connected => state.stats.connects += 1,
            Outcome::Wrote { frames, bytes } => {
                state.stats.frames_sent += frames;
                state.stats.bytes_sent += bytes;
            }
            Outcome::ConnectFailed => state.stats.connect_failures += 1,
            Outcome::WriteFailed => state.stats.write_failures += 1,
        }
        // The failure detector judges members and logs it; a link's state is a detail.
        match (was_up, up) {
            (Some(true), false) => tracing::debug!(
                me = self.me,
                node = link.node,
                shard = link.shard,
                addr = %link.addr,
                "link to peer failed"
            ),
            (Some(false), true) => {
                tracing::debug!(me = self.me, node = link.node, "link to peer works")
            }
            _ => {}
        }
    }

    /// A connect or write of `link` failed: records it and puts the link in backoff.
    fn fail(&self, link: &Link, outcome: Outcome, error: &io::Error) {
        tracing::debug!(
            node = link.node,
            shard = link.shard,
            addr = %link.addr,
            %error,
            "peer {} failed",
            if matches!(outcome, Outcome::ConnectFailed) { "connect" } else { "write" }
        );
        self.record(link, outcome);
        self.back_off(link);
    }

    /// Puts a failed link in backoff, dropping its queue (reported to the hook).
    fn back_off(&self, link: &Link) {
        let dropped = {
            let mut state = self.state.borrow_mut();
            let dropped = link.drain();
            state.stats.frames_dropped += dropped.len() as u64;
            let step = link.step.get();
            let wait = jitter(&mut state.rng, step);
            link.step.set((step * 2).min(self.options.backoff_max));
            let now = Instant::now();
            link.phase.set(Phase::Backoff(now + wait));
            state.backed_off.insert(link.node, now);
            dropped
        };
        self.report_dropped(link.node, link.shard, dropped);
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for link in self.state.get_mut().links.values() {
            close(link);
        }
    }
}

/// Marks a link closed and wakes its task; returns the frames it drops.
fn close(link: &Link) -> VecDeque<FrameBuf> {
    link.closed.set(true);
    link.wake.notify(usize::MAX);
    link.drain()
}

/// A wait between half and all of `step`, from a splitmix64 stream.
pub(super) fn jitter(rng: &mut u64, step: Duration) -> Duration {
    *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let half = step / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(z % nanos.saturating_add(1))
}

enum Outcome {
    Connected,
    Wrote { frames: u64, bytes: u64 },
    ConnectFailed,
    WriteFailed,
}

/// How a connection ended.
enum End {
    /// The link was removed: nothing more to do.
    Closed,
    /// The peer closed its end while we were idle: reconnect if frames are waiting.
    HungUp,
    /// A write failed or timed out.
    Failed(io::Error),
}

/// The writer task of one link: connects, drains the queue, and on failure puts the link in
/// backoff and ends (the next send after the deadline starts a new task).
async fn drive(peers: Weak<Peers>, link: Rc<Link>, options: PeerOptions) {
    loop {
        let connected = TcpStream::connect_timeout(link.addr, options.connect_timeout)
            .await
            .map_err(io::Error::from)
            .and_then(|s| s.set_nodelay(true).map(|()| s).map_err(io::Error::from));
        let Some(peers_now) = peers.upgrade() else {
            return;
        };
        let stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                peers_now.fail(&link, Outcome::ConnectFailed, &e);
                return;
            }
        };
        peers_now.record(&link, Outcome::Connected);
        drop(peers_now);
        let end = write_queue(&peers, &link, stream, &options).await;
        let Some(peers_now) = peers.upgrade() else {
            return;
        };
        match end {
            End::Closed => return,
            End::HungUp => {
                if link.closed.get() {
                    return;
                }
                if link.queue.borrow().is_empty() {
                    link.phase.set(Phase::Idle);
                    return;
                }
            }
            End::Failed(e) => {
                peers_now.fail(&link, Outcome::WriteFailed, &e);
                return;
            }
        }
    }
}

/// Writes queued frames to `stream` until the link closes, the peer hangs up or a write fails.
async fn write_queue(
    peers: &Weak<Peers>,
    link: &Link,
    mut stream: TcpStream,
    options: &PeerOptions,
) -> End {
    let mut batch: Vec<u8> = Vec::new();
    loop {
        if link.closed.get() {
            return End::Closed;
        }
        if link.queue.borrow().is_empty() {
            let listener = link.wake.listen();
            if link.closed.get() || !link.queue.borrow().is_empty() {
                continue;
            }
            // The peer never writes on this connection: readable means it closed or broke.
            let mut probe = [0u8; 1];
            link.waiting.set(true);
            let hung_up = async {
                listener.await;
                false
            }
            .or(async {
                let _ = stream.peek(&mut probe).await;
                true
            })
            .await;
            link.waiting.set(false);
            if hung_up {
                return End::HungUp;
            }
            continue;
        }
        let (frames, bytes) = take_batch(link, &mut batch);
        let out: &[u8] = match &frames {
            Batch::One(frame) => frame,
            Batch::Many(_) => &batch,
        };
        let written = write_within(&mut stream, out, options.write_timeout).await;
        if let Err(e) = written {
            if let Some(p) = peers.upgrade() {
                p.state.borrow_mut().stats.frames_dropped += frames.count();
            }
            return End::Failed(e);
        }
        link.step.set(options.backoff_min);
        if let Some(p) = peers.upgrade() {
            p.record(
                link,
                Outcome::Wrote {
                    frames: frames.count(),
                    bytes: bytes as u64,
                },
            );
        }
    }
}

/// Writes all of `out` or fails with `TimedOut` after `limit`. The timer is armed only when
/// the socket does not take the bytes at once (the common case needs no timer).
async fn write_within(stream: &mut TcpStream, out: &[u8], limit: Duration) -> io::Result<()> {
    let mut write = pin!(stream.write_all(out));
    if let Some(done) = poll_once(&mut write).await {
        return done;
    }
    write
        .or(async {
            glommio::timer::sleep(limit).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("write not finished within {limit:?}"),
            ))
        })
        .await
}

/// Frames taken from a queue for one write.
enum Batch {
    /// A frame written from its own buffer.
    One(FrameBuf),
    /// This many frames, copied back to back into the batch buffer.
    Many(u64),
}

impl Batch {
    fn count(&self) -> u64 {
        match self {
            Batch::One(_) => 1,
            Batch::Many(n) => *n,
        }
    }
}

/// Takes frames off the queue for one write: one frame alone when it is the only one or
/// large, else as many as fit in [`WRITE_BATCH_BYTES`], copied into `batch`.
fn take_batch(link: &Link, batch: &mut Vec<u8>) -> (Batch, usize) {
    let mut queue = link.queue.borrow_mut();
    let Some(first) = queue.pop_front() else {
        return (Batch::Many(0), 0);
    };
    let fits = |next: Option<&FrameBuf>, total: usize| {
        next.is_some_and(|f| total + f.len() <= WRITE_BATCH_BYTES)
    };
    if !fits(queue.front(), first.len()) {
        let len = first.len();
        link.queued_bytes.set(link.queued_bytes.get() - len);
        return (Batch::One(first), len);
    }
    batch.clear();
    batch.extend_from_slice(&first);
    let mut count = 1;
    while fits(queue.front(), batch.len()) {
        let Some(frame) = queue.pop_front() else {
            break;
        };
        batch.extend_from_slice(&frame);
        count += 1;
    }
    link.queued_bytes.set(link.queued_bytes.get() - batch.len());
    (Batch::Many(count), batch.len())
}
