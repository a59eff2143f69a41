//! Reading segments back, for recovery and for `sstable-dump`'s log dump. Nothing read is
//! trusted: a record is returned only after its length was bounded by the file, its crc
//! matched, and its tag named this segment; the first record failing any of these ends the
//! segment, and why is reported.

use std::fmt;
use std::path::Path;

use super::record::{
    HeaderState, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::error::{IoContext, Result};
use crate::fs::{File, FileSystem};

/// One read covers many small records; a larger record is read whole.
const READ_CHUNK_BYTES: u64 = 1 << 20;

/// The unit a disk writes atomically (the smallest logical block in use). A write torn by
/// power loss leaves each sector either new or old; the old contents of a segment past its
/// last durable record are zeros (a new segment) or bytes of an earlier use of the file (a
/// recycled one), whose records carry another segment's tag.
pub(super) const SECTOR_BYTES: u64 = 512;

const _: () = assert!(READ_CHUNK_BYTES % SECTOR_BYTES == 0);
const _: () = assert!(SECTOR_BYTES as usize > RECORD_HEADER_LEN);

/// Why reading a segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Too few bytes left in the file for a record header.
    EndOfSegment,
    /// A record header with length 0: the zero-filled space after the last record.
    ZeroLength,
    /// A length running past the end of the file.
    ImpossibleLength(u32),
    /// The crc does not match: a torn write, or damage.
    BadChecksum,
    /// A well-formed record tagged for another segment: left by an earlier use of a recycled
    /// file. Holds that record's tag.
    StaleRecord(u32),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::EndOfSegment => write!(f, "end of segment"),
            StopReason::ZeroLength => write!(f, "zeroed space"),
            StopReason::ImpossibleLength(len) => write!(f, "impossible record length {len}"),
            StopReason::BadChecksum => write!(f, "record checksum mismatch"),
            StopReason::StaleRecord(tag) => write!(f, "stale record of segment tag {tag}"),
        }
    }
}

/// Where and why reading a segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// File offset just after the last valid record.
    pub offset: u64,
    /// Number the next record would have had: one past the last valid record.
    pub next_record: u64,
    /// Why.
    pub reason: StopReason,
}

/// Everything readable in one segment file.
#[derive(Debug, Clone)]
pub struct SegmentDump {
    /// Length of the file.
    pub file_len: u64,
    /// Its header.
    pub header: HeaderState,
    /// The valid records, in order.
    pub records: Vec<DumpedRecord>,
    /// Where reading stopped; `None` when the header is not valid (no record is trusted then).
    pub end: Option<ScanEnd>,
}

/// One valid record of a dumped segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRecord {
    /// Its number.
    pub record_no: u64,
    /// File offset of the record's header.
    pub offset: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Reads a whole segment file. Only I/O failures are errors; damage is described in the dump.
pub async fn read_segment<F: FileSystem>(fs: &F, path: &Path) -> Result<SegmentDump> {
    let file = fs.open(path).await.at(path)?;
    let file_len = file.len().await.at(path)?;
    let header = read_header(&file, file_len).await?;
    let mut records = Vec::new();
    let end = match &header {
        HeaderState::Valid(h) => Some(
            scan_records(&file, file_len, h, |record_no, offset, payload| {
                records.push(DumpedRecord {
                    record_no,
                    offset,
                    payload: payload.to_vec(),
                });
                Ok(())
            })
            .await?,
        ),
        HeaderState::Blank | HeaderState::Invalid(_) => None,
    };
    Ok(SegmentDump {
        file_len,
        header,
        records,
        end,
    })
}

/// Reads and classifies a segment's header.
pub(super) async fn read_header<Fl: File>(file: &Fl, file_len: u64) -> Result<HeaderState> {
    let len = file_len.min(SEGMENT_HEADER_LEN as u64) as usize;
    let bytes = file.read_at(0, len).await.at(file.path())?;
    Ok(SegmentHeader::decode(&bytes))
}

/// Calls `each(record_no, offset, payload)` for every valid record after `header`, in order,
/// and returns where the valid records end. An error from `each` stops the scan and is
/// returned.
pub(super) async fn scan_records<Fl: File>(
    file: &Fl,
    file_len: u64,
    header: &SegmentHeader,
    mut each: impl FnMut(u64, u64, &[u8]) -> Result<()>,
) -> Result<ScanEnd> {
    let mut reader = ChunkReader {
        file,
        file_len,
        buf: Vec::new(),
        buf_start: 0,
    };
    let mut offset = SEGMENT_HEADER_LEN as u64;
    let mut next_record = header.first_record;
    let segment_no = header.segment_no;
    let reason = loop {
        let Some(hb) = reader.get(offset, RECORD_HEADER_LEN).await? else {
            break StopReason::EndOfSegment;
        };
        let mut raw = [0u8; RECORD_HEADER_LEN];
        raw.copy_from_slice(hb);
        let h = RecordHeader::decode(&raw);
        if h.len == 0 {
            break StopReason::ZeroLength;
        }
        let payload_at = offset + RECORD_HEADER_LEN as u64;
        if u64::from(h.len) > file_len - payload_at {
            break StopReason::ImpossibleLength(h.len);
        }
        let Some(payload) = reader.get(payload_at, h.len as usize).await? else {
            // The file shrank under us: nothing past here can be trusted.
            break StopReason::ImpossibleLength(h.len);
        };
        if !h.checks(payload) {
            break StopReason::BadChecksum;
        }
        if !h.belongs_to(segment_no) {
            break StopReason::StaleRecord(h.tag);
        }
        each(next_record, offset, payload)?;
        offset = payload_at + u64::from(h.len);
        next_record += 1;
    };
    Ok(ScanEnd {
        offset,
        next_record,
        reason,
    })
}

/// After reading segment `segment_no` stopped at damage at `from`, tells a torn write from
/// damage to durable records: returns the offset of an intact record of this segment that
/// starts at or after `from` and before the first all-zero sector. A torn write cannot leave
/// one there when the disk persists a write's sectors in order: the sectors it did not reach
/// hold zeros or records of an earlier use of the file (other tags), and a record the writer
/// placed after them was never synced. Finding one therefore means records that may have been
/// acknowledged sit behind damage, and replaying past it would silently lose them.
///
/// A disk that persists one write's sectors out of order could leave an intact record behind
/// an unwritten sector. In a new segment that sector is zeros and ends the search; in a
/// recycled one it holds stale bytes, and the tear is reported as corruption: open fails
/// rather than guess.
pub(super) async fn intact_record_after<Fl: File>(
    file: &Fl,
    file_len: u64,
    from: u64,
    segment_no: u64,
) -> Result<Option<u64>> {
    let mut chunk_start = from;
    while chunk_start + RECORD_HEADER_LEN as u64 <= file_len {
        // Overlap chunks by a sector so headers and sectors crossing a boundary are whole.
        let want = (READ_CHUNK_BYTES + SECTOR_BYTES).min(file_len - chunk_start);
        let buf = file
            .read_at(chunk_start, want as usize)
            .await
            .at(file.path())?;
        let scan_end = (chunk_start + READ_CHUNK_BYTES).min(file_len);
        for pos in chunk_start..scan_end {
            let at = (pos - chunk_start) as usize;
            if pos % SECTOR_BYTES == 0 {
                let sector = buf.get(at..at + SECTOR_BYTES as usize);
                if sector.is_some_and(|s| s.iter().all(|&b| b == 0)) {
                    return Ok(None);
                }
            }
            let Some(raw) = buf.get(at..at + RECORD_HEADER_LEN) else {
                break;
            };
            let mut hb = [0u8; RECORD_HEADER_LEN];
            hb.copy_from_slice(raw);
            let h = RecordHeader::decode(&hb);
            let payload_at = pos + RECORD_HEADER_LEN as u64;
            let plausible =
                h.len != 0 && u64::from(h.len) <= file_len - payload_at && h.belongs_to(segment_no);
            if !plausible {
                continue;
            }
            let payload = file
                .read_at(payload_at, h.len as usize)
                .await
                .at(file.path())?;
            if h.checks(&payload) {
                return Ok(Some(pos));
            }
        }
        chunk_start = scan_end;
    }
    Ok(None)
}

/// Serves small reads from one large buffered read.
struct ChunkReader<'a, Fl: File> {
    file: &'a Fl,
    file_len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
}

impl<Fl: File> ChunkReader<'_, Fl> {
    /// `len` bytes at `pos`, or `None` when the file ends first.
    async fn get(&mut self, pos: u64, len: usize) -> Result<Option<&[u8]>> {
        let end = pos + len as u64;
        if end > self.file_len {
            return Ok(None);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || end > buf_end {
            let want = (len as u64).max(READ_CHUNK_BYTES).min(self.file_len - pos);
            self.buf = self
                .file
                .read_at(pos, want as usize)
                .await
                .at(self.file.path())?;
            self.buf_start = pos;
            if (self.buf.len() as u64) < len as u64 {
                return Ok(None);
            }
        }
        let at = (pos - self.buf_start) as usize;
        Ok(self.buf.get(at..at + len))
    }
}
