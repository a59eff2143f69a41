//! Deterministic simulation of a Shoal cluster: the nodes' own [`Endpoint`]s (one per shard)
//! over a seeded network (delay, reordering, loss, partitions, undeliverable frames) and
//! seeded storage (latency, writes lost or kept by a crash), node crashes and restarts,
//! pauses (a node that stops running for a while, as under SIGSTOP), virtual time with
//! gossip and the failure detector, and clients issuing strict and sloppy reads and writes
//! through random shards.
//!
//! Checks, per seed:
//! - W + R > N: a successful read sees every strict write acknowledged before it was issued.
//! - After healing, with no client reads, every home replica of every key holds identical
//!   bytes once hints drain, except for writes no coordinator knew of (their mint's reply
//!   lost) and keys whose coordinator crashed with a write in flight: those are read
//!   repair's and anti-entropy's.
//! - After healing, a read with R = N sees every acknowledged write, unless a later write
//!   that had seen it superseded it; afterwards every replica holds identical bytes.
//! - A write supersedes only what it saw: its context, or for a SET without one what the
//!   minting replica stored (the simulator recognises a mint in the storage writes).
//! - No false siblings: a client chaining writes through contexts ends with one version
//!   (when all of its writes were acknowledged: a failed write may still land later).
//!
//! `SIM_SEEDS=n` runs n seeds (default 2000); `SIM_SEED=s` runs one seed.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use shoal_cluster::NodeId;
use shoal_cluster::consistency::Consistency;
use shoal_cluster::coordinator::Outcome;
use shoal_cluster::dvv::DvvSet;
use shoal_cluster::endpoint::{
    Address, Completion, Config, Endpoint, Event, GossipConfig, HintConfig, StorageAction,
    StorageOp, StoredHint,
};
use shoal_cluster::frame::FrameBuf;
use shoal_cluster::membership::ClusterView;
use shoal_cluster::message::{self, Body, Reply, ReqId, WriteContext};
use shoal_cluster::partition::partition_of;
use shoal_cluster::ring::{Member, Ring, shard_of};
use shoal_cluster::vv::{Dot, VersionVector};

const N: u32 = 3;
const PARTITIONS: u32 = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);
/// Clients issue requests until then; the network heals at that time.
const FAULT_PHASE: Duration = Duration::from_secs(8);
/// After healing, hints must drain within this much virtual time.
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// Longest pause of a node.
const PAUSE_MAX: Duration = Duration::from_secs(6);
/// Gossip interval: one round every 250 ms, so the detector acts within the fault phase.
const GOSSIP_INTERVAL: Duration = Duration::from_millis(250);
/// A run that needs more events than this is livelocked.
const EVENTS_MAX: u64 = 3_000_000;
const SHARED_KEYS: usize = 3;
const CHAIN_CLIENTS: usize = 2;
const MIXED_CLIENTS: usize = 3;
/// The client index of the checker's own reads after healing.
const FINAL_CLIENT: usize = usize::MAX;
/// Longest a storage operation takes.
const STORAGE_DELAY_MAX_MS: u64 = 3;
/// Delay of a frame between two shards of one node (the shard mesh never loses one).
const MESH_DELAY: Duration = Duration::from_micros(50);

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

/// Something due at a point of virtual time.
enum Due {
    /// A frame arriving at `to`.
    Frame {
        from: Address,
        to: Address,
        frame: FrameBuf,
    },
    /// The transport gives up on a frame `from` sent to `to`.
    Undeliverable {
        from: Address,
        to: Address,
        frame: FrameBuf,
    },
    /// A storage operation of `at` finishing.
    Storage { at: Address, op: StorageOp },
}

impl Due {
    /// The node that runs it.
    fn node(&self) -> NodeId {
        match self {
            Due::Frame { to, .. } => to.node,
            Due::Undeliverable { from, .. } => from.node,
            Due::Storage { at, .. } => at.node,
        }
    }
}

struct Node {
    /// One endpoint, one data store and one hint store per shard.
    endpoints: Vec<Endpoint>,
    stores: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
    hints: Vec<BTreeMap<(NodeId, u64), Vec<u8>>>,
    up: bool,
    /// Paused until then: it runs nothing, and what is due to it waits.
    paused_until: Option<Duration>,
    /// Bumped at every crash: what was due for an earlier incarnation is void; also the
    /// endpoints' generation.
    incarnation: u64,
}

#[derive(Clone)]
enum Op {
    Read { key: Vec<u8>, r: u32 },
    Write { key: Vec<u8>, w: u32, strict: bool },
}

struct Pending {
    client: usize,
    at: Address,
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
    strict: bool,
}

struct Faults {
    loss_per_mille: u64,
    delay_max_ms: u64,
    crash_per_mille: u64,
    /// Chance per tick that a crashed node restarts: small values keep nodes down long
    /// enough for the detector to convict them.
    restart_per_mille: u64,
    pause_per_mille: u64,
    partition_per_mille: u64,
}

struct Sim {
    rng: Rng,
    now: Duration,
    ring: Ring,
    shards: BTreeMap<NodeId, u16>,
    nodes: BTreeMap<NodeId, Node>,
    /// `(due, sequence) → (incarnation of the node it is due at, what)`.
    queue: BTreeMap<(Duration, u64), (u64, Due)>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: Faults,
    healed: bool,
    /// Client requests in flight, by coordinating shard and request id.
    pending: BTreeMap<(Address, ReqId), Pending>,
    clients: Vec<Client>,
    acked: BTreeMap<Vec<u8>, Vec<Acked>>,
    /// What each issued write may supersede, by its value (values are unique per write);
    /// deletes have no value and are kept per key.
    write_contexts: BTreeMap<Vec<u8>, WriteContext>,
    delete_contexts: BTreeMap<Vec<u8>, Vec<VersionVector>>,
    /// Per key, every context a minted write superseded: the only legitimate way for an
    /// acknowledged write to stop being a sibling.
    superseded: BTreeMap<Vec<u8>, VersionVector>,
    /// Chain keys with a failed (outcome unknown) write.
    chain_voided: BTreeSet<Vec<u8>>,
    last_chain_dot: BTreeMap<Vec<u8>, Dot>,
    next_value: u64,
    /// The outcome of the current final read.
    final_outcome: Option<Outcome>,
    /// Writes issued lately: `(coordinating node, key, issued)`.
    recent_writes: VecDeque<(NodeId, Vec<u8>, Duration)>,
    /// Keys whose coordinator crashed while one of their writes could still be waiting for
    /// a target: that target may never get a hint.
    unhinted: BTreeSet<Vec<u8>>,
    /// Per key, mints whose coordinator never learned of them (their `Updated` reply lost,
    /// or their replica dead before answering): no hint carries them, and until anti-entropy
    /// or a read repairs them only some replicas hold them.
    orphans: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
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
    frames: u64,
    sloppy_writes: u64,
    hints_replayed: u64,
    convergence_checked: u64,
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

fn view(ring: &Ring) -> ClusterView {
    let members = ring.members().iter().map(|m| m.id.to_string()).collect();
    ClusterView::new("sim", members)
}

/// A node's endpoints for incarnation `generation`, over the hints its stores hold.
fn endpoints(
    id: NodeId,
    generation: u64,
    ring: &Ring,
    shards: &BTreeMap<NodeId, u16>,
    hints: &[BTreeMap<(NodeId, u64), Vec<u8>>],
    now: Duration,
) -> Vec<Endpoint> {
    (0..shards[&id])
        .map(|shard| {
            let stored_hints = hints[usize::from(shard)]
                .iter()
                .map(|(&(owner, seq), record)| StoredHint {
                    owner,
                    seq,
                    bytes: record.len() as u64,
                    stored_at_ms: 0,
                })
                .collect();
            let config = Config {
                me: id,
                shard,
                generation,
                ring: ring.clone(),
                shards: shards.clone(),
                view: view(ring),
                timeout: REQUEST_TIMEOUT,
                gossip: GossipConfig::every(GOSSIP_INTERVAL),
                hints: HintConfig::default(),
                wall_ms_at_epoch: 0,
                stored_hints,
                seed: u64::from(id) << 16 | u64::from(shard),
            };
            Endpoint::new(config, now)
        })
        .collect()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let node_count = 3 + rng.below(2) as NodeId;
        let members: Vec<Member> = (1..=node_count).map(Member::new).collect();
        let ring = Ring::new(&members, PARTITIONS, N).unwrap();
        let shards: BTreeMap<NodeId, u16> = (1..=node_count)
            .map(|id| (id, 1 + rng.below(2) as u16))
            .collect();
        let nodes = (1..=node_count)
            .map(|id| {
                let count = usize::from(shards[&id]);
                let hints = vec![BTreeMap::new(); count];
                let node = Node {
                    endpoints: endpoints(id, 1, &ring, &shards, &hints, Duration::ZERO),
                    stores: vec![BTreeMap::new(); count],
                    hints,
                    up: true,
                    paused_until: None,
                    incarnation: 1,
                };
                (id, node)
            })
            .collect();
        // A quarter of the seeds run without loss, crashes, pauses or partitions: there
        // every write succeeds and the no-false-siblings check always applies.
        let calm = rng.below(4) == 0;
        let faults = Faults {
            loss_per_mille: if calm { 0 } else { rng.below(150) },
            delay_max_ms: 1 + rng.below(60),
            crash_per_mille: if calm { 0 } else { rng.below(10) },
            restart_per_mille: 1 + rng.below(200),
            pause_per_mille: if calm { 0 } else { rng.below(5) },
            partition_per_mille: if calm { 0 } else { rng.below(20) },
        };
        Sim {
            rng,
            now: Duration::ZERO,
            ring,
            shards,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            faults,
            healed: false,
            pending: BTreeMap::new(),
            clients: (0..CHAIN_CLIENTS + MIXED_CLIENTS)
                .map(|_| Client::default())
                .collect(),
            acked: BTreeMap::new(),
            write_contexts: BTreeMap::new(),
            delete_contexts: BTreeMap::new(),
            superseded: BTreeMap::new(),
            chain_voided: BTreeSet::new(),
            last_chain_dot: BTreeMap::new(),
            next_value: 1,
            final_outcome: None,
            recent_writes: VecDeque::new(),
            unhinted: BTreeSet::new(),
            orphans: BTreeMap::new(),
            events: 0,
            stats: Stats::default(),
        }
    }

    fn endpoint(&mut self, at: Address) -> &mut Endpoint {
        &mut self.nodes.get_mut(&at.node).unwrap().endpoints[usize::from(at.shard)]
    }

    fn schedule(&mut self, after: Duration, node: NodeId, due: Due) {
        self.seq += 1;
        let incarnation = self.nodes[&node].incarnation;
        self.queue
            .insert((self.now + after, self.seq), (incarnation, due));
    }

    /// Puts a frame on the network: lost, delayed, or (to a dead node) reported back as
    /// undeliverable, as the peer transport does when a connect fails.
    fn send(&mut self, from: Address, to: Address, frame: FrameBuf) {
        self.stats.frames += 1;
        if from.node == to.node {
            self.schedule(MESH_DELAY, to.node, Due::Frame { from, to, frame });
            return;
        }
        if !self.healed && self.rng.chance(self.faults.loss_per_mille) {
            self.lost(to, &frame);
            return;
        }
        let delay = self.rng.millis(0, self.faults.delay_max_ms);
        if !self.nodes[&to.node].up && self.rng.chance(500) {
            self.schedule(delay, from.node, Due::Undeliverable { from, to, frame });
            return;
        }
        self.schedule(delay, to.node, Due::Frame { from, to, frame });
    }

    /// Takes everything `at`'s endpoint produced: frames onto the network, storage
    /// operations into storage, outcomes to their clients.
    fn drain(&mut self, at: Address) -> Result<(), String> {
        while let Some(t) = self.endpoint(at).poll_transmit() {
            self.send(at, t.to, t.frame);
        }
        while let Some(op) = self.endpoint(at).poll_storage() {
            let delay = self.rng.millis(0, STORAGE_DELAY_MAX_MS);
            self.schedule(delay, at.node, Due::Storage { at, op });
        }
        while let Some(event) = self.endpoint(at).poll_event() {
            match event {
                Event::Completed { req_id, outcome } => {
                    let Some(pending) = self.pending.remove(&(at, req_id)) else {
                        return Err(format!("result for unknown request {req_id} at {at:?}"));
                    };
                    self.complete(pending, outcome)?;
                }
                Event::ManySiblings { .. } | Event::Health { .. } => {}
                Event::ViewMismatch { node, .. } => {
                    return Err(format!(
                        "{at:?} refused node {node}: every member shares a view"
                    ));
                }
            }
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
                    if a.strict && a.at < pending.issued && a.w + r > N {
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
            (Op::Write { key, w, strict }, Outcome::Write(Ok(written))) => {
                self.stats.writes_ok += 1;
                self.acked.entry(key.clone()).or_default().push(Acked {
                    at: self.now,
                    dot: written.dot,
                    w,
                    strict,
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

    /// Runs a storage operation of `at`, as the node does against its engine. A write that
    /// mints (adds a sibling of its own node's actor that the stored versions had not seen)
    /// is checked to supersede only what its request allowed.
    fn storage(&mut self, at: Address, op: StorageOp) -> Result<(), String> {
        let shard = usize::from(at.shard);
        let now = self.now;
        let completion = match op.action {
            StorageAction::ReadVersions { key } => {
                let stored = self.nodes[&at.node].stores[shard].get(&key).cloned();
                let endpoint = self.endpoint(at);
                endpoint.handle_storage(now, op.token, Completion::Read(stored.as_deref()));
                return self.drain(at);
            }
            StorageAction::WriteVersions { key, versions } => {
                let store = &mut self.nodes.get_mut(&at.node).unwrap().stores[shard];
                let old = store.insert(key.clone(), versions.clone());
                self.record_mint(at.node, &key, old.as_deref(), &versions)?;
                Completion::Written
            }
            StorageAction::StoreHint { owner, seq, record } => {
                let hints = &mut self.nodes.get_mut(&at.node).unwrap().hints[shard];
                hints.insert((owner, seq), record);
                Completion::Written
            }
            StorageAction::DeleteHint { owner, seq } => {
                let hints = &mut self.nodes.get_mut(&at.node).unwrap().hints[shard];
                hints.remove(&(owner, seq));
                self.stats.hints_replayed += 1;
                Completion::Written
            }
            StorageAction::LoadHints {
                owner,
                from_seq,
                limit,
            } => Completion::Hints(
                self.nodes[&at.node].hints[shard]
                    .range((owner, from_seq)..=(owner, u64::MAX))
                    .take(limit as usize)
                    .map(|(&(_, seq), r)| (seq, r.clone()))
                    .collect(),
            ),
        };
        self.endpoint(at).handle_storage(now, op.token, completion);
        self.drain(at)
    }

    fn record_mint(
        &mut self,
        node: NodeId,
        key: &[u8],
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Option<Dot>, String> {
        let old = old.map(|b| DvvSet::decode(b).unwrap()).unwrap_or_default();
        let new = DvvSet::decode(new).unwrap();
        let Some(minted) = new
            .siblings()
            .iter()
            .find(|s| s.dot.actor == node && !old.context().contains(s.dot))
        else {
            return Ok(None);
        };
        let allowed = match &minted.value {
            Some(value) => match self.write_contexts.get(value) {
                Some(WriteContext::Local) => old.context().clone(),
                Some(WriteContext::Given(vv)) => vv.clone(),
                None => return Err(format!("minted value {value:?} was never written")),
            },
            None => {
                let mut any = VersionVector::new();
                for vv in self.delete_contexts.get(key).into_iter().flatten() {
                    any.merge(vv);
                }
                any
            }
        };
        for s in old.siblings() {
            let kept = new.siblings().iter().any(|n| n.dot == s.dot);
            check!(
                kept || allowed.contains(s.dot),
                "write {:?} of {key:?} superseded {:?}, which it had not seen",
                minted.dot,
                s.dot
            );
        }
        self.superseded
            .entry(key.to_vec())
            .or_default()
            .merge(&allowed);
        Ok(Some(minted.dot))
    }

    fn issue(
        &mut self,
        client: usize,
        at: Address,
        op: Op,
        start: impl FnOnce(&mut Endpoint) -> ReqId,
    ) {
        if let Some(c) = self.clients.get_mut(client) {
            c.busy = true;
        }
        let req_id = start(self.endpoint(at));
        if let Op::Write { key, .. } = &op {
            self.recent_writes
                .push_back((at.node, key.clone(), self.now));
        }
        let pending = Pending {
            client,
            at,
            issued: self.now,
            op,
        };
        self.pending.insert((at, req_id), pending);
    }

    fn random_shard(&mut self, node: NodeId) -> Address {
        let shard = self.rng.below(u64::from(self.shards[&node])) as u16;
        Address { node, shard }
    }

    fn new_value(&mut self, context: WriteContext) -> Vec<u8> {
        let value = self.next_value.to_le_bytes().to_vec();
        self.next_value += 1;
        self.write_contexts.insert(value.clone(), context);
        value
    }

    /// Idle clients start their next request through a random shard of a random live node.
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
                .filter(|(id, n)| n.up && self.paused_until(**id).is_none())
                .map(|(&id, _)| id)
                .collect();
            if up.is_empty() {
                continue;
            }
            let node = up[self.rng.below(up.len() as u64) as usize];
            let at = self.random_shard(node);
            let now = self.now;
            let level = level(&mut self.rng);
            let strict = self.rng.chance(300);
            let (key, context, value) = if client < CHAIN_CLIENTS {
                let key = chain_key(client);
                let ctx = self.clients[client]
                    .context
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                let context = WriteContext::Given(ctx);
                let value = Some(self.new_value(context.clone()));
                (key, context, value)
            } else {
                let key = shared_key(self.rng.below(SHARED_KEYS as u64) as usize);
                let seen = self.clients[client]
                    .context
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                let context = match self.rng.below(6) {
                    0 | 1 => {
                        let op = Op::Read {
                            key: key.clone(),
                            r: level.required(N),
                        };
                        self.issue(client, at, op, |e| e.read(now, &key, level));
                        self.drain(at)?;
                        continue;
                    }
                    2 => WriteContext::Given(VersionVector::new()),
                    3 => WriteContext::Given(seen.clone()),
                    4 => WriteContext::Local,
                    _ => {
                        self.delete_contexts
                            .entry(key.clone())
                            .or_default()
                            .push(seen.clone());
                        let op = Op::Write {
                            key: key.clone(),
                            w: level.required(N),
                            strict,
                        };
                        let context = WriteContext::Given(seen);
                        self.issue(client, at, op, |e| {
                            e.write(now, &key, None, context, level, strict)
                        });
                        self.drain(at)?;
                        continue;
                    }
                };
                let value = Some(self.new_value(context.clone()));
                (key, context, value)
            };
            let op = Op::Write {
                key: key.clone(),
                w: level.required(N),
                strict,
            };
            self.issue(client, at, op, |e| {
                e.write(now, &key, value, context, level, strict)
            });
            self.drain(at)?;
        }
        Ok(())
    }

    /// Crashes, restarts, pauses and partitions, each tick of the fault phase.
    fn inject_faults(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            if self.nodes[&id].paused_until.is_some_and(|t| t <= self.now) {
                self.nodes.get_mut(&id).unwrap().paused_until = None;
            }
        }
        if self.healed {
            return Ok(());
        }
        for &id in &ids {
            let (up, paused) = (self.nodes[&id].up, self.nodes[&id].paused_until.is_some());
            if up && self.rng.chance(self.faults.crash_per_mille) {
                self.crash(id)?;
            } else if !up && self.rng.chance(self.faults.restart_per_mille) {
                self.restart(id);
            } else if up && !paused && self.rng.chance(self.faults.pause_per_mille) {
                let pause = self.rng.millis(500, PAUSE_MAX.as_millis() as u64);
                self.nodes.get_mut(&id).unwrap().paused_until = Some(self.now + pause);
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

    /// Loses the node's endpoints; its stores survive. A write the store had not finished
    /// lands or not, as an interrupted fdatasync may.
    fn crash(&mut self, id: NodeId) -> Result<(), String> {
        let in_flight: Vec<(Duration, u64)> = self
            .queue
            .iter()
            .filter(|(_, (_, due))| matches!(due, Due::Storage { at, .. } if at.node == id))
            .map(|(&k, _)| k)
            .collect();
        for k in in_flight {
            let Some((_, Due::Storage { at, op })) = self.queue.remove(&k) else {
                continue;
            };
            if !self.rng.chance(500) {
                continue;
            }
            let shard = usize::from(at.shard);
            match op.action {
                StorageAction::WriteVersions { key, versions } => {
                    let store = &mut self.nodes.get_mut(&id).unwrap().stores[shard];
                    let old = store.insert(key.clone(), versions.clone());
                    // A mint stored by a replica that died before answering: no coordinator
                    // knows of it.
                    if let Some(dot) = self.record_mint(id, &key, old.as_deref(), &versions)? {
                        self.orphans.entry(key).or_default().insert(dot);
                    }
                }
                StorageAction::StoreHint { owner, seq, record } => {
                    let hints = &mut self.nodes.get_mut(&id).unwrap().hints[shard];
                    hints.insert((owner, seq), record);
                }
                _ => {}
            }
        }
        // A write lives until its deadline, later if its coordinator was paused meanwhile.
        let since = self.now.saturating_sub(REQUEST_TIMEOUT + PAUSE_MAX);
        while self.recent_writes.front().is_some_and(|w| w.2 < since) {
            self.recent_writes.pop_front();
        }
        let node = self.nodes.get_mut(&id).unwrap();
        if node.endpoints.iter().any(|e| e.in_flight() > 0) {
            for (_, key, _) in self.recent_writes.iter().filter(|w| w.0 == id) {
                self.unhinted.insert(key.clone());
            }
        }
        node.up = false;
        node.paused_until = None;
        node.incarnation += 1;
        node.endpoints.clear();
        let lost: Vec<(Address, ReqId)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.at.node == id)
            .map(|(&k, _)| k)
            .collect();
        for k in lost {
            let pending = self.pending.remove(&k).unwrap();
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
        Ok(())
    }

    /// Starts a crashed node's next incarnation over its stores.
    fn restart(&mut self, id: NodeId) {
        let node = &self.nodes[&id];
        let endpoints = endpoints(
            id,
            node.incarnation,
            &self.ring,
            &self.shards,
            &node.hints,
            self.now,
        );
        let node = self.nodes.get_mut(&id).unwrap();
        node.endpoints = endpoints;
        node.up = true;
    }

    fn heal(&mut self) {
        self.healed = true;
        self.cut.clear();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if !self.nodes[&id].up {
                self.restart(id);
            }
            self.nodes.get_mut(&id).unwrap().paused_until = None;
        }
    }

    fn addresses(&self) -> Vec<Address> {
        self.shards
            .iter()
            .flat_map(|(&node, &n)| (0..n).map(move |shard| Address { node, shard }))
            .collect()
    }

    /// Runs until `until`: faults and clients every tick (clients only in the fault phase),
    /// due frames and storage, and the endpoints' timers.
    fn run(&mut self, until: Duration) -> Result<(), String> {
        let tick = Duration::from_millis(10);
        let mut next_tick = self.now;
        loop {
            self.events += 1;
            check!(
                self.events < EVENTS_MAX,
                "no progress after {EVENTS_MAX} events"
            );
            let next_due = self.queue.keys().next().map(|&(at, _)| at);
            let next_timer = self
                .nodes
                .iter()
                .filter(|(id, n)| n.up && self.paused_until(**id).is_none())
                .flat_map(|(_, n)| n.endpoints.iter().filter_map(Endpoint::poll_timeout))
                .min();
            let next = [next_due, next_timer, Some(next_tick)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until);
            if next >= until {
                self.now = until;
                return Ok(());
            }
            self.now = self.now.max(next);
            if next_tick <= self.now {
                next_tick += tick;
                self.inject_faults()?;
                self.start_requests()?;
                continue;
            }
            if next_due == Some(next) {
                let ((at, seq), (incarnation, due)) = self.queue.pop_first().unwrap();
                let node = due.node();
                if let Some(resume) = self.paused_until(node) {
                    // A paused process runs nothing: what is due waits for it.
                    self.queue.insert((resume.max(at), seq), (incarnation, due));
                    continue;
                }
                self.handle(incarnation, due)?;
                continue;
            }
            for at in self.addresses() {
                if !self.nodes[&at.node].up || self.paused_until(at.node).is_some() {
                    continue;
                }
                let now = self.now;
                if self.endpoint(at).poll_timeout().is_some_and(|t| t <= now) {
                    self.endpoint(at).handle_timeout(now);
                    self.drain(at)?;
                }
            }
        }
    }

    fn handle(&mut self, incarnation: u64, due: Due) -> Result<(), String> {
        let now = self.now;
        let node = &self.nodes[&due.node()];
        if !node.up || node.incarnation != incarnation {
            // Due to a process that has died since: a frame to it is lost with it.
            return Ok(());
        }
        match due {
            Due::Frame { from, to, frame } => {
                if self.cut.contains(&(from.node, to.node)) {
                    self.lost(to, &frame);
                    return Ok(());
                }
                let sender = self.endpoint(to).handle_frame(now, &frame);
                check!(
                    sender == Ok(from.node),
                    "frame from {from:?} read as {sender:?}"
                );
                self.drain(to)
            }
            Due::Undeliverable { from, to, frame } => {
                self.endpoint(from).handle_undeliverable(now, to, &frame);
                self.drain(from)
            }
            Due::Storage { at, op } => self.storage(at, op),
        }
    }

    /// A frame for `to` is lost: if it carried a mint back to its coordinator, the mint is
    /// an orphan.
    fn lost(&mut self, to: Address, frame: &[u8]) {
        let Ok((req_id, envelope)) = message::decode(frame) else {
            return;
        };
        if let Body::Reply(Reply::Updated { dot, .. }) = envelope.body {
            if let Some(Pending {
                op: Op::Write { key, .. },
                ..
            }) = self.pending.get(&(to, req_id))
            {
                self.orphans.entry(key.clone()).or_default().insert(dot);
            }
        }
    }

    /// Checks that the home replicas of `key` hold the same bytes, or differ only by
    /// orphaned mints.
    fn converged(&self, key: &[u8]) -> Result<(), String> {
        let copies = self.copies(key);
        if copies.len() == 1 {
            return Ok(());
        }
        let states: Vec<DvvSet> = copies
            .iter()
            .map(|c| c.map(|b| DvvSet::decode(b).unwrap()).unwrap_or_default())
            .collect();
        let orphans = self.orphans.get(key).cloned().unwrap_or_default();
        let actors: BTreeSet<NodeId> = states
            .iter()
            .flat_map(|s| s.siblings().iter().map(|x| x.dot.actor))
            .chain(self.nodes.keys().copied())
            .collect();
        for actor in actors {
            let counters: Vec<u64> = states.iter().map(|s| s.context().get(actor)).collect();
            let (lo, hi) = (
                *counters.iter().min().unwrap_or(&0),
                *counters.iter().max().unwrap_or(&0),
            );
            for counter in lo + 1..=hi {
                let dot = Dot { actor, counter };
                check!(
                    orphans.contains(&dot),
                    "replicas of {key:?} differ with hints drained and no reads: {dot:?} is on some only, and its coordinator knew of it: {states:?}"
                );
            }
        }
        Ok(())
    }

    /// When `node` resumes, if it is paused now.
    fn paused_until(&self, node: NodeId) -> Option<Duration> {
        self.nodes[&node]
            .paused_until
            .filter(|&resume| resume > self.now)
    }

    /// Whether everything has settled: no client request, no write waiting for a target,
    /// no hint kept anywhere, and nothing but gossip on its way.
    fn settled(&self) -> bool {
        let only_gossip = |frame: &[u8]| {
            matches!(
                message::decode(frame),
                Ok((_, e)) if matches!(e.body, Body::Gossip { .. } | Body::Members(_))
            )
        };
        self.pending.is_empty()
            && self.nodes.values().all(|n| {
                n.endpoints.iter().all(|e| e.in_flight() == 0)
                    && n.hints.iter().all(BTreeMap::is_empty)
            })
            && self.queue.values().all(|(_, due)| match due {
                Due::Frame { frame, .. } | Due::Undeliverable { frame, .. } => only_gossip(frame),
                Due::Storage { .. } => false,
            })
    }

    /// Every key any replica stores.
    fn stored_keys(&self) -> BTreeSet<Vec<u8>> {
        self.nodes
            .values()
            .flat_map(|n| n.stores.iter().flat_map(|s| s.keys().cloned()))
            .collect()
    }

    /// The copies of `key` its home replicas hold.
    fn copies(&self, key: &[u8]) -> BTreeSet<Option<&Vec<u8>>> {
        let partition = partition_of(key, PARTITIONS);
        self.ring
            .preference_list(partition)
            .iter()
            .map(|id| {
                let shard = shard_of(partition, u32::from(self.shards[id])) as usize;
                self.nodes[id].stores[shard].get(key)
            })
            .collect()
    }

    /// Heals; with no client reads, waits for the hints to drain and checks that every
    /// home replica holds the same bytes; then reads every key with R = N and checks what
    /// survived.
    fn final_checks(&mut self) -> Result<(), String> {
        self.heal();
        let deadline = self.now + SETTLE_MAX;
        while !self.settled() {
            check!(
                self.now < deadline,
                "not settled {SETTLE_MAX:?} after healing: {} requests, hints {:?}",
                self.pending.len(),
                self.nodes
                    .iter()
                    .flat_map(|(id, n)| n.hints.iter().enumerate().map(move |(s, h)| {
                        let owners: Vec<NodeId> = h.keys().map(|(o, _)| *o).collect();
                        let views: Vec<_> = owners
                            .iter()
                            .map(|&o| (o, n.endpoints[s].health(o), n.endpoints[s].hint_stats()))
                            .collect();
                        (id, s, views)
                    }))
                    .filter(|(_, _, v)| !v.is_empty())
                    .collect::<Vec<_>>()
            );
            let step = self.now + Duration::from_millis(100);
            self.run(step)?;
        }
        for key in self.stored_keys() {
            if !self.unhinted.contains(&key) {
                self.stats.convergence_checked += 1;
                self.converged(&key)?;
            }
        }
        let keys: Vec<Vec<u8>> = (0..CHAIN_CLIENTS)
            .map(chain_key)
            .chain((0..SHARED_KEYS).map(shared_key))
            .collect();
        for key in keys {
            let node = 1 + self.rng.below(self.nodes.len() as u64) as NodeId;
            let at = self.random_shard(node);
            let now = self.now;
            let op = Op::Read {
                key: key.clone(),
                r: N,
            };
            self.issue(FINAL_CLIENT, at, op, |e| {
                e.read(now, &key, Consistency::All)
            });
            self.drain(at)?;
            let deadline = self.now + REQUEST_TIMEOUT * 2;
            while self.final_outcome.is_none() && self.now < deadline {
                let step = self.now + Duration::from_millis(10);
                self.run(step)?;
            }
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
            let settle = self.now + REQUEST_TIMEOUT * 2;
            self.run(settle)?;
            check!(
                self.copies(&key).len() == 1,
                "replicas of {key:?} differ after read repair: {:?} read {:?}",
                self.copies(&key)
                    .iter()
                    .map(|c| c.map(|b| DvvSet::decode(b).unwrap()))
                    .collect::<Vec<_>>(),
                state
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
    sim.run(FAULT_PHASE)?;
    sim.final_checks()?;
    for node in sim.nodes.values() {
        for e in &node.endpoints {
            sim.stats.sloppy_writes += e.stats().sloppy_writes;
        }
    }
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
                total.frames += s.frames;
                total.sloppy_writes += s.sloppy_writes;
                total.hints_replayed += s.hints_replayed;
                total.convergence_checked += s.convergence_checked;
            }
            Err(e) => panic!("seed {seed}: {e} (rerun with SIM_SEED={seed})"),
        }
    }
    println!("{} seeds: {total:?}", seeds.len());
    // The checks must have had something to check.
    assert!(total.writes_ok > seeds.len() as u64);
    assert!(total.quorum_reads_checked > 0);
    assert!(total.chains_checked > 0);
    if seeds.len() > 100 {
        assert!(total.sloppy_writes > 0, "some writes went to fallbacks");
        assert!(total.hints_replayed > 0, "some hints were handed off");
        assert!(total.convergence_checked > seeds.len() as u64);
    }
}
