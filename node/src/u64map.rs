//! Hash maps keyed by a `u64` that needs no SipHash: ring hashes (already xxhash64 of the key)
//! and mesh request ids (a per-shard counter).
//!
//! The key is multiplied by an odd constant (Fibonacci hashing), which spreads both kinds
//! over the table's buckets and control bytes for one multiplication, where SipHash cost a
//! measurable share of a pipelined SET (twice per key, in the key locks). It offers no
//! defence against keys chosen to collide: use it only where the map stays small, as these
//! hold only the keys and requests in flight on one shard.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by `u64` with [`U64Hasher`].
pub type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

/// Hashes one `u64` by a multiplication; see the module docs.
#[derive(Default)]
pub struct U64Hasher(u64);

/// 2^64 / the golden ratio, odd: multiplying by it is a bijection that moves every input bit
/// into the high bits hashbrown reads.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key.wrapping_mul(FIBONACCI);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_keys_spread_over_high_and_low_bits() {
        let build = BuildHasherDefault::<U64Hasher>::default();
        let hashes: Vec<u64> = (0..1024u64).map(|k| build.hash_one(k)).collect();
        // hashbrown takes the bucket from the low bits and the control byte from the top 7.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 600, "{} distinct buckets of 1024", low.len());
        assert_eq!(top.len(), 128, "every control byte value is used");
    }

    #[test]
    fn a_map_works_as_a_map() {
        let mut m = U64Map::default();
        for k in 0..1000u64 {
            m.insert(k * 7, k);
        }
        assert!((0..1000u64).all(|k| m.get(&(k * 7)) == Some(&k)));
        assert_eq!(m.remove(&21), Some(3));
        assert_eq!(m.len(), 999);
    }
}
