//! `shoal`: parse the configuration, start logging, run the node, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use shoal_node::{Config, Flags};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a request allocates and frees many small buffers on
/// its shard's thread, which glibc serves through its slower consolidating paths (Redis
/// ships jemalloc for the same reason).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration the server refuses (clap uses the same for bad flags).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while starting or running.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let config = match Config::resolve(Flags::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match shoal_node::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "shoal failed");
            eprintln!("shoal: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
