//! `cluster-compare`: a 3-node cluster (N=3, QUORUM) vs one standalone node under the same
//! shoal-bench loads. See `shoal_benches::cluster_compare`.

use std::process::ExitCode;

use clap::Parser;
use shoal_benches::cluster_compare::{self, ClusterCompareArgs};
use shoal_benches::cluster_failure;

#[derive(Parser)]
#[command(
    name = "cluster-compare",
    version,
    about = "A 3-node Shoal cluster (N=3, QUORUM) vs one standalone node"
)]
struct Cli {
    #[command(flatten)]
    args: ClusterCompareArgs,
}

/// The failure run at P=1 and P=16.
fn failure(args: &ClusterCompareArgs) -> ExitCode {
    let mut runs = Vec::new();
    for pipeline in [1, 16] {
        match cluster_failure::run(args, pipeline, |msg| eprintln!("{msg}")) {
            Ok(run) => runs.push(run),
            Err(e) => {
                eprintln!("cluster-compare --failure: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&runs) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cluster-compare: encoding the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", cluster_failure::table(&runs));
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.args.failure {
        return failure(&cli.args);
    }
    match cluster_compare::compare(&cli.args, |msg| eprintln!("{msg}")) {
        Ok(report) => {
            if cli.args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("cluster-compare: encoding the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cluster-compare: {e}");
            ExitCode::FAILURE
        }
    }
}
