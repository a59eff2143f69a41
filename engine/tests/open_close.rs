//! Opening and closing a small database again and again, cleanly or as a crash leaves it, and
//! opening one on a full disk.
//!
//! Bounds stated here, for a database whose writes never fill a memtable:
//! - 100 clean open/close cycles of 10 writes each keep the directory under
//!   [`CLEAN_CYCLES_DIR_BYTES_MAX`] (1 MiB) in at most [`CYCLES_FILES_MAX`] files: a clean
//!   close lets the next open append to the last log segment, and the first segment is small
//!   (`log_segment_bytes_min`, 256 KiB), so the log holds one or two small segments.
//! - 100 cycles that never close (a crash each time) stay under
//!   [`CRASH_CYCLES_DIR_BYTES_MAX`] (4 MiB): each starts a small segment, and an open that
//!   finds more than a few live segments flushes the replayed writes, which retires them.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::path::Path;

use futures_lite::future::block_on;
use shoal_engine::fs::FaultFs;
use shoal_engine::{Db, Error, Options, blocking};

const CYCLES: usize = 100;
const WRITES_PER_CYCLE: usize = 10;
const CLEAN_CYCLES_DIR_BYTES_MAX: u64 = 1 << 20;
const CRASH_CYCLES_DIR_BYTES_MAX: u64 = 4 << 20;
const CYCLES_FILES_MAX: usize = 8;

fn key(cycle: usize, i: usize) -> Vec<u8> {
    format!("cycle-{cycle:03}-key-{i}").into_bytes()
}

fn value(cycle: usize, i: usize) -> Vec<u8> {
    format!("value {cycle} {i} ").repeat(6).into_bytes()
}

/// Files under `dir` and their total length.
fn dir_usage(dir: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (f, b) = dir_usage(&entry.path());
            files += f;
            bytes += b;
        } else {
            files += 1;
            bytes += meta.len();
        }
    }
    (files, bytes)
}

#[test]
fn clean_open_close_cycles_keep_the_directory_small() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    for cycle in 0..CYCLES {
        let db = blocking::Db::open(&dir, Options::default()).unwrap();
        for i in 0..WRITES_PER_CYCLE {
            db.put(&key(cycle, i), &value(cycle, i)).unwrap();
        }
        db.close().unwrap();
        let (files, bytes) = dir_usage(&dir);
        assert!(
            bytes <= CLEAN_CYCLES_DIR_BYTES_MAX && files <= CYCLES_FILES_MAX,
            "after {} cycles: {files} files, {bytes} bytes",
            cycle + 1
        );
    }
    let (files, bytes) = dir_usage(&dir);
    eprintln!("{CYCLES} clean cycles: {files} files, {bytes} bytes");
    let db = blocking::Db::open(&dir, Options::default()).unwrap();
    for cycle in 0..CYCLES {
        for i in 0..WRITES_PER_CYCLE {
            assert_eq!(db.get(&key(cycle, i)).unwrap(), Some(value(cycle, i)));
        }
    }
    db.close().unwrap();
}

#[test]
fn crashed_open_cycles_keep_the_directory_bounded() {
    let fs = FaultFs::new();
    let options = Options {
        // Keep every memtable in memory: only the open's own flush retires segments.
        memtable_bytes: 64 << 20,
        ..Options::default()
    };
    block_on(async {
        for cycle in 0..CYCLES {
            let db = Db::open(fs.clone(), "/db", options.clone()).await.unwrap();
            for i in 0..WRITES_PER_CYCLE {
                db.put(&key(cycle, i), &value(cycle, i)).await.unwrap();
            }
            // No close: the next open finds the log as a crash leaves it.
            drop(db);
            fs.crash_lose_unsynced();
            assert!(
                fs.total_bytes() <= CRASH_CYCLES_DIR_BYTES_MAX,
                "after {} cycles: {} bytes in {} files",
                cycle + 1,
                fs.total_bytes(),
                fs.files().len()
            );
        }
        eprintln!(
            "{CYCLES} crashed cycles: {} files, {} bytes",
            fs.files().len(),
            fs.total_bytes()
        );
        let db = Db::open(fs.clone(), "/db", options.clone()).await.unwrap();
        for cycle in 0..CYCLES {
            for i in 0..WRITES_PER_CYCLE {
                let got = db.get(&key(cycle, i)).await.unwrap();
                assert_eq!(got, Some(value(cycle, i)));
            }
        }
        db.close().await.unwrap();
    });
}

/// A database that did not close cleanly opens on a disk with no room for a new log segment
/// (and no retired one to reuse): every acknowledged write reads back, writes are refused
/// saying why, and once there is room again it opens for writing.
#[test]
fn a_full_disk_opens_for_reads() {
    let fs = FaultFs::new();
    let options = Options {
        // No flush, so no retired segment is kept to start the next one in.
        memtable_bytes: 64 << 20,
        ..Options::default()
    };
    block_on(async {
        let db = Db::open(fs.clone(), "/db", options.clone()).await.unwrap();
        for i in 0..2_000 {
            db.put(&key(0, i), &value(0, i)).await.unwrap();
        }
        drop(db);
        // Full even once the open has removed the spare segment prepared ahead (blank).
        let blank: u64 = fs
            .files()
            .iter()
            .map(|p| fs.contents(p).unwrap())
            .filter(|bytes| bytes.iter().all(|&b| b == 0))
            .map(|bytes| bytes.len() as u64)
            .sum();
        fs.set_capacity(Some(fs.total_bytes() - blank));

        let db = Db::open(fs.clone(), "/db", options.clone()).await.unwrap();
        for i in 0..2_000 {
            assert_eq!(db.get(&key(0, i)).await.unwrap(), Some(value(0, i)));
        }
        let mut scanned = 0;
        let mut it = db.scan(..).await.unwrap();
        while it.next().await.unwrap().is_some() {
            scanned += 1;
        }
        assert_eq!(scanned, 2_000);
        let refused = db.put(b"more", b"data").await.unwrap_err();
        assert!(
            matches!(&refused, Error::WritesDisabled(why) if why.contains("no space")),
            "{refused}"
        );
        db.close().await.unwrap();

        fs.set_capacity(None);
        let db = Db::open(fs.clone(), "/db", options.clone()).await.unwrap();
        db.put(b"more", b"data").await.unwrap();
        assert_eq!(db.get(&key(0, 1_999)).await.unwrap(), Some(value(0, 1_999)));
        db.close().await.unwrap();
    });
}

/// After a clean close nothing needs to be allocated to open, so a full disk still takes
/// writes into the room left in the last segment.
#[test]
fn a_cleanly_closed_database_opens_on_a_full_disk() {
    let fs = FaultFs::new();
    block_on(async {
        let db = Db::open(fs.clone(), "/db", Options::default())
            .await
            .unwrap();
        db.put(b"before", b"the disk filled").await.unwrap();
        db.close().await.unwrap();
        fs.set_capacity(Some(fs.total_bytes()));
        let db = Db::open(fs.clone(), "/db", Options::default())
            .await
            .unwrap();
        assert_eq!(
            db.get(b"before").await.unwrap().as_deref(),
            Some(&b"the disk filled"[..])
        );
        db.put(b"after", b"it filled").await.unwrap();
        db.close().await.unwrap();
        let db = Db::open(fs.clone(), "/db", Options::default())
            .await
            .unwrap();
        assert_eq!(
            db.get(b"after").await.unwrap().as_deref(),
            Some(&b"it filled"[..])
        );
        db.close().await.unwrap();
    });
}
