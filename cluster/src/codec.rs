//! The envelope shared by every encoding this crate writes (versions into engine values,
//! contexts handed to clients): a magic, a format version, the body, and a crc32c.
//!
//! | field    | size | meaning                                   |
//! |----------|------|-------------------------------------------|
//! | magic    | 2    | which encoding (`b"DV"`, `b"VC"`)          |
//! | version  | 1    | format version of that encoding           |
//! | body     | ...  | defined by the encoding's module          |
//! | crc32c   | 4    | little-endian, over every preceding byte  |
//!
//! All integers are little-endian with explicit widths.

use crate::error::{Error, Result};

pub(crate) const MAGIC_LEN: usize = 2;
pub(crate) const HEADER_LEN: usize = MAGIC_LEN + 1;
pub(crate) const CRC_LEN: usize = 4;
pub(crate) const ENVELOPE_LEN: usize = HEADER_LEN + CRC_LEN;

/// Starts an encoding: magic and version.
pub(crate) fn begin(magic: [u8; MAGIC_LEN], version: u8) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&magic);
    buf.push(version);
    buf
}

/// Finishes an encoding by appending the checksum of everything written so far.
pub(crate) fn seal(mut buf: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Checks length, checksum, magic and version (in that order: nothing is interpreted before
/// the checksum matches) and returns a reader over the body.
pub(crate) fn open<'a>(
    bytes: &'a [u8],
    what: &'static str,
    magic: [u8; MAGIC_LEN],
    version: u8,
) -> Result<Reader<'a>> {
    if bytes.len() < ENVELOPE_LEN {
        return Err(Error::corruption(what, 0, "shorter than its envelope"));
    }
    let (covered, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(covered) != stored {
        return Err(Error::corruption(what, covered.len(), "checksum mismatch"));
    }
    if covered[..MAGIC_LEN] != magic {
        return Err(Error::corruption(what, 0, "bad magic"));
    }
    if covered[MAGIC_LEN] != version {
        return Err(Error::corruption(what, MAGIC_LEN, "unknown format version"));
    }
    Ok(Reader {
        buf: &covered[HEADER_LEN..],
        pos: 0,
        base: HEADER_LEN,
        what,
    })
}

/// Bounds-checked little-endian reads over an encoding's body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole encoding, for error messages.
    base: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn error(&self, reason: &'static str) -> Error {
        Error::corruption(self.what, self.base + self.pos, reason)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < len {
            return Err(self.error("truncated"));
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails if the body has bytes after its last field.
    pub(crate) fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.error("trailing bytes"));
        }
        Ok(())
    }
}
