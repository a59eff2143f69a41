//! A version: the immutable set of open SSTables, by level, that readers search. Flushes and
//! compactions build a new version and swap it in; readers keep the one they started with.

use std::sync::Arc;

use crate::Result;
use crate::fs::FileSystem;
use crate::manifest::{LEVELS, TableMeta};
use crate::sstable::Table;
use crate::types::{Entry, SeqNo};

pub struct TableHandle<F: FileSystem> {
    pub meta: TableMeta,
    pub table: Arc<Table<F::File>>,
}

pub struct Version<F: FileSystem> {
    /// L0: newest first (it may overlap). L1..: sorted by smallest key, disjoint.
    levels: Vec<Vec<Arc<TableHandle<F>>>>,
}

impl<F: FileSystem> Version<F> {
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

    pub fn levels(&self) -> &[Vec<Arc<TableHandle<F>>>] {
        &self.levels
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
                if let Some(found) = t.table.get(key, hash, snapshot).await? {
                    return Ok(Some(found));
                }
            }
        }
        for level in &self.levels[1..] {
            let i = level.partition_point(|t| t.meta.largest.as_slice() < key);
            if let Some(t) = level.get(i).filter(|t| covers(&t.meta, key)) {
                if let Some(found) = t.table.get(key, hash, snapshot).await? {
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
