//! The memtable: recent writes, ordered, in memory. An arena skiplist (`memtable/skiplist.rs`) with one
//! writer at a time and lock-free readers, so readers on other threads (blocking API) never
//! wait for writers; on a glommio shard it is simply fast.
//!
//! Keys are ordered by user key ascending, then sequence number descending, so the first
//! entry at or after `(key, snapshot)` is the newest version a reader at `snapshot` may see.

mod skiplist;

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use skiplist::SkipList;

use crate::types::{Entry, SeqNo};

/// Memtable bytes per point-lookup index slot. Keys take slots, later versions of a key do
/// not: a slot per 96 bytes keeps the index at most two-thirds full for keys whose first entry
/// holds 96 bytes of key and value or more (144 with the node's overhead), and costs 8 bytes
/// per 96 (8%). Smaller entries fill it sooner; past its probe limit it stops answering
/// misses, and lookups and overwrites fall back to the list.
const INDEX_BYTES_PER_SLOT: usize = 96;

/// How many entries an iterator copies out per step: amortises the skiplist seek.
const ITER_CHUNK: usize = 64;

/// The in-memory table of recent writes, from one commit-log record on.
pub struct Memtable {
    list: SkipList,
    /// The first commit-log record whose writes may be here: once this memtable is flushed,
    /// the log before the next memtable's `first_record` is no longer needed.
    first_record: u64,
    max_seq: AtomicU64,
}

impl Memtable {
    /// A memtable for about `capacity_bytes` of writes (sizes its point-lookup index).
    pub fn new(first_record: u64, capacity_bytes: usize) -> Memtable {
        Memtable {
            list: SkipList::new(capacity_bytes / INDEX_BYTES_PER_SLOT),
            first_record,
            max_seq: AtomicU64::new(0),
        }
    }

    /// Adds one version; `seq` must be above every seq of `key` already here (the DB inserts
    /// in sequence order).
    pub fn insert(&self, key: &[u8], seq: SeqNo, entry: &Entry) {
        self.max_seq.fetch_max(seq, AtomicOrdering::Relaxed);
        self.list.insert(key, seq, entry);
    }

    /// The newest version of `key` with seq <= `snapshot`, tombstones included.
    pub fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<(SeqNo, Entry)> {
        let found = self.list.get(key, snapshot)?;
        Some((found.seq(), found.entry()))
    }

    /// Hints that `keys` are about to be looked up (see `SkipList::prefetch`).
    pub fn prefetch(&self, keys: &[&[u8]]) {
        self.list.prefetch(keys);
    }

    /// Arena bytes used by the entries: what the memtable's capacity is measured in.
    pub fn approximate_bytes(&self) -> usize {
        self.list.used_bytes()
    }

    /// Memory this memtable holds: its arena chunks plus its whole point-lookup index
    /// (counted in full, though pages of it never written are not resident).
    pub fn memory_bytes(&self) -> usize {
        self.list.arena_bytes() + self.list.index_bytes()
    }

    /// The most memory a memtable created for `capacity_bytes` holds when it is frozen at
    /// that size: the entries, one partly used arena chunk (the last entry may cross the
    /// capacity by less than a chunk) and the index.
    pub fn memory_for(capacity_bytes: usize) -> usize {
        capacity_bytes
            + SkipList::CHUNK_BYTES
            + SkipList::index_bytes_for(capacity_bytes / INDEX_BYTES_PER_SLOT)
    }

    /// The largest capacity whose [`Memtable::memory_for`] fits in `memory_bytes` (0 when not
    /// even an empty memtable fits).
    pub fn capacity_within(memory_bytes: usize) -> usize {
        // `memory_for` grows with the capacity and is at least the capacity: binary search
        // between 0 and `memory_bytes` for the largest capacity that fits.
        if Memtable::memory_for(0) > memory_bytes {
            return 0;
        }
        let (mut fits, mut too_big) = (0, memory_bytes.saturating_add(1));
        while too_big - fits > 1 {
            let mid = fits + (too_big - fits) / 2;
            if Memtable::memory_for(mid) <= memory_bytes {
                fits = mid;
            } else {
                too_big = mid;
            }
        }
        fits
    }

    /// True when it holds no write.
    pub fn is_empty(&self) -> bool {
        self.list.len() == 0
    }

    /// Versions it holds.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The first commit-log record whose writes it holds.
    pub fn first_record(&self) -> u64 {
        self.first_record
    }

    /// Highest sequence number it holds (0 when empty).
    pub fn max_seq(&self) -> SeqNo {
        self.max_seq.load(AtomicOrdering::Relaxed)
    }

    /// Up to `ITER_CHUNK` versions from `from` on (all of them when `None`), skipping the
    /// version `from` itself unless `inclusive`, in table order.
    fn chunk(
        &self,
        from: Option<&(Vec<u8>, SeqNo)>,
        inclusive: bool,
        out: &mut Vec<(Vec<u8>, SeqNo, Entry)>,
    ) {
        let mut cursor = match from {
            None => self.list.first(),
            Some((key, seq)) => {
                let at = self.list.seek_ge(key, *seq);
                match at {
                    Some(c) if !inclusive && c.key() == key.as_slice() && c.seq() == *seq => {
                        c.next()
                    }
                    other => other,
                }
            }
        };
        while let Some(c) = cursor {
            if out.len() == ITER_CHUNK {
                break;
            }
            out.push((c.key().to_vec(), c.seq(), c.entry()));
            cursor = c.next();
        }
    }
}

/// Walks a memtable in table order without holding a borrow of it across awaits: it copies a
/// chunk of versions at a time and resumes after the last one it returned.
pub struct MemtableIter {
    table: std::sync::Arc<Memtable>,
    buffered: std::collections::VecDeque<(Vec<u8>, SeqNo, Entry)>,
    /// The version to resume at (after, once something was returned from it).
    resume: Option<(Vec<u8>, SeqNo)>,
    done: bool,
}

impl MemtableIter {
    /// Every version of `table`, in table order.
    pub fn new(table: std::sync::Arc<Memtable>) -> MemtableIter {
        MemtableIter {
            table,
            buffered: Default::default(),
            resume: None,
            done: false,
        }
    }

    /// Positions at the first version of the first user key >= `key`.
    pub fn seek(&mut self, key: &[u8]) {
        self.buffered.clear();
        self.done = false;
        // The newest possible version of `key` sorts first among its versions.
        self.resume = Some((key.to_vec(), SeqNo::MAX));
        self.fill(true);
    }

    fn fill(&mut self, inclusive: bool) {
        let mut out = Vec::with_capacity(ITER_CHUNK);
        self.table.chunk(self.resume.as_ref(), inclusive, &mut out);
        if out.len() < ITER_CHUNK {
            self.done = true;
        }
        if let Some((key, seq, _)) = out.last() {
            self.resume = Some((key.clone(), *seq));
        }
        self.buffered.extend(out);
    }
}

impl Iterator for MemtableIter {
    type Item = (Vec<u8>, SeqNo, Entry);

    fn next(&mut self) -> Option<(Vec<u8>, SeqNo, Entry)> {
        if self.buffered.is_empty() && !self.done {
            let first = self.resume.is_none();
            self.fill(first);
        }
        self.buffered.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn newest_visible_version() {
        let m = Memtable::new(0, 1 << 20);
        m.insert(b"a", 1, &Entry::put(b"a1".to_vec()));
        m.insert(b"a", 5, &Entry::put(b"a5".to_vec()));
        m.insert(b"a", 9, &Entry::tombstone());
        m.insert(b"b", 3, &Entry::put(b"b3".to_vec()));
        assert_eq!(m.get(b"a", 0), None);
        assert_eq!(m.get(b"a", 1).unwrap().1.value, b"a1");
        assert_eq!(m.get(b"a", 8).unwrap(), (5, Entry::put(b"a5".to_vec())));
        assert_eq!(m.get(b"a", 100).unwrap(), (9, Entry::tombstone()));
        assert_eq!(m.get(b"", 100), None);
        assert_eq!(m.get(b"ab", 100), None);
        assert_eq!(m.get(b"b", 100).unwrap().0, 3);
        assert_eq!(m.max_seq(), 9);
    }

    #[test]
    fn memory_stays_within_what_the_capacity_promises() {
        let capacity = Memtable::capacity_within(8 << 20);
        assert!(capacity > 4 << 20, "{capacity}");
        assert!(Memtable::memory_for(capacity) <= 8 << 20);
        assert!(
            Memtable::memory_for(capacity + 1) > 8 << 20,
            "the largest that fits"
        );
        assert_eq!(Memtable::capacity_within(1000), 0);
        let m = Memtable::new(0, capacity);
        let mut seq = 0u64;
        while m.approximate_bytes() < capacity {
            seq += 1;
            let key = seq.to_be_bytes();
            m.insert(&key, seq, &Entry::put(vec![7u8; (seq % 200) as usize]));
        }
        assert!(m.memory_bytes() <= Memtable::memory_for(capacity));
        assert!(m.memory_bytes() > capacity, "arena and index are counted");
    }

    #[test]
    fn iteration_in_table_order_across_chunks() {
        let m = Arc::new(Memtable::new(0, 1 << 20));
        let mut seq = 0;
        for k in 0..500u32 {
            for _ in 0..(k % 3 + 1) {
                seq += 1;
                m.insert(
                    &k.to_be_bytes(),
                    seq,
                    &Entry::put(seq.to_le_bytes().to_vec()),
                );
            }
        }
        let it = MemtableIter::new(m.clone());
        let mut all = Vec::new();
        for v in it {
            all.push(v);
        }
        assert_eq!(all.len(), m.len());
        for w in all.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert!(a.0 < b.0 || (a.0 == b.0 && a.1 > b.1), "out of order");
        }
        let mut it = MemtableIter::new(m.clone());
        it.seek(&250u32.to_be_bytes());
        let mut rest = Vec::new();
        for v in it {
            rest.push(v);
        }
        let expected = all
            .iter()
            .filter(|v| v.0 >= 250u32.to_be_bytes().to_vec())
            .count();
        assert_eq!(rest.len(), expected);
        assert_eq!(rest[0].0, 250u32.to_be_bytes());
    }
}
