//! A cluster member shard's hints, kept in the shard's system engine (`shard-<n>/system/`,
//! see `server::layout`) apart from its data, so a data scan never meets them.
//!
//! Engine key (format version 1): `owner u32 ‖ seq u64`, both big-endian, so one owner's
//! hints are one contiguous range in the order they were taken. Engine value: the record as
//! `shoal_cluster::hint::HintRecord` encodes it (its own magic, version and crc32c).

use shoal_cluster::NodeId;
use shoal_cluster::endpoint::StoredHint;
use shoal_cluster::hint::HintRecord;
use shoal_engine::fs::FileSystem;
use shoal_engine::{Db, WriteBatch};

const KEY_LEN: usize = 4 + 8;

fn key(owner: NodeId, seq: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..4].copy_from_slice(&owner.to_be_bytes());
    k[4..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn split(k: &[u8]) -> Option<(NodeId, u64)> {
    let k: &[u8; KEY_LEN] = k.try_into().ok()?;
    let owner = NodeId::from_be_bytes([k[0], k[1], k[2], k[3]]);
    let seq = u64::from_be_bytes([k[4], k[5], k[6], k[7], k[8], k[9], k[10], k[11]]);
    Some((owner, seq))
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HintStoreError {
    #[error(transparent)]
    Engine(#[from] shoal_engine::Error),
    #[error("hint store key {0:02x?} is not owner ‖ seq")]
    Key(Vec<u8>),
}

/// One shard's hints.
pub struct HintStore<F: FileSystem> {
    db: Db<F>,
}

impl<F: FileSystem> HintStore<F> {
    pub fn new(db: Db<F>) -> HintStore<F> {
        HintStore { db }
    }

    pub fn db(&self) -> &Db<F> {
        &self.db
    }

    /// Keeps a hint; durable (as the engine's durability says) when this returns.
    pub async fn store(
        &self,
        owner: NodeId,
        seq: u64,
        record: &[u8],
    ) -> Result<(), HintStoreError> {
        Ok(self.db.put(&key(owner, seq), record).await?)
    }

    pub async fn delete(&self, owner: NodeId, seq: u64) -> Result<(), HintStoreError> {
        let mut batch = WriteBatch::new();
        batch.delete(key(owner, seq).to_vec());
        Ok(self.db.write(batch).await?)
    }

    /// Up to `limit` hints of `owner` from `from_seq` on, in order.
    pub async fn load(
        &self,
        owner: NodeId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, HintStoreError> {
        let range = key(owner, from_seq).to_vec()..=key(owner, u64::MAX).to_vec();
        let mut scan = self.db.scan(range).await?;
        let mut out = Vec::new();
        while out.len() < limit as usize {
            let Some((k, entry)) = scan.next().await? else {
                break;
            };
            let (_, seq) = split(&k).ok_or_else(|| HintStoreError::Key(k.clone()))?;
            out.push((seq, entry.value));
        }
        Ok(out)
    }

    /// Every hint kept, without its record, for the endpoint's start. A record that does not
    /// decode is listed with a stamp of 0, so it expires at once (and its load then finds it
    /// damaged and deletes it).
    pub async fn list(&self) -> Result<Vec<StoredHint>, HintStoreError> {
        let mut scan = self.db.scan(..).await?;
        let mut out = Vec::new();
        while let Some((k, entry)) = scan.next().await? {
            let (owner, seq) = split(&k).ok_or_else(|| HintStoreError::Key(k.clone()))?;
            let stored_at_ms = HintRecord::decode(&entry.value).map_or(0, |r| r.stored_at_ms);
            out.push(StoredHint {
                owner,
                seq,
                bytes: entry.value.len() as u64,
                stored_at_ms,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_owner_then_seq() {
        let mut keys = [key(2, 1), key(1, 300), key(1, 2), key(2, 0)];
        keys.sort();
        let split: Vec<_> = keys.iter().map(|k| split(k).unwrap()).collect();
        assert_eq!(split, [(1, 2), (1, 300), (2, 0), (2, 1)]);
        assert_eq!(super::split(b"short"), None);
    }
}
