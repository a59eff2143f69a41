use std::collections::BTreeSet;
use std::path::Path;

use futures_lite::future::block_on;

use super::*;
use crate::Error;
use crate::fs::WRITE_ALIGN;

const A: usize = WRITE_ALIGN;

fn block(byte: u8, blocks: usize) -> Vec<u8> {
    vec![byte; blocks * A]
}

/// A filesystem with a durable directory `/db`.
fn fs_with_db() -> FaultFs {
    let fs = FaultFs::new();
    block_on(async {
        fs.create_dir_all(Path::new("/db")).await.unwrap();
        fs.sync_dir(Path::new("/")).await.unwrap();
    });
    fs
}

/// Creates `path` with `data`, syncs its data and its directory.
fn durable_file(fs: &FaultFs, path: &str, data: &[u8]) {
    block_on(async {
        let p = Path::new(path);
        let f = fs.create(p).await.unwrap();
        f.write_at(0, data).await.unwrap();
        f.sync_data().await.unwrap();
        fs.sync_dir(p.parent().unwrap()).await.unwrap();
    });
}

fn names(fs: &FaultFs, dir: &str) -> BTreeSet<String> {
    block_on(fs.list_dir(Path::new(dir)))
        .unwrap()
        .into_iter()
        .collect()
}

fn raw(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

#[test]
fn files_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    fn check_file<T: Send + Sync>() {}
    check::<FaultFs>();
    check_file::<FaultFile>();
}

#[test]
fn unsynced_write_is_lost_and_synced_write_kept() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/a", &block(1, 2));
    block_on(async {
        let f = fs.open(Path::new("/db/a")).await.unwrap();
        f.write_at(0, &block(2, 1)).await.unwrap();
        f.write_at(2 * A as u64, &block(3, 1)).await.unwrap();
        assert_eq!(f.len().await.unwrap(), 3 * A as u64);
    });
    fs.crash_lose_unsynced();
    assert_eq!(fs.contents(Path::new("/db/a")).unwrap(), block(1, 2));

    block_on(async {
        let f = fs.open(Path::new("/db/a")).await.unwrap();
        f.write_at(A as u64, &block(4, 1)).await.unwrap();
        f.sync_data().await.unwrap();
    });
    for seed in 0..20 {
        fs.crash(seed);
        let mut want = block(1, 1);
        want.extend(block(4, 1));
        assert_eq!(fs.contents(Path::new("/db/a")).unwrap(), want);
    }
}

#[test]
fn created_file_vanishes_without_dir_sync() {
    let fs = fs_with_db();
    block_on(async {
        let f = fs.create(Path::new("/db/new")).await.unwrap();
        f.write_at(0, &block(7, 1)).await.unwrap();
        f.sync_data().await.unwrap();
    });
    assert!(names(&fs, "/db").contains("new"));
    fs.crash(1);
    assert!(names(&fs, "/db").is_empty());
    let err = block_on(fs.open(Path::new("/db/new"))).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);

    block_on(async {
        let f = fs.create(Path::new("/db/new")).await.unwrap();
        f.write_at(0, &block(7, 1)).await.unwrap();
        fs.sync_dir(Path::new("/db")).await.unwrap();
    });
    fs.crash_lose_unsynced();
    assert_eq!(
        fs.contents(Path::new("/db/new")).unwrap(),
        Vec::<u8>::new(),
        "the name is durable, the unsynced data is not"
    );
}

#[test]
fn directory_needs_its_parent_synced() {
    let fs = FaultFs::new();
    block_on(async {
        fs.create_dir_all(Path::new("/a/b")).await.unwrap();
        fs.sync_dir(Path::new("/a/b")).await.unwrap();
    });
    durable_file(&fs, "/a/b/f", &block(1, 1));
    fs.crash(3);
    assert!(fs.files().is_empty());
    assert!(block_on(fs.list_dir(Path::new("/a"))).is_err());

    block_on(async {
        fs.create_dir_all(Path::new("/a/b")).await.unwrap();
        fs.sync_dir(Path::new("/")).await.unwrap();
        fs.sync_dir(Path::new("/a")).await.unwrap();
    });
    durable_file(&fs, "/a/b/f", &block(1, 1));
    fs.crash(3);
    assert_eq!(fs.files(), vec![PathBuf::from("/a/b/f")]);
}

#[test]
fn rename_is_undone_without_dir_sync() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/tmp", &block(1, 1));
    durable_file(&fs, "/db/current", &block(2, 1));
    block_on(fs.rename(Path::new("/db/tmp"), Path::new("/db/current"))).unwrap();
    assert_eq!(names(&fs, "/db"), BTreeSet::from(["current".to_owned()]));
    assert_eq!(fs.contents(Path::new("/db/current")).unwrap(), block(1, 1));

    fs.crash(5);
    assert_eq!(
        names(&fs, "/db"),
        BTreeSet::from(["current".to_owned(), "tmp".to_owned()])
    );
    assert_eq!(fs.contents(Path::new("/db/current")).unwrap(), block(2, 1));
    assert_eq!(fs.contents(Path::new("/db/tmp")).unwrap(), block(1, 1));

    block_on(async {
        fs.rename(Path::new("/db/tmp"), Path::new("/db/current"))
            .await
            .unwrap();
        fs.sync_dir(Path::new("/db")).await.unwrap();
    });
    fs.crash(5);
    assert_eq!(names(&fs, "/db"), BTreeSet::from(["current".to_owned()]));
    assert_eq!(fs.contents(Path::new("/db/current")).unwrap(), block(1, 1));
}

#[test]
fn remove_is_undone_without_dir_sync() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/old", &block(9, 1));
    block_on(fs.remove(Path::new("/db/old"))).unwrap();
    assert!(names(&fs, "/db").is_empty());
    fs.crash(0);
    assert_eq!(fs.contents(Path::new("/db/old")).unwrap(), block(9, 1));

    block_on(async {
        fs.remove(Path::new("/db/old")).await.unwrap();
        fs.sync_dir(Path::new("/db")).await.unwrap();
    });
    fs.crash(0);
    assert!(fs.files().is_empty());
}

#[test]
fn removed_file_stays_readable_through_open_handle() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/t", &block(5, 1));
    block_on(async {
        let f = fs.open(Path::new("/db/t")).await.unwrap();
        fs.remove(Path::new("/db/t")).await.unwrap();
        fs.sync_dir(Path::new("/db")).await.unwrap();
        assert_eq!(f.read_at(0, A).await.unwrap(), block(5, 1));
        assert_eq!(fs.total_bytes(), A as u64);
        drop(f);
        assert_eq!(fs.total_bytes(), 0);
    });
}

/// Whether `got` is a disk a crash may leave: the durable contents plus the first `k` pending
/// writes and a prefix of write `k + 1`. For each `k` only the longest matching prefix needs
/// checking: a shorter one that fits leaves the same bytes.
fn is_crash_outcome(durable: &[u8], writes: &[(u64, Vec<u8>)], got: &[u8]) -> bool {
    let mut base = durable.to_vec();
    for (pos, data) in writes {
        if got == base.as_slice() {
            return true;
        }
        let start = *pos as usize;
        let cut = data
            .iter()
            .zip(got.get(start..).unwrap_or_default())
            .take_while(|(a, b)| a == b)
            .count();
        let mut torn = base.clone();
        write_into(&mut torn, *pos, &data[..cut]);
        if got == torn.as_slice() {
            return true;
        }
        write_into(&mut base, *pos, data);
    }
    got == base.as_slice()
}

fn pending_scenario(fs: &FaultFs) -> Vec<(u64, Vec<u8>)> {
    // Distinct bytes per position so a torn write is visible at every byte.
    let pattern = |salt: u8| -> Vec<u8> { (0..A).map(|i| (i % 251) as u8 ^ salt).collect() };
    let writes = vec![
        (A as u64, pattern(0x11)),
        (0, pattern(0x22)),
        (3 * A as u64, pattern(0x33)),
        (A as u64, pattern(0x44)),
    ];
    block_on(async {
        let f = fs.open(Path::new("/db/log")).await.unwrap();
        for (pos, data) in &writes {
            f.write_at(*pos, data).await.unwrap();
        }
    });
    writes
}

#[test]
fn torn_writes_leave_a_prefix() {
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let fs = fs_with_db();
        durable_file(&fs, "/db/log", &block(0xEE, 2));
        let writes = pending_scenario(&fs);
        fs.crash(seed);
        let got = fs.contents(Path::new("/db/log")).unwrap();
        assert!(
            is_crash_outcome(&block(0xEE, 2), &writes, &got),
            "seed {seed}: not a prefix"
        );
        seen.insert(got);
    }
    // The checker itself rejects a disk holding a later write without an earlier one.
    let fs = fs_with_db();
    durable_file(&fs, "/db/log", &block(0xEE, 2));
    let writes = pending_scenario(&fs);
    let mut reordered = block(0xEE, 2);
    write_into(&mut reordered, writes[1].0, &writes[1].1);
    assert!(!is_crash_outcome(&block(0xEE, 2), &writes, &reordered));
    // The seeds explore: nothing kept, everything kept, and torn writes in between.
    assert!(seen.contains(&block(0xEE, 2)));
    let fs = fs_with_db();
    durable_file(&fs, "/db/log", &block(0xEE, 2));
    pending_scenario(&fs);
    let all = fs.contents(Path::new("/db/log")).unwrap();
    assert!(seen.contains(&all));
    assert!(seen.len() > 20, "only {} outcomes", seen.len());
}

#[test]
fn crash_is_deterministic_per_seed() {
    let run = |seed: u64| -> Vec<Vec<u8>> {
        let fs = fs_with_db();
        for name in ["/db/a", "/db/b", "/db/c"] {
            durable_file(&fs, name, &block(1, 1));
            block_on(async {
                let f = fs.open(Path::new(name)).await.unwrap();
                for i in 0..5u8 {
                    f.write_at(u64::from(i) * A as u64, &block(i + 10, 1))
                        .await
                        .unwrap();
                }
            });
        }
        fs.crash(seed);
        fs.files().iter().map(|p| fs.contents(p).unwrap()).collect()
    };
    for seed in [0, 1, 42, 0xDEAD_BEEF] {
        assert_eq!(run(seed), run(seed), "seed {seed}");
    }
    let distinct: BTreeSet<_> = (0..16).map(run).collect();
    assert!(distinct.len() > 1, "the seed must matter");
}

#[test]
fn handles_die_in_a_crash_and_the_fs_keeps_working() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/f", &block(1, 1));
    let f = block_on(fs.open(Path::new("/db/f"))).unwrap();
    fs.crash(9);
    block_on(async {
        let dead = |e: io::Error| assert_eq!(raw(&e), Some(libc::EBADF));
        dead(f.read_at(0, 1).await.unwrap_err());
        dead(f.write_at(0, &block(2, 1)).await.unwrap_err());
        dead(f.sync_data().await.unwrap_err());
        dead(f.len().await.unwrap_err());
        dead(f.set_len(0).await.unwrap_err());

        let g = fs.open(Path::new("/db/f")).await.unwrap();
        assert_eq!(g.read_at(0, A).await.unwrap(), block(1, 1));
        drop(f);
        g.write_at(0, &block(3, 1)).await.unwrap();
        assert_eq!(g.read_at(0, 4).await.unwrap(), vec![3; 4]);
    });
}

#[test]
fn fault_rule_fires_for_each_op() {
    let cases = [
        FaultOp::Open,
        FaultOp::Read,
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::Rename,
        FaultOp::Remove,
        FaultOp::SyncDir,
    ];
    for op in cases {
        let fs = fs_with_db();
        durable_file(&fs, "/db/f", &block(1, 1));
        fs.inject(FaultRule::new(op, FaultError::Eio));
        let f = block_on(async {
            let f = match fs.open(Path::new("/db/f")).await {
                Err(e) => {
                    assert_eq!(op, FaultOp::Open);
                    assert_eq!(raw(&e), Some(libc::EIO));
                    return None;
                }
                Ok(f) => f,
            };
            let result = match op {
                FaultOp::Open => unreachable!("open failed above"),
                FaultOp::Read => f.read_at(0, 1).await.map(drop),
                FaultOp::Write => f.write_at(0, &block(2, 1)).await,
                FaultOp::Sync => f.sync_data().await,
                FaultOp::Rename => fs.rename(Path::new("/db/f"), Path::new("/db/g")).await,
                FaultOp::Remove => fs.remove(Path::new("/db/f")).await,
                FaultOp::SyncDir => fs.sync_dir(Path::new("/db")).await,
            };
            assert_eq!(raw(&result.unwrap_err()), Some(libc::EIO), "{op:?}");
            Some(f)
        });
        assert_eq!(fs.faults_fired(), 1, "{op:?}");
        // A failed call changed nothing.
        assert_eq!(fs.files(), vec![PathBuf::from("/db/f")], "{op:?}");
        assert_eq!(fs.contents(Path::new("/db/f")).unwrap(), block(1, 1));
        drop(f);
        // Once: the next call succeeds.
        block_on(async {
            let f = fs.open(Path::new("/db/f")).await.unwrap();
            f.read_at(0, 1).await.unwrap();
            f.write_at(0, &block(2, 1)).await.unwrap();
            f.sync_data().await.unwrap();
            fs.sync_dir(Path::new("/db")).await.unwrap();
        });
    }
}

#[test]
fn failed_sync_keeps_writes_unsynced() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/f", &block(1, 1));
    fs.inject(FaultRule::new(FaultOp::Sync, FaultError::Eio));
    block_on(async {
        let f = fs.open(Path::new("/db/f")).await.unwrap();
        f.write_at(0, &block(2, 1)).await.unwrap();
        assert!(f.sync_data().await.is_err());
    });
    fs.crash_lose_unsynced();
    assert_eq!(fs.contents(Path::new("/db/f")).unwrap(), block(1, 1));
}

#[test]
fn fault_rule_path_filter_skip_and_persistence() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/000001.log", &[]);
    durable_file(&fs, "/db/000002.sst", &[]);
    fs.inject(
        FaultRule::new(FaultOp::Write, FaultError::NoSpace)
            .on_path(".log")
            .after(2)
            .persistent(),
    );
    block_on(async {
        let log = fs.open(Path::new("/db/000001.log")).await.unwrap();
        let sst = fs.open(Path::new("/db/000002.sst")).await.unwrap();
        for i in 0..5 {
            sst.write_at(i * A as u64, &block(1, 1)).await.unwrap();
        }
        log.write_at(0, &block(1, 1)).await.unwrap();
        log.write_at(A as u64, &block(1, 1)).await.unwrap();
        for _ in 0..3 {
            let e = log.write_at(2 * A as u64, &block(1, 1)).await.unwrap_err();
            assert_eq!(raw(&e), Some(libc::ENOSPC));
            assert!(matches!(
                Error::io("/db/000001.log", e),
                Error::NoSpace { .. }
            ));
        }
        assert_eq!(log.len().await.unwrap(), 2 * A as u64);
        assert_eq!(fs.faults_fired(), 3);
        fs.clear_faults();
        log.write_at(2 * A as u64, &block(1, 1)).await.unwrap();
    });
}

#[test]
fn rename_rule_matches_either_path() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/a.tmp", &[]);
    fs.inject(FaultRule::new(FaultOp::Rename, FaultError::Eio).on_path("MANIFEST"));
    let e = block_on(fs.rename(Path::new("/db/a.tmp"), Path::new("/db/MANIFEST"))).unwrap_err();
    assert_eq!(raw(&e), Some(libc::EIO));
    assert_eq!(fs.files(), vec![PathBuf::from("/db/a.tmp")]);
}

#[test]
fn capacity_limits_growth() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/a", &block(1, 2));
    fs.set_capacity(Some(4 * A as u64));
    block_on(async {
        let b = fs.create(Path::new("/db/b")).await.unwrap();
        b.write_at(0, &block(2, 2)).await.unwrap();
        assert_eq!(fs.total_bytes(), 4 * A as u64);
        let e = b.write_at(2 * A as u64, &block(2, 1)).await.unwrap_err();
        assert_eq!(raw(&e), Some(libc::ENOSPC));
        let e = b.set_len(3 * A as u64).await.unwrap_err();
        assert_eq!(raw(&e), Some(libc::ENOSPC));
        assert_eq!(fs.contents(Path::new("/db/b")).unwrap(), block(2, 2));
        // Overwriting in place needs no space.
        b.write_at(0, &block(3, 2)).await.unwrap();
        // Removing a file frees its space.
        fs.remove(Path::new("/db/a")).await.unwrap();
        b.write_at(2 * A as u64, &block(2, 2)).await.unwrap();
        fs.set_capacity(None);
        b.write_at(4 * A as u64, &block(2, 8)).await.unwrap();
    });
}

#[test]
#[should_panic(expected = "unaligned write offset")]
fn unaligned_write_offset_panics() {
    let fs = fs_with_db();
    block_on(async {
        let f = fs.create(Path::new("/db/f")).await.unwrap();
        let _ = f.write_at(100, &block(0, 1)).await;
    });
}

#[test]
#[should_panic(expected = "unaligned write length")]
fn unaligned_write_length_panics() {
    let fs = fs_with_db();
    block_on(async {
        let f = fs.create(Path::new("/db/f")).await.unwrap();
        let _ = f.write_at(0, &[1, 2, 3]).await;
    });
}

#[test]
fn reads_any_range_and_short_at_eof() {
    let fs = fs_with_db();
    let data: Vec<u8> = (0..2 * A).map(|i| (i % 256) as u8).collect();
    durable_file(&fs, "/db/f", &data);
    block_on(async {
        let f = fs.open(Path::new("/db/f")).await.unwrap();
        assert_eq!(f.read_at(5, 100).await.unwrap(), &data[5..105]);
        assert_eq!(
            f.read_at(2 * A as u64 - 10, 100).await.unwrap(),
            &data[2 * A - 10..]
        );
        assert!(f.read_at(10 * A as u64, 10).await.unwrap().is_empty());
        f.set_len(10).await.unwrap();
        assert_eq!(f.read_at(0, A).await.unwrap(), &data[..10]);
    });
}

#[test]
fn create_truncates_and_truncation_is_pending_until_sync() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/f", &block(1, 1));
    block_on(fs.create(Path::new("/db/f"))).unwrap();
    assert!(fs.contents(Path::new("/db/f")).unwrap().is_empty());
    fs.crash_lose_unsynced();
    assert_eq!(fs.contents(Path::new("/db/f")).unwrap(), block(1, 1));
}

#[test]
fn namespace_errors() {
    let fs = fs_with_db();
    block_on(async {
        let nf = |e: io::Error| assert_eq!(e.kind(), io::ErrorKind::NotFound);
        nf(fs.create(Path::new("/nope/f")).await.unwrap_err());
        nf(fs.open(Path::new("/db/missing")).await.unwrap_err());
        nf(fs.remove(Path::new("/db/missing")).await.unwrap_err());
        nf(fs.list_dir(Path::new("/nope")).await.unwrap_err());
        assert_eq!(
            raw(&fs.open(Path::new("/db")).await.unwrap_err()),
            Some(libc::EISDIR)
        );
    });
}

#[test]
fn test_helpers() {
    let fs = fs_with_db();
    durable_file(&fs, "/db/a", &block(0, 1));
    durable_file(&fs, "/db/b", &block(0, 2));
    fs.corrupt(Path::new("/db/a"), 7).unwrap();
    let a = fs.contents(Path::new("/db/a")).unwrap();
    assert_eq!(a[7], 0xFF);
    assert_eq!(a.iter().filter(|b| **b != 0).count(), 1);
    assert!(fs.corrupt(Path::new("/db/a"), A as u64).is_err());
    fs.crash(0);
    assert_eq!(
        fs.contents(Path::new("/db/a")).unwrap()[7],
        0xFF,
        "damage is durable"
    );
    assert_eq!(
        fs.files(),
        vec![PathBuf::from("/db/a"), PathBuf::from("/db/b")]
    );
    assert_eq!(fs.total_bytes(), 3 * A as u64);
}

#[test]
fn oversized_files_are_refused() {
    let fs = fs_with_db();
    block_on(async {
        let f = fs.create(Path::new("/db/f")).await.unwrap();
        let big = |e: io::Error| assert_eq!(raw(&e), Some(libc::EFBIG));
        big(f.set_len(FILE_LEN_MAX + 1).await.unwrap_err());
        big(f.write_at(FILE_LEN_MAX, &block(1, 1)).await.unwrap_err());
        big(f
            .write_at(u64::MAX - (A as u64 - 1), &block(1, 1))
            .await
            .unwrap_err());
        assert_eq!(f.len().await.unwrap(), 0);
    });
}

#[test]
fn rename_across_directories_needs_both_synced() {
    let fs = fs_with_db();
    block_on(async {
        fs.create_dir_all(Path::new("/db/archive")).await.unwrap();
        fs.sync_dir(Path::new("/db")).await.unwrap();
    });
    durable_file(&fs, "/db/f", &block(1, 1));
    block_on(async {
        fs.rename(Path::new("/db/f"), Path::new("/db/archive/f"))
            .await
            .unwrap();
        fs.sync_dir(Path::new("/db/archive")).await.unwrap();
    });
    fs.crash(0);
    assert_eq!(
        fs.files(),
        vec![PathBuf::from("/db/archive/f"), PathBuf::from("/db/f")]
    );
}
