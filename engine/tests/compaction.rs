//! Compaction through the database: tombstones and the purge policy, snapshots, expiry,
//! deferred deletion of replaced tables, the table cache bound, write slowdown, and a
//! background-compacted overwrite workload whose space and level shapes stay bounded.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use parking_lot::Mutex;
use shoal_engine::fs::FaultFs;
use shoal_engine::manifest::TableMeta;
use shoal_engine::{
    Clock, Db, Durability, Entry, KeepTombstones, Options, PurgeUnneeded, Timer, TombstonePolicy,
    ValueKind, WriteBatch,
};

/// Records each delay asked for and returns at once.
#[derive(Default)]
struct RecordingTimer(Mutex<Vec<Duration>>);

impl Timer for RecordingTimer {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        self.0.lock().push(d);
        Box::pin(std::future::ready(()))
    }
}

struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32, round: u32, len: usize) -> Vec<u8> {
    let mut v = format!("{i}:{round}:").into_bytes();
    // Pseudo-random filler so zstd cannot make the space checks meaningless.
    let mut x = (u64::from(i) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(round);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// Tiny levels: L1 holds 8 KiB, each level twice the one above, 4 KiB tables, every flush
/// compacted at once. Flushes are explicit (large memtable).
fn deep_options(policy: Arc<dyn TombstonePolicy>) -> Options {
    Options {
        memtable_bytes: 1 << 20,
        // Small segments: the in-memory file system would zero-fill the default 64 MiB.
        log_segment_bytes: 1 << 20,
        block_bytes: 1024,
        l0_compaction_trigger: 1,
        level1_bytes: 8 << 10,
        level_size_ratio: 2,
        target_file_bytes: 4 << 10,
        tombstone_policy: policy,
        timer: Arc::new(RecordingTimer::default()),
        ..Options::default()
    }
}

/// One level only in practice: L1 is large, so every compaction is bottommost.
fn flat_options(policy: Arc<dyn TombstonePolicy>) -> Options {
    Options {
        level1_bytes: 1 << 30,
        ..deep_options(policy)
    }
}

/// Writes `key(i) = value(i, 0, len)` for `i < n` in 8 interleaved flushes, each spanning the
/// whole key range, compacting after each: real merges, spread over several levels.
async fn fill(db: &Db<FaultFs>, n: u32, len: usize) {
    for part in 0..8 {
        for i in (part..n).step_by(8) {
            db.put(&key(i), &value(i, 0, len)).await.unwrap();
        }
        db.flush().await.unwrap();
        db.compact().await.unwrap();
    }
}

async fn open(fs: &FaultFs, options: Options) -> Db<FaultFs> {
    Db::open(fs.clone(), Path::new("/db"), options)
        .await
        .unwrap()
}

fn tombstones(tables: &[TableMeta]) -> u64 {
    tables.iter().map(|t| t.tombstones).sum()
}

/// Levels ≥ 1 are sorted by key and their tables do not overlap.
fn assert_levels_disjoint(tables: &[TableMeta]) {
    for level in 1..7 {
        let l: Vec<&TableMeta> = tables.iter().filter(|t| t.level == level).collect();
        for w in l.windows(2) {
            assert!(
                w[0].largest < w[1].smallest,
                "level {level}: tables {} and {} overlap or are out of order",
                w[0].number,
                w[1].number
            );
        }
    }
}

#[test]
fn a_policy_that_refuses_keeps_tombstones_and_deleted_keys_stay_deleted() {
    block_on(async {
        for (policy, keeps) in [
            (Arc::new(KeepTombstones) as Arc<dyn TombstonePolicy>, true),
            (Arc::new(PurgeUnneeded), false),
        ] {
            let fs = FaultFs::new();
            let db = open(&fs, flat_options(policy.clone())).await;
            for i in 0..100 {
                db.put(&key(i), &value(i, 0, 50)).await.unwrap();
            }
            db.flush().await.unwrap();
            db.compact().await.unwrap();
            for i in (0..100).step_by(3) {
                db.delete(&key(i)).await.unwrap();
            }
            db.flush().await.unwrap();
            db.compact().await.unwrap();
            let tables = db.tables();
            assert!(tables.iter().all(|t| t.level == 1), "one bottom level");
            let stats = db.stats();
            if keeps {
                assert_eq!(tombstones(&tables), 34);
                assert_eq!(stats.tombstones_kept_by_policy, 34);
                assert_eq!(stats.tombstones_dropped, 0);
            } else {
                assert_eq!(tombstones(&tables), 0);
                assert_eq!(stats.tombstones_dropped, 34);
            }
            assert_eq!(
                tables.iter().map(|t| t.entries).sum::<u64>(),
                if keeps { 100 } else { 66 }
            );
            for i in 0..100 {
                let got = db.get(&key(i)).await.unwrap();
                assert_eq!(got.is_none(), i % 3 == 0, "key {i}");
            }
            db.close().await.unwrap();
            let db = open(&fs, flat_options(policy)).await;
            for i in 0..100 {
                assert_eq!(db.get(&key(i)).await.unwrap().is_none(), i % 3 == 0);
            }
        }
    });
}

#[test]
fn a_tombstone_above_older_versions_in_deeper_levels_is_kept_and_wins() {
    block_on(async {
        let fs = FaultFs::new();
        let db = open(&fs, deep_options(Arc::new(PurgeUnneeded))).await;
        fill(&db, 400, 100).await;
        assert!(db.stats().compactions > 0);
        let deepest = db.tables().iter().map(|t| t.level).max().unwrap();
        assert!(deepest >= 3, "the data spread over several levels");
        assert_levels_disjoint(&db.tables());

        for i in (0..400).step_by(7) {
            db.delete(&key(i)).await.unwrap();
        }
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        assert_levels_disjoint(&db.tables());
        let check = |db: Db<FaultFs>| async move {
            for i in 0..400 {
                let got = db.get(&key(i)).await.unwrap();
                if i % 7 == 0 {
                    assert_eq!(got, None, "deleted key {i} came back");
                } else {
                    assert_eq!(got, Some(value(i, 0, 100)));
                }
            }
            let mut it = db.scan(..).await.unwrap();
            let mut n = 0;
            while let Some((k, _)) = it.next().await.unwrap() {
                let i: u32 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
                assert_ne!(i % 7, 0);
                n += 1;
            }
            assert_eq!(n, 400 - 58);
        };
        check(db.clone()).await;
        db.close().await.unwrap();
        check(open(&fs, deep_options(Arc::new(PurgeUnneeded))).await).await;
    });
}

#[test]
fn snapshots_keep_their_versions_through_compaction() {
    block_on(async {
        let fs = FaultFs::new();
        let db = open(&fs, flat_options(Arc::new(PurgeUnneeded))).await;
        for i in 0..50 {
            db.put(&key(i), &value(i, 0, 40)).await.unwrap();
        }
        db.flush().await.unwrap();
        let snap = db.snapshot();
        for i in (0..50).filter(|&i| i != 7) {
            db.put(&key(i), &value(i, 1, 40)).await.unwrap();
        }
        db.delete(&key(7)).await.unwrap();
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        assert!(db.stats().compactions > 0);
        assert_eq!(
            db.stats().versions_shadowed,
            0,
            "the snapshot needs every version"
        );
        for i in 0..50 {
            assert_eq!(snap.get(&key(i)).await.unwrap(), Some(value(i, 0, 40)));
        }
        assert_eq!(db.get(&key(7)).await.unwrap(), None);
        assert_eq!(db.get(&key(8)).await.unwrap(), Some(value(8, 1, 40)));
        drop(snap);
        // The next compaction over the whole key range drops the old versions and the
        // tombstone with the version it hid.
        db.put(&key(0), &value(0, 2, 40)).await.unwrap();
        db.put(&key(49), &value(49, 2, 40)).await.unwrap();
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        let stats = db.stats();
        assert_eq!(stats.versions_shadowed, 49 + 2 + 1);
        assert_eq!(stats.tombstones_dropped, 1);
        assert_eq!(db.tables().iter().map(|t| t.entries).sum::<u64>(), 49);
        assert_eq!(db.get(&key(7)).await.unwrap(), None);
        assert_eq!(db.get(&key(8)).await.unwrap(), Some(value(8, 1, 40)));
        assert_eq!(db.get(&key(49)).await.unwrap(), Some(value(49, 2, 40)));
    });
}

/// A bottommost compaction stores the versions no reader can tell apart with seq 0
/// (RocksDB's trick for smaller tables); snapshots, tombstones, newer writes and a reopen
/// read exactly as before.
#[test]
fn bottommost_versions_are_stored_with_seq_zero_and_read_alike() {
    // Even keys are overwritten, key 8 deleted.
    let expected = |i: u32| match i {
        8 => None,
        i if i % 2 == 0 => Some(value(i, 1, 40)),
        i => Some(value(i, 0, 40)),
    };
    block_on(async {
        let fs = FaultFs::new();
        let db = open(&fs, flat_options(Arc::new(KeepTombstones))).await;
        for i in 0..50 {
            db.put(&key(i), &value(i, 0, 40)).await.unwrap();
        }
        db.flush().await.unwrap();
        let old = db.snapshot();
        for i in (0..50).filter(|i| i % 2 == 0 && *i != 8) {
            db.put(&key(i), &value(i, 1, 40)).await.unwrap();
        }
        db.delete(&key(8)).await.unwrap();
        let deleted_at = db.snapshot().seq();
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        let tables = db.tables();
        assert!(tables.iter().all(|t| t.level > 0), "{tables:?}");
        // The versions the snapshot reads are the oldest: zeroed; the newer ones are not.
        assert_eq!(tables.iter().map(|t| t.min_seq).min(), Some(0));
        assert_eq!(tables.iter().map(|t| t.max_seq).max(), Some(deleted_at));
        assert_eq!(tables.iter().map(|t| t.entries).sum::<u64>(), 50 + 25);
        for i in 0..50 {
            assert_eq!(db.get(&key(i)).await.unwrap(), expected(i), "key {i}");
        }
        for i in 0..50 {
            assert_eq!(old.get(&key(i)).await.unwrap(), Some(value(i, 0, 40)));
        }
        drop(old);
        // Nothing needs the old versions now: one per key stays, values at seq 0, and the
        // tombstone (kept by the policy) with its own seq, which the policy is asked about.
        db.put(&key(49), &value(49, 2, 40)).await.unwrap();
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        let tables = db.tables();
        assert_eq!(tables.iter().map(|t| t.entries).sum::<u64>(), 50);
        assert_eq!(tombstones(&tables), 1);
        assert_eq!(tables.iter().map(|t| t.max_seq).max(), Some(deleted_at));
        assert_eq!(db.get(&key(49)).await.unwrap(), Some(value(49, 2, 40)));
        // A write after a reopen still gets a sequence number above every stored one.
        let seq = db.snapshot().seq();
        db.close().await.unwrap();
        let db = open(&fs, flat_options(Arc::new(KeepTombstones))).await;
        assert!(db.snapshot().seq() >= seq);
        for i in 0..49 {
            assert_eq!(
                db.get(&key(i)).await.unwrap(),
                expected(i),
                "key {i} after reopen"
            );
        }
        db.put(&key(3), &value(3, 3, 40)).await.unwrap();
        db.put(&key(8), &value(8, 3, 40)).await.unwrap();
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        assert_eq!(db.get(&key(3)).await.unwrap(), Some(value(3, 3, 40)));
        assert_eq!(db.get(&key(8)).await.unwrap(), Some(value(8, 3, 40)));
        db.close().await.unwrap();
    });
}

#[test]
fn expired_entries_are_dropped_by_compaction() {
    block_on(async {
        let fs = FaultFs::new();
        let clock = Arc::new(ManualClock(AtomicU64::new(1_000)));
        let options = Options {
            clock: clock.clone(),
            ..flat_options(Arc::new(KeepTombstones))
        };
        let db = open(&fs, options).await;
        let mut batch = WriteBatch::new();
        for i in 0..20 {
            let expires_at_ms = if i < 10 { 2_000 } else { 0 };
            batch.put_entry(
                key(i),
                Entry {
                    kind: ValueKind::Put,
                    expires_at_ms,
                    value: value(i, 0, 30),
                },
            );
        }
        db.write(batch).await.unwrap();
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        assert_eq!(db.tables().iter().map(|t| t.entries).sum::<u64>(), 20);
        clock.0.store(2_000, Ordering::SeqCst);
        // A flush overlapping the table, so the next compaction rewrites it.
        db.put(&key(10), &value(10, 1, 30)).await.unwrap();
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        // Dropped even though the policy keeps tombstones: expiry is not a delete.
        assert_eq!(db.stats().expired_dropped, 10);
        assert_eq!(db.tables().iter().map(|t| t.entries).sum::<u64>(), 10);
        for i in 0..20 {
            assert_eq!(db.get(&key(i)).await.unwrap().is_some(), i >= 10);
        }
    });
}

#[test]
fn an_open_iterator_survives_a_compaction_that_removes_its_tables() {
    block_on(async {
        let fs = FaultFs::new();
        let db = open(&fs, flat_options(Arc::new(PurgeUnneeded))).await;
        for i in 0..200 {
            db.put(&key(i), &value(i, 0, 60)).await.unwrap();
        }
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        let old_tables = db.tables();
        let mut it = db.scan(..).await.unwrap();
        let first = it.next().await.unwrap().unwrap();
        assert_eq!(first.0, key(0));

        for i in 0..200 {
            db.put(&key(i), &value(i, 1, 60)).await.unwrap();
        }
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        let numbers: Vec<u64> = db.tables().iter().map(|t| t.number).collect();
        assert!(
            old_tables.iter().all(|t| !numbers.contains(&t.number)),
            "replaced"
        );
        let stats = db.stats();
        assert_eq!(stats.obsolete_tables, 0, "still held, not yet on the list");
        let path = |t: &TableMeta| format!("/db/{:06}.sst", t.number);
        let files =
            || -> Vec<String> { fs.files().iter().map(|p| p.display().to_string()).collect() };
        for t in &old_tables {
            assert!(
                files().contains(&path(t)),
                "deleted while an iterator reads it"
            );
        }
        // The iterator still reads its snapshot, from the replaced tables.
        let mut n = 1;
        while let Some((k, e)) = it.next().await.unwrap() {
            let i: u32 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
            assert_eq!(e.value, value(i, 0, 60));
            n += 1;
        }
        assert_eq!(n, 200);
        drop(it);
        assert_eq!(db.stats().obsolete_tables, old_tables.len() as u64);
        db.compact().await.unwrap();
        for t in &old_tables {
            assert!(
                !files().contains(&path(t)),
                "table {} not deleted",
                t.number
            );
        }
        assert_eq!(db.stats().obsolete_tables, 0);
    });
}

#[test]
fn the_table_cache_bounds_open_tables_and_reopens_on_demand() {
    block_on(async {
        let fs = FaultFs::new();
        let options = Options {
            max_open_tables: 3,
            ..deep_options(Arc::new(PurgeUnneeded))
        };
        let db = open(&fs, options).await;
        fill(&db, 400, 100).await;
        let tables = db.tables().len() as u64;
        assert!(tables > 6, "{tables} tables");
        for round in 0..2 {
            for i in (0..400).step_by(5) {
                assert_eq!(
                    db.get(&key(i)).await.unwrap(),
                    Some(value(i, 0, 100)),
                    "{round}"
                );
                assert!(db.stats().open_tables <= 3);
            }
        }
        let stats = db.stats();
        assert!(stats.table_opens > tables, "evicted tables were reopened");
        assert_eq!(stats.max_open_tables, 3);
        assert!(stats.memory.table_meta > 0);
        assert_eq!(
            stats.memory.total,
            stats.memory.memtables + stats.memory.block_cache + stats.memory.table_meta
        );
    });
}

#[test]
fn writes_slow_down_as_l0_grows_and_compact_at_the_stop_limit() {
    block_on(async {
        let fs = FaultFs::new();
        let timer = Arc::new(RecordingTimer::default());
        let options = Options {
            memtable_bytes: 4 << 10,
            log_segment_bytes: 1 << 20,
            max_immutable_memtables: 1,
            l0_compaction_trigger: 2,
            l0_slowdown_trigger: 3,
            l0_stop_trigger: 6,
            level1_bytes: 1 << 30,
            timer: timer.clone(),
            ..Options::default()
        };
        // No background worker: only the writers' own flushes and compactions make room.
        let db = open(&fs, options).await;
        let mut max_l0 = 0;
        for i in 0..3000 {
            db.put(&key(i % 500), &value(i, 0, 64)).await.unwrap();
            max_l0 = max_l0.max(db.stats().levels[0].tables);
        }
        assert!(max_l0 <= 6, "L0 reached {max_l0}, past the stop limit");
        let stats = db.stats();
        assert!(stats.delayed_writes > 0);
        assert!(stats.stopped_writes > 0);
        assert!(stats.compactions > 0);
        assert!(stats.stall_micros > 0);
        let delays = timer.0.lock().clone();
        assert_eq!(delays.len() as u64, stats.delayed_writes);
        let mut distinct = delays.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            3,
            "one delay per L0 count from 3 to 5: {distinct:?}"
        );
        assert!(distinct[2] <= Duration::from_millis(2));
        for i in 2500..3000 {
            assert_eq!(db.get(&key(i % 500)).await.unwrap(), Some(value(i, 0, 64)));
        }
    });
}

#[test]
fn writers_go_on_into_a_fresh_memtable_while_a_frozen_one_waits() {
    block_on(async {
        let fs = FaultFs::new();
        let options = Options {
            memtable_bytes: 4 << 10,
            log_segment_bytes: 1 << 20,
            max_immutable_memtables: 1,
            ..Options::default()
        };
        // No background worker: a frozen memtable waits until a writer flushes it.
        let db = open(&fs, options).await;
        let mut i = 0;
        while db.stats().immutable_memtables == 0 {
            db.put(&key(i), &value(i, 0, 64)).await.unwrap();
            i += 1;
        }
        let per_memtable = i;
        // Half a memtable more: room in the fresh one, so nobody stops to flush.
        for _ in 0..per_memtable / 2 {
            db.put(&key(i), &value(i, 0, 64)).await.unwrap();
            i += 1;
        }
        let stats = db.stats();
        assert_eq!(stats.immutable_memtables, 1, "{stats:?}");
        assert_eq!((stats.stopped_writes, stats.flushes), (0, 0), "{stats:?}");
        // Filling the fresh one too leaves the writer no room: it flushes the frozen one.
        for _ in 0..per_memtable {
            db.put(&key(i), &value(i, 0, 64)).await.unwrap();
            i += 1;
        }
        let stats = db.stats();
        assert!(stats.stopped_writes > 0 && stats.flushes > 0, "{stats:?}");
        assert!(stats.immutable_memtables <= 1, "{stats:?}");
        for j in 0..i {
            assert_eq!(db.get(&key(j)).await.unwrap(), Some(value(j, 0, 64)));
        }
    });
}

/// Options for the pending-compaction tests: no L0 limits in the way (L0 compaction is due at
/// 2 tables, so two flushes make a backlog), small memtables, writes recorded by `timer`.
fn backlog_options(timer: Arc<RecordingTimer>, soft: u64, hard: u64) -> Options {
    Options {
        memtable_bytes: 4 << 10,
        log_segment_bytes: 1 << 20,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 1000,
        l0_stop_trigger: 2000,
        level1_bytes: 1 << 30,
        soft_pending_compaction_bytes: soft,
        hard_pending_compaction_bytes: hard,
        timer,
        ..Options::default()
    }
}

#[test]
fn writes_slow_down_past_the_soft_pending_compaction_limit() {
    block_on(async {
        let fs = FaultFs::new();
        let timer = Arc::new(RecordingTimer::default());
        // No background worker and no stop limit: the backlog only grows.
        let db = open(&fs, backlog_options(timer.clone(), 1, u64::MAX)).await;
        for i in 0..2000 {
            db.put(&key(i % 300), &value(i, 0, 64)).await.unwrap();
        }
        let stats = db.stats();
        assert!(stats.pending_compaction_bytes > 0);
        assert!(stats.delayed_writes > 0, "{stats:?}");
        assert_eq!(stats.compactions, 0, "the soft limit only delays");
        let delays = timer.0.lock().clone();
        assert_eq!(delays.len() as u64, stats.delayed_writes);
        assert!(delays.iter().all(|d| *d > Duration::ZERO));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(2)));
        for i in 1700..2000 {
            assert_eq!(db.get(&key(i % 300)).await.unwrap(), Some(value(i, 0, 64)));
        }
    });
}

#[test]
fn writers_compact_at_the_hard_pending_compaction_limit() {
    block_on(async {
        let fs = FaultFs::new();
        let timer = Arc::new(RecordingTimer::default());
        let hard = 16 << 10;
        let db = open(&fs, backlog_options(timer.clone(), 8 << 10, hard)).await;
        let mut most_pending = 0;
        for i in 0..3000 {
            db.put(&key(i % 500), &value(i, 0, 64)).await.unwrap();
            most_pending = most_pending.max(db.stats().pending_compaction_bytes);
        }
        let stats = db.stats();
        assert!(stats.compactions > 0, "{stats:?}");
        assert!(stats.stopped_writes > 0);
        assert!(stats.delayed_writes > 0);
        // A write that finds the backlog at the limit compacts first; one flush may add a
        // table (about one memtable's worth) before the next write looks again.
        assert!(
            most_pending < hard + (8 << 10),
            "backlog reached {most_pending}"
        );
        for i in 2500..3000 {
            assert_eq!(db.get(&key(i % 500)).await.unwrap(), Some(value(i, 0, 64)));
        }
    });
}

/// The blocking API with its worker threads: many overwrites of one key space; once the
/// background catches up, the tables hold a bounded multiple of the live data, L0 is below
/// its trigger and every deeper level within its target.
#[test]
fn overwrites_keep_space_and_level_shapes_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::Buffered,
        memtable_bytes: 64 << 10,
        block_bytes: 4 << 10,
        l0_compaction_trigger: 4,
        level1_bytes: 256 << 10,
        level_size_ratio: 4,
        target_file_bytes: 64 << 10,
        ..Options::default()
    };
    let db = shoal_engine::blocking::Db::open(dir.path(), options).unwrap();
    const KEYS: u32 = 2000;
    const VALUE_LEN: usize = 200;
    const ROUNDS: u32 = 15;
    for round in 0..ROUNDS {
        for i in 0..KEYS {
            // A scattered order, different each round.
            let k = (i * 7919 + round * 31) % KEYS;
            db.put(&key(k), &value(k, round, VALUE_LEN)).unwrap();
        }
    }
    db.flush().unwrap();
    // Wait (bounded) for the background worker to finish compacting.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let s = db.stats();
        let settled = s.immutable_memtables == 0 && s.levels.iter().all(|l| l.score < 1.0);
        if settled {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "compaction did not settle: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let live_data = u64::from(KEYS) * (9 + VALUE_LEN as u64);
    let table_bytes = stats.live_table_bytes();
    assert!(
        table_bytes <= 3 * live_data,
        "tables hold {table_bytes} bytes for {live_data} bytes of live data"
    );
    assert!(stats.levels[0].tables < 4);
    for (level, l) in stats.levels.iter().enumerate().skip(1) {
        assert!(l.bytes <= l.target_bytes, "level {level}: {l:?}");
    }
    assert!(stats.compactions > 0);
    assert!(stats.compaction_bytes_written > 0);
    let user = u64::from(KEYS * ROUNDS) * (9 + VALUE_LEN as u64);
    assert_eq!(stats.user_bytes_written, user);
    assert!(stats.write_amplification >= 1.0 && stats.write_amplification < 20.0);
    for k in 0..KEYS {
        assert_eq!(
            db.get(&key(k)).unwrap(),
            Some(value(k, ROUNDS - 1, VALUE_LEN))
        );
    }
    db.close().unwrap();
    // The deleted tables are really gone from the directory.
    let sst_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sst")
        })
        .count() as u64;
    assert_eq!(sst_files, stats.live_tables());
}
