//! What each request is: the operation (by the read fraction) and the key (uniform or zipfian
//! over the key space).

use rand::Rng;

use super::args::{Config, Distribution};

/// Digits of the zero-padded key number, as redis-benchmark's `key:__rand_int__` (12), so keys
/// have one length whatever their number.
const KEY_DIGITS_MIN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Get,
    Set,
}

/// Zipfian ranks over `0..n` by Gray et al.'s method ("Quickly generating billion-record
/// synthetic databases", as in YCSB): rank 0 is the most popular, with probability
/// `1 / zeta(n, theta)`. Set-up is O(n) (one `powf` per key); each draw is O(1).
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    half_pow_theta: f64,
}

/// `sum_{i=1..n} 1 / i^theta`.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| (i as f64).powf(-theta)).sum()
}

impl Zipfian {
    pub fn new(n: u64, theta: f64) -> Zipfian {
        assert!(n >= 1, "zipfian over an empty key space");
        assert!(
            theta > 0.0 && theta < 1.0,
            "zipfian theta must be within (0, 1)"
        );
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2.min(n), theta);
        let eta = if n > 2 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        } else {
            1.0
        };
        Zipfian {
            n,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    /// Probability of rank 0, the most popular key.
    pub fn top_probability(&self) -> f64 {
        1.0 / self.zetan
    }

    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.r#gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }
}

#[derive(Debug, Clone)]
enum Keys {
    Uniform(u64),
    Zipfian(Zipfian),
}

/// The request stream's shape, shared (read-only) by every client thread.
#[derive(Debug, Clone)]
pub struct Workload {
    keys: Keys,
    reads: f64,
    prefix: Vec<u8>,
    digits: usize,
    value: Vec<u8>,
}

impl Workload {
    pub fn new(config: &Config) -> Workload {
        let keys = match config.distribution {
            Distribution::Uniform => Keys::Uniform(config.keys),
            Distribution::Zipfian => Keys::Zipfian(Zipfian::new(config.keys, config.zipf_theta)),
        };
        let digits = (config.keys - 1).max(1).ilog10() as usize + 1;
        // Printable bytes that vary, so a compressing server cannot shrink them to nothing.
        let value = (0..config.value_size)
            .map(|i| b'a' + ((i * 7 + i / 26) % 26) as u8)
            .collect();
        Workload {
            keys,
            reads: config.reads,
            prefix: config.key_prefix.as_bytes().to_vec(),
            digits: digits.max(KEY_DIGITS_MIN),
            value,
        }
    }

    /// The next request: its operation and key number.
    pub fn next(&self, rng: &mut impl Rng) -> (Op, u64) {
        let op = if self.reads >= 1.0 || (self.reads > 0.0 && rng.r#gen::<f64>() < self.reads) {
            Op::Get
        } else {
            Op::Set
        };
        let key = match &self.keys {
            Keys::Uniform(n) => rng.gen_range(0..*n),
            Keys::Zipfian(z) => z.sample(rng),
        };
        (op, key)
    }

    /// Writes key number `n` (prefix and zero-padded number) into `buf`, replacing its content.
    pub fn key(&self, n: u64, buf: &mut Vec<u8>) {
        use std::io::Write;
        buf.clear();
        buf.extend_from_slice(&self.prefix);
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "{n:0width$}", width = self.digits);
    }

    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn zipfian_top_key_frequency_matches_theory() {
        let z = Zipfian::new(1000, 0.99);
        let mut rng = StdRng::seed_from_u64(7);
        let draws = 200_000;
        let mut counts = vec![0u64; 1000];
        for _ in 0..draws {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        let p0 = counts[0] as f64 / draws as f64;
        let expected = z.top_probability();
        // zeta(1000, 0.99) is about 7.1, so rank 0 takes ~14% of draws; the sampling standard
        // deviation is ~0.08 percentage points, so 0.5 points is a wide, still failing, bound.
        assert!((0.12..0.16).contains(&expected), "expected {expected}");
        assert!(
            (p0 - expected).abs() < 0.005,
            "rank 0 drawn {p0}, expected {expected}"
        );
        let p1 = counts[1] as f64 / draws as f64;
        let expected1 = 0.5f64.powf(0.99) * expected;
        assert!(
            (p1 - expected1).abs() < 0.005,
            "rank 1 drawn {p1}, expected {expected1}"
        );
        // Skewed: the top 10% of keys take most of the draws; the tail is still reached.
        let top: u64 = counts[..100].iter().sum();
        assert!(top as f64 / draws as f64 > 0.6);
        assert!(counts[500..].iter().sum::<u64>() > 0);
    }

    #[test]
    fn zipfian_tiny_key_spaces() {
        let mut rng = StdRng::seed_from_u64(1);
        for n in 1..4 {
            let z = Zipfian::new(n, 0.5);
            for _ in 0..1000 {
                assert!(z.sample(&mut rng) < n);
            }
        }
    }

    fn config(extra: &[&str]) -> Config {
        use clap::Parser;
        let mut v = vec!["shoal-bench"];
        v.extend_from_slice(extra);
        super::super::args::Args::try_parse_from(v)
            .unwrap()
            .config()
            .unwrap()
    }

    #[test]
    fn uniform_mix_and_keys() {
        let w = Workload::new(&config(&[
            "--keys",
            "10",
            "--reads",
            "0.9",
            "--value-size",
            "5",
        ]));
        let mut rng = StdRng::seed_from_u64(3);
        let (mut gets, mut seen) = (0, [0u32; 10]);
        for _ in 0..100_000 {
            let (op, k) = w.next(&mut rng);
            gets += u32::from(op == Op::Get);
            seen[k as usize] += 1;
        }
        assert!((89_000..91_000).contains(&gets), "gets {gets}");
        assert!(
            seen.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{seen:?}"
        );
        let mut key = Vec::new();
        w.key(42, &mut key);
        assert_eq!(key, b"key:000000000042");
        assert_eq!(w.value().len(), 5);
    }

    #[test]
    fn all_reads_or_all_writes() {
        let mut rng = StdRng::seed_from_u64(3);
        let reads = Workload::new(&config(&["--reads", "1"]));
        let writes = Workload::new(&config(&["--reads", "0"]));
        for _ in 0..1000 {
            assert_eq!(reads.next(&mut rng).0, Op::Get);
            assert_eq!(writes.next(&mut rng).0, Op::Set);
        }
    }
}
