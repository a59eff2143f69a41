//! Deterministic simulation of a Shoal cluster: seeded network (delay, reordering, loss,
//! partitions), node crashes and restarts, virtual time, clients driving coordinators.
//!
//! Checks, per seed:
//! - W + R > N: a successful read sees every write acknowledged before it was issued.
//! - After healing, a read with R = N sees every acknowledged write, unless a later write
//!   that had seen it superseded it; afterwards every replica holds identical bytes.
//! - No false siblings: a client chaining writes through contexts ends with one version
//!   (when all of its writes were acknowledged: a failed write may still land later).
//!
//! `SIM_SEEDS=n` runs n seeds (default 2000); `SIM_SEED=s` runs one seed.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_cluster::NodeId;
use shoal_cluster::consistency::Consistency;
use shoal_cluster::coordinator::{Coordinator, Outcome};
use shoal_cluster::dvv::DvvSet;
use shoal_cluster::message::{Reply, ReqId, Request, WriteContext};
use shoal_cluster::replica;
use shoal_cluster::ring::{Member, Ring};
use shoal_cluster::vv::{Dot, VersionVector};

const N: u32 = 3;
const PARTITIONS: u32 = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);
/// Clients issue requests until then; the network heals at that time.
const FAULT_PHASE: Duration = Duration::from_secs(5);
/// A run that needs more events than this is livelocked.
const EVENTS_MAX: u64 = 1_000_000;
const SHARED_KEYS: usize = 3;
const CHAIN_CLIENTS: usize = 2;
const MIXED_CLIENTS: usize = 3;
/// The client index of the checker's own reads after healing.
const FINAL_CLIENT: usize = usize::MAX;

/// SplitMix64: small, seedable, good enough for choosing faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

enum Payload {
    Request(Request),
    Reply(Reply),
}

struct Message {
    from: NodeId,
    to: NodeId,
    req_id: ReqId,
    payload: Payload,
}

struct Node {
    store: BTreeMap<Vec<u8>, Vec<u8>>,
    coordinator: Coordinator,
    up: bool,
}

#[derive(Clone)]
enum Op {
    Read { key: Vec<u8>, r: u32 },
    Write { key: Vec<u8>, w: u32 },
}

struct Pending {
    client: usize,
    node: NodeId,
    issued: Duration,
    op: Op,
}

#[derive(Default)]
struct Client {
    busy: bool,
    /// Chain clients: the context their last write returned; mixed clients: last read's.
    context: BTreeMap<Vec<u8>, VersionVector>,
}

/// An acknowledged write.
struct Acked {
    at: Duration,
    dot: Dot,
    w: u32,
}

struct Faults {
    loss_per_mille: u64,
    delay_max_ms: u64,
    crash_per_mille: u64,
    partition_per_mille: u64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: Duration,
    ring: Ring,
    nodes: BTreeMap<NodeId, Node>,
    queue: BTreeMap<(Duration, u64), Message>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: Faults,
    healed: bool,
    next_req: ReqId,
    pending: BTreeMap<ReqId, Pending>,
    clients: Vec<Client>,
    acked: BTreeMap<Vec<u8>, Vec<Acked>>,
    /// Per key, every context an applied write superseded: the only legitimate way for an
    /// acknowledged write to stop being a sibling.
    superseded: BTreeMap<Vec<u8>, VersionVector>,
    /// Chain keys with a failed (outcome unknown) write.
    chain_voided: BTreeSet<Vec<u8>>,
    last_chain_dot: BTreeMap<Vec<u8>, Dot>,
    /// The outcome of the current final read.
    final_outcome: Option<Outcome>,
    events: u64,
    stats: Stats,
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    reads_ok: u64,
    reads_failed: u64,
    writes_ok: u64,
    writes_failed: u64,
    quorum_reads_checked: u64,
    chains_checked: u64,
}

macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn level(rng: &mut Rng) -> Consistency {
    [
        Consistency::One,
        Consistency::Quorum,
        Consistency::All,
        Consistency::Count(2),
    ][rng.below(4) as usize]
}

fn chain_key(i: usize) -> Vec<u8> {
    format!("chain-{i}").into_bytes()
}

fn shared_key(i: usize) -> Vec<u8> {
    format!("shared-{i}").into_bytes()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let node_count = 3 + rng.below(2) as NodeId;
        let members: Vec<Member> = (1..=node_count).map(Member::new).collect();
        let ring = Ring::new(&members, PARTITIONS, N).unwrap();
        let nodes = (1..=node_count)
            .map(|id| {
                (
                    id,
                    Node {
                        store: BTreeMap::new(),
                        coordinator: Coordinator::new(),
                        up: true,
                    },
                )
            })
            .collect();
        // A quarter of the seeds run without loss, crashes or partitions: there every
        // write succeeds and the no-false-siblings check always applies.
        let calm = rng.below(4) == 0;
        let faults = Faults {
            loss_per_mille: if calm { 0 } else { rng.below(150) },
            delay_max_ms: 1 + rng.below(60),
            crash_per_mille: if calm { 0 } else { rng.below(30) },
            partition_per_mille: if calm { 0 } else { rng.below(30) },
        };
        Sim {
            seed,
            rng,
            now: Duration::ZERO,
            ring,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            faults,
            healed: false,
            next_req: 1,
            pending: BTreeMap::new(),
            clients: (0..CHAIN_CLIENTS + MIXED_CLIENTS)
                .map(|_| Client::default())
                .collect(),
            acked: BTreeMap::new(),
            superseded: BTreeMap::new(),
            chain_voided: BTreeSet::new(),
            last_chain_dot: BTreeMap::new(),
            final_outcome: None,
            events: 0,
            stats: Stats::default(),
        }
    }

    fn send(&mut self, message: Message) {
        let local = message.from == message.to;
        if !local && !self.healed && self.rng.chance(self.faults.loss_per_mille) {
            return;
        }
        let delay = if local {
            Duration::ZERO
        } else {
            self.rng.millis(0, self.faults.delay_max_ms)
        };
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), message);
    }

    /// Sends what `node`'s coordinator produced and hands its results to clients.
    fn drain(&mut self, id: NodeId) -> Result<(), String> {
        loop {
            let node = self.nodes.get_mut(&id).unwrap();
            let Some(t) = node.coordinator.poll_transmit() else {
                break;
            };
            self.send(Message {
                from: id,
                to: t.to,
                req_id: t.req_id,
                payload: Payload::Request(t.request),
            });
        }
        loop {
            let node = self.nodes.get_mut(&id).unwrap();
            let Some(done) = node.coordinator.poll_result() else {
                break;
            };
            let Some(pending) = self.pending.remove(&done.req_id) else {
                return Err(format!("result for unknown request {}", done.req_id));
            };
            self.complete(pending, done.outcome)?;
        }
        Ok(())
    }

    fn complete(&mut self, pending: Pending, outcome: Outcome) -> Result<(), String> {
        let client = pending.client;
        if client == FINAL_CLIENT {
            self.final_outcome = Some(outcome);
            return Ok(());
        }
        self.clients[client].busy = false;
        match (pending.op, outcome) {
            (Op::Read { key, r }, Outcome::Read(Ok(found))) => {
                self.stats.reads_ok += 1;
                let context = found
                    .as_ref()
                    .map(|s| s.context().clone())
                    .unwrap_or_default();
                for a in self.acked.get(&key).into_iter().flatten() {
                    if a.at < pending.issued && a.w + r > N {
                        self.stats.quorum_reads_checked += 1;
                        check!(
                            context.contains(a.dot),
                            "read of {key:?} (R={r}) at {:?} missed write {:?} acked at {:?} with W={}",
                            self.now,
                            a.dot,
                            a.at,
                            a.w
                        );
                    }
                }
                self.clients[client].context.insert(key, context);
            }
            (Op::Write { key, w }, Outcome::Write(Ok(written))) => {
                self.stats.writes_ok += 1;
                self.acked.entry(key.clone()).or_default().push(Acked {
                    at: self.now,
                    dot: written.dot,
                    w,
                });
                if client < CHAIN_CLIENTS {
                    self.last_chain_dot.insert(key.clone(), written.dot);
                    self.clients[client].context.insert(key, written.context);
                }
            }
            (Op::Read { .. }, Outcome::Read(Err(_))) => self.stats.reads_failed += 1,
            (Op::Write { key, .. }, Outcome::Write(Err(_))) => {
                self.stats.writes_failed += 1;
                if client < CHAIN_CLIENTS {
                    self.chain_voided.insert(key);
                }
            }
            _ => return Err("outcome of the wrong kind".into()),
        }
        Ok(())
    }

    /// A replica serves a request, as the node does around its engine.
    fn serve(&mut self, to: NodeId, from: NodeId, req_id: ReqId, request: Request) {
        let node = self.nodes.get_mut(&to).unwrap();
        let key = request.key().to_vec();
        let stored = node.store.get(&key).cloned();
        let handled = replica::handle(to, stored.as_deref(), &request);
        if let (Request::Update { context, .. }, Reply::Updated { .. }) = (&request, &handled.reply)
        {
            let superseded = match context {
                WriteContext::Given(vv) => vv.clone(),
                WriteContext::Local => stored
                    .map(|b| DvvSet::decode(&b).unwrap().context().clone())
                    .unwrap_or_default(),
            };
            self.superseded
                .entry(key.clone())
                .or_default()
                .merge(&superseded);
        }
        if let Some(bytes) = handled.store {
            node.store.insert(key, bytes);
        }
        self.send(Message {
            from: to,
            to: from,
            req_id,
            payload: Payload::Reply(handled.reply),
        });
    }

    fn issue(
        &mut self,
        client: usize,
        node: NodeId,
        op: Op,
        request: impl FnOnce(&mut Coordinator, ReqId, &[NodeId]),
    ) {
        let req_id = self.next_req;
        self.next_req += 1;
        let key = match &op {
            Op::Read { key, .. } | Op::Write { key, .. } => key.clone(),
        };
        // The coordinator puts itself first when it is a replica.
        let mut replicas = self.ring.preference_list_for_key(&key).to_vec();
        if let Some(i) = replicas.iter().position(|&n| n == node) {
            replicas[..=i].rotate_right(1);
        }
        if let Some(c) = self.clients.get_mut(client) {
            c.busy = true;
        }
        self.pending.insert(
            req_id,
            Pending {
                client,
                node,
                issued: self.now,
                op,
            },
        );
        let coordinator = &mut self.nodes.get_mut(&node).unwrap().coordinator;
        request(coordinator, req_id, &replicas);
    }

    /// Idle clients start their next request through a random live node.
    fn start_requests(&mut self) -> Result<(), String> {
        if self.now >= FAULT_PHASE {
            return Ok(());
        }
        for client in 0..self.clients.len() {
            if self.clients[client].busy || !self.rng.chance(100) {
                continue;
            }
            let up: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.up)
                .map(|(&id, _)| id)
                .collect();
            if up.is_empty() {
                continue;
            }
            let node = up[self.rng.below(up.len() as u64) as usize];
            let now = self.now;
            let level = level(&mut self.rng);
            if client < CHAIN_CLIENTS {
                let key = chain_key(client);
                let ctx = self.clients[client]
                    .context
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                let value = Some(self.next_req.to_le_bytes().to_vec());
                let w = level.required(N);
                self.issue(
                    client,
                    node,
                    Op::Write {
                        key: key.clone(),
                        w,
                    },
                    |c, id, reps| {
                        c.put(
                            now,
                            id,
                            key,
                            value,
                            WriteContext::Given(ctx),
                            reps,
                            level,
                            REQUEST_TIMEOUT,
                        );
                    },
                );
            } else {
                let key = shared_key(self.rng.below(SHARED_KEYS as u64) as usize);
                let seen = self.clients[client]
                    .context
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                let value = Some(self.next_req.to_le_bytes().to_vec());
                let (context, value) = match self.rng.below(6) {
                    0 | 1 => {
                        let r = level.required(N);
                        self.issue(
                            client,
                            node,
                            Op::Read {
                                key: key.clone(),
                                r,
                            },
                            |c, id, reps| {
                                c.get(now, id, key, reps, level, REQUEST_TIMEOUT);
                            },
                        );
                        continue;
                    }
                    2 => (WriteContext::Given(VersionVector::new()), value),
                    3 => (WriteContext::Given(seen), value),
                    4 => (WriteContext::Local, value),
                    _ => (WriteContext::Given(seen), None),
                };
                let w = level.required(N);
                self.issue(
                    client,
                    node,
                    Op::Write {
                        key: key.clone(),
                        w,
                    },
                    |c, id, reps| {
                        c.put(now, id, key, value, context, reps, level, REQUEST_TIMEOUT);
                    },
                );
            }
            self.drain(node)?;
        }
        Ok(())
    }

    /// Crashes, restarts and partitions, each tick of the fault phase.
    fn inject_faults(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            let up = self.nodes[&id].up;
            if up && self.rng.chance(self.faults.crash_per_mille) {
                self.crash(id);
            } else if !up && self.rng.chance(200) {
                self.nodes.get_mut(&id).unwrap().up = true;
            }
        }
        if self.rng.chance(self.faults.partition_per_mille) {
            self.cut.clear();
            let isolated = ids[self.rng.below(ids.len() as u64) as usize];
            for &other in &ids {
                if other != isolated {
                    self.cut.insert((isolated, other));
                    self.cut.insert((other, isolated));
                }
            }
        } else if self.rng.chance(100) {
            self.cut.clear();
        }
        Ok(())
    }

    /// Loses the node's coordinator state; its store is durable and survives.
    fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.up = false;
        node.coordinator = Coordinator::new();
        let lost: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.node == id)
            .map(|(&r, _)| r)
            .collect();
        for req_id in lost {
            let pending = self.pending.remove(&req_id).unwrap();
            self.clients[pending.client].busy = false;
            match pending.op {
                Op::Write { key, .. } => {
                    self.stats.writes_failed += 1;
                    if pending.client < CHAIN_CLIENTS {
                        self.chain_voided.insert(key);
                    }
                }
                Op::Read { .. } => self.stats.reads_failed += 1,
            }
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        self.cut.clear();
        for node in self.nodes.values_mut() {
            node.up = true;
        }
    }

    /// Runs until `until` (or until nothing is left to do after the fault phase).
    fn run(&mut self, until: Option<Duration>) -> Result<(), String> {
        let tick = Duration::from_millis(10);
        let mut next_tick = self.now;
        loop {
            self.events += 1;
            check!(
                self.events < EVENTS_MAX,
                "no progress after {EVENTS_MAX} events"
            );
            let next_message = self.queue.keys().next().map(|&(at, _)| at);
            let next_timer = self
                .nodes
                .values()
                .filter(|n| n.up)
                .filter_map(|n| n.coordinator.poll_timeout())
                .min();
            let ticking = until.is_some_and(|u| next_tick < u);
            let next = [next_message, next_timer, ticking.then_some(next_tick)]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { return Ok(()) };
            if until.is_some_and(|u| next >= u) {
                self.now = until.unwrap_or(next);
                return Ok(());
            }
            self.now = self.now.max(next);
            if ticking && next_tick <= self.now {
                next_tick += tick;
                self.inject_faults()?;
                self.start_requests()?;
                continue;
            }
            if next_message == Some(next) {
                let (_, message) = self.queue.pop_first().unwrap();
                self.deliver(message)?;
                continue;
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let node = self.nodes.get_mut(&id).unwrap();
                if node.up {
                    node.coordinator.handle_timeout(self.now);
                    self.drain(id)?;
                }
            }
        }
    }

    fn deliver(&mut self, message: Message) -> Result<(), String> {
        let Message {
            from,
            to,
            req_id,
            payload,
        } = message;
        if !self.nodes[&to].up || self.cut.contains(&(from, to)) {
            return Ok(());
        }
        match payload {
            Payload::Request(request) => self.serve(to, from, req_id, request),
            Payload::Reply(reply) => {
                let node = self.nodes.get_mut(&to).unwrap();
                node.coordinator.handle_reply(from, req_id, reply);
                self.drain(to)?;
            }
        }
        Ok(())
    }

    /// Heals, reads every key with R = N, and checks what survived.
    fn final_checks(&mut self) -> Result<(), String> {
        self.heal();
        self.run(None)?;
        check!(
            self.pending.is_empty(),
            "requests still pending after quiescence"
        );
        let keys: Vec<Vec<u8>> = (0..CHAIN_CLIENTS)
            .map(chain_key)
            .chain((0..SHARED_KEYS).map(shared_key))
            .collect();
        for key in keys {
            let node = 1 + self.rng.below(self.nodes.len() as u64) as NodeId;
            let now = self.now;
            let k = key.clone();
            self.issue(
                FINAL_CLIENT,
                node,
                Op::Read {
                    key: key.clone(),
                    r: N,
                },
                |c, id, reps| {
                    c.get(now, id, k, reps, Consistency::All, REQUEST_TIMEOUT);
                },
            );
            self.drain(node)?;
            self.run(None)?;
            let Some(result) = self.final_outcome.take() else {
                return Err(format!("final read of {key:?} never completed"));
            };
            let Outcome::Read(Ok(found)) = result else {
                return Err(format!("final read of {key:?} failed: {result:?}"));
            };
            let state = found.unwrap_or_default();
            let superseded = self.superseded.get(&key).cloned().unwrap_or_default();
            for a in self.acked.get(&key).into_iter().flatten() {
                check!(
                    state.context().contains(a.dot),
                    "acknowledged write {:?} of {key:?} lost",
                    a.dot
                );
                let live = state.siblings().iter().any(|s| s.dot == a.dot);
                check!(
                    live || superseded.contains(a.dot),
                    "acknowledged write {:?} of {key:?} vanished without a superseding write",
                    a.dot
                );
            }
            // Read repair has run: every replica holds the same bytes.
            let copies: BTreeSet<Option<&Vec<u8>>> = self
                .ring
                .preference_list_for_key(&key)
                .iter()
                .map(|id| self.nodes[id].store.get(&key))
                .collect();
            check!(
                copies.len() == 1,
                "replicas of {key:?} differ after read repair"
            );
            if key.starts_with(b"chain-") && !self.chain_voided.contains(&key) {
                if let Some(&last) = self.last_chain_dot.get(&key) {
                    self.stats.chains_checked += 1;
                    let dots: Vec<Dot> = state.siblings().iter().map(|s| s.dot).collect();
                    check!(
                        dots == [last],
                        "chain {key:?} has versions {dots:?}, expected only {last:?}"
                    );
                }
            }
        }
        Ok(())
    }
}

fn run_seed(seed: u64) -> Result<Stats, String> {
    let mut sim = Sim::new(seed);
    sim.run(Some(FAULT_PHASE))?;
    sim.final_checks()?;
    let _ = sim.seed;
    Ok(sim.stats)
}

#[test]
fn simulated_clusters_keep_acknowledged_writes() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let count = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2000);
            (0..count).collect()
        }
    };
    let mut total = Stats::default();
    for &seed in &seeds {
        match run_seed(seed) {
            Ok(s) => {
                total.reads_ok += s.reads_ok;
                total.reads_failed += s.reads_failed;
                total.writes_ok += s.writes_ok;
                total.writes_failed += s.writes_failed;
                total.quorum_reads_checked += s.quorum_reads_checked;
                total.chains_checked += s.chains_checked;
            }
            Err(e) => panic!("seed {seed}: {e} (rerun with SIM_SEED={seed})"),
        }
    }
    println!("{} seeds: {total:?}", seeds.len());
    // The checks must have had something to check.
    assert!(total.writes_ok > seeds.len() as u64);
    assert!(total.quorum_reads_checked > 0);
    assert!(total.chains_checked > 0);
}
