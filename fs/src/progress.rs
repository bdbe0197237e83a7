//! Progress of long operations (a restore's checks and fetches, gc, fsck, a checkpoint publish),
//! for a person watching. The library only counts; how it is shown is the program's choice: the
//! `statefs` command installs a [`Display`] that draws a bar on a terminal and prints a plain line
//! every few seconds otherwise. Without one (a library user, the tests) counting costs an atomic
//! add at most and shows nothing.
//!
//! Progress never changes what an operation does: a display that fails, or none, is the same run.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shows tasks. Installed once per process with [`set_display`].
pub trait Display: Send + Sync {
    /// A task has begun: `what` it does ("restore: checking objects"), `total` units if known.
    fn start(&self, what: &str, total: Option<u64>) -> Box<dyn Shown>;
}

/// One task as the display shows it.
pub trait Shown: Send + Sync {
    /// `done` units of the task are done (a running total).
    fn update(&self, done: u64);
    /// The task ended (`ok`: completed; else it failed or was abandoned).
    fn finish(&self, done: u64, ok: bool);
}

static DISPLAY: OnceLock<Box<dyn Display>> = OnceLock::new();

/// Installs the process's display; a second call is ignored (returns false).
pub fn set_display(display: Box<dyn Display>) -> bool {
    DISPLAY.set(display).is_ok()
}

/// One long task being counted. Shared by reference between the threads doing it; finished
/// (as failed) on drop unless [`Task::done`] was called.
pub struct Task {
    /// Taken when the task finishes.
    shown: Option<Box<dyn Shown>>,
    done: AtomicU64,
}

/// Begins counting a task.
pub fn task(what: &str, total: Option<u64>) -> Task {
    Task {
        shown: DISPLAY.get().map(|d| d.start(what, total)),
        done: AtomicU64::new(0),
    }
}

impl Task {
    /// `n` more units done.
    pub fn add(&self, n: u64) {
        if let Some(s) = &self.shown {
            let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
            s.update(done);
        }
    }

    /// The task completed.
    pub fn done(mut self) {
        self.finish(true);
    }

    fn finish(&mut self, ok: bool) {
        if let Some(s) = self.shown.take() {
            s.finish(*self.done.get_mut(), ok);
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.finish(false);
    }
}
