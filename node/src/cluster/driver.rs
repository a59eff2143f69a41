//! The glue around one shard's [`Endpoint`] (the cluster protocol, in `shoal_cluster`): it
//! hands the endpoint what arrives and carries out what it asks for.
//!
//! - In: client requests from this shard's connections ([`Driver::read`], [`Driver::write`]),
//!   frames from the other shards of this node (the mesh's cluster channel) and from other
//!   nodes (the peer transport), frames the transport could not deliver, completions of the
//!   storage operations it ran, and the time (a ticker every [`TICK`]).
//! - Out: frames to other shards ([`Mesh::post`]) and nodes ([`Peers::send`]), reads and
//!   durable writes of the shard's store and its hint store (each in its own task, so writes
//!   from many requests share one group commit), outcomes for the clients waiting on
//!   [`Pending`] futures, and log lines for what an operator needs to know (a member down
//!   or up, a member whose configuration disagrees with ours).
//!
//! Everything runs on the shard's own executor: the endpoint and the waiting clients sit in
//! `RefCell`s that are never borrowed across an await.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::ConnectedReceiver;
use shoal_cluster::NodeId;
use shoal_cluster::consistency::Consistency;
use shoal_cluster::coordinator::{Failure, Outcome, Written};
use shoal_cluster::dvv::{DvvSet, SIBLINGS_MAX};
use shoal_cluster::endpoint::{
    self, Address, Completion, Endpoint, Event, HintStats, StorageAction, StorageOp, StoredHint,
    Transmit,
};
use shoal_cluster::frame::FrameBuf;
use shoal_cluster::membership::Health;
use shoal_cluster::message::{MemberReport, ReqId, WriteContext};
use shoal_cluster::ring::Ring;
use shoal_engine::fs::DmaFs;

use crate::cluster::peer::{Inbound, Peers};
use crate::config::ClusterConfig;
use crate::mesh::Mesh;
use crate::shard::hints::HintStore;
use crate::shard::store::Value;
use crate::shard::{HintCounters, Shard, ShardStats};
use crate::u64map::U64Map;

/// How often a shard fires the endpoint's expired deadlines: a request fails at most this
/// long after its timeout, which is small next to any sensible timeout.
pub const TICK: Duration = Duration::from_millis(10);

/// A client request's answer, once the endpoint has one.
#[derive(Default)]
struct Waiter {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
}

/// One shard's cluster driver.
pub struct Driver {
    endpoint: RefCell<Endpoint>,
    ring: Ring,
    shard: Rc<Shard>,
    hints: Rc<HintStore<DmaFs>>,
    mesh: Rc<Mesh>,
    peers: Rc<Peers>,
    config: ClusterConfig,
    waiters: RefCell<U64Map<Waiter>>,
    epoch: Instant,
}

/// What a shard's cluster driver is made of, besides the shard itself.
pub struct Parts {
    pub config: ClusterConfig,
    pub ring: Ring,
    pub generation: u64,
    pub mesh: Rc<Mesh>,
    pub peers: Rc<Peers>,
    pub hints: Rc<HintStore<DmaFs>>,
    /// The hints the store held at start.
    pub stored_hints: Vec<StoredHint>,
}

impl Driver {
    pub fn new(shard: Rc<Shard>, parts: Parts) -> Rc<Driver> {
        let Parts {
            config,
            ring,
            generation,
            mesh,
            peers,
            hints,
            stored_hints,
        } = parts;
        let shards: BTreeMap<NodeId, u16> = config
            .members
            .iter()
            .map(|m| (m.id, m.shards as u16))
            .collect();
        let epoch = Instant::now();
        let wall_ms_at_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let endpoint = Endpoint::new(
            endpoint::Config {
                me: config.me,
                shard: shard.id as u16,
                generation,
                ring: ring.clone(),
                shards,
                view: config.view(),
                timeout: config.timeout,
                gossip: config.gossip,
                hints: config.hints,
                wall_ms_at_epoch,
                stored_hints,
                seed: wall_ms_at_epoch ^ (shard.id as u64) << 32,
            },
            Duration::ZERO,
        );
        let driver = Rc::new(Driver {
            endpoint: RefCell::new(endpoint),
            ring,
            shard: Rc::clone(&shard),
            hints,
            mesh,
            peers: Rc::clone(&peers),
            config,
            waiters: RefCell::new(U64Map::default()),
            epoch,
        });
        let weak = Rc::downgrade(&driver);
        peers.on_dropped(Rc::new(move |node, shard, frame| {
            if let Some(driver) = weak.upgrade() {
                driver.undeliverable(Address { node, shard }, frame);
            }
        }));
        let weak = Rc::downgrade(&driver);
        shard.set_stats_source(Box::new(move |stats| {
            if let Some(driver) = weak.upgrade() {
                driver.add_stats(stats);
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

    /// This shard's judgment of `node`.
    pub fn health(&self, node: NodeId) -> Health {
        self.endpoint.borrow().health(node)
    }

    /// Records this node's data size for gossip (used on shard 0).
    pub fn set_load(&self, bytes: u64) {
        self.endpoint.borrow_mut().set_load(bytes);
    }

    /// Every member as this shard knows it now.
    pub fn members(&self) -> Vec<MemberReport> {
        self.endpoint.borrow().members(self.now())
    }

    /// Client requests in progress (reads finishing their repair included).
    pub fn in_flight(&self) -> usize {
        self.endpoint.borrow().in_flight()
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Starts a read of `key` from R replicas; the returned future yields the merged versions
    /// (`None`: no replica has the key). Requests started before awaiting run together.
    pub fn read(self: &Rc<Self>, key: &[u8], r: Consistency) -> Pending {
        let now = self.now();
        let req_id = self.endpoint.borrow_mut().read(now, key, r);
        self.started(req_id)
    }

    /// Starts a write of `value` (`None`: delete) superseding `context`, acknowledged by W
    /// replicas (home replicas only when the node's writes are strict).
    pub fn write(
        self: &Rc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: WriteContext,
        w: Consistency,
    ) -> Pending {
        let now = self.now();
        let strict = self.config.strict;
        let req_id = self
            .endpoint
            .borrow_mut()
            .write(now, key, value, context, w, strict);
        self.started(req_id)
    }

    /// Registers the waiter of a request the endpoint just started, then carries out what
    /// the endpoint asked for (which may already have finished the request).
    fn started(self: &Rc<Self>, req_id: ReqId) -> Pending {
        let previous = self.waiters.borrow_mut().insert(req_id, Waiter::default());
        debug_assert!(previous.is_none(), "request ids are not reused");
        self.pump();
        Pending {
            driver: Rc::clone(self),
            req_id,
        }
    }

    /// Fires expired deadlines, gossip rounds and the hints' replay; called every [`TICK`].
    pub fn tick(self: &Rc<Self>) {
        let now = self.now();
        self.endpoint.borrow_mut().handle_timeout(now);
        self.pump();
    }

    /// A frame from another node's shard.
    pub fn handle_inbound(self: &Rc<Self>, inbound: Inbound) {
        self.handle_frame(inbound.frame());
    }

    /// Feeds the frames other shards of this node post, until the node stops.
    pub fn serve_mesh(self: &Rc<Self>, receivers: Vec<(usize, ConnectedReceiver<FrameBuf>)>) {
        for (_, rx) in receivers {
            let driver = Rc::clone(self);
            glommio::spawn_local(async move {
                while let Some(frame) = rx.recv().await {
                    driver.handle_frame(&frame);
                }
            })
            .detach();
        }
    }

    fn handle_frame(self: &Rc<Self>, frame: &[u8]) {
        let now = self.now();
        let handled = self.endpoint.borrow_mut().handle_frame(now, frame);
        match handled {
            Ok(from) => self.peers.heard_from(from),
            Err(e) => tracing::warn!(error = %e, "undecodable cluster frame dropped"),
        }
        self.pump();
    }

    /// A frame the transport accepted but could not deliver.
    fn undeliverable(self: &Rc<Self>, to: Address, frame: &[u8]) {
        let now = self.now();
        self.endpoint
            .borrow_mut()
            .handle_undeliverable(now, to, frame);
        self.pump();
    }

    /// Carries out everything the endpoint asked for. A frame the transport refuses at once
    /// goes back to the endpoint, which may then ask for more.
    fn pump(self: &Rc<Self>) {
        loop {
            let next = self.endpoint.borrow_mut().poll_transmit();
            let Some(transmit) = next else { break };
            self.transmit(transmit);
        }
        loop {
            let next = self.endpoint.borrow_mut().poll_storage();
            let Some(op) = next else { break };
            let driver = Rc::clone(self);
            glommio::spawn_local(async move { driver.run_storage(op).await }).detach();
        }
        loop {
            let next = self.endpoint.borrow_mut().poll_event();
            let Some(event) = next else { break };
            self.on_event(event);
        }
    }

    fn transmit(self: &Rc<Self>, Transmit { to, frame }: Transmit) {
        if to.node == self.config.me {
            self.mesh.post(usize::from(to.shard), frame);
            return;
        }
        if let Err(refused) = self.peers.send(to.node, to.shard, frame) {
            tracing::debug!(to = to.node, error = %refused.error, "cluster frame refused by the transport");
            let now = self.now();
            self.endpoint
                .borrow_mut()
                .handle_undeliverable(now, to, &refused.frame);
        }
    }

    async fn run_storage(self: Rc<Self>, op: StorageOp) {
        let store = &self.shard.store;
        let hints = &self.hints;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "{what} failed");
            Completion::Failed
        };
        let completion = match op.action {
            StorageAction::ReadVersions { key } => {
                let stored = store.versions(&key).await;
                let now = self.now();
                let mut endpoint = self.endpoint.borrow_mut();
                let completion = match &stored {
                    Ok(value) => Completion::Read(value.as_ref().map(Value::bytes)),
                    Err(e) => failed("replica read", e),
                };
                endpoint.handle_storage(now, op.token, completion);
                drop(endpoint);
                self.pump();
                return;
            }
            StorageAction::WriteVersions { key, versions } => {
                match store.write_versions(&key, &versions).await {
                    Ok(()) => Completion::Written,
                    Err(e) => failed("replica write", &e),
                }
            }
            StorageAction::StoreHint { owner, seq, record } => {
                match hints.store(owner, seq, &record).await {
                    Ok(()) => Completion::Written,
                    Err(e) => failed("hint store", &e),
                }
            }
            StorageAction::DeleteHint { owner, seq } => match hints.delete(owner, seq).await {
                Ok(()) => Completion::Written,
                Err(e) => failed("hint delete", &e),
            },
            StorageAction::LoadHints {
                owner,
                from_seq,
                limit,
            } => match hints.load(owner, from_seq, limit).await {
                Ok(records) => Completion::Hints(records),
                Err(e) => failed("hint load", &e),
            },
        };
        let now = self.now();
        self.endpoint
            .borrow_mut()
            .handle_storage(now, op.token, completion);
        self.pump();
    }

    fn on_event(&self, event: Event) {
        match event {
            Event::Completed { req_id, outcome } => {
                let mut waiters = self.waiters.borrow_mut();
                // No waiter: the client went away; the outcome is dropped.
                if let Some(w) = waiters.get_mut(&req_id) {
                    w.outcome = Some(outcome);
                    if let Some(waker) = w.waker.take() {
                        waker.wake();
                    }
                }
            }
            Event::ManySiblings { key, siblings } => tracing::warn!(
                key = %String::from_utf8_lossy(&key),
                siblings,
                cap = SIBLINGS_MAX,
                "key has many siblings: writers are not passing contexts back"
            ),
            Event::Health {
                node,
                health,
                generation,
            } => {
                if health == Health::Up {
                    // Links to it that failed while it was away may connect again now.
                    self.peers.heard_from(node);
                }
                // Shard 0 judges; the other shards follow it and need not say it again.
                if self.shard.id != 0 {
                    return;
                }
                let name = self.name_of(node);
                match health {
                    Health::Up => tracing::info!(member = %name, generation, "member is up"),
                    Health::Suspect => {
                        tracing::info!(member = %name, generation, "member is suspected")
                    }
                    Health::Down => tracing::warn!(member = %name, generation, "member is down"),
                }
            }
            Event::ViewMismatch { node, ours, theirs } => {
                let name = self.name_of(node);
                match theirs {
                    Some(theirs) => tracing::error!(
                        member = %name,
                        "refusing a member whose configuration differs: ours is {ours}; theirs is {theirs}"
                    ),
                    None => tracing::error!(
                        member = %name,
                        "refusing a member whose configuration differs from ours ({ours})"
                    ),
                }
            }
        }
    }

    fn name_of(&self, node: NodeId) -> String {
        self.config
            .member(node)
            .map_or_else(|| format!("{node:08x}"), |m| m.name.clone())
    }

    /// This shard's hints, per owner.
    pub fn hint_stats(&self) -> Vec<(NodeId, HintStats)> {
        self.endpoint.borrow().hint_stats()
    }

    fn add_stats(&self, stats: &mut ShardStats) {
        let s = self.endpoint.borrow().stats();
        stats.cluster_reads = s.reads;
        stats.cluster_writes = s.writes;
        stats.unavailable = s.unavailable;
        stats.timeouts = s.timeouts;
        stats.replica_requests = s.replica_requests;
        stats.replica_send_failures = s.send_failures;
        stats.sloppy_writes = s.sloppy_writes;
        stats.refused_messages = s.refused;
        stats.hints = self
            .hint_stats()
            .into_iter()
            .map(|(owner, h)| HintCounters {
                owner,
                pending: h.pending,
                pending_bytes: h.pending_bytes,
                taken: h.taken,
                replayed: h.replayed,
                expired: h.expired,
                refused: h.refused,
            })
            .collect();
    }
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
