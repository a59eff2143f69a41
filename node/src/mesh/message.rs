//! What one shard asks of another, and the answers: the rkyv-archived payloads carried in
//! [`crate::mesh::frame`] frames over the shard mesh.
//!
//! A coordinating shard turns a client command into one [`ShardOp`] per owning shard (the
//! keys of that shard, in request order) and assembles the [`ShardReply`]s in order. The
//! same operations run locally without serialization when the coordinator owns the keys.
//! Variants are only ever appended, so archives from an older build stay readable.
//!
//! In cluster mode the same frames carry [`PeerMessage`]s between nodes: the wire form of
//! `shoal_cluster::message`'s requests and replies (versions travel as their own checksummed
//! encodings), plus who sent them, so the reply finds its way back to the coordinating shard.

use rkyv::{Archive, Deserialize, Serialize};
use shoal_cluster::NodeId;
use shoal_cluster::message::{Reply, Request, WriteContext};
use shoal_cluster::vv::{Dot, VersionVector};

use crate::shard::ShardStats;
use crate::shard::store::{Cond, ExpireCond, Expiry, SetResult};

/// One blind write: the value and its absolute expiry (0 = never).
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct PutEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum ShardOp {
    /// Values of these keys (GET, MGET): [`ShardReply::Values`].
    Get { keys: Vec<Vec<u8>> },
    /// Blind writes applied as one atomic batch (SET without conditions, MSET): `Done`.
    Put { entries: Vec<PutEntry> },
    /// A SET that reads the old value first: [`ShardReply::Set`].
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        cond: Cond,
        expiry: Expiry,
        get: bool,
    },
    /// Deletes the keys: `Count` of keys that existed.
    Del { keys: Vec<Vec<u8>> },
    /// `Count` of the keys (with repeats) that exist.
    Exists { keys: Vec<Vec<u8>> },
    /// `Count` 1 when the expiry was set (or the key deleted for a time in the past).
    Expire {
        key: Vec<u8>,
        at_ms: i64,
        cond: ExpireCond,
    },
    /// Remaining time to live in ms, -1 without expiry, -2 when absent: `Int`.
    Ttl { key: Vec<u8> },
    /// Up to `count` keys with ring hash >= `from_hash`, in hash order: `Keys`.
    Scan { from_hash: u64, count: u32 },
    /// Live keys and keys with an expiry: `Counted`.
    Count,
    /// Deletes every key: `Done`.
    Flush,
    /// The shard's counters: `Stats`.
    Stats,
    /// A cluster replica request for a key this shard owns: [`ShardReply::Replica`].
    Replica(ReplicaRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum ShardReply {
    Values(Vec<Option<Vec<u8>>>),
    Done,
    Set(SetResult),
    Count(u64),
    Int(i64),
    Keys {
        keys: Vec<(u64, Vec<u8>)>,
        exhausted: bool,
    },
    Counted {
        keys: u64,
        expires: u64,
    },
    Stats(Box<ShardStats>),
    /// The operation failed on the owning shard; the text goes to the client.
    Error(String),
    Replica(ReplicaReply),
}

/// The wire form of [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum ReplicaRequest {
    Get {
        key: Vec<u8>,
    },
    Update {
        key: Vec<u8>,
        /// `None`: [`WriteContext::Local`]; else an encoded [`VersionVector`].
        context: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    },
    Put {
        key: Vec<u8>,
        versions: Vec<u8>,
    },
}

/// The wire form of [`Reply`].
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum ReplicaReply {
    Got {
        versions: Option<Vec<u8>>,
    },
    Updated {
        actor: NodeId,
        counter: u64,
        versions: Vec<u8>,
    },
    Stored,
    Failed,
}

/// What one node sends another: a replica request or a reply to one.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct PeerMessage {
    pub from: NodeId,
    /// The sender's shard: a request's reply goes back to it.
    pub from_shard: u16,
    pub body: PeerBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum PeerBody {
    Request(ReplicaRequest),
    Reply(ReplicaReply),
}

impl From<Request> for ReplicaRequest {
    fn from(r: Request) -> ReplicaRequest {
        match r {
            Request::Get { key } => ReplicaRequest::Get { key },
            Request::Update {
                key,
                context,
                value,
            } => ReplicaRequest::Update {
                key,
                context: match context {
                    WriteContext::Local => None,
                    WriteContext::Given(vv) => Some(vv.encode()),
                },
                value,
            },
            Request::Put { key, versions } => ReplicaRequest::Put { key, versions },
        }
    }
}

impl ReplicaRequest {
    /// The cluster request; a damaged context is a decoding error (the replica answers
    /// `Failed`).
    pub fn into_request(self) -> Result<Request, shoal_cluster::Error> {
        Ok(match self {
            ReplicaRequest::Get { key } => Request::Get { key },
            ReplicaRequest::Update {
                key,
                context,
                value,
            } => Request::Update {
                key,
                context: match context {
                    None => WriteContext::Local,
                    Some(bytes) => WriteContext::Given(VersionVector::decode(&bytes)?),
                },
                value,
            },
            ReplicaRequest::Put { key, versions } => Request::Put { key, versions },
        })
    }

    pub fn key(&self) -> &[u8] {
        match self {
            ReplicaRequest::Get { key }
            | ReplicaRequest::Update { key, .. }
            | ReplicaRequest::Put { key, .. } => key,
        }
    }
}

impl From<Reply> for ReplicaReply {
    fn from(r: Reply) -> ReplicaReply {
        match r {
            Reply::Got { versions } => ReplicaReply::Got { versions },
            Reply::Updated { dot, versions } => ReplicaReply::Updated {
                actor: dot.actor,
                counter: dot.counter,
                versions,
            },
            Reply::Stored => ReplicaReply::Stored,
            Reply::Failed => ReplicaReply::Failed,
        }
    }
}

impl From<ReplicaReply> for Reply {
    fn from(r: ReplicaReply) -> Reply {
        match r {
            ReplicaReply::Got { versions } => Reply::Got { versions },
            ReplicaReply::Updated {
                actor,
                counter,
                versions,
            } => Reply::Updated {
                dot: Dot { actor, counter },
                versions,
            },
            ReplicaReply::Stored => Reply::Stored,
            ReplicaReply::Failed => Reply::Failed,
        }
    }
}
