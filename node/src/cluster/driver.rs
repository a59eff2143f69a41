//! The glue around one shard's [`Endpoint`] (the cluster protocol, in `shoal_cluster`): it
//! hands the endpoint what arrives and carries out what it asks for.
//!
//! - In: client requests from this shard's connections ([`Driver::read`], [`Driver::write`]),
//!   frames from the other shards of this node (the mesh's cluster channel) and from other
//!   nodes (the peer transport), frames the transport could not deliver, completions of the
//!   storage operations it ran, and the time (a ticker every [`TICK`]).
//! - Out: frames to other shards ([`Mesh::post`]) and nodes ([`Peers::send`]), reads and
//!   durable writes of the shard's store (each in its own task, so writes from many requests
//!   share one group commit), and outcomes for the clients waiting on [`Pending`] futures.
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
    self, Address, Completion, Endpoint, Event, StorageAction, StorageOp, Transmit,
};
use shoal_cluster::frame::FrameBuf;
use shoal_cluster::message::{ReqId, WriteContext};
use shoal_cluster::ring::Ring;

use crate::cluster::peer::{Inbound, Peers};
use crate::config::ClusterConfig;
use crate::mesh::Mesh;
use crate::shard::store::Value;
use crate::shard::{Shard, ShardStats};
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
    shard: Rc<Shard>,
    mesh: Rc<Mesh>,
    peers: Rc<Peers>,
    config: ClusterConfig,
    waiters: RefCell<U64Map<Waiter>>,
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
        let shards: BTreeMap<NodeId, u16> = config
            .members
            .iter()
            .map(|m| (m.id, m.shards as u16))
            .collect();
        let endpoint = Endpoint::new(endpoint::Config {
            me: config.me,
            shard: shard.id as u16,
            ring,
            shards,
            timeout: config.timeout,
        });
        let driver = Rc::new(Driver {
            endpoint: RefCell::new(endpoint),
            shard: Rc::clone(&shard),
            mesh,
            peers: Rc::clone(&peers),
            config,
            waiters: RefCell::new(U64Map::default()),
            epoch: Instant::now(),
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

    /// Whether this shard believes `node` is up.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.endpoint.borrow().is_up(node)
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
    /// replicas.
    pub fn write(
        self: &Rc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: WriteContext,
        w: Consistency,
    ) -> Pending {
        let now = self.now();
        let req_id = self
            .endpoint
            .borrow_mut()
            .write(now, key, value, context, w);
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

    /// Fires expired deadlines; called every [`TICK`].
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
        let now;
        match op.action {
            StorageAction::Read => {
                let stored = store.versions(&op.key).await;
                now = self.now();
                let mut endpoint = self.endpoint.borrow_mut();
                match &stored {
                    Ok(value) => {
                        let completion = Completion::Read(value.as_ref().map(Value::bytes));
                        endpoint.handle_storage(now, op.token, completion);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "replica read failed");
                        endpoint.handle_storage(now, op.token, Completion::Failed);
                    }
                }
            }
            StorageAction::Write(versions) => {
                let written = store.write_versions(&op.key, &versions).await;
                now = self.now();
                let completion = match written {
                    Ok(()) => Completion::Written,
                    Err(e) => {
                        tracing::warn!(error = %e, "replica write failed");
                        Completion::Failed
                    }
                };
                self.endpoint
                    .borrow_mut()
                    .handle_storage(now, op.token, completion);
            }
        }
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
        }
    }

    fn add_stats(&self, stats: &mut ShardStats) {
        let s = self.endpoint.borrow().stats();
        stats.cluster_reads = s.reads;
        stats.cluster_writes = s.writes;
        stats.unavailable = s.unavailable;
        stats.timeouts = s.timeouts;
        stats.replica_requests = s.replica_requests;
        stats.replica_send_failures = s.send_failures;
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
