//! `sstable-dump` run as a program on files the engine wrote.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shoal_engine::{Options, blocking::Db};

const KEYS: usize = 300;

fn options() -> Options {
    Options {
        block_bytes: 512,
        log_segment_bytes: 64 << 10,
        ..Options::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// A database with one table (KEYS puts, every 10th key deleted, one binary key) and a few
/// writes left in the commit log. Returns the table's path. No reader holds a snapshot, so
/// the flush keeps only each key's newest version: the deleted keys are bare tombstones.
fn database(dir: &Path) -> PathBuf {
    let db = Db::open(dir, options()).unwrap();
    for i in 0..KEYS {
        db.put(&key(i), format!("value-{i}").as_bytes()).unwrap();
    }
    for i in (0..KEYS).step_by(10) {
        db.delete(&key(i)).unwrap();
    }
    db.put(b"bin\x01key", b"\x00\xffraw").unwrap();
    db.flush().unwrap();
    db.put(b"unflushed", b"in the log").unwrap();
    db.delete(&key(1)).unwrap();
    db.close().unwrap();
    files(dir, "sst").remove(0)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn dump(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstable-dump"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The entry lines after "entries:".
fn entries(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|l| *l != "entries:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect()
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

#[test]
fn dumps_every_part_of_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let table = database(tmp.path());
    let out = dump(&[table.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let tombstones = KEYS.div_ceil(10);
    let total = KEYS + 1;
    for want in [
        "footer:".to_owned(),
        format!(
            "  format version: {}",
            shoal_engine::sstable::FORMAT_VERSION
        ),
        format!("  entries: {total}"),
        format!("  tombstones: {tombstones}"),
        "  smallest key: \"bin\\x01key\"".to_owned(),
        "  largest key: \"key-0299\"".to_owned(),
        "bloom filter:".to_owned(),
        format!(
            "  hash functions: {}",
            shoal_engine::sstable::bloom::probes_for(options().bloom_bits_per_key)
        ),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "no line {want:?} in\n{text}"
        );
    }
    let blocks: usize = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("index: ")?
                .strip_suffix(" blocks")?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(blocks > 5);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("  block ")).count(),
        blocks
    );
    let e = entries(&text);
    assert_eq!(e.len(), total);
    assert_eq!(e[0], "  \"bin\\x01key\" seq 331 put \"\\x00\\xffraw\"");
    assert!(e.contains(&"  \"key-0010\" seq 302 delete"), "{e:?}");
    assert!(
        e.contains(&"  \"key-0011\" seq 12 put \"value-11\""),
        "{e:?}"
    );
    assert!(
        !e.iter().any(|l| l.contains("value-10\"")),
        "shadowed: {e:?}"
    );
}

#[test]
fn limit_and_key_select_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let table = database(tmp.path());
    let t = table.to_str().unwrap();
    let out = dump(&["--limit", "3", t]);
    assert_eq!(entries(&stdout(&out)).len(), 3);
    let out = dump(&["--limit", "0", t]);
    assert!(entries(&stdout(&out)).is_empty());
    let out = dump(&["--key", "key-0020", t]);
    assert_eq!(entries(&stdout(&out)), ["  \"key-0020\" seq 303 delete"]);
    let out = dump(&["--key", "bin\\x01key", t]);
    assert_eq!(entries(&stdout(&out)).len(), 1);
    let out = dump(&["--key", "absent", t]);
    assert!(out.status.success());
    assert!(entries(&stdout(&out)).is_empty());
    let out = dump(&["--key", "bad\\q", t]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_passes_on_good_tables_and_fails_on_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let table = database(&tmp.path().join("db"));
    let out = dump(&["--verify", "--limit", "0", table.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("verify: ok"));

    let len = std::fs::metadata(&table).unwrap().len();
    // A data block (found only by reading it), the index, the footer.
    for at in [40, len - 64 - 120, len - 20] {
        let bad = tmp.path().join(format!("bad-{at}.sst"));
        std::fs::copy(&table, &bad).unwrap();
        flip(&bad, at);
        let out = dump(&["--verify", "--limit", "0", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "flip at {at}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("corruption in") && err.contains(bad.to_str().unwrap()),
            "{err}"
        );
    }
    // Several files: the good one still dumps, the status reports the bad one.
    let bad = tmp.path().join(format!("bad-{}.sst", len - 20));
    let out = dump(&[
        "--limit",
        "0",
        table.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("entries:"));
}

#[test]
fn dumps_the_commit_log_and_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    database(tmp.path());
    let segment = files(&tmp.path().join("log"), "log")
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let seg = segment.to_str().unwrap();
    for args in [vec![seg], vec!["--log", seg]] {
        let out = dump(&args);
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        assert!(
            text.contains("  \"unflushed\" seq 332 put \"in the log\""),
            "{text}"
        );
        assert!(text.contains("  \"key-0001\" seq 333 delete"), "{text}");
        assert!(text.contains("zeroed space"), "{text}");
    }
    let out = dump(&["--verify", seg]);
    assert!(out.status.success());
    // Damage in the first record, with the second intact after it.
    let text = stdout(&out);
    let first: u64 = text
        .lines()
        .find_map(|l| l.split(" offset ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap();
    flip(&segment, first + 20);
    let out = dump(&["--verify", seg]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8(out.stderr).unwrap().contains("checksum"));

    let out = dump(&["--manifest", tmp.path().to_str().unwrap(), "--verify"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("  tables: 1"), "{text}");
    assert!(text.contains("  + table 0 level 0"), "{text}");
    assert!(text.contains("verify: ok"), "{text}");
}

/// Flushes release old log segments; the log keeps some as recycled `.free` files, which the
/// dump lists as such, alone or in a whole log directory, and never counts as damage.
#[test]
fn recycled_log_segments_are_listed_not_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), options()).unwrap();
    let value = vec![b'v'; 1000];
    for round in 0..6 {
        for i in 0..100 {
            db.put(&key(round * 100 + i), &value).unwrap();
        }
        db.flush().unwrap();
    }
    db.close().unwrap();
    let log = tmp.path().join("log");
    let free = files(&log, "free");
    assert!(!free.is_empty(), "no recycled segment in {log:?}");
    let out = dump(&[free[0].to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("recycled, not part of the log"), "{text}");
    assert!(text.contains("it held segment "), "{text}");

    let mut all = files(&log, "log");
    all.extend(free.iter().cloned());
    let mut args = vec!["--verify", "--limit", "0"];
    args.extend(all.iter().map(|p| p.to_str().unwrap()));
    let out = dump(&args);
    assert!(out.status.success(), "{out:?}");

    for dir in [tmp.path(), log.as_path()] {
        let out = dump(&["--verify", "--limit", "0", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        assert_eq!(
            text.matches("recycled, not part of the log").count(),
            free.len(),
            "{text}"
        );
        assert!(text.contains("log segment "), "{text}");
    }
}
