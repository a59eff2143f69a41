//! shoal-cluster: Shoal's distributed logic as sans-IO state machines.
//!
//! Nothing here touches sockets, clocks or threads: inputs are messages, ticks and the
//! current time; outputs are messages and storage actions.
//!
//! - [`partition`]: keys → Q partitions; [`ring`]: partitions → preference lists of nodes.
//! - [`vv`], [`dvv`]: version vectors and dotted version vector sets (what replicas store).
//! - [`consistency`]: ONE / QUORUM / ALL / n.
//! - [`coordinator`] (a client request through its replicas) and [`replica`] (what a replica
//!   does with a request): the quorum read/write protocol as pure state machines.
//! - [`frame`] and [`message`]: the wire, framed and checksummed.
//! - [`endpoint`]: one shard's whole protocol as one object, which the node and the
//!   simulator drive alike: client requests, frames, storage completions and time in;
//!   frames, storage operations, client outcomes and the next deadline out.
//!
//! Membership is static: the node builds a [`ring::Ring`] from its configured member list.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod codec;
pub mod consistency;
pub mod coordinator;
pub mod detector;
pub mod dvv;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod hint;
pub mod membership;
pub mod message;
pub mod partition;
pub mod replica;
pub mod ring;
pub mod vv;

pub use error::{Error, Result};

/// A node's identity in the ring; also the actor in version vectors.
pub type NodeId = u32;
