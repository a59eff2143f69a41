//! An arena-allocated skiplist with one writer at a time and lock-free readers (LevelDB's and
//! RocksDB's memtable design), with one node per key and a key's later versions chained to it.
//!
//! Why not a general concurrent map: every comparison in a map of `Vec<u8>` keys chases a
//! pointer from the node to the key, and every entry is two or three small allocations that
//! a frozen memtable's drop hands back one by one. Here a node is one block in a large arena
//! chunk holding its header, its tower of links, its key and its first value, so a comparison
//! reads one cache line and dropping the memtable frees a few 2 MiB chunks (huge pages, see
//! [`pages`]).
//!
//! Why one node per key: a write to a key already in the memtable (an overwrite, the common
//! case of a cache or a counter) finds the key's node through the hash index ([`index`]) and
//! adds its version to the front of the node's chain, with no search of the list: a search
//! visits some 25 nodes in random places in memory, each a likely cache miss. Versions of a
//! key are newest first, as table order wants them. The price:
//! a read at an old snapshot walks the key's newer versions one by one, where a list ordered
//! by (key, seq) would search them; reads at the latest seq, the common case, take the newest.
//!
//! Node layout (8-byte aligned, in an arena chunk):
//!
//! | bytes          | field                                                            |
//! |----------------|------------------------------------------------------------------|
//! | 8              | key prefix: first 8 key bytes, big-endian                        |
//! | 8              | newer: the newest chained version, null while there is none      |
//! | 8              | seq of the first (oldest) version                                |
//! | 4              | its value length                                                 |
//! | 2              | key length                                                       |
//! | 1              | its value kind                                                   |
//! | 1              | shape: height (links in the tower, 1..=12), expiry flag          |
//! | 8 × height     | tower: `next` link per level                                     |
//! | 0 or 8         | expires_at_ms of the first version, only with the expiry flag    |
//! | key length     | key                                                              |
//! | value length   | value of the first version                                       |
//!
//! Version layout (a later write of the key):
//!
//! | bytes          | field                                                            |
//! |----------------|------------------------------------------------------------------|
//! | 8              | older: the next older chained version, null: the node's own      |
//! | 8              | seq                                                              |
//! | 4              | value length                                                     |
//! | 1              | value kind                                                       |
//! | 1              | flags: expiry flag                                               |
//! | 2              | padding                                                          |
//! | 0 or 8         | expires_at_ms, only with the expiry flag                         |
//! | value length   | value                                                            |
//!
//! Expiry is stored only when set, and the key length is 16 bits: an always-present expiry and
//! a 4-byte length would add 10 bytes to every node, a large share of a small entry.
//!
//! Concurrency: writers are serialised by a mutex (the DB inserts under its own lock anyway,
//! so it is never contended). A node or version is fully written before a Release store
//! publishes it (a link, or the node's `newer`); a reader follows links and chains with Acquire
//! loads, so it sees complete nodes and versions only. Nothing is ever unlinked or moved, and
//! the arena lives as long as the list, so references obtained from the list are valid for the
//! list's lifetime.

use std::cmp::Ordering;
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering as AtomicOrdering};

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64;

use crate::types::{
    Entry, ExpiresAt, NO_EXPIRY, STORED_KEY_LEN_MAX, SeqNo, VALUE_LEN_MAX, ValueKind,
};

mod index;
mod pages;

use index::{HashIndex, Lookup};
use pages::{HUGE_PAGE_BYTES, Pages};

/// Tallest tower: with a branching factor of 4, 12 levels index ~16M keys at full speed,
/// far more than a memtable holds.
const MAX_HEIGHT: usize = 12;
/// One in `BRANCHING` nodes of a level is promoted to the next.
const BRANCHING: u32 = 4;
/// Arena chunk size: one huge page, so chunk allocation is rare and every chunk can be backed
/// by a single TLB entry.
const CHUNK_BYTES: usize = HUGE_PAGE_BYTES;
/// Allocations larger than this get a chunk of their own, so big values do not waste the rest
/// of a shared chunk.
const LARGE_NODE_BYTES: usize = CHUNK_BYTES / 4;

#[repr(C)]
struct Node {
    /// [`key_prefix`] of the key: most comparisons are decided by this one integer, without
    /// a call to memcmp.
    prefix: u64,
    newer: AtomicPtr<Version>,
    seq: SeqNo,
    value_len: u32,
    key_len: u16,
    kind: ValueKind,
    /// The tower's height in the low bits, [`HAS_EXPIRY`] above them.
    shape: u8,
    /// The tower: `height` links follow the header.
    tower: [AtomicPtr<Node>; 0],
}

#[repr(C)]
struct Version {
    older: *const Version,
    seq: SeqNo,
    value_len: u32,
    kind: ValueKind,
    /// [`HAS_EXPIRY`] or 0.
    flags: u8,
}

/// Bits of [`Node::shape`] holding the height.
const HEIGHT_MASK: u8 = 0x0f;
/// Set in [`Node::shape`] and [`Version::flags`] when an expiry precedes the key or value.
const HAS_EXPIRY: u8 = 0x80;
const EXPIRY_BYTES: usize = size_of::<u64>();

const _: () = assert!(size_of::<Node>() == 32);
const _: () = assert!(size_of::<Version>() == 24);
const _: () = assert!(MAX_HEIGHT <= HEIGHT_MASK as usize);
const _: () = assert!(STORED_KEY_LEN_MAX <= u16::MAX as usize);
const _: () = assert!(VALUE_LEN_MAX <= u32::MAX as usize);
const _: () = assert!(align_of::<Node>() == 8);
const _: () = assert!(align_of::<Version>() == 8);
const _: () = assert!(size_of::<AtomicPtr<Node>>() == 8);

fn expiry_bytes(expires: bool) -> usize {
    if expires { EXPIRY_BYTES } else { 0 }
}

impl Node {
    fn size(height: usize, expires: bool, key_len: usize, value_len: usize) -> usize {
        size_of::<Node>()
            + height * size_of::<AtomicPtr<Node>>()
            + expiry_bytes(expires)
            + key_len
            + value_len
    }

    fn height(&self) -> usize {
        (self.shape & HEIGHT_MASK) as usize
    }

    fn expires(&self) -> bool {
        self.shape & HAS_EXPIRY != 0
    }

    /// Where the expiry (if any) and then the key start: right after the tower.
    fn after_tower(&self) -> *const u8 {
        // SAFETY: the tower is inside the node's allocation, which continues past it.
        unsafe {
            (self as *const Node as *const u8)
                .add(size_of::<Node>() + self.height() * size_of::<AtomicPtr<Node>>())
        }
    }

    fn expires_at_ms(&self) -> ExpiresAt {
        if !self.expires() {
            return NO_EXPIRY;
        }
        // SAFETY: with the flag set, 8 bytes of expiry follow the tower, 8-byte aligned (the
        // node and the header and tower sizes all are), written before publication.
        unsafe { (self.after_tower() as *const u64).read() }
    }

    fn next(&self, level: usize) -> *mut Node {
        debug_assert!(level < self.height());
        // SAFETY: the node was allocated with `height` links after the header, all
        // initialised before the node was published (or, for the head, at creation).
        unsafe { (*self.tower.as_ptr().add(level)).load(AtomicOrdering::Acquire) }
    }

    fn link(&self, level: usize) -> &AtomicPtr<Node> {
        debug_assert!(level < self.height());
        // SAFETY: as in `next`.
        unsafe { &*self.tower.as_ptr().add(level) }
    }

    fn data(&self) -> *const u8 {
        // SAFETY: key and value bytes follow the tower and expiry inside the node's allocation.
        unsafe { self.after_tower().add(expiry_bytes(self.expires())) }
    }

    pub fn key(&self) -> &[u8] {
        // SAFETY: `key_len` bytes of key were written after the tower before publication.
        unsafe { std::slice::from_raw_parts(self.data(), self.key_len as usize) }
    }

    fn value(&self) -> &[u8] {
        // SAFETY: `value_len` bytes of value follow the key, written before publication.
        unsafe {
            std::slice::from_raw_parts(
                self.data().add(self.key_len as usize),
                self.value_len as usize,
            )
        }
    }

    /// The newest chained version, null when the node's own is the only one.
    fn newest(&self) -> *const Version {
        self.newer.load(AtomicOrdering::Acquire)
    }

    /// Key order. `prefix` is `key_prefix(key)`.
    fn cmp_key(&self, prefix: u64, key: &[u8]) -> Ordering {
        self.prefix.cmp(&prefix).then_with(|| self.key().cmp(key))
    }
}

impl Version {
    fn size(expires: bool, value_len: usize) -> usize {
        size_of::<Version>() + expiry_bytes(expires) + value_len
    }

    fn expires(&self) -> bool {
        self.flags & HAS_EXPIRY != 0
    }

    fn after_header(&self) -> *const u8 {
        // SAFETY: the expiry and value follow the header inside the version's allocation.
        unsafe { (self as *const Version as *const u8).add(size_of::<Version>()) }
    }

    fn expires_at_ms(&self) -> ExpiresAt {
        if !self.expires() {
            return NO_EXPIRY;
        }
        // SAFETY: with the flag set, 8 aligned bytes of expiry follow the header, written
        // before publication.
        unsafe { (self.after_header() as *const u64).read() }
    }

    fn value(&self) -> &[u8] {
        // SAFETY: `value_len` bytes follow the header and expiry, written before publication.
        unsafe {
            std::slice::from_raw_parts(
                self.after_header().add(expiry_bytes(self.expires())),
                self.value_len as usize,
            )
        }
    }
}

/// The first 8 bytes of `key`, zero-padded, as a big-endian integer. Order-preserving: if
/// `key_prefix(a) < key_prefix(b)` then `a < b`, and equal prefixes leave the order to the
/// full keys.
fn key_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// One version of one key, borrowed for as long as the list; versions are visited in table
/// order: keys ascending, each key's versions newest first.
#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    node: &'a Node,
    /// The chained version this is, or null for the node's own (its oldest).
    version: *const Version,
}

impl<'a> Cursor<'a> {
    /// The newest version of `node`.
    fn newest(node: &'a Node) -> Cursor<'a> {
        Cursor {
            node,
            version: node.newest(),
        }
    }

    fn chained(&self) -> Option<&'a Version> {
        // SAFETY: a non-null version pointer was published before this cursor read it, and
        // versions live as long as the list.
        unsafe { self.version.as_ref() }
    }

    pub fn key(&self) -> &'a [u8] {
        self.node.key()
    }

    pub fn seq(&self) -> SeqNo {
        self.chained().map_or(self.node.seq, |v| v.seq)
    }

    pub fn entry(&self) -> Entry {
        match self.chained() {
            Some(v) => Entry {
                kind: v.kind,
                expires_at_ms: v.expires_at_ms(),
                value: v.value().to_vec(),
            },
            None => Entry {
                kind: self.node.kind,
                expires_at_ms: self.node.expires_at_ms(),
                value: self.node.value().to_vec(),
            },
        }
    }

    /// The next version in table order: the next older version of this key, else the newest
    /// of the next key.
    pub fn next(&self) -> Option<Cursor<'a>> {
        if let Some(v) = self.chained() {
            return Some(Cursor {
                node: self.node,
                version: v.older,
            });
        }
        // SAFETY: a non-null link points to a published node in the list's arena, which
        // outlives 'a.
        unsafe { self.node.next(0).as_ref() }.map(Cursor::newest)
    }

    /// The newest version of this cursor's key at or below `seq`, from this one on.
    fn at_or_below(self, seq: SeqNo) -> Option<Cursor<'a>> {
        let mut c = self;
        loop {
            if c.seq() <= seq {
                return Some(c);
            }
            let v = c.chained()?;
            c = Cursor {
                node: c.node,
                version: v.older,
            };
        }
    }
}

/// Bump allocator over chunks that never move until the arena drops.
struct Arena {
    chunks: Vec<Pages>,
    /// Bytes of all chunks as mapped: the arena's memory.
    bytes: usize,
    /// Next free byte of the current chunk, and bytes left in it.
    cursor: *mut u8,
    left: usize,
}

impl Arena {
    /// `bytes` of 8-byte aligned memory, uninitialised as far as the caller is concerned.
    fn alloc(&mut self, bytes: usize) -> *mut u8 {
        let bytes = bytes.next_multiple_of(8);
        if bytes > LARGE_NODE_BYTES {
            return self.new_chunk(bytes);
        }
        if bytes > self.left {
            self.cursor = self.new_chunk(CHUNK_BYTES);
            self.left = CHUNK_BYTES;
        }
        let p = self.cursor;
        // SAFETY: `bytes <= left`, so the result stays inside the current chunk.
        self.cursor = unsafe { p.add(bytes) };
        self.left -= bytes;
        p
    }

    fn new_chunk(&mut self, bytes: usize) -> *mut u8 {
        let chunk = Pages::zeroed(bytes);
        self.bytes += chunk.len();
        let p = chunk.as_ptr();
        // Moving `Pages` does not move its mapping, so `p` stays valid.
        self.chunks.push(chunk);
        p
    }

    /// Bytes handed out or lost to the ends of filled chunks: all but the current chunk's
    /// unused rest.
    fn used(&self) -> usize {
        self.bytes - self.left
    }
}

struct Writer {
    arena: Arena,
    rng: u32,
}

/// A version of a key new to the list, checked and hashed by [`SkipList::insert`].
struct NewNode<'a> {
    key: &'a [u8],
    key_len: u16,
    hash: u64,
    seq: SeqNo,
    value_len: u32,
    entry: &'a Entry,
}

pub struct SkipList {
    head: *mut Node,
    /// Height of the tallest tower in use; readers may see a stale value, which only costs
    /// them a level or two of search.
    height: AtomicUsize,
    /// Versions stored.
    len: AtomicUsize,
    /// The arena's chunk bytes and its used bytes, published by the writer for memory
    /// accounting.
    arena_bytes: AtomicUsize,
    used_bytes: AtomicUsize,
    index: HashIndex,
    writer: Mutex<Writer>,
}

// SAFETY: the raw pointers point into the arena owned by `writer`, which is freed only when
// the list drops. Published nodes and versions are immutable except for their links and
// chain heads, which are atomics; all mutation goes through `writer`'s mutex.
unsafe impl Send for SkipList {}
// SAFETY: see `Send`; shared access only reads published nodes through atomics.
unsafe impl Sync for SkipList {}
// SAFETY: the arena is only reached through the mutex that owns it.
unsafe impl Send for Writer {}

impl SkipList {
    /// A list whose point-lookup index has room for about `index_slots` keys (0: none).
    pub fn new(index_slots: usize) -> SkipList {
        let mut arena = Arena {
            chunks: Vec::new(),
            bytes: 0,
            cursor: ptr::null_mut(),
            left: 0,
        };
        let head = arena.alloc(Node::size(MAX_HEIGHT, false, 0, 0)) as *mut Node;
        // SAFETY: `head` is a fresh, aligned allocation big enough for a full tower; chunks
        // are zeroed, so every link starts null.
        unsafe {
            head.write(Node {
                prefix: 0,
                newer: AtomicPtr::new(ptr::null_mut()),
                seq: 0,
                value_len: 0,
                key_len: 0,
                kind: ValueKind::Delete,
                shape: MAX_HEIGHT as u8,
                tower: [],
            });
        }
        SkipList {
            head,
            height: AtomicUsize::new(1),
            len: AtomicUsize::new(0),
            arena_bytes: AtomicUsize::new(arena.bytes),
            used_bytes: AtomicUsize::new(arena.used()),
            index: HashIndex::new(index_slots),
            writer: Mutex::new(Writer {
                arena,
                rng: 0x2545_F491,
            }),
        }
    }

    /// Versions stored.
    pub fn len(&self) -> usize {
        self.len.load(AtomicOrdering::Relaxed)
    }

    fn head(&self) -> &Node {
        // SAFETY: the head lives in the arena for the list's lifetime.
        unsafe { &*self.head }
    }

    /// The first node whose key is at or after `key`, and, if `preds` is given, the last node
    /// before it on every level.
    fn seek(&self, key: &[u8], mut preds: Option<&mut [*mut Node; MAX_HEIGHT]>) -> *mut Node {
        let prefix = key_prefix(key);
        let mut x = self.head();
        let mut level = self.height.load(AtomicOrdering::Relaxed) - 1;
        loop {
            let next = x.next(level);
            // SAFETY: non-null links point to published nodes in the arena.
            match unsafe { next.as_ref() } {
                Some(n) if n.cmp_key(prefix, key) == Ordering::Less => x = n,
                _ => {
                    if let Some(p) = preds.as_deref_mut() {
                        p[level] = x as *const Node as *mut Node;
                    }
                    if level == 0 {
                        return next;
                    }
                    level -= 1;
                }
            }
        }
    }

    /// Starts loading what looking up each of `keys` will touch first: its index slot, then
    /// the node the slot points to. A lookup waits on those two cache misses one after the
    /// other; for a batch, issuing them all up front lets them overlap.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        let hashes: Vec<u64> = keys.iter().map(|k| xxh3_64(k)).collect();
        for &hash in &hashes {
            self.index.prefetch_slot(hash);
        }
        for &hash in &hashes {
            self.index.prefetch_node(hash);
        }
    }

    /// The node of exactly `key`, through the index when it knows.
    fn node_of(&self, key: &[u8]) -> Option<&Node> {
        match self.index.get(xxh3_64(key), key_prefix(key), key) {
            Lookup::Node(node) => Some(node),
            Lookup::Absent => None,
            // SAFETY: a non-null result is a published node in the arena.
            Lookup::Unknown => unsafe { self.seek(key, None).as_ref() }.filter(|n| n.key() == key),
        }
    }

    /// The first version at or after `(key, seq)` in table order: the newest version of `key`
    /// visible at `seq` if there is one, else the newest version of the next key.
    pub fn seek_ge(&self, key: &[u8], seq: SeqNo) -> Option<Cursor<'_>> {
        // SAFETY: a non-null result is a published node in the arena.
        let node = unsafe { self.seek(key, None).as_ref() }?;
        let newest = Cursor::newest(node);
        if node.key() != key {
            return Some(newest);
        }
        newest.at_or_below(seq).or_else(|| {
            // SAFETY: as above.
            unsafe { node.next(0).as_ref() }.map(Cursor::newest)
        })
    }

    /// The newest version of exactly `key` with seq <= `seq`.
    pub fn get(&self, key: &[u8], seq: SeqNo) -> Option<Cursor<'_>> {
        Cursor::newest(self.node_of(key)?).at_or_below(seq)
    }

    /// Bytes of the point-lookup index.
    pub fn index_bytes(&self) -> usize {
        self.index.bytes()
    }

    /// Bytes of the point-lookup index of a list created with `index_slots`.
    pub fn index_bytes_for(index_slots: usize) -> usize {
        HashIndex::bytes_for(index_slots)
    }

    /// Bytes of the arena chunks holding the nodes.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes.load(AtomicOrdering::Relaxed)
    }

    /// Bytes of the arena used by nodes and versions (and lost at the ends of filled chunks):
    /// the arena holds at most one chunk more.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes.load(AtomicOrdering::Relaxed)
    }

    /// Bytes an arena chunk holds: the most an arena allocates beyond the nodes it stores.
    pub const CHUNK_BYTES: usize = CHUNK_BYTES;

    pub fn first(&self) -> Option<Cursor<'_>> {
        // SAFETY: as in `seek_ge`.
        unsafe { self.head().next(0).as_ref() }.map(Cursor::newest)
    }

    /// Inserts one version. `seq` must be above every seq of `key` in the list already: the
    /// chain is newest first, and the DB assigns sequence numbers in the order it inserts.
    pub fn insert(&self, key: &[u8], seq: SeqNo, entry: &Entry) {
        let mut w = self.writer.lock();
        // The DB checks lengths before it writes the log: past them here, the node would lie.
        let key_len =
            u16::try_from(key.len()).expect("key length checked against STORED_KEY_LEN_MAX");
        let value_len =
            u32::try_from(entry.value.len()).expect("value length checked against VALUE_LEN_MAX");
        let hash = xxh3_64(key);
        let mut preds = [self.head; MAX_HEIGHT];
        let existing = match self.index.get(hash, key_prefix(key), key) {
            Lookup::Node(node) => Some(node as *const Node),
            Lookup::Absent | Lookup::Unknown => {
                let next = self.seek(key, Some(&mut preds));
                // SAFETY: a non-null result is a published node in the arena.
                unsafe { next.as_ref() }
                    .filter(|n| n.key() == key)
                    .map(|n| n as *const Node)
            }
        };
        match existing {
            // SAFETY: `node` is a published node in the arena; only this writer changes its
            // chain head.
            Some(node) => self.chain_version(&mut w, unsafe { &*node }, seq, value_len, entry),
            None => {
                let new = NewNode {
                    key,
                    key_len,
                    hash,
                    seq,
                    value_len,
                    entry,
                };
                self.link_node(&mut w, new, &preds);
            }
        }
        self.len.fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// Adds a version at the front of `node`'s chain: an overwrite, with no search of the list.
    fn chain_version(
        &self,
        w: &mut Writer,
        node: &Node,
        seq: SeqNo,
        value_len: u32,
        entry: &Entry,
    ) {
        let newest = Cursor::newest(node).seq();
        assert!(
            seq > newest,
            "memtable version {seq} of a key whose newest is {newest}: sequence numbers \
             must grow"
        );
        let expires = entry.expires_at_ms != NO_EXPIRY;
        let version = w.arena.alloc(Version::size(expires, entry.value.len())) as *mut Version;
        self.publish_usage(&w.arena);
        // SAFETY: `version` is a fresh, aligned allocation of exactly the version's size,
        // written completely here before the Release store publishes it.
        unsafe {
            version.write(Version {
                older: node.newest(),
                seq,
                value_len,
                kind: entry.kind,
                flags: if expires { HAS_EXPIRY } else { 0 },
            });
            let mut at = (version as *mut u8).add(size_of::<Version>());
            if expires {
                (at as *mut u64).write(entry.expires_at_ms);
                at = at.add(EXPIRY_BYTES);
            }
            ptr::copy_nonoverlapping(entry.value.as_ptr(), at, entry.value.len());
        }
        node.newer.store(version, AtomicOrdering::Release);
    }

    /// Adds a node for a key new to the list after `preds` (the last node before it on every
    /// level), and records it in the index.
    fn link_node(&self, w: &mut Writer, new: NewNode<'_>, preds: &[*mut Node; MAX_HEIGHT]) {
        let NewNode {
            key,
            key_len,
            hash,
            seq,
            value_len,
            entry,
        } = new;
        let expires = entry.expires_at_ms != NO_EXPIRY;
        let height = random_height(&mut w.rng);
        let list_height = self.height.load(AtomicOrdering::Relaxed);
        if height > list_height {
            // Levels above the old height start at the head (already in `preds`).
            self.height.store(height, AtomicOrdering::Relaxed);
        }
        let node = w
            .arena
            .alloc(Node::size(height, expires, key.len(), entry.value.len()))
            as *mut Node;
        self.publish_usage(&w.arena);
        // SAFETY: `node` is a fresh, aligned allocation of exactly the node's size, written
        // completely here before any Release store publishes it.
        unsafe {
            node.write(Node {
                prefix: key_prefix(key),
                newer: AtomicPtr::new(ptr::null_mut()),
                seq,
                value_len,
                key_len,
                kind: entry.kind,
                shape: height as u8 | if expires { HAS_EXPIRY } else { 0 },
                tower: [],
            });
            let n = &*node;
            for (level, pred) in preds.iter().enumerate().take(height) {
                n.link(level)
                    .store((**pred).next(level), AtomicOrdering::Relaxed);
            }
            let mut at =
                (node as *mut u8).add(size_of::<Node>() + height * size_of::<AtomicPtr<Node>>());
            if expires {
                (at as *mut u64).write(entry.expires_at_ms);
                at = at.add(EXPIRY_BYTES);
            }
            ptr::copy_nonoverlapping(key.as_ptr(), at, key.len());
            ptr::copy_nonoverlapping(entry.value.as_ptr(), at.add(key.len()), entry.value.len());
            for (level, pred) in preds.iter().enumerate().take(height) {
                (**pred).link(level).store(node, AtomicOrdering::Release);
            }
            self.index.insert(hash, n);
        }
    }

    fn publish_usage(&self, arena: &Arena) {
        self.arena_bytes.store(arena.bytes, AtomicOrdering::Relaxed);
        self.used_bytes.store(arena.used(), AtomicOrdering::Relaxed);
    }
}

/// 1 with probability 3/4, 2 with 3/16, ...: each level holds a quarter of the one below.
fn random_height(rng: &mut u32) -> usize {
    let mut height = 1;
    while height < MAX_HEIGHT && next_random(rng) % BRANCHING == 0 {
        height += 1;
    }
    height
}

/// xorshift32: the height only needs to be unpredictable by key, not secure.
fn next_random(state: &mut u32) -> u32 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    const TEST_INDEX_SLOTS: usize = 1024;

    #[test]
    fn matches_a_btreemap_in_table_order() {
        let list = SkipList::new(TEST_INDEX_SLOTS);
        let mut model = BTreeMap::new();
        let mut rng = 7u32;
        for seq in 1..5000u64 {
            let k = (next_random(&mut rng) % 700).to_be_bytes();
            let value = vec![seq as u8; (seq % 40) as usize];
            // Tombstones, and values with and without an expiry (stored only when set).
            let entry = match seq % 3 {
                0 => Entry::tombstone(),
                1 => Entry {
                    expires_at_ms: 1_700_000_000_000 + seq,
                    ..Entry::put(value)
                },
                _ => Entry::put(value),
            };
            list.insert(&k, seq, &entry);
            model.insert((k.to_vec(), std::cmp::Reverse(seq)), entry);
        }
        assert_eq!(list.len(), model.len());
        let mut got = Vec::new();
        let mut c = list.first();
        while let Some(n) = c {
            got.push((n.key().to_vec(), n.seq(), n.entry()));
            c = n.next();
        }
        let want: Vec<_> = model
            .iter()
            .map(|((k, s), e)| (k.clone(), s.0, e.clone()))
            .collect();
        assert_eq!(got, want);
        for probe in 0..710u32 {
            let k = probe.to_be_bytes();
            for snap in [0, 1, 2500, 10_000] {
                let want = model
                    .range((k.to_vec(), std::cmp::Reverse(snap))..)
                    .next()
                    .map(|((k, s), _)| (k.clone(), s.0));
                let got = list.seek_ge(&k, snap).map(|c| (c.key().to_vec(), c.seq()));
                assert_eq!(got, want, "probe {probe} at {snap}");
                let exact = want.filter(|(wk, _)| wk == &k);
                let got = list.get(&k, snap).map(|c| (c.key().to_vec(), c.seq()));
                assert_eq!(got, exact, "get {probe} at {snap}");
            }
        }
    }

    #[test]
    fn point_lookups_agree_with_the_list_when_the_index_is_full_or_absent() {
        // An index is at least a page (512 slots): for 1000 keys, 4 slots fill at once and
        // lookups fall back to the list; 1000 slots (1024, not a power-of-two length by
        // design but by the page) fill nearly, with probes wrapping around the end; 0 slots:
        // no index at all.
        for slots in [0, 4, 1000, 4096] {
            let list = SkipList::new(slots);
            let mut seq = 0;
            for round in 0..3u64 {
                for k in 0..1000u32 {
                    seq += 1;
                    list.insert(
                        &k.to_be_bytes(),
                        seq,
                        &Entry::put(round.to_le_bytes().to_vec()),
                    );
                }
            }
            for k in 0..1010u32 {
                let key = k.to_be_bytes();
                for snap in [0, 1, 1000, 1001, 2000, 10_000] {
                    let want = list
                        .seek_ge(&key, snap)
                        .filter(|c| c.key() == key)
                        .map(|c| c.seq());
                    assert_eq!(
                        list.get(&key, snap).map(|c| c.seq()),
                        want,
                        "{slots} {k} {snap}"
                    );
                }
            }
        }
    }

    #[test]
    fn prefix_order_agrees_with_key_order() {
        let keys: [&[u8]; 9] = [
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0\0",
            b"a\0\0\0\0\0\0\0\x01",
            b"abcdefgh",
            b"abcdefgha",
        ];
        for a in keys {
            for b in keys {
                if key_prefix(a) != key_prefix(b) {
                    assert_eq!(key_prefix(a).cmp(&key_prefix(b)), a.cmp(b), "{a:?} {b:?}");
                }
            }
        }
        let list = SkipList::new(TEST_INDEX_SLOTS);
        for (seq, k) in keys.iter().rev().enumerate() {
            list.insert(k, seq as u64 + 1, &Entry::tombstone());
        }
        let mut c = list.first();
        for k in keys {
            let n = c.unwrap();
            assert_eq!(n.key(), k);
            c = n.next();
        }
        assert!(c.is_none());
    }

    #[test]
    fn large_values_and_empty_keys() {
        let list = SkipList::new(TEST_INDEX_SLOTS);
        let big = vec![0xABu8; 3 * LARGE_NODE_BYTES];
        list.insert(b"", 1, &Entry::tombstone());
        list.insert(b"big", 2, &Entry::put(big.clone()));
        list.insert(b"small", 3, &Entry::put(b"v".to_vec()));
        assert_eq!(list.seek_ge(b"", 10).map(|c| c.seq()), Some(1));
        let b = list.seek_ge(b"big", 10).unwrap();
        assert_eq!(b.entry().value, big);
        assert_eq!(b.next().unwrap().entry().value, b"v");
    }

    #[test]
    fn readers_see_whole_version_chains_while_a_writer_overwrites() {
        const KEYS: u64 = 2_000;
        const ROUNDS: u64 = 5;
        let list = Arc::new(SkipList::new(TEST_INDEX_SLOTS));
        let writer = {
            let list = list.clone();
            std::thread::spawn(move || {
                for seq in 1..=KEYS * ROUNDS {
                    let k = (seq * 7919 % KEYS).to_be_bytes();
                    list.insert(&k, seq, &Entry::put(seq.to_le_bytes().to_vec()));
                }
            })
        };
        // Every version a reader reaches is complete (its value is its seq), and each key's
        // versions come newest first, keys in order.
        let check = || {
            let mut count = 0u64;
            let mut prev: Option<(Vec<u8>, SeqNo)> = None;
            let mut c = list.first();
            while let Some(n) = c {
                assert_eq!(n.entry().value, n.seq().to_le_bytes());
                if let Some((key, seq)) = &prev {
                    assert!(key.as_slice() < n.key() || (key == n.key() && *seq > n.seq()));
                }
                prev = Some((n.key().to_vec(), n.seq()));
                count += 1;
                c = n.next();
            }
            count
        };
        while !writer.is_finished() {
            assert!(check() <= KEYS * ROUNDS);
        }
        writer.join().unwrap();
        assert_eq!(check(), KEYS * ROUNDS);
        assert_eq!(list.len() as u64, KEYS * ROUNDS);
    }

    #[test]
    #[should_panic(expected = "sequence numbers must grow")]
    fn an_older_version_of_a_key_is_refused() {
        let list = SkipList::new(TEST_INDEX_SLOTS);
        list.insert(b"k", 5, &Entry::put(b"new".to_vec()));
        list.insert(b"k", 4, &Entry::put(b"old".to_vec()));
    }

    #[test]
    fn readers_run_while_a_writer_inserts() {
        const KEYS: u64 = 20_000;
        let list = Arc::new(SkipList::new(TEST_INDEX_SLOTS));
        let writer = {
            let list = list.clone();
            std::thread::spawn(move || {
                for i in 0..KEYS {
                    let k = (i * 7919 % KEYS).to_be_bytes();
                    list.insert(&k, i + 1, &Entry::put(k.to_vec()));
                }
            })
        };
        // Every node a reader reaches is complete and in order, while inserts go on and
        // once they are done.
        let check = || {
            let mut count = 0u64;
            let mut prev: Option<Vec<u8>> = None;
            let mut c = list.first();
            while let Some(n) = c {
                assert_eq!(n.entry().value, n.key());
                if let Some(p) = &prev {
                    assert!(p.as_slice() < n.key());
                }
                prev = Some(n.key().to_vec());
                count += 1;
                c = n.next();
            }
            count
        };
        while !writer.is_finished() {
            assert!(check() <= KEYS);
        }
        assert_eq!(check(), KEYS);
        writer.join().unwrap();
    }
}
