//! Segment files: their names, their preparation (preallocated and zero-filled before use) and
//! their removal.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::fs::{File, FileSystem, WRITE_ALIGN, numbered_path};

/// Extension of segment files: `NNNNNN.log`.
pub const SEGMENT_EXT: &str = "log";

/// Zero-filling writes this much per call: large enough to stream at disk speed, small enough
/// to allocate once per segment.
const ZERO_FILL_CHUNK_BYTES: u64 = 1 << 20;

const _: () = assert!(ZERO_FILL_CHUNK_BYTES % WRITE_ALIGN as u64 == 0);

pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    numbered_path(dir, number, SEGMENT_EXT)
}

/// The segment number in a file name such as `000042.log`; `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Creates segment `number` at its full size, zero-filled and durable (data and directory
/// entry), so that syncing records into it never grows the file (a growing fdatasync costs
/// about twice as much) and its padding is already what the writer pads with.
///
/// A half-prepared file is removed on failure (best effort); one left behind by a crash is
/// blank and is discarded when the log is opened.
pub async fn prepare_segment<F: FileSystem>(
    fs: &F,
    dir: &Path,
    number: u64,
    segment_bytes: u64,
) -> Result<F::File> {
    debug_assert!(segment_bytes % WRITE_ALIGN as u64 == 0);
    let path = segment_path(dir, number);
    let result = async {
        let file = fs.create(&path).await.at(&path)?;
        let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(segment_bytes) as usize];
        let mut pos = 0;
        while pos < segment_bytes {
            let len = (segment_bytes - pos).min(zeros.len() as u64);
            file.write_at(pos, &zeros[..len as usize]).await.at(&path)?;
            pos += len;
        }
        file.sync_data().await.at(&path)?;
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

/// Removes segment `number` and makes the removal durable before returning, so that removals
/// done oldest first can never leave a gap in the log after a crash. A file already gone
/// counts as removed.
pub async fn remove_segment<F: FileSystem>(fs: &F, dir: &Path, number: u64) -> Result<()> {
    let path = segment_path(dir, number);
    match fs.remove(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::Error::io(&path, e)),
    }
    fs.sync_dir(dir).await.at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_segment_name("000042.log"), Some(42));
        assert_eq!(parse_segment_name("1234567.log"), Some(1_234_567));
        assert_eq!(parse_segment_name(".log"), None);
        assert_eq!(parse_segment_name("000042.sst"), None);
        assert_eq!(parse_segment_name("00004x.log"), None);
        assert_eq!(parse_segment_name("+42.log"), None);
        assert_eq!(parse_segment_name("000042log"), None);
        assert_eq!(segment_path(Path::new("d"), 42), Path::new("d/000042.log"));
    }
}
