//! The filesystem core: every operation of the mount, with no FUSE types, so it is tested without
//! FUSE in the loop.
//!
//! Locks, always taken in this order and never held across remote calls (this is the one place
//! the order is written):
//! 1. `retention` (one retention at a time), by the retention worker and publishes only; it is
//!    held across store calls, and nothing below it waits for it;
//! 2. the namespace's writer (the journal, `namespace.rs`), held by a mutation from its decision
//!    to its apply;
//! 3. the namespace's table (a read-write lock): shared by reads, taken for writing only to apply
//!    journaled ops;
//! 4. `open` (per-inode runtime: open counts, backing file, upload lock);
//! 5. leaves, each held alone: the handle tables, the cache index, the locks of `Objects`
//!    (in flight, held, unsealed changes), a `LazyFile`'s slot, the journal's sync lock, and the block cache's,
//!    the loader's and the workers' own locks.
//!
//! An inode's upload lock (`OpenInode::upload`) is taken with none of 2–5 held and is held across
//! the upload, which takes them briefly. Data I/O (`read`/`write` served by the daemon) takes
//! none of 2–4: a handle owns its inode's `LazyFile`, whose own small lock guards only the
//! descriptor.

#[cfg(test)]
mod cache_tests;
mod cached;
mod deleter;
mod dispatch;
mod fds;
mod handles;
mod io;
#[cfg(test)]
mod model_tests;
mod namespace;
mod objects;
mod opens;
mod publish;
mod recovery;
#[cfg(test)]
mod safety_tests;
mod sealer;
pub(crate) mod sync;
#[cfg(test)]
mod tests;
pub mod warm;
mod worker;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::error::{FsError, FsResult};
use crate::placement::{Placement, placement_for};
use crate::store::RemoteStore;
use crate::table::{FileMeta, Ino, InodeMeta, MappingTable, NodeKind, Op, SpecialKind};

use namespace::Namespace;

pub use io::SetAttr;
pub use recovery::OpenError;

use deleter::Deleter;
pub use deleter::Doomed;
pub use io::Opened;
pub use publish::{CheckpointFile, Published};

/// The type of an inode, as `stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn of(kind: &NodeKind) -> FileKind {
        match kind {
            NodeKind::Dir => FileKind::Dir,
            NodeKind::File(_) => FileKind::File,
            NodeKind::Symlink(_) => FileKind::Symlink,
            NodeKind::Special { kind, .. } => match kind {
                SpecialKind::Fifo => FileKind::Fifo,
                SpecialKind::Socket => FileKind::Socket,
                SpecialKind::CharDevice => FileKind::CharDevice,
                SpecialKind::BlockDevice => FileKind::BlockDevice,
            },
        }
    }
}

/// Attributes of one inode, as the kernel needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    /// Device number of a device node (0 otherwise).
    pub rdev: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Attributes as the table has them, and the backing file whose metadata completes them:
/// `(path, missing_ok)`, where a missing file means the record's values stand (a sealed file
/// whose copy is not there yet).
struct PendingAttr {
    attr: Attr,
    stat: Option<(PathBuf, bool)>,
}

impl Attr {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

impl PendingAttr {
    fn done(attr: Attr) -> Self {
        PendingAttr { attr, stat: None }
    }

    fn finish(self) -> FsResult<Attr> {
        let mut attr = self.attr;
        let Some((path, missing_ok)) = self.stat else {
            return Ok(attr);
        };
        let md = match std::fs::metadata(&path) {
            Ok(md) => md,
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => return Ok(attr),
            Err(e) => return Err(e.into()),
        };
        use std::os::unix::fs::MetadataExt;
        attr.size = md.len();
        attr.blocks = md.blocks();
        attr.mtime = ns_to_time(md.mtime() * 1_000_000_000 + md.mtime_nsec());
        attr.atime = ns_to_time(md.atime() * 1_000_000_000 + md.atime_nsec());
        // The inode's changes that never touch the backing file (chmod, chown, link, unlink,
        // rename) move the record's ctime: the later of the two is the inode's.
        attr.ctime = attr
            .ctime
            .max(ns_to_time(md.ctime() * 1_000_000_000 + md.ctime_nsec()));
        Ok(attr)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: FileKind,
    pub name: String,
}

/// Caller identity for new inodes.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug)]
enum ReadSource {
    Local(Arc<fds::LazyFile>),
    /// No local copy at open: cold reads through the block cache, with this handle's read pattern,
    /// until a promoted copy is complete (`upgraded`); then reads come from the copy.
    Remote {
        key: String,
        size: u64,
        pattern: Mutex<crate::cache::ReadPattern>,
        upgraded: std::sync::OnceLock<Arc<fds::LazyFile>>,
    },
}

#[derive(Debug)]
struct Handle {
    ino: Ino,
    local_id: uuid::Uuid,
    writable: bool,
    placement: Placement,
    source: ReadSource,
    dirty: Arc<AtomicBool>,
}

/// Counters of the core, for stats.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    pub uploads: AtomicU64,
    pub uploads_in_flight: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub downloads: AtomicU64,
    /// Ranged GETs made for cold reads.
    pub remote_reads: AtomicU64,
    /// Cold-read blocks found in memory, and fetched.
    pub block_hits: AtomicU64,
    pub block_misses: AtomicU64,
}

#[derive(Debug)]
pub struct FsCore {
    /// The mapping table and its journal (`namespace.rs`).
    ns: Arc<Namespace>,
    /// Inodes with open handles (`opens.rs`).
    opens: opens::Opens,
    /// File and directory handles (`handles.rs`).
    handles: handles::Handles,
    remote: Arc<dyn RemoteStore>,
    deleter: Deleter,
    /// Local copies, cold-read blocks and the loader (`cached.rs`).
    cache: cached::CacheManager,
    /// Background fetches of cold files into the kernel's page cache (`warm.rs`).
    warmer: warm::Warmer,
    /// The store threads requests that may wait on the store run on (`dispatch.rs`).
    dispatch: dispatch::Dispatch,
    /// This mount's identity in the store (`<local-dir>/MOUNT_ID`), stable across remounts.
    pub mount_id: String,
    /// Keys in flight and held, the record's staleness, unsealed changes, created entries
    /// (`objects.rs`).
    objects: objects::Objects,
    /// Publishing, retention and the mount record's background work (`publish.rs`).
    publisher: publish::Publisher,
    local_files: PathBuf,
    cache_files: PathBuf,
    statfs_dir: PathBuf,
    pub metrics: CoreMetrics,
    /// Descriptors of backing files, within what `RLIMIT_NOFILE` allows.
    fds: Arc<fds::FdBudget>,
    /// Keeps the exclusive locks on the local dir and the cache dir for the life of the core.
    _dir_lock: (File, File),
    /// Declared last, so dropped last: signals that the core is gone and the locks above closed.
    released: ReleaseOnDrop,
}

/// Whether a core is gone: what an unmount waits for before it returns, so that the local and cache
/// dirs are free for the next mount when it does. The core's last reference may be dropped on one
/// of its workers after the mount's own (workers hold the core weakly and take it for each request),
/// so the mount's drop alone does not end it.
#[derive(Debug, Default)]
pub struct Released {
    gone: Mutex<bool>,
    cv: parking_lot::Condvar,
}

impl Released {
    /// Waits until the core is gone (its workers finish the request they hold it for).
    pub fn wait(&self) {
        let mut gone = self.gone.lock();
        while !*gone {
            self.cv.wait(&mut gone);
        }
    }
}

#[derive(Debug, Default)]
struct ReleaseOnDrop(Arc<Released>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        *self.0.gone.lock() = true;
        self.0.cv.notify_all();
    }
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn ns_to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    }
}

/// The longest name of one path component, in bytes (Linux's NAME_MAX).
pub const NAME_MAX: usize = 255;
/// The longest symlink target, in bytes (PATH_MAX less the terminating NUL).
pub const SYMLINK_MAX: usize = 4095;

pub(crate) fn validate_name(name: &str) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FsError::Invalid("bad file name"));
    }
    Ok(())
}

impl FsCore {
    /// Signalled when this core is gone (see [`Released`]).
    pub fn released(&self) -> Arc<Released> {
        self.released.0.clone()
    }

    /// Marks keys in flight until the returned guard is dropped.
    pub(crate) fn in_flight(&self) -> objects::InFlight<'_> {
        self.objects.in_flight()
    }

    pub(crate) fn local_path(&self, f: &FileMeta) -> PathBuf {
        let dir = match f.placement {
            Placement::Local => &self.local_files,
            Placement::Remote => &self.cache_files,
        };
        dir.join(f.local_id.as_hyphenated().to_string())
    }

    /// Makes the directory entries of backing files created since the last call durable.
    fn sync_created(&self) -> FsResult<()> {
        self.objects.sync_created(|| {
            [&self.local_files, &self.cache_files]
                .iter()
                .try_for_each(|d| File::open(d)?.sync_all())
        })?;
        Ok(())
    }

    fn sync_journal(&self) -> FsResult<()> {
        let syncer = self.ns.syncer();
        syncer.sync()?;
        Ok(())
    }

    fn is_open(&self, ino: Ino) -> bool {
        self.opens.is_open(ino)
    }

    /// What must go when inode `meta` is dropped.
    fn doomed_data(&self, meta: &InodeMeta) -> Vec<Doomed> {
        let mut out = Vec::new();
        if let NodeKind::File(f) = &meta.kind {
            self.cache.index().remove(&f.local_id);
            if let Some(s) = &f.sealed {
                self.cache.blocks.forget(&s.key);
            }
            out.push(Doomed::LocalFile(self.local_path(f)));
            if let Some(s) = &f.sealed
                && s.ownership == crate::table::Ownership::Owned
            {
                out.push(Doomed::Object(s.key.clone()));
            }
        }
        out
    }

    /// What the table says of `ino`'s attributes (see [`PendingAttr`]).
    fn attr_record(&self, table: &MappingTable, ino: Ino) -> FsResult<PendingAttr> {
        let node = table.get(ino).ok_or(FsError::NotFound)?;
        let meta = &node.meta;
        let mut attr = Attr {
            ino,
            kind: FileKind::of(&meta.kind),
            rdev: 0,
            size: 0,
            blocks: 0,
            atime: ns_to_time(meta.atime_ns.unwrap_or(meta.mtime_ns)),
            mtime: ns_to_time(meta.mtime_ns),
            ctime: ns_to_time(meta.ctime_ns),
            perm: meta.perm,
            nlink: node.nlink,
            uid: meta.uid,
            gid: meta.gid,
        };
        match &meta.kind {
            NodeKind::Dir => {
                let subdirs = node
                    .children
                    .values()
                    .filter(|c| table.get(**c).is_some_and(|n| n.meta.is_dir()))
                    .count() as u32;
                attr.size = 4096;
                attr.blocks = 8;
                attr.nlink = 2 + subdirs;
                Ok(PendingAttr::done(attr))
            }
            NodeKind::Symlink(target) => {
                attr.size = target.len() as u64;
                Ok(PendingAttr::done(attr))
            }
            NodeKind::Special { rdev, .. } => {
                attr.rdev = *rdev;
                Ok(PendingAttr::done(attr))
            }
            NodeKind::File(f) => {
                // A sealed file that nobody modifies is described by its record (no syscall); files
                // being written, and local-placed files, by their backing file.
                let modified = self.opens.may_be_modified(ino) || self.objects.is_unsealed(ino);
                let stat = match &f.sealed {
                    Some(_) if !modified => None,
                    // A sealed file opened for writing has no local copy until its download is
                    // done (on a store thread; lookups go on meanwhile): until then nothing
                    // changed it, and its record describes it.
                    Some(_) => Some((self.local_path(f), true)),
                    None => Some((self.local_path(f), false)),
                };
                let size = f.sealed.as_ref().map_or(0, |s| s.size);
                attr.size = size;
                attr.blocks = size.div_ceil(512);
                Ok(PendingAttr { attr, stat })
            }
        }
    }

    /// The attributes of `ino` from `table`, and a stat of its backing file when that is what
    /// describes it (off the namespace's locks: a syscall never holds a lock readers share).
    fn attr_of(&self, table: &MappingTable, ino: Ino) -> FsResult<Attr> {
        self.attr_record(table, ino)?.finish()
    }

    pub fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let pending = self.attr_record(&self.ns.read(), ino)?;
        pending.finish()
    }

    pub fn lookup(&self, parent: Ino, name: &str) -> FsResult<Attr> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let table = self.ns.read();
        let dir = table.get(parent).ok_or(FsError::NotFound)?;
        if !dir.meta.is_dir() {
            return Err(FsError::NotDir);
        }
        let ino = if name == "." {
            parent
        } else if name == ".." {
            dir.parent
        } else {
            *dir.children.get(name).ok_or(FsError::NotFound)?
        };
        let pending = self.attr_record(&table, ino)?;
        drop(table);
        pending.finish()
    }

    /// `ino`'s record with its ctime moved to `now`: its links changed (link, unlink of one of
    /// several names, rename).
    fn touched(table: &MappingTable, ino: Ino, now: i64) -> Option<Op> {
        let mut meta = table.get(ino)?.meta.clone();
        meta.ctime_ns = now;
        Some(Op::PutInode(meta))
    }

    /// The inode named `name` in directory `parent`.
    fn child(table: &MappingTable, parent: Ino, name: &str) -> FsResult<Ino> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        Self::parent_dir(table, parent)?
            .children
            .get(name)
            .copied()
            .ok_or(FsError::NotFound)
    }

    fn parent_dir(table: &MappingTable, parent: Ino) -> FsResult<&crate::table::Node> {
        let dir = table.get(parent).ok_or(FsError::NotFound)?;
        if !dir.meta.is_dir() {
            return Err(FsError::NotDir);
        }
        Ok(dir)
    }

    pub fn mkdir(&self, parent: Ino, name: &str, perm: u16, caller: Caller) -> FsResult<Attr> {
        self.make_node(parent, name, NodeKind::Dir, perm, caller)
    }

    pub fn rmdir(&self, parent: Ino, name: &str) -> FsResult<()> {
        if name == "." {
            return Err(FsError::Invalid("rmdir of ."));
        }
        if name == ".." {
            return Err(FsError::NotEmpty);
        }
        let mut w = self.ns.writer();
        let ino = {
            let table = w.table();
            let ino = Self::child(&table, parent, name)?;
            let node = table.get(ino).ok_or(FsError::NotFound)?;
            if !node.meta.is_dir() {
                return Err(FsError::NotDir);
            }
            if !node.children.is_empty() {
                return Err(FsError::NotEmpty);
            }
            ino
        };
        w.commit(&[
            Op::DelEntry {
                parent,
                name: name.into(),
            },
            Op::DropInode(ino),
        ])?;
        w.touch_dir(parent, now_ns());
        Ok(())
    }

    /// Creates a file and opens it.
    pub fn create(
        &self,
        parent: Ino,
        name: &str,
        perm: u16,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(Attr, Opened)> {
        validate_name(name)?;
        let ino = {
            let mut w = self.ns.writer();
            let existing = Self::parent_dir(&w.table(), parent)?
                .children
                .get(name)
                .copied();
            if let Some(existing) = existing {
                if flags & libc::O_EXCL != 0 {
                    return Err(FsError::Exists);
                }
                drop(w);
                let opened = self.open(existing, flags & !libc::O_CREAT)?;
                return Ok((self.getattr(existing)?, opened));
            }
            let ino = w.allocate_ino();
            let meta = FileMeta {
                placement: placement_for(name),
                local_id: uuid::Uuid::new_v4(),
                sealed: None,
            };
            // The backing file exists before the journal names it: a crash in between leaves a stray
            // file that recovery removes, never a name without a backing file.
            let path = self.local_path(&meta);
            crate::private::options()
                .write(true)
                .create_new(true)
                .open(&path)?;
            self.objects.backing_created();
            let now = now_ns();
            let inode = InodeMeta {
                ino,
                kind: NodeKind::File(meta),
                perm: perm & 0o7777,
                uid: caller.uid,
                gid: caller.gid,
                mtime_ns: now,
                ctime_ns: now,
                atime_ns: None,
            };
            if let Err(e) = w.commit(&[
                Op::PutInode(inode),
                Op::PutEntry {
                    parent,
                    name: name.into(),
                    ino,
                },
            ]) {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            w.touch_dir(parent, now);
            ino
        };
        let opened = self.open(ino, flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC))?;
        Ok((self.getattr(ino)?, opened))
    }

    pub fn unlink(&self, parent: Ino, name: &str) -> FsResult<()> {
        let doomed = {
            let mut w = self.ns.writer();
            let (ops, doomed) = {
                let table = w.table();
                let ino = Self::child(&table, parent, name)?;
                let node = table.get(ino).ok_or(FsError::NotFound)?;
                if node.meta.is_dir() {
                    return Err(FsError::IsDir);
                }
                let mut ops = vec![Op::DelEntry {
                    parent,
                    name: name.into(),
                }];
                let mut doomed = Vec::new();
                if node.nlink == 1 && !self.is_open(ino) {
                    doomed = self.doomed_data(&node.meta);
                    ops.push(Op::DropInode(ino));
                } else {
                    ops.extend(Self::touched(&table, ino, now_ns()));
                }
                (ops, doomed)
            };
            w.commit(&ops)?;
            w.touch_dir(parent, now_ns());
            doomed
        };
        self.deleter.queue(doomed);
        Ok(())
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
        flags: u32,
    ) -> FsResult<()> {
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(FsError::Invalid("unknown rename flags"));
        }
        validate_name(newname)?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(FsError::Invalid("RENAME_EXCHANGE with RENAME_NOREPLACE"));
            }
            return self.exchange(parent, name, newparent, newname);
        }
        let doomed = {
            let mut w = self.ns.writer();
            let decided = {
                let table = w.table();
                let src = Self::child(&table, parent, name)?;
                let existing = Self::parent_dir(&table, newparent)?
                    .children
                    .get(newname)
                    .copied();
                if parent == newparent && name == newname {
                    return Ok(());
                }
                let src_is_dir = table.get(src).ok_or(FsError::NotFound)?.meta.is_dir();
                if src_is_dir && table.is_within(newparent, src) {
                    return Err(FsError::Invalid("cannot move a directory into itself"));
                }
                let mut ops = Vec::new();
                let mut doomed = Vec::new();
                if let Some(target) = existing {
                    if flags & libc::RENAME_NOREPLACE != 0 {
                        return Err(FsError::Exists);
                    }
                    if target == src {
                        // Two names of one file: POSIX says rename does nothing.
                        return Ok(());
                    }
                    let t = table.get(target).ok_or(FsError::NotFound)?;
                    match (src_is_dir, t.meta.is_dir()) {
                        (true, false) => return Err(FsError::NotDir),
                        (false, true) => return Err(FsError::IsDir),
                        (true, true) if !t.children.is_empty() => return Err(FsError::NotEmpty),
                        _ => {}
                    }
                    ops.push(Op::DelEntry {
                        parent: newparent,
                        name: newname.into(),
                    });
                    if t.meta.is_dir() || (t.nlink == 1 && !self.is_open(target)) {
                        doomed = self.doomed_data(&t.meta);
                        ops.push(Op::DropInode(target));
                    } else {
                        ops.extend(Self::touched(&table, target, now_ns()));
                    }
                }
                ops.push(Op::DelEntry {
                    parent,
                    name: name.into(),
                });
                ops.push(Op::PutEntry {
                    parent: newparent,
                    name: newname.into(),
                    ino: src,
                });
                ops.extend(Self::touched(&table, src, now_ns()));
                // Dropping the target must come after its entry went; PutEntry/DelEntry order above keeps
                // the DropInode (if any) valid at its position.
                if let Some(pos) = ops.iter().position(|o| matches!(o, Op::DropInode(_))) {
                    let drop_op = ops.remove(pos);
                    ops.push(drop_op);
                }
                (ops, doomed)
            };
            let (ops, doomed) = decided;
            w.commit(&ops)?;
            let now = now_ns();
            w.touch_dir(parent, now);
            w.touch_dir(newparent, now);
            doomed
        };
        self.deleter.queue(doomed);
        Ok(())
    }

    /// `rename(2)` with `RENAME_EXCHANGE`: the two names swap inodes, atomically.
    fn exchange(&self, parent: Ino, name: &str, newparent: Ino, newname: &str) -> FsResult<()> {
        let mut w = self.ns.writer();
        let ops = {
            let table = w.table();
            let a = Self::child(&table, parent, name)?;
            let b = Self::child(&table, newparent, newname)?;
            if a == b {
                return Ok(());
            }
            // A directory may not end up inside itself.
            for (dir, into) in [(a, newparent), (b, parent)] {
                if table.get(dir).is_some_and(|n| n.meta.is_dir()) && table.is_within(into, dir) {
                    return Err(FsError::Invalid("cannot move a directory into itself"));
                }
            }
            let now = now_ns();
            let mut ops = vec![
                Op::DelEntry {
                    parent,
                    name: name.into(),
                },
                Op::DelEntry {
                    parent: newparent,
                    name: newname.into(),
                },
                Op::PutEntry {
                    parent,
                    name: name.into(),
                    ino: b,
                },
                Op::PutEntry {
                    parent: newparent,
                    name: newname.into(),
                    ino: a,
                },
            ];
            ops.extend(Self::touched(&table, a, now));
            ops.extend(Self::touched(&table, b, now));
            ops
        };
        w.commit(&ops)?;
        let now = now_ns();
        w.touch_dir(parent, now);
        w.touch_dir(newparent, now);
        Ok(())
    }

    /// Creates `name` in `parent` as an inode of `kind`: a directory, a symlink or a special file
    /// (a regular file needs a backing file: see `create`).
    fn make_node(
        &self,
        parent: Ino,
        name: &str,
        kind: NodeKind,
        perm: u16,
        caller: Caller,
    ) -> FsResult<Attr> {
        validate_name(name)?;
        let mut w = self.ns.writer();
        if Self::parent_dir(&w.table(), parent)?
            .children
            .contains_key(name)
        {
            return Err(FsError::Exists);
        }
        let ino = w.allocate_ino();
        let now = now_ns();
        let meta = InodeMeta {
            ino,
            kind,
            perm: perm & 0o7777,
            uid: caller.uid,
            gid: caller.gid,
            mtime_ns: now,
            ctime_ns: now,
            atime_ns: Some(now),
        };
        w.commit(&[
            Op::PutInode(meta),
            Op::PutEntry {
                parent,
                name: name.into(),
                ino,
            },
        ])?;
        w.touch_dir(parent, now);
        self.attr_of(&w.table(), ino)
    }

    /// `symlink(2)`: `name` in `parent` points at `target` (kept as given; the kernel follows it).
    pub fn symlink(&self, parent: Ino, name: &str, target: &str, caller: Caller) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong);
        }
        if target.contains('\0') {
            return Err(FsError::Invalid("a symlink target with a NUL byte"));
        }
        self.make_node(
            parent,
            name,
            NodeKind::Symlink(target.into()),
            0o777,
            caller,
        )
    }

    /// `readlink(2)`.
    pub fn readlink(&self, ino: Ino) -> FsResult<String> {
        match &self.ns.read().get(ino).ok_or(FsError::NotFound)?.meta.kind {
            NodeKind::Symlink(target) => Ok(target.clone()),
            _ => Err(FsError::Invalid("not a symlink")),
        }
    }

    /// `mknod(2)`: a FIFO, socket or device node (`mode`'s file type), or a regular file.
    pub fn mknod(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let perm = (mode & 0o7777) as u16;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFIFO => SpecialKind::Fifo,
            libc::S_IFSOCK => SpecialKind::Socket,
            libc::S_IFCHR => SpecialKind::CharDevice,
            libc::S_IFBLK => SpecialKind::BlockDevice,
            0 | libc::S_IFREG => {
                let (attr, opened) =
                    self.create(parent, name, perm, libc::O_EXCL | libc::O_WRONLY, caller)?;
                self.release(opened.fh)?;
                return self.getattr(attr.ino);
            }
            libc::S_IFDIR => return Err(FsError::NotPermitted("mknod of a directory")),
            _ => return Err(FsError::Invalid("unknown file type")),
        };
        let rdev = match kind {
            SpecialKind::CharDevice | SpecialKind::BlockDevice => rdev,
            _ => 0,
        };
        self.make_node(parent, name, NodeKind::Special { kind, rdev }, perm, caller)
    }

    pub fn link(&self, ino: Ino, newparent: Ino, newname: &str) -> FsResult<Attr> {
        validate_name(newname)?;
        let mut w = self.ns.writer();
        {
            let table = w.table();
            let node = table.get(ino).ok_or(FsError::NotFound)?;
            if node.meta.is_dir() {
                return Err(FsError::NotPermitted("hard links to directories"));
            }
            if node.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if Self::parent_dir(&table, newparent)?
                .children
                .contains_key(newname)
            {
                return Err(FsError::Exists);
            }
        }
        let now = now_ns();
        let touched = Self::touched(&w.table(), ino, now);
        let mut ops = vec![Op::PutEntry {
            parent: newparent,
            name: newname.into(),
            ino,
        }];
        ops.extend(touched);
        w.commit(&ops)?;
        w.touch_dir(newparent, now);
        self.attr_of(&w.table(), ino)
    }

    pub fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let table = self.ns.read();
        let dir = table.get(ino).ok_or(FsError::NotFound)?;
        if !dir.meta.is_dir() {
            return Err(FsError::NotDir);
        }
        let mut entries = vec![
            DirEntry {
                ino,
                kind: FileKind::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino: dir.parent,
                kind: FileKind::Dir,
                name: "..".into(),
            },
        ];
        for (name, child) in &dir.children {
            let Some(node) = table.get(*child) else {
                continue;
            };
            entries.push(DirEntry {
                ino: *child,
                kind: FileKind::of(&node.meta.kind),
                name: name.clone(),
            });
        }
        drop(table);
        Ok(self.handles.open_dir(entries))
    }

    /// The directory listing taken at `opendir`, from `offset` on.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        self.handles.dir(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.close_dir(fh);
    }

    /// Makes the namespace durable (fsyncdir).
    pub fn fsyncdir(&self) -> FsResult<()> {
        self.sync_created()?;
        self.sync_journal()
    }

    pub fn statfs(&self) -> FsResult<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(&self.statfs_dir)
            .map_err(|e| FsError::Io(std::io::Error::from(e)))
    }

    /// Number of inodes in the table (root included).
    pub(crate) fn inode_count(&self) -> usize {
        self.ns.read().len()
    }

    /// The remote store this core writes to.
    pub fn remote(&self) -> &Arc<dyn RemoteStore> {
        &self.remote
    }

    /// Waits until copies being loaded are loaded, data whose last name is gone has been
    /// removed, and retention and the release of unnamed objects queued so far have run (tests, and tools that list the store
    /// right after deleting).
    pub fn settle(&self) {
        // A load holds its inode open; the release that ends it may queue removals.
        self.cache.barrier();
        self.deleter.barrier();
        self.settle_retention();
    }

    /// Finishes pending removals, compacts and syncs the journal. Called at unmount.
    pub fn shutdown(&self) -> FsResult<()> {
        self.warmer.shutdown();
        self.save_hot_list();
        self.seal_closed_files();
        self.publisher.retainer.shutdown();
        self.cache.shutdown();
        self.publisher.registrar.shutdown();
        self.deleter.shutdown();
        if let Err(e) = self.write_mount_record() {
            tracing::error!(error = %e, "writing the mount record at unmount failed; gc's grace period protects new objects");
        }
        self.ns.compact()?;
        Ok(())
    }

    /// Uploads the remote-placed files whose local bytes are not their sealed version: written,
    /// closed without a sync and never released (the kernel sends RELEASE after close() returns
    /// and drops one still queued when the connection ends at unmount), or rewritten after their
    /// last upload and released while that upload failed. A failed upload leaves the file as a
    /// crash would: a never-sealed file keeps its staging file; a sealed one is its object again
    /// at the next mount (SEMANTICS.md, known limits).
    fn seal_closed_files(&self) {
        let unsealed: Vec<Ino> = {
            let table = self.ns.read();
            table
                .nodes()
                .filter(|n| {
                    n.nlink > 0
                        && n.meta
                            .file()
                            .is_some_and(|f| f.placement == Placement::Remote)
                })
                .map(|n| n.meta.ino)
                .collect()
        };
        // `seal_if_needed` tells, off the namespace's locks, which ones changed: a sealed file with no
        // local copy, or one whose copy matches its record, costs a stat and no upload.
        for ino in unsealed {
            if let Err(e) = self.seal_if_needed(ino) {
                tracing::error!(ino, error = %e, "uploading a file closed without sync failed at unmount; its local bytes are kept");
            }
        }
    }
}
