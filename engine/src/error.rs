//! The engine's error type. Corruption is kept apart from I/O so that a caller can tell
//! "the disk failed" from "the bytes on disk are wrong", and never mistakes one for data.

use std::io;
use std::path::PathBuf;

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an engine call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with the file it happened on.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The device is full. Nothing acknowledged before this error is lost.
    #[error("no space left on device writing {path}")]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// Bytes read back from a file are not what was written: a checksum, magic number,
    /// length or ordering check failed. The data is never returned.
    #[error("corruption in {path} at offset {offset}: {what}")]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Where in it (for a log, the record number).
        offset: u64,
        /// Which check failed.
        what: String,
    },
    /// The caller passed something the engine refuses (e.g. an oversized key).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier write to the commit log failed, so the log's tail is in an unknown state.
    /// Reads still work; writes are refused until the database is reopened, which recovers
    /// exactly what was made durable.
    #[error(
        "writes are disabled after an earlier log failure (reopen the database to recover): {0}"
    )]
    WritesDisabled(String),
    /// The database has been closed.
    #[error("database is closed")]
    Closed,
}

impl Error {
    /// Wraps an I/O error with the file it happened on, turning ENOSPC into [`Error::NoSpace`].
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace { path }
        } else {
            Error::Io { path, source }
        }
    }

    /// Corruption found in `path` at `offset`.
    pub fn corruption(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Error {
        Error::Corruption {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// True for [`Error::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}

/// Adds the file's path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
