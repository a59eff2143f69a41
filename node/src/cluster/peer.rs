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

mod inbound;
mod outbound;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_cluster::NodeId;

pub use self::inbound::{Inbound, listen, serve};
pub use self::outbound::{DroppedHook, Peers, Refused};

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

#[cfg(test)]
mod tests;
