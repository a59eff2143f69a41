//! The write-ahead log: a durable, numbered sequence of opaque records, used as the commit
//! log (records are write batches) and as the manifest (records are table-set edits).
//!
//! A log is a directory of segment files `NNNNNN.log`, numbered by the log's own counter. The
//! byte layout (segment header, record framing) is in `log/record.rs`. Records are numbered
//! consecutively across segments and never span segments: one that does not fit in the
//! active segment starts the next.
//!
//! Writing. [`Log::append`] only encodes the record into memory, so the DB can call it under
//! its own lock to keep record order equal to sequence order. [`Log::sync`] makes records
//! durable by pipelined group commit: rounds of one write and one fdatasync that every caller
//! waiting meanwhile shares, up to [`SYNC_ROUNDS_MAX`] in flight, published in order (see
//! `log/commit.rs`).
//!
//! Segments are preallocated at full size before use, since an fdatasync that grows a file
//! costs about twice one that does not. Their size follows the workload: a log opens with a
//! segment of [`LogOptions::segment_bytes_min`], and each segment it moves on to is twice the
//! last, up to [`LogOptions::segment_bytes`], so a small database never holds more than a
//! few small files and a busy one soon writes full-size segments. Obsolete segments are
//! recycled: [`Log::release_before`] renames up to [`FREE_SEGMENTS_MAX`] of them (those at
//! least as large as the segment being written) to free files, and the next segment is a free
//! file renamed (one directory sync) rather than a new file written whole. Only when none is
//! free is a new one made, zero-filled or sparse as [`Preallocation`] says. One spare is kept
//! ready, prepared after a round publishes or by [`Log::prepare_spare`] from a background task,
//! which takes it off the write path entirely.
//!
//! Failure (fsyncgate): once a write or fdatasync fails, the tail on disk is unknown. That
//! call returns the original error (`Error::Io` / `Error::NoSpace`); every later `append` and
//! `sync` of a record not already durable returns `Error::WritesDisabled` with the cause.
//! Reopening recovers exactly the valid prefix.
//!
//! Opening ([`Log::open`]) replays the valid records in order and stops cleanly at a torn or
//! zeroed tail; damage that hides synced records is `Error::Corruption` (see `log/recovery.rs`).
//! Appending resumes in a new segment, never in a recovered tail, unless the log was closed
//! cleanly ([`Log::close`], which records where its records end, `log/closed.rs`): then it resumes
//! in the last segment, right after its last record. When no segment can be started (the disk
//! is full), the log opens for reading only: writes are refused with `Error::WritesDisabled`.

mod closed;
mod commit;
mod reader;
mod record;
mod recovery;
mod segment;

pub use reader::{DumpedRecord, ScanEnd, SegmentDump, StopReason, read_segment};
pub use record::{HeaderState, SegmentHeader};
pub use segment::Preallocation;

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use event_listener::Event;
use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, IoContext, Result};
use crate::fs::{FileSystem, WRITE_ALIGN, align_up};
pub(crate) use record::encode_record;
use record::{SEGMENT_HEADER_LEN, framed_len};
use recovery::Recovered;
use segment::{extend_segment, make_free, prepare_segment, remove_segment, reuse_free};

/// [`Log::write_if_full`] writes once this many bytes are buffered: large writes stream at
/// disk speed, and memory held by a buffered log stays bounded by about this much.
pub const BUFFERED_WRITE_BYTES: u64 = 1 << 20;
/// A segment must hold its header and at least a small record in its first block.
pub const SEGMENT_BYTES_MIN: u64 = WRITE_ALIGN as u64;
/// Record lengths are u32 on disk, and replay holds a whole record in memory.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Obsolete segments kept as free files for reuse. A flush usually makes one segment obsolete
/// and the log needs one new segment per memtable; the second absorbs a flush that frees two.
/// Each costs a segment of disk space.
pub const FREE_SEGMENTS_MAX: usize = 2;
/// Group-commit rounds between taking their batch and publishing it: one writing while
/// another's fdatasync is in flight keeps the disk busy while writers gather the next batch.
/// More rounds would split the writers into smaller batches.
pub const SYNC_ROUNDS_MAX: usize = 2;

/// A round starts while another is in flight only with at least this much appended for it;
/// less waits for the round in flight to publish. Every round costs the disk a write and a
/// flush, and where the disk serves flushes one at a time, a round of a few records started
/// early takes the device from the next, fuller one. Under a steady stream of writers a block
/// fills fast and rounds overlap; a few stragglers (unpipelined clients) join the next full
/// round instead. Writers re-check as they sync, and a publish lets them lead regardless.
pub const OVERLAP_BYTES_MIN: u64 = WRITE_ALIGN as u64;

const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);

/// How a log sizes and prepares its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Size of the first segment a log starts after opening, a multiple of [`WRITE_ALIGN`] no
    /// larger than `segment_bytes`; each later one doubles the last.
    pub segment_bytes_min: u64,
    /// Size segments grow to, a multiple of [`WRITE_ALIGN`]; bounds one record.
    pub segment_bytes: u64,
    /// How a new segment is made when no free file can be recycled.
    pub preallocation: Preallocation,
}

/// Where [`Log::open`] starts replaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// From the oldest record on disk.
    Oldest,
    /// Records before this one are not needed (e.g. already in SSTables).
    Record(u64),
}

/// A durable sequence of records. Every method takes `&self`: one log serves all writers.
pub struct Log<F: FileSystem> {
    fs: Arc<F>,
    dir: PathBuf,
    segment_bytes: u64,
    segment_bytes_min: u64,
    preallocation: Preallocation,
    /// Changed only through [`Log::lock`], which checks the invariants.
    state: Mutex<State<F>>,
    /// Fired when the writer is handed back, a round publishes, the log fails, a spare
    /// settles, or a release ends.
    changed: Event,
    /// Fired when a round publishes or the log fails: all that writers whose record a round
    /// has taken wait for. Kept apart from `changed` so the many writers of a busy group commit
    /// are not woken for every writer hand-off, spare or release as well.
    published: Event,
    /// fdatasyncs of record data done by leaders: records per sync is how well group commit
    /// groups.
    data_syncs: AtomicU64,
}

struct State<F: FileSystem> {
    next_record: u64,
    durable: Option<u64>,
    /// Last record taken by a sync round: no new round is needed for records up to it.
    syncing: Option<u64>,
    /// Sync rounds holding or waiting for the writer, writing, syncing or publishing.
    rounds_in_flight: usize,
    /// Number the next sync round gets; rounds publish in this order.
    next_round: u64,
    /// The last round that published (rounds start at 1).
    published_round: u64,
    /// Appended bytes of segments the tail has moved past, not yet taken by a leader.
    sealed: Vec<Pending>,
    /// The segment being appended to: its unwritten bytes plus the partial block a leader
    /// has already written and the next leader rewrites.
    tail: Pending,
    /// Bytes appended since the last leader took the buffer.
    unwritten_bytes: u64,
    /// The active segment file; `None` while a leader owns it, and for good after a failure.
    writer: Option<Writer<F>>,
    /// Number of the active segment file, readable while a leader owns the writer.
    active_no: u64,
    /// Always prepared as segment `active_no + 1`.
    spare: Spare<F>,
    /// Segments with a file or a buffered header, oldest first.
    segments: VecDeque<LiveSegment>,
    /// Free files, at most [`FREE_SEGMENTS_MAX`].
    free: Vec<FreeFile>,
    releasing: bool,
    /// Why writes are disabled.
    failed: Option<String>,
    /// [`Log::close`] has begun: appends are refused.
    closed: bool,
}

/// An obsolete segment kept for reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FreeFile {
    number: u64,
    bytes: u64,
}

/// Buffered bytes of one segment, from `start` (block-aligned) on.
struct Pending {
    segment_no: u64,
    start: u64,
    bytes: Vec<u8>,
}

impl Pending {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

struct Writer<F: FileSystem> {
    /// Shared with a round that has handed the writer on and still fdatasyncs the file.
    file: Arc<F::File>,
    segment_no: u64,
    /// Written to since the segment became active (an fdatasync by a round in flight may not
    /// have covered it yet).
    dirty: bool,
}

enum Spare<F: FileSystem> {
    None,
    Preparing,
    /// The file and its length.
    Ready(F::File, u64),
}

#[derive(Debug, Clone, Copy)]
struct LiveSegment {
    number: u64,
    first_record: u64,
    /// Where appending moves on to the next segment.
    capacity: u64,
    /// Length of its file: the capacity, or more for a larger free file reused.
    file_bytes: u64,
}

/// Runs its action if dropped before [`OnCancel::disarm`]: a future cancelled mid-I/O must
/// not leave other callers waiting for a leader, spare or release that will never finish.
struct OnCancel<A: FnMut()>(Option<A>);

impl<A: FnMut()> OnCancel<A> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<A: FnMut()> Drop for OnCancel<A> {
    fn drop(&mut self) {
        if let Some(action) = &mut self.0 {
            action();
        }
    }
}

/// The log's state, locked ([`Log::lock`]). Every change to the state is made through one,
/// and releasing it checks [`Locked::check_invariants`] in debug builds, so each transition
/// is checked as it completes.
struct Locked<'a, F: FileSystem> {
    state: MutexGuard<'a, State<F>>,
}

impl<F: FileSystem> Deref for Locked<'_, F> {
    type Target = State<F>;

    fn deref(&self) -> &State<F> {
        &self.state
    }
}

impl<F: FileSystem> DerefMut for Locked<'_, F> {
    fn deref_mut(&mut self) -> &mut State<F> {
        &mut self.state
    }
}

impl<F: FileSystem> Drop for Locked<'_, F> {
    fn drop(&mut self) {
        // Not while unwinding: a second panic would abort and hide the first.
        if cfg!(debug_assertions) && !std::thread::panicking() {
            self.check_invariants();
        }
    }
}

impl<F: FileSystem> Locked<'_, F> {
    /// Panics unless the state keeps the log's rules:
    ///
    /// 1. At most [`SYNC_ROUNDS_MAX`] rounds are in flight.
    /// 2. No round has published that was not numbered: `published_round < next_round`.
    /// 3. Until a failure, every numbered round not yet published is in flight.
    /// 4. Nothing is durable that no round took: `durable <= syncing`.
    /// 5. No round took a record not yet appended: `syncing < next_record`.
    /// 6. Everything appended and not yet taken is buffered: `unwritten_bytes` is at most the
    ///    bytes of the sealed parts and the tail.
    /// 7. The tail starts on a block boundary, as every write must.
    /// 8. The tail fits in its segment's capacity.
    /// 9. The sealed parts are of the segments just before the tail's, in order.
    /// 10. The active segment is not past the one being appended to.
    /// 11. The writer, when no leader holds it, is on the active segment.
    /// 12. The newest live segment is the one being appended to.
    /// 13. Live segments are in number order, each starting at or after the previous one's
    ///     first record.
    /// 14. At most [`FREE_SEGMENTS_MAX`] free files are kept.
    fn check_invariants(&self) {
        let st = &*self.state;
        assert!(st.rounds_in_flight <= SYNC_ROUNDS_MAX);
        assert!(st.published_round < st.next_round);
        if st.failed.is_none() {
            let unpublished = st.next_round - 1 - st.published_round;
            assert!(unpublished <= st.rounds_in_flight as u64);
        }
        assert!(st.durable <= st.syncing);
        assert!(st.syncing.is_none_or(|s| s < st.next_record));
        let buffered: usize =
            st.sealed.iter().map(|p| p.bytes.len()).sum::<usize>() + st.tail.bytes.len();
        assert!(st.unwritten_bytes <= buffered as u64);
        assert!(st.tail.start % WRITE_ALIGN as u64 == 0);
        assert!(
            st.segments
                .back()
                .is_none_or(|s| st.tail.end() <= s.capacity)
        );
        for (i, part) in st.sealed.iter().enumerate() {
            let before_tail = (st.sealed.len() - i) as u64;
            assert!(part.segment_no + before_tail == st.tail.segment_no);
        }
        assert!(st.active_no <= st.tail.segment_no);
        if let Some(writer) = &st.writer {
            assert!(writer.segment_no == st.active_no);
        }
        assert!(st.segments.back().map(|s| s.number) == Some(st.tail.segment_no));
        for (older, newer) in st.segments.iter().zip(st.segments.iter().skip(1)) {
            assert!(older.number < newer.number);
            assert!(older.first_record <= newer.first_record);
        }
        assert!(st.free.len() <= FREE_SEGMENTS_MAX);
    }
}

impl<F: FileSystem> Log<F> {
    /// Opens (creating if needed, durably within its parent) the log in `dir`, replays every
    /// valid record from `from` in order, calling `apply(record_no, payload)`, then prepares
    /// to append after the last valid record: in the last segment when the log was closed
    /// cleanly, in a new segment otherwise (never into a recovered segment's torn tail). When
    /// the disk has no room for a new segment the log opens for reading only.
    ///
    /// Segments wholly before `from` are deleted. Replay stops cleanly at a torn or zeroed
    /// tail of the last segment that has records; a gap or bad record followed by later
    /// valid segments is `Error::Corruption`, and so is `ReplayFrom::Record(n)` when record
    /// `n` exists nowhere but later ones do. When every record is before `n`, the next record
    /// is numbered `n`.
    pub async fn open(
        fs: Arc<F>,
        dir: PathBuf,
        options: LogOptions,
        from: ReplayFrom,
        apply: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Log<F>> {
        let LogOptions {
            segment_bytes,
            segment_bytes_min,
            preallocation,
        } = options;
        let valid_size = |bytes: u64| {
            (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&bytes)
                && bytes % WRITE_ALIGN as u64 == 0
        };
        if !valid_size(segment_bytes) || !valid_size(segment_bytes_min) {
            return Err(Error::InvalidArgument(format!(
                "log segment sizes {segment_bytes_min}..{segment_bytes} are not multiples of \
                 {WRITE_ALIGN} in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"
            )));
        }
        if segment_bytes_min > segment_bytes {
            return Err(Error::InvalidArgument(format!(
                "first log segment size {segment_bytes_min} is above the largest, {segment_bytes}"
            )));
        }
        fs.create_dir_all(&dir).await.at(&dir)?;
        // `dir` itself may be new: its entry is durable only once its parent is synced. The
        // parent's own entry is the caller's (the database directory).
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent).await.at(parent)?;
        }
        let Recovered {
            next_record,
            mut segments,
            free,
            active_no,
            reused,
        } = recovery::recover(&*fs, &dir, segment_bytes, from, apply).await?;
        let mut free = free
            .into_iter()
            .map(|(number, bytes)| FreeFile { number, bytes })
            .collect();

        let (tail, writer, failed) = match reused {
            Some(reused) => {
                let tail = Pending {
                    segment_no: active_no,
                    start: reused.block_start,
                    bytes: reused.block,
                };
                (tail, Some(reused.file), None)
            }
            None => {
                // Buffered, to be written with the first record.
                let mut header = Vec::with_capacity(WRITE_ALIGN);
                SegmentHeader {
                    segment_no: active_no,
                    first_record: next_record,
                }
                .encode(&mut header);
                let started = start_segment(&*fs, &dir, &mut free, active_no, options).await;
                let tail = Pending {
                    segment_no: active_no,
                    start: 0,
                    bytes: header,
                };
                match started {
                    Ok((file, bytes)) => {
                        segments.push_back(LiveSegment {
                            number: active_no,
                            first_record: next_record,
                            capacity: bytes,
                            file_bytes: bytes,
                        });
                        (tail, Some(file), None)
                    }
                    Err(e @ Error::NoSpace { .. }) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "no room for a log segment: open for reads only");
                        segments.push_back(LiveSegment {
                            number: active_no,
                            first_record: next_record,
                            capacity: segment_bytes_min,
                            file_bytes: 0,
                        });
                        let cause = format!("{e}; the database is open for reads only");
                        (tail, None, Some(cause))
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        tracing::debug!(dir = %dir.display(), next_record, active_no, "log opened");
        let log = Log {
            fs,
            dir,
            segment_bytes,
            segment_bytes_min,
            preallocation,
            state: Mutex::new(State {
                next_record,
                durable: next_record.checked_sub(1),
                syncing: next_record.checked_sub(1),
                rounds_in_flight: 0,
                next_round: 1,
                published_round: 0,
                sealed: Vec::new(),
                tail,
                unwritten_bytes: 0,
                writer: writer.map(|file| Writer {
                    file: Arc::new(file),
                    segment_no: active_no,
                    dirty: false,
                }),
                active_no,
                spare: Spare::None,
                segments,
                free,
                releasing: false,
                failed,
                closed: false,
            }),
            changed: Event::new(),
            published: Event::new(),
            data_syncs: AtomicU64::new(0),
        };
        if cfg!(debug_assertions) {
            log.lock().check_invariants();
        }
        Ok(log)
    }

    /// Makes every appended record durable, refuses appends from now on, and records where
    /// the records end (`log/closed.rs`), so that the next open appends right after them in the
    /// same segment instead of starting a new one. A log whose writes failed (each failure
    /// was reported to its writer) records nothing: its next open starts a new segment, as
    /// after a crash.
    pub async fn close(&self) -> Result<()> {
        let last = {
            let mut st = self.lock();
            if st.closed {
                return Ok(());
            }
            st.closed = true;
            if st.failed.is_some() {
                return Ok(());
            }
            st.next_record.checked_sub(1)
        };
        self.changed.notify(usize::MAX);
        if let Some(last) = last {
            self.sync(last).await?;
        }
        let tail = {
            let st = self.lock();
            if st.failed.is_some() || st.writer.is_none() {
                return Ok(());
            }
            debug_assert_eq!(st.tail.segment_no, st.active_no);
            closed::ClosedTail {
                segment_no: st.tail.segment_no,
                end: st.tail.end(),
                next_record: st.next_record,
            }
        };
        closed::write(&*self.fs, &self.dir, &tail).await
    }

    /// Buffers one record; no I/O, no await, so the DB can call it while holding its own lock
    /// to keep record order = sequence order. Returns the record number.
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        if payload.is_empty() {
            return Err(Error::InvalidArgument("empty log record".into()));
        }
        let framed = framed_len(payload.len());
        if SEGMENT_HEADER_LEN as u64 + framed > self.segment_bytes {
            return Err(Error::InvalidArgument(format!(
                "log record of {} bytes does not fit in a {}-byte segment",
                payload.len(),
                self.segment_bytes
            )));
        }
        let mut st = self.lock();
        if let Some(cause) = &st.failed {
            return Err(Error::WritesDisabled(cause.clone()));
        }
        if st.closed {
            return Err(Error::Closed);
        }
        let record_no = st.next_record;
        let end = st.tail.end();
        debug_assert!(
            end >= SEGMENT_HEADER_LEN as u64,
            "every segment starts with its header"
        );
        let capacity_now = tail_capacity(&st);
        if end + framed > capacity_now {
            let number = st.tail.segment_no + 1;
            let need = align_up(SEGMENT_HEADER_LEN as u64 + framed);
            let capacity = self.grown(capacity_now).max(need);
            let mut bytes = Vec::new();
            SegmentHeader {
                segment_no: number,
                first_record: record_no,
            }
            .encode(&mut bytes);
            let full = std::mem::replace(
                &mut st.tail,
                Pending {
                    segment_no: number,
                    start: 0,
                    bytes,
                },
            );
            st.sealed.push(full);
            st.segments.push_back(LiveSegment {
                number,
                first_record: record_no,
                capacity,
                file_bytes: capacity,
            });
            st.unwritten_bytes += SEGMENT_HEADER_LEN as u64;
        }
        let segment_no = st.tail.segment_no;
        encode_record(segment_no, payload, &mut st.tail.bytes);
        debug_assert!(st.tail.end() <= tail_capacity(&st));
        st.unwritten_bytes += framed;
        st.next_record += 1;
        Ok(record_no)
    }

    /// Prepares the next segment ahead of need if the active one is past half full and no
    /// spare exists; returns whether it did. For a background task: leaders call it too, after
    /// publishing, so without one only the caller of that leader waits for the zero-fill.
    pub async fn prepare_spare(&self) -> Result<bool> {
        let (number, capacity) = {
            let mut st = self.lock();
            let tail_capacity = tail_capacity(&st);
            let wanted = st.tail.segment_no > st.active_no || st.tail.end() > tail_capacity / 2;
            if st.failed.is_some() || st.closed || !matches!(st.spare, Spare::None) || !wanted {
                return Ok(false);
            }
            st.spare = Spare::Preparing;
            let number = st.active_no + 1;
            // Already appended to, it has its capacity; otherwise it is the next size up.
            let capacity = st
                .segments
                .iter()
                .find(|s| s.number == number)
                .map_or_else(|| self.grown(tail_capacity), |s| s.capacity);
            (number, capacity)
        };
        let (file, bytes) = self.prepare_claimed(number, capacity).await?;
        self.lock().spare = Spare::Ready(file, bytes);
        self.changed.notify(usize::MAX);
        Ok(true)
    }

    /// Retires segments all of whose records are < `record_no` (their data is in SSTables
    /// now), oldest first, each durably before the next: kept as free files for reuse while
    /// fewer than [`FREE_SEGMENTS_MAX`] are, removed otherwise. Never the active segment.
    pub async fn release_before(&self, record_no: u64) -> Result<()> {
        let count = loop {
            let listener = {
                let mut st = self.lock();
                if !st.releasing {
                    st.releasing = true;
                    let active_no = st.active_no;
                    let segs = &st.segments;
                    break (0..segs.len().saturating_sub(1))
                        .take_while(|&i| {
                            segs[i].number < active_no && segs[i + 1].first_record <= record_no
                        })
                        .count();
                }
                self.changed.listen()
            };
            listener.await;
        };
        let guard = OnCancel(Some(|| self.end_release()));
        let mut result = Ok(());
        for _ in 0..count {
            let (front, recycle) = {
                let st = self.lock();
                let Some(&front) = st.segments.front() else {
                    break;
                };
                // Worth keeping only if it can take the place of a segment as large as the
                // one being written now: smaller ones, left from when the log was young, go.
                let recycle =
                    st.free.len() < FREE_SEGMENTS_MAX && front.file_bytes >= tail_capacity(&st);
                (front, recycle)
            };
            let number = front.number;
            result = if recycle {
                make_free(&*self.fs, &self.dir, number).await
            } else {
                remove_segment(&*self.fs, &self.dir, number).await
            };
            if result.is_err() {
                break;
            }
            let mut st = self.lock();
            let removed = st.segments.pop_front();
            debug_assert_eq!(removed.map(|s| s.number), Some(number));
            if recycle {
                st.free.push(FreeFile {
                    number,
                    bytes: front.file_bytes,
                });
            }
        }
        guard.disarm();
        self.end_release();
        result
    }

    /// Number the next appended record will get.
    pub fn next_record(&self) -> u64 {
        self.lock().next_record
    }

    /// The highest record known durable, if any.
    pub fn durable_record(&self) -> Option<u64> {
        self.lock().durable
    }

    /// fdatasyncs of record data so far (for stats).
    pub fn data_syncs(&self) -> u64 {
        self.data_syncs.load(Ordering::Relaxed)
    }

    /// Bytes of live segments on disk, the spare and free files included (for stats).
    pub fn disk_bytes(&self) -> u64 {
        let st = self.lock();
        let live: u64 = st
            .segments
            .iter()
            .filter(|s| s.number <= st.active_no)
            .map(|s| s.file_bytes)
            .sum();
        let spare = match st.spare {
            Spare::Ready(_, bytes) => bytes,
            Spare::None | Spare::Preparing => 0,
        };
        live + spare + st.free.iter().map(|f| f.bytes).sum::<u64>()
    }

    /// Segments holding records still needed, the one appended to included.
    pub fn live_segments(&self) -> usize {
        self.lock().segments.len()
    }

    /// Segment files the log keeps: live segments, the spare and free files (for stats).
    pub fn files(&self) -> usize {
        let st = self.lock();
        let live = st.segments.iter().filter(|s| s.file_bytes > 0).count();
        live + usize::from(matches!(st.spare, Spare::Ready(..))) + st.free.len()
    }

    /// Prepares segment `number`, of at least `capacity` bytes, after the caller set the spare
    /// slot to `Preparing`: from a free file if there is one (extended if it is smaller), new
    /// otherwise. Returns the file and its length. On failure or cancellation the slot is
    /// emptied again (a free file taken then is left to the next open, which finds it again or
    /// sees it renamed).
    async fn prepare_claimed(&self, number: u64, capacity: u64) -> Result<(F::File, u64)> {
        let reset = || {
            self.lock().spare = Spare::None;
            self.changed.notify(usize::MAX);
        };
        let guard = OnCancel(Some(reset));
        let free = self.lock().free.pop();
        let (fs, dir) = (&*self.fs, &self.dir);
        let result = match free {
            Some(f) => match reuse_free(fs, dir, f.number, number).await {
                Ok(file) if f.bytes < capacity => {
                    extend_segment(&file, f.bytes, capacity, self.preallocation)
                        .await
                        .map(|()| (file, capacity))
                }
                Ok(file) => Ok((file, f.bytes)),
                Err(e) => Err(e),
            },
            None => prepare_segment(fs, dir, number, capacity, self.preallocation)
                .await
                .map(|file| (file, capacity)),
        };
        if result.is_ok() {
            guard.disarm();
        }
        result
    }

    /// The size of the segment after one of `capacity`: twice as large, up to the largest.
    fn grown(&self, capacity: u64) -> u64 {
        capacity
            .saturating_mul(2)
            .clamp(self.segment_bytes_min, self.segment_bytes)
    }

    /// Wakes every waiter: after a publish or a failure, which writers waiting for their
    /// round (`published`) and everyone else (`changed`) both need to see.
    fn wake_all(&self) {
        self.published.notify(usize::MAX);
        self.changed.notify(usize::MAX);
    }

    fn end_release(&self) {
        self.lock().releasing = false;
        self.changed.notify(usize::MAX);
    }

    /// The state, locked; checked when released (see [`Locked`]).
    fn lock(&self) -> Locked<'_, F> {
        Locked {
            state: self.state.lock(),
        }
    }
}

/// Capacity of the segment being appended to (the newest live one).
fn tail_capacity<F: FileSystem>(st: &State<F>) -> u64 {
    st.segments.back().map_or(0, |s| s.capacity)
}

/// Starts segment `number` for appending: a free file if there is one (at its size), a new
/// file of the smallest size otherwise. Returns the file and its length. Its header is
/// written with its first record: a database whose open fails after this (a damaged manifest
/// found later) must be left as it was found, so that a repaired manifest still fits the log.
async fn start_segment<F: FileSystem>(
    fs: &F,
    dir: &std::path::Path,
    free: &mut Vec<FreeFile>,
    number: u64,
    options: LogOptions,
) -> Result<(F::File, u64)> {
    match free.pop() {
        Some(f) => Ok((reuse_free(fs, dir, f.number, number).await?, f.bytes)),
        None => {
            let bytes = options.segment_bytes_min;
            let file = prepare_segment(fs, dir, number, bytes, options.preallocation).await?;
            Ok((file, bytes))
        }
    }
}

#[cfg(test)]
mod tests;
