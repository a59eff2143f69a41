//! Group commit: writing what [`Log::append`] buffered, and making it durable in rounds that
//! many callers of [`Log::sync`] share.
//!
//! A caller whose record no round covers yet, finding the writer free and fewer than
//! [`SYNC_ROUNDS_MAX`] rounds in flight (and, if one is in flight, at least
//! [`OVERLAP_BYTES_MIN`] appended for the new round), leads a round: it yields once so that
//! every task ready to run appends first, takes everything buffered, writes it (the last write
//! with the fdatasync queued behind it, [`File::write_then_sync`]), hands the writer to the
//! next round, awaits the fdatasync, and once every earlier round has published, publishes the
//! new durable record number and wakes everyone. So one round's fdatasync overlaps the next
//! round's gathering and write.
//!
//! A round's write starts only after the previous round's write completed (it rewrites the
//! same tail block), so its fdatasync covers every earlier round's bytes too; publishing in
//! round order keeps the durable mark from passing a round that failed. Only the round holding
//! the writer writes to the active segment. Writes are whole [`WRITE_ALIGN`] blocks at aligned
//! offsets: the partial tail block stays in memory and is rewritten, zero-padded, by the next
//! leader.
//!
//! Rotation happens in the leader, and the old segment is fdatasynced before any byte of the
//! new one is written, so a crash can tear only the last segment. After publishing, a leader
//! that finds the active segment past half full (and no spare) prepares the next segment
//! ([`Log::prepare_spare`]) before returning to its own caller, so only that one caller waits,
//! not the group.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::segment::extend_segment;
use super::{
    BUFFERED_WRITE_BYTES, Log, OVERLAP_BYTES_MIN, OnCancel, Pending, SYNC_ROUNDS_MAX, Spare, State,
    Writer,
};
use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FileSystem, WRITE_ALIGN, align_up};

/// What a leader takes from the buffer.
struct Batch {
    parts: Vec<Pending>,
    /// Every record up to this one is in `parts` or was written by an earlier leader.
    last_record: Option<u64>,
}

/// The writer held by a round's leader that has not taken its batch yet; given back (and the
/// waiters woken) if the leader is cancelled before it does.
struct Claim<'a, F: FileSystem> {
    log: &'a Log<F>,
    writer: Option<Writer<F>>,
}

impl<F: FileSystem> Drop for Claim<'_, F> {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let mut st = self.log.lock();
            st.writer = Some(writer);
            st.rounds_in_flight -= 1;
            drop(st);
            self.log.changed.notify(usize::MAX);
        }
    }
}

impl<F: FileSystem> Log<F> {
    /// Returns once record `record_no` (and so every earlier one) is durable. Concurrent
    /// callers share fdatasyncs (group commit): if a round in flight covers the record, wait
    /// for it to publish; otherwise lead a round as soon as the writer is free.
    pub async fn sync(&self, record_no: u64) -> Result<()> {
        let (writer, others_in_flight) = loop {
            let listener = {
                let mut st = self.lock();
                if record_no >= st.next_record {
                    return Err(Error::InvalidArgument(format!(
                        "sync of log record {record_no}, which was never appended"
                    )));
                }
                if st.durable.is_some_and(|d| d >= record_no) {
                    return Ok(());
                }
                if let Some(cause) = &st.failed {
                    return Err(Error::WritesDisabled(cause.clone()));
                }
                let covered = st.syncing.is_some_and(|s| s >= record_no);
                if covered {
                    self.published.listen()
                } else {
                    if st.rounds_in_flight < SYNC_ROUNDS_MAX
                        && (st.rounds_in_flight == 0 || st.unwritten_bytes >= OVERLAP_BYTES_MIN)
                    {
                        if let Some(writer) = st.writer.take() {
                            st.rounds_in_flight += 1;
                            break (writer, st.rounds_in_flight > 1);
                        }
                    }
                    self.changed.listen()
                }
            };
            listener.await;
        };
        // Leading. With the disk idle, start at once: writers arriving meanwhile form the next
        // round, whose write and fdatasync overlap this one's. With another round in flight,
        // ours waits for it anyway: first let every writer that is ready to run append, so
        // that one fdatasync covers them all (without this the leader, usually the first task
        // woken by the previous round, would take a batch of one record).
        let mut claim = Claim {
            log: self,
            writer: Some(writer),
        };
        if others_in_flight {
            futures_lite::future::yield_now().await;
        }
        let Some(writer) = claim.writer.take() else {
            unreachable!("the claimed writer is taken only here")
        };
        let (batch, round) = {
            let mut st = self.lock();
            let batch = take_batch(&mut st, true);
            st.syncing = st.syncing.max(batch.last_record);
            let round = st.next_round;
            st.next_round += 1;
            (batch, round)
        };
        self.lead_round(writer, batch, round).await
    }

    /// For `Durability::Buffered`: writes out buffered whole blocks, without fdatasync, once
    /// more than [`BUFFERED_WRITE_BYTES`] are pending; a cheap no-op otherwise, or while
    /// another write is in flight.
    pub async fn write_if_full(&self) -> Result<()> {
        let (writer, batch) = {
            let mut st = self.lock();
            if let Some(cause) = &st.failed {
                return Err(Error::WritesDisabled(cause.clone()));
            }
            if st.unwritten_bytes <= BUFFERED_WRITE_BYTES {
                return Ok(());
            }
            let Some(writer) = st.writer.take() else {
                return Ok(());
            };
            (writer, take_batch(&mut st, false))
        };
        self.lead_buffered(writer, batch).await
    }

    /// Writes a sync round's batch, hands the writer to the next round, fdatasyncs, then
    /// publishes in round order and wakes every waiter.
    async fn lead_round(&self, mut writer: Writer<F>, mut batch: Batch, round: u64) -> Result<()> {
        let guard = OnCancel(Some(|| {
            let mut st = self.lock();
            st.failed = Some("a log write was cancelled mid-way".into());
            st.rounds_in_flight -= 1;
            drop(st);
            self.wake_all();
        }));
        let Some(last) = batch.parts.pop() else {
            unreachable!("a batch always holds the tail")
        };
        // On a failed write the writer is dropped: the tail on disk is unknown, writes stay
        // disabled.
        let mut result = match self.write_parts(&mut writer, batch.parts).await {
            Ok(()) => self.write_last_then_sync(writer, last).await,
            Err(e) => Err(e),
        };
        // Publish after every earlier round, or not at all once one failed.
        loop {
            let listener = {
                let mut st = self.lock();
                if let Err(e) = &result {
                    if st.failed.is_none() {
                        tracing::error!(dir = %self.dir.display(), error = %e, "log write failed; writes disabled");
                        st.failed = Some(e.to_string());
                    }
                    st.rounds_in_flight -= 1;
                    break;
                }
                if let Some(cause) = &st.failed {
                    result = Err(Error::WritesDisabled(cause.clone()));
                    st.rounds_in_flight -= 1;
                    break;
                }
                if st.published_round + 1 == round {
                    debug_assert!(batch.last_record >= st.durable);
                    st.durable = batch.last_record;
                    st.published_round = round;
                    st.rounds_in_flight -= 1;
                    break;
                }
                self.changed.listen()
            };
            listener.await;
        }
        guard.disarm();
        self.wake_all();
        if result.is_ok() {
            if let Err(e) = self.prepare_spare().await {
                // Our records are durable; the next rotation retries and reports failure then.
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot prepare spare log segment");
            }
        }
        result
    }

    /// Writes a buffered batch without fdatasync (see [`Log::write_if_full`]).
    async fn lead_buffered(&self, mut writer: Writer<F>, batch: Batch) -> Result<()> {
        let guard = OnCancel(Some(|| {
            self.lock().failed = Some("a log write was cancelled mid-way".into());
            self.wake_all();
        }));
        let result = self.write_parts(&mut writer, batch.parts).await;
        guard.disarm();
        {
            let mut st = self.lock();
            match &result {
                Ok(()) => st.writer = Some(writer),
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "log write failed; writes disabled");
                    st.failed = Some(e.to_string());
                }
            }
        }
        self.wake_all();
        result
    }

    /// Writes `parts` in order.
    async fn write_parts(&self, writer: &mut Writer<F>, parts: Vec<Pending>) -> Result<()> {
        for part in parts {
            self.enter_segment(writer, &part).await?;
            if part.bytes.is_empty() {
                continue;
            }
            let bytes = self.padded(part);
            writer
                .file
                .write_at(bytes.start, &bytes.bytes)
                .await
                .at(writer.file.path())?;
            writer.dirty = true;
        }
        Ok(())
    }

    /// Writes a round's last part with the fdatasync queued right behind it
    /// ([`File::write_then_sync`]), hands the writer to the next round as soon as the write
    /// completes, then waits for the fdatasync.
    async fn write_last_then_sync(&self, mut writer: Writer<F>, part: Pending) -> Result<()> {
        self.enter_segment(&mut writer, &part).await?;
        let file = Arc::clone(&writer.file);
        let syncing = if part.bytes.is_empty() {
            None
        } else {
            let bytes = self.padded(part);
            let syncing = file
                .write_then_sync(bytes.start, &bytes.bytes)
                .await
                .at(file.path())?;
            writer.dirty = true;
            Some(syncing)
        };
        // `dirty` stays set: until this fdatasync completes the bytes are unsynced, and a later
        // round rotating away from this segment must sync it first.
        let needs_sync = writer.dirty;
        self.lock().writer = Some(writer);
        self.changed.notify(usize::MAX);
        let synced = match syncing {
            Some(syncing) => syncing.await,
            None if needs_sync => file.sync_data().await,
            None => return Ok(()),
        };
        self.data_syncs.fetch_add(1, Ordering::Relaxed);
        synced.at(file.path())
    }

    /// `part` zero-padded to whole blocks, as every write must be.
    fn padded(&self, mut part: Pending) -> Pending {
        debug_assert!(part.start % WRITE_ALIGN as u64 == 0);
        part.bytes
            .resize(align_up(part.bytes.len() as u64) as usize, 0);
        debug_assert!(part.end() <= self.segment_bytes);
        part
    }

    /// Makes `part`'s segment the writer's. Moving to the next segment first makes the old one
    /// durable, so only the last segment can ever be torn.
    async fn enter_segment(&self, writer: &mut Writer<F>, part: &Pending) -> Result<()> {
        if part.segment_no == writer.segment_no {
            return Ok(());
        }
        assert_eq!(
            part.segment_no,
            writer.segment_no + 1,
            "log segments out of order"
        );
        debug_assert_eq!(part.start, 0);
        if writer.dirty {
            writer.file.sync_data().await.at(writer.file.path())?;
            self.data_syncs.fetch_add(1, Ordering::Relaxed);
        }
        let file = self.take_segment_file(part.segment_no).await?;
        *writer = Writer {
            file: Arc::new(file),
            segment_no: part.segment_no,
            dirty: false,
        };
        Ok(())
    }

    /// The file for segment `number` (= active + 1), which becomes the active segment: the
    /// spare if ready, waiting for it if being prepared, otherwise prepared here. `active_no`
    /// moves in the same critical section that empties the spare slot, so `prepare_spare`
    /// can never pick the number of a segment already in use.
    async fn take_segment_file(&self, number: u64) -> Result<F::File> {
        let spare = loop {
            let listener = {
                let mut st = self.lock();
                debug_assert_eq!(number, st.active_no + 1);
                match std::mem::replace(&mut st.spare, Spare::Preparing) {
                    Spare::Ready(file, bytes) => break Some((file, bytes)),
                    Spare::None => break None,
                    Spare::Preparing => self.changed.listen(),
                }
            };
            listener.await;
        };
        let capacity = {
            let st = self.lock();
            let segment = st.segments.iter().find(|s| s.number == number);
            segment.map_or(self.segment_bytes_min, |s| s.capacity)
        };
        let (file, bytes) = match spare {
            Some((file, bytes)) if bytes >= capacity => (file, bytes),
            // Prepared before a record larger than its size asked for this segment.
            Some((file, bytes)) => {
                let reset = || {
                    self.lock().spare = Spare::None;
                    self.changed.notify(usize::MAX);
                };
                let guard = OnCancel(Some(reset));
                extend_segment(&file, bytes, capacity, self.preallocation).await?;
                guard.disarm();
                (file, capacity)
            }
            None => self.prepare_claimed(number, capacity).await?,
        };
        {
            let mut st = self.lock();
            st.spare = Spare::None;
            st.active_no = number;
            if let Some(s) = st.segments.iter_mut().find(|s| s.number == number) {
                s.file_bytes = bytes;
            }
        }
        self.changed.notify(usize::MAX);
        Ok(file)
    }
}

/// Hands everything buffered to a leader, keeping a copy of the partial tail block (the next
/// leader rewrites it with more records). With `with_tail_block` false the partial block is
/// left out of this batch entirely.
fn take_batch<F: FileSystem>(st: &mut State<F>, with_tail_block: bool) -> Batch {
    let mut parts = std::mem::take(&mut st.sealed);
    let end = st.tail.end();
    let keep_from = end - end % WRITE_ALIGN as u64;
    let kept_at = (keep_from - st.tail.start) as usize;
    let kept = st.tail.bytes[kept_at..].to_vec();
    let segment_no = st.tail.segment_no;
    let mut last = std::mem::replace(
        &mut st.tail,
        Pending {
            segment_no,
            start: keep_from,
            bytes: kept,
        },
    );
    if !with_tail_block {
        last.bytes.truncate(kept_at);
    }
    parts.push(last);
    st.unwritten_bytes = 0;
    Batch {
        parts,
        last_record: st.next_record.checked_sub(1),
    }
}
