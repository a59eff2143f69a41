//! Fill-then-overwrite workload through the blocking API, shaped like RocksDB's
//! `db_bench --benchmarks=fillrandom,overwrite` (16-byte keys, 100-byte values that compress
//! to about half, random key order, no fsync per write), reporting throughput, write
//! amplification, stalls, level shapes and memory, so the two can be run side by side:
//!
//! ```sh
//! cargo run --release -p shoal-engine --example overwrite -- /tmp/shoal-ow 2000000
//! db_bench --benchmarks=fillrandom,overwrite,stats --num=2000000 --key_size=16 \
//!     --value_size=100 --compression_type=zstd --compression_level=1 --db=/tmp/rocks-ow
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use shoal_engine::{Durability, Options, Stats, blocking::Db};

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;

/// xorshift64*: fast, seeded, good enough to scatter keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), keys) = (args.next(), args.next()) else {
        eprintln!("usage: overwrite DIR [KEYS]");
        return ExitCode::FAILURE;
    };
    let keys: u64 = match keys.map(|k| k.parse()) {
        None => 2_000_000,
        Some(Ok(k)) if k > 0 => k,
        Some(_) => {
            eprintln!("KEYS must be a positive integer");
            return ExitCode::FAILURE;
        }
    };
    match run(&dir, keys) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &str, keys: u64) -> shoal_engine::Result<()> {
    // A fresh database each run, like db_bench's fillrandom.
    let _ = std::fs::remove_dir_all(dir);
    let options = Options {
        durability: Durability::Buffered,
        ..Options::default()
    };
    let db = Db::open(dir, options)?;
    let mut rng = Rng(0x5EED);
    let mut value = vec![0u8; VALUE_LEN];
    for phase in ["fillrandom", "overwrite"] {
        let before = db.stats();
        let start = Instant::now();
        for _ in 0..keys {
            let k = rng.next() % keys;
            let key = format!("{k:0width$}", width = KEY_LEN);
            // Half random, half repeated: compresses to about 50%, as db_bench's values.
            let r = rng.next().to_le_bytes();
            for (i, b) in value.iter_mut().enumerate() {
                *b = if i < VALUE_LEN / 2 {
                    r[i % 8] ^ (i as u8)
                } else {
                    b'v'
                };
            }
            db.put(key.as_bytes(), &value)?;
        }
        let elapsed = start.elapsed();
        report(phase, keys, elapsed, &before, &db.stats());
    }
    // Let the background worker finish, bounded, to report the settled shape.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let s = db.stats();
        if s.immutable_memtables == 0 && s.levels.iter().all(|l| l.score < 1.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = db.stats();
    println!("settled:");
    print_shape(&s);
    db.close()
}

fn report(phase: &str, ops: u64, elapsed: Duration, before: &Stats, s: &Stats) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{phase:>10}: {ops} ops in {secs:.2} s = {:.0} ops/s; stalled {:.2} s ({} delayed, {} stopped writes)",
        ops as f64 / secs,
        (s.stall_micros - before.stall_micros) as f64 / 1e6,
        s.delayed_writes - before.delayed_writes,
        s.stopped_writes - before.stopped_writes,
    );
    print_shape(s);
}

fn print_shape(s: &Stats) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "  user {:.1} MiB, flushed {:.1} MiB, compaction read {:.1} MiB / wrote {:.1} MiB \
         ({} merges, {} moves): write amplification {:.2} (tables only; the log adds ~1)",
        mib(s.user_bytes_written),
        mib(s.flush_bytes),
        mib(s.compaction_bytes_read),
        mib(s.compaction_bytes_written),
        s.compactions,
        s.trivial_moves,
        s.write_amplification,
    );
    let levels: Vec<String> = s
        .levels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.tables > 0)
        .map(|(i, l)| format!("L{i} {} tables {:.1} MiB", l.tables, mib(l.bytes)))
        .collect();
    println!(
        "  levels: {}; live tables {:.1} MiB; pending compaction {:.1} MiB",
        levels.join(", "),
        mib(s.live_table_bytes()),
        mib(s.pending_compaction_bytes)
    );
    println!(
        "  memory: memtables {:.1} MiB, block cache {:.1} MiB, index+filter {:.1} MiB, total {:.1} MiB; open tables {}",
        mib(s.memory.memtables),
        mib(s.memory.block_cache),
        mib(s.memory.table_meta),
        mib(s.memory.total),
        s.open_tables
    );
}
