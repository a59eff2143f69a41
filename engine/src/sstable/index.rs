//! The index block: one [`IndexEntry`] per data block (layout at the top of `sstable.rs`).

use std::cmp::Ordering;

use super::block::{BLOCK_LEN_MAX, TRAILER_LEN};
use super::coding::{Malformed, Reader, malformed, put_varint};
use super::{IndexEntry, internal_cmp};
use crate::types::STORED_KEY_LEN_MAX;

/// Smallest encoding of one entry: four one-byte varints (an empty key is legal).
const ENTRY_LEN_MIN: usize = 4;

/// Largest stored block: a raw block of the maximum size (zstd only ever stores less).
const STORED_LEN_MAX: u64 = BLOCK_LEN_MAX as u64;

pub(crate) fn encode(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, entries.len() as u64);
    for e in entries {
        put_varint(&mut out, e.last_key.len() as u64);
        out.extend_from_slice(&e.last_key);
        put_varint(&mut out, e.last_seq);
        put_varint(&mut out, e.offset);
        put_varint(&mut out, e.stored_len);
    }
    out
}

/// Decodes the index and checks that it tiles `0..data_bytes` exactly with blocks in order.
pub(crate) fn decode(block: &[u8], data_bytes: u64) -> Result<Vec<IndexEntry>, Malformed> {
    let mut r = Reader::new(block);
    let count = r.len(block.len() / ENTRY_LEN_MIN, "index entry count")?;
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(count);
    let mut next_offset = 0u64;
    for i in 0..count {
        let key_len = r.len(STORED_KEY_LEN_MAX, "index key length")?;
        let last_key = r.bytes(key_len, "index key")?.to_vec();
        let last_seq = r.varint("index seq")?;
        let offset = r.varint("block offset")?;
        let stored_len = r.varint("block length")?;
        if offset != next_offset {
            return Err(malformed(format!(
                "block {i} at offset {offset}, expected {next_offset}"
            )));
        }
        if stored_len == 0 || stored_len > STORED_LEN_MAX {
            return Err(malformed(format!("block {i} has length {stored_len}")));
        }
        next_offset = offset + stored_len + TRAILER_LEN as u64;
        if let Some(prev) = entries.last()
            && internal_cmp(&prev.last_key, prev.last_seq, &last_key, last_seq) != Ordering::Less
        {
            return Err(malformed(format!("index entry {i} out of order")));
        }
        entries.push(IndexEntry {
            last_key,
            last_seq,
            offset,
            stored_len,
        });
    }
    if r.remaining() != 0 {
        return Err(malformed(format!(
            "{} bytes after the index entries",
            r.remaining()
        )));
    }
    if next_offset != data_bytes {
        return Err(malformed(format!(
            "blocks end at {next_offset}, data ends at {data_bytes}"
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<IndexEntry> {
        vec![
            IndexEntry {
                last_key: b"b".to_vec(),
                last_seq: 4,
                offset: 0,
                stored_len: 100,
            },
            IndexEntry {
                last_key: b"b".to_vec(),
                last_seq: 2,
                offset: 105,
                stored_len: 50,
            },
        ]
    }

    #[test]
    fn round_trip() {
        let e = entries();
        assert_eq!(decode(&encode(&e), 160).unwrap(), e);
        assert_eq!(decode(&encode(&[]), 0).unwrap(), vec![]);
    }

    #[test]
    fn rejects_gaps_disorder_and_wrong_end() {
        let e = entries();
        assert!(decode(&encode(&e), 161).is_err());
        let mut gap = e.clone();
        gap[1].offset = 106;
        assert!(decode(&encode(&gap), 161).is_err());
        let mut disorder = e.clone();
        disorder[1].last_seq = 4;
        assert!(decode(&encode(&disorder), 160).is_err());
        let mut trailing = encode(&e);
        trailing.push(0);
        assert!(decode(&trailing, 160).is_err());
        assert!(decode(&[0xff, 0xff, 0x03], 0).is_err());
    }
}
