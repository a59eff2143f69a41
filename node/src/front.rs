//! The client-facing layer: connections, the RESP protocol, the command table, execution
//! and INFO. A request enters at [`conn`], is parsed against [`command`]'s table and runs
//! in [`exec`] on the shard that accepted it.

pub mod command;
pub mod conn;
pub mod context;
pub mod ctx;
pub mod exec;
pub mod glob;
pub mod info;
pub mod resp;
