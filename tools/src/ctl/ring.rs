//! `shoal-ctl ring`: the members of a cluster with the partitions each owns and replicates,
//! the partition map (hash range, preference list, the shard each replica lives on), and
//! where given keys live.
//!
//! Partition `p` of `Q` holds the key hashes `h` with `h * Q / 2^64` rounded down equal to
//! `p` ([`partition_of_hash`]); [`hash_range`] inverts that.

use std::fmt::Write as _;

use serde::Serialize;
use shoal_cluster::NodeId;
use shoal_cluster::partition::{PartitionId, key_hash, partition_of_hash};
use shoal_cluster::ring::{Ring, shard_of};
use shoal_node::config::{ClusterConfig, Config};

use super::CtlError;

/// One member and its share of the ring.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberView {
    pub name: String,
    /// The ring id, `node_id_of(name)`, in hex.
    pub id: String,
    pub peer: String,
    pub weight: u32,
    pub rack: String,
    pub dc: String,
    pub shards: usize,
    /// Partitions this member is first in the preference list of.
    pub owned: u32,
    /// Partitions this member holds a replica of (owned ones included).
    pub replicated: u32,
    /// `owned` over the partition count.
    pub owned_share: f64,
    /// `replicated` over the partition count.
    pub replicated_share: f64,
}

/// One replica of a partition: the member and the shard of that member storing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaView {
    pub node: String,
    pub shard: u32,
}

/// One partition: its slice of the hash space and its preference list, owner first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionView {
    pub partition: PartitionId,
    pub first_hash: u64,
    pub last_hash: u64,
    pub replicas: Vec<ReplicaView>,
}

/// Where one key lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyView {
    /// The key with non-printable bytes escaped (`\xNN`), as `--key` takes it.
    pub key: String,
    pub hash: u64,
    #[serde(flatten)]
    pub placement: PartitionView,
}

/// What `shoal-ctl ring` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RingView {
    /// The member whose configuration was read.
    pub node: String,
    pub partitions: u32,
    pub replicas: u32,
    /// Sorted by name.
    pub members: Vec<MemberView>,
    /// Every partition, when no keys were asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub map: Vec<PartitionView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyView>,
}

/// The hashes partition `p` of `partitions` holds, first and last inclusive.
pub fn hash_range(p: PartitionId, partitions: u32) -> (u64, u64) {
    // The first hash of p is the smallest h with h * Q >= p * 2^64: ceil(p * 2^64 / Q).
    let first = |p: u128| (p << 64).div_ceil(u128::from(partitions));
    let start = first(u128::from(p));
    let end = first(u128::from(p) + 1) - 1;
    (start as u64, end as u64)
}

/// Computes the view of the ring `config` describes. With `keys`, the map is left out and
/// the keys' placements are given instead.
pub fn view(config: &Config, keys: &[Vec<u8>]) -> Result<RingView, CtlError> {
    let cluster = config.cluster.as_ref().ok_or(CtlError::NotACluster)?;
    let ring = cluster.ring(config.partitions)?;
    let q = ring.partitions();
    let placement = |p: PartitionId| placement(cluster, &ring, p);
    let mut members: Vec<MemberView> = cluster
        .members
        .iter()
        .map(|m| {
            let owned = ring.owned_by(m.id).len() as u32;
            let replicated = ring.replicated_on(m.id).len() as u32;
            MemberView {
                name: m.name.clone(),
                id: format!("{:08x}", m.id),
                peer: m.peer.to_string(),
                weight: m.weight,
                rack: m.rack.clone(),
                dc: m.dc.clone(),
                shards: m.shards,
                owned,
                replicated,
                owned_share: f64::from(owned) / f64::from(q),
                replicated_share: f64::from(replicated) / f64::from(q),
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let (map, keys) = if keys.is_empty() {
        ((0..q).map(placement).collect(), Vec::new())
    } else {
        let keys = keys
            .iter()
            .map(|k| {
                let hash = key_hash(k);
                KeyView {
                    key: k.escape_ascii().to_string(),
                    hash,
                    placement: placement(partition_of_hash(hash, q)),
                }
            })
            .collect();
        (Vec::new(), keys)
    };
    Ok(RingView {
        node: name_of(cluster, cluster.me),
        partitions: q,
        replicas: ring.replicas(),
        members,
        map,
        keys,
    })
}

fn name_of(cluster: &ClusterConfig, id: NodeId) -> String {
    cluster
        .member(id)
        .map_or_else(|| format!("{id:08x}"), |m| m.name.clone())
}

fn placement(cluster: &ClusterConfig, ring: &Ring, p: PartitionId) -> PartitionView {
    let (first_hash, last_hash) = hash_range(p, ring.partitions());
    let replicas = ring
        .preference_list(p)
        .iter()
        .map(|&id| {
            // Members come from the same config as the ring, so each has an entry; shards
            // are validated non-zero there.
            let shards = cluster.member(id).map_or(1, |m| m.shards) as u32;
            ReplicaView {
                node: name_of(cluster, id),
                shard: shard_of(p, shards),
            }
        })
        .collect();
    PartitionView {
        partition: p,
        first_hash,
        last_hash,
        replicas,
    }
}

/// Column-aligned rows: every column but the last padded to its widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn replicas_text(p: &PartitionView) -> String {
    p.replicas
        .iter()
        .map(|r| format!("{}/{}", r.node, r.shard))
        .collect::<Vec<_>>()
        .join(" ")
}

fn share(count: u32, fraction: f64) -> String {
    format!("{count} ({:.1}%)", fraction * 100.0)
}

impl RingView {
    /// The view as text for people: members, then the map or the keys.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} members, {} partitions, {} replicas each (configuration of {})\n\n",
            self.members.len(),
            self.partitions,
            self.replicas,
            self.node
        );
        let mut rows = vec![
            [
                "member",
                "id",
                "weight",
                "rack",
                "dc",
                "shards",
                "peer",
                "owned",
                "replicated",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        for m in &self.members {
            rows.push(vec![
                m.name.clone(),
                m.id.clone(),
                m.weight.to_string(),
                or_dash(&m.rack),
                or_dash(&m.dc),
                m.shards.to_string(),
                m.peer.clone(),
                share(m.owned, m.owned_share),
                share(m.replicated, m.replicated_share),
            ]);
        }
        out.push_str(&table(&rows));
        let hex = |h: u64| format!("{h:#018x}");
        if !self.map.is_empty() {
            let mut rows = vec![
                [
                    "partition",
                    "first hash",
                    "last hash",
                    "replicas (node/shard), owner first",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for p in &self.map {
                rows.push(vec![
                    p.partition.to_string(),
                    hex(p.first_hash),
                    hex(p.last_hash),
                    replicas_text(p),
                ]);
            }
            out.push('\n');
            out.push_str(&table(&rows));
        }
        if !self.keys.is_empty() {
            let mut rows = vec![
                [
                    "key",
                    "hash",
                    "partition",
                    "replicas (node/shard), owner first",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for k in &self.keys {
                rows.push(vec![
                    format!("\"{}\"", k.key),
                    hex(k.hash),
                    k.placement.partition.to_string(),
                    replicas_text(&k.placement),
                ]);
            }
            out.push('\n');
            out.push_str(&table(&rows));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ranges_tile_the_hash_space() {
        for q in [1u32, 3, 7, 256, 1000] {
            let mut next = 0u64;
            for p in 0..q {
                let (first, last) = hash_range(p, q);
                assert_eq!(first, next, "q {q} p {p} starts where p - 1 ended");
                assert!(first <= last);
                assert_eq!(partition_of_hash(first, q), p);
                assert_eq!(partition_of_hash(last, q), p);
                if p > 0 {
                    assert_eq!(partition_of_hash(first - 1, q), p - 1);
                }
                next = last.wrapping_add(1);
            }
            assert_eq!(hash_range(q - 1, q).1, u64::MAX);
        }
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()],
            vec!["aaa".to_owned(), "b".to_owned(), "cc".to_owned()],
        ];
        assert_eq!(table(&rows), "a    bb  c\naaa  b   cc\n");
    }
}
