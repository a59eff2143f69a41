//! Keys to partitions: the 64-bit xxhash ring cut into Q fixed, equal partitions
//! (Dynamo's strategy 3). Partitions, not keys, are what nodes and shards own.

use xxhash_rust::xxh64::xxh64;

/// Default number of partitions. Fixed for the life of a cluster: it bounds how finely load
/// can be balanced (256 partitions over 3 nodes: within 1% of even) and how many Merkle trees
/// each replica keeps.
pub const PARTITIONS_DEFAULT: u32 = 256;

/// Seed of the ring hash. Part of the on-disk and wire contract: never change it.
const RING_HASH_SEED: u64 = 0;

pub type PartitionId = u32;

/// The ring position of a key.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, RING_HASH_SEED)
}

/// The partition owning `key` among `partitions` equal slices of the hash space.
pub fn partition_of(key: &[u8], partitions: u32) -> PartitionId {
    partition_of_hash(key_hash(key), partitions)
}

/// Partition `p` covers hashes `[p * 2^64 / Q, (p + 1) * 2^64 / Q)`.
pub fn partition_of_hash(hash: u64, partitions: u32) -> PartitionId {
    assert!(partitions > 0, "a ring has at least one partition");
    ((u128::from(hash) * u128::from(partitions)) >> 64) as PartitionId
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ends_of_the_ring() {
        assert_eq!(partition_of_hash(0, 256), 0);
        assert_eq!(partition_of_hash(u64::MAX, 256), 255);
        assert_eq!(partition_of_hash(1 << 56, 256), 1);
        assert_eq!(partition_of_hash((1 << 56) - 1, 256), 0);
    }

    proptest! {
        #[test]
        fn partition_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), q in 1u32..4096) {
            prop_assert!(partition_of(&key, q) < q);
        }

        #[test]
        fn partitions_are_ordered_slices(a in any::<u64>(), b in any::<u64>(), q in 1u32..4096) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(partition_of_hash(lo, q) <= partition_of_hash(hi, q));
        }
    }
}
