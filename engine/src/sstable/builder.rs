//! Writes a table from entries arriving in table order.

use std::cmp::Ordering;

use super::block::{BlockBuilder, seal};
use super::footer::{FOOTER_LEN, Footer, Handle};
use super::{
    BLOCK_BYTES_MAX, FORMAT_VERSION, IndexEntry, TableOptions, TableProperties, bloom, index,
    internal_cmp, properties,
};
use crate::Result;
use crate::error::IoContext;
use crate::fs::{File, WRITE_ALIGN};
use crate::options::Compression;
use crate::types::{Entry, SeqNo, ValueKind, check_key, check_value};

/// Output is written in chunks of about this size: large enough for sequential bandwidth,
/// small enough to bound the builder's memory.
const FLUSH_BYTES: usize = 256 << 10;
const _: () = assert!(FLUSH_BYTES % WRITE_ALIGN == 0);

/// Builds one SSTable. After an error the builder must be dropped and the file removed.
pub struct TableBuilder<F: File> {
    file: F,
    options: TableOptions,
    /// Created with the first block when compression is on.
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Encoded bytes not yet written; they start at file offset `written`.
    out: Vec<u8>,
    /// Bytes written to the file, always a multiple of `WRITE_ALIGN`.
    written: u64,
    block: BlockBuilder,
    index: Vec<IndexEntry>,
    /// One hash per distinct user key, for the filter.
    key_hashes: Vec<u64>,
    /// Internal key of the last entry added (meaningless while the table is empty).
    last_key: Vec<u8>,
    last_seq: SeqNo,
    props: TableProperties,
}

impl<F: File> TableBuilder<F> {
    /// A builder writing into `file`, which it owns until [`TableBuilder::finish`].
    pub fn new(file: F, options: TableOptions) -> Self {
        assert!(
            (1..=BLOCK_BYTES_MAX).contains(&options.block_bytes),
            "block_bytes {} out of range",
            options.block_bytes
        );
        TableBuilder {
            file,
            options,
            compressor: None,
            out: Vec::with_capacity(FLUSH_BYTES + options.block_bytes),
            written: 0,
            block: BlockBuilder::default(),
            index: Vec::new(),
            key_hashes: Vec::new(),
            last_key: Vec::new(),
            last_seq: 0,
            props: TableProperties {
                format_version: FORMAT_VERSION,
                ..TableProperties::default()
            },
        }
    }

    /// Keys must arrive in table order (asserted): user key asc, seq desc.
    pub async fn add(&mut self, key: &[u8], seq: SeqNo, entry: &Entry) -> Result<()> {
        check_key(key)?;
        check_value(&entry.value)?;
        let first = self.props.entries == 0;
        if first {
            self.props.smallest_key = key.to_vec();
            self.props.min_seq = seq;
            self.props.max_seq = seq;
        } else {
            assert_eq!(
                internal_cmp(&self.last_key, self.last_seq, key, seq),
                Ordering::Less,
                "entries out of table order"
            );
        }
        if first || self.last_key != key {
            self.last_key.clear();
            self.last_key.extend_from_slice(key);
            self.key_hashes.push(bloom::key_hash(key));
        }
        self.last_seq = seq;
        let p = &mut self.props;
        p.entries += 1;
        p.tombstones += u64::from(entry.kind == ValueKind::Delete);
        p.min_seq = p.min_seq.min(seq);
        p.max_seq = p.max_seq.max(seq);
        p.raw_key_bytes += key.len() as u64;
        p.raw_value_bytes += entry.value.len() as u64;

        self.block.add(key, seq, entry);
        if self.block.size() >= self.options.block_bytes {
            self.finish_block()?;
        }
        if self.out.len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Bytes written so far plus the pending block (for splitting compaction output).
    pub fn estimated_size(&self) -> u64 {
        let pending = if self.block.is_empty() {
            0
        } else {
            self.block.size()
        };
        self.written + (self.out.len() + pending) as u64
    }

    /// True before the first entry.
    pub fn is_empty(&self) -> bool {
        self.props.entries == 0
    }

    /// Offset the next byte appended to `out` will have in the file.
    fn position(&self) -> u64 {
        self.written + self.out.len() as u64
    }

    fn finish_block(&mut self) -> Result<()> {
        let path = self.file.path();
        if let (Compression::Zstd(level), None) = (self.options.compression, &self.compressor) {
            self.compressor = Some(zstd::bulk::Compressor::new(level).at(path)?);
        }
        let raw = self.block.finish();
        let offset = self.position();
        let stored_len = seal(&mut self.out, &raw, self.compressor.as_mut()).at(path)?;
        self.index.push(IndexEntry {
            last_key: self.last_key.clone(),
            last_seq: self.last_seq,
            offset,
            stored_len,
        });
        Ok(())
    }

    /// Writes the aligned prefix of `out`.
    async fn flush(&mut self) -> Result<()> {
        let n = self.out.len() / WRITE_ALIGN * WRITE_ALIGN;
        if n == 0 {
            return Ok(());
        }
        self.file
            .write_at(self.written, &self.out[..n])
            .await
            .at(self.file.path())?;
        self.out.drain(..n);
        self.written += n as u64;
        Ok(())
    }

    /// Appends a raw meta block and returns its handle.
    fn add_meta_block(&mut self, raw: &[u8]) -> Result<Handle> {
        let offset = self.position();
        let len = seal(&mut self.out, raw, None).at(self.file.path())?;
        Ok(Handle { offset, len })
    }

    /// Writes filter, index, properties, footer; truncates to the exact size; fdatasyncs.
    pub async fn finish(mut self) -> Result<TableProperties> {
        if !self.block.is_empty() {
            self.finish_block()?;
        }
        self.props.data_bytes = self.position();
        self.props.blocks = self.index.len() as u64;
        self.props.largest_key = self.last_key.clone();

        let filter = bloom::build(&self.key_hashes, self.options.bloom_bits_per_key);
        let filter = self.add_meta_block(&filter)?;
        let index = self.add_meta_block(&index::encode(&self.index))?;
        let properties = self.add_meta_block(&properties::encode(&self.props))?;
        let footer = Footer {
            filter,
            index,
            properties,
        };
        self.out.extend_from_slice(&footer.encode());
        let file_size = self.position();
        debug_assert_eq!(
            file_size,
            properties.offset + properties.len + (super::block::TRAILER_LEN + FOOTER_LEN) as u64
        );

        let padded = self.out.len().next_multiple_of(WRITE_ALIGN);
        self.out.resize(padded, 0);
        self.flush().await?;
        debug_assert!(self.out.is_empty());
        let path = self.file.path();
        self.file.set_len(file_size).await.at(path)?;
        self.file.sync_data().await.at(path)?;

        self.props.file_size = file_size;
        self.props.index_bytes = index.len;
        self.props.filter_bytes = filter.len;
        Ok(self.props)
    }
}
