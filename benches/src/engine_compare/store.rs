//! The engines under test behind one small interface, and the loops that drive a phase
//! through it. Each engine runs inside a child process of `engine-compare` (`run-shoal`,
//! `run-fjall`, and `run-rocksdb` for the workload db_bench cannot run), so its memory and disk
//! writes are measured alone.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future::block_on;
use shoal_engine::{Durability, Options};

use super::rocksdb_c::{self, DbOptions};
use super::workload::{Op, Ops, Phase, PhaseResult, PhaseSpec, VALUE_LEN, Values, key};
use super::{CompareError, db_bench};

/// The operations a phase needs. Blocking engines implement it with futures that are ready
/// at once; the glommio engine awaits real I/O.
#[allow(
    async_fn_in_trait,
    reason = "used only in this crate, on one thread per future"
)]
pub trait Store {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), CompareError>;
    async fn delete(&self, key: &[u8]) -> Result<(), CompareError>;
    /// Whether the key has a value.
    async fn get(&self, key: &[u8]) -> Result<bool, CompareError>;
    /// Visits every live key in order; returns how many.
    async fn scan(&self) -> Result<u64, CompareError>;
}

/// Runs `ops` operations of writer `writer`'s stream (or the scan) and times them.
pub async fn run_stream<S: Store>(
    store: &S,
    spec: &PhaseSpec,
    writer: usize,
    ops: u64,
    mut values: Values,
) -> Result<PhaseResult, CompareError> {
    let start = Instant::now();
    if spec.phase == Phase::Scan {
        let found = store.scan().await?;
        return Ok(PhaseResult {
            ops: found,
            secs: start.elapsed().as_secs_f64(),
            found,
            user_bytes: 0,
        });
    }
    let mut stream = Ops::new(spec, writer);
    let mut result = PhaseResult {
        ops,
        ..PhaseResult::default()
    };
    for _ in 0..ops {
        match stream.next_op() {
            Op::Put(k) => {
                let k = key(k);
                store.put(&k, values.next_value()).await?;
                result.user_bytes += (k.len() + VALUE_LEN) as u64;
            }
            Op::Delete(k) => {
                let k = key(k);
                store.delete(&k).await?;
                result.user_bytes += k.len() as u64;
            }
            Op::Get(k) => result.found += u64::from(store.get(&key(k)).await?),
        }
    }
    result.secs = start.elapsed().as_secs_f64();
    Ok(result)
}

/// Writer `w`'s share of `total` operations.
fn share(total: u64, writers: usize, w: usize) -> u64 {
    total / writers as u64 + u64::from((w as u64) < total % writers as u64)
}

fn sum(parts: Vec<PhaseResult>, secs: f64) -> PhaseResult {
    parts.into_iter().fold(
        PhaseResult {
            secs,
            ..PhaseResult::default()
        },
        |mut acc, p| {
            acc.ops += p.ops;
            acc.found += p.found;
            acc.user_bytes += p.user_bytes;
            acc
        },
    )
}

/// Runs the phase on a blocking store: one thread, or `writers` threads for the concurrent
/// fills.
pub fn run_blocking<S: Store + Sync>(
    store: &S,
    spec: &PhaseSpec,
) -> Result<PhaseResult, CompareError> {
    let values = Values::new(spec.seed);
    if !spec.phase.concurrent() {
        return block_on(run_stream(store, spec, 0, spec.ops, values));
    }
    let writers = spec.writers.max(1);
    let start = Instant::now();
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let values = values.for_writer(w);
                s.spawn(move || {
                    block_on(run_stream(
                        store,
                        spec,
                        w,
                        share(spec.ops, writers, w),
                        values,
                    ))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| CompareError::WriterPanicked)
                    .and_then(|r| r)
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(sum(parts, start.elapsed().as_secs_f64()))
}

/// Which of Shoal's file systems runs the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShoalFs {
    /// glommio DMA files (O_DIRECT, io_uring) on one executor, writers as tasks: the node's path.
    Dma,
    /// std files through the blocking API, writers as threads.
    Std,
}

fn shoal_options(phase: Phase, memory_budget: Option<u64>) -> Options {
    Options {
        durability: if phase == Phase::FillSync {
            Durability::Sync
        } else {
            Durability::Buffered
        },
        memory_budget_bytes: memory_budget,
        ..Options::default()
    }
}

impl Store for shoal_engine::blocking::Db {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), CompareError> {
        Ok(shoal_engine::blocking::Db::put(self, key, value)?)
    }
    async fn delete(&self, key: &[u8]) -> Result<(), CompareError> {
        Ok(shoal_engine::blocking::Db::delete(self, key)?)
    }
    async fn get(&self, key: &[u8]) -> Result<bool, CompareError> {
        Ok(shoal_engine::blocking::Db::get(self, key)?.is_some())
    }
    async fn scan(&self) -> Result<u64, CompareError> {
        let mut n = 0;
        for item in shoal_engine::blocking::Db::scan(self, ..) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

impl<F: shoal_engine::fs::FileSystem> Store for shoal_engine::Db<F> {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), CompareError> {
        Ok(shoal_engine::Db::put(self, key, value).await?)
    }
    async fn delete(&self, key: &[u8]) -> Result<(), CompareError> {
        Ok(shoal_engine::Db::delete(self, key).await?)
    }
    async fn get(&self, key: &[u8]) -> Result<bool, CompareError> {
        Ok(shoal_engine::Db::get(self, key).await?.is_some())
    }
    async fn scan(&self) -> Result<u64, CompareError> {
        let mut iter = shoal_engine::Db::scan(self, ..).await?;
        let mut n = 0;
        while iter.next().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// Runs one phase on Shoal's engine in this process.
pub fn run_shoal(
    spec: &PhaseSpec,
    fs: ShoalFs,
    memory_budget: Option<u64>,
) -> Result<PhaseResult, CompareError> {
    let options = shoal_options(spec.phase, memory_budget);
    match fs {
        ShoalFs::Std => {
            let db = shoal_engine::blocking::Db::open(&spec.dir, options)?;
            let result = run_blocking(&db, spec)?;
            if spec.phase.writes() {
                db.compact()?;
            }
            db.close()?;
            Ok(result)
        }
        ShoalFs::Dma => run_shoal_dma(spec.clone(), options),
    }
}

/// The node's path: `Db<DmaFs>` on one glommio executor, the concurrent fills' writers as
/// tasks (sharing group commits when synced).
fn run_shoal_dma(spec: PhaseSpec, options: Options) -> Result<PhaseResult, CompareError> {
    use glommio::{LocalExecutorBuilder, Placement};
    let handle = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("engine-compare")
        .spawn(move || async move {
            let fs = shoal_engine::fs::DmaFs::new(&spec.dir)
                .await
                .map_err(CompareError::Io)?;
            let db = shoal_engine::Db::open(fs, &spec.dir, options).await?;
            glommio::spawn_local(db.background()).detach();
            let values = Values::new(spec.seed);
            let settle = spec.phase.writes();
            let result = if spec.phase.concurrent() {
                let writers = spec.writers.max(1);
                let spec = Arc::new(spec);
                let start = Instant::now();
                let tasks: Vec<_> = (0..writers)
                    .map(|w| {
                        let (db, spec, values) = (db.clone(), spec.clone(), values.for_writer(w));
                        glommio::spawn_local(async move {
                            run_stream(&db, &spec, w, share(spec.ops, writers, w), values).await
                        })
                    })
                    .collect();
                let mut parts = Vec::with_capacity(writers);
                for t in tasks {
                    parts.push(t.await?);
                }
                sum(parts, start.elapsed().as_secs_f64())
            } else {
                run_stream(&db, &spec, 0, spec.ops, values).await?
            };
            if settle {
                db.compact().await?;
            }
            db.close().await?;
            Ok::<_, CompareError>(result)
        })
        .map_err(|e| CompareError::Runtime(e.to_string()))?;
    handle
        .join()
        .map_err(|e| CompareError::Runtime(e.to_string()))?
}

impl Store for rocksdb_c::Db {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), CompareError> {
        Ok(rocksdb_c::Db::put(self, key, value)?)
    }
    async fn delete(&self, key: &[u8]) -> Result<(), CompareError> {
        Ok(rocksdb_c::Db::delete(self, key)?)
    }
    async fn get(&self, key: &[u8]) -> Result<bool, CompareError> {
        Ok(rocksdb_c::Db::get(self, key)?.is_some())
    }
    /// RocksDB's scans are db_bench's `readseq`; the C API driver runs only what db_bench
    /// cannot.
    async fn scan(&self) -> Result<u64, CompareError> {
        Err(CompareError::InvalidArgument(
            "scans of RocksDB run through db_bench".into(),
        ))
    }
}

/// Runs a phase db_bench has no benchmark for on RocksDB through its C API, with db_bench's
/// configuration, on the database db_bench's earlier phases left in `spec.dir`.
pub fn run_rocksdb(spec: &PhaseSpec, library: &Path) -> Result<PhaseResult, CompareError> {
    if let Some(name) = db_bench::benchmark(spec.phase) {
        return Err(CompareError::InvalidArgument(format!(
            "rocksdb {} runs through db_bench's {name}",
            spec.phase.name()
        )));
    }
    let api = rocksdb_c::Api::load(library)?;
    let db = rocksdb_c::Db::open(api, &spec.dir, &DbOptions::default())?;
    let result = run_blocking(&db, spec)?;
    if spec.phase.writes() {
        db.wait_for_compaction()?;
    }
    drop(db);
    Ok(result)
}

#[cfg(feature = "fjall")]
pub mod fjall_store {
    //! fjall 3 with its defaults (LZ4 blocks, leveled compaction) and the same 64 MiB cache
    //! as Shoal's block cache.

    use super::*;

    /// Same as Shoal's default block cache.
    const CACHE_BYTES: u64 = 64 << 20;

    pub struct FjallStore {
        db: fjall::Database,
        keyspace: fjall::Keyspace,
        /// Every write is persisted with fdatasync before it returns.
        sync: bool,
    }

    impl Store for FjallStore {
        async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), CompareError> {
            self.keyspace.insert(key, value)?;
            if self.sync {
                self.db.persist(fjall::PersistMode::SyncData)?;
            }
            Ok(())
        }
        async fn delete(&self, key: &[u8]) -> Result<(), CompareError> {
            Ok(self.keyspace.remove(key)?)
        }
        async fn get(&self, key: &[u8]) -> Result<bool, CompareError> {
            Ok(self.keyspace.get(key)?.is_some())
        }
        async fn scan(&self) -> Result<u64, CompareError> {
            let mut n = 0;
            for guard in self.keyspace.iter() {
                guard.key()?;
                n += 1;
            }
            Ok(n)
        }
    }

    pub fn run_fjall(spec: &PhaseSpec) -> Result<PhaseResult, CompareError> {
        let db = fjall::Database::builder(&spec.dir)
            .cache_size(CACHE_BYTES)
            .open()?;
        let keyspace = db.keyspace("bench", fjall::KeyspaceCreateOptions::default)?;
        let store = FjallStore {
            db,
            keyspace,
            sync: spec.phase == Phase::FillSync,
        };
        let result = run_blocking(&store, spec)?;
        store.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A few thousand operations of the mix through the real library, checked against a model
    /// of the same stream: every key put is found with its last value, every key deleted is
    /// gone, before and after a reopen.
    #[test]
    fn rocksdb_runs_the_mix_as_a_model_does() {
        let api = match rocksdb_c::Api::load(Path::new(rocksdb_c::LIBRARY)) {
            Ok(api) => api,
            Err(e) => {
                eprintln!("NOTICE: {e}; not running the mix on RocksDB");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let spec = PhaseSpec {
            phase: Phase::ZipfMix,
            dir: dir.path().to_owned(),
            keys: 500,
            ops: 4000,
            writers: 1,
            seed: 3,
        };
        let create = DbOptions {
            create_if_missing: true,
            ..DbOptions::default()
        };
        let db = rocksdb_c::Db::open(api, &spec.dir, &create).unwrap();
        let result = run_blocking(&db, &spec).unwrap();

        let mut model = HashMap::new();
        let (mut ops, mut values) = (Ops::new(&spec, 0), Values::new(spec.seed));
        let (mut found, mut deleted_after_put) = (0, 0);
        for _ in 0..spec.ops {
            match ops.next_op() {
                Op::Put(k) => {
                    model.insert(k, values.next_value().to_vec());
                }
                Op::Delete(k) => deleted_after_put += u64::from(model.remove(&k).is_some()),
                Op::Get(k) => found += u64::from(model.contains_key(&k)),
            }
        }
        assert_eq!((result.ops, result.found), (spec.ops, found));
        assert!(deleted_after_put > 0 && found > 0);
        let check = |db: &rocksdb_c::Db| {
            for k in 0..spec.keys {
                let got = db.get(&key(k)).unwrap();
                assert_eq!(got.as_deref(), model.get(&k).map(Vec::as_slice), "key {k}");
            }
        };
        check(&db);
        db.wait_for_compaction().unwrap();
        assert_eq!(db.property_int(c"rocksdb.compaction-pending").unwrap(), 0);
        assert!(db.property_int(c"rocksdb.no-such-property").is_err());
        drop(db);
        check(&rocksdb_c::Db::open(api, &spec.dir, &DbOptions::default()).unwrap());
    }
}
