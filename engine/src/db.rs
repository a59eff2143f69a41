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
//! log record still needed; then the log before it is released. Flushes are done by the
//! background worker the host runs ([`Db::background`]), or by a writer that finds too many
//! frozen memtables (backpressure) or calls [`Db::flush`].

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use event_listener::Event;
use parking_lot::Mutex;

use crate::batch::{self, WriteBatch};
use crate::cache::{BlockCache, CacheStats};
use crate::error::IoContext;
use crate::fs::{FileSystem, numbered_path};
use crate::iter::{MergeIter, ScanIter, Source};
use crate::log::{Log, LogOptions, ReplayFrom};
use crate::manifest::{Edit, Manifest, ManifestState, TableMeta};
use crate::memtable::{Memtable, MemtableIter};
use crate::options::{Durability, Options};
use crate::snapshot::{SnapshotGuard, SnapshotList};
use crate::sstable::{Table, TableBuilder, TableIter, TableOptions, key_hash};
use crate::types::{Entry, SeqNo};
use crate::version::{TableHandle, Version};
use crate::{Error, Result};

const TABLE_EXT: &str = "sst";

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
    log: Log<F>,
    manifest: Manifest<F>,
    cache: Arc<BlockCache>,
    state: Mutex<State<F>>,
    /// Readers read at this sequence number: every write at or below it is durable (or, with
    /// `Durability::Buffered`, acknowledged).
    visible_seq: AtomicU64,
    snapshots: Arc<SnapshotList>,
    /// Wakes the background worker: a memtable was frozen, or the database is closing.
    work: Event,
    /// Held by whoever flushes frozen memtables, so they go out one at a time, oldest first.
    flush_lock: async_lock::Mutex<()>,
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
}

/// Everything a reader searches, swapped as a whole when it changes.
struct SuperVersion<F: FileSystem> {
    mem: Arc<Memtable>,
    /// Frozen memtables, oldest first.
    imm: Vec<Arc<Memtable>>,
    version: Arc<Version<F>>,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    reads: AtomicU64,
    flushes: AtomicU64,
    flush_bytes: AtomicU64,
    stall_micros: AtomicU64,
}

/// Engine statistics, for INFO and tests.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub writes: u64,
    pub reads: u64,
    pub flushes: u64,
    pub flush_bytes: u64,
    /// Time writers spent waiting for flushes to catch up.
    pub stall_micros: u64,
    pub memtable_bytes: u64,
    pub immutable_memtables: u64,
    /// Per level: (tables, bytes).
    pub levels: Vec<(u64, u64)>,
    pub log_bytes: u64,
    /// Commit-log fdatasyncs; writes per sync measures group commit.
    pub log_syncs: u64,
    pub last_seq: SeqNo,
    pub visible_seq: SeqNo,
    pub cache: CacheStats,
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

impl<F: FileSystem> Db<F> {
    /// Opens the database in `dir`, creating it if needed, and recovers everything that was
    /// durable: the tables the manifest lists, then the commit log after them.
    pub async fn open(fs: F, dir: impl AsRef<Path>, options: Options) -> Result<Db<F>> {
        let fs = Arc::new(fs);
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).await.at(&dir)?;
        // A directory created just now is lost in a crash until its parent is synced, and
        // with it every write acknowledged inside.
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs.sync_dir(&parent).await.at(&parent)?;
        let (manifest, manifest_state) = Manifest::open(Arc::clone(&fs), &dir).await?;
        let cache = Arc::new(BlockCache::new(options.block_cache_bytes));

        let mut handles = Vec::with_capacity(manifest_state.tables.len());
        for meta in manifest_state.tables.values() {
            handles.push(open_table(&fs, &dir, meta.clone(), &cache).await?);
        }
        remove_orphan_tables(&fs, &dir, &manifest_state).await?;

        // Replay the log into memtables, freezing whenever one fills up.
        let log_dir = dir.join("log");
        let mut memtables = vec![Memtable::new(manifest_state.log_start)];
        let mut last_seq = manifest_state.last_seq;
        let log = Log::open(
            Arc::clone(&fs),
            log_dir.clone(),
            LogOptions {
                segment_bytes: options.log_segment_bytes,
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
                    memtables.push(Memtable::new(record_no));
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

        let mut memtables: Vec<Arc<Memtable>> = memtables.into_iter().map(Arc::new).collect();
        let mem = memtables
            .pop()
            .unwrap_or_else(|| Arc::new(Memtable::new(log.next_record())));
        let current = Arc::new(SuperVersion {
            mem,
            imm: memtables,
            version: Arc::new(Version::empty().apply(handles, &[])),
        });
        let next_file = manifest_state.next_file;
        let db = Db {
            inner: Arc::new(Inner {
                dir,
                fs,
                log,
                manifest,
                cache,
                state: Mutex::new(State {
                    current,
                    manifest: manifest_state,
                    next_file,
                    last_seq,
                    payload: Vec::new(),
                }),
                visible_seq: AtomicU64::new(last_seq),
                snapshots: Arc::new(SnapshotList::default()),
                work: Event::new(),
                flush_lock: async_lock::Mutex::new(()),
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
            let first_seq = st.last_seq + 1;
            let mut payload = std::mem::take(&mut st.payload);
            payload.clear();
            batch.encode(first_seq, &mut payload);
            let appended = inner.log.append(&payload);
            st.payload = payload;
            let record = appended?;
            let mem = Arc::clone(&st.current.mem);
            let count = batch.len() as u64;
            for (i, (key, entry)) in batch.ops().iter().enumerate() {
                mem.insert(key, first_seq + i as u64, entry);
            }
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
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        self.live_entry_at(key, seq).await
    }

    async fn live_entry_at(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        self.inner.counters.reads.fetch_add(1, Ordering::Relaxed);
        let now = self.inner.options.clock.now_ms();
        Ok(self
            .version_at(key, snapshot)
            .await?
            .map(|(_, e)| e)
            .filter(|e| e.is_live(now)))
    }

    /// The newest version of `key` at `snapshot`, tombstones and expired entries included.
    async fn version_at(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<(SeqNo, Entry)>> {
        let sv = self.current();
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

    /// A consistent view at the current sequence number, kept until dropped.
    pub fn snapshot(&self) -> Snapshot<F> {
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        Snapshot {
            db: self.clone(),
            guard: Arc::new(self.inner.snapshots.register(seq)),
        }
    }

    /// Live entries with keys in `range`, in key order, as of now.
    pub async fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Result<ScanIter<F>> {
        self.check_open()?;
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        let guard = self.inner.snapshots.register(seq);
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
            sources.push(Source::Table(TableIter::new(Arc::clone(&t.table))));
        }
        let now = self.inner.options.clock.now_ms();
        ScanIter::new(
            MergeIter::new(sources),
            range.start_bound().cloned(),
            range.end_bound().cloned(),
            now,
            guard,
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

    /// The host runs this future (e.g. on a low-priority task queue) for the database's
    /// lifetime: it flushes frozen memtables as they appear. It ends when the database closes.
    pub fn background(&self) -> impl std::future::Future<Output = ()> + 'static {
        let db = self.clone();
        async move {
            loop {
                let listener = db.inner.work.listen();
                if db.inner.closed.load(Ordering::Acquire) {
                    return;
                }
                let pending = !db.current().imm.is_empty();
                if pending {
                    match db.flush_frozen().await {
                        Ok(()) => continue,
                        // Writers that need the flush retry it themselves and see the error.
                        Err(e) => {
                            tracing::error!(dir = %db.inner.dir.display(), error = %e, "flush failed");
                        }
                    }
                }
                listener.await;
            }
        }
    }

    /// Stops the database: makes buffered writes durable and ends the background worker.
    /// Unflushed memtables are recovered from the log on the next open.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.work.notify(usize::MAX);
        if self.inner.options.durability == Durability::Buffered {
            self.sync().await?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let sv = self.current();
        let last_seq = inner.state.lock().last_seq;
        Stats {
            writes: inner.counters.writes.load(Ordering::Relaxed),
            reads: inner.counters.reads.load(Ordering::Relaxed),
            flushes: inner.counters.flushes.load(Ordering::Relaxed),
            flush_bytes: inner.counters.flush_bytes.load(Ordering::Relaxed),
            stall_micros: inner.counters.stall_micros.load(Ordering::Relaxed),
            memtable_bytes: (sv.mem.approximate_bytes()
                + sv.imm.iter().map(|m| m.approximate_bytes()).sum::<usize>())
                as u64,
            immutable_memtables: sv.imm.len() as u64,
            levels: sv
                .version
                .levels()
                .iter()
                .map(|l| (l.len() as u64, l.iter().map(|t| t.meta.file_size).sum()))
                .collect(),
            log_bytes: inner.log.disk_bytes(),
            log_syncs: inner.log.data_syncs(),
            last_seq,
            visible_seq: inner.visible_seq.load(Ordering::Acquire),
            cache: inner.cache.stats(),
        }
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

    /// Freezes the memtable when it is full; when too many frozen memtables wait, flushes
    /// (or waits for the flush in progress) before letting the writer in.
    async fn make_room(&self) -> Result<()> {
        let inner = &*self.inner;
        let limit = inner.options.max_immutable_memtables.max(1);
        let mut stalled: Option<Instant> = None;
        loop {
            let (full, backlog) = {
                let st = inner.state.lock();
                (
                    st.current.mem.approximate_bytes() >= inner.options.memtable_bytes,
                    st.current.imm.len(),
                )
            };
            if backlog >= limit {
                stalled.get_or_insert_with(Instant::now);
                self.flush_frozen().await?;
                continue;
            }
            if full {
                self.freeze();
            }
            break;
        }
        if let Some(start) = stalled {
            inner
                .counters
                .stall_micros
                .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
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
            let mem = Arc::new(Memtable::new(inner.log.next_record()));
            let mut imm = st.current.imm.clone();
            imm.push(Arc::clone(&st.current.mem));
            st.current = Arc::new(SuperVersion {
                mem,
                imm,
                version: Arc::clone(&st.current.version),
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
        let (edit, state_after) = {
            let st = inner.state.lock();
            let mut state_after = st.manifest.clone();
            let edit = Edit::Change {
                added: handle.iter().map(|h| h.meta.clone()).collect(),
                removed: Vec::new(),
                log_start,
                next_file: st.next_file,
                last_seq: state_after.last_seq.max(imm.max_seq()),
            };
            state_after
                .apply(edit.clone())
                .map_err(|what| Error::corruption(inner.manifest.dir(), 0, what))?;
            (edit, state_after)
        };
        inner.manifest.record(&edit, &state_after).await?;
        {
            let mut st = inner.state.lock();
            st.manifest = state_after;
            let version = st.current.version.apply(handle.into_iter().collect(), &[]);
            let imm_left: Vec<_> = st.current.imm[1..].to_vec();
            debug_assert!(Arc::ptr_eq(&st.current.imm[0], &imm));
            st.current = Arc::new(SuperVersion {
                mem: Arc::clone(&st.current.mem),
                imm: imm_left,
                version: Arc::new(version),
            });
        }
        inner.log.release_before(log_start).await?;
        inner.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Writes a memtable into table `number` and opens it.
    async fn write_table(&self, mem: &Arc<Memtable>, number: u64) -> Result<Arc<TableHandle<F>>> {
        let inner = &*self.inner;
        let path = numbered_path(&inner.dir, number, TABLE_EXT);
        let written = async {
            let file = inner.fs.create(&path).await.at(&path)?;
            let mut builder = TableBuilder::new(file, self.table_options());
            let it = MemtableIter::new(Arc::clone(mem));
            for (key, seq, entry) in it {
                builder.add(&key, seq, &entry).await?;
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
        let meta = TableMeta {
            number,
            level: 0,
            file_size: props.file_size,
            entries: props.entries,
            tombstones: props.tombstones,
            min_seq: props.min_seq,
            max_seq: props.max_seq,
            smallest: props.smallest_key.clone(),
            largest: props.largest_key.clone(),
        };
        open_table(&inner.fs, &inner.dir, meta, &inner.cache).await
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

async fn open_table<F: FileSystem>(
    fs: &Arc<F>,
    dir: &Path,
    meta: TableMeta,
    cache: &Arc<BlockCache>,
) -> Result<Arc<TableHandle<F>>> {
    let path = numbered_path(dir, meta.number, TABLE_EXT);
    let file = fs.open(&path).await.at(&path)?;
    let table = Table::open(file, meta.number, Arc::clone(cache)).await?;
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
    Ok(Arc::new(TableHandle {
        meta,
        table: Arc::new(table),
    }))
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
            .strip_suffix(".sst")
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
