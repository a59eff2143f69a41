//! What an endpoint asks of its shard's store, and how the store answers.
//!
//! Two keyspaces: the key's replicated versions (its data), and the hints this shard keeps
//! for other replicas, ordered by `(owner, seq)`. Every operation the endpoint queues ends
//! with exactly one [`Completion`] passed to `Endpoint::handle_storage` with its token.

use crate::NodeId;

/// Names a storage operation until its completion comes back.
pub type StorageToken = u64;

/// One storage operation to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOp {
    pub token: StorageToken,
    pub action: StorageAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageAction {
    /// The key's stored versions: complete with [`Completion::Read`].
    ReadVersions { key: Vec<u8> },
    /// Store the key's versions durably: [`Completion::Written`] once they would survive a
    /// crash.
    WriteVersions { key: Vec<u8>, versions: Vec<u8> },
    /// Keep a hint record ([`crate::hint::HintRecord`]) durably under `(owner, seq)`:
    /// [`Completion::Written`].
    StoreHint {
        owner: NodeId,
        seq: u64,
        record: Vec<u8>,
    },
    /// Forget the hint `(owner, seq)`: [`Completion::Written`]. Need not be durable: a hint
    /// that comes back after a crash is replayed again, which changes nothing.
    DeleteHint { owner: NodeId, seq: u64 },
    /// Up to `limit` hints of `owner` from `seq` on, in order: [`Completion::Hints`].
    LoadHints {
        owner: NodeId,
        from_seq: u64,
        limit: u32,
    },
}

/// How a storage operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion<'a> {
    /// The key's stored versions (`None`: absent).
    Read(Option<&'a [u8]>),
    Written,
    /// `(seq, record)` pairs, in `seq` order.
    Hints(Vec<(u64, Vec<u8>)>),
    /// The store failed; a replica answers `Failed`.
    Failed,
}

/// A hint already in the store when the endpoint starts, without its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredHint {
    pub owner: NodeId,
    pub seq: u64,
    /// The record's length.
    pub bytes: u64,
    pub stored_at_ms: u64,
}
