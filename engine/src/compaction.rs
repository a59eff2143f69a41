//! Compaction: merging tables of one level into the next, dropping what no reader can see.
//!
//! [`picker`] chooses the work from the table set; [`retention`] decides version by version
//! what survives and with which sequence number it is stored; [`run`] streams the merged
//! inputs through those rules into new tables of the output level. Installing the result
//! (manifest edit, then the new version, then deleting the inputs once unused) is the
//! database's part (`db/compact.rs`).

pub mod picker;
pub mod retention;
pub mod run;

pub use picker::{Choice, Job, Shape};
pub use retention::{Retention, RetentionStats};
pub use run::{OutputSpec, YIELD_EVERY_ENTRIES, merge, open_inputs};
