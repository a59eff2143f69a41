//! Write batches: a set of writes applied atomically, and their encoding as one commit-log
//! record payload.
//!
//! Payload layout (format version 1; all integers little-endian):
//!
//! | field        | type | meaning                                        |
//! |--------------|------|------------------------------------------------|
//! | version      | u8   | `BATCH_FORMAT_VERSION`                         |
//! | first_seq    | u64  | sequence number of the first entry             |
//! | count        | u32  | entries that follow; entry i has first_seq + i |
//! | per entry:   |      |                                                |
//! | kind         | u8   | `ValueKind` tag                                |
//! | expires_at   | u64  | ms since the Unix epoch, 0 = never             |
//! | key_len      | u32  |                                                |
//! | key          | ..   |                                                |
//! | value_len    | u32  |                                                |
//! | value        | ..   |                                                |
//!
//! The record framing around it (length, crc32c, record number) belongs to the log.

use std::path::Path;

use crate::coding::{Reader, put_bytes, put_u32, put_u64};
use crate::types::{Entry, NO_EXPIRY, SeqNo, ValueKind, check_key, check_value};
use crate::{Error, Result};

const BATCH_FORMAT_VERSION: u8 = 1;
const BATCH_HEADER_LEN: usize = 1 + 8 + 4;
const ENTRY_HEADER_LEN: usize = 1 + 8 + 4 + 4;

/// Writes applied together: all or none survive a crash, and readers see all or none.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Entry)>,
    bytes: usize,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.put_entry(key, Entry::put(value))
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.put_entry(key, Entry::tombstone())
    }

    /// Any entry: a put with an expiry, or a tombstone carrying bytes.
    pub fn put_entry(&mut self, key: impl Into<Vec<u8>>, entry: Entry) -> &mut Self {
        let key = key.into();
        self.bytes += ENTRY_HEADER_LEN + key.len() + entry.value.len();
        self.ops.push((key, entry));
        self
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Size of the encoded payload.
    pub fn encoded_len(&self) -> usize {
        BATCH_HEADER_LEN + self.bytes
    }

    pub fn ops(&self) -> &[(Vec<u8>, Entry)] {
        &self.ops
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (key, entry) in &self.ops {
            check_key(key)?;
            check_value(&entry.value)?;
            if entry.kind == ValueKind::Delete && entry.expires_at_ms != NO_EXPIRY {
                return Err(Error::InvalidArgument(
                    "a tombstone cannot expire".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Appends the payload of this batch, numbered from `first_seq`, to `out`.
    pub(crate) fn encode(&self, first_seq: SeqNo, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(BATCH_FORMAT_VERSION);
        put_u64(out, first_seq);
        put_u32(out, self.ops.len() as u32);
        for (key, entry) in &self.ops {
            out.push(entry.kind as u8);
            put_u64(out, entry.expires_at_ms);
            put_bytes(out, key);
            put_bytes(out, &entry.value);
        }
    }
}

/// A batch read back from the log.
#[derive(Debug)]
pub struct DecodedBatch {
    pub first_seq: SeqNo,
    pub ops: Vec<(Vec<u8>, Entry)>,
}

/// Decodes a log payload. The log has verified its checksum, so a malformed payload means a
/// writer bug or a forged record: report it as corruption at `record_no`.
pub fn decode(payload: &[u8], path: &Path, record_no: u64) -> Result<DecodedBatch> {
    let bad = |what: &str| Error::corruption(path, record_no, format!("write batch: {what}"));
    let mut r = Reader::new(payload);
    let version = r.u8().ok_or_else(|| bad("truncated header"))?;
    if version != BATCH_FORMAT_VERSION {
        return Err(bad(&format!("unknown format version {version}")));
    }
    let first_seq = r.u64().ok_or_else(|| bad("truncated header"))?;
    let count = r.u32().ok_or_else(|| bad("truncated header"))?;
    // Each entry takes at least its header, so the count is bounded by the payload size.
    if count as usize > payload.len() / ENTRY_HEADER_LEN {
        return Err(bad(&format!("impossible entry count {count}")));
    }
    let mut ops = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let tag = r.u8().ok_or_else(|| bad("truncated entry"))?;
        let kind = ValueKind::from_u8(tag).ok_or_else(|| bad(&format!("unknown kind {tag}")))?;
        let expires_at_ms = r.u64().ok_or_else(|| bad("truncated entry"))?;
        let key = r.bytes().ok_or_else(|| bad("truncated key"))?.to_vec();
        let value = r.bytes().ok_or_else(|| bad("truncated value"))?.to_vec();
        if kind == ValueKind::Delete && expires_at_ms != NO_EXPIRY {
            return Err(bad("tombstone with an expiry"));
        }
        ops.push((
            key,
            Entry {
                kind,
                expires_at_ms,
                value,
            },
        ));
    }
    if !r.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(DecodedBatch { first_seq, ops })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_entry() -> impl Strategy<Value = Entry> {
        (
            any::<bool>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(put, exp, value)| {
                if put {
                    Entry {
                        kind: ValueKind::Put,
                        expires_at_ms: exp,
                        value,
                    }
                } else {
                    Entry {
                        kind: ValueKind::Delete,
                        expires_at_ms: NO_EXPIRY,
                        value,
                    }
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(seq in any::<u64>(), ops in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..32), any_entry()), 0..20)) {
            let mut batch = WriteBatch::new();
            for (k, e) in &ops {
                batch.put_entry(k.clone(), e.clone());
            }
            let mut buf = Vec::new();
            batch.encode(seq, &mut buf);
            prop_assert_eq!(buf.len(), batch.encoded_len());
            let decoded = decode(&buf, Path::new("log"), 7).unwrap();
            prop_assert_eq!(decoded.first_seq, seq);
            prop_assert_eq!(decoded.ops, ops);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, Path::new("log"), 0);
        }
    }

    #[test]
    fn truncation_is_corruption() {
        let mut batch = WriteBatch::new();
        batch
            .put(b"key".to_vec(), b"value".to_vec())
            .delete(b"gone".to_vec());
        let mut buf = Vec::new();
        batch.encode(1, &mut buf);
        for cut in 0..buf.len() {
            let err = decode(&buf[..cut], Path::new("log"), 3).unwrap_err();
            assert!(err.is_corruption(), "{err}");
        }
    }
}
