//! The node's side of the cluster: drives one sans-IO [`Coordinator`] per shard, and serves
//! replica requests against the shard's store.
//!
//! The shard that receives a client request coordinates it. It asks the key's replicas (the
//! ring's preference list, this node first when it is one, then nodes the transport
//! believes up) and answers the client when the coordinator says so. A message to a replica
//! takes one of three paths:
//!
//! - this node, this shard owns the key's partition: served in a local task;
//! - this node, another shard owns it: a [`ShardOp::Replica`] over the shard mesh;
//! - another node: a [`PeerMessage`] frame to the owning shard's peer port. The replica
//!   answers with a message back to the sending node and shard (`from`, `from_shard`).
//!
//! A message that cannot be sent (peer down, queue full) counts as that replica answering
//! `Failed` at once, so a write moves on to the next replica and a read that cannot reach R
//! replicas fails fast with `-UNAVAILABLE` instead of waiting for its deadline. A message
//! lost in flight is only noticed at the request's deadline (`-TIMEOUT`).
//!
//! Everything runs on the shard's own executor: the coordinator and the waiting clients sit
//! in `RefCell`s that are never borrowed across an await.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rkyv::rancor;
use shoal_cluster::NodeId;
use shoal_cluster::consistency::Consistency;
use shoal_cluster::coordinator::{Coordinator, Failure, Outcome, Transmit, Written};
use shoal_cluster::dvv::{DvvSet, SIBLINGS_MAX, SIBLINGS_WARN};
use shoal_cluster::message::{Reply, ReqId, Request, WriteContext};
use shoal_cluster::partition::partition_of;
use shoal_cluster::replica;
use shoal_cluster::ring::{Ring, shard_of};
use shoal_engine::fs::FileSystem;

use crate::cluster::peer::{Inbound, Peers};
use crate::config::ClusterConfig;
use crate::mesh::frame::FrameBuf;
use crate::mesh::message::{
    ArchivedPeerMessage, PeerBody, PeerMessage, ReplicaReply, ReplicaRequest, ShardOp, ShardReply,
};
use crate::mesh::{Mesh, encode};
use crate::shard::store::{Store, Value};
use crate::shard::{Counters, Shard};

/// How often a shard fires the coordinator's expired deadlines: a request fails at most
/// this long after its timeout, which is small next to any sensible timeout.
pub const TICK: Duration = Duration::from_millis(10);

/// A client request's answer, once the coordinator has one.
#[derive(Default)]
struct Waiter {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
}

/// One shard's cluster driver.
pub struct Driver {
    me: NodeId,
    shard: Rc<Shard>,
    mesh: Rc<Mesh>,
    peers: Rc<Peers>,
    ring: Ring,
    config: ClusterConfig,
    coordinator: RefCell<Coordinator>,
    waiters: RefCell<HashMap<ReqId, Waiter>>,
    next_req: Cell<ReqId>,
    epoch: Instant,
}

impl Driver {
    pub fn new(
        config: ClusterConfig,
        ring: Ring,
        shard: Rc<Shard>,
        mesh: Rc<Mesh>,
        peers: Rc<Peers>,
    ) -> Rc<Driver> {
        let driver = Rc::new(Driver {
            me: config.me,
            shard,
            mesh,
            peers: Rc::clone(&peers),
            ring,
            config,
            coordinator: RefCell::new(Coordinator::new()),
            waiters: RefCell::new(HashMap::new()),
            next_req: Cell::new(1),
            epoch: Instant::now(),
        });
        let weak = Rc::downgrade(&driver);
        peers.on_dropped(Rc::new(move |node, frame| {
            if let Some(driver) = weak.upgrade() {
                driver.dropped(node, frame);
            }
        }));
        driver
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Client requests in progress (reads finishing their repair included).
    pub fn in_flight(&self) -> usize {
        self.coordinator.borrow().in_flight()
    }

    fn counters(&self) -> &Counters {
        &self.shard.counters
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Starts a read of `key` from R replicas; the returned future yields the merged versions
    /// (`None`: no replica has the key). Requests started before awaiting run together.
    pub fn read(self: &Rc<Self>, key: &[u8], r: Consistency) -> Pending {
        let req_id = self.register();
        let replicas = self.replicas(key);
        Counters::add(&self.counters().cluster_reads, 1);
        let (now, timeout) = (self.now(), self.config.timeout);
        self.coordinator
            .borrow_mut()
            .get(now, req_id, key.to_vec(), &replicas, r, timeout);
        self.pump();
        self.pending(req_id)
    }

    /// Starts a write of `value` (`None`: delete) superseding `context`, acknowledged by W
    /// replicas.
    pub fn write(
        self: &Rc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: WriteContext,
        w: Consistency,
    ) -> Pending {
        let req_id = self.register();
        let replicas = self.replicas(key);
        Counters::add(&self.counters().cluster_writes, 1);
        let (now, timeout) = (self.now(), self.config.timeout);
        self.coordinator.borrow_mut().put(
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
        self.pending(req_id)
    }

    /// Fires expired deadlines; called every [`TICK`].
    pub fn tick(self: &Rc<Self>) {
        let now = self.now();
        self.coordinator.borrow_mut().handle_timeout(now);
        self.pump();
    }

    /// A frame from another node's shard.
    pub fn handle_inbound(self: &Rc<Self>, inbound: Inbound) {
        let message = match decode_peer(inbound.payload()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable peer message dropped");
                return;
            }
        };
        self.peers.heard_from(message.from);
        let req_id = inbound.request_id();
        match message.body {
            PeerBody::Reply(reply) => self.on_reply(message.from, req_id, reply.into()),
            PeerBody::Request(request) => {
                Counters::add(&self.counters().replica_requests, 1);
                let driver = Rc::clone(self);
                glommio::spawn_local(async move {
                    let reply = driver.serve_here(request).await;
                    driver.send_reply(message.from, message.from_shard, req_id, reply);
                })
                .detach();
            }
        }
    }

    /// A message the transport accepted but could not deliver: for a request, the replica
    /// counts as failed now (replies are the other coordinator's deadline's business).
    fn dropped(self: &Rc<Self>, node: NodeId, frame: &FrameBuf) {
        let Ok((req_id, payload)) = crate::mesh::frame::open(frame) else {
            return;
        };
        if let Ok(PeerMessage {
            body: PeerBody::Request(_),
            ..
        }) = decode_peer(payload)
        {
            Counters::add(&self.counters().replica_send_failures, 1);
            self.on_reply(node, req_id, Reply::Failed);
        }
    }

    /// The key's replicas in the order the coordinator should try them: this node first (a
    /// write is then minted without a network hop), then the reachable ones.
    fn replicas(&self, key: &[u8]) -> Vec<NodeId> {
        let list = self.ring.preference_list_for_key(key);
        let mut ordered = Vec::with_capacity(list.len());
        if list.contains(&self.me) {
            ordered.push(self.me);
        }
        let others = || list.iter().copied().filter(|&n| n != self.me);
        ordered.extend(others().filter(|&n| self.peers.is_up(n)));
        ordered.extend(others().filter(|&n| !self.peers.is_up(n)));
        ordered
    }

    fn register(&self) -> ReqId {
        let id = self.next_req.get();
        self.next_req.set(id + 1);
        self.waiters.borrow_mut().insert(id, Waiter::default());
        id
    }

    fn pending(self: &Rc<Self>, req_id: ReqId) -> Pending {
        Pending {
            driver: Rc::clone(self),
            req_id,
        }
    }

    fn on_reply(self: &Rc<Self>, from: NodeId, req_id: ReqId, reply: Reply) {
        self.coordinator
            .borrow_mut()
            .handle_reply(from, req_id, reply);
        self.pump();
    }

    /// Sends everything the coordinator wants sent and hands finished requests to their
    /// waiters. A send that fails at once is fed back as that replica's `Failed`, which may
    /// make more to send.
    fn pump(self: &Rc<Self>) {
        let mut failed = Vec::new();
        loop {
            loop {
                let next = self.coordinator.borrow_mut().poll_transmit();
                let Some(t) = next else { break };
                let (to, req_id) = (t.to, t.req_id);
                if !self.dispatch(t) {
                    failed.push((to, req_id));
                }
            }
            if failed.is_empty() {
                break;
            }
            Counters::add(&self.counters().replica_send_failures, failed.len() as u64);
            let mut c = self.coordinator.borrow_mut();
            for (to, req_id) in failed.drain(..) {
                c.handle_reply(to, req_id, Reply::Failed);
            }
        }
        loop {
            let next = self.coordinator.borrow_mut().poll_result();
            let Some(done) = next else { break };
            if let Outcome::Read(Err(f)) | Outcome::Write(Err(f)) = &done.outcome {
                let c = self.counters();
                match f {
                    Failure::Unavailable { .. } => Counters::add(&c.unavailable, 1),
                    Failure::Timeout { .. } => Counters::add(&c.timeouts, 1),
                }
            }
            let mut waiters = self.waiters.borrow_mut();
            // No waiter: the client went away; the outcome is dropped.
            if let Some(w) = waiters.get_mut(&done.req_id) {
                w.outcome = Some(done.outcome);
                if let Some(waker) = w.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Starts delivering one message; false when it cannot be sent at all.
    fn dispatch(self: &Rc<Self>, t: Transmit) -> bool {
        let request = ReplicaRequest::from(t.request);
        if t.to == self.me {
            let driver = Rc::clone(self);
            glommio::spawn_local(async move {
                let reply = driver.serve_here(request).await;
                driver.on_reply(driver.me, t.req_id, reply.into());
            })
            .detach();
            return true;
        }
        let Some(member) = self.config.member(t.to) else {
            return false;
        };
        let partition = partition_of(request.key(), self.ring.partitions());
        let shard = shard_of(partition, member.shards as u32) as u16;
        let message = PeerMessage {
            from: self.me,
            from_shard: self.shard.id as u16,
            body: PeerBody::Request(request),
        };
        match encode(t.req_id, &message) {
            Ok(frame) => self.peers.send(t.to, shard, frame).is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a replica request");
                false
            }
        }
    }

    /// Serves a replica request on this node: here, or on the shard owning the key.
    async fn serve_here(&self, request: ReplicaRequest) -> ReplicaReply {
        let owner = self.shard.owner(request.key());
        if owner == self.shard.id {
            return serve_replica(&self.shard.store, self.me, request).await;
        }
        Counters::add(&self.shard.counters.forwarded, 1);
        match self.mesh.call(owner, &ShardOp::Replica(request)).await {
            Ok(ShardReply::Replica(reply)) => reply,
            Ok(other) => {
                tracing::error!(?other, "unexpected reply to a replica request");
                ReplicaReply::Failed
            }
            Err(e) => {
                tracing::warn!(error = %e, "replica request to shard {owner} failed");
                ReplicaReply::Failed
            }
        }
    }

    fn send_reply(&self, to: NodeId, shard: u16, req_id: ReqId, reply: ReplicaReply) {
        let message = PeerMessage {
            from: self.me,
            from_shard: self.shard.id as u16,
            body: PeerBody::Reply(reply),
        };
        let sent = match encode(req_id, &message) {
            Ok(frame) => self.peers.send(to, shard, frame).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            // The coordinator counts this replica as silent and decides at its deadline.
            tracing::debug!(to, error = %e, "replica reply not sent");
        }
    }
}

/// Serves one replica request against `store` as replica `me`: reads the key's versions,
/// applies the request, stores the result durably, and only then answers.
pub async fn serve_replica<F: FileSystem>(
    store: &Store<F>,
    me: NodeId,
    request: ReplicaRequest,
) -> ReplicaReply {
    let request = match request.into_request() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "replica request with a damaged context");
            return ReplicaReply::Failed;
        }
    };
    let served = match &request {
        Request::Get { key } => store
            .versions(key)
            .await
            .map(|stored| replica::handle(me, stored.as_ref().map(Value::bytes), &request).reply),
        _ => {
            store
                .update_versions(request.key(), |stored| {
                    let handled = replica::handle(me, stored, &request);
                    if handled.siblings > SIBLINGS_WARN {
                        tracing::warn!(
                            key = %String::from_utf8_lossy(request.key()),
                            siblings = handled.siblings,
                            cap = SIBLINGS_MAX,
                            "key has many siblings: writers are not passing contexts back"
                        );
                    }
                    (handled.reply, handled.store)
                })
                .await
        }
    };
    match served {
        Ok(reply) => reply.into(),
        Err(e) => {
            tracing::warn!(error = %e, "replica request failed");
            ReplicaReply::Failed
        }
    }
}

fn decode_peer(payload: &[u8]) -> Result<PeerMessage, rancor::Error> {
    let archived = rkyv::access::<ArchivedPeerMessage, rancor::Error>(payload)?;
    rkyv::deserialize::<PeerMessage, rancor::Error>(archived)
}

/// A client request in flight; resolves to its outcome. Dropping it abandons the answer,
/// not the request (replicas may still apply a write).
pub struct Pending {
    driver: Rc<Driver>,
    req_id: ReqId,
}

impl Future for Pending {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut waiters = self.driver.waiters.borrow_mut();
        let Some(w) = waiters.get_mut(&self.req_id) else {
            unreachable!("a waiter lives as long as its Pending")
        };
        match w.outcome.take() {
            Some(outcome) => {
                waiters.remove(&self.req_id);
                Poll::Ready(outcome)
            }
            None => {
                w.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.driver.waiters.borrow_mut().remove(&self.req_id);
    }
}

/// The client-facing text of a failed request.
pub fn failure_text(f: Failure) -> String {
    match f {
        Failure::Unavailable { needed, got } => {
            format!("UNAVAILABLE needed {needed} replicas, got {got}")
        }
        Failure::Timeout { needed, got } => {
            format!("TIMEOUT needed {needed} replicas, got {got}")
        }
    }
}

/// What a read found, as a client sees it: the live sibling values (tombstones hidden).
pub fn live_values(set: Option<&DvvSet>) -> Vec<&[u8]> {
    set.map(|s| s.values().flatten().collect())
        .unwrap_or_default()
}

/// The one value a Redis GET returns: the deterministically chosen sibling, unless it is a
/// tombstone.
pub fn chosen_value(set: Option<&DvvSet>) -> Option<&[u8]> {
    set.and_then(DvvSet::chosen)
        .and_then(|s| s.value.as_deref())
}

/// A write's outcome for a client.
pub fn written(outcome: Outcome) -> Result<Written, String> {
    match outcome {
        Outcome::Write(Ok(w)) => Ok(w),
        Outcome::Write(Err(f)) => Err(failure_text(f)),
        Outcome::Read(_) => Err("ERR internal: a write answered as a read".to_owned()),
    }
}

/// A read's outcome for a client.
pub fn read_result(outcome: Outcome) -> Result<Option<DvvSet>, String> {
    match outcome {
        Outcome::Read(r) => r.map_err(failure_text),
        Outcome::Write(_) => Err("ERR internal: a read answered as a write".to_owned()),
    }
}
