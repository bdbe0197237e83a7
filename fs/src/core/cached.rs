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

use std::sync::Weak;

use uuid::Uuid;

use super::FsCore;
use super::worker::Worker;
use crate::cache::{Access, Demoted};
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

impl FsCore {
    pub(crate) fn copy_path(&self, id: &Uuid) -> std::path::PathBuf {
        self.cache_files.join(id.as_hyphenated().to_string())
    }

    /// Drops the local copies of `demoted`: now, or at the last release of an inode that has them open.
    pub(crate) fn drop_copies(&self, demoted: Vec<Demoted>) {
        for d in demoted {
            let mut open = self.open.lock();
            let holder = open
                .values_mut()
                .find(|e| e.local_id == Some(d.id) && e.handles > 0);
            match holder {
                Some(e) => {
                    if e.evicted.is_none() {
                        e.evicted = Some(d.size);
                        drop(open);
                        self.cache.lock().hold(d.size);
                    }
                }
                None => {
                    drop(open);
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
    }

    /// A demoted copy whose last handle just closed: delete it unless it became hot again, or
    /// unless it is not the sealed version (`clean` false: written after its last upload, which
    /// failed): then it holds the only copy of those bytes, and stays for the next sync.
    pub(crate) fn finish_eviction(&self, id: Uuid, size: u64, clean: bool) {
        let hot = {
            let mut cache = self.cache.lock();
            cache.unhold(size);
            cache.is_hot(&id)
        };
        if !clean {
            tracing::warn!(%id, "an evicted copy holds writes not uploaded yet; kept");
        } else if !hot {
            let _ = std::fs::remove_file(self.copy_path(&id));
        }
    }

    /// A remote-placed file just became durable with `size` bytes: it enters the cache.
    pub(crate) fn cache_written(&self, id: Uuid, size: u64) {
        let (hot, mut demoted) = self.cache.lock().insert_written(id, size);
        if !hot {
            demoted.push(Demoted { id, size });
        }
        self.drop_copies(demoted);
    }

    /// Whether a read-only open of sealed file `id` may use its local copy (`exists`: it is on disk).
    pub(crate) fn cache_open(&self, ino: Ino, id: Uuid, exists: bool) -> bool {
        let access = self.cache.lock().access(id);
        match access {
            Access::Hit | Access::Untracked => exists,
            Access::Miss => false,
            Access::Promote(demoted) => {
                self.drop_copies(demoted);
                self.promoted(ino, id, exists)
            }
        }
    }

    /// A read of `id` served from the object store.
    pub(crate) fn cache_remote_read(&self, ino: Ino, id: Uuid) {
        let access = self.cache.lock().access(id);
        if let Access::Promote(demoted) = access {
            self.drop_copies(demoted);
            let exists = self.copy_path(&id).exists();
            self.promoted(ino, id, exists);
        }
    }

    /// A promotion: a copy still on disk (demoted but open) is taken back, else it is loaded.
    fn promoted(&self, ino: Ino, id: Uuid, exists: bool) -> bool {
        if exists {
            let mut open = self.open.lock();
            if let Some(e) = open.values_mut().find(|e| e.local_id == Some(id))
                && let Some(size) = e.evicted.take()
            {
                drop(open);
                let mut cache = self.cache.lock();
                cache.unhold(size);
                cache.count_loadback();
            }
            return true;
        }
        if !self.loader.schedule(ino, id) {
            self.cache.lock().load_failed(id);
        }
        false
    }

    /// Loads a promoted copy (loader thread).
    fn load_copy(&self, ino: Ino, id: Uuid) {
        let f = match self.file_meta(ino) {
            Ok(f) if f.local_id == id => f,
            _ => {
                self.cache.lock().remove(&id);
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
            self.cache.lock().load_failed(id);
        }
    }

    /// Counters of the cache.
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.cache.lock().stats()
    }

    /// Bytes that may still be cached before the limits bite.
    pub fn cache_remaining(&self) -> u64 {
        self.cache.lock().remaining()
    }
}
