//! SSTables: immutable sorted files of versions.
//!
//! A table holds entries `(user key, seq, kind, expires_at_ms, value)` ordered by user key
//! ascending (bytewise), then seq DESCENDING, so the newest version of a key comes first. A
//! key may have several versions (snapshots need them) and tombstones.
//!
//! # File layout (format version 3)
//!
//! ```text
//! +------------------+-----------+
//! | data block 0     | trailer   |   offset 0
//! | ...              | trailer   |
//! | data block n-1   | trailer   |
//! | filter block     | trailer   |   offset = data_bytes (footer.filter)
//! | index block      | trailer   |   footer.index
//! | properties block | trailer   |   footer.properties
//! | footer (64 B)                |   file_size - FOOTER_LEN
//! +------------------------------+
//! ```
//! Every block is immediately followed by the next; `open` checks the layout is exact, so a
//! truncated or extended file is corruption.
//!
//! ## Block trailer (5 bytes, after every stored block)
//! | field       | type | meaning                                              |
//! |-------------|------|------------------------------------------------------|
//! | compression | u8   | 0 = raw, 1 = zstd (values never renumbered)          |
//! | crc         | u32  | crc32c of the stored block bytes, then the type byte |
//!
//! A zstd block stores `raw_len u32 | zstd frame`; raw blocks are stored as they are. Data
//! blocks are compressed when `Compression::Zstd` is set and it saves at least 1/8; filter,
//! index and properties blocks are always raw.
//!
//! ## Data block (after decompression)
//! | field         | type          | meaning                                            |
//! |---------------|---------------|----------------------------------------------------|
//! | entries       | see below     | in table order, at least one                       |
//! | restarts      | u32 × count   | offsets of the restart entries, ascending, from 0  |
//! | restart count | u32           | number of restart points (≥ 1)                     |
//!
//! Entry: `shared varint | unshared varint | value_len varint | key[shared..] | seq u64 |
//! kind u8 | expires_at_ms u64 (only if kind has 0x80 set) | value`. The key is the previous
//! entry's first `shared` bytes followed by the `unshared` bytes stored here; at a restart
//! point `shared` is 0 and the key is stored whole, so a lookup binary-searches the restart
//! keys and then scans the entries after one. The writer starts a restart every 16 entries
//! (`RESTART_INTERVAL`); a reader accepts any spacing. Varints are LEB128 (7 bits per byte,
//! little end first). The seq is fixed-width after the key, as RocksDB's internal key: its
//! high bytes are zero and repeat from entry to entry, which zstd encodes as one match, where
//! a varint seq spreads its randomness over every byte.
//!
//! This build refuses other versions ("unsupported SSTable format version N"): the project
//! has no deployed data to carry over. Version 1 stored every key whole with a u32 offset per
//! entry; version 2 put a varint seq and a varint expiry before the key.
//!
//! ## Index block
//! `count varint`, then per data block: `key_len varint | last key | last seq varint |
//! offset varint | stored_len varint` (`stored_len` excludes the trailer).
//!
//! ## Filter block (see [`bloom`])
//! `bits (lines × 64 bytes) | lines u32 | probes u8`, a cache-line-blocked bloom filter over
//! user keys; `lines = 0` means no filter (every key may be present).
//!
//! ## Properties block
//! | field          | type | field           | type |
//! |----------------|------|-----------------|------|
//! | format_version | u32  | raw_key_bytes   | u64  |
//! | entries        | u64  | raw_value_bytes | u64  |
//! | tombstones     | u64  | data_bytes      | u64  |
//! | min_seq        | u64  | blocks          | u64  |
//! | max_seq        | u64  | smallest key    | u32 length, bytes |
//! |                |      | largest key     | u32 length, bytes |
//!
//! ## Footer (64 bytes, at the end)
//! | field                        | type      |
//! |------------------------------|-----------|
//! | filter offset, stored length | u64, u64  |
//! | index offset, stored length  | u64, u64  |
//! | properties offset, length    | u64, u64  |
//! | format version               | u32       |
//! | magic                        | u64       |
//! | crc32c of the 60 bytes above | u32       |
//!
//! All fixed-width integers are little-endian. Every byte read back is untrusted: checksums
//! are checked before decoding, every length before slicing, and decoded blocks are checked
//! for order and structure; any failure is [`crate::Error::Corruption`].

mod block;
pub mod bloom;
mod builder;
mod coding;
mod footer;
mod index;
mod iter;
mod properties;
mod table;

#[cfg(test)]
mod tests;

pub use bloom::{FilterStats, key_hash};
pub use builder::TableBuilder;
pub use footer::{FOOTER_LEN, Footer, Handle};
pub use iter::TableIter;
pub use table::Table;

pub(crate) use block::Block;
#[cfg(test)]
pub(crate) use block::BlockBuilder;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use block::Cursor;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use block::unseal;

use std::cmp::Ordering;

use crate::options::Compression;
use crate::types::SeqNo;

/// Version written in the footer and properties; a reader refuses any other (see the layout
/// above for what 1 and 2 were).
pub const FORMAT_VERSION: u32 = 3;

/// zstd level of data blocks by default. Level 3 (zstd's and RocksDB's default) finds the
/// short repeats between entries that level 1's 6-byte minimum match skips: smaller tables,
/// so fewer bytes for every flush and compaction to write, for somewhat slower compression.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Identifies an SSTable footer ("shoalSST" in ASCII).
pub const MAGIC: u64 = u64::from_le_bytes(*b"shoalSST");

/// Default target size of a data block. A point read that misses the cache reads,
/// decompresses and checks one whole block, so small blocks make misses cheap (4 KiB: ~4x less
/// work per miss than 16 KiB, as RocksDB's default); the index grows by one entry per block.
pub const DEFAULT_BLOCK_BYTES: usize = 4 << 10;

/// Largest `block_bytes` a builder accepts: blocks are read whole, so keep them small.
pub const BLOCK_BYTES_MAX: usize = 4 << 20;

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    /// Target uncompressed size of a data block; a block ends after the entry that reaches it.
    pub block_bytes: usize,
    /// How data blocks are compressed.
    pub compression: Compression,
    /// Bloom filter bits per distinct user key; 0 writes no filter.
    pub bloom_bits_per_key: u32,
}

impl Default for TableOptions {
    fn default() -> TableOptions {
        TableOptions {
            block_bytes: DEFAULT_BLOCK_BYTES,
            compression: Compression::Zstd(DEFAULT_ZSTD_LEVEL),
            bloom_bits_per_key: 10,
        }
    }
}

impl TableOptions {
    /// The table settings of `options`.
    pub fn from_options(options: &crate::Options) -> TableOptions {
        TableOptions {
            block_bytes: options.block_bytes,
            compression: options.compression,
            bloom_bits_per_key: options.bloom_bits_per_key,
        }
    }
}

/// What a table holds, written at build time and read back (verified) on open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableProperties {
    /// Length of the file.
    pub file_size: u64,
    /// Versions in it.
    pub entries: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Smallest and largest seq of any entry; both 0 in an empty table.
    pub min_seq: SeqNo,
    /// See `min_seq`.
    pub max_seq: SeqNo,
    /// Smallest and largest user key; empty in an empty table.
    pub smallest_key: Vec<u8>,
    /// See `smallest_key`.
    pub largest_key: Vec<u8>,
    /// Bytes of stored data blocks, trailers included (the offset of the filter block).
    pub data_bytes: u64,
    /// Stored bytes of the index and filter blocks, trailers excluded.
    pub index_bytes: u64,
    /// See `index_bytes`.
    pub filter_bytes: u64,
    /// Data blocks.
    pub blocks: u64,
    /// The format version it was written in.
    pub format_version: u32,
    /// Sum of user key and value lengths over all entries, before compression.
    pub raw_key_bytes: u64,
    /// See `raw_key_bytes`.
    pub raw_value_bytes: u64,
}

/// One data block as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Internal key (user key, seq) of the block's last entry.
    pub last_key: Vec<u8>,
    /// See `last_key`.
    pub last_seq: SeqNo,
    /// Where the block starts in the file.
    pub offset: u64,
    /// Stored length of the block, trailer excluded.
    pub stored_len: u64,
}

/// Table order of internal keys: user key ascending, then seq descending.
pub(crate) fn internal_cmp(a_key: &[u8], a_seq: SeqNo, b_key: &[u8], b_seq: SeqNo) -> Ordering {
    a_key.cmp(b_key).then(b_seq.cmp(&a_seq))
}
