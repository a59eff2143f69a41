//! Data blocks (entries + offset array + count) and the trailer every stored block carries.
//! The layouts are drawn at the top of `sstable.rs`.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::io;

use super::coding::{Malformed, Reader, malformed, put_varint};
use super::{BLOCK_BYTES_MAX, internal_cmp};
use crate::types::{Entry, KEY_LEN_MAX, SeqNo, VALUE_LEN_MAX, ValueKind};

/// Compression type byte (1) + crc32c (4).
pub(crate) const TRAILER_LEN: usize = 1 + 4;

/// On-disk compression tags: never renumber.
pub(crate) const COMPRESSION_NONE: u8 = 0;
pub(crate) const COMPRESSION_ZSTD: u8 = 1;

/// Largest decompressed block a reader accepts: a full block plus one entry at the key and
/// value limits. Bounds what a hostile length field can make the reader allocate.
pub(crate) const BLOCK_LEN_MAX: usize = BLOCK_BYTES_MAX + KEY_LEN_MAX + VALUE_LEN_MAX + 64;
const _: () = assert!(BLOCK_LEN_MAX < u32::MAX as usize);

/// Length prefix of a zstd block's payload (the decompressed size).
const RAW_LEN_LEN: usize = 4;

/// Compression must save at least 1/8 of a block to be worth its decompression cost.
const MIN_SAVING_DIVISOR: usize = 8;

/// Appends `raw` to `out` as a stored block (compressed when it pays) followed by its
/// trailer, and returns the stored length without the trailer.
pub(crate) fn seal(
    out: &mut Vec<u8>,
    raw: &[u8],
    compressor: Option<&mut zstd::bulk::Compressor<'static>>,
) -> io::Result<u64> {
    assert!(raw.len() <= BLOCK_LEN_MAX, "block of {} bytes", raw.len());
    let start = out.len();
    let mut kind = COMPRESSION_NONE;
    if let Some(compressor) = compressor {
        let compressed = compressor.compress(raw)?;
        if RAW_LEN_LEN + compressed.len() < raw.len() - raw.len() / MIN_SAVING_DIVISOR {
            out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            out.extend_from_slice(&compressed);
            kind = COMPRESSION_ZSTD;
        }
    }
    if kind == COMPRESSION_NONE {
        out.extend_from_slice(raw);
    }
    let stored_len = (out.len() - start) as u64;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), &[kind]);
    out.push(kind);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(stored_len)
}

/// Checks the trailer of `stored` (block bytes followed by the trailer) and returns the
/// block bytes and compression tag.
fn check_trailer(stored: &[u8]) -> Result<(&[u8], u8), Malformed> {
    let body_len = stored
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or_else(|| malformed("block shorter than its trailer"))?;
    let (body, trailer) = stored.split_at(body_len);
    let kind = trailer[0];
    let crc = u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]);
    let actual = crc32c::crc32c_append(crc32c::crc32c(body), &[kind]);
    if crc != actual {
        return Err(malformed(format!(
            "block checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"
        )));
    }
    Ok((body, kind))
}

/// Checks and decompresses a stored data block (block bytes followed by the trailer).
pub(crate) fn unseal(mut stored: Vec<u8>) -> Result<Vec<u8>, Malformed> {
    let (body, kind) = check_trailer(&stored)?;
    match kind {
        COMPRESSION_NONE => {
            let body_len = body.len();
            stored.truncate(body_len);
            Ok(stored)
        }
        COMPRESSION_ZSTD => {
            let raw_len = Reader::new(body).u32("zstd block length")? as usize;
            if raw_len > BLOCK_LEN_MAX {
                return Err(malformed(format!("zstd block claims {raw_len} bytes")));
            }
            let raw = zstd_decompress(&body[RAW_LEN_LEN..], raw_len)
                .map_err(|e| malformed(format!("zstd: {e}")))?;
            if raw.len() != raw_len {
                return Err(malformed(format!(
                    "zstd block is {} bytes, expected {raw_len}",
                    raw.len()
                )));
            }
            Ok(raw)
        }
        other => Err(malformed(format!("unknown compression type {other}"))),
    }
}

/// Checks a stored meta block, which is always raw, and returns its bytes.
pub(crate) fn unseal_raw(stored: &[u8]) -> Result<&[u8], Malformed> {
    match check_trailer(stored)? {
        (body, COMPRESSION_NONE) => Ok(body),
        (_, other) => Err(malformed(format!(
            "meta block with compression type {other}"
        ))),
    }
}

/// Decompresses with a per-thread context: creating one costs more than a small block.
fn zstd_decompress(src: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    thread_local! {
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match &mut *slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(src, capacity)
    })
}

/// Accumulates entries of one data block.
#[derive(Debug, Default)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    offsets: Vec<u32>,
}

impl BlockBuilder {
    pub(crate) fn add(&mut self, key: &[u8], seq: SeqNo, entry: &Entry) {
        debug_assert!(key.len() <= KEY_LEN_MAX);
        debug_assert!(entry.value.len() <= VALUE_LEN_MAX);
        assert!(self.buf.len() <= BLOCK_LEN_MAX, "block overflow");
        self.offsets.push(self.buf.len() as u32);
        put_varint(&mut self.buf, key.len() as u64);
        put_varint(&mut self.buf, entry.value.len() as u64);
        put_varint(&mut self.buf, seq);
        self.buf.push(entry.kind as u8);
        put_varint(&mut self.buf, entry.expires_at_ms);
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&entry.value);
    }

    /// Size of the block if it were finished now.
    pub(crate) fn size(&self) -> usize {
        self.buf.len() + 4 * self.offsets.len() + 4
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Returns the encoded block and starts a new one.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        debug_assert!(!self.is_empty());
        let mut out = std::mem::take(&mut self.buf);
        out.reserve(4 * self.offsets.len() + 4);
        for off in &self.offsets {
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        self.offsets.clear();
        out
    }
}

/// One entry, borrowed from a decoded block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryRef<'a> {
    pub key: &'a [u8],
    pub seq: SeqNo,
    pub kind: ValueKind,
    pub expires_at_ms: u64,
    pub value: &'a [u8],
}

impl EntryRef<'_> {
    pub(crate) fn to_entry(self) -> Entry {
        Entry {
            kind: self.kind,
            expires_at_ms: self.expires_at_ms,
            value: self.value.to_vec(),
        }
    }
}

/// A decompressed data block whose structure and order were checked when it was decoded.
#[derive(Debug)]
pub struct Block {
    data: Vec<u8>,
    entries_end: usize,
    count: usize,
}

impl Block {
    /// Checks everything about the block: the count, every offset, every entry's lengths and
    /// kind, and that the entries are strictly in table order.
    pub(crate) fn decode(data: Vec<u8>) -> Result<Block, Malformed> {
        let len = data.len();
        let count_pos = len
            .checked_sub(4)
            .ok_or_else(|| malformed("data block shorter than its count"))?;
        let count = Reader::at(&data, count_pos).u32("entry count")? as usize;
        if count == 0 {
            return Err(malformed("empty data block"));
        }
        let entries_end = count
            .checked_mul(4)
            .and_then(|offsets_len| count_pos.checked_sub(offsets_len))
            .ok_or_else(|| malformed(format!("{count} entries do not fit a {len} byte block")))?;
        let block = Block {
            data,
            entries_end,
            count,
        };
        let mut expected = 0usize;
        let mut prev: Option<(&[u8], SeqNo)> = None;
        for i in 0..count {
            let off = block.offset(i)?;
            if off != expected {
                return Err(malformed(format!(
                    "entry {i} at offset {off}, expected {expected}"
                )));
            }
            let (e, end) = block.decode_entry(off)?;
            if let Some((key, seq)) = prev
                && internal_cmp(key, seq, e.key, e.seq) != Ordering::Less
            {
                return Err(malformed(format!("entry {i} out of order")));
            }
            prev = Some((e.key, e.seq));
            expected = end;
        }
        if expected != entries_end {
            return Err(malformed(format!(
                "entries end at {expected}, offsets start at {entries_end}"
            )));
        }
        Ok(block)
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes held, for the cache's weight.
    pub(crate) fn size(&self) -> usize {
        self.data.len()
    }

    fn offset(&self, i: usize) -> Result<usize, Malformed> {
        debug_assert!(i < self.count);
        let pos = self.entries_end + 4 * i;
        Ok(Reader::at(&self.data, pos).u32("entry offset")? as usize)
    }

    fn decode_entry(&self, pos: usize) -> Result<(EntryRef<'_>, usize), Malformed> {
        let mut r = Reader::at(&self.data[..self.entries_end], pos);
        let key_len = r.len(KEY_LEN_MAX, "key length")?;
        let value_len = r.len(VALUE_LEN_MAX, "value length")?;
        let seq = r.varint("seq")?;
        let tag = r.u8("kind")?;
        let kind =
            ValueKind::from_u8(tag).ok_or_else(|| malformed(format!("unknown kind {tag}")))?;
        let expires_at_ms = r.varint("expiry")?;
        let key = r.bytes(key_len, "key")?;
        let value = r.bytes(value_len, "value")?;
        let entry = EntryRef {
            key,
            seq,
            kind,
            expires_at_ms,
            value,
        };
        Ok((entry, r.pos()))
    }

    pub(crate) fn entry(&self, i: usize) -> Result<EntryRef<'_>, Malformed> {
        Ok(self.decode_entry(self.offset(i)?)?.0)
    }

    /// Index of the first entry at or after (key, seq) in table order; `len()` if none.
    /// `seq = u64::MAX` finds the first version of `key` or later keys.
    pub(crate) fn seek(&self, key: &[u8], seq: SeqNo) -> Result<usize, Malformed> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.entry(mid)?;
            if internal_cmp(e.key, e.seq, key, seq) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&[u8], SeqNo)]) -> Vec<u8> {
        let mut b = BlockBuilder::default();
        for (k, s) in entries {
            b.add(k, *s, &Entry::put(format!("v{s}")));
        }
        b.finish()
    }

    #[test]
    fn block_round_trip_and_seek() {
        let raw = build(&[(b"a", 5), (b"a", 3), (b"b", 9), (b"d", 1)]);
        let block = Block::decode(raw).unwrap();
        assert_eq!(block.len(), 4);
        assert_eq!(block.entry(1).unwrap().seq, 3);
        assert_eq!(block.entry(2).unwrap().value, b"v9");
        assert_eq!(block.seek(b"a", 4).unwrap(), 1);
        assert_eq!(block.seek(b"a", u64::MAX).unwrap(), 0);
        assert_eq!(block.seek(b"a", 2).unwrap(), 2);
        assert_eq!(block.seek(b"c", u64::MAX).unwrap(), 3);
        assert_eq!(block.seek(b"e", u64::MAX).unwrap(), 4);
    }

    #[test]
    fn decode_rejects_bad_structure() {
        assert!(Block::decode(vec![]).is_err());
        assert!(Block::decode(vec![0, 0, 0, 0]).is_err());
        assert!(Block::decode(vec![0xff, 0xff, 0xff, 0xff]).is_err());
        let unordered = build(&[(b"b", 1), (b"a", 1)]);
        assert!(Block::decode(unordered).is_err());
        let same = build(&[(b"a", 1), (b"a", 1)]);
        assert!(Block::decode(same).is_err());
        let mut bad_kind = build(&[(b"a", 1)]);
        bad_kind[3] = 7;
        assert!(Block::decode(bad_kind).is_err());
    }

    #[test]
    fn seal_round_trip_and_checksum() {
        let raw = vec![7u8; 10_000];
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        for compressor in [None, Some(&mut c)] {
            let mut out = Vec::new();
            let compressed = compressor.is_some();
            let len = seal(&mut out, &raw, compressor).unwrap();
            assert_eq!(out.len() as u64, len + TRAILER_LEN as u64);
            assert_eq!(compressed, len < raw.len() as u64);
            assert_eq!(unseal(out.clone()).unwrap(), raw);
            assert_eq!(unseal_raw(&out).is_ok(), !compressed);
            out[0] ^= 1;
            assert!(unseal(out.clone()).is_err());
            assert!(unseal_raw(&out).is_err());
        }
        // Incompressible data is stored raw even when compression is on.
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) as u8)
            .collect();
        let mut out = Vec::new();
        let len = seal(&mut out, &noise, Some(&mut c)).unwrap();
        assert_eq!(len, noise.len() as u64);
        assert_eq!(out[noise.len()], COMPRESSION_NONE);
    }
}
