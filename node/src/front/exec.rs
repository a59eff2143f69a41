//! Runs parsed commands and writes the replies in request order.
//!
//! A pipelined batch is cut into runs. Consecutive plain reads (GET, MGET: the table's
//! [`Flag::BatchRead`]) run together, and so do consecutive blind writes (SET without
//! NX/XX/GET/KEEPTTL, MSET: [`Flag::BlindWrite`]); every other command runs alone, in order,
//! after the run before it has finished, so a read always sees the writes the connection sent
//! before it. The backend, chosen once per batch, decides what a run becomes:
//!
//! - `standalone`: this node's shards, through the mesh. A run of reads is one `Get` per
//!   owning shard and a run of blind writes one atomic `Put` per owning shard, all shards at
//!   once: a pipeline of 16 SETs costs one group commit, not 16.
//! - `cluster`: the shard's [`Driver`](crate::cluster::driver::Driver). Every key of a run
//!   is one coordinated request, all in flight together.
//!
//! Commands about the connection and this node run the same with either (`node`), and a
//! command the mode does not run gets the refusal its table entry gives.

mod cluster;
mod node;
mod shards;
mod standalone;

use std::time::Instant;

use crate::front::command::table::{ClusterSupport, Flag, Mode};
use crate::front::command::{self, Env, Limits, Refusal, Request};
use crate::front::ctx::{Ctx, Session};
use crate::front::resp::Reply;
use crate::shard::Counters;

/// A request as parsed, or why it was refused.
type Parsed<'a> = Result<Request<'a>, Refusal>;

/// Where keyed commands run.
///
/// A trait rather than an enum matched at every step: the batch loop is written once,
/// generic over it, and each backend's three operations sit together in its own module.
trait Backend {
    const MODE: Mode;

    /// A run of batchable reads; runs hold only parsed requests.
    async fn reads(&self, run: &[Parsed<'_>], reply: &mut Reply, session: &Session);

    /// A run of blind writes; runs hold only parsed requests.
    async fn writes(&self, run: &[Parsed<'_>], reply: &mut Reply, session: &Session);

    /// One keyed command that this mode runs and that is not batched.
    async fn one(&self, req: &Request<'_>, reply: &mut Reply, session: &mut Session);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Read,
    BlindWrite,
    Other,
}

fn class(parsed: &Parsed<'_>, mode: Mode) -> Class {
    let Ok(req) = parsed else {
        return Class::Other;
    };
    if req.spec.cluster.refusal(&req.cmd, mode).is_some() {
        Class::Other
    } else if req.spec.has(Flag::BatchRead) {
        Class::Read
    } else if req.spec.has(Flag::BlindWrite) && req.cmd.is_blind() {
        Class::BlindWrite
    } else {
        Class::Other
    }
}

/// The requests of a run.
fn requests<'r, 'a>(run: &'r [Parsed<'a>]) -> impl Iterator<Item = &'r Request<'a>> {
    debug_assert!(run.iter().all(Result::is_ok), "runs hold parsed requests");
    run.iter().flatten()
}

/// The reply to a command routed where it does not run: a bug, not a client's error.
fn misrouted(reply: &mut Reply) {
    debug_assert!(false, "command routed to the wrong backend");
    reply.error("ERR internal: command routed to the wrong backend");
}

impl Ctx {
    fn limits(&self) -> Limits {
        Limits {
            max_value_bytes: self.config.max_value_bytes,
        }
    }

    /// Runs one batch of requests (each the argument list of one command) in order.
    pub async fn run_batch(&self, requests: &[&[&[u8]]], reply: &mut Reply, session: &mut Session) {
        let env = Env {
            now_ms: self.clock.now_ms(),
            limits: self.limits(),
        };
        let parsed: Vec<Parsed<'_>> = requests
            .iter()
            .map(|args| command::parse(args, &env))
            .collect();
        match &self.driver {
            None => {
                let backend = standalone::Standalone(self);
                self.run_on(&backend, &parsed, reply, session).await;
            }
            Some(driver) => {
                let backend = cluster::Cluster(driver);
                self.run_on(&backend, &parsed, reply, session).await;
            }
        }
    }

    async fn run_on<B: Backend>(
        &self,
        backend: &B,
        parsed: &[Parsed<'_>],
        reply: &mut Reply,
        session: &mut Session,
    ) {
        let mut i = 0;
        while i < parsed.len() && !session.quit {
            let started = Instant::now();
            let kind = class(&parsed[i], B::MODE);
            let end = if kind == Class::Other {
                i + 1
            } else {
                i + parsed[i..]
                    .iter()
                    .take_while(|p| class(p, B::MODE) == kind)
                    .count()
            };
            let run = &parsed[i..end];
            match kind {
                Class::Read => backend.reads(run, reply, session).await,
                Class::BlindWrite => backend.writes(run, reply, session).await,
                Class::Other => self.run_alone(backend, &parsed[i], reply, session).await,
            }
            self.count(run, started.elapsed());
            i = end;
        }
    }

    /// A command that runs alone: refused, node-local, or the backend's.
    async fn run_alone<B: Backend>(
        &self,
        backend: &B,
        parsed: &Parsed<'_>,
        reply: &mut Reply,
        session: &mut Session,
    ) {
        let req = match parsed {
            Ok(req) => req,
            Err(refusal) => {
                Counters::add(&self.shard.counters.errors, 1);
                return reply.error(&refusal.0);
            }
        };
        match req.spec.cluster.refusal(&req.cmd, B::MODE) {
            Some(refusal) => reply.error(&refusal.to_string()),
            None if matches!(req.spec.cluster, ClusterSupport::NodeLocal) => {
                self.run_node(req, reply, session).await
            }
            None => backend.one(req, reply, session).await,
        }
    }

    /// Statistics of a run that took `elapsed`: each command counted, as a read or a write
    /// by its table entry, with the run's latency.
    fn count(&self, run: &[Parsed<'_>], elapsed: std::time::Duration) {
        let counters = &self.shard.counters;
        for parsed in run {
            Counters::add(&counters.commands, 1);
            match parsed {
                Ok(req) if req.is_write() => Counters::add(&counters.writes, 1),
                Ok(_) => Counters::add(&counters.reads, 1),
                Err(_) => {}
            }
            counters.record_latency(elapsed);
        }
    }
}
