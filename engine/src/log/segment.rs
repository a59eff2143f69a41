//! Segment files: their names, their preparation (preallocated before use: zero-filled, sparse,
//! or recycled from an obsolete segment), their retirement (kept as a free file for reuse, or
//! removed).
//!
//! A free file (`NNNNNN.free`, numbered as the segment it was) is an obsolete segment kept for
//! reuse: renaming it to the next segment's name costs one directory sync, where a new
//! zero-filled segment costs writing it whole. The log never reads a free file; its old
//! records carry their old segment's tag, so once renamed they read as stale.

use std::io;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::filename;
use crate::fs::{File, FileSystem, WRITE_ALIGN};

/// How a brand-new segment (no free file to recycle) is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// Written with zeros and synced: an fdatasync that allocates blocks costs about twice
    /// one that does not, so a log synced per write pays the fill once up front.
    ZeroFill,
    /// Extended to full size without writing (a sparse file, reading as zeros): a log that is
    /// rarely synced would write every byte twice for nothing.
    Sparse,
}

/// Zero-filling writes this much per call: large enough to stream at disk speed, small enough
/// to allocate once per segment.
const ZERO_FILL_CHUNK_BYTES: u64 = 1 << 20;

const _: () = assert!(ZERO_FILL_CHUNK_BYTES % WRITE_ALIGN as u64 == 0);

/// Creates segment `number` at its full size, durable (data and directory entry), so that
/// syncing records into it never grows the file; zero-filled or sparse as `how` says.
///
/// A half-prepared file is removed on failure (best effort); one left behind by a crash is
/// blank and is discarded when the log is opened.
pub async fn prepare_segment<F: FileSystem>(
    fs: &F,
    dir: &Path,
    number: u64,
    segment_bytes: u64,
    how: Preallocation,
) -> Result<F::File> {
    debug_assert!(segment_bytes % WRITE_ALIGN as u64 == 0);
    let path = filename::segment(dir, number);
    let result = async {
        let file = fs.create(&path).await.at(&path)?;
        extend_segment(&file, 0, segment_bytes, how).await?;
        fs.sync_dir(dir).await.at(dir)?;
        Ok(file)
    }
    .await;
    if result.is_err() {
        if let Err(e) = fs.remove(&path).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove half-prepared log segment");
        }
    }
    result
}

/// Extends segment `file` from `from` to `to` bytes (both multiples of [`WRITE_ALIGN`]) as
/// `how` says, durably, before any record is written past `from`: a reused free file smaller
/// than the segment it becomes, or a spare smaller than a record asks for.
pub async fn extend_segment<Fl: File>(
    file: &Fl,
    from: u64,
    to: u64,
    how: Preallocation,
) -> Result<()> {
    debug_assert!(from % WRITE_ALIGN as u64 == 0 && to % WRITE_ALIGN as u64 == 0);
    let path = file.path().to_path_buf();
    match how {
        Preallocation::ZeroFill => {
            let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(to.saturating_sub(from)) as usize];
            let mut pos = from;
            while pos < to {
                let len = (to - pos).min(zeros.len() as u64);
                file.write_at(pos, &zeros[..len as usize]).await.at(&path)?;
                pos += len;
            }
        }
        Preallocation::Sparse => file.set_len(to).await.at(&path)?,
    }
    file.sync_data().await.at(&path)
}

/// Renames free file `free` to segment `number`, durably, and opens it. Its old header names
/// another segment, so until the writer replaces it the segment reads as an unused tail.
pub async fn reuse_free<F: FileSystem>(
    fs: &F,
    dir: &Path,
    free: u64,
    number: u64,
) -> Result<F::File> {
    let from = filename::free(dir, free);
    let path = filename::segment(dir, number);
    fs.rename(&from, &path).await.at(&from)?;
    fs.sync_dir(dir).await.at(dir)?;
    fs.open(&path).await.at(&path)
}

/// Renames segment `number` to a free file, durably: to the log it is gone, as if removed.
pub async fn make_free<F: FileSystem>(fs: &F, dir: &Path, number: u64) -> Result<()> {
    let path = filename::segment(dir, number);
    fs.rename(&path, &filename::free(dir, number))
        .await
        .at(&path)?;
    fs.sync_dir(dir).await.at(dir)
}

/// Removes free file `number`, durably.
pub async fn remove_free<F: FileSystem>(fs: &F, dir: &Path, number: u64) -> Result<()> {
    remove_durably(fs, dir, &filename::free(dir, number)).await
}

/// Removes segment `number` and makes the removal durable before returning, so that removals
/// done oldest first can never leave a gap in the log after a crash. A file already gone
/// counts as removed.
pub async fn remove_segment<F: FileSystem>(fs: &F, dir: &Path, number: u64) -> Result<()> {
    remove_durably(fs, dir, &filename::segment(dir, number)).await
}

async fn remove_durably<F: FileSystem>(fs: &F, dir: &Path, path: &Path) -> Result<()> {
    match fs.remove(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::Error::io(path, e)),
    }
    fs.sync_dir(dir).await.at(dir)
}
