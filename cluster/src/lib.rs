//! shoal-cluster: Shoal's distributed logic as sans-IO state machines.
//!
//! Nothing here touches sockets, clocks or threads: inputs are messages, ticks and the
//! current time; outputs are messages and storage actions.
//!
//! - [`partition`]: keys → Q partitions; [`ring`]: partitions → preference lists of nodes.
//! - [`vv`], [`dvv`]: version vectors and dotted version vector sets (what replicas store).
//! - [`consistency`]: ONE / QUORUM / ALL / n.
//! - [`message`], [`coordinator`], [`replica`]: the quorum read/write protocol.
//!
//! Membership is static for now: the node builds a [`ring::Ring`] from its configured member
//! list. Gossip will produce the same member list and rebuild the ring the same way.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod codec;
pub mod consistency;
pub mod coordinator;
pub mod dvv;
pub mod error;
pub mod message;
pub mod partition;
pub mod replica;
pub mod ring;
pub mod vv;

pub use error::{Error, Result};

/// A node's identity in the ring; also the actor in version vectors.
pub type NodeId = u32;
