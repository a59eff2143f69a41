//! INFO: the standard Redis sections and fields tools look for, then Shoal's own (per-shard
//! throughput, latency percentiles and engine statistics).

use std::fmt::Write;

use shoal_cluster::membership::{Health, Status};
use shoal_cluster::message::MemberReport;

use crate::front::ctx::Ctx;
use crate::shard::{HintCounters, ShardStats};

/// The Redis version whose command semantics Shoal follows; tools parse `redis_version`.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "stats",
    "persistence",
    "keyspace",
    "cluster",
    "shards",
];

/// Resident set size of this process in bytes (from /proc; 0 if unreadable).
fn rss_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page)
}

fn human(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.2}{}", UNITS[unit])
    }
}

fn wanted(sections: &[&[u8]]) -> Vec<&'static str> {
    let all = sections.is_empty()
        || sections.iter().any(|s| {
            s.eq_ignore_ascii_case(b"all")
                || s.eq_ignore_ascii_case(b"default")
                || s.eq_ignore_ascii_case(b"everything")
        });
    SECTIONS
        .iter()
        .copied()
        .filter(|name| {
            all || sections
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name.as_bytes()))
        })
        .collect()
}

/// The INFO text. `keyspace` is (keys, keys with an expiry), or why it could not be counted.
pub fn render(
    ctx: &Ctx,
    sections: &[&[u8]],
    stats: &[ShardStats],
    keyspace: Result<(u64, u64), String>,
) -> String {
    let mut out = String::new();
    let sum = |f: fn(&ShardStats) -> u64| stats.iter().map(f).sum::<u64>();
    let rss = rss_bytes();
    for section in wanted(sections) {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        // Writing to a String cannot fail.
        let _ = match section {
            "server" => writeln!(
                out,
                "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nshoal_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:io_uring\r\nprocess_id:{}\r\nrun_id:{:040x}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:shoal\r\nshards:{}\r\npartitions:{}\r",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH,
                std::process::id(),
                u128::from(std::process::id()) << 64 | ctx.started.elapsed().as_nanos() & 0xffff,
                ctx.config.listen.port(),
                ctx.started.elapsed().as_secs(),
                ctx.started.elapsed().as_secs() / 86_400,
                ctx.shard.shards,
                ctx.config.partitions,
            ),
            "clients" => writeln!(
                out,
                "# Clients\r\nconnected_clients:{}\r\nblocked_clients:0\r",
                sum(|s| s.connections)
            ),
            "memory" => memory(&mut out, rss, stats),
            "stats" => writeln!(
                out,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_error_replies:{}\r\nkeyspace_hits:0\r\nkeyspace_misses:0\r",
                sum(|s| s.connections_total),
                sum(|s| s.commands),
                sum(|s| s.ops_per_sec),
                sum(|s| s.errors),
            ),
            "persistence" => writeln!(
                out,
                "# Persistence\r\nloading:0\r\naof_enabled:1\r\nshoal_fsync:{}\r\nshoal_log_bytes:{}\r\nshoal_sstables:{}\r\nshoal_sstable_bytes:{}\r\nshoal_flushes:{}\r",
                ctx.config.fsync.as_str(),
                sum(|s| s.log_bytes),
                sum(|s| s.sstables),
                sum(|s| s.sstable_bytes),
                sum(|s| s.engine_flushes),
            ),
            "keyspace" => match &keyspace {
                Ok((0, _)) => writeln!(out, "# Keyspace\r"),
                Ok((keys, expires)) => writeln!(
                    out,
                    "# Keyspace\r\ndb0:keys={keys},expires={expires},avg_ttl=0\r"
                ),
                Err(e) => writeln!(out, "# Keyspace\r\nshoal_keyspace_error:{e}\r"),
            },
            "cluster" => cluster(&mut out, ctx, stats, &sum),
            _ => {
                let _ = writeln!(out, "# Shards\r");
                for s in stats {
                    let _ = writeln!(
                        out,
                        "shard{}:partitions={},connections={},commands={},reads={},writes={},errors={},forwarded={},served_for_peers={},ops_per_sec={},latency_p50_us={},latency_p99_us={},latency_p999_us={},latency_max_us={},engine_writes={},log_syncs={},engine_reads={},flushes={},flush_bytes={},stall_us={},delayed_writes={},stopped_writes={},pending_compaction_bytes={},memtable_bytes={},immutable_memtables={},sstables={},sstable_bytes={},log_bytes={},cache_hits={},cache_misses={},cache_bytes={},memory_budget={},engine_memory={},table_meta_bytes={}\r",
                        s.shard,
                        s.partitions,
                        s.connections,
                        s.commands,
                        s.reads,
                        s.writes,
                        s.errors,
                        s.forwarded,
                        s.served_for_peers,
                        s.ops_per_sec,
                        s.latency_p50_us,
                        s.latency_p99_us,
                        s.latency_p999_us,
                        s.latency_max_us,
                        s.engine_writes,
                        s.engine_log_syncs,
                        s.engine_reads,
                        s.engine_flushes,
                        s.engine_flush_bytes,
                        s.engine_stall_us,
                        s.delayed_writes,
                        s.stopped_writes,
                        s.pending_compaction_bytes,
                        s.memtable_bytes,
                        s.immutable_memtables,
                        s.sstables,
                        s.sstable_bytes,
                        s.log_bytes,
                        s.cache_hits,
                        s.cache_misses,
                        s.cache_bytes,
                        s.memory_budget,
                        s.engine_memory,
                        s.table_meta_bytes,
                    );
                }
                Ok(())
            }
        };
    }
    out
}

/// `# Memory`: Redis's fields (the process's RSS), then the engines' memory by component
/// and the budget it is held to (`shoal_memory_budget:0`: no budget, each component bounded
/// by its own option).
fn memory(out: &mut String, rss: u64, stats: &[ShardStats]) -> std::fmt::Result {
    let sum = |f: fn(&ShardStats) -> u64| stats.iter().map(f).sum::<u64>();
    let engine = sum(|s| s.engine_memory);
    let budget = sum(|s| s.memory_budget);
    writeln!(
        out,
        "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nshoal_engine_memory:{engine}\r\nshoal_engine_memory_human:{}\r\nshoal_memory_budget:{budget}\r\nshoal_memory_budget_human:{}\r\nshoal_memtable_memory:{}\r\nshoal_block_cache_memory:{}\r\nshoal_table_meta_memory:{}\r",
        human(rss),
        human(rss),
        human(engine),
        human(budget),
        sum(|s| s.memtable_memory),
        sum(|s| s.cache_bytes),
        sum(|s| s.table_meta_bytes),
    )
}

/// `cluster_enabled` stays 0: clients read it as "speaks the Redis Cluster protocol", which
/// Shoal does not; its own cluster is described by the `shoal_` fields. Each member's line
/// keeps `up=` (0 when judged down) for older scripts, then its gossiped state and this
/// node's hints for it.
fn cluster(
    out: &mut String,
    ctx: &Ctx,
    stats: &[ShardStats],
    sum: &dyn Fn(fn(&ShardStats) -> u64) -> u64,
) -> std::fmt::Result {
    writeln!(out, "# Cluster\r\ncluster_enabled:0\r")?;
    let Some(d) = &ctx.driver else {
        return writeln!(out, "shoal_cluster:0\r");
    };
    let c = d.config();
    let me = c.member(c.me).map_or("?", |m| m.name.as_str());
    let hints = |owner: Option<u32>| {
        let mut total = HintCounters::default();
        for h in stats.iter().flat_map(|s| &s.hints) {
            if owner.is_none_or(|o| o == h.owner) {
                total.pending += h.pending;
                total.pending_bytes += h.pending_bytes;
                total.taken += h.taken;
                total.replayed += h.replayed;
                total.expired += h.expired;
                total.refused += h.refused;
            }
        }
        total
    };
    let all = hints(None);
    writeln!(
        out,
        "shoal_cluster:1\r\nshoal_cluster_name:{}\r\nshoal_node_id:{me}\r\nshoal_members:{}\r\nshoal_partitions:{}\r\nshoal_replicas:{}\r\nshoal_read_level:{}\r\nshoal_write_level:{}\r\nshoal_strict_writes:{}\r\nshoal_request_timeout_ms:{}\r\nshoal_coordinated_reads:{}\r\nshoal_coordinated_writes:{}\r\nshoal_unavailable:{}\r\nshoal_timeouts:{}\r\nshoal_replica_requests:{}\r\nshoal_replica_send_failures:{}\r\nshoal_sloppy_writes:{}\r\nshoal_refused_messages:{}\r\nshoal_hints_pending:{}\r\nshoal_hints_pending_bytes:{}\r\nshoal_hints_stored:{}\r\nshoal_hints_replayed:{}\r\nshoal_hints_expired:{}\r\nshoal_hints_refused:{}\r",
        c.name,
        c.members.len(),
        d.ring().partitions(),
        c.replicas,
        c.read,
        c.write,
        u8::from(c.strict),
        c.timeout.as_millis(),
        sum(|s| s.cluster_reads),
        sum(|s| s.cluster_writes),
        sum(|s| s.unavailable),
        sum(|s| s.timeouts),
        sum(|s| s.replica_requests),
        sum(|s| s.replica_send_failures),
        sum(|s| s.sloppy_writes),
        sum(|s| s.refused_messages),
        all.pending,
        all.pending_bytes,
        all.taken,
        all.replayed,
        all.expired,
        all.refused,
    )?;
    let reports = d.members();
    for m in &c.members {
        let report = reports.iter().find(|r| r.entry.id == m.id);
        let state = report.map_or("unknown", member_state);
        let h = hints(Some(m.id));
        writeln!(
            out,
            "shoal_member_{}:peer={},weight={},rack={},dc={},up={},state={state},heartbeat={},generation={},last_heard_ms={},load={},owned={},replicated={},hints_pending={},hints_pending_bytes={},hints_replayed={},hints_expired={}\r",
            m.name,
            m.peer,
            m.weight,
            m.rack,
            m.dc,
            u8::from(d.health(m.id) != Health::Down),
            report.map_or(0, |r| r.entry.heartbeat),
            report.map_or(0, |r| r.entry.generation),
            report.map_or(0, |r| r.silent_ms),
            report.map_or(0, |r| r.entry.load),
            d.ring().owned_by(m.id).len(),
            d.ring().replicated_on(m.id).len(),
            h.pending,
            h.pending_bytes,
            h.replayed,
            h.expired,
        )?;
    }
    Ok(())
}

/// A member's state as operators read it: this node's judgment when it is not up, else what
/// the member declares.
fn member_state(r: &MemberReport) -> &'static str {
    match (r.health, r.entry.status) {
        (Health::Down, _) => "down",
        (Health::Suspect, _) => "suspect",
        (Health::Up, Status::Joining) => "joining",
        (Health::Up, Status::Up) => "up",
        (Health::Up, Status::Leaving) => "leaving",
        (Health::Up, Status::Left) => "left",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_selection() {
        assert_eq!(wanted(&[]), SECTIONS);
        assert_eq!(wanted(&[b"Keyspace"]), vec!["keyspace"]);
        assert_eq!(wanted(&[b"server", b"clients"]), vec!["server", "clients"]);
        assert_eq!(wanted(&[b"everything"]), SECTIONS);
        assert!(wanted(&[b"nosuch"]).is_empty());
    }

    #[test]
    fn memory_sums_the_shards() {
        let shard = ShardStats {
            memory_budget: 64 << 20,
            engine_memory: 10 << 20,
            memtable_memory: 6 << 20,
            cache_bytes: 3 << 20,
            table_meta_bytes: 1 << 20,
            ..ShardStats::default()
        };
        let mut out = String::new();
        memory(&mut out, 200 << 20, &[shard.clone(), shard]).unwrap();
        for field in [
            "used_memory:209715200\r\n",
            "shoal_engine_memory:20971520\r\n",
            "shoal_memory_budget:134217728\r\n",
            "shoal_memory_budget_human:128.00M\r\n",
            "shoal_memtable_memory:12582912\r\n",
            "shoal_block_cache_memory:6291456\r\n",
            "shoal_table_meta_memory:2097152\r\n",
        ] {
            assert!(out.contains(field), "{field:?} not in {out:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(2048), "2.00K");
        assert_eq!(human(3 << 20), "3.00M");
    }
}
