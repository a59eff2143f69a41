//! Dumping one SSTable: footer, properties, bloom filter, index, entries.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use futures_lite::future::block_on;
use shoal_engine::Error;
use shoal_engine::cache::BlockCache;
use shoal_engine::fs::{FileSystem, StdFs};
use shoal_engine::sstable::{Handle, Table, TableIter};

use super::escape::quoted;
use super::{DumpError, DumpOptions, write_entry};

/// Blocks kept while dumping: one table is read front to back once.
const CACHE_BYTES: usize = 4 << 20;

/// Prints the table at `path`. With `verify`, reads every block first and fails on damage.
pub fn dump_table(path: &Path, opts: &DumpOptions, out: &mut impl Write) -> Result<(), DumpError> {
    block_on(async {
        let file = StdFs.open(path).await.map_err(|e| Error::io(path, e))?;
        let cache = Arc::new(BlockCache::new(CACHE_BYTES));
        let table = Arc::new(Table::open(file, 0, cache).await?);
        let p = table.properties();
        let f = table.footer();
        let handle = |h: Handle| format!("offset {} length {}", h.offset, h.len);
        writeln!(out, "sstable {}", path.display())?;
        writeln!(out, "footer:")?;
        writeln!(out, "  filter:     {}", handle(f.filter))?;
        writeln!(out, "  index:      {}", handle(f.index))?;
        writeln!(out, "  properties: {}", handle(f.properties))?;
        writeln!(out, "properties:")?;
        writeln!(out, "  format version: {}", p.format_version)?;
        writeln!(out, "  file size: {}", p.file_size)?;
        writeln!(out, "  entries: {}", p.entries)?;
        writeln!(out, "  tombstones: {}", p.tombstones)?;
        writeln!(out, "  seq: {}..={}", p.min_seq, p.max_seq)?;
        writeln!(
            out,
            "  smallest key: {}",
            quoted(&p.smallest_key, usize::MAX)
        )?;
        writeln!(out, "  largest key: {}", quoted(&p.largest_key, usize::MAX))?;
        writeln!(out, "  raw key bytes: {}", p.raw_key_bytes)?;
        writeln!(out, "  raw value bytes: {}", p.raw_value_bytes)?;
        writeln!(
            out,
            "  data blocks: {} ({} bytes stored)",
            p.blocks, p.data_bytes
        )?;
        let b = table.filter_stats();
        writeln!(out, "bloom filter:")?;
        writeln!(out, "  bits: {}", b.bits)?;
        writeln!(out, "  hash functions: {}", b.hash_count)?;
        writeln!(out, "  bits set: {:.1}%", b.set_bit_ratio * 100.0)?;
        if p.entries > 0 {
            writeln!(
                out,
                "  bits per entry: {:.1}",
                b.bits as f64 / p.entries as f64
            )?;
        }
        writeln!(out, "index: {} blocks", p.blocks)?;
        for (i, e) in table.index_entries().enumerate() {
            writeln!(
                out,
                "  block {i}: offset {} length {} last key {} seq {}",
                e.offset,
                e.stored_len,
                quoted(&e.last_key, opts.value_bytes),
                e.last_seq
            )?;
        }
        if opts.verify {
            table.verify().await?;
            writeln!(
                out,
                "verify: ok, every block checksum and the properties agree"
            )?;
        }
        dump_entries(&table, opts, out).await
    })
}

async fn dump_entries(
    table: &Arc<Table<<StdFs as FileSystem>::File>>,
    opts: &DumpOptions,
    out: &mut impl Write,
) -> Result<(), DumpError> {
    writeln!(out, "entries:")?;
    let mut it = TableIter::new(Arc::clone(table));
    if let Some(key) = &opts.key {
        it.seek(key).await?;
    }
    let mut printed = 0u64;
    while opts.limit.is_none_or(|l| printed < l) {
        let Some((key, seq, entry)) = it.next().await? else {
            break;
        };
        if !opts.wants_key(&key) {
            // Seeking put us at the key: anything else is past it.
            break;
        }
        write_entry(out, &key, seq, &entry, opts.value_bytes)?;
        printed += 1;
    }
    Ok(())
}
