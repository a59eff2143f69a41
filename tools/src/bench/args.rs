//! Command-line options of `shoal-bench`, and their validation into a [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::BenchError;

/// Connections above this are a mistake on one machine (each holds a socket and buffers).
pub const CLIENTS_MAX: usize = 10_000;
/// Requests in flight per connection; deeper pipelines only grow buffers.
pub const PIPELINE_MAX: usize = 1024;
/// Shoal's default value limit (16 MiB).
pub const VALUE_SIZE_MAX: usize = 16 << 20;
/// One day: every run is bounded in time.
pub const DURATION_MAX_SECS: f64 = 86_400.0;
/// Requests used when neither `--requests` nor `--duration` is given.
pub const DEFAULT_REQUESTS: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Zipfian,
}

/// Load generator for any server speaking the Redis protocol (RESP): SET/GET mixes over a key
/// space with uniform or zipfian popularity; throughput and HDR latency percentiles.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-bench", version)]
pub struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7379")]
    pub addr: String,
    /// Connections, spread over the client threads.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub clients: usize,
    /// Requests sent back to back on a connection before waiting for their replies.
    #[arg(long, short = 'P', default_value_t = 1)]
    pub pipeline: usize,
    /// Total requests (excluding warm-up). Default 100000 unless --duration is given.
    #[arg(long, short = 'n', conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Run for this many seconds instead of a request count.
    #[arg(long, short = 'd')]
    pub duration: Option<f64>,
    /// Read:write ratio, e.g. 9:1.
    #[arg(long, conflicts_with = "reads")]
    pub ratio: Option<String>,
    /// Fraction of requests that are GETs (the rest are SETs).
    #[arg(long)]
    pub reads: Option<f64>,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Skew of the zipfian distribution (0 < theta < 1; YCSB uses 0.99).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_theta: f64,
    /// Bytes per SET value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Prepended to the zero-padded key number.
    #[arg(long, default_value = "key:")]
    pub key_prefix: String,
    /// Client threads, each driving its share of the connections without blocking.
    /// Default: the number of CPUs, at most the number of connections.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Seconds of load before measuring starts (not recorded, not counted in --requests).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG with latency over time and the latency distribution.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// How much load to generate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    Requests(u64),
    Duration(#[serde(serialize_with = "secs")] Duration),
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Validated settings of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub addr: String,
    pub clients: usize,
    pub pipeline: usize,
    pub threads: usize,
    pub budget: Budget,
    pub reads: f64,
    pub keys: u64,
    pub distribution: Distribution,
    pub zipf_theta: f64,
    pub value_size: usize,
    pub key_prefix: String,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    pub seed: u64,
}

fn invalid(msg: impl Into<String>) -> BenchError {
    BenchError::InvalidArgument(msg.into())
}

/// `R:W` as the fraction of reads.
fn parse_ratio(s: &str) -> Result<f64, BenchError> {
    let bad = || {
        invalid(format!(
            "--ratio {s:?}: expected R:W with non-negative numbers, e.g. 9:1"
        ))
    };
    let (r, w) = s.split_once(':').ok_or_else(bad)?;
    let r: f64 = r.trim().parse().map_err(|_| bad())?;
    let w: f64 = w.trim().parse().map_err(|_| bad())?;
    if !(r >= 0.0 && w >= 0.0 && r + w > 0.0 && (r + w).is_finite()) {
        return Err(bad());
    }
    Ok(r / (r + w))
}

fn duration(flag: &str, secs: f64) -> Result<Duration, BenchError> {
    if !(0.0..=DURATION_MAX_SECS).contains(&secs) {
        return Err(invalid(format!(
            "{flag} must be within 0..={DURATION_MAX_SECS} seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Args {
    pub fn config(&self) -> Result<Config, BenchError> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(invalid(format!(
                "--clients must be within 1..={CLIENTS_MAX}"
            )));
        }
        if self.pipeline == 0 || self.pipeline > PIPELINE_MAX {
            return Err(invalid(format!(
                "--pipeline must be within 1..={PIPELINE_MAX}"
            )));
        }
        if self.value_size > VALUE_SIZE_MAX {
            return Err(invalid(format!(
                "--value-size must be at most {VALUE_SIZE_MAX}"
            )));
        }
        if self.keys == 0 {
            return Err(invalid("--keys must be at least 1"));
        }
        if self.distribution == Distribution::Zipfian
            && !(self.zipf_theta > 0.0 && self.zipf_theta < 1.0)
        {
            return Err(invalid("--zipf-theta must be strictly between 0 and 1"));
        }
        let reads = match (&self.ratio, self.reads) {
            (Some(r), _) => parse_ratio(r)?,
            (None, Some(f)) if (0.0..=1.0).contains(&f) => f,
            (None, Some(_)) => return Err(invalid("--reads must be within 0..=1")),
            (None, None) => 0.5,
        };
        let budget = match (self.requests, self.duration) {
            (Some(0), _) => return Err(invalid("--requests must be at least 1")),
            (Some(n), _) => Budget::Requests(n),
            (None, Some(d)) if d > 0.0 => Budget::Duration(duration("--duration", d)?),
            (None, Some(_)) => return Err(invalid("--duration must be positive")),
            (None, None) => Budget::Requests(DEFAULT_REQUESTS),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.threads.unwrap_or(cpus).clamp(1, self.clients);
        Ok(Config {
            addr: self.addr.clone(),
            clients: self.clients,
            pipeline: self.pipeline,
            threads,
            budget,
            reads,
            keys: self.keys,
            distribution: self.distribution,
            zipf_theta: self.zipf_theta,
            value_size: self.value_size,
            key_prefix: self.key_prefix.clone(),
            warmup: duration("--warmup", self.warmup)?,
            seed: self.seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["shoal-bench"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn ratio_and_reads() {
        assert_eq!(args(&["--ratio", "9:1"]).config().unwrap().reads, 0.9);
        assert_eq!(args(&["--ratio", "0:1"]).config().unwrap().reads, 0.0);
        assert_eq!(args(&["--reads", "0.25"]).config().unwrap().reads, 0.25);
        assert!(args(&["--ratio", "0:0"]).config().is_err());
        assert!(args(&["--ratio", "nine"]).config().is_err());
        assert!(args(&["--reads", "1.5"]).config().is_err());
    }

    #[test]
    fn budget_and_limits() {
        assert_eq!(
            args(&[]).config().unwrap().budget,
            Budget::Requests(DEFAULT_REQUESTS)
        );
        assert_eq!(
            args(&["-d", "2"]).config().unwrap().budget,
            Budget::Duration(Duration::from_secs(2))
        );
        assert!(Args::try_parse_from(["b", "-n", "5", "-d", "1"]).is_err());
        assert!(args(&["-c", "0"]).config().is_err());
        assert!(args(&["-P", "100000"]).config().is_err());
        assert!(
            args(&["--distribution", "zipfian", "--zipf-theta", "1"])
                .config()
                .is_err()
        );
        assert_eq!(args(&["-c", "3", "-t", "8"]).config().unwrap().threads, 3);
    }
}
