//! glommio DMA files: O_DIRECT on io_uring, the node's production file system.
//!
//! Must be used inside a glommio executor. Two glommio 0.9 pitfalls shape this module:
//! - glommio probes, per thread and device, whether polled reads work by reading offset 0 of
//!   the first DMA file opened, and caches a wrong "yes" when that file is empty or sparse;
//!   every later read then fails with EOPNOTSUPP. [`DmaFs::new`] first opens and reads a file
//!   of real data in the data directory, once per thread and device.
//! - DMA buffers are not zeroed, so every write copies the caller's bytes over a whole buffer.
//!
//! Errors keep their raw OS error (glommio's own conversion drops it), so ENOSPC reaches
//! `Error::io` as ENOSPC.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use glommio::GlommioError;
use glommio::io::{Directory, DmaBuffer, DmaFile, OpenOptions};

use super::{File, FileSystem, assert_aligned_write};
#[cfg(feature = "dma-linked-sync")]
use super::{Syncing, is_aligned};

/// One block of real data: the probe must reach the device to be answered truthfully.
const PROBE_LEN: usize = 4096;

thread_local! {
    /// Devices (`st_dev`) whose polled-I/O probe this thread has already answered.
    static PROBED_DEVICES: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// The DMA file system. Construct it with [`DmaFs::new`] on the executor that will use it.
#[derive(Debug, Clone)]
pub struct DmaFs {
    _probed: (),
}

/// A DMA file: O_DIRECT, every write aligned, reads through no page cache.
#[derive(Debug)]
pub struct DmaFsFile {
    file: DmaFile,
    path: PathBuf,
}

/// glommio's errors as `io::Error`, keeping the OS error code.
fn to_io(e: GlommioError<()>) -> io::Error {
    match e {
        GlommioError::IoError(e) => e,
        GlommioError::EnhancedIoError { source, .. } => source,
        other => other.into(),
    }
}

/// Answers glommio's polled-I/O probe for `dir`'s device with a file of real data.
async fn warm_dma_probe(dir: &Path) -> io::Result<()> {
    let p = crate::filename::dma_probe(dir);
    std::fs::write(&p, [0xA5u8; PROBE_LEN])?;
    let f = DmaFile::open(&p).await.map_err(to_io)?;
    let read = f.read_at(0, PROBE_LEN).await.map_err(to_io);
    let closed = f.close().await.map_err(to_io);
    std::fs::remove_file(&p)?;
    read?;
    closed
}

impl DmaFs {
    /// Creates `data_dir` if needed and warms glommio's polled-I/O probe for its device on
    /// this thread. Call it before opening any other DMA file on this executor's thread.
    pub async fn new(data_dir: &Path) -> io::Result<DmaFs> {
        std::fs::create_dir_all(data_dir)?;
        let dev = std::fs::metadata(data_dir)?.dev();
        if !PROBED_DEVICES.with(|s| s.borrow().contains(&dev)) {
            warm_dma_probe(data_dir).await?;
            PROBED_DEVICES.with(|s| s.borrow_mut().insert(dev));
        }
        Ok(DmaFs { _probed: () })
    }
}

impl FileSystem for DmaFs {
    type File = DmaFsFile;

    async fn create(&self, path: &Path) -> io::Result<DmaFsFile> {
        // Read+write: `DmaFile::create` is write-only and its reads fail with EBADF.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        Ok(DmaFsFile {
            file,
            path: path.to_owned(),
        })
    }

    async fn open(&self, path: &Path) -> io::Result<DmaFsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        Ok(DmaFsFile {
            file,
            path: path.to_owned(),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(to_io)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        glommio::io::rename(from, to).await.map_err(to_io)
    }

    async fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        // Rare and metadata-only: glommio has no link operation.
        std::fs::hard_link(from, to)
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = Directory::open(dir).await.map_err(to_io)?;
        let synced = d.sync().await.map_err(to_io);
        let closed = d.close().await.map_err(to_io);
        synced?;
        closed
    }
}

impl DmaFsFile {
    /// `bytes` in a DMA buffer of their length. Every byte is overwritten: DMA buffers come
    /// back with stale contents.
    fn dma_copy(&self, bytes: &[u8]) -> DmaBuffer {
        let mut dma = self.file.alloc_dma_buffer(bytes.len());
        dma.as_bytes_mut().copy_from_slice(bytes);
        dma
    }
}

impl File for DmaFsFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        // Aligned reads sliced here: glommio's unaligned `read_at` can return bytes past the
        // end of file (uninitialised buffer) when the read starts mid-block near EOF.
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = pos
                .checked_add(out.len() as u64)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            let want = len - out.len();
            let start = self.file.align_down(at);
            let skip = (at - start) as usize;
            let size = self.file.align_up((skip + want) as u64) as usize;
            let got = self
                .file
                .read_at_aligned(start, size)
                .await
                .map_err(to_io)?;
            let usable = got.len().saturating_sub(skip).min(want);
            if usable == 0 {
                break;
            }
            out.extend_from_slice(&got[skip..skip + usable]);
        }
        Ok(out)
    }

    async fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()> {
        assert_aligned_write(pos, buf.len());
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .file
                .write_at(self.dma_copy(&buf[done..]), pos + done as u64)
                .await
                .map_err(to_io)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            done += n;
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(to_io)
    }

    /// One io_uring link chain, so the flush starts as the write completes. Without the
    /// `dma-linked-sync` feature (stock glommio has no linked write), the trait's default:
    /// the write, then the fdatasync once the caller runs again.
    #[cfg(feature = "dma-linked-sync")]
    async fn write_then_sync(&self, pos: u64, buf: &[u8]) -> io::Result<Syncing<'_>> {
        assert_aligned_write(pos, buf.len());
        let (write, sync) = self.file.write_at_then_fdatasync(self.dma_copy(buf), pos);
        let n = write.await.map_err(to_io)?;
        if n == buf.len() {
            return Ok(Box::pin(async move { sync.await.map_err(to_io) }));
        }
        // A short write cancelled the linked sync (ECANCELED): write the rest, then sync alone.
        let _cancelled = sync.await;
        if n == 0 || !is_aligned(n as u64) {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short direct write: {n} of {} bytes", buf.len()),
            ));
        }
        self.write_at(pos + n as u64, &buf[n..]).await?;
        Ok(Box::pin(self.sync_data()))
    }

    async fn len(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(to_io)
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(to_io)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests;
