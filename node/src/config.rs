//! The server's configuration: command-line flags over an optional TOML file over defaults.
//!
//! Every option is a flag (`shoal --help` documents each) and a key of the same name in the
//! file, with `-` written as `_` (`--max-value-bytes` ↔ `max_value_bytes`). Cluster
//! membership (`[[nodes]]`) and replication (`[replication]`) exist only in the file: they
//! must be the same on every member, which a file copied to each node makes easy.
//!
//! A node with no `[[nodes]]` runs standalone: Redis strings, no versions. With `[[nodes]]`
//! it is a member of a Dynamo cluster (see [`ClusterConfig`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use shoal_cluster::NodeId;
use shoal_cluster::consistency::Consistency;
use shoal_cluster::detector::DetectorConfig;
use shoal_cluster::endpoint::{GossipConfig, HintConfig};
use shoal_cluster::membership::ClusterView;
use shoal_cluster::ring::{Member, Ring};

/// Default client port (Redis's 6379 plus 1000, so both can run side by side).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7379";
pub const DATA_DIR_DEFAULT: &str = "./shoal-data";
/// Redis's own default `proto-max-bulk-len` is 512 MiB; 16 MiB keeps one request's memory small.
pub const MAX_VALUE_BYTES_DEFAULT: usize = 16 << 20;
/// Upper bound of `max-value-bytes`: the engine's own value limit.
pub const MAX_VALUE_BYTES_LIMIT: usize = shoal_engine::types::VALUE_LEN_MAX - 1;
/// Most shards a node runs: a shard is an executor with its own rings and engine.
pub const SHARDS_MAX: usize = 256;
/// Replicas per key when `[replication]` does not say (Dynamo's and Riak's default).
pub const REPLICAS_DEFAULT: u32 = 3;
/// How long a coordinator waits for R or W replicas before answering `-TIMEOUT`: long
/// enough for a group commit on a busy disk, short enough that a client retries promptly.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// The cluster name members must share when `cluster_name` is not set.
pub const CLUSTER_NAME_DEFAULT: &str = "shoal";
/// Gossip rounds: Cassandra's one a second. With the default detector, a member silent for
/// about five rounds is convicted.
pub const GOSSIP_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Members gossiped to per round: spreads news to N members in about log3(N) rounds.
pub const GOSSIP_FANOUT_DEFAULT: usize = 3;
/// Cassandra's `phi_convict_threshold`.
pub const PHI_THRESHOLD_DEFAULT: f64 = 8.0;

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

/// The Linux scheduling policy of the shard executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sched {
    /// `SCHED_BATCH`: a woken executor waits for the thread running on its core to yield or
    /// use up its time slice instead of preempting it. An executor drains everything ready
    /// when it runs, so waiting costs little and turns a context switch per request into one
    /// per batch where a core is shared (a client on the same machine, other daemons).
    Batch,
    /// `SCHED_OTHER`: a woken executor preempts the thread on its core, for the shortest
    /// wake-up latency when cores are shared.
    Normal,
}

impl Sched {
    pub fn as_str(self) -> &'static str {
        match self {
            Sched::Batch => "batch",
            Sched::Normal => "normal",
        }
    }
}

/// Command-line flags. Unset flags fall back to the config file, then to the defaults.
#[derive(Debug, Parser, Default)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: a Dynamo-style key-value server speaking the Redis protocol"
)]
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
    /// Memory of the node's engines (memtables, block caches, open tables' index and bloom
    /// blocks), in bytes, split evenly across shards; replaces --memtable-bytes and
    /// --cache-bytes [default: none, those two bound each shard].
    #[arg(long, value_name = "BYTES")]
    pub memory_budget: Option<u64>,
    /// Memtable size per shard before it is flushed to an SSTable, in bytes [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub memtable_bytes: Option<usize>,
    /// Block cache per shard, in bytes [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub cache_bytes: Option<usize>,
    /// How long an idle executor spins before sleeping, in µs, yielding its core to any other
    /// runnable thread as it spins; short on machines with few cores [default: 50].
    #[arg(long, value_name = "US")]
    pub spin_us: Option<u64>,
    /// Scheduling policy of the executor threads [default: batch].
    #[arg(long, value_enum)]
    pub sched: Option<Sched>,
    /// Log filter (tracing's env-filter syntax; RUST_LOG overrides it) [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// This node's id among the config file's `[[nodes]]` (cluster mode only).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Address other nodes connect to; shard s listens on its port + s (cluster mode only)
    /// [default: this node's `peer` in `[[nodes]]`].
    #[arg(long, value_name = "ADDR")]
    pub peer_listen: Option<SocketAddr>,
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
    memory_budget: Option<u64>,
    memtable_bytes: Option<usize>,
    cache_bytes: Option<usize>,
    spin_us: Option<u64>,
    sched: Option<Sched>,
    log: Option<String>,
    node_id: Option<String>,
    peer_listen: Option<SocketAddr>,
    cluster_name: Option<String>,
    replication: Option<ReplicationFile>,
    gossip: Option<GossipFile>,
    hints: Option<HintsFile>,
    #[serde(default)]
    nodes: Vec<NodeFile>,
}

/// `[gossip]`: failure detection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GossipFile {
    interval_ms: Option<u64>,
    fanout: Option<usize>,
    phi_threshold: Option<f64>,
}

/// `[hints]`: hinted handoff.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HintsFile {
    window_s: Option<u64>,
    max_per_target: Option<u64>,
    max_bytes_per_target: Option<u64>,
    replay_bytes_per_s: Option<u64>,
}

/// `[replication]`: N, and the default R and W (each `ONE`, `QUORUM`, `ALL` or a number).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicationFile {
    n: Option<u32>,
    r: Option<LevelFile>,
    w: Option<LevelFile>,
    timeout_ms: Option<u64>,
    /// Count only home replicas toward W (classic quorums) instead of accepting fallbacks.
    strict: Option<bool>,
}

/// A consistency level as TOML writes it: `r = 2` or `r = "quorum"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LevelFile {
    Count(u32),
    Name(String),
}

impl LevelFile {
    fn resolve(&self, key: &str) -> Result<Consistency, ConfigError> {
        let text = match self {
            LevelFile::Count(n) => n.to_string(),
            LevelFile::Name(s) => s.clone(),
        };
        text.parse()
            .map_err(|_| ConfigError::Invalid(format!("replication.{key} = {text:?}")))
    }
}

/// One `[[nodes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    id: String,
    peer: SocketAddr,
    #[serde(default = "weight_default")]
    weight: u32,
    #[serde(default)]
    rack: String,
    #[serde(default)]
    dc: String,
    /// The member's shard count, so messages go straight to the owning shard's port; a
    /// member with another count still works (its receiving shard forwards).
    shards: Option<usize>,
}

fn weight_default() -> u32 {
    1
}

/// One cluster member as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The name in the config file.
    pub name: String,
    /// The ring and version-vector id: a hash of the name, so it never depends on the order
    /// or number of members.
    pub id: NodeId,
    /// Base peer address: shard s listens on its port + s.
    pub peer: SocketAddr,
    pub weight: u32,
    pub rack: String,
    pub dc: String,
    pub shards: usize,
}

/// Cluster mode: who this node is, the members, and the replication defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// This node's entry in `members`.
    pub me: NodeId,
    pub peer_listen: SocketAddr,
    /// Every member, this node included, sorted by id.
    pub members: Vec<NodeConfig>,
    /// The name every member's configuration must give.
    pub name: String,
    /// N: replicas per key.
    pub replicas: u32,
    pub read: Consistency,
    pub write: Consistency,
    /// Whether writes count only home replicas toward W by default.
    pub strict: bool,
    pub timeout: Duration,
    pub gossip: GossipConfig,
    pub hints: HintConfig,
}

impl ClusterConfig {
    /// The member list as every member must see it: each member's name, id, address,
    /// placement and shard count.
    pub fn view(&self) -> ClusterView {
        let members = self
            .members
            .iter()
            .map(|m| {
                format!(
                    "{} ({:08x}) at {}, weight {}, rack {:?}, dc {:?}, {} shards",
                    m.name, m.id, m.peer, m.weight, m.rack, m.dc, m.shards
                )
            })
            .collect();
        ClusterView::new(self.name.clone(), members)
    }

    /// The ring every member computes from the same member list.
    pub fn ring(&self, partitions: u32) -> Result<Ring, ConfigError> {
        let members: Vec<Member> = self
            .members
            .iter()
            .map(|m| Member {
                id: m.id,
                weight: m.weight,
                rack: m.rack.clone(),
                dc: m.dc.clone(),
            })
            .collect();
        Ring::new(&members, partitions, self.replicas)
            .map_err(|e| ConfigError::Invalid(format!("cluster ring: {e}")))
    }

    pub fn member(&self, id: NodeId) -> Option<&NodeConfig> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// The ring id of a member name.
pub fn node_id_of(name: &str) -> NodeId {
    const NODE_ID_SEED: u64 = 0x5348_4f41_4c4e_4f44;
    xxhash_rust::xxh64::xxh64(name.as_bytes(), NODE_ID_SEED) as NodeId
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub fsync: Fsync,
    pub max_value_bytes: usize,
    pub partitions: u32,
    /// The whole node's engine memory; `None`: `memtable_bytes` and `cache_bytes` per shard.
    pub memory_budget: Option<u64>,
    pub memtable_bytes: usize,
    pub cache_bytes: usize,
    pub spin_us: u64,
    pub sched: Sched,
    pub log: String,
    /// `None`: standalone.
    pub cluster: Option<ClusterConfig>,
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

/// Cores this process may run on: the default shard count.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Resolves flags over the file they name (if any) over defaults.
    pub fn resolve(flags: Flags) -> Result<Config, ConfigError> {
        let mut file = match &flags.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let shards = flags.shards.or(file.shards).unwrap_or_else(cores);
        let cluster = cluster_config(&flags, &mut file, shards)?;
        let default_listen: SocketAddr = LISTEN_DEFAULT
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("bad default address {LISTEN_DEFAULT}")))?;
        let config = Config {
            listen: flags.listen.or(file.listen).unwrap_or(default_listen),
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            shards,
            fsync: flags.fsync.or(file.fsync).unwrap_or(Fsync::Always),
            max_value_bytes: flags
                .max_value_bytes
                .or(file.max_value_bytes)
                .unwrap_or(MAX_VALUE_BYTES_DEFAULT),
            partitions: flags
                .partitions
                .or(file.partitions)
                .unwrap_or(shoal_cluster::partition::PARTITIONS_DEFAULT),
            memory_budget: flags.memory_budget.or(file.memory_budget),
            memtable_bytes: flags
                .memtable_bytes
                .or(file.memtable_bytes)
                .unwrap_or(64 << 20),
            cache_bytes: flags.cache_bytes.or(file.cache_bytes).unwrap_or(64 << 20),
            spin_us: flags.spin_us.or(file.spin_us).unwrap_or(50),
            sched: flags.sched.or(file.sched).unwrap_or(Sched::Batch),
            log: flags.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
            cluster,
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
        if let Some(budget) = self.memory_budget {
            let min = shoal_engine::budget::MEMORY_BUDGET_MIN_BYTES * self.shards as u64;
            if budget < min {
                return invalid(format!(
                    "memory_budget = {budget} (at least {min}: {} MiB per shard)",
                    shoal_engine::budget::MEMORY_BUDGET_MIN_BYTES >> 20
                ));
            }
        }
        if self.memtable_bytes < (1 << 20) {
            return invalid(format!(
                "memtable_bytes = {} (at least 1 MiB)",
                self.memtable_bytes
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.ring(self.partitions)?;
            if cluster.peer_listen.port() as usize + self.shards > usize::from(u16::MAX) + 1 {
                return invalid(format!(
                    "peer_listen port {} + {} shards is past the last port",
                    cluster.peer_listen.port(),
                    self.shards
                ));
            }
        }
        Ok(())
    }

    /// Each shard's part of the memory budget.
    pub fn shard_memory_budget(&self) -> Option<u64> {
        self.memory_budget.map(|b| b / self.shards as u64)
    }
}

/// Builds the cluster section from `[[nodes]]` and `[replication]`; `None` without members.
fn cluster_config(
    flags: &Flags,
    file: &mut File,
    shards: usize,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let invalid = |s: String| Err(ConfigError::Invalid(s));
    let node_id = flags.node_id.clone().or(file.node_id.take());
    if file.nodes.is_empty() {
        let cluster_only = file.replication.is_some()
            || file.gossip.is_some()
            || file.hints.is_some()
            || file.cluster_name.is_some()
            || node_id.is_some()
            || file.peer_listen.is_some();
        if cluster_only {
            return invalid(
                "node_id, peer_listen, cluster_name, [replication], [gossip] and [hints] need [[nodes]]"
                    .to_owned(),
            );
        }
        return Ok(None);
    }
    let Some(name) = node_id else {
        return invalid("[[nodes]] is set but node_id is not".to_owned());
    };
    let mut members: Vec<NodeConfig> = Vec::with_capacity(file.nodes.len());
    for n in &file.nodes {
        let id = node_id_of(&n.id);
        if let Some(other) = members.iter().find(|m| m.id == id) {
            return invalid(if other.name == n.id {
                format!("node {:?} is listed twice", n.id)
            } else {
                format!(
                    "node ids {:?} and {:?} collide: rename one",
                    other.name, n.id
                )
            });
        }
        if n.id.is_empty() {
            return invalid("a node has an empty id".to_owned());
        }
        let member_shards = n.shards.unwrap_or(shards);
        if member_shards == 0 || member_shards > SHARDS_MAX {
            return invalid(format!("node {:?}: shards = {member_shards}", n.id));
        }
        members.push(NodeConfig {
            name: n.id.clone(),
            id,
            peer: n.peer,
            weight: n.weight,
            rack: n.rack.clone(),
            dc: n.dc.clone(),
            shards: member_shards,
        });
    }
    members.sort_by_key(|m| m.id);
    let me = node_id_of(&name);
    let Some(mine) = members.iter().find(|m| m.id == me) else {
        return invalid(format!("node_id {name:?} is not among [[nodes]]"));
    };
    if mine.shards != shards {
        return invalid(format!(
            "node {name:?} is listed with {} shards but runs {shards}",
            mine.shards
        ));
    }
    let peer_listen = flags.peer_listen.or(file.peer_listen).unwrap_or(mine.peer);
    let replication = file.replication.take().unwrap_or_default();
    let replicas = replication.n.unwrap_or(REPLICAS_DEFAULT);
    let level = |l: &Option<LevelFile>, key| match l {
        Some(l) => l.resolve(key),
        None => Ok(Consistency::Quorum),
    };
    let read = level(&replication.r, "r")?;
    let write = level(&replication.w, "w")?;
    if replicas == 0 || replicas as usize > members.len() {
        return invalid(format!(
            "replication.n = {replicas} with {} nodes (1..=nodes)",
            members.len()
        ));
    }
    for (key, l) in [("r", read), ("w", write)] {
        if l.required(replicas) > replicas {
            return invalid(format!(
                "replication.{key} = {l} is more than n = {replicas}"
            ));
        }
    }
    let timeout_ms = replication.timeout_ms.unwrap_or(REQUEST_TIMEOUT_MS_DEFAULT);
    if timeout_ms == 0 {
        return invalid("replication.timeout_ms = 0".to_owned());
    }
    let name = file
        .cluster_name
        .take()
        .unwrap_or_else(|| CLUSTER_NAME_DEFAULT.to_owned());
    if name.is_empty() {
        return invalid("cluster_name = \"\" (a cluster needs a name)".to_owned());
    }
    Ok(Some(ClusterConfig {
        me,
        peer_listen,
        members,
        name,
        replicas,
        read,
        write,
        strict: replication.strict.unwrap_or(false),
        timeout: Duration::from_millis(timeout_ms),
        gossip: gossip_config(file.gossip.take().unwrap_or_default())?,
        hints: hint_config(file.hints.take().unwrap_or_default())?,
    }))
}

fn gossip_config(file: GossipFile) -> Result<GossipConfig, ConfigError> {
    let invalid = |s: String| Err(ConfigError::Invalid(s));
    let interval_ms = file.interval_ms.unwrap_or(GOSSIP_INTERVAL_MS_DEFAULT);
    if interval_ms == 0 {
        return invalid("gossip.interval_ms = 0 (gossip needs rounds)".to_owned());
    }
    let fanout = file.fanout.unwrap_or(GOSSIP_FANOUT_DEFAULT);
    if fanout == 0 {
        return invalid("gossip.fanout = 0 (a round gossips to at least one member)".to_owned());
    }
    let threshold = file.phi_threshold.unwrap_or(PHI_THRESHOLD_DEFAULT);
    if !(threshold.is_finite() && threshold > 0.0) {
        return invalid(format!(
            "gossip.phi_threshold = {threshold} (a positive number)"
        ));
    }
    let interval = Duration::from_millis(interval_ms);
    Ok(GossipConfig {
        interval,
        fanout,
        detector: DetectorConfig {
            threshold,
            ..DetectorConfig::for_interval(interval)
        },
    })
}

fn hint_config(file: HintsFile) -> Result<HintConfig, ConfigError> {
    let defaults = HintConfig::default();
    let config = HintConfig {
        window: file.window_s.map_or(defaults.window, Duration::from_secs),
        max_hints_per_owner: file.max_per_target.unwrap_or(defaults.max_hints_per_owner),
        max_bytes_per_owner: file
            .max_bytes_per_target
            .unwrap_or(defaults.max_bytes_per_owner),
        replay_bytes_per_s: file
            .replay_bytes_per_s
            .unwrap_or(defaults.replay_bytes_per_s),
    };
    if config.replay_bytes_per_s == 0 {
        return Err(ConfigError::Invalid(
            "hints.replay_bytes_per_s = 0 (hints would never be handed off)".to_owned(),
        ));
    }
    Ok(config)
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
        assert_eq!(c.memory_budget, None);
        assert_eq!(c.shard_memory_budget(), None);
    }

    #[test]
    fn memory_budget_from_file_or_flag_split_across_shards() {
        let c = resolve_text("shards = 2\nmemory_budget = 268435456\n", &[]).unwrap();
        assert_eq!(c.memory_budget, Some(256 << 20));
        assert_eq!(c.shard_memory_budget(), Some(128 << 20));
        let c = resolve_text(
            "shards = 2\nmemory_budget = 268435456\n",
            &["--memory-budget", "67108864"],
        )
        .unwrap();
        assert_eq!(c.shard_memory_budget(), Some(32 << 20));
        // Each shard needs at least the engine's minimum.
        let small = resolve_text("shards = 4\n", &["--memory-budget", "16777216"]);
        assert!(matches!(small, Err(ConfigError::Invalid(_))), "{small:?}");
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
        let flags =
            Flags::parse_from(["shoal", "--config", path.to_str().unwrap(), "--shards", "2"]);
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
        assert!(matches!(
            Config::resolve(flags),
            Err(ConfigError::Parse { .. })
        ));
        let flags = Flags::parse_from(["shoal", "--shards", "0"]);
        assert!(matches!(
            Config::resolve(flags),
            Err(ConfigError::Invalid(_))
        ));
        let flags = Flags::parse_from(["shoal", "--shards", "8", "--partitions", "4"]);
        assert!(matches!(
            Config::resolve(flags),
            Err(ConfigError::Invalid(_))
        ));
        assert!(Flags::try_parse_from(["shoal", "--fsync", "sometimes"]).is_err());
    }

    const CLUSTER: &str = r#"
node_id = "n2"
listen = "127.0.0.1:7002"
shards = 2
[replication]
n = 3
r = "one"
w = 2
[[nodes]]
id = "n1"
peer = "127.0.0.1:7101"
rack = "r1"
[[nodes]]
id = "n2"
peer = "127.0.0.1:7201"
weight = 2
[[nodes]]
id = "n3"
peer = "127.0.0.1:7301"
shards = 4
"#;

    fn resolve_text(text: &str, extra: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let mut args = vec!["shoal", "--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        Config::resolve(Flags::parse_from(args))
    }

    #[test]
    fn cluster_members_and_levels() {
        let c = resolve_text(CLUSTER, &[]).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.me, node_id_of("n2"));
        assert_eq!(
            cluster.peer_listen.port(),
            7201,
            "defaults to this node's peer"
        );
        assert_eq!(cluster.members.len(), 3);
        assert_eq!(
            (cluster.read, cluster.write),
            (Consistency::One, Consistency::Count(2))
        );
        let n3 = cluster.member(node_id_of("n3")).unwrap();
        assert_eq!(n3.shards, 4);
        assert_eq!(cluster.member(node_id_of("n1")).unwrap().shards, 2);
        assert_eq!(cluster.member(node_id_of("n1")).unwrap().rack, "r1");
        let ring = cluster.ring(c.partitions).unwrap();
        assert_eq!(ring.preference_list(0).len(), 3);
        // The same file with another node_id is another member of the same ring.
        let c1 = resolve_text(CLUSTER, &["--node-id", "n1"]).unwrap();
        assert_eq!(c1.cluster.as_ref().unwrap().me, node_id_of("n1"));
        assert_eq!(c1.cluster.unwrap().ring(c1.partitions).unwrap(), ring);
    }

    #[test]
    fn cluster_mistakes_are_refused() {
        let cases = [
            CLUSTER.replace("node_id = \"n2\"", "node_id = \"n9\""),
            CLUSTER.replace("node_id = \"n2\"\n", ""),
            CLUSTER.replace("n = 3", "n = 4"),
            CLUSTER.replace("w = 2", "w = 5"),
            CLUSTER.replace("r = \"one\"", "r = \"most\""),
            CLUSTER.replace("id = \"n3\"", "id = \"n1\""),
            format!("{CLUSTER}[[nodes]]\nid = \"n4\"\npeer = \"127.0.0.1:1\"\nweight = 0\n"),
            "node_id = \"n1\"\n".to_owned(),
        ];
        for text in cases {
            assert!(resolve_text(&text, &[]).is_err(), "accepted:\n{text}");
        }
        assert!(
            resolve_text(CLUSTER, &["--node-id", "n3"]).is_err(),
            "n3 is listed with 4 shards but runs 2"
        );
    }
}
