//! shoal-engine: an embeddable, single-shard LSM key-value store.
//!
//! Write path: commit log (group commit) → memtable → zstd-compressed SSTables with bloom
//! filters. Read path: memtable → frozen memtables → SSTables newest first, behind a block
//! cache. Deletes are tombstones; entries may expire. The engine is written against the
//! asynchronous [`fs::FileSystem`] trait, so the same code runs on glommio DMA files inside a
//! node's shard and on std files behind the blocking API.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cache;
pub mod error;
pub mod fs;
pub mod log;
pub mod options;
pub mod sstable;
pub mod types;

pub use error::{Error, Result};
pub use options::{Clock, Compression, Durability, Options, SystemClock};
pub use types::{Entry, ExpiresAt, NO_EXPIRY, SeqNo, ValueKind};
