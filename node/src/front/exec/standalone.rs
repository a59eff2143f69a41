//! The standalone backend: keys live in this node's shards, each owned by one of them, and
//! commands reach the owners through the mesh.

use super::shards::{ShardResults, collect, unexpected};
use super::{Backend, Parsed, misrouted, requests};
use crate::config::SHARDS_MAX;
use crate::front::command::table::Mode;
use crate::front::command::{Command, Request, Ttl};
use crate::front::ctx::{Ctx, Session};
use crate::front::resp::Reply;
use crate::mesh::message::{PutEntry, ShardOp, ShardReply};
use crate::shard::store::{Expiry, Value};

pub(super) struct Standalone<'c>(pub(super) &'c Ctx);

/// Shards a command of a write run touched, as a bit set.
type Touched = [u64; SHARDS_MAX.div_ceil(64)];

/// A run of blind writes grouped by owning shard: this shard's entries borrowed, the others'
/// copied into messages, and for each command the shards it wrote to.
struct PutPlan<'a> {
    local: Vec<(&'a [u8], &'a [u8], u64)>,
    remote: Vec<Vec<PutEntry>>,
    touched: Vec<Touched>,
}

impl Backend for Standalone<'_> {
    const MODE: Mode = Mode::Standalone;

    async fn reads(&self, run: &[Parsed<'_>], reply: &mut Reply, _: &Session) {
        let ctx = self.0;
        let me = ctx.shard.id;
        if requests(run)
            .flat_map(Request::keys)
            .all(|k| ctx.shard.owner(k) == me)
        {
            return self.read_local(run, reply).await;
        }
        self.read_spread(run, reply).await
    }

    async fn writes(&self, run: &[Parsed<'_>], reply: &mut Reply, _: &Session) {
        let ctx = self.0;
        let n = ctx.shard.shards;
        let me = ctx.shard.id;
        let plan = self.plan_puts(run);
        let mut results: ShardResults<()> = (0..n).map(|_| None).collect();
        let puts = plan
            .remote
            .into_iter()
            .enumerate()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(s, entries)| (s, ShardOp::Put { entries }));
        let pending = ctx.send_remote(puts, &mut results).await;
        if !plan.local.is_empty() {
            results[me] = Some(
                ctx.shard
                    .store
                    .put(plan.local.iter().copied())
                    .await
                    .map_err(|e| format!("ERR {e}")),
            );
        }
        collect(pending, &mut results, |reply| match reply {
            ShardReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        })
        .await;
        for bits in plan.touched {
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

    async fn one(&self, req: &Request<'_>, reply: &mut Reply, _: &mut Session) {
        let ctx = self.0;
        match &req.cmd {
            Command::Set { key, value, opts } => {
                let op = ShardOp::Set {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    cond: opts.cond,
                    expiry: opts.expiry,
                    get: opts.get,
                };
                match ctx.route(ctx.shard.owner(key), op).await {
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
                match ctx.route(ctx.shard.owner(key), op).await {
                    ShardReply::Count(n) => reply.int(n as i64),
                    other => reply.error(&unexpected(&other)),
                }
            }
            Command::Ttl(key, unit) => {
                let op = ShardOp::Ttl { key: key.to_vec() };
                match ctx.route(ctx.shard.owner(key), op).await {
                    ShardReply::Int(ms) if ms < 0 => reply.int(ms),
                    ShardReply::Int(ms) => reply.int(match unit {
                        Ttl::Millis => ms,
                        Ttl::Seconds => (ms + 500) / 1000,
                    }),
                    other => reply.error(&unexpected(&other)),
                }
            }
            Command::FlushDb => match ctx
                .broadcast(ShardOp::Flush, |r| match r {
                    ShardReply::Done => Ok(()),
                    other => Err(unexpected(&other)),
                })
                .await
            {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(&e),
            },
            Command::Get(_)
            | Command::MGet(_)
            | Command::MSet(_)
            | Command::VGet { .. }
            | Command::VSet { .. }
            | Command::Consistency(_)
            | Command::Ping(_)
            | Command::Echo(_)
            | Command::Hello(_)
            | Command::Command(_)
            | Command::Info(_)
            | Command::Quit
            | Command::Select
            | Command::ClientOk
            | Command::ClientId
            | Command::ClientGetName
            | Command::ConfigGet
            | Command::DbSize
            | Command::Scan { .. } => misrouted(reply),
        }
    }
}

impl Standalone<'_> {
    /// Reads whose keys this shard owns: no grouping, no copies of keys.
    async fn read_local(&self, run: &[Parsed<'_>], reply: &mut Reply) {
        let keys: Vec<&[u8]> = requests(run).flat_map(Request::keys).collect();
        let values = match self.0.shard.store.get_many(&keys).await {
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

    /// Reads whose keys other shards own too: one `Get` per owning shard, all at once.
    async fn read_spread(&self, run: &[Parsed<'_>], reply: &mut Reply) {
        let ctx = self.0;
        let n = ctx.shard.shards;
        let me = ctx.shard.id;
        let mut remote: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
        let mut local: Vec<&[u8]> = Vec::new();
        let mut slots: Vec<(usize, usize)> = Vec::new();
        for key in requests(run).flat_map(Request::keys) {
            let s = ctx.shard.owner(key);
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
        let pending = ctx.send_remote(gets, &mut results).await;
        let local_values = (ctx.shard.store.get_many(&local).await).map_err(|e| format!("ERR {e}"));
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

    /// Groups a run of blind writes by owning shard.
    fn plan_puts<'a>(&self, run: &'a [Parsed<'a>]) -> PutPlan<'a> {
        let shard = &self.0.shard;
        let mut plan = PutPlan {
            local: Vec::new(),
            remote: vec![Vec::new(); shard.shards],
            touched: Vec::with_capacity(run.len()),
        };
        for req in requests(run) {
            let mut bits: Touched = [0; SHARDS_MAX.div_ceil(64)];
            let mut put = |key: &'a [u8], value: &'a [u8], expires_at_ms: u64| {
                let s = shard.owner(key);
                bits[s / 64] |= 1 << (s % 64);
                if s == shard.id {
                    plan.local.push((key, value, expires_at_ms));
                } else {
                    plan.remote[s].push(PutEntry {
                        key: key.to_vec(),
                        value: value.to_vec(),
                        expires_at_ms,
                    });
                }
            };
            match &req.cmd {
                Command::Set { key, value, opts } => {
                    let at = match opts.expiry {
                        Expiry::At(t) => t,
                        Expiry::Never | Expiry::Keep => shoal_engine::NO_EXPIRY,
                    };
                    put(key, value, at);
                }
                Command::MSet(pairs) => {
                    for pair in pairs.chunks_exact(2) {
                        put(pair[0], pair[1], shoal_engine::NO_EXPIRY);
                    }
                }
                _ => debug_assert!(false, "only blind writes are batched"),
            }
            plan.touched.push(bits);
        }
        plan
    }

    async fn count_keys(
        &self,
        keys: &[&[u8]],
        op: impl Fn(Vec<Vec<u8>>) -> ShardOp,
    ) -> Result<i64, String> {
        let ctx = self.0;
        let results = ctx
            .fan_out(ctx.by_shard(keys, op), |r| match r {
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
}

/// Replies to a run of GET/MGET from their keys' values, given in the run's key order; a
/// command any of whose keys failed gets that error instead.
fn reply_reads<'v>(
    run: &[Parsed<'_>],
    mut values: impl Iterator<Item = Result<Option<&'v [u8]>, &'v str>>,
    reply: &mut Reply,
) {
    let mut mine = Vec::new();
    for req in requests(run) {
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

fn int_or_error(reply: &mut Reply, r: Result<i64, String>) {
    match r {
        Ok(n) => reply.int(n),
        Err(e) => reply.error(&e),
    }
}
