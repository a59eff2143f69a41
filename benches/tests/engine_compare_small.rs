//! `engine-compare` end to end on a small key space: Shoal's engine always, RocksDB's db_bench
//! when installed (skipped with a notice otherwise).

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use shoal_benches::engine_compare::SHOAL_MEMORY_BUDGET_DEFAULT_MIB;

mod common;

#[test]
fn small_comparison_reports_every_phase() {
    let rocks = Command::new("db_bench")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !rocks {
        eprintln!("NOTICE: db_bench is not installed; comparing shoal alone");
    }
    let engines = if rocks { "shoal,rocksdb" } else { "shoal" };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_engine-compare"))
        .args([
            "--keys",
            "3000",
            "--sync-ops",
            "640",
            "--writers",
            "8",
            "--json",
            "--engines",
            engines,
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let report = common::json_report(&out);
    let rows = report["rows"].as_array().unwrap();
    let phases: Vec<_> = rows.iter().map(|r| r["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["fill", "read", "scan", "fillsync", "fillwriters"]);
    let shoal = |i: usize| &rows[i]["results"]["shoal"];
    assert_eq!(shoal(0)["ops"], 3000);
    assert_eq!(shoal(3)["ops"], 640);
    // Uniform random keys with replacement: about 1 - 1/e of the key space is live, every
    // live key is found by the scan, and reads find about that fraction.
    let live = shoal(2)["found"].as_u64().unwrap();
    assert!((1700..2100).contains(&live), "live {live}");
    let found = shoal(1)["found"].as_u64().unwrap();
    assert!((1700..2100).contains(&found), "found {found}");
    assert!(shoal(0)["write_amp"].as_f64().unwrap() > 0.0);
    assert!(shoal(0)["space_amp"].as_f64().unwrap() > 0.0);
    assert!(shoal(0)["peak_rss_bytes"].as_u64().unwrap() > 0);
    // Run with the default budget, reported with a target on Shoal's peak RSS.
    assert_eq!(
        report["shoal_memory_budget_bytes"],
        SHOAL_MEMORY_BUDGET_DEFAULT_MIB << 20
    );
    let targets = report["targets"].as_array().unwrap();
    assert!(
        targets
            .iter()
            .any(|t| t["what"].as_str().unwrap().starts_with("shoal peak RSS")),
        "{targets:?}"
    );
    if rocks {
        let rocks_live = rows[2]["results"]["rocksdb"]["found"].as_u64().unwrap();
        assert!(
            (1700..2100).contains(&rocks_live),
            "rocksdb live {rocks_live}"
        );
        assert!(
            rows[0]["results"]["rocksdb"]["ops_per_sec"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
    // The base directory holds nothing once the run is over.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
