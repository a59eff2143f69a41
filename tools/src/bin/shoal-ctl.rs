//! `shoal-ctl`: inspects a Shoal cluster. See `shoal_tools::ctl`.
//!
//! ```sh
//! shoal-ctl ring --config examples/cluster/n1.toml            # members and partition map
//! shoal-ctl ring --config c.toml --node-id n2 --key user:1    # where a key lives
//! shoal-ctl ring --config c.toml --json                        # the same, for programs
//! shoal-ctl status --addr 127.0.0.1:7001                       # members of a live cluster
//! ```
//!
//! Exit status: 0 on success, 1 when the configuration is refused or the node cannot be
//! reached or is not a cluster member, 2 for a usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_node::{Config, Flags};
use shoal_tools::ctl::{self, CtlError};
use shoal_tools::dump::escape;

#[derive(Parser, Debug)]
#[command(name = "shoal-ctl", version, about = "Inspects a Shoal cluster")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Prints the members (share of partitions owned and replicated) and the partition map
    /// (hash range, preference list, shard of each replica), as the nodes compute them.
    Ring {
        /// A node's configuration file (any member's: they list the same [[nodes]]).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The member the file is read as, when the file does not say (`node_id`). It
        /// matters only for members whose `shards` is not given: they default to its count.
        #[arg(long, value_name = "ID")]
        node_id: Option<String>,
        /// Print only where this key lives (repeatable; escapes such as \xNN are decoded).
        #[arg(long, value_name = "K")]
        key: Vec<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Prints each member of a live cluster as one node sees it: state, address, load, share
    /// of the ring owned, hints kept for it, when it was last heard.
    Status {
        /// A node's client address.
        #[arg(long, value_name = "HOST:PORT")]
        addr: SocketAddr,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn status(addr: SocketAddr, json: bool) -> Result<String, CtlError> {
    let view = ctl::status::fetch(addr)?;
    if json {
        Ok(serde_json::to_string_pretty(&view)? + "\n")
    } else {
        Ok(view.text())
    }
}

fn ring(
    config: PathBuf,
    node_id: Option<String>,
    keys: &[String],
    json: bool,
) -> Result<String, CtlError> {
    let keys = keys
        .iter()
        .map(|k| escape::unescape(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CtlError::Key)?;
    let flags = Flags {
        config: Some(config),
        node_id,
        ..Flags::default()
    };
    let view = ctl::ring::view(&Config::resolve(flags)?, &keys)?;
    if json {
        Ok(serde_json::to_string_pretty(&view)? + "\n")
    } else {
        Ok(view.text())
    }
}

fn main() -> ExitCode {
    let Args { command } = Args::parse();
    let result = match command {
        Cmd::Ring {
            config,
            node_id,
            key,
            json,
        } => ring(config, node_id, &key, json),
        Cmd::Status { addr, json } => status(addr, json),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal-ctl: {e}");
            ExitCode::FAILURE
        }
    }
}
