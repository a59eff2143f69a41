//! shoal-tools: command-line tools around Shoal. The logic lives here so it is unit-tested;
//! the binaries in `src/bin/` only parse arguments and print.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bench;
pub mod ctl;
pub mod dump;
