//! What a replica does with a [`Request`], as pure functions over the stored bytes of the
//! key. The node reads the key from its engine, calls [`handle`], stores `store` if present
//! (durably), and only then sends `reply`.

use crate::NodeId;
use crate::dvv::DvvSet;
use crate::error::Result;
use crate::message::{Reply, Request, WriteContext};
use crate::vv::{Dot, VersionVector};

/// The outcome of one request at a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Handled {
    pub reply: Reply,
    /// New bytes for the key, to store before replying; `None`: leave storage alone.
    pub store: Option<Vec<u8>>,
    /// Siblings stored after a write (for the driver's sibling warnings); 0 for a read,
    /// which does not decode what it ships.
    pub siblings: usize,
}

/// A write minted at this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub dot: Dot,
    /// The new stored versions.
    pub versions: Vec<u8>,
    /// Exactly the writes this one superseded (for logs and simulation checks).
    pub superseded: VersionVector,
    /// Siblings in the new stored versions.
    pub siblings: usize,
}

/// Serves `request` at replica `local`, whose engine holds `stored` for the request's key.
/// Damaged stored or incoming bytes give `Reply::Failed` and store nothing.
pub fn handle(local: NodeId, stored: Option<&[u8]>, request: &Request) -> Handled {
    let failed = Handled {
        reply: Reply::Failed,
        store: None,
        siblings: 0,
    };
    match request {
        // The coordinator decodes what it receives; here the checksum is enough to refuse
        // shipping damaged bytes.
        Request::Get { .. } => match stored.map(DvvSet::verify).transpose() {
            Ok(_) => Handled {
                reply: Reply::Got {
                    versions: stored.map(<[u8]>::to_vec),
                },
                store: None,
                siblings: 0,
            },
            Err(_) => failed,
        },
        Request::Update {
            key,
            context,
            value,
        } => {
            let context = match context {
                None => Ok(WriteContext::Local),
                Some(bytes) => VersionVector::decode(bytes).map(WriteContext::Given),
            };
            let applied =
                context.and_then(|context| apply_update(local, stored, &context, value.clone()));
            match applied {
                Ok(applied) => Handled {
                    reply: Reply::Updated {
                        key: key.clone(),
                        dot: applied.dot,
                        versions: applied.versions.clone(),
                    },
                    store: Some(applied.versions),
                    siblings: applied.siblings,
                },
                Err(_) => failed,
            }
        }
        // Hints are kept apart by the endpoint's handoff, never merged into a replica here.
        Request::Hinted { .. } => failed,
        Request::Put { versions, .. } => match merge(stored, versions) {
            Ok(merged) => {
                let siblings = merged.siblings().len();
                let merged = merged.encode();
                Handled {
                    reply: Reply::Stored,
                    store: (Some(merged.as_slice()) != stored).then_some(merged),
                    siblings,
                }
            }
            Err(_) => failed,
        },
    }
}

/// Merges incoming versions (replication, read repair, hand-off) into the stored ones.
pub fn merge_stored(stored: Option<&[u8]>, incoming: &[u8]) -> Result<Vec<u8>> {
    Ok(merge(stored, incoming)?.encode())
}

fn merge(stored: Option<&[u8]>, incoming: &[u8]) -> Result<DvvSet> {
    let incoming = DvvSet::decode(incoming)?;
    let mut merged = match stored {
        Some(bytes) => DvvSet::decode(bytes)?,
        None => DvvSet::new(),
    };
    merged.sync(&incoming);
    Ok(merged)
}

/// Mints a write at replica `local`: a fresh dot superseding `context` (or, for
/// [`WriteContext::Local`], everything stored here).
pub fn apply_update(
    local: NodeId,
    stored: Option<&[u8]>,
    context: &WriteContext,
    value: Option<Vec<u8>>,
) -> Result<Applied> {
    let mut versions = match stored {
        Some(bytes) => DvvSet::decode(bytes)?,
        None => DvvSet::new(),
    };
    let superseded = match context {
        WriteContext::Local => versions.context().clone(),
        WriteContext::Given(vv) => vv.clone(),
    };
    let dot = versions.update(&superseded, local, value);
    Ok(Applied {
        dot,
        siblings: versions.siblings().len(),
        versions: versions.encode(),
        superseded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_then_replicate_then_read() {
        let update = Request::Update {
            key: b"k".to_vec(),
            context: WriteContext::Given(VersionVector::new()).encode(),
            value: Some(b"v".to_vec()),
        };
        let h = handle(1, None, &update);
        let Reply::Updated { dot, versions, .. } = h.reply else {
            panic!("{:?}", h.reply)
        };
        assert_eq!(
            dot,
            Dot {
                actor: 1,
                counter: 1
            }
        );
        assert_eq!(h.store.as_deref(), Some(versions.as_slice()));
        let put = Request::Put {
            key: b"k".to_vec(),
            versions: versions.clone(),
        };
        let h2 = handle(2, None, &put);
        assert_eq!(h2.reply, Reply::Stored);
        assert_eq!(h2.store.as_deref(), Some(versions.as_slice()));
        // Merging what is already there stores nothing.
        assert_eq!(handle(2, Some(&versions), &put).store, None);
        let got = handle(2, Some(&versions), &Request::Get { key: b"k".to_vec() });
        assert_eq!(
            got.reply,
            Reply::Got {
                versions: Some(versions)
            }
        );
    }

    #[test]
    fn set_supersedes_what_is_stored_here() {
        let blind = WriteContext::Given(VersionVector::new());
        let a = apply_update(1, None, &blind, Some(b"a".to_vec())).unwrap();
        let b = apply_update(1, Some(&a.versions), &blind, Some(b"b".to_vec())).unwrap();
        assert_eq!(DvvSet::decode(&b.versions).unwrap().siblings().len(), 2);
        let c = apply_update(1, Some(&b.versions), &WriteContext::Local, None).unwrap();
        let c_set = DvvSet::decode(&c.versions).unwrap();
        assert_eq!(c_set.values().collect::<Vec<_>>(), vec![None]);
        assert!(c.superseded.contains(a.dot) && c.superseded.contains(b.dot));
    }

    #[test]
    fn a_damaged_context_fails_without_storing() {
        let mut context = VersionVector::new().encode();
        context[3] ^= 1;
        let update = Request::Update {
            key: b"k".to_vec(),
            context: Some(context),
            value: Some(b"v".to_vec()),
        };
        let h = handle(1, None, &update);
        assert_eq!((h.reply, h.store), (Reply::Failed, None));
    }

    #[test]
    fn damaged_bytes_fail_without_storing() {
        let a = apply_update(1, None, &WriteContext::Local, Some(b"a".to_vec())).unwrap();
        let mut bad = a.versions.clone();
        bad[5] ^= 0x40;
        let get = handle(1, Some(&bad), &Request::Get { key: b"k".to_vec() });
        assert_eq!(
            get,
            Handled {
                reply: Reply::Failed,
                store: None,
                siblings: 0,
            }
        );
        let put = Request::Put {
            key: b"k".to_vec(),
            versions: bad.clone(),
        };
        assert_eq!(handle(1, Some(&a.versions), &put).reply, Reply::Failed);
        assert!(merge_stored(Some(&bad), &a.versions).is_err());
    }
}
