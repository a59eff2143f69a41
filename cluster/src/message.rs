//! The cluster's wire messages: what one shard's [`crate::endpoint::Endpoint`] sends another's,
//! on the same node (over the shard mesh) or on another node (over a peer connection).
//!
//! Each message is one [`crate::frame`] frame whose request id names the client request at
//! its coordinator, and whose payload is the rkyv archive of an [`Envelope`]:
//!
//! | field        | archived type | meaning                                           |
//! |--------------|---------------|---------------------------------------------------|
//! | `from`       | u32           | sending node's id                                 |
//! | `from_shard` | u16           | sending shard: a reply goes back to it            |
//! | `view`       | u64           | the sender's [`ClusterView`] hash: members must agree |
//! | `body`       | enum, u8 tag  | below                                             |
//!
//! | body                                  | tag | between                                  |
//! |---------------------------------------|-----|------------------------------------------|
//! | `Request(Request)`                    | 0   | coordinator → replica                    |
//! | `Reply(Reply)`                        | 1   | replica → coordinator                    |
//! | `Gossip { view, reply, entries }`     | 2   | shard 0 ↔ shard 0 of another node        |
//! | `Members(Vec<MemberReport>)`          | 3   | shard 0 → the other shards of its node   |
//! | `Refused(ClusterView)`                | 4   | a node whose view differs → the sender   |
//!
//! | request                           | tag | reply                   |
//! |-----------------------------------|-----|-------------------------|
//! | `Get { key }`                     | 0   | `Got` or `Failed`       |
//! | `Update { key, context, value }`  | 1   | `Updated` or `Failed`   |
//! | `Put { key, versions }`           | 2   | `Stored` or `Failed`    |
//! | `Hinted { key, versions, owner }` | 3   | `Stored` or `Failed`    |
//!
//! | reply (replica → coordinator)     | tag |
//! |-----------------------------------|-----|
//! | `Got { versions }`                | 0   |
//! | `Updated { key, dot, versions }`  | 1   |
//! | `Stored`                          | 2   |
//! | `Failed`                          | 3   |
//!
//! `versions` are [`crate::dvv`] encodings and `context` a [`crate::vv`] encoding, each with
//! its own checksum, so a replica never stores bytes it has not verified. The frame checksum
//! covers the rest. Tags are only ever appended and a field never changes type: a change of
//! shape is a new variant, so members of different builds read each other's messages.

use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};

use crate::NodeId;
use crate::frame::{self, FrameBuf, FrameError};
use crate::membership::{ClusterView, Entry, Health};
use crate::vv::{Dot, VersionVector};

/// Names one client request at its coordinator; replies carry it back. Unique per
/// coordinating shard for the life of the request.
pub type ReqId = u64;

/// What a client write supersedes (the API's form; on the wire it is
/// `Request::Update::context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteContext {
    /// Everything the coordinating replica holds (Redis SET/DEL semantics).
    Local,
    /// Exactly what the client saw (VSET/VDEL with `CONTEXT c`; empty for a blind write,
    /// which becomes a sibling of everything present).
    Given(VersionVector),
}

impl WriteContext {
    /// The wire form: `None` for [`WriteContext::Local`], else the vector's encoding.
    pub fn encode(&self) -> Option<Vec<u8>> {
        match self {
            WriteContext::Local => None,
            WriteContext::Given(vv) => Some(vv.encode()),
        }
    }
}

/// One message between shards.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub from_shard: u16,
    /// [`ClusterView::hash`] of the sender's view.
    pub view: u64,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum Body {
    Request(Request),
    Reply(Reply),
    /// The sender's member table; `reply` is set on the answer to another node's gossip,
    /// which is not answered again.
    Gossip {
        view: ClusterView,
        reply: bool,
        entries: Vec<Entry>,
    },
    /// Shard 0's judgment of every member, for the other shards of its node.
    Members(Vec<MemberReport>),
    /// The receiver's view differs from the sender's: nothing the sender sends is served.
    Refused(ClusterView),
}

/// One member as a node's gossiping shard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct MemberReport {
    pub entry: Entry,
    pub health: Health,
    /// How long before the report a newer heartbeat of the member last arrived.
    pub silent_ms: u64,
}

/// Coordinator → replica.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum Request {
    /// Return the stored versions of `key`.
    Get { key: Vec<u8> },
    /// Make a new write here: mint a dot against the stored versions, store, and return the
    /// result (this replica is the write's coordinating replica).
    Update {
        key: Vec<u8>,
        /// What the write supersedes: `None` is everything stored here, else a
        /// [`VersionVector`] encoding (see [`WriteContext::encode`]).
        context: Option<Vec<u8>>,
        /// `None` writes a tombstone.
        value: Option<Vec<u8>>,
    },
    /// Merge these versions into the stored ones (replication and read repair).
    Put { key: Vec<u8>, versions: Vec<u8> },
    /// Keep these versions for `owner`, a replica that is down, and hand them to it when it
    /// is back (this node stands in for it: sloppy quorum).
    Hinted {
        key: Vec<u8>,
        versions: Vec<u8>,
        owner: NodeId,
    },
}

impl Request {
    pub fn key(&self) -> &[u8] {
        match self {
            Request::Get { key }
            | Request::Update { key, .. }
            | Request::Put { key, .. }
            | Request::Hinted { key, .. } => key,
        }
    }
}

/// Replica → coordinator. Sent only after any store the request caused is durable.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum Reply {
    /// The stored versions (`None`: the key is absent).
    Got { versions: Option<Vec<u8>> },
    /// The write's dot and the versions now stored. The key comes back too, so a
    /// coordinator that gave up on the request can still see the write reach every replica.
    Updated {
        key: Vec<u8>,
        dot: Dot,
        versions: Vec<u8>,
    },
    /// The merged versions are stored.
    Stored,
    /// The replica could not serve the request (corrupt stored versions, storage error).
    Failed,
}

/// Why a frame is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("payload is not a cluster message: {0}")]
    Payload(String),
}

/// Seals `envelope` into a frame for client request `req_id`.
pub fn encode(req_id: ReqId, envelope: &Envelope) -> Result<FrameBuf, WireError> {
    Ok(frame::encode(req_id, envelope)?)
}

/// Checks a frame and returns its request id and message.
pub fn decode(frame_bytes: &[u8]) -> Result<(ReqId, Envelope), WireError> {
    let (req_id, payload) = frame::open(frame_bytes)?;
    let archived = rkyv::access::<ArchivedEnvelope, rancor::Error>(payload)
        .map_err(|e| WireError::Payload(e.to_string()))?;
    let envelope = rkyv::deserialize::<Envelope, rancor::Error>(archived)
        .map_err(|e| WireError::Payload(e.to_string()))?;
    Ok((req_id, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_frame() {
        let envelope = Envelope {
            from: 7,
            from_shard: 1,
            view: 99,
            body: Body::Request(Request::Update {
                key: b"k".to_vec(),
                context: WriteContext::Given(VersionVector::new()).encode(),
                value: Some(vec![9; 300]),
            }),
        };
        let frame = encode(42, &envelope).unwrap();
        assert_eq!(decode(&frame).unwrap(), (42, envelope));
        let reply = Envelope {
            from: 3,
            from_shard: 0,
            view: 99,
            body: Body::Reply(Reply::Updated {
                key: b"k".to_vec(),
                dot: Dot {
                    actor: 3,
                    counter: 12,
                },
                versions: vec![1, 2, 3],
            }),
        };
        assert_eq!(decode(&encode(1, &reply).unwrap()).unwrap(), (1, reply));
    }

    #[test]
    fn damaged_and_foreign_frames_are_refused() {
        let envelope = Envelope {
            from: 1,
            from_shard: 0,
            view: 99,
            body: Body::Reply(Reply::Stored),
        };
        let mut frame = encode(5, &envelope).unwrap();
        let last = frame.len() - 1;
        frame.as_mut_slice()[last] ^= 0x10;
        assert!(matches!(decode(&frame), Err(WireError::Frame(_))));
        let mut junk = frame::start(16);
        junk.extend_from_slice(&[0xff; 16]);
        frame::seal(&mut junk, 1).unwrap();
        assert!(matches!(decode(&junk), Err(WireError::Payload(_))));
    }
}
