//! Serving a [`ShardOp`] on the shard that owns its keys: the same code runs an operation
//! that arrived over the mesh and one the accepting shard runs for itself.

use crate::mesh::message::{ShardOp, ShardReply};
use crate::shard::Shard;
use crate::shard::store::Value;

/// [`ShardOp::Get`] from borrowed keys, so the mesh can serve an archived request
/// without copying its keys out of the frame.
pub async fn get(shard: &Shard, keys: &[&[u8]]) -> ShardReply {
    let result = shard.store.get_many(keys).await.map(|values| {
        ShardReply::Values(values.into_iter().map(|v| v.map(Value::into_vec)).collect())
    });
    reply(shard, result)
}

/// [`ShardOp::Put`] from borrowed `(key, value, expires_at_ms)` entries (see [`get`]).
pub async fn put<'a>(
    shard: &Shard,
    entries: impl Iterator<Item = (&'a [u8], &'a [u8], u64)> + Clone,
) -> ShardReply {
    let result = shard.store.put(entries).await.map(|()| ShardReply::Done);
    reply(shard, result)
}

/// Runs an operation against this shard's store.
pub async fn apply(shard: &Shard, op: ShardOp) -> ShardReply {
    let store = &shard.store;
    let result = match op {
        ShardOp::Get { keys } => {
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            return get(shard, &keys).await;
        }
        ShardOp::Put { entries } => {
            let entries = entries
                .iter()
                .map(|e| (&e.key[..], &e.value[..], e.expires_at_ms));
            return put(shard, entries).await;
        }
        ShardOp::Set {
            key,
            value,
            cond,
            expiry,
            get,
        } => store
            .set(&key, &value, cond, expiry, get)
            .await
            .map(ShardReply::Set),
        ShardOp::Del { keys } => store.del(&keys).await.map(ShardReply::Count),
        ShardOp::Exists { keys } => store.exists(&keys).await.map(ShardReply::Count),
        ShardOp::Expire { key, at_ms, cond } => store
            .expire(&key, at_ms, cond)
            .await
            .map(|applied| ShardReply::Count(u64::from(applied))),
        ShardOp::Ttl { key } => store.ttl_ms(&key).await.map(ShardReply::Int),
        ShardOp::Scan { from_hash, count } => store
            .scan(from_hash, count as usize)
            .await
            .map(|(keys, exhausted)| ShardReply::Keys { keys, exhausted }),
        ShardOp::Count => store
            .count()
            .await
            .map(|(keys, expires)| ShardReply::Counted { keys, expires }),
        ShardOp::Flush => store.flush().await.map(|()| ShardReply::Done),
        ShardOp::Stats => Ok(ShardReply::Stats(Box::new(shard.stats()))),
    };
    reply(shard, result)
}

/// An operation's reply, its store error turned into an error reply.
fn reply(shard: &Shard, result: crate::shard::store::Result<ShardReply>) -> ShardReply {
    result.unwrap_or_else(|e| {
        tracing::warn!(shard = shard.id, error = %e, "operation failed");
        ShardReply::Error(format!("ERR {e}"))
    })
}
