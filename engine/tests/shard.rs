//! The engine as a node's shard runs it: glommio DMA files, the background workers on their own
//! low-share task queue, write delays on glommio's timer, and a reader and a writer task on
//! the same executor. Compactions run while both keep making progress, and the result reads
//! back right, also after reopening.

#![cfg(feature = "dma")]
#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};
use shoal_engine::fs::DmaFs;
use shoal_engine::{Db, Durability, GlommioTimer, Options};

const KEYS: u32 = 2000;
const ROUNDS: u32 = 8;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32, round: u32) -> Vec<u8> {
    let mut v = format!("{i}:{round}:").into_bytes();
    let mut x = (u64::from(i) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(round);
    while v.len() < 150 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn options() -> Options {
    Options {
        durability: Durability::Buffered,
        memtable_bytes: 64 << 10,
        log_segment_bytes: 1 << 20,
        block_cache_bytes: 1 << 20,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 4,
        l0_stop_trigger: 8,
        level1_bytes: 256 << 10,
        level_size_ratio: 4,
        target_file_bytes: 64 << 10,
        timer: Arc::new(GlommioTimer),
        ..Options::default()
    }
}

#[test]
fn compaction_runs_beside_requests_on_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shard-0");
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    ex.run(async move {
        let fs = DmaFs::new(&root).await.unwrap();
        let db = Db::open(fs, &root, options()).await.unwrap();
        let background_queue = glommio::executor().create_task_queue(
            Shares::Static(100),
            Latency::NotImportant,
            "compaction",
        );
        let background = glommio::spawn_local_into(db.background(), background_queue).unwrap();

        let writing = Rc::new(Cell::new(true));
        let reads = Rc::new(Cell::new(0u64));
        let reader = glommio::spawn_local({
            let (db, writing, reads) = (db.clone(), writing.clone(), reads.clone());
            async move {
                let mut i = 0u32;
                while writing.get() {
                    let got = db.get(&key(i % KEYS)).await.unwrap();
                    if let Some(v) = got {
                        assert!(v.starts_with(format!("{}:", i % KEYS).as_bytes()));
                    }
                    reads.set(reads.get() + 1);
                    i = i.wrapping_add(7919);
                    // Requests arrive in bursts: between them the shard polls for I/O and
                    // timers, and other task queues get their turn.
                    if reads.get() % 64 == 0 {
                        glommio::timer::sleep(Duration::from_micros(100)).await;
                    }
                }
            }
        });
        let mut reads_while_compacting = 0;
        for round in 0..ROUNDS {
            for i in 0..KEYS {
                db.put(&key(i), &value(i, round)).await.unwrap();
            }
            let before = reads.get();
            glommio::timer::sleep(Duration::from_millis(1)).await;
            if db.stats().compactions > 0 {
                reads_while_compacting += reads.get() - before;
            }
        }
        writing.set(false);
        reader.await;
        db.flush().await.unwrap();

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = db.stats();
            if s.immutable_memtables == 0 && s.levels.iter().all(|l| l.score < 1.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "compaction did not settle: {s:#?}"
            );
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let s = db.stats();
        assert!(s.compactions > 0, "{s:#?}");
        assert!(reads.get() > 0);
        assert!(reads_while_compacting > 0, "reads starved while compacting");
        for i in 0..KEYS {
            assert_eq!(db.get(&key(i)).await.unwrap(), Some(value(i, ROUNDS - 1)));
        }
        db.close().await.unwrap();
        background.await;

        let db = Db::open(DmaFs::new(&root).await.unwrap(), &root, options())
            .await
            .unwrap();
        for i in 0..KEYS {
            assert_eq!(db.get(&key(i)).await.unwrap(), Some(value(i, ROUNDS - 1)));
        }
        db.close().await.unwrap();
    });
}
