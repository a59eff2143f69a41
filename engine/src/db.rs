//! The database: one engine instance (one shard's store).
//!
//! Write ([`write`]): under the state lock a batch gets its sequence numbers, its commit-log
//! record and its memtable entries, in that order, so log order, sequence order and memtable
//! contents agree. The lock is released before waiting for the log to be durable (group
//! commit), and the batch becomes visible to readers only once it is durable: readers read at
//! `visible_seq`, which only moves past sequence numbers whose records are synced.
//!
//! Read (`db/read.rs`): memtable → frozen memtables (newest first) → SSTables, at a sequence
//! number.
//!
//! Flush (`db/flush.rs`): a full memtable is frozen and a new one started; a frozen memtable is
//! written to an L0 SSTable, which is made durable, then recorded in the manifest together
//! with the first log record still needed; then the log before it is released.
//!
//! Compaction (`db/compact.rs`, [`crate::compaction`]): leveled, one at a time. Its outputs are
//! durable before the manifest edit that swaps them for the inputs, and the inputs are
//! deleted only after that edit is durable and no reader holds them (see
//! [`crate::table_cache`]).
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

mod checkpoint;
mod compact;
mod flush;
mod read;
mod write;

pub use read::Snapshot;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use event_listener::Event;
use parking_lot::{Mutex, MutexGuard};

use crate::batch;
use crate::budget::MemoryPlan;
use crate::cache::BlockCache;
use crate::compaction::{Shape, picker};
use crate::error::IoContext;
use crate::filename::{self, FileKind};
use crate::fs::FileSystem;
use crate::log::{Log, LogOptions, Preallocation, ReplayFrom};
use crate::manifest::{Edit, LEVELS, Manifest, ManifestState, TableMeta};
use crate::memtable::Memtable;
use crate::options::{Durability, Options};
use crate::snapshot::SnapshotList;
use crate::sstable::{Table, TableOptions};
use crate::stats::{Counters, LevelStats, MemoryStats, Stats, write_amplification};
use crate::table_cache::TableCache;
use crate::types::SeqNo;
use crate::version::{TableHandle, Version};
use crate::{Error, Result};

/// Commit-log segments an open leaves live before it flushes what it replayed into a table,
/// which retires them: every open after a crash starts a segment, and a database whose writes
/// never fill a memtable would otherwise keep them all.
const OPEN_LOG_SEGMENTS_MAX: usize = 4;

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
    /// Changed only through [`Inner::lock`], which checks the invariants.
    state: Mutex<State<F>>,
    /// Readers read at this sequence number: every write at or below it is durable (or, with
    /// `Durability::Buffered`, acknowledged).
    visible_seq: AtomicU64,
    snapshots: Arc<SnapshotList>,
    /// Wakes the background workers: a memtable was frozen or flushed, or the database is
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
    /// The last failure of a background worker, until that worker next completes a step.
    background_error: Mutex<Option<BackgroundError>>,
}

/// A flush or compaction that failed in the background, as [`Db::background_error`] reports
/// it. The error names the file: for corruption, the damaged table.
#[derive(Debug, Clone)]
pub struct BackgroundError {
    /// `"flush"` or `"compaction"`.
    pub worker: &'static str,
    /// The failure; it names the file it happened on.
    pub error: Arc<Error>,
}

impl std::fmt::Display for BackgroundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "background {} failed: {}", self.worker, self.error)
    }
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

impl<F: FileSystem> Inner<F> {
    fn visible(&self) -> SeqNo {
        self.visible_seq.load(Ordering::Acquire)
    }

    /// The state, locked; checked when released (see [`Locked`]).
    fn lock(&self) -> Locked<'_, F> {
        Locked {
            inner: self,
            state: self.state.lock(),
        }
    }
}

/// The database's state, locked ([`Inner::lock`]). Every change to the state is made through
/// one, and releasing it checks [`Locked::check_invariants`] in debug builds, so each
/// transition is checked as it completes.
struct Locked<'a, F: FileSystem> {
    inner: &'a Inner<F>,
    state: MutexGuard<'a, State<F>>,
}

impl<F: FileSystem> Deref for Locked<'_, F> {
    type Target = State<F>;

    fn deref(&self) -> &State<F> {
        &self.state
    }
}

impl<F: FileSystem> DerefMut for Locked<'_, F> {
    fn deref_mut(&mut self) -> &mut State<F> {
        &mut self.state
    }
}

impl<F: FileSystem> Drop for Locked<'_, F> {
    fn drop(&mut self) {
        // Not while unwinding: a second panic would abort and hide the first.
        if cfg!(debug_assertions) && !std::thread::panicking() {
            self.check_invariants();
        }
    }
}

impl<F: FileSystem> Locked<'_, F> {
    /// Panics unless the state keeps the database's rules:
    ///
    /// 1. Readers see only what was written: `visible_seq <= last_seq`.
    /// 2. The tables hold nothing newer than the last write: `manifest.last_seq <= last_seq`.
    /// 3. No file number is handed out twice: `manifest.next_file <= next_file`.
    /// 4. No memtable holds a sequence number past `last_seq`.
    /// 5. The memtables cover the log in order: each starts at or after the record the one
    ///    frozen before it starts at, the active one last.
    /// 6. The log the manifest keeps starts at or before the oldest memtable, so every write
    ///    not yet in a table is replayed at the next open.
    /// 7. The active memtable starts at or before the log's next record.
    /// 8. Compaction has one cursor per level.
    fn check_invariants(&self) {
        let st = &*self.state;
        let sv = &*st.current;
        assert!(self.inner.visible() <= st.last_seq);
        assert!(st.manifest.last_seq <= st.last_seq);
        assert!(st.manifest.next_file <= st.next_file);
        let memtables = || sv.imm.iter().chain(std::iter::once(&sv.mem));
        for m in memtables() {
            assert!(m.max_seq() <= st.last_seq);
        }
        for (older, newer) in memtables().zip(memtables().skip(1)) {
            assert!(older.first_record() <= newer.first_record());
        }
        let oldest = sv.imm.first().unwrap_or(&sv.mem);
        assert!(st.manifest.log_start <= oldest.first_record());
        assert!(sv.mem.first_record() <= self.inner.log.next_record());
        assert!(st.cursors.len() == LEVELS as usize);
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
        let handles = open_listed_tables(&tables, &manifest_state).await?;
        let Replayed {
            log,
            mut memtables,
            last_seq,
        } = replay_log(&fs, &dir, &options, &manifest_state).await?;
        // Only once the log agrees with the manifest: a manifest that lost an edit must fail
        // open without deleting the tables that edit recorded.
        remove_orphan_tables(&fs, &dir, &manifest_state, last_seq, &cache).await?;

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
                background_error: Mutex::new(None),
                options,
            }),
        };
        if cfg!(debug_assertions) {
            db.inner.lock().check_invariants();
        }
        if db.inner.log.live_segments() > OPEN_LOG_SEGMENTS_MAX {
            // Best effort: on a full disk the database still opens, for reads.
            if let Err(e) = db.flush().await {
                tracing::warn!(dir = %db.inner.dir.display(), error = %e, "flushing the replayed log failed");
            }
        }
        Ok(db)
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
    /// for seconds, and a flush waiting behind it would leave writers to find the frozen
    /// memtables at their limit and flush them themselves, stopped.
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
    /// the next wake-up when it found none or failed (the failure is logged, counted, and kept
    /// for [`Db::background_error`] until this worker next completes a step).
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
                let result = step(db.clone()).await;
                let worked = matches!(result, Ok(true));
                db.record_background(what, result);
                if worked {
                    continue;
                }
                listener.await;
            }
        }
    }

    /// Keeps a worker's failure for [`Db::background_error`], or clears that worker's last
    /// one after a step that completed.
    fn record_background(&self, worker: &'static str, result: Result<bool>) {
        let mut slot = self.inner.background_error.lock();
        match result {
            Ok(_) => {
                if slot.as_ref().is_some_and(|b| b.worker == worker) {
                    *slot = None;
                }
            }
            Err(e) => {
                tracing::error!(dir = %self.inner.dir.display(), error = %e, "{worker} failed");
                Counters::add(&self.inner.counters.background_errors, 1);
                *slot = Some(BackgroundError {
                    worker,
                    error: Arc::new(e),
                });
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
        // Closing the log makes every write durable, buffered ones included, and lets the next
        // open append to its last segment instead of starting one.
        self.inner.log.close().await?;
        let last = self.inner.lock().last_seq;
        self.inner.visible_seq.fetch_max(last, Ordering::AcqRel);
        // A flush or compaction still running finds the manifest closed and fails; its table
        // is deleted at the next open, its data being in the log or in its inputs.
        let _editing = self.inner.manifest_lock.lock().await;
        self.inner.manifest.close().await?;
        // Best effort: what is left is deleted at the next open.
        let _ = self.inner.tables.remove_obsolete().await;
        Ok(())
    }

    /// The last failure of a background flush or compaction, until that worker next
    /// completes a step; `None` when they are healthy. A failure does not stop writes at once:
    /// they go on until the backlog it leaves reaches a stop limit (`l0_stop_trigger`, or
    /// `max_immutable_memtables` frozen memtables), where each write runs the step itself and
    /// returns its error. For a corrupt table, `sstable-dump --verify` confirms which one, and
    /// [`crate::repair`] rebuilds the database from what every checksum proves good.
    pub fn background_error(&self) -> Option<BackgroundError> {
        self.inner.background_error.lock().clone()
    }

    /// Counters, per-level shape and memory use.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let c = &inner.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let sv = self.current();
        let last_seq = inner.lock().last_seq;
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
            background_errors: get(&c.background_errors),
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

    /// The database directory (absolute).
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
        Arc::clone(&self.inner.lock().current)
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
            let st = inner.lock();
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
        let mut st = inner.lock();
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

    fn table_options(&self) -> TableOptions {
        let o = &self.inner.options;
        TableOptions {
            block_bytes: o.block_bytes,
            compression: o.compression,
            bloom_bits_per_key: o.bloom_bits_per_key,
        }
    }
}

/// The commit log after the manifest's tables, replayed into memtables.
struct Replayed<F: FileSystem> {
    log: Log<F>,
    /// Oldest first, each frozen when it filled up; the last one is the active memtable.
    memtables: Vec<Arc<Memtable>>,
    /// The highest sequence number replayed, or the manifest's when the log adds none.
    last_seq: SeqNo,
}

/// Opens the commit log in `dir/log` and replays it from the manifest's `log_start` into
/// memtables, starting a new one whenever one fills up.
async fn replay_log<F: FileSystem>(
    fs: &Arc<F>,
    dir: &Path,
    options: &Options,
    manifest: &ManifestState,
) -> Result<Replayed<F>> {
    let log_dir = filename::log_dir(dir);
    let mut memtables = vec![Memtable::new(manifest.log_start, options.memtable_bytes)];
    let mut last_seq = manifest.last_seq;
    let log = Log::open(
        Arc::clone(fs),
        log_dir.clone(),
        LogOptions {
            // Never above the largest: a small `log_segment_bytes` alone keeps segments small.
            segment_bytes_min: options.log_segment_bytes_min.min(options.log_segment_bytes),
            segment_bytes: options.log_segment_bytes,
            preallocation: match options.durability {
                Durability::Sync => Preallocation::ZeroFill,
                Durability::Buffered => Preallocation::Sparse,
            },
        },
        ReplayFrom::Record(manifest.log_start),
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
    Ok(Replayed {
        log,
        memtables: memtables.into_iter().map(Arc::new).collect(),
        last_seq,
    })
}

/// Handles on the tables the manifest lists, each opened now, which verifies its footer, index
/// and filter, rather than at the first read.
async fn open_listed_tables<F: FileSystem>(
    tables: &Arc<TableCache<F>>,
    state: &ManifestState,
) -> Result<Vec<Arc<TableHandle<F>>>> {
    let mut handles = Vec::with_capacity(state.tables.len());
    for meta in state.tables.values() {
        tables.get(meta).await?;
        handles.push(TableHandle::new(meta.clone(), Arc::clone(tables)));
    }
    Ok(handles)
}

/// Deletes tables the manifest does not list: outputs of flushes or compactions that crashed
/// before they were recorded, or half-written when it crashed.
///
/// Such a table only ever holds what something else still has: a compaction's output the
/// versions of its inputs, a flush's output records the log keeps until the flush is recorded
/// (a flush makes them durable in the log first, whatever the durability). So a complete
/// table holding a sequence number past `last_seq` (everything the manifest and the replayed
/// log know) was recorded by a manifest edit that is now lost: that is corruption, reported
/// before any table is deleted, never data to throw away.
async fn remove_orphan_tables<F: FileSystem>(
    fs: &Arc<F>,
    dir: &Path,
    state: &ManifestState,
    last_seq: SeqNo,
    cache: &Arc<BlockCache>,
) -> Result<()> {
    let mut orphans = Vec::new();
    for name in fs.list_dir(dir).await.at(dir)? {
        if let Some(FileKind::Table(number)) = filename::parse(&name) {
            if !state.tables.contains_key(&number) {
                let path = filename::table(dir, number);
                let file = fs.open(&path).await.at(&path)?;
                match Table::open(file, number, Arc::clone(cache)).await {
                    Ok(table) if table.properties().max_seq > last_seq => {
                        return Err(Error::corruption(
                            &path,
                            0,
                            format!(
                                "a table the manifest does not list holds sequence numbers up \
                                 to {}, past the {last_seq} the manifest and the log know: \
                                 the manifest lost the edit that recorded it",
                                table.properties().max_seq
                            ),
                        ));
                    }
                    // Incomplete: never synced, so never recorded.
                    Ok(_) | Err(Error::Corruption { .. }) => orphans.push(path),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    for path in orphans {
        tracing::info!(path = %path.display(), "removing unrecorded table");
        fs.remove(&path).await.at(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::FaultFs;

    /// What `check_invariants` says of a database's state, after three writes, once
    /// `break_rule` has changed it; `None` when it passes.
    fn invariant_failure(break_rule: impl FnOnce(&mut Locked<'_, FaultFs>)) -> Option<String> {
        let options = Options {
            durability: Durability::Buffered,
            ..Options::default()
        };
        let db = futures_lite::future::block_on(async {
            let db = Db::open(FaultFs::new(), Path::new("/db"), options).await?;
            for key in [b"a", b"b", b"c"] {
                db.put(key, b"value").await?;
            }
            Ok::<_, Error>(db)
        })
        .unwrap();
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut st = db.inner.lock();
            break_rule(&mut st);
            st.check_invariants();
        }));
        checked.err().map(|panic| match panic.downcast::<String>() {
            Ok(message) => *message,
            Err(panic) => panic
                .downcast::<&str>()
                .map_or_else(|_| String::new(), |m| m.to_string()),
        })
    }

    /// Replaces the memtables: `imm` frozen (oldest first) and `mem` active.
    fn set_memtables(st: &mut Locked<'_, FaultFs>, imm: Vec<Memtable>, mem: Memtable) {
        let version = Arc::clone(&st.current.version);
        st.current = Arc::new(SuperVersion {
            mem: Arc::new(mem),
            imm: imm.into_iter().map(Arc::new).collect(),
            version,
            pending_compaction_bytes: 0,
        });
    }

    /// A memtable starting at log record `first_record` that holds sequence number `seq`.
    fn memtable(first_record: u64, seq: SeqNo) -> Memtable {
        let m = Memtable::new(first_record, 1 << 20);
        m.insert(b"k", seq, &crate::types::Entry::put(b"v".to_vec()));
        m
    }

    type Break = Box<dyn FnOnce(&mut Locked<'_, FaultFs>)>;

    /// Each numbered rule of `Locked::check_invariants` fires when broken, and a database
    /// that has been written to keeps them all.
    #[test]
    fn check_invariants_fires_on_each_broken_rule() {
        assert_eq!(invariant_failure(|_| {}), None);
        let cases: Vec<(&str, Break)> = vec![
            (
                "visible() <= st.last_seq",
                Box::new(|st| {
                    let beyond = st.last_seq + 1;
                    st.inner.visible_seq.store(beyond, Ordering::Release);
                }),
            ),
            (
                "manifest.last_seq <= st.last_seq",
                Box::new(|st| st.manifest.last_seq = st.last_seq + 1),
            ),
            (
                "manifest.next_file <= st.next_file",
                Box::new(|st| st.manifest.next_file = st.next_file + 1),
            ),
            (
                "max_seq() <= st.last_seq",
                Box::new(|st| {
                    let beyond = st.last_seq + 1;
                    set_memtables(st, Vec::new(), memtable(0, beyond));
                }),
            ),
            (
                "older.first_record() <= newer.first_record()",
                Box::new(|st| set_memtables(st, vec![memtable(1, 1)], memtable(0, 2))),
            ),
            (
                "manifest.log_start <= oldest.first_record()",
                Box::new(|st| st.manifest.log_start = 1),
            ),
            (
                "mem.first_record() <= self.inner.log.next_record()",
                Box::new(|st| set_memtables(st, Vec::new(), memtable(4, 1))),
            ),
            (
                "cursors.len() == LEVELS",
                Box::new(|st| {
                    st.cursors.pop();
                }),
            ),
        ];
        for (rule, break_rule) in cases {
            let failure = invariant_failure(break_rule);
            assert!(
                failure.as_deref().is_some_and(|f| f.contains(rule)),
                "breaking `{rule}` gave {failure:?}"
            );
        }
    }
}
