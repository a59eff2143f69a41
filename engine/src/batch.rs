//! Write batches: a set of writes applied atomically, and their encoding as one commit-log
//! record payload.
//!
//! Payload layout (format version 3; integers little-endian, varints LEB128):
//!
//! | field        | type   | meaning                                              |
//! |--------------|--------|------------------------------------------------------|
//! | version      | u8     | `BATCH_FORMAT_VERSION`                               |
//! | first_seq    | varint | sequence number of the first entry                   |
//! | count        | varint | entries that follow; entry i has first_seq + i       |
//! | per entry:   |        |                                                      |
//! | kind         | u8     | `ValueKind` tag, plus 0x80 if an expiry follows      |
//! | expires_at   | u64    | ms since the Unix epoch; present only with the flag  |
//! | key_len      | varint |                                                      |
//! | key          | ..     |                                                      |
//! | value_len    | varint |                                                      |
//! | value        | ..     |                                                      |
//!
//! The commit log writes every batch, so its size is write amplification: a small put costs
//! three bytes of entry header, and a batch header is two bytes plus the seq's varint (4
//! bytes up to 2^28 writes). (Version 1 had fixed u32 lengths and an always-present expiry,
//! 17 bytes per entry; version 2 a fixed u64 first_seq.) The record framing around it (length,
//! crc32c, segment tag) belongs to the log.

use std::path::Path;

use crate::coding::{Reader, put_varint, varint_len};
use crate::types::{Entry, NO_EXPIRY, SeqNo, ValueKind, check_key, check_value};
use crate::{Error, Result};

const BATCH_FORMAT_VERSION: u8 = 3;
/// kind + two one-byte varints: the least an entry takes.
const ENTRY_LEN_MIN: usize = 1 + 1 + 1;

/// Writes applied together: all or none survive a crash, and readers see all or none.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Entry)>,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put of `value` under `key`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.put_entry(key, Entry::put(value))
    }

    /// Adds a delete of `key` (a tombstone).
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.put_entry(key, Entry::tombstone())
    }

    /// Any entry: a put with an expiry, or a tombstone carrying bytes.
    pub fn put_entry(&mut self, key: impl Into<Vec<u8>>, entry: Entry) -> &mut Self {
        let key = key.into();
        self.bytes += entry.kind_and_expiry_len()
            + varint_len(key.len() as u64)
            + key.len()
            + varint_len(entry.value.len() as u64)
            + entry.value.len();
        self.ops.push((key, entry));
        self
    }

    /// Writes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Size of the payload encoded with sequence numbers from `first_seq`.
    pub fn encoded_len(&self, first_seq: SeqNo) -> usize {
        let version = 1;
        version + varint_len(first_seq) + varint_len(self.ops.len() as u64) + self.bytes
    }

    /// The writes, in the order added.
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
        out.reserve(self.encoded_len(first_seq));
        out.push(BATCH_FORMAT_VERSION);
        put_varint(out, first_seq);
        put_varint(out, self.ops.len() as u64);
        for (key, entry) in &self.ops {
            entry.put_kind_and_expiry(out);
            put_varint(out, key.len() as u64);
            out.extend_from_slice(key);
            put_varint(out, entry.value.len() as u64);
            out.extend_from_slice(&entry.value);
        }
    }
}

/// A batch read back from the log.
#[derive(Debug)]
pub struct DecodedBatch {
    /// Sequence number of the first write; write `i` has `first_seq + i`.
    pub first_seq: SeqNo,
    /// The writes, in order.
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
    let first_seq = r.varint().ok_or_else(|| bad("truncated header"))?;
    let count = r.varint().ok_or_else(|| bad("truncated header"))?;
    // Each entry takes at least its header, so the count is bounded by the payload size.
    if count > (payload.len() / ENTRY_LEN_MIN) as u64 {
        return Err(bad(&format!("impossible entry count {count}")));
    }
    // Sequence numbers of the batch must fit below `SeqNo::MAX` (the "see everything" snapshot).
    if first_seq.checked_add(count).is_none() {
        return Err(bad(&format!(
            "{count} entries from seq {first_seq} overflow"
        )));
    }
    let mut ops = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let tag = r.u8().ok_or_else(|| bad("truncated entry"))?;
        let (kind, has_expiry) =
            ValueKind::from_stored(tag).ok_or_else(|| bad(&format!("unknown kind {tag}")))?;
        let expires_at_ms = if !has_expiry {
            NO_EXPIRY
        } else {
            match r.u64() {
                Some(NO_EXPIRY) => return Err(bad("expiry flag with no expiry")),
                Some(at) => at,
                None => return Err(bad("truncated entry")),
            }
        };
        let key = r
            .varint_bytes()
            .ok_or_else(|| bad("truncated key"))?
            .to_vec();
        let value = r
            .varint_bytes()
            .ok_or_else(|| bad("truncated value"))?
            .to_vec();
        // Flushing an entry past the limits would break the table format's bounds.
        if check_key(&key).is_err() || check_value(&value).is_err() {
            return Err(bad("key or value over the size limit"));
        }
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
            prop_assert_eq!(buf.len(), batch.encoded_len(seq));
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
