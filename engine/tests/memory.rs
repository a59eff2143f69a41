//! The memory budget through the database: it replaces the per-component options, the table
//! cache evicts by metadata bytes, the block cache gets what metadata leaves, and the total
//! reported stays within the budget while every key stays readable.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::path::Path;

use futures_lite::future::block_on;
use shoal_engine::budget::{FROZEN_MEMTABLES, MEMORY_BUDGET_MIN_BYTES, MEMTABLE_SHARE_PERCENT};
use shoal_engine::fs::FaultFs;
use shoal_engine::{Db, Durability, Options};

fn key(i: u32) -> Vec<u8> {
    format!("key{:08}", i.wrapping_mul(2_654_435_761) % 1_000_000_007).into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    let mut v = i.to_le_bytes().repeat(12);
    v.truncate(48);
    v
}

#[test]
fn a_budget_bounds_every_component_and_the_total() {
    block_on(async {
        let fs = FaultFs::new();
        let budget = MEMORY_BUDGET_MIN_BYTES;
        let options = Options {
            durability: Durability::Buffered,
            memory_budget_bytes: Some(budget),
            // Ignored under a budget.
            memtable_bytes: 64 << 20,
            block_cache_bytes: 64 << 20,
            log_segment_bytes: 4 << 20,
            // Heavy metadata, so that a few tens of thousands of keys pass its share: small
            // blocks (a long index) and a large filter.
            block_bytes: 512,
            bloom_bits_per_key: 1000,
            ..Options::default()
        };
        let db = Db::open(fs.clone(), Path::new("/db"), options.clone())
            .await
            .unwrap();
        let n = 60_000;
        let mut most = 0;
        for i in 0..n {
            db.put(&key(i), &value(i)).await.unwrap();
            if i % 1000 == 0 {
                let m = db.stats().memory;
                assert!(m.memtables <= m.memtables_limit, "{m:?}");
                most = most.max(m.total);
            }
        }
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        for i in (0..n).step_by(31) {
            assert_eq!(db.get(&key(i)).await.unwrap(), Some(value(i)), "{i}");
        }
        let stats = db.stats();
        let m = stats.memory;
        assert_eq!(m.budget, Some(budget));
        assert!(m.memtables_limit <= budget / 100 * MEMTABLE_SHARE_PERCENT);
        let meta_limit = m.table_meta_limit.unwrap();
        assert!(m.table_meta <= meta_limit, "{m:?}");
        assert!(
            stats.table_opens > stats.live_tables(),
            "metadata past its share evicted tables: {stats:?}"
        );
        assert!(m.block_cache <= m.block_cache_limit);
        // The block cache gets the rest, rounded down to a multiple of its shard count.
        let parts = m.block_cache_limit + m.table_meta + m.memtables_limit;
        assert!(parts <= budget && parts > budget - 256, "{m:?}");
        assert!(m.total <= budget, "{m:?}");
        assert!(most <= budget, "{most}");
        // At most the active memtable and FROZEN_MEMTABLES frozen ones ever existed at once.
        assert!(stats.immutable_memtables <= FROZEN_MEMTABLES as u64);
        db.close().await.unwrap();
    });
}

#[test]
fn without_a_budget_the_component_options_apply() {
    block_on(async {
        let fs = FaultFs::new();
        let options = Options {
            memtable_bytes: 256 << 10,
            block_cache_bytes: 1 << 20,
            log_segment_bytes: 1 << 20,
            ..Options::default()
        };
        let db = Db::open(fs, Path::new("/db"), options).await.unwrap();
        for i in 0..2000 {
            db.put(&key(i), &value(i)).await.unwrap();
        }
        let m = db.stats().memory;
        assert_eq!(m.budget, None);
        assert_eq!(m.table_meta_limit, None);
        assert_eq!(m.block_cache_limit, 1 << 20);
        assert!(m.memtables > 0 && m.memtables <= m.memtables_limit, "{m:?}");
    });
}
