//! Reaching this node's shards from a connection: one op to a key's owner, one op per
//! owning shard, or the same op to every shard. An op for the shard that runs the
//! connection is applied in place; the others go through the mesh.

use crate::front::ctx::Ctx;
use crate::mesh::PendingReply;
use crate::mesh::apply::apply;
use crate::mesh::message::{ShardOp, ShardReply};
use crate::shard::Counters;

/// Replies of shards to one fan-out, indexed by shard.
pub(super) type ShardResults<T> = Vec<Option<Result<T, String>>>;

/// Awaits the replies of [`Ctx::send_remote`], each shard's turned into its result by `take`.
pub(super) async fn collect<T>(
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

/// The error text of a shard's reply that is not the one expected.
pub(super) fn unexpected(reply: &ShardReply) -> String {
    match reply {
        ShardReply::Error(e) => e.clone(),
        other => format!("ERR internal: unexpected shard reply {other:?}"),
    }
}

impl Ctx {
    async fn send(&self, to: usize, op: &ShardOp) -> Result<PendingReply, String> {
        Counters::add(&self.shard.counters.forwarded, 1);
        self.mesh.send(to, op).await.map_err(|e| format!("ERR {e}"))
    }

    /// Runs `op` on shard `to`.
    pub(super) async fn route(&self, to: usize, op: ShardOp) -> ShardReply {
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
    pub(super) async fn fan_out<T>(
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
    pub(super) async fn send_remote<T>(
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

    /// Groups `keys` by owning shard, one op per shard built by `op`.
    pub(super) fn by_shard(
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
    pub(super) async fn broadcast<T>(
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
}
