//! `redis-compare`: a Shoal node vs Redis (`appendfsync always`) vs a storage-less responder,
//! under redis-benchmark and shoal-bench. See `shoal_benches::redis_compare`.

use std::process::ExitCode;

use clap::Parser;
use shoal_benches::redis_compare::{self, RedisCompareArgs};

#[derive(Parser)]
#[command(
    name = "redis-compare",
    version,
    about = "Shoal vs Redis (appendfsync always) vs resp-echo"
)]
struct Cli {
    #[command(flatten)]
    args: RedisCompareArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match redis_compare::compare(&cli.args, |msg| eprintln!("{msg}")) {
        Ok(report) => {
            if cli.args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("redis-compare: encoding the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("redis-compare: {e}");
            ExitCode::FAILURE
        }
    }
}
