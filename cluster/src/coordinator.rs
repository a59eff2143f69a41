//! The request coordinator: one state machine per shard, driving every client read and write
//! that lands on it through the key's replicas.
//!
//! Sans-IO in the style of quinn-proto: the endpoint calls [`Coordinator::get`] /
//! [`Coordinator::put`] for client requests, [`Coordinator::handle_reply`] for replica
//! replies and [`Coordinator::handle_timeout`] when [`Coordinator::poll_timeout`] passes,
//! then drains [`Coordinator::poll_transmit`] (messages to send, possibly to itself),
//! [`Coordinator::poll_result`] (answers for clients) and [`Coordinator::poll_hint`] (writes
//! a replica may have missed). Time is a [`Duration`] since any epoch the driver picks; the
//! coordinator never reads a clock.
//!
//! **Writes** go to [`Target`]s: the key's home replicas, and for a home replica believed
//! down, a fallback node that stands in for it (Dynamo's sloppy quorum) and keeps the write
//! as a hint for it. A home replica is asked to mint the write (`Update`), in the order
//! given (the endpoint puts itself first when it is one, then replicas believed up). Only an
//! explicit `Failed` moves on to the next, never a silence: a slow replica may still mint,
//! and two mints of one client write would be two siblings the client never meant. The
//! `Updated` reply counts as one acknowledgement and its versions go to every other home
//! target as a `Put` and to every fallback as a `Hinted` put. The client is answered after W
//! acknowledgements; a strict write counts home replicas only.
//!
//! A write lives on after its answer until every target answered or its deadline passed:
//! then each target that failed or stayed silent is owed the write, and it comes out of
//! [`Coordinator::poll_hint`] for the endpoint to keep and hand off later. So a replica
//! message is never dropped silently, and after a run without failures every home replica
//! holds every acknowledged write.
//!
//! **Reads**: `Get` goes to the replicas given (the endpoint leaves out those it believes
//! down); the client is answered with the merge of the first R replies. The request lives on
//! until every replica answered or the deadline passed, then each replica that answered with
//! something other than the merge gets it as a `Put` (read repair).
//!
//! Invariants, checked by [`Coordinator::check_invariants`] in debug builds after every
//! input:
//! 1. every request in flight has exactly one deadline, and every deadline a request;
//! 2. a request needs at least one answer;
//! 3. a read's replying and failed replicas are distinct replicas it asked;
//! 4. a write has asked at most its home targets to mint, and has asked one once minted;
//! 5. a minted write's acknowledging and failed targets are distinct targets.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use crate::NodeId;
use crate::dvv::DvvSet;
use crate::message::{Reply, ReqId, Request, WriteContext};
use crate::vv::{Dot, VersionVector};

/// A message for the driver to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: NodeId,
    pub req_id: ReqId,
    pub request: Request,
}

/// Where a write goes: a home replica, or a fallback standing in for one that is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub node: NodeId,
    /// The home replica this node stands in for; `None` for a home replica.
    pub stands_in_for: Option<NodeId>,
}

impl Target {
    pub fn home(node: NodeId) -> Target {
        Target {
            node,
            stands_in_for: None,
        }
    }

    /// The home replica the write is for.
    pub fn owner(&self) -> NodeId {
        self.stands_in_for.unwrap_or(self.node)
    }
}

/// A write a replica is owed: its versions, to hand to `owner` once it can take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub owner: NodeId,
    pub key: Vec<u8>,
    pub versions: Vec<u8>,
}

/// A write a replica minted after its request had ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateMint {
    pub minted_by: NodeId,
    pub key: Vec<u8>,
    pub versions: Vec<u8>,
}

/// Why a request failed. `needed`/`got` are replica counts for the client's error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Too few replicas exist or are able to answer (`-UNAVAILABLE`).
    Unavailable { needed: u32, got: u32 },
    /// The deadline passed with too few answers (`-TIMEOUT`); a write may still have been
    /// applied on some replicas.
    Timeout { needed: u32, got: u32 },
}

/// A successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub dot: Dot,
    /// The coordinating replica's context after the write: pass it back to supersede it.
    pub context: VersionVector,
}

/// The answer to one client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The merged versions of the replies (`None`: no replica had the key).
    Read(Result<Option<DvvSet>, Failure>),
    Write(Result<Written, Failure>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub req_id: ReqId,
    pub outcome: Outcome,
}

/// Drives reads and writes for one shard. See the module docs.
#[derive(Debug, Default)]
pub struct Coordinator {
    ops: HashMap<ReqId, Op>,
    /// `(deadline, request)`: one entry per live request.
    timers: BTreeSet<(Duration, ReqId)>,
    transmits: VecDeque<Transmit>,
    results: VecDeque<Completed>,
    hints: VecDeque<Hint>,
    late_mints: VecDeque<LateMint>,
}

#[derive(Debug)]
struct Op {
    key: Vec<u8>,
    needed: u32,
    deadline: Duration,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Read(ReadOp),
    Write(WriteOp),
}

#[derive(Debug, Default)]
struct ReadOp {
    replicas: Vec<NodeId>,
    /// Replicas that answered, with the bytes they hold. Encodings are canonical (equal
    /// states, equal bytes), so replicas are compared by their bytes.
    replies: Vec<(NodeId, Option<Vec<u8>>)>,
    failed: Vec<NodeId>,
    merged: DvvSet,
    /// `merged`'s encoding while it is exactly one reply's bytes (the common case: replicas
    /// agree): identical replies then cost a comparison, not a decode and a merge.
    merged_bytes: Option<Vec<u8>>,
    found: bool,
    answered: bool,
}

#[derive(Debug)]
struct WriteOp {
    targets: Vec<Target>,
    /// Whether only home replicas' acknowledgements count.
    strict: bool,
    /// The wire form of the client's [`WriteContext`].
    context: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// Home targets asked to mint the write so far, in order; all but the last answered
    /// `Failed`.
    asked: usize,
    /// Set once a replica has minted the write.
    minted: Option<Minted>,
    answered: bool,
}

#[derive(Debug)]
struct Minted {
    dot: Dot,
    context: VersionVector,
    versions: Vec<u8>,
    acked: Vec<NodeId>,
    failed: Vec<NodeId>,
}

impl WriteOp {
    /// The home targets, in the order they are asked to mint.
    fn homes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.targets
            .iter()
            .filter(|t| t.stands_in_for.is_none())
            .map(|t| t.node)
    }

    fn counts(&self, node: NodeId) -> bool {
        self.targets
            .iter()
            .any(|t| t.node == node && (t.stands_in_for.is_none() || !self.strict))
    }

    fn target(&self, node: NodeId) -> Option<&Target> {
        self.targets.iter().find(|t| t.node == node)
    }
}

impl Coordinator {
    pub fn new() -> Coordinator {
        Coordinator::default()
    }

    /// Requests in progress (including reads finishing their repair and writes waiting
    /// for their last targets).
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Starts a read of `key` from `replicas`, answering once `needed` of them replied or
    /// failing at `now + timeout`.
    pub fn get(
        &mut self,
        now: Duration,
        req_id: ReqId,
        key: Vec<u8>,
        replicas: &[NodeId],
        needed: u32,
        timeout: Duration,
    ) {
        let needed = needed.max(1);
        if needed as usize > replicas.len() {
            let failure = Failure::Unavailable {
                needed,
                got: replicas.len() as u32,
            };
            self.finish(req_id, Outcome::Read(Err(failure)));
            return;
        }
        for &to in replicas {
            self.send(to, req_id, Request::Get { key: key.clone() });
        }
        let read = ReadOp {
            replicas: replicas.to_vec(),
            ..ReadOp::default()
        };
        self.insert(
            req_id,
            Op {
                key,
                needed,
                deadline: now + timeout,
                kind: Kind::Read(read),
            },
        );
        self.check_invariants();
    }

    /// Starts a write of `value` (`None`: delete) superseding `context` to `targets`,
    /// acknowledged after `needed` of them stored it (home replicas only when `strict`),
    /// failing at `now + timeout`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per part of a client write"
    )]
    pub fn put(
        &mut self,
        now: Duration,
        req_id: ReqId,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        context: WriteContext,
        targets: &[Target],
        needed: u32,
        strict: bool,
        timeout: Duration,
    ) {
        let needed = needed.max(1);
        let write = WriteOp {
            targets: targets.to_vec(),
            strict,
            context: context.encode(),
            value,
            asked: 0,
            minted: None,
            answered: false,
        };
        let countable = write
            .targets
            .iter()
            .filter(|t| write.counts(t.node))
            .count() as u32;
        if needed > countable || write.homes().next().is_none() {
            let failure = Failure::Unavailable {
                needed,
                got: countable,
            };
            self.finish(req_id, Outcome::Write(Err(failure)));
            return;
        }
        let mut op = Op {
            key,
            needed,
            deadline: now + timeout,
            kind: Kind::Write(write),
        };
        self.ask_next(req_id, &mut op);
        self.insert(req_id, op);
        self.check_invariants();
    }

    /// A replica's reply. Replies to finished or unknown requests, and from nodes that were
    /// not asked, are ignored, except a write minted after its request ended: no other
    /// replica has it, so it comes out of [`Coordinator::poll_late_mint`].
    pub fn handle_reply(&mut self, from: NodeId, req_id: ReqId, reply: Reply) {
        let Some(mut op) = self.ops.remove(&req_id) else {
            if let Reply::Updated { key, versions, .. } = reply {
                self.late_mints.push_back(LateMint {
                    minted_by: from,
                    key,
                    versions,
                });
            }
            return;
        };
        self.timers.remove(&(op.deadline, req_id));
        let done = match op.kind {
            Kind::Read(_) => self.read_reply(req_id, &mut op, from, reply),
            Kind::Write(_) => self.write_reply(req_id, &mut op, from, reply),
        };
        if !done {
            self.insert(req_id, op);
        }
        self.check_invariants();
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(&(at, req_id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, req_id));
            if let Some(op) = self.ops.remove(&req_id) {
                self.expire(req_id, op);
            }
        }
        self.check_invariants();
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next finished client request.
    #[must_use]
    pub fn poll_result(&mut self) -> Option<Completed> {
        self.results.pop_front()
    }

    /// The next write a replica is owed.
    #[must_use]
    pub fn poll_hint(&mut self) -> Option<Hint> {
        self.hints.pop_front()
    }

    /// The next write minted after its request ended (a replica that was slow, or paused):
    /// every other replica of its key is owed it.
    #[must_use]
    pub fn poll_late_mint(&mut self) -> Option<LateMint> {
        self.late_mints.pop_front()
    }

    /// When to call [`Coordinator::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The rules in the module docs; a no-op in release builds.
    pub fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        // 1.
        assert_eq!(
            self.timers.len(),
            self.ops.len(),
            "one deadline per request"
        );
        for &(deadline, req_id) in &self.timers {
            let op = self.ops.get(&req_id);
            assert!(
                op.is_some_and(|op| op.deadline == deadline),
                "deadline of a live request"
            );
        }
        for op in self.ops.values() {
            // 2.
            assert!(op.needed >= 1, "a request needs an answer");
            match &op.kind {
                Kind::Read(read) => {
                    // 3.
                    let answered = read.replies.iter().map(|(n, _)| n).chain(&read.failed);
                    assert_distinct_members(answered, &read.replicas);
                }
                Kind::Write(write) => {
                    // 4.
                    assert!(write.asked <= write.homes().count(), "asked only homes");
                    if let Some(minted) = &write.minted {
                        assert!(write.asked >= 1, "a mint was asked for");
                        // 5.
                        let nodes: Vec<NodeId> = write.targets.iter().map(|t| t.node).collect();
                        let answered = minted.acked.iter().chain(&minted.failed);
                        assert_distinct_members(answered, &nodes);
                    }
                }
            }
        }
    }

    fn insert(&mut self, req_id: ReqId, op: Op) {
        self.timers.insert((op.deadline, req_id));
        let previous = self.ops.insert(req_id, op);
        assert!(
            previous.is_none(),
            "request id {req_id} reused while in flight"
        );
    }

    fn send(&mut self, to: NodeId, req_id: ReqId, request: Request) {
        self.transmits.push_back(Transmit {
            to,
            req_id,
            request,
        });
    }

    fn finish(&mut self, req_id: ReqId, outcome: Outcome) {
        self.results.push_back(Completed { req_id, outcome });
    }

    /// Asks the next home target in line to mint the write.
    fn ask_next(&mut self, req_id: ReqId, op: &mut Op) {
        let Kind::Write(write) = &mut op.kind else {
            unreachable!("only writes mint")
        };
        debug_assert!(write.minted.is_none());
        let Some(to) = write.homes().nth(write.asked) else {
            return;
        };
        write.asked += 1;
        let request = Request::Update {
            key: op.key.clone(),
            context: write.context.clone(),
            value: write.value.clone(),
        };
        self.send(to, req_id, request);
    }

    /// Returns whether the read is over.
    fn read_reply(&mut self, req_id: ReqId, op: &mut Op, from: NodeId, reply: Reply) -> bool {
        let Kind::Read(read) = &mut op.kind else {
            unreachable!("called for reads")
        };
        if !read.replicas.contains(&from)
            || read.replies.iter().any(|(n, _)| *n == from)
            || read.failed.contains(&from)
        {
            return false;
        }
        let state = match reply {
            Reply::Got { versions } => Ok(versions),
            Reply::Updated { .. } | Reply::Stored | Reply::Failed => Err(()),
        };
        let state = state.and_then(|versions| match versions {
            Some(bytes) if read.merged_bytes.as_ref() == Some(&bytes) => Ok(Some(bytes)),
            Some(bytes) => {
                let decoded = DvvSet::decode(&bytes).map_err(|_| ())?;
                if read.found {
                    read.merged.sync(&decoded);
                    read.merged_bytes = None;
                } else {
                    read.merged = decoded;
                    read.merged_bytes = Some(bytes.clone());
                    read.found = true;
                }
                Ok(Some(bytes))
            }
            None => Ok(None),
        });
        match state {
            Ok(state) => read.replies.push((from, state)),
            Err(()) => read.failed.push(from),
        }
        let got = read.replies.len() as u32;
        let pending = (read.replicas.len() - read.replies.len() - read.failed.len()) as u32;
        if !read.answered && got == op.needed {
            read.answered = true;
            let merged = read.found.then(|| read.merged.clone());
            self.finish(req_id, Outcome::Read(Ok(merged)));
        } else if !read.answered && got + pending < op.needed {
            read.answered = true;
            let failure = Failure::Unavailable {
                needed: op.needed,
                got,
            };
            self.finish(req_id, Outcome::Read(Err(failure)));
        }
        if pending == 0 {
            self.repair(req_id, op);
            return true;
        }
        false
    }

    /// Sends the merged versions to every replica that answered with something else.
    fn repair(&mut self, req_id: ReqId, op: &Op) {
        let Kind::Read(read) = &op.kind else {
            unreachable!("called for reads")
        };
        if !read.found {
            return;
        }
        let versions = match &read.merged_bytes {
            Some(bytes) => bytes.clone(),
            None => read.merged.encode(),
        };
        for (node, state) in &read.replies {
            if state.as_ref() != Some(&versions) {
                let request = Request::Put {
                    key: op.key.clone(),
                    versions: versions.clone(),
                };
                self.send(*node, req_id, request);
            }
        }
    }

    /// Returns whether the write is over.
    fn write_reply(&mut self, req_id: ReqId, op: &mut Op, from: NodeId, reply: Reply) -> bool {
        let Kind::Write(write) = &mut op.kind else {
            unreachable!("called for writes")
        };
        let was_asked = write.asked > 0 && write.homes().nth(write.asked - 1) == Some(from);
        let is_target = write.target(from).is_some();
        match (&mut write.minted, reply) {
            (None, Reply::Updated { dot, versions, .. }) if was_asked => {
                let Ok(state) = DvvSet::decode(&versions) else {
                    return self.update_failed(req_id, op);
                };
                for t in write.targets.iter().filter(|t| t.node != from) {
                    let key = op.key.clone();
                    let versions = versions.clone();
                    let request = match t.stands_in_for {
                        None => Request::Put { key, versions },
                        Some(owner) => Request::Hinted {
                            key,
                            versions,
                            owner,
                        },
                    };
                    self.transmits.push_back(Transmit {
                        to: t.node,
                        req_id,
                        request,
                    });
                }
                write.minted = Some(Minted {
                    dot,
                    context: state.context().clone(),
                    versions,
                    acked: vec![from],
                    failed: Vec::new(),
                });
                self.check_write(req_id, op)
            }
            (None, Reply::Failed) if was_asked => self.update_failed(req_id, op),
            (Some(minted), reply @ (Reply::Stored | Reply::Failed)) if is_target => {
                if !minted.acked.contains(&from) && !minted.failed.contains(&from) {
                    match reply {
                        Reply::Stored => minted.acked.push(from),
                        _ => minted.failed.push(from),
                    }
                }
                self.check_write(req_id, op)
            }
            // Duplicates, strangers and replies of the wrong kind.
            _ => false,
        }
    }

    /// The home replica asked to mint the write failed: ask the next, or give up when none
    /// is left.
    fn update_failed(&mut self, req_id: ReqId, op: &mut Op) -> bool {
        let Kind::Write(write) = &op.kind else {
            unreachable!("called for writes")
        };
        if write.asked == write.homes().count() {
            let failure = Failure::Unavailable {
                needed: op.needed,
                got: 0,
            };
            self.finish(req_id, Outcome::Write(Err(failure)));
            return true;
        }
        self.ask_next(req_id, op);
        false
    }

    /// Answers the client once W targets acknowledged, or once W can no longer be reached;
    /// returns whether every target has answered (then each that failed is owed a hint).
    fn check_write(&mut self, req_id: ReqId, op: &mut Op) -> bool {
        let Kind::Write(write) = &mut op.kind else {
            unreachable!("called for writes")
        };
        let Some(minted) = &write.minted else {
            unreachable!("called once minted")
        };
        let answered = |n: &NodeId| minted.acked.contains(n) || minted.failed.contains(n);
        let got = minted.acked.iter().filter(|&&n| write.counts(n)).count() as u32;
        let pending = write
            .targets
            .iter()
            .filter(|t| write.counts(t.node) && !answered(&t.node))
            .count() as u32;
        if !write.answered && got >= op.needed {
            write.answered = true;
            let written = Written {
                dot: minted.dot,
                context: minted.context.clone(),
            };
            self.results.push_back(Completed {
                req_id,
                outcome: Outcome::Write(Ok(written)),
            });
        } else if !write.answered && got + pending < op.needed {
            write.answered = true;
            let failure = Failure::Unavailable {
                needed: op.needed,
                got,
            };
            self.results.push_back(Completed {
                req_id,
                outcome: Outcome::Write(Err(failure)),
            });
        }
        if write.targets.iter().all(|t| answered(&t.node)) {
            self.owe(&op.key, write, |m, n| m.failed.contains(n));
            return true;
        }
        false
    }

    /// Queues a hint for every target of a minted write that `missed` it.
    fn owe(&mut self, key: &[u8], write: &WriteOp, missed: impl Fn(&Minted, &NodeId) -> bool) {
        let Some(minted) = &write.minted else {
            return;
        };
        for t in write.targets.iter().filter(|t| missed(minted, &t.node)) {
            self.hints.push_back(Hint {
                owner: t.owner(),
                key: key.to_vec(),
                versions: minted.versions.clone(),
            });
        }
    }

    /// The deadline of `op` passed: fail it if unanswered, repair what a read saw, and owe a
    /// write to every target that did not acknowledge it.
    fn expire(&mut self, req_id: ReqId, op: Op) {
        match &op.kind {
            Kind::Read(read) => {
                if !read.answered {
                    let got = read.replies.len() as u32;
                    let failure = Failure::Timeout {
                        needed: op.needed,
                        got,
                    };
                    self.finish(req_id, Outcome::Read(Err(failure)));
                }
                self.repair(req_id, &op);
            }
            Kind::Write(write) => {
                if !write.answered {
                    let got = write.minted.as_ref().map_or(0, |m| {
                        m.acked.iter().filter(|&&n| write.counts(n)).count() as u32
                    });
                    let failure = Failure::Timeout {
                        needed: op.needed,
                        got,
                    };
                    self.finish(req_id, Outcome::Write(Err(failure)));
                }
                self.owe(&op.key, write, |m, n| !m.acked.contains(n));
            }
        }
    }
}

/// Asserts that `answered` names distinct members of `asked`.
fn assert_distinct_members<'a>(answered: impl Iterator<Item = &'a NodeId>, asked: &[NodeId]) {
    let mut seen = BTreeSet::new();
    for node in answered {
        assert!(asked.contains(node), "an answer from a node that was asked");
        assert!(seen.insert(*node), "one answer per node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistency::Consistency;
    use crate::replica;
    use std::collections::BTreeMap;

    const T: Duration = Duration::from_millis(100);

    /// Replicas as plain maps; `deliver` serves every pending transmit for the nodes in `up`.
    struct Cluster {
        stores: BTreeMap<NodeId, Option<Vec<u8>>>,
        c: Coordinator,
    }

    impl Cluster {
        fn new() -> Cluster {
            Cluster {
                stores: (1..=3).map(|n| (n, None)).collect(),
                c: Coordinator::new(),
            }
        }

        fn deliver(&mut self, up: &[NodeId]) -> Vec<Transmit> {
            let mut dropped = Vec::new();
            while let Some(t) = self.c.poll_transmit() {
                if !up.contains(&t.to) {
                    dropped.push(t);
                    continue;
                }
                let stored = self.stores[&t.to].clone();
                let h = replica::handle(t.to, stored.as_deref(), &t.request);
                if let Some(bytes) = h.store {
                    self.stores.insert(t.to, Some(bytes));
                }
                self.c.handle_reply(t.to, t.req_id, h.reply);
            }
            dropped
        }
    }

    fn write(c: &mut Coordinator, id: ReqId, value: &[u8], w: Consistency) {
        let homes = [Target::home(1), Target::home(2), Target::home(3)];
        write_to(c, id, value, &homes, w, false);
    }

    fn write_to(
        c: &mut Coordinator,
        id: ReqId,
        value: &[u8],
        targets: &[Target],
        w: Consistency,
        strict: bool,
    ) {
        let ctx = WriteContext::Local;
        let value = Some(value.to_vec());
        let needed = w.required(3);
        c.put(
            Duration::ZERO,
            id,
            b"k".to_vec(),
            value,
            ctx,
            targets,
            needed,
            strict,
            T,
        );
    }

    #[test]
    fn write_is_acknowledged_after_w() {
        let mut cl = Cluster::new();
        write(&mut cl.c, 1, b"v", Consistency::Quorum);
        cl.deliver(&[1, 2]);
        let done = cl.c.poll_result().unwrap();
        assert!(matches!(done.outcome, Outcome::Write(Ok(_))), "{done:?}");
        assert!(cl.stores[&3].is_none());
        assert_eq!(cl.c.in_flight(), 1, "the write waits for its third replica");
        cl.c.handle_timeout(T);
        assert_eq!(cl.c.in_flight(), 0);
    }

    #[test]
    fn write_times_out_with_too_few_acks() {
        let mut cl = Cluster::new();
        write(&mut cl.c, 1, b"v", Consistency::All);
        cl.deliver(&[1, 2]);
        assert_eq!(cl.c.poll_result(), None);
        assert_eq!(cl.c.poll_timeout(), Some(T));
        cl.c.handle_timeout(T - Duration::from_millis(1));
        assert_eq!(cl.c.poll_result(), None);
        cl.c.handle_timeout(T);
        let failure = Failure::Timeout { needed: 3, got: 2 };
        assert_eq!(
            cl.c.poll_result().unwrap().outcome,
            Outcome::Write(Err(failure))
        );
        assert_eq!(cl.c.poll_timeout(), None);
    }

    #[test]
    fn impossible_levels_are_unavailable_at_once() {
        let mut c = Coordinator::new();
        write(&mut c, 1, b"v", Consistency::Count(4));
        let failure = Failure::Unavailable { needed: 4, got: 3 };
        assert_eq!(
            c.poll_result().unwrap().outcome,
            Outcome::Write(Err(failure))
        );
        assert_eq!(c.poll_transmit(), None);
    }

    #[test]
    fn a_failed_mint_moves_to_the_next_replica() {
        let mut c = Coordinator::new();
        write(&mut c, 1, b"v", Consistency::One);
        let first = c.poll_transmit().unwrap();
        assert_eq!(first.to, 1);
        c.handle_reply(1, 1, Reply::Failed);
        let second = c.poll_transmit().unwrap();
        assert_eq!(second.to, 2);
        assert!(matches!(second.request, Request::Update { .. }));
        let h = replica::handle(2, None, &second.request);
        c.handle_reply(2, 1, h.reply);
        assert!(matches!(
            c.poll_result().unwrap().outcome,
            Outcome::Write(Ok(_))
        ));
    }

    #[test]
    fn read_merges_and_repairs_stale_replicas() {
        let mut cl = Cluster::new();
        write(&mut cl.c, 1, b"old", Consistency::All);
        cl.deliver(&[1, 2, 3]);
        let _ = cl.c.poll_result();
        write(&mut cl.c, 2, b"new", Consistency::One);
        let lost = cl.deliver(&[1]);
        assert_eq!(lost.len(), 2);
        let _ = cl.c.poll_result();

        let needed = Consistency::Quorum.required(3);
        cl.c.get(Duration::ZERO, 3, b"k".to_vec(), &[3, 2, 1], needed, T);
        cl.deliver(&[1, 2, 3]);
        let Outcome::Read(Ok(Some(found))) = cl.c.poll_result().unwrap().outcome else {
            panic!("read failed")
        };
        // R = 2 was met by the two stale replicas first; the newest is picked up before repair.
        assert!(found.values().all(|v| v == Some(&b"old"[..])));
        let copies: std::collections::BTreeSet<_> = cl.stores.values().collect();
        assert_eq!(copies.len(), 1, "read repair converged the replicas");
        let state = DvvSet::decode(cl.stores[&2].as_deref().unwrap()).unwrap();
        assert_eq!(state.values().collect::<Vec<_>>(), vec![Some(&b"new"[..])]);
        assert_eq!(cl.c.in_flight(), 1, "only the write that lost two targets");
        cl.c.handle_timeout(T);
        assert_eq!(cl.c.in_flight(), 0);
    }

    #[test]
    fn a_fallback_stands_in_and_counts_unless_strict() {
        let sloppy = [
            Target::home(1),
            Target::home(2),
            Target {
                node: 4,
                stands_in_for: Some(3),
            },
        ];
        let mut c = Coordinator::new();
        write_to(&mut c, 1, b"v", &sloppy, Consistency::Quorum, false);
        let mint = c.poll_transmit().unwrap();
        let h = replica::handle(1, None, &mint.request);
        c.handle_reply(1, 1, h.reply);
        let sent: Vec<Transmit> = std::iter::from_fn(|| c.poll_transmit()).collect();
        assert!(matches!(sent[0].request, Request::Put { .. }) && sent[0].to == 2);
        assert!(matches!(sent[1].request, Request::Hinted { owner: 3, .. }) && sent[1].to == 4);
        c.handle_reply(4, 1, Reply::Stored);
        assert!(matches!(
            c.poll_result().unwrap().outcome,
            Outcome::Write(Ok(_))
        ));

        let mut c = Coordinator::new();
        let homes = [Target::home(1), Target::home(2), Target::home(3)];
        write_to(&mut c, 2, b"v", &homes[..1], Consistency::Quorum, true);
        let failure = Failure::Unavailable { needed: 2, got: 1 };
        assert_eq!(
            c.poll_result().unwrap().outcome,
            Outcome::Write(Err(failure))
        );
        write_to(&mut c, 3, b"v", &sloppy, Consistency::All, true);
        let failure = Failure::Unavailable { needed: 3, got: 2 };
        assert_eq!(
            c.poll_result().unwrap().outcome,
            Outcome::Write(Err(failure)),
            "a strict write does not count the fallback"
        );
    }

    #[test]
    fn targets_that_fail_or_stay_silent_are_owed_hints() {
        let mut cl = Cluster::new();
        write(&mut cl.c, 1, b"v", Consistency::One);
        cl.deliver(&[1]);
        assert!(matches!(
            cl.c.poll_result().unwrap().outcome,
            Outcome::Write(Ok(_))
        ));
        assert_eq!(
            cl.c.poll_hint(),
            None,
            "the write waits for its last targets"
        );
        cl.c.handle_reply(2, 1, Reply::Failed);
        cl.c.handle_timeout(T);
        let owed: Vec<NodeId> = std::iter::from_fn(|| cl.c.poll_hint())
            .map(|h| h.owner)
            .collect();
        assert_eq!(owed, [2, 3]);
        assert_eq!(cl.c.in_flight(), 0);

        let mut cl = Cluster::new();
        write(&mut cl.c, 2, b"v", Consistency::All);
        cl.deliver(&[1, 2, 3]);
        assert!(matches!(
            cl.c.poll_result().unwrap().outcome,
            Outcome::Write(Ok(_))
        ));
        assert_eq!(
            cl.c.poll_hint(),
            None,
            "nothing is owed when every target stored it"
        );
        assert_eq!(cl.c.in_flight(), 0);
    }
}
