//! Coordinator ↔ replica messages: plain Rust types that the node archives with rkyv and
//! frames on the wire. Version payloads are [`crate::dvv`] encodings, checksummed end to end.

use crate::vv::{Dot, VersionVector};

/// Names one client request at its coordinator; replies carry it back. Unique per
/// coordinator for the life of the request (the node allocates them).
pub type ReqId = u64;

/// What a write supersedes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteContext {
    /// Everything the coordinating replica holds (Redis SET/DEL semantics).
    Local,
    /// Exactly what the client saw (VSET/VDEL with `CONTEXT c`; empty for a blind write,
    /// which becomes a sibling of everything present).
    Given(VersionVector),
}

/// Coordinator → replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Return the stored versions of `key`.
    Get { key: Vec<u8> },
    /// Make a new write here: mint a dot against the stored versions, store, and return the
    /// result (this replica is the write's coordinating replica).
    Update {
        key: Vec<u8>,
        context: WriteContext,
        /// `None` writes a tombstone.
        value: Option<Vec<u8>>,
    },
    /// Merge these versions into the stored ones (replication and read repair).
    Put { key: Vec<u8>, versions: Vec<u8> },
}

impl Request {
    pub fn key(&self) -> &[u8] {
        match self {
            Request::Get { key } | Request::Update { key, .. } | Request::Put { key, .. } => key,
        }
    }
}

/// Replica → coordinator. Sent only after any store the request caused is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The stored versions (`None`: the key is absent).
    Got { versions: Option<Vec<u8>> },
    /// The write's dot and the versions now stored.
    Updated { dot: Dot, versions: Vec<u8> },
    /// The merged versions are stored.
    Stored,
    /// The replica could not serve the request (corrupt stored versions, storage error).
    Failed,
}
