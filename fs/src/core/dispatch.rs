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

use super::{FsCore, SetAttr};
use crate::error::FsResult;
use crate::store_pool::StorePool;
use crate::table::Ino;

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

impl FsCore {
    /// Starts the store threads (`threads` per pool); the gauges count the requests waiting for
    /// one. Called by the FUSE adapter; without them (tests) requests run on the caller's thread.
    pub(crate) fn start_store_threads(
        &self,
        threads: usize,
        upload_queue: Arc<AtomicU64>,
        read_queue: Arc<AtomicU64>,
    ) -> std::io::Result<()> {
        let pools = Pools {
            uploads: StorePool::new(threads, "up", upload_queue)?,
            reads: StorePool::new(threads, "read", read_queue)?,
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
        let core = self.clone();
        let may_wait = self.read_may_fetch(fh, offset, size);
        self.dispatch.run(Pool::Reads, may_wait, move || {
            reply(core.read(fh, offset, size))
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
