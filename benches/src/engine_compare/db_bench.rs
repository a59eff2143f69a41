//! RocksDB's own benchmark tool as the peer: the flags that make it run our workloads, and the
//! parser for its result lines:
//!
//! ```text
//! fillrandom   :       8.508 micros/op 117528 ops/sec 1.702 seconds 200000 operations;   13.0 MB/s
//! readrandom   :       5.100 micros/op 196078 ops/sec 5.100 seconds 1000000 operations; (632000 of 1000000 found)
//! ```

use std::path::Path;
use std::process::Command;

use super::workload::{KEY_LEN, Phase, PhaseResult, PhaseSpec, VALUE_LEN};

/// Same as Shoal's default block cache.
pub const CACHE_BYTES: u64 = 64 << 20;
/// Bloom filter bits per key, as Shoal's default (RocksDB's default is no filter).
pub const BLOOM_BITS: u32 = 10;
/// Shoal's table compression.
pub const COMPRESSION: &str = "zstd";

/// db_bench's name for the phase, or `None` where it has no equivalent (it cannot mix deletes
/// into a zipfian workload): [`super::rocksdb_c`] runs that one.
pub fn benchmark(phase: Phase) -> Option<&'static str> {
    match phase {
        Phase::Fill | Phase::FillSync | Phase::FillWriters => Some("fillrandom"),
        Phase::Overwrite => Some("overwrite"),
        Phase::Read => Some("readrandom"),
        Phase::Scan => Some("readseq"),
        Phase::ZipfMix => None,
    }
}

/// The db_bench invocation running `spec`, if it has one.
pub fn command(program: &Path, spec: &PhaseSpec) -> Option<Command> {
    let name = benchmark(spec.phase)?;
    let mut cmd = Command::new(program);
    let benchmarks = if spec.phase.writes() {
        // Settles compaction after the timed run; see the module doc of `engine_compare`.
        format!("{name},waitforcompaction")
    } else {
        name.to_owned()
    };
    cmd.arg(format!("--db={}", spec.dir.display()))
        .arg(format!("--benchmarks={benchmarks}"))
        .arg(format!("--num={}", spec.keys))
        .arg(format!("--key_size={KEY_LEN}"))
        .arg(format!("--value_size={VALUE_LEN}"))
        .arg(format!("--compression_type={COMPRESSION}"))
        .arg(format!("--bloom_bits={BLOOM_BITS}"))
        .arg(format!("--cache_size={CACHE_BYTES}"))
        .arg(format!("--seed={}", spec.seed.max(1)));
    match spec.phase {
        Phase::Fill => {
            cmd.arg(format!("--writes={}", spec.ops));
        }
        Phase::FillSync | Phase::FillWriters => {
            // db_bench's --writes is per thread.
            let writers = spec.writers.max(1) as u64;
            let sync = u8::from(spec.phase == Phase::FillSync);
            cmd.arg(format!("--sync={sync}"))
                .arg(format!("--threads={writers}"))
                .arg(format!("--writes={}", spec.ops.div_ceil(writers)));
        }
        Phase::Overwrite => {
            cmd.arg("--use_existing_db=1")
                .arg(format!("--writes={}", spec.ops));
        }
        Phase::Read => {
            cmd.arg("--use_existing_db=1")
                .arg(format!("--reads={}", spec.ops));
        }
        Phase::Scan => {
            // At most --num entries: every live key, since keys are drawn from 0..num.
            cmd.arg("--use_existing_db=1").arg("--reads=-1");
        }
        Phase::ZipfMix => return None,
    }
    Some(cmd)
}

/// The result line of benchmark `name` in db_bench's stdout.
pub fn parse(stdout: &str, name: &str, phase: Phase) -> Option<PhaseResult> {
    let line = stdout
        .split(['\n', '\r'])
        .find(|l| l.split_whitespace().next() == Some(name) && l.contains("ops/sec"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let before = |unit: &str| -> Option<&str> {
        let i = words.iter().position(|w| w.trim_end_matches(';') == unit)?;
        words.get(i.checked_sub(1)?).copied()
    };
    let secs: f64 = before("seconds")?.parse().ok()?;
    let ops: u64 = before("operations")?.parse().ok()?;
    let found = match line.split_once('(') {
        Some((_, rest)) => rest.split_whitespace().next()?.parse().ok()?,
        None if phase == Phase::Scan => ops,
        None => 0,
    };
    let user_bytes = if phase.writes() {
        ops * (KEY_LEN + VALUE_LEN) as u64
    } else {
        0
    };
    Some(PhaseResult {
        ops,
        secs,
        found,
        user_bytes,
    })
}

/// Whether this db_bench was built with assertions (Debian's is), which slows it.
pub fn has_assertions(stdout: &str) -> bool {
    stdout.contains("Assertions are enabled")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "RocksDB:    version 7.8.3\nWARNING: Assertions are enabled; benchmarks unnecessarily slow\n\
        ------------------------------------------------\nDB path: [/tmp/dbb]\n\
        fillrandom   :       8.508 micros/op 117528 ops/sec 1.702 seconds 200000 operations;   13.0 MB/s\n\
        ... finished 100 ops\r... finished 200 ops\rDB path: [/tmp/dbb]\n\
        readrandom   :       5.100 micros/op 196078 ops/sec 5.100 seconds 1000000 operations; (632000 of 1000000 found)\n\
        readseq      :       0.266 micros/op 3743495 ops/sec 0.027 seconds 100000 operations;  414.1 MB/s\n";

    #[test]
    fn parses_result_lines() {
        let fill = parse(OUT, "fillrandom", Phase::Fill).unwrap();
        assert_eq!(
            (fill.ops, fill.secs, fill.found, fill.user_bytes),
            (200_000, 1.702, 0, 200_000 * 116)
        );
        let read = parse(OUT, "readrandom", Phase::Read).unwrap();
        assert_eq!(
            (read.ops, read.found, read.user_bytes),
            (1_000_000, 632_000, 0)
        );
        let scan = parse(OUT, "readseq", Phase::Scan).unwrap();
        assert_eq!((scan.ops, scan.found), (100_000, 100_000));
        assert!(parse(OUT, "overwrite", Phase::Overwrite).is_none());
        assert!(parse("fillrandom : garbage ops/sec", "fillrandom", Phase::Fill).is_none());
        assert!(has_assertions(OUT));
    }

    #[test]
    fn sync_writes_are_split_per_thread() {
        let spec = PhaseSpec {
            phase: Phase::FillSync,
            dir: "/d".into(),
            keys: 1000,
            ops: 6400,
            writers: 64,
            seed: 1,
        };
        let cmd = command(Path::new("db_bench"), &spec).unwrap();
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--sync=1",
            "--threads=64",
            "--writes=100",
            "--benchmarks=fillrandom,waitforcompaction",
            "--db=/d",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
        let read = command(
            Path::new("db_bench"),
            &PhaseSpec {
                phase: Phase::Read,
                ..spec.clone()
            },
        )
        .unwrap();
        assert!(read.get_args().any(|a| a == "--benchmarks=readrandom"));
        assert!(
            command(
                Path::new("db_bench"),
                &PhaseSpec {
                    phase: Phase::ZipfMix,
                    ..spec.clone()
                }
            )
            .is_none()
        );
    }
}
