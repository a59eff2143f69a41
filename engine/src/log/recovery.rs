//! Recovery: what [`super::Log::open`] finds on disk, replayed and checked.
//!
//! Valid records are replayed in order, and replay stops cleanly at a torn or zeroed tail of
//! the last segment that has records. Damage followed by later valid segments, or by intact
//! records before the next all-zero sector (which no torn write leaves), means synced data
//! was lost, and is `Error::Corruption`. Damage to the very last record cannot be told from a
//! torn write of it: that record is dropped. The last recovered segment is fdatasynced (what
//! a killed process left in the page cache becomes what a later power loss cannot take back)
//! before anything is written after it.
//!
//! Files go in an order a crash cannot turn into a gap: the unusable tail first, then the
//! segments wholly before the replay's start, oldest first, each kept as a free file while
//! fewer than [`FREE_SEGMENTS_MAX`] are.
//!
//! After a clean close ([`super::closed`]) the last segment is handed back for appending,
//! even when all its records precede the replay's start: a database reopened again and
//! again without writing enough to fill a memtable then keeps one segment, not one per open.

use std::collections::VecDeque;
use std::path::Path;

use super::closed::{self, ClosedTail};
use super::reader::{self, ScanEnd, StopReason};
use super::record::{HeaderState, SEGMENT_HEADER_LEN, SegmentHeader};
use super::segment::{make_free, remove_free, remove_segment};
use super::{FREE_SEGMENTS_MAX, LiveSegment, ReplayFrom, SEGMENT_BYTES_MIN};
use crate::error::{Error, IoContext, Result};
use crate::filename::{self, FileKind};
use crate::fs::{File, FileSystem, WRITE_ALIGN};

/// What recovery leaves for the log to append after.
pub(super) struct Recovered<F> {
    /// Number the next appended record gets.
    pub next_record: u64,
    /// Recovered segments still needed, oldest first.
    pub segments: VecDeque<LiveSegment>,
    /// Free files kept for reuse, oldest first: (number, length).
    pub free: Vec<(u64, u64)>,
    /// Number of the segment appending starts in: the reused last segment, or one past every
    /// segment file found, so that a recovered tail is otherwise never appended to.
    pub active_no: u64,
    /// The last segment, handed back for appending after a clean close (it is the last of
    /// `segments`).
    pub reused: Option<ReusedTail<F>>,
}

/// The last segment of a cleanly closed log, to append to.
pub(super) struct ReusedTail<F> {
    pub file: F,
    /// Offset of the block holding the end of its records, and that block's bytes up to it:
    /// the first write rewrites the block with more records.
    pub block_start: u64,
    pub block: Vec<u8>,
}

/// A segment file found on disk.
struct Found {
    number: u64,
    file_len: u64,
    header: HeaderState,
}

/// A segment whose records were replayed: its place in the log, its file, and where and why
/// its valid records end.
struct Replayed<Fl> {
    segment: LiveSegment,
    file: Fl,
    end: ScanEnd,
}

/// Replays every valid record of the log in `dir` from `from` in order, calling
/// `apply(record_no, payload)`, checks that nothing synced was lost, and retires what the log
/// no longer needs: the unusable tail, and the segments wholly before `from`.
///
/// `ReplayFrom::Record(n)` when record `n` exists nowhere but later ones do is
/// `Error::Corruption`. When every record is before `n`, the next record is numbered `n`.
pub(super) async fn recover<F: FileSystem>(
    fs: &F,
    dir: &Path,
    segment_bytes: u64,
    from: ReplayFrom,
    apply: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<Recovered<F::File>> {
    let closed_tail = closed::take(fs, dir).await?;
    let names = fs.list_dir(dir).await.at(dir)?;
    let found = find_segments(fs, dir, &names).await?;
    let mut free = find_free(fs, dir, &names, segment_bytes).await?;
    let from_record = match from {
        ReplayFrom::Oldest => 0,
        ReplayFrom::Record(n) => n,
    };

    let headers = valid_headers(dir, &found)?;
    let (valid, tail) = found.split_at(headers.len());
    let start = replay_start(dir, &headers, from)?;
    let mut replayed = replay(
        fs,
        dir,
        &valid[start..],
        &headers[start..],
        from_record,
        apply,
    )
    .await?;
    if let Some(last) = replayed.last() {
        check_damage_is_a_tear(dir, last).await?;
    }
    check_tail_hides_no_records(fs, dir, tail).await?;

    let next_record = replayed
        .last()
        .map_or(0, |r| r.end.next_record)
        .max(from_record);

    let reuse = replayed.last().is_some_and(|last| {
        tail.is_empty() && closed_tail.is_some_and(|c| closed_cleanly(&c, last))
    });
    // Segments whose records all precede `from` go, except a reused one; of the rest, the last
    // may hold bytes a killed process left unsynced: make them durable before anything is
    // written after.
    let before_from = replayed
        .iter()
        .take_while(|r| from_record > 0 && r.end.next_record <= from_record)
        .count()
        .min(replayed.len() - usize::from(reuse));
    if let Some(last) = replayed.last().filter(|_| replayed.len() > before_from) {
        let path = filename::segment(dir, last.segment.number);
        last.file.sync_data().await.at(&path)?;
    }

    // The unusable tail first (durably, before anything is written after it), newest first.
    for s in tail.iter().rev() {
        remove_segment(fs, dir, s.number).await?;
    }
    let obsolete = valid[..start].iter().map(|s| (s.number, s.file_len)).chain(
        replayed[..before_from]
            .iter()
            .map(|r| (r.segment.number, r.segment.file_bytes)),
    );
    for (number, bytes) in obsolete {
        if free.len() < FREE_SEGMENTS_MAX && reusable_size(bytes, segment_bytes) {
            make_free(fs, dir, number).await?;
            free.push((number, bytes));
        } else {
            remove_segment(fs, dir, number).await?;
        }
    }

    let segments = replayed
        .iter()
        .skip(before_from)
        .map(|r| r.segment)
        .collect();
    let reused = match replayed.pop() {
        Some(last) if reuse => {
            let block_start = last.end.offset - last.end.offset % WRITE_ALIGN as u64;
            let len = (last.end.offset - block_start) as usize;
            let path = filename::segment(dir, last.segment.number);
            let block = last.file.read_at(block_start, len).await.at(&path)?;
            if block.len() != len {
                return Err(Error::corruption(
                    &path,
                    block_start,
                    "segment shrank on open",
                ));
            }
            let tail = ReusedTail {
                file: last.file,
                block_start,
                block,
            };
            Some((last.segment.number, tail))
        }
        _ => None,
    };
    let (active_no, reused) = match reused {
        Some((number, tail)) => (number, Some(tail)),
        None => (found.last().map_or(1, |s| s.number + 1), None),
    };
    Ok(Recovered {
        next_record,
        segments,
        free,
        active_no,
        reused,
    })
}

/// True when the clean-close record `closed` describes exactly where replay found the last
/// segment's records to end, at zeros or at its end: nothing was written after the close.
fn closed_cleanly<Fl>(closed: &ClosedTail, last: &Replayed<Fl>) -> bool {
    closed.segment_no == last.segment.number
        && closed.end == last.end.offset
        && closed.next_record == last.end.next_record
        && matches!(
            last.end.reason,
            StopReason::ZeroLength | StopReason::EndOfSegment
        )
}

/// True for a file the log may reuse as a segment: whole blocks, within the segment sizes.
fn reusable_size(bytes: u64, segment_bytes: u64) -> bool {
    bytes % WRITE_ALIGN as u64 == 0 && (SEGMENT_BYTES_MIN..=segment_bytes).contains(&bytes)
}

/// The headers of the segments up to the last one with a valid header, which must all be
/// valid; anything after it is a torn or never-used tail.
fn valid_headers(dir: &Path, found: &[Found]) -> Result<Vec<SegmentHeader>> {
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
                    filename::segment(dir, s.number),
                    0,
                    "blank segment before later segments with records",
                ));
            }
            HeaderState::Invalid(why) => {
                return Err(Error::corruption(
                    filename::segment(dir, s.number),
                    0,
                    format!("{why}, before later segments with records"),
                ));
            }
        }
    }
    Ok(headers)
}

/// Index in `headers` of the first segment to read: for `Record(n)`, the last one starting
/// at or before `n`.
fn replay_start(dir: &Path, headers: &[SegmentHeader], from: ReplayFrom) -> Result<usize> {
    let ReplayFrom::Record(n) = from else {
        return Ok(0);
    };
    if let Some(i) = headers.iter().rposition(|h| h.first_record <= n) {
        return Ok(i);
    }
    match headers.first() {
        Some(h) => Err(Error::corruption(
            filename::segment(dir, h.segment_no),
            0,
            format!(
                "replay wanted from record {n} but the log starts at record {}",
                h.first_record
            ),
        )),
        None => Ok(0),
    }
}

/// Replays the records numbered `from_record` on of `segments` (with their `headers`),
/// checking that each segment starts where the previous one's records stop.
async fn replay<F: FileSystem>(
    fs: &F,
    dir: &Path,
    segments: &[Found],
    headers: &[SegmentHeader],
    from_record: u64,
    mut apply: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<Vec<Replayed<F::File>>> {
    let mut replayed: Vec<Replayed<F::File>> = Vec::with_capacity(segments.len());
    for (s, h) in segments.iter().zip(headers) {
        if let Some(prev) = replayed.last() {
            if h.first_record != prev.end.next_record {
                return Err(Error::corruption(
                    filename::segment(dir, prev.segment.number),
                    prev.end.offset,
                    format!(
                        "records stop before {} ({}) but segment {} starts at record {}",
                        prev.end.next_record, prev.end.reason, s.number, h.first_record
                    ),
                ));
            }
        }
        let path = filename::segment(dir, s.number);
        let file = fs.open(&path).await.at(&path)?;
        let end = reader::scan_records(&file, s.file_len, h, |record_no, _, payload| {
            if record_no >= from_record {
                apply(record_no, payload)?;
            }
            Ok(())
        })
        .await?;
        let segment = LiveSegment {
            number: s.number,
            first_record: h.first_record,
            capacity: s.file_len,
            file_bytes: s.file_len,
        };
        replayed.push(Replayed { segment, file, end });
    }
    Ok(replayed)
}

/// Replay stops at damage in the last segment as at a torn tail, unless intact records
/// follow it, which no torn write leaves (see `reader::intact_record_after`).
async fn check_damage_is_a_tear<Fl: File>(dir: &Path, last: &Replayed<Fl>) -> Result<()> {
    let Replayed { segment, file, end } = last;
    if !matches!(
        end.reason,
        StopReason::BadChecksum | StopReason::ImpossibleLength(_)
    ) {
        return Ok(());
    }
    let found =
        reader::intact_record_after(file, segment.file_bytes, end.offset + 1, segment.number)
            .await?;
    match found {
        Some(offset) => Err(Error::corruption(
            filename::segment(dir, segment.number),
            end.offset,
            format!(
                "{} at record {}, but a record at offset {offset} is intact: damaged records, \
                 not a torn write",
                end.reason, end.next_record
            ),
        )),
        None => Ok(()),
    }
}

/// A damaged header on a segment after the last valid one hides its records the same way
/// damage inside a segment does. (A recycled spare never written to still has its old
/// header: invalid, and none of its records is tagged for it.)
async fn check_tail_hides_no_records<F: FileSystem>(
    fs: &F,
    dir: &Path,
    tail: &[Found],
) -> Result<()> {
    for s in tail {
        let HeaderState::Invalid(why) = &s.header else {
            continue;
        };
        let path = filename::segment(dir, s.number);
        let file = fs.open(&path).await.at(&path)?;
        let found =
            reader::intact_record_after(&file, s.file_len, SEGMENT_HEADER_LEN as u64, s.number)
                .await?;
        if let Some(offset) = found {
            return Err(Error::corruption(
                path,
                0,
                format!(
                    "{why}, but a record at offset {offset} is intact: a damaged header, not a \
                     torn write"
                ),
            ));
        }
    }
    Ok(())
}

/// The numbers `parse` finds among `names`, ascending.
fn numbered(names: &[String], parse: fn(FileKind) -> Option<u64>) -> Vec<u64> {
    let mut numbers: Vec<u64> = names
        .iter()
        .filter_map(|n| filename::parse(n).and_then(parse))
        .collect();
    numbers.sort_unstable();
    numbers
}

/// Free files among `names` (the listing of `dir`) that can be reused, oldest first, with
/// their lengths: at most [`FREE_SEGMENTS_MAX`], each of a size a segment may have; the
/// others are removed.
async fn find_free<F: FileSystem>(
    fs: &F,
    dir: &Path,
    names: &[String],
    segment_bytes: u64,
) -> Result<Vec<(u64, u64)>> {
    let numbers = numbered(names, |kind| match kind {
        FileKind::Free(n) => Some(n),
        _ => None,
    });
    let mut free = Vec::with_capacity(FREE_SEGMENTS_MAX);
    for number in numbers {
        let path = filename::free(dir, number);
        let len = fs.open(&path).await.at(&path)?.len().await.at(&path)?;
        if free.len() < FREE_SEGMENTS_MAX && reusable_size(len, segment_bytes) {
            free.push((number, len));
        } else {
            remove_free(fs, dir, number).await?;
        }
    }
    Ok(free)
}

/// Every segment file among `names` (the listing of `dir`) with its header, in number order.
async fn find_segments<F: FileSystem>(fs: &F, dir: &Path, names: &[String]) -> Result<Vec<Found>> {
    let numbers = numbered(names, |kind| match kind {
        FileKind::Segment(n) => Some(n),
        _ => None,
    });
    let mut found = Vec::with_capacity(numbers.len());
    for number in numbers {
        let path = filename::segment(dir, number);
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
