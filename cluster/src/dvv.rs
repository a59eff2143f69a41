//! Dotted version vector sets (Almeida et al., "Scalable and Accurate Causality Tracking for
//! Eventually Consistent Stores"; the shape of Riak's `dvvset`): what a replica stores for a
//! key, what replicas exchange, and what read repair writes back.
//!
//! A [`DvvSet`] is a causal context (a [`VersionVector`]: every write this state has seen)
//! plus the siblings: the seen writes that nothing seen has superseded, each tagged with its
//! own dot. A write seen (in the context) but not present as a sibling is known to be
//! superseded, which is what lets [`DvvSet::sync`] tell "deleted by a later write" from "not
//! yet arrived" without keeping history.
//!
//! Rules:
//! - Only a replica holding the key's stored state makes a dot, as `(its node id, highest
//!   counter for itself in the stored state or the write's context + 1)`; the replica stores
//!   before it replies, so its own counter never repeats for a key.
//! - A write with context `c` removes exactly the siblings whose dots `c` contains, and adds
//!   its own; siblings the context did not see stay (they are concurrent).
//! - `sync` is a join (commutative, associative, idempotent): a sibling survives unless the
//!   other side has seen its dot and dropped it.
//! - Siblings are bounded: past [`SIBLINGS_MAX`] the oldest (lowest counter, then actor) are
//!   dropped with their dots kept in the context, so they are superseded everywhere alike and
//!   never come back; [`SIBLINGS_WARN`] is where the node should log.
//! - Actor entries: actors are replica node ids, never clients, so a vector holds at most one
//!   entry per node that ever held the key (≤ [`ACTORS_MAX`]), however many clients write.
//!   Entries are never pruned by age (that is what creates false conflicts); an entry may be
//!   dropped only by [`DvvSet::retire_actor`], once that node has left the ring and
//!   anti-entropy has synced every replica of the key since (no copy holding one of its
//!   siblings can still arrive).
//!
//! Encoding (the bytes stored as the engine value and sent as `Put` payloads), in the
//! checksummed envelope of `codec.rs` (magic, version, body, crc32c):
//!
//! | field             | size  | meaning                                                   |
//! |-------------------|-------|-----------------------------------------------------------|
//! | magic `b"DV"`     | 2     |                                                           |
//! | version = 1       | 1     |                                                           |
//! | context count     | u16   | ≤ [`ACTORS_MAX`]                                          |
//! | context entries   | 12 ea | actor u32, counter u64; actors strictly ascending, counters > 0 |
//! | sibling count     | u16   | ≤ [`SIBLINGS_MAX`]                                        |
//! | per sibling:      |       | dots strictly ascending, each contained in the context    |
//! | - actor           | u32   |                                                           |
//! | - counter         | u64   |                                                           |
//! | - kind            | u8    | 0 = tombstone, 1 = value                                  |
//! | - value length    | u64   | 0 for a tombstone                                         |
//! | - value           | len   |                                                           |
//! | crc32c            | u32   | over all preceding bytes                                  |
//!
//! The encoding is canonical: equal states encode to equal bytes.

use std::collections::BTreeMap;

use crate::NodeId;
use crate::codec;
use crate::error::Result;
pub use crate::vv::ACTORS_MAX;
use crate::vv::{Dot, VersionVector};

/// Sibling count at which the node should warn: something writes without contexts.
pub const SIBLINGS_WARN: usize = 25;
/// Hard cap on siblings (Riak's `max_siblings`): bounds value size and read cost.
pub const SIBLINGS_MAX: usize = 100;

const MAGIC: [u8; 2] = *b"DV";
const VERSION: u8 = 1;
const KIND_TOMBSTONE: u8 = 0;
const KIND_VALUE: u8 = 1;
/// Fixed part of an encoded sibling: actor, counter, kind, length.
const SIBLING_HEADER_LEN: usize = 4 + 8 + 1 + 8;

const _: () = assert!(SIBLINGS_WARN < SIBLINGS_MAX);
const _: () = assert!(
    SIBLINGS_MAX <= u16::MAX as usize,
    "sibling count is a u16 on disk"
);

/// One concurrent version: a value, or a tombstone (`None`) left by a delete.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sibling {
    pub dot: Dot,
    pub value: Option<Vec<u8>>,
}

/// A key's versions: causal context plus concurrent siblings. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DvvSet {
    context: VersionVector,
    /// Sorted by dot, dots unique, every dot contained in `context`.
    siblings: Vec<Sibling>,
}

impl DvvSet {
    pub fn new() -> DvvSet {
        DvvSet::default()
    }

    /// Everything this state has seen: the context a client passes back to supersede it.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The sibling values (`None` for tombstones), in dot order.
    pub fn values(&self) -> impl Iterator<Item = Option<&[u8]>> + '_ {
        self.siblings.iter().map(|s| s.value.as_deref())
    }

    /// No siblings: nothing was ever written (a delete leaves a tombstone sibling).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// The one sibling a Redis-style GET returns: the highest `(counter, actor)`. Every
    /// replica and coordinator picks the same one from the same state.
    pub fn chosen(&self) -> Option<&Sibling> {
        self.siblings
            .iter()
            .max_by_key(|s| (s.dot.counter, s.dot.actor))
    }

    /// A write coordinated by replica `actor` that saw `context`: supersedes exactly the
    /// siblings `context` contains and adds `value` (or a tombstone) under a fresh dot.
    pub fn update(
        &mut self,
        context: &VersionVector,
        actor: NodeId,
        value: Option<Vec<u8>>,
    ) -> Dot {
        let counter = self.context.get(actor).max(context.get(actor)) + 1;
        let dot = Dot { actor, counter };
        self.siblings.retain(|s| !context.contains(s.dot));
        self.context.merge(context);
        self.context.add(dot);
        // The new dot is above every counter `actor` has, so it sorts last among its actor's
        // dots but not necessarily last overall: keep the order by inserting in place.
        let at = self.siblings.partition_point(|s| s.dot < dot);
        self.siblings.insert(at, Sibling { dot, value });
        self.cap();
        self.check();
        dot
    }

    /// Merges what another replica holds: afterwards `self` has seen everything either had.
    pub fn sync(&mut self, other: &DvvSet) {
        let mut merged: BTreeMap<Dot, Option<Vec<u8>>> = BTreeMap::new();
        for s in &self.siblings {
            if !other.context.contains(s.dot) || other.has(s.dot) {
                merged.insert(s.dot, s.value.clone());
            }
        }
        for s in &other.siblings {
            if !self.context.contains(s.dot) || self.has(s.dot) {
                merged
                    .entry(s.dot)
                    // A dot names one write, so both sides hold the same value; should a
                    // reused dot ever disagree, both sides still pick the same one.
                    .and_modify(|v| {
                        if s.value > *v {
                            v.clone_from(&s.value);
                        }
                    })
                    .or_insert_with(|| s.value.clone());
            }
        }
        self.context.merge(&other.context);
        self.siblings = merged
            .into_iter()
            .map(|(dot, value)| Sibling { dot, value })
            .collect();
        self.cap();
        self.check();
    }

    /// Forgets `actor`'s context entry if none of its writes is a live sibling; returns
    /// whether it did. Only safe once `actor` has left the ring and every replica of this key
    /// has synced since (see the module docs); otherwise an old copy could resurrect one of
    /// its superseded writes as a false sibling.
    pub fn retire_actor(&mut self, actor: NodeId) -> bool {
        if self.siblings.iter().any(|s| s.dot.actor == actor) || self.context.get(actor) == 0 {
            return false;
        }
        self.context.remove(actor);
        true
    }

    fn has(&self, dot: Dot) -> bool {
        self.siblings.binary_search_by(|s| s.dot.cmp(&dot)).is_ok()
    }

    /// Drops the oldest siblings beyond [`SIBLINGS_MAX`]; their dots stay in the context.
    fn cap(&mut self) {
        if self.siblings.len() <= SIBLINGS_MAX {
            return;
        }
        let mut by_age: Vec<Dot> = self.siblings.iter().map(|s| s.dot).collect();
        by_age.sort_by_key(|d| (d.counter, d.actor));
        let drop: Vec<Dot> = by_age[..self.siblings.len() - SIBLINGS_MAX].to_vec();
        self.siblings.retain(|s| !drop.contains(&s.dot));
    }

    fn check(&self) {
        debug_assert!(self.siblings.len() <= SIBLINGS_MAX);
        debug_assert!(self.siblings.windows(2).all(|w| w[0].dot < w[1].dot));
        debug_assert!(self.siblings.iter().all(|s| self.context.contains(s.dot)));
    }

    /// The stored and wire form (layout at the top of this module).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = codec::begin(MAGIC, VERSION);
        self.context.encode_body(&mut buf);
        buf.extend_from_slice(&(self.siblings.len() as u16).to_le_bytes());
        for s in &self.siblings {
            buf.extend_from_slice(&s.dot.actor.to_le_bytes());
            buf.extend_from_slice(&s.dot.counter.to_le_bytes());
            match &s.value {
                None => {
                    buf.push(KIND_TOMBSTONE);
                    buf.extend_from_slice(&0u64.to_le_bytes());
                }
                Some(value) => {
                    buf.push(KIND_VALUE);
                    buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
                    buf.extend_from_slice(value);
                }
            }
        }
        codec::seal(buf)
    }

    /// Checks the envelope (length, checksum, magic, format version) without decoding the
    /// body: what a replica serving a read needs to know before it ships stored bytes, at
    /// the cost of one crc32c instead of an allocation per sibling.
    pub fn verify(bytes: &[u8]) -> Result<()> {
        codec::open(bytes, "versions", MAGIC, VERSION).map(|_| ())
    }

    /// Decodes and validates every invariant; damaged bytes give `Error::Corruption`.
    pub fn decode(bytes: &[u8]) -> Result<DvvSet> {
        let mut reader = codec::open(bytes, "versions", MAGIC, VERSION)?;
        let context = VersionVector::decode_body(&mut reader)?;
        let count = usize::from(reader.u16()?);
        if count > SIBLINGS_MAX {
            return Err(reader.error("more siblings than SIBLINGS_MAX"));
        }
        if count * SIBLING_HEADER_LEN > reader.remaining() {
            return Err(reader.error("sibling count exceeds the bytes present"));
        }
        let mut siblings: Vec<Sibling> = Vec::with_capacity(count);
        for _ in 0..count {
            let dot = Dot {
                actor: reader.u32()?,
                counter: reader.u64()?,
            };
            if siblings.last().is_some_and(|last| last.dot >= dot) {
                return Err(reader.error("sibling dots not strictly ascending"));
            }
            if !context.contains(dot) {
                return Err(reader.error("sibling dot outside the context"));
            }
            let kind = reader.u8()?;
            let len = usize::try_from(reader.u64()?).map_err(|_| reader.error("value too long"))?;
            let value = match kind {
                KIND_TOMBSTONE if len == 0 => None,
                KIND_TOMBSTONE => return Err(reader.error("tombstone with a value")),
                KIND_VALUE => Some(reader.bytes(len)?.to_vec()),
                _ => return Err(reader.error("unknown sibling kind")),
            };
            siblings.push(Sibling { dot, value });
        }
        reader.finish()?;
        Ok(DvvSet { context, siblings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vv::Causality;
    use proptest::prelude::*;

    /// One step of a random history over a few replicas of one key.
    #[derive(Debug, Clone)]
    enum Step {
        /// Replica `at` coordinates a write whose client read replica `seen` (or nothing).
        Write { at: usize, seen: Option<usize> },
        /// Replica `at` coordinates a SET: supersedes what `at` holds.
        Set { at: usize },
        /// Replica `to` merges what replica `from` holds.
        Sync { to: usize, from: usize },
    }

    const REPLICAS: usize = 3;

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..REPLICAS, proptest::option::of(0..REPLICAS))
                .prop_map(|(at, seen)| Step::Write { at, seen }),
            (0..REPLICAS).prop_map(|at| Step::Set { at }),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(to, from)| Step::Sync { to, from }),
        ]
    }

    /// Plays a history; returns the replicas' states, every dot written, and the union of
    /// the contexts writes superseded (the only legitimate way for a write to disappear).
    fn play(steps: &[Step]) -> (Vec<DvvSet>, Vec<Dot>, VersionVector) {
        let mut states = vec![DvvSet::new(); REPLICAS];
        let mut written = Vec::new();
        let mut superseded = VersionVector::new();
        for (i, step) in steps.iter().enumerate() {
            let value = Some(i.to_le_bytes().to_vec());
            match *step {
                Step::Write { at, seen } => {
                    let ctx = seen
                        .map(|s| states[s].context().clone())
                        .unwrap_or_default();
                    superseded.merge(&ctx);
                    written.push(states[at].update(&ctx, at as NodeId, value));
                }
                Step::Set { at } => {
                    let ctx = states[at].context().clone();
                    superseded.merge(&ctx);
                    written.push(states[at].update(&ctx, at as NodeId, value));
                }
                Step::Sync { to, from } => {
                    let other = states[from].clone();
                    states[to].sync(&other);
                }
            }
        }
        (states, written, superseded)
    }

    fn join_all(states: &[DvvSet]) -> DvvSet {
        let mut all = DvvSet::new();
        for s in states {
            all.sync(s);
        }
        all
    }

    #[test]
    fn blind_writes_are_siblings_and_a_context_write_replaces_them() {
        let mut s = DvvSet::new();
        s.update(&VersionVector::new(), 1, Some(b"a".to_vec()));
        s.update(&VersionVector::new(), 1, Some(b"b".to_vec()));
        assert_eq!(s.siblings().len(), 2);
        let ctx = s.context().clone();
        let dot = s.update(&ctx, 2, None);
        assert_eq!(s.values().collect::<Vec<_>>(), vec![None]);
        assert_eq!(s.chosen().map(|c| c.dot), Some(dot));
    }

    #[test]
    fn a_stale_copy_does_not_resurrect_a_superseded_write() {
        let mut a = DvvSet::new();
        a.update(&VersionVector::new(), 1, Some(b"old".to_vec()));
        let stale = a.clone();
        let ctx = a.context().clone();
        a.update(&ctx, 1, Some(b"new".to_vec()));
        a.sync(&stale);
        assert_eq!(a.values().collect::<Vec<_>>(), vec![Some(&b"new"[..])]);
        let mut b = stale;
        b.sync(&a);
        assert_eq!(a, b);
    }

    #[test]
    fn siblings_are_capped_oldest_first_and_stay_dropped() {
        let mut s = DvvSet::new();
        let mut first = None;
        for i in 0..(SIBLINGS_MAX as u32 + 20) {
            let dot = s.update(&VersionVector::new(), i % 3, Some(i.to_le_bytes().to_vec()));
            first.get_or_insert((dot, s.clone()));
        }
        assert_eq!(s.siblings().len(), SIBLINGS_MAX);
        let (first_dot, early) = first.unwrap();
        assert!(s.siblings().iter().all(|x| x.dot != first_dot));
        assert!(s.context().contains(first_dot));
        s.sync(&early);
        assert_eq!(s.siblings().len(), SIBLINGS_MAX);
        assert!(s.siblings().iter().all(|x| x.dot != first_dot));
        assert_eq!(DvvSet::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn retire_only_actors_without_siblings() {
        let mut s = DvvSet::new();
        s.update(&VersionVector::new(), 7, Some(b"x".to_vec()));
        assert!(!s.retire_actor(7));
        let ctx = s.context().clone();
        s.update(&ctx, 8, Some(b"y".to_vec()));
        assert!(s.retire_actor(7));
        assert_eq!(s.context().get(7), 0);
        assert_eq!(s.context().len(), 1);
        assert!(!s.retire_actor(7));
    }

    #[test]
    fn decode_rejects_a_dot_outside_the_context() {
        let mut buf = codec::begin(MAGIC, VERSION);
        VersionVector::new().encode_body(&mut buf);
        buf.extend_from_slice(&1u16.to_le_bytes());
        buf.extend_from_slice(&1u32.to_le_bytes());
        buf.extend_from_slice(&1u64.to_le_bytes());
        buf.push(KIND_TOMBSTONE);
        buf.extend_from_slice(&0u64.to_le_bytes());
        assert!(DvvSet::decode(&codec::seal(buf)).is_err());
    }

    proptest! {
        #[test]
        fn roundtrip_and_damage(steps in proptest::collection::vec(arb_step(), 0..20),
                                at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (states, _, _) = play(&steps);
            let s = join_all(&states);
            let mut bytes = s.encode();
            prop_assert_eq!(DvvSet::decode(&bytes).unwrap(), s);
            let i = at.index(bytes.len());
            prop_assert!(DvvSet::decode(&bytes[..i]).is_err());
            bytes[i] ^= 1 << bit;
            prop_assert!(DvvSet::decode(&bytes).is_err());
        }

        #[test]
        fn sync_is_a_join(steps in proptest::collection::vec(arb_step(), 0..30)) {
            let (states, _, _) = play(&steps);
            let (a, b, c) = (&states[0], &states[1], &states[2]);
            let mut ab = a.clone();
            ab.sync(b);
            let mut ba = b.clone();
            ba.sync(a);
            prop_assert_eq!(&ab, &ba);
            let mut aa = a.clone();
            aa.sync(a);
            prop_assert_eq!(&aa, a);
            let mut ab_c = ab.clone();
            ab_c.sync(c);
            let mut bc = b.clone();
            bc.sync(c);
            let mut a_bc = a.clone();
            a_bc.sync(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            prop_assert!(ab.context().descends(a.context()) && ab.context().descends(b.context()));
        }

        #[test]
        fn no_write_is_lost_unless_superseded(steps in proptest::collection::vec(arb_step(), 0..40)) {
            let (states, written, superseded) = play(&steps);
            let all = join_all(&states);
            for dot in written {
                prop_assert!(all.context().contains(dot));
                let live = all.siblings().iter().any(|s| s.dot == dot);
                prop_assert!(live || superseded.contains(dot), "{:?} vanished", dot);
            }
        }

        #[test]
        fn a_context_chain_never_makes_siblings(
            steps in proptest::collection::vec((0..REPLICAS, 0..REPLICAS, 0..REPLICAS), 1..30)
        ) {
            // One client: each write carries the context its previous write returned, at any
            // replica, while replicas sync in arbitrary directions.
            let mut states = vec![DvvSet::new(); REPLICAS];
            let mut ctx = VersionVector::new();
            for (i, &(at, to, from)) in steps.iter().enumerate() {
                states[at].update(&ctx, at as NodeId, Some(vec![i as u8]));
                ctx = states[at].context().clone();
                let other = states[from].clone();
                states[to].sync(&other);
            }
            prop_assert_eq!(join_all(&states).siblings().len(), 1);
        }

        #[test]
        fn update_descends_its_context(steps in proptest::collection::vec(arb_step(), 0..20), seen in 0..REPLICAS) {
            let (mut states, _, _) = play(&steps);
            let ctx = states[seen].context().clone();
            let before = states[0].context().clone();
            let dot = states[0].update(&ctx, 0, None);
            prop_assert!(!before.contains(dot) && !ctx.contains(dot));
            prop_assert_eq!(states[0].context().compare(&ctx), Causality::After);
            prop_assert!(states[0].siblings().iter().all(|s| s.dot == dot || !ctx.contains(s.dot)));
        }
    }
}
