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

use std::collections::VecDeque;
use std::path::Path;

use super::reader::{self, ScanEnd, StopReason};
use super::record::{HeaderState, SEGMENT_HEADER_LEN, SegmentHeader};
use super::segment::{
    self, make_free, parse_free_name, parse_segment_name, remove_free, remove_segment, segment_path,
};
use super::{FREE_SEGMENTS_MAX, LiveSegment, ReplayFrom};
use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FileSystem};

/// What recovery leaves for the log to append after.
pub(super) struct Recovered {
    /// Number the next appended record gets.
    pub next_record: u64,
    /// Recovered segments still needed, oldest first.
    pub segments: VecDeque<LiveSegment>,
    /// Free files kept for reuse, oldest first.
    pub free: Vec<u64>,
    /// Number of the segment appending starts in: past every segment file found, so a
    /// recovered tail is never appended to.
    pub active_no: u64,
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
) -> Result<Recovered> {
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
    let replayed = replay(
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

    // Segments whose records all precede `from` go; of the rest, the last may hold bytes a
    // killed process left unsynced: make them durable before anything is written after.
    let before_from = replayed
        .iter()
        .take_while(|r| from_record > 0 && r.end.next_record <= from_record)
        .count();
    if let Some(last) = replayed.last().filter(|_| replayed.len() > before_from) {
        let path = segment_path(dir, last.segment.number);
        last.file.sync_data().await.at(&path)?;
    }

    // The unusable tail first (durably, before anything is written after it), newest first.
    for s in tail.iter().rev() {
        remove_segment(fs, dir, s.number).await?;
    }
    let obsolete = valid[..start].iter().map(|s| (s.number, s.file_len)).chain(
        replayed[..before_from]
            .iter()
            .map(|r| (r.segment.number, r.segment.bytes)),
    );
    for (number, bytes) in obsolete {
        if free.len() < FREE_SEGMENTS_MAX && bytes == segment_bytes {
            make_free(fs, dir, number).await?;
            free.push(number);
        } else {
            remove_segment(fs, dir, number).await?;
        }
    }

    Ok(Recovered {
        next_record,
        segments: replayed
            .into_iter()
            .skip(before_from)
            .map(|r| r.segment)
            .collect(),
        free,
        active_no: found.last().map_or(1, |s| s.number + 1),
    })
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
                    segment_path(dir, s.number),
                    0,
                    "blank segment before later segments with records",
                ));
            }
            HeaderState::Invalid(why) => {
                return Err(Error::corruption(
                    segment_path(dir, s.number),
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
            segment_path(dir, h.segment_no),
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
                    segment_path(dir, prev.segment.number),
                    prev.end.offset,
                    format!(
                        "records stop before {} ({}) but segment {} starts at record {}",
                        prev.end.next_record, prev.end.reason, s.number, h.first_record
                    ),
                ));
            }
        }
        let path = segment_path(dir, s.number);
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
            bytes: s.file_len,
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
        reader::intact_record_after(file, segment.bytes, end.offset + 1, segment.number).await?;
    match found {
        Some(offset) => Err(Error::corruption(
            segment_path(dir, segment.number),
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
        let path = segment_path(dir, s.number);
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
