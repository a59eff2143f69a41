//! The transport between Shoal nodes: sealed [`shoal_cluster::frame`] frames over one-way TCP.
//!
//! **Ports.** Shard `s` of a node listens on `base.port() + s` (see [`PeerAddr`]) with
//! [`listen`] and reads what arrives with [`serve`].
//!
//! **Wire.** A connection carries frames in one direction only, back to back with nothing in
//! between: `[len|version u32][crc32c u32][request id u64][payload]` as laid out in
//! [`shoal_cluster::frame`]. A shard's [`Peers`] keeps one outbound connection per (peer node, peer
//! shard) that it only writes; a shard reads only the connections it accepted. A reply is
//! just another message, sent over the replier's own outbound connection (payloads name
//! their sender), so the transport needs no request/reply correlation and never waits for an
//! answer: lost messages are the coordinator's deadlines' business.
//!
//! **Reconnect policy.** Connections open lazily on the first send to a (node, shard) and
//! are reused. One writer task per connection drains its queue, concatenating up to
//! [`WRITE_BATCH_BYTES`] of queued frames into one write. A connect that fails or takes over
//! `connect_timeout`, or a write that does not finish within `write_timeout` (the peer
//! stopped reading), closes the connection and puts it in backoff: exponential from
//! `backoff_min` to `backoff_max`, with jitter (each wait is drawn from half to all of the
//! current step) so the shards of a restarted node do not reconnect in lockstep. The first
//! send after the backoff deadline connects again. A peer that closes the connection (its
//! shard stopped, or it rejected our bytes) is noticed while the connection is idle; the
//! next send reconnects without backoff. A frame received from a node ends the backoff of
//! every link to it ([`Peers::heard_from`]): a node that is sending is running, and a restarted
//! one is used again at once, not up to `backoff_max` later.
//!
//! **What is dropped.** [`Peers::send`] never waits: it fails at once for an unknown node or
//! shard, a connection in backoff, or a full queue. Frames already queued are dropped
//! (counted in [`PeerStats::frames_dropped`]) when their connection fails or its node is
//! removed; frames that never reached a socket because their connection failed are also
//! handed to the [`Peers::on_dropped`] hook, so a coordinator can count that replica as
//! failed at once instead of waiting for its deadline. The frames of the write that failed
//! are counted but not handed over: part of them may have arrived. Frames written before a
//! failure was noticed may be lost in the kernel's buffers.
//! On the reading side, a connection whose stream does not decode (bad version, over-limit
//! length, checksum) is closed with a warning; frames decoded before the damage are kept.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::future::poll_once;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use shoal_cluster::NodeId;

use shoal_cluster::frame::{Decoder, FrameBuf, HEADER_LEN};

/// Connect timeout: a connect on a LAN takes well under a millisecond; one that has not
/// finished in 500 ms is to a node as good as down for requests with ~1 s deadlines.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Write timeout: a peer that accepts nothing for a second has stopped reading (stalled or
/// overloaded); holding its frames longer only delays the coordinator's answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// First backoff step after a failure: long enough not to spin on a refused port.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Backoff cap: a node that comes back is tried again within 2 s.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Frames queued per connection: a second of small messages at ~1k requests/s per shard;
/// beyond that the peer is not keeping up and the caller should fail the replica.
pub const QUEUE_FRAMES: usize = 1024;
/// Bytes queued per connection: bounds memory when frames carry large values.
pub const QUEUE_BYTES: usize = 64 << 20;
/// Queued bytes concatenated into one write: amortises the syscall over many small frames
/// without copying large ones (a frame this size or larger is written on its own).
pub const WRITE_BATCH_BYTES: usize = 256 << 10;
/// Bytes read from an inbound connection at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Inbound connections one listener serves at once: one per (peer node, peer shard), so
/// 1024 is 64 nodes of 16 shards; more is a misbehaving client. Costs a read buffer each.
pub const INBOUND_CONNECTIONS_MAX: usize = 1024;
/// Pause after a failed accept (out of file descriptors): retry without spinning. The client
/// listeners' accept loop pauses the same.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Where a node's shards listen: shard `s` at `base.port() + s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    pub node: NodeId,
    pub base: SocketAddr,
    pub shards: u16,
}

impl PeerAddr {
    /// The listening address of `shard`, or None when the node has no such shard.
    pub fn shard_addr(&self, shard: u16) -> Option<SocketAddr> {
        if shard >= self.shards {
            return None;
        }
        let port = self.base.port().checked_add(shard)?;
        Some(SocketAddr::new(self.base.ip(), port))
    }
}

/// Timeouts, backoff and queue limits of [`Peers`]; `Default` gives the named constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOptions {
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub queue_frames: usize,
    pub queue_bytes: usize,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            connect_timeout: CONNECT_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            queue_frames: QUEUE_FRAMES,
            queue_bytes: QUEUE_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("node {0} is not a cluster member")]
    UnknownNode(NodeId),
    #[error("node {node} has no shard {shard}")]
    UnknownShard { node: NodeId, shard: u16 },
    #[error("node {node} shard {shard} is in backoff after a failed connect or write")]
    Backoff { node: NodeId, shard: u16 },
    #[error("queue to node {node} shard {shard} is full")]
    QueueFull { node: NodeId, shard: u16 },
    #[error("peer port {addr} is already in use by another process")]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Counters since [`Peers::new`], and each member's [`Peers::is_up`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    /// Frames [`Peers::send`] refused.
    pub frames_rejected: u64,
    /// Frames queued, then discarded when their connection failed or was closed.
    pub frames_dropped: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub write_failures: u64,
    /// Whether the node is up, for each member, by node id.
    pub up: Vec<(NodeId, bool)>,
}

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
        match (was_up, up) {
            (Some(true), false) => tracing::warn!(
                me = self.me,
                node = link.node,
                shard = link.shard,
                addr = %link.addr,
                "peer is down"
            ),
            (Some(false), true) => tracing::info!(me = self.me, node = link.node, "peer is up"),
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
fn jitter(rng: &mut u64, step: Duration) -> Duration {
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

#[cfg(test)]
mod tests;
