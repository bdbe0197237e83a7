//! Where the core runs requests that may wait on the store: the threads of `store_pool.rs`, one
//! pool for uploads and one for reads (so that a foreground read never queues behind compaction
//! outputs' uploads). The core decides, per request, from what it knows about the handle or the
//! inode: an fsync of a remote-placed file being written uploads; a cold read of a block not in
//! memory fetches from a distant store; an open or truncate of a sealed file with no local copy
//! downloads. Everything else runs on the caller's thread: a handoff costs a thread wake-up,
//! which local work should not pay.
//!
//! Until the adapter starts the pools (`FsCore::start_store_threads`), and after it closes them,
//! everything runs on the caller's thread: a job handed over is never dropped unrun.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::RwLock;

use super::{FsCore, Handle, ReadSource, SetAttr};
use crate::error::FsResult;
use crate::placement::Placement;
use crate::store_pool::StorePool;
use crate::table::{FileMeta, Ino};

#[derive(Debug, Default)]
pub(crate) struct Dispatch {
    pools: RwLock<Option<Pools>>,
}

#[derive(Debug)]
struct Pools {
    uploads: StorePool,
    reads: StorePool,
}

#[derive(Debug, Clone, Copy)]
enum Pool {
    Uploads,
    Reads,
}

impl Dispatch {
    /// Runs `job` on `pool` when `may_wait`, else here.
    fn run(&self, pool: Pool, may_wait: bool, job: impl FnOnce() + Send + 'static) {
        if may_wait {
            let pools = self.pools.read();
            if let Some(p) = pools.as_ref() {
                match pool {
                    Pool::Uploads => p.uploads.run(job),
                    Pool::Reads => p.reads.run(job),
                }
                return;
            }
        }
        job()
    }
}

/// What decides: whether a request may wait on the store.
impl FsCore {
    /// Whether [`read`](Self::read) of this range may wait on a distant store: the handle reads
    /// an object with no complete local copy, and some block of the range is not in memory. A
    /// hint: a block evicted right after the answer is fetched by the read all the same.
    fn read_may_fetch(&self, h: &Handle, offset: u64, size: u32) -> bool {
        if !self.remote.is_distant() {
            return false;
        }
        match &h.source {
            ReadSource::Local(_) => false,
            ReadSource::Remote {
                key,
                size: len,
                upgraded,
                ..
            } => {
                upgraded.get().is_none() && !self.cache.blocks.holds(key, *len, offset, size as u64)
            }
        }
    }

    /// Whether a sync or the release of handle `fh` may upload, i.e. wait on the store. A sync of a
    /// local-placed file (WAL, MANIFEST) waits only on the local disk.
    pub(crate) fn may_upload(&self, fh: u64) -> bool {
        self.handle(fh)
            .is_ok_and(|h| h.placement == Placement::Remote && h.writable)
    }

    /// Whether [`open`](Self::open) of `ino` with `flags` may wait on the store: opening a sealed
    /// file for writing downloads it when it has no local copy. RocksDB never does this.
    pub(crate) fn open_may_fetch(&self, ino: Ino, flags: i32) -> bool {
        flags & libc::O_ACCMODE != libc::O_RDONLY
            && self.file_meta(ino).is_ok_and(|f| self.must_download(&f))
    }

    /// Whether writing to `f` needs its object downloaded first: sealed, with no local copy.
    pub(super) fn must_download(&self, f: &FileMeta) -> bool {
        f.sealed.is_some() && !self.local_path(f).exists()
    }

    /// Whether `fh` is a handle open for writing: a truncate through it leaves the upload to its
    /// sync or release.
    pub(super) fn is_writer(&self, fh: Option<u64>) -> bool {
        fh.and_then(|fh| self.handle(fh).ok())
            .is_some_and(|h| h.writable)
    }

    /// Whether a truncate of `ino` (through handle `fh`, if any) may wait on the store: a sealed
    /// file with no local copy is downloaded first, and a truncate by path of a remote-placed file
    /// uploads it (no release follows). RocksDB's truncate of an SST through its writer, with the
    /// copy at hand, waits on neither.
    pub(crate) fn truncate_may_wait(&self, ino: Ino, fh: Option<u64>) -> bool {
        let Ok(f) = self.file_meta(ino) else {
            return false;
        };
        self.must_download(&f) || (f.placement == Placement::Remote && !self.is_writer(fh))
    }
}

impl FsCore {
    /// Starts the store threads (`uploads` and `reads` of them); the gauges count the requests
    /// waiting for one. Called by the FUSE adapter; without them (tests) requests run on the
    /// caller's thread.
    pub(crate) fn start_store_threads(
        &self,
        uploads: usize,
        reads: usize,
        upload_queue: Arc<AtomicU64>,
        read_queue: Arc<AtomicU64>,
    ) -> std::io::Result<()> {
        let pools = Pools {
            uploads: StorePool::new(uploads, "up", upload_queue)?,
            reads: StorePool::new(reads, "read", read_queue)?,
        };
        *self.dispatch.pools.write() = Some(pools);
        Ok(())
    }

    /// Runs the queued requests, then stops the store threads (unmount: uploads accepted before
    /// it complete and are journaled before the core shuts down).
    pub(crate) fn close_store_threads(&self) {
        let pools = self.dispatch.pools.write().take();
        if let Some(mut p) = pools {
            p.uploads.close();
            p.reads.close();
        }
    }

    /// [`FsCore::read`], answered through `reply` here or on a store thread.
    pub(crate) fn read_then(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(FsResult<Vec<u8>>) + Send + 'static,
    ) {
        // One lookup of the handle serves the decision and the read.
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply(Err(e)),
        };
        let core = self.clone();
        let may_wait = self.read_may_fetch(&h, offset, size);
        self.dispatch.run(Pool::Reads, may_wait, move || {
            reply(core.read_from(&h, offset, size))
        });
    }

    /// [`FsCore::fsync`], answered through `reply` here or on a store thread.
    pub(crate) fn fsync_then(
        self: &Arc<Self>,
        fh: u64,
        datasync: bool,
        reply: impl FnOnce(FsResult<()>) + Send + 'static,
    ) {
        let core = self.clone();
        let may_wait = self.may_upload(fh);
        self.dispatch.run(Pool::Uploads, may_wait, move || {
            reply(core.fsync(fh, datasync))
        });
    }

    /// [`FsCore::release`], answered through `reply` here or on a store thread.
    pub(crate) fn release_then(
        self: &Arc<Self>,
        fh: u64,
        reply: impl FnOnce(FsResult<()>) + Send + 'static,
    ) {
        let core = self.clone();
        let may_wait = self.may_upload(fh);
        self.dispatch
            .run(Pool::Uploads, may_wait, move || reply(core.release(fh)));
    }

    /// [`FsCore::setattr`], answered through `reply` here or on a store thread.
    pub(crate) fn setattr_then(
        self: &Arc<Self>,
        ino: Ino,
        fh: Option<u64>,
        set: SetAttr,
        reply: impl FnOnce(FsResult<super::Attr>) + Send + 'static,
    ) {
        let core = self.clone();
        let may_wait = set.size.is_some() && self.truncate_may_wait(ino, fh);
        self.dispatch.run(Pool::Uploads, may_wait, move || {
            reply(core.setattr(ino, fh, set))
        });
    }

    /// Runs `open` (the adapter's open of `ino` with `flags`, which calls [`FsCore::open`]) here or
    /// on a store thread: opening a sealed file with no local copy for writing downloads it.
    pub(crate) fn open_then(
        self: &Arc<Self>,
        ino: Ino,
        flags: i32,
        open: impl FnOnce() + Send + 'static,
    ) {
        let may_wait = self.open_may_fetch(ino, flags);
        self.dispatch.run(Pool::Reads, may_wait, open);
    }
}
