//! The node's cluster IO: the glue that runs one `shoal_cluster` protocol object per shard
//! ([`driver`]) and the peer transport between nodes ([`peer`]).

pub mod driver;
pub mod peer;
