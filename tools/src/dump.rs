//! Human-readable dumps of Shoal's on-disk files, for `sstable-dump`: SSTables (footer,
//! properties, index, bloom filter, entries), commit-log and manifest segments, and the
//! manifest's replayed state. Everything is read through the engine's own decoders, so a dump
//! trusts exactly what the engine would trust; `verify` reports damage as an error.

pub mod escape;
mod log;
mod manifest;
mod table;

pub use log::{LogKind, dump_free_segment, dump_log, dump_log_dir};
pub use manifest::dump_manifest;
pub use table::dump_table;

use std::io::{self, Write};

use shoal_engine::{Entry, NO_EXPIRY, SeqNo, ValueKind};

use escape::quoted;

/// One version as a line, the same for table entries and logged batch operations.
fn write_entry(
    out: &mut impl Write,
    key: &[u8],
    seq: SeqNo,
    entry: &Entry,
    value_bytes: usize,
) -> io::Result<()> {
    let what = match entry.kind {
        ValueKind::Put => format!("put {}", quoted(&entry.value, value_bytes)),
        ValueKind::Delete => "delete".to_owned(),
    };
    let expiry = if entry.expires_at_ms == NO_EXPIRY {
        String::new()
    } else {
        format!(" expires {}", entry.expires_at_ms)
    };
    writeln!(
        out,
        "  {} seq {seq} {what}{expiry}",
        quoted(key, usize::MAX)
    )
}

/// What went wrong while dumping one file.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The engine refused the file (corruption is reported here, with file and offset).
    #[error(transparent)]
    Engine(#[from] shoal_engine::Error),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
    /// `verify` found damage the engine's reader stops at rather than reports.
    #[error("{0}")]
    Damaged(String),
}

/// What to print.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// Entries (table entries, or log operations) to print at most; `None` prints all.
    pub limit: Option<u64>,
    /// Print only entries of this user key.
    pub key: Option<Vec<u8>>,
    /// Values are cut after this many bytes (their length is printed).
    pub value_bytes: usize,
    /// Read every block and check every checksum; damage is an error.
    pub verify: bool,
}

impl Default for DumpOptions {
    fn default() -> DumpOptions {
        DumpOptions {
            limit: None,
            key: None,
            value_bytes: 64,
            verify: false,
        }
    }
}

impl DumpOptions {
    fn wants_key(&self, key: &[u8]) -> bool {
        self.key.as_deref().is_none_or(|k| k == key)
    }
}
