//! One shard: an executor's engine, the ring partitions it owns, and its counters.
//!
//! A key belongs to partition `partition_of(key, Q)`, and partition p to shard
//! `shard_of(p, shards)`. The shard number is the executor's position in the mesh, and
//! shard n always opens `data_dir/shard-<n>`, so data and ownership agree across restarts.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;
use shoal_cluster::NodeId;
use shoal_cluster::partition::partition_of;
use shoal_cluster::ring::shard_of;
use shoal_engine::fs::DmaFs;

use crate::message::{ShardOp, ShardReply, ShardStats};
use crate::store::{Store, Value};

/// Highest latency the histogram tracks (longer requests are clamped): one minute in µs.
const LATENCY_MAX_US: u64 = 60_000_000;
/// Period of the throughput sampler; `instantaneous_ops_per_sec` spans `OPS_SAMPLES` of them.
pub const OPS_SAMPLE_PERIOD: Duration = Duration::from_millis(100);
const OPS_SAMPLES: usize = 10;

/// Per-shard counters, kept by the shard's own executor.
pub struct Counters {
    pub connections: Cell<u64>,
    pub connections_total: Cell<u64>,
    pub commands: Cell<u64>,
    pub reads: Cell<u64>,
    pub writes: Cell<u64>,
    pub errors: Cell<u64>,
    pub forwarded: Cell<u64>,
    pub served_for_peers: Cell<u64>,
    /// Cluster mode: client reads and writes this shard coordinated, how many failed for
    /// want of replicas or time, replica requests served for other nodes, and replica
    /// messages that could not be sent.
    pub cluster_reads: Cell<u64>,
    pub cluster_writes: Cell<u64>,
    pub unavailable: Cell<u64>,
    pub timeouts: Cell<u64>,
    pub replica_requests: Cell<u64>,
    pub replica_send_failures: Cell<u64>,
    latency_us: RefCell<Histogram<u64>>,
    ops_samples: RefCell<VecDeque<u64>>,
}

impl Counters {
    fn new() -> Counters {
        let latency = Histogram::new_with_bounds(1, LATENCY_MAX_US, 2)
            .expect("constant histogram bounds are valid");
        Counters {
            connections: Cell::new(0),
            connections_total: Cell::new(0),
            commands: Cell::new(0),
            reads: Cell::new(0),
            writes: Cell::new(0),
            errors: Cell::new(0),
            forwarded: Cell::new(0),
            served_for_peers: Cell::new(0),
            cluster_reads: Cell::new(0),
            cluster_writes: Cell::new(0),
            unavailable: Cell::new(0),
            timeouts: Cell::new(0),
            replica_requests: Cell::new(0),
            replica_send_failures: Cell::new(0),
            latency_us: RefCell::new(latency),
            ops_samples: RefCell::new(VecDeque::with_capacity(OPS_SAMPLES + 1)),
        }
    }

    pub fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }

    /// Records one command's time from parse to reply.
    pub fn record_latency(&self, elapsed: Duration) {
        let us = (elapsed.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        self.latency_us.borrow_mut().saturating_record(us);
    }

    /// Called every [`OPS_SAMPLE_PERIOD`] by the shard's ticker.
    pub fn sample_ops(&self) {
        let mut s = self.ops_samples.borrow_mut();
        s.push_back(self.commands.get());
        if s.len() > OPS_SAMPLES + 1 {
            s.pop_front();
        }
    }

    fn ops_per_sec(&self) -> u64 {
        let s = self.ops_samples.borrow();
        match (s.front(), s.back()) {
            (Some(first), Some(last)) if s.len() > 1 => {
                let span = OPS_SAMPLE_PERIOD.as_secs_f64() * (s.len() - 1) as f64;
                ((last - first) as f64 / span) as u64
            }
            _ => 0,
        }
    }
}

pub struct Shard {
    pub id: usize,
    /// This node's id in its cluster; `None` when standalone.
    pub node: Option<NodeId>,
    pub shards: usize,
    pub partitions: u32,
    pub store: Store<DmaFs>,
    pub counters: Counters,
}

impl Shard {
    pub fn new(
        id: usize,
        node: Option<NodeId>,
        shards: usize,
        partitions: u32,
        store: Store<DmaFs>,
    ) -> Shard {
        debug_assert!(id < shards);
        Shard {
            id,
            node,
            shards,
            partitions,
            store,
            counters: Counters::new(),
        }
    }

    /// The shard that owns `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        owner(key, self.partitions, self.shards)
    }

    /// [`ShardOp::Get`] from borrowed keys, so the mesh can serve an archived request
    /// without copying its keys out of the frame.
    pub async fn get(&self, keys: &[&[u8]]) -> ShardReply {
        let result = self.store.get_many(keys).await.map(|values| {
            ShardReply::Values(values.into_iter().map(|v| v.map(Value::into_vec)).collect())
        });
        self.reply(result)
    }

    /// [`ShardOp::Put`] from borrowed `(key, value, expires_at_ms)` entries (see [`Shard::get`]).
    pub async fn put<'a>(
        &self,
        entries: impl Iterator<Item = (&'a [u8], &'a [u8], u64)> + Clone,
    ) -> ShardReply {
        let result = self.store.put(entries).await.map(|()| ShardReply::Done);
        self.reply(result)
    }

    /// Runs an operation against this shard's store.
    pub async fn apply(&self, op: ShardOp) -> ShardReply {
        let store = &self.store;
        let result = match op {
            ShardOp::Get { keys } => {
                let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                return self.get(&keys).await;
            }
            ShardOp::Put { entries } => {
                let entries = entries
                    .iter()
                    .map(|e| (&e.key[..], &e.value[..], e.expires_at_ms));
                return self.put(entries).await;
            }
            ShardOp::Set {
                key,
                value,
                cond,
                expiry,
                get,
            } => store
                .set(&key, &value, cond, expiry, get)
                .await
                .map(ShardReply::Set),
            ShardOp::Del { keys } => store.del(&keys).await.map(ShardReply::Count),
            ShardOp::Exists { keys } => store.exists(&keys).await.map(ShardReply::Count),
            ShardOp::Expire { key, at_ms, cond } => store
                .expire(&key, at_ms, cond)
                .await
                .map(|applied| ShardReply::Count(u64::from(applied))),
            ShardOp::Ttl { key } => store.ttl_ms(&key).await.map(ShardReply::Int),
            ShardOp::Scan { from_hash, count } => store
                .scan(from_hash, count as usize)
                .await
                .map(|(keys, exhausted)| ShardReply::Keys { keys, exhausted }),
            ShardOp::Count => store
                .count()
                .await
                .map(|(keys, expires)| ShardReply::Counted { keys, expires }),
            ShardOp::Flush => store.flush().await.map(|()| ShardReply::Done),
            ShardOp::Stats => Ok(ShardReply::Stats(Box::new(self.stats()))),
            ShardOp::Replica(request) => Ok(match self.node {
                Some(me) => {
                    ShardReply::Replica(crate::driver::serve_replica(store, me, request).await)
                }
                None => ShardReply::Error("ERR this node is not a cluster member".to_owned()),
            }),
        };
        self.reply(result)
    }

    /// An operation's reply, its store error turned into an error reply.
    fn reply(&self, result: crate::store::Result<ShardReply>) -> ShardReply {
        result.unwrap_or_else(|e| {
            tracing::warn!(shard = self.id, error = %e, "operation failed");
            ShardReply::Error(format!("ERR {e}"))
        })
    }

    pub fn stats(&self) -> ShardStats {
        let c = &self.counters;
        let e = self.store.db().stats();
        let h = c.latency_us.borrow();
        let (sstables, sstable_bytes) = e
            .levels
            .iter()
            .fold((0, 0), |(t, b), l| (t + l.tables, b + l.bytes));
        ShardStats {
            shard: self.id as u32,
            partitions: (0..self.partitions)
                .filter(|p| shard_of(*p, self.shards as u32) as usize == self.id)
                .count() as u32,
            connections: c.connections.get(),
            connections_total: c.connections_total.get(),
            commands: c.commands.get(),
            reads: c.reads.get(),
            writes: c.writes.get(),
            errors: c.errors.get(),
            forwarded: c.forwarded.get(),
            served_for_peers: c.served_for_peers.get(),
            ops_per_sec: c.ops_per_sec(),
            latency_p50_us: h.value_at_quantile(0.5),
            latency_p99_us: h.value_at_quantile(0.99),
            latency_p999_us: h.value_at_quantile(0.999),
            latency_max_us: h.max(),
            engine_writes: e.writes,
            engine_log_syncs: e.log_syncs,
            engine_reads: e.reads,
            engine_flushes: e.flushes,
            engine_flush_bytes: e.flush_bytes,
            engine_stall_us: e.stall_micros,
            memtable_bytes: e.memtable_bytes,
            immutable_memtables: e.immutable_memtables,
            sstables,
            sstable_bytes,
            log_bytes: e.log_bytes,
            cache_hits: e.cache.hits,
            cache_misses: e.cache.misses,
            cache_bytes: e.cache.usage_bytes,
            memory_budget: e.memory.budget.unwrap_or(0),
            engine_memory: e.memory.total,
            memtable_memory: e.memory.memtables,
            table_meta_bytes: e.memory.table_meta,
            pending_compaction_bytes: e.pending_compaction_bytes,
            delayed_writes: e.delayed_writes,
            stopped_writes: e.stopped_writes,
            cluster_reads: c.cluster_reads.get(),
            cluster_writes: c.cluster_writes.get(),
            unavailable: c.unavailable.get(),
            timeouts: c.timeouts.get(),
            replica_requests: c.replica_requests.get(),
            replica_send_failures: c.replica_send_failures.get(),
        }
    }
}

/// The shard owning `key` on a node with `shards` shards and `partitions` ring partitions.
pub fn owner(key: &[u8], partitions: u32, shards: usize) -> usize {
    shard_of(partition_of(key, partitions), shards as u32) as usize
}
