//! One memory budget for an engine instance, split between the components that hold memory.
//!
//! Without a budget ([`Options::memory_budget_bytes`] `None`) each component is bounded by its
//! own option, as configured. With one, the budget derives those options and overrides them:
//!
//! | component                                        | share of the budget                 |
//! |--------------------------------------------------|-------------------------------------|
//! | memtables: 1 active + [`FROZEN_MEMTABLES`] frozen | [`MEMTABLE_SHARE_PERCENT`]          |
//! | table metadata (index + bloom of open tables)    | at most [`TABLE_META_SHARE_PERCENT`] |
//! | block cache                                      | the rest, plus metadata not in use  |
//!
//! Each memtable gets an equal part of the memtable share, counting its arena and its hash
//! index ([`Memtable::memory_for`]). The table cache evicts open tables when their metadata
//! passes its share; the block cache's capacity follows, so that block cache plus metadata
//! stay within what is left after the memtables. Not counted: buffers of the flush or
//! compaction in progress, the commit log's write buffer, scans' current blocks (a fixed
//! overhead of a few MiB, see `docs/architecture.md`).

use crate::memtable::Memtable;
use crate::options::Options;

/// Memtables get two thirds, as RocksDB's defaults give its two 64 MiB write buffers twice
/// the memory of a 64 MiB block cache. Large memtables are what keeps write amplification
/// down: each L0 → L1 compaction rewrites the overlapping L1 once per L0 batch, so halving
/// the memtables about doubles that rewrite.
pub const MEMTABLE_SHARE_PERCENT: u64 = 66;
/// Most of the budget open tables' index and bloom blocks may take, in percent.
pub const TABLE_META_SHARE_PERCENT: u64 = 25;
/// Frozen memtables within the budget, as RocksDB's default of two write buffers: the writer
/// keeps writing into the active memtable while the frozen one is flushed, and a flush, which
/// writes out in bulk what the writers logged and inserted one entry at a time, ends before
/// the next memtable fills. A second frozen one would only take memory from the active one.
pub const FROZEN_MEMTABLES: usize = 1;
/// Smallest budget accepted: each of the two memtables then gets 5.3 MiB, of which its first
/// 2 MiB arena chunk (a huge page) and its index leave about 3 MiB for entries; below it a
/// memtable would hold almost nothing.
pub const MEMORY_BUDGET_MIN_BYTES: u64 = 16 << 20;

/// How an instance's memory is bounded, component by component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The budget this plan splits; `None` when each component has its own option.
    pub budget_bytes: Option<u64>,
    /// A memtable is frozen at this size.
    pub memtable_bytes: usize,
    /// Frozen memtables allowed to wait for their flush.
    pub max_immutable_memtables: usize,
    /// Most memory of all memtables (arenas and indexes), active and frozen.
    pub memtables_limit_bytes: u64,
    /// The block cache's capacity while no table is open.
    pub block_cache_bytes: usize,
    /// Most index and bloom bytes of open tables; `None`: bounded only by `max_open_tables`.
    pub table_meta_limit_bytes: Option<u64>,
    /// Block cache plus table metadata, when they share a budget: the block cache's capacity
    /// is this minus the metadata in use.
    pub read_limit_bytes: Option<u64>,
}

impl MemoryPlan {
    /// The plan `o` asks for. A budget below [`MEMORY_BUDGET_MIN_BYTES`] counts as that.
    pub fn of(o: &Options) -> MemoryPlan {
        let Some(budget) = o.memory_budget_bytes else {
            let frozen = o.max_immutable_memtables.max(1);
            return MemoryPlan {
                budget_bytes: None,
                memtable_bytes: o.memtable_bytes,
                max_immutable_memtables: frozen,
                memtables_limit_bytes: (Memtable::memory_for(o.memtable_bytes) * (1 + frozen))
                    as u64,
                block_cache_bytes: o.block_cache_bytes,
                table_meta_limit_bytes: None,
                read_limit_bytes: None,
            };
        };
        let budget = budget.max(MEMORY_BUDGET_MIN_BYTES);
        let memtables = budget / 100 * MEMTABLE_SHARE_PERCENT;
        let per_memtable = memtables / (1 + FROZEN_MEMTABLES) as u64;
        let table_meta = budget / 100 * TABLE_META_SHARE_PERCENT;
        let read = budget - memtables;
        MemoryPlan {
            budget_bytes: Some(budget),
            memtable_bytes: Memtable::capacity_within(per_memtable as usize),
            max_immutable_memtables: FROZEN_MEMTABLES,
            memtables_limit_bytes: memtables,
            block_cache_bytes: read as usize,
            table_meta_limit_bytes: Some(table_meta),
            read_limit_bytes: Some(read),
        }
    }

    /// `o` with its component options replaced by this plan's.
    pub fn apply(&self, o: Options) -> Options {
        Options {
            memtable_bytes: self.memtable_bytes,
            max_immutable_memtables: self.max_immutable_memtables,
            block_cache_bytes: self.block_cache_bytes,
            ..o
        }
    }

    /// The block cache's capacity while open tables hold `table_meta` bytes of metadata.
    pub fn block_cache_capacity(&self, table_meta: u64) -> u64 {
        match self.read_limit_bytes {
            Some(read) => read.saturating_sub(table_meta),
            None => self.block_cache_bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_budget_the_options_stand() {
        let o = Options::default();
        let plan = MemoryPlan::of(&o);
        assert_eq!(plan.budget_bytes, None);
        assert_eq!(plan.memtable_bytes, o.memtable_bytes);
        assert_eq!(plan.max_immutable_memtables, o.max_immutable_memtables);
        assert_eq!(plan.block_cache_bytes, o.block_cache_bytes);
        assert_eq!(plan.table_meta_limit_bytes, None);
        assert_eq!(
            plan.block_cache_capacity(1 << 30),
            o.block_cache_bytes as u64
        );
    }

    #[test]
    fn a_budget_is_split_and_every_part_fits() {
        for budget in [MEMORY_BUDGET_MIN_BYTES, 100 << 20, 128 << 20, 3 << 30] {
            let o = Options {
                memory_budget_bytes: Some(budget),
                ..Options::default()
            };
            let plan = MemoryPlan::of(&o);
            let memtables =
                Memtable::memory_for(plan.memtable_bytes) as u64 * (1 + FROZEN_MEMTABLES) as u64;
            assert!(
                memtables <= plan.memtables_limit_bytes,
                "{budget}: {plan:?}"
            );
            assert!(
                memtables > plan.memtables_limit_bytes / 10 * 8,
                "{budget}: memtables use most of their share: {plan:?}"
            );
            let meta = plan.table_meta_limit_bytes.unwrap();
            let read = plan.read_limit_bytes.unwrap();
            assert!(meta < read);
            assert_eq!(plan.memtables_limit_bytes + read, budget);
            // However much metadata is open, cache and metadata stay within the read share.
            for in_use in [0, meta / 2, meta] {
                assert_eq!(plan.block_cache_capacity(in_use) + in_use, read);
            }
            let applied = plan.apply(o);
            assert_eq!(applied.memtable_bytes, plan.memtable_bytes);
            assert_eq!(applied.max_immutable_memtables, FROZEN_MEMTABLES);
        }
    }

    #[test]
    fn a_tiny_budget_counts_as_the_minimum() {
        let o = Options {
            memory_budget_bytes: Some(1),
            ..Options::default()
        };
        assert_eq!(
            MemoryPlan::of(&o).budget_bytes,
            Some(MEMORY_BUDGET_MIN_BYTES)
        );
        assert!(MemoryPlan::of(&o).memtable_bytes > 0);
    }
}
