//! Tuning knobs of one engine instance, each with its reason, and the hooks an embedder
//! supplies: the clock expiry reads, the timer write slowdowns sleep on, and the policy that
//! decides when a tombstone may be forgotten.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::types::SeqNo;

/// When a write is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged after its log record is on disk (fdatasync). Concurrent writers share
    /// one fdatasync (group commit). Survives kill -9 and power loss.
    #[default]
    Sync,
    /// Acknowledged once in the engine's memory. The log is written when its buffer fills and
    /// made durable by [`crate::Db::sync`]; a crash loses what was not synced.
    Buffered,
}

/// How SSTable data blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored raw.
    None,
    /// zstd at this level (1 is the fastest; the default is
    /// [`crate::sstable::DEFAULT_ZSTD_LEVEL`]).
    Zstd(i32),
}

/// Milliseconds since the Unix epoch, as seen by expiry (TTL). Injectable so tests control time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch, now.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Decides whether compaction may drop a tombstone that no reader needs any more.
///
/// The engine asks only about a tombstone that is the newest version of its key, older than
/// every live snapshot, in a compaction that writes the lowest level holding the key: dropping
/// it then loses nothing locally. A replicated store must still remember a delete until every
/// replica has it, or anti-entropy would copy the deleted value back: the cluster layer answers
/// true only once the delete is known to be synced.
pub trait TombstonePolicy: Send + Sync + 'static {
    /// True when the tombstone of `key` at `seq` may be dropped.
    fn may_purge(&self, key: &[u8], seq: SeqNo) -> bool;
}

/// The embedded default: a tombstone goes as soon as no snapshot needs it.
#[derive(Debug, Default, Clone, Copy)]
pub struct PurgeUnneeded;

impl TombstonePolicy for PurgeUnneeded {
    fn may_purge(&self, _key: &[u8], _seq: SeqNo) -> bool {
        true
    }
}

/// Never drops a tombstone (deleted keys are remembered forever).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepTombstones;

impl TombstonePolicy for KeepTombstones {
    fn may_purge(&self, _key: &[u8], _seq: SeqNo) -> bool {
        false
    }
}

/// How a writer waits when compaction falls behind. The engine runs on any executor, so the
/// host supplies the sleep: a glommio shard must not block its thread.
pub trait Timer: Send + Sync + 'static {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

/// Sleeps by blocking the calling thread: right for the blocking API, where each writer is a
/// thread of its own, and wrong inside an async executor (use `GlommioTimer`, feature `dma`, there).
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadTimer;

impl Timer for ThreadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move { std::thread::sleep(duration) })
    }
}

/// Sleeps on the glommio executor's timer, yielding the shard to other tasks meanwhile.
#[cfg(feature = "dma")]
#[derive(Debug, Default, Clone, Copy)]
pub struct GlommioTimer;

#[cfg(feature = "dma")]
impl Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(glommio::timer::sleep(duration))
    }
}

/// Everything an engine instance is configured by. [`Options::default`] gives the defaults,
/// listed with their reasons in the crate's README.
#[derive(Clone)]
pub struct Options {
    /// When a write is acknowledged relative to the disk.
    pub durability: Durability,
    /// Memory of memtables, block cache and open tables' index and bloom blocks together.
    /// When set, it is split between them by the rule in [`crate::budget`] and overrides
    /// `memtable_bytes`, `max_immutable_memtables` and `block_cache_bytes`; when `None`, those
    /// bound each component on its own.
    pub memory_budget_bytes: Option<u64>,
    /// A memtable is frozen and flushed when it holds this many bytes.
    pub memtable_bytes: usize,
    /// Frozen memtables waiting for flush: a writer that finds the memtable full and this
    /// many waiting flushes one itself before it writes. Bounds memory when flushes fall
    /// behind.
    pub max_immutable_memtables: usize,
    /// Bytes of decompressed data blocks kept in memory.
    pub block_cache_bytes: usize,
    /// Target uncompressed size of an SSTable data block.
    pub block_bytes: usize,
    /// How data blocks are compressed.
    pub compression: Compression,
    /// Bloom filter bits per key: 10 gives ~1% false positives.
    pub bloom_bits_per_key: u32,
    /// Size commit-log segments grow to; also bounds one write batch. Segments are
    /// preallocated (zero-filled with `Durability::Sync`), so a segment's size is disk held
    /// ahead of the writes that fill it.
    pub log_segment_bytes: u64,
    /// Size of the first commit-log segment after an open (capped at `log_segment_bytes`);
    /// each next one doubles the last. Small, so that a small database holds small files and
    /// opens on a nearly full disk; busy logs reach full size after a few segments.
    pub log_segment_bytes_min: u64,
    /// L0 tables that start an L0 → L1 compaction. Every L0 table is searched by every read
    /// that misses the memtables (a bloom filter probe each), so this bounds read
    /// amplification. 6, where RocksDB and LevelDB use 4: under uniform keys the merge
    /// rewrites all of L1, so it writes 1 + L1/L0 bytes per L0 byte, and these L0 tables are
    /// smaller than RocksDB's for the same memory (a memtable entry carries more overhead), so
    /// a larger L0 batch per merge saves more rewriting of L1 than the extra bloom probes cost
    /// reads (`docs/measurements.md` has the runs).
    pub l0_compaction_trigger: usize,
    /// L0 tables at which writes start to be delayed, a little more for each further table.
    /// Well above the compaction trigger, as RocksDB's 20: while compaction is behind, L0
    /// tables gather and the next L0 → L1 compaction takes them all in one rewrite of L1,
    /// where a tight limit would slow writes and make many small rewrites of all of L1.
    pub l0_slowdown_trigger: usize,
    /// L0 tables at which a writer stops to compact L0 itself before writing: the backstop
    /// when the delays do not let background compaction catch up.
    pub l0_stop_trigger: usize,
    /// Bytes compaction is behind (`Stats::pending_compaction_bytes`) at which writes start
    /// to be delayed, longer the further past it (RocksDB's
    /// `soft_pending_compaction_bytes_limit`): L0 counts only tables, this catches a backlog
    /// in the deeper levels.
    pub soft_pending_compaction_bytes: u64,
    /// Bytes compaction is behind at which a writer stops and compacts before writing
    /// (RocksDB's `hard_pending_compaction_bytes_limit`).
    pub hard_pending_compaction_bytes: u64,
    /// Target size of L1; each deeper level's target is `level_size_ratio` times the one
    /// above. The ratio bounds space amplification (about 1 + 1/ratio) and write amplification
    /// (about ratio per level).
    pub level1_bytes: u64,
    /// Each level's target size over the one above's.
    pub level_size_ratio: u64,
    /// Compaction output tables are cut at the first key boundary past this size: small enough
    /// that one compaction step stays short, large enough to keep the table count low.
    pub target_file_bytes: u64,
    /// Tables kept open (file descriptor, index and bloom filter in memory); others are
    /// reopened on demand. Bounds descriptors and the memory of index and filter blocks.
    pub max_open_tables: usize,
    /// When compaction may forget a delete; see [`TombstonePolicy`].
    pub tombstone_policy: Arc<dyn TombstonePolicy>,
    /// What delayed writers sleep on. The default blocks the thread: a glommio shard must set
    /// `GlommioTimer` (feature `dma`), or its own, so a delayed write does not stall the whole shard.
    pub timer: Arc<dyn Timer>,
    /// The time expiry is judged by.
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Sync,
            memory_budget_bytes: None,
            memtable_bytes: 64 << 20,
            max_immutable_memtables: 4,
            block_cache_bytes: 64 << 20,
            block_bytes: crate::sstable::DEFAULT_BLOCK_BYTES,
            compression: Compression::Zstd(crate::sstable::DEFAULT_ZSTD_LEVEL),
            bloom_bits_per_key: 10,
            log_segment_bytes: 64 << 20,
            log_segment_bytes_min: 256 << 10,
            l0_compaction_trigger: 6,
            l0_slowdown_trigger: 20,
            l0_stop_trigger: 36,
            // RocksDB's defaults: far past anything a healthy tree accumulates.
            soft_pending_compaction_bytes: 64 << 30,
            hard_pending_compaction_bytes: 256 << 30,
            level1_bytes: 256 << 20,
            level_size_ratio: 10,
            target_file_bytes: 64 << 20,
            max_open_tables: 512,
            tombstone_policy: Arc::new(PurgeUnneeded),
            timer: Arc::new(ThreadTimer),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("memory_budget_bytes", &self.memory_budget_bytes)
            .field("memtable_bytes", &self.memtable_bytes)
            .field("max_immutable_memtables", &self.max_immutable_memtables)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("block_bytes", &self.block_bytes)
            .field("compression", &self.compression)
            .field("bloom_bits_per_key", &self.bloom_bits_per_key)
            .field("log_segment_bytes", &self.log_segment_bytes)
            .field("log_segment_bytes_min", &self.log_segment_bytes_min)
            .field("l0_compaction_trigger", &self.l0_compaction_trigger)
            .field("l0_slowdown_trigger", &self.l0_slowdown_trigger)
            .field("l0_stop_trigger", &self.l0_stop_trigger)
            .field(
                "soft_pending_compaction_bytes",
                &self.soft_pending_compaction_bytes,
            )
            .field(
                "hard_pending_compaction_bytes",
                &self.hard_pending_compaction_bytes,
            )
            .field("level1_bytes", &self.level1_bytes)
            .field("level_size_ratio", &self.level_size_ratio)
            .field("target_file_bytes", &self.target_file_bytes)
            .field("max_open_tables", &self.max_open_tables)
            .finish_non_exhaustive()
    }
}
