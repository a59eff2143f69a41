//! How a Redis string key lives in a shard's engine: the one place that knows, so the
//! cluster layer can later put versioned objects here instead.
//!
//! Engine key (format version 1):
//!
//! | field    | bytes | meaning                                       |
//! |----------|-------|-----------------------------------------------|
//! | hash     | 8     | ring hash of the user key, big-endian          |
//! | user key | ..    |                                               |
//!
//! Keys sort by ring hash, so each ring partition is one contiguous engine range: SCAN
//! walks the ring with a plain integer cursor, and later the cluster layer can stream or
//! Merkle-hash a partition with one range scan.
//!
//! Engine value: a one-byte format tag followed by the value bytes. `FORMAT_PLAIN` (1) is a
//! raw Redis string. The expiry is the engine entry's own `expires_at_ms` (0 = never), so
//! expired keys disappear from reads without a rewrite. `FORMAT_VERSIONS` (2) is a cluster
//! node's replica of a key: a `shoal_cluster::dvv` encoding (siblings, tombstones and causal
//! context, with its own checksum), never expiring. A node holds only one of the two
//! formats: standalone nodes write plain strings, cluster members versions.

use std::sync::Arc;

use shoal_cluster::dvv::DvvSet;
use shoal_cluster::partition::key_hash;
use shoal_engine::fs::FileSystem;
use shoal_engine::{Clock, Db, Entry, NO_EXPIRY, WriteBatch};

use crate::shard::keylock::KeyLocks;

/// Condition of a SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Cond {
    Always,
    /// Only if the key does not exist.
    Nx,
    /// Only if the key exists.
    Xx,
}

/// What a SET does to the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Expiry {
    /// No TTL (a plain SET clears an existing one).
    Never,
    /// Keep the TTL the key has (KEEPTTL).
    Keep,
    /// Expire at this time, ms since the Unix epoch.
    At(u64),
}

/// EXPIRE's condition flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ExpireCond {
    Always,
    Nx,
    Xx,
    Gt,
    Lt,
}

/// What a SET did: whether it wrote, and the old value when asked for.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SetResult {
    pub written: bool,
    pub old: Option<Vec<u8>>,
}

/// Value format tag of a plain string. Stored on disk: never renumber.
const FORMAT_PLAIN: u8 = 1;
/// Value format tag of a key's cluster versions. Stored on disk: never renumber.
const FORMAT_VERSIONS: u8 = 2;
const HASH_LEN: usize = 8;

// The engine keeps room for a prefix beyond its user-key limit, so a user key of the longest
// length the node accepts still fits with its hash in front.
const _: () = assert!(HASH_LEN <= shoal_engine::types::KEY_PREFIX_LEN_MAX);
/// Tombstones written per engine batch by FLUSHDB: bounds one log record.
const FLUSH_BATCH_KEYS: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage error: {0}")]
    Engine(#[from] shoal_engine::Error),
    #[error("stored value of key {key:?} has unknown format tag {tag}")]
    Format { key: String, tag: u8 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stored value: the engine's bytes, format tag first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(Vec<u8>);

impl Value {
    pub fn bytes(&self) -> &[u8] {
        &self.0[1..]
    }

    /// The value without its tag (one copy).
    pub fn into_vec(self) -> Vec<u8> {
        self.0[1..].to_vec()
    }
}

/// The engine key of `key`.
pub fn engine_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(HASH_LEN + key.len());
    k.extend_from_slice(&key_hash(key).to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn engine_value(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + value.len());
    v.push(tag);
    v.extend_from_slice(value);
    v
}

/// Whether a stored value is something a client would see: a string, or versions with at
/// least one live sibling (a key whose siblings are all tombstones is deleted). Damaged
/// versions count as live, so they surface (as errors) instead of vanishing.
fn is_live(value: &[u8]) -> bool {
    match value.split_first() {
        Some((&FORMAT_VERSIONS, versions)) => {
            DvvSet::decode(versions).map_or(true, |set| set.values().any(|v| v.is_some()))
        }
        _ => true,
    }
}

/// Splits an engine key into its hash and user key; `None` for a key this module did not write.
fn split_key(k: &[u8]) -> Option<(u64, &[u8])> {
    let (hash, key) = k.split_first_chunk::<HASH_LEN>()?;
    Some((u64::from_be_bytes(*hash), key))
}

/// One shard's keyspace.
pub struct Store<F: FileSystem> {
    db: Db<F>,
    clock: Arc<dyn Clock>,
    locks: KeyLocks,
}

impl<F: FileSystem> Store<F> {
    /// `clock` must be the one the engine was opened with, so TTLs and expiry agree.
    pub fn new(db: Db<F>, clock: Arc<dyn Clock>) -> Store<F> {
        Store {
            db,
            clock,
            locks: KeyLocks::default(),
        }
    }

    pub fn db(&self) -> &Db<F> {
        &self.db
    }

    fn check_value(key: &[u8], entry: Entry, tag: u8) -> Result<Value> {
        match entry.value.first() {
            Some(&t) if t == tag => Ok(Value(entry.value)),
            other => Err(StoreError::Format {
                key: String::from_utf8_lossy(key).into_owned(),
                tag: other.copied().unwrap_or(0),
            }),
        }
    }

    async fn entry(&self, key: &[u8]) -> Result<Option<(Value, u64)>> {
        match self.db.get_entry(&engine_key(key)).await? {
            Some(e) => {
                let expires = e.expires_at_ms;
                Ok(Some((Self::check_value(key, e, FORMAT_PLAIN)?, expires)))
            }
            None => Ok(None),
        }
    }

    /// The values of `keys`, in order, looked up together (see `Db::get_entries`).
    pub async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        let engine_keys: Vec<Vec<u8>> = keys.iter().map(|k| engine_key(k)).collect();
        let engine_keys: Vec<&[u8]> = engine_keys.iter().map(Vec::as_slice).collect();
        let entries = self.db.get_entries(&engine_keys).await?;
        keys.iter()
            .zip(entries)
            .map(|(key, entry)| {
                entry
                    .map(|e| Self::check_value(key, e, FORMAT_PLAIN))
                    .transpose()
            })
            .collect()
    }

    /// The stored cluster versions of `key` (a dvv encoding in [`Value::bytes`]), `None`
    /// when absent.
    pub async fn versions(&self, key: &[u8]) -> Result<Option<Value>> {
        match self.db.get_entry(&engine_key(key)).await? {
            Some(e) => Ok(Some(Self::check_value(key, e, FORMAT_VERSIONS)?)),
            None => Ok(None),
        }
    }

    /// Stores `versions` as `key`'s cluster versions, durably as the engine's durability
    /// says when this returns. The cluster endpoint orders the writes of one key itself.
    pub async fn write_versions(&self, key: &[u8], versions: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put_entry(
            engine_key(key),
            Entry {
                kind: shoal_engine::ValueKind::Put,
                expires_at_ms: NO_EXPIRY,
                value: engine_value(FORMAT_VERSIONS, versions),
            },
        );
        Ok(self.db.write(batch).await?)
    }

    /// Blind writes `(key, value, expires_at_ms)` as one atomic batch.
    pub async fn put<'a>(
        &self,
        entries: impl Iterator<Item = (&'a [u8], &'a [u8], u64)> + Clone,
    ) -> Result<()> {
        let _guard = self
            .locks
            .shared(entries.clone().map(|(k, _, _)| key_hash(k)).collect())
            .await;
        let mut batch = WriteBatch::new();
        for (key, value, expires_at_ms) in entries {
            batch.put_entry(engine_key(key), put_entry(value, expires_at_ms));
        }
        Ok(self.db.write(batch).await?)
    }

    /// SET with a condition, GET or KEEPTTL: reads the old entry under an exclusive lock.
    pub async fn set(
        &self,
        key: &[u8],
        value: &[u8],
        cond: Cond,
        expiry: Expiry,
        get: bool,
    ) -> Result<SetResult> {
        let _guard = self.locks.exclusive(vec![key_hash(key)]).await;
        let old = self.entry(key).await?;
        let write = match cond {
            Cond::Always => true,
            Cond::Nx => old.is_none(),
            Cond::Xx => old.is_some(),
        };
        if write {
            let expires_at_ms = match expiry {
                Expiry::Never => NO_EXPIRY,
                Expiry::At(t) => t,
                Expiry::Keep => old.as_ref().map_or(NO_EXPIRY, |(_, t)| *t),
            };
            let mut batch = WriteBatch::new();
            batch.put_entry(engine_key(key), put_entry(value, expires_at_ms));
            self.db.write(batch).await?;
        }
        Ok(SetResult {
            written: write,
            old: if get {
                old.map(|(v, _)| v.into_vec())
            } else {
                None
            },
        })
    }

    /// Deletes the keys; returns how many existed.
    pub async fn del(&self, keys: &[Vec<u8>]) -> Result<u64> {
        let _guard = self
            .locks
            .exclusive(keys.iter().map(|k| key_hash(k)).collect())
            .await;
        let mut batch = WriteBatch::new();
        let mut found = 0;
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                continue;
            }
            let ek = engine_key(key);
            if self.db.get_entry(&ek).await?.is_some() {
                found += 1;
                batch.delete(ek);
            }
        }
        self.db.write(batch).await?;
        Ok(found)
    }

    /// How many of `keys` exist, counting repeats.
    pub async fn exists(&self, keys: &[Vec<u8>]) -> Result<u64> {
        let mut n = 0;
        for key in keys {
            if self.db.get_entry(&engine_key(key)).await?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Sets `key`'s expiry to `at_ms`; a time not after now deletes it. True when applied.
    pub async fn expire(&self, key: &[u8], at_ms: i64, cond: ExpireCond) -> Result<bool> {
        let _guard = self.locks.exclusive(vec![key_hash(key)]).await;
        let Some((value, current)) = self.entry(key).await? else {
            return Ok(false);
        };
        let has_ttl = current != NO_EXPIRY;
        // No TTL counts as an infinite one, as in Redis.
        let new = at_ms.max(0) as u64;
        let applies = match cond {
            ExpireCond::Always => true,
            ExpireCond::Nx => !has_ttl,
            ExpireCond::Xx => has_ttl,
            ExpireCond::Gt => has_ttl && new > current,
            ExpireCond::Lt => !has_ttl || new < current,
        };
        if !applies {
            return Ok(false);
        }
        let ek = engine_key(key);
        let mut batch = WriteBatch::new();
        if at_ms <= self.clock.now_ms() as i64 {
            batch.delete(ek);
        } else {
            batch.put_entry(
                ek,
                Entry {
                    kind: shoal_engine::ValueKind::Put,
                    expires_at_ms: new,
                    value: value.0,
                },
            );
        }
        self.db.write(batch).await?;
        Ok(true)
    }

    /// Remaining time to live in ms; -1 without expiry, -2 when the key does not exist.
    pub async fn ttl_ms(&self, key: &[u8]) -> Result<i64> {
        Ok(match self.entry(key).await? {
            None => -2,
            Some((_, NO_EXPIRY)) => -1,
            Some((_, at)) => at.saturating_sub(self.clock.now_ms()) as i64,
        })
    }

    /// Up to `count` keys with ring hash >= `from_hash` in (hash, key) order, extended so that
    /// the keys of the last hash are all included; `true` when no key is left after them.
    pub async fn scan(&self, from_hash: u64, count: usize) -> Result<(Vec<(u64, Vec<u8>)>, bool)> {
        let mut it = self.db.scan(from_hash.to_be_bytes().to_vec()..).await?;
        let mut keys: Vec<(u64, Vec<u8>)> = Vec::new();
        while let Some((k, e)) = it.next().await? {
            let Some((hash, key)) = split_key(&k) else {
                continue;
            };
            if !is_live(&e.value) {
                continue;
            }
            if keys.len() >= count && keys.last().is_some_and(|(h, _)| *h != hash) {
                return Ok((keys, false));
            }
            keys.push((hash, key.to_vec()));
        }
        Ok((keys, true))
    }

    /// Live keys, and how many of them have an expiry (one engine scan).
    pub async fn count(&self) -> Result<(u64, u64)> {
        let mut it = self.db.scan(..).await?;
        let (mut keys, mut expires) = (0, 0);
        while let Some((_, e)) = it.next().await? {
            if !is_live(&e.value) {
                continue;
            }
            keys += 1;
            if e.expires_at_ms != NO_EXPIRY {
                expires += 1;
            }
        }
        Ok((keys, expires))
    }

    /// Deletes every live key, in batches. Writes racing with it may survive.
    pub async fn flush(&self) -> Result<()> {
        let mut it = self.db.scan(..).await?;
        let mut batch = WriteBatch::new();
        while let Some((k, _)) = it.next().await? {
            batch.delete(k);
            if batch.len() >= FLUSH_BATCH_KEYS {
                self.db.write(std::mem::take(&mut batch)).await?;
            }
        }
        self.db.write(batch).await?;
        Ok(())
    }
}

fn put_entry(value: &[u8], expires_at_ms: u64) -> Entry {
    Entry {
        kind: shoal_engine::ValueKind::Put,
        expires_at_ms,
        value: engine_value(FORMAT_PLAIN, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use shoal_engine::Options;
    use shoal_engine::fs::StdFs;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct TestClock(AtomicU64);
    impl Clock for TestClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn open(dir: &std::path::Path, clock: Arc<TestClock>) -> Store<StdFs> {
        let options = Options {
            clock: clock.clone(),
            ..Options::default()
        };
        let db = block_on(Db::open(StdFs, dir, options)).unwrap();
        Store::new(db, clock)
    }

    fn put(key: &[u8], value: &[u8], expires_at_ms: u64) -> (Vec<u8>, Vec<u8>, u64) {
        (key.to_vec(), value.to_vec(), expires_at_ms)
    }

    /// The value of `key`, read as the node reads values.
    async fn get(s: &Store<StdFs>, key: &[u8]) -> Result<Option<Value>> {
        let mut values = s.get_many(&[key]).await?;
        Ok(values.pop().flatten())
    }

    fn refs(
        entries: &[(Vec<u8>, Vec<u8>, u64)],
    ) -> impl Iterator<Item = (&[u8], &[u8], u64)> + Clone {
        entries.iter().map(|(k, v, t)| (&k[..], &v[..], *t))
    }

    #[test]
    fn strings_conditions_and_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TestClock(AtomicU64::new(1_000)));
        let s = open(dir.path(), clock.clone());
        block_on(async {
            let entries = [put(b"a", b"1", 0), put(b"b", b"2", 5_000)];
            s.put(refs(&entries)).await.unwrap();
            assert_eq!(get(&s, b"a").await.unwrap().unwrap().bytes(), b"1");
            assert_eq!(s.ttl_ms(b"a").await.unwrap(), -1);
            assert_eq!(s.ttl_ms(b"b").await.unwrap(), 4_000);
            assert_eq!(s.ttl_ms(b"zz").await.unwrap(), -2);

            let r = s
                .set(b"a", b"x", Cond::Nx, Expiry::Never, true)
                .await
                .unwrap();
            assert!(!r.written);
            assert_eq!(r.old.as_deref(), Some(&b"1"[..]));
            let r = s
                .set(b"b", b"3", Cond::Xx, Expiry::Keep, false)
                .await
                .unwrap();
            assert!(r.written);
            assert_eq!(s.ttl_ms(b"b").await.unwrap(), 4_000);
            assert!(
                !s.set(b"c", b"3", Cond::Xx, Expiry::Never, false)
                    .await
                    .unwrap()
                    .written
            );
            assert!(get(&s, b"c").await.unwrap().is_none());

            assert!(!s.expire(b"a", 3_000, ExpireCond::Xx).await.unwrap());
            assert!(s.expire(b"a", 3_000, ExpireCond::Nx).await.unwrap());
            assert!(!s.expire(b"a", 9_000, ExpireCond::Lt).await.unwrap());
            assert!(s.expire(b"a", 9_000, ExpireCond::Gt).await.unwrap());
            assert_eq!(s.ttl_ms(b"a").await.unwrap(), 8_000);
            clock.0.store(9_000, Ordering::Relaxed);
            assert!(get(&s, b"a").await.unwrap().is_none(), "expired");
            assert!(
                !s.expire(b"b", 0, ExpireCond::Always).await.unwrap(),
                "b expired at 5000"
            );
            assert_eq!(s.count().await.unwrap(), (0, 0));
        });
    }

    /// A user key of the longest length the node accepts (16 KiB), with its 8-byte hash in
    /// front, is stored, read back and deleted.
    #[test]
    fn a_key_at_the_length_limit_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), Arc::new(TestClock(AtomicU64::new(1))));
        block_on(async {
            for len in [
                shoal_engine::types::KEY_LEN_MAX - 7,
                shoal_engine::types::KEY_LEN_MAX,
            ] {
                let key = vec![b'k'; len];
                s.put(refs(&[put(&key, b"long", 0)])).await.unwrap();
                assert_eq!(get(&s, &key).await.unwrap().unwrap().bytes(), b"long");
                assert_eq!(s.del(&[key]).await.unwrap(), 1);
            }
        });
    }

    #[test]
    fn del_exists_scan_flush() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TestClock(AtomicU64::new(1)));
        let s = open(dir.path(), clock);
        block_on(async {
            let entries: Vec<_> = (0..100)
                .map(|i| {
                    put(
                        format!("k{i}").as_bytes(),
                        b"v",
                        if i % 10 == 0 { 1_000 } else { 0 },
                    )
                })
                .collect();
            s.put(refs(&entries)).await.unwrap();
            assert_eq!(s.count().await.unwrap(), (100, 10));
            let keys = vec![b"k1".to_vec(), b"k1".to_vec(), b"nope".to_vec()];
            assert_eq!(s.exists(&keys).await.unwrap(), 2);
            assert_eq!(s.del(&keys).await.unwrap(), 1);
            assert_eq!(s.exists(&keys).await.unwrap(), 0);

            let mut seen = Vec::new();
            let mut from = 0u64;
            loop {
                let (keys, exhausted) = s.scan(from, 7).await.unwrap();
                assert!(keys.windows(2).all(|w| w[0].0 <= w[1].0), "hash order");
                if let Some((h, _)) = keys.last() {
                    from = h + 1;
                }
                seen.extend(keys.into_iter().map(|(_, k)| k));
                if exhausted {
                    break;
                }
            }
            seen.sort();
            assert_eq!(seen.len(), 99);
            seen.dedup();
            assert_eq!(seen.len(), 99);

            s.flush().await.unwrap();
            assert_eq!(s.count().await.unwrap(), (0, 0));
        });
    }
}
