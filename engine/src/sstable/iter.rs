//! Iteration over every entry of a table in table order.
//!
//! An iterator reads ahead: a block that is not cached comes from disk with the blocks after
//! it, in one read whose size doubles from one block up to [`READAHEAD_BYTES_MAX`] while the
//! iterator moves on in order (a seek starts again from one block, so a short scan reads
//! little). O_DIRECT files get no readahead from the kernel: with one small read per block, a
//! scan or compaction on the node's DMA files would wait on the disk for every block.

use std::sync::Arc;

use super::block::{Block, Cursor};
use super::table::{Table, stored_len};
use crate::Result;
use crate::fs::File;
use crate::types::{Entry, SeqNo};

/// Largest read an iterator makes: large enough to stream at disk speed, small enough that
/// a compaction, which holds one window per input table, needs 10 MiB for 40 input tables.
pub const READAHEAD_BYTES_MAX: u64 = 256 << 10;

/// Stored blocks read ahead of the iterator.
#[derive(Default)]
struct Window {
    /// File offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
    /// Size of the next read (at least one block).
    next_len: u64,
}

/// Walks a table's entries; holds the table alive.
pub struct TableIter<F: File> {
    table: Arc<Table<F>>,
    /// Index of the block `block` holds, or of the next block to load.
    block_idx: usize,
    block: Option<Arc<Block>>,
    /// Position within `block`.
    cursor: Cursor,
    /// Whether blocks read from disk go into the block cache: false for a compaction.
    fill_cache: bool,
    window: Window,
}

impl<F: File> TableIter<F> {
    /// Positioned before the first entry.
    pub fn new(table: Arc<Table<F>>) -> Self {
        Self::with_cache_fill(table, true)
    }

    /// Like [`TableIter::new`], but blocks read from disk bypass the block cache and reads
    /// are as large as allowed from the start: for a compaction, which reads every block once.
    pub fn without_cache_fill(table: Arc<Table<F>>) -> Self {
        Self::with_cache_fill(table, false)
    }

    fn with_cache_fill(table: Arc<Table<F>>, fill_cache: bool) -> Self {
        let mut iter = TableIter {
            table,
            block_idx: 0,
            block: None,
            cursor: Cursor::default(),
            fill_cache,
            window: Window::default(),
        };
        iter.window.next_len = iter.first_read();
        iter
    }

    /// `window.next_len` at the start and after a seek: one block for a reader, which may
    /// want a few entries only; the most for a compaction, which reads every block.
    fn first_read(&self) -> u64 {
        if self.fill_cache {
            0
        } else {
            READAHEAD_BYTES_MAX
        }
    }

    /// Positions at the first entry whose user key >= key (all versions of it follow).
    pub async fn seek(&mut self, key: &[u8]) -> Result<()> {
        let index = self.table.index();
        // Blocks whose last key is below `key` hold only smaller keys.
        let i = index.partition_point(|e| e.last_key.as_slice() < key);
        let (blocks, offset) = (index.len(), index.get(i).map_or(0, |e| e.offset));
        self.block_idx = i;
        self.block = None;
        self.window.next_len = self.first_read();
        if i < blocks {
            let block = self.load(i).await?;
            self.cursor = block
                .seek(key, SeqNo::MAX)
                .map_err(|m| m.at(self.table.path(), offset))?;
            self.block = Some(block);
        }
        Ok(())
    }

    /// The next version in table order.
    pub async fn next(&mut self) -> Result<Option<(Vec<u8>, SeqNo, Entry)>> {
        loop {
            let block = match &self.block {
                Some(block) => block,
                None => {
                    if self.block_idx >= self.table.index().len() {
                        // A scan keeps every table's iterator until it ends: an exhausted one
                        // holds no window.
                        self.window.bytes = Vec::new();
                        return Ok(None);
                    }
                    self.cursor.rewind();
                    let block = self.load(self.block_idx).await?;
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

    /// Block `i`: from the cache, else from the window, else from a new window read at it.
    async fn load(&mut self, i: usize) -> Result<Arc<Block>> {
        if let Some(block) = self.table.cached_block(i) {
            return Ok(block);
        }
        let index = self.table.index();
        let ie = &index[i];
        let len = stored_len(ie);
        let w = &mut self.window;
        let window_end = w.start + w.bytes.len() as u64;
        if !(w.start <= ie.offset && ie.offset + len <= window_end) {
            // Whole blocks from `i` on, as many as fit in the read (at least block `i`);
            // blocks are contiguous (the index decoder checks it).
            let want = w.next_len.max(len);
            let end = index[i..]
                .iter()
                .map(|e| e.offset + stored_len(e))
                .take_while(|&end| end - ie.offset <= want)
                .last()
                .unwrap_or(ie.offset + len);
            w.bytes = self.table.read_stored(ie.offset, end - ie.offset).await?;
            w.start = ie.offset;
            w.next_len = (want * 2).min(READAHEAD_BYTES_MAX);
        }
        let from = (ie.offset - w.start) as usize;
        let stored = w.bytes[from..from + len as usize].to_vec();
        self.table.decode_block(i, stored, self.fill_cache)
    }
}
