//! Bounds-checked primitives shared by the SSTable encoders and decoders.

use std::path::Path;

use crate::Error;

/// Why bytes failed to decode; turned into [`Error::Corruption`] with a path and offset by
/// whoever knows where the bytes came from.
#[derive(Debug)]
pub(crate) struct Malformed(pub String);

impl Malformed {
    pub(crate) fn at(self, path: &Path, offset: u64) -> Error {
        Error::corruption(path, offset, self.0)
    }
}

pub(crate) fn malformed(what: impl Into<String>) -> Malformed {
    Malformed(what.into())
}

/// Longest LEB128 encoding of a u64.
const VARINT_LEN_MAX: usize = 10;

pub(crate) use crate::coding::put_varint;

/// A cursor over untrusted bytes: every read checks what is left.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Reader<'a> {
        Reader { buf, pos }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    #[inline]
    pub(crate) fn bytes(&mut self, len: usize, what: &str) -> Result<&'a [u8], Malformed> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| malformed(format!("{what}: {len} bytes past the end")))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.bytes(1, what)?[0])
    }

    #[inline]
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    #[inline]
    pub(crate) fn varint(&mut self, what: &str) -> Result<u64, Malformed> {
        // Fast path: most lengths and many seqs fit one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow(what)
    }

    fn varint_slow(&mut self, what: &str) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for i in 0..VARINT_LEN_MAX {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte holds only the top bit of a u64.
            if i == VARINT_LEN_MAX - 1 && b > 1 {
                return Err(malformed(format!("{what}: varint overflows u64")));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed(format!("{what}: varint too long")))
    }

    /// A varint that must fit `usize` and be at most `max`.
    #[inline]
    pub(crate) fn len(&mut self, max: usize, what: &str) -> Result<usize, Malformed> {
        let v = self.varint(what)?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| malformed(format!("{what}: length {v} exceeds {max}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_rejects_overflow() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.varint("v").unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        let too_big = [0xff; 9].into_iter().chain([0x02]).collect::<Vec<_>>();
        assert!(Reader::new(&too_big).varint("v").is_err());
        assert!(Reader::new(&[0xff; 11]).varint("v").is_err());
        assert!(Reader::new(&[0x80]).varint("v").is_err());
    }

    #[test]
    fn reads_past_end_fail() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(r.u32("x").is_err());
        assert_eq!(r.bytes(3, "x").unwrap(), &[1, 2, 3]);
        assert!(r.u8("x").is_err());
        assert!(Reader::new(&[5]).len(4, "x").is_err());
    }
}
