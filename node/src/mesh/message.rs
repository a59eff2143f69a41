//! What one shard asks of another, and the answers: the rkyv-archived payloads carried in
//! [`crate::mesh::frame`] frames over the shard mesh.
//!
//! A coordinating shard turns a client command into one [`ShardOp`] per owning shard (the
//! keys of that shard, in request order) and assembles the [`ShardReply`]s in order. The
//! same operations run locally without serialization when the coordinator owns the keys.
//! Variants are only ever appended, so archives from an older build stay readable.

use rkyv::{Archive, Deserialize, Serialize};

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
}
