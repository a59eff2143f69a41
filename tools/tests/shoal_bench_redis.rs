//! Runs the `shoal-bench` binary against a `redis-server` started on a free 127.0.0.1 port.
//! Skipped, with a notice, where `redis-server` is not installed.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// redis-server is up within milliseconds; this bounds a broken start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut buf = [0u8; 7];
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// `connected_clients` from INFO, counting the connection that asks.
fn connected_clients(port: u16) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(b"INFO clients\r\n").unwrap();
    let mut reply = String::new();
    let mut buf = [0u8; 4096];
    while !reply.contains("connected_clients:") || !reply.ends_with("\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "redis closed the INFO connection");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    reply
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Starts redis-server without persistence; `extra` adds config arguments.
fn start_redis(extra: &[&str]) -> Option<Redis> {
    if !redis_installed() {
        eprintln!("NOTICE: redis-server is not installed; skipping this test");
        return None;
    }
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let redis = Redis { child, port };
    let deadline = Instant::now() + START_TIMEOUT;
    while !ping(port) {
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(redis)
}

fn bench(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--json", "-q"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shoal-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn counts_match_requests() {
    let Some(redis) = start_redis(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("latency.svg");
    let report = bench(
        redis.port,
        &[
            "-n",
            "5003",
            "-c",
            "7",
            "-P",
            "4",
            "--ratio",
            "3:1",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert_eq!(report["total"]["requests"], 5003);
    let gets = report["get"]["requests"].as_u64().unwrap();
    let sets = report["set"]["requests"].as_u64().unwrap();
    assert_eq!(gets + sets, 5003);
    assert!(gets > sets, "3:1 reads: {gets} gets, {sets} sets");
    assert_eq!(report["total"]["errors"], 0);
    assert!(report["total"]["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert!(
        report["total"]["p99_us"].as_f64().unwrap() >= report["total"]["p50_us"].as_f64().unwrap()
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[test]
fn server_errors_are_counted_not_fatal() {
    // No memory for new keys: every SET is refused with -OOM, GETs still answer.
    let Some(redis) = start_redis(&["--maxmemory", "1", "--maxmemory-policy", "noeviction"]) else {
        return;
    };
    let report = bench(
        redis.port,
        &[
            "-n",
            "1000",
            "-c",
            "3",
            "--reads",
            "0.5",
            "--zipf-theta",
            "0.9",
        ],
    );
    assert_eq!(report["total"]["requests"], 1000);
    assert_eq!(report["set"]["errors"], report["set"]["requests"]);
    assert_eq!(report["get"]["errors"], 0);
    assert!(report["set"]["errors"].as_u64().unwrap() > 0);
}

#[test]
fn duration_mode_and_connection_loss() {
    let Some(mut redis) = start_redis(&[]) else {
        return;
    };
    let report = bench(
        redis.port,
        &["-d", "0.5", "-c", "2", "--distribution", "zipfian"],
    );
    assert!(report["total"]["requests"].as_u64().unwrap() > 0);
    assert!((0.4..5.0).contains(&report["elapsed_secs"].as_f64().unwrap()));

    // A server that goes away mid-run is fatal with a clear message.
    let child = Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .args([
            "--addr",
            &format!("127.0.0.1:{}", redis.port),
            "-d",
            "30",
            "-q",
            "-c",
            "2",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Mid-run: both of the bench's connections are open (the INFO connection is the third).
    let deadline = Instant::now() + START_TIMEOUT;
    while connected_clients(redis.port) < 3 {
        assert!(Instant::now() < deadline, "shoal-bench never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lost"), "stderr: {err}");
}
