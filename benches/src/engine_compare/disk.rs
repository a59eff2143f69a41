//! The disk's durable-write ceiling for the synced fill, measured next to it.
//!
//! A writer of the synced fill has one write outstanding: it waits for its put to be durable
//! before it makes the next. So while one device flush is in flight, the writers whose records
//! it carries are waiting, and only the others can append for the next flush: on average a
//! flush carries at most half the writers' records. With one flush in flight at a time (the
//! block layer runs a queue's flushes one after another, and this machine's disk has one
//! queue), the fill can therefore do no better than `writers / 2` records per flush, times
//! the device's back-to-back flush rate, whatever the engine's CPU cost.
//!
//! The flush rate is measured as the engine writes its log: O_DIRECT 4 KiB writes into a file
//! already written once (so no metadata changes), each followed by `fdatasync`. One stream
//! leaves the device idle while it issues its next write; two streams, each writing its own
//! half of the file, keep a flush queued behind the running one, so their combined rate is
//! the device's flush rate with no gaps. A flush carrying more data costs more, so the
//! ceiling derived from 4 KiB flushes is an upper bound for the fill's larger ones.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of one write, the engine's log block.
const BLOCK_BYTES: usize = 4096;
/// Each stream's region of the probe file, written sequentially and wrapped.
const REGION_BYTES: u64 = 4 << 20;
/// How long each of the two measurements runs in the comparison.
pub const PROBE_TIME: Duration = Duration::from_secs(2);
/// Most write + fdatasync pairs one stream makes, bounding the probe on a fast disk.
const PROBE_SYNCS_MAX: u64 = 200_000;

/// The measured flush rates.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FlushRate {
    /// Write + fdatasync pairs per second from one stream.
    pub one_stream: f64,
    /// The same from two concurrent streams together: the device's back-to-back flush rate.
    pub two_streams: f64,
}

impl FlushRate {
    /// The most durable records per second `writers` writers with one write outstanding
    /// each can reach on this disk.
    pub fn sync_ceiling(&self, writers: usize) -> f64 {
        writers as f64 / 2.0 * self.two_streams
    }
}

/// Measures the flush rates with a probe file in `dir`, removed afterwards; each of the two
/// measurements runs for `time`.
pub fn measure_flush_rate(dir: &Path, time: Duration) -> std::io::Result<FlushRate> {
    let path = dir.join("flush-probe");
    let result = probe(&path, time);
    let removed = std::fs::remove_file(&path);
    let rate = result?;
    removed?;
    Ok(rate)
}

fn probe(path: &Path, time: Duration) -> std::io::Result<FlushRate> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    // O_DIRECT needs a block-aligned buffer: a block of zeros inside a buffer of two.
    let buf = vec![0u8; 2 * BLOCK_BYTES];
    let skip = buf.as_ptr().align_offset(BLOCK_BYTES);
    let block = &buf[skip..skip + BLOCK_BYTES];
    // Write the whole file once, so the measured writes change no metadata.
    for offset in (0..2 * REGION_BYTES).step_by(BLOCK_BYTES) {
        file.write_all_at(block, offset)?;
    }
    file.sync_all()?;
    let stream = |region: u64| -> std::io::Result<u64> {
        let start = Instant::now();
        let mut syncs = 0;
        while start.elapsed() < time && syncs < PROBE_SYNCS_MAX {
            let offset = region * REGION_BYTES + (syncs * BLOCK_BYTES as u64) % REGION_BYTES;
            file.write_all_at(block, offset)?;
            // SAFETY: the descriptor is open for the life of `file`.
            if unsafe { libc::fdatasync(file.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            syncs += 1;
        }
        Ok(syncs)
    };
    let started = Instant::now();
    let one = stream(0)?;
    let one_stream = one as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let second = s.spawn(|| stream(1));
        let first = stream(0);
        let second = second
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("probe thread panicked")));
        (first, second)
    });
    let two_streams = (a? + b?) as f64 / started.elapsed().as_secs_f64();
    Ok(FlushRate {
        one_stream,
        two_streams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_both_rates_and_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let rate = measure_flush_rate(dir.path(), Duration::from_millis(100)).unwrap();
        assert!(rate.one_stream > 0.0 && rate.two_streams > 0.0, "{rate:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let ceiling = rate.sync_ceiling(64);
        assert!((ceiling - 32.0 * rate.two_streams).abs() < 1e-6);
    }
}
