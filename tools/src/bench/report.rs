//! The results of a run: throughput and latency percentiles per operation and overall, a
//! per-second timeline, as a table for people or JSON for scripts.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::args::Config;
use super::client::{ThreadRecord, latency_histogram};

/// Percentiles drawn in the distribution chart and listed in the JSON.
const DISTRIBUTION_PERCENTILES: [f64; 12] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 99.999, 100.0,
];

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quantile {
    pub percentile: f64,
    pub latency_us: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpStats {
    /// Replies received (errors included).
    pub requests: u64,
    /// Replies that were RESP errors.
    pub errors: u64,
    pub ops_per_sec: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub distribution: Vec<Quantile>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Second {
    /// Seconds since measuring started.
    pub second: u64,
    pub requests: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub config: Config,
    pub elapsed_secs: f64,
    pub total: OpStats,
    pub get: OpStats,
    pub set: OpStats,
    pub timeline: Vec<Second>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn op_stats(h: &Histogram<u64>, errors: u64, elapsed: Duration) -> OpStats {
    let secs = elapsed.as_secs_f64();
    let count = h.len();
    let at = |p: f64| {
        if count == 0 {
            0.0
        } else {
            us(h.value_at_percentile(p))
        }
    };
    OpStats {
        requests: count,
        errors,
        ops_per_sec: if secs > 0.0 { count as f64 / secs } else { 0.0 },
        mean_us: if count == 0 { 0.0 } else { h.mean() / 1000.0 },
        p50_us: at(50.0),
        p99_us: at(99.0),
        p999_us: at(99.9),
        max_us: if count == 0 { 0.0 } else { us(h.max()) },
        distribution: if count == 0 {
            Vec::new()
        } else {
            DISTRIBUTION_PERCENTILES
                .iter()
                .map(|&p| Quantile {
                    percentile: p,
                    latency_us: at(p),
                })
                .collect()
        },
    }
}

impl Report {
    /// Merges the threads' records; `elapsed` is the measured span (warm-up excluded).
    pub fn new(config: Config, elapsed: Duration, threads: &[ThreadRecord]) -> Report {
        let mut get = latency_histogram(3);
        let mut set = latency_histogram(3);
        let (mut get_errors, mut set_errors) = (0, 0);
        let seconds = threads.iter().map(|t| t.timeline.len()).max().unwrap_or(0);
        let mut timeline: Vec<Histogram<u64>> =
            (0..seconds).map(|_| latency_histogram(2)).collect();
        for t in threads {
            // Histograms of identical bounds always merge; a failure would be a bug here.
            let merged = get
                .add(&t.get.latency_ns)
                .and_then(|()| set.add(&t.set.latency_ns));
            debug_assert!(merged.is_ok());
            get_errors += t.get.errors;
            set_errors += t.set.errors;
            for (sum, h) in timeline.iter_mut().zip(&t.timeline) {
                let merged = sum.add(h);
                debug_assert!(merged.is_ok());
            }
        }
        let mut total = get.clone();
        let merged = total.add(&set);
        debug_assert!(merged.is_ok());
        Report {
            total: op_stats(&total, get_errors + set_errors, elapsed),
            get: op_stats(&get, get_errors, elapsed),
            set: op_stats(&set, set_errors, elapsed),
            timeline: timeline
                .iter()
                .enumerate()
                .map(|(s, h)| Second {
                    second: s as u64,
                    requests: h.len(),
                    p50_us: if h.is_empty() {
                        0.0
                    } else {
                        us(h.value_at_quantile(0.5))
                    },
                    p99_us: if h.is_empty() {
                        0.0
                    } else {
                        us(h.value_at_quantile(0.99))
                    },
                })
                .collect(),
            elapsed_secs: elapsed.as_secs_f64(),
            config,
        }
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} — {} connections on {} threads, pipeline {}, {:.0}% reads, {} keys ({:?}), {} B values",
            c.addr,
            c.clients,
            c.threads,
            c.pipeline,
            c.reads * 100.0,
            c.keys,
            c.distribution,
            c.value_size
        );
        let _ = writeln!(out, "measured {:.2} s", self.elapsed_secs);
        let _ = writeln!(
            out,
            "{:<6} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "op",
            "requests",
            "errors",
            "ops/s",
            "mean µs",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs"
        );
        for (name, s) in [
            ("GET", &self.get),
            ("SET", &self.set),
            ("total", &self.total),
        ] {
            let _ = writeln!(
                out,
                "{:<6} {:>10} {:>8} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1}",
                name,
                s.requests,
                s.errors,
                s.ops_per_sec,
                s.mean_us,
                s.p50_us,
                s.p99_us,
                s.p999_us,
                s.max_us
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::args::Args;
    use super::super::client::OpRecord;
    use super::*;

    fn record(gets: &[u64], sets: &[u64], set_errors: u64) -> ThreadRecord {
        let mut get = OpRecord::new();
        let mut set = OpRecord::new();
        let mut timeline = vec![latency_histogram(2)];
        for &v in gets {
            get.latency_ns.record(v).unwrap();
            timeline[0].record(v).unwrap();
        }
        for &v in sets {
            set.latency_ns.record(v).unwrap();
            timeline[0].record(v).unwrap();
        }
        set.errors = set_errors;
        ThreadRecord {
            get,
            set,
            timeline,
            last_reply: None,
        }
    }

    #[test]
    fn merges_threads() {
        let config = Args::try_parse_from(["b"]).unwrap().config().unwrap();
        let a = record(&[1_000, 2_000], &[10_000], 1);
        let b = record(&[3_000], &[], 0);
        let r = Report::new(config, Duration::from_secs(2), &[a, b]);
        assert_eq!(r.get.requests, 3);
        assert_eq!(r.set.requests, 1);
        assert_eq!(r.total.requests, 4);
        assert_eq!((r.set.errors, r.total.errors), (1, 1));
        assert_eq!(r.total.ops_per_sec, 2.0);
        assert!((r.total.max_us - 10.0).abs() < 0.01);
        assert!((r.get.p50_us - 2.0).abs() < 0.01);
        assert_eq!(r.timeline.len(), 1);
        assert_eq!(r.timeline[0].requests, 4);
        assert_eq!(r.get.distribution.len(), DISTRIBUTION_PERCENTILES.len());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["total"]["requests"], 4);
        assert!(r.table().contains("total"));
    }
}
