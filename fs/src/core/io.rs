//! Open handles and data I/O (the uploads a sync or a release makes are the sealer's:
//! `sealer.rs`).
//!
//! A remote-placed file is *writing* until its first sync uploads it; from then on it is *sealed*:
//! its record names an object and the stamp (size, mtime) of the local copy that was uploaded. A later
//! sync or the last writer's release uploads again only when the local copy no longer matches that
//! stamp or a daemon-side write marked it dirty, under a new key; the old object is deleted once the
//! new record is durable. So the object named by a durable record is never modified or deleted early.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

use super::fds::LazyFile;
use super::opens::Uncounted;
use super::{FsCore, Handle, ReadSource};
use crate::error::{FsError, FsResult};
use crate::placement::Placement;
use crate::table::{FileMeta, Ino, NodeKind, Op, Stamp};

/// An open file as the adapter needs it.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    /// The complete local backing file, when there is one: the adapter may hand it to the kernel for
    /// passthrough.
    pub backing: Option<Arc<File>>,
    /// The file is sealed and opened read-only: the kernel may keep its cached pages across opens.
    pub keep_cache: bool,
}

/// Changes of a setattr call.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

pub(super) fn stamp_of(md: &std::fs::Metadata) -> Stamp {
    Stamp {
        size: md.len(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    }
}

fn to_timespec(t: SystemTime) -> nix::sys::time::TimeSpec {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    nix::sys::time::TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64)
}

/// Runs `f` on `file` and puts its modification time back afterwards: for operations that change no
/// byte of a sealed file (truncate to its own size, fallocate KEEP_SIZE) but would break its stamp.
fn keeping_mtime(file: &File, f: impl FnOnce() -> std::io::Result<()>) -> FsResult<()> {
    let before = file.metadata()?;
    f()?;
    let atime = nix::sys::time::TimeSpec::new(before.atime(), before.atime_nsec());
    let mtime = nix::sys::time::TimeSpec::new(before.mtime(), before.mtime_nsec());
    nix::sys::stat::futimens(file.as_fd_ref(), &atime, &mtime).map_err(std::io::Error::from)?;
    Ok(())
}

trait AsFdRef {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_>;
}
impl AsFdRef for File {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

impl FsCore {
    /// Counts a new handle on `ino`; returns its dirty flag and upload lock.
    pub(crate) fn acquire(&self, ino: Ino, writable: bool) -> (Arc<AtomicBool>, Arc<Mutex<()>>) {
        self.opens.acquire(ino, writable, None)
    }

    /// Uncounts a handle; the last handle of a nameless inode drops it.
    pub(crate) fn release_count(&self, ino: Ino, writable: bool) {
        let doomed = {
            // The writer is held across: whether the last handle of a nameless inode closed and
            // the inode's drop are one decision against unlink's (which holds it too).
            let mut w = self.ns.writer();
            let Uncounted::Closed { evicted } = self.opens.uncount(ino, writable) else {
                return;
            };
            if let Some((id, size, dirty)) = evicted {
                // Clean: the copy is exactly the version its record names (passthrough writes
                // do not set the flag; they change the stamp).
                let clean = !dirty
                    && w.table()
                        .get(ino)
                        .and_then(|n| n.meta.file())
                        .is_some_and(|f| {
                            f.sealed.as_ref().is_some_and(|s| {
                                s.local_stamp.is_some()
                                    && std::fs::metadata(self.local_path(f))
                                        .is_ok_and(|md| Some(stamp_of(&md)) == s.local_stamp)
                            })
                        });
                self.cache.finish_eviction(id, size, clean);
            }
            let doomed = match w.table().get(ino) {
                Some(node) if node.nlink == 0 => self.doomed_data(&node.meta),
                _ => return,
            };
            if let Err(e) = w.commit(&[Op::DropInode(ino)]) {
                tracing::error!(ino, error = %e, "dropping an unlinked inode failed; recovery will retry");
                return;
            }
            doomed
        };
        self.deleter.queue(doomed);
    }

    /// The backing file of open inode `ino` (at `path`), shared by its handles.
    pub(crate) fn backing_file(&self, ino: Ino, path: &Path) -> FsResult<Arc<LazyFile>> {
        self.opens.backing_file(ino, path, &self.fds)
    }

    /// The open descriptor of `lazy` for one operation, within the descriptor budget: over it,
    /// the least recently used idle descriptors are closed; an open that meets EMFILE closes
    /// idle ones and tries once more.
    pub(crate) fn use_file(&self, lazy: &LazyFile) -> FsResult<Arc<File>> {
        let file = match lazy.get() {
            Err(e) if super::fds::out_of_descriptors(&e) => {
                self.close_idle_files(usize::MAX);
                lazy.get()?
            }
            other => other?,
        };
        let excess = self.fds.excess();
        if excess > 0 {
            self.close_idle_files(excess);
        }
        Ok(file)
    }

    /// Closes up to `want` idle backing-file descriptors, least recently used first.
    fn close_idle_files(&self, want: usize) {
        let mut files = self.opens.backing_files();
        files.sort_by_key(|f| f.last_use());
        let mut closed = 0;
        for f in files {
            if closed >= want {
                break;
            }
            if f.close_if_idle() {
                closed += 1;
            }
        }
        tracing::debug!(
            closed,
            open = self.fds.open_now(),
            "closed idle backing files"
        );
    }

    pub(crate) fn file_meta(&self, ino: Ino) -> FsResult<FileMeta> {
        let table = self.ns.read();
        match &table.get(ino).ok_or(FsError::NotFound)?.meta.kind {
            NodeKind::File(f) => Ok(f.clone()),
            NodeKind::Dir => Err(FsError::IsDir),
            NodeKind::Symlink(_) | NodeKind::Special { .. } => {
                Err(FsError::Invalid("not a regular file"))
            }
        }
    }

    pub fn open(&self, ino: Ino, flags: i32) -> FsResult<super::Opened> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let f = self.file_meta(ino)?;
        let local_id = (f.placement == Placement::Remote).then_some(f.local_id);
        let (dirty, upload) = self.opens.acquire(ino, writable, local_id);
        // The descriptor, for the adapter to hand to the kernel (passthrough registration).
        let mut backing = None;
        let result = (|| {
            let path = self.local_path(&f);
            let mut has_local = path.exists();
            if f.placement == Placement::Remote && f.sealed.is_some() {
                if writable {
                    // Untracked while open for writing: a copy that may hold undurable bytes is
                    // never evicted. It re-enters the cache when it is sealed again. A copy
                    // demoted while a reader held it is the working copy from now on, no longer
                    // one to delete at the last close.
                    self.cache.index().remove(&f.local_id);
                    if let Some(size) = self.opens.take_back(None, Some(ino)) {
                        self.cache.index().unhold(size);
                    }
                } else {
                    has_local = self.cache_open(ino, f.local_id, has_local);
                }
            }
            if !has_local {
                match &f.sealed {
                    Some(s) if writable => {
                        let _g = upload.lock();
                        if !path.exists() {
                            self.download(ino, &f, s)?;
                        }
                        has_local = true;
                    }
                    Some(_) => {}
                    None => {
                        // A file still being written always has its staging file; recreate it empty
                        // if something outside statefs removed it.
                        tracing::warn!(ino, path = %path.display(), "backing file missing; recreating it empty");
                        crate::private::options()
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .open(&path)?;
                        has_local = true;
                    }
                }
            }
            let remote = || {
                let s = f
                    .sealed
                    .as_ref()
                    .expect("only sealed files lack a local copy");
                ReadSource::Remote {
                    key: s.key.clone(),
                    size: s.size,
                    pattern: Default::default(),
                    upgraded: Default::default(),
                }
            };
            let opened = has_local.then(|| {
                let lazy = self.backing_file(ino, &path)?;
                let file = self.use_file(&lazy)?;
                Ok::<_, FsError>((lazy, file))
            });
            let source = match opened {
                Some(Ok((lazy, file))) => {
                    if writable && flags & libc::O_TRUNC != 0 {
                        file.set_len(0)?;
                        dirty.store(true, Ordering::Release);
                    }
                    backing = Some(file);
                    ReadSource::Local(lazy)
                }
                // The copy was evicted between the cache's answer and this open: read the object.
                Some(Err(FsError::Io(e)))
                    if e.kind() == std::io::ErrorKind::NotFound
                        && !writable
                        && f.sealed.is_some() =>
                {
                    remote()
                }
                Some(Err(e)) => return Err(e),
                None => remote(),
            };
            Ok::<_, FsError>(source)
        })();
        let source = match result {
            Ok(s) => s,
            Err(e) => {
                self.release_count(ino, writable);
                return Err(e);
            }
        };
        if let ReadSource::Remote { key, size, .. } = &source
            && self.warmer.file(ino, key, *size)
        {
            // The copy for the next start: into the cache's free room, in the order files open.
            self.cache.fill(&self.opens, ino, f.local_id);
        }
        let handle = Handle {
            ino,
            local_id: f.local_id,
            writable,
            placement: f.placement,
            source,
            dirty,
        };
        let fh = self.handles.open_file(handle);
        Ok(super::Opened {
            fh,
            backing,
            keep_cache: f.sealed.is_some() && !writable,
        })
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles.file(fh)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_from(&*self.handle(fh)?, offset, size)
    }

    /// [`FsCore::read`] through handle `h`, already looked up.
    pub(super) fn read_from(&self, h: &Handle, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match &h.source {
            ReadSource::Local(lazy) => read_full_at(&*self.use_file(lazy)?, offset, size),
            ReadSource::Remote {
                key,
                size: len,
                pattern,
                upgraded,
            } => {
                self.cache_remote_read(h.ino, h.local_id);
                // A long-lived handle (RocksDB keeps SSTs open) moves to the promoted copy once it
                // is complete; it cannot switch to passthrough, but stops going to the store.
                if upgraded.get().is_none()
                    && self.cache.index().is_hot(&h.local_id)
                    && let Ok(lazy) = self.backing_file(h.ino, &self.copy_path(&h.local_id))
                    && self.use_file(&lazy).is_ok()
                {
                    let _ = upgraded.set(lazy);
                }
                if let Some(lazy) = upgraded.get() {
                    return read_full_at(&*self.use_file(lazy)?, offset, size);
                }
                let mut stats = crate::cache::BlockStats::default();
                // The pattern's lock is not held during the fetch (see `BlockCache::readahead`).
                let readahead =
                    self.cache
                        .blocks
                        .readahead(&mut pattern.lock(), offset, size as u64, *len);
                let data = self.cache.blocks.read(
                    crate::cache::ObjectRef {
                        remote: self.remote.as_ref(),
                        key,
                        size: *len,
                    },
                    offset,
                    size as u64,
                    readahead,
                    &mut stats,
                );
                self.metrics
                    .remote_reads
                    .fetch_add(stats.gets, Ordering::Relaxed);
                self.metrics
                    .block_hits
                    .fetch_add(stats.hits, Ordering::Relaxed);
                self.metrics
                    .block_misses
                    .fetch_add(stats.misses, Ordering::Relaxed);
                Ok(data?)
            }
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(FsError::NotWritable);
        }
        let ReadSource::Local(lazy) = &h.source else {
            return Err(FsError::NotWritable);
        };
        self.use_file(lazy)?.write_all_at(data, offset)?;
        h.dirty.store(true, Ordering::Release);
        Ok(data.len() as u32)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> FsResult<()> {
        let h = self.handle(fh)?;
        match h.placement {
            Placement::Local => {
                if let ReadSource::Local(lazy) = &h.source {
                    let file = self.use_file(lazy)?;
                    if datasync {
                        file.sync_data()?
                    } else {
                        file.sync_all()?
                    }
                }
            }
            Placement::Remote => self.seal_if_needed(h.ino)?,
        }
        // The file's name must be as durable as its bytes.
        self.sync_created()?;
        self.sync_journal()
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let h = self.handles.close_file(fh)?;
        let mut result = Ok(());
        if h.writable
            && h.placement == Placement::Remote
            && let Err(e) = self.seal_if_needed(h.ino)
        {
            tracing::error!(ino = h.ino, error = %e, "upload at close failed; the data stays local and unsynced");
            result = Err(e);
        }
        self.release_count(h.ino, h.writable);
        result
    }

    pub fn setattr(&self, ino: Ino, fh: Option<u64>, set: SetAttr) -> FsResult<super::Attr> {
        if set.perm.is_some() || set.uid.is_some() || set.gid.is_some() {
            let mut w = self.ns.writer();
            let mut meta = w.table().get(ino).ok_or(FsError::NotFound)?.meta.clone();
            meta.perm = set.perm.map(|p| p & 0o7777).unwrap_or(meta.perm);
            meta.uid = set.uid.unwrap_or(meta.uid);
            meta.gid = set.gid.unwrap_or(meta.gid);
            meta.ctime_ns = super::now_ns();
            w.commit(&[Op::PutInode(meta)])?;
        }
        if let Some(size) = set.size {
            self.truncate(ino, fh, size)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            self.set_times(ino, set.atime, set.mtime)?;
        }
        self.getattr(ino)
    }

    fn truncate(&self, ino: Ino, fh: Option<u64>, size: u64) -> FsResult<()> {
        let f = self.file_meta(ino)?;
        let through_writer = self.is_writer(fh);
        let (dirty, upload) = self.acquire(ino, true);
        if f.placement == Placement::Remote && f.sealed.is_some() {
            // As an open for writing: a copy about to differ from its object is never evicted
            // (it re-enters the cache when it is sealed again).
            self.cache.index().remove(&f.local_id);
        }
        let result = (|| {
            let path = self.local_path(&f);
            if !path.exists() {
                let Some(s) = &f.sealed else {
                    return Err(FsError::NotFound);
                };
                let _g = upload.lock();
                if !path.exists() {
                    self.download(ino, &f, s)?;
                }
            }
            let lazy = self.backing_file(ino, &path)?;
            let file = self.use_file(&lazy)?;
            let current = file.metadata()?.len();
            if f.sealed.is_some() && size == current {
                // RocksDB truncates each SST to its own size after syncing it (dropping preallocated
                // blocks): no byte changes, so the sealed version stays valid.
                keeping_mtime(&file, || file.set_len(size))?;
            } else {
                file.set_len(size)?;
                dirty.store(true, Ordering::Release);
            }
            Ok(())
        })();
        self.release_count(ino, true);
        result?;
        if f.placement == Placement::Remote && !through_writer {
            // A truncate by path has no later release to upload at.
            self.seal_if_needed(ino)?;
        }
        Ok(())
    }

    fn set_times(
        &self,
        ino: Ino,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> FsResult<()> {
        let mut w = self.ns.writer();
        let mut meta = w.table().get(ino).ok_or(FsError::NotFound)?.meta.clone();
        match &meta.kind {
            NodeKind::File(f) if f.sealed.is_none() || f.placement == Placement::Local => {
                // Times live on the backing file.
                let path = self.local_path(f);
                drop(w);
                let omit = nix::sys::time::TimeSpec::new(0, libc::UTIME_OMIT);
                let a = atime.map(to_timespec).unwrap_or(omit);
                let m = mtime.map(to_timespec).unwrap_or(omit);
                let file = File::open(&path)?;
                nix::sys::stat::futimens(file.as_fd_ref(), &a, &m).map_err(std::io::Error::from)?;
                Ok(())
            }
            _ => {
                // Directories, symlinks, special files and sealed files keep their times in their
                // record (touching a sealed file's local copy would break its stamp and cost an
                // upload). A change of times is a change of the inode: ctime moves too.
                if let Some(a) = atime {
                    meta.atime_ns = Some(to_ns(a));
                } else if meta.atime_ns.is_none() {
                    meta.atime_ns = Some(meta.mtime_ns);
                }
                if let Some(m) = mtime {
                    meta.mtime_ns = to_ns(m);
                }
                meta.ctime_ns = super::now_ns();
                w.commit(&[Op::PutInode(meta)])
            }
        }
    }

    /// `fallocate(2)` with any mode the backing file system supports (what it refuses, as
    /// EOPNOTSUPP, is refused here too). A mode that changes no byte (allocating with KEEP_SIZE,
    /// punching past the end) keeps the file's mtime, so a sealed file stays its version; every
    /// other one (allocating past the end, punching or zeroing a range inside, collapsing or
    /// inserting a range) marks the file changed, and its next sync uploads it.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(FsError::NotWritable);
        }
        let ReadSource::Local(lazy) = &h.source else {
            return Err(FsError::NotWritable);
        };
        let file = &*self.use_file(lazy)?;
        let end = offset
            .checked_add(length)
            .ok_or(FsError::Invalid("offset + length"))?;
        let size = file.metadata()?.len();
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let changes_bytes = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            // Allocation: new bytes only when the size grows.
            0 => !keep_size && end > size,
            libc::FALLOC_FL_PUNCH_HOLE => offset < size,
            _ => true,
        };
        let call = || {
            nix::fcntl::fallocate(
                file,
                nix::fcntl::FallocateFlags::from_bits_retain(mode),
                offset as libc::off_t,
                length as libc::off_t,
            )
            .map_err(std::io::Error::from)
        };
        if changes_bytes {
            call()?;
            h.dirty.store(true, Ordering::Release);
            Ok(())
        } else {
            // RocksDB preallocates with KEEP_SIZE and punches the rest away when it closes an
            // SST: neither costs an upload.
            keeping_mtime(file, call)
        }
    }

    pub fn flush(&self, fh: u64) -> FsResult<()> {
        self.handle(fh).map(|_| ())
    }
}

/// Reads up to `size` bytes at `offset`, short only at the end of the file.
fn read_full_at(file: &File, offset: u64, size: u32) -> FsResult<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

fn to_ns(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
