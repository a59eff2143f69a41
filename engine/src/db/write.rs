//! The write path: a batch gets its sequence numbers, log record and memtable entries under
//! the state lock, then waits (outside it) for the log to be durable before it is made
//! visible; and the backpressure a writer meets first when flushes or compactions fall
//! behind.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Db;
use crate::Result;
use crate::batch::WriteBatch;
use crate::fs::FileSystem;
use crate::options::{Durability, Options};
use crate::stats::Counters;

/// Longest a write is delayed, reached just below `l0_stop_trigger` or the hard pending
/// compaction limit. Long enough to hand the writers' cores to compaction, short enough that
/// a delayed client sees latency, not an outage.
const WRITE_DELAY_MAX: Duration = Duration::from_millis(2);

/// Shortest backlog delay: the timer's resolution is coarser anyway, and a delay must never
/// round to nothing however far the hard limit is.
const PENDING_DELAY_MIN: Duration = Duration::from_micros(10);

impl<F: FileSystem> Db<F> {
    /// Stores `value` under `key`; see [`Db::write`].
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(batch).await
    }

    /// Deletes `key` (a tombstone); see [`Db::write`].
    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch).await
    }

    /// Applies `batch` atomically. With [`Durability::Sync`] it returns once the batch is on
    /// disk; concurrent writers share one fdatasync.
    pub async fn write(&self, batch: WriteBatch) -> Result<()> {
        self.check_open()?;
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.make_room().await?;
        let inner = &*self.inner;
        let (record, last_seq) = {
            let mut st = inner.lock();
            let mem = Arc::clone(&st.current.mem);
            if batch.len() > 1 {
                // Overwrites find their key's node through the index: start those cache
                // misses for the whole batch now, to land while the batch is encoded.
                let keys: Vec<&[u8]> = batch.ops().iter().map(|(k, _)| k.as_slice()).collect();
                mem.prefetch(&keys);
            }
            let first_seq = st.last_seq + 1;
            let mut payload = std::mem::take(&mut st.payload);
            payload.clear();
            batch.encode(first_seq, &mut payload);
            let appended = inner.log.append(&payload);
            st.payload = payload;
            let record = appended?;
            let count = batch.len() as u64;
            let mut user_bytes = 0;
            for (i, (key, entry)) in batch.ops().iter().enumerate() {
                user_bytes += (key.len() + entry.value.len()) as u64;
                mem.insert(key, first_seq + i as u64, entry);
            }
            Counters::add(&inner.counters.user_bytes, user_bytes);
            st.last_seq += count;
            (record, st.last_seq)
        };
        match inner.options.durability {
            Durability::Sync => inner.log.sync(record).await?,
            Durability::Buffered => inner.log.write_if_full().await?,
        }
        // Every record up to ours is durable, and every sequence number up to `last_seq`
        // belongs to such a record: publish them.
        inner.visible_seq.fetch_max(last_seq, Ordering::AcqRel);
        inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes every write so far durable (for `Durability::Buffered`).
    pub async fn sync(&self) -> Result<()> {
        let next = self.inner.log.next_record();
        if next > 0 {
            self.inner.log.sync(next - 1).await?;
        }
        let last = self.inner.lock().last_seq;
        self.inner.visible_seq.fetch_max(last, Ordering::AcqRel);
        Ok(())
    }

    /// Freezes the memtable when it is full. When it is full and too many frozen memtables
    /// wait, flushes (or waits for the flush in progress); when L0 or the compaction backlog
    /// is at its stop limit, compacts (or waits for the compaction in progress); past a
    /// slowdown limit, sleeps a little.
    async fn make_room(&self) -> Result<()> {
        let inner = &*self.inner;
        let o = &inner.options;
        let backlog_limit = o.max_immutable_memtables.max(1);
        let (slowdown, stop) = l0_limits(o);
        let (soft, hard) = pending_limits(o);
        let mut stalled: Option<Instant> = None;
        let (l0, pending) = loop {
            let (full, backlog, l0, pending) = {
                let st = inner.lock();
                (
                    st.current.mem.approximate_bytes() >= o.memtable_bytes,
                    st.current.imm.len(),
                    st.current.version.levels()[0].len(),
                    st.current.pending_compaction_bytes,
                )
            };
            // Only a full memtable with no room to freeze it waits: the frozen ones are
            // flushed in the background while the writers fill the next.
            if full && backlog >= backlog_limit {
                stalled.get_or_insert_with(Instant::now);
                self.flush_frozen().await?;
                continue;
            }
            if l0 >= stop || pending >= hard {
                stalled.get_or_insert_with(Instant::now);
                if self.compact_step().await? {
                    continue;
                }
            }
            if full {
                self.freeze();
            }
            break (l0, pending);
        };
        if stalled.is_some() {
            Counters::add(&inner.counters.stopped_writes, 1);
        }
        let delay = write_delay(l0, slowdown, stop).max(pending_delay(pending, soft, hard));
        if let Some(delay) = delay {
            stalled.get_or_insert_with(Instant::now);
            Counters::add(&inner.counters.delayed_writes, 1);
            o.timer.sleep(delay).await;
        }
        if let Some(start) = stalled {
            Counters::add(
                &inner.counters.stall_micros,
                start.elapsed().as_micros() as u64,
            );
        }
        Ok(())
    }
}

/// The L0 slowdown and stop limits, made consistent (stop above slowdown).
fn l0_limits(o: &Options) -> (usize, usize) {
    let slowdown = o.l0_slowdown_trigger.max(1);
    (slowdown, o.l0_stop_trigger.max(slowdown + 1))
}

/// The soft and hard pending compaction limits, made consistent (hard above soft).
fn pending_limits(o: &Options) -> (u64, u64) {
    let soft = o.soft_pending_compaction_bytes.max(1);
    (soft, o.hard_pending_compaction_bytes.max(soft + 1))
}

/// How long a write waits with `pending` bytes of compaction backlog: nothing below `soft`,
/// then growing in proportion to the excess, from [`PENDING_DELAY_MIN`] toward
/// [`WRITE_DELAY_MAX`] at `hard`.
fn pending_delay(pending: u64, soft: u64, hard: u64) -> Option<Duration> {
    if pending < soft {
        return None;
    }
    let f = ((pending - soft + 1) as f64 / (hard - soft) as f64).min(1.0);
    Some(WRITE_DELAY_MAX.mul_f64(f).max(PENDING_DELAY_MIN))
}

/// How long a write waits with `l0` tables in L0: nothing below `slowdown`, then growing
/// quadratically toward [`WRITE_DELAY_MAX`] just below `stop`.
fn write_delay(l0: usize, slowdown: usize, stop: usize) -> Option<Duration> {
    if l0 < slowdown {
        return None;
    }
    let steps = (stop - slowdown + 1) as f64;
    let f = ((l0 - slowdown + 1) as f64 / steps).min(1.0);
    Some(WRITE_DELAY_MAX.mul_f64(f * f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_delay_grows_from_the_slowdown_to_the_stop_limit() {
        assert_eq!(write_delay(7, 8, 12), None);
        let delays: Vec<Duration> = (8..12).map(|l0| write_delay(l0, 8, 12).unwrap()).collect();
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        assert!(delays[0] > Duration::ZERO);
        assert!(delays.iter().all(|d| *d <= WRITE_DELAY_MAX));
        assert_eq!(write_delay(20, 8, 12), Some(WRITE_DELAY_MAX));
    }

    #[test]
    fn pending_delay_grows_with_the_excess_over_the_soft_limit() {
        let (soft, hard) = (1000, 2000);
        assert_eq!(pending_delay(0, soft, hard), None);
        assert_eq!(pending_delay(999, soft, hard), None);
        let delays: Vec<Duration> = [1000, 1200, 1500, 1999]
            .iter()
            .map(|&p| pending_delay(p, soft, hard).unwrap())
            .collect();
        assert_eq!(delays[0], PENDING_DELAY_MIN);
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= WRITE_DELAY_MAX));
        assert_eq!(pending_delay(1, 1, u64::MAX), Some(PENDING_DELAY_MIN));
        let half = pending_delay(1499, soft, hard).unwrap();
        assert_eq!(half, WRITE_DELAY_MAX / 2);
        assert_eq!(pending_delay(2000, soft, hard), Some(WRITE_DELAY_MAX));
        assert_eq!(pending_delay(u64::MAX, soft, hard), Some(WRITE_DELAY_MAX));
    }

    #[test]
    fn pending_limits_keep_hard_above_soft() {
        let o = Options {
            soft_pending_compaction_bytes: 10,
            hard_pending_compaction_bytes: 5,
            ..Options::default()
        };
        assert_eq!(pending_limits(&o), (10, 11));
        let o = Options {
            soft_pending_compaction_bytes: 0,
            hard_pending_compaction_bytes: 0,
            ..Options::default()
        };
        assert_eq!(pending_limits(&o), (1, 2));
    }

    #[test]
    fn l0_limits_keep_stop_above_slowdown() {
        let o = Options {
            l0_slowdown_trigger: 6,
            l0_stop_trigger: 3,
            ..Options::default()
        };
        assert_eq!(l0_limits(&o), (6, 7));
        assert_eq!(l0_limits(&Options::default()), (20, 36));
    }
}
