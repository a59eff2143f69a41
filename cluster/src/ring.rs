//! The ring: which nodes hold each partition, in preference order.
//!
//! Placement is a pure function of the member list, Q and N, so every node that has the same
//! member list computes the same ring, with no coordination and no stored history.
//!
//! 1. Every (partition, node) pair gets a score: the highest of `weight` hashes
//!    `xxh64(partition, node, i)` for `i < weight`. This is rendezvous hashing with integer
//!    weights: a node's chance of scoring highest is proportional to its weight, and a pair's
//!    score never changes when other members come or go.
//! 2. Owners: each node gets a quota of partitions proportional to its weight (largest
//!    remainder). All pairs are visited from the highest score down and a partition goes to
//!    the first node that still has room. Owned counts are therefore exactly proportional
//!    (within one), and a join mostly moves the pairs the newcomer scores highest on.
//! 3. Preference list: the owner, then the other nodes by descending score, except that a
//!    node in a datacenter (then a rack) not yet in the list is preferred to a higher-scored
//!    node that adds none: replicas spread over datacenters and racks when possible.
//!
//! Within a node, partition `p` lives on shard `p % shards` ([`shard_of`]), which is stable
//! across membership changes.

use std::collections::BTreeSet;

use xxhash_rust::xxh64::xxh64;

use crate::NodeId;
use crate::error::{Error, Result};
use crate::partition::{PartitionId, partition_of};

/// Most members a ring may have; also bounds version-vector actors.
pub const MEMBERS_MAX: usize = 1024;
/// Largest weight: weights are relative capacities, and each unit costs a hash per partition.
pub const WEIGHT_MAX: u32 = 64;
/// Most partitions a ring may have: one Merkle tree and one preference list each.
pub const PARTITIONS_MAX: u32 = 1 << 16;

/// Seed of placement scores. Part of the cluster contract: changing it moves every partition.
const PLACEMENT_SEED: u64 = 0x5348_4f41_4c52_4e47;

/// One node as the ring sees it. An empty `rack` or `dc` means "not configured": all such
/// nodes count as one rack / one datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub id: NodeId,
    /// Relative capacity, `1..=WEIGHT_MAX`: a weight-2 node owns twice a weight-1 node's share.
    pub weight: u32,
    pub rack: String,
    pub dc: String,
}

impl Member {
    /// A weight-1 member with no rack or datacenter.
    pub fn new(id: NodeId) -> Member {
        Member {
            id,
            weight: 1,
            rack: String::new(),
            dc: String::new(),
        }
    }
}

/// Partition placement for one member list. Immutable: membership changes build a new ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    partitions: u32,
    replicas: u32,
    /// Sorted by id.
    members: Vec<Member>,
    /// `replicas` node ids per partition, owner first.
    lists: Vec<NodeId>,
}

impl Ring {
    /// Places `partitions` partitions with `replicas` distinct nodes each over `members`.
    pub fn new(members: &[Member], partitions: u32, replicas: u32) -> Result<Ring> {
        let mut members = members.to_vec();
        members.sort_by_key(|m| m.id);
        validate(&members, partitions, replicas)?;
        let scores = scores(&members, partitions);
        let owners = owners(&members, partitions, &scores);
        let mut lists = Vec::with_capacity(partitions as usize * replicas as usize);
        for p in 0..partitions as usize {
            let row = &scores[p * members.len()..(p + 1) * members.len()];
            lists.extend(preference(&members, row, owners[p], replicas as usize));
        }
        Ok(Ring {
            partitions,
            replicas,
            members,
            lists,
        })
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// N: replicas per partition.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The N distinct nodes holding `partition`, owner first.
    pub fn preference_list(&self, partition: PartitionId) -> &[NodeId] {
        assert!(partition < self.partitions, "partition out of range");
        let n = self.replicas as usize;
        let at = partition as usize * n;
        &self.lists[at..at + n]
    }

    /// The preference list of the partition holding `key`.
    pub fn preference_list_for_key(&self, key: &[u8]) -> &[NodeId] {
        self.preference_list(partition_of(key, self.partitions))
    }

    /// The members outside `partition`'s preference list, best first: the nodes that stand
    /// in for a replica that is down (sloppy quorum), by the same scores that placed it.
    pub fn fallbacks(&self, partition: PartitionId) -> Vec<NodeId> {
        let list = self.preference_list(partition);
        let mut rest: Vec<(u64, NodeId)> = self
            .members
            .iter()
            .filter(|m| !list.contains(&m.id))
            .map(|m| (score(m, partition), m.id))
            .collect();
        rest.sort_unstable_by(|a, b| b.cmp(a));
        rest.into_iter().map(|(_, id)| id).collect()
    }

    pub fn owner(&self, partition: PartitionId) -> NodeId {
        self.preference_list(partition)[0]
    }

    /// Partitions whose preference list includes `node` (as owner or any replica).
    pub fn replicated_on(&self, node: NodeId) -> Vec<PartitionId> {
        (0..self.partitions)
            .filter(|&p| self.preference_list(p).contains(&node))
            .collect()
    }

    /// Partitions `node` owns (first in the preference list).
    pub fn owned_by(&self, node: NodeId) -> Vec<PartitionId> {
        (0..self.partitions)
            .filter(|&p| self.owner(p) == node)
            .collect()
    }
}

/// The shard of a node that stores `partition`.
pub fn shard_of(partition: PartitionId, shards: u32) -> u32 {
    assert!(shards > 0, "a node has at least one shard");
    partition % shards
}

fn validate(members: &[Member], partitions: u32, replicas: u32) -> Result<()> {
    let invalid = |what: String| Err(Error::InvalidRing(what));
    if members.is_empty() || members.len() > MEMBERS_MAX {
        return invalid(format!("{} members (1..={MEMBERS_MAX})", members.len()));
    }
    if let Some(w) = members.windows(2).find(|w| w[0].id == w[1].id) {
        return invalid(format!("node id {} appears twice", w[0].id));
    }
    if let Some(m) = members
        .iter()
        .find(|m| m.weight == 0 || m.weight > WEIGHT_MAX)
    {
        return invalid(format!(
            "node {} has weight {} (1..={WEIGHT_MAX})",
            m.id, m.weight
        ));
    }
    if partitions == 0 || partitions > PARTITIONS_MAX {
        return invalid(format!("{partitions} partitions (1..={PARTITIONS_MAX})"));
    }
    if replicas == 0 || replicas as usize > members.len() {
        return invalid(format!(
            "{replicas} replicas with {} members",
            members.len()
        ));
    }
    Ok(())
}

/// `scores[p * members + m]`: member `m`'s weighted rendezvous score for partition `p`.
fn scores(members: &[Member], partitions: u32) -> Vec<u64> {
    let mut out = Vec::with_capacity(partitions as usize * members.len());
    for p in 0..partitions {
        out.extend(members.iter().map(|m| score(m, p)));
    }
    out
}

/// Member `m`'s weighted rendezvous score for partition `p`: the best of its `weight` hashes.
fn score(m: &Member, p: PartitionId) -> u64 {
    let mut input = [0u8; 12];
    input[..4].copy_from_slice(&p.to_le_bytes());
    input[4..8].copy_from_slice(&m.id.to_le_bytes());
    (0..m.weight)
        .map(|i| {
            input[8..].copy_from_slice(&i.to_le_bytes());
            xxh64(&input, PLACEMENT_SEED)
        })
        .max()
        .unwrap_or(0)
}

/// Partitions per member, proportional to weight, summing to `partitions` (largest remainder,
/// ties to the lower id).
fn quotas(members: &[Member], partitions: u32) -> Vec<u32> {
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    let exact = |m: &Member| u64::from(partitions) * u64::from(m.weight);
    let mut quota: Vec<u32> = members.iter().map(|m| (exact(m) / total) as u32).collect();
    let given: u32 = quota.iter().sum();
    let mut by_remainder: Vec<usize> = (0..members.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(exact(&members[i]) % total));
    for &i in by_remainder.iter().take((partitions - given) as usize) {
        quota[i] += 1;
    }
    debug_assert_eq!(quota.iter().sum::<u32>(), partitions);
    quota
}

/// Owner member index per partition: highest scores first, each member up to its quota.
fn owners(members: &[Member], partitions: u32, scores: &[u64]) -> Vec<NodeId> {
    let n = members.len();
    let mut room = quotas(members, partitions);
    let mut pairs: Vec<(u64, u32, usize)> = (0..partitions)
        .flat_map(|p| (0..n).map(move |m| (p, m)))
        .map(|(p, m)| (scores[p as usize * n + m], p, m))
        .collect();
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    let mut owner: Vec<Option<NodeId>> = vec![None; partitions as usize];
    for (_, p, m) in pairs {
        if owner[p as usize].is_none() && room[m] > 0 {
            room[m] -= 1;
            owner[p as usize] = Some(members[m].id);
        }
    }
    // Quotas sum to the partition count and any member can own any partition, so a partition
    // left without an owner would need every member full: impossible.
    owner
        .into_iter()
        .map(|o| o.unwrap_or_else(|| unreachable!("quotas cover every partition")))
        .collect()
}

/// Owner first, then by descending score, preferring new datacenters, then new racks.
fn preference(members: &[Member], row: &[u64], owner: NodeId, n: usize) -> Vec<NodeId> {
    let mut candidates: Vec<usize> = (0..members.len()).collect();
    candidates.sort_by_key(|&m| (std::cmp::Reverse(row[m]), members[m].id));
    let first = candidates
        .iter()
        .position(|&m| members[m].id == owner)
        .unwrap_or_else(|| unreachable!("the owner is a member"));
    let mut chosen = vec![candidates.remove(first)];
    let mut dcs: BTreeSet<&str> = BTreeSet::new();
    let mut racks: BTreeSet<(&str, &str)> = BTreeSet::new();
    fn note<'m>(
        m: &'m Member,
        dcs: &mut BTreeSet<&'m str>,
        racks: &mut BTreeSet<(&'m str, &'m str)>,
    ) {
        dcs.insert(m.dc.as_str());
        racks.insert((m.dc.as_str(), m.rack.as_str()));
    }
    note(&members[chosen[0]], &mut dcs, &mut racks);
    while chosen.len() < n {
        let spread = |&m: &usize| {
            let member = &members[m];
            let new_dc = !dcs.contains(member.dc.as_str());
            let new_rack = !racks.contains(&(member.dc.as_str(), member.rack.as_str()));
            (new_dc, new_rack)
        };
        // `max_by_key` keeps the last maximum; scanning reversed keeps the highest score.
        let best = (0..candidates.len())
            .rev()
            .max_by_key(|&i| spread(&candidates[i]))
            .unwrap_or_else(|| unreachable!("validated: replicas <= members"));
        let m = candidates.remove(best);
        note(&members[m], &mut dcs, &mut racks);
        chosen.push(m);
    }
    chosen.into_iter().map(|m| members[m].id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(ids: impl IntoIterator<Item = NodeId>) -> Vec<Member> {
        ids.into_iter().map(Member::new).collect()
    }

    /// max / mean of per-node counts.
    fn imbalance(counts: &[usize]) -> f64 {
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        *counts.iter().max().unwrap() as f64 / mean
    }

    fn owned_counts(ring: &Ring) -> Vec<usize> {
        ring.members()
            .iter()
            .map(|m| ring.owned_by(m.id).len())
            .collect()
    }

    fn replica_counts(ring: &Ring) -> Vec<usize> {
        ring.members()
            .iter()
            .map(|m| ring.replicated_on(m.id).len())
            .collect()
    }

    /// Replica slots (partition, node) present in `after` but not in `before`.
    fn replicas_moved(before: &Ring, after: &Ring) -> usize {
        (0..before.partitions())
            .map(|p| {
                let old = before.preference_list(p);
                after
                    .preference_list(p)
                    .iter()
                    .filter(|n| !old.contains(n))
                    .count()
            })
            .sum()
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(Ring::new(&[], 8, 1).is_err());
        assert!(Ring::new(&members([1, 1]), 8, 1).is_err());
        assert!(Ring::new(&members([1, 2]), 8, 3).is_err());
        assert!(Ring::new(&members([1, 2]), 0, 1).is_err());
        let mut heavy = members([1]);
        heavy[0].weight = WEIGHT_MAX + 1;
        assert!(Ring::new(&heavy, 8, 1).is_err());
    }

    #[test]
    fn fallbacks_are_the_other_members_in_score_order() {
        let ring = Ring::new(&members(1..=6), 64, 3).unwrap();
        for p in 0..64 {
            let list = ring.preference_list(p);
            let fallbacks = ring.fallbacks(p);
            assert_eq!(fallbacks.len(), 3);
            assert!(fallbacks.iter().all(|f| !list.contains(f)));
            let scores: Vec<u64> = fallbacks
                .iter()
                .map(|&id| score(&Member::new(id), p))
                .collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        }
    }

    #[test]
    fn single_node_owns_everything() {
        let ring = Ring::new(&members([9]), 16, 1).unwrap();
        assert!((0..16).all(|p| ring.preference_list(p) == [9]));
        assert_eq!(shard_of(13, 4), 1);
    }

    #[test]
    fn weights_are_proportional() {
        let mut ms = members(1..=8);
        ms[7].weight = 3;
        let ring = Ring::new(&ms, 1000, 3).unwrap();
        assert_eq!(
            owned_counts(&ring),
            vec![100, 100, 100, 100, 100, 100, 100, 300]
        );
        // Secondaries follow weights too, through the weighted scores (a node holds at most
        // one replica per partition, which caps very heavy nodes).
        let replicas = replica_counts(&ring);
        let light = replicas[..7].iter().sum::<usize>() / 7;
        assert!(replicas[7] > 2 * light, "{replicas:?}");
    }

    #[test]
    fn racks_and_datacenters_spread() {
        let mut ms = members(1..=6);
        for (i, m) in ms.iter_mut().enumerate() {
            m.dc = format!("dc{}", i % 2);
            m.rack = format!("r{}", i % 3);
        }
        let ring = Ring::new(&ms, 256, 3).unwrap();
        let by_id = |id: NodeId| ms.iter().find(|m| m.id == id).unwrap();
        for p in 0..256 {
            let list = ring.preference_list(p);
            let dcs: BTreeSet<_> = list.iter().map(|&id| &by_id(id).dc).collect();
            let racks: BTreeSet<_> = list
                .iter()
                .map(|&id| (&by_id(id).dc, &by_id(id).rack))
                .collect();
            assert_eq!(dcs.len(), 2, "partition {p}: {list:?}");
            assert_eq!(racks.len(), 3, "partition {p}: {list:?}");
        }
    }

    /// Prints the measured balance and movement (`cargo test -p shoal-cluster ring -- --nocapture`).
    #[test]
    fn measured_balance_and_movement() {
        for n in [3u32, 5, 10, 20] {
            let ring = Ring::new(&members(1..=n), 256, 3).unwrap();
            let grown = Ring::new(&members(1..=n + 1), 256, 3).unwrap();
            let owners_moved = (0..256)
                .filter(|&p| ring.owner(p) != grown.owner(p))
                .count();
            let gained = grown.replicated_on(n + 1).len();
            let to_newcomer = (0..256)
                .filter(|&p| ring.owner(p) != grown.owner(p) && grown.owner(p) == n + 1)
                .count();
            println!(
                "n={n} Q=256 N=3: owned max/mean {:.3}, replicas max/mean {:.3}; join moves {owners_moved} owners ({to_newcomer} to the newcomer, ideal {:.1}), {} replica slots, {gained} of them to the newcomer (ideal {:.1})",
                imbalance(&owned_counts(&ring)),
                imbalance(&replica_counts(&ring)),
                256.0 / f64::from(n + 1),
                replicas_moved(&ring, &grown),
                768.0 / f64::from(n + 1),
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn lists_are_distinct_and_deterministic(ids in proptest::collection::btree_set(0u32..1000, 1..12),
                                                q in 1u32..300, n in 1u32..4) {
            let ms = members(ids.iter().copied());
            prop_assume!(n as usize <= ms.len());
            let ring = Ring::new(&ms, q, n).unwrap();
            let mut reversed = ms.clone();
            reversed.reverse();
            prop_assert_eq!(&Ring::new(&reversed, q, n).unwrap(), &ring);
            for p in 0..q {
                let list = ring.preference_list(p);
                prop_assert_eq!(list.len(), n as usize);
                let distinct: BTreeSet<_> = list.iter().collect();
                prop_assert_eq!(distinct.len(), list.len());
            }
        }

        #[test]
        fn owners_are_balanced(count in 2u32..24, q in prop::sample::select(vec![64u32, 256, 1024])) {
            let ring = Ring::new(&members(1..=count), q, 2).unwrap();
            let owned = owned_counts(&ring);
            let (lo, hi) = (owned.iter().min().unwrap(), owned.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{owned:?}");
        }

        #[test]
        fn a_join_moves_only_what_the_newcomer_gains(count in 2u32..16, newcomer in 100u32..200) {
            let (q, n) = (256, 3.min(count));
            let before = Ring::new(&members(1..=count), q, n).unwrap();
            let mut ms = members(1..=count);
            ms.push(Member::new(newcomer));
            let after = Ring::new(&ms, q, n).unwrap();
            // Owners: the newcomer takes its exact share; a few ownerships shift between old
            // replicas of a partition (a role change, not data movement).
            let ideal = f64::from(q) / f64::from(count + 1);
            let to_newcomer = (0..q).filter(|&p| after.owner(p) == newcomer).count();
            prop_assert!((to_newcomer as f64 - ideal).abs() <= 1.0);
            // Data: about 1/(count+1) of the replica slots move, and most go to the newcomer;
            // the others follow ownership shifts of the quota pass. Measured over 14,000 joins
            // (2..16 members, 1,000 newcomers each): at most 1.5x the ideal moved (replica
            // shares vary more than owner shares), and at most 22% of it not to the newcomer.
            let moved = replicas_moved(&before, &after);
            let gained = after.replicated_on(newcomer).len();
            let ideal = f64::from(q * n) / f64::from(count + 1);
            prop_assert!(moved as f64 <= 1.6 * ideal + 2.0, "moved {moved}, ideal {ideal:.1}");
            prop_assert!(moved - gained <= 2 + moved / 4, "moved {moved}, newcomer gained {gained}");
            // Leaving is the reverse: the ring depends on the member list only.
            let back = Ring::new(&members(1..=count), q, n).unwrap();
            prop_assert_eq!(back, before);
        }
    }
}
