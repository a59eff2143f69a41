//! An open SSTable: footer, index, filter and properties in memory, data blocks read on
//! demand through the block cache.

use std::cmp::Ordering;
use std::sync::Arc;

use super::block::{Block, Cursor, TRAILER_LEN, unseal, unseal_raw};
use super::bloom::{self, Bloom, FilterStats};
use super::footer::{FOOTER_LEN, Footer, Handle};
use super::{IndexEntry, TableProperties, index, internal_cmp, properties};
use crate::cache::BlockCache;
use crate::error::IoContext;
use crate::fs::File;
use crate::types::{Entry, SeqNo, ValueKind};
use crate::{Error, Result};

/// Immutable; shared via `Arc<Table<F>>`.
pub struct Table<F: File> {
    file: F,
    number: u64,
    cache: Arc<BlockCache>,
    index: Vec<IndexEntry>,
    /// The first 8 bytes of each index entry's last key, big-endian: a point lookup's binary
    /// search compares these, laid out together, and reaches a key (a separate allocation, a
    /// cache miss each) only where the prefixes tie.
    index_prefixes: Vec<u64>,
    filter: Bloom,
    props: TableProperties,
    footer: Footer,
}

/// Reads exactly `len` bytes at `pos`; a short read means the file is shorter than its
/// footer and index say.
async fn read_exact<F: File>(file: &F, pos: u64, len: usize) -> Result<Vec<u8>> {
    let buf = file.read_at(pos, len).await.at(file.path())?;
    if buf.len() != len {
        return Err(Error::corruption(
            file.path(),
            pos,
            format!("short read: {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

/// End of a stored block (its trailer included), if it does not overflow.
fn end_of(h: Handle) -> Option<u64> {
    h.offset.checked_add(h.len)?.checked_add(TRAILER_LEN as u64)
}

/// What `open` keeps in memory.
struct Meta {
    index: Vec<IndexEntry>,
    filter: Bloom,
    props: TableProperties,
    footer: Footer,
}

/// Reads and checks the footer, filter, index and properties blocks.
async fn read_meta<F: File>(file: &F) -> Result<Meta> {
    let path = file.path();
    let file_size = file.len().await.at(path)?;
    let footer_pos = file_size.checked_sub(FOOTER_LEN as u64).ok_or_else(|| {
        Error::corruption(
            path,
            0,
            format!("{file_size} bytes is too short for an SSTable"),
        )
    })?;
    let footer = read_exact(file, footer_pos, FOOTER_LEN).await?;
    let footer = Footer::decode(&footer).map_err(|m| m.at(path, footer_pos))?;

    // The meta blocks follow each other and the footer follows them, exactly.
    let layout_ok = end_of(footer.filter) == Some(footer.index.offset)
        && end_of(footer.index) == Some(footer.properties.offset)
        && end_of(footer.properties) == Some(footer_pos);
    if !layout_ok {
        return Err(Error::corruption(
            path,
            footer_pos,
            format!("footer handles {footer:?} do not fit a {file_size} byte file"),
        ));
    }
    let meta_start = footer.filter.offset;
    let meta = read_exact(file, meta_start, (footer_pos - meta_start) as usize).await?;
    let stored = |h: Handle| -> Result<&[u8]> {
        let start = (h.offset - meta_start) as usize;
        let end = start + h.len as usize + TRAILER_LEN;
        unseal_raw(&meta[start..end]).map_err(|m| m.at(path, h.offset))
    };
    let filter = Bloom::decode(stored(footer.filter)?).map_err(|m| m.at(path, meta_start))?;
    let index = index::decode(stored(footer.index)?, meta_start)
        .map_err(|m| m.at(path, footer.index.offset))?;
    let mut props = properties::decode(stored(footer.properties)?)
        .map_err(|m| m.at(path, footer.properties.offset))?;

    let consistent = props.data_bytes == meta_start
        && props.blocks == index.len() as u64
        && index
            .last()
            .is_none_or(|last| last.last_key == props.largest_key);
    if !consistent {
        return Err(Error::corruption(
            path,
            footer.properties.offset,
            "properties disagree with the index",
        ));
    }
    props.file_size = file_size;
    props.index_bytes = footer.index.len;
    props.filter_bytes = footer.filter.len;
    Ok(Meta {
        index,
        filter,
        props,
        footer,
    })
}

impl<F: File> Table<F> {
    /// Reads and verifies footer, index, filter, properties. `number` identifies the table in
    /// the cache.
    pub async fn open(file: F, number: u64, cache: Arc<BlockCache>) -> Result<Table<F>> {
        let Meta {
            index,
            filter,
            props,
            footer,
        } = read_meta(&file).await?;
        let index_prefixes = index.iter().map(|e| key_prefix(&e.last_key)).collect();
        Ok(Table {
            file,
            number,
            cache,
            index,
            index_prefixes,
            filter,
            props,
            footer,
        })
    }

    /// Its file number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// What it holds, as written at build time (verified on open).
    pub fn properties(&self) -> &TableProperties {
        &self.props
    }

    /// False when its bloom filter rules out the key with this hash.
    pub fn may_contain(&self, key_hash: u64) -> bool {
        self.filter.may_contain(key_hash)
    }

    /// Newest version of `key` with seq <= `snapshot` (tombstones included), or None.
    /// Consults the bloom filter with `key_hash` first.
    pub async fn get(
        &self,
        key: &[u8],
        key_hash: u64,
        snapshot: SeqNo,
    ) -> Result<Option<(SeqNo, Entry)>> {
        debug_assert_eq!(key_hash, bloom::key_hash(key));
        if !self.filter.may_contain(key_hash) {
            return Ok(None);
        }
        // The first block whose last entry is at or after (key, snapshot) holds the answer.
        let i = self.first_block_at_or_after(key, snapshot);
        if i == self.index.len() {
            return Ok(None);
        }
        let block = self.block(i).await?;
        let at = |m: super::coding::Malformed| m.at(self.file.path(), self.index[i].offset);
        let mut cursor = block.seek(key, snapshot).map_err(at)?;
        let found = block.next(&mut cursor).map_err(at)?;
        Ok(found
            .filter(|e| e.key == key)
            .map(|e| (e.seq, e.to_entry())))
    }

    /// Index of the first block whose last entry is at or after `(key, snapshot)` in table
    /// order (the index's length when there is none): a binary search over the key prefixes,
    /// comparing whole keys only where they tie.
    fn first_block_at_or_after(&self, key: &[u8], snapshot: SeqNo) -> usize {
        debug_assert_eq!(self.index_prefixes.len(), self.index.len());
        let prefix = key_prefix(key);
        let before = |i: usize| match self.index_prefixes[i].cmp(&prefix) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => {
                let e = &self.index[i];
                internal_cmp(&e.last_key, e.last_seq, key, snapshot) == Ordering::Less
            }
        };
        let (mut lo, mut hi) = (0, self.index.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Reads every block and checks every checksum (for `sstable-dump --verify`).
    pub async fn verify(&self) -> Result<()> {
        let path = self.file.path();
        let meta = read_meta(&self.file).await?;
        if meta.index != self.index || meta.props != self.props || meta.footer != self.footer {
            return Err(Error::corruption(path, 0, "meta blocks changed since open"));
        }
        let mut seen = TableProperties::default();
        let mut prev: Option<(Vec<u8>, SeqNo)> = None;
        for (i, ie) in self.index.iter().enumerate() {
            let block = self.read_block(i, false).await?;
            let fail = |what: String| Error::corruption(path, ie.offset, what);
            let mut cursor = Cursor::default();
            for j in 0..block.len() {
                let e = block
                    .next(&mut cursor)
                    .map_err(|m| m.at(path, ie.offset))?
                    .ok_or_else(|| fail(format!("block ends before entry {j}")))?;
                let new_key = match &prev {
                    None => {
                        seen.smallest_key = e.key.to_vec();
                        seen.min_seq = e.seq;
                        true
                    }
                    Some((key, seq)) => {
                        if internal_cmp(key, *seq, e.key, e.seq) != Ordering::Less {
                            return Err(fail(format!(
                                "entry {j} out of order with the last block"
                            )));
                        }
                        key.as_slice() != e.key
                    }
                };
                if new_key && !self.filter.may_contain(bloom::key_hash(e.key)) {
                    return Err(fail(format!("bloom filter misses the key of entry {j}")));
                }
                seen.entries += 1;
                seen.tombstones += u64::from(e.kind == ValueKind::Delete);
                seen.min_seq = seen.min_seq.min(e.seq);
                seen.max_seq = seen.max_seq.max(e.seq);
                seen.raw_key_bytes += e.key.len() as u64;
                seen.raw_value_bytes += e.value.len() as u64;
                prev = Some((e.key.to_vec(), e.seq));
            }
            if prev.as_ref() != Some(&(ie.last_key.clone(), ie.last_seq)) {
                return Err(fail(
                    "block's last entry differs from its index entry".into(),
                ));
            }
        }
        let p = &self.props;
        let agree = seen.entries == p.entries
            && seen.tombstones == p.tombstones
            && seen.min_seq == p.min_seq
            && seen.max_seq == p.max_seq
            && seen.raw_key_bytes == p.raw_key_bytes
            && seen.raw_value_bytes == p.raw_value_bytes
            && seen.smallest_key == p.smallest_key
            && prev.map_or(Vec::new(), |(key, _)| key) == p.largest_key;
        if !agree {
            return Err(Error::corruption(
                path,
                p.data_bytes,
                "properties disagree with the data blocks",
            ));
        }
        Ok(())
    }

    /// The entries of data block `i`, read from disk past the cache, each block checked as a
    /// read checks it: for repair, which keeps the blocks of a damaged table that pass.
    pub(crate) async fn block_entries(&self, i: usize) -> Result<Vec<(Vec<u8>, SeqNo, Entry)>> {
        let block = self.read_block(i, false).await?;
        let path = self.file.path();
        let offset = self.index[i].offset;
        let mut cursor = Cursor::default();
        let mut entries = Vec::with_capacity(block.len());
        while let Some(e) = block.next(&mut cursor).map_err(|m| m.at(path, offset))? {
            entries.push((e.key.to_vec(), e.seq, e.to_entry()));
        }
        Ok(entries)
    }

    /// Per-block index view for sstable-dump: (last key, last seq, offset, stored len).
    pub fn index_entries(&self) -> impl Iterator<Item = IndexEntry> + '_ {
        self.index.iter().cloned()
    }

    /// Where the meta blocks are, for sstable-dump.
    pub fn footer(&self) -> Footer {
        self.footer
    }

    /// Bloom filter stats for sstable-dump: bits, hash count, set-bit ratio.
    pub fn filter_stats(&self) -> FilterStats {
        self.filter.stats()
    }

    pub(super) fn path(&self) -> &std::path::Path {
        self.file.path()
    }

    pub(super) fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// Data block `i`, from the cache or from disk (then cached).
    pub(super) async fn block(&self, i: usize) -> Result<Arc<Block>> {
        match self.cached_block(i) {
            Some(block) => Ok(block),
            None => self.read_block(i, true).await,
        }
    }

    /// Reads data block `i` from disk, checked and decoded; cached when `fill_cache`.
    async fn read_block(&self, i: usize, fill_cache: bool) -> Result<Arc<Block>> {
        let ie = &self.index[i];
        let stored = self.read_stored(ie.offset, stored_len(ie)).await?;
        self.decode_block(i, stored, fill_cache)
    }

    /// Data block `i` if the block cache holds it.
    pub(super) fn cached_block(&self, i: usize) -> Option<Arc<Block>> {
        self.cache.get(self.number, self.index[i].offset)
    }

    /// `len` bytes of the file at `pos`: one or more stored blocks.
    pub(super) async fn read_stored(&self, pos: u64, len: u64) -> Result<Vec<u8>> {
        let len = usize::try_from(len)
            .map_err(|_| Error::corruption(self.file.path(), pos, "read length overflows"))?;
        read_exact(&self.file, pos, len).await
    }

    /// Checks and decodes data block `i` from its stored bytes (trailer included); cached
    /// when `fill_cache`.
    pub(super) fn decode_block(
        &self,
        i: usize,
        stored: Vec<u8>,
        fill_cache: bool,
    ) -> Result<Arc<Block>> {
        let ie = &self.index[i];
        let path = self.file.path();
        let raw = unseal(stored).map_err(|m| m.at(path, ie.offset))?;
        let block = Arc::new(Block::decode(raw).map_err(|m| m.at(path, ie.offset))?);
        if fill_cache {
            self.cache
                .insert(self.number, ie.offset, Arc::clone(&block));
        }
        Ok(block)
    }

    /// Bytes of the index and bloom filter this open table keeps in memory.
    pub fn meta_memory_bytes(&self) -> u64 {
        self.props.index_bytes + self.props.filter_bytes
    }
}

/// The first 8 bytes of `key` as a big-endian number, zero-padded: ordered as the keys are,
/// except that keys equal in their first 8 bytes (or differing only by trailing zeros within
/// them) tie and must be compared whole.
fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Bytes a data block takes in the file, its trailer included.
pub(super) fn stored_len(ie: &IndexEntry) -> u64 {
    ie.stored_len + TRAILER_LEN as u64
}

impl<F: File> std::fmt::Debug for Table<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("number", &self.number)
            .field("path", &self.file.path())
            .field("properties", &self.props)
            .finish_non_exhaustive()
    }
}
