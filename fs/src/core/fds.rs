//! Descriptors of backing files, kept within a budget so that a mount serves more open files than
//! it may hold descriptors.
//!
//! Each open inode with a local backing file has one [`LazyFile`]: the descriptor is opened on
//! first use and may be closed again whenever no operation is using it (its `Arc<File>` is held
//! only by the slot). A passthrough open hands the kernel its own reference to the file at
//! registration, so a closed descriptor costs a passthrough reader nothing; a daemon-served
//! read or write reopens it by path (stable for the inode's life: see `FsCore::local_path`).
//! When more descriptors are open than the budget allows ([`FdBudget`], from `RLIMIT_NOFILE`
//! less a reserve for the journal, sockets, uploads and downloads), the least recently used idle
//! ones are closed; an open that still meets EMFILE closes idle ones and tries once more.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Descriptors kept free for everything but backing files.
const RESERVE: u64 = 128;

/// How many backing-file descriptors may be open at once, and how many are.
#[derive(Debug)]
pub(crate) struct FdBudget {
    limit: AtomicUsize,
    open: AtomicUsize,
    clock: AtomicU64,
}

impl FdBudget {
    /// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and budgets what that allows.
    pub(crate) fn from_rlimit() -> FdBudget {
        let limit = raise_nofile_limit();
        FdBudget::new(limit.saturating_sub(RESERVE).max(16) as usize)
    }

    pub(crate) fn new(limit: usize) -> FdBudget {
        FdBudget {
            limit: AtomicUsize::new(limit),
            open: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
        }
    }

    /// Descriptors over the budget now.
    pub(crate) fn excess(&self) -> usize {
        self.open
            .load(Ordering::Relaxed)
            .saturating_sub(self.limit.load(Ordering::Relaxed))
    }

    /// A smaller budget, for tests.
    #[cfg(test)]
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub(crate) fn open_now(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Sets the soft limit of open files to the hard limit; returns the soft limit in force.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::debug!(from = soft, to = hard, "raised the open-file limit");
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// One inode's backing file, opened read-write on demand and closable while idle.
#[derive(Debug)]
pub(crate) struct LazyFile {
    path: PathBuf,
    slot: Mutex<Option<Arc<File>>>,
    last_use: AtomicU64,
    budget: Arc<FdBudget>,
}

impl LazyFile {
    pub(crate) fn new(path: PathBuf, budget: Arc<FdBudget>) -> LazyFile {
        LazyFile {
            path,
            slot: Mutex::new(None),
            last_use: AtomicU64::new(0),
            budget,
        }
    }

    /// The open file, opening it if needed. The caller holds the returned `Arc` only for the
    /// duration of one operation: while it does, the descriptor is not closed.
    pub(crate) fn get(&self) -> std::io::Result<Arc<File>> {
        self.last_use.store(
            self.budget.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let mut slot = self.slot.lock();
        if let Some(f) = &*slot {
            return Ok(f.clone());
        }
        let f = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)?,
        );
        self.budget.open.fetch_add(1, Ordering::Relaxed);
        *slot = Some(f.clone());
        Ok(f)
    }

    /// Closes the descriptor if no operation holds it; true if it did.
    pub(crate) fn close_if_idle(&self) -> bool {
        let Some(mut slot) = self.slot.try_lock() else {
            return false;
        };
        if slot.as_ref().is_some_and(|f| Arc::strong_count(f) == 1) {
            *slot = None;
            self.budget.open.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    pub(crate) fn last_use(&self) -> u64 {
        self.last_use.load(Ordering::Relaxed)
    }
}

impl Drop for LazyFile {
    fn drop(&mut self) {
        if self.slot.get_mut().take().is_some() {
            self.budget.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether an open failed for want of descriptors.
pub(crate) fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_descriptors_close_and_reopen_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let budget = Arc::new(FdBudget::new(1));
        let lazy = LazyFile::new(path, budget.clone());
        let held = lazy.get().unwrap();
        assert_eq!(budget.open_now(), 1);
        assert!(!lazy.close_if_idle(), "in use: kept");
        drop(held);
        assert!(lazy.close_if_idle());
        assert_eq!(budget.open_now(), 0);
        let mut buf = [0u8; 3];
        std::os::unix::fs::FileExt::read_exact_at(&*lazy.get().unwrap(), &mut buf, 0).unwrap();
        assert_eq!(&buf, b"abc");
        drop(lazy);
        assert_eq!(budget.open_now(), 0);
    }
}
