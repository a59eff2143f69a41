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
//! epoch the driver picks; the endpoint never reads a clock.
//!
//! **Routing.** A key's partition decides its replicas (the ring's preference list, see
//! [`crate::ring`]) and, on each replica node, the shard that stores it
//! ([`crate::ring::shard_of`]). The shard that receives a client request coordinates it
//! ([`crate::coordinator`]); the requests it sends its replicas go to `(node, shard)`
//! addresses. A request for this very shard is served here without being encoded; one for
//! another shard of this node is a frame for the shard mesh, one for another node a frame for
//! the peer transport. A replica answers the address the request came from.
//!
//! **Serving** ([`serving`]): a replica reads the key's stored versions, applies the request
//! ([`crate::replica`]), writes the result durably and only then answers. Requests that
//! change a key run one at a time per key, so a read-modify-write never interleaves with
//! another on the same key; reads do not wait.
//!
//! **Liveness** ([`liveness`]): a node whose frames could not be delivered is believed down
//! until a frame arrives from it. Down replicas are asked last to mint a write, so a write
//! does not wait on a node known to be gone.

mod liveness;
mod serving;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::NodeId;
use crate::consistency::Consistency;
use crate::coordinator::{Coordinator, Failure, Outcome};
use crate::frame::FrameBuf;
use crate::message::{self, Body, Envelope, Reply, ReqId, Request, WireError, WriteContext};
use crate::partition::partition_of;
use crate::ring::{Ring, shard_of};

use self::liveness::Liveness;
use self::serving::{Origin, Serving};

pub use self::serving::{Completion, StorageAction, StorageOp, StorageToken};

/// Where a message goes: one shard of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub node: NodeId,
    pub shard: u16,
}

/// What an endpoint needs to know of its cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub me: NodeId,
    /// This shard of it.
    pub shard: u16,
    pub ring: Ring,
    /// How many shards each member runs, by node id; every ring member has an entry.
    pub shards: BTreeMap<NodeId, u16>,
    /// How long a client request may wait for its replicas.
    pub timeout: Duration,
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
    /// Replica requests the transport could not deliver.
    pub send_failures: u64,
}

/// One shard's cluster protocol. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    coordinator: Coordinator,
    serving: Serving,
    liveness: Liveness,
    next_req: ReqId,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Endpoint {
    pub fn new(config: Config) -> Endpoint {
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
        Endpoint {
            serving: Serving::new(config.me),
            config,
            coordinator: Coordinator::new(),
            liveness: Liveness::default(),
            next_req: 1,
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
        self.stats
    }

    /// Client requests in progress (reads finishing their repair included).
    pub fn in_flight(&self) -> usize {
        self.coordinator.in_flight()
    }

    /// Whether this endpoint believes `node` is up (see the module docs).
    pub fn is_up(&self, node: NodeId) -> bool {
        node == self.config.me || self.liveness.is_up(node)
    }

    /// Starts a read of `key` answered after `r` replicas replied; its outcome comes as an
    /// [`Event::Completed`] with the returned id.
    pub fn read(&mut self, now: Duration, key: &[u8], r: Consistency) -> ReqId {
        let req_id = self.next_request();
        let replicas = self.replicas(key);
        self.stats.reads += 1;
        let timeout = self.config.timeout;
        self.coordinator
            .get(now, req_id, key.to_vec(), &replicas, r, timeout);
        self.pump();
        req_id
    }

    /// Starts a write of `value` (`None`: delete) superseding `context`, acknowledged after
    /// `w` replicas stored it.
    pub fn write(
        &mut self,
        now: Duration,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: WriteContext,
        w: Consistency,
    ) -> ReqId {
        let req_id = self.next_request();
        let replicas = self.replicas(key);
        self.stats.writes += 1;
        let timeout = self.config.timeout;
        self.coordinator.put(
            now,
            req_id,
            key.to_vec(),
            value,
            context,
            &replicas,
            w,
            timeout,
        );
        self.pump();
        req_id
    }

    /// A frame from another shard. Returns the sending node, or why the frame is not a
    /// message (the driver closes the connection it came on).
    pub fn handle_frame(&mut self, _now: Duration, frame: &[u8]) -> Result<NodeId, WireError> {
        let (req_id, envelope) = message::decode(frame)?;
        let Envelope {
            from,
            from_shard,
            body,
        } = envelope;
        self.liveness.heard_from(from);
        match body {
            Body::Request(request) => {
                self.stats.replica_requests += 1;
                let origin = Origin::Remote(Address {
                    node: from,
                    shard: from_shard,
                });
                if self.shard_for(self.config.me, request.key()) == Some(self.config.shard) {
                    self.serving.accept(origin, req_id, request);
                } else {
                    // A sender whose ring disagrees with ours: refuse rather than store the
                    // key where reads will not look.
                    self.reply(origin, req_id, Reply::Failed);
                }
            }
            Body::Reply(reply) => self.coordinator.handle_reply(from, req_id, reply),
        }
        self.pump();
        Ok(from)
    }

    /// A frame this endpoint sent to `to` that the transport could not deliver. A request
    /// counts as that replica failing now; a lost reply is its coordinator's deadline's
    /// business.
    pub fn handle_undeliverable(&mut self, _now: Duration, to: Address, frame: &[u8]) {
        let Ok((req_id, envelope)) = message::decode(frame) else {
            debug_assert!(false, "the endpoint only sends frames it encoded");
            return;
        };
        if let Body::Request(_) = envelope.body {
            self.stats.send_failures += 1;
            if to.node != self.config.me {
                self.liveness.unreachable(to.node);
            }
            self.coordinator
                .handle_reply(to.node, req_id, Reply::Failed);
            self.pump();
        }
    }

    /// A storage operation from [`Endpoint::poll_storage`] finished.
    pub fn handle_storage(
        &mut self,
        _now: Duration,
        token: StorageToken,
        completion: Completion<'_>,
    ) {
        self.serving.complete(token, completion);
        self.pump();
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.coordinator.handle_timeout(now);
        self.pump();
    }

    /// The next frame to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next storage operation to run; its completion goes to [`Endpoint::handle_storage`].
    #[must_use]
    pub fn poll_storage(&mut self) -> Option<StorageOp> {
        self.serving.poll_storage()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Endpoint::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.coordinator.poll_timeout()
    }

    fn next_request(&mut self) -> ReqId {
        let id = self.next_req;
        self.next_req += 1;
        id
    }

    /// The shard of `node` that stores `key`; `None` for a node outside the ring.
    fn shard_for(&self, node: NodeId, key: &[u8]) -> Option<u16> {
        let shards = *self.config.shards.get(&node)?;
        let partition = partition_of(key, self.config.ring.partitions());
        Some(shard_of(partition, u32::from(shards)) as u16)
    }

    /// The key's replicas in the order the coordinator should ask them to mint a write: this
    /// node first (no network hop), then those believed up, then the rest.
    fn replicas(&self, key: &[u8]) -> Vec<NodeId> {
        let me = self.config.me;
        let list = self.config.ring.preference_list_for_key(key);
        let mut ordered = Vec::with_capacity(list.len());
        if list.contains(&me) {
            ordered.push(me);
        }
        let others = || list.iter().copied().filter(|&n| n != me);
        ordered.extend(others().filter(|&n| self.liveness.is_up(n)));
        ordered.extend(others().filter(|&n| !self.liveness.is_up(n)));
        ordered
    }

    /// Moves what the coordinator and the serving side produced to where it goes, until
    /// neither has anything left (a local reply can make the coordinator send more).
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.coordinator.poll_transmit() {
                moved = true;
                self.route_request(t.to, t.req_id, t.request);
            }
            while let Some((origin, req_id, reply)) = self.serving.poll_reply() {
                moved = true;
                self.reply(origin, req_id, reply);
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

    /// Sends a coordinator's request to replica node `to`: served here when this shard
    /// stores the key, else encoded for the shard that does.
    fn route_request(&mut self, to: NodeId, req_id: ReqId, request: Request) {
        let Some(shard) = self.shard_for(to, request.key()) else {
            self.coordinator.handle_reply(to, req_id, Reply::Failed);
            return;
        };
        let address = Address { node: to, shard };
        if address == self.address() {
            self.serving.accept(Origin::Local, req_id, request);
            return;
        }
        match self.encode(req_id, Body::Request(request)) {
            Ok(frame) => self.transmits.push_back(Transmit { to: address, frame }),
            Err(_) => self.coordinator.handle_reply(to, req_id, Reply::Failed),
        }
    }

    /// Answers a replica request where it came from.
    fn reply(&mut self, origin: Origin, req_id: ReqId, reply: Reply) {
        match origin {
            Origin::Local => self.coordinator.handle_reply(self.config.me, req_id, reply),
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
            body,
        };
        message::encode(req_id, &envelope)
    }
}
