//! The server's configuration: command-line flags over an optional TOML file over defaults.
//!
//! Every option is a flag (`shoal --help` documents each) and a key of the same name in the
//! file, with `-` written as `_` (`--max-value-bytes` ↔ `max_value_bytes`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// Default client port (Redis's 6379 plus 1000, so both can run side by side).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7379";
pub const DATA_DIR_DEFAULT: &str = "./shoal-data";
/// Redis's own default `proto-max-bulk-len` is 512 MiB; 16 MiB keeps one request's memory small.
pub const MAX_VALUE_BYTES_DEFAULT: usize = 16 << 20;
/// Upper bound of `max-value-bytes`: the engine's own value limit.
pub const MAX_VALUE_BYTES_LIMIT: usize = shoal_engine::types::VALUE_LEN_MAX - 1;
/// Most shards a node runs: a shard is an executor with its own rings and engine.
pub const SHARDS_MAX: usize = 256;

/// When a write is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// After its log record is synced (group commit). Survives kill -9 and power loss.
    Always,
    /// Acknowledged from memory; every shard syncs its log once a second.
    Interval,
    /// Acknowledged from memory; the log is synced only when full and at shutdown.
    Never,
}

impl Fsync {
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
            Fsync::Never => "never",
        }
    }
}

/// Command-line flags. Unset flags fall back to the config file, then to the defaults.
#[derive(Debug, Parser, Default)]
#[command(name = "shoal", version, about = "Shoal: a Dynamo-style key-value server speaking the Redis protocol")]
pub struct Flags {
    /// TOML file with any of the options below (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept Redis clients on [default: 127.0.0.1:7379].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the data; shard n keeps its engine in DIR/shard-<n> [default: ./shoal-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Executors (one per core, pinned when they fit) [default: number of cores]. Must not change
    /// for an existing data directory.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// When writes are acknowledged: after fsync, or from memory with a 1 s or no sync timer
    /// [default: always].
    #[arg(long, value_enum)]
    pub fsync: Option<Fsync>,
    /// Largest value a SET or MSET accepts, in bytes [default: 16 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Ring partitions (Q); fixed for the life of the data [default: 256].
    #[arg(long, value_name = "Q")]
    pub partitions: Option<u32>,
    /// Memtable size per shard before it is flushed to an SSTable, in bytes [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub memtable_bytes: Option<usize>,
    /// Block cache per shard, in bytes [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub cache_bytes: Option<usize>,
    /// How long an idle executor spins before sleeping, in µs; short on machines with few cores
    /// [default: 50].
    #[arg(long, value_name = "US")]
    pub spin_us: Option<u64>,
    /// Log filter (tracing's env-filter syntax; RUST_LOG overrides it) [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}

/// The config file: the same options as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    shards: Option<usize>,
    fsync: Option<Fsync>,
    max_value_bytes: Option<usize>,
    partitions: Option<u32>,
    memtable_bytes: Option<usize>,
    cache_bytes: Option<usize>,
    spin_us: Option<u64>,
    log: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub fsync: Fsync,
    pub max_value_bytes: usize,
    pub partitions: u32,
    pub memtable_bytes: usize,
    pub cache_bytes: usize,
    pub spin_us: u64,
    pub log: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid option: {0}")]
    Invalid(String),
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Resolves flags over the file they name (if any) over defaults.
    pub fn resolve(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let default_listen: SocketAddr = LISTEN_DEFAULT
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("bad default address {LISTEN_DEFAULT}")))?;
        let config = Config {
            listen: flags.listen.or(file.listen).unwrap_or(default_listen),
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            shards: flags.shards.or(file.shards).unwrap_or_else(cores),
            fsync: flags.fsync.or(file.fsync).unwrap_or(Fsync::Always),
            max_value_bytes: flags
                .max_value_bytes
                .or(file.max_value_bytes)
                .unwrap_or(MAX_VALUE_BYTES_DEFAULT),
            partitions: flags
                .partitions
                .or(file.partitions)
                .unwrap_or(shoal_cluster::partition::PARTITIONS_DEFAULT),
            memtable_bytes: flags
                .memtable_bytes
                .or(file.memtable_bytes)
                .unwrap_or(64 << 20),
            cache_bytes: flags.cache_bytes.or(file.cache_bytes).unwrap_or(64 << 20),
            spin_us: flags.spin_us.or(file.spin_us).unwrap_or(50),
            log: flags.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |s: String| Err(ConfigError::Invalid(s));
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return invalid(format!("shards = {} (1..={SHARDS_MAX})", self.shards));
        }
        if self.partitions == 0 || (self.partitions as usize) < self.shards {
            return invalid(format!(
                "partitions = {} must be at least shards = {}",
                self.partitions, self.shards
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > MAX_VALUE_BYTES_LIMIT {
            return invalid(format!(
                "max_value_bytes = {} (1..={MAX_VALUE_BYTES_LIMIT})",
                self.max_value_bytes
            ));
        }
        if self.memtable_bytes < (1 << 20) {
            return invalid(format!("memtable_bytes = {} (at least 1 MiB)", self.memtable_bytes));
        }
        Ok(())
    }

    /// The directory of shard `n`.
    pub fn shard_dir(&self, n: usize) -> PathBuf {
        self.data_dir.join(format!("shard-{n}"))
    }
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::resolve(Flags::default()).unwrap();
        assert_eq!(c.listen.to_string(), LISTEN_DEFAULT);
        assert_eq!(c.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
        assert_eq!(c.shards, cores());
        assert_eq!(c.fsync, Fsync::Always);
        assert_eq!(c.max_value_bytes, 16 << 20);
        assert_eq!(c.partitions, 256);
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoal.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nshards = 3\nfsync = \"interval\"\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let flags = Flags::parse_from(["shoal", "--config", path.to_str().unwrap(), "--shards", "2"]);
        let c = Config::resolve(flags).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.shards, 2);
        assert_eq!(c.fsync, Fsync::Interval);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn rejects_bad_files_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "shardz = 3\n").unwrap();
        let flags = Flags::parse_from(["shoal", "--config", path.to_str().unwrap()]);
        assert!(matches!(Config::resolve(flags), Err(ConfigError::Parse { .. })));
        let flags = Flags::parse_from(["shoal", "--shards", "0"]);
        assert!(matches!(Config::resolve(flags), Err(ConfigError::Invalid(_))));
        let flags = Flags::parse_from(["shoal", "--shards", "8", "--partitions", "4"]);
        assert!(matches!(Config::resolve(flags), Err(ConfigError::Invalid(_))));
        assert!(Flags::try_parse_from(["shoal", "--fsync", "sometimes"]).is_err());
    }
}
