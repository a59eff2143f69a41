//! The properties block (layout at the top of `sstable.rs`). `file_size`, `index_bytes` and
//! `filter_bytes` are not stored: the reader takes them from the footer and the file.

use super::coding::{Malformed, Reader, malformed};
use super::{FORMAT_VERSION, TableProperties};
use crate::types::STORED_KEY_LEN_MAX;

pub(crate) fn encode(p: &TableProperties) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&p.format_version.to_le_bytes());
    for v in [
        p.entries,
        p.tombstones,
        p.min_seq,
        p.max_seq,
        p.raw_key_bytes,
        p.raw_value_bytes,
        p.data_bytes,
        p.blocks,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for key in [&p.smallest_key, &p.largest_key] {
        debug_assert!(key.len() <= STORED_KEY_LEN_MAX);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
    }
    out
}

/// Decodes the stored fields and checks they agree with each other.
pub(crate) fn decode(block: &[u8]) -> Result<TableProperties, Malformed> {
    let mut r = Reader::new(block);
    let format_version = r.u32("format version")?;
    if format_version != FORMAT_VERSION {
        return Err(malformed(format!(
            "properties format version {format_version}, expected {FORMAT_VERSION}"
        )));
    }
    let mut p = TableProperties {
        format_version,
        entries: r.u64("entries")?,
        tombstones: r.u64("tombstones")?,
        min_seq: r.u64("min seq")?,
        max_seq: r.u64("max seq")?,
        raw_key_bytes: r.u64("raw key bytes")?,
        raw_value_bytes: r.u64("raw value bytes")?,
        data_bytes: r.u64("data bytes")?,
        blocks: r.u64("blocks")?,
        ..TableProperties::default()
    };
    for key in [&mut p.smallest_key, &mut p.largest_key] {
        let len = r.u32("key length")? as usize;
        if len > STORED_KEY_LEN_MAX {
            return Err(malformed(format!("property key of {len} bytes")));
        }
        *key = r.bytes(len, "key")?.to_vec();
    }
    if r.remaining() != 0 {
        return Err(malformed("bytes after the properties"));
    }
    if p.tombstones > p.entries
        || p.min_seq > p.max_seq
        || p.smallest_key > p.largest_key
        || p.blocks > p.entries
        || (p.entries == 0) != (p.blocks == 0)
    {
        return Err(malformed(format!("inconsistent properties {p:?}")));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_consistency() {
        let p = TableProperties {
            entries: 10,
            tombstones: 2,
            min_seq: 3,
            max_seq: 40,
            smallest_key: b"a".to_vec(),
            largest_key: b"zz".to_vec(),
            data_bytes: 4000,
            blocks: 2,
            format_version: FORMAT_VERSION,
            raw_key_bytes: 20,
            raw_value_bytes: 300,
            ..TableProperties::default()
        };
        assert_eq!(decode(&encode(&p)).unwrap(), p);
        let bad = TableProperties {
            tombstones: 11,
            ..p.clone()
        };
        assert!(decode(&encode(&bad)).is_err());
        let old = TableProperties {
            format_version: 0,
            ..p.clone()
        };
        assert!(decode(&encode(&old)).is_err());
        let enc = encode(&p);
        assert!(decode(&enc[..enc.len() - 1]).is_err());
    }
}
