//! Flushes: a full memtable is frozen and a new one started; frozen memtables are written,
//! oldest first, to L0 tables, each durable before the manifest edit that lists it, which also
//! moves the start of the log still needed; then the log before it is released.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Db, SuperVersion};
use crate::compaction::Retention;
use crate::error::IoContext;
use crate::fs::FileSystem;
use crate::manifest::TableMeta;
use crate::memtable::{Memtable, MemtableIter};
use crate::sstable::TableBuilder;
use crate::version::TableHandle;
use crate::{Error, Result};

impl<F: FileSystem> Db<F> {
    /// Writes the memtable and every frozen memtable to SSTables.
    pub async fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.freeze();
        self.flush_frozen().await
    }

    /// Starts a new memtable if the current one has data, and wakes the flush worker.
    pub(super) fn freeze(&self) {
        let inner = &*self.inner;
        {
            let mut st = inner.lock();
            if st.current.mem.is_empty() {
                return;
            }
            // Under the state lock no record is being appended, so every record from here on
            // goes to the new memtable.
            let mem = Arc::new(Memtable::new(
                inner.log.next_record(),
                inner.options.memtable_bytes,
            ));
            let mut imm = st.current.imm.clone();
            imm.push(Arc::clone(&st.current.mem));
            st.current = Arc::new(SuperVersion {
                mem,
                imm,
                version: Arc::clone(&st.current.version),
                pending_compaction_bytes: st.current.pending_compaction_bytes,
            });
        }
        inner.work.notify(usize::MAX);
    }

    /// Flushes frozen memtables, oldest first, until none is left.
    pub(super) async fn flush_frozen(&self) -> Result<()> {
        let _flushing = self.inner.flush_lock.lock().await;
        while self.flush_oldest().await? {}
        Ok(())
    }

    /// Writes the oldest frozen memtable to an L0 table and installs it. False when there was
    /// none. The caller holds `flush_lock`.
    async fn flush_oldest(&self) -> Result<bool> {
        let inner = &*self.inner;
        let (imm, log_start, number) = {
            let mut st = inner.lock();
            let Some(oldest) = st.current.imm.first() else {
                return Ok(false);
            };
            let oldest = Arc::clone(oldest);
            let log_start = st
                .current
                .imm
                .get(1)
                .map_or(st.current.mem.first_record(), |m| m.first_record());
            let number = st.next_file;
            st.next_file += 1;
            (oldest, log_start, number)
        };
        // The memtable's records durable in the log before the table exists (buffered writes
        // may not be yet): a table the manifest never recorded then never holds a write the
        // log lacks, which is what lets open tell such a table from one a damaged manifest
        // forgot (see `remove_orphan_tables`).
        if log_start > imm.first_record() {
            inner.log.sync(log_start - 1).await?;
        }
        let handle = if imm.is_empty() {
            None
        } else {
            Some(self.write_table(&imm, number).await?)
        };
        self.install(
            handle.into_iter().collect(),
            Vec::new(),
            Some(log_start),
            Some(&imm),
        )
        .await?;
        inner.work.notify(usize::MAX);
        inner.log.release_before(log_start).await?;
        inner.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Writes a memtable into table `number` and opens it. Versions no reader can see are
    /// left out, by the rules compaction follows (never bottommost: tombstones stay).
    async fn write_table(&self, mem: &Arc<Memtable>, number: u64) -> Result<Arc<TableHandle<F>>> {
        let inner = &*self.inner;
        let path = inner.tables.path(number);
        let (snapshots, horizon) = inner.snapshots.view(|| inner.visible());
        let mut retention = Retention::new(
            snapshots,
            horizon,
            false,
            inner.options.clock.now_ms(),
            Arc::clone(&inner.options.tombstone_policy),
        );
        let written = async {
            let file = inner.fs.create(&path).await.at(&path)?;
            let mut builder = TableBuilder::new(file, self.table_options());
            let it = MemtableIter::new(Arc::clone(mem));
            for (key, seq, entry) in it {
                if let Some(entry) = retention.decide(&key, seq, entry) {
                    builder.add(&key, seq, &entry).await?;
                }
            }
            let props = builder.finish().await?;
            inner.fs.sync_dir(&inner.dir).await.at(&inner.dir)?;
            Ok::<_, Error>(props)
        }
        .await;
        let props = match written {
            Ok(props) => props,
            Err(e) => {
                // Not in the manifest, so never read: remove it now or at the next open.
                let _ = inner.fs.remove(&path).await;
                return Err(e);
            }
        };
        inner
            .counters
            .flush_bytes
            .fetch_add(props.file_size, Ordering::Relaxed);
        inner.counters.add_retention(&retention.stats);
        let meta = TableMeta::from_properties(number, 0, &props);
        // Read back (footer, index, filter verified) before the manifest lists it; this also
        // puts it in the table cache for the reads that follow.
        inner.tables.get(&meta).await?;
        Ok(TableHandle::new(meta, Arc::clone(&inner.tables)))
    }
}
