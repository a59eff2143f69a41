//! `cluster-compare`: what replication costs. The same `shoal-bench` loads (SETs, then GETs
//! of the keys written; uniform keys) run in one process against a 3-node cluster (N=3,
//! R=W=QUORUM: every write waits for two fsyncs on two nodes, every read for two replicas)
//! and against one standalone node, interleaved, on the same machine. All clients connect to
//! the cluster's first node, which coordinates every request, so the cluster column is what a
//! client of one node sees. The report gives ops/s, p50 and p99 per operation and the ratio
//! 3-node / 1-node.
//!
//! Every node runs on free 127.0.0.1 ports in its own temporary directory and is killed by
//! its PID when the run ends; every client run is bounded in time.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::proc::{self, ProcError};
use crate::redis_compare::{
    OpResult, START_TIMEOUT, ShoalBenchLoad, cell, free_port, parse_shoal_bench_json,
    shoal_bench_command, sibling, spawn_server, started,
};

/// A cluster whose first node cannot reach the others within this long failed to form.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One client run longer than this is killed and the comparison fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(600);
/// Nodes of the cluster setup.
pub const CLUSTER_NODES: usize = 3;
/// Key read by the connectivity probe; never written.
const PROBE_KEY: &str = "__cluster_compare_probe";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterCompareError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Proc(#[from] ProcError),
    #[error("no shoal binary at {0} (build it with `cargo build --release --bin shoal`)")]
    NoShoal(PathBuf),
    #[error(
        "no shoal-bench binary at {0} (build it with `cargo build --release --bin shoal-bench`)"
    )]
    NoShoalBench(PathBuf),
    #[error("{what} did not answer PING on port {port} within {START_TIMEOUT:?}, or exited")]
    NotStarted { what: String, port: u16 },
    #[error("the cluster's first node did not reach the others within {CONNECT_TIMEOUT:?}")]
    NotConnected,
    #[error("shoal-bench against the {setup}: no result in its output: {output}")]
    NoResult { setup: &'static str, output: String },
}

/// What runs the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    Cluster3,
    Standalone,
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::Cluster3 => "3-node cluster",
            Setup::Standalone => "standalone node",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterCompareArgs {
    /// The shoal server binary.
    #[arg(long, default_value = "target/release/shoal")]
    pub shoal: PathBuf,
    /// The shoal-bench binary (default: next to this binary).
    #[arg(long)]
    pub shoal_bench: Option<PathBuf>,
    /// Requests per load (SETs, then as many GETs).
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub requests: u64,
    /// Connections of each load.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub clients: usize,
    /// Requests in flight per connection.
    #[arg(long, short = 'P', default_value_t = 1)]
    pub pipeline: usize,
    /// Key space (uniform).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per SET value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Shards of every node, cluster and standalone alike.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Idle spin of every node's executors in µs (shoal's `--spin-us`; default: shoal's own).
    /// Four processes share this machine's cores during the cluster run: spinning executors
    /// take CPU the other nodes need.
    #[arg(long)]
    pub spin_us: Option<u64>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Instead of the comparison, the failure run: a member killed and restarted under a
    /// QUORUM write load at P=1 and P=16 (see `cluster_failure`).
    #[arg(long)]
    pub failure: bool,
}

/// A running node, killed by its PID on drop.
struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Our own child, by its PID; it may already have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nodes of one setup and the directory holding their data; the port clients use.
struct Running {
    setup: Setup,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn port(&self) -> u16 {
        self.nodes[0].port
    }
}

/// A port `p` with `p..p + count` all free, and the listeners holding them.
pub(crate) fn free_run(count: usize, held: &mut Vec<TcpListener>) -> std::io::Result<u16> {
    'search: loop {
        let first = TcpListener::bind("127.0.0.1:0")?;
        let base = first.local_addr()?.port();
        let mut run = vec![first];
        for i in 1..count {
            let port = base.checked_add(i as u16);
            match port.map(|p| TcpListener::bind(("127.0.0.1", p))) {
                Some(Ok(l)) => run.push(l),
                _ => continue 'search,
            }
        }
        held.extend(run);
        return Ok(base);
    }
}

/// The cluster's config file: N=3, quorum reads and writes, one `[[nodes]]` per peer port.
pub fn cluster_config(shards: usize, peer_ports: &[u16]) -> String {
    let mut text = format!(
        "shards = {shards}\n\n[replication]\nn = {CLUSTER_NODES}\nr = \"quorum\"\nw = \"quorum\"\n"
    );
    for (i, port) in peer_ports.iter().enumerate() {
        let _ = write!(
            text,
            "\n[[nodes]]\nid = \"n{}\"\npeer = \"127.0.0.1:{port}\"\n",
            i + 1
        );
    }
    text
}

fn spawn(
    shoal: &Path,
    what: String,
    port: u16,
    data_dir: &Path,
    extra: &[&str],
) -> Result<Node, ClusterCompareError> {
    let mut cmd = Command::new(shoal);
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra);
    let child = spawn_server(&mut cmd, &shoal.display().to_string())?;
    let mut node = Node { child, port };
    if !started(&mut node.child, port)? {
        return Err(ClusterCompareError::NotStarted { what, port });
    }
    Ok(node)
}

/// Whether `VGET probe R ALL` through the node on `port` succeeds: it reaches every replica.
fn reaches_all(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut first = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(5))).is_ok()
        && s.write_all(format!("VGET {PROBE_KEY} R ALL\r\n").as_bytes())
            .is_ok()
        && s.read_exact(&mut first).is_ok()
        && first[0] == b'*'
}

fn start(args: &ClusterCompareArgs, setup: Setup) -> Result<Running, ClusterCompareError> {
    let dir = tempfile::Builder::new()
        .prefix("cluster-compare-")
        .tempdir()?;
    let shards = args.shards.to_string();
    let spin = args.spin_us.map(|us| us.to_string());
    let spin_args: Vec<&str> = match &spin {
        Some(us) => vec!["--spin-us", us.as_str()],
        None => Vec::new(),
    };
    let mut nodes = Vec::new();
    match setup {
        Setup::Standalone => {
            let port = free_port()?;
            let mut extra = vec!["--shards", shards.as_str()];
            extra.extend(&spin_args);
            nodes.push(spawn(
                &args.shoal,
                "standalone node".into(),
                port,
                &dir.path().join("data"),
                &extra,
            )?);
        }
        Setup::Cluster3 => {
            let mut held = Vec::new();
            let client_ports = (0..CLUSTER_NODES)
                .map(|_| free_run(1, &mut held))
                .collect::<Result<Vec<_>, _>>()?;
            let peer_ports = (0..CLUSTER_NODES)
                .map(|_| free_run(args.shards, &mut held))
                .collect::<Result<Vec<_>, _>>()?;
            let config = dir.path().join("cluster.toml");
            std::fs::write(&config, cluster_config(args.shards, &peer_ports))?;
            drop(held);
            let config = config.display().to_string();
            for (i, &port) in client_ports.iter().enumerate() {
                let name = format!("n{}", i + 1);
                let mut extra = vec!["--config", config.as_str(), "--node-id", name.as_str()];
                extra.extend(&spin_args);
                nodes.push(spawn(
                    &args.shoal,
                    format!("cluster node {name}"),
                    port,
                    &dir.path().join(&name),
                    &extra,
                )?);
            }
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            while !reaches_all(client_ports[0]) {
                if Instant::now() > deadline {
                    return Err(ClusterCompareError::NotConnected);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(Running {
        setup,
        nodes,
        _dir: dir,
    })
}

/// One operation's result against one setup.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Measured {
    #[serde(flatten)]
    pub result: OpResult,
    /// Error replies (e.g. `-TIMEOUT`); they count in ops/s, so a run with errors is suspect.
    pub errors: u64,
}

/// The op's error count in shoal-bench's `--json` output.
pub fn parse_errors(out: &str, op: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(out).ok()?;
    v[op]["errors"].as_u64()
}

fn run_load(
    args: &ClusterCompareArgs,
    bench: &Path,
    s: &Running,
    op: &str,
) -> Result<Measured, ClusterCompareError> {
    let reads = if op == "get" { "1" } else { "0" };
    let mut cmd = shoal_bench_command(
        bench,
        s.port(),
        reads,
        ShoalBenchLoad {
            requests: args.requests,
            clients: args.clients,
            pipeline: args.pipeline,
            keys: args.keys,
            value_size: args.value_size,
        },
    );
    let run = proc::run_measured(&mut cmd, CLIENT_TIMEOUT)?;
    let no_result = || ClusterCompareError::NoResult {
        setup: s.setup.name(),
        output: run.stdout.chars().take(2000).collect(),
    };
    Ok(Measured {
        result: parse_shoal_bench_json(&run.stdout, op).ok_or_else(no_result)?,
        errors: parse_errors(&run.stdout, op).ok_or_else(no_result)?,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub op: String,
    pub cluster: Measured,
    pub standalone: Measured,
}

impl Row {
    /// Cluster throughput over standalone throughput.
    pub fn ratio(&self) -> Option<f64> {
        let base = self.standalone.result.ops_per_sec;
        (base > 0.0).then(|| self.cluster.result.ops_per_sec / base)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub requests: u64,
    pub clients: usize,
    pub pipeline: usize,
    pub shards: usize,
    pub rows: Vec<Row>,
}

/// Starts both setups, runs SETs then GETs against each (interleaved, so noise hits both
/// alike), stops them.
pub fn compare(
    args: &ClusterCompareArgs,
    mut progress: impl FnMut(&str),
) -> Result<Report, ClusterCompareError> {
    if !args.shoal.is_file() {
        return Err(ClusterCompareError::NoShoal(args.shoal.clone()));
    }
    let bench = args
        .shoal_bench
        .clone()
        .unwrap_or_else(|| sibling("shoal-bench"));
    if !bench.is_file() {
        return Err(ClusterCompareError::NoShoalBench(bench));
    }
    let mut running = Vec::new();
    for setup in [Setup::Cluster3, Setup::Standalone] {
        progress(&format!("starting the {}", setup.name()));
        running.push(start(args, setup)?);
    }
    let mut rows = Vec::new();
    for op in ["set", "get"] {
        let mut measured = Vec::new();
        for s in &running {
            progress(&format!(
                "{} x {} c={} P={} against the {}",
                op.to_uppercase(),
                args.requests,
                args.clients,
                args.pipeline,
                s.setup.name()
            ));
            measured.push(run_load(args, &bench, s, op)?);
        }
        rows.push(Row {
            op: op.to_uppercase(),
            cluster: measured[0],
            standalone: measured[1],
        });
    }
    Ok(Report {
        requests: args.requests,
        clients: args.clients,
        pipeline: args.pipeline,
        shards: args.shards,
        rows,
    })
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = format!(
            "shoal-bench -n {} -c {} -P {}, uniform keys, {} shard(s) per node\n",
            self.requests, self.clients, self.pipeline, self.shards
        );
        let _ = writeln!(
            out,
            "{:<4} {:>13} {:>8} {:>8} {:>6} {:>13} {:>8} {:>8} {:>6} {:>12}",
            "op",
            "3-node ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "1-node ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "3-node/1-node"
        );
        for row in &self.rows {
            let (c, s) = (&row.cluster, &row.standalone);
            let _ = writeln!(
                out,
                "{:<4} {:>13.0} {:>8.3} {:>8.3} {:>6} {:>13.0} {:>8.3} {:>8.3} {:>6} {:>12}",
                row.op,
                c.result.ops_per_sec,
                c.result.p50_ms,
                c.result.p99_ms,
                c.errors,
                s.result.ops_per_sec,
                s.result.p50_ms,
                s.result.p99_ms,
                s.errors,
                cell(row.ratio(), 2)
            );
        }
        let _ = writeln!(
            out,
            "cluster: N={CLUSTER_NODES} R=W=QUORUM, clients on node n1; every node fsyncs each write"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(ops: f64) -> Measured {
        Measured {
            result: OpResult {
                ops_per_sec: ops,
                p50_ms: 0.5,
                p99_ms: 2.0,
            },
            errors: 0,
        }
    }

    #[test]
    fn ratio_and_table() {
        let row = Row {
            op: "SET".into(),
            cluster: measured(500.0),
            standalone: measured(2000.0),
        };
        assert_eq!(row.ratio(), Some(0.25));
        let zero = Row {
            standalone: measured(0.0),
            ..row.clone()
        };
        assert_eq!(zero.ratio(), None);
        let report = Report {
            requests: 10,
            clients: 1,
            pipeline: 1,
            shards: 1,
            rows: vec![row],
        };
        let table = report.table();
        let line = table.lines().find(|l| l.starts_with("SET")).unwrap();
        assert!(line.ends_with("0.25"), "{line}");
    }

    #[test]
    fn config_lists_every_node() {
        let text = cluster_config(2, &[7101, 7201, 7301]);
        assert!(text.starts_with("shards = 2\n"));
        assert_eq!(text.matches("[[nodes]]").count(), 3);
        assert!(text.contains("id = \"n3\"\npeer = \"127.0.0.1:7301\""));
    }

    #[test]
    fn parses_errors() {
        let out = r#"{"set":{"ops_per_sec":1.0,"p50_us":1.0,"p99_us":1.0,"errors":3}}"#;
        assert_eq!(parse_errors(out, "set"), Some(3));
        assert_eq!(parse_errors(out, "get"), None);
    }
}
