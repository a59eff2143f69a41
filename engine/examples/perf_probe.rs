//! A quick performance probe of the engine's hot paths, with RocksDB's `db_bench` run in the
//! same process run for reference. Not the official comparison (that is `benches/`): this is
//! the tool for iterating on the log, memtable and read path.
//!
//! ```sh
//! cargo run --release -p shoal-engine --example perf_probe -- [--num N] [--tasks 1,8,64,256]
//!     [--sync-ops N] [--skip-db-bench] [--only blocking|glommio|db_bench]
//! ```
//!
//! Workloads (16-byte keys, 100-byte values, keys drawn uniformly from `0..num` as db_bench
//! does):
//! - blocking API, `Durability::Buffered`: fillrandom of `num` writes, then readrandom of `num`
//!   reads;
//! - glommio `Db<DmaFs>` on one executor: `tasks` concurrent writers, Buffered then Sync;
//! - `db_bench --benchmarks=fillrandom,readrandom` with the same sizes.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use shoal_engine::fs::{DmaFs, File, FileSystem};
use shoal_engine::{Db, Durability, Options, blocking};

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
/// Each glommio run stops after this long even if its operation count is not reached.
const RUN_TIME_MAX: Duration = Duration::from_secs(30);

struct Args {
    num: u64,
    tasks: Vec<usize>,
    sync_ops: u64,
    only: Option<String>,
    durabilities: Vec<Durability>,
    db_bench: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        num: 1_000_000,
        tasks: vec![1, 8, 64, 256],
        sync_ops: 200_000,
        only: None,
        durabilities: vec![Durability::Buffered, Durability::Sync],
        db_bench: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--num" => args.num = value()?.parse().map_err(|e| format!("--num: {e}"))?,
            "--sync-ops" => {
                args.sync_ops = value()?.parse().map_err(|e| format!("--sync-ops: {e}"))?
            }
            "--tasks" => {
                args.tasks = value()?
                    .split(',')
                    .map(|t| t.parse().map_err(|e| format!("--tasks: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--only" => args.only = Some(value()?),
            "--durability" => {
                args.durabilities = match value()?.as_str() {
                    "sync" => vec![Durability::Sync],
                    "buffered" => vec![Durability::Buffered],
                    other => return Err(format!("--durability: sync or buffered, not {other}")),
                }
            }
            "--skip-db-bench" => args.db_bench = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// splitmix64: a cheap, well-mixed pseudo-random sequence.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// db_bench's key layout: the number big-endian, padded to the key size.
fn key(n: u64) -> [u8; KEY_BYTES] {
    let mut k = [b'0'; KEY_BYTES];
    k[..8].copy_from_slice(&n.to_be_bytes());
    k
}

fn value(n: u64) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    for (i, chunk) in v.chunks_mut(8).enumerate() {
        let bytes = mix(n ^ i as u64).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    v
}

/// CPU seconds (user + system) used so far by this process, or by its waited-for children.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes only into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Wall time and CPU time of one workload. The machine is shared and noisy, so ops per CPU
/// second is the steadier figure to compare with db_bench (measured the same way).
struct Meter {
    who: libc::c_int,
    wall: Instant,
    cpu: f64,
}

impl Meter {
    fn start(who: libc::c_int) -> Meter {
        Meter {
            who,
            wall: Instant::now(),
            cpu: cpu_seconds(who),
        }
    }

    fn report(&self, name: &str, ops: u64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = cpu_seconds(self.who) - self.cpu;
        println!(
            "{name:<40} {ops:>9} ops {wall:>7.3} s = {:>9.0} ops/s wall, {:>9.0} ops/cpu-s",
            ops as f64 / wall,
            ops as f64 / cpu,
        );
    }
}

fn fresh_dir(base: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = base.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

fn blocking_runs(args: &Args, base: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = fresh_dir(base, "blocking")?;
    let options = Options {
        durability: Durability::Buffered,
        ..Options::default()
    };
    let db = blocking::Db::open(&dir, options)?;
    let meter = Meter::start(libc::RUSAGE_SELF);
    for i in 0..args.num {
        let n = mix(i) % args.num;
        db.put(&key(n), &value(n))?;
    }
    meter.report("blocking fillrandom (buffered)", args.num);
    let meter = Meter::start(libc::RUSAGE_SELF);
    let mut found = 0u64;
    for i in 0..args.num {
        let n = mix(i + (1 << 40)) % args.num;
        if db.get(&key(n))?.is_some() {
            found += 1;
        }
    }
    meter.report("blocking readrandom", args.num);
    println!("    found {found} of {}", args.num);
    db.close()?;
    Ok(())
}

/// `tasks` writers on one glommio executor share `ops` writes; returns the writes done.
async fn glommio_fill(db: &Db<DmaFs>, tasks: usize, ops: u64) -> u64 {
    let next = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let db = db.clone();
        let next = Rc::clone(&next);
        handles.push(glommio::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= ops || start.elapsed() > RUN_TIME_MAX {
                    return Ok::<(), shoal_engine::Error>(());
                }
                next.set(i + 1);
                let n = mix(i) % ops;
                db.put(&key(n), &value(n)).await?;
            }
        }));
    }
    for h in handles {
        if let Err(e) = h.await {
            eprintln!("writer failed: {e}");
        }
    }
    next.get().min(ops)
}

/// The disk's floor for one durable write, measured now: 4 KiB overwrites of a zero-filled
/// file, each followed by fdatasync, for about a second.
async fn raw_sync_rate(fs: &DmaFs, root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    const FILE_BYTES: usize = 1 << 20;
    let path = root.join("raw-sync");
    let file = fs.create(&path).await?;
    file.write_at(0, &vec![0u8; FILE_BYTES]).await?;
    file.sync_data().await?;
    let block = vec![0x5Au8; 4096];
    let meter = Meter::start(libc::RUSAGE_SELF);
    let mut ops = 0u64;
    while meter.wall.elapsed() < Duration::from_secs(1) {
        file.write_at((ops * 4096) % FILE_BYTES as u64, &block)
            .await?;
        file.sync_data().await?;
        ops += 1;
    }
    meter.report("glommio raw 4 KiB write + fdatasync", ops);
    std::fs::remove_file(&path)?;
    Ok(())
}

fn glommio_runs(args: &Args, base: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let base = base.to_path_buf();
    let tasks = args.tasks.clone();
    let num = args.num;
    let sync_ops = args.sync_ops;
    let durabilities = args.durabilities.clone();
    let ex = LocalExecutorBuilder::new(Placement::Fixed(0)).make()?;
    ex.run(async move {
        let root = base.join("glommio");
        let fs = DmaFs::new(&root).await?;
        raw_sync_rate(&fs, &root).await?;
        for &durability in &durabilities {
            for &t in &tasks {
                let dir = fresh_dir(&root, &format!("{durability:?}-{t}"))?;
                let options = Options {
                    durability,
                    ..Options::default()
                };
                let db = Db::open(fs.clone(), &dir, options).await?;
                let bg = glommio::spawn_local(db.background());
                let ops = match durability {
                    Durability::Buffered => num,
                    Durability::Sync => sync_ops,
                };
                let meter = Meter::start(libc::RUSAGE_SELF);
                let done = glommio_fill(&db, t, ops).await;
                meter.report(&format!("glommio fillrandom {durability:?} x{t}"), done);
                if durability == Durability::Sync {
                    let syncs = db.stats().log_syncs.max(1);
                    println!(
                        "    {syncs} fdatasyncs, {:.1} writes each",
                        done as f64 / syncs as f64
                    );
                }
                db.close().await?;
                bg.await;
                std::fs::remove_dir_all(&dir)?;
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

fn db_bench_runs(args: &Args, base: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = fresh_dir(base, "db_bench")?;
    for (benchmark, existing) in [("fillrandom", false), ("readrandom", true)] {
        let meter = Meter::start(libc::RUSAGE_CHILDREN);
        let out = Command::new("db_bench")
            .arg(format!("--benchmarks={benchmark}"))
            .arg(format!("--use_existing_db={}", u8::from(existing)))
            .arg(format!("--num={}", args.num))
            .arg(format!("--key_size={KEY_BYTES}"))
            .arg(format!("--value_size={VALUE_BYTES}"))
            .arg(format!("--db={}", dir.display()))
            .arg("--compression_type=zstd")
            // Shoal's defaults: 10 bloom bits per key, 64 MiB block cache, 64 MiB memtable.
            .arg("--bloom_bits=10")
            .arg("--cache_size=67108864")
            .arg("--write_buffer_size=67108864")
            .output()?;
        if !out.status.success() {
            return Err(
                format!("db_bench failed: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        meter.report(&format!("db_bench {benchmark} (whole process)"), args.num);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with(benchmark) {
                println!("    {line}");
            }
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// One group of workloads.
type Workload = fn(&Args, &Path) -> Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("perf_probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = match tempfile_base() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("perf_probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let want = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let mut runs: Vec<(&str, Workload)> =
        vec![("blocking", blocking_runs), ("glommio", glommio_runs)];
    if args.db_bench {
        runs.push(("db_bench", db_bench_runs));
    }
    let mut ok = true;
    for (name, run) in runs {
        if want(name) {
            if let Err(e) = run(&args, &base) {
                eprintln!("{name}: {e}");
                ok = false;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A per-run directory on the data disk (not tmpfs: the log must hit a real disk).
fn tempfile_base() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("shoal-perf-probe-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}
