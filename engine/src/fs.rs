//! The small asynchronous file-system interface the engine is written against.
//!
//! Three implementations:
//! - [`StdFs`]: plain `std::fs` files. Every call completes on the calling thread; this is
//!   what the blocking, embeddable API uses.
//! - `DmaFs` (feature `dma`): glommio DMA files, O_DIRECT on io_uring, for the node's shards.
//! - `FaultFs`: in memory, with injected faults (torn writes, lost unsynced data on a
//!   simulated crash, EIO and ENOSPC on chosen calls) for tests.
//!
//! The contract is shaped by O_DIRECT so all three behave alike: writes are positional and
//! both their offset and length are multiples of [`WRITE_ALIGN`] (the writers keep their own
//! aligned buffers and pad with zeros); reads take any offset and length. Data is durable only
//! after [`File::sync_data`], and a new, renamed or removed directory entry only after
//! [`FileSystem::sync_dir`] of its directory.
//!
//! The futures are not `Send`: each shard owns its files on its own thread.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;

mod std_fs;
pub use std_fs::StdFs;
mod fault;
pub use fault::{FaultError, FaultFile, FaultFs, FaultOp, FaultRule};
#[cfg(feature = "dma")]
mod dma;
#[cfg(feature = "dma")]
pub use dma::{DmaFs, DmaFsFile};

/// Offset and length granularity of every write. 4 KiB is the physical block size of 4Kn
/// disks and a whole number of 512-byte sectors, so it is safe on both.
pub const WRITE_ALIGN: usize = 4096;

/// True when `n` is a multiple of [`WRITE_ALIGN`].
pub fn is_aligned(n: u64) -> bool {
    n % WRITE_ALIGN as u64 == 0
}

/// Panics unless a write at `pos` of `len` bytes keeps the contract: both multiples of
/// [`WRITE_ALIGN`]. A misaligned write is a bug in the writer, never a result of input.
pub fn assert_aligned_write(pos: u64, len: usize) {
    assert!(is_aligned(pos), "unaligned write offset {pos}");
    assert!(is_aligned(len as u64), "unaligned write length {len}");
}

/// Rounds `n` up to the next multiple of [`WRITE_ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(WRITE_ALIGN as u64) * WRITE_ALIGN as u64
}

#[allow(
    async_fn_in_trait,
    reason = "the engine is generic over the file system; no dyn use"
)]
/// A directory tree of files, as the engine uses one.
pub trait FileSystem: 'static {
    /// Its open file.
    type File: File;

    /// Creates (or truncates) a file opened for reading and writing.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Removes the file `path`.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Gives the file `from` a second name `to` (a hard link; `to` must not exist): a
    /// checkpoint shares immutable tables with the database instead of copying them.
    async fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`, in no particular order.
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and any missing parents.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

#[allow(
    async_fn_in_trait,
    reason = "the engine is generic over the file system; no dyn use"
)]
#[allow(
    clippy::len_without_is_empty,
    reason = "a file's length is read, never tested for emptiness"
)]
/// An open file: positional reads and aligned positional writes.
pub trait File: 'static {
    /// Reads up to `len` bytes at `pos`; fewer only at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Writes all of `buf` at `pos`. Both must be multiples of [`WRITE_ALIGN`].
    async fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync).
    async fn sync_data(&self) -> io::Result<()>;
    /// [`File::write_at`], then [`File::sync_data`]: resolves once the write has completed,
    /// returning the sync still to await, so a caller can start its next write while the
    /// flush runs. Where it can, an implementation starts the flush as the write completes,
    /// without waiting for the caller to run again (DMA: one io_uring link chain).
    async fn write_then_sync(&self, pos: u64, buf: &[u8]) -> io::Result<Syncing<'_>> {
        self.write_at(pos, buf).await?;
        Ok(Box::pin(self.sync_data()))
    }
    /// The file's length.
    async fn len(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) to `len` bytes.
    async fn set_len(&self, len: u64) -> io::Result<()>;
    /// The path it was opened at (for error messages).
    fn path(&self) -> &Path;
}

/// The fdatasync that [`File::write_then_sync`] leaves to await.
pub type Syncing<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + 'a>>;
