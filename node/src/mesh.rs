//! Messages between the shards of one node over glommio channel meshes.
//!
//! Three full meshes carry [`shoal_cluster::frame`] frames. Two carry [`message::ShardOp`]
//! requests and their replies: each shard drains its reply channels in tasks that never
//! send, so replies always make progress and two shards forwarding to each other cannot
//! deadlock on full channels, and each request runs in its own task on the owning shard, so
//! writes from many shards share one group commit. The third carries the cluster protocol's
//! frames one way, from one shard's endpoint to another's ([`Mesh::post`]); its receivers go
//! to the cluster driver ([`MeshReceivers::take_cluster`]).
//!
//! A frame's checksum is verified before `rkyv::access` validates the archive; a frame that
//! fails either is dropped with an error log (the caller's pending reply then fails when the
//! mesh closes) — inside one process that can only be a bug. The owning shard serves GETs and
//! blind writes straight from the archive in the frame, with no copy of keys or values; the
//! rarer operations are deserialized first.

pub mod apply;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod message;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::{GlommioError, ResourceType};
use rkyv::rancor;
use shoal_cluster::frame::{self, FrameBuf, FrameError, PAYLOAD_LEN_MAX};

use crate::mesh::message::{ArchivedShardOp, ArchivedShardReply, ShardOp, ShardReply};
use crate::shard::Shard;
use crate::u64map::U64Map;

/// Frames in flight per direction between two shards before a sender waits.
pub const MESH_CHANNEL_FRAMES: usize = 1024;

const _: () = assert!(
    PAYLOAD_LEN_MAX >= shoal_engine::types::VALUE_LEN_MAX * 2,
    "a frame holds the largest value with room for its metadata"
);

pub type MeshFrames = MeshBuilder<FrameBuf, Full>;

/// The node's meshes, built once and joined by every shard.
#[derive(Clone)]
pub struct MeshBuilders {
    requests: MeshFrames,
    replies: MeshFrames,
    cluster: MeshFrames,
}

impl MeshBuilders {
    pub fn new(shards: usize) -> MeshBuilders {
        MeshBuilders {
            requests: MeshFrames::full(shards, MESH_CHANNEL_FRAMES),
            replies: MeshFrames::full(shards, MESH_CHANNEL_FRAMES),
            cluster: MeshFrames::full(shards, MESH_CHANNEL_FRAMES),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    #[error("shard {0} is unreachable (mesh closed)")]
    Closed(usize),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("message encoding: {0}")]
    Encoding(String),
}

/// What a reply slot holds while its caller waits.
#[derive(Default)]
struct Slot {
    reply: Option<Result<ShardReply, MeshError>>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Pending {
    slots: U64Map<Slot>,
}

/// This shard's end of the meshes.
pub struct Mesh {
    me: usize,
    requests: Senders<FrameBuf>,
    replies: Senders<FrameBuf>,
    cluster: Senders<FrameBuf>,
    pending: RefCell<Pending>,
    next_id: Cell<u64>,
    /// Per shard, cluster frames waiting for room in its channel, oldest first; a task
    /// drains a non-empty backlog.
    backlog: RefCell<Vec<VecDeque<FrameBuf>>>,
}

impl Mesh {
    /// Joins the meshes (every shard must) and returns this shard's end and its receivers.
    pub async fn join(builders: MeshBuilders) -> Result<(Mesh, MeshReceivers), MeshError> {
        let (req_tx, mut req_rx) = builders
            .requests
            .join()
            .await
            .map_err(|_| MeshError::Closed(0))?;
        let (rep_tx, mut rep_rx) = builders
            .replies
            .join()
            .await
            .map_err(|_| MeshError::Closed(0))?;
        let (cl_tx, mut cl_rx) = builders
            .cluster
            .join()
            .await
            .map_err(|_| MeshError::Closed(0))?;
        let me = req_tx.peer_id();
        debug_assert_eq!(me, rep_tx.peer_id(), "meshes are joined in the same order");
        debug_assert_eq!(me, cl_tx.peer_id(), "meshes are joined in the same order");
        let receivers = MeshReceivers {
            requests: req_rx.streams(),
            replies: rep_rx.streams(),
            cluster: cl_rx.streams(),
        };
        let shards = req_tx.nr_consumers();
        Ok((
            Mesh {
                me,
                requests: req_tx,
                replies: rep_tx,
                cluster: cl_tx,
                pending: RefCell::new(Pending::default()),
                next_id: Cell::new(1),
                backlog: RefCell::new(vec![VecDeque::new(); shards]),
            },
            receivers,
        ))
    }

    /// Posts a cluster frame to shard `to` without waiting: a full channel keeps it in a
    /// backlog that a task feeds in order as room appears. Frames to a shard that has stopped
    /// are dropped (the node is stopping).
    pub fn post(self: &Rc<Self>, to: usize, frame: FrameBuf) {
        debug_assert_ne!(to, self.me, "a shard's own frames stay in its endpoint");
        let mut backlog = self.backlog.borrow_mut();
        if backlog[to].is_empty() {
            match self.cluster.try_send_to(to, frame) {
                Ok(()) => return,
                Err(GlommioError::WouldBlock(ResourceType::Channel(frame))) => {
                    backlog[to].push_back(frame);
                }
                Err(_) => {
                    tracing::debug!(to, "cluster frame to a stopped shard dropped");
                    return;
                }
            }
            let mesh = Rc::clone(self);
            glommio::spawn_local(async move { mesh.feed_backlog(to).await }).detach();
        } else {
            backlog[to].push_back(frame);
        }
    }

    async fn feed_backlog(&self, to: usize) {
        loop {
            let Some(frame) = self.backlog.borrow_mut()[to].pop_front() else {
                return;
            };
            if self.cluster.send_to(to, frame).await.is_err() {
                let dropped = std::mem::take(&mut self.backlog.borrow_mut()[to]);
                tracing::debug!(
                    to,
                    frames = dropped.len() + 1,
                    "cluster frames to a stopped shard dropped"
                );
                return;
            }
        }
    }

    /// This shard's position in the mesh: its shard number.
    pub fn me(&self) -> usize {
        self.me
    }

    pub fn shards(&self) -> usize {
        self.requests.nr_consumers()
    }

    /// Sends `op` to shard `to`; the returned future resolves to its reply. Requests sent
    /// before awaiting any reply are in flight together.
    pub async fn send(self: &Rc<Self>, to: usize, op: &ShardOp) -> Result<PendingReply, MeshError> {
        debug_assert_ne!(to, self.me, "local operations do not go through the mesh");
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let buf = encode(id, op)?;
        self.pending.borrow_mut().slots.insert(id, Slot::default());
        let pending = PendingReply {
            mesh: Rc::clone(self),
            id,
        };
        self.requests
            .send_to(to, buf)
            .await
            .map_err(|_| MeshError::Closed(to))?;
        Ok(pending)
    }

    /// Sends `op` to shard `to` and waits for the reply.
    pub async fn call(self: &Rc<Self>, to: usize, op: &ShardOp) -> Result<ShardReply, MeshError> {
        self.send(to, op).await?.await
    }

    fn complete(&self, id: u64, reply: Result<ShardReply, MeshError>) {
        let mut pending = self.pending.borrow_mut();
        // A missing slot is a caller that gave up (dropped its future): drop the reply.
        if let Some(slot) = pending.slots.get_mut(&id) {
            slot.reply = Some(reply);
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }

    /// Fails every waiting caller: a peer's mesh end closed.
    fn fail_all(&self, peer: usize) {
        let mut pending = self.pending.borrow_mut();
        for slot in pending.slots.values_mut() {
            if slot.reply.is_none() {
                slot.reply = Some(Err(MeshError::Closed(peer)));
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
    }
}

/// Archives a shard operation or reply into a sealed frame with request id `id`.
fn encode<T>(id: u64, value: &T) -> Result<FrameBuf, MeshError>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                FrameBuf,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    Ok(frame::encode(id, value)?)
}

/// A reply on its way back.
pub struct PendingReply {
    mesh: Rc<Mesh>,
    id: u64,
}

impl Future for PendingReply {
    type Output = Result<ShardReply, MeshError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut pending = self.mesh.pending.borrow_mut();
        let Some(slot) = pending.slots.get_mut(&self.id) else {
            return Poll::Ready(Err(MeshError::Closed(self.mesh.me)));
        };
        match slot.reply.take() {
            Some(reply) => {
                pending.slots.remove(&self.id);
                Poll::Ready(reply)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.mesh.pending.borrow_mut().slots.remove(&self.id);
    }
}

/// The receiving ends, consumed by [`serve`] and the cluster driver.
pub struct MeshReceivers {
    requests: Vec<(usize, ConnectedReceiver<FrameBuf>)>,
    replies: Vec<(usize, ConnectedReceiver<FrameBuf>)>,
    cluster: Vec<(usize, ConnectedReceiver<FrameBuf>)>,
}

impl MeshReceivers {
    /// The receivers of cluster frames from the other shards (empty after the first call).
    pub fn take_cluster(&mut self) -> Vec<(usize, ConnectedReceiver<FrameBuf>)> {
        std::mem::take(&mut self.cluster)
    }
}

/// Spawns this shard's mesh tasks: one per peer serving its requests, one per peer taking its
/// replies. They end when the peers' ends close.
pub fn serve(mesh: &Rc<Mesh>, shard: &Rc<Shard>, receivers: MeshReceivers) {
    for (peer, rx) in receivers.requests {
        let mesh = Rc::clone(mesh);
        let shard = Rc::clone(shard);
        glommio::spawn_local(async move {
            while let Some(buf) = rx.recv().await {
                let mesh = Rc::clone(&mesh);
                let shard = Rc::clone(&shard);
                glommio::spawn_local(async move { handle_request(&mesh, &shard, peer, buf).await })
                    .detach();
            }
        })
        .detach();
    }
    for (peer, rx) in receivers.replies {
        let mesh = Rc::clone(mesh);
        glommio::spawn_local(async move {
            while let Some(buf) = rx.recv().await {
                match decode_reply(&buf) {
                    Ok((id, reply)) => mesh.complete(id, Ok(reply)),
                    Err(e) => tracing::error!(peer, error = %e, "bad reply frame dropped"),
                }
            }
            mesh.fail_all(peer);
        })
        .detach();
    }
}

async fn handle_request(mesh: &Rc<Mesh>, shard: &Shard, peer: usize, buf: FrameBuf) {
    let (id, archived) = match open_op(&buf) {
        Ok(opened) => opened,
        Err(e) => {
            tracing::error!(peer, error = %e, "bad request frame dropped");
            return;
        }
    };
    crate::shard::Counters::add(&shard.counters.served_for_peers, 1);
    let reply = match archived {
        ArchivedShardOp::Get { keys } => {
            let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            apply::get(shard, &keys).await
        }
        ArchivedShardOp::Put { entries } => {
            let entries = entries.iter().map(|e| {
                (
                    e.key.as_slice(),
                    e.value.as_slice(),
                    e.expires_at_ms.to_native(),
                )
            });
            apply::put(shard, entries).await
        }
        other => match rkyv::deserialize::<ShardOp, rancor::Error>(other) {
            Ok(op) => apply::apply(shard, op).await,
            Err(e) => {
                tracing::error!(peer, error = %e, "bad request frame dropped");
                return;
            }
        },
    };
    drop(buf);
    let frame = match encode(id, &reply) {
        Ok(f) => f,
        Err(e) => match encode(id, &ShardReply::Error(format!("ERR {e}"))) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(peer, error = %e, "cannot encode a reply");
                return;
            }
        },
    };
    if mesh.replies.send_to(peer, frame).await.is_err() {
        tracing::debug!(peer, "peer closed before its reply");
    }
}

/// A request frame's id and its validated archive, still in the frame.
fn open_op(buf: &[u8]) -> Result<(u64, &ArchivedShardOp), MeshError> {
    let (id, payload) = frame::open(buf)?;
    let archived = rkyv::access::<ArchivedShardOp, rancor::Error>(payload)
        .map_err(|e| MeshError::Encoding(e.to_string()))?;
    Ok((id, archived))
}

fn decode_reply(buf: &[u8]) -> Result<(u64, ShardReply), MeshError> {
    let (id, payload) = frame::open(buf)?;
    let archived = rkyv::access::<ArchivedShardReply, rancor::Error>(payload)
        .map_err(|e| MeshError::Encoding(e.to_string()))?;
    let reply = rkyv::deserialize::<ShardReply, rancor::Error>(archived)
        .map_err(|e| MeshError::Encoding(e.to_string()))?;
    Ok((id, reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::message::PutEntry;

    #[test]
    fn ops_and_replies_survive_the_frame() {
        let op = ShardOp::Put {
            entries: vec![PutEntry {
                key: b"k".to_vec(),
                value: vec![7; 1000],
                expires_at_ms: 99,
            }],
        };
        let buf = encode(5, &op).unwrap();
        let (id, archived) = open_op(&buf).unwrap();
        assert_eq!(id, 5);
        assert_eq!(
            rkyv::deserialize::<ShardOp, rancor::Error>(archived).unwrap(),
            op
        );
        let reply = ShardReply::Values(vec![Some(b"v".to_vec()), None]);
        let buf = encode(6, &reply).unwrap();
        assert_eq!(decode_reply(&buf).unwrap(), (6, reply));
    }

    #[test]
    fn damaged_frames_are_refused() {
        let mut buf = encode(5, &ShardOp::Count).unwrap();
        let last = buf.len() - 1;
        buf.as_mut_slice()[last] ^= 0xff;
        assert!(matches!(open_op(&buf), Err(MeshError::Frame(_))));
        // A valid frame around bytes that are not an archive of the type.
        let mut junk = frame::start(16);
        junk.extend_from_slice(&[0xff; 16]);
        frame::seal(&mut junk, 1).unwrap();
        assert!(matches!(decode_reply(&junk), Err(MeshError::Encoding(_))));
    }
}
