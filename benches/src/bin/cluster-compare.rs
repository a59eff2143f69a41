//! `cluster-compare`: a 3-node cluster (N=3, QUORUM) vs one standalone node under the same
//! shoal-bench loads. See `shoal_benches::cluster_compare`.

use std::process::ExitCode;

use clap::Parser;
use shoal_benches::cluster_compare::{self, ClusterCompareArgs};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
