//! Which versions a compaction keeps: the merge rules for shadowed versions, tombstones and
//! expired entries, as a small state machine fed the merged input in table order (user key
//! ascending, newest version first).
//!
//! Readers read at a sequence number: a live snapshot's, or the visible sequence number at
//! the moment they start. So the sequence numbers some reader may still read at are the live
//! snapshots plus the *horizon* (the visible sequence number when the compaction started;
//! every later reader reads at or above it). They cut each key's versions into stripes: a
//! reader at `s` sees the newest version at or below `s`, so within a stripe only the newest
//! version can ever be read and the older ones are dropped ("shadowed"). Versions above the
//! horizon are all kept: no reader sees them yet, and the visible sequence number may later
//! stop between any two of them (a write becomes visible when its own record is durable).
//!
//! A tombstone is dropped — with every older version of its key — only when
//! - it lies in the oldest stripe (every reader sees it or something newer),
//! - the compaction is bottommost (no deeper level holds an older version it shadows), and
//! - the embedder's [`TombstonePolicy`] agrees (a replicated store keeps a delete until every
//!   replica has it).
//!
//! An expired value reads as absent to every reader, snapshots included (expiry is judged at
//! read time), so it behaves like a tombstone. Where a tombstone could be dropped it is
//! dropped without asking the policy — expiry is deterministic, every replica expires it
//! alike. Elsewhere it is rewritten as a tombstone that keeps the expiry time and loses the
//! value bytes: it still shadows older versions below. A tombstone with an expiry time is
//! therefore an expired value's marker (the write API refuses expiring tombstones) and is
//! dropped like an expired value.

use std::sync::Arc;

use crate::options::TombstonePolicy;
use crate::types::{Entry, NO_EXPIRY, SeqNo, ValueKind};

/// What the rules did, for statistics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStats {
    /// Versions written out.
    pub kept: u64,
    /// Versions dropped because a newer one hides them from every reader.
    pub shadowed: u64,
    /// Tombstones dropped at the bottom.
    pub tombstones_dropped: u64,
    /// Tombstones the rules would drop but the policy refused.
    pub tombstones_refused: u64,
    /// Expired values dropped at the bottom.
    pub expired_dropped: u64,
    /// Expired values written as tombstones above the bottom.
    pub expired_to_tombstones: u64,
}

/// Decides, version by version in table order, what a flush or compaction writes.
pub struct Retention {
    /// Sequence numbers readers may read at, ascending, deduplicated; the last is the horizon.
    boundaries: Vec<SeqNo>,
    bottommost: bool,
    now_ms: u64,
    policy: Arc<dyn TombstonePolicy>,
    key: Vec<u8>,
    /// Stripe of the last version kept or dropped for `key`.
    stripe: Option<usize>,
    started: bool,
    /// What it decided so far.
    pub stats: RetentionStats,
}

impl Retention {
    /// Retention for readers at `snapshots` and the `horizon` (the visible sequence number when the job started), at the bottom level or not, at time `now_ms`.
    pub fn new(
        mut snapshots: Vec<SeqNo>,
        horizon: SeqNo,
        bottommost: bool,
        now_ms: u64,
        policy: Arc<dyn TombstonePolicy>,
    ) -> Retention {
        snapshots.push(horizon);
        snapshots.sort_unstable();
        snapshots.dedup();
        debug_assert!(
            snapshots.last() == Some(&horizon),
            "a snapshot above the horizon"
        );
        Retention {
            boundaries: snapshots,
            bottommost,
            now_ms,
            policy,
            key: Vec::new(),
            stripe: None,
            started: false,
            stats: RetentionStats::default(),
        }
    }

    /// Stripe of `seq`: 0 is at or below the oldest boundary; boundaries.len() is above the
    /// horizon.
    fn stripe_of(&self, seq: SeqNo) -> usize {
        self.boundaries.partition_point(|&b| b < seq)
    }

    /// The version to write for `(key, seq, entry)`, or None to drop it. Versions must arrive
    /// in table order.
    pub fn decide(&mut self, key: &[u8], seq: SeqNo, entry: Entry) -> Option<Entry> {
        if !self.started || self.key != key {
            if self.started {
                debug_assert!(self.key.as_slice() < key, "keys out of order");
            }
            self.key.clear();
            self.key.extend_from_slice(key);
            self.stripe = None;
            self.started = true;
        }
        let stripe = self.stripe_of(seq);
        debug_assert!(
            self.stripe.is_none_or(|s| s >= stripe),
            "versions out of order"
        );
        let above_horizon = stripe == self.boundaries.len();
        if self.stripe == Some(stripe) && !above_horizon {
            self.stats.shadowed += 1;
            return None;
        }
        self.stripe = Some(stripe);

        let expired_value = entry.kind == ValueKind::Put && entry.is_expired(self.now_ms);
        let expired_marker = entry.kind == ValueKind::Delete && entry.expires_at_ms != NO_EXPIRY;
        if entry.kind == ValueKind::Delete || expired_value {
            let droppable = self.bottommost && stripe == 0;
            if droppable && (expired_value || expired_marker) {
                self.stats.expired_dropped += 1;
                return None;
            }
            if droppable {
                if self.policy.may_purge(key, seq) {
                    self.stats.tombstones_dropped += 1;
                    return None;
                }
                self.stats.tombstones_refused += 1;
            }
            if expired_value {
                self.stats.expired_to_tombstones += 1;
                self.stats.kept += 1;
                return Some(Entry {
                    kind: ValueKind::Delete,
                    expires_at_ms: entry.expires_at_ms,
                    value: Vec::new(),
                });
            }
        }
        self.stats.kept += 1;
        Some(entry)
    }

    /// The sequence number to store for a version [`Retention::decide`] kept: 0 for a value
    /// in the oldest stripe of a bottommost compaction, as RocksDB does (eight zero bytes,
    /// which compress to almost nothing, where a random seq's low bytes do not). Such a
    /// version is the only one of its key at or below every reader's sequence number, and no
    /// deeper level holds an older one, so every reader, now or later, sees it exactly as
    /// before and every newer version still sorts above it. Tombstones and expired-value
    /// markers keep theirs: the [`TombstonePolicy`] is asked about them by sequence number.
    pub fn output_seq(&self, seq: SeqNo, kept: &Entry) -> SeqNo {
        if self.bottommost && kept.kind == ValueKind::Put && self.stripe_of(seq) == 0 {
            0
        } else {
            seq
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{KeepTombstones, PurgeUnneeded};

    type Version = (&'static str, SeqNo, Entry);

    fn expiring(value: &str, at: u64) -> Entry {
        Entry {
            kind: ValueKind::Put,
            expires_at_ms: at,
            value: value.as_bytes().to_vec(),
        }
    }

    /// Runs `input` (table order) through the rules; returns what is kept as (key, seq, entry)
    /// with the sequence numbers as input.
    fn run(r: Retention, input: Vec<Version>) -> (Vec<(String, SeqNo, Entry)>, RetentionStats) {
        let (kept, stats) = run_stored(r, input);
        (
            kept.into_iter().map(|(k, seq, _, e)| (k, seq, e)).collect(),
            stats,
        )
    }

    /// Like `run`, also returning the sequence number stored for each kept version.
    fn run_stored(
        mut r: Retention,
        input: Vec<Version>,
    ) -> (Vec<(String, SeqNo, SeqNo, Entry)>, RetentionStats) {
        let mut out = Vec::new();
        for (k, seq, e) in input {
            if let Some(e) = r.decide(k.as_bytes(), seq, e) {
                out.push((k.to_owned(), seq, r.output_seq(seq, &e), e));
            }
        }
        (out, r.stats)
    }

    #[test]
    fn bottommost_values_no_reader_tells_apart_are_stored_with_seq_zero() {
        // Readers at 4 and 7 (snapshots) and at 20 (the horizon).
        let input = || {
            vec![
                ("a", 25, Entry::put("above the horizon")),
                ("a", 15, Entry::put("read at 20")),
                ("a", 7, Entry::put("read at 7")),
                ("a", 3, Entry::put("read at 4: the oldest stripe")),
                ("b", 4, Entry::tombstone()),
                ("c", 2, expiring("live", 2000)),
                ("d", 30, Entry::put("only above the horizon")),
            ]
        };
        let stored = |r| {
            let (kept, _) = run_stored(r, input());
            kept.into_iter()
                .map(|(k, seq, stored, _)| (k, seq, stored))
                .collect::<Vec<_>>()
        };
        let r = Retention::new(vec![7, 4], 20, true, 1000, Arc::new(KeepTombstones));
        let expect = [
            ("a", 25, 25),
            ("a", 15, 15),
            ("a", 7, 7),
            ("a", 3, 0),
            ("b", 4, 4),
            ("c", 2, 0),
            ("d", 30, 30),
        ];
        let expect: Vec<_> = expect
            .iter()
            .map(|&(k, s, o)| (k.to_owned(), s, o))
            .collect();
        assert_eq!(stored(r), expect);
        // Not bottommost: a deeper level may hold older versions, every seq is kept.
        let r = Retention::new(vec![7, 4], 20, false, 1000, Arc::new(KeepTombstones));
        assert!(stored(r).iter().all(|(_, seq, stored)| seq == stored));
    }

    fn seqs(kept: &[(String, SeqNo, Entry)]) -> Vec<(&str, SeqNo)> {
        kept.iter().map(|(k, s, _)| (k.as_str(), *s)).collect()
    }

    fn purge() -> Arc<dyn TombstonePolicy> {
        Arc::new(PurgeUnneeded)
    }

    #[test]
    fn without_snapshots_only_the_newest_version_survives() {
        let r = Retention::new(vec![], 100, false, 0, purge());
        let (kept, stats) = run(
            r,
            vec![
                ("a", 9, Entry::put("a9")),
                ("a", 5, Entry::put("a5")),
                ("a", 1, Entry::put("a1")),
                ("b", 3, Entry::put("b3")),
            ],
        );
        assert_eq!(seqs(&kept), [("a", 9), ("b", 3)]);
        assert_eq!(stats.shadowed, 2);
    }

    #[test]
    fn snapshots_keep_the_version_each_one_reads() {
        // Readers at 4 and 7 (snapshots) and at 20 (the horizon).
        let r = Retention::new(vec![7, 4], 20, true, 0, purge());
        let (kept, _) = run(
            r,
            vec![
                ("a", 25, Entry::put("above the horizon")),
                (
                    "a",
                    22,
                    Entry::put("above the horizon too: visible may stop at 22"),
                ),
                ("a", 15, Entry::put("read at 20")),
                ("a", 10, Entry::put("shadowed")),
                ("a", 7, Entry::put("read at 7")),
                ("a", 5, Entry::put("shadowed")),
                ("a", 3, Entry::put("read at 4")),
                ("a", 1, Entry::put("shadowed")),
            ],
        );
        assert_eq!(
            seqs(&kept),
            [("a", 25), ("a", 22), ("a", 15), ("a", 7), ("a", 3)]
        );
    }

    #[test]
    fn a_bottommost_tombstone_no_snapshot_needs_goes_with_everything_older() {
        let r = Retention::new(vec![], 20, true, 0, purge());
        let (kept, stats) = run(
            r,
            vec![
                ("a", 10, Entry::tombstone()),
                ("a", 5, Entry::put("a5")),
                ("b", 4, Entry::put("b4")),
            ],
        );
        assert_eq!(seqs(&kept), [("b", 4)]);
        assert_eq!(stats.tombstones_dropped, 1);
        assert_eq!(stats.shadowed, 1);
    }

    #[test]
    fn a_tombstone_stays_when_not_bottommost() {
        let r = Retention::new(vec![], 20, false, 0, purge());
        let (kept, _) = run(
            r,
            vec![("a", 10, Entry::tombstone()), ("a", 5, Entry::put("a5"))],
        );
        assert_eq!(seqs(&kept), [("a", 10)], "it shadows older versions below");
    }

    #[test]
    fn a_tombstone_a_snapshot_reads_past_stays() {
        // The snapshot at 6 reads a5; the tombstone at 10 hides it from later readers.
        let r = Retention::new(vec![6], 20, true, 0, purge());
        let (kept, _) = run(
            r,
            vec![("a", 10, Entry::tombstone()), ("a", 5, Entry::put("a5"))],
        );
        assert_eq!(seqs(&kept), [("a", 10), ("a", 5)]);
        // Above the horizon, no reader sees it yet.
        let r = Retention::new(vec![], 8, true, 0, purge());
        let (kept, _) = run(
            r,
            vec![("a", 10, Entry::tombstone()), ("a", 5, Entry::put("a5"))],
        );
        assert_eq!(seqs(&kept), [("a", 10), ("a", 5)]);
    }

    #[test]
    fn a_policy_that_refuses_keeps_the_tombstone_but_drops_what_it_shadows() {
        let r = Retention::new(vec![], 20, true, 0, Arc::new(KeepTombstones));
        let (kept, stats) = run(
            r,
            vec![("a", 10, Entry::tombstone()), ("a", 5, Entry::put("a5"))],
        );
        assert_eq!(seqs(&kept), [("a", 10)]);
        assert_eq!(stats.tombstones_refused, 1);
        assert_eq!(stats.tombstones_dropped, 0);
    }

    #[test]
    fn the_policy_sees_the_key_and_sequence_number() {
        struct OnlyB;
        impl TombstonePolicy for OnlyB {
            fn may_purge(&self, key: &[u8], seq: SeqNo) -> bool {
                key == b"b" && seq == 7
            }
        }
        let r = Retention::new(vec![], 20, true, 0, Arc::new(OnlyB));
        let (kept, _) = run(
            r,
            vec![("a", 8, Entry::tombstone()), ("b", 7, Entry::tombstone())],
        );
        assert_eq!(seqs(&kept), [("a", 8)]);
    }

    #[test]
    fn expired_values_drop_at_the_bottom_and_become_tombstones_above_it() {
        let now = 1000;
        let input = || {
            vec![
                ("a", 10, expiring("gone", 500)),
                ("a", 5, Entry::put("a5")),
                ("b", 4, expiring("live", 2000)),
            ]
        };
        // Bottommost: dropped without asking the policy.
        let r = Retention::new(vec![], 20, true, now, Arc::new(KeepTombstones));
        let (kept, stats) = run(r, input());
        assert_eq!(seqs(&kept), [("b", 4)]);
        assert_eq!(stats.expired_dropped, 1);
        // Not bottommost: a tombstone keeps shadowing what lies below.
        let r = Retention::new(vec![], 20, false, now, purge());
        let (kept, stats) = run(r, input());
        assert_eq!(seqs(&kept), [("a", 10), ("b", 4)]);
        assert_eq!(kept[0].2.kind, ValueKind::Delete);
        assert!(kept[0].2.value.is_empty());
        assert_eq!(kept[0].2.expires_at_ms, 500);
        assert_eq!(stats.expired_to_tombstones, 1);
        // That marker later drops at the bottom, again without the policy.
        let r = Retention::new(vec![], 20, true, now, Arc::new(KeepTombstones));
        let (kept, stats) = run(r, vec![("a", 10, kept[0].2.clone())]);
        assert!(kept.is_empty());
        assert_eq!(stats.expired_dropped, 1);
    }

    #[test]
    fn an_expired_value_a_snapshot_reads_past_keeps_the_older_version() {
        // The snapshot at 6 reads a5 (live); the expired value must still hide it from later
        // readers, so it stays as a tombstone.
        let r = Retention::new(vec![6], 20, true, 1000, purge());
        let (kept, _) = run(
            r,
            vec![("a", 10, expiring("gone", 500)), ("a", 5, Entry::put("a5"))],
        );
        assert_eq!(seqs(&kept), [("a", 10), ("a", 5)]);
        assert_eq!(kept[0].2.kind, ValueKind::Delete);
    }
}
