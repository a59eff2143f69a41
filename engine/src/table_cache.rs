//! The table cache: open SSTables by number, at most `max_open_tables` of them and, under a
//! memory budget, at most its table-metadata share of index and bloom bytes; and the list of
//! tables waiting to be deleted.
//!
//! An open table costs a file descriptor plus its index and bloom filter in memory, so the
//! cache bounds both. Both bounds are one weight: a table weighs its metadata bytes, but at
//! least `limit / max_open_tables`, so no more than `max_open_tables` fit and their metadata
//! stays within the limit (without a budget each table weighs one, out of
//! `max_open_tables`). A table evicted from the cache is reopened (footer, index and filter
//! read and verified again) the next time a reader needs it. Readers that hold a table
//! (`Arc`) keep it open past eviction, so the bound is `max_open_tables` plus the tables of
//! in-flight scans and compactions. Under a budget the block cache's capacity follows the
//! metadata in use (see [`crate::budget`]).
//!
//! Deleting: a compaction marks the tables it replaced obsolete once the manifest edit that
//! removes them is durable. Each table's last [`crate::version::TableHandle`] (held by the
//! versions that list it, and so by every scan or read using such a version) puts the table
//! on the obsolete list when it is dropped, and [`TableCache::remove_obsolete`] (run by the
//! compaction worker) deletes the files. A crash before that leaves files no manifest lists,
//! which the next open deletes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::budget::MemoryPlan;
use crate::cache::BlockCache;
use crate::error::IoContext;
use crate::filename;
use crate::fs::FileSystem;
use crate::manifest::TableMeta;
use crate::sstable::Table;
use crate::{Error, Result};

/// Weighs an open table for the cache: see the module comment.
#[derive(Clone)]
struct TableWeighter {
    /// 0 without a metadata limit: every table weighs 1.
    min_weight: u64,
}

impl<T: crate::fs::File> quick_cache::Weighter<u64, Arc<Table<T>>> for TableWeighter {
    fn weight(&self, _number: &u64, table: &Arc<Table<T>>) -> u64 {
        if self.min_weight == 0 {
            1
        } else {
            table.meta_memory_bytes().max(self.min_weight)
        }
    }
}

type OpenTables<T> = quick_cache::sync::Cache<
    u64,
    Arc<Table<T>>,
    TableWeighter,
    quick_cache::DefaultHashBuilder,
    quick_cache::sync::DefaultLifecycle<u64, Arc<Table<T>>>,
>;

/// Open tables by number, bounded; and the tables waiting to be deleted.
pub struct TableCache<F: FileSystem> {
    fs: Arc<F>,
    dir: PathBuf,
    blocks: Arc<BlockCache>,
    open: OpenTables<F::File>,
    max_open: usize,
    plan: MemoryPlan,
    /// Tables no version lists any more, to delete.
    obsolete: Mutex<Vec<u64>>,
    opens: AtomicU64,
    removed: AtomicU64,
}

impl<F: FileSystem> TableCache<F> {
    /// A cache of tables in `dir`, their blocks in `blocks`, at most `max_open` open.
    pub fn new(
        fs: Arc<F>,
        dir: &Path,
        blocks: Arc<BlockCache>,
        max_open: usize,
        plan: MemoryPlan,
    ) -> Self {
        let max_open = max_open.max(1);
        let (capacity, weighter) = match plan.table_meta_limit_bytes {
            Some(limit) => {
                let min_weight = (limit / max_open as u64).max(1);
                (min_weight * max_open as u64, TableWeighter { min_weight })
            }
            None => (max_open as u64, TableWeighter { min_weight: 0 }),
        };
        // One shard: a shard's capacity is its share of the total, and a table heavier than
        // that could never be cached. Opens are rare enough that one lock does not matter.
        let options = quick_cache::OptionsBuilder::new()
            .shards(1)
            .estimated_items_capacity(max_open)
            .weight_capacity(capacity)
            .build();
        #[expect(
            clippy::unwrap_used,
            reason = "build fails only when a capacity is unset; both are set above"
        )]
        let options = options.unwrap();
        TableCache {
            fs,
            dir: dir.to_path_buf(),
            blocks,
            open: quick_cache::sync::Cache::with_options(
                options,
                weighter,
                Default::default(),
                Default::default(),
            ),
            max_open,
            plan,
            obsolete: Mutex::new(Vec::new()),
            opens: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        }
    }

    /// The path of table `number`.
    pub fn path(&self, number: u64) -> PathBuf {
        filename::table(&self.dir, number)
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
        self.resize_block_cache();
        Ok(table)
    }

    /// Gives the block cache what the open tables' metadata leaves of their shared budget.
    fn resize_block_cache(&self) {
        if self.plan.read_limit_bytes.is_some() {
            let capacity = self.plan.block_cache_capacity(self.meta_memory_bytes());
            self.blocks.set_capacity(capacity);
        }
    }

    /// Tables open in the cache now.
    pub fn open_tables(&self) -> usize {
        self.open.len()
    }

    /// Most tables kept open.
    pub fn max_open_tables(&self) -> usize {
        self.max_open
    }

    /// Times a table was opened: the first time, and again after each eviction.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Most index and filter bytes of the cached tables; `None`: bounded only by count.
    pub fn meta_memory_limit(&self) -> Option<u64> {
        self.plan.table_meta_limit_bytes
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
        if !numbers.is_empty() {
            self.resize_block_cache();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(numbers.len()),
        }
    }
}
