//! The fuser adapter: decodes a request, calls [`FsCore`], replies. No filesystem logic lives here.
//!
//! Every handler replies exactly once on every path (fuser replies EIO for a dropped reply, so the
//! kernel never hangs). Passthrough: a file with a complete local backing file is handed to the kernel
//! with one `BackingId` per inode, kept while any of its handles is open, so READ and WRITE never
//! reach the daemon.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use parking_lot::Mutex;

use crate::config::PassthroughMode;
use crate::core::{Attr, Caller, FileKind, FsCore, Opened, SetAttr};
use crate::error::FsError;

/// The FUSE operations statefs implements, each counted and timed by [`FuseMetrics`] (its
/// discriminant is its index there) and traced in a span of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lookup,
    Getattr,
    Setattr,
    Mkdir,
    Unlink,
    Rmdir,
    Rename,
    Link,
    Open,
    Create,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Releasedir,
    Fsyncdir,
    Statfs,
    Fallocate,
    Symlink,
    Readlink,
    Mknod,
}

impl Op {
    const ALL: [Op; 24] = [
        Op::Lookup,
        Op::Getattr,
        Op::Setattr,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Rename,
        Op::Link,
        Op::Open,
        Op::Create,
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Release,
        Op::Fsync,
        Op::Opendir,
        Op::Readdir,
        Op::Releasedir,
        Op::Fsyncdir,
        Op::Statfs,
        Op::Fallocate,
        Op::Symlink,
        Op::Readlink,
        Op::Mknod,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Create => "create",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Releasedir => "releasedir",
            Op::Fsyncdir => "fsyncdir",
            Op::Statfs => "statfs",
            Op::Fallocate => "fallocate",
            Op::Symlink => "symlink",
            Op::Readlink => "readlink",
            Op::Mknod => "mknod",
        }
    }
}

/// FUSE operation counters (lock-free: one atomic per operation).
#[derive(Debug, Default)]
pub struct FuseMetrics {
    counts: [AtomicU64; Op::ALL.len()],
    latency: [crate::metrics::Histogram; Op::ALL.len()],
    pub passthrough_opens: AtomicU64,
    pub daemon_opens: AtomicU64,
    /// Requests waiting for a store thread: uploads, and cold reads.
    pub upload_queue: Arc<AtomicU64>,
    pub read_queue: Arc<AtomicU64>,
}

impl FuseMetrics {
    /// Counts one request of `op`; the returned guard records its latency when dropped.
    fn count(&self, op: Op) -> crate::metrics::Timer<'_> {
        crate::metrics::Timer::new(&self.latency[self.tally(op)])
    }

    /// Counts one request of `op`; its index in the arrays.
    fn tally(&self, op: Op) -> usize {
        let i = op as usize;
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        i
    }

    /// As [`count`](Self::count), for a request answered on another thread: the latency is
    /// recorded when the returned guard is dropped there, after the reply.
    fn count_owned(self: &Arc<Self>, op: Op) -> OwnedTimer {
        OwnedTimer {
            metrics: self.clone(),
            i: self.tally(op),
            start: std::time::Instant::now(),
        }
    }

    /// Writes the FUSE metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use crate::metrics::{FUSE_LATENCY, FUSE_OPENS, FUSE_OPS, STORE_QUEUE, header, sample};
        header(
            out,
            FUSE_OPS,
            "counter",
            "FUSE requests that reached the daemon",
        );
        for (op, c) in Op::ALL.iter().map(|o| o.name()).zip(&self.counts) {
            sample(
                out,
                FUSE_OPS,
                &format!("op=\"{op}\""),
                c.load(Ordering::Relaxed),
            );
        }
        header(
            out,
            FUSE_LATENCY,
            "histogram",
            "time the daemon spent on a FUSE request",
        );
        for (op, h) in Op::ALL.iter().map(|o| o.name()).zip(&self.latency) {
            if h.count() > 0 {
                h.render(out, FUSE_LATENCY, &format!("op=\"{op}\""));
            }
        }
        header(out, FUSE_OPENS, "counter", "opens by I/O path");
        sample(
            out,
            FUSE_OPENS,
            "path=\"passthrough\"",
            self.passthrough_opens.load(Ordering::Relaxed),
        );
        sample(
            out,
            FUSE_OPENS,
            "path=\"daemon\"",
            self.daemon_opens.load(Ordering::Relaxed),
        );
        header(
            out,
            STORE_QUEUE,
            "gauge",
            "requests waiting for a store thread",
        );
        for (pool, q) in [("uploads", &self.upload_queue), ("reads", &self.read_queue)] {
            sample(
                out,
                STORE_QUEUE,
                &format!("pool=\"{pool}\""),
                q.load(Ordering::Relaxed),
            );
        }
    }
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Op::ALL
            .iter()
            .zip(&self.counts)
            .map(|(op, c)| (op.name(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Records a request's latency, from its arrival to its reply, when dropped.
struct OwnedTimer {
    metrics: Arc<FuseMetrics>,
    i: usize,
    start: std::time::Instant,
}

impl Drop for OwnedTimer {
    fn drop(&mut self) {
        self.metrics.latency[self.i].observe(self.start.elapsed());
    }
}

/// The kernel's I/O mode of each open inode. Invariant: an inode never has opens through the page
/// cache (daemon I/O without direct I/O) and passthrough opens at once; the kernel refuses the
/// second kind with EIO. So a file that got a local copy while daemon-served handles are open is
/// served by the daemon until they close, and a file opened without a copy while passthrough
/// handles are open gets direct I/O (no page cache).
#[derive(Debug, Default)]
struct Backings {
    by_inode: HashMap<u64, Weak<BackingId>>,
    by_handle: HashMap<u64, Arc<BackingId>>,
    /// Daemon-served handles through the page cache, per inode, and their inode by handle.
    cached: HashMap<u64, usize>,
    cached_handles: HashMap<u64, u64>,
}

/// How the kernel does a handle's I/O.
enum HandleIo {
    /// Straight to the backing file.
    Passthrough(Arc<BackingId>),
    /// Through the daemon, opened with these flags.
    Daemon(FopenFlags),
}

pub struct StatefsFuse {
    core: Arc<FsCore>,
    attr_ttl: Duration,
    entry_ttl: Duration,
    mode: PassthroughMode,
    opener: Opener,
    metrics: Arc<FuseMetrics>,
    status: Arc<FuseStatus>,
    /// Background requests (the kernel's read-ahead of a file) the kernel may have pending.
    max_background: u16,
}

/// What the kernel agreed to at INIT, readable after the session took the filesystem.
#[derive(Debug, Default)]
pub struct FuseStatus {
    /// `init` has run: the mount is live.
    pub ready: AtomicBool,
    /// Files with a complete local backing file are opened with passthrough.
    pub passthrough: AtomicBool,
}

/// The threads requests that wait on the store run on, so that no FUSE worker waits.
#[derive(Debug, Clone, Copy)]
pub struct StoreThreads {
    /// `statefs.fuse.store-threads`: uploads (an uploading fsync or release).
    pub uploads: usize,
    /// `statefs.cache.block.in-flight`: cold reads.
    pub reads: usize,
}

impl StatefsFuse {
    pub fn new(
        core: Arc<FsCore>,
        attr_ttl: Duration,
        entry_ttl: Duration,
        mode: PassthroughMode,
        metrics: Arc<FuseMetrics>,
        status: Arc<FuseStatus>,
        threads: StoreThreads,
    ) -> std::io::Result<Self> {
        let StoreThreads {
            uploads: store_threads,
            reads: read_threads,
        } = threads;
        // Requests that may wait on the store run on these threads, so that no FUSE worker does.
        core.start_store_threads(
            store_threads,
            read_threads,
            metrics.upload_queue.clone(),
            metrics.read_queue.clone(),
        )?;
        Ok(StatefsFuse {
            // The kernel reads pages it does not hold through read-ahead, as background requests,
            // of which it keeps 12 pending by default: cold reads of many threads (an async State
            // API batch) then had 16 GETs in flight whatever the read threads. Twice the read
            // threads, at least the kernel's default.
            max_background: u16::try_from(read_threads.saturating_mul(2))
                .unwrap_or(u16::MAX)
                .max(12),
            core: core.clone(),
            attr_ttl,
            entry_ttl,
            mode,
            opener: Opener {
                core: core.clone(),
                backings: Default::default(),
                metrics: metrics.clone(),
                status: status.clone(),
            },
            metrics,
            status,
        })
    }

    fn file_attr(a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: a.ctime,
            kind: Self::file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    fn file_type(kind: FileKind) -> FileType {
        match kind {
            FileKind::Dir => FileType::Directory,
            FileKind::File => FileType::RegularFile,
            FileKind::Symlink => FileType::Symlink,
            FileKind::Fifo => FileType::NamedPipe,
            FileKind::Socket => FileType::Socket,
            FileKind::CharDevice => FileType::CharDevice,
            FileKind::BlockDevice => FileType::BlockDevice,
        }
    }

    fn errno(op: &'static str, e: &FsError) -> Errno {
        match e {
            FsError::NotFound | FsError::Exists | FsError::NotEmpty => {
                tracing::trace!(op, error = %e)
            }
            FsError::Remote(_) | FsError::Journal(_) | FsError::Internal(_) | FsError::Io(_) => {
                tracing::error!(op, error = %e, "operation failed")
            }
            _ => tracing::debug!(op, error = %e),
        }
        Errno::from_i32(e.errno())
    }

    fn name(name: &OsStr) -> Result<&str, Errno> {
        name.to_str().ok_or(Errno::from_i32(libc::EINVAL))
    }
}

/// The kernel's page cache of the mount's inodes, through FUSE's notify-store: what the core's
/// warmer hands fetched bytes to (`core/warm.rs`).
pub struct NotifyStore(pub fuser::Notifier);

impl crate::core::warm::PageCache for NotifyStore {
    fn store(&self, ino: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.store(INodeNo(ino), offset, data)
    }
}

/// What answering an open needs, cloneable onto a store thread (an open that downloads first).
#[derive(Clone)]
struct Opener {
    core: Arc<FsCore>,
    backings: Arc<Mutex<Backings>>,
    metrics: Arc<FuseMetrics>,
    status: Arc<FuseStatus>,
}

impl Opener {
    fn open(&self, ino: u64, flags: i32, reply: ReplyOpen) {
        match self.core.open(ino, flags) {
            Ok(opened) => match self.io_for(ino, &opened, |f| reply.open_backing(f)) {
                HandleIo::Passthrough(id) => {
                    self.count_open(true);
                    reply.opened_passthrough(FileHandle(opened.fh), FopenFlags::empty(), &id)
                }
                HandleIo::Daemon(flags) => {
                    self.count_open(false);
                    reply.opened(FileHandle(opened.fh), flags)
                }
            },
            Err(e) => reply.error(StatefsFuse::errno("open", &e)),
        }
    }

    /// Decides how the kernel does the I/O of handle `opened` (see [`Backings`]' invariant):
    /// passthrough when the file has a local copy, passthrough is on and no handle of the inode
    /// goes through the page cache; otherwise the daemon, with the page cache (kept across opens
    /// for sealed read-only files) unless a passthrough handle of the inode is open.
    fn io_for(
        &self,
        ino: u64,
        opened: &Opened,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> HandleIo {
        let mut b = self.backings.lock();
        let cached_open = b.cached.get(&ino).is_some_and(|n| *n > 0);
        if self.status.passthrough.load(Ordering::Relaxed)
            && !cached_open
            && let Some(file) = opened.backing.as_ref()
        {
            let id = match b.by_inode.get(&ino).and_then(Weak::upgrade) {
                Some(id) => Some(id),
                None => match register(file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        b.by_inode.insert(ino, Arc::downgrade(&id));
                        Some(id)
                    }
                    Err(e) => {
                        tracing::warn!(ino, error = %e, "passthrough registration failed; serving I/O in the daemon");
                        None
                    }
                },
            };
            if let Some(id) = id {
                b.by_handle.insert(opened.fh, id.clone());
                return HandleIo::Passthrough(id);
            }
        }
        if b.by_inode.get(&ino).is_some_and(|w| w.strong_count() > 0) {
            return HandleIo::Daemon(FopenFlags::FOPEN_DIRECT_IO);
        }
        *b.cached.entry(ino).or_default() += 1;
        b.cached_handles.insert(opened.fh, ino);
        HandleIo::Daemon(if opened.keep_cache {
            // Sealed and opened read-only: its bytes cannot change under the kernel's cache.
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        })
    }

    fn count_open(&self, passthrough: bool) {
        let c = if passthrough {
            &self.metrics.passthrough_opens
        } else {
            &self.metrics.daemon_opens
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for StatefsFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _s = tracing::info_span!("init").entered();
        // Both only fail for 0.
        let _ = config.set_max_background(self.max_background);
        let _ = config.set_congestion_threshold((self.max_background / 4 * 3).max(1));
        let offered = config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH);
        match (self.mode, offered) {
            (PassthroughMode::Off, _) => {}
            (PassthroughMode::On, false) => {
                return Err(std::io::Error::other(
                    "the kernel does not offer FUSE passthrough (needs Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH, as root); use --passthrough auto or off",
                ));
            }
            (_, true) => {
                let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                    && config.set_max_stack_depth(1).is_ok();
                if !ok && self.mode == PassthroughMode::On {
                    return Err(std::io::Error::other("enabling FUSE passthrough failed"));
                }
                self.status.passthrough.store(ok, Ordering::Relaxed);
            }
            (PassthroughMode::Auto, false) => {}
        }
        tracing::info!(
            passthrough = self.status.passthrough.load(Ordering::Relaxed),
            "FUSE session initialized"
        );
        self.status.ready.store(true, Ordering::Release);
        Ok(())
    }

    fn destroy(&mut self) {
        let _s = tracing::info_span!("destroy").entered();
        // Uploads accepted before the unmount finish (and are journaled) before the core shuts down.
        self.core.close_store_threads();
        if let Err(e) = self.core.shutdown() {
            tracing::error!(error = %e, "shutdown did not finish cleanly; the journal replays at next mount");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _t = self.metrics.count(Op::Lookup);
        let _s = tracing::trace_span!("lookup", parent = parent.0, ?name).entered();
        let name = match Self::name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.lookup(parent.0, name) {
            Ok(a) => reply.entry(&self.entry_ttl, &Self::file_attr(&a), fuser::Generation(0)),
            Err(e) => reply.error(Self::errno("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _t = self.metrics.count(Op::Getattr);
        let _s = tracing::trace_span!("getattr", ino = ino.0).entered();
        match self.core.getattr(ino.0) {
            Ok(a) => reply.attr(&self.attr_ttl, &Self::file_attr(&a)),
            Err(e) => reply.error(Self::errno("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let t = self.metrics.count_owned(Op::Setattr);
        let span = tracing::debug_span!("setattr", ino = ino.0, ?size);
        let set = SetAttr {
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            atime: atime.map(time_of),
            mtime: mtime.map(time_of),
        };
        let fh = fh.map(|f| f.0);
        let ttl = self.attr_ttl;
        // The core runs it on a store thread when a truncate may download or upload.
        self.core.setattr_then(ino.0, fh, set, move |result| {
            let _s = span.entered();
            match result {
                Ok(a) => reply.attr(&ttl, &Self::file_attr(&a)),
                Err(e) => reply.error(Self::errno("setattr", &e)),
            }
            drop(t);
        })
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.metrics.count(Op::Mkdir);
        let _s = tracing::debug_span!("mkdir", parent = parent.0, ?name).entered();
        let name = match Self::name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self
            .core
            .mkdir(parent.0, name, (mode & !umask & 0o7777) as u16, caller(req))
        {
            Ok(a) => reply.entry(&self.entry_ttl, &Self::file_attr(&a), fuser::Generation(0)),
            Err(e) => reply.error(Self::errno("mkdir", &e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let _t = self.metrics.count(Op::Symlink);
        let _s = tracing::debug_span!("symlink", parent = parent.0, ?link_name).entered();
        let (Ok(name), Some(target)) = (Self::name(link_name), target.to_str()) else {
            return reply.error(Errno::from_i32(libc::EINVAL));
        };
        match self.core.symlink(parent.0, name, target, caller(req)) {
            Ok(a) => reply.entry(&self.entry_ttl, &Self::file_attr(&a), fuser::Generation(0)),
            Err(e) => reply.error(Self::errno("symlink", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.metrics.count(Op::Readlink);
        let _s = tracing::debug_span!("readlink", ino = ino.0).entered();
        match self.core.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(Self::errno("readlink", &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.metrics.count(Op::Mknod);
        let _s = tracing::debug_span!("mknod", parent = parent.0, ?name, mode, rdev).entered();
        let name = match Self::name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mode = (mode & libc::S_IFMT) | (mode & !umask & 0o7777);
        match self.core.mknod(parent.0, name, mode, rdev, caller(req)) {
            Ok(a) => reply.entry(&self.entry_ttl, &Self::file_attr(&a), fuser::Generation(0)),
            Err(e) => reply.error(Self::errno("mknod", &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.metrics.count(Op::Unlink);
        let _s = tracing::debug_span!("unlink", parent = parent.0, ?name).entered();
        match Self::name(name).and_then(|n| {
            self.core
                .unlink(parent.0, n)
                .map_err(|e| Self::errno("unlink", &e))
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.metrics.count(Op::Rmdir);
        let _s = tracing::debug_span!("rmdir", parent = parent.0, ?name).entered();
        match Self::name(name).and_then(|n| {
            self.core
                .rmdir(parent.0, n)
                .map_err(|e| Self::errno("rmdir", &e))
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.count(Op::Rename);
        let _s = tracing::debug_span!("rename", ?name, ?newname).entered();
        let r = Self::name(name).and_then(|n| {
            let nn = Self::name(newname)?;
            self.core
                .rename(parent.0, n, newparent.0, nn, flags.bits())
                .map_err(|e| Self::errno("rename", &e))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _t = self.metrics.count(Op::Link);
        let _s =
            tracing::debug_span!("link", ino = ino.0, newparent = newparent.0, ?newname).entered();
        let name = match Self::name(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.link(ino.0, newparent.0, name) {
            Ok(a) => reply.entry(&self.entry_ttl, &Self::file_attr(&a), fuser::Generation(0)),
            Err(e) => reply.error(Self::errno("link", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let t = self.metrics.count_owned(Op::Open);
        let span = tracing::debug_span!("open", ino = ino.0, flags = flags.0);
        let opener = self.opener.clone();
        self.core.open_then(ino.0, flags.0, move || {
            let _s = span.entered();
            opener.open(ino.0, flags.0, reply);
            drop(t);
        })
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.metrics.count(Op::Create);
        let _s = tracing::debug_span!("create", parent = parent.0, ?name).entered();
        let name = match Self::name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.create(
            parent.0,
            name,
            (mode & !umask & 0o7777) as u16,
            flags,
            caller(req),
        ) {
            Ok((attr, opened)) => {
                let fa = Self::file_attr(&attr);
                match self
                    .opener
                    .io_for(attr.ino, &opened, |f| reply.open_backing(f))
                {
                    HandleIo::Passthrough(id) => {
                        self.opener.count_open(true);
                        reply.created_passthrough(
                            &self.entry_ttl,
                            &fa,
                            fuser::Generation(0),
                            FileHandle(opened.fh),
                            FopenFlags::empty(),
                            &id,
                        )
                    }
                    HandleIo::Daemon(flags) => {
                        self.opener.count_open(false);
                        reply.created(
                            &self.entry_ttl,
                            &fa,
                            fuser::Generation(0),
                            FileHandle(opened.fh),
                            flags,
                        )
                    }
                }
            }
            Err(e) => reply.error(Self::errno("create", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let t = self.metrics.count_owned(Op::Read);
        let span = tracing::trace_span!("read", ino = _ino.0, fh = fh.0, offset, size);
        // Reads of local bytes or of blocks held in memory stay on this worker; the core hands
        // cold fetches from a distant store to a store thread.
        self.core.read_then(fh.0, offset, size, move |result| {
            let _s = span.entered();
            match result {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(Self::errno("read", &e)),
            }
            drop(t);
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _t = self.metrics.count(Op::Write);
        let _s = tracing::trace_span!("write", fh = fh.0, offset, len = data.len()).entered();
        match self.core.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(Self::errno("write", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.count(Op::Flush);
        let _s = tracing::debug_span!("flush", fh = fh.0).entered();
        match self.core.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Self::errno("flush", &e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let t = self.metrics.count_owned(Op::Release);
        let span = tracing::debug_span!("release", ino = ino.0, fh = fh.0);
        {
            let mut b = self.opener.backings.lock();
            b.by_handle.remove(&fh.0);
            if let Some(ino) = b.cached_handles.remove(&fh.0)
                && let Some(n) = b.cached.get_mut(&ino)
            {
                *n -= 1;
                if *n == 0 {
                    b.cached.remove(&ino);
                }
            }
            if b.by_inode
                .get(&ino.0)
                .is_some_and(|w| w.strong_count() == 0)
            {
                b.by_inode.remove(&ino.0);
            }
        }
        // The last writer's release uploads what no fsync did (on a store thread); other releases
        // are quick.
        self.core.release_then(fh.0, move |result| {
            let _s = span.entered();
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(Self::errno("release", &e)),
            }
            drop(t);
        })
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let t = self.metrics.count_owned(Op::Fsync);
        let span = tracing::debug_span!("fsync", ino = ino.0, fh = fh.0, datasync);
        // A WAL sync stays on this worker (it waits only on the local disk); an upload goes to a
        // store thread.
        self.core.fsync_then(fh.0, datasync, move |result| {
            let _s = span.entered();
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(Self::errno("fsync", &e)),
            }
            drop(t);
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.metrics.count(Op::Opendir);
        let _s = tracing::debug_span!("opendir", ino = ino.0).entered();
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(Self::errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _t = self.metrics.count(Op::Readdir);
        let _s = tracing::debug_span!("readdir", fh = fh.0, offset).entered();
        match self.core.readdir(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    let kind = Self::file_type(e.kind);
                    if reply.add(INodeNo(e.ino), (i + 1) as u64, kind, &e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(Self::errno("readdir", &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.count(Op::Releasedir);
        let _s = tracing::debug_span!("releasedir", fh = fh.0).entered();
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.count(Op::Fsyncdir);
        let _s = tracing::debug_span!("fsyncdir").entered();
        match self.core.fsyncdir() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Self::errno("fsyncdir", &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.metrics.count(Op::Statfs);
        let _s = tracing::debug_span!("statfs").entered();
        match self.core.statfs() {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Self::errno("statfs", &e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _t = self.metrics.count(Op::Fallocate);
        let _s = tracing::debug_span!("fallocate", fh = fh.0, offset, length, mode).entered();
        match self.core.fallocate(fh.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Self::errno("fallocate", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request is counted in its own operation's slot: `Op::ALL` lists every operation once, in
    /// discriminant order, and the metrics name each one.
    #[test]
    fn every_operation_has_its_own_counter() {
        let m = FuseMetrics::default();
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
            drop(m.count(*op));
        }
        let counts = m.snapshot();
        let names: std::collections::HashSet<_> = counts.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), Op::ALL.len());
        assert!(counts.iter().all(|(_, c)| *c == 1), "{counts:?}");
    }
}
