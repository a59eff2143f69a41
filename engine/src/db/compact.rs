//! The database's side of compaction: choosing the next job from the current version under
//! the state lock, running it, and installing its outputs (see [`crate::compaction`] for the
//! policy and the merge).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Db;
use crate::Result;
use crate::compaction::{self, Choice, Job, OutputSpec, Retention, picker};
use crate::fs::FileSystem;
use crate::manifest::TableMeta;
use crate::stats::Counters;
use crate::version::{TableHandle, Version};

impl<F: FileSystem> Db<F> {
    /// Runs compactions until every level is within its target, then deletes the replaced
    /// tables no reader holds. The compaction worker does this on its own; this is for
    /// tools and tests.
    pub async fn compact(&self) -> Result<()> {
        self.check_open()?;
        while self.compact_step().await? {}
        self.inner.tables.remove_obsolete().await?;
        Ok(())
    }

    /// Runs the most urgent compaction, if one is due; false when none is (or the database
    /// is closing).
    pub(super) async fn compact_step(&self) -> Result<bool> {
        let inner = &*self.inner;
        let _compacting = inner.compaction_lock.lock().await;
        if inner.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        // The version only: a merge runs for seconds, and the whole SuperVersion would keep
        // its memtables (tens of MiB each, flushed meanwhile) alive until it ends.
        let (choice, version) = {
            let mut st = inner.lock();
            let version = Arc::clone(&st.current.version);
            let choice = picker::pick(&version.meta_levels(), &inner.shape, &st.cursors);
            let from = match &choice {
                Some(Choice::Move { tables, .. }) => {
                    tables.last().map(|last| (last.level, last.largest.clone()))
                }
                Some(Choice::Merge(job)) => {
                    picker::key_range(&job.inputs).map(|(_, hi)| (job.level, hi.to_vec()))
                }
                None => None,
            };
            if let Some((level, largest)) = from {
                st.cursors[level as usize] = largest;
            }
            (choice, version)
        };
        match choice {
            None => Ok(false),
            Some(Choice::Move { tables, to }) => {
                let count = tables.len() as u64;
                let numbers = tables.iter().map(|t| t.number).collect();
                let moved = tables
                    .into_iter()
                    .map(|t| {
                        TableHandle::new(TableMeta { level: to, ..t }, Arc::clone(&inner.tables))
                    })
                    .collect();
                self.install(moved, numbers, None, None).await?;
                Counters::add(&inner.counters.trivial_moves, count);
                Ok(true)
            }
            Some(Choice::Merge(job)) => self.merge(&job, &version).await,
        }
    }

    /// Runs `job` over the tables of `version` and installs its outputs; false when cancelled.
    async fn merge(&self, job: &Job, version: &Version<F>) -> Result<bool> {
        let inner = &*self.inner;
        let started = Instant::now();
        let readers = compaction::open_inputs(job, version, &inner.dir).await?;
        let (snapshots, horizon) = inner.snapshots.view(|| inner.visible());
        let mut retention = Retention::new(
            snapshots,
            horizon,
            job.bottommost,
            inner.options.clock.now_ms(),
            Arc::clone(&inner.options.tombstone_policy),
        );
        let spec = OutputSpec {
            fs: &inner.fs,
            dir: &inner.dir,
            table_options: self.table_options(),
            target_file_bytes: inner.options.target_file_bytes,
            level: job.output_level,
        };
        let next_number = || {
            let mut st = inner.lock();
            st.next_file += 1;
            st.next_file - 1
        };
        let closed = || inner.closed.load(Ordering::Acquire);
        let Some(outputs) =
            compaction::merge(&spec, readers, &mut retention, next_number, closed).await?
        else {
            return Ok(false);
        };
        let written: u64 = outputs.iter().map(|m| m.file_size).sum();
        let mut added = Vec::with_capacity(outputs.len());
        for meta in outputs {
            // Read back before the manifest lists it, as a flush does.
            inner.tables.get(&meta).await?;
            added.push(TableHandle::new(meta, Arc::clone(&inner.tables)));
        }
        let removed = job.tables().map(|t| t.number).collect();
        self.install(added, removed, None, None).await?;
        let c = &inner.counters;
        Counters::add(&c.compactions, 1);
        Counters::add(&c.compaction_bytes_read, job.input_bytes());
        Counters::add(&c.compaction_bytes_written, written);
        Counters::add(&c.compaction_micros, started.elapsed().as_micros() as u64);
        c.add_retention(&retention.stats);
        tracing::debug!(
            level = job.level,
            inputs = job.inputs.len() + job.overlapping.len(),
            read = job.input_bytes(),
            written,
            "compacted"
        );
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::Db;
    use crate::options::{Durability, Options};

    /// A merge runs for seconds while flushes go on: it must hold the tables it reads, not
    /// the memtables of the moment it started, or each flushed memtable (tens of MiB) would
    /// stay in memory, uncounted, until the merge ends.
    #[test]
    fn a_merge_in_progress_keeps_no_memtable_alive() {
        futures_lite::future::block_on(async {
            let options = Options {
                durability: Durability::Buffered,
                l0_compaction_trigger: 2,
                ..Options::default()
            };
            let db = Db::open(crate::fs::FaultFs::new(), Path::new("/db"), options)
                .await
                .unwrap();
            let mut next = 0u32;
            let mut put_some = async || {
                for _ in 0..4 * crate::compaction::YIELD_EVERY_ENTRIES {
                    next += 1;
                    db.put(&next.to_be_bytes(), b"value").await.unwrap();
                }
            };
            for _ in 0..2 {
                put_some().await;
                db.flush().await.unwrap();
            }
            put_some().await;
            let frozen = Arc::downgrade(&db.current().mem);

            let mut merge = Box::pin(db.compact_step());
            let waker = std::task::Waker::noop();
            let polled = merge
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            assert!(polled.is_pending(), "the merge yields before it is done");
            db.flush().await.unwrap();
            assert_eq!(
                frozen.strong_count(),
                0,
                "the flushed memtable is still held"
            );

            assert!(merge.await.unwrap(), "the merge completes");
            for i in 1..=next {
                assert_eq!(
                    db.get(&i.to_be_bytes()).await.unwrap().as_deref(),
                    Some(&b"value"[..])
                );
            }
        });
    }
}
