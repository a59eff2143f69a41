//! `cluster-compare` end to end on a tiny load: a real 3-node cluster and a standalone node.
//! Needs the `shoal` and `shoal-bench` binaries of this build (`cargo test --workspace` builds
//! them); skipped, with a notice, where they are absent.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

mod common;

/// `name` in this build's binary directory (`target/<profile>/`).
fn built(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>
    let bin = exe.parent()?.parent()?.join(name);
    if bin.is_file() {
        Some(bin)
    } else {
        eprintln!("NOTICE: no {} binary; skipping this test", bin.display());
        None
    }
}

#[test]
fn cluster_compare_runs_both_setups() {
    let (Some(shoal), Some(bench)) = (built("shoal"), built("shoal-bench")) else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_cluster-compare"))
        .arg("--shoal")
        .arg(shoal)
        .arg("--shoal-bench")
        .arg(bench)
        .args(["--json", "-n", "500", "-c", "4", "--keys", "200"])
        .output()
        .unwrap();
    let report = common::json_report(&out);
    let rows = report["rows"].as_array().unwrap();
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["SET", "GET"]);
    for row in rows {
        for setup in ["cluster", "standalone"] {
            assert!(row[setup]["ops_per_sec"].as_f64().unwrap() > 0.0, "{row}");
            assert_eq!(row[setup]["errors"], 0, "{row}");
        }
    }
}
