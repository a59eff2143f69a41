//! Dumping one log segment: its header, every valid record (decoded as a write batch or a
//! manifest edit), and where and why reading stopped; a recycled (`.free`) segment as what it
//! is; and a whole log directory, segment by segment.

use std::io::Write;
use std::path::Path;

use futures_lite::future::block_on;
use shoal_engine::batch;
use shoal_engine::filename::{self, FileKind};
use shoal_engine::fs::StdFs;
use shoal_engine::log::{HeaderState, SegmentDump, StopReason, read_segment};
use shoal_engine::manifest::{Edit, TableMeta};

use super::escape::quoted;
use super::{DumpError, DumpOptions, write_entry};

/// What the records of a segment hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// Commit log: write batches.
    Commit,
    /// Manifest: table-set edits.
    Manifest,
}

impl LogKind {
    /// Manifest segments live in a directory named `manifest`.
    pub fn of(path: &Path) -> LogKind {
        let in_manifest = path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == filename::MANIFEST_DIR);
        if in_manifest {
            LogKind::Manifest
        } else {
            LogKind::Commit
        }
    }
}

/// Prints a recycled segment (`NNNNNN.free`): an obsolete segment the log keeps to rename
/// into its next one. Nothing in it is replayed, so its contents are never damage: the
/// header and record count of the segment it used to be are printed for reference.
pub fn dump_free_segment(path: &Path, out: &mut impl Write) -> Result<(), DumpError> {
    let dump = block_on(read_segment(&StdFs, path))?;
    let was = match &dump.header {
        HeaderState::Valid(h) => format!(
            "segment {} from record {}, {} intact records",
            h.segment_no,
            h.first_record,
            dump.records.len()
        ),
        HeaderState::Blank => "blank".to_owned(),
        HeaderState::Invalid(_) => "unreadable header".to_owned(),
    };
    writeln!(
        out,
        "free segment {} ({} bytes): recycled, not part of the log; it held {was}",
        path.display(),
        dump.file_len
    )?;
    Ok(())
}

/// Prints every segment of a commit-log directory (or of a database directory's `log`), in
/// number order: live segments as [`dump_log`] does, recycled ones as [`dump_free_segment`].
/// Other files are named and skipped.
pub fn dump_log_dir(dir: &Path, opts: &DumpOptions, out: &mut impl Write) -> Result<(), DumpError> {
    let log_dir = filename::log_dir(dir);
    let dir: &Path = if log_dir.is_dir() { &log_dir } else { dir };
    let io = |e| DumpError::Engine(shoal_engine::Error::io(dir, e));
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    paths.sort();
    writeln!(out, "log directory {}", dir.display())?;
    let mut first_damage = None;
    for path in &paths {
        let kind = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(filename::parse);
        if matches!(kind, Some(FileKind::Segment(_))) {
            let result = dump_log(path, LogKind::of(path), opts, out);
            match result {
                Err(DumpError::Damaged(what)) => {
                    writeln!(out, "verify: {what}")?;
                    first_damage.get_or_insert(what);
                }
                other => other?,
            }
        } else if matches!(kind, Some(FileKind::Free(_))) {
            dump_free_segment(path, out)?;
        } else {
            writeln!(out, "skipped {}: not a log segment", path.display())?;
        }
    }
    match first_damage {
        Some(what) => Err(DumpError::Damaged(what)),
        None => Ok(()),
    }
}

/// Prints the segment at `path`. With `verify`, a damaged header or a record that fails its
/// checksum is an error (after the dump); a zeroed tail is not.
pub fn dump_log(
    path: &Path,
    kind: LogKind,
    opts: &DumpOptions,
    out: &mut impl Write,
) -> Result<(), DumpError> {
    let dump = block_on(read_segment(&StdFs, path))?;
    writeln!(
        out,
        "log segment {} ({kind:?}, {} bytes)",
        path.display(),
        dump.file_len
    )?;
    print_records(path, kind, &dump, opts, out)?;
    let damage = damage(&dump);
    if opts.verify {
        if let Some(what) = damage {
            return Err(DumpError::Damaged(format!("{}: {what}", path.display())));
        }
        writeln!(out, "verify: ok")?;
    }
    Ok(())
}

/// Prints the records of an already read segment.
pub(super) fn print_records(
    path: &Path,
    kind: LogKind,
    dump: &SegmentDump,
    opts: &DumpOptions,
    out: &mut impl Write,
) -> Result<(), DumpError> {
    match &dump.header {
        HeaderState::Valid(h) => writeln!(
            out,
            "header: segment {} first record {}",
            h.segment_no, h.first_record
        )?,
        HeaderState::Blank => writeln!(out, "header: blank (prepared, never written)")?,
        HeaderState::Invalid(why) => writeln!(out, "header: INVALID: {why}")?,
    }
    let mut printed = 0u64;
    for r in &dump.records {
        if opts.limit.is_some_and(|l| printed >= l) {
            break;
        }
        match kind {
            LogKind::Commit => {
                let b = batch::decode(&r.payload, path, r.record_no)?;
                let shown: Vec<_> = b
                    .ops
                    .iter()
                    .enumerate()
                    .filter(|(_, (k, _))| opts.wants_key(k))
                    .collect();
                if shown.is_empty() {
                    continue;
                }
                writeln!(
                    out,
                    "record {} offset {} length {}: batch of {} from seq {}",
                    r.record_no,
                    r.offset,
                    r.payload.len(),
                    b.ops.len(),
                    b.first_seq
                )?;
                for (i, (key, entry)) in shown {
                    write_entry(out, key, b.first_seq + i as u64, entry, opts.value_bytes)?;
                }
            }
            LogKind::Manifest => {
                let edit = Edit::decode(&r.payload).ok_or_else(|| {
                    shoal_engine::Error::corruption(path, r.offset, "malformed manifest edit")
                })?;
                writeln!(
                    out,
                    "record {} offset {} length {}: {}",
                    r.record_no,
                    r.offset,
                    r.payload.len(),
                    describe_edit(&edit)
                )?;
                let added: Vec<&TableMeta> = match &edit {
                    Edit::Snapshot(s) => s.tables.values().collect(),
                    Edit::Change { added, .. } => added.iter().collect(),
                };
                for t in added {
                    writeln!(out, "  + {}", describe_table(t))?;
                }
                if let Edit::Change { removed, .. } = &edit {
                    for n in removed {
                        writeln!(out, "  - table {n}")?;
                    }
                }
            }
        }
        printed += 1;
    }
    if let Some(end) = dump.end {
        writeln!(
            out,
            "end: offset {} next record {}: {}",
            end.offset, end.next_record, end.reason
        )?;
    }
    Ok(())
}

/// Why the segment is not a clean sequence of records followed by zeros, if it is not.
pub(super) fn damage(dump: &SegmentDump) -> Option<String> {
    if let HeaderState::Invalid(why) = &dump.header {
        return Some(format!("invalid header: {why}"));
    }
    let end = dump.end?;
    match end.reason {
        StopReason::EndOfSegment | StopReason::ZeroLength | StopReason::StaleRecord(_) => None,
        StopReason::BadChecksum | StopReason::ImpossibleLength(_) => Some(format!(
            "{} at offset {} (record {}): a torn write if this is the newest segment after a \
             crash, old bytes of a recycled segment past its last record, damage otherwise",
            end.reason, end.offset, end.next_record
        )),
    }
}

pub(super) fn describe_edit(edit: &Edit) -> String {
    match edit {
        Edit::Snapshot(s) => format!(
            "snapshot: {} tables, log start {}, next file {}, last seq {}",
            s.tables.len(),
            s.log_start,
            s.next_file,
            s.last_seq
        ),
        Edit::Change {
            added,
            removed,
            log_start,
            next_file,
            last_seq,
        } => format!(
            "change: {} added, {} removed, log start {log_start}, next file {next_file}, last seq {last_seq}",
            added.len(),
            removed.len()
        ),
    }
}

pub(super) fn describe_table(t: &TableMeta) -> String {
    format!(
        "table {} level {} {} bytes {} entries ({} tombstones) seq {}..={} keys {}..{}",
        t.number,
        t.level,
        t.file_size,
        t.entries,
        t.tombstones,
        t.min_seq,
        t.max_seq,
        quoted(&t.smallest, 32),
        quoted(&t.largest, 32)
    )
}
