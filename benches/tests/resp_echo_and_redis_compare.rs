//! `resp-echo` answers real clients, and `redis-compare` runs end to end against redis-server
//! and resp-echo (the shoal binary, absent here, is skipped). Skipped, with a notice, where
//! redis-server or redis-benchmark is not installed.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(program: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("NOTICE: {program} is not installed; skipping this test");
    }
    ok
}

#[test]
fn resp_echo_answers_set_get_ping_pipelined() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_resp-echo"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _echo = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Pipelined, with the second command split across two writes.
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1")
        .unwrap();
    s.write_all(b"\r\nk\r\nPING\r\n").unwrap();
    let want = b"+OK\r\n$-1\r\n+PONG\r\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    // Malformed input closes only that connection.
    let mut bad = TcpStream::connect(&addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(b"*1\r\n:oops\r\n").unwrap();
    assert_eq!(bad.read(&mut [0u8; 16]).unwrap(), 0);
    s.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
}

#[test]
fn redis_compare_runs_against_redis_and_echo() {
    if !installed("redis-server") || !installed("redis-benchmark") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_redis-compare"))
        .args([
            "--shoal",
            "/nonexistent/shoal",
            "--json",
            "-n",
            "2000",
            "--latency-requests",
            "200",
            "-c",
            "4",
        ])
        .arg("--resp-echo")
        .arg(env!("CARGO_BIN_EXE_resp-echo"))
        .output()
        .unwrap();
    let report = common::json_report(&out);
    assert_eq!(report["servers"], serde_json::json!(["redis", "echo"]));
    assert!(report["skipped"][0].as_str().unwrap().starts_with("shoal:"));
    let rows = report["rows"].as_array().unwrap();
    // redis-benchmark's three loads (and shoal-bench's when built) × SET, GET.
    assert!(rows.len() >= 6, "{rows:?}");
    for row in rows {
        for server in ["redis", "echo"] {
            assert!(
                row["results"][server]["ops_per_sec"].as_f64().unwrap() > 0.0,
                "{row}"
            );
        }
    }
}
