//! `shoal-bench`: load generator for RESP servers. See `shoal_tools::bench`.

use std::process::ExitCode;

use clap::Parser;
use shoal_tools::bench::{self, args::Args};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match bench::run(&config, !args.quiet) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.plot {
        if let Err(e) = std::fs::write(path, bench::plot::render(&report)) {
            eprintln!("shoal-bench: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("shoal-bench: encoding the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.table());
    }
    ExitCode::SUCCESS
}
