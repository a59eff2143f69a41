use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_lite::future::block_on;
use proptest::prelude::*;

use super::*;
use crate::filename::{self, FileKind};
use crate::fs::{FaultError, FaultFs, FaultOp, FaultRule, File, StdFs, align_up};

/// `StdFs` that counts fdatasyncs and fails writes or syncs on demand.
#[derive(Default)]
struct TestFs {
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    data_syncs: AtomicU64,
    fail_writes_enospc: AtomicBool,
    fail_syncs_eio: AtomicBool,
    /// While set, an fdatasync waits (counted in `syncs_held`) until it is cleared.
    hold_syncs: std::sync::Mutex<bool>,
    syncs_held: AtomicU64,
    hold_changed: std::sync::Condvar,
}

impl Counters {
    fn hold_syncs(&self, hold: bool) {
        *self.hold_syncs.lock().unwrap() = hold;
        self.hold_changed.notify_all();
    }

    fn wait_while_held(&self) {
        let mut held = self.hold_syncs.lock().unwrap();
        if *held {
            self.syncs_held.fetch_add(1, Ordering::SeqCst);
            self.hold_changed.notify_all();
        }
        while *held {
            held = self.hold_changed.wait(held).unwrap();
        }
    }

    /// Returns once `n` fdatasyncs have been held.
    fn wait_for_held(&self, n: u64) {
        let mut held = self.hold_syncs.lock().unwrap();
        while self.syncs_held.load(Ordering::SeqCst) < n {
            held = self.hold_changed.wait(held).unwrap();
        }
    }
}

struct TestFile {
    inner: <StdFs as FileSystem>::File,
    counters: Arc<Counters>,
}

impl FileSystem for TestFs {
    type File = TestFile;

    async fn create(&self, path: &Path) -> io::Result<TestFile> {
        Ok(TestFile {
            inner: StdFs.create(path).await?,
            counters: self.counters.clone(),
        })
    }
    async fn open(&self, path: &Path) -> io::Result<TestFile> {
        Ok(TestFile {
            inner: StdFs.open(path).await?,
            counters: self.counters.clone(),
        })
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to).await
    }
    async fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.hard_link(from, to).await
    }
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list_dir(dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir).await
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir).await
    }
}

impl File for TestFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(pos, len).await
    }
    async fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()> {
        if self.counters.fail_writes_enospc.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write_at(pos, buf).await
    }
    async fn sync_data(&self) -> io::Result<()> {
        if self.counters.fail_syncs_eio.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.counters.wait_while_held();
        self.counters.data_syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data().await
    }
    async fn len(&self) -> io::Result<u64> {
        self.inner.len().await
    }
    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len).await
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

const SMALL_SEGMENT: u64 = 8 << 10;

/// Segments of one size: most tests are about records, not segment growth.
fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes_min: segment_bytes,
        segment_bytes,
        preallocation: Preallocation::ZeroFill,
    }
}

/// Bytes of a record header.
const HDR: u64 = record::RECORD_HEADER_LEN as u64;

/// Varied lengths, contents that depend on the number.
fn payload(i: u64) -> Vec<u8> {
    let len = 1 + (i * 37 % 300) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

type Replayed = Vec<(u64, Vec<u8>)>;

fn open<F: FileSystem>(
    fs: Arc<F>,
    dir: &Path,
    segment_bytes: u64,
    from: ReplayFrom,
) -> Result<(Log<F>, Replayed)> {
    let mut seen = Vec::new();
    let log = block_on(Log::open(
        fs,
        dir.to_owned(),
        opts(segment_bytes),
        from,
        |n, p| {
            seen.push((n, p.to_vec()));
            Ok(())
        },
    ))?;
    Ok((log, seen))
}

fn open_std(dir: &Path, segment_bytes: u64, from: ReplayFrom) -> (Log<StdFs>, Replayed) {
    open(Arc::new(StdFs), dir, segment_bytes, from).unwrap()
}

fn append_synced<F: FileSystem>(log: &Log<F>, range: std::ops::Range<u64>) {
    for i in range {
        assert_eq!(log.append(&payload(i)).unwrap(), i);
    }
    let last = log.next_record() - 1;
    block_on(log.sync(last)).unwrap();
    assert_eq!(log.durable_record(), Some(last));
}

fn expected(range: std::ops::Range<u64>) -> Replayed {
    range.map(|i| (i, payload(i))).collect()
}

fn segment_numbers(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(
            |e| match filename::parse(e.unwrap().file_name().to_str().unwrap()) {
                Some(FileKind::Segment(n)) => Some(n),
                _ => None,
            },
        )
        .collect();
    v.sort_unstable();
    v
}

fn free_numbers(dir: &Path) -> Vec<u64> {
    let mut n: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(
            |e| match filename::parse(e.unwrap().file_name().to_str()?) {
                Some(FileKind::Free(n)) => Some(n),
                _ => None,
            },
        )
        .collect();
    n.sort_unstable();
    n
}

/// The segments holding records, with their dumps.
fn dumps(dir: &Path) -> Vec<(u64, SegmentDump)> {
    segment_numbers(dir)
        .into_iter()
        .map(|n| {
            (
                n,
                block_on(read_segment(&StdFs, &filename::segment(dir, n))).unwrap(),
            )
        })
        .filter(|(_, d)| !d.records.is_empty())
        .collect()
}

fn assert_corruption<T>(r: Result<T>) {
    match r {
        Err(e) => assert!(e.is_corruption(), "expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, got Ok"),
    }
}

#[test]
fn log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log<StdFs>>();
}

/// What `check_invariants` says of a fresh log's state after `break_rule`; `None` when it
/// passes.
fn invariant_failure(break_rule: impl FnOnce(&mut State<FaultFs>)) -> Option<String> {
    let (log, _) = open(
        Arc::new(FaultFs::new()),
        Path::new("/log"),
        SMALL_SEGMENT,
        ReplayFrom::Oldest,
    )
    .unwrap();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut st = log.lock();
        break_rule(&mut st);
        st.check_invariants();
    }));
    checked.err().map(|panic| match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => panic
            .downcast::<&str>()
            .map_or_else(|_| String::new(), |m| m.to_string()),
    })
}

/// Each numbered rule of `Locked::check_invariants` fires when broken, and a fresh log keeps
/// them all.
#[test]
fn check_invariants_fires_on_each_broken_rule() {
    assert_eq!(invariant_failure(|_| {}), None);
    type Break = Box<dyn FnOnce(&mut State<FaultFs>)>;
    let cases: Vec<(&str, Break)> = vec![
        (
            "rounds_in_flight <= SYNC_ROUNDS_MAX",
            Box::new(|st| st.rounds_in_flight = SYNC_ROUNDS_MAX + 1),
        ),
        (
            "published_round < st.next_round",
            Box::new(|st| st.published_round = st.next_round),
        ),
        (
            "unpublished <= st.rounds_in_flight",
            Box::new(|st| st.next_round += 1),
        ),
        ("durable <= st.syncing", Box::new(|st| st.durable = Some(0))),
        (
            "s < st.next_record",
            Box::new(|st| {
                st.syncing = Some(st.next_record);
                st.durable = None;
            }),
        ),
        (
            "unwritten_bytes <= buffered",
            Box::new(|st| st.unwritten_bytes = st.tail.bytes.len() as u64 + 1),
        ),
        ("tail.start % WRITE_ALIGN", Box::new(|st| st.tail.start = 1)),
        (
            "st.tail.end() <= s.capacity",
            Box::new(|st| st.tail.start = SMALL_SEGMENT + WRITE_ALIGN as u64),
        ),
        (
            "part.segment_no + before_tail",
            Box::new(|st| {
                st.sealed.push(Pending {
                    segment_no: 7,
                    start: 0,
                    bytes: Vec::new(),
                })
            }),
        ),
        (
            "active_no <= st.tail.segment_no",
            Box::new(|st| st.active_no += 1),
        ),
        (
            "writer.segment_no",
            Box::new(|st| {
                if let Some(w) = st.writer.as_mut() {
                    w.segment_no += 1;
                }
            }),
        ),
        ("st.segments.back()", Box::new(|st| st.segments.clear())),
        (
            "older.number < newer.number",
            Box::new(|st| {
                let newest = st.segments.back().copied().unwrap();
                st.segments.push_front(newest);
            }),
        ),
        (
            "older.first_record <= newer.first_record",
            Box::new(|st| {
                let mut older = st.segments.back().copied().unwrap();
                older.number -= 1;
                older.first_record += 1;
                st.segments.push_front(older);
            }),
        ),
        (
            "free.len() <= FREE_SEGMENTS_MAX",
            Box::new(|st| {
                let free = FreeFile {
                    number: 1,
                    bytes: SMALL_SEGMENT,
                };
                st.free = vec![free; FREE_SEGMENTS_MAX + 1];
            }),
        ),
    ];
    for (rule, break_rule) in cases {
        let failure = invariant_failure(break_rule);
        assert!(
            failure.as_deref().is_some_and(|f| f.contains(rule)),
            "breaking `{rule}` gave {failure:?}"
        );
    }
}

#[test]
fn append_sync_reopen_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert!(seen.is_empty());
    assert_eq!((log.next_record(), log.durable_record()), (0, None));
    assert_eq!(log.disk_bytes(), SMALL_SEGMENT);
    append_synced(&log, 0..10);
    drop(log);

    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..10));
    assert_eq!((log.next_record(), log.durable_record()), (10, Some(9)));
    append_synced(&log, 10..15);
    drop(log);

    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..15));
}

#[test]
fn records_across_many_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    for chunk in 0..50 {
        append_synced(&log, chunk * 10..chunk * 10 + 10);
    }
    // Some records buffered across several rotations before a single sync.
    append_synced(&log, 500..700);
    drop(log);
    let segs = dumps(&dir);
    assert!(segs.len() > 10, "only {} segments", segs.len());
    for (n, d) in &segs {
        assert_eq!(d.file_len, SMALL_SEGMENT);
        let h = match &d.header {
            HeaderState::Valid(h) => *h,
            other => panic!("segment {n}: {other:?}"),
        };
        assert_eq!(h.segment_no, *n);
        assert_eq!(h.first_record, d.records[0].record_no);
    }
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..700));
}

#[test]
fn record_that_fills_a_segment_exactly_and_oversized_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    let max = (SMALL_SEGMENT as usize) - SEGMENT_HEADER_LEN - record::RECORD_HEADER_LEN;
    assert!(matches!(
        log.append(&vec![1; max + 1]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(log.append(&[]), Err(Error::InvalidArgument(_))));
    assert_eq!(log.next_record(), 0);
    assert_eq!(log.append(b"small").unwrap(), 0);
    assert_eq!(log.append(&vec![7; max]).unwrap(), 1);
    assert_eq!(log.append(b"after").unwrap(), 2);
    block_on(log.sync(2)).unwrap();
    assert!(matches!(
        block_on(log.sync(3)),
        Err(Error::InvalidArgument(_))
    ));
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    let want: Replayed = vec![
        (0, b"small".to_vec()),
        (1, vec![7; max]),
        (2, b"after".to_vec()),
    ];
    assert_eq!(seen, want);
    // Three records in three segments: the full one shares with neither neighbour.
    assert_eq!(
        dumps(&dir)
            .iter()
            .map(|(_, d)| d.records.len())
            .collect::<Vec<_>>(),
        [1, 1, 1]
    );
}

#[test]
fn replay_from_a_record_deletes_segments_wholly_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    append_synced(&log, 0..300);
    drop(log);
    let segs = dumps(&dir);
    let (third_no, third) = &segs[2];
    let first_of_third = third.records[0].record_no;
    let from = first_of_third + 1;

    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Record(from));
    assert_eq!(seen, expected(from..300));
    assert_eq!(log.next_record(), 300);
    let left = segment_numbers(&dir);
    assert_eq!(
        left[0], *third_no,
        "segments wholly before record {from} remain: {left:?}"
    );
    drop(log);

    // Replaying from exactly a segment's first record keeps that segment only.
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Record(first_of_third));
    assert_eq!(seen, expected(first_of_third..300));

    // Past the end: nothing replayed, every old segment goes, numbering continues at `from`.
    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Record(1000));
    assert!(seen.is_empty());
    assert_eq!((log.next_record(), log.durable_record()), (1000, Some(999)));
    assert_eq!(segment_numbers(&dir).len(), 1);
    append_synced(&log, 1000..1003);
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(1000..1003));
}

#[test]
fn replay_from_a_record_that_was_released_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    append_synced(&log, 0..300);
    drop(log);
    let segs = dumps(&dir);
    let start = segs[3].1.records[0].record_no;
    std::fs::remove_file(filename::segment(&dir, segs[0].0)).unwrap();
    std::fs::remove_file(filename::segment(&dir, segs[1].0)).unwrap();
    std::fs::remove_file(filename::segment(&dir, segs[2].0)).unwrap();
    assert_corruption(open(
        Arc::new(StdFs),
        &dir,
        SMALL_SEGMENT,
        ReplayFrom::Record(start - 1),
    ));
    // Oldest accepts a log whose beginning was released.
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(start..300));
}

#[test]
fn release_before_retires_exactly_the_segments_wholly_before() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    append_synced(&log, 0..300);
    let segs = dumps(&dir);
    assert!(segs.len() > 3 + FREE_SEGMENTS_MAX);
    let firsts: Vec<u64> = segs.iter().map(|(_, d)| d.records[0].record_no).collect();
    let bytes_before = log.disk_bytes();

    // Record firsts[2] - 1 is the last of segment 1: only segment 0 is wholly before it. It
    // is kept as a free file: the disk bytes stay.
    block_on(log.release_before(firsts[2] - 1)).unwrap();
    assert_eq!(segment_numbers(&dir)[0], segs[1].0);
    assert_eq!(free_numbers(&dir), [segs[0].0]);
    assert_eq!(log.disk_bytes(), bytes_before);
    block_on(log.release_before(firsts[2])).unwrap();
    assert_eq!(segment_numbers(&dir)[0], segs[2].0);
    // Releasing everything keeps the active segment and at most FREE_SEGMENTS_MAX free files.
    block_on(log.release_before(u64::MAX)).unwrap();
    let active = segs.last().unwrap().0;
    assert_eq!(segment_numbers(&dir)[0], active);
    let kept: Vec<u64> = segs[..FREE_SEGMENTS_MAX].iter().map(|s| s.0).collect();
    assert_eq!(free_numbers(&dir), kept);
    let first_active = segs.last().unwrap().1.records[0].record_no;
    append_synced(&log, 300..310);
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(first_active..310));
}

#[test]
fn group_commit_shares_fdatasyncs() {
    const THREADS: u64 = 64;
    const PER_THREAD: u64 = 100;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let fs = Arc::new(TestFs::default());
    let counters = fs.counters.clone();
    let (log, _) = open(fs.clone(), &dir, 4 << 20, ReplayFrom::Oldest).unwrap();
    let log = Arc::new(log);
    let syncs_before = counters.data_syncs.load(Ordering::SeqCst);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..PER_THREAD {
                    let body = format!("thread {t} record {i}");
                    let n = log.append(body.as_bytes()).unwrap();
                    block_on(log.sync(n)).unwrap();
                    assert!(log.durable_record() >= Some(n));
                    mine.push((n, body));
                }
                mine
            })
        })
        .collect();
    let mut written: Vec<(u64, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    written.sort();
    let records = THREADS * PER_THREAD;
    let syncs = counters.data_syncs.load(Ordering::SeqCst) - syncs_before;
    assert!(
        syncs * 4 <= records,
        "{syncs} fdatasyncs for {records} records"
    );
    assert_eq!(log.durable_record(), Some(records - 1));
    drop(log);

    let (_, seen) = open(fs, &dir, 4 << 20, ReplayFrom::Oldest).unwrap();
    let seen: Vec<(u64, String)> = seen
        .into_iter()
        .map(|(n, p)| (n, String::from_utf8(p).unwrap()))
        .collect();
    assert_eq!(seen, written);
}

#[test]
fn a_round_overlaps_the_one_in_flight_only_with_a_block_to_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let fs = Arc::new(TestFs::default());
    let counters = fs.counters.clone();
    let (log, _) = open(fs, &dir, 4 << 20, ReplayFrom::Oldest).unwrap();
    let log = Arc::new(log);
    let rounds = || log.state.lock().rounds_in_flight;
    // A first round, held inside its fdatasync.
    counters.hold_syncs(true);
    let first = log.append(b"first").unwrap();
    let leader = std::thread::spawn({
        let log = log.clone();
        move || block_on(log.sync(first))
    });
    counters.wait_for_held(1);
    assert_eq!(rounds(), 1);
    // A straggler's small record waits for the round in flight instead of starting one.
    let small = log.append(&[1u8; 100]).unwrap();
    let mut small_sync = Box::pin(log.sync(small));
    assert!(block_on(futures_lite::future::poll_once(&mut small_sync)).is_none());
    assert_eq!(rounds(), 1, "a 100-byte round overlapped the one in flight");
    // A block's worth starts a second round at once.
    let mut last = small;
    while log.state.lock().unwritten_bytes < OVERLAP_BYTES_MIN {
        last = log.append(&[2u8; 500]).unwrap();
    }
    let mut full_sync = Box::pin(log.sync(last));
    assert!(block_on(futures_lite::future::poll_once(&mut full_sync)).is_none());
    assert_eq!(
        rounds(),
        2,
        "a block's worth waited for the round in flight"
    );
    counters.hold_syncs(false);
    leader.join().unwrap().unwrap();
    block_on(full_sync).unwrap();
    block_on(small_sync).unwrap();
    assert_eq!(log.durable_record(), Some(last));
}

/// Tasks on one thread (a shard, DMA files): fdatasyncs are shared. A leader finding the disk
/// idle starts with what is buffered; the tasks that run during its I/O form the next round,
/// which gathers every task ready to append. So a wave of tasks takes about two rounds, not
/// one per task.
#[cfg(feature = "dma")]
#[test]
fn group_commit_groups_every_ready_task_on_one_thread() {
    use std::rc::Rc;
    const TASKS: u64 = 64;
    const ROUNDS: u64 = 20;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    let syncs = ex.run(async move {
        let fs = crate::fs::DmaFs::new(tmp.path()).await.unwrap();
        let log = Log::open(
            Arc::new(fs),
            dir,
            opts(4 << 20),
            ReplayFrom::Oldest,
            |_, _| Ok(()),
        )
        .await
        .unwrap();
        let log = Rc::new(log);
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    for i in 0..ROUNDS {
                        let n = log
                            .append(format!("task {t} round {i}").as_bytes())
                            .unwrap();
                        log.sync(n).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        assert_eq!(log.durable_record(), Some(TASKS * ROUNDS - 1));
        log.data_syncs()
    });
    // Two rounds per wave; the first waves may start before every task was spawned.
    assert!(
        syncs <= 2 * ROUNDS + 2,
        "{syncs} fdatasyncs for {ROUNDS} waves of {TASKS} tasks"
    );
}

/// Writes records 0..`count` over several segments, returning the dump of the last one.
fn log_with_records(dir: &Path, count: u64) -> (u64, SegmentDump) {
    let (log, _) = open_std(dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    for i in 0..count {
        append_synced(&log, i..i + 1);
    }
    drop(log);
    let mut segs = dumps(dir);
    assert!(segs.len() >= 3);
    let last = segs.pop().unwrap();
    assert!(last.1.records.len() >= 5);
    last
}

fn damage(dir: &Path, segment: u64, how: impl FnOnce(&std::fs::File)) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(filename::segment(dir, segment))
        .unwrap();
    how(&f);
    f.sync_all().unwrap();
}

/// After damage to the last segment at record index `k`, replay ends just before it, appends
/// continue from there, and a second reopen sees both.
/// A negative `k` counts from the end (-1 is the last record).
fn check_torn_tail(count: u64, k: isize, how: impl FnOnce(&std::fs::File, &DumpedRecord)) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (last_no, last) = log_with_records(&dir, count);
    let k = if k < 0 {
        last.records.len() as isize + k
    } else {
        k
    };
    let victim = &last.records[k as usize];
    damage(&dir, last_no, |f| how(f, victim));
    let cut = victim.record_no;

    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..cut));
    assert_eq!(log.next_record(), cut);
    assert_eq!(log.durable_record(), cut.checked_sub(1));
    let more: Vec<u64> = (0..5)
        .map(|i| log.append(format!("new {i}").as_bytes()).unwrap())
        .collect();
    assert_eq!(more, (cut..cut + 5).collect::<Vec<_>>());
    block_on(log.sync(cut + 4)).unwrap();
    drop(log);

    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    let mut want = expected(0..cut);
    want.extend((0..5).map(|i| (cut + i, format!("new {i}").into_bytes())));
    assert_eq!(seen, want);
}

#[test]
fn torn_tail_truncated() {
    // Mid-record, mid-header, and right at a record's start.
    check_torn_tail(120, 3, |f, r| f.set_len(r.offset + HDR + 4).unwrap());
    check_torn_tail(120, 4, |f, r| f.set_len(r.offset + 5).unwrap());
    check_torn_tail(120, 2, |f, r| f.set_len(r.offset).unwrap());
}

#[test]
fn torn_tail_zeroed() {
    check_torn_tail(120, 3, |f, r| {
        f.write_all_at(&vec![0; 8192], r.offset).unwrap()
    });
    // Only the last payload's end zeroed: the crc catches it.
    check_torn_tail(120, -1, |f, r| {
        f.write_all_at(&[0; 4], r.offset + HDR + r.payload.len() as u64 - 4)
            .unwrap()
    });
}

#[test]
fn torn_tail_garbage() {
    // Damage to the last record is indistinguishable from a torn write of it.
    check_torn_tail(120, -1, |f, r| {
        f.write_all_at(&[0xA5; 300], r.offset + 7).unwrap()
    });
    check_torn_tail(120, -1, |f, r| {
        f.write_all_at(&[0xFF; 4], r.offset + 4).unwrap()
    });
    // Garbage running into the zeroed space after the last record is a tear too.
    check_torn_tail(120, 2, |f, r| {
        f.write_all_at(&[0xA5; 300], r.offset + 7).unwrap();
        f.write_all_at(&[0; 8192], r.offset + 307).unwrap();
    });
}

#[test]
fn damage_before_intact_records_is_corruption() {
    // No torn write leaves intact records after damage in the last segment: they may have
    // been acknowledged, so replay must not stop there silently.
    type Damage = fn(&std::fs::File, &DumpedRecord);
    let cases: [(usize, Damage); 4] = [
        (2, |f, r| {
            f.write_all_at(&[0xA5; 300], r.offset + 7).unwrap()
        }),
        (0, |f, r| f.write_all_at(&[0xFF; 4], r.offset + 4).unwrap()),
        (0, |f, r| f.write_all_at(&[1], r.offset + HDR + 4).unwrap()),
        (1, |f, r| {
            f.write_all_at(&[0; 4], r.offset + HDR + r.payload.len() as u64 - 4)
                .unwrap()
        }),
    ];
    for (k, how) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let (last_no, last) = log_with_records(&dir, 120);
        damage(&dir, last_no, |f| how(f, &last.records[k]));
        let before = segment_numbers(&dir);
        assert_corruption(open(
            Arc::new(StdFs),
            &dir,
            SMALL_SEGMENT,
            ReplayFrom::Oldest,
        ));
        assert_eq!(
            segment_numbers(&dir),
            before,
            "a failed open changed the log"
        );
    }
    // A damaged header of the last segment, with its records intact behind it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (last_no, _) = log_with_records(&dir, 120);
    damage(&dir, last_no, |f| f.write_all_at(&[0x5A], 10).unwrap());
    assert_corruption(open(
        Arc::new(StdFs),
        &dir,
        SMALL_SEGMENT,
        ReplayFrom::Oldest,
    ));
}

#[test]
fn torn_header_of_last_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (last_no, last) = log_with_records(&dir, 120);
    // Torn inside the header: nothing the write put after it reached the disk.
    damage(&dir, last_no, |f| {
        f.write_all_at(&[0x5A; 3], 10).unwrap();
        f.write_all_at(&vec![0; SMALL_SEGMENT as usize - 13], 13)
            .unwrap();
    });
    let cut = last.records[0].record_no;
    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..cut));
    assert!(
        !segment_numbers(&dir).contains(&last_no),
        "torn segment kept"
    );
    append_synced(&log, cut..cut + 3);
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..cut + 3));
}

#[test]
fn stale_record_after_the_tail_is_not_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (last_no, last) = log_with_records(&dir, 120);
    let tail = last.end.unwrap();
    assert_eq!(tail.reason, StopReason::ZeroLength);
    // A well-formed record with a valid crc right after the tail, tagged for an earlier
    // segment, as a recycled file holds them.
    for stale_segment in [last_no - 1, last_no + (1 << 32) - 7] {
        let mut bytes = Vec::new();
        encode_record(stale_segment, b"stale", &mut bytes);
        damage(&dir, last_no, |f| {
            f.write_all_at(&bytes, tail.offset).unwrap()
        });
        let dump = block_on(read_segment(&StdFs, &filename::segment(&dir, last_no))).unwrap();
        assert_eq!(
            dump.end.unwrap().reason,
            StopReason::StaleRecord(stale_segment as u32)
        );
        let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
        assert_eq!(seen, expected(0..120));
        assert_eq!(log.next_record(), 120);
    }
}

#[test]
fn damaged_middle_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    log_with_records(&dir, 120);
    let segs = dumps(&dir);
    let (mid_no, mid) = &segs[1];
    let r = &mid.records[mid.records.len() / 2];
    damage(&dir, *mid_no, |f| {
        f.write_all_at(&[0xEE], r.offset + HDR + 1).unwrap()
    });
    assert_corruption(open(
        Arc::new(StdFs),
        &dir,
        SMALL_SEGMENT,
        ReplayFrom::Oldest,
    ));
    // Replaying from after the damage reads only later segments and succeeds.
    let from = segs[2].1.records[0].record_no;
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Record(from));
    assert_eq!(seen, expected(from..120));
}

#[test]
fn missing_or_blank_middle_segment_is_corruption() {
    for blank in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        log_with_records(&dir, 120);
        let segs = dumps(&dir);
        if blank {
            damage(&dir, segs[1].0, |f| f.write_all_at(&[0; 4096], 0).unwrap());
        } else {
            std::fs::remove_file(filename::segment(&dir, segs[1].0)).unwrap();
        }
        let before = segment_numbers(&dir);
        assert_corruption(open(
            Arc::new(StdFs),
            &dir,
            SMALL_SEGMENT,
            ReplayFrom::Oldest,
        ));
        assert_eq!(
            segment_numbers(&dir),
            before,
            "a failed open changed the log"
        );
    }
}

#[test]
fn write_if_full_writes_without_syncing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let fs = Arc::new(TestFs::default());
    let (log, _) = open(fs.clone(), &dir, 64 << 20, ReplayFrom::Oldest).unwrap();
    let syncs = || fs.counters.data_syncs.load(Ordering::SeqCst);
    let base = syncs();
    let record = vec![9u8; 1000];
    log.append(&record).unwrap();
    block_on(log.write_if_full()).unwrap();
    let active = segment_numbers(&dir)[0];
    let read = || block_on(read_segment(&StdFs, &filename::segment(&dir, active))).unwrap();
    assert!(read().records.is_empty(), "wrote below the threshold");
    while log.next_record() * framed_len(record.len()) <= BUFFERED_WRITE_BYTES {
        log.append(&record).unwrap();
    }
    block_on(log.write_if_full()).unwrap();
    let on_disk = read().records.len() as u64;
    // Whole blocks only: everything but the partial last block is there.
    assert!(
        on_disk + 5 >= log.next_record() && on_disk < log.next_record(),
        "{on_disk} of {}",
        log.next_record()
    );
    assert_eq!(syncs(), base);
    block_on(log.sync(log.next_record() - 1)).unwrap();
    assert_eq!(read().records.len() as u64, log.next_record());
    assert_eq!(syncs(), base + 1);
}

#[test]
fn failed_sync_disables_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let fs = Arc::new(TestFs::default());
    let (log, _) = open(fs.clone(), &dir, SMALL_SEGMENT, ReplayFrom::Oldest).unwrap();
    append_synced(&log, 0..5);
    let n = log.append(&payload(5)).unwrap();
    fs.counters.fail_syncs_eio.store(true, Ordering::SeqCst);
    assert!(matches!(block_on(log.sync(n)), Err(Error::Io { .. })));
    assert!(matches!(
        block_on(log.sync(n)),
        Err(Error::WritesDisabled(_))
    ));
    assert!(matches!(log.append(b"x"), Err(Error::WritesDisabled(_))));
    // What was durable stays durable.
    block_on(log.sync(4)).unwrap();
    assert_eq!(log.durable_record(), Some(4));
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    // Record 5 was written before the failing fdatasync: the page cache may hold it.
    assert!(seen == expected(0..5) || seen == expected(0..6), "{seen:?}");
}

#[test]
fn enospc_keeps_its_meaning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let fs = Arc::new(TestFs::default());
    let (log, _) = open(fs.clone(), &dir, SMALL_SEGMENT, ReplayFrom::Oldest).unwrap();
    append_synced(&log, 0..5);
    let n = log.append(b"x").unwrap();
    fs.counters.fail_writes_enospc.store(true, Ordering::SeqCst);
    assert!(matches!(block_on(log.sync(n)), Err(Error::NoSpace { .. })));
    match log.append(b"y") {
        Err(Error::WritesDisabled(cause)) => assert!(cause.contains("no space"), "{cause}"),
        other => panic!("{other:?}"),
    }
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..5));
}

#[test]
fn spare_segment_is_prepared_ahead_and_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    let active = segment_numbers(&dir)[0];
    assert!(
        !block_on(log.prepare_spare()).unwrap(),
        "spare before half full"
    );
    log.append(&[3; 4500]).unwrap();
    assert!(block_on(log.prepare_spare()).unwrap());
    assert_eq!(segment_numbers(&dir), [active, active + 1]);
    assert_eq!(log.disk_bytes(), 2 * SMALL_SEGMENT);
    assert!(!block_on(log.prepare_spare()).unwrap(), "second spare");
    // Rotation takes the spare, and the sync's leader prepares the next one.
    log.append(&[4; 3000]).unwrap();
    let n = log.append(&[5; 5000]).unwrap();
    block_on(log.sync(n)).unwrap();
    assert_eq!(segment_numbers(&dir), [active, active + 1, active + 2]);
    drop(log);
    // A spare left by the previous run is discarded on open.
    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen.len(), 3);
    assert_eq!(segment_numbers(&dir), [active, active + 1, active + 3]);
    assert_eq!(log.disk_bytes(), 3 * SMALL_SEGMENT);
}

/// Fills segments, releases them all (two become free files), then writes until the active
/// segment is a recycled file holding records of its earlier use past the new ones. Returns
/// the log, the first record still needed and the next record number.
fn log_in_recycled_segment<F: FileSystem>(fs: Arc<F>, dir: &Path) -> (Log<F>, u64, u64) {
    let (log, _) = open(fs, dir, SMALL_SEGMENT, ReplayFrom::Oldest).unwrap();
    append_synced(&log, 0..200);
    let from = log.next_record();
    block_on(log.release_before(from)).unwrap();
    assert_eq!(log.state.lock().free.len(), FREE_SEGMENTS_MAX);
    // Write until every free file was taken, then a little into the last one taken.
    let mut n = from;
    let mut last_recycled = None;
    let mut written_into = 0;
    while written_into < 10 {
        append_synced(&log, n..n + 1);
        n += 1;
        let st = log.state.lock();
        if last_recycled.is_none() && st.free.is_empty() {
            last_recycled = Some(st.active_no + 1);
        }
        if last_recycled == Some(st.active_no) {
            written_into += 1;
        }
    }
    (log, from, n)
}

#[test]
fn recycled_segments_replace_new_ones_and_replay_only_their_new_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let fs = Arc::new(TestFs::default());
    let (log, from, next) = log_in_recycled_segment(fs, &dir);
    assert!(free_numbers(&dir).is_empty(), "free files left unused");
    drop(log);
    let segs = dumps(&dir);
    let (active_no, active) = segs.last().unwrap();
    let end = active.end.unwrap();
    // The records of the file's earlier use follow the new ones (after the zero padding of
    // the last block written).
    let bytes = std::fs::read(filename::segment(&dir, *active_no)).unwrap();
    let old_from = align_up(end.offset) as usize;
    assert!(bytes[old_from..].iter().any(|&b| b != 0), "{end:?}");
    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Record(from));
    assert_eq!(seen, expected(from..next));
    // Appending resumes in a segment made from the free file the previous open retired.
    append_synced(&log, next..next + 3);
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Record(from));
    assert_eq!(seen, expected(from..next + 3));
}

#[test]
fn recycled_segment_after_a_crash_replays_only_new_records() {
    for seed in 0..40 {
        let fs = FaultFs::new();
        let dir = Path::new("/log");
        let (log, from, next) = log_in_recycled_segment(Arc::new(fs.clone()), dir);
        let mut history: Vec<Vec<u8>> = (0..next).map(payload).collect();
        // Some acknowledged, then some buffered and written but never synced.
        append_synced(&log, next..next + 5);
        history.extend((next..next + 5).map(payload));
        for i in next + 5..next + 40 {
            log.append(&payload(i)).unwrap();
            history.push(payload(i));
        }
        block_on(log.write_if_full()).unwrap();
        drop(log);
        fs.crash(seed);
        reopen_and_check(&fs, dir, from, next + 5, &history).unwrap();
    }
}

#[test]
fn recycled_spare_renamed_but_never_written_is_discarded() {
    let fs = FaultFs::new();
    let dir = Path::new("/log");
    let (log, _) = open(Arc::new(fs.clone()), dir, SMALL_SEGMENT, ReplayFrom::Oldest).unwrap();
    append_synced(&log, 0..100);
    let from = log.next_record();
    block_on(log.release_before(from)).unwrap();
    // Past half of the active segment: the spare is a free file renamed, never written.
    while log.state.lock().free.len() == FREE_SEGMENTS_MAX
        || !matches!(log.state.lock().spare, Spare::Ready(..))
    {
        let n = log.next_record();
        append_synced(&log, n..n + 1);
    }
    let next = log.next_record();
    drop(log);
    fs.crash(7);
    let (log, seen) = open(
        Arc::new(fs.clone()),
        dir,
        SMALL_SEGMENT,
        ReplayFrom::Record(from),
    )
    .unwrap();
    assert_eq!(seen, expected(from..next));
    append_synced(&log, next..next + 40);
    drop(log);
    fs.crash_lose_unsynced();
    let (_, seen) = open(Arc::new(fs), dir, SMALL_SEGMENT, ReplayFrom::Record(from)).unwrap();
    assert_eq!(seen, expected(from..next + 40));
}

#[test]
fn sparse_segments_are_full_size_without_being_written() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let options = LogOptions {
        segment_bytes_min: 1 << 20,
        segment_bytes: 1 << 20,
        preallocation: Preallocation::Sparse,
    };
    let log = block_on(Log::open(
        Arc::new(StdFs),
        dir.clone(),
        options,
        ReplayFrom::Oldest,
        |_, _| Ok(()),
    ))
    .unwrap();
    let meta = std::fs::metadata(filename::segment(&dir, segment_numbers(&dir)[0])).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
    append_synced(&log, 0..20);
    drop(log);
    let (_, seen) = open_std(&dir, 1 << 20, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..20));
}

#[test]
fn bad_options_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    for bytes in [0, 4095, 4097, SEGMENT_BYTES_MAX + 4096] {
        let r = open(Arc::new(StdFs), tmp.path(), bytes, ReplayFrom::Oldest);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{bytes}");
    }
}

#[test]
fn apply_error_fails_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    append_synced(&log, 0..3);
    drop(log);
    let r = block_on(Log::open(
        Arc::new(StdFs),
        dir,
        opts(SMALL_SEGMENT),
        ReplayFrom::Oldest,
        |n, _| {
            if n == 1 {
                Err(Error::InvalidArgument("bad batch".into()))
            } else {
                Ok(())
            }
        },
    ));
    assert!(matches!(r, Err(Error::InvalidArgument(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever survives of the last write into the last segment (cut short, or overwritten
    /// with garbage), replay returns every record synced before it and then a prefix of the
    /// rest, never anything else.
    #[test]
    fn replay_after_torn_last_write_is_a_prefix_with_every_earlier_sync(
        sizes in prop::collection::vec(1usize..1500, 1..60),
        sync_every in 1usize..8,
        cut_frac in 0.0f64..1.0,
        garbage in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
        let bodies: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8 ^ 0x5C; n]).collect();
        for (i, b) in bodies.iter().enumerate() {
            log.append(b).unwrap();
            if (i + 1) % sync_every == 0 && i + 1 < bodies.len() {
                block_on(log.sync(i as u64)).unwrap();
            }
        }
        let must_have = log.durable_record();
        block_on(log.sync(bodies.len() as u64 - 1)).unwrap();
        drop(log);
        // Tear the last segment anywhere after the records synced before the last write.
        let segs = dumps(&dir);
        let (last_no, last) = segs.last().unwrap();
        let kept_end = last
            .records
            .iter()
            .filter(|r| Some(r.record_no) <= must_have)
            .map(|r| r.offset + HDR + r.payload.len() as u64)
            .max()
            .unwrap_or(0);
        let cut = kept_end + ((SMALL_SEGMENT - kept_end) as f64 * cut_frac) as u64;
        damage(&dir, *last_no, |f| {
            if garbage {
                f.write_all_at(&vec![0xC3; (SMALL_SEGMENT - cut) as usize], cut).unwrap();
            } else {
                f.set_len(cut).unwrap();
            }
        });
        let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
        let want_min = must_have.map_or(0, |s| s + 1) as usize;
        prop_assert!(seen.len() >= want_min && seen.len() <= bodies.len(), "{} of {}", seen.len(), want_min);
        for (i, (n, p)) in seen.iter().enumerate() {
            prop_assert_eq!(*n, i as u64);
            prop_assert_eq!(p, &bodies[i]);
        }
        prop_assert_eq!(log.next_record(), seen.len() as u64);
    }
}

#[derive(Debug, Clone)]
enum CrashOp {
    Append(usize),
    Sync,
    WriteIfFull,
    /// Release records before this fraction of the durable ones.
    Release(f64),
    /// Power loss with this seed, then reopen.
    Crash(u64),
    /// The next write or fdatasync fails; then power loss with this seed, then reopen.
    FailThenCrash(bool, u64),
}

fn crash_op() -> impl Strategy<Value = CrashOp> {
    prop_oneof![
        40 => (1usize..3000).prop_map(CrashOp::Append),
        10 => Just(CrashOp::Sync),
        2 => Just(CrashOp::WriteIfFull),
        3 => (0.0f64..1.0).prop_map(CrashOp::Release),
        4 => any::<u64>().prop_map(CrashOp::Crash),
        2 => (any::<bool>(), any::<u64>()).prop_map(|(w, s)| CrashOp::FailThenCrash(w, s)),
    ]
}

/// Reopens from `from` and checks the replay against `history` (record n's payload at index
/// n): records `from..acked` must all be there, followed by a prefix of the unacknowledged
/// ones. Returns the log and how many records survived.
fn reopen_and_check(
    fs: &FaultFs,
    dir: &Path,
    from: u64,
    acked: u64,
    history: &[Vec<u8>],
) -> std::result::Result<(Log<FaultFs>, u64), TestCaseError> {
    let (log, seen) = open(
        Arc::new(fs.clone()),
        dir,
        SMALL_SEGMENT,
        ReplayFrom::Record(from),
    )
    .map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
    let end = from + seen.len() as u64;
    prop_assert!(
        end >= acked,
        "replayed up to {end}, acknowledged up to {acked}"
    );
    prop_assert!(end <= history.len() as u64 || seen.is_empty());
    for (i, (n, p)) in seen.iter().enumerate() {
        prop_assert_eq!(*n, from + i as u64);
        prop_assert_eq!(p, &history[*n as usize]);
    }
    prop_assert_eq!(log.next_record(), end.max(from));
    Ok((log, end))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Appends, group syncs, buffered writes, releases and power losses (some right after a
    /// failed write or fdatasync) on the crash-modelling file system: every acknowledged
    /// record survives with its bytes, nothing but a prefix of unacknowledged records is
    /// replayed, and numbering continues after what survived.
    #[test]
    fn power_loss_keeps_every_acknowledged_record(ops in prop::collection::vec(crash_op(), 1..80)) {
        let fs = FaultFs::new();
        let dir = Path::new("/log");
        let (mut log, _) = open(Arc::new(fs.clone()), dir, SMALL_SEGMENT, ReplayFrom::Oldest).unwrap();
        let mut history: Vec<Vec<u8>> = Vec::new();
        let mut acked = 0u64;
        let mut from = 0u64;
        for op in ops {
            match op {
                CrashOp::Append(size) => {
                    let n = history.len() as u64;
                    let body: Vec<u8> = (0..size).map(|j| (n as usize * 7 + j) as u8).collect();
                    prop_assert_eq!(log.append(&body).unwrap(), n);
                    history.push(body);
                }
                CrashOp::Sync => {
                    if let Some(last) = log.next_record().checked_sub(1) {
                        block_on(log.sync(last)).unwrap();
                        acked = acked.max(last + 1);
                    }
                }
                CrashOp::WriteIfFull => block_on(log.write_if_full()).unwrap(),
                CrashOp::Release(frac) => {
                    let upto = from + ((acked.saturating_sub(from)) as f64 * frac) as u64;
                    block_on(log.release_before(upto)).unwrap();
                    from = from.max(upto);
                }
                CrashOp::Crash(seed) | CrashOp::FailThenCrash(_, seed) => {
                    if let CrashOp::FailThenCrash(write, _) = op {
                        let faulted = if write { FaultOp::Write } else { FaultOp::Sync };
                        fs.inject(FaultRule::new(faulted, FaultError::Eio).on_path("/log/"));
                        let body = vec![0xAB; 100];
                        history.push(body.clone());
                        let n = log.append(&body).unwrap();
                        prop_assert!(block_on(log.sync(n)).is_err());
                        prop_assert!(matches!(log.append(b"x"), Err(Error::WritesDisabled(_))));
                        fs.clear_faults();
                    }
                    drop(log);
                    fs.crash(seed);
                    let (reopened, end) = reopen_and_check(&fs, dir, from, acked, &history)?;
                    log = reopened;
                    history.truncate(end as usize);
                    acked = end;
                }
            }
        }
        // A clean shutdown after a final sync loses nothing.
        if let Some(last) = log.next_record().checked_sub(1) {
            block_on(log.sync(last)).unwrap();
            acked = last + 1;
        }
        drop(log);
        fs.crash_lose_unsynced();
        let (_, end) = reopen_and_check(&fs, dir, from, acked, &history)?;
        prop_assert_eq!(end, acked.max(from));
    }
}

/// Opens the log in `dir` with segments growing from `min` to `max`.
fn open_growing(dir: &Path, min: u64, max: u64) -> (Log<StdFs>, Replayed) {
    let mut seen = Vec::new();
    let options = LogOptions {
        segment_bytes_min: min,
        segment_bytes: max,
        preallocation: Preallocation::ZeroFill,
    };
    let log = block_on(Log::open(
        Arc::new(StdFs),
        dir.to_owned(),
        options,
        ReplayFrom::Oldest,
        |n, p| {
            seen.push((n, p.to_vec()));
            Ok(())
        },
    ))
    .unwrap();
    (log, seen)
}

/// Lengths of the segment files in `dir`, in number order.
fn segment_lengths(dir: &Path) -> Vec<u64> {
    segment_numbers(dir)
        .into_iter()
        .map(|n| std::fs::metadata(filename::segment(dir, n)).unwrap().len())
        .collect()
}

#[test]
fn segments_grow_from_the_smallest_to_the_largest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_growing(&dir, SMALL_SEGMENT, 4 * SMALL_SEGMENT);
    assert_eq!(segment_lengths(&dir), [SMALL_SEGMENT]);
    append_synced(&log, 0..400);
    let lengths = segment_lengths(&dir);
    let grown: Vec<u64> = [1, 2, 4, 4, 4]
        .iter()
        .map(|&m| m * SMALL_SEGMENT)
        .take(lengths.len())
        .collect();
    assert!(lengths.len() >= 4, "{lengths:?}");
    // The last may be a spare prepared ahead, at the size it will need.
    assert_eq!(lengths, grown, "{lengths:?}");
    // A record too large for the next size gets a segment that fits it.
    let big = vec![7u8; 3 * SMALL_SEGMENT as usize];
    let n = log.append(&big).unwrap();
    block_on(log.sync(n)).unwrap();
    drop(log);
    let (_, seen) = open_growing(&dir, SMALL_SEGMENT, 4 * SMALL_SEGMENT);
    assert_eq!(seen.len(), 401);
    assert_eq!(seen[400], (400, big));
}

#[test]
fn a_clean_close_lets_the_next_open_append_to_the_last_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    append_synced(&log, 0..5);
    block_on(log.close()).unwrap();
    assert!(matches!(log.append(b"late"), Err(Error::Closed)));
    let segments = segment_numbers(&dir);
    for round in 1..4u64 {
        let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
        assert_eq!(seen, expected(0..5 * round));
        assert_eq!(segment_numbers(&dir), segments, "round {round}");
        assert!(!filename::log_closed(&dir).exists(), "read and removed");
        append_synced(&log, 5 * round..5 * round + 5);
        block_on(log.close()).unwrap();
    }
    // Without a close (a crash), the next open starts a new segment.
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    append_synced(&log, 20..21);
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..21));
    assert_eq!(segment_numbers(&dir).len(), segments.len() + 1);
}

/// A clean-close record that does not match the log (records were written after it, as a
/// later session that crashed before removing it would leave) is not trusted.
#[test]
fn a_close_record_that_does_not_match_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    append_synced(&log, 0..5);
    block_on(log.close()).unwrap();
    let record = std::fs::read(filename::log_closed(&dir)).unwrap();
    let (log, _) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    append_synced(&log, 5..8);
    drop(log);
    std::fs::write(filename::log_closed(&dir), record).unwrap();
    let before = segment_numbers(&dir);
    let (log, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..8));
    assert_eq!(
        segment_numbers(&dir).len(),
        before.len() + 1,
        "a new segment"
    );
    append_synced(&log, 8..9);
    drop(log);
    let (_, seen) = open_std(&dir, SMALL_SEGMENT, ReplayFrom::Oldest);
    assert_eq!(seen, expected(0..9));
}
