//! The cluster backend: every key is replicated on the nodes the ring gives it, and each
//! request is coordinated among them by the shard's [`Driver`]. GET returns the chosen
//! sibling, SET supersedes what the minting replica holds, VGET/VSET/VDEL expose versions;
//! the table refuses what needs an atomic read-modify-write of a replicated key (SET NX,
//! EXPIRE, ...).

use std::rc::Rc;

use shoal_cluster::consistency::Consistency;
use shoal_cluster::message::WriteContext;
use shoal_cluster::vv::VersionVector;

use super::{Backend, Parsed, misrouted, requests};
use crate::cluster::driver::{self, Driver, Pending};
use crate::front::command::table::Mode;
use crate::front::command::{Command, Request};
use crate::front::context;
use crate::front::ctx::Session;
use crate::front::resp::Reply;
use crate::shard::store::Expiry;

pub(super) struct Cluster<'c>(pub(super) &'c Rc<Driver>);

impl Backend for Cluster<'_> {
    const MODE: Mode = Mode::Cluster;

    /// One coordinated read per key, all in flight.
    async fn reads(&self, run: &[Parsed<'_>], reply: &mut Reply, session: &Session) {
        let d = self.0;
        let (r, _) = self.levels(session);
        let started: Vec<Vec<Pending>> = requests(run)
            .map(|req| req.keys().map(|k| d.read(k, r)).collect())
            .collect();
        for (req, pending) in requests(run).zip(started) {
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

    /// One coordinated write per key, all in flight.
    async fn writes(&self, run: &[Parsed<'_>], reply: &mut Reply, session: &Session) {
        let d = self.0;
        let (_, w) = self.levels(session);
        let write =
            |key: &[u8], value: &[u8]| d.write(key, Some(value.to_vec()), WriteContext::Local, w);
        let started: Vec<Vec<Pending>> = requests(run)
            .map(|req| match &req.cmd {
                Command::Set { key, value, opts } => {
                    debug_assert_eq!(opts.expiry, Expiry::Never, "the table refuses expiries");
                    vec![write(key, value)]
                }
                Command::MSet(pairs) => pairs
                    .chunks_exact(2)
                    .map(|pair| write(pair[0], pair[1]))
                    .collect(),
                _ => {
                    debug_assert!(false, "only blind writes are batched");
                    Vec::new()
                }
            })
            .collect();
        for pending in started {
            let mut failed = None;
            for p in pending {
                if let Err(e) = driver::written(p.await) {
                    failed.get_or_insert(e);
                }
            }
            match failed {
                Some(e) => reply.error(&e),
                None => reply.ok(),
            }
        }
    }

    async fn one(&self, req: &Request<'_>, reply: &mut Reply, session: &mut Session) {
        let d = self.0;
        let (r, w) = self.levels(session);
        match &req.cmd {
            Command::VGet { key, r: level } => {
                match driver::read_result(d.read(key, level.unwrap_or(r)).await) {
                    Ok(set) => {
                        let values = driver::live_values(set.as_ref());
                        let empty = VersionVector::new();
                        let context = set.as_ref().map_or(&empty, |s| s.context());
                        reply.array(1 + values.len());
                        reply.bulk(context::to_text(context).as_bytes());
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
                let given = WriteContext::Given(context.clone());
                let value = value.map(<[u8]>::to_vec);
                match driver::written(d.write(key, value, given, level.unwrap_or(w)).await) {
                    Ok(written) => reply.bulk(context::to_text(&written.context).as_bytes()),
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
            Command::Del(keys) => self.delete_live(keys, (r, w), reply).await,
            Command::Exists(keys) => match self.live(keys, r).await {
                Ok(live) => reply.int(live.len() as i64),
                Err(e) => reply.error(&e),
            },
            Command::Ttl(key, _) => match driver::read_result(d.read(key, r).await) {
                Ok(set) if driver::live_values(set.as_ref()).is_empty() => reply.int(-2),
                Ok(_) => reply.int(-1),
                Err(e) => reply.error(&e),
            },
            Command::Get(_)
            | Command::MGet(_)
            | Command::Set { .. }
            | Command::MSet(_)
            | Command::Expire { .. }
            | Command::FlushDb
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

impl Cluster<'_> {
    /// The read and write levels of a request: the connection's, else the node's.
    fn levels(&self, session: &Session) -> (Consistency, Consistency) {
        let config = self.0.config();
        session.levels.unwrap_or((config.read, config.write))
    }

    /// The keys of `keys` that hold a live value, read at level `r`, all in flight.
    async fn live<'k>(&self, keys: &[&'k [u8]], r: Consistency) -> Result<Vec<&'k [u8]>, String> {
        let reads: Vec<Pending> = keys.iter().map(|k| self.0.read(k, r)).collect();
        let mut live = Vec::with_capacity(keys.len());
        for (key, p) in keys.iter().zip(reads) {
            let set = driver::read_result(p.await)?;
            if !driver::live_values(set.as_ref()).is_empty() {
                live.push(*key);
            }
        }
        Ok(live)
    }

    /// DEL: deletes the live keys among `keys` and replies with how many there were.
    async fn delete_live(
        &self,
        keys: &[&[u8]],
        (r, w): (Consistency, Consistency),
        reply: &mut Reply,
    ) {
        let mut live = match self.live(keys, r).await {
            Ok(live) => live,
            Err(e) => return reply.error(&e),
        };
        live.sort_unstable();
        live.dedup();
        let deletes: Vec<Pending> = live
            .iter()
            .map(|k| self.0.write(k, None, WriteContext::Local, w))
            .collect();
        for p in deletes {
            if let Err(e) = driver::written(p.await) {
                return reply.error(&e);
            }
        }
        reply.int(live.len() as i64);
    }
}
