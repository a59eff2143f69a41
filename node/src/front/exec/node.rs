//! Commands about the connection and this node, which run the same with either backend:
//! PING, HELLO, COMMAND, INFO, CLIENT, CONFIG GET, and DBSIZE and SCAN over this node's
//! shards (in cluster mode, the replicas this node holds).

use super::misrouted;
use super::shards::unexpected;
use crate::front::command::{Command, Request, describe};
use crate::front::ctx::{Ctx, Session};
use crate::front::info;
use crate::front::resp::{Proto, Reply};
use crate::mesh::message::{ShardOp, ShardReply};
use crate::shard::ShardStats;

impl Ctx {
    /// Runs a command the table marks node-local.
    pub(super) async fn run_node(
        &self,
        req: &Request<'_>,
        reply: &mut Reply,
        session: &mut Session,
    ) {
        match &req.cmd {
            Command::Ping(None) => reply.simple("PONG"),
            Command::Ping(Some(msg)) | Command::Echo(msg) => reply.bulk(msg),
            Command::Hello(version) => {
                match version {
                    Some(3) => reply.proto = Proto::Resp3,
                    Some(_) => reply.proto = Proto::Resp2,
                    None => {}
                }
                hello(reply, session);
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
            Command::DbSize => match self.keyspace().await {
                Ok((keys, _)) => reply.int(keys as i64),
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
            Command::Get(_)
            | Command::Set { .. }
            | Command::Del(_)
            | Command::Exists(_)
            | Command::MGet(_)
            | Command::MSet(_)
            | Command::Expire { .. }
            | Command::Ttl(..)
            | Command::FlushDb
            | Command::VGet { .. }
            | Command::VSet { .. }
            | Command::Consistency(_) => misrouted(reply),
        }
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

fn hello(reply: &mut Reply, session: &Session) {
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

fn take_stats(r: ShardReply) -> Result<ShardStats, String> {
    match r {
        ShardReply::Stats(s) => Ok(*s),
        other => Err(unexpected(&other)),
    }
}
