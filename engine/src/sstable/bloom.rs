//! A cache-line-blocked bloom filter over user keys.
//!
//! A key's 64-bit xxh3 hash picks one 512-bit line with its high 32 bits, then sets or tests
//! `probes` bits inside that line by double hashing its low 32 bits (`h1 + i*h2`, with `h2`
//! a rotation of `h1` made odd so the probes are distinct). One cache miss per lookup; at 10
//! bits per key the false-positive rate is about 1%.
//!
//! ## Filter block layout
//! | field  | type            | meaning                                     |
//! |--------|-----------------|---------------------------------------------|
//! | bits   | lines × 64 B    | line `i` is bytes `64i..64i+64`, bit `b` of a line is `byte[b/8] >> (b%8) & 1` |
//! | lines  | u32             | number of lines; 0 = no filter (always "maybe") |
//! | probes | u8              | bits set per key, 1..=`PROBES_MAX` (0 when lines = 0) |

use xxhash_rust::xxh3::xxh3_64;

use super::coding::{Malformed, Reader, malformed};

/// Bytes in one line: a cache line, so a lookup touches one.
pub const LINE_BYTES: usize = 64;
const LINE_BITS: u32 = (LINE_BYTES * 8) as u32;
const _: () = assert!(LINE_BITS.is_power_of_two());

/// More probes stop paying well before this inside a 512-bit line.
pub const PROBES_MAX: u32 = 16;

/// `lines u32 | probes u8` after the bits.
const TAIL_LEN: usize = 4 + 1;

/// The hash every table's filter is probed with; the read path computes it once per key.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Probes per key for `bits_per_key`: ln 2 × bits, rounded down, as blocked filters favour
/// slightly fewer probes than classic ones.
pub fn probes_for(bits_per_key: u32) -> u32 {
    (bits_per_key.saturating_mul(69) / 100).clamp(1, PROBES_MAX)
}

/// Bloom filter statistics, for `sstable-dump`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterStats {
    /// Bits in the filter.
    pub bits: u64,
    /// Bits set per key.
    pub hash_count: u32,
    /// Fraction of bits set: about 0.5 in a well-sized filter.
    pub set_bit_ratio: f64,
}

/// (line, first probe, probe step) of a hash in a filter of `lines` lines.
fn locate(hash: u64, lines: u32) -> (usize, u32, u32) {
    debug_assert!(lines > 0);
    let line = ((hash >> 32) * u64::from(lines)) >> 32;
    let h1 = hash as u32;
    let h2 = h1.rotate_right(17) | 1;
    (line as usize, h1, h2)
}

/// Encodes a filter block holding `hashes` (one per distinct user key).
pub(crate) fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    if bits_per_key == 0 || hashes.is_empty() {
        let mut out = 0u32.to_le_bytes().to_vec();
        out.push(0);
        return out;
    }
    let total_bits = hashes.len() as u64 * u64::from(bits_per_key);
    let lines = u32::try_from(total_bits.div_ceil(u64::from(LINE_BITS)).max(1)).unwrap_or(u32::MAX);
    let probes = probes_for(bits_per_key);
    let mut out = vec![0u8; lines as usize * LINE_BYTES + TAIL_LEN];
    for &hash in hashes {
        let (line, mut h, step) = locate(hash, lines);
        let bits = &mut out[line * LINE_BYTES..(line + 1) * LINE_BYTES];
        for _ in 0..probes {
            let bit = (h % LINE_BITS) as usize;
            bits[bit / 8] |= 1 << (bit % 8);
            h = h.wrapping_add(step);
        }
    }
    let tail = lines as usize * LINE_BYTES;
    out[tail..tail + 4].copy_from_slice(&lines.to_le_bytes());
    out[tail + 4] = probes as u8;
    out
}

/// A decoded filter block.
#[derive(Debug)]
pub(crate) struct Bloom {
    bits: Vec<u8>,
    lines: u32,
    probes: u32,
}

impl Bloom {
    pub(crate) fn decode(block: &[u8]) -> Result<Bloom, Malformed> {
        let bits_len = block
            .len()
            .checked_sub(TAIL_LEN)
            .ok_or_else(|| malformed("filter block too short"))?;
        let mut r = Reader::at(block, bits_len);
        let lines = r.u32("filter lines")?;
        let probes = u32::from(r.u8("filter probes")?);
        if (lines as usize).checked_mul(LINE_BYTES) != Some(bits_len) {
            return Err(malformed(format!(
                "filter of {lines} lines holds {bits_len} bytes"
            )));
        }
        let probes_ok = if lines == 0 {
            probes == 0
        } else {
            (1..=PROBES_MAX).contains(&probes)
        };
        if !probes_ok {
            return Err(malformed(format!("filter has {probes} probes")));
        }
        Ok(Bloom {
            bits: block[..bits_len].to_vec(),
            lines,
            probes,
        })
    }

    /// False means the key is certainly absent.
    pub(crate) fn may_contain(&self, hash: u64) -> bool {
        if self.lines == 0 {
            return true;
        }
        let (line, mut h, step) = locate(hash, self.lines);
        let bits = &self.bits[line * LINE_BYTES..(line + 1) * LINE_BYTES];
        for _ in 0..self.probes {
            let bit = (h % LINE_BITS) as usize;
            if bits[bit / 8] & (1 << (bit % 8)) == 0 {
                return false;
            }
            h = h.wrapping_add(step);
        }
        true
    }

    pub(crate) fn stats(&self) -> FilterStats {
        let bits = self.bits.len() as u64 * 8;
        let set: u64 = self.bits.iter().map(|b| u64::from(b.count_ones())).sum();
        FilterStats {
            bits,
            hash_count: self.probes,
            set_bit_ratio: if bits == 0 {
                0.0
            } else {
                set as f64 / bits as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Vec<u8> {
        format!("key-{i:010}").into_bytes()
    }

    /// Builds a filter over keys 0..n and measures false positives on n absent keys.
    fn false_positive_rate(n: u64, bits_per_key: u32) -> f64 {
        let hashes: Vec<u64> = (0..n).map(|i| key_hash(&key(i))).collect();
        let bloom = Bloom::decode(&build(&hashes, bits_per_key)).unwrap();
        for &h in &hashes {
            assert!(bloom.may_contain(h), "false negative");
        }
        let fp = (n..2 * n)
            .filter(|&i| bloom.may_contain(key_hash(&key(i))))
            .count();
        fp as f64 / n as f64
    }

    #[test]
    fn false_positive_rate_is_about_one_percent_at_ten_bits() {
        let rate = false_positive_rate(100_000, 10);
        assert!((0.003..0.02).contains(&rate), "fp rate {rate}");
    }

    #[test]
    fn false_positive_rate_tracks_bits_per_key() {
        let r5 = false_positive_rate(100_000, 5);
        let r20 = false_positive_rate(100_000, 20);
        assert!((0.03..0.15).contains(&r5), "fp rate {r5} at 5 bits");
        assert!(r20 < 0.002, "fp rate {r20} at 20 bits");
    }

    #[test]
    fn stats_and_empty_filter() {
        let hashes: Vec<u64> = (0..10_000).map(|i| key_hash(&key(i))).collect();
        let stats = Bloom::decode(&build(&hashes, 10)).unwrap().stats();
        assert_eq!(stats.hash_count, 6);
        assert!(stats.bits >= 100_000);
        assert!((0.35..0.6).contains(&stats.set_bit_ratio), "{stats:?}");

        for filter in [build(&[], 10), build(&hashes, 0)] {
            let bloom = Bloom::decode(&filter).unwrap();
            assert!(bloom.may_contain(key_hash(b"anything")));
            assert_eq!(bloom.stats().bits, 0);
        }
    }

    #[test]
    fn decode_rejects_inconsistent_blocks() {
        let hashes: Vec<u64> = (0..100).map(|i| key_hash(&key(i))).collect();
        let good = build(&hashes, 10);
        assert!(Bloom::decode(&good[1..]).is_err());
        assert!(Bloom::decode(&good[..good.len() - 1]).is_err());
        let mut no_probes = good.clone();
        *no_probes.last_mut().unwrap() = 0;
        assert!(Bloom::decode(&no_probes).is_err());
        let mut huge = good.clone();
        let n = huge.len();
        huge[n - 5..n - 1].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Bloom::decode(&huge).is_err());
        assert!(Bloom::decode(&[]).is_err());
    }
}
