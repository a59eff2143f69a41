//! The cluster crate's error type. Corrupt bytes (from disk or the wire) are kept apart from
//! bad configuration so a caller can tell "this replica's data is damaged" from "fix the config".

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Encoded versions or contexts failed a magic, version, length, ordering or checksum
    /// check. The bytes are never decoded into data.
    #[error("corrupt {what} at byte {offset}: {reason}")]
    Corruption {
        what: &'static str,
        offset: u64,
        reason: &'static str,
    },
    /// A member list, partition count or replica count that cannot form a ring.
    #[error("invalid ring: {0}")]
    InvalidRing(String),
    /// A consistency level that is not ONE, QUORUM, ALL or a positive number.
    #[error("invalid consistency level {0:?} (expected ONE, QUORUM, ALL or a positive number)")]
    InvalidConsistency(String),
}

impl Error {
    pub(crate) fn corruption(what: &'static str, offset: usize, reason: &'static str) -> Error {
        Error::Corruption {
            what,
            offset: offset as u64,
            reason,
        }
    }
}
