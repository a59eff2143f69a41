//! A hash index over the skiplist's keys for point lookups and overwrites: a key's hash leads
//! to its node in one or two cache misses, where a skiplist search takes one miss per node
//! visited (about 25 for a few hundred thousand keys). RocksDB offers the same trade as its hash
//! memtables; here the index sits beside the ordered list instead of replacing it, so scans
//! and snapshot reads keep the list.
//!
//! Open addressing with linear probing over a fixed array of node pointers, sized when the memtable
//! is created. A key has one node for the list's lifetime (its versions chain to it), so a slot is
//! filled once and never changed, and a probe that meets an empty slot has seen every slot its key
//! could be in. The writer (under the list's mutex) stores a fully written node with Release;
//! readers load with Acquire. When a key finds no free slot within [`PROBE_MAX`] the index stops
//! being complete: from then on a miss proves nothing and readers fall back to the list, while hits
//! stay exact.

use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering as AtomicOrdering};

use super::Node;
use super::pages::Pages;

/// Slots a key may probe: at the load factors the sizing allows, almost every key is within
/// a few slots of its home; a longer run means the table is too full to be worth probing.
const PROBE_MAX: usize = 16;

pub(super) struct HashIndex {
    /// Null slots from zeroed pages: the OS maps a page only when a slot on it is first
    /// written, so a memtable that stays small never pays for its whole index. `None` when
    /// the index is disabled.
    pages: Option<Pages>,
    len: usize,
    complete: AtomicBool,
}

/// What the index knows about a key.
pub(super) enum Lookup<'a> {
    /// The key's node.
    Node(&'a Node),
    /// The key is not in the list.
    Absent,
    /// Ask the list.
    Unknown,
}

impl HashIndex {
    /// An index of at least `slots` slots: as many as fill its mapping, which is rounded to
    /// whole pages. A key's home slot is found by multiplication, not by masking a power of
    /// two, which would waste up to half the index. 0 disables it.
    pub(super) fn new(slots: usize) -> HashIndex {
        let len = Self::bytes_for(slots) / size_of::<AtomicPtr<Node>>();
        HashIndex {
            pages: (len > 0).then(|| Pages::zeroed(len * size_of::<AtomicPtr<Node>>())),
            len,
            complete: AtomicBool::new(len > 0),
        }
    }

    /// The slot a hash starts probing at: the high half of `hash × len`, uniform over
    /// `0..len` for a uniform hash (Lemire's fast range reduction).
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.len as u128) >> 64) as usize
    }

    fn after(&self, i: usize) -> usize {
        if i + 1 == self.len { 0 } else { i + 1 }
    }

    /// Bytes reserved for slots (pages never written are not resident).
    pub(super) fn bytes(&self) -> usize {
        self.len * size_of::<AtomicPtr<Node>>()
    }

    /// Bytes of an index asked for `slots`, before creating it.
    pub(super) fn bytes_for(slots: usize) -> usize {
        if slots == 0 {
            0
        } else {
            Pages::rounded(slots * size_of::<AtomicPtr<Node>>())
        }
    }

    /// Records the node of a key new to the list. Called by the list's single writer only.
    pub(super) fn insert(&self, hash: u64, node: &Node) {
        if self.len == 0 {
            return;
        }
        let mut i = self.home(hash);
        for _ in 0..PROBE_MAX {
            let slot = &self.slots()[i];
            // Only the writer stores, so its own earlier stores are visible to it.
            let current = slot.load(AtomicOrdering::Relaxed);
            // SAFETY: non-null slots hold published nodes that live as long as the list.
            match unsafe { current.as_ref() } {
                None => {
                    slot.store(node as *const Node as *mut Node, AtomicOrdering::Release);
                    return;
                }
                Some(c) => {
                    debug_assert!(c.key() != node.key(), "a key has one node");
                    i = self.after(i);
                }
            }
        }
        self.complete.store(false, AtomicOrdering::Relaxed);
    }

    /// Starts loading `hash`'s home slot into the cache, for a lookup soon after.
    pub(super) fn prefetch_slot(&self, hash: u64) {
        if self.len > 0 {
            prefetch(self.slots()[self.home(hash)].as_ptr().cast_const().cast());
        }
    }

    /// Starts loading the node in `hash`'s home slot: its key's node unless another key took
    /// the slot first. Worth it once [`Self::prefetch_slot`] had time to bring the slot in.
    pub(super) fn prefetch_node(&self, hash: u64) {
        if self.len > 0 {
            let node = self.slots()[self.home(hash)].load(AtomicOrdering::Acquire);
            if !node.is_null() {
                prefetch(node.cast_const().cast());
            }
        }
    }

    /// The node of `key` (`prefix` is its key prefix).
    pub(super) fn get(&self, hash: u64, prefix: u64, key: &[u8]) -> Lookup<'_> {
        if self.len == 0 {
            return Lookup::Unknown;
        }
        let mut i = self.home(hash);
        for _ in 0..PROBE_MAX {
            let current = self.slots()[i].load(AtomicOrdering::Acquire);
            // SAFETY: as in `insert`.
            match unsafe { current.as_ref() } {
                None => break,
                Some(n) if n.prefix == prefix && n.key() == key => return Lookup::Node(n),
                Some(_) => i = self.after(i),
            }
        }
        if self.complete.load(AtomicOrdering::Relaxed) {
            Lookup::Absent
        } else {
            Lookup::Unknown
        }
    }
}

impl HashIndex {
    fn slots(&self) -> &[AtomicPtr<Node>] {
        match &self.pages {
            None => &[],
            // SAFETY: the mapping holds at least `len` slots' bytes, page-aligned, and all-zero
            // bytes are a valid `AtomicPtr` (null); the slice lives no longer than `self`.
            Some(pages) => unsafe {
                std::slice::from_raw_parts(pages.as_ptr() as *const AtomicPtr<Node>, self.len)
            },
        }
    }
}

/// A hint to load the cache line at `address`; never faults, whatever the address.
#[inline]
fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
