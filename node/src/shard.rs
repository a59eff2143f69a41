//! One shard: an executor's engine, the ring partitions it owns, and its counters.
//!
//! A key belongs to partition `partition_of(key, Q)`, and partition p to shard
//! `shard_of(p, shards)`. The shard number is the executor's position in the mesh, and
//! shard n always opens `data_dir/shard-<n>`, so data and ownership agree across restarts.

pub mod hints;
pub mod keylock;
pub mod shutdown;
pub mod store;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;
use shoal_cluster::partition::partition_of;
use shoal_cluster::ring::shard_of;
use shoal_engine::fs::DmaFs;

use crate::shard::store::Store;

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

/// A shard's counters, for INFO.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ShardStats {
    pub shard: u32,
    pub partitions: u32,
    pub connections: u64,
    pub connections_total: u64,
    pub commands: u64,
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    pub forwarded: u64,
    pub served_for_peers: u64,
    pub ops_per_sec: u64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    pub latency_max_us: u64,
    pub engine_writes: u64,
    /// fdatasyncs of the commit log: engine_writes / log_syncs is how well group commit groups.
    pub engine_log_syncs: u64,
    pub engine_reads: u64,
    pub engine_flushes: u64,
    pub engine_flush_bytes: u64,
    pub engine_stall_us: u64,
    pub memtable_bytes: u64,
    pub immutable_memtables: u64,
    pub sstables: u64,
    pub sstable_bytes: u64,
    pub log_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    /// The shard's memory budget; 0: none (per-component options).
    pub memory_budget: u64,
    /// Engine memory: memtables + block cache + table metadata.
    pub engine_memory: u64,
    pub memtable_memory: u64,
    pub table_meta_bytes: u64,
    pub pending_compaction_bytes: u64,
    pub delayed_writes: u64,
    pub stopped_writes: u64,
    /// Cluster mode: client reads and writes this shard coordinated, how many failed for
    /// want of replicas or time, replica requests served for other shards and nodes, and
    /// replica requests that could not be sent.
    pub cluster_reads: u64,
    pub cluster_writes: u64,
    pub unavailable: u64,
    pub timeouts: u64,
    pub replica_requests: u64,
    pub replica_send_failures: u64,
    /// Writes sent to a fallback for a home replica judged down, and messages refused for
    /// a member list that differs from ours.
    pub sloppy_writes: u64,
    pub refused_messages: u64,
    /// This shard's hints, per member they are for.
    pub hints: Vec<HintCounters>,
}

/// One shard's hints for one member.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct HintCounters {
    pub owner: u32,
    pub pending: u64,
    pub pending_bytes: u64,
    pub taken: u64,
    pub replayed: u64,
    pub expired: u64,
    pub refused: u64,
}

/// Adds to a shard's statistics what a layer above the shard counts (the cluster driver),
/// without the shard depending on that layer.
pub type StatsSource = Box<dyn Fn(&mut ShardStats)>;

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub partitions: u32,
    pub store: Store<DmaFs>,
    pub counters: Counters,
    stats_source: RefCell<Option<StatsSource>>,
}

impl Shard {
    pub fn new(id: usize, shards: usize, partitions: u32, store: Store<DmaFs>) -> Shard {
        debug_assert!(id < shards);
        Shard {
            id,
            shards,
            partitions,
            store,
            counters: Counters::new(),
            stats_source: RefCell::new(None),
        }
    }

    /// Sets the source of the statistics this shard does not count itself.
    pub fn set_stats_source(&self, source: StatsSource) {
        *self.stats_source.borrow_mut() = Some(source);
    }

    /// The shard that owns `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        owner(key, self.partitions, self.shards)
    }

    pub fn stats(&self) -> ShardStats {
        let c = &self.counters;
        let e = self.store.db().stats();
        let h = c.latency_us.borrow();
        let (sstables, sstable_bytes) = e
            .levels
            .iter()
            .fold((0, 0), |(t, b), l| (t + l.tables, b + l.bytes));
        let mut stats = ShardStats {
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
            ..ShardStats::default()
        };
        if let Some(source) = &*self.stats_source.borrow() {
            source(&mut stats);
        }
        stats
    }
}

/// The shard owning `key` on a node with `shards` shards and `partitions` ring partitions.
pub fn owner(key: &[u8], partitions: u32, shards: usize) -> usize {
    shard_of(partition_of(key, partitions), shards as u32) as usize
}
