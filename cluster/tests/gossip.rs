//! Gossip and failure detection at 10, 100 and 1,000 members: the nodes' own gossip state
//! machines (`shoal_cluster::endpoint::gossip::Liveness`, shard 0's), exchanging their
//! messages in virtual time with a seeded delay of 0-5 ms and no loss.
//!
//! One member dies (stops gossiping); the test measures the time until every other member
//! judges it down. It comes back with a new generation; the test measures the time until
//! every member judges it up. It prints the table (`cargo test -p shoal-cluster --test gossip
//! -- --nocapture`) and checks the bounds the failure detector documents: conviction within
//! the detector's bound plus a few rounds, recovery within a number of rounds that grows
//! like log N.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_cluster::NodeId;
use shoal_cluster::endpoint::GossipConfig;
use shoal_cluster::endpoint::gossip::{Liveness, Outgoing};
use shoal_cluster::membership::{ClusterView, Health};
use shoal_cluster::message::Body;

const INTERVAL: Duration = Duration::from_secs(1);
/// The victim's death: late enough for every detector to have a history.
const DEATH: Duration = Duration::from_secs(30);
/// Longest a run may take in virtual time.
const HORIZON: Duration = Duration::from_secs(120);

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

struct Run {
    /// When every other member judged the victim down, and up again, after the event.
    convicted_after: Duration,
    recovered_after: Duration,
}

fn run(members: u32, seed: u64) -> Run {
    let ids: Vec<NodeId> = (1..=members).collect();
    let view = ClusterView::new("scale", ids.iter().map(|id| id.to_string()).collect());
    let config = GossipConfig::every(INTERVAL);
    let mut rng = Rng(seed);
    // Members start within the first interval of each other.
    let mut next_tick: BTreeMap<NodeId, Duration> = ids
        .iter()
        .map(|&id| (id, Duration::from_millis(rng.next() % 1000)))
        .collect();
    let mut nodes: BTreeMap<NodeId, Liveness> = ids
        .iter()
        .map(|&id| {
            let start = next_tick[&id];
            let l = Liveness::new(
                start,
                id,
                true,
                1,
                &ids,
                view.clone(),
                config,
                seed ^ u64::from(id),
            );
            (id, l)
        })
        .collect();
    let victim: NodeId = 1;
    let mut queue: BTreeMap<(Duration, u64), (NodeId, NodeId, Body)> = BTreeMap::new();
    let mut seq = 0u64;
    let mut alive = true;
    let mut returned_at = None;
    let (mut convicted, mut recovered) = (None, None);
    let mut now = Duration::ZERO;
    while now < HORIZON {
        let next_due = queue.keys().next().map(|&(t, _)| t);
        let (&id, &tick) = next_tick.iter().min_by_key(|(_, t)| **t).unwrap();
        now = next_due.map_or(tick, |d| d.min(tick));
        let mut outgoing = Vec::new();
        if next_due == Some(now) {
            let (_, (from, to, body)) = queue.pop_first().unwrap();
            if to == victim && !alive {
                continue;
            }
            if let Body::Gossip { reply, entries, .. } = body {
                let (out, _) = nodes
                    .get_mut(&to)
                    .unwrap()
                    .on_gossip(now, from, reply, &entries);
                outgoing.extend(out.into_iter().map(|o| (to, o)));
            }
        } else {
            next_tick.insert(id, tick + INTERVAL);
            if id == victim && !alive {
                continue;
            }
            let (out, _) = nodes.get_mut(&id).unwrap().tick(now);
            outgoing.extend(out.into_iter().map(|o| (id, o)));
        }
        for (from, o) in outgoing {
            if let Outgoing::Peer(to, body) = o {
                seq += 1;
                let delay = Duration::from_millis(rng.next() % 6);
                queue.insert((now + delay, seq), (from, to, body));
            }
        }
        if alive && returned_at.is_none() && now >= DEATH {
            alive = false;
        }
        let all_others = |nodes: &BTreeMap<NodeId, Liveness>, health: Health| {
            nodes
                .iter()
                .filter(|(id, _)| **id != victim)
                .all(|(_, l)| l.health(victim) == health)
        };
        if !alive && convicted.is_none() && all_others(&nodes, Health::Down) {
            convicted = Some(now - DEATH);
            // The victim restarts: a new incarnation with a new generation.
            alive = true;
            returned_at = Some(now);
            let l = Liveness::new(now, victim, true, 2, &ids, view.clone(), config, seed);
            nodes.insert(victim, l);
            next_tick.insert(victim, now);
        }
        if let Some(back) = returned_at {
            if recovered.is_none() && all_others(&nodes, Health::Up) {
                recovered = Some(now - back);
                break;
            }
        }
    }
    Run {
        convicted_after: convicted.expect("every member convicts the dead member"),
        recovered_after: recovered.expect("every member sees the member come back"),
    }
}

#[test]
fn deaths_and_returns_spread_to_every_member() {
    let bound = shoal_cluster::detector::Detector::new(GossipConfig::every(INTERVAL).detector);
    println!(
        "members  seed  convicted by all after  up again at all after  (rounds of {INTERVAL:?})"
    );
    let mut recovery = Vec::new();
    for members in [10u32, 100, 1000] {
        let seeds: &[u64] = if members == 1000 { &[1] } else { &[1, 2, 3] };
        let mut worst = Duration::ZERO;
        for &seed in seeds {
            let r = run(members, seed);
            println!(
                "{members:>7}  {seed:>4}  {:>21.1?}  {:>21.1?}  ({:.1} / {:.1} rounds)",
                r.convicted_after,
                r.recovered_after,
                r.convicted_after.as_secs_f64() / INTERVAL.as_secs_f64(),
                r.recovered_after.as_secs_f64() / INTERVAL.as_secs_f64(),
            );
            // Conviction needs the detector's silence, plus the lag of the last heartbeat
            // heard through others (a few rounds at most).
            let convict_max = bound.conviction_after() + 6 * INTERVAL;
            assert!(
                r.convicted_after <= convict_max,
                "{members} members: {:?}",
                r.convicted_after
            );
            worst = worst.max(r.recovered_after);
        }
        recovery.push((members, worst));
    }
    // Recovery spreads epidemically: rounds grow like log N, not like N.
    for (members, worst) in &recovery {
        let rounds = worst.as_secs_f64() / INTERVAL.as_secs_f64();
        let log_bound = 2.0 * f64::from(*members).ln() + 2.0;
        assert!(
            rounds <= log_bound,
            "{members} members: {rounds:.1} rounds > {log_bound:.1}"
        );
    }
}
