//! What the engine stores: `key → versions`, each version an [`Entry`] at a sequence number.
//!
//! Values are opaque bytes. Beside them each entry carries a little metadata of its own: its
//! [`ValueKind`] (a put or a tombstone) and an optional expiry time. A tombstone may carry
//! bytes too: the cluster layer keeps a deleted key's causal context there.

/// A key, as scans return it.
pub type Key = Vec<u8>;
/// A value, as reads return it.
pub type Value = Vec<u8>;

/// Position of a write in the engine's total order. Every key in a write batch gets its own.
pub type SeqNo = u64;

/// The largest sequence number; reading at it sees everything.
pub const SEQ_MAX: SeqNo = u64::MAX >> 1;

/// Longest key an embedder should let its own users store: 16 KiB, the node's limit for a Redis
/// key. Keys are kept whole in index blocks and memtables, so they must stay small; Redis
/// clients rarely go past a few hundred bytes.
pub const KEY_LEN_MAX: usize = 16 * 1024;

/// Room the engine keeps beyond [`KEY_LEN_MAX`] for a prefix an embedder puts in front of its
/// users' keys (the node prefixes an 8-byte ring hash; others a table or tenant id), so that a
/// user key at the limit still fits once prefixed.
pub const KEY_PREFIX_LEN_MAX: usize = 64;

/// Longest key the engine stores: what writes are checked against and what the decoders of
/// the log, tables and index accept.
pub const STORED_KEY_LEN_MAX: usize = KEY_LEN_MAX + KEY_PREFIX_LEN_MAX;

/// Longest value the engine accepts in one entry: the default `max-value-bytes` of the node
/// plus room for the cluster layer's version metadata.
pub const VALUE_LEN_MAX: usize = 64 * 1024 * 1024;

/// On-disk tag of an entry. Values are stored in the log and in SSTables: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueKind {
    /// A tombstone.
    Delete = 0,
    /// A value.
    Put = 1,
}

impl ValueKind {
    /// The kind an on-disk tag stands for; `None` for an unknown tag.
    pub fn from_u8(tag: u8) -> Option<ValueKind> {
        match tag {
            0 => Some(ValueKind::Delete),
            1 => Some(ValueKind::Put),
            _ => None,
        }
    }

    /// Splits a stored kind byte (see [`Entry::put_kind_and_expiry`]) into the kind and
    /// whether an expiry follows it; `None` for an unknown kind.
    pub(crate) fn from_stored(tag: u8) -> Option<(ValueKind, bool)> {
        let kind = ValueKind::from_u8(tag & !STORED_HAS_EXPIRY)?;
        Some((kind, tag & STORED_HAS_EXPIRY != 0))
    }
}

/// Set in a stored kind byte (write batches, SSTable entries) when a u64 expiry follows it.
pub(crate) const STORED_HAS_EXPIRY: u8 = 0x80;

const _: () = assert!(ValueKind::Delete as u8 & STORED_HAS_EXPIRY == 0);
const _: () = assert!(ValueKind::Put as u8 & STORED_HAS_EXPIRY == 0);

/// Wall-clock expiry in milliseconds since the Unix epoch; [`NO_EXPIRY`] means never.
pub type ExpiresAt = u64;
/// The expiry of an entry that never expires.
pub const NO_EXPIRY: ExpiresAt = 0;

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A value or a tombstone.
    pub kind: ValueKind,
    /// When it expires ([`NO_EXPIRY`]: never).
    pub expires_at_ms: ExpiresAt,
    /// The value (for a tombstone, bytes its writer kept with the delete).
    pub value: Vec<u8>,
}

impl Entry {
    /// A value that never expires.
    pub fn put(value: impl Into<Vec<u8>>) -> Entry {
        Entry {
            kind: ValueKind::Put,
            expires_at_ms: NO_EXPIRY,
            value: value.into(),
        }
    }

    /// A tombstone without bytes.
    pub fn tombstone() -> Entry {
        Entry {
            kind: ValueKind::Delete,
            expires_at_ms: NO_EXPIRY,
            value: Vec::new(),
        }
    }

    /// Appends the entry's kind byte, flagged and followed by its expiry (u64 little-endian)
    /// when it has one: how write batches and SSTable entries store kind and expiry.
    pub(crate) fn put_kind_and_expiry(&self, out: &mut Vec<u8>) {
        if self.expires_at_ms == NO_EXPIRY {
            out.push(self.kind as u8);
        } else {
            out.push(self.kind as u8 | STORED_HAS_EXPIRY);
            out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        }
    }

    /// Bytes [`Entry::put_kind_and_expiry`] appends.
    pub(crate) fn kind_and_expiry_len(&self) -> usize {
        if self.expires_at_ms == NO_EXPIRY {
            1
        } else {
            1 + 8
        }
    }

    /// True when the entry has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        is_expired(self.expires_at_ms, now_ms)
    }

    /// True when a reader at `now_ms` sees this entry as a live value.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.kind == ValueKind::Put && !self.is_expired(now_ms)
    }
}

/// True when an entry expiring at `expires_at_ms` has expired at `now_ms`.
pub fn is_expired(expires_at_ms: ExpiresAt, now_ms: u64) -> bool {
    expires_at_ms != NO_EXPIRY && expires_at_ms <= now_ms
}

/// Checks a key against the engine's limits.
pub fn check_key(key: &[u8]) -> crate::Result<()> {
    if key.len() > STORED_KEY_LEN_MAX {
        return Err(crate::Error::InvalidArgument(format!(
            "key is {} bytes, the limit is {STORED_KEY_LEN_MAX}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value against the engine's limits.
pub fn check_value(value: &[u8]) -> crate::Result<()> {
    if value.len() > VALUE_LEN_MAX {
        return Err(crate::Error::InvalidArgument(format!(
            "value is {} bytes, the limit is {VALUE_LEN_MAX}",
            value.len()
        )));
    }
    Ok(())
}
