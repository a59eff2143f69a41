//! Data blocks (prefix-compressed entries + restart array + count) and the trailer every stored
//! block carries.
//! The layouts are drawn at the top of `sstable.rs`.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::io;

use super::coding::{Malformed, Reader, malformed, put_varint};
use super::{BLOCK_BYTES_MAX, internal_cmp};
use crate::types::{Entry, NO_EXPIRY, STORED_KEY_LEN_MAX, SeqNo, VALUE_LEN_MAX, ValueKind};

/// Compression type byte (1) + crc32c (4).
pub(crate) const TRAILER_LEN: usize = 1 + 4;

/// On-disk compression tags: never renumber.
pub(crate) const COMPRESSION_NONE: u8 = 0;
pub(crate) const COMPRESSION_ZSTD: u8 = 1;

/// Largest decompressed block a reader accepts: a full block plus one entry at the key and
/// value limits. Bounds what a hostile length field can make the reader allocate.
pub(crate) const BLOCK_LEN_MAX: usize = BLOCK_BYTES_MAX + STORED_KEY_LEN_MAX + VALUE_LEN_MAX + 64;
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

/// Entries between restart points. A point lookup binary-searches the restart keys, then
/// decodes at most this many entries; each restart costs a whole key and 4 bytes of offset,
/// so 16 (LevelDB's and RocksDB's default) keeps both small.
pub(crate) const RESTART_INTERVAL: usize = 16;

/// Accumulates entries of one data block.
#[derive(Debug, Default)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    /// Entries added since the block was started.
    count: usize,
    /// Key of the last entry added, the next entry's prefix source.
    last_key: Vec<u8>,
}

impl BlockBuilder {
    pub(crate) fn add(&mut self, key: &[u8], seq: SeqNo, entry: &Entry) {
        debug_assert!(key.len() <= STORED_KEY_LEN_MAX);
        debug_assert!(entry.value.len() <= VALUE_LEN_MAX);
        assert!(self.buf.len() <= BLOCK_LEN_MAX, "block overflow");
        let shared = if self.count % RESTART_INTERVAL == 0 {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            common_prefix_len(&self.last_key, key)
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, entry.value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(&seq.to_le_bytes());
        entry.put_kind_and_expiry(&mut self.buf);
        self.buf.extend_from_slice(&entry.value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.count += 1;
    }

    /// Size of the block if it were finished now.
    pub(crate) fn size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Returns the encoded block and starts a new one.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        debug_assert!(!self.is_empty());
        let mut out = std::mem::take(&mut self.buf);
        out.reserve(4 * self.restarts.len() + 4);
        for off in &self.restarts {
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.restarts.clear();
        self.count = 0;
        self.last_key.clear();
        out
    }
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `a ++ b` compared with `target`, without joining them.
fn cmp_joined(a: &[u8], b: &[u8], target: &[u8]) -> Ordering {
    match target.split_at_checked(a.len()) {
        Some((head, tail)) => a.cmp(head).then_with(|| b.cmp(tail)),
        None => a[..target.len()].cmp(target).then(Ordering::Greater),
    }
}

/// One entry, borrowed from a decoded block (the key from the cursor that reached it).
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

/// An entry as stored: its key is the previous key's first `shared` bytes, then `suffix`.
struct RawEntry<'a> {
    shared: usize,
    suffix: &'a [u8],
    seq: SeqNo,
    kind: ValueKind,
    expires_at_ms: u64,
    value: &'a [u8],
    /// Offset of the next entry.
    end: usize,
}

/// A position between two entries of a block: the offset of the next entry and the key of
/// the one before it, which the next entry's shared prefix is taken from.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    next: usize,
    key: Vec<u8>,
}

impl Cursor {
    /// Moves to before the block's first entry, keeping the key's allocation.
    pub(crate) fn rewind(&mut self) {
        self.next = 0;
        self.key.clear();
    }

    /// The prefix `raw` shares with the key before it; corrupt if that key is shorter.
    fn prefix(&self, raw: &RawEntry<'_>) -> Result<&[u8], Malformed> {
        self.key.get(..raw.shared).ok_or_else(|| {
            malformed(format!(
                "entry shares {} bytes of a {} byte key",
                raw.shared,
                self.key.len()
            ))
        })
    }

    /// Moves past `raw`, the entry at `next`, whose prefix was checked.
    fn advance(&mut self, raw: &RawEntry<'_>) {
        debug_assert!(raw.shared <= self.key.len());
        self.key.truncate(raw.shared);
        self.key.extend_from_slice(raw.suffix);
        self.next = raw.end;
    }
}

/// A decompressed data block whose structure and order were checked when it was decoded.
#[derive(Debug)]
pub struct Block {
    data: Vec<u8>,
    /// End of the entries, where the restart offsets start.
    entries_end: usize,
    restarts: usize,
    count: usize,
}

impl Block {
    /// Checks everything about the block: the restart array, every entry's lengths, kind and
    /// shared prefix, that restart entries share nothing, and that the entries are strictly
    /// in table order.
    pub(crate) fn decode(data: Vec<u8>) -> Result<Block, Malformed> {
        let len = data.len();
        let count_pos = len
            .checked_sub(4)
            .ok_or_else(|| malformed("data block shorter than its restart count"))?;
        let restarts = Reader::at(&data, count_pos).u32("restart count")? as usize;
        if restarts == 0 {
            return Err(malformed("data block without restart points"));
        }
        let entries_end = restarts
            .checked_mul(4)
            .and_then(|restarts_len| count_pos.checked_sub(restarts_len))
            .ok_or_else(|| {
                malformed(format!("{restarts} restarts do not fit a {len} byte block"))
            })?;
        let mut block = Block {
            data,
            entries_end,
            restarts,
            count: 0,
        };
        let mut cursor = Cursor::default();
        let mut prev_seq = 0;
        let mut next_restart = 0;
        let mut count = 0;
        while cursor.next < entries_end {
            let at_restart = next_restart < restarts && block.restart(next_restart)? == cursor.next;
            let raw = block.raw_entry(cursor.next)?;
            if at_restart {
                next_restart += 1;
                if raw.shared != 0 {
                    return Err(malformed(format!(
                        "restart entry {count} shares {} bytes",
                        raw.shared
                    )));
                }
            } else if count == 0 {
                return Err(malformed("first entry is not a restart point"));
            }
            let order = cmp_joined(cursor.prefix(&raw)?, raw.suffix, &cursor.key)
                .then(prev_seq.cmp(&raw.seq));
            if count > 0 && order != Ordering::Greater {
                return Err(malformed(format!("entry {count} out of order")));
            }
            cursor.advance(&raw);
            prev_seq = raw.seq;
            count += 1;
        }
        if next_restart != restarts {
            return Err(malformed(format!(
                "restart {next_restart} of {restarts} is not at an entry"
            )));
        }
        if count == 0 {
            return Err(malformed("empty data block"));
        }
        block.count = count;
        Ok(block)
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes held, for the cache's weight.
    pub(crate) fn size(&self) -> usize {
        self.data.len()
    }

    fn restart(&self, i: usize) -> Result<usize, Malformed> {
        debug_assert!(i < self.restarts);
        let pos = self.entries_end + 4 * i;
        Ok(Reader::at(&self.data, pos).u32("restart offset")? as usize)
    }

    fn raw_entry(&self, pos: usize) -> Result<RawEntry<'_>, Malformed> {
        let mut r = Reader::at(&self.data[..self.entries_end], pos);
        let shared = r.len(STORED_KEY_LEN_MAX, "shared key length")?;
        let unshared = r.len(STORED_KEY_LEN_MAX - shared, "unshared key length")?;
        let value_len = r.len(VALUE_LEN_MAX, "value length")?;
        let suffix = r.bytes(unshared, "key")?;
        let seq = r.u64("seq")?;
        let tag = r.u8("kind")?;
        let (kind, has_expiry) =
            ValueKind::from_stored(tag).ok_or_else(|| malformed(format!("unknown kind {tag}")))?;
        let expires_at_ms = if !has_expiry {
            NO_EXPIRY
        } else {
            match r.u64("expiry")? {
                NO_EXPIRY => return Err(malformed("expiry flag with no expiry")),
                at => at,
            }
        };
        let value = r.bytes(value_len, "value")?;
        Ok(RawEntry {
            shared,
            suffix,
            seq,
            kind,
            expires_at_ms,
            value,
            end: r.pos(),
        })
    }

    /// Decodes the entry after `cursor` and moves the cursor past it.
    fn step<'a>(&'a self, cursor: &'a mut Cursor) -> Result<EntryRef<'a>, Malformed> {
        let raw = self.raw_entry(cursor.next)?;
        cursor.prefix(&raw)?;
        cursor.advance(&raw);
        Ok(EntryRef {
            key: &cursor.key,
            seq: raw.seq,
            kind: raw.kind,
            expires_at_ms: raw.expires_at_ms,
            value: raw.value,
        })
    }

    /// The entry after `cursor` (moving past it), or None at the end of the block.
    pub(crate) fn next<'a>(
        &'a self,
        cursor: &'a mut Cursor,
    ) -> Result<Option<EntryRef<'a>>, Malformed> {
        if cursor.next >= self.entries_end {
            return Ok(None);
        }
        self.step(cursor).map(Some)
    }

    /// A cursor before the first entry at or after (key, seq) in table order, at the end if
    /// none. `seq = u64::MAX` finds the first version of `key` or later keys. Binary-searches
    /// the restart keys (stored whole), then scans from the last one below the target.
    pub(crate) fn seek(&self, key: &[u8], seq: SeqNo) -> Result<Cursor, Malformed> {
        let (mut lo, mut hi) = (0, self.restarts - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let e = self.raw_entry(self.restart(mid)?)?;
            if internal_cmp(e.suffix, e.seq, key, seq) == Ordering::Less {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let mut cursor = Cursor {
            next: self.restart(lo)?,
            key: Vec::with_capacity(key.len()),
        };
        while cursor.next < self.entries_end {
            let raw = self.raw_entry(cursor.next)?;
            let order = cmp_joined(cursor.prefix(&raw)?, raw.suffix, key).then(seq.cmp(&raw.seq));
            if order != Ordering::Less {
                break;
            }
            cursor.advance(&raw);
        }
        Ok(cursor)
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

    fn all(block: &Block) -> Vec<(Vec<u8>, SeqNo, Vec<u8>)> {
        let mut cursor = Cursor::default();
        let mut out = Vec::new();
        while let Some(e) = block.next(&mut cursor).unwrap() {
            out.push((e.key.to_vec(), e.seq, e.value.to_vec()));
        }
        out
    }

    /// Index of the entry a seek lands on (`len()` at the end), checked against a scan.
    fn seek_index(block: &Block, key: &[u8], seq: SeqNo) -> usize {
        let entries = all(block);
        let expect = entries
            .iter()
            .position(|(k, s, _)| internal_cmp(k, *s, key, seq) != Ordering::Less)
            .unwrap_or(entries.len());
        let mut cursor = block.seek(key, seq).unwrap();
        let found = block
            .next(&mut cursor)
            .unwrap()
            .map(|e| (e.key.to_vec(), e.seq));
        assert_eq!(
            found,
            entries.get(expect).map(|(k, s, _)| (k.clone(), *s)),
            "seek to {key:?}@{seq}"
        );
        expect
    }

    #[test]
    fn block_round_trip_and_seek() {
        let raw = build(&[(b"a", 5), (b"a", 3), (b"b", 9), (b"d", 1)]);
        let block = Block::decode(raw).unwrap();
        assert_eq!(block.len(), 4);
        let entries = all(&block);
        assert_eq!(entries[1].1, 3);
        assert_eq!(entries[2].2, b"v9");
        assert_eq!(seek_index(&block, b"a", 4), 1);
        assert_eq!(seek_index(&block, b"a", u64::MAX), 0);
        assert_eq!(seek_index(&block, b"a", 2), 2);
        assert_eq!(seek_index(&block, b"c", u64::MAX), 3);
        assert_eq!(seek_index(&block, b"e", u64::MAX), 4);
    }

    /// `n` keys sharing a long prefix, two versions each: restarts fall on both versions.
    fn long_prefix_keys(n: usize) -> Vec<(Vec<u8>, SeqNo)> {
        let prefix = vec![b'p'; 200];
        let mut out = Vec::new();
        for i in 0..n {
            let mut key = prefix.clone();
            key.extend_from_slice(format!("{i:05}").as_bytes());
            out.push((key.clone(), 20));
            out.push((key, 10));
        }
        out
    }

    #[test]
    fn prefixes_are_shared_and_restarts_stored_whole() {
        let keys = long_prefix_keys(40);
        let refs: Vec<(&[u8], SeqNo)> = keys.iter().map(|(k, s)| (k.as_slice(), *s)).collect();
        let raw = build(&refs);
        // Whole keys only at restarts: far less than 80 keys of 205 bytes.
        let restarts = keys.len().div_ceil(RESTART_INTERVAL);
        assert!(
            raw.len() < restarts * 205 + keys.len() * 20,
            "{} bytes",
            raw.len()
        );
        let block = Block::decode(raw).unwrap();
        let entries = all(&block);
        assert_eq!(entries.len(), keys.len());
        for (e, k) in entries.iter().zip(&keys) {
            assert_eq!((&e.0, e.1), (&k.0, k.1));
        }
    }

    #[test]
    fn seeks_at_restart_keys_between_them_and_at_the_edges() {
        let keys = long_prefix_keys(40);
        let refs: Vec<(&[u8], SeqNo)> = keys.iter().map(|(k, s)| (k.as_slice(), *s)).collect();
        let block = Block::decode(build(&refs)).unwrap();
        let n = keys.len();
        for (i, (key, seq)) in keys.iter().enumerate() {
            // Exactly the entry (restart keys included: every RESTART_INTERVAL-th).
            assert_eq!(seek_index(&block, key, *seq), i);
            // A seq between versions, above the newest, below the oldest.
            assert_eq!(seek_index(&block, key, seq + 1), i);
            assert_eq!(seek_index(&block, key, u64::MAX), i - i % 2);
            assert_eq!(seek_index(&block, key, 0), i + 2 - i % 2);
            // Between this key and the next one.
            let mut after = key.clone();
            after.push(0);
            assert_eq!(seek_index(&block, &after, u64::MAX), (i + 2 - i % 2).min(n));
            // A prefix of every key sorts before all of them.
            assert_eq!(seek_index(&block, &key[..100], u64::MAX), 0);
        }
        assert_eq!(seek_index(&block, b"", 0), 0);
        assert_eq!(seek_index(&block, b"q", u64::MAX), n);
        assert_eq!(seek_index(&block, &keys[n - 1].0, 0), n);
    }

    #[test]
    fn blocks_of_one_restart_exactly_full_and_one_past() {
        for n in [
            1,
            RESTART_INTERVAL - 1,
            RESTART_INTERVAL,
            RESTART_INTERVAL + 1,
            3 * RESTART_INTERVAL,
        ] {
            let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("key{i:04}").into_bytes()).collect();
            let refs: Vec<(&[u8], SeqNo)> = keys.iter().map(|k| (k.as_slice(), 1)).collect();
            let raw = build(&refs);
            let restarts = u32::from_le_bytes(raw[raw.len() - 4..].try_into().unwrap());
            assert_eq!(restarts as usize, n.div_ceil(RESTART_INTERVAL));
            let block = Block::decode(raw).unwrap();
            assert_eq!(block.len(), n);
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(seek_index(&block, k, 1), i);
                assert_eq!(seek_index(&block, k, 0), i + 1);
            }
        }
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
        // shared, unshared, value length, the key "a", then the seq and the kind.
        let kind_at = 3 + 1 + 8;
        let mut bad_kind = build(&[(b"a", 1)]);
        assert_eq!(bad_kind[kind_at], ValueKind::Put as u8);
        bad_kind[kind_at] = 7;
        assert!(Block::decode(bad_kind).is_err());
        // An entry of key "a", seq 1, an empty value and the expiry flag, then one restart.
        let flagged = |expires_at_ms: u64| {
            let mut raw = vec![0, 1, 0, b'a'];
            raw.extend_from_slice(&1u64.to_le_bytes());
            raw.push(ValueKind::Put as u8 | crate::types::STORED_HAS_EXPIRY);
            raw.extend_from_slice(&expires_at_ms.to_le_bytes());
            raw.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
            raw
        };
        assert!(Block::decode(flagged(5)).is_ok());
        assert!(Block::decode(flagged(NO_EXPIRY)).is_err());
    }

    /// Offset of entry `i` in a block of one-byte-varint entries `(key, seq, value "v{seq}")`.
    fn entry_offset(entries: &[(&[u8], SeqNo)], i: usize) -> usize {
        let mut prev: &[u8] = b"";
        let mut off = 0;
        for (j, (k, s)) in entries.iter().enumerate().take(i) {
            let shared = if j % RESTART_INTERVAL == 0 {
                0
            } else {
                common_prefix_len(prev, k)
            };
            // Three one-byte varints, the key suffix, the seq, the kind, the value.
            off += 3 + (k.len() - shared) + 8 + 1 + format!("v{s}").len();
            prev = k;
        }
        off
    }

    #[test]
    fn decode_rejects_corrupt_shared_and_unshared_lengths() {
        let entries: [(&[u8], SeqNo); 3] = [(b"abcd", 1), (b"abce", 1), (b"abcf", 1)];
        let good = build(&entries);
        assert!(Block::decode(good.clone()).is_ok());
        let second = entry_offset(&entries, 1);
        assert_eq!(good[second], 3, "entry 1 shares 3 bytes");
        // Shared longer than the previous key, or longer than the key limit.
        for shared in [5u8, 0x7f] {
            let mut bad = good.clone();
            bad[second] = shared;
            assert!(Block::decode(bad).is_err(), "shared {shared}");
        }
        // A restart entry (the first) that claims a shared prefix.
        let mut bad = good.clone();
        bad[0] = 1;
        assert!(Block::decode(bad).is_err());
        // Unshared running past the entries, or beyond the key limit (a two-byte varint).
        for unshared in [0x7fu8, 0xff] {
            let mut bad = good.clone();
            bad[second + 1] = unshared;
            assert!(Block::decode(bad).is_err(), "unshared {unshared:#x}");
        }
        let mut bad = good.clone();
        bad[second + 1] = 0;
        assert!(Block::decode(bad).is_err());
    }

    #[test]
    fn decode_rejects_bad_restart_arrays() {
        let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key{i:04}").into_bytes()).collect();
        let refs: Vec<(&[u8], SeqNo)> = keys.iter().map(|k| (k.as_slice(), 1)).collect();
        let good = build(&refs);
        let block = Block::decode(good.clone()).unwrap();
        assert_eq!(block.restarts, 3);
        let restart_at = |i: usize| block.entries_end + 4 * i;
        let set = |raw: &mut Vec<u8>, pos: usize, v: u32| {
            raw[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
        };
        let second_restart = block.restart(1).unwrap() as u32;
        let len = good.len();
        // A restart not at an entry, a restart out of order, one past the entries, a first
        // restart that is not 0, and restart counts too large or zero.
        for (pos, v) in [
            (restart_at(1), second_restart + 1),
            (restart_at(1), block.restart(2).unwrap() as u32),
            (restart_at(2), block.entries_end as u32),
            (restart_at(0), second_restart),
            (len - 4, 4),
            (len - 4, u32::MAX),
            (len - 4, 0),
        ] {
            let mut bad = good.clone();
            set(&mut bad, pos, v);
            assert!(Block::decode(bad).is_err(), "{v} at {pos}");
        }
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
