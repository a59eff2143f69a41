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

fn report(name: &str, ops: u64, elapsed: Duration) -> f64 {
    let rate = ops as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<40} {ops:>9} ops in {:>7.3} s = {:>10.0} ops/s",
        elapsed.as_secs_f64(),
        rate
    );
    rate
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
    let start = Instant::now();
    for i in 0..args.num {
        let n = mix(i) % args.num;
        db.put(&key(n), &value(n))?;
    }
    report("blocking fillrandom (buffered)", args.num, start.elapsed());
    let start = Instant::now();
    let mut found = 0u64;
    for i in 0..args.num {
        let n = mix(i + (1 << 40)) % args.num;
        if db.get(&key(n))?.is_some() {
            found += 1;
        }
    }
    report("blocking readrandom", args.num, start.elapsed());
    println!("    found {found} of {}", args.num);
    db.close()?;
    Ok(())
}

/// `tasks` writers on one glommio executor share `ops` writes; returns the elapsed time and
/// the writes done.
async fn glommio_fill(db: &Db<DmaFs>, tasks: usize, ops: u64) -> (Duration, u64) {
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
    (start.elapsed(), next.get().min(ops))
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
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        file.write_at((ops * 4096) % FILE_BYTES as u64, &block)
            .await?;
        file.sync_data().await?;
        ops += 1;
    }
    report("glommio raw 4 KiB write + fdatasync", ops, start.elapsed());
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
                let (elapsed, done) = glommio_fill(&db, t, ops).await;
                report(
                    &format!("glommio fillrandom {durability:?} x{t}"),
                    done,
                    elapsed,
                );
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
    let out = Command::new("db_bench")
        .arg("--benchmarks=fillrandom,readrandom")
        .arg(format!("--num={}", args.num))
        .arg(format!("--key_size={KEY_BYTES}"))
        .arg(format!("--value_size={VALUE_BYTES}"))
        .arg(format!("--db={}", dir.display()))
        .arg("--compression_type=zstd")
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("fillrandom") || line.starts_with("readrandom") {
            println!("db_bench {line}");
        }
    }
    if !out.status.success() {
        eprintln!("db_bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

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
    let mut runs: Vec<(
        &str,
        fn(&Args, &Path) -> Result<(), Box<dyn std::error::Error>>,
    )> = vec![("blocking", blocking_runs), ("glommio", glommio_runs)];
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
