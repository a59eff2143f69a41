//! Per-shard key locks that make read-modify-write commands atomic.
//!
//! The engine makes a write visible only once it is durable, so a SET NX that reads while
//! another write of the same key waits for its fsync would not see it. Blind writes (SET
//! without NX/XX/GET/KEEPTTL, MSET) take a key *shared*: they never read, and the log orders
//! them, so any number may be in flight. Commands that read the key first (SET NX, DEL,
//! EXPIRE, ...) take it *exclusive*, waiting for in-flight writes of the key to finish.
//! Plain reads take nothing: they see every acknowledged write.
//!
//! Keys are identified by their 64-bit ring hash, so locking allocates nothing; two keys
//! with one hash only wait for each other. Multi-key commands lock in hash order, so two of
//! them never wait for each other in a cycle.

use std::cell::RefCell;

use event_listener::Event;

use crate::u64map::U64Map;

#[derive(Debug, Default)]
struct State {
    shared: u32,
    exclusive: bool,
}

#[derive(Default)]
pub struct KeyLocks {
    held: RefCell<U64Map<State>>,
    released: Event,
}

impl std::fmt::Debug for KeyLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLocks")
            .field("held", &self.held.borrow().len())
            .finish()
    }
}

/// Held locks; released on drop.
#[derive(Debug)]
pub struct Guard<'a> {
    locks: &'a KeyLocks,
    hashes: Vec<u64>,
    /// `hashes[..taken]` are held; the rest are still awaited (a cancelled acquisition
    /// releases what it took).
    taken: usize,
    exclusive: bool,
}

impl KeyLocks {
    /// Takes `hashes` shared. Never waits for another shared holder; waits for exclusive ones.
    pub async fn shared(&self, hashes: Vec<u64>) -> Guard<'_> {
        self.acquire(hashes, false).await
    }

    /// Takes `hashes` exclusive: waits until no one else holds any of them.
    pub async fn exclusive(&self, hashes: Vec<u64>) -> Guard<'_> {
        self.acquire(hashes, true).await
    }

    async fn acquire(&self, mut hashes: Vec<u64>, exclusive: bool) -> Guard<'_> {
        hashes.sort_unstable();
        hashes.dedup();
        let mut guard = Guard {
            locks: self,
            hashes,
            taken: 0,
            exclusive,
        };
        loop {
            {
                let mut held = self.held.borrow_mut();
                while let Some(&h) = guard.hashes.get(guard.taken) {
                    let state = held.entry(h).or_default();
                    let free = !state.exclusive && (!exclusive || state.shared == 0);
                    if !free {
                        break;
                    }
                    if exclusive {
                        state.exclusive = true;
                    } else {
                        state.shared += 1;
                    }
                    guard.taken += 1;
                }
            }
            if guard.taken == guard.hashes.len() {
                return guard;
            }
            // Listening only now is safe, and spares the common uncontended case a listener:
            // the locks belong to one shard's executor, so no release can run between the
            // failed take above and this registration.
            self.released.listen().await;
        }
    }

    /// Keys with a lock held, for tests and INFO.
    pub fn held(&self) -> usize {
        self.held.borrow().len()
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.borrow_mut();
        for h in &self.hashes[..self.taken] {
            let Some(state) = held.get_mut(h) else {
                debug_assert!(false, "released a key lock that is not held");
                continue;
            };
            if self.exclusive {
                debug_assert!(state.exclusive);
                state.exclusive = false;
            } else {
                debug_assert!(state.shared > 0);
                state.shared -= 1;
            }
            if !state.exclusive && state.shared == 0 {
                held.remove(h);
            }
        }
        drop(held);
        self.locks.released.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;
    use std::pin::pin;

    #[test]
    fn shared_holders_coexist_and_block_exclusive() {
        future::block_on(async {
            let locks = KeyLocks::default();
            let a = locks.shared(vec![1, 2]).await;
            let b = locks.shared(vec![2]).await;
            let mut ex = pin!(locks.exclusive(vec![2, 3]));
            assert!(future::poll_once(ex.as_mut()).await.is_none());
            drop(a);
            assert!(future::poll_once(ex.as_mut()).await.is_none());
            drop(b);
            let g = future::poll_once(ex.as_mut()).await.expect("free now");
            assert_eq!(locks.held(), 2);
            let mut sh = pin!(locks.shared(vec![3]));
            assert!(future::poll_once(sh.as_mut()).await.is_none());
            drop(g);
            let g2 = future::poll_once(sh.as_mut()).await.expect("free now");
            drop(g2);
            assert_eq!(locks.held(), 0);
        });
    }

    #[test]
    fn a_waiter_is_woken_when_the_lock_is_released() {
        future::block_on(async {
            let locks = KeyLocks::default();
            let held = locks.exclusive(vec![9]).await;
            let waiter = async {
                let _g = locks.shared(vec![9]).await;
                locks.held()
            };
            let releaser = async {
                future::yield_now().await;
                drop(held);
            };
            // Only the release's notification can wake the waiter once the releaser is done.
            let (held_by_waiter, ()) = future::zip(waiter, releaser).await;
            assert_eq!(held_by_waiter, 1);
            assert_eq!(locks.held(), 0);
        });
    }

    #[test]
    fn duplicate_keys_lock_once() {
        future::block_on(async {
            let locks = KeyLocks::default();
            let g = locks.exclusive(vec![5, 5, 5]).await;
            assert_eq!(locks.held(), 1);
            drop(g);
            assert_eq!(locks.held(), 0);
        });
    }
}
