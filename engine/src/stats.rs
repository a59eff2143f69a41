//! Engine statistics: the counters the database keeps as it works, and the [`Stats`]
//! snapshot of them that [`crate::Db::stats`] returns (what the node surfaces in INFO).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::cache::CacheStats;
use crate::compaction::RetentionStats;
use crate::types::SeqNo;

/// Monotonic counters, bumped with relaxed atomics on the paths that do the work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub background_errors: AtomicU64,
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    pub user_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_bytes: AtomicU64,
    pub compactions: AtomicU64,
    pub trivial_moves: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub compaction_micros: AtomicU64,
    pub versions_shadowed: AtomicU64,
    pub tombstones_dropped: AtomicU64,
    pub tombstones_kept_by_policy: AtomicU64,
    pub expired_dropped: AtomicU64,
    pub stall_micros: AtomicU64,
    pub delayed_writes: AtomicU64,
    pub stopped_writes: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn add_retention(&self, r: &RetentionStats) {
        Counters::add(&self.versions_shadowed, r.shadowed);
        Counters::add(&self.tombstones_dropped, r.tombstones_dropped);
        Counters::add(&self.tombstones_kept_by_policy, r.tombstones_refused);
        Counters::add(&self.expired_dropped, r.expired_dropped);
    }
}

/// One level of the tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LevelStats {
    /// Tables in the level.
    pub tables: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The level's size target (L0: none, 0; the last level: none, `u64::MAX`).
    pub target_bytes: u64,
    /// Compaction urgency: L0 tables over the trigger, else bytes over the target; ≥ 1 means
    /// the level is due.
    pub score: f64,
}

/// Memory held by the engine, by component, with each component's bound (see
/// [`crate::budget`]): under a memory budget the parts add up to at most the budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// The configured budget; `None` when each component is bounded by its own option.
    pub budget: Option<u64>,
    /// Arenas and hash indexes of the active and frozen memtables.
    pub memtables: u64,
    /// Most the memtables may hold.
    pub memtables_limit: u64,
    /// Held by the block cache.
    pub block_cache: u64,
    /// The block cache's capacity now (under a budget: what table metadata leaves).
    pub block_cache_limit: u64,
    /// Index and bloom filter blocks of the open tables.
    pub table_meta: u64,
    /// `None`: bounded by `max_open_tables` only.
    pub table_meta_limit: Option<u64>,
    /// Memtables, block cache and table metadata together.
    pub total: u64,
}

/// Engine statistics, for INFO and tests.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Background flush or compaction steps that failed (see [`crate::Db::background_error`]).
    pub background_errors: u64,
    /// Write batches applied.
    pub writes: u64,
    /// Point reads.
    pub reads: u64,
    /// Key and value bytes of every write (what the user asked to store).
    pub user_bytes_written: u64,
    /// Memtables flushed.
    pub flushes: u64,
    /// Table bytes written by flushes.
    pub flush_bytes: u64,
    /// Merges run (trivial moves not included).
    pub compactions: u64,
    /// Tables moved down a level without rewriting.
    pub trivial_moves: u64,
    /// Table bytes compactions read.
    pub compaction_bytes_read: u64,
    /// Table bytes compactions wrote.
    pub compaction_bytes_written: u64,
    /// Time spent compacting.
    pub compaction_micros: u64,
    /// Table bytes written (flushes and compactions) per user byte written; the commit log,
    /// about one more, is not included.
    pub write_amplification: f64,
    /// Bytes compaction has yet to move to bring every level within its target.
    pub pending_compaction_bytes: u64,
    /// Versions compactions dropped because a newer one hides them from every reader.
    pub versions_shadowed: u64,
    /// Tombstones compaction dropped.
    pub tombstones_dropped: u64,
    /// Tombstones that could have been dropped but the tombstone policy kept.
    pub tombstones_kept_by_policy: u64,
    /// Expired values compaction dropped.
    pub expired_dropped: u64,
    /// Time writers spent delayed or stopped because flushes or compactions fell behind.
    pub stall_micros: u64,
    /// Writes delayed a little because L0 was past the slowdown trigger or the compaction
    /// backlog past `soft_pending_compaction_bytes`.
    pub delayed_writes: u64,
    /// Writes that had to flush or compact themselves first (frozen memtables, L0 or the
    /// compaction backlog at the stop limit).
    pub stopped_writes: u64,
    /// Bytes in the memtables (active and frozen).
    pub memtable_bytes: u64,
    /// Frozen memtables waiting for their flush.
    pub immutable_memtables: u64,
    /// Per level, L0 first.
    pub levels: Vec<LevelStats>,
    /// Bytes of commit-log files, preallocated space included.
    pub log_bytes: u64,
    /// Commit-log fdatasyncs; writes per sync measures group commit.
    pub log_syncs: u64,
    /// Highest sequence number given out.
    pub last_seq: SeqNo,
    /// Highest sequence number readers see.
    pub visible_seq: SeqNo,
    /// The block cache.
    pub cache: CacheStats,
    /// Tables open in the table cache.
    pub open_tables: u64,
    /// Most tables kept open.
    pub max_open_tables: u64,
    /// Table opens, counting reopens after eviction from the table cache.
    pub table_opens: u64,
    /// Replaced tables still held by a reader, waiting to be deleted.
    pub obsolete_tables: u64,
    /// Memory by component.
    pub memory: MemoryStats,
}

impl Stats {
    /// Bytes of every table the current version lists.
    pub fn live_table_bytes(&self) -> u64 {
        self.levels.iter().map(|l| l.bytes).sum()
    }

    /// Tables in every level.
    pub fn live_tables(&self) -> u64 {
        self.levels.iter().map(|l| l.tables).sum()
    }
}

/// Table bytes written per user byte, 0 before anything was written.
pub(crate) fn write_amplification(table_bytes: u64, user_bytes: u64) -> f64 {
    if user_bytes == 0 {
        0.0
    } else {
        table_bytes as f64 / user_bytes as f64
    }
}
