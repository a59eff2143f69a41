use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;

use glommio::{LocalExecutorBuilder, Placement};

use super::*;
use crate::fs::WRITE_ALIGN;

const A: usize = WRITE_ALIGN;

/// Runs `f` on a fresh glommio executor on this thread, with a DmaFs in a new ext4 tempdir.
fn run<F, Fut>(f: F)
where
    F: FnOnce(DmaFs, PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    ex.run(async move {
        let fs = DmaFs::new(&root).await.unwrap();
        f(fs, root).await;
    });
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
}

#[test]
fn probe_leaves_no_file_behind() {
    run(|fs, root| async move {
        assert!(fs.list_dir(&root).await.unwrap().is_empty());
    });
}

#[test]
fn reads_work_after_an_empty_file_was_opened_first() {
    // Without the warm-up probe, opening an empty read+write file first makes glommio cache
    // "pollable" and every later read fails with EOPNOTSUPP.
    run(|fs, root| async move {
        let empty = fs.create(&root.join("empty")).await.unwrap();
        assert!(empty.read_at(0, 10).await.unwrap().is_empty());
        let data = pattern(2 * A, 3);
        std::fs::write(root.join("data"), &data).unwrap();
        let f = fs.open(&root.join("data")).await.unwrap();
        assert_eq!(f.read_at(0, 2 * A).await.unwrap(), data);
    });
}

#[test]
fn write_sync_read_back() {
    run(|fs, root| async move {
        let p = root.join("000001.sst");
        let f = fs.create(&p).await.unwrap();
        let data = pattern(3 * A, 7);
        f.write_at(0, &data).await.unwrap();
        f.write_at(3 * A as u64, &pattern(A, 9)).await.unwrap();
        f.sync_data().await.unwrap();
        assert_eq!(f.len().await.unwrap(), 4 * A as u64);
        assert_eq!(f.read_at(0, 3 * A).await.unwrap(), data);
        assert_eq!(f.path(), p.as_path());
        drop(f);
        // Another handle, and the kernel's view, agree.
        let g = fs.open(&p).await.unwrap();
        assert_eq!(g.read_at(3 * A as u64, A).await.unwrap(), pattern(A, 9));
        let on_disk = std::fs::read(&p).unwrap();
        assert_eq!(&on_disk[..3 * A], &data[..]);
    });
}

#[test]
fn unaligned_reads_and_short_read_at_eof() {
    run(|fs, root| async move {
        let data = pattern(3 * A, 1);
        let f = fs.create(&root.join("f")).await.unwrap();
        f.write_at(0, &data).await.unwrap();
        f.set_len(3 * A as u64 - 100).await.unwrap();
        let data = &data[..3 * A - 100];
        for (pos, len) in [(1, 10), (511, 2), (A - 3, 7), (100, 2 * A + 5), (0, 1)] {
            let got = f.read_at(pos as u64, len).await.unwrap();
            assert_eq!(got, &data[pos..pos + len], "read_at({pos}, {len})");
        }
        // Short only at end of file, including reads that start mid-block near the end.
        let end = data.len();
        assert_eq!(
            f.read_at(end as u64 - 10, 100).await.unwrap(),
            &data[end - 10..]
        );
        assert_eq!(
            f.read_at(A as u64 + 5, 10 * A).await.unwrap(),
            &data[A + 5..]
        );
        assert!(f.read_at(end as u64, 10).await.unwrap().is_empty());
        assert!(f.read_at(end as u64 + 3, 10).await.unwrap().is_empty());
        assert!(f.read_at(10 * A as u64, 10).await.unwrap().is_empty());
        assert!(f.read_at(0, 0).await.unwrap().is_empty());
    });
}

#[test]
fn set_len_truncates_and_extends_with_zeros() {
    run(|fs, root| async move {
        let f = fs.create(&root.join("f")).await.unwrap();
        f.write_at(0, &pattern(2 * A, 5)).await.unwrap();
        f.set_len(10).await.unwrap();
        assert_eq!(f.len().await.unwrap(), 10);
        assert_eq!(f.read_at(0, A).await.unwrap(), &pattern(2 * A, 5)[..10]);
        f.set_len(2 * A as u64).await.unwrap();
        let got = f.read_at(0, 2 * A).await.unwrap();
        assert_eq!(&got[..10], &pattern(10, 5)[..]);
        assert!(got[10..].iter().all(|b| *b == 0));
    });
}

#[test]
fn empty_file() {
    run(|fs, root| async move {
        let p = root.join("empty");
        let f = fs.create(&p).await.unwrap();
        assert_eq!(f.len().await.unwrap(), 0);
        assert!(f.read_at(0, A).await.unwrap().is_empty());
        f.sync_data().await.unwrap();
        drop(f);
        let g = fs.open(&p).await.unwrap();
        assert_eq!(g.len().await.unwrap(), 0);
    });
}

#[test]
fn create_truncates_an_existing_file() {
    run(|fs, root| async move {
        let p = root.join("f");
        let f = fs.create(&p).await.unwrap();
        f.write_at(0, &pattern(A, 1)).await.unwrap();
        drop(f);
        let f = fs.create(&p).await.unwrap();
        assert_eq!(f.len().await.unwrap(), 0);
    });
}

#[test]
fn namespace_operations() {
    run(|fs, root| async move {
        let sub = root.join("shard-0");
        fs.create_dir_all(&sub).await.unwrap();
        for name in ["a.tmp", "b", "c"] {
            let f = fs.create(&sub.join(name)).await.unwrap();
            f.write_at(0, &pattern(A, name.len() as u8)).await.unwrap();
            f.sync_data().await.unwrap();
        }
        fs.rename(&sub.join("a.tmp"), &sub.join("b")).await.unwrap();
        fs.remove(&sub.join("c")).await.unwrap();
        fs.sync_dir(&sub).await.unwrap();
        fs.sync_dir(&root).await.unwrap();
        let names: BTreeSet<String> = fs.list_dir(&sub).await.unwrap().into_iter().collect();
        assert_eq!(names, BTreeSet::from(["b".to_owned()]));
        let b = fs.open(&sub.join("b")).await.unwrap();
        assert_eq!(b.read_at(0, A).await.unwrap(), pattern(A, 5));

        let nf = |e: io::Error| assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        nf(fs.open(&sub.join("c")).await.err().unwrap());
        nf(fs.remove(&sub.join("c")).await.unwrap_err());
        nf(fs.rename(&sub.join("c"), &sub.join("d")).await.unwrap_err());
        nf(fs.sync_dir(&root.join("nope")).await.unwrap_err());
        nf(fs.list_dir(&root.join("nope")).await.unwrap_err());
    });
}

#[test]
#[should_panic(expected = "unaligned write length")]
fn unaligned_write_panics() {
    run(|fs, root| async move {
        let f = fs.create(&root.join("f")).await.unwrap();
        let _ = f.write_at(0, &[1, 2, 3]).await;
    });
}

#[test]
fn errors_keep_their_os_code() {
    let e = to_io(GlommioError::EnhancedIoError {
        source: io::Error::from_raw_os_error(libc::ENOSPC),
        op: "Writing",
        path: None,
        fd: None,
    });
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    assert!(matches!(
        crate::Error::io(Path::new("f"), e),
        crate::Error::NoSpace { .. }
    ));
}

#[test]
fn write_then_sync_lets_the_next_write_start_before_the_sync_is_awaited() {
    run(|fs, root| async move {
        let p = root.join("000001.log");
        let f = fs.create(&p).await.unwrap();
        // As the log does: the second write starts while the first one's sync is in flight.
        let first = f.write_then_sync(0, &pattern(2 * A, 1)).await.unwrap();
        let second = f
            .write_then_sync(A as u64, &pattern(2 * A, 2))
            .await
            .unwrap();
        second.await.unwrap();
        first.await.unwrap();
        let mut want = pattern(2 * A, 1);
        want.truncate(A);
        want.extend(pattern(2 * A, 2));
        assert_eq!(f.read_at(0, 3 * A).await.unwrap(), want);
        assert_eq!(std::fs::read(&p).unwrap(), want);
    });
}

#[test]
fn a_failed_write_cancels_its_linked_sync_and_reports_the_write_error() {
    run(|fs, root| async move {
        let f = fs.create(&root.join("f")).await.unwrap();
        // Past ext4's largest file offset: the write fails, and the kernel cancels the
        // fdatasync linked behind it.
        let at = 1u64 << 62;
        let e = match f.write_then_sync(at, &pattern(A, 3)).await {
            Ok(_) => panic!("a write at offset {at} succeeded"),
            Err(e) => e,
        };
        assert!(
            matches!(e.raw_os_error(), Some(libc::EFBIG | libc::EINVAL)),
            "{e}"
        );
        // The file stays usable, and a later linked write and sync succeed.
        f.write_then_sync(0, &pattern(A, 4))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(f.read_at(0, A).await.unwrap(), pattern(A, 4));
    });
}
