//! Runs parsed commands: locally, or on the owning shards through the mesh, and writes the
//! replies in request order.
//!
//! A pipelined batch is cut into runs. Consecutive plain reads (GET, MGET: the table's
//! [`Flag::BatchRead`]) become one `Get` per owning shard, and consecutive blind writes (SET
//! without NX/XX/GET/KEEPTTL, MSET: [`Flag::BlindWrite`]) one atomic `Put` per owning shard,
//! all shards at once: a pipeline of 16 SETs costs one
//! group commit, not 16. Every other command runs alone, in order, after the run before it
//! has finished, so a read always sees the writes the connection sent before it.
//!
//! In cluster mode the same runs go through the shard's [`Driver`] instead: every key of a
//! run is one coordinated request, all in flight together. GET returns the chosen sibling,
//! SET supersedes what the minting replica holds, VGET/VSET/VDEL expose versions; the table
//! refuses what needs an atomic read-modify-write of a replicated key (SET NX, EXPIRE, ...),
//! and DBSIZE, SCAN and INFO describe this node's replicas.

use std::rc::Rc;
use std::time::Instant;

use shoal_cluster::consistency::Consistency;
use shoal_cluster::message::WriteContext;
use shoal_cluster::vv::VersionVector;

use crate::cluster::driver::{self, Driver, Pending};
use crate::front::command::table::{Flag, Mode};
use crate::front::command::{self, Command, Env, Limits, Refusal, Request, Ttl, describe};
use crate::front::ctx::{Ctx, Session};
use crate::front::info;
use crate::front::resp::{Proto, Reply};
use crate::mesh::PendingReply;
use crate::mesh::apply::apply;
use crate::mesh::message::{PutEntry, ShardOp, ShardReply};
use crate::shard::Counters;
use crate::shard::ShardStats;
use crate::shard::store::{Expiry, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Read,
    BlindWrite,
    Other,
}

/// A request as parsed, or why it was refused.
type Parsed<'a> = Result<Request<'a>, Refusal>;

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

/// Replies of shards to one fan-out, indexed by shard.
type ShardResults<T> = Vec<Option<Result<T, String>>>;

/// Awaits the replies of [`Ctx::send_remote`], each shard's turned into its result by `take`.
async fn collect<T>(
    pending: Vec<(usize, PendingReply)>,
    results: &mut ShardResults<T>,
    take: impl Fn(ShardReply) -> Result<T, String>,
) {
    for (s, p) in pending {
        results[s] = Some(match p.await {
            Ok(reply) => take(reply),
            Err(e) => Err(format!("ERR {e}")),
        });
    }
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
        let cmds: Vec<Parsed<'_>> = requests
            .iter()
            .map(|args| command::parse(args, &env))
            .collect();
        let mode = match self.driver {
            Some(_) => Mode::Cluster,
            None => Mode::Standalone,
        };
        let counters = &self.shard.counters;
        let mut i = 0;
        while i < cmds.len() && !session.quit {
            let started = Instant::now();
            let kind = class(&cmds[i], mode);
            let end = if kind == Class::Other {
                i + 1
            } else {
                i + cmds[i..]
                    .iter()
                    .take_while(|c| class(c, mode) == kind)
                    .count()
            };
            let run = &cmds[i..end];
            match (kind, &self.driver) {
                (Class::Read, Some(d)) => self.cluster_reads(d, run, reply, session).await,
                (Class::Read, None) => self.read_run(run, reply).await,
                (Class::BlindWrite, Some(d)) => self.cluster_writes(d, run, reply, session).await,
                (Class::BlindWrite, None) => self.write_run(run, reply).await,
                (Class::Other, _) => match &cmds[i] {
                    Ok(req) => match req.spec.cluster.refusal(&req.cmd, mode) {
                        Some(refusal) => reply.error(&refusal.to_string()),
                        None => self.run_one(&req.cmd, reply, session).await,
                    },
                    Err(refusal) => {
                        Counters::add(&counters.errors, 1);
                        reply.error(&refusal.0);
                    }
                },
            }
            let elapsed = started.elapsed();
            for c in run {
                Counters::add(&counters.commands, 1);
                match c {
                    Ok(req) if req.is_write() => Counters::add(&counters.writes, 1),
                    Ok(_) => Counters::add(&counters.reads, 1),
                    Err(_) => {}
                }
                counters.record_latency(elapsed);
            }
            i = end;
        }
    }

    async fn send(&self, to: usize, op: &ShardOp) -> Result<PendingReply, String> {
        Counters::add(&self.shard.counters.forwarded, 1);
        self.mesh.send(to, op).await.map_err(|e| format!("ERR {e}"))
    }

    async fn route(&self, to: usize, op: ShardOp) -> ShardReply {
        if to == self.shard.id {
            return apply(&self.shard, op).await;
        }
        match self.send(to, &op).await {
            Ok(p) => p
                .await
                .unwrap_or_else(|e| ShardReply::Error(format!("ERR {e}"))),
            Err(e) => ShardReply::Error(e),
        }
    }

    /// Sends each shard its op (remote ones first, so they run while the local one does) and
    /// collects the replies by shard; shards without an op get `None`.
    async fn fan_out<T>(
        &self,
        ops: Vec<Option<ShardOp>>,
        take: impl Fn(ShardReply) -> Result<T, String>,
    ) -> ShardResults<T> {
        let me = self.shard.id;
        let mut results: ShardResults<T> = (0..ops.len()).map(|_| None).collect();
        let mut local = None;
        let mut remote = Vec::new();
        for (s, op) in ops.into_iter().enumerate() {
            match op {
                Some(op) if s == me => local = Some(op),
                Some(op) => remote.push((s, op)),
                None => {}
            }
        }
        let pending = self.send_remote(remote, &mut results).await;
        if let Some(op) = local {
            results[me] = Some(take(apply(&self.shard, op).await));
        }
        collect(pending, &mut results, take).await;
        results
    }

    /// Sends each remote shard its op; a send that fails is that shard's result at once.
    async fn send_remote<T>(
        &self,
        ops: impl IntoIterator<Item = (usize, ShardOp)>,
        results: &mut ShardResults<T>,
    ) -> Vec<(usize, PendingReply)> {
        let mut pending = Vec::new();
        for (s, op) in ops {
            match self.send(s, &op).await {
                Ok(p) => pending.push((s, p)),
                Err(e) => results[s] = Some(Err(e)),
            }
        }
        pending
    }

    /// GET/MGET whose keys this shard owns: no grouping, no copies of keys.
    async fn read_local(&self, run: &[Parsed<'_>], reply: &mut Reply) {
        let keys: Vec<&[u8]> = run.iter().flatten().flat_map(Request::keys).collect();
        let values = match self.shard.store.get_many(&keys).await {
            Ok(values) => values,
            Err(e) => {
                let e = format!("ERR {e}");
                for _ in run {
                    reply.error(&e);
                }
                return;
            }
        };
        let values = values.iter().map(|v| Ok(v.as_ref().map(Value::bytes)));
        reply_reads(run, values, reply);
    }

    async fn read_run(&self, run: &[Parsed<'_>], reply: &mut Reply) {
        let n = self.shard.shards;
        let me = self.shard.id;
        if run
            .iter()
            .flatten()
            .flat_map(Request::keys)
            .all(|k| self.shard.owner(k) == me)
        {
            return self.read_local(run, reply).await;
        }
        let mut remote: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
        let mut local: Vec<&[u8]> = Vec::new();
        let mut slots: Vec<(usize, usize)> = Vec::new();
        for key in run.iter().flatten().flat_map(Request::keys) {
            let s = self.shard.owner(key);
            if s == me {
                slots.push((s, local.len()));
                local.push(key);
            } else {
                slots.push((s, remote[s].len()));
                remote[s].push(key.to_vec());
            }
        }
        let mut results: ShardResults<Vec<Option<Vec<u8>>>> = (0..n).map(|_| None).collect();
        let gets = remote
            .into_iter()
            .enumerate()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(s, keys)| (s, ShardOp::Get { keys }));
        let pending = self.send_remote(gets, &mut results).await;
        let local_values =
            (self.shard.store.get_many(&local).await).map_err(|e| format!("ERR {e}"));
        collect(pending, &mut results, |reply| match reply {
            ShardReply::Values(v) => Ok(v),
            other => Err(unexpected(&other)),
        })
        .await;
        let value = |(s, i): (usize, usize)| -> Result<Option<&[u8]>, &str> {
            if s == me {
                return match &local_values {
                    Ok(v) => Ok(v.get(i).and_then(|v| v.as_ref()).map(Value::bytes)),
                    Err(e) => Err(e),
                };
            }
            match &results[s] {
                Some(Ok(v)) => Ok(v.get(i).and_then(|v| v.as_deref())),
                Some(Err(e)) => Err(e),
                None => Err("ERR missing shard reply"),
            }
        };
        reply_reads(run, slots.into_iter().map(value), reply);
    }

    async fn write_run(&self, run: &[Parsed<'_>], reply: &mut Reply) {
        let n = self.shard.shards;
        let me = self.shard.id;
        let mut local: Vec<(&[u8], &[u8], u64)> = Vec::new();
        let mut remote: Vec<Vec<PutEntry>> = vec![Vec::new(); n];
        // Per command, the shards it wrote to, as a bit set.
        const _: () = assert!(crate::config::SHARDS_MAX <= 4 * 64);
        let mut touched: Vec<[u64; 4]> = Vec::with_capacity(run.len());
        for req in run.iter().flatten() {
            let mut bits = [0u64; 4];
            let mut owner = |key: &[u8]| {
                let s = self.shard.owner(key);
                bits[s / 64] |= 1 << (s % 64);
                s
            };
            match &req.cmd {
                Command::Set { key, value, opts } => {
                    let at = match opts.expiry {
                        Expiry::At(t) => t,
                        Expiry::Never | Expiry::Keep => shoal_engine::NO_EXPIRY,
                    };
                    let s = owner(key);
                    push_put(s, me, key, value, at, &mut local, &mut remote);
                }
                Command::MSet(pairs) => {
                    for pair in pairs.chunks_exact(2) {
                        let s = owner(pair[0]);
                        push_put(
                            s,
                            me,
                            pair[0],
                            pair[1],
                            shoal_engine::NO_EXPIRY,
                            &mut local,
                            &mut remote,
                        );
                    }
                }
                _ => debug_assert!(false, "only blind writes are batched"),
            }
            touched.push(bits);
        }
        let mut results: ShardResults<()> = (0..n).map(|_| None).collect();
        let puts = remote
            .into_iter()
            .enumerate()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(s, entries)| (s, ShardOp::Put { entries }));
        let pending = self.send_remote(puts, &mut results).await;
        if !local.is_empty() {
            results[me] = Some(
                self.shard
                    .store
                    .put(local.iter().copied())
                    .await
                    .map_err(|e| format!("ERR {e}")),
            );
        }
        collect(pending, &mut results, |reply| match reply {
            ShardReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        })
        .await;
        for bits in touched {
            let failed = (0..n)
                .filter(|s| bits[s / 64] & (1 << (s % 64)) != 0)
                .find_map(|s| match &results[s] {
                    Some(Err(e)) => Some(e.as_str()),
                    _ => None,
                });
            match failed {
                Some(e) => reply.error(e),
                None => reply.ok(),
            }
        }
    }

    /// Groups `keys` by owning shard, one op per shard built by `op`.
    fn by_shard(
        &self,
        keys: &[&[u8]],
        op: impl Fn(Vec<Vec<u8>>) -> ShardOp,
    ) -> Vec<Option<ShardOp>> {
        let mut per: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.shard.shards];
        for k in keys {
            per[self.shard.owner(k)].push(k.to_vec());
        }
        per.into_iter()
            .map(|k| (!k.is_empty()).then(|| op(k)))
            .collect()
    }

    /// Runs `op` on every shard.
    async fn broadcast<T>(
        &self,
        op: ShardOp,
        take: impl Fn(ShardReply) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let ops = (0..self.shard.shards).map(|_| Some(op.clone())).collect();
        self.fan_out(ops, take)
            .await
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("ERR missing shard reply".to_owned())))
            .collect()
    }

    async fn count_keys(
        &self,
        keys: &[&[u8]],
        op: impl Fn(Vec<Vec<u8>>) -> ShardOp,
    ) -> Result<i64, String> {
        let results = self
            .fan_out(self.by_shard(keys, op), |r| match r {
                ShardReply::Count(n) => Ok(n),
                other => Err(unexpected(&other)),
            })
            .await;
        let mut total = 0;
        for r in results.into_iter().flatten() {
            total += r?;
        }
        Ok(total as i64)
    }

    /// The read and write levels of a request: its own, else the connection's, else the
    /// node's.
    fn levels(&self, d: &Driver, session: &Session) -> (Consistency, Consistency) {
        session
            .levels
            .unwrap_or((d.config().read, d.config().write))
    }

    /// A run of GET/MGET in cluster mode: one coordinated read per key, all in flight.
    async fn cluster_reads(
        &self,
        d: &Rc<Driver>,
        run: &[Parsed<'_>],
        reply: &mut Reply,
        session: &Session,
    ) {
        let (r, _) = self.levels(d, session);
        let started: Vec<Vec<Pending>> = run
            .iter()
            .flatten()
            .map(|req| req.keys().map(|k| d.read(k, r)).collect())
            .collect();
        for (req, pending) in run.iter().flatten().zip(started) {
            let mut sets = Vec::with_capacity(pending.len());
            let mut failed = None;
            for p in pending {
                match driver::read_result(p.await) {
                    Ok(set) => sets.push(set),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                reply.error(&e);
                continue;
            }
            if let Command::Get(_) = req.cmd {
                reply.bulk_or_null(sets.first().and_then(|s| driver::chosen_value(s.as_ref())));
            } else {
                reply.array(sets.len());
                for set in &sets {
                    reply.bulk_or_null(driver::chosen_value(set.as_ref()));
                }
            }
        }
    }

    /// A run of blind SET/MSET in cluster mode: one coordinated write per key, all in flight.
    async fn cluster_writes(
        &self,
        d: &Rc<Driver>,
        run: &[Parsed<'_>],
        reply: &mut Reply,
        session: &Session,
    ) {
        let (_, w) = self.levels(d, session);
        let write =
            |key: &[u8], value: &[u8]| d.write(key, Some(value.to_vec()), WriteContext::Local, w);
        let started: Vec<Result<Vec<Pending>, String>> = run
            .iter()
            .flatten()
            .map(|req| match &req.cmd {
                Command::Set { key, value, opts } => {
                    debug_assert_eq!(opts.expiry, Expiry::Never, "the table refuses expiries");
                    Ok(vec![write(key, value)])
                }
                Command::MSet(pairs) => Ok(pairs
                    .chunks_exact(2)
                    .map(|pair| write(pair[0], pair[1]))
                    .collect()),
                _ => Err("ERR internal: not a blind write".to_owned()),
            })
            .collect();
        for pending in started {
            let mut failed = None;
            match pending {
                Ok(pending) => {
                    for p in pending {
                        if let Err(e) = driver::written(p.await) {
                            failed.get_or_insert(e);
                        }
                    }
                }
                Err(e) => failed = Some(e),
            }
            match failed {
                Some(e) => reply.error(&e),
                None => reply.ok(),
            }
        }
    }

    /// Commands with their own meaning in cluster mode; false for the rest, which run as
    /// on a standalone node.
    async fn cluster_one(
        &self,
        d: &Rc<Driver>,
        cmd: &Command<'_>,
        reply: &mut Reply,
        session: &mut Session,
    ) -> bool {
        let (r, w) = self.levels(d, session);
        match cmd {
            Command::VGet { key, r: level } => {
                match driver::read_result(d.read(key, level.unwrap_or(r)).await) {
                    Ok(set) => {
                        let values = driver::live_values(set.as_ref());
                        let empty = VersionVector::new();
                        let context = set.as_ref().map_or(&empty, |s| s.context());
                        reply.array(1 + values.len());
                        reply.bulk(crate::front::context::to_text(context).as_bytes());
                        for v in values {
                            reply.bulk(v);
                        }
                    }
                    Err(e) => reply.error(&e),
                }
            }
            Command::VSet {
                key,
                value,
                context,
                w: level,
            } => {
                let context = WriteContext::Given(context.clone());
                let value = value.map(<[u8]>::to_vec);
                match driver::written(d.write(key, value, context, level.unwrap_or(w)).await) {
                    Ok(written) => {
                        reply.bulk(crate::front::context::to_text(&written.context).as_bytes())
                    }
                    Err(e) => reply.error(&e),
                }
            }
            Command::Consistency(None) => {
                reply.array(2);
                reply.bulk(r.to_string().as_bytes());
                reply.bulk(w.to_string().as_bytes());
            }
            Command::Consistency(Some((r, w))) => {
                let n = d.config().replicas;
                match [r, w].into_iter().find(|l| l.required(n) > n) {
                    Some(l) => reply.error(&format!(
                        "ERR consistency level {l} is more than the {n} replicas of a key"
                    )),
                    None => {
                        session.levels = Some((*r, *w));
                        reply.ok();
                    }
                }
            }
            Command::Del(keys) | Command::Exists(keys) => {
                let reads: Vec<Pending> = keys.iter().map(|k| d.read(k, r)).collect();
                let mut live = Vec::with_capacity(keys.len());
                for (key, p) in keys.iter().zip(reads) {
                    match driver::read_result(p.await) {
                        Ok(set) if driver::live_values(set.as_ref()).is_empty() => {}
                        Ok(_) => live.push(*key),
                        Err(e) => return error(reply, &e),
                    }
                }
                if let Command::Del(_) = cmd {
                    live.sort_unstable();
                    live.dedup();
                    let deletes: Vec<Pending> = live
                        .iter()
                        .map(|k| d.write(k, None, WriteContext::Local, w))
                        .collect();
                    for p in deletes {
                        if let Err(e) = driver::written(p.await) {
                            return error(reply, &e);
                        }
                    }
                }
                reply.int(live.len() as i64);
            }
            Command::Ttl(key, _) => match driver::read_result(d.read(key, r).await) {
                Ok(set) if driver::live_values(set.as_ref()).is_empty() => reply.int(-2),
                Ok(_) => reply.int(-1),
                Err(e) => reply.error(&e),
            },
            _ => return false,
        }
        true
    }

    async fn run_one(&self, cmd: &Command<'_>, reply: &mut Reply, session: &mut Session) {
        if let Some(d) = &self.driver {
            if self.cluster_one(d, cmd, reply, session).await {
                return;
            }
        }
        match cmd {
            Command::Ping(None) => reply.simple("PONG"),
            Command::Ping(Some(msg)) | Command::Echo(msg) => reply.bulk(msg),
            Command::Hello(version) => {
                match version {
                    Some(3) => reply.proto = Proto::Resp3,
                    Some(_) => reply.proto = Proto::Resp2,
                    None => {}
                }
                self.hello(reply, session);
            }
            Command::Command(sub) => describe::reply(*sub, reply),
            Command::Info(sections) => match self.broadcast(ShardOp::Stats, take_stats).await {
                Ok(stats) => {
                    let keyspace = self.keyspace().await;
                    reply.text(&info::render(self, sections, &stats, keyspace));
                }
                Err(e) => reply.error(&e),
            },
            Command::Quit => {
                reply.ok();
                session.quit = true;
            }
            Command::Select | Command::ClientOk => reply.ok(),
            Command::ClientId => reply.int(session.id as i64),
            Command::ClientGetName => reply.null(),
            Command::ConfigGet => reply.map(0),
            Command::Set { key, value, opts } => {
                let op = ShardOp::Set {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    cond: opts.cond,
                    expiry: opts.expiry,
                    get: opts.get,
                };
                match self.route(self.shard.owner(key), op).await {
                    ShardReply::Set(r) if opts.get => reply.bulk_or_null(r.old.as_deref()),
                    ShardReply::Set(r) if r.written => reply.ok(),
                    ShardReply::Set(_) => reply.null(),
                    other => reply.error(&unexpected(&other)),
                }
            }
            Command::Del(keys) => {
                let r = self.count_keys(keys, |keys| ShardOp::Del { keys }).await;
                int_or_error(reply, r);
            }
            Command::Exists(keys) => {
                let r = self.count_keys(keys, |keys| ShardOp::Exists { keys }).await;
                int_or_error(reply, r);
            }
            Command::Expire { key, at_ms, cond } => {
                let op = ShardOp::Expire {
                    key: key.to_vec(),
                    at_ms: *at_ms,
                    cond: *cond,
                };
                match self.route(self.shard.owner(key), op).await {
                    ShardReply::Count(n) => reply.int(n as i64),
                    other => reply.error(&unexpected(&other)),
                }
            }
            Command::Ttl(key, unit) => {
                let op = ShardOp::Ttl { key: key.to_vec() };
                match self.route(self.shard.owner(key), op).await {
                    ShardReply::Int(ms) if ms < 0 => reply.int(ms),
                    ShardReply::Int(ms) => reply.int(match unit {
                        Ttl::Millis => ms,
                        Ttl::Seconds => (ms + 500) / 1000,
                    }),
                    other => reply.error(&unexpected(&other)),
                }
            }
            Command::DbSize => match self.keyspace().await {
                Ok((keys, _)) => reply.int(keys as i64),
                Err(e) => reply.error(&e),
            },
            Command::FlushDb => match self
                .broadcast(ShardOp::Flush, |r| match r {
                    ShardReply::Done => Ok(()),
                    other => Err(unexpected(&other)),
                })
                .await
            {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(&e),
            },
            Command::Scan {
                cursor,
                pattern,
                count,
                type_mismatch,
            } => {
                self.scan(*cursor, *pattern, *count, *type_mismatch, reply)
                    .await
            }
            Command::Get(_) | Command::MGet(_) | Command::MSet(_) => {
                debug_assert!(false, "reads and blind writes run in runs");
                reply.error("ERR internal: unbatched command");
            }
            Command::VGet { .. } | Command::VSet { .. } | Command::Consistency(_) => {
                debug_assert!(false, "the table refuses these standalone");
                reply.error("ERR internal: needs cluster mode");
            }
        }
    }

    fn hello(&self, reply: &mut Reply, session: &Session) {
        reply.map(7);
        reply.bulk(b"server");
        reply.bulk(b"shoal");
        reply.bulk(b"version");
        reply.bulk(info::REDIS_COMPAT_VERSION.as_bytes());
        reply.bulk(b"proto");
        reply.int(if reply.proto == Proto::Resp3 { 3 } else { 2 });
        reply.bulk(b"id");
        reply.int(session.id as i64);
        reply.bulk(b"mode");
        reply.bulk(b"standalone");
        reply.bulk(b"role");
        reply.bulk(b"master");
        reply.bulk(b"modules");
        reply.array(0);
    }

    /// Live keys and keys with an expiry, over all shards (one engine scan per shard).
    async fn keyspace(&self) -> Result<(u64, u64), String> {
        let counts = self
            .broadcast(ShardOp::Count, |r| match r {
                ShardReply::Counted { keys, expires } => Ok((keys, expires)),
                other => Err(unexpected(&other)),
            })
            .await?;
        Ok(counts
            .into_iter()
            .fold((0, 0), |(k, e), (k2, e2)| (k + k2, e + e2)))
    }

    /// SCAN: the cursor is a ring hash. Every shard returns its first `count` keys at or after
    /// it in hash order; the first `count` of their union (plus any keys sharing the last
    /// hash) are the node's, and the next cursor is the hash after them, 0 at the end.
    async fn scan(
        &self,
        cursor: u64,
        pattern: Option<&[u8]>,
        count: usize,
        type_mismatch: bool,
        reply: &mut Reply,
    ) {
        let op = ShardOp::Scan {
            from_hash: cursor,
            count: count as u32,
        };
        let results = self
            .broadcast(op, |r| match r {
                ShardReply::Keys { keys, exhausted } => Ok((keys, exhausted)),
                other => Err(unexpected(&other)),
            })
            .await;
        let shards = match results {
            Ok(r) => r,
            Err(e) => return reply.error(&e),
        };
        let all_exhausted = shards.iter().all(|(_, exhausted)| *exhausted);
        let mut keys: Vec<(u64, Vec<u8>)> = shards.into_iter().flat_map(|(k, _)| k).collect();
        keys.sort_unstable();
        let total = keys.len();
        let mut take = total.min(count);
        if let Some(last) = take.checked_sub(1).map(|i| keys[i].0) {
            while take < total && keys[take].0 == last {
                take += 1;
            }
        }
        keys.truncate(take);
        let next = if all_exhausted && take == total {
            0
        } else {
            keys.last().map_or(0, |(h, _)| h.wrapping_add(1))
        };
        reply.array(2);
        reply.bulk(next.to_string().as_bytes());
        let shown: Vec<&[u8]> = keys
            .iter()
            .map(|(_, k)| k.as_slice())
            .filter(|k| !type_mismatch && pattern.is_none_or(|p| crate::front::glob::matches(p, k)))
            .collect();
        reply.array(shown.len());
        for k in shown {
            reply.bulk(k);
        }
    }
}

/// Queues one blind write for shard `s`: borrowed when local, copied into a message otherwise.
fn push_put<'a>(
    s: usize,
    me: usize,
    key: &'a [u8],
    value: &'a [u8],
    expires_at_ms: u64,
    local: &mut Vec<(&'a [u8], &'a [u8], u64)>,
    remote: &mut [Vec<PutEntry>],
) {
    if s == me {
        local.push((key, value, expires_at_ms));
    } else {
        remote[s].push(PutEntry {
            key: key.to_vec(),
            value: value.to_vec(),
            expires_at_ms,
        });
    }
}

/// Replies to a run of GET/MGET from their keys' values, given in the run's key order; a
/// command any of whose keys failed gets that error instead.
fn reply_reads<'v>(
    run: &[Parsed<'_>],
    mut values: impl Iterator<Item = Result<Option<&'v [u8]>, &'v str>>,
    reply: &mut Reply,
) {
    let mut mine = Vec::new();
    for req in run.iter().flatten() {
        mine.clear();
        mine.extend(values.by_ref().take(req.keys().len()));
        if let Some(Err(e)) = mine.iter().find(|v| v.is_err()) {
            reply.error(e);
            continue;
        }
        let value = |v: &Result<Option<&'v [u8]>, &'v str>| v.ok().flatten();
        match req.cmd {
            Command::Get(_) => reply.bulk_or_null(mine.first().and_then(value)),
            _ => {
                reply.array(mine.len());
                for v in &mine {
                    reply.bulk_or_null(value(v));
                }
            }
        }
    }
}

fn take_stats(r: ShardReply) -> Result<ShardStats, String> {
    match r {
        ShardReply::Stats(s) => Ok(*s),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(reply: &ShardReply) -> String {
    match reply {
        ShardReply::Error(e) => e.clone(),
        other => format!("ERR internal: unexpected shard reply {other:?}"),
    }
}

/// Replies with an error; for early returns from handlers that report success as `true`.
fn error(reply: &mut Reply, e: &str) -> bool {
    reply.error(e);
    true
}

fn int_or_error(reply: &mut Reply, r: Result<i64, String>) {
    match r {
        Ok(n) => reply.int(n),
        Err(e) => reply.error(&e),
    }
}
