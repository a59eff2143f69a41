//! `engine-compare`: Shoal's engine vs RocksDB's db_bench and fjall. See
//! `shoal_benches::engine_compare`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_benches::engine_compare::store::ShoalFs;
use shoal_benches::engine_compare::workload::PhaseSpec;
use shoal_benches::engine_compare::{self, CompareArgs, Engine};

/// The node's allocator, so Shoal's peak RSS here is what a node would hold (glibc's malloc
/// keeps more of the memtables' freed arena chunks resident). fjall runs on it too; RocksDB's
/// db_bench is a separate program with its own, and the RocksDB library `run-rocksdb` loads
/// allocates through glibc's malloc as db_bench's does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "engine-compare",
    version,
    about = "Shoal's engine vs RocksDB (db_bench) and fjall, side by side"
)]
struct Cli {
    #[command(subcommand)]
    child: Option<Child>,
    #[command(flatten)]
    compare: CompareArgs,
}

/// One phase of one engine, run by the parent in a child process so it is measured alone.
#[derive(Subcommand)]
enum Child {
    #[command(name = "run-shoal", hide = true)]
    Shoal {
        #[arg(long, value_enum, default_value = "dma")]
        fs: ShoalFs,
        /// Memory budget in bytes; without it, the engine's per-component defaults.
        #[arg(long)]
        memory_budget_bytes: Option<u64>,
        #[command(flatten)]
        spec: PhaseSpec,
    },
    #[command(name = "run-fjall", hide = true)]
    Fjall {
        #[command(flatten)]
        spec: PhaseSpec,
    },
    /// A phase db_bench has no benchmark for, on RocksDB through its C API.
    #[command(name = "run-rocksdb", hide = true)]
    Rocksdb {
        /// RocksDB's shared library.
        #[arg(long, default_value = engine_compare::rocksdb_c::LIBRARY)]
        library: PathBuf,
        #[command(flatten)]
        spec: PhaseSpec,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.child {
        Some(Child::Shoal {
            fs,
            memory_budget_bytes,
            spec,
        }) => engine_compare::run_child(Engine::Shoal, spec, *fs, *memory_budget_bytes)
            .map(|json| println!("{json}")),
        Some(Child::Fjall { spec }) => {
            engine_compare::run_child(Engine::Fjall, spec, ShoalFs::Std, None)
                .map(|json| println!("{json}"))
        }
        Some(Child::Rocksdb { library, spec }) => {
            engine_compare::run_rocksdb_child(spec, library).map(|json| println!("{json}"))
        }
        None => engine_compare::compare(&cli.compare, |msg| eprintln!("{msg}")).map(|report| {
            if cli.compare.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("engine-compare: encoding the report: {e}"),
                }
            } else {
                print!("{}", report.table());
            }
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine-compare: {e}");
            ExitCode::FAILURE
        }
    }
}
