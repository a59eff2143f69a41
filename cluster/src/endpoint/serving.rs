//! The replica side of an endpoint: replica requests as storage reads and writes.
//!
//! A `Get` reads the key and answers. An `Update` or `Put` takes the key's lock, reads,
//! applies the request to what it read ([`crate::replica::handle`]), writes the result, and
//! answers once the write is durable; then the next request waiting for the key's lock
//! starts. Locks are per key hash: two keys that share a hash only wait for each other.
//!
//! Invariants (checked by `check_invariants` in debug builds after every change):
//! 1. every job with a storage operation in flight holds its key's lock, unless it is a `Get`;
//! 2. a key's lock is held by exactly one job in flight, waiting jobs queue behind it;
//! 3. every queued storage operation belongs to a job in flight.

use std::collections::{HashMap, VecDeque};

use crate::NodeId;
use crate::dvv::SIBLINGS_WARN;
use crate::message::{Reply, ReqId, Request};
use crate::partition::key_hash;
use crate::replica;

use super::Address;
use super::storage::{Completion, StorageAction, StorageOp, StorageToken};

/// Who asked: this shard's own coordinator, or another shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Local,
    Remote(Address),
}

#[derive(Debug)]
struct Job {
    origin: Origin,
    req_id: ReqId,
    request: Request,
    hash: u64,
    /// The reply to send once the job's write is durable.
    reply: Option<Reply>,
}

impl Job {
    fn locks(&self) -> bool {
        !matches!(self.request, Request::Get { .. })
    }
}

#[derive(Debug)]
pub(crate) struct Serving {
    me: NodeId,
    /// Jobs with a storage operation queued or running.
    running: HashMap<StorageToken, Job>,
    /// Key hashes whose lock is held, with the jobs waiting for it in arrival order.
    locked: HashMap<u64, VecDeque<Job>>,
    next_token: StorageToken,
    storage: VecDeque<StorageOp>,
    replies: VecDeque<(Origin, ReqId, Reply)>,
    many_siblings: VecDeque<(Vec<u8>, usize)>,
}

impl Serving {
    pub(crate) fn new(me: NodeId) -> Serving {
        Serving {
            me,
            running: HashMap::new(),
            locked: HashMap::new(),
            next_token: 1,
            storage: VecDeque::new(),
            replies: VecDeque::new(),
            many_siblings: VecDeque::new(),
        }
    }

    /// A replica request for a key this shard stores.
    pub(crate) fn accept(&mut self, origin: Origin, req_id: ReqId, request: Request) {
        let job = Job {
            origin,
            req_id,
            hash: key_hash(request.key()),
            request,
            reply: None,
        };
        if !job.locks() {
            self.read(job);
        } else if let Some(waiting) = self.locked.get_mut(&job.hash) {
            waiting.push_back(job);
        } else {
            self.locked.insert(job.hash, VecDeque::new());
            self.read(job);
        }
        self.check_invariants();
    }

    pub(crate) fn complete(&mut self, token: StorageToken, completion: &Completion<'_>) {
        let Some(mut job) = self.running.remove(&token) else {
            debug_assert!(false, "completion of unknown storage operation {token}");
            return;
        };
        match completion {
            &Completion::Read(stored) => {
                let handled = replica::handle(self.me, stored, &job.request);
                if handled.siblings > SIBLINGS_WARN {
                    let key = job.request.key().to_vec();
                    self.many_siblings.push_back((key, handled.siblings));
                }
                match handled.store {
                    Some(versions) => {
                        job.reply = Some(handled.reply);
                        let key = job.request.key().to_vec();
                        self.start(job, StorageAction::WriteVersions { key, versions });
                    }
                    None => self.finish(job, handled.reply),
                }
            }
            Completion::Hints(_) => {
                debug_assert!(false, "serving never loads hints");
                self.finish(job, Reply::Failed);
            }
            Completion::Written => {
                let reply = job.reply.take().unwrap_or(Reply::Failed);
                debug_assert!(reply != Reply::Failed, "a write follows a successful apply");
                self.finish(job, reply);
            }
            Completion::Failed => self.finish(job, Reply::Failed),
        }
        self.check_invariants();
    }

    pub(crate) fn poll_storage(&mut self) -> Option<StorageOp> {
        self.storage.pop_front()
    }

    pub(crate) fn poll_reply(&mut self) -> Option<(Origin, ReqId, Reply)> {
        self.replies.pop_front()
    }

    pub(crate) fn poll_many_siblings(&mut self) -> Option<(Vec<u8>, usize)> {
        self.many_siblings.pop_front()
    }

    fn read(&mut self, job: Job) {
        let key = job.request.key().to_vec();
        self.start(job, StorageAction::ReadVersions { key });
    }

    fn start(&mut self, job: Job, action: StorageAction) {
        let token = self.next_token;
        self.next_token += 1;
        debug_assert!(
            token < super::handoff::TOKEN_BIT,
            "serving's tokens stay below"
        );
        self.storage.push_back(StorageOp { token, action });
        self.running.insert(token, job);
    }

    /// Answers the job and hands its key's lock to the next job waiting for it.
    fn finish(&mut self, job: Job, reply: Reply) {
        self.replies.push_back((job.origin, job.req_id, reply));
        if !job.locks() {
            return;
        }
        let next = self
            .locked
            .get_mut(&job.hash)
            .and_then(|waiting| waiting.pop_front());
        match next {
            Some(next) => self.read(next),
            None => {
                self.locked.remove(&job.hash);
            }
        }
    }

    /// The rules in the module docs.
    fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let mut holders: HashMap<u64, usize> = HashMap::new();
        for job in self.running.values().filter(|j| j.locks()) {
            // 1.
            assert!(
                self.locked.contains_key(&job.hash),
                "a writing job holds its lock"
            );
            *holders.entry(job.hash).or_default() += 1;
        }
        // 2.
        for hash in self.locked.keys() {
            assert_eq!(holders.get(hash), Some(&1), "one holder per locked key");
        }
        // 3.
        for op in &self.storage {
            assert!(
                self.running.contains_key(&op.token),
                "queued op has its job"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::WriteContext;

    fn put(key: &[u8], versions: &[u8]) -> Request {
        Request::Put {
            key: key.to_vec(),
            versions: versions.to_vec(),
        }
    }

    fn update(key: &[u8]) -> Request {
        Request::Update {
            key: key.to_vec(),
            context: WriteContext::Local.encode(),
            value: Some(b"v".to_vec()),
        }
    }

    #[test]
    fn writes_to_one_key_wait_for_each_other_and_reads_do_not() {
        let mut s = Serving::new(1);
        s.accept(Origin::Local, 1, update(b"k"));
        s.accept(Origin::Local, 2, update(b"k"));
        s.accept(Origin::Local, 3, Request::Get { key: b"k".to_vec() });
        s.accept(Origin::Local, 4, update(b"other"));
        let ops: Vec<StorageOp> = std::iter::from_fn(|| s.poll_storage()).collect();
        let keys: Vec<&[u8]> = ops.iter().map(|o| read_key(&o.action)).collect();
        assert_eq!(
            keys,
            [&b"k"[..], b"k", b"other"],
            "the second write to k waits"
        );

        s.complete(ops[0].token, &Completion::Read(None));
        let write = s.poll_storage().unwrap();
        assert!(matches!(write.action, StorageAction::WriteVersions { .. }));
        assert_eq!(
            s.poll_storage(),
            None,
            "still holding k's lock while writing"
        );
        s.complete(write.token, &Completion::Written);
        let (_, id, reply) = s.poll_reply().unwrap();
        assert_eq!(id, 1);
        assert!(matches!(reply, Reply::Updated { .. }));
        let next = s.poll_storage().unwrap();
        assert_eq!(read_key(&next.action), b"k");
    }

    fn read_key(action: &StorageAction) -> &[u8] {
        match action {
            StorageAction::ReadVersions { key } => key,
            other => panic!("not a read: {other:?}"),
        }
    }

    #[test]
    fn a_failed_store_answers_failed_and_frees_the_key() {
        let mut s = Serving::new(1);
        let state = replica::apply_update(1, None, &WriteContext::Local, Some(b"a".to_vec()))
            .unwrap()
            .versions;
        s.accept(Origin::Local, 1, put(b"k", &state));
        s.accept(Origin::Local, 2, put(b"k", &state));
        let read = s.poll_storage().unwrap();
        s.complete(read.token, &Completion::Failed);
        assert_eq!(s.poll_reply(), Some((Origin::Local, 1, Reply::Failed)));
        let read = s.poll_storage().unwrap();
        s.complete(read.token, &Completion::Read(Some(&state)));
        assert_eq!(
            s.poll_reply(),
            Some((Origin::Local, 2, Reply::Stored)),
            "merging what is stored writes nothing"
        );
        assert!(s.locked.is_empty() && s.running.is_empty());
    }
}
