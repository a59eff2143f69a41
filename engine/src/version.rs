//! A version: the immutable set of SSTables, by level, that readers search. Flushes and
//! compactions build a new version and swap it in; readers keep the one they started with,
//! and with it every table it lists (see [`TableHandle`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Result;
use crate::fs::FileSystem;
use crate::manifest::{LEVELS, TableMeta};
use crate::sstable::Table;
use crate::table_cache::TableCache;
use crate::types::{Entry, SeqNo};

/// A table as versions list it. Shared by every version that lists the table; when a
/// compaction has replaced the table (durably) it is marked obsolete, and the last handle to
/// go puts the file on the table cache's obsolete list for deletion.
pub struct TableHandle<F: FileSystem> {
    /// What the manifest records of the table.
    pub meta: TableMeta,
    tables: Arc<TableCache<F>>,
    obsolete: AtomicBool,
}

impl<F: FileSystem> TableHandle<F> {
    /// A handle on the table `meta` describes, opened through `tables`.
    pub fn new(meta: TableMeta, tables: Arc<TableCache<F>>) -> Arc<TableHandle<F>> {
        Arc::new(TableHandle {
            meta,
            tables,
            obsolete: AtomicBool::new(false),
        })
    }

    /// The open table, from the table cache or opened again.
    pub async fn reader(&self) -> Result<Arc<Table<F::File>>> {
        self.tables.get(&self.meta).await
    }

    /// Deletes the file once no version lists it. Only after the manifest edit removing the
    /// table is durable.
    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl<F: FileSystem> Drop for TableHandle<F> {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            self.tables.bury(self.meta.number);
        }
    }
}

/// An immutable set of tables by level, as readers search it.
pub struct Version<F: FileSystem> {
    /// L0: newest first (it may overlap). L1..: sorted by smallest key, disjoint.
    levels: Vec<Vec<Arc<TableHandle<F>>>>,
}

impl<F: FileSystem> Version<F> {
    /// A version without tables.
    pub fn empty() -> Version<F> {
        Version {
            levels: (0..LEVELS).map(|_| Vec::new()).collect(),
        }
    }

    /// A new version with `added` tables and without the `removed` table numbers.
    pub fn apply(&self, added: Vec<Arc<TableHandle<F>>>, removed: &[u64]) -> Version<F> {
        let mut levels: Vec<Vec<Arc<TableHandle<F>>>> = self
            .levels
            .iter()
            .map(|level| {
                level
                    .iter()
                    .filter(|t| !removed.contains(&t.meta.number))
                    .cloned()
                    .collect()
            })
            .collect();
        for t in added {
            levels[t.meta.level as usize].push(t);
        }
        for (level, tables) in levels.iter_mut().enumerate() {
            if level == 0 {
                tables.sort_by_key(|t| std::cmp::Reverse(t.meta.max_seq));
            } else {
                tables.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
                debug_assert!(
                    tables
                        .windows(2)
                        .all(|w| w[0].meta.largest < w[1].meta.smallest),
                    "overlapping tables in level {level}"
                );
            }
        }
        Version { levels }
    }

    /// The tables of each level, in search order.
    pub fn levels(&self) -> &[Vec<Arc<TableHandle<F>>>] {
        &self.levels
    }

    /// The tables' metadata by level, in each level's order: what compaction picks from.
    pub fn meta_levels(&self) -> Vec<Vec<&TableMeta>> {
        self.levels
            .iter()
            .map(|level| level.iter().map(|t| &t.meta).collect())
            .collect()
    }

    /// The handle of table `number`, if this version lists it.
    pub fn find(&self, number: u64) -> Option<&Arc<TableHandle<F>>> {
        self.tables().find(|t| t.meta.number == number)
    }

    /// Every table, in search order: L0 newest first, then each level by key.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableHandle<F>>> {
        self.levels.iter().flatten()
    }

    /// The newest version of `key` visible at `snapshot` in any table.
    pub async fn get(
        &self,
        key: &[u8],
        hash: u64,
        snapshot: SeqNo,
    ) -> Result<Option<(SeqNo, Entry)>> {
        for t in &self.levels[0] {
            if covers(&t.meta, key) {
                if let Some(found) = t.reader().await?.get(key, hash, snapshot).await? {
                    return Ok(Some(found));
                }
            }
        }
        for level in &self.levels[1..] {
            let i = level.partition_point(|t| t.meta.largest.as_slice() < key);
            if let Some(t) = level.get(i).filter(|t| covers(&t.meta, key)) {
                if let Some(found) = t.reader().await?.get(key, hash, snapshot).await? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }
}

fn covers(meta: &TableMeta, key: &[u8]) -> bool {
    meta.smallest.as_slice() <= key && key <= meta.largest.as_slice()
}
