//! Writes applied behind the task thread: while the async State API runs records
//! ([`crate::StateBackend::write_behind`]), the RocksDB backend's puts, merges and deletes go
//! into write batches that one write thread applies, so the task thread does not do the memtable
//! inserts (Flink's ForSt state executor does the same with its write batches).
//!
//! Invariants:
//! - **Reads see every earlier write.** `pending` holds each entry written in a batch not yet
//!   applied, with its latest write; an entry leaves it only once the batch of that write is
//!   applied. So an entry not in `pending` has all its writes in the database. A point read of an
//!   entry in `pending` is answered from it (put, delete) or waits for that batch (merge); every
//!   other read (scans, iteration, snapshots, checkpoints, flushes) first waits for all batches
//!   ([`WriteBehind::settle`]).
//! - **Values read ahead never go around a pending write.** The backend makes no read-ahead slot
//!   for an entry in `pending` (see `rocks/preload.rs`); a slot is made only while all the entry's
//!   writes are in the database, and a later write removes it, as without write-behind.
//! - **Order.** Batches are applied one at a time, in the order they were made, by one thread.
//! - **Failure.** A batch that fails to apply stops write-behind: every later write, point read of
//!   a pending entry and settle reports that failure, and no later batch is applied. (A write that
//!   returned before its batch failed is reported by the next call: as with Flink's write batches,
//!   the job fails then and restores from its last checkpoint.)
//! - **Off** (the default, and after [`WriteBehind::stop`]): no thread runs, none holds a
//!   reference to the database, and writes go straight to RocksDB.

use std::collections::HashMap;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rocksdb::{DB, WriteBatch};

use crate::backend::StateId;
use crate::error::StateResult;

/// Writes per batch; a batch is also sent when a read needs one of its entries.
const BATCH_WRITES: usize = 512;
/// Batches sent and not yet applied at most: the task thread waits beyond (memory stays bounded).
const MAX_QUEUED: u64 = 8;

/// The latest write of an entry.
enum Last {
    Put(Vec<u8>),
    Delete,
    Merge,
}

/// What a point read learns from `pending`.
pub(crate) enum Lookup {
    /// The entry's value (or no entry) after its latest write, not yet applied.
    Written(Option<Vec<u8>>),
    /// The database holds every write of the entry: read it there.
    InDatabase,
}

#[derive(Default)]
struct Progress {
    /// Batches applied: 1..=applied.
    applied: u64,
    failure: Option<rocksdb::Error>,
}

struct Worker {
    tx: Sender<(u64, WriteBatch)>,
    thread: JoinHandle<()>,
}

pub(crate) struct WriteBehind {
    on: bool,
    batch: WriteBatch,
    /// Number of the batch being filled; batches 1..open were sent.
    open: u64,
    /// (state, database key) -> latest write, and the batch it is in.
    /// By state (so that a lookup borrows the key): database key -> latest write, its batch.
    pending: Vec<HashMap<Vec<u8>, (Last, u64)>>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
    worker: Option<Worker>,
}

impl Default for WriteBehind {
    fn default() -> Self {
        WriteBehind {
            on: false,
            batch: WriteBatch::default(),
            open: 1,
            pending: Vec::new(),
            progress: Arc::default(),
            worker: None,
        }
    }
}

fn write_options() -> rocksdb::WriteOptions {
    let mut w = rocksdb::WriteOptions::default();
    w.disable_wal(true);
    w
}

impl WriteBehind {
    pub(crate) fn is_on(&self) -> bool {
        self.on
    }

    fn failure(&self) -> StateResult<()> {
        let p = self.progress.0.lock().unwrap_or_else(|p| p.into_inner());
        match &p.failure {
            Some(e) => Err(super::rocks_err(e.clone())),
            None => Ok(()),
        }
    }

    /// Turns write-behind on; writes made from now on are applied by the write thread.
    pub(crate) fn start(&mut self) -> StateResult<()> {
        self.failure()?;
        self.on = true;
        Ok(())
    }

    /// Applies every write and turns write-behind off (the thread ends).
    pub(crate) fn stop(&mut self, db: &Arc<DB>) -> StateResult<()> {
        let settled = self.pause(db);
        self.on = false;
        settled
    }

    /// Applies every write and ends the thread, so that nothing else holds the database; stays
    /// on (the next batch starts a thread again).
    pub(crate) fn pause(&mut self, db: &Arc<DB>) -> StateResult<()> {
        let settled = self.settle(db);
        self.end_worker();
        settled
    }

    /// A put (`Some`), a delete (`None`) or a merge of `key` in column family `cf`.
    pub(crate) fn write(
        &mut self,
        db: &Arc<DB>,
        cf: &rocksdb::ColumnFamily,
        state: StateId,
        key: Vec<u8>,
        write: Write<'_>,
    ) -> StateResult<()> {
        self.failure()?;
        let last = match write {
            Write::Put(v) => {
                self.batch.put_cf(cf, &key, v);
                Last::Put(v.to_vec())
            }
            Write::Delete => {
                self.batch.delete_cf(cf, &key);
                Last::Delete
            }
            Write::Merge(v) => {
                self.batch.merge_cf(cf, &key, v);
                Last::Merge
            }
        };
        // A merge over a put or delete not yet applied is applied first, with it.
        if self.pending.len() <= state {
            self.pending.resize_with(state + 1, HashMap::new);
        }
        self.pending[state].insert(key, (last, self.open));
        if self.batch.len() >= BATCH_WRITES {
            self.send(db)?;
        }
        Ok(())
    }

    /// What a point read of `key` should return, waiting for a pending merge to be applied.
    pub(crate) fn lookup(
        &mut self,
        db: &Arc<DB>,
        state: StateId,
        key: &[u8],
    ) -> StateResult<Lookup> {
        let batch = match self.pending_write(state, key) {
            None => return Ok(Lookup::InDatabase),
            Some((Last::Put(v), _)) => return Ok(Lookup::Written(Some(v.clone()))),
            Some((Last::Delete, _)) => return Ok(Lookup::Written(None)),
            Some((Last::Merge, batch)) => *batch,
        };
        if batch == self.open {
            self.send(db)?;
        }
        self.wait_applied(batch)?;
        Ok(Lookup::InDatabase)
    }

    fn pending_write(&self, state: StateId, key: &[u8]) -> Option<&(Last, u64)> {
        self.pending.get(state)?.get(key)
    }

    /// Whether `key` has a write not yet applied (then no value may be read ahead for it).
    pub(crate) fn is_pending(&self, state: StateId, key: &[u8]) -> bool {
        self.on && self.pending_write(state, key).is_some()
    }

    /// Waits until every write made so far is in the database.
    pub(crate) fn settle(&mut self, db: &Arc<DB>) -> StateResult<()> {
        self.send(db)?;
        self.wait_applied(self.open - 1)?;
        self.pending.iter_mut().for_each(HashMap::clear);
        Ok(())
    }

    fn wait_applied(&self, batch: u64) -> StateResult<()> {
        let (lock, cv) = &*self.progress;
        let mut p = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = &p.failure {
                return Err(super::rocks_err(e.clone()));
            }
            if p.applied >= batch {
                return Ok(());
            }
            p = cv.wait(p).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Hands the open batch to the write thread (started if needed) and forgets the entries
    /// whose latest write is applied.
    fn send(&mut self, db: &Arc<DB>) -> StateResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // Bounded: wait while too many batches are queued.
        if self.open > MAX_QUEUED {
            self.wait_applied(self.open - MAX_QUEUED)?;
        }
        let batch = std::mem::take(&mut self.batch);
        let number = self.open;
        self.open += 1;
        let worker = self
            .worker
            .get_or_insert_with(|| spawn(db.clone(), self.progress.clone()));
        if let Err(back) = worker.tx.send((number, batch)) {
            // The thread is gone (it only ends when the sender is dropped): apply it here.
            let (number, batch) = back.0;
            apply(db, &self.progress, number, batch);
        }
        let applied = self
            .progress
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied;
        for m in &mut self.pending {
            m.retain(|_, (_, b)| *b > applied);
        }
        self.failure()
    }

    fn end_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            drop(w.tx);
            let _ = w.thread.join();
        }
    }
}

/// A write of [`WriteBehind::write`].
pub(crate) enum Write<'a> {
    Put(&'a [u8]),
    Delete,
    Merge(&'a [u8]),
}

fn apply(db: &DB, progress: &(Mutex<Progress>, Condvar), number: u64, batch: WriteBatch) {
    let failed = progress
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .failure
        .is_some();
    // After a failure no later batch is applied (order: a later write must not land without an
    // earlier one).
    let result = if failed {
        Ok(())
    } else {
        db.write_opt(batch, &write_options())
    };
    let (lock, cv) = progress;
    let mut p = lock.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(()) if p.failure.is_none() => p.applied = number,
        Ok(()) => {}
        Err(e) => {
            tracing::error!(error = %e, batch = number, "rocksdb: applying a write batch failed");
            p.failure = Some(e);
        }
    }
    cv.notify_all();
}

fn spawn(db: Arc<DB>, progress: Arc<(Mutex<Progress>, Condvar)>) -> Worker {
    let (tx, rx) = channel::<(u64, WriteBatch)>();
    let thread = std::thread::Builder::new()
        .name("rocks-write".into())
        .spawn(move || {
            while let Ok((number, batch)) = rx.recv() {
                apply(&db, &progress, number, batch);
            }
        })
        .unwrap_or_else(|e| panic!("spawn the RocksDB write thread: {e}"));
    Worker { tx, thread }
}

impl Drop for WriteBehind {
    /// The owner settles first (it holds the database); here the thread only ends.
    fn drop(&mut self) {
        self.end_worker();
    }
}
