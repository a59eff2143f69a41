//! The blocking API, for programs without an async runtime: the same engine on std files,
//! its futures driven on the calling thread, and a thread each for the flush and compaction
//! workers.
//!
//! `Db` is `Send + Sync`: share it between threads with an `Arc`. Concurrent synchronous
//! writers share fdatasyncs (group commit) exactly as tasks on a shard do.
//!
//! ```
//! use shoal_engine::blocking::Db;
//! use shoal_engine::Options;
//!
//! # fn main() -> shoal_engine::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("db");
//! let db = Db::open(&dir, Options::default())?;
//! db.put(b"fruit:apple", b"red")?;
//! db.put(b"fruit:banana", b"yellow")?;
//! db.put(b"veg:leek", b"green")?;
//! for item in db.scan_prefix(b"fruit:") {
//!     let (key, value) = item?;
//!     println!("{} = {}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
//! }
//! let newest_first: Vec<_> = db.scan_rev(..).collect::<Result<_, _>>()?;
//! assert_eq!(newest_first[0].0, b"veg:leek");
//! db.close()?;
//! # Ok(())
//! # }
//! ```

use std::fs::OpenOptions;
use std::ops::{Bound, RangeBounds};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::thread::JoinHandle;

use futures_lite::future::block_on;

use crate::batch::WriteBatch;
use crate::db;
use crate::error::IoContext;
use crate::fs::StdFs;
use crate::iter::ScanIter;
use crate::options::Options;
use crate::stats::Stats;
use crate::types::{Entry, Key, Value};
use crate::{Error, Result};

/// An open database on std files, with its two background worker threads. Dropping it closes
/// it (as [`Db::close`], whose error it can only log).
pub struct Db {
    db: db::Db<StdFs>,
    /// The flush and compaction workers' threads.
    workers: Vec<JoinHandle<()>>,
    /// Holds the directory lock until drop.
    _lock: std::fs::File,
}

impl Db {
    /// Opens the database in `dir`, creating it if needed, and recovers every acknowledged
    /// write (see [`crate::Db::open`]). Refused while another process has it open.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = dir.as_ref();
        let lock = lock_dir(dir)?;
        let db = block_on(db::Db::open(StdFs, dir, options))?;
        // A thread each: with std files a worker blocks in every read and write, so one
        // thread running both would hold flushes back behind a merge.
        let mut opened = Db {
            db,
            workers: Vec::new(),
            _lock: lock,
        };
        // On failure `opened` drops, which closes the database and joins the workers started
        // so far.
        let flushing = opened.db.clone();
        opened
            .workers
            .push(spawn_worker("shoal-engine-flush", dir, move || {
                block_on(flushing.flush_worker())
            })?);
        let compacting = opened.db.clone();
        opened
            .workers
            .push(spawn_worker("shoal-engine-compact", dir, move || {
                block_on(compacting.compaction_worker())
            })?);
        Ok(opened)
    }

    /// Stores `value` under `key`; returns once it is durable (see [`crate::Durability`]).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        block_on(self.db.put(key, value))
    }

    /// Deletes `key` (a tombstone); returns once it is durable.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        block_on(self.db.delete(key))
    }

    /// Applies `batch` atomically; returns once it is durable.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        block_on(self.db.write(batch))
    }

    /// The live value of `key`: `None` when absent, deleted or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        block_on(self.db.get(key))
    }

    /// The live entry of `key`, with its expiry.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        block_on(self.db.get_entry(key))
    }

    /// Live keys and values in `range`, in key order, as of the call: the iterator reads at
    /// that moment's sequence number, and the tables it reads stay until it is dropped. An
    /// error (I/O, corruption) ends it.
    pub fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Scan {
        Scan::new(block_on(self.db.scan(range)))
    }

    /// Live keys starting with `prefix`, with their values, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Scan {
        self.scan(prefix_range(prefix))
    }

    /// Live keys and values in `range`, in reverse key order. It reads the range forward and
    /// yields it backward, so it holds the whole range in memory: use it on bounded ranges.
    pub fn scan_rev(
        &self,
        range: impl RangeBounds<Vec<u8>>,
    ) -> std::vec::IntoIter<Result<(Key, Value)>> {
        reversed(self.scan(range))
    }

    /// Live keys in `range` with their entries (value and expiry), in key order.
    pub fn scan_entries(&self, range: impl RangeBounds<Vec<u8>>) -> ScanEntries {
        ScanEntries::new(block_on(self.db.scan(range)))
    }

    /// A consistent read-only view at this moment, kept until dropped: compaction keeps every
    /// version it needs.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            snapshot: self.db.snapshot(),
        }
    }

    /// Writes a checkpoint to `dest` (see [`crate::Db::checkpoint`]): a copy that opens as a
    /// database of its own, tables hard-linked.
    pub fn checkpoint(&self, dest: impl AsRef<Path>) -> Result<()> {
        block_on(self.db.checkpoint(dest))
    }

    /// Makes every write so far durable (for `Durability::Buffered`).
    pub fn sync(&self) -> Result<()> {
        block_on(self.db.sync())
    }

    /// Writes the memtable and every frozen one to tables.
    pub fn flush(&self) -> Result<()> {
        block_on(self.db.flush())
    }

    /// Runs compactions until every level is within its target (see [`crate::Db::compact`]).
    pub fn compact(&self) -> Result<()> {
        block_on(self.db.compact())
    }

    /// Counters, per-level shape and memory use (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        self.db.stats()
    }

    /// The tables of the current version (see [`crate::Db::tables`]).
    pub fn tables(&self) -> Vec<crate::manifest::TableMeta> {
        self.db.tables()
    }

    /// The last failure of a background flush or compaction, if any (see
    /// [`crate::Db::background_error`]).
    pub fn background_error(&self) -> Option<crate::BackgroundError> {
        self.db.background_error()
    }

    /// Closes the database and waits for its background threads.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let closed = block_on(self.db.close());
        for worker in self.workers.drain(..) {
            // A panicked worker has already reported itself; closing still succeeds.
            let _ = worker.join();
        }
        closed
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the database failed");
        }
    }
}

/// Rebuilds the database in `dir` from what every checksum proves good (see [`crate::repair`]).
/// The directory must not be open: its lock is held while repairing.
pub fn repair(dir: impl AsRef<Path>, options: &Options) -> Result<crate::repair::RepairReport> {
    let dir = dir.as_ref();
    let _lock = lock_dir(dir)?;
    block_on(crate::repair::repair(StdFs, dir, options))
}

/// Takes the directory's lock file (flock), so two processes never share it; held until the
/// returned file is dropped.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).at(dir)?;
    let lock_path = crate::filename::lock(dir);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .at(&lock_path)?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(Error::InvalidArgument(format!(
            "{} is in use by another process",
            dir.display()
        )));
    }
    Ok(lock)
}

fn spawn_worker(
    name: &str,
    dir: &Path,
    run: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(run)
        .at(dir)
}

/// A consistent read-only view of the database at one sequence number, kept until dropped.
pub struct Snapshot {
    snapshot: db::Snapshot<StdFs>,
}

impl Snapshot {
    /// The sequence number it reads at.
    pub fn seq(&self) -> crate::SeqNo {
        self.snapshot.seq()
    }

    /// The value of `key` as of the snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        block_on(self.snapshot.get(key))
    }

    /// Keys and values in `range` as of the snapshot, in key order.
    pub fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Scan {
        Scan::new(block_on(self.snapshot.scan(range)))
    }

    /// Keys starting with `prefix` as of the snapshot, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Scan {
        self.scan(prefix_range(prefix))
    }

    /// Keys and values in `range` as of the snapshot, in reverse key order (held in memory, as
    /// [`Db::scan_rev`]).
    pub fn scan_rev(
        &self,
        range: impl RangeBounds<Vec<u8>>,
    ) -> std::vec::IntoIter<Result<(Key, Value)>> {
        reversed(self.scan(range))
    }
}

/// Live keys and values of a range, in key order; see [`Db::scan`]. After an error it ends.
pub struct Scan {
    entries: ScanEntries,
}

impl Scan {
    fn new(iter: Result<ScanIter<StdFs>>) -> Scan {
        Scan {
            entries: ScanEntries::new(iter),
        }
    }
}

impl Iterator for Scan {
    type Item = Result<(Key, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.entries.next()?.map(|(key, entry)| (key, entry.value)))
    }
}

/// Live keys of a range with their entries (value and expiry), in key order; see
/// [`Db::scan_entries`]. After an error it ends.
pub struct ScanEntries {
    iter: Option<ScanIter<StdFs>>,
    /// An error opening the scan, returned by the first `next`.
    error: Option<Error>,
}

impl ScanEntries {
    fn new(iter: Result<ScanIter<StdFs>>) -> ScanEntries {
        match iter {
            Ok(iter) => ScanEntries {
                iter: Some(iter),
                error: None,
            },
            Err(e) => ScanEntries {
                iter: None,
                error: Some(e),
            },
        }
    }
}

impl Iterator for ScanEntries {
    type Item = Result<(Key, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let item = block_on(self.iter.as_mut()?.next()).transpose();
        if matches!(item, Some(Err(_)) | None) {
            self.iter = None;
        }
        item
    }
}

/// The range of keys starting with `prefix`: from it, up to (excluded) the next prefix of its
/// length, or unbounded when there is none (all bytes 0xFF).
fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.to_vec();
    let upper = loop {
        match end.pop() {
            None => break Bound::Unbounded,
            Some(0xFF) => continue,
            Some(b) => {
                end.push(b + 1);
                break Bound::Excluded(end);
            }
        }
    };
    (Bound::Included(prefix.to_vec()), upper)
}

/// A scan, backward: read forward whole, then yielded from the end. Stops after an error,
/// which comes last.
fn reversed(scan: Scan) -> std::vec::IntoIter<Result<(Key, Value)>> {
    let mut items = Vec::new();
    let mut failed = None;
    for item in scan {
        match item {
            Ok(kv) => items.push(Ok(kv)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    items.reverse();
    items.extend(failed.map(Err));
    items.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        use Bound::{Excluded, Included, Unbounded};
        assert_eq!(
            prefix_range(b"ab"),
            (Included(b"ab".to_vec()), Excluded(b"ac".to_vec()))
        );
        assert_eq!(
            prefix_range(&[1, 0xFF]),
            (Included(vec![1, 0xFF]), Excluded(vec![2]))
        );
        assert_eq!(
            prefix_range(&[0xFF, 0xFF]),
            (Included(vec![0xFF, 0xFF]), Unbounded)
        );
        assert_eq!(prefix_range(b""), (Included(vec![]), Unbounded));
    }
}
