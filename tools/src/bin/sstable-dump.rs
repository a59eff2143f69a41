//! `sstable-dump`: prints Shoal's on-disk files for humans.
//!
//! ```sh
//! sstable-dump DB/000042.sst                 # footer, properties, bloom, index, entries
//! sstable-dump --verify --limit 0 DB/*.sst   # check every checksum; exit 1 on damage
//! sstable-dump --key 'user:\x01' DB/000042.sst
//! sstable-dump DB/log/000007.log             # a commit-log segment (also --log FILE)
//! sstable-dump DB/log/000003.free            # a recycled segment: what it used to be
//! sstable-dump --verify --limit 0 DB         # every log segment, live and recycled
//! sstable-dump --manifest DB                 # the manifest's edits and the table set
//! sstable-dump --repair DB                   # rebuild DB from every block that checks out
//! ```
//!
//! Exit status: 0 when every file was read (and, with `--verify`, is intact), 1 otherwise,
//! 2 for a usage error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use shoal_engine::filename::FileKind;
use shoal_tools::dump::{self, DumpError, DumpOptions, LogKind, escape};

/// Prints SSTables (footer, properties, index, bloom filter stats, entries), commit-log and
/// manifest segments, and the manifest's table set. Files ending in `.log` are dumped as log
/// segments (as manifest edits inside a `manifest` directory), `.free` files as recycled log
/// segments, a directory as its commit log (a database's `log`, or a log directory itself),
/// anything else as an SSTable.
#[derive(Parser, Debug)]
#[command(name = "sstable-dump", version)]
struct Args {
    /// SSTables, log segments, or database or log directories to dump.
    files: Vec<PathBuf>,
    /// Dump this file as a commit-log segment, whatever its name.
    #[arg(long, value_name = "FILE")]
    log: Vec<PathBuf>,
    /// Dump the manifest of this database directory (or manifest directory).
    #[arg(long, value_name = "DIR")]
    manifest: Option<PathBuf>,
    /// Print at most N entries (table entries or logged writes) per file; 0 prints none.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Print only the entries of this key (escapes such as \xNN and \n are decoded).
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// Read every block and check every checksum; exit 1 on any damage.
    #[arg(long)]
    verify: bool,
    /// Rebuild this database directory (closed) from what every checksum proves good: the
    /// intact tables, the readable blocks of damaged ones and the commit log; the old files go
    /// to DIR/lost/. For a database that no longer opens, or whose compactions fail on a
    /// table `--verify` reports damaged.
    #[arg(long, value_name = "DIR")]
    repair: Option<PathBuf>,
    /// Print at most this many bytes of each value.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    value_bytes: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let key = match args.key.as_deref().map(escape::unescape).transpose() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("sstable-dump: --key: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.repair {
        return match shoal_engine::blocking::repair(dir, &shoal_engine::Options::default()) {
            Ok(report) => {
                println!("{report:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sstable-dump: repair {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    if args.files.is_empty() && args.log.is_empty() && args.manifest.is_none() {
        eprintln!("sstable-dump: nothing to dump (see --help)");
        return ExitCode::from(2);
    }
    let opts = DumpOptions {
        limit: args.limit,
        key,
        value_bytes: args.value_bytes,
        verify: args.verify,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;
    let mut report = |what: &Path, result: Result<(), DumpError>, out: &mut dyn Write| {
        let _ = out.flush();
        if let Err(e) = result {
            eprintln!("sstable-dump: {}: {e}", what.display());
            failed = true;
        }
    };
    for path in &args.files {
        let kind = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(shoal_engine::filename::parse);
        let result = if path.is_dir() {
            dump::dump_log_dir(path, &opts, &mut out)
        } else if matches!(kind, Some(FileKind::Segment(_))) {
            dump::dump_log(path, LogKind::of(path), &opts, &mut out)
        } else if matches!(kind, Some(FileKind::Free(_))) {
            dump::dump_free_segment(path, &mut out)
        } else {
            dump::dump_table(path, &opts, &mut out)
        };
        report(path, result, &mut out);
    }
    for path in &args.log {
        let result = dump::dump_log(path, LogKind::Commit, &opts, &mut out);
        report(path, result, &mut out);
    }
    if let Some(dir) = &args.manifest {
        let result = dump::dump_manifest(dir, &opts, &mut out);
        report(dir, result, &mut out);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
