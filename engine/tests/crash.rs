//! The engine against a model under simulated crashes (power loss / kill -9) on the
//! fault-injecting file system: random operations, flushes, compactions, reopens, crashes and
//! failed flushes and compactions; after every crash the database must hold exactly what was
//! acknowledged (synced durability) or the state as of some moment since the last sync
//! (buffered durability). Memtables, tables and level targets are tiny, so flushes and
//! multi-level compactions (run by writers at the L0 stop limit, or explicitly) happen often.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::block_on;
use proptest::prelude::*;
use shoal_engine::fs::{FaultError, FaultFs, FaultOp, FaultRule};
use shoal_engine::{Compression, Db, Durability, Options, Timer, WriteBatch};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize),
    Delete(u8),
    Batch(Vec<(u8, Option<usize>)>),
    Flush,
    Compact,
    Sync,
    Reopen,
    Crash(u64),
    /// A flush that fails with EIO after `n` table writes, followed by a crash.
    FailedFlushThenCrash(u64, u64),
    /// A compaction that fails with EIO after `n` table writes or manifest syncs, then a
    /// crash.
    FailedCompactionThenCrash(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (any::<u8>(), 0usize..3000).prop_map(|(k, n)| Op::Put(k % 64, n)),
        8 => any::<u8>().prop_map(|k| Op::Delete(k % 64)),
        6 => proptest::collection::vec((any::<u8>(), proptest::option::of(0usize..500)), 1..8)
            .prop_map(|ops| Op::Batch(ops.into_iter().map(|(k, v)| (k % 64, v)).collect())),
        3 => Just(Op::Flush),
        3 => Just(Op::Compact),
        3 => Just(Op::Sync),
        2 => Just(Op::Reopen),
        4 => any::<u64>().prop_map(Op::Crash),
        2 => (any::<u64>(), 0u64..4).prop_map(|(s, n)| Op::FailedFlushThenCrash(s, n)),
        2 => (any::<u64>(), 0u64..6).prop_map(|(s, n)| Op::FailedCompactionThenCrash(s, n)),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}

/// Distinct values so that a resurrected old version is told apart from the current one.
fn value(step: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{step}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (step % 26) as u8);
    v
}

/// Write delays return at once: the model runs on one thread with no background worker.
struct NoDelay;

impl Timer for NoDelay {
    fn sleep(&self, _: Duration) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(std::future::ready(()))
    }
}

fn options(durability: Durability) -> Options {
    Options {
        durability,
        memtable_bytes: 6 << 10,
        max_immutable_memtables: 2,
        log_segment_bytes: 64 << 10,
        block_bytes: 1024,
        // Uncompressed, so the level sizes below count the (compressible) test values.
        compression: Compression::None,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 3,
        l0_stop_trigger: 4,
        level1_bytes: 12 << 10,
        level_size_ratio: 2,
        target_file_bytes: 4 << 10,
        max_open_tables: 4,
        timer: Arc::new(NoDelay),
        ..Options::default()
    }
}

async fn contents(db: &Db<FaultFs>) -> Model {
    let mut out = Model::new();
    let mut it = db.scan(..).await.expect("scan");
    while let Some((k, e)) = it.next().await.expect("scan next") {
        out.insert(k, e.value);
    }
    out
}

fn run(ops: Vec<Op>, durability: Durability) -> Result<(), TestCaseError> {
    block_on(async {
        let fs = FaultFs::new();
        let mut db = Db::open(fs.clone(), DIR, options(durability))
            .await
            .expect("open");
        let mut model = Model::new();
        // States a crash may recover to: with buffered durability, any state since the last
        // sync; with synced durability, only the latest.
        let mut candidates = vec![model.clone()];
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put(k, n) => {
                    let v = value(step, n);
                    db.put(&key(k), &v).await.expect("put");
                    model.insert(key(k), v);
                }
                Op::Delete(k) => {
                    db.delete(&key(k)).await.expect("delete");
                    model.remove(&key(k));
                }
                Op::Batch(writes) => {
                    let batch = batch(step, writes, &mut model);
                    db.write(batch).await.expect("write batch");
                }
                Op::Flush => db.flush().await.expect("flush"),
                Op::Compact => db.compact().await.expect("compact"),
                Op::Sync => {
                    db.sync().await.expect("sync");
                    candidates.clear();
                }
                Op::Reopen => {
                    db.close().await.expect("close");
                    db = Db::open(fs.clone(), DIR, options(durability))
                        .await
                        .expect("reopen");
                    candidates.clear();
                }
                Op::Crash(seed)
                | Op::FailedFlushThenCrash(seed, _)
                | Op::FailedCompactionThenCrash(seed, _) => {
                    fail_part_way(&db, &fs, &op).await;
                    fs.crash(seed);
                    drop(db);
                    db = Db::open(fs.clone(), DIR, options(durability))
                        .await
                        .expect("recover");
                    let recovered = contents(&db).await;
                    if durability == Durability::Sync {
                        prop_assert_eq!(
                            &recovered,
                            &model,
                            "step {}: acknowledged writes lost or resurrected",
                            step
                        );
                    } else {
                        prop_assert!(
                            recovered == model || candidates.contains(&recovered),
                            "step {step}: recovered a state that never existed"
                        );
                    }
                    model = recovered;
                    candidates.clear();
                }
            }
            if durability == Durability::Sync {
                candidates.clear();
            }
            candidates.push(model.clone());
            // Point reads agree with the model at every step.
            for k in [0u8, 7, 31, 63] {
                prop_assert_eq!(
                    db.get(&key(k)).await.expect("get"),
                    model.get(&key(k)).cloned()
                );
            }
        }
        prop_assert_eq!(contents(&db).await, model);
        Ok(())
    })
}

const DIR: &str = "/db";

/// The batch of `writes` at `step` (`None`: a delete), applied to `model` as well.
fn batch(step: usize, writes: Vec<(u8, Option<usize>)>, model: &mut Model) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for (k, v) in writes {
        match v {
            Some(n) => {
                let v = value(step, n);
                batch.put(key(k), v.clone());
                model.insert(key(k), v);
            }
            None => {
                batch.delete(key(k));
                model.remove(&key(k));
            }
        }
    }
    batch
}

/// What a crash `op` does before the power goes: for `FailedFlushThenCrash` and
/// `FailedCompactionThenCrash`, a flush or compaction that fails part-way; nothing for a
/// plain `Crash`.
async fn fail_part_way(db: &Db<FaultFs>, fs: &FaultFs, op: &Op) {
    match *op {
        Op::FailedCompactionThenCrash(_, n) => {
            // Fails a table write or the manifest's sync; either way nothing acknowledged may
            // be lost or resurrected.
            let (fault_op, path) = if n % 2 == 0 {
                (FaultOp::Write, ".sst")
            } else {
                (FaultOp::Sync, "manifest")
            };
            db.flush().await.expect("flush");
            fs.inject(
                FaultRule::new(fault_op, FaultError::Eio)
                    .on_path(path)
                    .after(n / 2),
            );
            let _ = db.compact().await;
            fs.clear_faults();
        }
        Op::FailedFlushThenCrash(_, n) => {
            fs.inject(
                FaultRule::new(FaultOp::Write, FaultError::Eio)
                    .on_path(".sst")
                    .after(n),
            );
            // The flush may fail or, with little data, succeed: both are fine.
            let _ = db.flush().await;
            fs.clear_faults();
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn synced_writes_survive_crashes(ops in proptest::collection::vec(op(), 1..160)) {
        run(ops, Durability::Sync)?;
    }

    #[test]
    fn buffered_writes_recover_a_consistent_prefix(ops in proptest::collection::vec(op(), 1..160)) {
        run(ops, Durability::Buffered)?;
    }
}
