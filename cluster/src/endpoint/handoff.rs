//! Hinted handoff: the writes this shard keeps for replicas that could not take them, and
//! their replay once those replicas are up again.
//!
//! A hint is taken when a fallback receives a `Hinted` put for a home replica that is down
//! (sloppy quorum), and when this shard's coordinator ends a write that a target failed or
//! never acknowledged. It is durable before it is acknowledged, and bounded per owner by
//! count and bytes: past a bound it is refused and counted (anti-entropy repairs what it
//! would have). A hint older than the window is dropped and counted the same way.
//!
//! While the failure detector judges an owner up, its hints are loaded from the store in
//! order and sent to it as ordinary `Put`s, at most [`REPLAY_WINDOW`] at a time and within
//! the byte rate; the owner merges each by the causal rules, so a replay is idempotent and
//! never makes a sibling. A hint is deleted only after the owner answered `Stored` (durably
//! stored). A failed or unanswered replay stops the owner's replay for [`RETRY_AFTER`], then
//! it resumes from the first hint not yet deleted.
//!
//! Replays and storage operations of the handoff carry ids and tokens with the top bit set
//! ([`REQUEST_BIT`], [`TOKEN_BIT`]), so the endpoint tells them from its coordinator's and
//! its serving side's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use crate::NodeId;
use crate::hint::HintRecord;
use crate::message::{Reply, ReqId, Request};

use super::serving::Origin;
use super::storage::{Completion, StorageAction, StorageOp, StorageToken, StoredHint};

/// Set in the storage tokens of the handoff.
pub(crate) const TOKEN_BIT: u64 = 1 << 63;
/// Set in the request ids of replays.
pub(crate) const REQUEST_BIT: u64 = 1 << 63;
/// Hints loaded from the store per read: a few hundred small writes, one engine scan.
const LOAD_BATCH: u32 = 256;
/// Replays in flight per owner: enough to cover a round trip at the byte rate.
pub const REPLAY_WINDOW: usize = 64;
/// A replay unanswered this long counts as failed.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause of an owner's replay after a failure.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Bounds and pace of handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintConfig {
    /// How long a hint is kept (Cassandra's `max_hint_window`).
    pub window: Duration,
    /// Most hints kept per owner.
    pub max_hints_per_owner: u64,
    /// Most record bytes kept per owner.
    pub max_bytes_per_owner: u64,
    /// Replay rate per owner, in record bytes per second.
    pub replay_bytes_per_s: u64,
}

impl Default for HintConfig {
    fn default() -> HintConfig {
        HintConfig {
            window: Duration::from_secs(3 * 3600),
            max_hints_per_owner: 10_000_000,
            max_bytes_per_owner: 1 << 30,
            replay_bytes_per_s: 64 << 20,
        }
    }
}

/// Counters of one owner's hints on this shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintStats {
    /// Hints kept now, and their record bytes.
    pub pending: u64,
    pub pending_bytes: u64,
    /// Hints taken, replayed (and deleted), expired and refused since start.
    pub taken: u64,
    pub replayed: u64,
    pub expired: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    bytes: u64,
    stored_at_ms: u64,
}

#[derive(Debug, Default)]
struct Queue {
    /// Hints durably stored, by seq.
    stored: BTreeMap<u64, Meta>,
    /// Hints being stored: counted against the bounds already.
    storing: u64,
    storing_bytes: u64,
    next_seq: u64,
    /// Loaded records not yet sent, in seq order.
    loaded: VecDeque<(u64, HintRecord)>,
    loading: bool,
    /// The lowest seq that may still need loading: everything below is loaded, in flight
    /// or gone.
    load_from: u64,
    /// Replays in flight: request id → (seq, sent at).
    in_flight: BTreeMap<ReqId, (u64, Duration)>,
    retry_at: Duration,
    stats: HintStats,
}

impl Queue {
    fn kept(&self) -> (u64, u64) {
        (
            self.stored.len() as u64 + self.storing,
            self.stats.pending_bytes + self.storing_bytes,
        )
    }

    /// Drops a hint from the queue's accounting.
    fn forget(&mut self, seq: u64) -> bool {
        match self.stored.remove(&seq) {
            Some(meta) => {
                self.stats.pending -= 1;
                self.stats.pending_bytes -= meta.bytes;
                true
            }
            None => false,
        }
    }

    /// Starts over from the first hint not yet deleted, after `now + RETRY_AFTER`.
    fn pause(&mut self, now: Duration) {
        self.loaded.clear();
        self.in_flight.clear();
        self.load_from = self.stored.keys().next().copied().unwrap_or(self.next_seq);
        self.retry_at = now + RETRY_AFTER;
    }
}

#[derive(Debug)]
enum Job {
    Store {
        owner: NodeId,
        seq: u64,
        meta: Meta,
        origin: Option<(Origin, ReqId)>,
    },
    Delete,
    Load {
        owner: NodeId,
        from_seq: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Handoff {
    config: HintConfig,
    queues: BTreeMap<NodeId, Queue>,
    running: HashMap<StorageToken, Job>,
    next_token: StorageToken,
    next_request: ReqId,
    storage: VecDeque<StorageOp>,
    replies: VecDeque<(Origin, ReqId, Reply)>,
    replays: VecDeque<(NodeId, ReqId, Request)>,
    /// Bytes the replay may still send; refilled at the configured rate.
    budget: f64,
    budget_at: Duration,
    corrupt: u64,
}

impl Handoff {
    pub(crate) fn new(config: HintConfig, stored: &[StoredHint]) -> Handoff {
        let mut queues: BTreeMap<NodeId, Queue> = BTreeMap::new();
        for h in stored {
            let q = queues.entry(h.owner).or_default();
            let meta = Meta {
                bytes: h.bytes,
                stored_at_ms: h.stored_at_ms,
            };
            if q.stored.insert(h.seq, meta).is_none() {
                q.stats.pending += 1;
                q.stats.pending_bytes += h.bytes;
            }
            q.next_seq = q.next_seq.max(h.seq + 1);
        }
        for q in queues.values_mut() {
            q.load_from = q.stored.keys().next().copied().unwrap_or(q.next_seq);
        }
        Handoff {
            config,
            queues,
            running: HashMap::new(),
            next_token: TOKEN_BIT,
            next_request: REQUEST_BIT,
            storage: VecDeque::new(),
            replies: VecDeque::new(),
            replays: VecDeque::new(),
            budget: 0.0,
            budget_at: Duration::ZERO,
            corrupt: 0,
        }
    }

    /// Keeps a write for `owner`; `origin` is answered once it is durable (or refused).
    pub(crate) fn take(
        &mut self,
        wall_ms: u64,
        owner: NodeId,
        key: Vec<u8>,
        versions: Vec<u8>,
        origin: Option<(Origin, ReqId)>,
    ) {
        let record = HintRecord {
            stored_at_ms: wall_ms,
            key,
            versions,
        }
        .encode();
        let bytes = record.len() as u64;
        let q = self.queues.entry(owner).or_default();
        let (count, kept_bytes) = q.kept();
        if count >= self.config.max_hints_per_owner
            || kept_bytes + bytes > self.config.max_bytes_per_owner
        {
            q.stats.refused += 1;
            if let Some((origin, req_id)) = origin {
                self.replies.push_back((origin, req_id, Reply::Failed));
            }
            return;
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.storing += 1;
        q.storing_bytes += bytes;
        let meta = Meta {
            bytes,
            stored_at_ms: wall_ms,
        };
        let job = Job::Store {
            owner,
            seq,
            meta,
            origin,
        };
        self.start(job, StorageAction::StoreHint { owner, seq, record });
    }

    pub(crate) fn complete(&mut self, now: Duration, token: StorageToken, completion: Completion) {
        let Some(job) = self.running.remove(&token) else {
            debug_assert!(false, "completion of unknown storage operation {token}");
            return;
        };
        match job {
            Job::Store {
                owner,
                seq,
                meta,
                origin,
            } => {
                let q = self.queues.entry(owner).or_default();
                q.storing -= 1;
                q.storing_bytes -= meta.bytes;
                let reply = if completion == Completion::Written {
                    q.stored.insert(seq, meta);
                    // A load may have passed it while it was being written.
                    q.load_from = q.load_from.min(seq);
                    q.stats.pending += 1;
                    q.stats.pending_bytes += meta.bytes;
                    q.stats.taken += 1;
                    Reply::Stored
                } else {
                    q.stats.refused += 1;
                    Reply::Failed
                };
                if let Some((origin, req_id)) = origin {
                    self.replies.push_back((origin, req_id, reply));
                }
            }
            Job::Delete => {}
            Job::Load { owner, from_seq } => self.loaded(now, owner, from_seq, completion),
        }
    }

    fn loaded(&mut self, now: Duration, owner: NodeId, from_seq: u64, completion: Completion) {
        let q = self.queues.entry(owner).or_default();
        q.loading = false;
        let Completion::Hints(records) = completion else {
            q.pause(now);
            return;
        };
        let mut corrupt = Vec::new();
        let complete = records.len() < LOAD_BATCH as usize;
        // A hint stored below `from_seq` while loading lowered the cursor: keep it there.
        let lowered = q.load_from < from_seq;
        for (seq, bytes) in records {
            if !lowered {
                q.load_from = q.load_from.max(seq + 1);
            }
            let queued = q.loaded.iter().any(|(s, _)| *s == seq)
                || q.in_flight.values().any(|(s, _)| *s == seq);
            if !q.stored.contains_key(&seq) || queued {
                continue;
            }
            match HintRecord::decode(&bytes) {
                Ok(record) => q.loaded.push_back((seq, record)),
                Err(_) => corrupt.push(seq),
            }
        }
        if complete && !lowered {
            // The store has nothing more from `from_seq` on.
            q.load_from = q.next_seq;
        }
        for seq in corrupt {
            self.corrupt += 1;
            self.delete(owner, seq);
        }
    }

    /// An owner answered a replay.
    pub(crate) fn on_reply(&mut self, now: Duration, req_id: ReqId, reply: &Reply) {
        let Some((&owner, q)) = self
            .queues
            .iter_mut()
            .find(|(_, q)| q.in_flight.contains_key(&req_id))
        else {
            return;
        };
        let Some((seq, _)) = q.in_flight.remove(&req_id) else {
            return;
        };
        if *reply == Reply::Stored {
            q.stats.replayed += 1;
            self.delete(owner, seq);
        } else {
            q.pause(now);
        }
    }

    /// Expires old hints, retires silent replays, and sends what the owners that are up may
    /// take now.
    pub(crate) fn tick(&mut self, now: Duration, wall_ms: u64, is_up: impl Fn(NodeId) -> bool) {
        let rate = self.config.replay_bytes_per_s as f64;
        let elapsed = now.saturating_sub(self.budget_at).as_secs_f64();
        self.budget = (self.budget + rate * elapsed).min(rate.max(1.0));
        self.budget_at = now;
        let window_ms = self.config.window.as_millis() as u64;
        let owners: Vec<NodeId> = self.queues.keys().copied().collect();
        for owner in owners {
            let expired: Vec<u64> = self.queues[&owner]
                .stored
                .iter()
                .filter(|(_, m)| m.stored_at_ms + window_ms < wall_ms)
                .map(|(&seq, _)| seq)
                .collect();
            for seq in expired {
                if let Some(q) = self.queues.get_mut(&owner) {
                    q.stats.expired += 1;
                }
                self.delete(owner, seq);
            }
            let Some(q) = self.queues.get_mut(&owner) else {
                continue;
            };
            if q.in_flight
                .values()
                .any(|&(_, sent)| now >= sent + REPLAY_TIMEOUT)
            {
                q.pause(now);
            }
            if !is_up(owner) || now < q.retry_at || q.stored.is_empty() {
                continue;
            }
            if q.loaded.is_empty() && !q.loading && q.load_from < q.next_seq {
                q.loading = true;
                let from_seq = q.load_from;
                let action = StorageAction::LoadHints {
                    owner,
                    from_seq,
                    limit: LOAD_BATCH,
                };
                self.start(Job::Load { owner, from_seq }, action);
                continue;
            }
            while q.in_flight.len() < REPLAY_WINDOW && self.budget > 0.0 {
                let Some((seq, record)) = q.loaded.pop_front() else {
                    break;
                };
                let Some(meta) = q.stored.get(&seq) else {
                    continue;
                };
                self.budget -= meta.bytes as f64;
                let req_id = self.next_request;
                self.next_request += 1;
                q.in_flight.insert(req_id, (seq, now));
                let put = Request::Put {
                    key: record.key,
                    versions: record.versions,
                };
                self.replays.push_back((owner, req_id, put));
            }
        }
    }

    /// Whether the handoff has anything to do on a tick.
    pub(crate) fn is_idle(&self) -> bool {
        self.queues.values().all(|q| q.stored.is_empty())
    }

    pub(crate) fn stats(&self) -> Vec<(NodeId, HintStats)> {
        self.queues.iter().map(|(&o, q)| (o, q.stats)).collect()
    }

    /// Hint records found damaged in the store (and deleted).
    pub(crate) fn corrupt(&self) -> u64 {
        self.corrupt
    }

    pub(crate) fn poll_storage(&mut self) -> Option<StorageOp> {
        self.storage.pop_front()
    }

    pub(crate) fn poll_reply(&mut self) -> Option<(Origin, ReqId, Reply)> {
        self.replies.pop_front()
    }

    /// The next replay to send: `(owner, request id, put)`.
    pub(crate) fn poll_replay(&mut self) -> Option<(NodeId, ReqId, Request)> {
        self.replays.pop_front()
    }

    fn delete(&mut self, owner: NodeId, seq: u64) {
        if let Some(q) = self.queues.get_mut(&owner) {
            if q.forget(seq) {
                self.start(Job::Delete, StorageAction::DeleteHint { owner, seq });
            }
        }
    }

    fn start(&mut self, job: Job, action: StorageAction) {
        let token = self.next_token;
        self.next_token += 1;
        self.storage.push_back(StorageOp { token, action });
        self.running.insert(token, job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::WriteContext;
    use crate::replica;

    const SECOND: Duration = Duration::from_secs(1);

    fn versions() -> Vec<u8> {
        replica::apply_update(1, None, &WriteContext::Local, Some(b"v".to_vec()))
            .unwrap()
            .versions
    }

    /// Runs every queued storage operation against `store`.
    fn run_storage(h: &mut Handoff, store: &mut BTreeMap<(NodeId, u64), Vec<u8>>, now: Duration) {
        while let Some(op) = h.poll_storage() {
            let completion = match op.action {
                StorageAction::StoreHint { owner, seq, record } => {
                    store.insert((owner, seq), record);
                    Completion::Written
                }
                StorageAction::DeleteHint { owner, seq } => {
                    store.remove(&(owner, seq));
                    Completion::Written
                }
                StorageAction::LoadHints {
                    owner,
                    from_seq,
                    limit,
                } => Completion::Hints(
                    store
                        .range((owner, from_seq)..(owner, u64::MAX))
                        .take(limit as usize)
                        .map(|(&(_, seq), r)| (seq, r.clone()))
                        .collect(),
                ),
                other => panic!("not a hint operation: {other:?}"),
            };
            h.complete(now, op.token, completion);
        }
    }

    fn config() -> HintConfig {
        HintConfig {
            window: 60 * SECOND,
            max_hints_per_owner: 3,
            max_bytes_per_owner: 1 << 20,
            replay_bytes_per_s: 1 << 20,
        }
    }

    #[test]
    fn hints_are_durable_before_acknowledged_and_replayed_in_order_once_up() {
        let mut h = Handoff::new(config(), &[]);
        let mut store = BTreeMap::new();
        for i in 0..3u8 {
            h.take(
                0,
                7,
                vec![i],
                versions(),
                Some((Origin::Local, u64::from(i))),
            );
            assert_eq!(h.poll_reply(), None, "not acknowledged before it is stored");
            run_storage(&mut h, &mut store, SECOND);
            assert_eq!(
                h.poll_reply(),
                Some((Origin::Local, u64::from(i), Reply::Stored))
            );
        }
        h.take(0, 7, vec![9], versions(), Some((Origin::Local, 9)));
        assert_eq!(
            h.poll_reply(),
            Some((Origin::Local, 9, Reply::Failed)),
            "over the count bound"
        );
        h.tick(SECOND, 0, |_| false);
        assert_eq!(
            h.poll_storage(),
            None,
            "nothing moves while the owner is down"
        );
        h.tick(SECOND, 0, |_| true);
        run_storage(&mut h, &mut store, SECOND);
        h.tick(SECOND, 0, |_| true);
        let replays: Vec<_> = std::iter::from_fn(|| h.poll_replay()).collect();
        let keys: Vec<&[u8]> = replays.iter().map(|(_, _, r)| r.key()).collect();
        assert_eq!(keys, [[0u8].as_slice(), &[1], &[2]]);
        h.on_reply(SECOND, replays[1].1, &Reply::Stored);
        run_storage(&mut h, &mut store, SECOND);
        assert_eq!(store.len(), 2, "only the acknowledged hint is deleted");
        h.on_reply(SECOND, replays[0].1, &Reply::Failed);
        assert_eq!(h.stats()[0].1.replayed, 1);
        h.tick(SECOND + RETRY_AFTER, 0, |_| true);
        run_storage(&mut h, &mut store, SECOND + RETRY_AFTER);
        h.tick(SECOND + RETRY_AFTER, 0, |_| true);
        let again: Vec<_> = std::iter::from_fn(|| h.poll_replay()).collect();
        let keys: Vec<&[u8]> = again.iter().map(|(_, _, r)| r.key()).collect();
        assert_eq!(
            keys,
            [[0u8].as_slice(), &[2]],
            "resumes from the first kept hint"
        );
    }

    #[test]
    fn old_hints_expire_and_restored_hints_keep_their_order() {
        let mut h = Handoff::new(config(), &[]);
        let mut store = BTreeMap::new();
        h.take(1_000, 7, b"old".to_vec(), versions(), None);
        h.take(50_000, 7, b"new".to_vec(), versions(), None);
        run_storage(&mut h, &mut store, SECOND);
        h.tick(SECOND, 62_000, |_| false);
        run_storage(&mut h, &mut store, SECOND);
        assert_eq!(h.stats()[0].1.expired, 1);
        assert_eq!(store.len(), 1);

        let stored: Vec<StoredHint> = store
            .iter()
            .map(|(&(owner, seq), r)| StoredHint {
                owner,
                seq,
                bytes: r.len() as u64,
                stored_at_ms: 50_000,
            })
            .collect();
        let mut restarted = Handoff::new(config(), &stored);
        restarted.take(60_000, 7, b"newer".to_vec(), versions(), None);
        run_storage(&mut restarted, &mut store, SECOND);
        restarted.tick(SECOND, 60_000, |_| true);
        run_storage(&mut restarted, &mut store, SECOND);
        restarted.tick(SECOND, 60_000, |_| true);
        let keys: Vec<Vec<u8>> = std::iter::from_fn(|| restarted.poll_replay())
            .map(|(_, _, r)| r.key().to_vec())
            .collect();
        assert_eq!(keys, [b"new".to_vec(), b"newer".to_vec()]);
    }
}
