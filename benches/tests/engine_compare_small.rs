//! `engine-compare` end to end on a small key space: Shoal's engine always, RocksDB's db_bench
//! (and its library, for the zipfian mix) when installed (skipped with a notice otherwise).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use shoal_benches::engine_compare::{SHOAL_MEMORY_BUDGET_DEFAULT_MIB, rocksdb_c};

mod common;

fn db_bench_installed() -> bool {
    Command::new("db_bench")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn small_comparison_reports_every_phase() {
    let rocks = db_bench_installed();
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
    // The disk's ceiling for the synced fill: the writers' half times the flush rate, and
    // over the no-sync fill.
    let ceiling = &report["sync_ceiling"];
    assert_eq!(ceiling["writers"], 8);
    let two_streams = ceiling["flush_rate"]["two_streams"].as_f64().unwrap();
    let ops_per_sec = ceiling["ops_per_sec"].as_f64().unwrap();
    assert!(two_streams > 0.0 && (ops_per_sec - 4.0 * two_streams).abs() < 1e-6);
    let fill = shoal(0)["ops_per_sec"].as_f64().unwrap();
    let of_fill = ceiling["of_no_sync_fill"].as_f64().unwrap();
    assert!((of_fill - ops_per_sec / fill).abs() < 1e-9, "{ceiling}");
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

/// The 10m plan on a small key space: RocksDB's zipfian mix runs through its C API on the
/// database db_bench filled and overwrote, and db_bench's scan after it reads what it left;
/// without the library, the mix alone is skipped, and the report says why.
#[test]
fn ten_million_plan_runs_rocksdb_mix_through_its_library() {
    if !db_bench_installed() {
        eprintln!("NOTICE: db_bench is not installed; not running RocksDB's 10m plan");
        return;
    }
    let library = Path::new(rocksdb_c::LIBRARY);
    let run = |engines: &str, library: &Path| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_engine-compare"))
            .args([
                "--scale",
                "10m",
                "--keys",
                "3000",
                "--json",
                "--engines",
                engines,
            ])
            .arg("--rocksdb-library")
            .arg(library)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap();
        common::json_report(&out)
    };
    let phases = ["fill", "scan", "overwrite", "scan", "zipfmix", "scan"];

    let missing = run("rocksdb", Path::new("librocksdb-not-installed.so.0"));
    let rows = missing["rows"].as_array().unwrap();
    let got: Vec<_> = rows.iter().map(|r| r["phase"].as_str().unwrap()).collect();
    assert_eq!(got, phases);
    assert!(rows[4]["results"]["rocksdb"].is_null());
    assert!(rows[5]["results"]["rocksdb"]["found"].as_u64().unwrap() > 0);
    let skipped = missing["skipped"].as_array().unwrap();
    assert!(
        skipped.len() == 1
            && skipped[0]
                .as_str()
                .unwrap()
                .contains("librocksdb-not-installed.so.0"),
        "{skipped:?}"
    );

    if let Err(e) = rocksdb_c::Api::load(library) {
        eprintln!("NOTICE: {e}; not running RocksDB's mix");
        return;
    }
    let report = run("shoal,rocksdb", library);
    assert_eq!(report["skipped"].as_array().unwrap().len(), 0);
    let rows = report["rows"].as_array().unwrap();
    let mix = |engine: &str| &rows[4]["results"][engine];
    for engine in ["shoal", "rocksdb"] {
        assert_eq!(mix(engine)["ops"], 3000, "{engine}");
        assert!(mix(engine)["found"].as_u64().unwrap() > 0, "{engine}");
        assert!(mix(engine)["write_amp"].as_f64().unwrap() > 0.0, "{engine}");
        assert!(mix(engine)["space_amp"].as_f64().unwrap() > 0.0, "{engine}");
        assert!(
            mix(engine)["peak_rss_bytes"].as_u64().unwrap() > 0,
            "{engine}"
        );
    }
    // The same operations, so the same puts and deletes and user bytes (what gets find depends
    // on the database before the mix, which different generators filled).
    assert_eq!(mix("shoal")["user_bytes"], mix("rocksdb")["user_bytes"]);
    assert!(rows[5]["results"]["rocksdb"]["found"].as_u64().unwrap() > 0);
}
