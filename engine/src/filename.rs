//! Every file the engine keeps, by name: the one place that builds or parses them (as
//! LevelDB's `db/filename.h`). A database directory (layout version [`LAYOUT_VERSION`]):
//!
//! ```text
//! DIR/
//!   000042.sst            SSTable 42 (file numbers come from the manifest's `next_file`)
//!   LOCK                  held with flock while a blocking::Db has the directory open
//!   .dma-probe            DmaFs's warm-up read of real data; removed right after
//!   log/                  the commit log
//!     000007.log          segment 7 (a log's own numbering)
//!     000005.free         segment 5, retired, kept to be renamed into a later segment
//!     CLOSED              where the records end, after a clean close (log/closed.rs)
//!   manifest/             the manifest: a log of table-set edits, laid out as log/
//!     000003.log
//!     000002.free
//!     CLOSED
//!   manifest.repair/      the manifest `repair` builds, renamed to manifest/ when complete
//!   lost/                 what `repair` set aside, one directory per repair
//!     repair-000043/      named for the first table that repair wrote
//!       000042.sst        the tables it read (kept whole, salvaged, or unreadable)
//!       manifest/         the manifest it replaced
//!       log/000007.log    the commit-log segments it read
//! ```
//!
//! A checkpoint in progress is built in `DEST.tmp` beside its destination, renamed to `DEST`
//! once complete. Names of the form `NNNNNN.ext` have at least six digits and any number of
//! them; nothing else in the directory is the engine's.

use std::path::{Path, PathBuf};

/// Version of the directory layout drawn above. The files carry their own format versions
/// (log segments, manifest edits, write batches, SSTables); this one changes only when files
/// move, appear or change names, so that a reader of another layout refuses the directory
/// instead of missing files.
pub const LAYOUT_VERSION: u32 = 1;

/// Extension of SSTables.
pub const TABLE_EXT: &str = "sst";
/// Extension of log segments (commit log and manifest).
pub const SEGMENT_EXT: &str = "log";
/// Extension of retired log segments kept for reuse.
pub const FREE_EXT: &str = "free";
/// Extension of a checkpoint directory while it is being built.
pub const TMP_EXT: &str = "tmp";

/// The commit log's directory, inside the database directory.
pub const LOG_DIR: &str = "log";
/// The manifest's directory, inside the database directory.
pub const MANIFEST_DIR: &str = "manifest";
/// Where `repair` sets aside what it could not use, inside the database directory.
pub const LOST_DIR: &str = "lost";
/// Where `repair` builds the new manifest, inside the database directory.
pub const REPAIR_MANIFEST_DIR: &str = "manifest.repair";
/// The blocking API's lock file.
pub const LOCK: &str = "LOCK";
/// A log's clean-close record, inside the log's directory.
pub const LOG_CLOSED: &str = "CLOSED";
/// DmaFs's probe file, inside the directory it is made for.
pub const DMA_PROBE: &str = ".dma-probe";

/// What a name in a database or log directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An SSTable and its number.
    Table(u64),
    /// A log segment and its number.
    Segment(u64),
    /// A retired log segment kept for reuse, and its number.
    Free(u64),
}

/// What the file name `name` (no directory) is; `None` for any name the engine does not
/// number.
pub fn parse(name: &str) -> Option<FileKind> {
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.len() < 6 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = stem.parse().ok()?;
    match ext {
        TABLE_EXT => Some(FileKind::Table(number)),
        SEGMENT_EXT => Some(FileKind::Segment(number)),
        FREE_EXT => Some(FileKind::Free(number)),
        _ => None,
    }
}

/// `dir/NNNNNN.ext`.
fn numbered(dir: &Path, number: u64, ext: &str) -> PathBuf {
    dir.join(format!("{number:06}.{ext}"))
}

/// SSTable `number` of the database in `dir`.
pub fn table(dir: &Path, number: u64) -> PathBuf {
    numbered(dir, number, TABLE_EXT)
}

/// Segment `number` of the log in `log_dir`.
pub fn segment(log_dir: &Path, number: u64) -> PathBuf {
    numbered(log_dir, number, SEGMENT_EXT)
}

/// Free file `number` of the log in `log_dir`.
pub fn free(log_dir: &Path, number: u64) -> PathBuf {
    numbered(log_dir, number, FREE_EXT)
}

/// The clean-close record of the log in `log_dir`.
pub fn log_closed(log_dir: &Path) -> PathBuf {
    log_dir.join(LOG_CLOSED)
}

/// The commit log's directory of the database in `dir`.
pub fn log_dir(dir: &Path) -> PathBuf {
    dir.join(LOG_DIR)
}

/// The manifest's directory of the database in `dir`.
pub fn manifest_dir(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_DIR)
}

/// Where `repair` sets aside what it could not use.
pub fn lost_dir(dir: &Path) -> PathBuf {
    dir.join(LOST_DIR)
}

/// Where `repair` builds the new manifest of the database in `dir`.
pub fn repair_manifest(dir: &Path) -> PathBuf {
    dir.join(REPAIR_MANIFEST_DIR)
}

/// The lock file of the database in `dir`.
pub fn lock(dir: &Path) -> PathBuf {
    dir.join(LOCK)
}

/// DmaFs's probe file in `dir`.
pub fn dma_probe(dir: &Path) -> PathBuf {
    dir.join(DMA_PROBE)
}

/// Where a checkpoint to `dest` is built before it is renamed into place.
pub fn checkpoint_tmp(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".");
    name.push(TMP_EXT);
    dest.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let d = Path::new("d");
        assert_eq!(table(d, 42), Path::new("d/000042.sst"));
        assert_eq!(segment(d, 42), Path::new("d/000042.log"));
        assert_eq!(free(d, 42), Path::new("d/000042.free"));
        assert_eq!(table(d, 1_234_567), Path::new("d/1234567.sst"));
        for (path, kind) in [
            (table(d, 7), FileKind::Table(7)),
            (segment(d, 1 << 40), FileKind::Segment(1 << 40)),
            (free(d, 0), FileKind::Free(0)),
        ] {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse(name), Some(kind));
        }
        for other in [
            ".log",
            "42.log",
            "00004x.log",
            "+00042.log",
            "000042log",
            "000042.sst.tmp",
            "000042.txt",
            "LOCK",
            "CLOSED",
            ".dma-probe",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
        assert_eq!(
            checkpoint_tmp(Path::new("/b/snap")),
            Path::new("/b/snap.tmp")
        );
    }
}
