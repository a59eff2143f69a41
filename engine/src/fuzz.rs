//! Entry points for fuzzing the engine's decoders (the `engine/fuzz` crate, run with
//! `cargo +nightly fuzz run <target>`), and for replaying inputs that once broke them as unit
//! tests in stable `cargo test`. Each takes arbitrary bytes and may fail with an error, but
//! must not panic, hang or allocate without bound; where a decoder accepted its input, the
//! reads that follow must agree with each other (these are the asserts below).
//!
//! Checksums stand between random bytes and most decoders, so the targets that aim at what
//! lies behind one (`block`, `commit_log_replay`, `manifest_replay`) compute it themselves.

use std::path::Path;
use std::sync::Arc;

use futures_lite::future::block_on;

use crate::cache::BlockCache;
use crate::db::Db;
use crate::fs::{FaultFs, File, FileSystem, align_up};
use crate::log::{
    Log, LogOptions, Preallocation, ReplayFrom, SegmentHeader, encode_record, read_segment,
};
use crate::options::Options;
use crate::sstable::{Block, Cursor, Table, TableIter, key_hash, unseal};
use crate::types::SeqNo;

/// Entries read from a fuzzed table at most: bounds the time one input takes.
const ENTRIES_MAX: usize = 10_000;
/// Log segment size for fuzzed databases: small, so opening one is quick.
const SEGMENT_BYTES: u64 = 16 << 10;

/// Writes `data` as a durable file at `path`.
fn put_file(fs: &FaultFs, path: &Path, data: &[u8]) -> Option<<FaultFs as FileSystem>::File> {
    block_on(async {
        if let Some(dir) = path.parent() {
            fs.create_dir_all(dir).await.ok()?;
            fs.sync_dir(dir).await.ok()?;
        }
        let file = fs.create(path).await.ok()?;
        let mut padded = data.to_vec();
        padded.resize(align_up(data.len() as u64) as usize, 0);
        if !padded.is_empty() {
            file.write_at(0, &padded).await.ok()?;
        }
        file.set_len(data.len() as u64).await.ok()?;
        file.sync_data().await.ok()?;
        Some(file)
    })
}

/// An SSTable from arbitrary bytes: open, iterate, and when `verify` accepts it, every key
/// found by iterating must be found by `get` with its newest version.
pub fn sstable(data: &[u8]) {
    let fs = FaultFs::new();
    let Some(file) = put_file(&fs, Path::new("/t.sst"), data) else {
        return;
    };
    block_on(async {
        let Ok(table) = Table::open(file, 1, Arc::new(BlockCache::new(1 << 20))).await else {
            return;
        };
        let table = Arc::new(table);
        let mut it = TableIter::new(Arc::clone(&table));
        let mut newest: Vec<(Vec<u8>, SeqNo)> = Vec::new();
        for _ in 0..ENTRIES_MAX {
            match it.next().await {
                Ok(Some((key, seq, _))) => {
                    if newest.last().is_none_or(|(k, _)| *k != key) {
                        newest.push((key, seq));
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        if table.verify().await.is_err() {
            return;
        }
        for (key, seq) in newest {
            let found = table.get(&key, key_hash(&key), SeqNo::MAX).await;
            assert!(
                matches!(&found, Ok(Some((s, _))) if *s == seq),
                "verified table: get({key:?}) = {found:?}, iteration saw seq {seq}"
            );
        }
    });
}

/// A stored data block from arbitrary bytes: the first byte picks the compression tag, the
/// rest is the stored body, sealed with a correct checksum. A block that decodes must give
/// back as many entries as it counted, and a seek to each must land on it.
pub fn block(data: &[u8]) {
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let kind = tag % 3;
    let mut stored = body.to_vec();
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), &[kind]);
    stored.push(kind);
    stored.extend_from_slice(&crc.to_le_bytes());
    let Ok(raw) = unseal(stored) else {
        return;
    };
    let Ok(block) = Block::decode(raw) else {
        return;
    };
    let mut cursor = Cursor::default();
    let mut entries = Vec::new();
    loop {
        match block.next(&mut cursor) {
            Ok(Some(e)) => entries.push((e.key.to_vec(), e.seq)),
            Ok(None) => break,
            Err(e) => panic!("decoded block: entry {}: {e:?}", entries.len()),
        }
    }
    assert_eq!(entries.len(), block.len());
    for (i, (key, seq)) in entries.iter().enumerate() {
        let found = block
            .seek(key, *seq)
            .and_then(|mut c| Ok(block.next(&mut c)?.map(|e| (e.key.to_vec(), e.seq))));
        assert!(
            matches!(&found, Ok(Some((k, s))) if k == key && s == seq),
            "seek to entry {i}: {found:?}"
        );
    }
}

/// Log segments from arbitrary bytes: the first byte splits the rest into two segment files.
/// Reading and replaying must not fail other than by reporting corruption or I/O errors.
pub fn log_segment(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (usize::from(split) * rest.len() / 255).min(rest.len());
    let fs = FaultFs::new();
    let dir = Path::new("/log");
    let (a, b) = rest.split_at(at);
    let seg1 = dir.join("000001.log");
    let seg2 = dir.join("000002.log");
    if put_file(&fs, &seg1, a).is_none() || put_file(&fs, &seg2, b).is_none() {
        return;
    }
    block_on(async {
        for seg in [&seg1, &seg2] {
            if let Ok(dump) = read_segment(&fs, seg).await {
                assert!(
                    dump.records
                        .windows(2)
                        .all(|w| w[1].record_no == w[0].record_no + 1)
                );
            }
        }
        let mut count = 0u64;
        let opened = Log::open(
            Arc::new(fs),
            dir.to_path_buf(),
            LogOptions {
                segment_bytes_min: SEGMENT_BYTES,
                segment_bytes: SEGMENT_BYTES,
                preallocation: Preallocation::ZeroFill,
            },
            ReplayFrom::Oldest,
            |_, payload| {
                assert!(!payload.is_empty());
                count += 1;
                Ok(())
            },
        )
        .await;
        if let Ok(log) = opened {
            assert!(log.next_record() >= count);
        }
    });
}

/// Splits `data` into non-empty payloads, each prefixed by a one-byte length.
fn payloads(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (p, tail) = tail.split_at(len);
        if !p.is_empty() {
            out.push(p);
        }
        rest = tail;
    }
    out
}

/// A well-framed segment (valid header and record checksums) holding `payloads`.
fn framed_segment(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    SegmentHeader {
        segment_no: 1,
        first_record: 0,
    }
    .encode(&mut out);
    for p in payloads {
        encode_record(1, p, &mut out);
    }
    out.resize(align_up(out.len() as u64) as usize, 0);
    out
}

fn options() -> Options {
    Options {
        log_segment_bytes: SEGMENT_BYTES,
        memtable_bytes: 64 << 10,
        block_cache_bytes: 1 << 20,
        ..Options::default()
    }
}

/// Opens a database on `fs` and reads all of it; any outcome but a panic is fine.
fn open_and_scan(fs: FaultFs) {
    block_on(async {
        let Ok(db) = Db::open(fs, "/db", options()).await else {
            return;
        };
        if let Ok(mut it) = db.scan(..).await {
            for _ in 0..ENTRIES_MAX {
                match it.next().await {
                    Ok(Some((key, _))) => {
                        let got = db.get(&key).await;
                        assert!(matches!(got, Ok(Some(_))), "scanned {key:?}, get: {got:?}");
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let _ = db.close().await;
    });
}

/// Commit-log records with correct checksums around arbitrary payloads (one-byte length
/// prefixes in `data`), replayed by opening a database: exercises the write-batch decoder.
pub fn commit_log_replay(data: &[u8]) {
    let fs = FaultFs::new();
    let segment = framed_segment(&payloads(data));
    if put_file(&fs, Path::new("/db/log/000001.log"), &segment).is_none() {
        return;
    }
    open_and_scan(fs);
}

/// Manifest records with correct checksums around arbitrary payloads, replayed by opening a
/// database: exercises the edit decoder and the checks on the table set.
pub fn manifest_replay(data: &[u8]) {
    let fs = FaultFs::new();
    let segment = framed_segment(&payloads(data));
    if put_file(&fs, Path::new("/db/manifest/000001.log"), &segment).is_none() {
        return;
    }
    open_and_scan(fs);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit-log input: one record holding `batch` numbered from `first_seq`, encoded by
    /// the engine's own encoder so the input follows the current format.
    fn batch_input(first_seq: u64, batch: &crate::WriteBatch) -> Vec<u8> {
        let mut payload = Vec::new();
        batch.encode(first_seq, &mut payload);
        let mut input = vec![u8::try_from(payload.len()).expect("a small batch")];
        input.extend_from_slice(&payload);
        input
    }

    /// Puts, a delete and an expiring put, as commit-log records.
    fn seed_batches() -> Vec<u8> {
        use crate::types::Entry;
        let mut first = crate::WriteBatch::new();
        first.put(b"t1-k034".to_vec(), b"v1-252".to_vec());
        first.put(b"t1-k035".to_vec(), vec![b'x'; 40]);
        let mut second = crate::WriteBatch::new();
        second.delete(b"t1-k034".to_vec());
        second.put_entry(
            b"t1-k036".to_vec(),
            Entry {
                expires_at_ms: 1_700_000_000_000,
                ..Entry::put(b"expiring".to_vec())
            },
        );
        let mut input = batch_input(1, &first);
        input.extend(batch_input(3, &second));
        input
    }

    /// Three tables the engine writes: zstd and raw blocks, several versions per key,
    /// tombstones, expiry, keys with long shared prefixes, blocks of one restart and of many.
    fn seed_tables() -> Vec<Vec<u8>> {
        use crate::options::Compression;
        use crate::sstable::{TableBuilder, TableOptions};
        use crate::types::{Entry, ValueKind};

        let shapes = [
            (Compression::Zstd(1), 512, 60),
            (Compression::None, 256, 40),
            (Compression::None, 4096, 200),
        ];
        let mut out = Vec::new();
        for (n, (compression, block_bytes, keys)) in shapes.into_iter().enumerate() {
            let fs = FaultFs::new();
            let path = Path::new("/seed.sst");
            let file = block_on(fs.create(path)).unwrap();
            let options = TableOptions {
                block_bytes,
                compression,
                bloom_bits_per_key: 10,
            };
            let mut b = TableBuilder::new(file, options);
            for i in 0..keys {
                let key = format!("user:{:04}:{}", i * 3, "p".repeat(i % 7)).into_bytes();
                for version in (0..=(i % 3) as u64).rev() {
                    let entry = if i % 11 == 5 && version == 0 {
                        Entry::tombstone()
                    } else {
                        Entry {
                            kind: ValueKind::Put,
                            expires_at_ms: if i % 5 == 1 { 1_700_000_000_000 } else { 0 },
                            value: format!("value {i} {version} of table {n}").into_bytes(),
                        }
                    };
                    // The last table as a bottommost compaction writes it: low seqs.
                    let seq = if n == 2 {
                        version
                    } else {
                        1000 + 10 * i as u64 + version
                    };
                    block_on(b.add(&key, seq, &entry)).unwrap();
                }
            }
            block_on(b.finish()).unwrap();
            let file = block_on(fs.open(path)).unwrap();
            let len = block_on(file.len()).unwrap() as usize;
            out.push(block_on(file.read_at(0, len)).unwrap());
        }
        out
    }

    /// The first blocks of each seed table as `block` inputs: the compression tag, then the
    /// stored block. Opening and verifying each table checks the seeds are valid.
    fn seed_blocks(tables: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
        tables
            .iter()
            .map(|table| {
                let fs = FaultFs::new();
                let file = put_file(&fs, Path::new("/t.sst"), table).unwrap();
                let cache = Arc::new(BlockCache::new(1 << 20));
                let opened = block_on(Table::open(file, 1, cache)).unwrap();
                block_on(opened.verify()).unwrap();
                opened
                    .index_entries()
                    .take(6)
                    .map(|ie| {
                        let start = ie.offset as usize;
                        let end = start + ie.stored_len as usize;
                        let mut input = vec![table[end]];
                        input.extend_from_slice(&table[start..end]);
                        input
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn seeds_are_valid_and_pass_the_targets() {
        let tables = seed_tables();
        for (table, blocks) in tables.iter().zip(seed_blocks(&tables)) {
            sstable(table);
            assert!(blocks.len() >= 4);
            for input in blocks {
                block(&input);
            }
        }
        let batches = seed_batches();
        let records = payloads(&batches);
        assert_eq!(records.len(), 2);
        for (i, record) in records.into_iter().enumerate() {
            crate::batch::decode(record, Path::new("seed"), i as u64).unwrap();
        }
        commit_log_replay(&batches);
    }

    /// Writes the `sstable`, `block` and `commit_log_replay` seeds to `engine/fuzz/seeds` (run
    /// by hand after a format change).
    #[test]
    #[ignore = "writes files into the source tree"]
    fn write_seeds() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        for target in ["sstable", "block", "commit_log_replay"] {
            let dir = seeds.join(target);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
        }
        let tables = seed_tables();
        for (t, (table, blocks)) in tables.iter().zip(seed_blocks(&tables)).enumerate() {
            std::fs::write(seeds.join(format!("sstable/seed-{t}")), table).unwrap();
            for (b, input) in blocks.iter().enumerate() {
                std::fs::write(seeds.join(format!("block/seed-{t}-{b}")), input).unwrap();
            }
        }
        std::fs::write(seeds.join("commit_log_replay/seed-0"), seed_batches()).unwrap();
    }

    #[test]
    fn empty_inputs() {
        sstable(&[]);
        block(&[]);
        log_segment(&[]);
        commit_log_replay(&[]);
        manifest_replay(&[]);
    }

    /// Batches whose sequence numbers would run past `u64::MAX` are refused before the
    /// replay's `first_seq + i` can overflow (a panic with overflow checks, wrapped sequence
    /// numbers without); one that ends just below it is accepted.
    #[test]
    fn batch_sequence_overflow() {
        let mut two = crate::WriteBatch::new();
        two.put(b"a".to_vec(), b"1".to_vec())
            .put(b"b".to_vec(), b"2".to_vec());
        commit_log_replay(&batch_input(u64::MAX, &two));
        commit_log_replay(&batch_input(u64::MAX - 1, &two));
        let fits = crate::batch::decode(&batch_input(u64::MAX - 2, &two)[1..], Path::new("x"), 0);
        assert!(fits.is_ok());
        let err = crate::batch::decode(&batch_input(u64::MAX - 1, &two)[1..], Path::new("x"), 0)
            .unwrap_err();
        assert!(
            err.is_corruption() && err.to_string().contains("overflow"),
            "{err}"
        );
    }
}
