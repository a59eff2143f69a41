//! A cluster of `shoal` processes on 127.0.0.1 for black-box tests.
//!
//! Every node has its own config file, `nX.toml` in the cluster's directory, shaped like
//! `examples/cluster/`: its `node_id`, then the `[replication]` and `[[nodes]]` every member
//! shares. The client port and data directory are passed as flags. All ports (each node's
//! client port and `shards` consecutive peer ports) are picked free together, while held, so
//! no two of them collide.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Server, free_ports};

/// How long a cluster may take to have every live node reach every other live node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeout of test connections: far above any request's deadline, so a hang fails the
/// test instead of stalling it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Prefix of the probe keys of [`Cluster::wait_connected`]; they are only ever read, so they
/// never exist.
pub const PROBE_KEY: &str = "__cluster_probe";
/// Probe keys: a shard keeps its own connection to each shard of each peer, so one key tests
/// only the links of the shards that own it; 64 keys spread over every shard of these tests'
/// nodes (each key misses a given shard of two with probability 1/2: all 64 do with 2^-64).
pub const PROBE_KEYS: usize = 64;

/// Shape of a test cluster.
#[derive(Debug, Clone)]
pub struct Spec {
    pub nodes: usize,
    pub shards: usize,
    /// `[replication]` n, r, w and timeout_ms.
    pub replicas: u32,
    pub read: String,
    pub write: String,
    pub timeout_ms: u64,
    /// `[gossip] interval_ms`; `None`: the default.
    pub gossip_interval_ms: Option<u64>,
}

impl Spec {
    /// N=3, R=2, W=2 over three nodes of `shards` shards, with the default 1 s deadline.
    pub fn three(shards: usize) -> Spec {
        Spec {
            nodes: 3,
            shards,
            replicas: 3,
            read: "2".to_owned(),
            write: "2".to_owned(),
            timeout_ms: 1_000,
            gossip_interval_ms: None,
        }
    }
}

/// A running cluster; its processes are killed when it is dropped.
pub struct Cluster {
    pub spec: Spec,
    /// `configs[i]` is node `i`'s config file.
    pub configs: Vec<PathBuf>,
    /// `nodes[i]` is member `n{i+1}`.
    pub nodes: Vec<Server>,
}

/// The member name of node index `i`.
pub fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// The config file of node `me` of `spec`.
pub fn config_text(spec: &Spec, me: usize, peer_ports: &[u16]) -> String {
    let mut text = format!(
        "node_id = \"{}\"\nshards = {}\n\n[replication]\nn = {}\nr = \"{}\"\nw = \"{}\"\ntimeout_ms = {}\n",
        name(me),
        spec.shards,
        spec.replicas,
        spec.read,
        spec.write,
        spec.timeout_ms
    );
    if let Some(ms) = spec.gossip_interval_ms {
        text.push_str(&format!("\n[gossip]\ninterval_ms = {ms}\n"));
    }
    for (i, port) in peer_ports.iter().enumerate() {
        text.push_str(&format!(
            "\n[[nodes]]\nid = \"{}\"\npeer = \"127.0.0.1:{port}\"\nrack = \"r{}\"\n",
            name(i),
            i + 1
        ));
    }
    text
}

impl Cluster {
    /// Writes each node's config into `dir`, starts every node (data in `dir/n1`, ...) and
    /// waits until each answers PING. Call [`Cluster::wait_connected`] before relying on
    /// quorums.
    pub fn start(dir: &Path, spec: Spec) -> Cluster {
        let mut held = Vec::new();
        let client_addrs: Vec<SocketAddr> = (0..spec.nodes)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_ports(1, &mut held))))
            .collect();
        let peer_ports: Vec<u16> = (0..spec.nodes)
            .map(|_| free_ports(spec.shards, &mut held))
            .collect();
        let configs: Vec<PathBuf> = (0..spec.nodes)
            .map(|i| {
                let path = dir.join(format!("{}.toml", name(i)));
                std::fs::write(&path, config_text(&spec, i, &peer_ports)).unwrap();
                path
            })
            .collect();
        drop(held);
        let nodes = client_addrs
            .iter()
            .zip(&configs)
            .enumerate()
            .map(|(i, (&addr, config))| {
                let extra = ["--config", config.to_str().unwrap(), "--spin-us", "0"];
                Server::start_on(addr, None, &dir.join(name(i)), &extra)
            })
            .collect();
        Cluster {
            spec,
            configs,
            nodes,
        }
    }

    /// A connection to node `i` with [`REPLY_TIMEOUT`] on reads and writes.
    pub fn connection(&self, i: usize) -> redis::Connection {
        let c = self.nodes[i].connection();
        c.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        c.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
        c
    }

    /// Node `i`'s INFO cluster fields of member `member` (`shoal_member_<name>:k=v,...`).
    pub fn member_fields(&self, i: usize, member: usize) -> Vec<(String, String)> {
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query(&mut self.connection(i))
            .unwrap();
        let prefix = format!("shoal_member_{}:", name(member));
        let line = info
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {info}"));
        line.split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Node `i`'s view of member `member`'s state (`up`, `suspect`, `down`, ...).
    pub fn state_of(&self, i: usize, member: usize) -> String {
        let fields = self.member_fields(i, member);
        let state = fields
            .iter()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.clone());
        state.unwrap_or_default()
    }

    /// A numeric field of node `i`'s INFO cluster (`shoal_<field>:n`).
    pub fn cluster_counter(&self, i: usize, field: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query(&mut self.connection(i))
            .unwrap();
        let prefix = format!("shoal_{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {info}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// SIGSTOP node `i`: it keeps its sockets open but reads nothing, like a hung machine.
    pub fn freeze(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONT node `i` after [`Cluster::freeze`].
    pub fn thaw(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.nodes[i].pid()).unwrap();
        assert_eq!(
            // SAFETY: plain syscall on a child process this cluster started and still owns.
            unsafe { libc::kill(pid, signal) },
            0,
            "signal {signal} to {}",
            name(i)
        );
    }

    /// Starts node `i` again on its ports and data; waits until it answers PING.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// Polls `cond` every 20 ms until it holds; panics after `limit`. Returns how long it
    /// took.
    pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    /// Indices of the nodes running.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// Waits until every running node completes reads that need an answer from every running
    /// replica (`VGET probe-k R <alive, at most N>` for each of [`PROBE_KEYS`] keys, all in
    /// one pass): each reaches every other, both ways, from every shard, when every key has
    /// every node as a replica (N = nodes); with N < nodes, the keys' replicas. One key is not enough: after a restart
    /// the links of shards it does not touch may still be in their reconnect backoff, and a
    /// read at R = all fails at once on such a link.
    pub fn wait_connected(&self) {
        let alive = self.alive();
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        for &i in &alive {
            let mut c = self.connection(i);
            'pass: loop {
                for k in 0..PROBE_KEYS {
                    let r: redis::RedisResult<redis::Value> = redis::cmd("VGET")
                        .arg(format!("{PROBE_KEY}-{k}"))
                        .arg("R")
                        .arg(alive.len().min(self.spec.replicas as usize))
                        .query(&mut c);
                    if let Err(e) = r {
                        assert!(
                            Instant::now() < deadline,
                            "{} does not reach the other nodes: {e}",
                            name(i)
                        );
                        std::thread::sleep(Duration::from_millis(50));
                        continue 'pass;
                    }
                }
                break;
            }
        }
    }
}
