//! The block cache: decompressed, verified data blocks keyed by (table number, block offset),
//! bounded by bytes. Shared by every table of an engine instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::sstable::Block;

/// Bytes charged per cached block beyond its data: the block header, the `Arc` and the
/// cache's own slot. Also keeps every weight above zero.
const BLOCK_OVERHEAD_BYTES: u64 = 96;
/// A block's data is charged rounded up to this: an allocator serves a block from a size
/// class, and mimalloc's (the node's allocator) are 1 KiB apart between 4 and 8 KiB, so a
/// 4.2 KiB block holds 5 KiB. Charging the length alone would let a full cache hold more
/// than its capacity.
const BLOCK_ALLOC_GRANULE_BYTES: u64 = 1 << 10;

/// Typical decoded block, to size the cache's table up front.
const TYPICAL_BLOCK_BYTES: usize = crate::sstable::DEFAULT_BLOCK_BYTES;

type Key = (u64, u64);

#[derive(Clone)]
struct BlockWeighter;

impl quick_cache::Weighter<Key, Arc<Block>> for BlockWeighter {
    fn weight(&self, _key: &Key, block: &Arc<Block>) -> u64 {
        block_weight(block)
    }
}

/// What a cached block costs in memory.
fn block_weight(block: &Block) -> u64 {
    (block.size() as u64).next_multiple_of(BLOCK_ALLOC_GRANULE_BYTES) + BLOCK_OVERHEAD_BYTES
}

/// What the block cache has done and holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups that found the block.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Total weight ever inserted (not reduced by eviction).
    pub inserted_bytes: u64,
    /// Bytes the cached blocks are charged now.
    pub usage_bytes: u64,
    /// Most bytes the cache holds.
    pub capacity_bytes: u64,
}

impl CacheStats {
    /// Hits per lookup, 0 before the first lookup.
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// Decompressed, verified data blocks of every table of one engine instance, bounded by bytes.
pub struct BlockCache {
    blocks: quick_cache::sync::Cache<Key, Arc<Block>, BlockWeighter>,
    hits: AtomicU64,
    misses: AtomicU64,
    inserted_bytes: AtomicU64,
}

impl BlockCache {
    /// An empty cache holding at most `capacity_bytes`.
    pub fn new(capacity_bytes: usize) -> Self {
        let items = (capacity_bytes / TYPICAL_BLOCK_BYTES).max(16);
        let cache = BlockCache {
            blocks: quick_cache::sync::Cache::with_weighter(
                items,
                capacity_bytes as u64,
                BlockWeighter,
            ),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserted_bytes: AtomicU64::new(0),
        };
        cache.set_capacity(capacity_bytes as u64);
        cache
    }

    /// Hits, misses and bytes held.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            inserted_bytes: self.inserted_bytes.load(Relaxed),
            usage_bytes: self.blocks.weight(),
            capacity_bytes: self.blocks.capacity(),
        }
    }

    pub(crate) fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        let block = self.blocks.get(&(table, offset));
        let counter = if block.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Relaxed);
        block
    }

    pub(crate) fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        let weight = block_weight(&block);
        self.inserted_bytes.fetch_add(weight, Relaxed);
        self.blocks.insert((table, offset), block);
    }

    /// Changes the capacity, evicting blocks when it shrinks below what is cached. Rounded
    /// down to a multiple of the shard count: each shard gets an equal part, and rounding
    /// up would pass the capacity asked for.
    pub fn set_capacity(&self, capacity_bytes: u64) {
        let shards = self.blocks.num_shards() as u64;
        let capacity = capacity_bytes / shards * shards;
        if capacity != self.blocks.capacity() {
            self.blocks.set_capacity(capacity);
        }
    }

    /// Drops every cached block of a table (called when a compaction deletes it).
    pub fn evict_table(&self, number: u64) {
        self.blocks.retain(|&(table, _), _| table != number);
    }
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sstable::BlockBuilder;
    use crate::types::Entry;

    /// A block of one entry with a `len`-byte value.
    fn block(len: usize) -> Arc<Block> {
        let mut b = BlockBuilder::default();
        b.add(b"k", 1, &Entry::put(vec![0u8; len]));
        Arc::new(Block::decode(b.finish()).unwrap())
    }

    #[test]
    fn hit_after_insert_and_stats() {
        let cache = BlockCache::new(1 << 20);
        assert!(cache.get(1, 0).is_none());
        cache.insert(1, 0, block(1000));
        assert!(cache.get(1, 0).is_some());
        let s = cache.stats();
        assert_eq!((s.hits, s.misses), (1, 1));
        assert!(s.usage_bytes >= 1000);
        assert_eq!(s.inserted_bytes, s.usage_bytes);
        assert_eq!(s.capacity_bytes, 1 << 20);
    }

    #[test]
    fn capacity_is_respected() {
        let capacity = 256 << 10;
        let cache = BlockCache::new(capacity);
        for i in 0..1000 {
            cache.insert(1, i * 4096, block(4000));
            assert!(cache.stats().usage_bytes <= capacity as u64);
        }
        let s = cache.stats();
        assert!(s.inserted_bytes > 10 * capacity as u64);
        assert!(s.usage_bytes > 0);
    }

    #[test]
    fn shrinking_evicts() {
        let cache = BlockCache::new(1 << 20);
        for i in 0..200 {
            cache.insert(1, i * 4096, block(4000));
        }
        assert!(cache.stats().usage_bytes > 512 << 10);
        cache.set_capacity(256 << 10);
        let s = cache.stats();
        assert!(s.usage_bytes <= 256 << 10, "{s:?}");
        assert!(s.capacity_bytes <= 256 << 10, "{s:?}");
    }

    #[test]
    fn evict_table_drops_only_that_table() {
        let cache = BlockCache::new(1 << 20);
        for offset in 0..10 {
            cache.insert(1, offset, block(100));
            cache.insert(2, offset, block(100));
        }
        cache.evict_table(1);
        for offset in 0..10 {
            assert!(cache.get(1, offset).is_none());
            assert!(cache.get(2, offset).is_some());
        }
    }
}
