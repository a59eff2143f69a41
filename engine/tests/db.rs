//! The database through its blocking API on real files: the operations, their visibility
//! rules, and what survives a reopen.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_engine::{Clock, Durability, Entry, Options, ValueKind, WriteBatch, blocking::Db};

struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn small_options() -> Options {
    Options {
        memtable_bytes: 64 << 10,
        log_segment_bytes: 1 << 20,
        block_cache_bytes: 1 << 20,
        ..Options::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn collect(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.scan(..).map(|r| r.unwrap()).collect()
}

#[test]
fn put_get_delete_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    db.put(b"a", b"1").unwrap();
    db.put(b"b", b"2").unwrap();
    db.put(b"a", b"3").unwrap();
    assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
    db.delete(b"a").unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    assert_eq!(db.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
    db.put(b"", b"empty key").unwrap();
    assert_eq!(db.get(b"").unwrap().as_deref(), Some(&b"empty key"[..]));
    db.put(b"empty value", b"").unwrap();
    assert_eq!(db.get(b"empty value").unwrap().as_deref(), Some(&b""[..]));
}

#[test]
fn survives_reopen_with_and_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), small_options()).unwrap();
        for i in 0..3000 {
            db.put(&key(i), format!("v{i}").as_bytes()).unwrap();
        }
        for i in (0..3000).step_by(3) {
            db.delete(&key(i)).unwrap();
        }
        assert!(db.stats().flushes > 0, "small memtables must have flushed");
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), small_options()).unwrap();
    for i in 0..3000 {
        let want = (i % 3 != 0).then(|| format!("v{i}").into_bytes());
        assert_eq!(db.get(&key(i)).unwrap(), want, "key {i}");
    }
    assert_eq!(collect(&db).len(), 2000);
    db.flush().unwrap();
    drop(db);
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(collect(&db).len(), 2000);
    assert_eq!(db.stats().immutable_memtables, 0);
}

#[test]
fn scan_ranges_in_order_across_memtable_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    for i in (0..1000).rev() {
        db.put(&key(i), b"old").unwrap();
    }
    db.flush().unwrap();
    for i in (0..1000).step_by(2) {
        db.put(&key(i), b"new").unwrap();
    }
    db.delete(&key(501)).unwrap();
    let all = collect(&db);
    assert_eq!(all.len(), 999);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    for (k, v) in &all {
        let i: u32 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
        assert_eq!(v, if i % 2 == 0 { &b"new"[..] } else { &b"old"[..] });
    }
    let part: Vec<_> = db.scan(key(10)..key(20)).map(|r| r.unwrap().0).collect();
    assert_eq!(part, (10..20).map(key).collect::<Vec<_>>());
    let inclusive: Vec<_> = db.scan(key(998)..=key(999)).map(|r| r.unwrap().0).collect();
    assert_eq!(inclusive, vec![key(998), key(999)]);
    let excluded = (
        std::ops::Bound::Excluded(key(500)),
        std::ops::Bound::Included(key(503)),
    );
    let after: Vec<_> = db.scan(excluded).map(|r| r.unwrap().0).collect();
    assert_eq!(after, vec![key(502), key(503)]);
    let backward: Vec<_> = db
        .scan_rev(key(10)..key(13))
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(backward, vec![key(12), key(11), key(10)]);
    let everything_backward: Vec<_> = db.scan_rev(..).map(|r| r.unwrap().0).collect();
    assert_eq!(everything_backward.len(), 999);
    assert!(everything_backward.windows(2).all(|w| w[0] > w[1]));
    let prefixed: Vec<_> = db.scan_prefix(b"key00099").map(|r| r.unwrap().0).collect();
    assert_eq!(prefixed, (990..1000).map(key).collect::<Vec<_>>());
    let entries: Vec<_> = db
        .scan_entries(key(5)..key(7))
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].1.expires_at_ms, shoal_engine::NO_EXPIRY);
}

#[test]
fn batches_are_atomic_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"x".to_vec(), b"1".to_vec());
    batch.put(b"y".to_vec(), b"2".to_vec());
    batch.delete(b"x".to_vec());
    batch.put(b"z".to_vec(), b"3".to_vec());
    db.write(batch).unwrap();
    assert_eq!(db.get(b"x").unwrap(), None, "later op in a batch wins");
    assert_eq!(db.get(b"y").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(db.get(b"z").unwrap().as_deref(), Some(&b"3"[..]));
}

#[test]
fn snapshots_see_a_fixed_view() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    db.put(b"k", b"before").unwrap();
    let snap = db.snapshot();
    db.put(b"k", b"after").unwrap();
    db.put(b"new", b"x").unwrap();
    db.flush().unwrap();
    assert_eq!(snap.get(b"k").unwrap().as_deref(), Some(&b"before"[..]));
    assert_eq!(snap.get(b"new").unwrap(), None);
    assert_eq!(snap.scan(..).count(), 1);
    assert_eq!(snap.scan_prefix(b"k").count(), 1);
    assert_eq!(snap.scan_rev(..).count(), 1);
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"after"[..]));
}

#[test]
fn flush_drops_versions_no_reader_can_see() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    db.put(b"k", b"v1").unwrap();
    db.put(b"k", b"v2").unwrap();
    let snap = db.snapshot();
    db.put(b"k", b"v3").unwrap();
    db.put(b"k", b"v4").unwrap();
    db.delete(b"gone").unwrap();
    db.flush().unwrap();
    // v1 and v3 are shadowed (by v2 for the snapshot, by v4 for everyone else); the
    // tombstone stays, since older tables could hold the key.
    let stats = db.stats();
    assert_eq!(stats.versions_shadowed, 2);
    assert_eq!(stats.levels[0].tables, 1);
    assert_eq!(snap.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v4"[..]));
    drop(snap);
    db.close().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v4"[..]));
    assert_eq!(db.get(b"gone").unwrap(), None);
}

#[test]
fn entries_expire_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicU64::new(1_000_000)));
    let options = Options {
        clock: clock.clone(),
        ..small_options()
    };
    {
        let db = Db::open(dir.path(), options.clone()).unwrap();
        let mut batch = WriteBatch::new();
        batch.put_entry(
            b"ttl".to_vec(),
            Entry {
                kind: ValueKind::Put,
                expires_at_ms: 1_000_500,
                value: b"soon gone".to_vec(),
            },
        );
        batch.put(b"forever".to_vec(), b"stays".to_vec());
        db.write(batch).unwrap();
        let e = db.get_entry(b"ttl").unwrap().unwrap();
        assert_eq!(e.expires_at_ms, 1_000_500);
        db.flush().unwrap();
        clock.0.store(1_000_499, Ordering::SeqCst);
        assert!(db.get(b"ttl").unwrap().is_some());
        db.close().unwrap();
    }
    clock.0.store(1_000_500, Ordering::SeqCst);
    let db = Db::open(dir.path(), options).unwrap();
    assert_eq!(db.get(b"ttl").unwrap(), None, "expired across restart");
    assert_eq!(collect(&db), vec![(b"forever".to_vec(), b"stays".to_vec())]);
}

#[test]
fn refuses_oversized_keys_and_expiring_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    let big = vec![b'k'; shoal_engine::types::STORED_KEY_LEN_MAX + 1];
    assert!(matches!(
        db.put(&big, b"v"),
        Err(shoal_engine::Error::InvalidArgument(_))
    ));
    let mut batch = WriteBatch::new();
    batch.put_entry(
        b"t".to_vec(),
        Entry {
            kind: ValueKind::Delete,
            expires_at_ms: 5,
            value: vec![],
        },
    );
    assert!(db.write(batch).is_err());
}

/// A user key at `KEY_LEN_MAX` still fits behind the longest prefix an embedder may add, through
/// the memtable, a flushed table and a reopen.
#[test]
fn a_prefixed_key_at_the_user_limit_is_stored() {
    use shoal_engine::types::{KEY_LEN_MAX, KEY_PREFIX_LEN_MAX};
    let dir = tempfile::tempdir().unwrap();
    let key = |fill: u8| {
        let mut k = vec![0xEE; KEY_PREFIX_LEN_MAX];
        k.extend(std::iter::repeat_n(fill, KEY_LEN_MAX));
        k
    };
    let db = Db::open(dir.path(), small_options()).unwrap();
    db.put(&key(b'a'), b"in a table").unwrap();
    db.flush().unwrap();
    db.put(&key(b'b'), b"in the log").unwrap();
    db.close().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(
        db.get(&key(b'a')).unwrap().as_deref(),
        Some(&b"in a table"[..])
    );
    assert_eq!(
        db.get(&key(b'b')).unwrap().as_deref(),
        Some(&b"in the log"[..])
    );
    db.close().unwrap();
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open(dir.path(), small_options()).unwrap();
    assert!(Db::open(dir.path(), small_options()).is_err());
}

#[test]
fn concurrent_synced_writers_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Db::open(
            dir.path(),
            Options {
                durability: Durability::Sync,
                ..small_options()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..16u32)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..100 {
                    db.put(&key(t * 1000 + i), b"v").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(collect(&db).len(), 1600);
    let db = Arc::into_inner(db).unwrap();
    db.close().unwrap();
    let db = Db::open(dir.path(), small_options()).unwrap();
    assert_eq!(collect(&db).len(), 1600);
}

/// A checkpoint opens as a database of its own holding every write acknowledged before it,
/// its tables shared with the source by hard links; later writes to either stay apart.
#[test]
fn a_checkpoint_opens_on_its_own() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let backup = tmp.path().join("backup");
    let db = Db::open(&dir, small_options()).unwrap();
    for i in 0..500 {
        db.put(&key(i), b"in a table").unwrap();
    }
    db.flush().unwrap();
    for i in 0..100 {
        db.put(&key(i), b"in the log").unwrap();
    }
    db.checkpoint(&backup).unwrap();
    assert!(db.checkpoint(&backup).is_err(), "the destination exists");
    db.put(b"after", b"the checkpoint").unwrap();
    let shared = db.tables().iter().any(|t| {
        let name = shoal_engine::filename::table(&backup, t.number);
        std::fs::metadata(name).is_ok_and(|m| m.nlink() == 2)
    });
    assert!(shared, "tables are hard links");
    db.close().unwrap();

    let copy = Db::open(&backup, small_options()).unwrap();
    assert_eq!(
        copy.get(&key(0)).unwrap().as_deref(),
        Some(&b"in the log"[..])
    );
    assert_eq!(
        copy.get(&key(499)).unwrap().as_deref(),
        Some(&b"in a table"[..])
    );
    assert_eq!(copy.get(b"after").unwrap(), None);
    assert_eq!(copy.scan(..).count(), 500);
    copy.put(b"only", b"in the copy").unwrap();
    copy.close().unwrap();
    let db = Db::open(&dir, small_options()).unwrap();
    assert_eq!(db.get(b"only").unwrap(), None);
    assert_eq!(
        db.get(b"after").unwrap().as_deref(),
        Some(&b"the checkpoint"[..])
    );
}
