//! A full disk. What the engine does, and what these tests hold it to:
//!
//! - The write that meets ENOSPC fails with `Error::NoSpace`; nothing acknowledged before it
//!   is lost, and reads keep working throughout.
//! - ENOSPC while writing an SSTable (a flush) leaves the commit log healthy: writes continue
//!   until the frozen-memtable backlog is full, then fail with `NoSpace`; once space is freed
//!   the next write's flush succeeds and writes resume, with no reopen.
//! - ENOSPC on the commit log or the manifest leaves that log's tail unknown (fsyncgate), so
//!   writes (or flushes) are refused with `Error::WritesDisabled`, whose message names the
//!   cause and asks for a reopen; a reopen with space recovers exactly what was durable.
//! - Opening on a full disk fails with `NoSpace` (a log segment must be prepared) and loses
//!   nothing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use futures_lite::future::block_on;
use shoal_engine::fs::{FaultError, FaultFs, FaultOp, FaultRule, FileSystem};
use shoal_engine::{Db, Error, Options, blocking};

/// Acknowledged writes; keys whose last write failed may hold either value.
#[derive(Default)]
struct Model {
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Key → the value of a write that failed (it may or may not have reached the disk).
    unsure: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn check(&self, key: &[u8], got: Option<Vec<u8>>) {
        let acked = self.acked.get(key);
        let unsure = self.unsure.get(key);
        let ok = got.as_ref() == acked || (unsure.is_some() && got.as_ref() == unsure);
        assert!(
            ok,
            "{key:?}: got {got:?}, acked {acked:?}, unsure {unsure:?}"
        );
    }
}

/// Writes this many at most before giving up on filling the disk.
const WRITES_MAX: usize = 20_000;

fn options() -> Options {
    Options {
        memtable_bytes: 16 << 10,
        max_immutable_memtables: 2,
        log_segment_bytes: 16 << 10,
        block_bytes: 1024,
        ..Options::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{:04}", i % 500).into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{i}:").into_bytes();
    // Incompressible enough that tables take real space.
    v.extend((0..200u64).map(|j| ((i as u64 * 2_654_435_761 + j * 40_503) >> 7) as u8));
    v
}

/// Writes from `*next` on until one fails; returns its error.
async fn write_until_error<F: FileSystem>(
    db: &Db<F>,
    model: &mut Model,
    next: &mut usize,
) -> Error {
    for _ in 0..WRITES_MAX {
        let i = *next;
        *next += 1;
        match db.put(&key(i), &value(i)).await {
            Ok(()) => {
                model.acked.insert(key(i), value(i));
                model.unsure.remove(&key(i));
            }
            Err(e) => {
                model.unsure.insert(key(i), value(i));
                return e;
            }
        }
    }
    panic!("{WRITES_MAX} writes and the disk never filled");
}

async fn check_all<F: FileSystem>(db: &Db<F>, model: &Model) {
    let keys: Vec<&Vec<u8>> = model.acked.keys().chain(model.unsure.keys()).collect();
    for k in keys {
        model.check(k, db.get(k).await.unwrap());
    }
    let mut it = db.scan(..).await.unwrap();
    let mut seen = 0;
    while let Some((k, e)) = it.next().await.unwrap() {
        model.check(&k, Some(e.value));
        seen += 1;
    }
    assert!(seen >= model.acked.len());
}

fn is_no_space(e: &Error) -> bool {
    matches!(e, Error::NoSpace { .. })
}

/// `WritesDisabled` for a full disk, telling the caller to reopen.
fn is_disabled_by_no_space(e: &Error) -> bool {
    matches!(e, Error::WritesDisabled(cause) if cause.contains("no space"))
        && e.to_string().contains("reopen")
}

#[test]
fn capacity_limit_refuses_writes_keeps_reads_and_recovers_on_reopen() {
    let fs = FaultFs::new();
    let dir = Path::new("/db");
    let mut model = Model::default();
    let mut next = 0;
    block_on(async {
        let db = Db::open(fs.clone(), dir, options()).await.unwrap();
        for _ in 0..50 {
            let i = next;
            next += 1;
            db.put(&key(i), &value(i)).await.unwrap();
            model.acked.insert(key(i), value(i));
        }
        fs.set_capacity(Some(fs.total_bytes() + (256 << 10)));
        let first = write_until_error(&db, &mut model, &mut next).await;
        assert!(is_no_space(&first), "first failure: {first}");
        // Refused from now on, clearly, while reads see everything acknowledged.
        for _ in 0..5 {
            let e = write_until_error(&db, &mut model, &mut next).await;
            assert!(is_no_space(&e) || is_disabled_by_no_space(&e), "{e}");
            check_all(&db, &model).await;
        }
        db.close().await.unwrap();

        // Still full: open fails with NoSpace and loses nothing.
        match Db::open(fs.clone(), dir, options()).await {
            Err(e) => assert!(is_no_space(&e), "{e}"),
            Ok(db) => {
                check_all(&db, &model).await;
                db.close().await.unwrap();
            }
        }

        fs.set_capacity(None);
        let db = Db::open(fs.clone(), dir, options()).await.unwrap();
        check_all(&db, &model).await;
        for _ in 0..500 {
            let i = next;
            next += 1;
            db.put(&key(i), &value(i)).await.unwrap();
            model.acked.insert(key(i), value(i));
            model.unsure.remove(&key(i));
        }
        db.flush().await.unwrap();
        check_all(&db, &model).await;
        db.close().await.unwrap();
    });
}

#[test]
fn enospc_writing_tables_resumes_without_reopen_once_space_is_freed() {
    let fs = FaultFs::new();
    let dir = Path::new("/db");
    let mut model = Model::default();
    let mut next = 0;
    block_on(async {
        let db = Db::open(fs.clone(), dir, options()).await.unwrap();
        fs.inject(
            FaultRule::new(FaultOp::Write, FaultError::NoSpace)
                .on_path(".sst")
                .persistent(),
        );
        let e = write_until_error(&db, &mut model, &mut next).await;
        assert!(is_no_space(&e), "{e}");
        assert!(fs.faults_fired() > 0);
        assert!(matches!(db.flush().await, Err(Error::NoSpace { .. })));
        check_all(&db, &model).await;
        // Space freed: the same handle flushes and writes again.
        fs.clear_faults();
        for _ in 0..300 {
            let i = next;
            next += 1;
            db.put(&key(i), &value(i)).await.unwrap();
            model.acked.insert(key(i), value(i));
            model.unsure.remove(&key(i));
        }
        db.flush().await.unwrap();
        assert!(db.stats().flushes > 0);
        check_all(&db, &model).await;
        db.close().await.unwrap();
        let db = Db::open(fs.clone(), dir, options()).await.unwrap();
        check_all(&db, &model).await;
        db.close().await.unwrap();
    });
}

#[test]
fn enospc_on_the_commit_log_disables_writes_until_reopen() {
    let fs = FaultFs::new();
    let dir = Path::new("/db");
    let mut model = Model::default();
    let mut next = 0;
    block_on(async {
        let db = Db::open(fs.clone(), dir, options()).await.unwrap();
        fs.inject(
            FaultRule::new(FaultOp::Write, FaultError::NoSpace)
                .on_path("/log/")
                .after(40),
        );
        let e = write_until_error(&db, &mut model, &mut next).await;
        assert!(is_no_space(&e), "{e}");
        let e = write_until_error(&db, &mut model, &mut next).await;
        assert!(is_disabled_by_no_space(&e), "{e}");
        check_all(&db, &model).await;
        db.close().await.unwrap();
        let db = Db::open(fs.clone(), dir, options()).await.unwrap();
        check_all(&db, &model).await;
        let i = next;
        db.put(&key(i), &value(i)).await.unwrap();
        model.acked.insert(key(i), value(i));
        model.unsure.remove(&key(i));
        check_all(&db, &model).await;
        db.close().await.unwrap();
    });
}

#[test]
fn enospc_on_the_manifest_fails_flushes_until_reopen() {
    let fs = FaultFs::new();
    let dir = Path::new("/db");
    let mut model = Model::default();
    let mut next = 0;
    block_on(async {
        let db = Db::open(fs.clone(), dir, options()).await.unwrap();
        for _ in 0..100 {
            let i = next;
            next += 1;
            db.put(&key(i), &value(i)).await.unwrap();
            model.acked.insert(key(i), value(i));
        }
        fs.inject(FaultRule::new(FaultOp::Write, FaultError::NoSpace).on_path("/manifest/"));
        let e = db.flush().await.unwrap_err();
        assert!(is_no_space(&e), "{e}");
        // The manifest's tail is unknown now: later flushes are refused, and writes too once
        // the frozen memtables they would need flushed pile up.
        let e = write_until_error(&db, &mut model, &mut next).await;
        assert!(is_disabled_by_no_space(&e), "{e}");
        check_all(&db, &model).await;
        db.close().await.unwrap();

        let db = Db::open(fs.clone(), dir, options()).await.unwrap();
        check_all(&db, &model).await;
        db.flush().await.unwrap();
        check_all(&db, &model).await;
        db.close().await.unwrap();
        // The table whose edit failed was removed as unrecorded; only recorded ones remain.
        let tables = fs
            .files()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "sst"))
            .count();
        assert_eq!(
            tables as u64,
            db.stats().levels.iter().map(|l| l.tables).sum::<u64>()
        );
    });
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Tmpfs<'a>(&'a Path);

impl Tmpfs<'_> {
    fn mount<'a>(dir: &'a Path, size: &str) -> Option<Tmpfs<'a>> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs(dir)),
            other => {
                eprintln!("SKIPPED: cannot mount a tmpfs (needs root): {other:?}");
                None
            }
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_real_full_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = Tmpfs::mount(tmp.path(), "4m") else {
        return;
    };
    let dir = tmp.path().join("db");
    let opts = Options {
        log_segment_bytes: 256 << 10,
        memtable_bytes: 128 << 10,
        ..options()
    };
    let mut acked = BTreeMap::new();
    let db = blocking::Db::open(&dir, opts.clone()).unwrap();
    let mut failure = None;
    // Distinct keys: compaction keeps overwritten keys from filling anything.
    let key = |i: usize| format!("unique-{i:07}").into_bytes();
    for i in 0..WRITES_MAX * 5 {
        match db.put(&key(i), &value(i)) {
            Ok(()) => {
                acked.insert(key(i), value(i));
            }
            Err(e) => {
                failure = Some((i, e));
                break;
            }
        }
    }
    let (failed_at, e) = failure.expect("a 4 MiB filesystem never filled");
    assert!(is_no_space(&e), "{e}");
    for (k, v) in &acked {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
    }
    drop(db);

    // Full: the database opens for reads, and refuses writes saying why.
    let db = blocking::Db::open(&dir, opts.clone()).unwrap();
    for (k, v) in &acked {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
    }
    let refused = db.put(b"while", b"full").unwrap_err();
    assert!(
        is_no_space(&refused) || is_disabled_by_no_space(&refused),
        "{refused}"
    );
    drop(db);

    mount.resize("64m");
    let db = blocking::Db::open(&dir, opts).unwrap();
    for (k, v) in &acked {
        let got = db.get(k).unwrap();
        let failed_write = (k == &key(failed_at)).then(|| value(failed_at));
        assert!(got.as_ref() == Some(v) || got == failed_write, "{k:?}");
    }
    db.put(b"after", b"space").unwrap();
    db.flush().unwrap();
    assert_eq!(db.get(b"after").unwrap(), Some(b"space".to_vec()));
    db.close().unwrap();
}
