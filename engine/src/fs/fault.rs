//! An in-memory file system that models a disk's durability and injects faults, for the
//! engine's crash and property tests.
//!
//! The model, per file (an inode): *durable* contents (what survives power loss) and *current*
//! contents (what reads see), plus the list of writes and truncations made since the last
//! [`File::sync_data`]. Per name: a *current* namespace and a *durable* namespace. Creating,
//! renaming and removing change the current namespace; [`FileSystem::sync_dir`] copies the
//! entries of one directory (files and subdirectories) into the durable namespace. Directories
//! themselves are entries of their parent, so a new directory survives a crash only once its
//! parent is synced; the root (`/` or the empty path) always exists.
//!
//! [`FaultFs::crash`] is power loss at this instant: the durable namespace becomes the current
//! one (entries whose parent directory did not survive are dropped), and each surviving file
//! gets its durable contents plus a seeded-random prefix of its unsynced operations, the last
//! kept write possibly torn at an arbitrary byte. [`FaultFs::crash_lose_unsynced`] keeps no
//! unsynced operation at all. Handles opened before a crash fail every later call with EBADF.
//!
//! Faults: [`FaultRule`]s fail chosen calls with EIO or ENOSPC, and [`FaultFs::set_capacity`]
//! makes writes that would grow the disk past a byte limit fail with ENOSPC. A call failed by
//! a fault changes nothing: a failed write leaves the file unchanged (tearing is modelled only
//! by crashes), a failed `sync_data` leaves its writes unsynced, a failed `sync_dir` makes
//! nothing durable. Rules and capacity survive crashes.
//!
//! A rename across directories needs both directories synced; syncing only the target leaves
//! the file under both names after a crash (the conservative POSIX reading).
//!
//! Unix semantics the engine may rely on are kept: a removed file stays readable through
//! handles opened before the removal; `create` of an existing file truncates the same file.
//! Only files can be renamed or removed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{File, FileSystem, assert_aligned_write};

/// Largest file length: files live in memory, so anything bigger is a bug in the caller
/// (e.g. an offset decoded from corrupt bytes), reported as EFBIG rather than an abort.
pub const FILE_LEN_MAX: u64 = 1 << 32;

/// The kind of call a [`FaultRule`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `create` and `open`.
    Open,
    /// `File::read_at`.
    Read,
    /// `write_at` and `set_len`.
    Write,
    /// `sync_data`.
    Sync,
    /// Matches a rename when either path contains the rule's substring.
    Rename,
    /// `FileSystem::remove`.
    Remove,
    /// `FileSystem::sync_dir`.
    SyncDir,
}

/// The error a [`FaultRule`] returns, as a raw OS error so `Error::io` classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// EIO.
    Eio,
    /// ENOSPC.
    NoSpace,
}

impl FaultError {
    fn to_io(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            FaultError::Eio => libc::EIO,
            FaultError::NoSpace => libc::ENOSPC,
        })
    }
}

/// Fails matching calls. By default the first matching call on any path, once.
#[derive(Debug, Clone)]
pub struct FaultRule {
    op: FaultOp,
    error: FaultError,
    path_contains: Option<String>,
    skip: u64,
    persistent: bool,
}

impl FaultRule {
    /// A rule failing every `op` with `error`; narrowed by its builder methods.
    pub fn new(op: FaultOp, error: FaultError) -> FaultRule {
        FaultRule {
            op,
            error,
            path_contains: None,
            skip: 0,
            persistent: false,
        }
    }

    /// Matches only calls on a path containing `substring`.
    pub fn on_path(mut self, substring: impl Into<String>) -> FaultRule {
        self.path_contains = Some(substring.into());
        self
    }

    /// Lets the first `n` matching calls succeed.
    pub fn after(mut self, n: u64) -> FaultRule {
        self.skip = n;
        self
    }

    /// Keeps failing every matching call instead of only the first.
    pub fn persistent(mut self) -> FaultRule {
        self.persistent = true;
        self
    }

    fn matches(&self, op: FaultOp, paths: &[&Path]) -> bool {
        self.op == op
            && match &self.path_contains {
                None => true,
                Some(s) => paths
                    .iter()
                    .any(|p| p.to_string_lossy().contains(s.as_str())),
            }
    }
}

/// The in-memory, fault-injecting file system. Clones share one disk.
#[derive(Debug, Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

/// A handle on a [`FaultFs`] file. Dead (every call fails) after a crash.
#[derive(Debug)]
pub struct FaultFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    generation: u64,
    path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug)]
enum Pending {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Operations since the last sync, in call order; replayed partly by a crash.
    pending: Vec<Pending>,
    /// Live handles; an unlinked file is kept while one is open.
    open: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every crash; handles from an older generation are dead.
    generation: u64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    current: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    rules: Vec<FaultRule>,
    capacity: Option<u64>,
    faults_fired: u64,
}

fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p.parent().is_none()
}

/// The directory holding `p`, as the namespace keys it.
fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn write_into(buf: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let start = usize::try_from(pos).unwrap_or(usize::MAX);
    let end = start.saturating_add(data.len());
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

fn set_len_of(buf: &mut Vec<u8>, len: u64) {
    buf.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
}

/// splitmix64: tiny, seedable, and good enough to pick crash outcomes reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        self.next() % (max.saturating_add(1)).max(1)
    }
}

impl State {
    fn check_fault(&mut self, op: FaultOp, paths: &[&Path]) -> io::Result<()> {
        for i in 0..self.rules.len() {
            let rule = &mut self.rules[i];
            if !rule.matches(op, paths) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            let error = rule.error;
            if !rule.persistent {
                self.rules.remove(i);
            }
            self.faults_fired += 1;
            return Err(error.to_io());
        }
        Ok(())
    }

    /// Every name points at a stored file; checked after namespace changes.
    fn names_resolve(&self) -> bool {
        [&self.current, &self.durable].iter().all(|ns| {
            ns.values().all(|n| match n {
                Node::File(id) => self.inodes.contains_key(id),
                Node::Dir => true,
            })
        })
    }

    fn is_dir(&self, p: &Path) -> bool {
        is_root(p) || self.current.get(p) == Some(&Node::Dir)
    }

    fn file_at(&self, p: &Path) -> io::Result<u64> {
        match self.current.get(p) {
            Some(Node::File(id)) => Ok(*id),
            Some(Node::Dir) => Err(errno(libc::EISDIR)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    /// Bytes counted against the capacity: every file reachable by name or by an open handle.
    fn used_bytes(&self) -> u64 {
        self.inodes
            .iter()
            .filter(|(id, inode)| inode.open > 0 || self.named(**id))
            .map(|(_, inode)| inode.current.len() as u64)
            .sum()
    }

    fn named(&self, id: u64) -> bool {
        self.current.values().any(|n| *n == Node::File(id))
    }

    /// Drops an inode nothing can reach any more: no name (current or durable), no handle.
    fn collect(&mut self, id: u64) {
        let reachable = self.named(id)
            || self.durable.values().any(|n| *n == Node::File(id))
            || self.inodes.get(&id).is_some_and(|i| i.open > 0);
        if !reachable {
            self.inodes.remove(&id);
        }
    }

    fn check_growth(&self, id: u64, new_len: u64) -> io::Result<()> {
        let Some(capacity) = self.capacity else {
            return Ok(());
        };
        let old_len = self.inodes.get(&id).map_or(0, |i| i.current.len() as u64);
        let grown = self.used_bytes() + new_len.saturating_sub(old_len);
        if new_len > old_len && grown > capacity {
            return Err(errno(libc::ENOSPC));
        }
        Ok(())
    }

    fn open_handle(&mut self, state: &Arc<Mutex<State>>, id: u64, path: &Path) -> FaultFile {
        if let Some(inode) = self.inodes.get_mut(&id) {
            inode.open += 1;
        }
        FaultFile {
            state: Arc::clone(state),
            inode: id,
            generation: self.generation,
            path: path.to_owned(),
        }
    }

    fn crash(&mut self, mut rng: Option<Rng>) {
        self.generation += 1;
        let mut survivors = BTreeMap::new();
        // Parents sort before their children, so one pass sees each parent's fate first.
        for (path, node) in &self.durable {
            let parent = parent_of(path);
            if is_root(parent) || survivors.get(parent) == Some(&Node::Dir) {
                survivors.insert(path.clone(), *node);
            }
        }
        self.inodes
            .retain(|id, _| survivors.values().any(|n| *n == Node::File(*id)));
        for inode in self.inodes.values_mut() {
            let mut contents = std::mem::take(&mut inode.durable);
            if let Some(rng) = rng.as_mut() {
                let keep = rng.up_to(inode.pending.len() as u64) as usize;
                for (i, op) in inode.pending[..keep].iter().enumerate() {
                    match op {
                        Pending::SetLen(len) => set_len_of(&mut contents, *len),
                        Pending::Write { pos, data } => {
                            let last = i + 1 == keep;
                            let torn = if last && rng.next() % 2 == 0 {
                                rng.up_to(data.len().saturating_sub(1) as u64) as usize
                            } else {
                                data.len()
                            };
                            write_into(&mut contents, *pos, &data[..torn]);
                        }
                    }
                }
            }
            inode.current = contents.clone();
            inode.durable = contents;
            inode.pending.clear();
            inode.open = 0;
        }
        self.current = survivors.clone();
        self.durable = survivors;
        debug_assert!(self.names_resolve());
        debug_assert!(self.inodes.values().all(|i| i.pending.is_empty()));
    }
}

impl FaultFs {
    /// An empty file system holding only `/`.
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    /// Power loss now: unsynced writes reach the disk as a seeded-random prefix per file, the
    /// last kept write possibly torn. The same operations and seed give the same disk.
    pub fn crash(&self, seed: u64) {
        self.state.lock().crash(Some(Rng(seed)));
    }

    /// Power loss now, keeping no unsynced write at all.
    pub fn crash_lose_unsynced(&self) {
        self.state.lock().crash(None);
    }

    /// Adds a fault rule; rules are checked in the order added, and the first that fires wins.
    pub fn inject(&self, rule: FaultRule) {
        self.state.lock().rules.push(rule);
    }

    /// Removes every fault rule (the capacity stays).
    pub fn clear_faults(&self) {
        self.state.lock().rules.clear();
    }

    /// How many calls the rules have failed so far.
    pub fn faults_fired(&self) -> u64 {
        self.state.lock().faults_fired
    }

    /// Writes that would grow [`FaultFs::total_bytes`] past `bytes` fail with ENOSPC; `None`
    /// removes the limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Flips every bit of the byte at `offset`, in both the current and durable contents:
    /// damage on the medium.
    pub fn corrupt(&self, path: &Path, offset: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        let id = st.file_at(path)?;
        let inode = st.inodes.get_mut(&id).ok_or_else(|| errno(libc::ENOENT))?;
        let at = usize::try_from(offset).map_err(|_| errno(libc::EINVAL))?;
        if at >= inode.current.len() {
            return Err(errno(libc::EINVAL));
        }
        for buf in [&mut inode.current, &mut inode.durable] {
            if let Some(b) = buf.get_mut(at) {
                *b ^= 0xFF;
            }
        }
        Ok(())
    }

    /// The whole current contents of a file.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.state.lock();
        let id = st.file_at(path)?;
        Ok(st
            .inodes
            .get(&id)
            .map(|i| i.current.clone())
            .unwrap_or_default())
    }

    /// Paths of every file in the current namespace, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let st = self.state.lock();
        st.current
            .iter()
            .filter(|(_, n)| matches!(n, Node::File(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Bytes in use: the current length of every file reachable by name or an open handle.
    pub fn total_bytes(&self) -> u64 {
        self.state.lock().used_bytes()
    }
}

impl FileSystem for FaultFs {
    type File = FaultFile;

    async fn create(&self, path: &Path) -> io::Result<FaultFile> {
        let mut st = self.state.lock();
        st.check_fault(FaultOp::Open, &[path])?;
        if !st.is_dir(parent_of(path)) {
            return Err(errno(libc::ENOENT));
        }
        let id = match st.current.get(path) {
            Some(Node::Dir) => return Err(errno(libc::EISDIR)),
            Some(Node::File(id)) => {
                let id = *id;
                if let Some(inode) = st.inodes.get_mut(&id) {
                    inode.current.clear();
                    inode.pending.push(Pending::SetLen(0));
                }
                id
            }
            None => {
                let id = st.next_inode;
                st.next_inode += 1;
                st.inodes.insert(id, Inode::default());
                st.current.insert(path.to_owned(), Node::File(id));
                id
            }
        };
        Ok(st.open_handle(&self.state, id, path))
    }

    async fn open(&self, path: &Path) -> io::Result<FaultFile> {
        let mut st = self.state.lock();
        st.check_fault(FaultOp::Open, &[path])?;
        let id = st.file_at(path)?;
        Ok(st.open_handle(&self.state, id, path))
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_fault(FaultOp::Remove, &[path])?;
        let id = st.file_at(path)?;
        st.current.remove(path);
        st.collect(id);
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_fault(FaultOp::Rename, &[from, to])?;
        let id = st.file_at(from)?;
        if !st.is_dir(parent_of(to)) {
            return Err(errno(libc::ENOENT));
        }
        if from == to {
            return Ok(());
        }
        let replaced = match st.current.get(to) {
            Some(Node::Dir) => return Err(errno(libc::EISDIR)),
            Some(Node::File(old)) => Some(*old),
            None => None,
        };
        st.current.remove(from);
        st.current.insert(to.to_owned(), Node::File(id));
        if let Some(old) = replaced {
            st.collect(old);
        }
        debug_assert!(st.names_resolve());
        Ok(())
    }

    async fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_fault(FaultOp::Rename, &[from, to])?;
        let id = st.file_at(from)?;
        if !st.is_dir(parent_of(to)) {
            return Err(errno(libc::ENOENT));
        }
        if st.current.contains_key(to) {
            return Err(errno(libc::EEXIST));
        }
        st.current.insert(to.to_owned(), Node::File(id));
        Ok(())
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        if !st.is_dir(dir) {
            return Err(errno(libc::ENOENT));
        }
        Ok(st
            .current
            .keys()
            .filter(|p| parent_of(p) == dir)
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let mut missing = Vec::new();
        for ancestor in dir.ancestors().filter(|p| !is_root(p)) {
            match st.current.get(ancestor) {
                Some(Node::Dir) => break,
                Some(Node::File(_)) => return Err(errno(libc::ENOTDIR)),
                None => missing.push(ancestor.to_owned()),
            }
        }
        for p in missing {
            st.current.insert(p, Node::Dir);
        }
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_fault(FaultOp::SyncDir, &[dir])?;
        if !st.is_dir(dir) {
            return Err(errno(libc::ENOENT));
        }
        let State {
            current, durable, ..
        } = &mut *st;
        let mut forgotten = Vec::new();
        durable.retain(|p, node| {
            let keep = parent_of(p) != dir || current.contains_key(p);
            if let (false, Node::File(id)) = (keep, node) {
                forgotten.push(*id);
            }
            keep
        });
        for (p, node) in current.iter().filter(|(p, _)| parent_of(p) == dir) {
            if let Some(Node::File(old)) = durable.insert(p.clone(), *node) {
                forgotten.push(old);
            }
        }
        for id in forgotten {
            st.collect(id);
        }
        debug_assert!(st.names_resolve());
        Ok(())
    }
}

impl FaultFile {
    /// Locks the disk, failing if this handle died in a crash.
    fn live(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let st = self.state.lock();
        if st.generation != self.generation {
            return Err(errno(libc::EBADF));
        }
        Ok(st)
    }
}

impl File for FaultFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut st = self.live()?;
        st.check_fault(FaultOp::Read, &[&self.path])?;
        let data = st
            .inodes
            .get(&self.inode)
            .map(|i| i.current.as_slice())
            .unwrap_or_default();
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    async fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()> {
        assert_aligned_write(pos, buf.len());
        let mut st = self.live()?;
        st.check_fault(FaultOp::Write, &[&self.path])?;
        let end = pos
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= FILE_LEN_MAX)
            .ok_or_else(|| errno(libc::EFBIG))?;
        let cur_len = st
            .inodes
            .get(&self.inode)
            .map_or(0, |i| i.current.len() as u64);
        st.check_growth(self.inode, end.max(cur_len))?;
        let inode = st
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| errno(libc::EBADF))?;
        write_into(&mut inode.current, pos, buf);
        inode.pending.push(Pending::Write {
            pos,
            data: buf.to_vec(),
        });
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        let mut st = self.live()?;
        st.check_fault(FaultOp::Sync, &[&self.path])?;
        if let Some(inode) = st.inodes.get_mut(&self.inode) {
            inode.durable = inode.current.clone();
            inode.pending.clear();
        }
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        let st = self.live()?;
        Ok(st
            .inodes
            .get(&self.inode)
            .map_or(0, |i| i.current.len() as u64))
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.live()?;
        st.check_fault(FaultOp::Write, &[&self.path])?;
        if len > FILE_LEN_MAX {
            return Err(errno(libc::EFBIG));
        }
        st.check_growth(self.inode, len)?;
        let inode = st
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| errno(libc::EBADF))?;
        set_len_of(&mut inode.current, len);
        inode.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FaultFile {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if st.generation != self.generation {
            return;
        }
        if let Some(inode) = st.inodes.get_mut(&self.inode) {
            inode.open = inode.open.saturating_sub(1);
        }
        st.collect(self.inode);
    }
}

#[cfg(test)]
mod tests;
