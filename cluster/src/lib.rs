//! shoal-cluster: Shoal's distributed logic as sans-IO state machines.
//!
//! Nothing here touches sockets, clocks or threads: inputs are messages, ticks and the
//! current time; outputs are messages and storage actions.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod partition;
