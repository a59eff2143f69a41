//! `engine-compare`: Shoal's engine, RocksDB (`db_bench`) and fjall side by side on one machine
//! in one run. Every phase of every engine runs in its own child process (for Shoal and fjall,
//! this binary's hidden `run-shoal` / `run-fjall` subcommands; for RocksDB, db_bench, or
//! `run-rocksdb` driving the library through its C API where db_bench has no such workload),
//! phases interleaved across engines so machine noise hits all alike. Throughput is timed
//! inside the child, around the operations only (as db_bench does); peak RSS and bytes written
//! come from the kernel for every engine alike ([`crate::proc`]).
//!
//! A writing phase ends, after its timed operations, by waiting until compaction has nothing
//! left to do (db_bench's `waitforcompaction`; [`shoal_engine::Db::compact`]; for RocksDB's
//! C API driver, the same properties db_bench polls). The bytes that compaction writes count
//! against the phase whose writes caused them: otherwise an engine that ingests faster than it
//! compacts hands its backlog to the next phase, and its write amplification looks lower in
//! one phase and higher in the next (at 10M keys, Shoal ended the fill with 11 L0 tables and
//! the overwrite with 10, and the zipfian mix paid for them).

pub mod db_bench;
pub mod disk;
pub mod report;
pub mod rocksdb_c;
pub mod store;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use self::report::{Measurement, Report, Row};
use self::rocksdb_c::RocksError;
use self::store::ShoalFs;
use self::workload::{Phase, PhaseResult, PhaseSpec};
use crate::proc::{self, ProcError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    #[error("shoal engine: {0}")]
    Shoal(#[from] shoal_engine::Error),
    #[cfg(feature = "fjall")]
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    #[error("{0}")]
    Rocksdb(#[from] RocksError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Proc(#[from] ProcError),
    #[error("{engine} {phase}: no result in its output: {output}")]
    NoResult {
        engine: String,
        phase: &'static str,
        output: String,
    },
    #[error("glommio executor: {0}")]
    Runtime(String),
    #[error("a writer thread panicked")]
    WriterPanicked,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The peers this build can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Shoal,
    Rocksdb,
    Fjall,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Shoal => "shoal",
            Engine::Rocksdb => "rocksdb",
            Engine::Fjall => "fjall",
        }
    }
}

/// Preset workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Fill, random reads, a scan, and synced fills by concurrent writers (`--keys`, default 1M).
    #[value(name = "1m")]
    OneMillion,
    /// 10M keys (unless `--keys` says otherwise): fill, uniform random overwrite, zipfian mix
    /// with 10% deletes; write and space amplification and peak RSS after each.
    #[value(name = "10m")]
    TenMillion,
}

/// Keys of the `1m` preset.
pub const ONE_MILLION: u64 = 1_000_000;
/// Keys of the `10m` preset.
pub const TEN_MILLION: u64 = 10_000_000;
/// A phase that runs longer than this is killed (by PID) and the run fails.
pub const PHASE_TIMEOUT_DEFAULT_SECS: u64 = 1800;
/// Shoal's memory budget unless told otherwise: what RocksDB's db_bench is configured with in
/// the same run (two 64 MiB write buffers and the 64 MiB block cache it is given), so both
/// engines run with the same memory for the same purposes.
pub const SHOAL_MEMORY_BUDGET_DEFAULT_MIB: u64 = 192;

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Key space and operations per phase [default: 1M at `--scale 1m`, 10M at `--scale 10m`].
    #[arg(long)]
    pub keys: Option<u64>,
    #[arg(long, value_enum, default_value = "1m")]
    pub scale: Scale,
    /// Operations of the synced fill (default: a tenth of --keys; synced writes are slow).
    #[arg(long)]
    pub sync_ops: Option<u64>,
    /// Concurrent writers of the synced fill.
    #[arg(long, default_value_t = 64)]
    pub writers: usize,
    /// Engines to run (fjall needs the `fjall` cargo feature).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["shoal", "rocksdb", "fjall"])]
    pub engines: Vec<Engine>,
    /// Shoal's file system for the single-threaded phases; the synced fill always runs on the
    /// node's path (DMA files, writers as glommio tasks).
    #[arg(long, value_enum, default_value = "std")]
    pub shoal_fs: ShoalFs,
    /// Shoal's memory budget (memtables, block cache, open tables' index and bloom blocks)
    /// in MiB; 0 runs Shoal with its per-component defaults instead.
    #[arg(long, default_value_t = SHOAL_MEMORY_BUDGET_DEFAULT_MIB)]
    pub shoal_memory_budget_mib: u64,
    /// Where the databases go (a temporary directory inside it, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The db_bench binary.
    #[arg(long, default_value = "db_bench")]
    pub db_bench: PathBuf,
    /// RocksDB's shared library, for the zipfian mix db_bench cannot run (the one its db_bench
    /// is built on); where it cannot be loaded, RocksDB's mix is skipped.
    #[arg(long, default_value = rocksdb_c::LIBRARY)]
    pub rocksdb_library: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = PHASE_TIMEOUT_DEFAULT_SECS)]
    pub phase_timeout_secs: u64,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// One step of the plan: a phase on one of the two databases each engine keeps.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub phase: Phase,
    pub label: &'static str,
    /// The concurrent fills write their own, fresh database.
    pub fresh_db: bool,
    pub ops: u64,
}

pub fn plan(args: &CompareArgs) -> Vec<Step> {
    let step = |phase, label, ops| Step {
        phase,
        label,
        fresh_db: phase.concurrent(),
        ops,
    };
    match args.scale {
        Scale::OneMillion => {
            let keys = args.keys();
            let sync_ops = args.sync_ops.unwrap_or(keys / 10).max(1);
            vec![
                step(Phase::Fill, "fillrandom (no sync)", keys),
                step(Phase::Read, "readrandom", keys),
                step(Phase::Scan, "scan (all keys)", keys),
                step(Phase::FillSync, "fillrandom sync", sync_ops),
                step(Phase::FillWriters, "fillrandom writers (no sync)", sync_ops),
            ]
        }
        Scale::TenMillion => {
            let keys = args.keys();
            vec![
                step(Phase::Fill, "fillrandom (no sync)", keys),
                step(Phase::Scan, "scan after fill", keys),
                step(Phase::Overwrite, "overwrite (uniform)", keys),
                step(Phase::Scan, "scan after overwrite", keys),
                step(Phase::ZipfMix, "zipfian mix, 10% deletes", keys),
                step(Phase::Scan, "scan after mix", keys),
            ]
        }
    }
}

fn available(engine: Engine) -> bool {
    engine != Engine::Fjall || cfg!(feature = "fjall")
}

/// What became of one engine's step.
enum Outcome {
    Measured(Measurement),
    /// The engine cannot run here (its library is missing, say), and why.
    Skipped(String),
}

/// Runs one step of one engine in a child process.
fn run_step(
    args: &CompareArgs,
    engine: Engine,
    spec: &PhaseSpec,
    assertions: &mut bool,
) -> Result<Outcome, CompareError> {
    let limit = Duration::from_secs(args.phase_timeout_secs);
    let self_exe = std::env::current_exe()?;
    let db_bench_name = match engine {
        Engine::Rocksdb => db_bench::benchmark(spec.phase),
        Engine::Shoal | Engine::Fjall => None,
    };
    let mut cmd = match engine {
        Engine::Rocksdb => match db_bench::command(&args.db_bench, spec) {
            Some(c) => c,
            // No such db_bench workload: our generator drives the library through its C API.
            None => {
                if let Err(e) = rocksdb_c::Api::load(&args.rocksdb_library) {
                    return Ok(Outcome::Skipped(format!(
                        "rocksdb {}: {e}",
                        spec.phase.name()
                    )));
                }
                let mut c = std::process::Command::new(&self_exe);
                c.arg("run-rocksdb")
                    .arg("--library")
                    .arg(&args.rocksdb_library)
                    .args(spec.to_args());
                c
            }
        },
        Engine::Shoal => {
            let fs = if spec.phase.concurrent() {
                ShoalFs::Dma
            } else {
                args.shoal_fs
            };
            let mut c = std::process::Command::new(&self_exe);
            c.arg("run-shoal")
                .arg("--fs")
                .arg(format!("{fs:?}").to_lowercase())
                .args(spec.to_args());
            if let Some(budget) = args.shoal_memory_budget() {
                c.arg("--memory-budget-bytes").arg(budget.to_string());
            }
            c
        }
        Engine::Fjall => {
            let mut c = std::process::Command::new(&self_exe);
            c.arg("run-fjall").args(spec.to_args());
            c
        }
    };
    let run = proc::run_measured(&mut cmd, limit)?;
    let no_result = || CompareError::NoResult {
        engine: engine.name().to_owned(),
        phase: spec.phase.name(),
        output: run
            .stdout
            .chars()
            .rev()
            .take(2000)
            .collect::<String>()
            .chars()
            .rev()
            .collect(),
    };
    let result: PhaseResult = match db_bench_name {
        Some(name) => {
            *assertions |= db_bench::has_assertions(&run.stdout);
            db_bench::parse(&run.stdout, name, spec.phase).ok_or_else(no_result)?
        }
        None => run
            .stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(no_result)?,
    };
    let disk_bytes = if spec.phase.writes() {
        Some(proc::disk_usage(&spec.dir)?)
    } else {
        None
    };
    let measured = Measurement::new(result, &run, disk_bytes);
    Ok(Outcome::Measured(measured))
}

impl CompareArgs {
    /// The key space, and operations per phase: `--keys`, or the scale's own.
    pub fn keys(&self) -> u64 {
        self.keys.unwrap_or(match self.scale {
            Scale::OneMillion => ONE_MILLION,
            Scale::TenMillion => TEN_MILLION,
        })
    }

    /// The budget Shoal runs with, in bytes; `None` for its per-component defaults.
    pub fn shoal_memory_budget(&self) -> Option<u64> {
        (self.shoal_memory_budget_mib > 0).then_some(self.shoal_memory_budget_mib << 20)
    }
}

/// Runs the whole comparison and returns its report; `progress` hears about each step.
pub fn compare(args: &CompareArgs, mut progress: impl FnMut(&str)) -> Result<Report, CompareError> {
    if args.keys() == 0 || args.writers == 0 {
        return Err(CompareError::InvalidArgument(
            "--keys and --writers must be at least 1".into(),
        ));
    }
    let engines: Vec<Engine> = args
        .engines
        .iter()
        .copied()
        .filter(|e| available(*e))
        .collect();
    for e in args.engines.iter().filter(|e| !available(**e)) {
        progress(&format!(
            "skipping {}: built without its cargo feature",
            e.name()
        ));
    }
    let base = match &args.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("engine-compare-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("engine-compare-")
            .tempdir()?,
    };
    let keys = args.keys();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut assertions = false;
    let mut flush_rate = None;
    for step in plan(args) {
        if step.phase == Phase::FillSync && engines.contains(&Engine::Shoal) {
            progress("measuring the disk's flush rate ...");
            let rate = disk::measure_flush_rate(base.path(), disk::PROBE_TIME)?;
            progress(&format!(
                "disk: {:.0} write+fdatasync/s from one stream, {:.0}/s from two",
                rate.one_stream, rate.two_streams
            ));
            flush_rate = Some(rate);
        }
        let mut row = Row::new(step.label, step.phase);
        for &engine in &engines {
            let db = if step.fresh_db { "sync" } else { "main" };
            let spec = PhaseSpec {
                phase: step.phase,
                dir: base.path().join(engine.name()).join(db),
                keys,
                ops: step.ops,
                writers: if step.phase.concurrent() {
                    args.writers
                } else {
                    1
                },
                seed: args.seed,
            };
            if let Some(parent) = spec.dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            progress(&format!("{} {} ...", engine.name(), step.label));
            let m = match run_step(args, engine, &spec, &mut assertions)? {
                Outcome::Measured(m) => m,
                Outcome::Skipped(why) => {
                    progress(&format!("skipping {why}"));
                    skipped.push(why);
                    continue;
                }
            };
            let write_amp = m
                .write_amp
                .map(|w| format!(", write-amp {w:.2}"))
                .unwrap_or_default();
            progress(&format!(
                "{} {}: {:.0} ops/s{write_amp}, peak RSS {} MiB",
                engine.name(),
                step.label,
                m.ops_per_sec,
                m.peak_rss_bytes >> 20
            ));
            row.results.insert(engine, m);
        }
        rows.push(row);
    }
    Ok(Report::new(
        args, engines, rows, assertions, skipped, flush_rate,
    ))
}

/// Entry of the hidden child subcommands: runs one phase and prints its result as JSON.
pub fn run_child(
    engine: Engine,
    spec: &PhaseSpec,
    fs: ShoalFs,
    memory_budget: Option<u64>,
) -> Result<String, CompareError> {
    let result = match engine {
        Engine::Shoal => store::run_shoal(spec, fs, memory_budget)?,
        #[cfg(feature = "fjall")]
        Engine::Fjall => store::fjall_store::run_fjall(spec)?,
        other => {
            return Err(CompareError::InvalidArgument(format!(
                "{} cannot run in-process",
                other.name()
            )));
        }
    };
    encode(&result)
}

/// Entry of the hidden `run-rocksdb` subcommand: runs one phase db_bench cannot run through
/// RocksDB's C API and prints its result as JSON.
pub fn run_rocksdb_child(spec: &PhaseSpec, library: &Path) -> Result<String, CompareError> {
    encode(&store::run_rocksdb(spec, library)?)
}

fn encode(result: &PhaseResult) -> Result<String, CompareError> {
    serde_json::to_string(result).map_err(|e| CompareError::Io(std::io::Error::other(e)))
}
