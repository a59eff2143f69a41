//! `redis-compare`: a Shoal node against Redis with `appendfsync always` (each write durable
//! before its reply, as Shoal's default) and against `resp-echo` (no storage at all, with as
//! many executors as the node has shards: the physical limit of a node of that shape on this
//! machine), under the same loads from two clients: `redis-benchmark` and `shoal-bench`.
//!
//! Every server runs on a free 127.0.0.1 port in its own temporary directory and is killed by
//! its PID when the run ends; every client run is bounded in time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::{self, ProcError};

/// A server not answering PING within this long after start failed to start.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);
/// One client run longer than this is killed and the comparison fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(600);
/// Key space of every load (redis-benchmark's `-r`, shoal-bench's `--keys`).
const KEY_SPACE: u64 = 100_000;
/// Value bytes of every SET.
const VALUE_BYTES: usize = 100;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisCompareError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Proc(#[from] ProcError),
    #[error("{server} did not answer PING on port {port} within {START_TIMEOUT:?}, or exited")]
    NotStarted { server: &'static str, port: u16 },
    #[error("{tool} against {server}: no result in its output: {output}")]
    NoResult {
        tool: &'static str,
        server: &'static str,
        output: String,
    },
}

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    Redis,
    Shoal,
    Echo,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Redis => "redis",
            Server::Shoal => "shoal",
            Server::Echo => "resp-echo",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RedisCompareArgs {
    /// The shoal server binary (skipped, with a notice, if absent).
    #[arg(long, default_value = "target/release/shoal")]
    pub shoal: PathBuf,
    /// Shards of the Shoal node and executors of resp-echo (default: their own, one per
    /// core). On a machine where the client needs a core of its own, one shard per remaining
    /// core is the fair match for single-threaded Redis.
    #[arg(long)]
    pub shoal_shards: Option<usize>,
    /// The resp-echo binary (default: next to this binary).
    #[arg(long)]
    pub resp_echo: Option<PathBuf>,
    /// The shoal-bench binary (default: next to this binary).
    #[arg(long)]
    pub shoal_bench: Option<PathBuf>,
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    #[arg(long, default_value = "redis-benchmark")]
    pub redis_benchmark: PathBuf,
    /// Requests per throughput load (50 connections).
    #[arg(long, short = 'n', default_value_t = 200_000)]
    pub requests: u64,
    /// Requests of the one-connection latency load.
    #[arg(long, default_value_t = 20_000)]
    pub latency_requests: u64,
    /// Connections of the throughput loads.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub clients: usize,
    /// Servers to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["redis", "shoal", "echo"])]
    pub servers: Vec<Server>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A running server, killed by its PID on drop.
struct Running {
    server: Server,
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Our own child, by its PID; it may already have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a server with its input and output detached; `program` names it in errors.
pub(crate) fn spawn_server(cmd: &mut Command, program: &str) -> Result<Child, ProcError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| ProcError::Spawn {
            program: program.to_owned(),
            source,
        })
}

/// Whether the server `child` on `port` answers PING within [`START_TIMEOUT`]; false as soon
/// as it exits.
pub(crate) fn started(child: &mut Child, port: u16) -> std::io::Result<bool> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !answers_ping(port) {
        if child.try_wait()?.is_some() || Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

pub(crate) fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut buf = [0u8; 7];
    s.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
        && s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

/// The program `name` next to this binary.
pub(crate) fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn shoal_bench(args: &RedisCompareArgs) -> PathBuf {
    args.shoal_bench
        .clone()
        .unwrap_or_else(|| sibling("shoal-bench"))
}

/// Servers started on a fresh port before giving up: a port from [`free_port`] is free only
/// until it is released, and a client's outgoing connection can take it before the server
/// binds it (the server then exits at once).
const START_ATTEMPTS: usize = 3;

fn start(args: &RedisCompareArgs, server: Server) -> Result<Running, RedisCompareError> {
    let mut attempt = 1;
    loop {
        let mut running = spawn_on(args, server, free_port()?)?;
        if started(&mut running.child, running.port)? {
            return Ok(running);
        }
        let exited = running.child.try_wait()?.is_some();
        if !exited || attempt == START_ATTEMPTS {
            return Err(RedisCompareError::NotStarted {
                server: server.name(),
                port: running.port,
            });
        }
        attempt += 1;
    }
}

/// Spawns `server` on `port` (not waiting for it to answer).
fn spawn_on(
    args: &RedisCompareArgs,
    server: Server,
    port: u16,
) -> Result<Running, RedisCompareError> {
    let dir = tempfile::Builder::new()
        .prefix("redis-compare-")
        .tempdir()?;
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = match server {
        Server::Redis => {
            let mut c = Command::new(&args.redis_server);
            c.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir.path());
            c
        }
        Server::Shoal => {
            let mut c = Command::new(&args.shoal);
            c.args(["--listen", &addr])
                .arg("--data-dir")
                .arg(dir.path());
            if let Some(n) = args.shoal_shards {
                c.args(["--shards", &n.to_string()]);
            }
            c
        }
        Server::Echo => {
            let mut c = Command::new(
                args.resp_echo
                    .clone()
                    .unwrap_or_else(|| sibling("resp-echo")),
            );
            c.args(["--listen", &addr]);
            if let Some(n) = args.shoal_shards {
                c.args(["--shards", &n.to_string()]);
            }
            c
        }
    };
    let child = spawn_server(&mut cmd, server.name())?;
    Ok(Running {
        server,
        child,
        port,
        _dir: dir,
    })
}

/// The client tool of a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    RedisBenchmark,
    ShoalBench,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::RedisBenchmark => "redis-benchmark",
            Tool::ShoalBench => "shoal-bench",
        }
    }
}

/// One client run's settings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Load {
    pub tool: Tool,
    pub clients: usize,
    pub pipeline: usize,
    pub requests: u64,
}

/// Throughput and latency of one operation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct OpResult {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// redis-benchmark `--csv`: a header, then `"SET","84033.61","0.550",...` with the columns
/// test, rps, avg, min, p50, p95, p99, max (latencies in ms).
pub fn parse_redis_benchmark_csv(out: &str) -> BTreeMap<String, OpResult> {
    let mut results = BTreeMap::new();
    for line in out.lines() {
        let cols: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        let num = |i: usize| cols.get(i).and_then(|c| c.parse::<f64>().ok());
        if let (Some(name), Some(rps), Some(p50), Some(p99)) =
            (cols.first(), num(1), num(4), num(6))
        {
            results.insert(
                name.to_string(),
                OpResult {
                    ops_per_sec: rps,
                    p50_ms: p50,
                    p99_ms: p99,
                },
            );
        }
    }
    results
}

/// shoal-bench `--json`: the op's throughput and percentiles.
/// The shape of one shoal-bench run.
pub(crate) struct ShoalBenchLoad {
    pub requests: u64,
    pub clients: usize,
    pub pipeline: usize,
    pub keys: u64,
    pub value_size: usize,
}

/// shoal-bench against 127.0.0.1:`port` with `--json`, `reads` the fraction of GETs.
pub(crate) fn shoal_bench_command(
    bench: &std::path::Path,
    port: u16,
    reads: &str,
    load: ShoalBenchLoad,
) -> Command {
    let mut cmd = Command::new(bench);
    cmd.args(["--addr", &format!("127.0.0.1:{port}"), "--json", "-q"])
        .args(["--reads", reads])
        .args(["-n", &load.requests.to_string()])
        .args(["-c", &load.clients.to_string()])
        .args(["-P", &load.pipeline.to_string()])
        .args(["--keys", &load.keys.to_string()])
        .args(["--value-size", &load.value_size.to_string()]);
    cmd
}

pub fn parse_shoal_bench_json(out: &str, op: &str) -> Option<OpResult> {
    let v: serde_json::Value = serde_json::from_str(out).ok()?;
    let s = &v[op];
    Some(OpResult {
        ops_per_sec: s["ops_per_sec"].as_f64()?,
        p50_ms: s["p50_us"].as_f64()? / 1000.0,
        p99_ms: s["p99_us"].as_f64()? / 1000.0,
    })
}

/// Runs `load` against `server` and returns SET and GET results.
fn run_load(
    args: &RedisCompareArgs,
    load: Load,
    s: &Running,
) -> Result<BTreeMap<String, OpResult>, RedisCompareError> {
    let no_result = |output: &str| RedisCompareError::NoResult {
        tool: load.tool.name(),
        server: s.server.name(),
        output: output.chars().take(2000).collect(),
    };
    match load.tool {
        Tool::RedisBenchmark => {
            let mut cmd = Command::new(&args.redis_benchmark);
            cmd.args([
                "-h",
                "127.0.0.1",
                "-p",
                &s.port.to_string(),
                "-t",
                "set,get",
                "--csv",
            ])
            .args([
                "-n",
                &load.requests.to_string(),
                "-c",
                &load.clients.to_string(),
            ])
            .args([
                "-P",
                &load.pipeline.to_string(),
                "-r",
                &KEY_SPACE.to_string(),
            ])
            .args(["-d", &VALUE_BYTES.to_string()]);
            let run = proc::run_measured(&mut cmd, CLIENT_TIMEOUT)?;
            let results = parse_redis_benchmark_csv(&run.stdout);
            if !(results.contains_key("SET") && results.contains_key("GET")) {
                return Err(no_result(&run.stdout));
            }
            Ok(results)
        }
        Tool::ShoalBench => {
            let mut results = BTreeMap::new();
            // SETs first so GETs find values, as redis-benchmark's order.
            for (op, reads) in [("SET", "0"), ("GET", "1")] {
                let mut cmd = shoal_bench_command(
                    &shoal_bench(args),
                    s.port,
                    reads,
                    ShoalBenchLoad {
                        requests: load.requests,
                        clients: load.clients,
                        pipeline: load.pipeline,
                        keys: KEY_SPACE,
                        value_size: VALUE_BYTES,
                    },
                );
                let run = proc::run_measured(&mut cmd, CLIENT_TIMEOUT)?;
                let key = if op == "SET" { "set" } else { "get" };
                let r = parse_shoal_bench_json(&run.stdout, key)
                    .ok_or_else(|| no_result(&run.stdout))?;
                results.insert(op.to_owned(), r);
            }
            Ok(results)
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub load: Load,
    pub op: String,
    pub results: BTreeMap<Server, OpResult>,
}

impl Row {
    pub fn ratio(&self, a: Server, b: Server) -> Option<f64> {
        let (a, b) = (
            self.results.get(&a)?.ops_per_sec,
            self.results.get(&b)?.ops_per_sec,
        );
        (b > 0.0).then(|| a / b)
    }

    /// How much longer `a`'s median latency is than `b`'s, in µs (the single-connection
    /// target: Shoal's p50 within 15 µs of the echo round trip).
    pub fn p50_over(&self, a: Server, b: Server) -> Option<f64> {
        let (a, b) = (self.results.get(&a)?.p50_ms, self.results.get(&b)?.p50_ms);
        Some((a - b) * 1000.0)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub servers: Vec<Server>,
    pub skipped: Vec<String>,
    pub rows: Vec<Row>,
}

pub fn loads(args: &RedisCompareArgs, tools: &[Tool]) -> Vec<Load> {
    let mut out = Vec::new();
    for &tool in tools {
        for (clients, pipeline, requests) in [
            (args.clients, 1, args.requests),
            (args.clients, 16, args.requests),
            (1, 1, args.latency_requests),
        ] {
            out.push(Load {
                tool,
                clients,
                pipeline,
                requests,
            });
        }
    }
    out
}

/// Starts the servers, runs every load against each (interleaved, so noise hits all alike),
/// stops the servers.
pub fn compare(
    args: &RedisCompareArgs,
    mut progress: impl FnMut(&str),
) -> Result<Report, RedisCompareError> {
    let mut skipped = Vec::new();
    let mut running = Vec::new();
    for &server in &args.servers {
        if server == Server::Shoal && !args.shoal.exists() {
            let why = format!(
                "shoal: no binary at {} (build it with `cargo build --release --bin shoal`)",
                args.shoal.display()
            );
            progress(&format!("skipping {why}"));
            skipped.push(why);
            continue;
        }
        progress(&format!("starting {}", server.name()));
        running.push(start(args, server)?);
    }
    let mut tools = vec![Tool::RedisBenchmark];
    let shoal_bench = shoal_bench(args);
    if shoal_bench.is_file() {
        tools.push(Tool::ShoalBench);
    } else {
        let why = format!("shoal-bench: no binary at {}", shoal_bench.display());
        progress(&format!("skipping {why}"));
        skipped.push(why);
    }
    let mut rows = Vec::new();
    for load in loads(args, &tools) {
        let mut per_op: BTreeMap<String, BTreeMap<Server, OpResult>> = BTreeMap::new();
        for s in &running {
            progress(&format!(
                "{} c={} P={} n={} against {}",
                load.tool.name(),
                load.clients,
                load.pipeline,
                load.requests,
                s.server.name()
            ));
            for (op, r) in run_load(args, load, s)? {
                per_op.entry(op).or_default().insert(s.server, r);
            }
        }
        // SET before GET, as the loads run.
        for op in ["SET", "GET"] {
            if let Some(results) = per_op.remove(op) {
                rows.push(Row {
                    load,
                    op: op.to_owned(),
                    results,
                });
            }
        }
    }
    Ok(Report {
        servers: running.iter().map(|r| r.server).collect(),
        skipped,
        rows,
    })
}

pub(crate) fn cell(v: Option<f64>, precision: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.precision$}"))
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{:<30} {:<4}", "load", "op");
        for s in &self.servers {
            let _ = write!(
                out,
                " {:>14} {:>7} {:>7}",
                format!("{} ops/s", s.name()),
                "p50 ms",
                "p99 ms"
            );
        }
        let _ = writeln!(
            out,
            " {:>12} {:>11} {:>18}",
            "shoal/redis", "shoal/echo", "p50 over echo µs"
        );
        for row in &self.rows {
            let l = &row.load;
            let load = format!("{} c={} P={}", l.tool.name(), l.clients, l.pipeline);
            let _ = write!(out, "{load:<30} {:<4}", row.op);
            for s in &self.servers {
                let r = row.results.get(s);
                let _ = write!(
                    out,
                    " {:>14} {:>7} {:>7}",
                    cell(r.map(|r| r.ops_per_sec), 0),
                    cell(r.map(|r| r.p50_ms), 3),
                    cell(r.map(|r| r.p99_ms), 3)
                );
            }
            let _ = writeln!(
                out,
                " {:>12} {:>11} {:>18}",
                cell(row.ratio(Server::Shoal, Server::Redis), 2),
                cell(row.ratio(Server::Shoal, Server::Echo), 2),
                cell(row.p50_over(Server::Shoal, Server::Echo), 0)
            );
        }
        for s in &self.skipped {
            let _ = writeln!(out, "skipped {s}");
        }
        let _ = writeln!(
            out,
            "redis runs with appendonly yes, appendfsync always; resp-echo stores nothing"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_benchmark_csv() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"SET\",\"84033.61\",\"0.550\",\"0.112\",\"0.519\",\"0.831\",\"1.175\",\"5.367\"\n\
                   \"GET\",\"101936.80\",\"0.452\",\"0.104\",\"0.439\",\"0.631\",\"0.839\",\"2.031\"\n";
        let r = parse_redis_benchmark_csv(out);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r["SET"],
            OpResult {
                ops_per_sec: 84033.61,
                p50_ms: 0.519,
                p99_ms: 1.175
            }
        );
        assert_eq!(r["GET"].ops_per_sec, 101936.80);
    }

    #[test]
    fn parses_shoal_bench_json() {
        let out = r#"{"set":{"ops_per_sec":1000.0,"p50_us":500.0,"p99_us":2000.0}}"#;
        assert_eq!(
            parse_shoal_bench_json(out, "set"),
            Some(OpResult {
                ops_per_sec: 1000.0,
                p50_ms: 0.5,
                p99_ms: 2.0
            })
        );
        assert_eq!(parse_shoal_bench_json(out, "get"), None);
    }

    #[test]
    fn ratios_and_p50_over() {
        let load = Load {
            tool: Tool::RedisBenchmark,
            clients: 1,
            pipeline: 1,
            requests: 1,
        };
        let r = |ops, p50_ms| OpResult {
            ops_per_sec: ops,
            p50_ms,
            p99_ms: 0.0,
        };
        let row = Row {
            load,
            op: "SET".into(),
            results: [
                (Server::Redis, r(100.0, 0.5)),
                (Server::Shoal, r(50.0, 0.125)),
                (Server::Echo, r(200.0, 0.1)),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(row.ratio(Server::Shoal, Server::Redis), Some(0.5));
        assert_eq!(row.ratio(Server::Shoal, Server::Echo), Some(0.25));
        let over = row.p50_over(Server::Shoal, Server::Echo).unwrap();
        assert!((over - 25.0).abs() < 1e-9, "{over}");
        let mut no_echo = row.clone();
        no_echo.results.remove(&Server::Echo);
        assert_eq!(no_echo.p50_over(Server::Shoal, Server::Echo), None);
        let table = Report {
            servers: vec![Server::Redis, Server::Shoal, Server::Echo],
            skipped: Vec::new(),
            rows: vec![row],
        }
        .table();
        assert!(table.contains("p50 over echo µs"), "{table}");
        assert!(table.contains(" 25"), "{table}");
    }
}
