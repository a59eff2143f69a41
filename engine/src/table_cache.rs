//! The table cache: open SSTables by number, at most `max_open_tables` of them, and the list
//! of tables waiting to be deleted.
//!
//! An open table costs a file descriptor plus its index and bloom filter in memory, so the
//! cache bounds both. A table evicted from the cache is reopened (footer, index and filter
//! read and verified again) the next time a reader needs it. Readers that hold a table
//! (`Arc`) keep it open past eviction, so the bound is `max_open_tables` plus the tables of
//! in-flight scans and compactions.
//!
//! Deleting: a compaction marks the tables it replaced obsolete once the manifest edit that
//! removes them is durable. Each table's last [`crate::version::TableHandle`] (held by the
//! versions that list it, and so by every scan or read using such a version) puts the table
//! on the obsolete list when it is dropped, and [`TableCache::remove_obsolete`] (run by the
//! background task) deletes the files. A crash before that leaves files no manifest lists,
//! which the next open deletes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::cache::BlockCache;
use crate::error::IoContext;
use crate::fs::{FileSystem, numbered_path};
use crate::manifest::TableMeta;
use crate::sstable::Table;
use crate::{Error, Result};

/// File name extension of SSTables.
pub const TABLE_EXT: &str = "sst";

pub struct TableCache<F: FileSystem> {
    fs: Arc<F>,
    dir: PathBuf,
    blocks: Arc<BlockCache>,
    open: quick_cache::sync::Cache<u64, Arc<Table<F::File>>>,
    max_open: usize,
    /// Tables no version lists any more, to delete.
    obsolete: Mutex<Vec<u64>>,
    opens: AtomicU64,
    removed: AtomicU64,
}

impl<F: FileSystem> TableCache<F> {
    pub fn new(fs: Arc<F>, dir: &Path, blocks: Arc<BlockCache>, max_open: usize) -> Self {
        let max_open = max_open.max(1);
        TableCache {
            fs,
            dir: dir.to_path_buf(),
            blocks,
            open: quick_cache::sync::Cache::new(max_open),
            max_open,
            obsolete: Mutex::new(Vec::new()),
            opens: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        }
    }

    pub fn path(&self, number: u64) -> PathBuf {
        numbered_path(&self.dir, number, TABLE_EXT)
    }

    /// The open table `meta` describes, opening (and verifying) it when it is not cached.
    pub async fn get(&self, meta: &TableMeta) -> Result<Arc<Table<F::File>>> {
        if let Some(table) = self.open.get(&meta.number) {
            return Ok(table);
        }
        let path = self.path(meta.number);
        let file = self.fs.open(&path).await.at(&path)?;
        let table = Table::open(file, meta.number, Arc::clone(&self.blocks)).await?;
        if table.properties().file_size != meta.file_size {
            return Err(Error::corruption(
                &path,
                0,
                format!(
                    "table is {} bytes, the manifest says {}",
                    table.properties().file_size,
                    meta.file_size
                ),
            ));
        }
        self.opens.fetch_add(1, Ordering::Relaxed);
        let table = Arc::new(table);
        self.open.insert(meta.number, Arc::clone(&table));
        Ok(table)
    }

    /// Tables open in the cache now.
    pub fn open_tables(&self) -> usize {
        self.open.len()
    }

    pub fn max_open_tables(&self) -> usize {
        self.max_open
    }

    /// Times a table was opened: the first time, and again after each eviction.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Index and filter bytes of the cached tables.
    pub fn meta_memory_bytes(&self) -> u64 {
        self.open.iter().map(|(_, t)| t.meta_memory_bytes()).sum()
    }

    /// Puts `number` on the obsolete list: no version lists it and its removal is durable.
    pub(crate) fn bury(&self, number: u64) {
        self.obsolete.lock().push(number);
    }

    /// Tables waiting on the obsolete list.
    pub fn obsolete_tables(&self) -> usize {
        self.obsolete.lock().len()
    }

    /// Obsolete tables deleted so far.
    pub fn removed_tables(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }

    /// Deletes the obsolete tables' files and forgets their cached blocks. A file that cannot
    /// be deleted is left for the next open, which deletes every table the manifest does not
    /// list; the first such error is returned.
    pub async fn remove_obsolete(&self) -> Result<usize> {
        let numbers = std::mem::take(&mut *self.obsolete.lock());
        let mut first_error = None;
        for &number in &numbers {
            self.open.remove(&number);
            self.blocks.evict_table(number);
            let path = self.path(number);
            match self.fs.remove(&path).await {
                Ok(()) => {
                    self.removed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "deleting an obsolete table failed");
                    first_error.get_or_insert(Error::io(&path, e));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(numbers.len()),
        }
    }
}
