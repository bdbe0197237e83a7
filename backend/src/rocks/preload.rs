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

/// An entry to read: state, database key, and its slot's generation (`None`: no slot, not read).
type ToRead = (usize, Vec<u8>, Option<u64>);

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
                                // A job that panics ends its part (`Finish`); the thread goes on.
                                Ok(job) => {
                                    let _ =
                                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                                }
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
    /// `families[state]` names each state's column family. An entry for which `written(state,
    /// database key)` holds has a write the database does not have yet (`rocks/write_behind.rs`):
    /// it gets no slot and is not read.
    pub(crate) fn preload(
        &self,
        db: &Arc<DB>,
        families: Arc<Vec<String>>,
        read_ahead: &Arc<ReadAhead>,
        keys: Vec<ReadKey>,
        written: &dyn Fn(usize, &[u8]) -> bool,
    ) -> Preload {
        if keys.is_empty() {
            return Preload::ready();
        }
        // (state, database key, slot generation) of each entry.
        let keyed: Vec<(usize, Vec<u8>)> = keys
            .into_iter()
            .map(|(s, kg, ck)| (s, super::db_key(kg, &ck)))
            .collect();
        let read: Vec<usize> = (0..keyed.len())
            .filter(|&i| !written(keyed[i].0, &keyed[i].1))
            .collect();
        let wanted: Vec<(usize, &[u8])> = read
            .iter()
            .map(|&i| (keyed[i].0, keyed[i].1.as_slice()))
            .collect();
        let mut gens: Vec<Option<u64>> = vec![None; keyed.len()];
        for (&i, g) in read.iter().zip(read_ahead.expect(&wanted)) {
            gens[i] = Some(g);
        }
        let keys: Arc<Vec<ToRead>> = Arc::new(
            keyed
                .into_iter()
                .zip(gens)
                .map(|((s, k), g)| (s, k, g))
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let parts = self.threads.len().min(keys.len());
        let preload = Preload::of_parts(parts);
        for _ in 0..parts {
            let (db, families, keys, next, done, read_ahead) = (
                db.clone(),
                families.clone(),
                keys.clone(),
                next.clone(),
                preload.clone(),
                read_ahead.clone(),
            );
            let busy = self.busy.clone();
            *busy.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            let job: Job = Box::new(move || {
                // The part ends, and the job counts as finished, however the job ends (a panic
                // included): the controller waits for the parts of a preload, never for a thread.
                let finish = Finish {
                    db: Some(db),
                    part: done.clone(),
                    busy,
                };
                let db = finish.db.as_ref().expect("set above");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((state, key, generation)) = keys.get(i) else {
                        break;
                    };
                    let Some(generation) = generation else {
                        done.loaded(i); // its value is the task thread's own write
                        continue;
                    };
                    let Some(cf) = families.get(*state).and_then(|n| db.cf_handle(n)) else {
                        continue;
                    };
                    // A failed read only means the task thread reads it (and fails) itself.
                    if let Ok(value) = db.get_cf(cf, key) {
                        read_ahead.fill(*state, key, *generation, value);
                    }
                    done.loaded(i);
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

/// Ends a job when dropped: its reference to the database first (a job counted as finished holds
/// none, see the module's invariant), then its part of the preload, then the count of jobs.
struct Finish {
    db: Option<Arc<DB>>,
    part: Preload,
    busy: Arc<(Mutex<usize>, Condvar)>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.db.take();
        self.part.part_done();
        let mut n = self.busy.0.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            self.busy.1.notify_all();
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

/// Values read ahead, handed to the task thread's next read of the same entry so that it does not
/// read RocksDB a second time.
///
/// Invariant: a slot's value is the entry's current value. A slot is made (empty) on the task
/// thread when the preload is issued; every write of the entry on the task thread (put, merge,
/// delete, a prefix delete, a load) removes its slot; a read thread fills a slot only if it is
/// still the one made for its read (same generation) and still empty. So a value read before a
/// write finds no slot, or a newer one, and is dropped; and a filled slot saw no write since its
/// read. The task thread may also make a slot filled with its own read ([`ReadAhead::put_now`]),
/// which no write can come between. A read takes the slot (once), filled or not.
#[derive(Default)]
pub(crate) struct ReadAhead {
    slots: Mutex<Slots>,
    /// Slots held: reads and writes of the sync API alone skip the lock.
    held: AtomicUsize,
}

#[derive(Default)]
struct Slots {
    /// By state: database key -> slot.
    by_state: Vec<std::collections::HashMap<Vec<u8>, Slot>>,
    next_gen: u64,
    count: usize,
}

impl Slots {
    /// Drops every slot if `n` more would pass [`MAX_SLOTS`] (reads then go to RocksDB).
    fn make_room(&mut self, n: usize) {
        if self.count + n > MAX_SLOTS {
            self.by_state.clear();
            self.count = 0;
        }
    }

    /// Makes (or replaces) the slot of `key` in `state`, holding `value`; returns its generation.
    fn make(&mut self, state: usize, key: Vec<u8>, value: Option<Option<Vec<u8>>>) -> u64 {
        let generation = self.next_gen;
        self.next_gen += 1;
        if self.by_state.len() <= state {
            self.by_state.resize_with(state + 1, Default::default);
        }
        if self.by_state[state]
            .insert(key, Slot { generation, value })
            .is_none()
        {
            self.count += 1;
        }
        generation
    }
}

struct Slot {
    generation: u64,
    /// `None` until read: then the entry's value, or `None` for no entry.
    value: Option<Option<Vec<u8>>>,
}

/// Slots kept at most; beyond, all are dropped (reads then go to RocksDB).
const MAX_SLOTS: usize = 1 << 18;

impl ReadAhead {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes empty slots for `keys` (state, database key); returns their generations.
    pub(crate) fn expect(&self, keys: &[(usize, &[u8])]) -> Vec<u64> {
        let mut s = self.slots();
        s.make_room(keys.len());
        let gens = keys
            .iter()
            .map(|(state, key)| s.make(*state, key.to_vec(), None))
            .collect();
        self.held.store(s.count, Ordering::Release);
        gens
    }

    /// Fills the slot of generation `generation`, if it is still there and empty.
    pub(crate) fn fill(&self, state: usize, key: &[u8], generation: u64, value: Option<Vec<u8>>) {
        let mut s = self.slots();
        if let Some(slot) = s.by_state.get_mut(state).and_then(|m| m.get_mut(key))
            && slot.generation == generation
            && slot.value.is_none()
        {
            slot.value = Some(value);
        }
    }

    /// Makes a filled slot for an entry the task thread just read (the read that follows takes
    /// it, with no write between on that thread).
    pub(crate) fn put_now(&self, state: usize, key: Vec<u8>, value: Option<Vec<u8>>) {
        let mut s = self.slots();
        s.make_room(1);
        s.make(state, key, Some(value));
        self.held.store(s.count, Ordering::Release);
    }

    /// Takes the slot of an entry being read: its value if it was read ahead.
    pub(crate) fn take(&self, state: usize, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if self.held.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut s = self.slots();
        let slot = s.by_state.get_mut(state)?.remove(key)?;
        s.count -= 1;
        self.held.store(s.count, Ordering::Release);
        slot.value
    }

    /// An entry is written: its slot goes.
    pub(crate) fn forget(&self, state: usize, key: &[u8]) {
        if self.held.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut s = self.slots();
        if let Some(m) = s.by_state.get_mut(state)
            && m.remove(key).is_some()
        {
            s.count -= 1;
            self.held.store(s.count, Ordering::Release);
        }
    }

    /// Entries of `state` whose key starts with `prefix` are written (or all, for an empty one).
    pub(crate) fn forget_prefix(&self, state: usize, prefix: &[u8]) {
        if self.held.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut s = self.slots();
        if let Some(m) = s.by_state.get_mut(state) {
            let before = m.len();
            m.retain(|k, _| !k.starts_with(prefix));
            let gone = before - m.len();
            s.count -= gone;
            self.held.store(s.count, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadAhead;

    /// A value read ahead is handed over only if no write of its entry came after the slot was
    /// made: a write before the read thread fills it, a write after, and a newer preload of the
    /// same entry all leave the task thread reading RocksDB itself.
    #[test]
    fn a_value_read_ahead_is_never_older_than_a_write() {
        let ra = ReadAhead::default();
        let key: (usize, &[u8]) = (0, b"k");

        let g = ra.expect(std::slice::from_ref(&key))[0];
        ra.fill(0, b"k", g, Some(b"v0".to_vec()));
        assert_eq!(ra.take(0, b"k"), Some(Some(b"v0".to_vec())), "handed over");
        assert_eq!(ra.take(0, b"k"), None, "once");

        let g = ra.expect(std::slice::from_ref(&key))[0];
        ra.forget(0, b"k"); // written before the read thread fills it
        ra.fill(0, b"k", g, Some(b"old".to_vec()));
        assert_eq!(ra.take(0, b"k"), None);

        let g = ra.expect(std::slice::from_ref(&key))[0];
        ra.fill(0, b"k", g, Some(b"old".to_vec()));
        ra.forget(0, b"k"); // written after
        assert_eq!(ra.take(0, b"k"), None);

        let old = ra.expect(std::slice::from_ref(&key))[0];
        ra.forget(0, b"k");
        ra.expect(std::slice::from_ref(&key));
        ra.fill(0, b"k", old, Some(b"old".to_vec())); // the first preload's late value
        assert_eq!(
            ra.take(0, b"k"),
            None,
            "the newer preload's slot stays empty"
        );

        let g = ra.expect(&[(1, b"p/a".as_slice()), (1, b"q".as_slice())]);
        ra.forget_prefix(1, b"p/");
        ra.fill(1, b"p/a", g[0], None);
        ra.fill(1, b"q", g[1], None);
        assert_eq!(ra.take(1, b"p/a"), None, "prefix delete");
        assert_eq!(ra.take(1, b"q"), Some(None), "no entry, read ahead");
    }
}
