//! The child process of `tests/crash_loop.rs`: writes continuously with synced durability
//! from several threads until it is killed, and reports every write on stdout.
//!
//! ```sh
//! cargo run -p shoal-engine --example crash_writer -- DIR THREADS FIRST_SEQ SEED
//! ```
//!
//! Each thread owns its keys (`t<thread>-k<n>`), so the order of writes to a key is the order
//! that thread made them. Before a write it prints its intent, after the write is
//! acknowledged (durable) it prints the acknowledgement:
//!
//! ```text
//! W <thread> <seq> <key> <value, or - for a delete>
//! A <thread> <seq>
//! ```
//!
//! Each line is one `write` of well under `PIPE_BUF`, so lines from different threads never
//! interleave. `seq` starts at FIRST_SEQ in every thread, so values stay unique across runs
//! when the caller moves FIRST_SEQ on. The writer stops on its own after [`OPS_MAX`] writes
//! per thread, or when stdout is closed.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_engine::{Durability, Options, blocking::Db};

/// Keys per thread: few enough that keys are overwritten and deleted many times.
const KEYS_PER_THREAD: u32 = 200;
/// Writes per thread before stopping unkilled: bounds a run whose parent went away.
const OPS_MAX: u64 = 200_000;
/// One write in this many is a delete.
const DELETE_ONE_IN: u32 = 5;

/// Small memtables and log segments, so flushes (and segment rotation and release) happen
/// every few hundred writes.
fn options() -> Options {
    Options {
        durability: Durability::Sync,
        memtable_bytes: 32 << 10,
        max_immutable_memtables: 2,
        log_segment_bytes: 64 << 10,
        block_bytes: 1024,
        block_cache_bytes: 1 << 20,
        ..Options::default()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [dir, threads, first_seq, seed] => threads
            .parse::<u32>()
            .ok()
            .zip(first_seq.parse::<u64>().ok())
            .zip(seed.parse::<u64>().ok())
            .map(|((t, f), s)| (dir.clone(), t, f, s)),
        _ => None,
    };
    let Some((dir, threads, first_seq, seed)) = parsed else {
        eprintln!("usage: crash_writer DIR THREADS FIRST_SEQ SEED");
        return ExitCode::FAILURE;
    };
    let db = match Db::open(&dir, options()) {
        Ok(db) => Arc::new(db),
        Err(e) => {
            eprintln!("open {dir}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || write_loop(&db, t, first_seq, seed))
        })
        .collect();
    let mut code = ExitCode::SUCCESS;
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("{e}");
                code = ExitCode::FAILURE;
            }
            Err(_) => code = ExitCode::FAILURE,
        }
    }
    code
}

fn write_loop(db: &Db, thread: u32, first_seq: u64, seed: u64) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(thread) << 32));
    for seq in first_seq..first_seq + OPS_MAX {
        let key = format!("t{thread}-k{:03}", rng.gen_range(0..KEYS_PER_THREAD));
        let value = (!rng.gen_ratio(1, DELETE_ONE_IN)).then(|| {
            let pad = rng.gen_range(0..200);
            format!("v{thread}-{seq}-{}", "x".repeat(pad))
        });
        // The parent stops reading (closes the pipe) when it is done: that ends the run.
        let report = |line: String| -> Result<(), String> {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("stdout: {e}"))
        };
        report(format!(
            "W {thread} {seq} {key} {}\n",
            value.as_deref().unwrap_or("-")
        ))?;
        let written = match &value {
            Some(v) => db.put(key.as_bytes(), v.as_bytes()),
            None => db.delete(key.as_bytes()),
        };
        written.map_err(|e| format!("write {key}: {e}"))?;
        report(format!("A {thread} {seq}\n"))?;
    }
    Ok(())
}
