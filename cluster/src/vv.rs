//! Dots and version vectors: the causal bookkeeping under [`crate::dvv`].
//!
//! A dot `(actor, counter)` names one write: the `counter`-th write that replica `actor`
//! coordinated for a key. A version vector maps actors to counters and stands for the set of
//! dots `{(a, 1..=vv[a])}`: every write it has seen, per actor, downward closed.
//!
//! Version vectors travel to clients as opaque contexts (VGET returns one, VSET/VDEL take it
//! back), encoded in the checksummed envelope of `codec.rs` with magic `b"VC"`:
//!
//! | field            | size | meaning                                         |
//! |------------------|------|-------------------------------------------------|
//! | magic `b"VC"`    | 2    |                                                 |
//! | version = 1      | 1    |                                                 |
//! | count            | u16  | number of entries, at most [`ACTORS_MAX`]       |
//! | entry × count    | 12   | actor u32, counter u64; actors strictly ascending, counters > 0 |
//! | crc32c           | u32  | over all preceding bytes                        |

use std::collections::BTreeMap;

use crate::NodeId;
use crate::codec::{self, Reader};
use crate::error::Result;

/// Most actors one vector may hold. Actors are replica node ids (never clients), so a key's
/// vector has at most one entry per node that ever held it; this equals the ring's member
/// limit, so a vector outgrowing it is corrupt, not busy.
pub const ACTORS_MAX: usize = crate::ring::MEMBERS_MAX;

const CONTEXT_MAGIC: [u8; 2] = *b"VC";
const CONTEXT_VERSION: u8 = 1;
/// Encoded size of one `(actor, counter)` entry.
pub(crate) const ENTRY_LEN: usize = 4 + 8;

const _: () = assert!(
    ACTORS_MAX <= u16::MAX as usize,
    "entry count is a u16 on disk"
);

/// One write: the `counter`-th write coordinated by replica `actor` for a key.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Dot {
    pub actor: NodeId,
    pub counter: u64,
}

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// The left side is strictly older: the right has seen everything it has, and more.
    Before,
    /// The left side strictly descends from the right.
    After,
    Concurrent,
}

/// A set of dots, downward closed per actor. Entries with counter 0 are never stored, so
/// equal sets have equal representations (and equal encodings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: BTreeMap<NodeId, u64>,
}

impl VersionVector {
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The highest counter seen from `actor` (0: none).
    pub fn get(&self, actor: NodeId) -> u64 {
        self.entries.get(&actor).copied().unwrap_or(0)
    }

    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.actor)
    }

    /// Records `dot` and, by downward closure, every earlier dot of its actor.
    pub fn add(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        let counter = self.entries.entry(dot.actor).or_insert(0);
        *counter = (*counter).max(dot.counter);
    }

    /// Least upper bound: afterwards `self` has seen everything either side had.
    pub fn merge(&mut self, other: &VersionVector) {
        for (&actor, &counter) in &other.entries {
            self.add(Dot { actor, counter });
        }
    }

    /// True when `self` has seen every dot `other` has (including when equal).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|(&actor, &counter)| self.get(actor) >= counter)
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Drops `actor`'s entry. See [`crate::dvv::DvvSet::retire_actor`] for when that is safe.
    pub(crate) fn remove(&mut self, actor: NodeId) {
        self.entries.remove(&actor);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(actor, counter)` in ascending actor order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.entries.iter().map(|(&a, &c)| (a, c))
    }

    /// The opaque client context (layout at the top of this module).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = codec::begin(CONTEXT_MAGIC, CONTEXT_VERSION);
        self.encode_body(&mut buf);
        codec::seal(buf)
    }

    pub fn decode(bytes: &[u8]) -> Result<VersionVector> {
        let mut reader = codec::open(bytes, "context", CONTEXT_MAGIC, CONTEXT_VERSION)?;
        let vv = VersionVector::decode_body(&mut reader)?;
        reader.finish()?;
        Ok(vv)
    }

    /// `count u16` then the entries; shared with the DVV set encoding.
    pub(crate) fn encode_body(&self, buf: &mut Vec<u8>) {
        assert!(
            self.entries.len() <= ACTORS_MAX,
            "version vector over ACTORS_MAX"
        );
        buf.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        for (&actor, &counter) in &self.entries {
            debug_assert!(counter > 0);
            buf.extend_from_slice(&actor.to_le_bytes());
            buf.extend_from_slice(&counter.to_le_bytes());
        }
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>) -> Result<VersionVector> {
        let count = usize::from(reader.u16()?);
        if count > ACTORS_MAX {
            return Err(reader.error("more actors than ACTORS_MAX"));
        }
        if count * ENTRY_LEN > reader.remaining() {
            return Err(reader.error("entry count exceeds the bytes present"));
        }
        let mut entries = BTreeMap::new();
        let mut previous: Option<NodeId> = None;
        for _ in 0..count {
            let actor = reader.u32()?;
            let counter = reader.u64()?;
            if previous.is_some_and(|p| p >= actor) {
                return Err(reader.error("actors not strictly ascending"));
            }
            if counter == 0 {
                return Err(reader.error("zero counter"));
            }
            previous = Some(actor);
            entries.insert(actor, counter);
        }
        Ok(VersionVector { entries })
    }
}

impl FromIterator<Dot> for VersionVector {
    fn from_iter<I: IntoIterator<Item = Dot>>(iter: I) -> VersionVector {
        let mut vv = VersionVector::new();
        for dot in iter {
            vv.add(dot);
        }
        vv
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small actor and counter ranges so that generated vectors overlap often.
    pub(crate) fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u32..5, 1u64..6), 0..6).prop_map(|e| {
            e.into_iter()
                .map(|(actor, counter)| Dot { actor, counter })
                .collect()
        })
    }

    #[test]
    fn contains_is_downward_closed() {
        let vv: VersionVector = [Dot {
            actor: 1,
            counter: 3,
        }]
        .into_iter()
        .collect();
        assert!(vv.contains(Dot {
            actor: 1,
            counter: 1
        }));
        assert!(vv.contains(Dot {
            actor: 1,
            counter: 3
        }));
        assert!(!vv.contains(Dot {
            actor: 1,
            counter: 4
        }));
        assert!(!vv.contains(Dot {
            actor: 2,
            counter: 1
        }));
    }

    #[test]
    fn decode_rejects_unsorted_and_zero() {
        let mut body = codec::begin(CONTEXT_MAGIC, CONTEXT_VERSION);
        body.extend_from_slice(&2u16.to_le_bytes());
        for (a, c) in [(5u32, 1u64), (3, 1)] {
            body.extend_from_slice(&a.to_le_bytes());
            body.extend_from_slice(&c.to_le_bytes());
        }
        assert!(VersionVector::decode(&codec::seal(body)).is_err());
        let mut body = codec::begin(CONTEXT_MAGIC, CONTEXT_VERSION);
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        assert!(VersionVector::decode(&codec::seal(body)).is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(vv in arb_vv()) {
            prop_assert_eq!(VersionVector::decode(&vv.encode()).unwrap(), vv);
        }

        #[test]
        fn any_damage_is_detected(vv in arb_vv(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = vv.encode();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(VersionVector::decode(&bytes).is_err());
            prop_assert!(VersionVector::decode(&bytes[..i]).is_err());
        }

        #[test]
        fn descends_is_a_partial_order(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            prop_assert!(a.descends(&a));
            if a.descends(&b) && b.descends(&a) {
                prop_assert_eq!(&a, &b);
            }
            if a.descends(&b) && b.descends(&c) {
                prop_assert!(a.descends(&c));
            }
        }

        #[test]
        fn compare_is_consistent(a in arb_vv(), b in arb_vv()) {
            let flipped = match a.compare(&b) {
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                other => other,
            };
            prop_assert_eq!(b.compare(&a), flipped);
        }

        #[test]
        fn merge_is_the_least_upper_bound(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            prop_assert!(ab.descends(&a) && ab.descends(&b));
            // Least: anything above both is above the merge.
            if c.descends(&a) && c.descends(&b) {
                prop_assert!(c.descends(&ab));
            }
            let mut aa = a.clone();
            aa.merge(&a);
            prop_assert_eq!(&aa, &a);
            let mut ab_c = ab.clone();
            ab_c.merge(&c);
            let mut bc = b.clone();
            bc.merge(&c);
            let mut a_bc = a.clone();
            a_bc.merge(&bc);
            prop_assert_eq!(ab_c, a_bc);
        }
    }
}
