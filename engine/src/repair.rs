//! Repair: rebuilds a database that no longer opens, or whose compactions fail on a damaged
//! table, from what every checksum proves good (LevelDB's `RepairDB`).
//!
//! 1. Every table is read in full. One whose every block and meta block checks out is kept
//!    whole; from a damaged one, each data block whose checksum and decoding pass is kept, and
//!    the rest is lost (counted). A table whose footer or index is unreadable gives nothing.
//! 2. Every commit-log segment is read up to its first damaged record.
//! 3. Everything kept is merged, each (key, sequence number) once, into new tables in the
//!    bottom level, durable before anything else changes.
//! 4. A new manifest listing only those tables is written beside the old one and renamed into
//!    its place; the old manifest, the old tables and the log segments (all of whose good
//!    records are now in tables) are moved to `lost/` (see [`crate::filename`]).
//!
//! Nothing is deleted: what repair did not use stays in `lost/` for whoever wants to look. A
//! crash during repair leaves the old files where they were or in `lost/`, and running repair
//! again finishes the job (a crash between the two renames of step 4 leaves no manifest: open
//! then refuses the unlisted tables as corruption, and repair rebuilds).
//!
//! Repair needs the database closed. Versions are kept as they were (no snapshot, tombstone or
//! expiry rule drops anything): the next compactions do that as usual.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::BlockCache;
use crate::error::IoContext;
use crate::filename::{self, FileKind};
use crate::fs::FileSystem;
use crate::log::read_segment;
use crate::manifest::{LEVELS, ManifestState, TableMeta};
use crate::options::Options;
use crate::sstable::{Table, TableBuilder, TableIter, TableOptions, internal_cmp};
use crate::types::{Entry, SeqNo};
use crate::{Error, Result, batch};

/// Where repaired tables go: the bottom level, which takes a sorted run of any size.
const REPAIRED_LEVEL: u32 = LEVELS - 1;

/// What a repair found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Tables whose every checksum passed.
    pub tables_intact: u64,
    /// Damaged tables whose readable blocks were kept.
    pub tables_damaged: u64,
    /// Data blocks of damaged tables that failed their checksum or decoding: their entries
    /// are lost.
    pub blocks_lost: u64,
    /// Tables with an unreadable footer, index or meta block: nothing in them was kept.
    pub tables_unreadable: u64,
    /// Commit-log records replayed into the new tables.
    pub log_records: u64,
    /// Versions written to the new tables.
    pub entries: u64,
    /// The new tables.
    pub tables_written: u64,
    /// Where the old files went.
    pub lost_dir: PathBuf,
}

/// Repairs the database in `dir` (closed), with `options` for the new tables.
pub async fn repair<F: FileSystem>(fs: F, dir: &Path, options: &Options) -> Result<RepairReport> {
    let fs = Arc::new(fs);
    let dir = std::path::absolute(dir).at(dir)?;
    let cache = Arc::new(BlockCache::new(options.block_cache_bytes.min(16 << 20)));
    let mut report = RepairReport::default();

    let mut table_numbers = Vec::new();
    for name in fs.list_dir(&dir).await.at(&dir)? {
        if let Some(FileKind::Table(n)) = filename::parse(&name) {
            table_numbers.push(n);
        }
    }
    table_numbers.sort_unstable();

    // Intact tables are streamed; entries from damaged tables and the log are gathered here,
    // each (key, seq) once.
    let mut intact = Vec::new();
    let mut gathered: BTreeMap<(Vec<u8>, std::cmp::Reverse<SeqNo>), Entry> = BTreeMap::new();
    for &number in &table_numbers {
        let path = filename::table(&dir, number);
        let file = fs.open(&path).await.at(&path)?;
        let table = match Table::open(file, number, Arc::clone(&cache)).await {
            Ok(table) => Arc::new(table),
            Err(Error::Corruption { .. }) => {
                report.tables_unreadable += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        match table.verify().await {
            Ok(()) => {
                report.tables_intact += 1;
                intact.push(table);
            }
            Err(Error::Corruption { .. }) => {
                report.tables_damaged += 1;
                for i in 0..table.index_entries().count() {
                    match table.block_entries(i).await {
                        Ok(entries) => {
                            for (key, seq, entry) in entries {
                                gathered.insert((key, std::cmp::Reverse(seq)), entry);
                            }
                        }
                        Err(Error::Corruption { .. }) => report.blocks_lost += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }

    let log_dir = filename::log_dir(&dir);
    let mut log_segments = Vec::new();
    let mut next_record = 0u64;
    if let Ok(names) = fs.list_dir(&log_dir).await {
        for name in names {
            if let Some(FileKind::Segment(n)) = filename::parse(&name) {
                log_segments.push(n);
            }
        }
    }
    log_segments.sort_unstable();
    for &number in &log_segments {
        let path = filename::segment(&log_dir, number);
        let dump = read_segment(&*fs, &path).await?;
        for record in dump.records {
            // A record that does not decode is damage the checksum missed: skip it.
            let Ok(decoded) = batch::decode(&record.payload, &path, record.record_no) else {
                continue;
            };
            report.log_records += 1;
            next_record = next_record.max(record.record_no + 1);
            for (i, (key, entry)) in decoded.ops.into_iter().enumerate() {
                let seq = decoded.first_seq + i as u64;
                gathered.insert((key, std::cmp::Reverse(seq)), entry);
            }
        }
    }

    // The merge: intact tables, each in table order, and the gathered entries.
    let first_new = table_numbers.last().map_or(1, |n| n + 1);
    let mut next_file = first_new;
    let mut outputs: Vec<TableMeta> = Vec::new();
    let mut last_seq = 0;
    {
        let mut sources: Vec<Peeked<F>> = Vec::with_capacity(intact.len());
        for table in &intact {
            let mut iter = TableIter::without_cache_fill(Arc::clone(table));
            let head = iter.next().await?;
            sources.push(Peeked { iter, head });
        }
        let mut gathered = gathered.into_iter().peekable();
        let table_options = TableOptions::from_options(options);
        let mut building: Option<(TableBuilder<F::File>, u64)> = None;
        let mut last: Option<(Vec<u8>, SeqNo)> = None;
        loop {
            // The smallest head in table order among the tables and the gathered entries.
            let mut best: Option<usize> = None;
            for (i, s) in sources.iter().enumerate() {
                if let Some((k, seq, _)) = &s.head {
                    let better = match best {
                        None => true,
                        Some(b) => {
                            let Some((bk, bseq, _)) = &sources[b].head else {
                                unreachable!("best has a head")
                            };
                            internal_cmp(k, *seq, bk, *bseq) == Ordering::Less
                        }
                    };
                    if better {
                        best = Some(i);
                    }
                }
            }
            let from_gathered = match (best, gathered.peek()) {
                (None, None) => break,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(b), Some(((gk, gseq), _))) => {
                    let Some((bk, bseq, _)) = &sources[b].head else {
                        unreachable!("best has a head")
                    };
                    internal_cmp(gk, gseq.0, bk, *bseq) != Ordering::Greater
                }
            };
            let (key, seq, entry) = if from_gathered {
                let Some(((key, seq), entry)) = gathered.next() else {
                    unreachable!("peeked")
                };
                (key, seq.0, entry)
            } else {
                let Some(b) = best else {
                    unreachable!("a table head is next")
                };
                let source = &mut sources[b];
                let next = source.iter.next().await?;
                let Some(head) = std::mem::replace(&mut source.head, next) else {
                    unreachable!("best has a head")
                };
                head
            };
            if last.as_ref().is_some_and(|(k, s)| *k == key && *s == seq) {
                continue;
            }
            let full = building
                .as_ref()
                .is_some_and(|(b, _)| b.estimated_size() >= options.target_file_bytes);
            if full && last.as_ref().is_some_and(|(k, _)| *k != key) {
                if let Some((builder, number)) = building.take() {
                    let props = builder.finish().await?;
                    outputs.push(TableMeta::from_properties(number, REPAIRED_LEVEL, &props));
                }
            }
            if building.is_none() {
                let number = next_file;
                next_file += 1;
                let path = filename::table(&dir, number);
                let file = fs.create(&path).await.at(&path)?;
                building = Some((TableBuilder::new(file, table_options), number));
            }
            if let Some((builder, _)) = building.as_mut() {
                builder.add(&key, seq, &entry).await?;
            }
            report.entries += 1;
            last_seq = last_seq.max(seq);
            last = Some((key, seq));
        }
        if let Some((builder, number)) = building.take() {
            let props = builder.finish().await?;
            outputs.push(TableMeta::from_properties(number, REPAIRED_LEVEL, &props));
        }
    }
    fs.sync_dir(&dir).await.at(&dir)?;
    report.tables_written = outputs.len() as u64;

    // The new manifest beside the old one, then renamed into place.
    let manifest_dir = filename::manifest_dir(&dir);
    let new_manifest = filename::repair_manifest(&dir);
    remove_dir_files(&*fs, &new_manifest).await?;
    let state = ManifestState {
        tables: outputs.into_iter().map(|t| (t.number, t)).collect(),
        log_start: next_record,
        next_file,
        last_seq,
    };
    crate::manifest::write_new(&fs, &new_manifest, &state).await?;

    let lost = filename::lost_dir(&dir).join(format!("repair-{first_new:06}"));
    fs.create_dir_all(&lost).await.at(&lost)?;
    fs.sync_dir(&dir).await.at(&dir)?;
    if fs.list_dir(&manifest_dir).await.is_ok() {
        fs.rename(&manifest_dir, &lost.join(filename::MANIFEST_DIR))
            .await
            .at(&manifest_dir)?;
    }
    fs.rename(&new_manifest, &manifest_dir)
        .await
        .at(&new_manifest)?;
    fs.sync_dir(&dir).await.at(&dir)?;

    // Old tables and log segments: everything good in them is in the new tables.
    for &number in &table_numbers {
        let from = filename::table(&dir, number);
        fs.rename(&from, &filename::table(&lost, number))
            .await
            .at(&from)?;
    }
    if !log_segments.is_empty() {
        let lost_log = filename::log_dir(&lost);
        fs.create_dir_all(&lost_log).await.at(&lost_log)?;
        for &number in &log_segments {
            let from = filename::segment(&log_dir, number);
            fs.rename(&from, &filename::segment(&lost_log, number))
                .await
                .at(&from)?;
        }
        fs.sync_dir(&log_dir).await.at(&log_dir)?;
        fs.sync_dir(&lost_log).await.at(&lost_log)?;
    }
    fs.sync_dir(&lost).await.at(&lost)?;
    fs.sync_dir(&dir).await.at(&dir)?;
    report.lost_dir = lost;
    tracing::info!(dir = %dir.display(), ?report, "repaired");
    Ok(report)
}

/// A table iterator and its next entry.
struct Peeked<F: FileSystem> {
    iter: TableIter<F::File>,
    head: Option<(Vec<u8>, SeqNo, Entry)>,
}

/// Removes the files of `dir` left by an earlier, interrupted repair (if it exists).
async fn remove_dir_files<F: FileSystem>(fs: &F, dir: &Path) -> Result<()> {
    let Ok(names) = fs.list_dir(dir).await else {
        return Ok(());
    };
    for name in names {
        let path = dir.join(name);
        fs.remove(&path).await.at(&path)?;
    }
    fs.sync_dir(dir).await.at(dir)
}
