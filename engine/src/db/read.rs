//! The read path: point lookups, batches of them, snapshots and scans, each at one sequence
//! number, over the memtable, the frozen memtables (newest first) and the tables.

use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Db, SuperVersion};
use crate::Result;
use crate::fs::FileSystem;
use crate::iter::{MergeIter, ScanIter, Source};
use crate::memtable::MemtableIter;
use crate::snapshot::SnapshotGuard;
use crate::sstable::{TableIter, key_hash};
use crate::types::{Entry, SeqNo};

/// A consistent view of the database at one sequence number.
pub struct Snapshot<F: FileSystem> {
    db: Db<F>,
    guard: Arc<SnapshotGuard>,
}

impl<F: FileSystem> Snapshot<F> {
    /// The sequence number the snapshot reads at.
    pub fn seq(&self) -> SeqNo {
        self.guard.seq()
    }

    /// The value of `key` as of the snapshot.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_entry(key).await?.map(|e| e.value))
    }

    /// The entry of `key` as of the snapshot, with its expiry.
    pub async fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.db.live_entry_at(key, self.seq()).await
    }

    /// Live entries in `range` as of the snapshot, in key order.
    pub async fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Result<ScanIter<F>> {
        let guard = self.db.inner.snapshots.register(self.seq());
        self.db.scan_at(range, guard).await
    }
}

impl<F: FileSystem> Db<F> {
    /// The live value of `key`: `None` when absent, deleted or expired.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_entry(key).await?.map(|e| e.value))
    }

    /// The live entry of `key`, with its expiry.
    pub async fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.check_open()?;
        // The tables first, then the sequence number: a compaction that installed these
        // tables kept everything a reader at or above its horizon needs, and the horizon is
        // at most the visible sequence number read after.
        let sv = self.current();
        let seq = self.inner.visible();
        self.live_entry_in(&sv, key, seq).await
    }

    /// The live entries of `keys`, in order, all read at one sequence number. Like RocksDB's
    /// MultiGet it reads the batch together: the active memtable's index is prefetched for
    /// every key of a batch first, so a pipelined batch of lookups overlaps its cache misses
    /// instead of taking them one at a time.
    pub async fn get_entries(&self, keys: &[&[u8]]) -> Result<Vec<Option<Entry>>> {
        self.check_open()?;
        let sv = self.current();
        let seq = self.inner.visible();
        if keys.len() > 1 {
            // One key has no other misses to overlap with: its lookup takes them itself.
            sv.mem.prefetch(keys);
        }
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            entries.push(self.live_entry_in(&sv, key, seq).await?);
        }
        Ok(entries)
    }

    async fn live_entry_at(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        let sv = self.current();
        self.live_entry_in(&sv, key, snapshot).await
    }

    async fn live_entry_in(
        &self,
        sv: &SuperVersion<F>,
        key: &[u8],
        snapshot: SeqNo,
    ) -> Result<Option<Entry>> {
        self.inner.counters.reads.fetch_add(1, Ordering::Relaxed);
        let now = self.inner.options.clock.now_ms();
        Ok(version_in(sv, key, snapshot)
            .await?
            .map(|(_, e)| e)
            .filter(|e| e.is_live(now)))
    }

    /// A consistent view at the current sequence number, kept until dropped.
    pub fn snapshot(&self) -> Snapshot<F> {
        let inner = &self.inner;
        Snapshot {
            db: self.clone(),
            guard: Arc::new(inner.snapshots.register_with(|| inner.visible())),
        }
    }

    /// Live entries with keys in `range`, in key order, as of now.
    pub async fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Result<ScanIter<F>> {
        self.check_open()?;
        let inner = &self.inner;
        let guard = inner.snapshots.register_with(|| inner.visible());
        self.scan_at(range, guard).await
    }

    async fn scan_at(
        &self,
        range: impl RangeBounds<Vec<u8>>,
        guard: SnapshotGuard,
    ) -> Result<ScanIter<F>> {
        let sv = self.current();
        let mut sources = Vec::with_capacity(1 + sv.imm.len());
        sources.push(Source::Memtable(MemtableIter::new(Arc::clone(&sv.mem))));
        for m in sv.imm.iter().rev() {
            sources.push(Source::Memtable(MemtableIter::new(Arc::clone(m))));
        }
        for t in sv.version.tables() {
            sources.push(Source::Table(TableIter::new(t.reader().await?)));
        }
        let now = self.inner.options.clock.now_ms();
        ScanIter::new(
            MergeIter::new(sources),
            range.start_bound().cloned(),
            range.end_bound().cloned(),
            now,
            guard,
            Arc::clone(&sv.version),
        )
        .await
    }
}

/// The newest version of `key` at `snapshot` in `sv`, tombstones and expired entries included.
async fn version_in<F: FileSystem>(
    sv: &SuperVersion<F>,
    key: &[u8],
    snapshot: SeqNo,
) -> Result<Option<(SeqNo, Entry)>> {
    if let Some(found) = sv.mem.get(key, snapshot) {
        return Ok(Some(found));
    }
    for m in sv.imm.iter().rev() {
        if let Some(found) = m.get(key, snapshot) {
            return Ok(Some(found));
        }
    }
    sv.version.get(key, key_hash(key), snapshot).await
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::options::{Durability, Options};

    /// A batch read sees what one read of each key sees: the memtable's value over the table's,
    /// deleted and absent keys as none, in the order asked, repeats included.
    #[test]
    fn get_entries_reads_each_key_as_get_entry_does() {
        futures_lite::future::block_on(async {
            let options = Options {
                durability: Durability::Buffered,
                ..Options::default()
            };
            let db = Db::open(crate::fs::FaultFs::new(), Path::new("/db"), options)
                .await
                .unwrap();
            let key = |i: u32| format!("key{i:04}").into_bytes();
            for i in 0..300 {
                db.put(&key(i), b"in a table").await.unwrap();
            }
            db.flush().await.unwrap();
            for i in (0..300).step_by(3) {
                db.put(&key(i), b"in the memtable").await.unwrap();
            }
            for i in (0..300).step_by(5) {
                db.delete(&key(i)).await.unwrap();
            }
            let keys: Vec<Vec<u8>> = (0..320).rev().chain([7, 7, 0, 3]).map(key).collect();
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let mut expected = Vec::new();
            for k in &keys {
                expected.push(db.get_entry(k).await.unwrap());
            }
            let got = db.get_entries(&keys).await.unwrap();
            assert_eq!(got, expected);
            let values = |i: u32| got[(319 - i) as usize].as_ref().map(|e| e.value.clone());
            assert_eq!(values(3).as_deref(), Some(&b"in the memtable"[..]));
            assert_eq!(values(7).as_deref(), Some(&b"in a table"[..]));
            assert_eq!(values(10), None, "deleted");
            assert_eq!(values(310), None, "never written");
            assert_eq!(db.get_entries(&[]).await.unwrap(), Vec::new());
        });
    }
}
