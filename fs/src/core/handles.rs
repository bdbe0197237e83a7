//! Handles: the numbers the kernel holds for open files and directories. A file handle owns its
//! `Handle` (inode, placement, where reads come from); a directory handle the listing taken at
//! `opendir`. Both tables are leaves of the core's lock order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::{DirEntry, Handle};
use crate::error::{FsError, FsResult};

#[derive(Debug)]
pub(crate) struct Handles {
    files: RwLock<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Handle numbers are never reused while a mount lives.
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            files: Default::default(),
            dirs: Default::default(),
            next: AtomicU64::new(1),
        }
    }
}

impl Handles {
    fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn open_file(&self, h: Handle) -> u64 {
        let fh = self.next();
        self.files.write().insert(fh, Arc::new(h));
        fh
    }

    pub(super) fn file(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.files
            .read()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    pub(super) fn close_file(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.files.write().remove(&fh).ok_or(FsError::BadHandle)
    }

    pub(super) fn open_dir(&self, entries: Vec<DirEntry>) -> u64 {
        let fh = self.next();
        self.dirs.lock().insert(fh, Arc::new(entries));
        fh
    }

    pub(super) fn dir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        self.dirs.lock().get(&fh).cloned().ok_or(FsError::BadHandle)
    }

    pub(super) fn close_dir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }
}
