//! Byte layout of a log segment: the segment header and record framing, shared by the writer
//! ([`super::Log`]) and the reader ([`super::reader`]). All integers are little-endian.
//!
//! A segment file (`NNNNNN.log`) is preallocated (zero-filled, sparse, or recycled: an
//! obsolete segment renamed, still holding its old bytes), then holds:
//!
//! | offset | field        | type | meaning                                              |
//! |--------|--------------|------|------------------------------------------------------|
//! | 0      | magic        | u32  | [`SEGMENT_MAGIC`] ("SHLG")                           |
//! | 4      | version      | u32  | [`FORMAT_VERSION`]                                   |
//! | 8      | segment_no   | u64  | the number in the file name                          |
//! | 16     | first_record | u64  | number of the segment's first record                 |
//! | 24     | header_crc   | u32  | crc32c of bytes 0..24                                |
//! | 28     | records...   |      | packed back to back; then zeros to the block's end   |
//!
//! Each record:
//!
//! | offset | field     | type | meaning                                                  |
//! |--------|-----------|------|----------------------------------------------------------|
//! | 0      | crc       | u32  | crc32c of `len ‖ tag ‖ payload` (bytes 4..)              |
//! | 4      | len       | u32  | payload length, never 0 (0 marks the zeroed end)         |
//! | 8      | tag       | u32  | low 32 bits of the segment number ([`segment_tag`])      |
//! | 12     | payload   |      | `len` opaque bytes                                       |
//!
//! Records are numbered by position: the segment header's `first_record`, then one more per
//! record. Within one use of a file an offset only ever holds one record (a torn segment is
//! never appended to again), so the position is the number. A recycled file still holds
//! records of its earlier uses after the new ones; they carry another segment's tag under
//! their crc, so replay stops at them ([`RecordHeader::checks`] fails for the wrong tag) and
//! never takes one for a record of this segment. Version 1 stored a u64 record number instead
//! of the tag and could not recycle files.

/// "SHLG": Shoal log.
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"SHLG");
/// Bumped on any layout change; a reader refuses versions it does not know.
pub const FORMAT_VERSION: u32 = 2;

/// magic + version + segment_no + first_record + crc.
pub const SEGMENT_HEADER_LEN: usize = 4 + 4 + 8 + 8 + 4;
/// crc + len + tag.
pub const RECORD_HEADER_LEN: usize = 4 + 4 + 4;

const _: () = assert!(SEGMENT_HEADER_LEN == 28);
const _: () = assert!(RECORD_HEADER_LEN == 12);
const _: () = assert!(SEGMENT_HEADER_LEN + RECORD_HEADER_LEN < crate::fs::WRITE_ALIGN);

/// The fixed part at the start of every segment that has been written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The number in the file name.
    pub segment_no: u64,
    /// Number of the segment's first record.
    pub first_record: u64,
}

/// What the first `SEGMENT_HEADER_LEN` (28) bytes of a segment hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderState {
    /// A header whose checks passed.
    Valid(SegmentHeader),
    /// All zeros (or shorter than a header and all zeros): prepared but never written.
    Blank,
    /// Neither valid nor blank; the reason says which check failed.
    Invalid(String),
}

impl SegmentHeader {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&SEGMENT_MAGIC.to_le_bytes());
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.segment_no.to_le_bytes());
        out.extend_from_slice(&self.first_record.to_le_bytes());
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len() - start, SEGMENT_HEADER_LEN);
    }

    /// Classifies the first bytes of a segment (`bytes` may be shorter than a header when the
    /// file is).
    pub(crate) fn decode(bytes: &[u8]) -> HeaderState {
        if bytes.iter().all(|&b| b == 0) {
            return HeaderState::Blank;
        }
        let Some(h) = bytes.get(..SEGMENT_HEADER_LEN) else {
            return HeaderState::Invalid(format!(
                "file too short for a header ({} bytes)",
                bytes.len()
            ));
        };
        let stored_crc = u32_at(h, 24);
        if crc32c::crc32c(&h[..24]) != stored_crc {
            return HeaderState::Invalid("header checksum mismatch".into());
        }
        let magic = u32_at(h, 0);
        if magic != SEGMENT_MAGIC {
            return HeaderState::Invalid(format!("bad magic {magic:#010x}"));
        }
        let version = u32_at(h, 4);
        if version != FORMAT_VERSION {
            return HeaderState::Invalid(format!("unknown format version {version}"));
        }
        HeaderState::Valid(SegmentHeader {
            segment_no: u64_at(h, 8),
            first_record: u64_at(h, 16),
        })
    }
}

/// Bytes a record with a `payload_len`-byte payload takes in a segment.
pub fn framed_len(payload_len: usize) -> u64 {
    (RECORD_HEADER_LEN + payload_len) as u64
}

/// The tag records of segment `segment_no` carry: its low 32 bits. Two uses of one file get
/// different segment numbers, equal in their low bits only 2^32 segments apart.
pub fn segment_tag(segment_no: u64) -> u32 {
    segment_no as u32
}

/// Appends one framed record of segment `segment_no` to `out`.
pub fn encode_record(segment_no: u64, payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        !payload.is_empty(),
        "an empty record would read as the zeroed end"
    );
    assert!(
        payload.len() <= u32::MAX as usize,
        "record of {} bytes",
        payload.len()
    );
    let len = payload.len() as u32;
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&segment_tag(segment_no).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The fixed part of a record, read before its payload.
#[derive(Debug, Clone, Copy)]
pub struct RecordHeader {
    pub crc: u32,
    pub len: u32,
    pub tag: u32,
}

impl RecordHeader {
    pub fn decode(h: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        RecordHeader {
            crc: u32_at(h, 0),
            len: u32_at(h, 4),
            tag: u32_at(h, 8),
        }
    }

    /// True when `payload` is exactly what this header's crc was computed over, whatever
    /// segment the record was written to.
    pub fn checks(&self, payload: &[u8]) -> bool {
        let mut crc = crc32c::crc32c(&self.len.to_le_bytes());
        crc = crc32c::crc32c_append(crc, &self.tag.to_le_bytes());
        crc = crc32c::crc32c_append(crc, payload);
        crc == self.crc && payload.len() as u64 == u64::from(self.len)
    }

    /// True when this record was written to segment `segment_no` (not an earlier use of the
    /// file); meaningful once [`RecordHeader::checks`] passed.
    pub fn belongs_to(&self, segment_no: u64) -> bool {
        self.tag == segment_tag(segment_no)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader {
            segment_no: 7,
            first_record: 1234,
        };
        let mut b = Vec::new();
        h.encode(&mut b);
        assert_eq!(SegmentHeader::decode(&b), HeaderState::Valid(h));
        assert_eq!(
            SegmentHeader::decode(&[0; SEGMENT_HEADER_LEN]),
            HeaderState::Blank
        );
        assert_eq!(SegmentHeader::decode(&[]), HeaderState::Blank);
        assert!(matches!(
            SegmentHeader::decode(&b[..10]),
            HeaderState::Invalid(_)
        ));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut d = b.clone();
            d[i] ^= 0x40;
            assert!(
                matches!(SegmentHeader::decode(&d), HeaderState::Invalid(_)),
                "byte {i}"
            );
        }
    }

    #[test]
    fn record_crc_covers_tag_and_length() {
        let mut b = Vec::new();
        encode_record((1 << 32) + 42, b"hello", &mut b);
        assert_eq!(b.len() as u64, framed_len(5));
        let h = RecordHeader::decode(b[..RECORD_HEADER_LEN].try_into().unwrap());
        assert_eq!((h.len, h.tag), (5, 42));
        assert!(h.checks(&b[RECORD_HEADER_LEN..]));
        assert!(h.belongs_to((1 << 32) + 42));
        assert!(!h.belongs_to(43));
        assert!(!h.checks(b"hellp"));
        let retagged = RecordHeader { tag: 43, ..h };
        assert!(!retagged.checks(&b[RECORD_HEADER_LEN..]));
        let longer = RecordHeader { len: 6, ..h };
        assert!(!longer.checks(b"hello!"));
    }
}
