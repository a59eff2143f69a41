//! The database: one engine instance (one shard's store).
//!
//! Write: under the state lock a batch gets its sequence numbers, its commit-log record and
//! its memtable entries, in that order, so log order, sequence order and memtable contents
//! agree. The lock is released before waiting for the log to be durable (group commit), and
//! the batch becomes visible to readers only once it is durable: readers read at
//! `visible_seq`, which only moves past sequence numbers whose records are synced.
//!
//! Read: memtable → frozen memtables (newest first) → SSTables, at a sequence number.
//!
//! Flush: a full memtable is frozen and a new one started; a frozen memtable is written to an
//! L0 SSTable, which is made durable, then recorded in the manifest together with the first
//! log record still needed; then the log before it is released.
//!
//! Compaction (see [`crate::compaction`]): leveled, one at a time. Its outputs are durable
//! before the manifest edit that swaps them for the inputs, and the inputs are deleted only
//! after that edit is durable and no reader holds them (see [`crate::table_cache`]).
//!
//! Flushes and compactions are done by two background workers the host runs, apart so that a
//! merge never holds a flush back ([`Db::background`] runs both in one future;
//! [`Db::flush_worker`] and [`Db::compaction_worker`] are each on its own). When they fall
//! behind, writers slow down smoothly: past `l0_slowdown_trigger` L0 tables, or past
//! `soft_pending_compaction_bytes` of compaction backlog, each write sleeps a little, longer
//! the further past; at `l0_stop_trigger` or `hard_pending_compaction_bytes` (or with a full
//! memtable and `max_immutable_memtables` frozen ones) the writer does the compaction (or
//! flush) itself before writing, so writes keep making progress even when no background
//! worker runs.
//!
//! Memory: [`crate::budget`] turns the options into per-component bounds, which
//! [`Db::stats`] reports next to what each component holds.

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use event_listener::Event;
use parking_lot::Mutex;

use crate::batch::{self, WriteBatch};
use crate::budget::MemoryPlan;
use crate::cache::BlockCache;
use crate::compaction::{self, Choice, Job, OutputSpec, Retention, Shape, picker};
use crate::error::IoContext;
use crate::fs::FileSystem;
use crate::iter::{MergeIter, ScanIter, Source};
use crate::log::{Log, LogOptions, Preallocation, ReplayFrom};
use crate::manifest::{Edit, LEVELS, Manifest, ManifestState, TableMeta};
use crate::memtable::{Memtable, MemtableIter};
use crate::options::{Durability, Options};
use crate::snapshot::{SnapshotGuard, SnapshotList};
use crate::sstable::{TableBuilder, TableIter, TableOptions, key_hash};
use crate::stats::{Counters, LevelStats, MemoryStats, Stats, write_amplification};
use crate::table_cache::{TABLE_EXT, TableCache};
use crate::types::{Entry, SeqNo};
use crate::version::{TableHandle, Version};
use crate::{Error, Result};

/// Longest a write is delayed, reached just below `l0_stop_trigger` or the hard pending
/// compaction limit. Long enough to hand a 2-core machine to compaction, short enough that a
/// delayed client sees latency, not an outage.
const WRITE_DELAY_MAX: Duration = Duration::from_millis(2);

/// Shortest backlog delay: the timer's resolution is coarser anyway, and a delay must never
/// round to nothing however far the hard limit is.
const PENDING_DELAY_MIN: Duration = Duration::from_micros(10);

/// An open database. Cheap to clone: clones share one instance.
pub struct Db<F: FileSystem> {
    inner: Arc<Inner<F>>,
}

impl<F: FileSystem> Clone for Db<F> {
    fn clone(&self) -> Self {
        Db {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<F: FileSystem> {
    dir: PathBuf,
    fs: Arc<F>,
    options: Options,
    memory: MemoryPlan,
    shape: Shape,
    log: Log<F>,
    manifest: Manifest<F>,
    cache: Arc<BlockCache>,
    tables: Arc<TableCache<F>>,
    state: Mutex<State<F>>,
    /// Readers read at this sequence number: every write at or below it is durable (or, with
    /// `Durability::Buffered`, acknowledged).
    visible_seq: AtomicU64,
    snapshots: Arc<SnapshotList>,
    /// Wakes the background worker: a memtable was frozen or flushed, or the database is
    /// closing.
    work: Event,
    /// Held by whoever flushes frozen memtables, so they go out one at a time, oldest first.
    flush_lock: async_lock::Mutex<()>,
    /// Held by the one compaction running, so two never pick the same tables.
    compaction_lock: async_lock::Mutex<()>,
    /// Held from building a manifest edit until it is installed, so edits apply in order.
    manifest_lock: async_lock::Mutex<()>,
    closed: AtomicBool,
    counters: Counters,
}

struct State<F: FileSystem> {
    current: Arc<SuperVersion<F>>,
    manifest: ManifestState,
    next_file: u64,
    last_seq: SeqNo,
    /// Reused to encode batches without allocating.
    payload: Vec<u8>,
    /// Per level, the largest key of the last table compacted out of it: compaction walks
    /// each level's key space round robin.
    cursors: Vec<Vec<u8>>,
}

/// Everything a reader searches, swapped as a whole when it changes.
struct SuperVersion<F: FileSystem> {
    mem: Arc<Memtable>,
    /// Frozen memtables, oldest first.
    imm: Vec<Arc<Memtable>>,
    version: Arc<Version<F>>,
    /// What compaction has yet to move in `version` (computed once per version: writers
    /// check it on every write).
    pending_compaction_bytes: u64,
}

impl<F: FileSystem> SuperVersion<F> {
    fn new(
        mem: Arc<Memtable>,
        imm: Vec<Arc<Memtable>>,
        version: Arc<Version<F>>,
        shape: &Shape,
    ) -> SuperVersion<F> {
        let pending_compaction_bytes = shape.pending_bytes(&version.meta_levels());
        SuperVersion {
            mem,
            imm,
            version,
            pending_compaction_bytes,
        }
    }
}

/// A consistent view of the database at one sequence number.
pub struct Snapshot<F: FileSystem> {
    db: Db<F>,
    guard: Arc<SnapshotGuard>,
}

impl<F: FileSystem> Snapshot<F> {
    pub fn seq(&self) -> SeqNo {
        self.guard.seq()
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_entry(key).await?.map(|e| e.value))
    }

    pub async fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.db.live_entry_at(key, self.seq()).await
    }

    pub async fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Result<ScanIter<F>> {
        let guard = self.db.inner.snapshots.register(self.seq());
        self.db.scan_at(range, guard).await
    }
}

impl<F: FileSystem> Inner<F> {
    fn visible(&self) -> SeqNo {
        self.visible_seq.load(Ordering::Acquire)
    }
}

impl<F: FileSystem> Db<F> {
    /// Opens the database in `dir`, creating it if needed, and recovers everything that was
    /// durable: the tables the manifest lists, then the commit log after them.
    pub async fn open(fs: F, dir: impl AsRef<Path>, options: Options) -> Result<Db<F>> {
        let fs = Arc::new(fs);
        // Absolute, because glommio cannot sync a parent named by an empty or relative path
        // (EBADF), and a later working-directory change must not move the database.
        let dir = std::path::absolute(dir.as_ref()).at(dir.as_ref())?;
        fs.create_dir_all(&dir).await.at(&dir)?;
        // A directory created just now is lost in a crash until its parent is synced, and
        // with it every write acknowledged inside.
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs.sync_dir(&parent).await.at(&parent)?;
        let memory = MemoryPlan::of(&options);
        let options = memory.apply(options);
        let shape = Shape::from_options(&options);
        let (manifest, manifest_state) = Manifest::open(Arc::clone(&fs), &dir).await?;
        let cache = Arc::new(BlockCache::new(options.block_cache_bytes));
        let tables = Arc::new(TableCache::new(
            Arc::clone(&fs),
            &dir,
            Arc::clone(&cache),
            options.max_open_tables,
            memory,
        ));

        let mut handles = Vec::with_capacity(manifest_state.tables.len());
        for meta in manifest_state.tables.values() {
            // Opening verifies footer, index and filter now rather than at the first read.
            tables.get(meta).await?;
            handles.push(TableHandle::new(meta.clone(), Arc::clone(&tables)));
        }

        // Replay the log into memtables, freezing whenever one fills up.
        let log_dir = dir.join("log");
        let mut memtables = vec![Memtable::new(
            manifest_state.log_start,
            options.memtable_bytes,
        )];
        let mut last_seq = manifest_state.last_seq;
        let log = Log::open(
            Arc::clone(&fs),
            log_dir.clone(),
            LogOptions {
                segment_bytes: options.log_segment_bytes,
                preallocation: match options.durability {
                    Durability::Sync => Preallocation::ZeroFill,
                    Durability::Buffered => Preallocation::Sparse,
                },
            },
            ReplayFrom::Record(manifest_state.log_start),
            |record_no, payload| {
                let batch = batch::decode(payload, &log_dir, record_no)?;
                if batch.first_seq <= last_seq && !batch.ops.is_empty() {
                    return Err(Error::corruption(
                        &log_dir,
                        record_no,
                        format!("sequence {} after {last_seq}", batch.first_seq),
                    ));
                }
                let full = memtables
                    .last()
                    .is_some_and(|m| m.approximate_bytes() >= options.memtable_bytes);
                if full {
                    memtables.push(Memtable::new(record_no, options.memtable_bytes));
                }
                let mem = memtables.last().ok_or_else(|| {
                    Error::corruption(&log_dir, record_no, "no memtable to replay into")
                })?;
                for (i, (key, entry)) in batch.ops.into_iter().enumerate() {
                    mem.insert(&key, batch.first_seq + i as u64, &entry);
                    last_seq = batch.first_seq + i as u64;
                }
                Ok(())
            },
        )
        .await?;
        // Only once the log agrees with the manifest: a manifest that lost an edit must fail
        // open without deleting the tables that edit recorded.
        remove_orphan_tables(&fs, &dir, &manifest_state).await?;

        let mut memtables: Vec<Arc<Memtable>> = memtables.into_iter().map(Arc::new).collect();
        let mem = memtables
            .pop()
            .unwrap_or_else(|| Arc::new(Memtable::new(log.next_record(), options.memtable_bytes)));
        let current = Arc::new(SuperVersion::new(
            mem,
            memtables,
            Arc::new(Version::empty().apply(handles, &[])),
            &shape,
        ));
        let next_file = manifest_state.next_file;
        let db = Db {
            inner: Arc::new(Inner {
                dir,
                fs,
                memory,
                shape,
                log,
                manifest,
                cache,
                tables,
                state: Mutex::new(State {
                    current,
                    manifest: manifest_state,
                    next_file,
                    last_seq,
                    payload: Vec::new(),
                    cursors: vec![Vec::new(); LEVELS as usize],
                }),
                visible_seq: AtomicU64::new(last_seq),
                snapshots: Arc::new(SnapshotList::default()),
                work: Event::new(),
                flush_lock: async_lock::Mutex::new(()),
                compaction_lock: async_lock::Mutex::new(()),
                manifest_lock: async_lock::Mutex::new(()),
                closed: AtomicBool::new(false),
                counters: Counters::default(),
                options,
            }),
        };
        Ok(db)
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(batch).await
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch).await
    }

    /// Applies `batch` atomically. With [`Durability::Sync`] it returns once the batch is on
    /// disk; concurrent writers share one fdatasync.
    pub async fn write(&self, batch: WriteBatch) -> Result<()> {
        self.check_open()?;
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.make_room().await?;
        let inner = &*self.inner;
        let (record, last_seq) = {
            let mut st = inner.state.lock();
            let mem = Arc::clone(&st.current.mem);
            if batch.len() > 1 {
                // Overwrites find their key's node through the index: start those cache
                // misses for the whole batch now, to land while the batch is encoded.
                let keys: Vec<&[u8]> = batch.ops().iter().map(|(k, _)| k.as_slice()).collect();
                mem.prefetch(&keys);
            }
            let first_seq = st.last_seq + 1;
            let mut payload = std::mem::take(&mut st.payload);
            payload.clear();
            batch.encode(first_seq, &mut payload);
            let appended = inner.log.append(&payload);
            st.payload = payload;
            let record = appended?;
            let count = batch.len() as u64;
            let mut user_bytes = 0;
            for (i, (key, entry)) in batch.ops().iter().enumerate() {
                user_bytes += (key.len() + entry.value.len()) as u64;
                mem.insert(key, first_seq + i as u64, entry);
            }
            Counters::add(&inner.counters.user_bytes, user_bytes);
            st.last_seq += count;
            (record, st.last_seq)
        };
        match inner.options.durability {
            Durability::Sync => inner.log.sync(record).await?,
            Durability::Buffered => inner.log.write_if_full().await?,
        }
        // Every record up to ours is durable, and every sequence number up to `last_seq`
        // belongs to such a record: publish them.
        inner.visible_seq.fetch_max(last_seq, Ordering::AcqRel);
        inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

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

    /// Makes every write so far durable (for `Durability::Buffered`).
    pub async fn sync(&self) -> Result<()> {
        let next = self.inner.log.next_record();
        if next > 0 {
            self.inner.log.sync(next - 1).await?;
        }
        let last = self.inner.state.lock().last_seq;
        self.inner.visible_seq.fetch_max(last, Ordering::AcqRel);
        Ok(())
    }

    /// Writes the memtable and every frozen memtable to SSTables.
    pub async fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.freeze();
        self.flush_frozen().await
    }

    /// Runs compactions until every level is within its target, then deletes the replaced
    /// tables no reader holds. The background worker does this on its own; this is for
    /// tools and tests.
    pub async fn compact(&self) -> Result<()> {
        self.check_open()?;
        while self.compact_step().await? {}
        self.inner.tables.remove_obsolete().await?;
        Ok(())
    }

    /// The host runs this future (e.g. on a low-priority task queue) for the database's
    /// lifetime: the flush worker and the compaction worker together. A host with threads to
    /// spare runs the two on threads of their own instead (as the blocking API does).
    pub fn background(&self) -> impl std::future::Future<Output = ()> + 'static {
        let (flushes, compactions) = (self.flush_worker(), self.compaction_worker());
        async move {
            futures_lite::future::zip(flushes, compactions).await;
        }
    }

    /// Flushes frozen memtables as they appear, until the database closes. Apart from the
    /// compaction worker, as RocksDB keeps flush and compaction threads apart: a merge runs
    /// for seconds, and a flush waiting behind it left writers to find the frozen memtables
    /// at their limit and flush them themselves, stopped (a quarter of a 10M-key overwrite's
    /// time, measured).
    pub fn flush_worker(&self) -> impl std::future::Future<Output = ()> + 'static {
        // Writers that need a failed flush retry it themselves and see the error.
        self.worker("flush", |db| async move {
            if db.current().imm.is_empty() {
                return Ok(false);
            }
            db.flush_frozen().await?;
            Ok(true)
        })
    }

    /// Runs compactions while a level is due, and deletes replaced tables, until the
    /// database closes.
    pub fn compaction_worker(&self) -> impl std::future::Future<Output = ()> + 'static {
        self.worker("compaction", |db| async move {
            // A file that cannot be deleted now is deleted at the next open.
            let _ = db.inner.tables.remove_obsolete().await;
            db.compact_step().await
        })
    }

    /// Runs `step` until the database closes: again at once after it did some work, after
    /// the next wake-up when it found none or failed (the failure is logged).
    fn worker<S, Step>(
        &self,
        what: &'static str,
        step: S,
    ) -> impl std::future::Future<Output = ()> + 'static
    where
        S: Fn(Db<F>) -> Step + 'static,
        Step: std::future::Future<Output = Result<bool>> + 'static,
    {
        let db = self.clone();
        async move {
            loop {
                let listener = db.inner.work.listen();
                if db.inner.closed.load(Ordering::Acquire) {
                    return;
                }
                match step(db.clone()).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(dir = %db.inner.dir.display(), error = %e, "{what} failed")
                    }
                }
                listener.await;
            }
        }
    }

    /// Stops the database: makes buffered writes durable and ends the background workers (a
    /// compaction in progress stops at its next yield; its outputs are deleted). Unflushed
    /// memtables are recovered from the log on the next open.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.work.notify(usize::MAX);
        if self.inner.options.durability == Durability::Buffered {
            self.sync().await?;
        }
        // Best effort: what is left is deleted at the next open.
        let _ = self.inner.tables.remove_obsolete().await;
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let c = &inner.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let sv = self.current();
        let last_seq = inner.state.lock().last_seq;
        let meta_levels = sv.version.meta_levels();
        let levels: Vec<LevelStats> = (0..LEVELS)
            .map(|l| {
                let tables = &meta_levels[l as usize];
                LevelStats {
                    tables: tables.len() as u64,
                    bytes: picker::level_bytes(tables),
                    target_bytes: if l == 0 {
                        0
                    } else {
                        inner.shape.target_bytes(l)
                    },
                    score: inner.shape.score(&meta_levels, l),
                }
            })
            .collect();
        let cache = inner.cache.stats();
        let memtable_bytes = (sv.mem.approximate_bytes()
            + sv.imm.iter().map(|m| m.approximate_bytes()).sum::<usize>())
            as u64;
        let memtable_memory =
            (sv.mem.memory_bytes() + sv.imm.iter().map(|m| m.memory_bytes()).sum::<usize>()) as u64;
        let table_meta = inner.tables.meta_memory_bytes();
        let flush_bytes = get(&c.flush_bytes);
        let compaction_bytes_written = get(&c.compaction_bytes_written);
        let user_bytes_written = get(&c.user_bytes);
        Stats {
            writes: get(&c.writes),
            reads: get(&c.reads),
            user_bytes_written,
            flushes: get(&c.flushes),
            flush_bytes,
            compactions: get(&c.compactions),
            trivial_moves: get(&c.trivial_moves),
            compaction_bytes_read: get(&c.compaction_bytes_read),
            compaction_bytes_written,
            compaction_micros: get(&c.compaction_micros),
            write_amplification: write_amplification(
                flush_bytes + compaction_bytes_written,
                user_bytes_written,
            ),
            pending_compaction_bytes: sv.pending_compaction_bytes,
            versions_shadowed: get(&c.versions_shadowed),
            tombstones_dropped: get(&c.tombstones_dropped),
            tombstones_kept_by_policy: get(&c.tombstones_kept_by_policy),
            expired_dropped: get(&c.expired_dropped),
            stall_micros: get(&c.stall_micros),
            delayed_writes: get(&c.delayed_writes),
            stopped_writes: get(&c.stopped_writes),
            memtable_bytes,
            immutable_memtables: sv.imm.len() as u64,
            levels,
            log_bytes: inner.log.disk_bytes(),
            log_syncs: inner.log.data_syncs(),
            last_seq,
            visible_seq: inner.visible(),
            cache,
            open_tables: inner.tables.open_tables() as u64,
            max_open_tables: inner.tables.max_open_tables() as u64,
            table_opens: inner.tables.opens(),
            obsolete_tables: inner.tables.obsolete_tables() as u64,
            memory: MemoryStats {
                budget: inner.memory.budget_bytes,
                memtables: memtable_memory,
                memtables_limit: inner.memory.memtables_limit_bytes,
                block_cache: cache.usage_bytes,
                block_cache_limit: cache.capacity_bytes,
                table_meta,
                table_meta_limit: inner.memory.table_meta_limit_bytes,
                total: memtable_memory + cache.usage_bytes + table_meta,
            },
        }
    }

    /// The tables of the current version, L0 newest first, then each level in key order.
    pub fn tables(&self) -> Vec<TableMeta> {
        self.current()
            .version
            .tables()
            .map(|t| t.meta.clone())
            .collect()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn current(&self) -> Arc<SuperVersion<F>> {
        Arc::clone(&self.inner.state.lock().current)
    }

    /// Freezes the memtable when it is full. When it is full and too many frozen memtables
    /// wait, flushes (or waits for the flush in progress); when L0 or the compaction backlog is at its stop
    /// limit, compacts (or waits for the compaction in progress); past a slowdown limit,
    /// sleeps a little.
    async fn make_room(&self) -> Result<()> {
        let inner = &*self.inner;
        let o = &inner.options;
        let backlog_limit = o.max_immutable_memtables.max(1);
        let (slowdown, stop) = l0_limits(o);
        let (soft, hard) = pending_limits(o);
        let mut stalled: Option<Instant> = None;
        let (l0, pending) = loop {
            let (full, backlog, l0, pending) = {
                let st = inner.state.lock();
                (
                    st.current.mem.approximate_bytes() >= o.memtable_bytes,
                    st.current.imm.len(),
                    st.current.version.levels()[0].len(),
                    st.current.pending_compaction_bytes,
                )
            };
            // Only a full memtable with no room to freeze it waits: the frozen ones are
            // flushed in the background while the writers fill the next.
            if full && backlog >= backlog_limit {
                stalled.get_or_insert_with(Instant::now);
                self.flush_frozen().await?;
                continue;
            }
            if l0 >= stop || pending >= hard {
                stalled.get_or_insert_with(Instant::now);
                if self.compact_step().await? {
                    continue;
                }
            }
            if full {
                self.freeze();
            }
            break (l0, pending);
        };
        if stalled.is_some() {
            Counters::add(&inner.counters.stopped_writes, 1);
        }
        let delay = write_delay(l0, slowdown, stop).max(pending_delay(pending, soft, hard));
        if let Some(delay) = delay {
            stalled.get_or_insert_with(Instant::now);
            Counters::add(&inner.counters.delayed_writes, 1);
            o.timer.sleep(delay).await;
        }
        if let Some(start) = stalled {
            Counters::add(
                &inner.counters.stall_micros,
                start.elapsed().as_micros() as u64,
            );
        }
        Ok(())
    }

    /// Starts a new memtable if the current one has data, and wakes the background worker.
    fn freeze(&self) {
        let inner = &*self.inner;
        {
            let mut st = inner.state.lock();
            if st.current.mem.is_empty() {
                return;
            }
            // Under the state lock no record is being appended, so every record from here on
            // goes to the new memtable.
            let mem = Arc::new(Memtable::new(
                inner.log.next_record(),
                inner.options.memtable_bytes,
            ));
            let mut imm = st.current.imm.clone();
            imm.push(Arc::clone(&st.current.mem));
            st.current = Arc::new(SuperVersion {
                mem,
                imm,
                version: Arc::clone(&st.current.version),
                pending_compaction_bytes: st.current.pending_compaction_bytes,
            });
        }
        inner.work.notify(usize::MAX);
    }

    /// Flushes frozen memtables, oldest first, until none is left.
    async fn flush_frozen(&self) -> Result<()> {
        let _flushing = self.inner.flush_lock.lock().await;
        while self.flush_oldest().await? {}
        Ok(())
    }

    /// Writes the oldest frozen memtable to an L0 table and installs it. False when there was
    /// none. The caller holds `flush_lock`.
    async fn flush_oldest(&self) -> Result<bool> {
        let inner = &*self.inner;
        let (imm, log_start, number) = {
            let mut st = inner.state.lock();
            let Some(oldest) = st.current.imm.first() else {
                return Ok(false);
            };
            let oldest = Arc::clone(oldest);
            let log_start = st
                .current
                .imm
                .get(1)
                .map_or(st.current.mem.first_record(), |m| m.first_record());
            let number = st.next_file;
            st.next_file += 1;
            (oldest, log_start, number)
        };
        let handle = if imm.is_empty() {
            None
        } else {
            Some(self.write_table(&imm, number).await?)
        };
        self.install(
            handle.into_iter().collect(),
            Vec::new(),
            Some(log_start),
            Some(&imm),
        )
        .await?;
        inner.work.notify(usize::MAX);
        inner.log.release_before(log_start).await?;
        inner.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Writes a memtable into table `number` and opens it. Versions no reader can see are
    /// left out, by the rules compaction follows (never bottommost: tombstones stay).
    async fn write_table(&self, mem: &Arc<Memtable>, number: u64) -> Result<Arc<TableHandle<F>>> {
        let inner = &*self.inner;
        let path = inner.tables.path(number);
        let (snapshots, horizon) = inner.snapshots.view(|| inner.visible());
        let mut retention = Retention::new(
            snapshots,
            horizon,
            false,
            inner.options.clock.now_ms(),
            Arc::clone(&inner.options.tombstone_policy),
        );
        let written = async {
            let file = inner.fs.create(&path).await.at(&path)?;
            let mut builder = TableBuilder::new(file, self.table_options());
            let it = MemtableIter::new(Arc::clone(mem));
            for (key, seq, entry) in it {
                if let Some(entry) = retention.decide(&key, seq, entry) {
                    builder.add(&key, seq, &entry).await?;
                }
            }
            let props = builder.finish().await?;
            inner.fs.sync_dir(&inner.dir).await.at(&inner.dir)?;
            Ok::<_, Error>(props)
        }
        .await;
        let props = match written {
            Ok(props) => props,
            Err(e) => {
                // Not in the manifest, so never read: remove it now or at the next open.
                let _ = inner.fs.remove(&path).await;
                return Err(e);
            }
        };
        inner
            .counters
            .flush_bytes
            .fetch_add(props.file_size, Ordering::Relaxed);
        inner.counters.add_retention(&retention.stats);
        let meta = TableMeta::from_properties(number, 0, &props);
        // Read back (footer, index, filter verified) before the manifest lists it; this also
        // puts it in the table cache for the reads that follow.
        inner.tables.get(&meta).await?;
        Ok(TableHandle::new(meta, Arc::clone(&inner.tables)))
    }

    /// Records a table-set change in the manifest and, once it is durable, makes it the
    /// current version. Tables it removes (and does not re-add at another level) are marked
    /// obsolete, to be deleted when no reader holds them. `flushed` is the frozen memtable a
    /// flush wrote out, dropped from the read path in the same swap; `log_start` moves the
    /// start of the log still needed.
    async fn install(
        &self,
        added: Vec<Arc<TableHandle<F>>>,
        removed: Vec<u64>,
        log_start: Option<u64>,
        flushed: Option<&Arc<Memtable>>,
    ) -> Result<()> {
        let inner = &*self.inner;
        let _editing = inner.manifest_lock.lock().await;
        let (edit, state_after) = {
            let st = inner.state.lock();
            let mut state_after = st.manifest.clone();
            let edit = Edit::Change {
                added: added.iter().map(|h| h.meta.clone()).collect(),
                removed: removed.clone(),
                log_start: log_start.unwrap_or(state_after.log_start),
                next_file: st.next_file,
                last_seq: state_after.last_seq.max(flushed.map_or(0, |m| m.max_seq())),
            };
            state_after
                .apply(edit.clone())
                .map_err(|what| Error::corruption(inner.manifest.dir(), 0, what))?;
            (edit, state_after)
        };
        inner.manifest.record(&edit, &state_after).await?;
        let mut st = inner.state.lock();
        st.manifest = state_after;
        for t in st.current.version.tables() {
            let moved = added.iter().any(|a| a.meta.number == t.meta.number);
            if removed.contains(&t.meta.number) && !moved {
                t.mark_obsolete();
            }
        }
        let version = st.current.version.apply(added, &removed);
        let imm = match flushed {
            Some(m) => {
                debug_assert!(Arc::ptr_eq(&st.current.imm[0], m));
                st.current.imm[1..].to_vec()
            }
            None => st.current.imm.clone(),
        };
        st.current = Arc::new(SuperVersion::new(
            Arc::clone(&st.current.mem),
            imm,
            Arc::new(version),
            &inner.shape,
        ));
        Ok(())
    }

    /// Runs the most urgent compaction, if one is due; false when none is (or the database
    /// is closing).
    async fn compact_step(&self) -> Result<bool> {
        let inner = &*self.inner;
        let _compacting = inner.compaction_lock.lock().await;
        if inner.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        // The version only: a merge runs for seconds, and the whole SuperVersion would keep
        // its memtables (tens of MiB each, flushed meanwhile) alive until it ends.
        let (choice, version) = {
            let mut st = inner.state.lock();
            let version = Arc::clone(&st.current.version);
            let choice = picker::pick(&version.meta_levels(), &inner.shape, &st.cursors);
            let from = match &choice {
                Some(Choice::Move { tables, .. }) => {
                    tables.last().map(|last| (last.level, last.largest.clone()))
                }
                Some(Choice::Merge(job)) => {
                    picker::key_range(&job.inputs).map(|(_, hi)| (job.level, hi.to_vec()))
                }
                None => None,
            };
            if let Some((level, largest)) = from {
                st.cursors[level as usize] = largest;
            }
            (choice, version)
        };
        match choice {
            None => Ok(false),
            Some(Choice::Move { tables, to }) => {
                let count = tables.len() as u64;
                let numbers = tables.iter().map(|t| t.number).collect();
                let moved = tables
                    .into_iter()
                    .map(|t| {
                        TableHandle::new(TableMeta { level: to, ..t }, Arc::clone(&inner.tables))
                    })
                    .collect();
                self.install(moved, numbers, None, None).await?;
                Counters::add(&inner.counters.trivial_moves, count);
                Ok(true)
            }
            Some(Choice::Merge(job)) => self.merge(&job, &version).await,
        }
    }

    /// Runs `job` over the tables of `version` and installs its outputs; false when cancelled.
    async fn merge(&self, job: &Job, version: &Version<F>) -> Result<bool> {
        let inner = &*self.inner;
        let started = Instant::now();
        let mut readers = Vec::new();
        for meta in job.tables() {
            let handle = version.find(meta.number).ok_or_else(|| {
                Error::corruption(
                    &inner.dir,
                    0,
                    format!("compaction input {} is not in the version", meta.number),
                )
            })?;
            readers.push(handle.reader().await?);
        }
        let (snapshots, horizon) = inner.snapshots.view(|| inner.visible());
        let mut retention = Retention::new(
            snapshots,
            horizon,
            job.bottommost,
            inner.options.clock.now_ms(),
            Arc::clone(&inner.options.tombstone_policy),
        );
        let spec = OutputSpec {
            fs: &inner.fs,
            dir: &inner.dir,
            table_options: self.table_options(),
            target_file_bytes: inner.options.target_file_bytes,
            level: job.output_level,
        };
        let next_number = || {
            let mut st = inner.state.lock();
            st.next_file += 1;
            st.next_file - 1
        };
        let closed = || inner.closed.load(Ordering::Acquire);
        let Some(outputs) =
            compaction::merge(&spec, readers, &mut retention, next_number, closed).await?
        else {
            return Ok(false);
        };
        let written: u64 = outputs.iter().map(|m| m.file_size).sum();
        let mut added = Vec::with_capacity(outputs.len());
        for meta in outputs {
            // Read back before the manifest lists it, as a flush does.
            inner.tables.get(&meta).await?;
            added.push(TableHandle::new(meta, Arc::clone(&inner.tables)));
        }
        let removed = job.tables().map(|t| t.number).collect();
        self.install(added, removed, None, None).await?;
        let c = &inner.counters;
        Counters::add(&c.compactions, 1);
        Counters::add(&c.compaction_bytes_read, job.input_bytes());
        Counters::add(&c.compaction_bytes_written, written);
        Counters::add(&c.compaction_micros, started.elapsed().as_micros() as u64);
        c.add_retention(&retention.stats);
        tracing::debug!(
            level = job.level,
            inputs = job.inputs.len() + job.overlapping.len(),
            read = job.input_bytes(),
            written,
            "compacted"
        );
        Ok(true)
    }

    fn table_options(&self) -> TableOptions {
        let o = &self.inner.options;
        TableOptions {
            block_bytes: o.block_bytes,
            compression: o.compression,
            bloom_bits_per_key: o.bloom_bits_per_key,
        }
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

/// The L0 slowdown and stop limits, made consistent (stop above slowdown).
fn l0_limits(o: &Options) -> (usize, usize) {
    let slowdown = o.l0_slowdown_trigger.max(1);
    (slowdown, o.l0_stop_trigger.max(slowdown + 1))
}

/// The soft and hard pending compaction limits, made consistent (hard above soft).
fn pending_limits(o: &Options) -> (u64, u64) {
    let soft = o.soft_pending_compaction_bytes.max(1);
    (soft, o.hard_pending_compaction_bytes.max(soft + 1))
}

/// How long a write waits with `pending` bytes of compaction backlog: nothing below `soft`,
/// then growing in proportion to the excess, from [`PENDING_DELAY_MIN`] toward
/// [`WRITE_DELAY_MAX`] at `hard`.
fn pending_delay(pending: u64, soft: u64, hard: u64) -> Option<Duration> {
    if pending < soft {
        return None;
    }
    let f = ((pending - soft + 1) as f64 / (hard - soft) as f64).min(1.0);
    Some(WRITE_DELAY_MAX.mul_f64(f).max(PENDING_DELAY_MIN))
}

/// How long a write waits with `l0` tables in L0: nothing below `slowdown`, then growing
/// quadratically toward [`WRITE_DELAY_MAX`] just below `stop`.
fn write_delay(l0: usize, slowdown: usize, stop: usize) -> Option<Duration> {
    if l0 < slowdown {
        return None;
    }
    let steps = (stop - slowdown + 1) as f64;
    let f = ((l0 - slowdown + 1) as f64 / steps).min(1.0);
    Some(WRITE_DELAY_MAX.mul_f64(f * f))
}

/// Deletes tables the manifest does not list: outputs of flushes or compactions that crashed
/// before they were recorded.
async fn remove_orphan_tables<F: FileSystem>(
    fs: &Arc<F>,
    dir: &Path,
    state: &ManifestState,
) -> Result<()> {
    for name in fs.list_dir(dir).await.at(dir)? {
        let number = name
            .strip_suffix(TABLE_EXT)
            .and_then(|n| n.strip_suffix('.'))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            if !state.tables.contains_key(&number) {
                let path = dir.join(&name);
                tracing::info!(path = %path.display(), "removing unrecorded table");
                fs.remove(&path).await.at(&path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_delay_grows_from_the_slowdown_to_the_stop_limit() {
        assert_eq!(write_delay(7, 8, 12), None);
        let delays: Vec<Duration> = (8..12).map(|l0| write_delay(l0, 8, 12).unwrap()).collect();
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        assert!(delays[0] > Duration::ZERO);
        assert!(delays.iter().all(|d| *d <= WRITE_DELAY_MAX));
        assert_eq!(write_delay(20, 8, 12), Some(WRITE_DELAY_MAX));
    }

    #[test]
    fn pending_delay_grows_with_the_excess_over_the_soft_limit() {
        let (soft, hard) = (1000, 2000);
        assert_eq!(pending_delay(0, soft, hard), None);
        assert_eq!(pending_delay(999, soft, hard), None);
        let delays: Vec<Duration> = [1000, 1200, 1500, 1999]
            .iter()
            .map(|&p| pending_delay(p, soft, hard).unwrap())
            .collect();
        assert_eq!(delays[0], PENDING_DELAY_MIN);
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= WRITE_DELAY_MAX));
        assert_eq!(pending_delay(1, 1, u64::MAX), Some(PENDING_DELAY_MIN));
        let half = pending_delay(1499, soft, hard).unwrap();
        assert_eq!(half, WRITE_DELAY_MAX / 2);
        assert_eq!(pending_delay(2000, soft, hard), Some(WRITE_DELAY_MAX));
        assert_eq!(pending_delay(u64::MAX, soft, hard), Some(WRITE_DELAY_MAX));
    }

    #[test]
    fn pending_limits_keep_hard_above_soft() {
        let o = Options {
            soft_pending_compaction_bytes: 10,
            hard_pending_compaction_bytes: 5,
            ..Options::default()
        };
        assert_eq!(pending_limits(&o), (10, 11));
        let o = Options {
            soft_pending_compaction_bytes: 0,
            hard_pending_compaction_bytes: 0,
            ..Options::default()
        };
        assert_eq!(pending_limits(&o), (1, 2));
    }

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

    /// A merge runs for seconds while flushes go on: it must hold the tables it reads, not
    /// the memtables of the moment it started, or each flushed memtable (tens of MiB) would
    /// stay in memory, uncounted, until the merge ends.
    #[test]
    fn a_merge_in_progress_keeps_no_memtable_alive() {
        futures_lite::future::block_on(async {
            let options = Options {
                durability: Durability::Buffered,
                l0_compaction_trigger: 2,
                ..Options::default()
            };
            let db = Db::open(crate::fs::FaultFs::new(), Path::new("/db"), options)
                .await
                .unwrap();
            let mut next = 0u32;
            let mut put_some = async || {
                for _ in 0..4 * crate::compaction::YIELD_EVERY_ENTRIES {
                    next += 1;
                    db.put(&next.to_be_bytes(), b"value").await.unwrap();
                }
            };
            for _ in 0..2 {
                put_some().await;
                db.flush().await.unwrap();
            }
            put_some().await;
            let frozen = Arc::downgrade(&db.current().mem);

            let mut merge = Box::pin(db.compact_step());
            let waker = std::task::Waker::noop();
            let polled = merge
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            assert!(polled.is_pending(), "the merge yields before it is done");
            db.flush().await.unwrap();
            assert_eq!(
                frozen.strong_count(),
                0,
                "the flushed memtable is still held"
            );

            assert!(merge.await.unwrap(), "the merge completes");
            for i in 1..=next {
                assert_eq!(
                    db.get(&i.to_be_bytes()).await.unwrap().as_deref(),
                    Some(&b"value"[..])
                );
            }
        });
    }

    #[test]
    fn l0_limits_keep_stop_above_slowdown() {
        let o = Options {
            l0_slowdown_trigger: 6,
            l0_stop_trigger: 3,
            ..Options::default()
        };
        assert_eq!(l0_limits(&o), (6, 7));
        assert_eq!(l0_limits(&Options::default()), (20, 36));
    }
}
