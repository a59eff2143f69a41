//! The member table gossip keeps: per member its generation, heartbeat and declared status,
//! and this node's own judgment of its health.
//!
//! A member owns its entry: it bumps its heartbeat every gossip interval and declares its
//! status; everyone else only copies what is newer. `(generation, heartbeat)` orders a
//! member's entries: a new generation (a restart) wins over any heartbeat of an older one, so
//! an old incarnation's state never comes back. Health (up, suspect, down) is never gossiped:
//! each node judges it from the heartbeats it sees arrive ([`crate::detector`]), directly or
//! through others, so a node that stops (killed, or hung by SIGSTOP) stops being heard by
//! everyone at once, and a node that cannot reach one member does not convict it for all.
//!
//! Members must agree on who the members are: a [`ClusterView`] (the cluster name and a hash
//! of the member list) travels with every message, and a message from a different view is
//! refused rather than half-served.

use std::collections::BTreeMap;
use std::time::Duration;

use rkyv::{Archive, Deserialize, Serialize};
use xxhash_rust::xxh64::xxh64;

use crate::NodeId;
use crate::detector::{Detector, DetectorConfig};

/// Seed of the view hash. Part of the cluster contract: changing it splits every cluster.
const VIEW_SEED: u64 = 0x5348_4f41_4c56_4945;

/// What a member declares about itself.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
pub enum Status {
    Joining,
    Up,
    Leaving,
    Left,
}

/// This node's judgment of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum Health {
    Up,
    /// Silent for longer than usual: phi past half the threshold.
    Suspect,
    /// Convicted: phi past the threshold. Requests skip it.
    Down,
}

/// One member's gossiped entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Entry {
    pub id: NodeId,
    /// Bumped at every start of the member.
    pub generation: u64,
    /// Bumped by the member every gossip interval.
    pub heartbeat: u64,
    pub status: Status,
    /// The member's data on disk, in bytes, as it last measured it.
    pub load: u64,
}

impl Entry {
    fn version(&self) -> (u64, u64) {
        (self.generation, self.heartbeat)
    }
}

/// Who a cluster's members are, as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct ClusterView {
    pub name: String,
    /// Each member's description (name, id, address, placement), sorted.
    pub members: Vec<String>,
}

impl ClusterView {
    pub fn new(name: impl Into<String>, mut members: Vec<String>) -> ClusterView {
        members.sort();
        ClusterView {
            name: name.into(),
            members,
        }
    }

    /// The hash every message carries; equal views, equal hashes.
    pub fn hash(&self) -> u64 {
        let mut bytes = Vec::with_capacity(64 * (self.members.len() + 1));
        for part in std::iter::once(&self.name).chain(&self.members) {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part.as_bytes());
        }
        xxh64(&bytes, VIEW_SEED)
    }
}

impl std::fmt::Display for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster {:?} of [{}]",
            self.name,
            self.members.join(", ")
        )
    }
}

/// A member's entry with this node's observations of it.
#[derive(Debug, Clone)]
pub struct Member {
    pub entry: Entry,
    pub health: Health,
    detector: Detector,
}

impl Member {
    /// When a newer heartbeat of the member last arrived (the start, if never).
    pub fn last_heard(&self) -> Option<Duration> {
        self.detector.last_heard()
    }

    pub fn phi(&self, now: Duration) -> f64 {
        self.detector.phi(now)
    }
}

/// A change of a member's health, for logs and for the liveness of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    pub id: NodeId,
    pub health: Health,
    pub generation: u64,
}

/// The table. See the module docs.
#[derive(Debug, Clone)]
pub struct Membership {
    me: NodeId,
    detector: DetectorConfig,
    members: BTreeMap<NodeId, Member>,
}

impl Membership {
    /// The table of a node starting at `now` as `me` in `generation`, knowing `members`
    /// (itself included) from its configuration. Every other member counts as heard at
    /// `now`, so one that never speaks is convicted after the detector's bound.
    pub fn new(
        me: NodeId,
        generation: u64,
        members: &[NodeId],
        detector: DetectorConfig,
        now: Duration,
    ) -> Membership {
        let members = members
            .iter()
            .map(|&id| {
                let mut d = Detector::new(detector);
                d.heartbeat(now);
                let entry = Entry {
                    id,
                    generation: if id == me { generation } else { 0 },
                    heartbeat: 0,
                    status: Status::Up,
                    load: 0,
                };
                let member = Member {
                    entry,
                    health: Health::Up,
                    detector: d,
                };
                (id, member)
            })
            .collect();
        Membership {
            me,
            detector,
            members,
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// This node's judgment of `id` (itself is always up; strangers are down).
    pub fn health(&self, id: NodeId) -> Health {
        if id == self.me {
            return Health::Up;
        }
        self.members.get(&id).map_or(Health::Down, |m| m.health)
    }

    /// Bumps this node's heartbeat (once per gossip interval).
    pub fn beat(&mut self) {
        if let Some(me) = self.members.get_mut(&self.me) {
            me.entry.heartbeat += 1;
        }
    }

    /// Records this node's own load, gossiped from the next round on.
    pub fn set_load(&mut self, bytes: u64) {
        if let Some(me) = self.members.get_mut(&self.me) {
            me.entry.load = bytes;
        }
    }

    /// Every entry, for a gossip digest.
    pub fn digest(&self) -> Vec<Entry> {
        self.members.values().map(|m| m.entry).collect()
    }

    /// Takes what is newer in `entries`; a newer heartbeat counts as one arriving now.
    /// Entries of nodes outside the member list are ignored: membership changes are not
    /// gossiped (yet), they come with the configuration.
    pub fn merge(&mut self, now: Duration, entries: &[Entry]) -> Vec<HealthChange> {
        let mut changes = Vec::new();
        for theirs in entries {
            if theirs.id == self.me {
                continue;
            }
            let Some(m) = self.members.get_mut(&theirs.id) else {
                continue;
            };
            if theirs.version() <= m.entry.version() {
                continue;
            }
            if theirs.generation > m.entry.generation {
                // A restart: the old incarnation's rhythm says nothing about the new one.
                m.detector = Detector::new(self.detector);
            }
            m.entry = *theirs;
            m.detector.heartbeat(now);
            if m.health != Health::Up {
                m.health = Health::Up;
                changes.push(HealthChange {
                    id: theirs.id,
                    health: Health::Up,
                    generation: theirs.generation,
                });
            }
        }
        changes
    }

    /// Judges every member at `now`.
    pub fn assess(&mut self, now: Duration) -> Vec<HealthChange> {
        let threshold = self.detector.threshold;
        let mut changes = Vec::new();
        for (&id, m) in &mut self.members {
            if id == self.me {
                continue;
            }
            let phi = m.detector.phi(now);
            let health = if phi >= threshold {
                Health::Down
            } else if phi >= threshold / 2.0 {
                Health::Suspect
            } else {
                Health::Up
            };
            if health != m.health {
                m.health = health;
                changes.push(HealthChange {
                    id,
                    health,
                    generation: m.entry.generation,
                });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn table(me: NodeId) -> Membership {
        Membership::new(
            me,
            1,
            &[1, 2, 3],
            DetectorConfig::for_interval(SECOND),
            Duration::ZERO,
        )
    }

    #[test]
    fn newer_entries_win_and_a_new_generation_beats_any_heartbeat() {
        let mut t = table(1);
        let e = |generation, heartbeat| Entry {
            id: 2,
            generation,
            heartbeat,
            status: Status::Up,
            load: 0,
        };
        t.merge(SECOND, &[e(5, 10)]);
        assert_eq!(t.get(2).unwrap().entry.heartbeat, 10);
        t.merge(SECOND, &[e(5, 9), e(4, 99)]);
        assert_eq!(
            t.get(2).unwrap().entry.version(),
            (5, 10),
            "older entries lose"
        );
        t.merge(SECOND, &[e(6, 0)]);
        assert_eq!(t.get(2).unwrap().entry.version(), (6, 0));
    }

    #[test]
    fn silence_convicts_and_a_heartbeat_revives() {
        let mut t = table(1);
        for s in 1..=10 {
            let now = SECOND * s;
            let entries = [
                Entry {
                    id: 2,
                    generation: 1,
                    heartbeat: u64::from(s),
                    status: Status::Up,
                    load: 0,
                },
                Entry {
                    id: 3,
                    generation: 1,
                    heartbeat: u64::from(s),
                    status: Status::Up,
                    load: 0,
                },
            ];
            t.merge(now, &entries);
            assert!(t.assess(now).is_empty());
        }
        // Node 3 goes silent at 10 s.
        let mut convicted = None;
        for ms in (10_100..20_000).step_by(100) {
            let now = Duration::from_millis(ms);
            let beat = Entry {
                id: 2,
                generation: 1,
                heartbeat: ms,
                status: Status::Up,
                load: 0,
            };
            t.merge(now, &[beat]);
            for c in t.assess(now) {
                assert_eq!(c.id, 3, "node 2 keeps beating");
                if c.health == Health::Down {
                    convicted = Some(now);
                }
            }
        }
        let convicted = convicted.expect("node 3 is convicted");
        assert!(convicted < Duration::from_secs(16), "{convicted:?}");
        assert_eq!(t.health(3), Health::Down);
        let back = Entry {
            id: 3,
            generation: 2,
            heartbeat: 0,
            status: Status::Up,
            load: 0,
        };
        let changes = t.merge(Duration::from_secs(20), &[back]);
        assert_eq!(changes.len(), 1);
        assert_eq!(t.health(3), Health::Up);
    }

    #[test]
    fn views_hash_by_content_not_order() {
        let a = ClusterView::new("c", vec!["n1".into(), "n2".into()]);
        let b = ClusterView::new("c", vec!["n2".into(), "n1".into()]);
        let c = ClusterView::new("c", vec!["n1".into(), "n2".into(), "n3".into()]);
        let d = ClusterView::new("d", vec!["n1".into(), "n2".into()]);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        assert_ne!(a.hash(), d.hash());
    }
}
