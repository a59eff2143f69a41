//! `cluster-compare --failure`: a member killed and restarted under a steady QUORUM write
//! load. A 3-node cluster (N=3, R=W=QUORUM) takes shoal-bench SETs through node n1 for a fixed
//! time; n3 is killed with SIGKILL after the first fifth and restarted at the half. The run
//! reports the load's errors (the goal is none: a quorum of two survives), its p99 per second
//! before, during and after the outage, the hints the survivors took for n3, how fast they were
//! handed off once it was back, and how long after its restart the last one was.
//!
//! Nodes run on free 127.0.0.1 ports in a temporary directory and are killed by PID when the
//! run ends; the load is bounded in time.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster_compare::{
    CLUSTER_NODES, ClusterCompareArgs, ClusterCompareError, cluster_config, free_run,
};
use crate::redis_compare::{sibling, spawn_server, started};

/// The load's length: long enough for the detector to convict n3 and for n3 to catch up.
pub const LOAD_SECS: u64 = 30;
/// n3 is killed at this fraction of the load, and restarted at that one.
const KILL_AT: f64 = 0.2;
const RESTART_AT: f64 = 0.5;
/// How often the survivors' hint counters are read.
const POLL: Duration = Duration::from_millis(100);
/// Longest the hints may take to drain after the load ended.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// One member's process and how to start it again.
struct Member {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl Member {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Our own child, by its PID.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(shoal: &Path, port: u16, args: &[String]) -> Result<Child, ClusterCompareError> {
    let mut cmd = Command::new(shoal);
    cmd.args(args);
    let mut child = spawn_server(&mut cmd, &shoal.display().to_string())?;
    if !started(&mut child, port)? {
        return Err(ClusterCompareError::NotStarted {
            what: format!("cluster node on port {port}"),
            port,
        });
    }
    Ok(child)
}

/// A numeric field of a node's `INFO cluster` (`shoal_<field>`); `None` while it is down.
fn info_counter(port: u16, field: &str) -> Option<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"INFO cluster\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let text = String::from_utf8_lossy(&buf);
        let header_end = text.find("\r\n");
        if let Some(end) = header_end {
            let len: usize = text[1..end].parse().ok()?;
            if buf.len() >= end + 2 + len {
                let prefix = format!("shoal_{field}:");
                return text
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .and_then(|v| v.trim().parse().ok());
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The survivors' sum of a hint counter.
fn survivors(members: &[Member], field: &str) -> u64 {
    members[..2]
        .iter()
        .filter_map(|m| info_counter(m.port, field))
        .sum()
}

/// p99 of one second of the load, from shoal-bench's timeline.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SecondP99 {
    pub second: u64,
    pub requests: u64,
    pub p99_ms: f64,
}

/// One failure run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FailureRun {
    pub pipeline: usize,
    pub ops_per_sec: f64,
    pub errors: u64,
    pub killed_at_s: f64,
    pub restarted_at_s: f64,
    /// Worst per-second p99 before the kill, between kill and restart, and after.
    pub p99_before_ms: f64,
    pub p99_outage_ms: f64,
    pub p99_after_ms: f64,
    /// Hints the survivors took for n3, and replayed to it.
    pub hints_taken: u64,
    pub hints_replayed: u64,
    /// The fastest the survivors handed hints off, over one poll interval, in keys/s.
    pub replay_keys_per_s: f64,
    /// From n3's restart to no hint left on the survivors.
    pub drained_after_restart_s: f64,
    pub timeline: Vec<SecondP99>,
}

/// Runs the failure scenario at pipeline `pipeline`.
pub fn run(
    args: &ClusterCompareArgs,
    pipeline: usize,
    mut progress: impl FnMut(&str),
) -> Result<FailureRun, ClusterCompareError> {
    let bench = args
        .shoal_bench
        .clone()
        .unwrap_or_else(|| sibling("shoal-bench"));
    if !bench.is_file() {
        return Err(ClusterCompareError::NoShoalBench(bench));
    }
    let dir = tempfile::Builder::new()
        .prefix("cluster-failure-")
        .tempdir()?;
    let mut members = start_cluster(args, dir.path())?;
    progress(&format!(
        "SET for {LOAD_SECS} s c={} P={pipeline} through n1; n3 killed at {:.0} s, restarted at {:.0} s",
        args.clients,
        LOAD_SECS as f64 * KILL_AT,
        LOAD_SECS as f64 * RESTART_AT
    ));
    let load = Command::new(&bench)
        .args(["--addr", &format!("127.0.0.1:{}", members[0].port)])
        .args(["--json", "-q", "--reads", "0"])
        .args(["--duration", &LOAD_SECS.to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-P", &pipeline.to_string()])
        .args(["--keys", &args.keys.to_string()])
        .args(["--value-size", &args.value_size.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut load = LoadChild(Some(load));
    let start = Instant::now();
    let kill_at = Duration::from_secs_f64(LOAD_SECS as f64 * KILL_AT);
    let restart_at = Duration::from_secs_f64(LOAD_SECS as f64 * RESTART_AT);
    let (mut killed, mut restarted) = (None, None);
    let mut replay_rate: f64 = 0.0;
    let mut last = (Instant::now(), 0u64);
    let mut drained = None;
    let shoal = args.shoal.clone();
    loop {
        let elapsed = start.elapsed();
        if killed.is_none() && elapsed >= kill_at {
            members[2].kill();
            killed = Some(elapsed);
        }
        if restarted.is_none() && elapsed >= restart_at {
            let child = spawn(&shoal, members[2].port, &members[2].args)?;
            members[2].child = Some(child);
            restarted = Some(start.elapsed());
            last = (Instant::now(), survivors(&members, "hints_replayed"));
        }
        if restarted.is_some() {
            let replayed = survivors(&members, "hints_replayed");
            let dt = last.0.elapsed().as_secs_f64();
            if dt > 0.0 {
                replay_rate = replay_rate.max((replayed - last.1.min(replayed)) as f64 / dt);
            }
            last = (Instant::now(), replayed);
            if drained.is_none() && survivors(&members, "hints_pending") == 0 {
                drained = restarted.map(|r| start.elapsed() - r);
            }
        }
        let load_done = load.0.as_mut().map_or(Ok(None), Child::try_wait)?.is_some();
        if load_done && drained.is_some() {
            break;
        }
        if elapsed > Duration::from_secs(LOAD_SECS) + DRAIN_LIMIT {
            break;
        }
        std::thread::sleep(POLL);
    }
    let mut out = String::new();
    if let Some(mut child) = load.0.take() {
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        child.wait()?;
    }
    let report = parse_load(&out).ok_or_else(|| ClusterCompareError::NoResult {
        setup: "3-node cluster",
        output: out.chars().take(2000).collect(),
    })?;
    let killed = killed.unwrap_or_default().as_secs_f64();
    let restarted = restarted.unwrap_or_default().as_secs_f64();
    let worst = |from: f64, to: f64| {
        report
            .timeline
            .iter()
            .filter(|s| (s.second as f64) >= from && (s.second as f64) < to && s.requests > 0)
            .map(|s| s.p99_ms)
            .fold(0.0, f64::max)
    };
    Ok(FailureRun {
        pipeline,
        ops_per_sec: report.ops_per_sec,
        errors: report.errors,
        killed_at_s: killed,
        restarted_at_s: restarted,
        p99_before_ms: worst(1.0, killed.floor()),
        p99_outage_ms: worst(killed.floor(), restarted.ceil()),
        p99_after_ms: worst(restarted.ceil(), f64::MAX),
        hints_taken: survivors(&members, "hints_stored"),
        hints_replayed: survivors(&members, "hints_replayed"),
        replay_keys_per_s: replay_rate,
        drained_after_restart_s: drained.map_or(f64::NAN, |d| d.as_secs_f64()),
        timeline: report.timeline,
    })
}

/// The load process, killed by its PID if the run ends early.
struct LoadChild(Option<Child>);

impl Drop for LoadChild {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct LoadReport {
    ops_per_sec: f64,
    errors: u64,
    timeline: Vec<SecondP99>,
}

fn parse_load(out: &str) -> Option<LoadReport> {
    let v: serde_json::Value = serde_json::from_str(out).ok()?;
    let timeline = v["timeline"]
        .as_array()?
        .iter()
        .filter_map(|s| {
            Some(SecondP99 {
                second: s["second"].as_u64()?,
                requests: s["requests"].as_u64()?,
                p99_ms: s["p99_us"].as_f64()? / 1000.0,
            })
        })
        .collect();
    Some(LoadReport {
        ops_per_sec: v["set"]["ops_per_sec"].as_f64()?,
        errors: v["set"]["errors"].as_u64()?,
        timeline,
    })
}

fn start_cluster(
    args: &ClusterCompareArgs,
    dir: &Path,
) -> Result<Vec<Member>, ClusterCompareError> {
    let mut held = Vec::new();
    let client_ports = (0..CLUSTER_NODES)
        .map(|_| free_run(1, &mut held))
        .collect::<Result<Vec<_>, _>>()?;
    let peer_ports = (0..CLUSTER_NODES)
        .map(|_| free_run(args.shards, &mut held))
        .collect::<Result<Vec<_>, _>>()?;
    let config: PathBuf = dir.join("cluster.toml");
    std::fs::write(&config, cluster_config(args.shards, &peer_ports))?;
    drop(held);
    let mut members = Vec::new();
    for (i, &port) in client_ports.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let mut member_args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.join(&name).display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--node-id".into(),
            name,
        ];
        if let Some(us) = args.spin_us {
            member_args.extend(["--spin-us".to_owned(), us.to_string()]);
        }
        let child = spawn(&args.shoal, port, &member_args)?;
        members.push(Member {
            child: Some(child),
            port,
            args: member_args,
        });
    }
    Ok(members)
}

/// The table `cluster-compare --failure` prints.
pub fn table(runs: &[FailureRun]) -> String {
    let mut out = format!(
        "3-node cluster (N={CLUSTER_NODES}, QUORUM), SETs for {LOAD_SECS} s through n1; n3 killed, then restarted\n"
    );
    let _ = writeln!(
        out,
        "{:>3} {:>10} {:>6} {:>8} {:>8} {:>8} {:>9} {:>11} {:>12} {:>10}",
        "P",
        "ops/s",
        "errors",
        "p99 pre",
        "p99 down",
        "p99 post",
        "hints",
        "replayed",
        "replay/s",
        "drained s"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:>3} {:>10.0} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>11} {:>12.0} {:>10.1}",
            r.pipeline,
            r.ops_per_sec,
            r.errors,
            r.p99_before_ms,
            r.p99_outage_ms,
            r.p99_after_ms,
            r.hints_taken,
            r.hints_replayed,
            r.replay_keys_per_s,
            r.drained_after_restart_s,
        );
    }
    let _ = writeln!(
        out,
        "p99 in ms, the worst second of each phase; hints: taken by n1 and n2 for n3; drained: from n3's restart to none left"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_load_and_its_timeline() {
        let out = r#"{"set":{"ops_per_sec":1000.0,"errors":2},"timeline":[{"second":0,"requests":10,"p50_us":1.0,"p99_us":2500.0}]}"#;
        let r = parse_load(out).unwrap();
        assert_eq!((r.ops_per_sec, r.errors), (1000.0, 2));
        assert_eq!(r.timeline[0].p99_ms, 2.5);
        assert!(parse_load("{}").is_none());
    }
}
