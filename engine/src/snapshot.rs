//! Snapshots: a sequence number a reader sees the database at. Live snapshots are registered
//! so that compaction keeps every version some reader may still need.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::types::SeqNo;

/// Sequence numbers of live snapshots, with how many readers hold each.
#[derive(Default)]
pub struct SnapshotList {
    live: Mutex<BTreeMap<SeqNo, usize>>,
}

impl SnapshotList {
    /// Registers a reader at `seq`; unregistered when the guard drops.
    pub fn register(self: &Arc<Self>, seq: SeqNo) -> SnapshotGuard {
        self.register_with(|| seq)
    }

    /// Registers the sequence number `seq` returns, read under the list's lock: a compaction
    /// that takes its [`SnapshotList::view`] either sees this snapshot or started before `seq`
    /// was read, and so uses a horizon at or below it.
    pub fn register_with(self: &Arc<Self>, seq: impl FnOnce() -> SeqNo) -> SnapshotGuard {
        let mut live = self.live.lock();
        let seq = seq();
        *live.entry(seq).or_default() += 1;
        SnapshotGuard {
            seq,
            list: Arc::clone(self),
        }
    }

    /// What a compaction must keep readable: the live snapshots and the horizon `visible`
    /// returns (read under the lock, see [`SnapshotList::register_with`]).
    pub fn view(&self, visible: impl FnOnce() -> SeqNo) -> (Vec<SeqNo>, SeqNo) {
        let live = self.live.lock();
        let horizon = visible();
        (live.keys().copied().collect(), horizon)
    }

    /// The oldest sequence number a live reader may read at, if any.
    pub fn oldest(&self) -> Option<SeqNo> {
        self.live.lock().keys().next().copied()
    }

    /// All live snapshot sequence numbers, ascending.
    pub fn all(&self) -> Vec<SeqNo> {
        self.live.lock().keys().copied().collect()
    }
}

/// Unregisters its snapshot when dropped.
pub struct SnapshotGuard {
    seq: SeqNo,
    list: Arc<SnapshotList>,
}

impl SnapshotGuard {
    /// The sequence number it holds.
    pub fn seq(&self) -> SeqNo {
        self.seq
    }
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        let mut live = self.list.live.lock();
        if let Some(count) = live.get_mut(&self.seq) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_tracks_live_guards() {
        let list = Arc::new(SnapshotList::default());
        assert_eq!(list.oldest(), None);
        let a = list.register(5);
        let b = list.register(3);
        let c = list.register(3);
        assert_eq!(list.oldest(), Some(3));
        drop(b);
        assert_eq!(list.oldest(), Some(3));
        drop(c);
        assert_eq!(list.oldest(), Some(5));
        assert_eq!(a.seq(), 5);
        drop(a);
        assert_eq!(list.all(), Vec::<SeqNo>::new());
    }
}
