//! The write-ahead log: a durable, numbered sequence of opaque records, used as the commit
//! log (records are write batches) and as the manifest (records are table-set edits).
//!
//! A log is a directory of segment files `NNNNNN.log`, numbered by the log's own counter. The
//! byte layout (segment header, record framing) is in [`record`]. Records are numbered
//! consecutively across segments and never span segments: one that does not fit in the
//! active segment starts the next.
//!
//! Writing. [`Log::append`] only encodes the record into memory, so the DB can call it under
//! its own lock to keep record order equal to sequence order. [`Log::sync`] is pipelined group
//! commit in rounds: a caller whose record no round covers yet, finding the writer free and
//! fewer than [`SYNC_ROUNDS_MAX`] rounds in flight (and, if one is in flight, at least
//! [`OVERLAP_BYTES_MIN`] appended for the new round), leads a round: it yields once so that every
//! task ready to run appends first, takes everything buffered, writes it (the last write with
//! the fdatasync queued behind it, [`File::write_then_sync`]), hands the writer to the next
//! round, awaits the fdatasync, and once every earlier round has published, publishes the new
//! durable record number and wakes everyone. So one round's fdatasync overlaps the next
//! round's gathering and write (on this disk, concurrent flushes cost little more than one).
//! A round's write starts only after the previous round's write completed (it rewrites the
//! same tail block), so its fdatasync covers every earlier round's bytes too; publishing in
//! round order keeps the durable mark from passing a round that failed. Only the round
//! holding the writer writes to the active segment. Writes are whole [`WRITE_ALIGN`] blocks at aligned offsets: the partial
//! tail block stays in memory and is rewritten, zero-padded, by the next leader.
//!
//! Segments are preallocated at full size before use, since an fdatasync that grows a file
//! costs about twice one that does not. Obsolete segments are recycled: [`Log::release_before`]
//! renames up to [`FREE_SEGMENTS_MAX`] of them to free files, and the next segment is a free
//! file renamed (one directory sync) rather than a new file written whole. Only when none is
//! free is a new one made, zero-filled or sparse as [`Preallocation`] says. One spare is kept
//! ready: after publishing, a leader that finds the active segment past half full (and no
//! spare) prepares the next segment before returning to its own caller, so only that one
//! caller waits, not the group. [`Log::prepare_spare`] does the same from a background task,
//! taking it off the write path entirely. Rotation happens in the leader, and the old segment
//! is fdatasynced before any byte of the new one is written, so a crash can tear only the
//! last segment.
//!
//! Failure (fsyncgate): once a write or fdatasync fails, the tail on disk is unknown. That
//! call returns the original error (`Error::Io` / `Error::NoSpace`); every later `append` and
//! `sync` of a record not already durable returns `Error::WritesDisabled` with the cause.
//! Reopening recovers exactly the valid prefix.
//!
//! Recovery ([`Log::open`]) replays valid records in order and stops cleanly at a torn or
//! zeroed tail of the last segment that has records; damage followed by later valid segments,
//! or by intact records before the next all-zero sector (which no torn write leaves), means
//! synced data was lost, and is `Error::Corruption`. Damage to the very last record cannot be
//! told from a torn write of it: that record is dropped. The last recovered segment is
//! fdatasynced (what a killed process left in the page cache becomes what a later power loss
//! cannot take back), and appending resumes in a new segment, never in a recovered tail.

mod reader;
mod record;
mod segment;

pub use reader::{DumpedRecord, ScanEnd, SegmentDump, StopReason, read_segment};
pub use record::{HeaderState, SegmentHeader};
pub use segment::{FREE_EXT, Preallocation, SEGMENT_EXT};

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use event_listener::Event;
use parking_lot::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FileSystem, WRITE_ALIGN, align_up};
pub(crate) use record::encode_record;
use record::{SEGMENT_HEADER_LEN, framed_len};
use segment::{
    make_free, parse_free_name, parse_segment_name, prepare_segment, remove_free, remove_segment,
    reuse_free, segment_path,
};

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
/// flush, which this disk runs one at a time, so a round of a few records started early takes
/// the device from the next, fuller one. Under a steady stream of writers a block fills fast
/// and rounds overlap; a few stragglers (unpipelined clients) join the next full round
/// instead. Writers re-check as they sync, and a publish lets them lead regardless.
pub const OVERLAP_BYTES_MIN: u64 = WRITE_ALIGN as u64;

const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Size of every segment file, a multiple of [`WRITE_ALIGN`]; bounds one record.
    pub segment_bytes: u64,
    /// How a new segment is made when no free file can be recycled.
    pub preallocation: Preallocation,
}

/// Where [`Log::open`] starts replaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    Oldest,
    /// Records before this one are not needed (e.g. already in SSTables).
    Record(u64),
}

/// A durable sequence of records; shared as `Arc<Log<F>>`, all methods take `&self`.
pub struct Log<F: FileSystem> {
    fs: Arc<F>,
    dir: PathBuf,
    segment_bytes: u64,
    preallocation: Preallocation,
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
    /// Free files (by number), each `segment_bytes` long, at most [`FREE_SEGMENTS_MAX`].
    free: Vec<u64>,
    releasing: bool,
    /// Why writes are disabled.
    failed: Option<String>,
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
    Ready(F::File),
}

#[derive(Debug, Clone, Copy)]
struct LiveSegment {
    number: u64,
    first_record: u64,
    bytes: u64,
}

/// What a leader takes from the buffer.
struct Batch {
    parts: Vec<Pending>,
    /// Every record up to this one is in `parts` or was written by an earlier leader.
    last_record: Option<u64>,
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

/// The writer held by a round's leader that has not taken its batch yet; given back (and the
/// waiters woken) if the leader is cancelled before it does.
struct Claim<'a, F: FileSystem> {
    log: &'a Log<F>,
    writer: Option<Writer<F>>,
}

impl<F: FileSystem> Drop for Claim<'_, F> {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let mut st = self.log.state.lock();
            st.writer = Some(writer);
            st.rounds_in_flight -= 1;
            drop(st);
            self.log.changed.notify(usize::MAX);
        }
    }
}

/// A segment found on disk when opening.
struct Found {
    number: u64,
    file_len: u64,
    header: HeaderState,
}

impl<F: FileSystem> Log<F> {
    /// Opens (creating if needed, durably within its parent) the log in `dir`, replays every valid record from `from` in
    /// order, calling `apply(record_no, payload)`, then prepares to append after the last
    /// valid record, in a new segment (never into a recovered segment's torn tail).
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
        mut apply: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Log<F>> {
        let segment_bytes = options.segment_bytes;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment_bytes)
            || segment_bytes % WRITE_ALIGN as u64 != 0
        {
            return Err(Error::InvalidArgument(format!(
                "log segment size {segment_bytes} is not a multiple of {WRITE_ALIGN} in \
                 {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"
            )));
        }
        fs.create_dir_all(&dir).await.at(&dir)?;
        // `dir` itself may be new: its entry is durable only once its parent is synced. The
        // parent's own entry is the caller's (the database directory).
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent).await.at(parent)?;
        }
        let names = fs.list_dir(&dir).await.at(&dir)?;
        let found = find_segments(&*fs, &dir, &names).await?;
        let mut free = find_free(&*fs, &dir, &names, segment_bytes).await?;
        let from_record = match from {
            ReplayFrom::Oldest => 0,
            ReplayFrom::Record(n) => n,
        };

        // Segments up to the last valid header must all be valid; anything after it is a
        // torn or never-used tail.
        let last_valid = found
            .iter()
            .rposition(|s| matches!(s.header, HeaderState::Valid(_)));
        let valid = &found[..last_valid.map_or(0, |i| i + 1)];
        let mut headers = Vec::with_capacity(valid.len());
        for s in valid {
            match &s.header {
                HeaderState::Valid(h) => headers.push(*h),
                HeaderState::Blank => {
                    return Err(Error::corruption(
                        segment_path(&dir, s.number),
                        0,
                        "blank segment before later segments with records",
                    ));
                }
                HeaderState::Invalid(why) => {
                    return Err(Error::corruption(
                        segment_path(&dir, s.number),
                        0,
                        format!("{why}, before later segments with records"),
                    ));
                }
            }
        }

        // The first segment to read: for `Record(n)`, the last one starting at or before `n`.
        let start = match from {
            ReplayFrom::Oldest => 0,
            ReplayFrom::Record(n) => match headers.iter().rposition(|h| h.first_record <= n) {
                Some(i) => i,
                None => match headers.first() {
                    Some(h) => {
                        return Err(Error::corruption(
                            segment_path(&dir, h.segment_no),
                            0,
                            format!(
                                "replay wanted from record {n} but the log starts at record {}",
                                h.first_record
                            ),
                        ));
                    }
                    None => 0,
                },
            },
        };

        // Replay, checking that each segment starts where the previous one's records stop.
        let mut kept: Vec<(LiveSegment, F::File, ScanEnd)> = Vec::new();
        for (s, h) in valid[start..].iter().zip(&headers[start..]) {
            let path = segment_path(&dir, s.number);
            if let Some((prev, _, end)) = kept.last() {
                if h.first_record != end.next_record {
                    return Err(Error::corruption(
                        segment_path(&dir, prev.number),
                        end.offset,
                        format!(
                            "records stop before {} ({}) but segment {} starts at record {}",
                            end.next_record, end.reason, s.number, h.first_record
                        ),
                    ));
                }
            }
            let file = fs.open(&path).await.at(&path)?;
            let end = reader::scan_records(&file, s.file_len, h, |record_no, _, payload| {
                if record_no >= from_record {
                    apply(record_no, payload)?;
                }
                Ok(())
            })
            .await?;
            let seg = LiveSegment {
                number: s.number,
                first_record: h.first_record,
                bytes: s.file_len,
            };
            kept.push((seg, file, end));
        }
        // Replay stops at damage in the last segment as at a torn tail, unless intact records
        // follow it, which no torn write leaves (see `reader::intact_record_after`).
        if let Some((seg, file, end)) = kept.last() {
            if matches!(
                end.reason,
                StopReason::BadChecksum | StopReason::ImpossibleLength(_)
            ) {
                let found =
                    reader::intact_record_after(file, seg.bytes, end.offset + 1, seg.number)
                        .await?;
                if let Some(offset) = found {
                    return Err(Error::corruption(
                        segment_path(&dir, seg.number),
                        end.offset,
                        format!(
                            "{} at record {}, but a record at offset {offset} is intact: \
                             damaged records, not a torn write",
                            end.reason, end.next_record
                        ),
                    ));
                }
            }
        }
        // A damaged header on a segment after the last valid one hides its records the same
        // way. (A recycled spare never written to still has its old header: invalid, and none
        // of its records is tagged for it.)
        for s in &found[valid.len()..] {
            if let HeaderState::Invalid(why) = &s.header {
                let path = segment_path(&dir, s.number);
                let file = fs.open(&path).await.at(&path)?;
                let found = reader::intact_record_after(
                    &file,
                    s.file_len,
                    SEGMENT_HEADER_LEN as u64,
                    s.number,
                )
                .await?;
                if let Some(offset) = found {
                    return Err(Error::corruption(
                        path,
                        0,
                        format!(
                            "{why}, but a record at offset {offset} is intact: a damaged \
                             header, not a torn write"
                        ),
                    ));
                }
            }
        }

        let next_record = kept
            .last()
            .map_or(0, |(_, _, end)| end.next_record)
            .max(from_record);

        // Segments whose records all precede `from` go; of the rest, the last may hold bytes a
        // killed process left unsynced: make them durable before anything is written after.
        let before_from = kept
            .iter()
            .take_while(|(_, _, end)| from_record > 0 && end.next_record <= from_record)
            .count();
        if let Some((seg, file, _)) = kept.last().filter(|_| kept.len() > before_from) {
            file.sync_data().await.at(&segment_path(&dir, seg.number))?;
        }

        // Remove the unusable tail first (durably, before anything is written after it),
        // then retire what precedes `from`, oldest first so a crash never leaves a gap.
        for s in found[valid.len()..].iter().rev() {
            remove_segment(&*fs, &dir, s.number).await?;
        }
        let obsolete = found[..start].iter().map(|s| (s.number, s.file_len)).chain(
            kept[..before_from]
                .iter()
                .map(|(seg, _, _)| (seg.number, seg.bytes)),
        );
        for (number, bytes) in obsolete {
            if free.len() < FREE_SEGMENTS_MAX && bytes == segment_bytes {
                make_free(&*fs, &dir, number).await?;
                free.push(number);
            } else {
                remove_segment(&*fs, &dir, number).await?;
            }
        }

        let active_no = found.last().map_or(1, |s| s.number + 1);
        let file = match free.pop() {
            Some(f) => reuse_free(&*fs, &dir, f, active_no).await?,
            None => {
                prepare_segment(&*fs, &dir, active_no, segment_bytes, options.preallocation).await?
            }
        };
        let mut segments: VecDeque<LiveSegment> =
            kept.drain(before_from..).map(|(seg, _, _)| seg).collect();
        segments.push_back(LiveSegment {
            number: active_no,
            first_record: next_record,
            bytes: segment_bytes,
        });
        tracing::debug!(dir = %dir.display(), next_record, active_no, "log opened");
        Ok(Log {
            fs,
            dir,
            segment_bytes,
            preallocation: options.preallocation,
            state: Mutex::new(State {
                next_record,
                durable: next_record.checked_sub(1),
                syncing: next_record.checked_sub(1),
                rounds_in_flight: 0,
                next_round: 1,
                published_round: 0,
                sealed: Vec::new(),
                tail: Pending {
                    segment_no: active_no,
                    start: 0,
                    bytes: Vec::new(),
                },
                unwritten_bytes: 0,
                writer: Some(Writer {
                    file: Arc::new(file),
                    segment_no: active_no,
                    dirty: false,
                }),
                active_no,
                spare: Spare::None,
                segments,
                free,
                releasing: false,
                failed: None,
            }),
            changed: Event::new(),
            published: Event::new(),
            data_syncs: AtomicU64::new(0),
        })
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
        let mut st = self.state.lock();
        if let Some(cause) = &st.failed {
            return Err(Error::WritesDisabled(cause.clone()));
        }
        let record_no = st.next_record;
        let end = st.tail.end();
        if end == 0 {
            // The segment opened at startup: its header goes with its first record.
            debug_assert_eq!(st.segments.back().map(|s| s.first_record), Some(record_no));
            let header = SegmentHeader {
                segment_no: st.tail.segment_no,
                first_record: record_no,
            };
            header.encode(&mut st.tail.bytes);
        } else if end + framed > self.segment_bytes {
            let number = st.tail.segment_no + 1;
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
                bytes: self.segment_bytes,
            });
            st.unwritten_bytes += SEGMENT_HEADER_LEN as u64;
        }
        let segment_no = st.tail.segment_no;
        encode_record(segment_no, payload, &mut st.tail.bytes);
        debug_assert!(st.tail.end() <= self.segment_bytes);
        st.unwritten_bytes += framed;
        st.next_record += 1;
        Ok(record_no)
    }

    /// Returns once record `record_no` (and so every earlier one) is durable. Concurrent
    /// callers share fdatasyncs (group commit): if a round in flight covers the record, wait
    /// for it to publish; otherwise lead a round as soon as the writer is free.
    pub async fn sync(&self, record_no: u64) -> Result<()> {
        let (writer, others_in_flight) = loop {
            let listener = {
                let mut st = self.state.lock();
                if record_no >= st.next_record {
                    return Err(Error::InvalidArgument(format!(
                        "sync of log record {record_no}, which was never appended"
                    )));
                }
                if st.durable.is_some_and(|d| d >= record_no) {
                    return Ok(());
                }
                if let Some(cause) = &st.failed {
                    return Err(Error::WritesDisabled(cause.clone()));
                }
                let covered = st.syncing.is_some_and(|s| s >= record_no);
                if covered {
                    self.published.listen()
                } else {
                    if st.rounds_in_flight < SYNC_ROUNDS_MAX
                        && (st.rounds_in_flight == 0 || st.unwritten_bytes >= OVERLAP_BYTES_MIN)
                    {
                        if let Some(writer) = st.writer.take() {
                            st.rounds_in_flight += 1;
                            break (writer, st.rounds_in_flight > 1);
                        }
                    }
                    self.changed.listen()
                }
            };
            listener.await;
        };
        // Leading. With the disk idle, start at once: writers arriving meanwhile form the next
        // round, whose write and fdatasync overlap this one's. With another round in flight,
        // ours waits for it anyway: first let every writer that is ready to run append, so
        // that one fdatasync covers them all (without this the leader, usually the first task
        // woken by the previous round, would take a batch of one record).
        let mut claim = Claim {
            log: self,
            writer: Some(writer),
        };
        if others_in_flight {
            futures_lite::future::yield_now().await;
        }
        let Some(writer) = claim.writer.take() else {
            unreachable!("the claimed writer is taken only here")
        };
        let (batch, round) = {
            let mut st = self.state.lock();
            let batch = take_batch(&mut st, true);
            st.syncing = st.syncing.max(batch.last_record);
            let round = st.next_round;
            st.next_round += 1;
            (batch, round)
        };
        self.lead_round(writer, batch, round).await
    }

    /// For `Durability::Buffered`: writes out buffered whole blocks, without fdatasync, once
    /// more than [`BUFFERED_WRITE_BYTES`] are pending; a cheap no-op otherwise, or while
    /// another write is in flight.
    pub async fn write_if_full(&self) -> Result<()> {
        let (writer, batch) = {
            let mut st = self.state.lock();
            if let Some(cause) = &st.failed {
                return Err(Error::WritesDisabled(cause.clone()));
            }
            if st.unwritten_bytes <= BUFFERED_WRITE_BYTES {
                return Ok(());
            }
            let Some(writer) = st.writer.take() else {
                return Ok(());
            };
            (writer, take_batch(&mut st, false))
        };
        self.lead_buffered(writer, batch).await
    }

    /// Prepares the next segment ahead of need if the active one is past half full and no
    /// spare exists; returns whether it did. For a background task: leaders call it too, after
    /// publishing, so without one only the caller of that leader waits for the zero-fill.
    pub async fn prepare_spare(&self) -> Result<bool> {
        let number = {
            let mut st = self.state.lock();
            let wanted =
                st.tail.segment_no > st.active_no || st.tail.end() > self.segment_bytes / 2;
            if st.failed.is_some() || !matches!(st.spare, Spare::None) || !wanted {
                return Ok(false);
            }
            st.spare = Spare::Preparing;
            st.active_no + 1
        };
        let file = self.prepare_claimed(number).await?;
        self.state.lock().spare = Spare::Ready(file);
        self.changed.notify(usize::MAX);
        Ok(true)
    }

    /// Retires segments all of whose records are < `record_no` (their data is in SSTables
    /// now), oldest first, each durably before the next: kept as free files for reuse while
    /// fewer than [`FREE_SEGMENTS_MAX`] are, removed otherwise. Never the active segment.
    pub async fn release_before(&self, record_no: u64) -> Result<()> {
        let count = loop {
            let listener = {
                let mut st = self.state.lock();
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
            let (number, recycle) = {
                let st = self.state.lock();
                let Some(front) = st.segments.front() else {
                    break;
                };
                let recycle =
                    st.free.len() < FREE_SEGMENTS_MAX && front.bytes == self.segment_bytes;
                (front.number, recycle)
            };
            result = if recycle {
                make_free(&*self.fs, &self.dir, number).await
            } else {
                remove_segment(&*self.fs, &self.dir, number).await
            };
            if result.is_err() {
                break;
            }
            let mut st = self.state.lock();
            let removed = st.segments.pop_front();
            debug_assert_eq!(removed.map(|s| s.number), Some(number));
            if recycle {
                st.free.push(number);
            }
        }
        guard.disarm();
        self.end_release();
        result
    }

    /// Number the next appended record will get.
    pub fn next_record(&self) -> u64 {
        self.state.lock().next_record
    }

    /// The highest record known durable, if any.
    pub fn durable_record(&self) -> Option<u64> {
        self.state.lock().durable
    }

    /// fdatasyncs of record data so far (for stats).
    pub fn data_syncs(&self) -> u64 {
        self.data_syncs.load(Ordering::Relaxed)
    }

    /// Bytes of live segments on disk, the spare and free files included (for stats).
    pub fn disk_bytes(&self) -> u64 {
        let st = self.state.lock();
        let live: u64 = st
            .segments
            .iter()
            .filter(|s| s.number <= st.active_no)
            .map(|s| s.bytes)
            .sum();
        let spare = match st.spare {
            Spare::Ready(_) => self.segment_bytes,
            Spare::None | Spare::Preparing => 0,
        };
        live + spare + st.free.len() as u64 * self.segment_bytes
    }

    /// Writes a sync round's batch, hands the writer to the next round, fdatasyncs, then
    /// publishes in round order and wakes every waiter.
    async fn lead_round(&self, mut writer: Writer<F>, mut batch: Batch, round: u64) -> Result<()> {
        let guard = OnCancel(Some(|| {
            let mut st = self.state.lock();
            st.failed = Some("a log write was cancelled mid-way".into());
            st.rounds_in_flight -= 1;
            drop(st);
            self.wake_all();
        }));
        let Some(last) = batch.parts.pop() else {
            unreachable!("a batch always holds the tail")
        };
        // On a failed write the writer is dropped: the tail on disk is unknown, writes stay
        // disabled.
        let mut result = match self.write_parts(&mut writer, batch.parts).await {
            Ok(()) => self.write_last_then_sync(writer, last).await,
            Err(e) => Err(e),
        };
        // Publish after every earlier round, or not at all once one failed.
        loop {
            let listener = {
                let mut st = self.state.lock();
                if let Err(e) = &result {
                    if st.failed.is_none() {
                        tracing::error!(dir = %self.dir.display(), error = %e, "log write failed; writes disabled");
                        st.failed = Some(e.to_string());
                    }
                    st.rounds_in_flight -= 1;
                    break;
                }
                if let Some(cause) = &st.failed {
                    result = Err(Error::WritesDisabled(cause.clone()));
                    st.rounds_in_flight -= 1;
                    break;
                }
                if st.published_round + 1 == round {
                    debug_assert!(batch.last_record >= st.durable);
                    st.durable = batch.last_record;
                    st.published_round = round;
                    st.rounds_in_flight -= 1;
                    break;
                }
                self.changed.listen()
            };
            listener.await;
        }
        guard.disarm();
        self.wake_all();
        if result.is_ok() {
            if let Err(e) = self.prepare_spare().await {
                // Our records are durable; the next rotation retries and reports failure then.
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot prepare spare log segment");
            }
        }
        result
    }

    /// Writes a buffered batch without fdatasync (see [`Log::write_if_full`]).
    async fn lead_buffered(&self, mut writer: Writer<F>, batch: Batch) -> Result<()> {
        let guard = OnCancel(Some(|| {
            self.state.lock().failed = Some("a log write was cancelled mid-way".into());
            self.wake_all();
        }));
        let result = self.write_parts(&mut writer, batch.parts).await;
        guard.disarm();
        {
            let mut st = self.state.lock();
            match &result {
                Ok(()) => st.writer = Some(writer),
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "log write failed; writes disabled");
                    st.failed = Some(e.to_string());
                }
            }
        }
        self.wake_all();
        result
    }

    /// Writes `parts` in order.
    async fn write_parts(&self, writer: &mut Writer<F>, parts: Vec<Pending>) -> Result<()> {
        for part in parts {
            self.enter_segment(writer, &part).await?;
            if part.bytes.is_empty() {
                continue;
            }
            let bytes = self.padded(part);
            writer
                .file
                .write_at(bytes.start, &bytes.bytes)
                .await
                .at(writer.file.path())?;
            writer.dirty = true;
        }
        Ok(())
    }

    /// Writes a round's last part with the fdatasync queued right behind it
    /// ([`File::write_then_sync`]), hands the writer to the next round as soon as the write
    /// completes, then waits for the fdatasync.
    async fn write_last_then_sync(&self, mut writer: Writer<F>, part: Pending) -> Result<()> {
        self.enter_segment(&mut writer, &part).await?;
        let file = Arc::clone(&writer.file);
        let syncing = if part.bytes.is_empty() {
            None
        } else {
            let bytes = self.padded(part);
            let syncing = file
                .write_then_sync(bytes.start, &bytes.bytes)
                .await
                .at(file.path())?;
            writer.dirty = true;
            Some(syncing)
        };
        // `dirty` stays set: until this fdatasync completes the bytes are unsynced, and a later
        // round rotating away from this segment must sync it first.
        let needs_sync = writer.dirty;
        self.state.lock().writer = Some(writer);
        self.changed.notify(usize::MAX);
        let synced = match syncing {
            Some(syncing) => syncing.await,
            None if needs_sync => file.sync_data().await,
            None => return Ok(()),
        };
        self.data_syncs.fetch_add(1, Ordering::Relaxed);
        synced.at(file.path())
    }

    /// `part` zero-padded to whole blocks, as every write must be.
    fn padded(&self, mut part: Pending) -> Pending {
        debug_assert!(part.start % WRITE_ALIGN as u64 == 0);
        part.bytes
            .resize(align_up(part.bytes.len() as u64) as usize, 0);
        debug_assert!(part.end() <= self.segment_bytes);
        part
    }

    /// Makes `part`'s segment the writer's. Moving to the next segment first makes the old one
    /// durable, so only the last segment can ever be torn.
    async fn enter_segment(&self, writer: &mut Writer<F>, part: &Pending) -> Result<()> {
        if part.segment_no == writer.segment_no {
            return Ok(());
        }
        assert_eq!(
            part.segment_no,
            writer.segment_no + 1,
            "log segments out of order"
        );
        debug_assert_eq!(part.start, 0);
        if writer.dirty {
            writer.file.sync_data().await.at(writer.file.path())?;
            self.data_syncs.fetch_add(1, Ordering::Relaxed);
        }
        let file = self.take_segment_file(part.segment_no).await?;
        *writer = Writer {
            file: Arc::new(file),
            segment_no: part.segment_no,
            dirty: false,
        };
        Ok(())
    }

    /// The file for segment `number` (= active + 1), which becomes the active segment: the
    /// spare if ready, waiting for it if being prepared, otherwise prepared here. `active_no`
    /// moves in the same critical section that empties the spare slot, so `prepare_spare`
    /// can never pick the number of a segment already in use.
    async fn take_segment_file(&self, number: u64) -> Result<F::File> {
        loop {
            let listener = {
                let mut st = self.state.lock();
                debug_assert_eq!(number, st.active_no + 1);
                match std::mem::replace(&mut st.spare, Spare::Preparing) {
                    Spare::Ready(file) => {
                        st.spare = Spare::None;
                        st.active_no = number;
                        return Ok(file);
                    }
                    Spare::None => break,
                    Spare::Preparing => self.changed.listen(),
                }
            };
            listener.await;
        }
        let file = self.prepare_claimed(number).await?;
        {
            let mut st = self.state.lock();
            st.spare = Spare::None;
            st.active_no = number;
        }
        self.changed.notify(usize::MAX);
        Ok(file)
    }

    /// Prepares segment `number` after the caller set the spare slot to `Preparing`, from a
    /// free file if there is one; on failure or cancellation the slot is emptied again (a free
    /// file taken then is left to the next open, which finds it again or sees it renamed).
    async fn prepare_claimed(&self, number: u64) -> Result<F::File> {
        let reset = || {
            self.state.lock().spare = Spare::None;
            self.changed.notify(usize::MAX);
        };
        let guard = OnCancel(Some(reset));
        let free = self.state.lock().free.pop();
        let result = match free {
            Some(f) => reuse_free(&*self.fs, &self.dir, f, number).await,
            None => {
                let (fs, dir) = (&*self.fs, &self.dir);
                prepare_segment(fs, dir, number, self.segment_bytes, self.preallocation).await
            }
        };
        if result.is_ok() {
            guard.disarm();
        }
        result
    }

    /// Wakes every waiter: after a publish or a failure, which writers waiting for their
    /// round (`published`) and everyone else (`changed`) both need to see.
    fn wake_all(&self) {
        self.published.notify(usize::MAX);
        self.changed.notify(usize::MAX);
    }

    fn end_release(&self) {
        self.state.lock().releasing = false;
        self.changed.notify(usize::MAX);
    }
}

/// Hands everything buffered to a leader, keeping a copy of the partial tail block (the next
/// leader rewrites it with more records). With `with_tail_block` false the partial block is
/// left out of this batch entirely.
fn take_batch<F: FileSystem>(st: &mut State<F>, with_tail_block: bool) -> Batch {
    let mut parts = std::mem::take(&mut st.sealed);
    let end = st.tail.end();
    let keep_from = end - end % WRITE_ALIGN as u64;
    let kept_at = (keep_from - st.tail.start) as usize;
    let kept = st.tail.bytes[kept_at..].to_vec();
    let segment_no = st.tail.segment_no;
    let mut last = std::mem::replace(
        &mut st.tail,
        Pending {
            segment_no,
            start: keep_from,
            bytes: kept,
        },
    );
    if !with_tail_block {
        last.bytes.truncate(kept_at);
    }
    parts.push(last);
    st.unwritten_bytes = 0;
    Batch {
        parts,
        last_record: st.next_record.checked_sub(1),
    }
}

/// The numbers `parse` finds among `names`, ascending.
fn numbered(names: &[String], parse: fn(&str) -> Option<u64>) -> Vec<u64> {
    let mut numbers: Vec<u64> = names.iter().filter_map(|n| parse(n)).collect();
    numbers.sort_unstable();
    numbers
}

/// Free files among `names` (the listing of `dir`) that can be reused, oldest first: at most
/// [`FREE_SEGMENTS_MAX`] of `segment_bytes` each; the others are removed.
async fn find_free<F: FileSystem>(
    fs: &F,
    dir: &Path,
    names: &[String],
    segment_bytes: u64,
) -> Result<Vec<u64>> {
    let numbers = numbered(names, parse_free_name);
    let mut free = Vec::with_capacity(FREE_SEGMENTS_MAX);
    for number in numbers {
        let path = segment::free_path(dir, number);
        let len = fs.open(&path).await.at(&path)?.len().await.at(&path)?;
        if free.len() < FREE_SEGMENTS_MAX && len == segment_bytes {
            free.push(number);
        } else {
            remove_free(fs, dir, number).await?;
        }
    }
    Ok(free)
}

/// Every segment file among `names` (the listing of `dir`) with its header, in number order.
async fn find_segments<F: FileSystem>(fs: &F, dir: &Path, names: &[String]) -> Result<Vec<Found>> {
    let numbers = numbered(names, parse_segment_name);
    let mut found = Vec::with_capacity(numbers.len());
    for number in numbers {
        let path = segment_path(dir, number);
        let file = fs.open(&path).await.at(&path)?;
        let file_len = file.len().await.at(&path)?;
        let header = match reader::read_header(&file, file_len).await? {
            HeaderState::Valid(h) if h.segment_no != number => {
                HeaderState::Invalid(format!("header names segment {}", h.segment_no))
            }
            other => other,
        };
        found.push(Found {
            number,
            file_len,
            header,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
