#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod batch;
pub mod blocking;
pub mod budget;
pub mod cache;
mod coding;
pub mod compaction;
pub mod db;
pub mod error;
pub mod filename;
pub mod fs;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod iter;
pub mod log;
pub mod manifest;
pub mod memtable;
pub mod options;
pub mod repair;
pub mod snapshot;
pub mod sstable;
pub mod stats;
pub mod table_cache;
pub mod types;
pub mod version;

pub use batch::WriteBatch;
pub use budget::MemoryPlan;
pub use db::{BackgroundError, Db, Snapshot};
pub use error::{Error, Result};
pub use iter::ScanIter;
#[cfg(feature = "dma")]
pub use options::GlommioTimer;
pub use options::{
    Clock, Compression, Durability, KeepTombstones, Options, PurgeUnneeded, SystemClock,
    ThreadTimer, Timer, TombstonePolicy,
};
pub use stats::{LevelStats, MemoryStats, Stats};
pub use types::{Entry, ExpiresAt, Key, NO_EXPIRY, SeqNo, Value, ValueKind};
