//! The comparison's results: throughput per workload and engine with the ratio to RocksDB,
//! peak RSS of every phase, for every writing phase its write and space amplification, and the
//! targets: Shoal's peak RSS against the memory budget it was given, and for the overwrite and
//! the zipfian mix its throughput and write amplification against RocksDB's.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::disk::FlushRate;
use super::workload::{KEY_LEN, Phase, PhaseResult, VALUE_LEN};
use super::{CompareArgs, Engine, Scale};
use crate::proc::ChildRun;

const MIB: f64 = (1 << 20) as f64;
/// Shoal's synced writes with 64 writers should reach this fraction of its unsynced fill rate.
const SYNC_TARGET: f64 = 0.8;
/// Resident memory of a Shoal child outside its memory budget: the binary and its libraries,
/// thread stacks, the workload's 1 MiB value pool, the commit log's buffer, and the flush or
/// compaction in progress (an output table's index and bloom hashes, the inputs' current
/// blocks).
pub const RSS_OVERHEAD_BYTES: u64 = 32 << 20;

/// One engine on one step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    pub ops: u64,
    pub secs: f64,
    pub ops_per_sec: f64,
    /// Gets that found a value, or keys a scan visited.
    pub found: u64,
    pub user_bytes: u64,
    pub peak_rss_bytes: u64,
    /// Bytes the process wrote toward storage (`write_bytes`).
    pub write_bytes: u64,
    /// `write_bytes / user_bytes`, for writing phases.
    pub write_amp: Option<f64>,
    /// Space used by the database directory after a writing phase.
    pub disk_bytes: Option<u64>,
    /// `disk_bytes` over the live keys' bytes (counted by the next scan).
    pub space_amp: Option<f64>,
}

impl Measurement {
    pub fn new(result: PhaseResult, run: &ChildRun, disk_bytes: Option<u64>) -> Measurement {
        let ops_per_sec = if result.secs > 0.0 {
            result.ops as f64 / result.secs
        } else {
            0.0
        };
        Measurement {
            ops: result.ops,
            secs: result.secs,
            ops_per_sec,
            found: result.found,
            user_bytes: result.user_bytes,
            peak_rss_bytes: run.max_rss_bytes,
            write_bytes: run.write_bytes,
            write_amp: (result.user_bytes > 0)
                .then(|| run.write_bytes as f64 / result.user_bytes as f64),
            disk_bytes,
            space_amp: None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub workload: &'static str,
    pub phase: Phase,
    pub results: BTreeMap<Engine, Measurement>,
}

impl Row {
    pub fn new(workload: &'static str, phase: Phase) -> Row {
        Row {
            workload,
            phase,
            results: BTreeMap::new(),
        }
    }

    /// Shoal's throughput over RocksDB's.
    pub fn ratio(&self) -> Option<f64> {
        let shoal = self.results.get(&Engine::Shoal)?.ops_per_sec;
        let rocks = self.results.get(&Engine::Rocksdb)?.ops_per_sec;
        (rocks > 0.0).then(|| shoal / rocks)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub what: String,
    pub value: f64,
    pub goal: f64,
    /// The goal is a ceiling (`value <= goal`), not a floor.
    pub at_most: bool,
    pub met: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub scale: Scale,
    pub keys: u64,
    pub shoal_fs: super::store::ShoalFs,
    /// The memory budget Shoal was given; `None`: its per-component defaults.
    pub shoal_memory_budget_bytes: Option<u64>,
    pub engines: Vec<Engine>,
    pub db_bench_assertions: bool,
    /// Engine steps that could not run here, and why (a "-" in the tables).
    pub skipped: Vec<String>,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    /// What this disk allows the synced fill, measured before it.
    pub sync_ceiling: Option<SyncCeiling>,
}

/// The synced fill's ceiling on this disk ([`super::disk`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncCeiling {
    pub writers: usize,
    pub flush_rate: FlushRate,
    pub ops_per_sec: f64,
    /// The ceiling over Shoal's no-sync fill: where it is below [`SYNC_TARGET`], so is
    /// every engine's synced fill on this disk.
    pub of_no_sync_fill: Option<f64>,
}

/// Fills each writing phase's space amplification from the next scan of the same database.
fn space_amplification(rows: &mut [Row]) {
    for i in 0..rows.len() {
        if !rows[i].phase.writes() || rows[i].phase.concurrent() {
            continue;
        }
        let scan = rows[i + 1..]
            .iter()
            .filter(|r| !r.phase.concurrent())
            .take_while(|r| !r.phase.writes())
            .find(|r| r.phase == Phase::Scan)
            .map(|r| r.results.clone());
        let Some(scan) = scan else { continue };
        for (engine, m) in rows[i].results.iter_mut() {
            let live = scan.get(engine).map_or(0, |s| s.found) * (KEY_LEN + VALUE_LEN) as u64;
            if let (Some(disk), true) = (m.disk_bytes, live > 0) {
                m.space_amp = Some(disk as f64 / live as f64);
            }
        }
    }
}

/// Shoal's throughput in the first row of `phase`.
fn shoal_ops_per_sec(rows: &[Row], phase: Phase) -> Option<f64> {
    rows.iter()
        .find(|r| r.phase == phase)
        .and_then(|r| r.results.get(&Engine::Shoal))
        .map(|m| m.ops_per_sec)
}

fn targets(rows: &[Row], shoal_memory_budget: Option<u64>) -> Vec<Target> {
    let mut out = Vec::new();
    let find = |p: Phase| rows.iter().find(|r| r.phase == p);
    for (phase, what) in [
        (Phase::Fill, "no-sync fill, shoal/rocksdb"),
        (Phase::Read, "random reads, shoal/rocksdb"),
    ] {
        if let Some(ratio) = find(phase).and_then(Row::ratio) {
            out.push(Target {
                what: what.into(),
                value: ratio,
                goal: 1.0,
                at_most: false,
                met: ratio >= 1.0,
            });
        }
    }
    // The 10M workloads: throughput at least RocksDB's, write amplification at most.
    for (phase, name) in [
        (Phase::Overwrite, "uniform overwrite"),
        (Phase::ZipfMix, "zipfian mix"),
    ] {
        let Some(row) = find(phase) else { continue };
        if let Some(ratio) = row.ratio() {
            out.push(Target {
                what: format!("{name}, shoal/rocksdb"),
                value: ratio,
                goal: 1.0,
                at_most: false,
                met: ratio >= 1.0,
            });
        }
        let write_amp = |e: Engine| row.results.get(&e).and_then(|m| m.write_amp);
        if let (Some(shoal), Some(rocks)) = (write_amp(Engine::Shoal), write_amp(Engine::Rocksdb)) {
            out.push(Target {
                what: format!("{name} write-amp, shoal (goal: rocksdb's)"),
                value: shoal,
                goal: rocks,
                at_most: true,
                met: shoal <= rocks,
            });
        }
    }
    let shoal = |p: Phase| shoal_ops_per_sec(rows, p);
    if let (Some(sync), Some(fill)) = (shoal(Phase::FillSync), shoal(Phase::Fill)) {
        if fill > 0.0 {
            let value = sync / fill;
            out.push(Target {
                what: "shoal synced fill (concurrent writers) / shoal no-sync fill".into(),
                value,
                goal: SYNC_TARGET,
                at_most: false,
                met: value >= SYNC_TARGET,
            });
        }
    }
    if let (Some(sync), Some(unsynced)) = (shoal(Phase::FillSync), shoal(Phase::FillWriters)) {
        if unsynced > 0.0 {
            let value = sync / unsynced;
            out.push(Target {
                what: "shoal synced fill / the same writers unsynced (the cost of durability)"
                    .into(),
                value,
                goal: SYNC_TARGET,
                at_most: false,
                met: value >= SYNC_TARGET,
            });
        }
    }
    let shoal_rss = rows
        .iter()
        .filter_map(|r| r.results.get(&Engine::Shoal))
        .map(|m| m.peak_rss_bytes)
        .max();
    if let (Some(budget), Some(rss)) = (shoal_memory_budget, shoal_rss) {
        let goal = (budget + RSS_OVERHEAD_BYTES) as f64 / MIB;
        let value = rss as f64 / MIB;
        out.push(Target {
            what: format!(
                "shoal peak RSS MiB, budget {} + overhead {}",
                budget >> 20,
                RSS_OVERHEAD_BYTES >> 20
            ),
            value,
            goal,
            at_most: true,
            met: value <= goal,
        });
    }
    out
}

fn cell(v: Option<f64>, precision: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.precision$}"))
}

impl Report {
    pub fn new(
        args: &CompareArgs,
        engines: Vec<Engine>,
        mut rows: Vec<Row>,
        db_bench_assertions: bool,
        skipped: Vec<String>,
        flush_rate: Option<FlushRate>,
    ) -> Report {
        space_amplification(&mut rows);
        let no_sync_fill = shoal_ops_per_sec(&rows, Phase::Fill).filter(|&f| f > 0.0);
        let sync_ceiling = flush_rate.map(|flush_rate| {
            let ops_per_sec = flush_rate.sync_ceiling(args.writers);
            SyncCeiling {
                writers: args.writers,
                flush_rate,
                ops_per_sec,
                of_no_sync_fill: no_sync_fill.map(|f| ops_per_sec / f),
            }
        });
        Report {
            scale: args.scale,
            keys: args.keys(),
            shoal_fs: args.shoal_fs,
            shoal_memory_budget_bytes: args.shoal_memory_budget(),
            engines,
            db_bench_assertions,
            skipped,
            targets: targets(&rows, args.shoal_memory_budget()),
            rows,
            sync_ceiling,
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} keys, {KEY_LEN} B keys, {VALUE_LEN} B values; shoal on {:?} files (synced fill: DMA, writers as glommio tasks)",
            self.keys, self.shoal_fs
        );
        let _ = match self.shoal_memory_budget_bytes {
            Some(b) => writeln!(out, "shoal memory budget: {} MiB", b >> 20),
            None => writeln!(out, "shoal memory budget: none (per-component defaults)"),
        };
        let _ = write!(out, "{:<28}", "workload");
        for e in &self.engines {
            let _ = write!(out, " {:>14}", format!("{} ops/s", e.name()));
        }
        let _ = writeln!(out, " {:>14}", "shoal/rocksdb");
        for row in &self.rows {
            let _ = write!(out, "{:<28}", row.workload);
            for e in &self.engines {
                let _ = write!(
                    out,
                    " {:>14}",
                    cell(row.results.get(e).map(|m| m.ops_per_sec), 0)
                );
            }
            let _ = writeln!(out, " {:>14}", cell(row.ratio(), 2));
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<28} {:<8} {:>9} {:>9} {:>10} {:>10} {:>13}",
            "workload", "engine", "write-amp", "space-amp", "disk MiB", "peak RSS", "written MiB"
        );
        for row in &self.rows {
            for (engine, m) in &row.results {
                let _ = writeln!(
                    out,
                    "{:<28} {:<8} {:>9} {:>9} {:>10} {:>6.0} MiB {:>13.0}",
                    row.workload,
                    engine.name(),
                    cell(m.write_amp, 2),
                    cell(m.space_amp, 2),
                    cell(m.disk_bytes.map(|b| b as f64 / MIB), 0),
                    m.peak_rss_bytes as f64 / MIB,
                    m.write_bytes as f64 / MIB,
                );
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out);
            for t in &self.targets {
                let verdict = if t.met { "met" } else { "NOT met" };
                let bound = if t.at_most { "<=" } else { ">=" };
                let _ = writeln!(
                    out,
                    "target {:<62} {:>6.2} (goal {bound} {:.2}): {verdict}",
                    t.what, t.value, t.goal
                );
            }
        }
        if let Some(c) = &self.sync_ceiling {
            let _ = writeln!(
                out,
                "disk ceiling of the synced fill: {} writers / 2 records per flush x {:.0} flushes/s \
                 (one stream: {:.0}/s) = {:.0} ops/s{}",
                c.writers,
                c.flush_rate.two_streams,
                c.flush_rate.one_stream,
                c.ops_per_sec,
                c.of_no_sync_fill
                    .map(|r| format!(" = {r:.2} of shoal's no-sync fill"))
                    .unwrap_or_default()
            );
        }
        for why in &self.skipped {
            let _ = writeln!(out, "skipped: {why}");
        }
        if self.db_bench_assertions {
            let _ = writeln!(
                out,
                "note: this db_bench was built with assertions enabled, which slows RocksDB"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ops_per_sec: f64, found: u64, disk: Option<u64>) -> Measurement {
        let result = PhaseResult {
            ops: 100,
            secs: 100.0 / ops_per_sec,
            found,
            user_bytes: if disk.is_some() { 11_600 } else { 0 },
        };
        let run = ChildRun {
            write_bytes: 23_200,
            max_rss_bytes: 1 << 20,
            ..ChildRun::default()
        };
        Measurement::new(result, &run, disk)
    }

    fn row(phase: Phase, shoal: Measurement, rocks: Measurement) -> Row {
        let mut r = Row::new(phase.name(), phase);
        r.results.insert(Engine::Shoal, shoal);
        r.results.insert(Engine::Rocksdb, rocks);
        r
    }

    #[test]
    fn ratios_amplifications_and_targets() {
        let mut rows = vec![
            row(
                Phase::Fill,
                m(300.0, 0, Some(116 * 50)),
                m(200.0, 0, Some(116 * 100)),
            ),
            row(Phase::Read, m(100.0, 60, None), m(200.0, 60, None)),
            row(Phase::Scan, m(1000.0, 50, None), m(1000.0, 50, None)),
            row(Phase::FillSync, m(270.0, 0, Some(1)), m(10.0, 0, Some(1))),
            row(
                Phase::FillWriters,
                m(360.0, 0, Some(1)),
                m(40.0, 0, Some(1)),
            ),
        ];
        space_amplification(&mut rows);
        let fill = &rows[0].results[&Engine::Shoal];
        assert_eq!(fill.write_amp, Some(2.0));
        assert_eq!(fill.space_amp, Some(1.0));
        assert_eq!(rows[0].results[&Engine::Rocksdb].space_amp, Some(2.0));
        assert_eq!(rows[3].results[&Engine::Shoal].space_amp, None);
        assert_eq!(rows[4].results[&Engine::Shoal].space_amp, None);
        assert_eq!(rows[0].ratio(), Some(1.5));
        let t = targets(&rows, None);
        assert_eq!(t.len(), 4);
        assert!(t[0].met && !t[1].met && t[2].met && !t[3].met, "{t:?}");
        assert!((t[2].value - 0.9).abs() < 1e-9);
        assert!((t[3].value - 0.75).abs() < 1e-9);
        // Every child peaked at 1 MiB: within any budget plus the overhead.
        let t = targets(&rows, Some(8 << 20));
        assert_eq!(t.len(), 5);
        assert!(
            t[4].met && t[4].at_most && (t[4].value - 1.0).abs() < 1e-9,
            "{t:?}"
        );
        rows[0]
            .results
            .get_mut(&Engine::Shoal)
            .unwrap()
            .peak_rss_bytes = (8 << 20) + RSS_OVERHEAD_BYTES + 1;
        assert!(!targets(&rows, Some(8 << 20))[4].met);
    }

    #[test]
    fn the_ten_million_workloads_compare_throughput_and_write_amplification() {
        let write_amp = |phase, shoal_written, rocks_written, shoal_rate, rocks_rate| {
            let mut r = row(phase, m(shoal_rate, 0, Some(1)), m(rocks_rate, 0, Some(1)));
            for (e, written) in [
                (Engine::Shoal, shoal_written),
                (Engine::Rocksdb, rocks_written),
            ] {
                let m = r.results.get_mut(&e).unwrap();
                m.write_amp = Some(written as f64 / m.user_bytes as f64);
            }
            r
        };
        let rows = vec![
            write_amp(Phase::Overwrite, 23_200, 34_800, 300.0, 100.0),
            write_amp(Phase::ZipfMix, 34_800, 23_200, 50.0, 100.0),
        ];
        let t = targets(&rows, None);
        let summary: Vec<(&str, f64, bool)> = t
            .iter()
            .map(|t| (t.what.as_str(), t.value, t.met))
            .collect();
        assert_eq!(
            summary,
            [
                ("uniform overwrite, shoal/rocksdb", 3.0, true),
                (
                    "uniform overwrite write-amp, shoal (goal: rocksdb's)",
                    2.0,
                    true
                ),
                ("zipfian mix, shoal/rocksdb", 0.5, false),
                ("zipfian mix write-amp, shoal (goal: rocksdb's)", 3.0, false),
            ]
        );
        assert!(t[1].at_most && (t[1].goal - 3.0).abs() < 1e-9);
    }
}
