//! Threads for the FUSE requests that may wait on the object store: fsync of a remote-placed file
//! uploads it, so does the release of its last writer when nothing synced it, and a read of a file
//! with no local copy may have to fetch blocks.
//!
//! A FUSE worker that ran such a request itself was held until the store answered, and there are
//! only a few of them (`statefs.fuse.threads`, 2 by default). Two compaction outputs being synced
//! at once, or two cold reads on a slow store, then stalled every other request of the mount — a
//! WAL fsync, an open, the hard links of a checkpoint — and capped the store requests in flight at
//! the worker count. The adapter hands such requests to this pool and returns to `/dev/fuse` at
//! once; the pool thread replies when the work is done (a fuser reply can be sent from any thread).
//!
//! Invariant: every job handed to [`StorePool::run`] runs exactly once, also when the pool shuts
//! down — [`StorePool::close`] runs the queued jobs before it returns, so an upload accepted before
//! unmount still completes and is journaled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

impl std::fmt::Debug for StorePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorePool")
            .field("threads", &self.threads.len())
            .field("queued", &self.queued)
            .finish()
    }
}

pub struct StorePool {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Jobs handed over and not yet started (the `statefs_store_queue` gauge).
    queued: Arc<AtomicU64>,
}

impl StorePool {
    /// Starts `threads` threads (at least one), named `statefs-<name>-<n>`; `queued` counts the
    /// jobs waiting for one of them.
    pub fn new(threads: usize, name: &str, queued: Arc<AtomicU64>) -> std::io::Result<StorePool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = StorePool {
            tx: Some(tx),
            threads: Vec::new(),
            queued: queued.clone(),
        };
        for n in 0..threads.max(1) {
            let rx = rx.clone();
            let queued = queued.clone();
            let handle = std::thread::Builder::new()
                .name(format!("statefs-{name}-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job, never while one runs.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => {
                                queued.fetch_sub(1, Ordering::Relaxed);
                                // A panicking job must not take its thread along: with every
                                // thread gone, later requests would queue forever. Its reply,
                                // dropped in the unwinding, answers EIO.
                                let run = std::panic::AssertUnwindSafe(job);
                                if std::panic::catch_unwind(run).is_err() {
                                    tracing::error!("a store request panicked; it got EIO");
                                }
                            }
                            // Sender gone and the queue drained.
                            Err(_) => return,
                        }
                    }
                })?;
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// Runs `job` on a pool thread; it waits in a queue while every thread is busy. After
    /// [`close`](Self::close) the job runs on the calling thread, so it is never dropped unrun.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let rejected = match &self.tx {
            Some(tx) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                match tx.send(job) {
                    Ok(()) => return,
                    Err(mpsc::SendError(job)) => {
                        self.queued.fetch_sub(1, Ordering::Relaxed);
                        job
                    }
                }
            }
            None => job,
        };
        rejected()
    }

    /// Runs `job` on a pool thread when `may_wait` (it may wait on the store), else right here:
    /// a handoff costs a thread wake-up, which local work should not pay.
    pub fn run_if(&self, may_wait: bool, job: impl FnOnce() + Send + 'static) {
        if may_wait { self.run(job) } else { job() }
    }

    /// Runs every queued job, then stops the threads. Idempotent.
    pub fn close(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a store thread panicked");
            }
        }
    }
}

impl Drop for StorePool {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn jobs_run_at_once_up_to_the_thread_count() {
        // Three jobs that can only finish together: a pool that ran them one at a time, or on
        // fewer threads, would never pass the barrier.
        let pool = StorePool::new(3, "test", Default::default()).unwrap();
        let barrier = Arc::new(Barrier::new(4));
        for _ in 0..3 {
            let b = barrier.clone();
            pool.run(move || {
                b.wait();
            });
        }
        barrier.wait();
    }

    #[test]
    fn a_panicking_job_leaves_its_thread_serving() {
        let mut pool = StorePool::new(1, "test", Default::default()).unwrap();
        pool.run(|| panic!("injected"));
        let (tx, rx) = std::sync::mpsc::channel();
        pool.run(move || tx.send(()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("the only thread died with the panicking job");
        pool.close();
    }

    #[test]
    fn close_runs_every_queued_job() {
        let queued = Arc::new(AtomicU64::new(0));
        let mut pool = StorePool::new(1, "test", queued.clone()).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        // The first job holds the only thread, so the others queue behind it.
        {
            let gate = gate.clone();
            let done = done.clone();
            pool.run(move || {
                drop(gate.lock().unwrap());
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for _ in 0..20 {
            let done = done.clone();
            pool.run(move || {
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        // 20, or 21 while the thread has not taken the first job yet.
        assert!(queued.load(Ordering::SeqCst) >= 20);
        drop(held);
        pool.close();
        assert_eq!(done.load(Ordering::SeqCst), 21);
        assert_eq!(queued.load(Ordering::SeqCst), 0);
        // After close a job still runs, on the caller's thread.
        let d = done.clone();
        pool.run(move || {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 22);
    }
}
