//! Whole-table tests: builder → file → table, checked against a sorted model.

use std::path::Path;
use std::sync::Arc;

use futures_lite::future::block_on;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

use super::*;
use crate::Result;
use crate::cache::BlockCache;
use crate::fs::{FileSystem, StdFs, WRITE_ALIGN};
use crate::types::{Entry, NO_EXPIRY, SEQ_MAX, ValueKind};

type StdFile = <StdFs as FileSystem>::File;
type Model = Vec<(Vec<u8>, SeqNo, Entry)>;

fn opts(block_bytes: usize, compression: Compression, bloom_bits_per_key: u32) -> TableOptions {
    TableOptions {
        block_bytes,
        compression,
        bloom_bits_per_key,
    }
}

async fn build(path: &Path, model: &Model, options: TableOptions) -> TableProperties {
    let file = StdFs.create(path).await.unwrap();
    let mut b = TableBuilder::new(file, options);
    assert!(b.is_empty());
    for (k, s, e) in model {
        b.add(k, *s, e).await.unwrap();
    }
    assert_eq!(b.is_empty(), model.is_empty());
    // Not monotonic: a block shrinks when it is finished and compressed.
    assert_eq!(b.estimated_size() == 0, model.is_empty());
    b.finish().await.unwrap()
}

async fn open(path: &Path, number: u64, cache: &Arc<BlockCache>) -> Result<Table<StdFile>> {
    let file = StdFs.open(path).await.unwrap();
    Table::open(file, number, Arc::clone(cache)).await
}

/// The newest version of `key` at `snapshot`, per the model.
fn model_get(model: &Model, key: &[u8], snapshot: SeqNo) -> Option<(SeqNo, Entry)> {
    model
        .iter()
        .find(|(k, s, _)| k == key && *s <= snapshot)
        .map(|(_, s, e)| (*s, e.clone()))
}

fn sort_model(model: &mut Model) {
    model.sort_by(|a, b| internal_cmp(&a.0, a.1, &b.0, b.1));
    model.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
}

async fn collect<F: crate::fs::File>(iter: &mut TableIter<F>) -> Result<Model> {
    let mut out = Vec::new();
    while let Some(item) = iter.next().await? {
        out.push(item);
    }
    Ok(out)
}

/// Checks gets at many snapshots, absent keys, full iteration and seeks against the model.
async fn check_table(table: &Arc<Table<StdFile>>, model: &Model) {
    let mut keys: Vec<&[u8]> = model.iter().map(|(k, _, _)| k.as_slice()).collect();
    keys.dedup();
    for key in &keys {
        let h = key_hash(key);
        assert!(table.may_contain(h));
        let mut snapshots = vec![0, 1, SEQ_MAX, u64::MAX];
        for (_, s, _) in model.iter().filter(|(k, _, _)| k == key) {
            snapshots.extend([*s, s.saturating_sub(1), s.saturating_add(1)]);
        }
        for snap in snapshots {
            let got = table.get(key, h, snap).await.unwrap();
            assert_eq!(got, model_get(model, key, snap), "key {key:?} at {snap}");
        }
        let mut absent = key.to_vec();
        absent.push(0);
        if !keys.contains(&absent.as_slice()) {
            let got = table
                .get(&absent, key_hash(&absent), SEQ_MAX)
                .await
                .unwrap();
            assert_eq!(got, None);
        }
    }
    for absent in [&b""[..], b"\xff\xff\xff\xff\xff\xff\xff\xff\xff"] {
        if !keys.contains(&absent) {
            let got = table.get(absent, key_hash(absent), SEQ_MAX).await.unwrap();
            assert_eq!(got, None);
        }
    }

    let mut iter = TableIter::new(Arc::clone(table));
    assert_eq!(&collect(&mut iter).await.unwrap(), model);
    assert_eq!(iter.next().await.unwrap(), None);

    let mut seeks: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
    ];
    let stride = (keys.len() / 50).max(1);
    for key in keys.iter().step_by(stride) {
        seeks.push(key.to_vec());
        let mut after = key.to_vec();
        after.push(0);
        seeks.push(after);
        if let Some((last, rest)) = key.split_last()
            && *last > 0
        {
            let mut before = rest.to_vec();
            before.push(last - 1);
            seeks.push(before);
        }
    }
    for target in seeks {
        iter.seek(&target).await.unwrap();
        let expect: Vec<_> = model
            .iter()
            .filter(|(k, _, _)| k.as_slice() >= target.as_slice())
            .take(3)
            .cloned()
            .collect();
        let mut got = Vec::new();
        for _ in 0..3 {
            match iter.next().await.unwrap() {
                Some(item) => got.push(item),
                None => break,
            }
        }
        assert_eq!(got, expect, "seek to {target:?}");
    }
}

/// A model with several versions per key, tombstones, expiry and values from 0 B to `max_value`.
fn random_model(rng: &mut StdRng, keys: usize, max_value: usize) -> Model {
    let mut model = Vec::new();
    for i in 0..keys {
        let key = format!("key-{:08}-{}", i * 7, "x".repeat(i % 5)).into_bytes();
        for _ in 0..rng.gen_range(1..=3) {
            let seq = rng.gen_range(1..1_000_000);
            let len = match rng.gen_range(0..100) {
                0 => max_value,
                1..=3 => rng.gen_range(0..=max_value),
                _ => rng.gen_range(0..200.min(max_value + 1)),
            };
            let value: Vec<u8> = if rng.gen_bool(0.5) {
                (0..len).map(|_| rng.r#gen()).collect()
            } else {
                vec![b'a' + (i % 26) as u8; len]
            };
            let entry = Entry {
                kind: if rng.gen_bool(0.1) {
                    ValueKind::Delete
                } else {
                    ValueKind::Put
                },
                expires_at_ms: if rng.gen_bool(0.2) {
                    rng.gen_range(1..u64::MAX)
                } else {
                    NO_EXPIRY
                },
                value,
            };
            model.push((key.clone(), seq, entry));
        }
    }
    sort_model(&mut model);
    model
}

#[test]
fn round_trip_many_sizes_and_options() {
    let dir = TempDir::new().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let cases = [
        (0, 100, opts(16 << 10, Compression::Zstd(1), 10)),
        (1, 100, opts(16 << 10, Compression::Zstd(1), 10)),
        (1, 0, opts(16 << 10, Compression::None, 0)),
        (300, 1 << 20, opts(16 << 10, Compression::Zstd(1), 10)),
        (3000, 300, opts(256, Compression::None, 10)),
        (3000, 300, opts(4096, Compression::Zstd(3), 0)),
        (20, 5000, opts(1, Compression::Zstd(1), 10)),
    ];
    let cache = Arc::new(BlockCache::new(8 << 20));
    for (n, (keys, max_value, options)) in cases.into_iter().enumerate() {
        let model = random_model(&mut rng, keys, max_value);
        let path = dir.path().join(format!("{n}.sst"));
        let props = build(&path, &model, options).await_blocking();
        let table = Arc::new(block_on(open(&path, n as u64, &cache)).unwrap());
        assert_eq!(table.properties(), &props);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), props.file_size);
        assert_eq!(props.entries, model.len() as u64);
        let tombstones = model
            .iter()
            .filter(|(_, _, e)| e.kind == ValueKind::Delete)
            .count();
        assert_eq!(props.tombstones, tombstones as u64);
        if let (Some(first), Some(last)) = (model.first(), model.last()) {
            assert_eq!(props.smallest_key, first.0);
            assert_eq!(props.largest_key, last.0);
            assert_eq!(props.min_seq, model.iter().map(|m| m.1).min().unwrap());
            assert_eq!(props.max_seq, model.iter().map(|m| m.1).max().unwrap());
        }
        let raw_values: usize = model.iter().map(|(_, _, e)| e.value.len()).sum();
        assert_eq!(props.raw_value_bytes, raw_values as u64);
        assert_eq!(props.blocks, table.index_entries().count() as u64);
        assert_eq!(props.format_version, FORMAT_VERSION);
        block_on(table.verify()).unwrap();
        block_on(check_table(&table, &model));
    }
}

/// Lets a builder future run to completion in a plain test.
trait AwaitBlocking: std::future::Future + Sized {
    fn await_blocking(self) -> Self::Output {
        block_on(self)
    }
}
impl<T: std::future::Future> AwaitBlocking for T {}

#[test]
fn compression_shrinks_compressible_data() {
    let dir = TempDir::new().unwrap();
    let model: Model = (0..2000u32)
        .map(|i| {
            (
                format!("k{i:08}").into_bytes(),
                1,
                Entry::put(vec![b'v'; 100]),
            )
        })
        .collect();
    let raw = build(
        &dir.path().join("raw"),
        &model,
        opts(4096, Compression::None, 10),
    )
    .await_blocking();
    let zstd = build(
        &dir.path().join("zstd"),
        &model,
        opts(4096, Compression::Zstd(1), 10),
    )
    .await_blocking();
    assert!(zstd.data_bytes * 4 < raw.data_bytes, "{zstd:?} vs {raw:?}");
    assert!(raw.blocks > 50);
    assert!(zstd.filter_bytes >= 2000 * 10 / 8);
}

#[test]
fn bloom_filter_skips_absent_keys() {
    let dir = TempDir::new().unwrap();
    let model: Model = (0..5000u32)
        .map(|i| (format!("k{i:08}").into_bytes(), 1, Entry::put(*b"v")))
        .collect();
    let path = dir.path().join("t.sst");
    build(&path, &model, TableOptions::default()).await_blocking();
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = block_on(open(&path, 1, &cache)).unwrap();
    let stats = table.filter_stats();
    assert_eq!(stats.hash_count, 6);
    assert!(stats.bits >= 50_000);
    let maybe = (0..5000u32)
        .filter(|i| table.may_contain(key_hash(format!("absent{i}").as_bytes())))
        .count();
    assert!(maybe < 100, "{maybe} of 5000 absent keys pass the filter");
    let misses = cache.stats().misses;
    for i in 0..5000u32 {
        let key = format!("absent{i}");
        assert_eq!(
            block_on(table.get(key.as_bytes(), key_hash(key.as_bytes()), SEQ_MAX)).unwrap(),
            None
        );
    }
    assert!(cache.stats().misses - misses <= maybe as u64);
}

#[test]
fn second_read_hits_the_cache_and_evict_table_drops_blocks() {
    let dir = TempDir::new().unwrap();
    let model: Model = (0..1000u32)
        .map(|i| {
            (
                format!("k{i:08}").into_bytes(),
                1,
                Entry::put(vec![1u8; 50]),
            )
        })
        .collect();
    let path = dir.path().join("t.sst");
    build(&path, &model, opts(1024, Compression::Zstd(1), 10)).await_blocking();
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = block_on(open(&path, 9, &cache)).unwrap();
    let key = b"k00000500";
    let h = key_hash(key);
    assert!(block_on(table.get(key, h, SEQ_MAX)).unwrap().is_some());
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (0, 1));
    assert!(block_on(table.get(key, h, SEQ_MAX)).unwrap().is_some());
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (1, 1));
    cache.evict_table(9);
    assert_eq!(cache.stats().usage_bytes, 0);
    assert!(block_on(table.get(key, h, SEQ_MAX)).unwrap().is_some());
    assert_eq!(cache.stats().misses, 2);
}

/// A full iteration reads many blocks per read (for a reader after a few doubling reads, for
/// a compaction from the first), and a seek starts small again; every block still checks out.
/// Reads are counted by a fault that fails any read past the allowance.
#[test]
fn iterators_read_many_blocks_per_read() {
    use crate::fs::{FaultError, FaultFs, FaultOp, FaultRule};
    block_on(async {
        let fs = FaultFs::new();
        let path = Path::new("/t.sst");
        let model: Model = (0..2000u32)
            .map(|i| {
                (
                    format!("k{i:08}").into_bytes(),
                    1,
                    Entry::put(vec![7u8; 40]),
                )
            })
            .collect();
        let mut b = TableBuilder::new(
            fs.create(path).await.unwrap(),
            opts(512, Compression::None, 10),
        );
        for (k, s, e) in &model {
            b.add(k, *s, e).await.unwrap();
        }
        b.finish().await.unwrap();
        let cache = Arc::new(BlockCache::new(1 << 20));
        let table = Arc::new(
            Table::open(fs.open(path).await.unwrap(), 1, Arc::clone(&cache))
                .await
                .unwrap(),
        );
        let blocks = table.index().len();
        assert!(blocks > 150, "{blocks} blocks");

        // A compaction's iterator: 256 KiB per read from the start (the data is ~150 KiB).
        fs.inject(FaultRule::new(FaultOp::Read, FaultError::Eio).after(1));
        assert_eq!(
            collect(&mut TableIter::without_cache_fill(Arc::clone(&table)))
                .await
                .unwrap(),
            model
        );
        fs.clear_faults();
        assert_eq!(cache.stats().usage_bytes, 0, "a compaction fills no cache");

        // A reader's: 1, 2, 4, ... blocks per read, so about log2(blocks) reads plus the tail.
        fs.inject(FaultRule::new(FaultOp::Read, FaultError::Eio).after(12));
        assert_eq!(
            collect(&mut TableIter::new(Arc::clone(&table)))
                .await
                .unwrap(),
            model
        );
        fs.clear_faults();
        cache.evict_table(1);

        // A seek reads one block, then grows again.
        fs.inject(FaultRule::new(FaultOp::Read, FaultError::Eio).after(1));
        let mut iter = TableIter::new(Arc::clone(&table));
        iter.seek(b"k00001000").await.unwrap();
        assert_eq!(iter.next().await.unwrap().unwrap().0, b"k00001000");
        assert!(
            iter.next().await.unwrap().is_some(),
            "within the first block"
        );
        fs.clear_faults();
        let rest = collect(&mut iter).await.unwrap();
        assert_eq!(rest.len(), 2000 - 1002);
    });
}

#[test]
fn small_cache_stays_within_capacity() {
    let dir = TempDir::new().unwrap();
    let model: Model = (0..5000u32)
        .map(|i| {
            (
                format!("k{i:08}").into_bytes(),
                1,
                Entry::put(vec![1u8; 100]),
            )
        })
        .collect();
    let path = dir.path().join("t.sst");
    build(&path, &model, opts(4096, Compression::Zstd(1), 10)).await_blocking();
    let capacity = 64 << 10;
    let cache = Arc::new(BlockCache::new(capacity));
    let table = Arc::new(block_on(open(&path, 1, &cache)).unwrap());
    let all = block_on(collect(&mut TableIter::new(Arc::clone(&table)))).unwrap();
    assert_eq!(all.len(), 5000);
    let s = cache.stats();
    assert!(s.usage_bytes <= capacity as u64, "{s:?}");
    assert!(s.inserted_bytes > 4 * capacity as u64, "{s:?}");
}

#[test]
#[should_panic(expected = "out of table order")]
fn out_of_order_add_panics() {
    let dir = TempDir::new().unwrap();
    let file = block_on(StdFs.create(&dir.path().join("t.sst"))).unwrap();
    let mut b = TableBuilder::new(file, TableOptions::default());
    block_on(b.add(b"a", 1, &Entry::put(*b"1"))).unwrap();
    block_on(b.add(b"a", 2, &Entry::put(*b"2"))).unwrap();
}

#[test]
fn oversized_key_is_rejected() {
    let dir = TempDir::new().unwrap();
    let file = block_on(StdFs.create(&dir.path().join("t.sst"))).unwrap();
    let mut b = TableBuilder::new(file, TableOptions::default());
    let key = vec![0u8; crate::types::STORED_KEY_LEN_MAX + 1];
    let err = block_on(b.add(&key, 1, &Entry::put(*b"1"))).unwrap_err();
    assert!(matches!(err, crate::Error::InvalidArgument(_)));
}

/// A table with many small blocks, raw and compressed, tombstones and versions.
fn corruption_fixture(dir: &Path) -> (std::path::PathBuf, Model, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(11);
    let model = random_model(&mut rng, 150, 300);
    let path = dir.join("good.sst");
    build(&path, &model, opts(512, Compression::Zstd(1), 10)).await_blocking();
    let bytes = std::fs::read(&path).unwrap();
    (path, model, bytes)
}

/// Everything a reader can do with the table either fails with corruption or returns exactly
/// the model's data. Returns whether corruption was reported.
fn read_everything(path: &Path, model: &Model) -> bool {
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = match block_on(open(path, 1, &cache)) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            assert!(e.is_corruption(), "{e}");
            return true;
        }
    };
    let mut detected = false;
    for (key, seq, _) in model.iter().step_by(5) {
        match block_on(table.get(key, key_hash(key), *seq)) {
            Ok(got) => assert_eq!(got, model_get(model, key, *seq)),
            Err(e) => {
                assert!(e.is_corruption(), "{e}");
                detected = true;
            }
        }
    }
    match block_on(collect(&mut TableIter::new(Arc::clone(&table)))) {
        Ok(all) => assert_eq!(&all, model),
        Err(e) => {
            assert!(e.is_corruption(), "{e}");
            detected = true;
        }
    }
    match block_on(table.verify()) {
        Ok(()) => detected,
        Err(e) => {
            assert!(e.is_corruption(), "{e}");
            true
        }
    }
}

#[test]
fn flipped_bytes_are_detected_never_returned() {
    let dir = TempDir::new().unwrap();
    let (good, model, bytes) = corruption_fixture(dir.path());
    assert!(!read_everything(&good, &model));
    let len = bytes.len();
    // Every region: a stride through the data blocks, every byte of the meta blocks' last
    // 400 bytes (end of filter, index, properties) and of the footer.
    let mut positions: Vec<usize> = (0..len).step_by(len / 150 + 1).collect();
    positions.extend(len.saturating_sub(400)..len);
    let bad = dir.path().join("bad.sst");
    for pos in positions {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[pos] ^= mask;
            std::fs::write(&bad, &b).unwrap();
            assert!(
                read_everything(&bad, &model),
                "flip {mask:#x} at {pos} of {len} undetected"
            );
        }
    }
}

#[test]
fn verify_rereads_the_file() {
    let dir = TempDir::new().unwrap();
    let (path, _, bytes) = corruption_fixture(dir.path());
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = block_on(open(&path, 1, &cache)).unwrap();
    block_on(table.verify()).unwrap();
    let props = table.properties().clone();
    // Damage a data block, then (separately) the properties block, under the open table.
    for pos in [10, (props.file_size - 70) as usize] {
        let mut b = bytes.clone();
        b[pos] ^= 0x04;
        std::fs::write(&path, &b).unwrap();
        assert!(block_on(table.verify()).unwrap_err().is_corruption());
    }
}

#[test]
fn truncated_or_extended_file_fails_to_open() {
    let dir = TempDir::new().unwrap();
    let (_, model, bytes) = corruption_fixture(dir.path());
    let cache = Arc::new(BlockCache::new(1 << 20));
    let bad = dir.path().join("bad.sst");
    let len = bytes.len();
    for cut in [0, 1, 63, 64, len / 2, len - 65, len - 64, len - 1] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let err = block_on(open(&bad, 1, &cache)).unwrap_err();
        assert!(err.is_corruption(), "cut at {cut}: {err}");
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0u8; WRITE_ALIGN]);
    std::fs::write(&bad, &longer).unwrap();
    assert!(block_on(open(&bad, 1, &cache)).unwrap_err().is_corruption());
    assert!(!model.is_empty());
}

fn arb_model() -> impl Strategy<Value = Model> {
    let entry = (
        proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xffu8)],
            0..6,
        ),
        0u64..40,
        any::<bool>(),
        prop_oneof![Just(NO_EXPIRY), 1u64..1000],
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    proptest::collection::vec(entry, 0..150).prop_map(|entries| {
        let mut model: Model = entries
            .into_iter()
            .map(|(k, seq, put, expires_at_ms, value)| {
                let kind = if put {
                    ValueKind::Put
                } else {
                    ValueKind::Delete
                };
                (
                    k,
                    seq,
                    Entry {
                        kind,
                        expires_at_ms,
                        value,
                    },
                )
            })
            .collect();
        sort_model(&mut model);
        model
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn table_agrees_with_model(
        model in arb_model(),
        block_bytes in prop_oneof![Just(1usize), Just(64), Just(512), Just(16 << 10)],
        zstd in any::<bool>(),
        bloom in prop_oneof![Just(0u32), Just(10)],
    ) {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("t.sst");
        let compression = if zstd { Compression::Zstd(1) } else { Compression::None };
        build(&path, &model, opts(block_bytes, compression, bloom)).await_blocking();
        let cache = Arc::new(BlockCache::new(1 << 20));
        let table = Arc::new(block_on(open(&path, 1, &cache)).unwrap());
        block_on(table.verify()).unwrap();
        block_on(check_table(&table, &model));
    }
}

/// Fill and lookup rates, for the report: `cargo test --release -p shoal-engine --lib
/// sstable::tests::speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn speed() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("t.sst");
    let n = 1_000_000u64;
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("{i:016}").into_bytes()).collect();
    let value = vec![b'v'; 100];
    let start = std::time::Instant::now();
    let file = block_on(StdFs.create(&path)).unwrap();
    let mut b = TableBuilder::new(file, TableOptions::default());
    for k in &keys {
        block_on(b.add(k, 1, &Entry::put(value.clone()))).unwrap();
    }
    let props = block_on(b.finish()).unwrap();
    let fill = start.elapsed();
    println!(
        "fill {n} entries (16 B keys, 100 B values): {:.0} entries/s, file {} bytes, {} blocks",
        n as f64 / fill.as_secs_f64(),
        props.file_size,
        props.blocks,
    );
    let lookups = 300_000;
    for capacity in [0, 64 << 20, 1 << 30] {
        let cache = Arc::new(BlockCache::new(capacity));
        let table = block_on(open(&path, 1, &cache)).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..lookups {
            let k = &keys[rng.gen_range(0..keys.len())];
            assert!(
                block_on(table.get(k, key_hash(k), SEQ_MAX))
                    .unwrap()
                    .is_some()
            );
        }
        let warm = cache.stats();
        let start = std::time::Instant::now();
        for _ in 0..lookups {
            let k = &keys[rng.gen_range(0..keys.len())];
            assert!(
                block_on(table.get(k, key_hash(k), SEQ_MAX))
                    .unwrap()
                    .is_some()
            );
        }
        let get = start.elapsed();
        let start = std::time::Instant::now();
        for i in 0..lookups {
            let k = format!("absent{i}");
            block_on(table.get(k.as_bytes(), key_hash(k.as_bytes()), SEQ_MAX)).unwrap();
        }
        let absent = start.elapsed();
        let s = cache.stats();
        let (hits, misses) = (s.hits - warm.hits, s.misses - warm.misses);
        println!(
            "cache {capacity} B: warm get {:.0}/s (hit ratio {:.2}), absent get {:.0}/s",
            lookups as f64 / get.as_secs_f64(),
            hits as f64 / (hits + misses) as f64,
            lookups as f64 / absent.as_secs_f64(),
        );
    }
}

/// Point lookups search the index by 8-byte key prefixes first: keys that tie on them (a long
/// shared prefix; short keys and the same keys with trailing zeros) must still land in the
/// right block, at every snapshot.
#[test]
fn lookups_through_tied_index_prefixes() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("prefixes.sst");
    let mut model = Model::new();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..400u32 {
        keys.push(format!("user:000{:05}", i).into_bytes());
    }
    for short in [
        &b"a"[..],
        b"a\0",
        b"a\0\0",
        b"ab",
        b"ab\0\0\0\0\0\0",
        b"ab\0\0\0\0\0\0\0",
    ] {
        keys.push(short.to_vec());
    }
    for (i, key) in keys.iter().enumerate() {
        for version in 0..=(i % 3) as u64 {
            let seq = 10 * i as u64 + version;
            model.push((key.clone(), seq, Entry::put(format!("{i}@{seq}"))));
        }
    }
    sort_model(&mut model);
    block_on(async {
        build(&path, &model, opts(128, Compression::None, 10)).await;
        let cache = Arc::new(BlockCache::new(1 << 20));
        let table = open(&path, 1, &cache).await.unwrap();
        assert!(table.index_entries().count() > 20, "many blocks");
        for (key, seq, _) in &model {
            for snapshot in [*seq, *seq + 1, SEQ_MAX] {
                let got = table.get(key, key_hash(key), snapshot).await.unwrap();
                assert_eq!(
                    got,
                    model_get(&model, key, snapshot),
                    "{key:?} at {snapshot}"
                );
            }
        }
        for absent in [
            &b""[..],
            b"a\0\0\0",
            b"user:000",
            b"user:00000399\0",
            b"zzz",
        ] {
            let got = table.get(absent, key_hash(absent), SEQ_MAX).await.unwrap();
            assert_eq!(got, None, "{absent:?}");
        }
    });
}
