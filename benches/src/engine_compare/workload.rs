//! The workloads every engine runs: the same keys, values and operation mix, generated the way
//! RocksDB's `db_bench` generates them, so its numbers compare with ours.
//!
//! - Key `i` (16 bytes): `i` as 8 big-endian bytes, then `'0'` padding, as db_bench's
//!   `GenerateKeyFromInt` with `--key_size=16`.
//! - Values (100 bytes): random printable bytes that compress to about half (db_bench's default
//!   `--compression_ratio=0.5`): 50 random bytes, repeated.

use std::sync::Arc;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_tools::bench::workload::Zipfian;

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
/// Distinct values cycled through (db_bench's 1 MiB pool of 100-byte pieces); enough that a
/// compressor sees no repetition across a block.
const VALUE_POOL_PIECES: usize = (1 << 20) / VALUE_LEN;
/// Every value is one whole piece: a cursor that wrapped at a length not a multiple of
/// `VALUE_LEN` would straddle pieces, and values would compress less than db_bench's.
const VALUE_POOL_LEN: usize = VALUE_POOL_PIECES * VALUE_LEN;
/// Fraction of a value that is random (db_bench's `--compression_ratio`).
const COMPRESSION_RATIO: f64 = 0.5;
/// Skew of the zipfian mix (YCSB's default).
pub const ZIPF_THETA: f64 = 0.99;

/// One measured step. Each runs in its own process, on a directory earlier steps left behind.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `ops` puts of uniformly random keys into an empty database, not synced.
    Fill,
    /// `ops` puts of uniformly random keys, each acknowledged only once durable, from
    /// `writers` concurrent writers, into an empty database.
    FillSync,
    /// The same puts from the same concurrent writers into an empty database, not synced:
    /// what the synced fill costs beyond its writers' concurrency is durability alone.
    FillWriters,
    /// `ops` puts of uniformly random keys into the existing database, not synced.
    Overwrite,
    /// `ops` gets of uniformly random keys.
    Read,
    /// One pass over every live key in order; `ops` is ignored.
    Scan,
    /// `ops` operations on zipfian keys: 50% gets, 40% puts, 10% deletes, not synced.
    ZipfMix,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Fill => "fillrandom",
            Phase::FillSync => "fillrandom sync",
            Phase::FillWriters => "fillrandom writers",
            Phase::Overwrite => "overwrite",
            Phase::Read => "readrandom",
            Phase::Scan => "scan",
            Phase::ZipfMix => "zipfian mix",
        }
    }

    /// Whether the phase writes (and so has a write and space amplification).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Phase::Fill | Phase::FillSync | Phase::FillWriters | Phase::Overwrite | Phase::ZipfMix
        )
    }

    /// Whether `writers` concurrent writers run the phase, into a fresh database of its own
    /// (on Shoal, on the node's path: DMA files, writers as glommio tasks).
    pub fn concurrent(self) -> bool {
        matches!(self, Phase::FillSync | Phase::FillWriters)
    }
}

/// What a child process is asked to run.
#[derive(Debug, Clone, clap::Args)]
pub struct PhaseSpec {
    #[arg(long, value_enum)]
    pub phase: Phase,
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Size of the key space.
    #[arg(long)]
    pub keys: u64,
    /// Operations in the phase, over all writers.
    #[arg(long)]
    pub ops: u64,
    /// Concurrent writers (concurrent phases only).
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl PhaseSpec {
    pub fn to_args(&self) -> Vec<String> {
        use clap::ValueEnum;
        let phase = self
            .phase
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        vec![
            "--phase".into(),
            phase,
            "--dir".into(),
            self.dir.display().to_string(),
            "--keys".into(),
            self.keys.to_string(),
            "--ops".into(),
            self.ops.to_string(),
            "--writers".into(),
            self.writers.to_string(),
            "--seed".into(),
            self.seed.to_string(),
        ]
    }
}

/// What a phase did, as measured inside the process that ran it (printed as one JSON line).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseResult {
    pub ops: u64,
    /// Time spent in the operations (opening and closing the database excluded, as db_bench).
    pub secs: f64,
    /// Gets that found a value; for a scan, the keys visited.
    pub found: u64,
    /// Bytes of keys and values handed to the engine (deletes count their key).
    pub user_bytes: u64,
}

/// Key number `i` in db_bench's layout.
pub fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [b'0'; KEY_LEN];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

/// Values to cycle through, half-compressible as db_bench's. Built once per phase, before the
/// clock starts, and shared: concurrent writers each take a cursor ([`Values::for_writer`]).
#[derive(Clone)]
pub struct Values {
    pool: Arc<[u8]>,
    pos: usize,
}

impl Values {
    pub fn new(seed: u64) -> Values {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_0F7A_1E55);
        let random = (VALUE_LEN as f64 * COMPRESSION_RATIO) as usize;
        let mut pool = Vec::with_capacity(VALUE_POOL_LEN);
        while pool.len() < VALUE_POOL_LEN {
            let piece: Vec<u8> = (0..random).map(|_| rng.gen_range(b' '..=b'~')).collect();
            pool.extend(piece.iter().cycle().take(VALUE_LEN));
        }
        Values {
            pool: pool.into(),
            pos: 0,
        }
    }

    /// A cursor for writer `w`, starting at its own place in the pool so that concurrent
    /// writers do not write the same values in step.
    pub fn for_writer(&self, w: usize) -> Values {
        Values {
            pool: Arc::clone(&self.pool),
            pos: (w * 7919 % VALUE_POOL_PIECES) * VALUE_LEN,
        }
    }

    pub fn next_value(&mut self) -> &[u8] {
        self.pos = (self.pos + VALUE_LEN) % VALUE_POOL_LEN;
        &self.pool[self.pos..self.pos + VALUE_LEN]
    }
}

/// One operation of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put(u64),
    Get(u64),
    Delete(u64),
}

/// The operation stream of one writer (or the single thread) of a phase.
pub struct Ops {
    rng: StdRng,
    phase: Phase,
    keys: u64,
    zipf: Option<Zipfian>,
}

impl Ops {
    pub fn new(spec: &PhaseSpec, writer: usize) -> Ops {
        let seed = spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (spec.phase as u64) << 32
            ^ writer as u64;
        Ops {
            rng: StdRng::seed_from_u64(seed),
            phase: spec.phase,
            keys: spec.keys,
            zipf: (spec.phase == Phase::ZipfMix).then(|| Zipfian::new(spec.keys, ZIPF_THETA)),
        }
    }

    pub fn next_op(&mut self) -> Op {
        match (self.phase, &self.zipf) {
            (Phase::Read, _) => Op::Get(self.rng.gen_range(0..self.keys)),
            (_, Some(z)) => {
                let k = z.sample(&mut self.rng);
                match self.rng.gen_range(0..10) {
                    0..5 => Op::Get(k),
                    5..9 => Op::Put(k),
                    _ => Op::Delete(k),
                }
            }
            _ => Op::Put(self.rng.gen_range(0..self.keys)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(phase: Phase) -> PhaseSpec {
        PhaseSpec {
            phase,
            dir: "/x".into(),
            keys: 1000,
            ops: 10,
            writers: 1,
            seed: 5,
        }
    }

    #[test]
    fn keys_follow_db_bench_layout_and_sort_numerically() {
        assert_eq!(&key(1), b"\0\0\0\0\0\0\0\x0100000000");
        assert!(key(255) < key(256));
    }

    #[test]
    fn values_compress_to_about_half() {
        let pool = Values::new(1);
        // Every value of every writer, over more than one lap of the pool, is a random half
        // repeated: db_bench's values at `--compression_ratio=0.5`.
        for w in [0, 1, 63] {
            let mut v = pool.for_writer(w);
            let mut previous = Vec::new();
            for i in 0..VALUE_POOL_PIECES + 100 {
                let value = v.next_value().to_vec();
                assert_eq!(value.len(), VALUE_LEN);
                assert_eq!(value[..50], value[50..], "writer {w} value {i}");
                assert_ne!(value, previous);
                previous = value;
            }
        }
    }

    #[test]
    fn mix_proportions_and_determinism() {
        let mut ops = Ops::new(&spec(Phase::ZipfMix), 0);
        let (mut gets, mut puts, mut dels) = (0, 0, 0);
        for _ in 0..100_000 {
            match ops.next_op() {
                Op::Get(k) | Op::Put(k) | Op::Delete(k) if k >= 1000 => {
                    panic!("key {k} out of range")
                }
                Op::Get(_) => gets += 1,
                Op::Put(_) => puts += 1,
                Op::Delete(_) => dels += 1,
            }
        }
        assert!((48_000..52_000).contains(&gets), "{gets}");
        assert!((38_000..42_000).contains(&puts), "{puts}");
        assert!((9_000..11_000).contains(&dels), "{dels}");
        let a: Vec<_> = (0..5)
            .map({
                let mut o = Ops::new(&spec(Phase::Fill), 3);
                move |_| o.next_op()
            })
            .collect();
        let b: Vec<_> = (0..5)
            .map({
                let mut o = Ops::new(&spec(Phase::Fill), 3);
                move |_| o.next_op()
            })
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|op| matches!(op, Op::Put(_))));
    }

    #[test]
    fn spec_round_trips_through_arguments() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            spec: PhaseSpec,
        }
        let s = PhaseSpec {
            writers: 64,
            ..spec(Phase::FillSync)
        };
        let mut args = vec!["x".to_owned()];
        args.extend(s.to_args());
        let back = Cli::try_parse_from(args).unwrap().spec;
        assert_eq!(
            (back.phase, back.keys, back.ops, back.writers, back.seed),
            (s.phase, 1000, 10, 64, 5)
        );
    }
}
