//! A hint: a write a replica is owed, kept durably by another node (or shard) until the
//! replica can take it (hinted handoff, see [`crate::endpoint`]).
//!
//! Stored under `(owner, seq)`, with `seq` increasing per owner on each shard so hints replay
//! in the order they were taken. The record is the checksummed envelope of `codec.rs` with
//! magic `b"HT"`:
//!
//! | field         | size | meaning                                           |
//! |---------------|------|---------------------------------------------------|
//! | magic `b"HT"` | 2    |                                                   |
//! | version = 1   | 1    |                                                   |
//! | stored_at_ms  | u64  | wall-clock ms when taken: hints past the window expire |
//! | key_len       | u32  |                                                   |
//! | key           | ..   | the user key                                      |
//! | versions      | ..   | the rest: a [`crate::dvv`] encoding (own checksum) |
//! | crc32c        | u32  | over all preceding bytes                          |

use crate::codec;
use crate::dvv::DvvSet;
use crate::error::Result;

const MAGIC: [u8; 2] = *b"HT";
const VERSION: u8 = 1;

/// One owed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintRecord {
    pub stored_at_ms: u64,
    pub key: Vec<u8>,
    pub versions: Vec<u8>,
}

impl HintRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = codec::begin(MAGIC, VERSION);
        buf.extend_from_slice(&self.stored_at_ms.to_le_bytes());
        buf.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        buf.extend_from_slice(&self.key);
        buf.extend_from_slice(&self.versions);
        codec::seal(buf)
    }

    /// Checks the record's checksum and its versions' own checksum.
    pub fn decode(bytes: &[u8]) -> Result<HintRecord> {
        let mut r = codec::open(bytes, "hint", MAGIC, VERSION)?;
        let stored_at_ms = r.u64()?;
        let key_len = r.u32()? as usize;
        let key = r.bytes(key_len)?.to_vec();
        let versions = r.bytes(r.remaining())?.to_vec();
        r.finish()?;
        DvvSet::verify(&versions)?;
        Ok(HintRecord {
            stored_at_ms,
            key,
            versions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::WriteContext;
    use crate::replica;

    fn record() -> HintRecord {
        let versions = replica::apply_update(1, None, &WriteContext::Local, Some(b"v".to_vec()))
            .unwrap()
            .versions;
        HintRecord {
            stored_at_ms: 1_700_000_000_000,
            key: b"key".to_vec(),
            versions,
        }
    }

    #[test]
    fn round_trip() {
        let r = record();
        assert_eq!(HintRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn any_damaged_byte_is_refused() {
        let bytes = record().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(HintRecord::decode(&bad).is_err(), "byte {i}");
        }
        assert!(HintRecord::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
