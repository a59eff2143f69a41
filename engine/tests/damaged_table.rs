//! A table damaged on disk after it was written: the background compaction that reads it
//! reports it through `Db::background_error`, the writes that stop for compaction return the
//! error naming the table, `Table::verify` (what `sstable-dump --verify` runs) finds it, and
//! `repair` rebuilds the database from every block that checks out.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_lite::future::block_on;
use shoal_engine::cache::BlockCache;
use shoal_engine::fs::{FaultFs, FileSystem, StdFs};
use shoal_engine::sstable::Table;
use shoal_engine::{Db, Error, Options, blocking};

const KEYS_PER_TABLE: usize = 300;
/// Polls of the compaction worker before giving up: it yields every few hundred entries.
const POLLS_MAX: usize = 10_000;

fn options() -> Options {
    Options {
        block_bytes: 512,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 3,
        l0_stop_trigger: 4,
        ..Options::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value of key {i} ").repeat(3).into_bytes()
}

fn table_paths(dir: &Path, tables: &[shoal_engine::manifest::TableMeta]) -> Vec<PathBuf> {
    tables
        .iter()
        .map(|t| shoal_engine::filename::table(dir, t.number))
        .collect()
}

fn is_corruption_in(e: &Error, table: &Path) -> bool {
    matches!(e, Error::Corruption { path, .. } if path == table)
}

#[test]
fn a_damaged_table_surfaces_through_the_api() {
    let fs = FaultFs::new();
    block_on(async {
        let db = Db::open(fs.clone(), "/db", options()).await.unwrap();
        for t in 0..2 {
            for i in t * KEYS_PER_TABLE..(t + 1) * KEYS_PER_TABLE {
                db.put(&key(i), &value(i)).await.unwrap();
            }
            db.flush().await.unwrap();
        }
        let tables = table_paths(db.dir(), &db.tables());
        assert_eq!(tables.len(), 2);
        let damaged = tables.last().unwrap().clone();
        fs.corrupt(&damaged, 10).unwrap();
        assert!(db.background_error().is_none());

        // The compaction worker finds it; the worker runs until the database closes, so it
        // is polled until it has reported.
        let mut worker = pin!(db.compaction_worker());
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..POLLS_MAX {
            assert!(matches!(worker.as_mut().poll(&mut cx), Poll::Pending));
            if db.background_error().is_some() {
                break;
            }
        }
        let reported = db
            .background_error()
            .expect("the compaction failure is reported");
        assert_eq!(reported.worker, "compaction");
        assert!(is_corruption_in(&reported.error, &damaged), "{reported}");
        assert!(db.stats().background_errors >= 1);

        // Writes go on until L0 reaches the stop limit; there a write compacts itself and
        // returns the error, naming the table.
        let mut next = 2 * KEYS_PER_TABLE;
        let refused = loop {
            assert!(next < 20 * KEYS_PER_TABLE, "writes never stopped");
            if let Err(e) = db.put(&key(next), &value(next)).await {
                break e;
            }
            next += 1;
            if next % KEYS_PER_TABLE == 0 {
                db.flush().await.unwrap();
            }
        };
        assert!(is_corruption_in(&refused, &damaged), "{refused}");
        // Reads of undamaged data still work.
        let elsewhere = KEYS_PER_TABLE + 1;
        assert_eq!(
            db.get(&key(elsewhere)).await.unwrap(),
            Some(value(elsewhere))
        );
    });
}

#[test]
fn verify_finds_the_damaged_table_and_repair_keeps_every_good_block() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let options = Options {
        // Small segments, released as flushes go: the damaged table's keys are then nowhere
        // else, as in any database that has run for a while.
        log_segment_bytes: 16 << 10,
        l0_compaction_trigger: 100,
        l0_slowdown_trigger: 200,
        l0_stop_trigger: 300,
        ..options()
    };
    let total = 3 * KEYS_PER_TABLE;
    let tables = {
        let db = blocking::Db::open(&dir, options.clone()).unwrap();
        for t in 0..3 {
            for i in t * KEYS_PER_TABLE..(t + 1) * KEYS_PER_TABLE {
                db.put(&key(i), &value(i)).unwrap();
            }
            db.flush().unwrap();
        }
        // Overwrites and a delete in the log only: repair keeps them too.
        db.put(&key(0), b"newer").unwrap();
        db.delete(&key(1)).unwrap();
        let tables = table_paths(&dir, &db.tables());
        db.close().unwrap();
        tables
    };
    let damaged = &tables[1];
    let mut bytes = std::fs::read(damaged).unwrap();
    bytes[700] ^= 0xFF;
    std::fs::write(damaged, &bytes).unwrap();

    // What `sstable-dump --verify` does, table by table.
    let verified: Vec<bool> = tables
        .iter()
        .map(|path| {
            block_on(async {
                let file = StdFs.open(path).await.unwrap();
                let cache = Arc::new(BlockCache::new(1 << 20));
                match Table::open(file, 1, cache).await {
                    Ok(table) => table.verify().await.is_ok(),
                    Err(_) => false,
                }
            })
        })
        .collect();
    assert_eq!(verified.iter().filter(|ok| !**ok).count(), 1);
    assert!(!verified[1]);

    let report = blocking::repair(&dir, &options).unwrap();
    assert_eq!(report.tables_damaged, 1, "{report:?}");
    assert_eq!(report.tables_intact, 2, "{report:?}");
    assert!(report.blocks_lost >= 1, "{report:?}");
    assert!(report.lost_dir.join(damaged.file_name().unwrap()).exists());

    let db = blocking::Db::open(&dir, options).unwrap();
    assert_eq!(db.get(&key(0)).unwrap().as_deref(), Some(&b"newer"[..]));
    assert_eq!(db.get(&key(1)).unwrap(), None);
    let mut missing = 0;
    for i in 2..total {
        match db.get(&key(i)).unwrap() {
            Some(v) => assert_eq!(v, value(i)),
            None => missing += 1,
        }
    }
    // Only keys of the damaged block went, and only from the damaged table's range.
    assert!(
        missing > 0 && missing < KEYS_PER_TABLE / 2,
        "{missing} missing"
    );
    db.put(b"after", b"repair").unwrap();
    db.flush().unwrap();
    db.close().unwrap();
}
