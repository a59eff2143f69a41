//! The fixed-size footer at the end of every table (layout at the top of `sstable.rs`).

use super::coding::{Malformed, Reader, malformed};
use super::{FORMAT_VERSION, MAGIC};

/// Three (offset, length) handles, version, magic, crc.
pub const FOOTER_LEN: usize = 3 * (8 + 8) + 4 + 8 + 4;
const _: () = assert!(FOOTER_LEN == 64);
/// Bytes the footer's crc covers: everything before it.
const CRC_COVERS: usize = FOOTER_LEN - 4;

/// Where a meta block is: its offset and stored length (trailer excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    /// Where the block starts.
    pub offset: u64,
    /// Its stored length, trailer excluded.
    pub len: u64,
}

/// The decoded footer: where the meta blocks are (for `sstable-dump`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// The bloom filter block.
    pub filter: Handle,
    /// The index block.
    pub index: Handle,
    /// The properties block.
    pub properties: Handle,
}

impl Footer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FOOTER_LEN);
        for h in [self.filter, self.index, self.properties] {
            out.extend_from_slice(&h.offset.to_le_bytes());
            out.extend_from_slice(&h.len.to_le_bytes());
        }
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        debug_assert_eq!(out.len(), CRC_COVERS);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Checks magic, version and crc; the caller checks the handles against the file.
    pub(crate) fn decode(buf: &[u8]) -> Result<Footer, Malformed> {
        if buf.len() != FOOTER_LEN {
            return Err(malformed(format!("footer of {} bytes", buf.len())));
        }
        let mut r = Reader::at(buf, CRC_COVERS - 12);
        let version = r.u32("format version")?;
        let magic = r.u64("magic")?;
        let crc = r.u32("footer crc")?;
        if magic != MAGIC {
            return Err(malformed(format!(
                "bad magic {magic:#018x}: not an SSTable"
            )));
        }
        let actual = crc32c::crc32c(&buf[..CRC_COVERS]);
        if crc != actual {
            return Err(malformed(format!(
                "footer checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"
            )));
        }
        if version != FORMAT_VERSION {
            return Err(malformed(format!(
                "unsupported SSTable format version {version} (this build reads {FORMAT_VERSION})"
            )));
        }
        let mut r = Reader::new(buf);
        let mut handle = |what: &str| -> Result<Handle, Malformed> {
            Ok(Handle {
                offset: r.u64(what)?,
                len: r.u64(what)?,
            })
        };
        Ok(Footer {
            filter: handle("filter handle")?,
            index: handle("index handle")?,
            properties: handle("properties handle")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Footer {
        Footer {
            filter: Handle { offset: 10, len: 5 },
            index: Handle { offset: 20, len: 6 },
            properties: Handle { offset: 31, len: 7 },
        }
    }

    #[test]
    fn round_trip_and_every_byte_is_checked() {
        let f = sample();
        let enc = f.encode();
        assert_eq!(Footer::decode(&enc).unwrap(), f);
        assert_eq!(enc.len(), FOOTER_LEN);
        for i in 0..FOOTER_LEN {
            let mut bad = enc.clone();
            bad[i] ^= 0x10;
            assert!(Footer::decode(&bad).is_err(), "flip at {i} undetected");
        }
        assert!(Footer::decode(&enc[1..]).is_err());
    }

    #[test]
    fn older_format_is_refused_by_name() {
        let f = sample();
        let mut v1 = f.encode();
        v1[CRC_COVERS - 12..CRC_COVERS - 8].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&v1[..CRC_COVERS]);
        v1[CRC_COVERS..].copy_from_slice(&crc.to_le_bytes());
        let err = Footer::decode(&v1).unwrap_err();
        assert!(
            err.0.contains("unsupported SSTable format version 1"),
            "{}",
            err.0
        );
    }
}
