//! Open inodes: the runtime state of every inode with open handles (never journaled), behind one
//! lock (`open` in the core's lock order: after the namespace's locks, before the leaves).
//!
//! An inode is open from its first `acquire` to the `uncount` of its last handle. A copy the
//! cache demoted while the inode was open stays on disk and counted (`OpenInode::evicted`) until
//! that last `uncount`, which hands the count back (`Uncounted::Closed`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex as LeafMutex;

use super::fds::{FdBudget, LazyFile};
use super::sync::Mutex;
use crate::error::{FsError, FsResult};
use crate::table::Ino;

/// Runtime state of an inode with open handles.
#[derive(Debug, Default)]
pub(crate) struct OpenInode {
    handles: u32,
    writers: u32,
    /// The local backing file, shared by all handles (the kernel's passthrough backing id holds
    /// its own reference); its descriptor opens on demand and closes while idle (`fds`).
    file: Option<Arc<LazyFile>>,
    /// Set by daemon-side writes; a remote-placed file with this set is uploaded at its next sync.
    dirty: Arc<AtomicBool>,
    /// Serializes uploads of this inode.
    upload: Arc<LeafMutex<()>>,
    /// The inode's local copy id (remote-placed files), to find it from cache decisions.
    local_id: Option<uuid::Uuid>,
    /// The copy was demoted while open: delete it (this many bytes) at the last release.
    evicted: Option<u64>,
}

/// What the last `uncount` of an inode leaves to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Uncounted {
    /// Other handles remain (or the inode was not open).
    StillOpen,
    /// That was the last handle. `evicted`: a copy demoted while open, `(id, bytes, dirty)`,
    /// whose count (and file) the caller now owns.
    Closed {
        evicted: Option<(uuid::Uuid, u64, bool)>,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Opens {
    inodes: Mutex<HashMap<Ino, OpenInode>>,
}

impl Opens {
    /// Counts a new handle on `ino`; returns its dirty flag and upload lock.
    pub(crate) fn acquire(
        &self,
        ino: Ino,
        writable: bool,
        local_id: Option<uuid::Uuid>,
    ) -> (Arc<AtomicBool>, Arc<LeafMutex<()>>) {
        let mut open = self.inodes.lock();
        let e = open.entry(ino).or_default();
        e.handles += 1;
        if writable {
            e.writers += 1;
        }
        if local_id.is_some() {
            e.local_id = local_id;
        }
        (e.dirty.clone(), e.upload.clone())
    }

    /// Uncounts a handle of `ino`.
    pub(crate) fn uncount(&self, ino: Ino, writable: bool) -> Uncounted {
        let mut open = self.inodes.lock();
        let Some(e) = open.get_mut(&ino) else {
            return Uncounted::StillOpen;
        };
        e.handles = e.handles.saturating_sub(1);
        if writable {
            e.writers = e.writers.saturating_sub(1);
        }
        if e.handles > 0 {
            return Uncounted::StillOpen;
        }
        let evicted = open
            .remove(&ino)
            .and_then(|e| Some((e.local_id?, e.evicted?, e.dirty.load(Ordering::Acquire))));
        Uncounted::Closed { evicted }
    }

    pub(crate) fn is_open(&self, ino: Ino) -> bool {
        self.inodes.lock().get(&ino).is_some_and(|o| o.handles > 0)
    }

    /// Whether `ino`'s local bytes may differ from its record: open for writing, or written by
    /// the daemon since its last upload.
    pub(crate) fn may_be_modified(&self, ino: Ino) -> bool {
        self.inodes
            .lock()
            .get(&ino)
            .is_some_and(|o| o.writers > 0 || o.dirty.load(Ordering::Relaxed))
    }

    /// The backing file of open inode `ino` (at `path`), shared by its handles.
    pub(crate) fn backing_file(
        &self,
        ino: Ino,
        path: &Path,
        fds: &Arc<FdBudget>,
    ) -> FsResult<Arc<LazyFile>> {
        let mut open = self.inodes.lock();
        let e = open.get_mut(&ino).ok_or(FsError::BadHandle)?;
        Ok(e.file
            .get_or_insert_with(|| Arc::new(LazyFile::new(path.to_path_buf(), fds.clone())))
            .clone())
    }

    /// The backing files of all open inodes (to close idle descriptors).
    pub(crate) fn backing_files(&self) -> Vec<Arc<LazyFile>> {
        self.inodes
            .lock()
            .values()
            .filter_map(|e| e.file.clone())
            .collect()
    }

    /// The copy `id` was demoted: if an open inode uses it, it stays until that inode's last
    /// `uncount`, and `hold(bytes)` counts it meanwhile, called under this lock so that the
    /// count is in place before that `uncount` can hand it back. Returns false when no open
    /// inode uses it (the caller removes it now).
    pub(crate) fn keep_while_open(
        &self,
        id: uuid::Uuid,
        bytes: u64,
        hold: impl FnOnce(u64),
    ) -> bool {
        let mut open = self.inodes.lock();
        match open
            .values_mut()
            .find(|e| e.local_id == Some(id) && e.handles > 0)
        {
            Some(e) => {
                if e.evicted.is_none() {
                    e.evicted = Some(bytes);
                    hold(bytes);
                }
                true
            }
            None => false,
        }
    }

    /// A demoted copy `id` that an open inode still keeps is wanted again (promoted, or opened
    /// for writing as `ino`'s working copy): it is no longer deleted at the last close. Returns
    /// the bytes it was counted with, for the caller to uncount.
    pub(crate) fn take_back(&self, id: Option<uuid::Uuid>, ino: Option<Ino>) -> Option<u64> {
        let mut open = self.inodes.lock();
        let e = match ino {
            Some(ino) => open.get_mut(&ino)?,
            None => open.values_mut().find(|e| e.local_id == id)?,
        };
        e.evicted.take()
    }
}
