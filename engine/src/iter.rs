//! Iterators over versions: a merge of memtables and tables into one stream in table order
//! (user key ascending, newest version first), and the user-facing scan on top of it that
//! keeps one visible version per key and hides tombstones and expired entries.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::sync::Arc;

use crate::Result;
use crate::fs::FileSystem;
use crate::memtable::MemtableIter;
use crate::snapshot::SnapshotGuard;
use crate::sstable::TableIter;
use crate::types::{Entry, SeqNo};

/// One version as iterators yield it.
pub type Version = (Vec<u8>, SeqNo, Entry);

/// One input of a merge.
pub enum Source<F: FileSystem> {
    /// A memtable.
    Memtable(MemtableIter),
    /// A table.
    Table(TableIter<F::File>),
}

impl<F: FileSystem> Source<F> {
    async fn seek(&mut self, key: &[u8]) -> Result<()> {
        match self {
            Source::Memtable(it) => {
                it.seek(key);
                Ok(())
            }
            Source::Table(it) => it.seek(key).await,
        }
    }

    async fn next(&mut self) -> Result<Option<Version>> {
        match self {
            Source::Memtable(it) => Ok(it.next()),
            Source::Table(it) => it.next().await,
        }
    }
}

struct Head {
    version: Version,
    source: usize,
}

impl Head {
    fn order(&self, other: &Head) -> Ordering {
        self.version
            .0
            .cmp(&other.version.0)
            .then_with(|| other.version.1.cmp(&self.version.1))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.order(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    /// Reversed: `BinaryHeap` is a max-heap and the merge wants the smallest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.order(self)
    }
}

/// Every version from every source, in table order.
pub struct MergeIter<F: FileSystem> {
    sources: Vec<Source<F>>,
    heap: BinaryHeap<Head>,
    started: bool,
}

impl<F: FileSystem> MergeIter<F> {
    /// A merge of `sources`, positioned before the first version.
    pub fn new(sources: Vec<Source<F>>) -> MergeIter<F> {
        MergeIter {
            sources,
            heap: BinaryHeap::new(),
            started: false,
        }
    }

    /// Positions every source at the first version of the first key >= `key`.
    pub async fn seek(&mut self, key: &[u8]) -> Result<()> {
        self.heap.clear();
        for i in 0..self.sources.len() {
            self.sources[i].seek(key).await?;
            self.pull(i).await?;
        }
        self.started = true;
        Ok(())
    }

    async fn pull(&mut self, source: usize) -> Result<()> {
        if let Some(version) = self.sources[source].next().await? {
            self.heap.push(Head { version, source });
        }
        Ok(())
    }

    /// The next version in table order.
    pub async fn next(&mut self) -> Result<Option<Version>> {
        if !self.started {
            for i in 0..self.sources.len() {
                self.pull(i).await?;
            }
            self.started = true;
        }
        let Some(head) = self.heap.pop() else {
            return Ok(None);
        };
        self.pull(head.source).await?;
        Ok(Some(head.version))
    }
}

/// Live entries of a key range at a snapshot, one per key, in key order.
pub struct ScanIter<F: FileSystem> {
    merge: MergeIter<F>,
    snapshot: SeqNo,
    now_ms: u64,
    end: Bound<Vec<u8>>,
    last_key: Option<Vec<u8>>,
    done: bool,
    /// Keeps the scan's snapshot registered, so compaction keeps what it reads.
    _pin: SnapshotGuard,
    /// Keeps the tables it reads from being deleted when a compaction replaces them.
    _tables: Arc<crate::version::Version<F>>,
}

impl<F: FileSystem> ScanIter<F> {
    pub(crate) async fn new(
        mut merge: MergeIter<F>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        now_ms: u64,
        pin: SnapshotGuard,
        tables: Arc<crate::version::Version<F>>,
    ) -> Result<ScanIter<F>> {
        let mut last_key = None;
        match &start {
            Bound::Included(k) => merge.seek(k).await?,
            Bound::Excluded(k) => {
                merge.seek(k).await?;
                // Every version of the excluded key is then skipped as "already seen".
                last_key = Some(k.clone());
            }
            Bound::Unbounded => {}
        }
        Ok(ScanIter {
            merge,
            snapshot: pin.seq(),
            now_ms,
            end,
            last_key,
            done: false,
            _pin: pin,
            _tables: tables,
        })
    }

    /// The next live key and its entry.
    pub async fn next(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        while !self.done {
            let Some((key, seq, entry)) = self.merge.next().await? else {
                self.done = true;
                break;
            };
            let past_end = match &self.end {
                Bound::Included(end) => key > *end,
                Bound::Excluded(end) => key >= *end,
                Bound::Unbounded => false,
            };
            if past_end {
                self.done = true;
                break;
            }
            if seq > self.snapshot || self.last_key.as_ref() == Some(&key) {
                continue;
            }
            if entry.is_live(self.now_ms) {
                self.last_key = Some(key.clone());
                return Ok(Some((key, entry)));
            }
            self.last_key = Some(key);
        }
        Ok(None)
    }
}
