//! The request coordinator: one state machine per shard, driving every client read and write
//! that lands on it through the key's replicas.
//!
//! Sans-IO in the style of quinn-proto: the node calls [`Coordinator::get`] /
//! [`Coordinator::put`] for client requests, [`Coordinator::handle_reply`] for replica
//! replies and [`Coordinator::handle_timeout`] when [`Coordinator::poll_timeout`] passes,
//! then drains [`Coordinator::poll_transmit`] (messages to send, possibly to itself) and
//! [`Coordinator::poll_result`] (answers for clients). Time is a [`Duration`] since any epoch
//! the driver picks; the coordinator never reads a clock.
//!
//! Writes: the first replica of the list is asked to mint the write (`Update`): the driver
//! puts itself first when it is a replica, else a replica its failure detector believes up.
//! Only an explicit `Failed` moves on to the next replica, never a silence: a slow replica
//! may still mint, and two mints of one client write would be two siblings the client never
//! meant. The `Updated` reply counts as one acknowledgement and its versions go to every
//! other replica as a `Put`; the client is answered after W acknowledgements.
//!
//! Reads: `Get` goes to all replicas; the client is answered with the merge of the first R
//! replies. The request lives on until every replica answered or the deadline passed, then
//! each replica that answered with something other than the merge gets it as a `Put` (read
//! repair).
//!
//! Invariants, checked by [`Coordinator::check_invariants`] in debug builds after every
//! input:
//! 1. every request in flight has exactly one deadline, and every deadline a request;
//! 2. a request needs between 1 and its replica count answers;
//! 3. a read's replying and failed replicas are distinct replicas of its key;
//! 4. a write has asked at most its replica count to mint, and has asked one once minted;
//! 5. a minted write's acknowledging and failed replicas are distinct replicas of its key.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use crate::NodeId;
use crate::consistency::Consistency;
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
}

#[derive(Debug)]
struct Op {
    key: Vec<u8>,
    replicas: Vec<NodeId>,
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
    /// The wire form of the client's [`WriteContext`].
    context: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// Replicas asked to mint the write so far (a prefix of `replicas`); all but the last
    /// answered `Failed`.
    asked: usize,
    /// Set once a replica has minted the write.
    minted: Option<Minted>,
}

#[derive(Debug)]
struct Minted {
    dot: Dot,
    context: VersionVector,
    acked: Vec<NodeId>,
    failed: Vec<NodeId>,
}

impl Coordinator {
    pub fn new() -> Coordinator {
        Coordinator::default()
    }

    /// Requests in progress (including reads finishing their repair).
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Starts a read of `key` from its `replicas` (the preference list, reachable ones first),
    /// answering once `r` of them replied or failing at `now + timeout`.
    pub fn get(
        &mut self,
        now: Duration,
        req_id: ReqId,
        key: Vec<u8>,
        replicas: &[NodeId],
        r: Consistency,
        timeout: Duration,
    ) {
        let needed = r.required(replicas.len() as u32).max(1);
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
        self.insert(
            req_id,
            Op {
                key,
                replicas: replicas.to_vec(),
                needed,
                deadline: now + timeout,
                kind: Kind::Read(ReadOp::default()),
            },
        );
        self.check_invariants();
    }

    /// Starts a write of `value` (`None`: delete) superseding `context`, acknowledged after
    /// `w` of `replicas` stored it, failing at `now + timeout`.
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
        replicas: &[NodeId],
        w: Consistency,
        timeout: Duration,
    ) {
        let needed = w.required(replicas.len() as u32).max(1);
        if needed as usize > replicas.len() {
            let failure = Failure::Unavailable {
                needed,
                got: replicas.len() as u32,
            };
            self.finish(req_id, Outcome::Write(Err(failure)));
            return;
        }
        let mut op = Op {
            key,
            replicas: replicas.to_vec(),
            needed,
            deadline: now + timeout,
            kind: Kind::Write(WriteOp {
                context: context.encode(),
                value,
                asked: 0,
                minted: None,
            }),
        };
        self.ask_next(req_id, &mut op);
        self.insert(req_id, op);
        self.check_invariants();
    }

    /// A replica's reply. Replies to finished or unknown requests, and from nodes that were
    /// not asked, are ignored.
    pub fn handle_reply(&mut self, from: NodeId, req_id: ReqId, reply: Reply) {
        let Some(mut op) = self.ops.remove(&req_id) else {
            return;
        };
        self.timers.remove(&(op.deadline, req_id));
        let done = if op.replicas.contains(&from) {
            match op.kind {
                Kind::Read(_) => self.read_reply(req_id, &mut op, from, reply),
                Kind::Write(_) => self.write_reply(req_id, &mut op, from, reply),
            }
        } else {
            false
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
                self.expire(req_id, &op);
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
            assert!(
                op.needed as usize <= op.replicas.len(),
                "needs no more than exist"
            );
            match &op.kind {
                Kind::Read(read) => {
                    // 3.
                    let answered = read.replies.iter().map(|(n, _)| n).chain(&read.failed);
                    assert_distinct_replicas(answered, &op.replicas);
                }
                Kind::Write(write) => {
                    // 4.
                    assert!(write.asked <= op.replicas.len(), "asked only replicas");
                    if let Some(minted) = &write.minted {
                        assert!(write.asked >= 1, "a mint was asked for");
                        // 5.
                        let answered = minted.acked.iter().chain(&minted.failed);
                        assert_distinct_replicas(answered, &op.replicas);
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

    /// Asks the next replica in line to mint the write.
    fn ask_next(&mut self, req_id: ReqId, op: &mut Op) {
        let Kind::Write(write) = &mut op.kind else {
            unreachable!("only writes mint")
        };
        debug_assert!(write.minted.is_none());
        let Some(&to) = op.replicas.get(write.asked) else {
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
        if read.replies.iter().any(|(n, _)| *n == from) || read.failed.contains(&from) {
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
        let pending = (op.replicas.len() - read.replies.len() - read.failed.len()) as u32;
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
        let was_asked = write.asked > 0 && op.replicas[write.asked - 1] == from;
        match (&mut write.minted, reply) {
            (None, Reply::Updated { dot, versions }) if was_asked => {
                let Ok(state) = DvvSet::decode(&versions) else {
                    return self.update_failed(req_id, op);
                };
                for &to in op.replicas.iter().filter(|&&n| n != from) {
                    let request = Request::Put {
                        key: op.key.clone(),
                        versions: versions.clone(),
                    };
                    self.send(to, req_id, request);
                }
                let Kind::Write(write) = &mut op.kind else {
                    unreachable!("called for writes")
                };
                write.minted = Some(Minted {
                    dot,
                    context: state.context().clone(),
                    acked: vec![from],
                    failed: Vec::new(),
                });
                self.check_write(req_id, op)
            }
            (None, Reply::Failed) if was_asked => self.update_failed(req_id, op),
            (Some(minted), Reply::Stored) => {
                if !minted.acked.contains(&from) && !minted.failed.contains(&from) {
                    minted.acked.push(from);
                }
                self.check_write(req_id, op)
            }
            (Some(minted), Reply::Failed) => {
                if !minted.acked.contains(&from) && !minted.failed.contains(&from) {
                    minted.failed.push(from);
                }
                self.check_write(req_id, op)
            }
            // Duplicates and replies of the wrong kind.
            _ => false,
        }
    }

    /// The replica asked to mint the write failed: ask the next, or give up when none is left.
    fn update_failed(&mut self, req_id: ReqId, op: &mut Op) -> bool {
        let Kind::Write(write) = &op.kind else {
            unreachable!("called for writes")
        };
        if write.asked == op.replicas.len() {
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

    /// Answers the client once W replicas acknowledged, or once W can no longer be reached.
    fn check_write(&mut self, req_id: ReqId, op: &Op) -> bool {
        let Kind::Write(WriteOp {
            minted: Some(minted),
            ..
        }) = &op.kind
        else {
            unreachable!("called once minted")
        };
        let got = minted.acked.len() as u32;
        let pending = (op.replicas.len() - minted.acked.len() - minted.failed.len()) as u32;
        if got >= op.needed {
            let written = Written {
                dot: minted.dot,
                context: minted.context.clone(),
            };
            self.finish(req_id, Outcome::Write(Ok(written)));
            true
        } else if got + pending < op.needed {
            let failure = Failure::Unavailable {
                needed: op.needed,
                got,
            };
            self.finish(req_id, Outcome::Write(Err(failure)));
            true
        } else {
            false
        }
    }

    /// The deadline of `op` passed: fail it if unanswered, and repair what a read saw.
    fn expire(&mut self, req_id: ReqId, op: &Op) {
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
                self.repair(req_id, op);
            }
            Kind::Write(write) => {
                let got = write.minted.as_ref().map_or(0, |m| m.acked.len() as u32);
                let failure = Failure::Timeout {
                    needed: op.needed,
                    got,
                };
                self.finish(req_id, Outcome::Write(Err(failure)));
            }
        }
    }
}

/// Asserts that `answered` names distinct members of `replicas`.
fn assert_distinct_replicas<'a>(answered: impl Iterator<Item = &'a NodeId>, replicas: &[NodeId]) {
    let mut seen = BTreeSet::new();
    for node in answered {
        assert!(replicas.contains(node), "an answer from a replica");
        assert!(seen.insert(*node), "one answer per replica");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let ctx = WriteContext::Local;
        c.put(
            Duration::ZERO,
            id,
            b"k".to_vec(),
            Some(value.to_vec()),
            ctx,
            &[1, 2, 3],
            w,
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
        assert_eq!(cl.c.in_flight(), 0);
        assert!(cl.stores[&3].is_none());
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

        cl.c.get(
            Duration::ZERO,
            3,
            b"k".to_vec(),
            &[3, 2, 1],
            Consistency::Quorum,
            T,
        );
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
        assert_eq!(cl.c.in_flight(), 0);
    }
}
