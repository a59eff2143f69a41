//! The blocking API, for programs without an async runtime: the same engine on std files,
//! its futures driven on the calling thread, and a thread each for the flush and compaction
//! workers.
//!
//! `Db` is `Send + Sync`: share it between threads with an `Arc`. Concurrent synchronous
//! writers share fdatasyncs (group commit) exactly as tasks on a shard do.

use std::fs::OpenOptions;
use std::ops::RangeBounds;
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
use crate::types::Entry;
use crate::{Error, Result};

pub struct Db {
    db: db::Db<StdFs>,
    /// The flush and compaction workers' threads.
    workers: Vec<JoinHandle<()>>,
    /// Holds the directory lock until drop.
    _lock: std::fs::File,
}

impl Db {
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

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        block_on(self.db.put(key, value))
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        block_on(self.db.delete(key))
    }

    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        block_on(self.db.write(batch))
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        block_on(self.db.get(key))
    }

    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        block_on(self.db.get_entry(key))
    }

    /// Live entries with keys in `range`, in key order, at the moment of the call.
    pub fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Result<Scan> {
        Ok(Scan {
            iter: block_on(self.db.scan(range))?,
        })
    }

    /// A consistent read-only view, kept until dropped.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            snapshot: self.db.snapshot(),
        }
    }

    pub fn sync(&self) -> Result<()> {
        block_on(self.db.sync())
    }

    pub fn flush(&self) -> Result<()> {
        block_on(self.db.flush())
    }

    /// Runs compactions until every level is within its target (see [`crate::Db::compact`]).
    pub fn compact(&self) -> Result<()> {
        block_on(self.db.compact())
    }

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

pub struct Snapshot {
    snapshot: db::Snapshot<StdFs>,
}

impl Snapshot {
    pub fn seq(&self) -> crate::SeqNo {
        self.snapshot.seq()
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        block_on(self.snapshot.get(key))
    }

    pub fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Result<Scan> {
        Ok(Scan {
            iter: block_on(self.snapshot.scan(range))?,
        })
    }
}

/// A blocking iterator over a scan.
pub struct Scan {
    iter: ScanIter<StdFs>,
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        block_on(self.iter.next()).transpose()
    }
}
