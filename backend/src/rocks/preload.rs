//! The RocksDB backend's read threads: point reads of the entries a batch of async State API
//! requests is about to read ([`crate::StateBackend::preload`]), many at once, so that their blocks
//! are in the block cache (and on ForSt, in the mount's cache) when the task thread reads them.
//!
//! Invariant: a job holds a reference to the database only while it runs, and dropping the
//! [`Preloader`] waits for the running jobs; so once it is dropped (or [`Preloader::wait_idle`]
//! returned with no new preload started) the backend holds the only reference again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rocksdb::DB;

use crate::backend::{Preload, ReadKey};

type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Preloader {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Jobs queued or running, and the signal when it falls to 0.
    busy: Arc<(Mutex<usize>, Condvar)>,
}

impl Preloader {
    pub(crate) fn new(threads: usize) -> Preloader {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("rocks-read-{i}"))
                    .spawn(move || {
                        loop {
                            let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    })
                    .unwrap_or_else(|e| panic!("spawn a RocksDB read thread: {e}"))
            })
            .collect();
        Preloader {
            tx: Some(tx),
            threads,
            busy: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    /// Reads `keys` on the read threads (up to one part per thread, each taking the next key);
    /// `families[state]` names each state's column family.
    pub(crate) fn preload(
        &self,
        db: &Arc<DB>,
        families: Arc<Vec<String>>,
        keys: Vec<ReadKey>,
    ) -> Preload {
        if keys.is_empty() {
            return Preload::ready();
        }
        let keys: Arc<Vec<ReadKey>> = Arc::new(keys);
        let next = Arc::new(AtomicUsize::new(0));
        let parts = self.threads.len().min(keys.len());
        let preload = Preload::of_parts(parts);
        for _ in 0..parts {
            let (db, families, keys, next, done) = (
                db.clone(),
                families.clone(),
                keys.clone(),
                next.clone(),
                preload.clone(),
            );
            let busy = self.busy.clone();
            *busy.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            let job: Job = Box::new(move || {
                let mut key = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((state, kg, ck)) = keys.get(i) else {
                        break;
                    };
                    let Some(cf) = families.get(*state).and_then(|n| db.cf_handle(n)) else {
                        continue;
                    };
                    super::db_key_into(&mut key, *kg, ck);
                    // A failed read only means the task thread reads it (and fails) itself.
                    let _ = db.get_pinned_cf(cf, &key);
                    done.loaded(i);
                }
                drop(db);
                done.part_done();
                let mut n = busy.0.lock().unwrap_or_else(|p| p.into_inner());
                *n -= 1;
                if *n == 0 {
                    busy.1.notify_all();
                }
            });
            if let Some(tx) = &self.tx
                && let Err(e) = tx.send(job)
            {
                // The threads are gone (only while dropping): run it here.
                (e.0)();
            }
        }
        preload
    }

    /// Waits until no job is queued or running.
    pub(crate) fn wait_idle(&self) {
        let (n, idle) = &*self.busy;
        let mut n = n.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Preloader {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
