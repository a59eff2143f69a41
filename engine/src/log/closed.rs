//! The clean-close record: where a cleanly closed log's records end, so that the next open
//! appends right after them in the same segment instead of starting a new one.
//!
//! Appending into a recovered segment is safe only where nothing can follow its last record:
//! after a crash, a write torn out of order may have left an intact record past a damaged
//! one, which records appended later would bury (see [`super::reader`]). A log that closed
//! cleanly had made every record durable and wrote nothing after, and says so in this file,
//! written last by [`super::Log::close`]. Opening reuses the segment only when the file is
//! intact and matches what replay found, and removes it, durably, before anything is
//! appended, so a crash after that is recovered as any other.
//!
//! Layout (`CLOSED` in the log's directory; integers little-endian; the rest of its one
//! block is zeros):
//!
//! | offset | field       | type | meaning                                            |
//! |--------|-------------|------|----------------------------------------------------|
//! | 0      | magic       | u32  | [`CLOSED_MAGIC`] ("SHCL")                          |
//! | 4      | segment_no  | u64  | the last segment                                   |
//! | 12     | end         | u64  | offset just past its last record                   |
//! | 20     | next_record | u64  | number the next record gets                        |
//! | 28     | crc         | u32  | crc32c of bytes 0..28                              |

use std::io;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::filename;
use crate::fs::{File, FileSystem, WRITE_ALIGN};

/// "SHCL": Shoal log, closed.
pub const CLOSED_MAGIC: u32 = u32::from_le_bytes(*b"SHCL");

/// magic + segment_no + end + next_record + crc.
const CLOSED_LEN: usize = 4 + 8 + 8 + 8 + 4;

const _: () = assert!(CLOSED_LEN == 32);
const _: () = assert!(CLOSED_LEN <= WRITE_ALIGN);

/// Where a cleanly closed log's records end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedTail {
    pub segment_no: u64,
    pub end: u64,
    pub next_record: u64,
}

impl ClosedTail {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(WRITE_ALIGN);
        out.extend_from_slice(&CLOSED_MAGIC.to_le_bytes());
        out.extend_from_slice(&self.segment_no.to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        out.extend_from_slice(&self.next_record.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), CLOSED_LEN);
        out.resize(WRITE_ALIGN, 0);
        out
    }

    /// `None` unless `bytes` begin with an intact record.
    fn decode(bytes: &[u8]) -> Option<ClosedTail> {
        let b = bytes.get(..CLOSED_LEN)?;
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[28..32]);
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&b[..4]);
        let intact = u32::from_le_bytes(crc) == crc32c::crc32c(&b[..28])
            && u32::from_le_bytes(magic) == CLOSED_MAGIC;
        intact.then(|| ClosedTail {
            segment_no: u64_at(4),
            end: u64_at(12),
            next_record: u64_at(20),
        })
    }
}

/// Writes the clean-close record of the log in `dir`, durably.
pub async fn write<F: FileSystem>(fs: &F, dir: &Path, tail: &ClosedTail) -> Result<()> {
    let path = filename::log_closed(dir);
    let file = fs.create(&path).await.at(&path)?;
    file.write_at(0, &tail.encode()).await.at(&path)?;
    file.sync_data().await.at(&path)?;
    fs.sync_dir(dir).await.at(dir)
}

/// Reads the clean-close record of the log in `dir` and removes it, durably; `None` when
/// there is none or it is damaged.
pub async fn take<F: FileSystem>(fs: &F, dir: &Path) -> Result<Option<ClosedTail>> {
    let path = filename::log_closed(dir);
    let file = match fs.open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::Error::io(&path, e)),
    };
    let bytes = file.read_at(0, CLOSED_LEN).await.at(&path)?;
    drop(file);
    fs.remove(&path).await.at(&path)?;
    fs.sync_dir(dir).await.at(dir)?;
    Ok(ClosedTail::decode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let tail = ClosedTail {
            segment_no: 7,
            end: 4123,
            next_record: 99,
        };
        let bytes = tail.encode();
        assert_eq!(bytes.len(), WRITE_ALIGN);
        assert_eq!(ClosedTail::decode(&bytes), Some(tail));
        for i in 0..CLOSED_LEN {
            let mut d = bytes.clone();
            d[i] ^= 0x10;
            assert_eq!(ClosedTail::decode(&d), None, "byte {i}");
        }
        assert_eq!(ClosedTail::decode(&bytes[..CLOSED_LEN - 1]), None);
        assert_eq!(ClosedTail::decode(&[0; CLOSED_LEN]), None);
    }
}
