//! One shard's end of the cluster protocol, sans-IO in the style of quinn-proto's `Endpoint`:
//! the node creates one per shard, and the simulator drives the same object.
//!
//! Inputs:
//! - client requests: [`Endpoint::read`] and [`Endpoint::write`], which return the request's
//!   id;
//! - frames from other shards, of this node or another: [`Endpoint::handle_frame`];
//! - frames the transport could not deliver: [`Endpoint::handle_undeliverable`];
//! - completions of the storage operations it asked for: [`Endpoint::handle_storage`];
//! - the time: [`Endpoint::handle_timeout`], once [`Endpoint::poll_timeout`] has passed.
//!
//! After any input the driver drains the outputs: [`Endpoint::poll_transmit`] (frames to
//! send), [`Endpoint::poll_storage`] (reads and durable writes of this shard's store) and
//! [`Endpoint::poll_event`] (client outcomes and notices). Time is a [`Duration`] since an
//! epoch the driver picks (the same for every call); the endpoint never reads a clock.
//!
//! **Routing.** A key's partition decides its replicas (the ring's preference list, see
//! [`crate::ring`]) and, on each replica node, the shard that stores it
//! ([`crate::ring::shard_of`]). The shard that receives a client request coordinates it
//! ([`crate::coordinator`]); the requests it sends go to `(node, shard)` addresses. A request
//! for this very shard is served here without being encoded; one for another shard of this
//! node is a frame for the shard mesh, one for another node a frame for the peer transport.
//! A replica answers the address the request came from.
//!
//! **Liveness** ([`gossip`]): shard 0 gossips the member table and judges every member with
//! a phi accrual detector; the other shards follow its reports. Reads skip members judged
//! down; a write to a home replica judged down goes to the next healthy node past the
//! preference list instead, as a hint for it (sloppy quorum), unless the write is strict.
//!
//! **Serving** ([`serving`]): a replica reads the key's stored versions, applies the request
//! ([`crate::replica`]), writes the result durably and only then answers. Requests that
//! change a key run one at a time per key; reads do not wait.
//!
//! **Handoff** ([`handoff`]): hints this shard keeps, for fallbacks' `Hinted` puts and for
//! targets its own writes did not reach, replayed when their owner is up.
//!
//! **Views.** Every message carries the sender's [`ClusterView`] hash. A message from a node
//! whose view differs is not served: the sender gets our view back (`Refused`) and both
//! sides report the mismatch ([`Event::ViewMismatch`]), so a misconfigured member is refused
//! loudly instead of half-served.

pub mod gossip;
mod handoff;
mod serving;
mod storage;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::NodeId;
use crate::consistency::Consistency;
use crate::coordinator::{Coordinator, Failure, Outcome, Target};
use crate::frame::FrameBuf;
use crate::membership::{ClusterView, Health, HealthChange};
use crate::message::{
    self, Body, Envelope, MemberReport, Reply, ReqId, Request, WireError, WriteContext,
};
use crate::partition::partition_of;
use crate::ring::{Ring, shard_of};

use self::gossip::{Liveness, Outgoing};
use self::handoff::{Handoff, REQUEST_BIT, TOKEN_BIT};
use self::serving::{Origin, Serving};

pub use self::gossip::GossipConfig;
pub use self::handoff::{HintConfig, HintStats};
pub use self::storage::{Completion, StorageAction, StorageOp, StorageToken, StoredHint};

/// How often a shard holding hints looks at its replay: the replay's pace between replies.
pub const HANDOFF_TICK: Duration = Duration::from_millis(10);
/// Least time between two refusals sent to, and two mismatches reported of, one node: a
/// misconfigured member's every message should not cost a reply and a log line.
pub const REFUSAL_INTERVAL: Duration = Duration::from_secs(1);

/// Where a message goes: one shard of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub node: NodeId,
    pub shard: u16,
}

/// What an endpoint needs to know of its node and cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub me: NodeId,
    /// This shard of it; shard 0 gossips.
    pub shard: u16,
    /// This node's incarnation: greater at every start.
    pub generation: u64,
    pub ring: Ring,
    /// How many shards each member runs, by node id; every ring member has an entry.
    pub shards: BTreeMap<NodeId, u16>,
    /// Who the members are, as this node's configuration says.
    pub view: ClusterView,
    /// How long a client request may wait for its replicas.
    pub timeout: Duration,
    pub gossip: GossipConfig,
    pub hints: HintConfig,
    /// The wall clock, in ms since the Unix epoch, when `now` was zero: hints are stamped
    /// with it plus `now`, and expire by it across restarts.
    pub wall_ms_at_epoch: u64,
    /// The hints this shard's store holds already.
    pub stored_hints: Vec<StoredHint>,
    /// Seeds the choice of gossip partners.
    pub seed: u64,
}

/// A frame for the driver to deliver.
#[derive(Debug)]
pub struct Transmit {
    pub to: Address,
    pub frame: FrameBuf,
}

/// Something the driver must act on or may report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client request finished.
    Completed { req_id: ReqId, outcome: Outcome },
    /// A write left a key with this many siblings, over [`crate::dvv::SIBLINGS_WARN`]:
    /// its writers are not passing contexts back.
    ManySiblings { key: Vec<u8>, siblings: usize },
    /// This shard's judgment of a member changed (shard 0 judges; the others follow it).
    Health {
        node: NodeId,
        health: Health,
        generation: u64,
    },
    /// A node's view of the membership differs from ours; `theirs` when it said what it is.
    /// Nothing is served between us until the configurations agree.
    ViewMismatch {
        node: NodeId,
        ours: ClusterView,
        theirs: Option<ClusterView>,
    },
}

/// Counters since the endpoint was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client reads and writes this shard coordinated.
    pub reads: u64,
    pub writes: u64,
    /// Client requests that failed for want of replicas, and for want of time.
    pub unavailable: u64,
    pub timeouts: u64,
    /// Replica requests served for other shards and nodes.
    pub replica_requests: u64,
    /// Frames the transport could not deliver.
    pub send_failures: u64,
    /// Writes sent to a fallback for a home replica judged down.
    pub sloppy_writes: u64,
    /// Messages refused for a different view.
    pub refused: u64,
    /// Hint records found damaged in the store.
    pub corrupt_hints: u64,
}

/// One shard's cluster protocol. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    view_hash: u64,
    coordinator: Coordinator,
    serving: Serving,
    handoff: Handoff,
    liveness: Liveness,
    next_req: ReqId,
    next_handoff: Option<Duration>,
    /// When each node was last refused.
    refusals: BTreeMap<NodeId, Duration>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Endpoint {
    /// An endpoint starting at `now`.
    pub fn new(config: Config, now: Duration) -> Endpoint {
        assert!(
            config
                .ring
                .members()
                .iter()
                .all(|m| config.shards.get(&m.id).is_some_and(|&s| s > 0)),
            "every ring member has a shard count"
        );
        assert!(
            config.shard < config.shards.get(&config.me).copied().unwrap_or(0),
            "this shard exists on this node"
        );
        let members: Vec<NodeId> = config.ring.members().iter().map(|m| m.id).collect();
        let liveness = Liveness::new(
            now,
            config.me,
            config.shard == 0,
            config.generation,
            &members,
            config.view.clone(),
            config.gossip,
            config.seed ^ config.generation ^ u64::from(config.me),
        );
        let handoff = Handoff::new(config.hints, &config.stored_hints);
        let next_handoff = (!handoff.is_idle()).then_some(now);
        Endpoint {
            view_hash: config.view.hash(),
            serving: Serving::new(config.me),
            handoff,
            liveness,
            config,
            coordinator: Coordinator::new(),
            next_req: 1,
            next_handoff,
            refusals: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn address(&self) -> Address {
        Address {
            node: self.config.me,
            shard: self.config.shard,
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            corrupt_hints: self.handoff.corrupt(),
            ..self.stats
        }
    }

    /// This shard's hints, per owner.
    pub fn hint_stats(&self) -> Vec<(NodeId, HintStats)> {
        self.handoff.stats()
    }

    /// Every member as this shard knows it at `now`.
    pub fn members(&self, now: Duration) -> Vec<MemberReport> {
        self.liveness.reports_at(now)
    }

    /// Client requests in progress (reads finishing their repair included).
    pub fn in_flight(&self) -> usize {
        self.coordinator.in_flight()
    }

    /// Records this node's data size, which shard 0 gossips with its heartbeat.
    pub fn set_load(&mut self, bytes: u64) {
        self.liveness.set_load(bytes);
    }

    /// This shard's judgment of `node`.
    pub fn health(&self, node: NodeId) -> Health {
        self.liveness.health(node)
    }

    /// Starts a read of `key` answered after `r` of its replicas replied; replicas judged
    /// down are not asked. The outcome comes as an [`Event::Completed`] with the returned id.
    pub fn read(&mut self, now: Duration, key: &[u8], r: Consistency) -> ReqId {
        let req_id = self.next_request();
        let n = self.config.ring.replicas();
        let replicas: Vec<NodeId> = self
            .home_order(key)
            .into_iter()
            .filter(|&node| self.liveness.health(node) != Health::Down)
            .collect();
        self.stats.reads += 1;
        let timeout = self.config.timeout;
        self.coordinator
            .get(now, req_id, key.to_vec(), &replicas, r.required(n), timeout);
        self.pump(now);
        req_id
    }

    /// Starts a write of `value` (`None`: delete) superseding `context`, acknowledged after
    /// `w` targets stored it; `strict` counts home replicas only and sends nothing to
    /// fallbacks.
    pub fn write(
        &mut self,
        now: Duration,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: WriteContext,
        w: Consistency,
        strict: bool,
    ) -> ReqId {
        let req_id = self.next_request();
        let targets = self.targets(key, strict);
        if targets.iter().any(|t| t.stands_in_for.is_some()) {
            self.stats.sloppy_writes += 1;
        }
        self.stats.writes += 1;
        let (needed, timeout) = (w.required(self.config.ring.replicas()), self.config.timeout);
        self.coordinator.put(
            now,
            req_id,
            key.to_vec(),
            value,
            context,
            &targets,
            needed,
            strict,
            timeout,
        );
        self.pump(now);
        req_id
    }

    /// A frame from another shard. Returns the sending node, or why the frame is not a
    /// message (the driver closes the connection it came on).
    pub fn handle_frame(&mut self, now: Duration, frame: &[u8]) -> Result<NodeId, WireError> {
        let (req_id, envelope) = message::decode(frame)?;
        let Envelope {
            from,
            from_shard,
            view,
            body,
        } = envelope;
        let origin = Address {
            node: from,
            shard: from_shard,
        };
        if view != self.view_hash {
            self.refuse(now, origin, body);
            self.pump(now);
            return Ok(from);
        }
        self.liveness.heard_from(from);
        match body {
            Body::Request(request) => self.accept(now, origin, req_id, request),
            Body::Reply(reply) => self.on_reply(now, from, req_id, reply),
            Body::Gossip { reply, entries, .. } => {
                let (out, changes) = self.liveness.on_gossip(now, from, reply, &entries);
                self.gossiped(out, changes);
            }
            Body::Members(reports) => {
                let changes = self.liveness.on_reports(now, reports);
                self.gossiped(Vec::new(), changes);
            }
            // A refusal always comes in the refuser's view, which differs from ours.
            Body::Refused(_) => {}
        }
        self.pump(now);
        Ok(from)
    }

    /// A frame this endpoint sent to `to` that the transport could not deliver. A request
    /// counts as that target failing now (a write then owes it a hint); a lost reply is its
    /// coordinator's deadline's business.
    pub fn handle_undeliverable(&mut self, now: Duration, to: Address, frame: &[u8]) {
        let Ok((req_id, envelope)) = message::decode(frame) else {
            debug_assert!(false, "the endpoint only sends frames it encoded");
            return;
        };
        self.stats.send_failures += 1;
        if let Body::Request(_) = envelope.body {
            if to.node != self.config.me {
                self.liveness.unreachable(to.node);
            }
            self.on_reply(now, to.node, req_id, Reply::Failed);
            self.pump(now);
        }
    }

    /// A storage operation from [`Endpoint::poll_storage`] finished.
    pub fn handle_storage(
        &mut self,
        now: Duration,
        token: StorageToken,
        completion: Completion<'_>,
    ) {
        if token & TOKEN_BIT != 0 {
            self.handoff.complete(now, token, completion);
            self.wake_handoff(now);
        } else {
            self.serving.complete(token, &completion);
        }
        self.pump(now);
    }

    /// Fires every deadline at or before `now`: request timeouts, a gossip round, the
    /// handoff's pace.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.coordinator.handle_timeout(now);
        let (out, changes) = self.liveness.tick(now);
        self.gossiped(out, changes);
        if self.next_handoff.is_some_and(|at| at <= now) {
            self.next_handoff = None;
            self.tick_handoff(now);
        }
        self.pump(now);
    }

    /// The next frame to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next storage operation to run; its completion goes to [`Endpoint::handle_storage`].
    #[must_use]
    pub fn poll_storage(&mut self) -> Option<StorageOp> {
        self.serving
            .poll_storage()
            .or_else(|| self.handoff.poll_storage())
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Endpoint::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        [
            self.coordinator.poll_timeout(),
            self.liveness.poll_timeout(),
            self.next_handoff,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn next_request(&mut self) -> ReqId {
        let id = self.next_req;
        self.next_req += 1;
        debug_assert!(id & REQUEST_BIT == 0, "client ids stay below the handoff's");
        id
    }

    fn wall_ms(&self, now: Duration) -> u64 {
        self.config.wall_ms_at_epoch + now.as_millis() as u64
    }

    /// The shard of `node` that stores `key`; `None` for a node outside the ring.
    fn shard_for(&self, node: NodeId, key: &[u8]) -> Option<u16> {
        let shards = *self.config.shards.get(&node)?;
        let partition = partition_of(key, self.config.ring.partitions());
        Some(shard_of(partition, u32::from(shards)) as u16)
    }

    /// The key's home replicas, in the order to ask them: this node first (no network hop),
    /// then those preferred (not down, reachable lately), then the rest.
    fn home_order(&self, key: &[u8]) -> Vec<NodeId> {
        let me = self.config.me;
        let list = self.config.ring.preference_list_for_key(key);
        let mut ordered = Vec::with_capacity(list.len());
        if list.contains(&me) {
            ordered.push(me);
        }
        let others = || list.iter().copied().filter(|&n| n != me);
        ordered.extend(others().filter(|&n| self.liveness.is_preferred(n)));
        ordered.extend(others().filter(|&n| !self.liveness.is_preferred(n)));
        ordered
    }

    /// A write's targets: each home replica, or for one judged down the next fallback not
    /// down (unless `strict`, or none is left: then the home replica itself, which owes it a
    /// hint when the write cannot reach it).
    fn targets(&self, key: &[u8], strict: bool) -> Vec<Target> {
        let homes = self.home_order(key);
        let mut fallbacks = if strict {
            Vec::new()
        } else {
            let partition = partition_of(key, self.config.ring.partitions());
            self.config.ring.fallbacks(partition)
        }
        .into_iter()
        .filter(|&n| self.liveness.health(n) != Health::Down);
        let mut targets: Vec<Target> = Vec::with_capacity(homes.len());
        let mut stand_ins = Vec::new();
        for home in homes {
            if self.liveness.health(home) == Health::Down {
                if let Some(node) = fallbacks.next() {
                    stand_ins.push(Target {
                        node,
                        stands_in_for: Some(home),
                    });
                    continue;
                }
            }
            targets.push(Target::home(home));
        }
        targets.extend(stand_ins);
        targets
    }

    /// A replica request from another shard.
    fn accept(&mut self, now: Duration, origin: Address, req_id: ReqId, request: Request) {
        self.stats.replica_requests += 1;
        let origin = Origin::Remote(origin);
        if self.shard_for(self.config.me, request.key()) != Some(self.config.shard) {
            // The sender's ring disagrees with ours: refuse rather than store the key where
            // reads will not look.
            self.reply(now, origin, req_id, Reply::Failed);
            return;
        }
        self.serve(now, origin, req_id, request);
    }

    fn serve(&mut self, now: Duration, origin: Origin, req_id: ReqId, request: Request) {
        match request {
            Request::Hinted {
                key,
                versions,
                owner,
            } => {
                let wall_ms = self.wall_ms(now);
                self.handoff
                    .take(wall_ms, owner, key, versions, Some((origin, req_id)));
                self.next_handoff.get_or_insert(now);
            }
            request => self.serving.accept(origin, req_id, request),
        }
    }

    fn on_reply(&mut self, now: Duration, from: NodeId, req_id: ReqId, reply: Reply) {
        if req_id & REQUEST_BIT != 0 {
            self.handoff.on_reply(now, req_id, &reply);
            self.wake_handoff(now);
        } else {
            self.coordinator.handle_reply(from, req_id, reply);
        }
    }

    /// A message in another view: not served. The sender learns our view (unless it was
    /// itself refusing ours), and the mismatch is reported, each at most once per
    /// [`REFUSAL_INTERVAL`] per node.
    fn refuse(&mut self, now: Duration, from: Address, body: Body) {
        self.stats.refused += 1;
        self.liveness.refused_by(from.node);
        let (theirs, answer) = match body {
            Body::Refused(view) => (Some(view), false),
            Body::Gossip { view, .. } => (Some(view), true),
            Body::Request(_) | Body::Reply(_) | Body::Members(_) => (None, true),
        };
        let last = self.refusals.get(&from.node).copied();
        if last.is_some_and(|at| now < at + REFUSAL_INTERVAL) {
            return;
        }
        self.refusals.insert(from.node, now);
        let ours = self.liveness.view().clone();
        if answer {
            if let Ok(frame) = self.encode(0, Body::Refused(ours.clone())) {
                self.transmits.push_back(Transmit { to: from, frame });
            }
        }
        self.events.push_back(Event::ViewMismatch {
            node: from.node,
            ours,
            theirs,
        });
    }

    fn gossiped(&mut self, out: Vec<Outgoing>, changes: Vec<HealthChange>) {
        for change in changes {
            self.events.push_back(Event::Health {
                node: change.id,
                health: change.health,
                generation: change.generation,
            });
        }
        for o in out {
            match o {
                Outgoing::Peer(node, body) => {
                    let to = Address { node, shard: 0 };
                    if let Ok(frame) = self.encode(0, body) {
                        self.transmits.push_back(Transmit { to, frame });
                    }
                }
                Outgoing::Local(body) => {
                    let shards = self.config.shards[&self.config.me];
                    for shard in (0..shards).filter(|&s| s != self.config.shard) {
                        let to = Address {
                            node: self.config.me,
                            shard,
                        };
                        if let Ok(frame) = self.encode(0, body.clone()) {
                            self.transmits.push_back(Transmit { to, frame });
                        }
                    }
                }
            }
        }
    }

    fn wake_handoff(&mut self, now: Duration) {
        if !self.handoff.is_idle() {
            self.tick_handoff(now);
        }
    }

    fn tick_handoff(&mut self, now: Duration) {
        let wall_ms = self.wall_ms(now);
        let liveness = &self.liveness;
        self.handoff
            .tick(now, wall_ms, |owner| liveness.health(owner) == Health::Up);
        if !self.handoff.is_idle() {
            let next = now + HANDOFF_TICK;
            self.next_handoff = Some(self.next_handoff.map_or(next, |at| at.min(next)));
        }
    }

    /// Moves what the coordinator, the serving side and the handoff produced to where it
    /// goes, until none has anything left (a local reply can make the coordinator send more).
    fn pump(&mut self, now: Duration) {
        loop {
            let mut moved = false;
            while let Some(t) = self.coordinator.poll_transmit() {
                moved = true;
                self.route_request(now, t.to, t.req_id, t.request);
            }
            while let Some((owner, req_id, put)) = self.handoff.poll_replay() {
                moved = true;
                self.route_request(now, owner, req_id, put);
            }
            while let Some((origin, req_id, reply)) = self
                .serving
                .poll_reply()
                .or_else(|| self.handoff.poll_reply())
            {
                moved = true;
                self.reply(now, origin, req_id, reply);
            }
            while let Some(late) = self.coordinator.poll_late_mint() {
                moved = true;
                let wall_ms = self.wall_ms(now);
                let owners = self.config.ring.preference_list_for_key(&late.key).to_vec();
                for owner in owners.into_iter().filter(|&o| o != late.minted_by) {
                    let (key, versions) = (late.key.clone(), late.versions.clone());
                    self.handoff.take(wall_ms, owner, key, versions, None);
                }
                self.next_handoff.get_or_insert(now);
            }
            while let Some(hint) = self.coordinator.poll_hint() {
                moved = true;
                let wall_ms = self.wall_ms(now);
                self.handoff
                    .take(wall_ms, hint.owner, hint.key, hint.versions, None);
                self.next_handoff.get_or_insert(now);
            }
            while let Some((key, siblings)) = self.serving.poll_many_siblings() {
                self.events.push_back(Event::ManySiblings { key, siblings });
            }
            while let Some(done) = self.coordinator.poll_result() {
                if let Outcome::Read(Err(f)) | Outcome::Write(Err(f)) = &done.outcome {
                    match f {
                        Failure::Unavailable { .. } => self.stats.unavailable += 1,
                        Failure::Timeout { .. } => self.stats.timeouts += 1,
                    }
                }
                self.events.push_back(Event::Completed {
                    req_id: done.req_id,
                    outcome: done.outcome,
                });
            }
            if !moved {
                return;
            }
        }
    }

    /// Sends a request to node `to`: served here when this shard stores the key, else
    /// encoded for the shard that does.
    fn route_request(&mut self, now: Duration, to: NodeId, req_id: ReqId, request: Request) {
        let Some(shard) = self.shard_for(to, request.key()) else {
            self.on_reply(now, to, req_id, Reply::Failed);
            return;
        };
        let address = Address { node: to, shard };
        if address == self.address() {
            self.serve(now, Origin::Local, req_id, request);
            return;
        }
        match self.encode(req_id, Body::Request(request)) {
            Ok(frame) => self.transmits.push_back(Transmit { to: address, frame }),
            Err(_) => self.on_reply(now, to, req_id, Reply::Failed),
        }
    }

    /// Answers a replica request where it came from.
    fn reply(&mut self, now: Duration, origin: Origin, req_id: ReqId, reply: Reply) {
        match origin {
            Origin::Local => {
                let me = self.config.me;
                self.on_reply(now, me, req_id, reply);
            }
            Origin::Remote(to) => {
                // An unencodable reply is a lost reply: the coordinator's deadline decides.
                if let Ok(frame) = self.encode(req_id, Body::Reply(reply)) {
                    self.transmits.push_back(Transmit { to, frame });
                }
            }
        }
    }

    fn encode(&self, req_id: ReqId, body: Body) -> Result<FrameBuf, WireError> {
        let envelope = Envelope {
            from: self.config.me,
            from_shard: self.config.shard,
            view: self.view_hash,
            body,
        };
        message::encode(req_id, &envelope)
    }
}
