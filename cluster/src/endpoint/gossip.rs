//! Who is up, as one shard sees it. Public so that gossip can be run on its own, at scale
//! (`cluster/tests/gossip.rs`); an endpoint drives it the same way.
//!
//! Shard 0 of each node gossips: every interval it bumps its heartbeat, sends its member
//! table to `fanout` random members' shard 0, merges what they answer ([`Membership`]), and
//! judges every member with the phi accrual detector. It reports its judgment to the other
//! shards of its node ([`Body::Members`]), which follow it. A node that refused this node's
//! view is down for every shard until it sends a message in the same view.
//!
//! Apart from health, each shard remembers which nodes the transport could not reach lately:
//! they are asked last to mint a write, so a node that has just died costs no request a wait
//! before the detector convicts it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::NodeId;
use crate::detector::DetectorConfig;
use crate::membership::{ClusterView, Entry, Health, HealthChange, Membership};
use crate::message::{Body, MemberReport};

/// Tuning of gossip and failure detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GossipConfig {
    /// How often shard 0 gossips and beats.
    pub interval: Duration,
    /// Members gossiped to per interval.
    pub fanout: usize,
    pub detector: DetectorConfig,
}

impl GossipConfig {
    /// Cassandra's rhythm: one round a second, to three members.
    pub fn every(interval: Duration) -> GossipConfig {
        GossipConfig {
            interval,
            fanout: 3,
            detector: DetectorConfig::for_interval(interval),
        }
    }
}

/// What gossip asks the endpoint to send.
#[derive(Debug)]
pub enum Outgoing {
    /// To shard 0 of a member.
    Peer(NodeId, Body),
    /// To every other shard of this node.
    Local(Body),
}

#[derive(Debug)]
pub struct Liveness {
    me: NodeId,
    config: GossipConfig,
    view: ClusterView,
    /// Shard 0 only: the table it gossips and judges.
    membership: Option<Membership>,
    /// Other shards: shard 0's latest reports, and when they arrived.
    reports: BTreeMap<NodeId, MemberReport>,
    reported_at: Duration,
    /// Nodes whose view differs from ours.
    refusing: BTreeSet<NodeId>,
    /// Nodes the transport could not deliver to since they were last heard.
    unreachable: BTreeSet<NodeId>,
    next_round: Duration,
    rng: u64,
}

impl Liveness {
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per part of a node's identity"
    )]
    pub fn new(
        now: Duration,
        me: NodeId,
        gossiper: bool,
        generation: u64,
        members: &[NodeId],
        view: ClusterView,
        config: GossipConfig,
        seed: u64,
    ) -> Liveness {
        let membership = gossiper
            .then(|| Membership::new(me, generation, members, config.detector, Duration::ZERO));
        Liveness {
            me,
            config,
            view,
            membership,
            reports: BTreeMap::new(),
            reported_at: now,
            refusing: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            next_round: now,
            rng: seed,
        }
    }

    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// This shard's judgment of `node` for requests.
    pub fn health(&self, node: NodeId) -> Health {
        if node == self.me {
            return Health::Up;
        }
        if self.refusing.contains(&node) {
            return Health::Down;
        }
        match &self.membership {
            Some(m) => m.health(node),
            // Before shard 0's first report, every member counts as up.
            None => self.reports.get(&node).map_or(Health::Up, |r| r.health),
        }
    }

    /// Whether `node` should be asked first: not down, and reachable lately.
    pub fn is_preferred(&self, node: NodeId) -> bool {
        self.health(node) != Health::Down && !self.unreachable.contains(&node)
    }

    /// A message in our view arrived from `node`.
    pub fn heard_from(&mut self, node: NodeId) {
        if !self.unreachable.is_empty() {
            self.unreachable.remove(&node);
        }
        if !self.refusing.is_empty() {
            self.refusing.remove(&node);
        }
    }

    pub fn unreachable(&mut self, node: NodeId) {
        self.unreachable.insert(node);
    }

    /// `node` refused our view.
    pub fn refused_by(&mut self, node: NodeId) {
        self.refusing.insert(node);
    }

    /// Records this node's load for gossip (shard 0 only; others ignore it).
    pub fn set_load(&mut self, bytes: u64) {
        if let Some(m) = &mut self.membership {
            m.set_load(bytes);
        }
    }

    /// When the next gossip round is due (shard 0 only).
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.membership.as_ref().map(|_| self.next_round)
    }

    /// Runs a gossip round if one is due.
    pub fn tick(&mut self, now: Duration) -> (Vec<Outgoing>, Vec<HealthChange>) {
        let mut out = Vec::new();
        let Some(membership) = &mut self.membership else {
            return (out, Vec::new());
        };
        if now < self.next_round {
            return (out, Vec::new());
        }
        self.next_round = now + self.config.interval;
        membership.beat();
        let changes = membership.assess(now);
        let others: Vec<NodeId> = membership
            .members()
            .map(|m| m.entry.id)
            .filter(|&id| id != self.me)
            .collect();
        let entries = membership.digest();
        for node in choose(&mut self.rng, &others, self.config.fanout) {
            let body = Body::Gossip {
                view: self.view.clone(),
                reply: false,
                entries: entries.clone(),
            };
            out.push(Outgoing::Peer(node, body));
        }
        out.push(Outgoing::Local(Body::Members(self.reports_at(now))));
        (out, changes)
    }

    /// Gossip from `from`; returns what to send back and the health changes it caused.
    pub fn on_gossip(
        &mut self,
        now: Duration,
        from: NodeId,
        reply: bool,
        entries: &[Entry],
    ) -> (Vec<Outgoing>, Vec<HealthChange>) {
        let mut out = Vec::new();
        let Some(membership) = &mut self.membership else {
            return (out, Vec::new());
        };
        let changes = membership.merge(now, entries);
        if !reply {
            let body = Body::Gossip {
                view: self.view.clone(),
                reply: true,
                entries: membership.digest(),
            };
            out.push(Outgoing::Peer(from, body));
        }
        if !changes.is_empty() {
            out.push(Outgoing::Local(Body::Members(self.reports_at(now))));
        }
        (out, changes)
    }

    /// Shard 0's reports, on another shard; returns the changes of health they bring.
    pub fn on_reports(&mut self, now: Duration, reports: Vec<MemberReport>) -> Vec<HealthChange> {
        if self.membership.is_some() {
            return Vec::new();
        }
        let changes = reports
            .iter()
            .filter(|r| self.reports.get(&r.entry.id).map(|old| old.health) != Some(r.health))
            .map(|r| HealthChange {
                id: r.entry.id,
                health: r.health,
                generation: r.entry.generation,
            })
            .collect();
        self.reports = reports.into_iter().map(|r| (r.entry.id, r)).collect();
        self.reported_at = now;
        changes
    }

    /// Every member as this shard knows it at `now`.
    pub fn reports_at(&self, now: Duration) -> Vec<MemberReport> {
        match &self.membership {
            Some(m) => m
                .members()
                .map(|member| MemberReport {
                    entry: member.entry,
                    health: self.health(member.entry.id),
                    silent_ms: member
                        .last_heard()
                        .map_or(0, |t| now.saturating_sub(t).as_millis() as u64),
                })
                .collect(),
            None => {
                let since = now.saturating_sub(self.reported_at).as_millis() as u64;
                self.reports
                    .values()
                    .map(|r| MemberReport {
                        health: self.health(r.entry.id),
                        silent_ms: r.silent_ms + since,
                        ..*r
                    })
                    .collect()
            }
        }
    }
}

/// Up to `k` distinct members of `from`, drawn with a splitmix64 stream.
fn choose(rng: &mut u64, from: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut pool = from.to_vec();
    let mut chosen = Vec::with_capacity(k.min(pool.len()));
    while chosen.len() < k && !pool.is_empty() {
        *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chosen.push(pool.swap_remove((z % pool.len() as u64) as usize));
    }
    chosen
}
