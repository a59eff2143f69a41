//! Iteration over every entry of a table in table order.

use std::sync::Arc;

use super::block::{Block, Cursor};
use super::table::Table;
use crate::Result;
use crate::fs::File;
use crate::types::{Entry, SeqNo};

/// Walks a table's entries; holds the table alive.
pub struct TableIter<F: File> {
    table: Arc<Table<F>>,
    /// Index of the block `block` holds, or of the next block to load.
    block_idx: usize,
    block: Option<Arc<Block>>,
    /// Position within `block`.
    cursor: Cursor,
    /// Whether blocks read from disk go into the block cache.
    fill_cache: bool,
}

impl<F: File> TableIter<F> {
    /// Positioned before the first entry.
    pub fn new(table: Arc<Table<F>>) -> Self {
        TableIter {
            table,
            block_idx: 0,
            block: None,
            cursor: Cursor::default(),
            fill_cache: true,
        }
    }

    /// Like [`TableIter::new`], but blocks read from disk bypass the block cache: for a
    /// compaction, which reads every block once.
    pub fn without_cache_fill(table: Arc<Table<F>>) -> Self {
        TableIter {
            fill_cache: false,
            ..TableIter::new(table)
        }
    }

    /// Positions at the first entry whose user key >= key (all versions of it follow).
    pub async fn seek(&mut self, key: &[u8]) -> Result<()> {
        let index = self.table.index();
        // Blocks whose last key is below `key` hold only smaller keys.
        let i = index.partition_point(|e| e.last_key.as_slice() < key);
        self.block_idx = i;
        self.block = None;
        if i < index.len() {
            let block = self.table.block_with(i, self.fill_cache).await?;
            self.cursor = block
                .seek(key, SeqNo::MAX)
                .map_err(|m| m.at(self.table.path(), index[i].offset))?;
            self.block = Some(block);
        }
        Ok(())
    }

    pub async fn next(&mut self) -> Result<Option<(Vec<u8>, SeqNo, Entry)>> {
        loop {
            let block = match &self.block {
                Some(block) => block,
                None => {
                    if self.block_idx >= self.table.index().len() {
                        return Ok(None);
                    }
                    self.cursor.rewind();
                    let block = self
                        .table
                        .block_with(self.block_idx, self.fill_cache)
                        .await?;
                    self.block.insert(block)
                }
            };
            let offset = self.table.index()[self.block_idx].offset;
            let found = block
                .next(&mut self.cursor)
                .map_err(|m| m.at(self.table.path(), offset))?;
            if let Some(e) = found {
                return Ok(Some((e.key.to_vec(), e.seq, e.to_entry())));
            }
            self.block = None;
            self.block_idx += 1;
        }
    }
}
