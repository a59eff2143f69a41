//! Tuning knobs of one engine instance, each with its reason.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zstd at this level (1 is fast: ~400 MB/s compress, ~875 MB/s decompress on 4 KiB blocks).
    Zstd(i32),
}

/// Milliseconds since the Unix epoch, as seen by expiry (TTL). Injectable so tests control time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

#[derive(Clone)]
pub struct Options {
    pub durability: Durability,
    /// A memtable is frozen and flushed when it holds this many bytes.
    pub memtable_bytes: usize,
    /// Frozen memtables waiting for flush before writers stall; bounds memory when the disk
    /// falls behind.
    pub max_immutable_memtables: usize,
    /// Bytes of decompressed data blocks kept in memory.
    pub block_cache_bytes: usize,
    /// Target uncompressed size of an SSTable data block.
    pub block_bytes: usize,
    pub compression: Compression,
    /// Bloom filter bits per key: 10 gives ~1% false positives.
    pub bloom_bits_per_key: u32,
    /// Size of a preallocated commit-log segment; also bounds one write batch.
    pub log_segment_bytes: u64,
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Sync,
            memtable_bytes: 64 << 20,
            max_immutable_memtables: 4,
            block_cache_bytes: 64 << 20,
            block_bytes: crate::sstable::DEFAULT_BLOCK_BYTES,
            compression: Compression::Zstd(1),
            bloom_bits_per_key: 10,
            log_segment_bytes: 64 << 20,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("memtable_bytes", &self.memtable_bytes)
            .field("max_immutable_memtables", &self.max_immutable_memtables)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("block_bytes", &self.block_bytes)
            .field("compression", &self.compression)
            .field("bloom_bits_per_key", &self.bloom_bits_per_key)
            .field("log_segment_bytes", &self.log_segment_bytes)
            .finish_non_exhaustive()
    }
}
