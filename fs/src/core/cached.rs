//! The core's side of the cache: which local copies stay, go or come back.
//!
//! Invariants:
//! - only sealed remote-placed files are tracked; a file being written, or a sealed file open for
//!   writing, is untracked and so never evicted (nothing evicts a byte that is not durable);
//! - a copy is served (opened as the backing file) only while the index holds it hot;
//! - a demoted copy that is still open stays on disk and counted until its last handle closes; open
//!   handles keep reading it (its bytes are the sealed version, so they are right);
//! - a promotion reserves the space at once and loads the copy in the background; until the copy is
//!   complete the file is read from the object store.

use std::path::PathBuf;
use std::sync::Weak;

use uuid::Uuid;

use super::FsCore;
use super::opens::Opens;
use super::sync::{Mutex, MutexGuard};
use super::worker::Worker;
use crate::cache::{Access, BlockCache, CacheIndex, Demoted};
use crate::table::Ino;

/// A request to the loader.
#[derive(Debug)]
pub(crate) enum Load {
    Copy(Ino, Uuid),
    /// Answered once every load queued before it is done.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// Background loads of promoted copies, one at a time.
#[derive(Debug)]
pub(crate) struct Loader(Worker<Load>);

impl Loader {
    pub(crate) fn start(core: Weak<FsCore>) -> Loader {
        Loader(Worker::spawn("statefs-loader", move |rx| {
            while let Ok(request) = rx.recv() {
                match request {
                    Load::Copy(ino, id) => {
                        let Some(core) = core.upgrade() else { break };
                        core.load_copy(ino, id);
                    }
                    Load::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        }))
    }

    fn schedule(&self, ino: Ino, id: Uuid) -> bool {
        self.0.send(Load::Copy(ino, id))
    }

    /// Waits until every load queued so far is done.
    pub(crate) fn barrier(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.0.send(Load::Barrier(tx)) {
            let _ = rx.recv();
        }
    }

    pub(crate) fn shutdown(&self) {
        self.0.shutdown()
    }
}

/// The cache manager: the index of local copies (which stay, go or come back), the cold-read
/// block cache, and the loader of promoted copies. Its lock (`index`) is a leaf of the core's
/// lock order; the eviction protocol with open inodes takes `Opens`' lock first.
#[derive(Debug)]
pub(crate) struct CacheManager {
    index: Mutex<CacheIndex>,
    pub(crate) blocks: BlockCache,
    loader: Loader,
    /// Where copies live (`<cache-dir>/files`).
    dir: PathBuf,
}

impl CacheManager {
    pub(crate) fn new(index: CacheIndex, blocks: BlockCache, loader: Loader, dir: PathBuf) -> Self {
        CacheManager {
            index: Mutex::new(index),
            blocks,
            loader,
            dir,
        }
    }

    /// The index, for a decision or a count. Never held while taking another lock.
    pub(crate) fn index(&self) -> MutexGuard<'_, CacheIndex> {
        self.index.lock()
    }

    pub(crate) fn copy_path(&self, id: &Uuid) -> PathBuf {
        self.dir.join(id.as_hyphenated().to_string())
    }

    /// Drops the local copies of `demoted`: now, or at the last release of an inode that has
    /// them open (counted as used until then).
    pub(crate) fn drop_copies(&self, opens: &Opens, demoted: Vec<Demoted>) {
        for d in demoted {
            let kept = opens.keep_while_open(d.id, d.size, |bytes| self.index.lock().hold(bytes));
            if !kept {
                match std::fs::remove_file(self.copy_path(&d.id)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::error!(id = %d.id, error = %e, "removing an evicted copy failed")
                    }
                }
            }
        }
    }

    /// A demoted copy whose last handle just closed: delete it unless it became hot again, or
    /// unless it is not the sealed version (`clean` false: written after its last upload, which
    /// failed): then it holds the only copy of those bytes, and stays for the next sync.
    pub(crate) fn finish_eviction(&self, id: Uuid, size: u64, clean: bool) {
        let hot = {
            let mut index = self.index.lock();
            index.unhold(size);
            index.is_hot(&id)
        };
        if !clean {
            tracing::warn!(%id, "an evicted copy holds writes not uploaded yet; kept");
        } else if !hot {
            let _ = std::fs::remove_file(self.copy_path(&id));
        }
    }

    /// A remote-placed file just became durable with `size` bytes: it enters the cache.
    pub(crate) fn written(&self, opens: &Opens, id: Uuid, size: u64) {
        let (hot, mut demoted) = self.index.lock().insert_written(id, size);
        if !hot {
            demoted.push(Demoted { id, size });
        }
        self.drop_copies(opens, demoted);
    }

    /// Whether a read-only open of sealed file `id` may use its local copy (`exists`: it is on disk).
    pub(crate) fn open_copy(&self, opens: &Opens, ino: Ino, id: Uuid, exists: bool) -> bool {
        let access = self.index.lock().access(id);
        match access {
            Access::Hit | Access::Untracked => exists,
            Access::Miss => false,
            Access::Promote(demoted) => {
                self.drop_copies(opens, demoted);
                self.promoted(opens, ino, id, exists)
            }
        }
    }

    /// A read of `id` served from the object store.
    pub(crate) fn remote_read(&self, opens: &Opens, ino: Ino, id: Uuid) {
        let access = self.index.lock().access(id);
        if let Access::Promote(demoted) = access {
            self.drop_copies(opens, demoted);
            let exists = self.copy_path(&id).exists();
            self.promoted(opens, ino, id, exists);
        }
    }

    /// The warm-up of a cold start opened `id`: it gets a local copy if it fits in the cache's
    /// free room ([`CacheIndex::fill`]).
    pub(crate) fn fill(&self, opens: &Opens, ino: Ino, id: Uuid) {
        if self.index.lock().fill(id) {
            let exists = self.copy_path(&id).exists();
            self.promoted(opens, ino, id, exists);
        }
    }

    /// A promotion: a copy still on disk (demoted but open) is taken back, else it is loaded.
    fn promoted(&self, opens: &Opens, ino: Ino, id: Uuid, exists: bool) -> bool {
        if exists {
            if let Some(size) = opens.take_back(Some(id), None) {
                let mut index = self.index.lock();
                index.unhold(size);
                index.count_loadback();
            }
            return true;
        }
        if !self.loader.schedule(ino, id) {
            self.index.lock().load_failed(id);
        }
        false
    }

    /// Waits until every load queued so far is done.
    pub(crate) fn barrier(&self) {
        self.loader.barrier()
    }

    pub(crate) fn shutdown(&self) {
        self.loader.shutdown()
    }
}

impl FsCore {
    pub(crate) fn copy_path(&self, id: &Uuid) -> PathBuf {
        self.cache.copy_path(id)
    }

    pub(crate) fn drop_copies(&self, demoted: Vec<Demoted>) {
        self.cache.drop_copies(&self.opens, demoted)
    }

    pub(crate) fn cache_written(&self, id: Uuid, size: u64) {
        self.cache.written(&self.opens, id, size)
    }

    pub(crate) fn cache_open(&self, ino: Ino, id: Uuid, exists: bool) -> bool {
        self.cache.open_copy(&self.opens, ino, id, exists)
    }

    pub(crate) fn cache_remote_read(&self, ino: Ino, id: Uuid) {
        self.cache.remote_read(&self.opens, ino, id)
    }

    /// Loads a promoted copy (loader thread).
    fn load_copy(&self, ino: Ino, id: Uuid) {
        let f = match self.file_meta(ino) {
            Ok(f) if f.local_id == id => f,
            _ => {
                self.cache.index().remove(&id);
                return;
            }
        };
        let Some(sealed) = f.sealed.clone() else {
            return;
        };
        let (_, upload) = self.acquire(ino, false);
        let result = {
            let _g = upload.lock();
            if self.local_path(&f).exists() {
                Ok(())
            } else {
                self.download(ino, &f, &sealed)
            }
        };
        self.release_count(ino, false);
        if let Err(e) = result {
            tracing::warn!(ino, key = %sealed.key, error = %e, "loading a promoted copy failed; reads stay remote");
            self.cache.index().load_failed(id);
        }
    }

    /// Counters of the cache.
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.cache.index().stats()
    }

    /// Bytes that may still be cached before the limits bite.
    pub(crate) fn cache_remaining(&self) -> u64 {
        self.cache.index().remaining()
    }
}

/// Model-checked under shuttle (`cargo test -p statefs --features shuttle --lib -- core::namespace::model core::cached::model`).
#[cfg(all(test, feature = "shuttle"))]
mod model {
    use std::sync::Weak;

    use super::*;
    use crate::cache::{CacheConfig, LimitPolicy, StatvfsFreeSpace};
    use crate::core::opens::Uncounted;

    fn manager(dir: &std::path::Path) -> CacheManager {
        let cfg = CacheConfig::default();
        let policy =
            LimitPolicy::from_config(1 << 30, 0, Box::new(StatvfsFreeSpace(dir.to_path_buf())));
        CacheManager::new(
            CacheIndex::new(cfg, policy),
            BlockCache::new(cfg.blocks),
            Loader::start(Weak::new()),
            dir.to_path_buf(),
        )
    }

    /// A copy demoted while its inode's last handle closes, in any order: the bytes it is
    /// counted with while open are uncounted exactly once (the cache's limit does not shrink for
    /// good), and the copy is gone once both are done.
    #[test]
    fn model_cache_demotion_while_the_last_handle_closes() {
        shuttle::check_random(
            || {
                let dir = tempfile::tempdir().unwrap();
                let cache = std::sync::Arc::new(manager(dir.path()));
                let opens = std::sync::Arc::new(Opens::default());
                let id = Uuid::new_v4();
                std::fs::write(cache.copy_path(&id), b"copy").unwrap();
                opens.acquire(5, false, Some(id));
                let demote = {
                    let (cache, opens) = (cache.clone(), opens.clone());
                    shuttle::thread::spawn(move || {
                        cache.drop_copies(&opens, vec![Demoted { id, size: 100 }])
                    })
                };
                let close = {
                    let (cache, opens) = (cache.clone(), opens.clone());
                    shuttle::thread::spawn(move || {
                        if let Uncounted::Closed {
                            evicted: Some((id, size, dirty)),
                        } = opens.uncount(5, false)
                        {
                            cache.finish_eviction(id, size, !dirty);
                        }
                    })
                };
                demote.join().unwrap();
                close.join().unwrap();
                assert_eq!(cache.index().stats().used, 0, "bytes still counted");
                assert!(!cache.copy_path(&id).exists(), "the demoted copy is left");
            },
            500,
        );
    }
}
