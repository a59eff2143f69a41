//! Dumping the manifest: every segment's edits in order, then the table set they replay to.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use shoal_engine::Error;
use shoal_engine::filename::{self, FileKind};
use shoal_engine::fs::StdFs;
use shoal_engine::log::read_segment;
use shoal_engine::manifest::{Edit, ManifestState};

use super::log::{LogKind, damage, describe_table, print_records};
use super::{DumpError, DumpOptions};

/// Prints the manifest in `dir` (a database directory, or its `manifest` directory) and the
/// state it replays to. With `verify`, damage or an edit that contradicts the state is an
/// error.
pub fn dump_manifest(
    dir: &Path,
    opts: &DumpOptions,
    out: &mut impl Write,
) -> Result<(), DumpError> {
    let dir = if filename::manifest_dir(dir).is_dir() {
        filename::manifest_dir(dir)
    } else {
        dir.to_path_buf()
    };
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            match filename::parse(path.file_name()?.to_str()?)? {
                FileKind::Segment(number) => Some((number, path)),
                _ => None,
            }
        })
        .collect();
    segments.sort();
    writeln!(
        out,
        "manifest {} ({} segments)",
        dir.display(),
        segments.len()
    )?;
    let mut state = ManifestState::default();
    let mut problems = Vec::new();
    for (_, path) in &segments {
        let dump = block_on(read_segment(&StdFs, path))?;
        writeln!(out, "segment {} ({} bytes)", path.display(), dump.file_len)?;
        print_records(
            path,
            LogKind::Manifest,
            &dump,
            &DumpOptions {
                limit: None,
                ..opts.clone()
            },
            out,
        )?;
        problems.extend(damage(&dump).map(|d| format!("{}: {d}", path.display())));
        for r in &dump.records {
            let edit = Edit::decode(&r.payload)
                .ok_or_else(|| Error::corruption(path, r.offset, "malformed manifest edit"))?;
            if let Err(why) = state.apply(edit) {
                problems.push(format!("{}: record {}: {why}", path.display(), r.record_no));
            }
        }
    }
    writeln!(out, "state:")?;
    writeln!(out, "  log start: {}", state.log_start)?;
    writeln!(out, "  next file: {}", state.next_file)?;
    writeln!(out, "  last seq: {}", state.last_seq)?;
    writeln!(out, "  tables: {}", state.tables.len())?;
    for t in state.tables.values() {
        writeln!(out, "    {}", describe_table(t))?;
    }
    if opts.verify {
        if !problems.is_empty() {
            return Err(DumpError::Damaged(problems.join("; ")));
        }
        writeln!(out, "verify: ok")?;
    }
    Ok(())
}
