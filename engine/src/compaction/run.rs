//! Running a merge job: its input tables streamed in table order through [`Retention`] into
//! new tables of the output level, cut between user keys once past the target size.
//!
//! The merge is cooperative: it yields to the executor every [`YIELD_EVERY_ENTRIES`]
//! entries, so on a shard requests keep being served while it runs, and it gives up at those
//! points when the database closes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Job, Retention};
use crate::error::IoContext;
use crate::fs::FileSystem;
use crate::iter::{MergeIter, Source};
use crate::manifest::TableMeta;
use crate::sstable::{Table, TableBuilder, TableIter, TableOptions};
use crate::version::Version;
use crate::{Error, Result};

/// Entries merged between yields to the executor: few enough that requests on the shard wait
/// little for the merge, enough that yielding costs the merge little.
pub const YIELD_EVERY_ENTRIES: u64 = 256;

/// Where and how output tables are written.
pub struct OutputSpec<'a, F: FileSystem> {
    /// The file system the outputs go to.
    pub fs: &'a Arc<F>,
    /// The database directory.
    pub dir: &'a Path,
    /// How the output tables are built.
    pub table_options: TableOptions,
    /// Outputs are cut at the first key boundary past this size.
    pub target_file_bytes: u64,
    /// The level the outputs are recorded at.
    pub level: u32,
}

/// The open tables `job` reads, from `version` (the one the job was picked from); `dir` names
/// the database in the error when one is missing.
pub async fn open_inputs<F: FileSystem>(
    job: &Job,
    version: &Version<F>,
    dir: &Path,
) -> Result<Vec<Arc<Table<F::File>>>> {
    let mut inputs = Vec::new();
    for meta in job.tables() {
        let handle = version.find(meta.number).ok_or_else(|| {
            Error::corruption(
                dir,
                0,
                format!("compaction input {} is not in the version", meta.number),
            )
        })?;
        inputs.push(handle.reader().await?);
    }
    Ok(inputs)
}

/// Merges `inputs` (any order: sequence numbers order the versions) through `retention` into
/// tables of `spec.level`, cut at the first key boundary past the target size. Every output
/// is durable (data and directory entry) when this returns. `next_number` allocates file
/// numbers; `cancelled` is polled at each yield and ends the merge with `Ok(None)`. Outputs
/// are removed again on error or cancellation (not being in the manifest, they would also be
/// removed at the next open).
pub async fn merge<F: FileSystem>(
    spec: &OutputSpec<'_, F>,
    inputs: Vec<Arc<Table<F::File>>>,
    retention: &mut Retention,
    mut next_number: impl FnMut() -> u64,
    cancelled: impl Fn() -> bool,
) -> Result<Option<Vec<TableMeta>>> {
    let mut created: Vec<PathBuf> = Vec::new();
    let result = merge_into(
        spec,
        inputs,
        retention,
        &mut next_number,
        &cancelled,
        &mut created,
    )
    .await;
    if !matches!(result, Ok(Some(_))) {
        for path in &created {
            let _ = spec.fs.remove(path).await;
        }
    }
    result
}

async fn merge_into<F: FileSystem>(
    spec: &OutputSpec<'_, F>,
    inputs: Vec<Arc<Table<F::File>>>,
    retention: &mut Retention,
    next_number: &mut impl FnMut() -> u64,
    cancelled: &impl Fn() -> bool,
    created: &mut Vec<PathBuf>,
) -> Result<Option<Vec<TableMeta>>> {
    let sources = inputs
        .into_iter()
        .map(|t| Source::Table(TableIter::without_cache_fill(t)))
        .collect();
    let mut merged: MergeIter<F> = MergeIter::new(sources);
    let mut outputs = Vec::new();
    let mut building: Option<(TableBuilder<F::File>, u64)> = None;
    let mut last_key: Vec<u8> = Vec::new();
    let mut seen = 0u64;
    while let Some((key, seq, entry)) = merged.next().await? {
        seen += 1;
        if seen % YIELD_EVERY_ENTRIES == 0 {
            if cancelled() {
                return Ok(None);
            }
            futures_lite::future::yield_now().await;
        }
        let Some(entry) = retention.decide(&key, seq, entry) else {
            continue;
        };
        // Cut only between user keys: all versions of a key stay in one table.
        let full = building
            .as_ref()
            .is_some_and(|(b, _)| b.estimated_size() >= spec.target_file_bytes);
        if full && key != last_key {
            if let Some((builder, number)) = building.take() {
                outputs.push(finish(builder, number, spec.level).await?);
            }
        }
        if building.is_none() {
            let number = next_number();
            let path = crate::filename::table(spec.dir, number);
            let file = spec.fs.create(&path).await.at(&path)?;
            created.push(path);
            building = Some((TableBuilder::new(file, spec.table_options), number));
        }
        if let Some((builder, _)) = building.as_mut() {
            builder
                .add(&key, retention.output_seq(seq, &entry), &entry)
                .await?;
        }
        last_key = key;
    }
    if let Some((builder, number)) = building.take() {
        outputs.push(finish(builder, number, spec.level).await?);
    }
    if !outputs.is_empty() {
        spec.fs.sync_dir(spec.dir).await.at(spec.dir)?;
    }
    Ok(Some(outputs))
}

async fn finish<F: crate::fs::File>(
    builder: TableBuilder<F>,
    number: u64,
    level: u32,
) -> Result<TableMeta> {
    let props = builder.finish().await?;
    Ok(TableMeta::from_properties(number, level, &props))
}
