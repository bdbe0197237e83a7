//! What the mount knows of its objects and files beyond the journal: keys in flight and held
//! (which the mount record names and the release never takes: invariant I3 of `checkpoint::gc`),
//! whether the record needs rewriting, sealed files whose local copy changed after a failed
//! upload, and whether a backing file's directory entry still needs a sync. Every lock here is a
//! leaf of the core's lock order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::table::Ino;

#[derive(Debug, Default)]
pub(crate) struct Objects {
    /// Objects in flight (uploads not recorded yet, what a publish names until its manifest
    /// exists), with a count per key.
    in_flight: Mutex<HashMap<String, usize>>,
    /// Keys the record names beyond the journal for a while: those of the checkpoint a restore
    /// reads until its namespace is journaled, and those of publishes whose manifest has an
    /// unknown outcome (it may still appear) for the life of the mount.
    held: Mutex<HashSet<String>>,
    /// Set when the journal names new objects: the mount record needs rewriting.
    record_dirty: AtomicBool,
    /// Sealed files whose last upload failed: their local copy, not their record, says what
    /// they hold until an upload succeeds (a crash brings the record's version back).
    unsealed_changes: Mutex<HashSet<Ino>>,
    /// Set when a backing file was created: its directory entry is synced before the next
    /// fsync or fsyncdir returns, so that a journal record never outlives (a power loss) the
    /// file it names.
    created: AtomicBool,
}

impl Objects {
    pub(crate) fn new(held: HashSet<String>) -> Objects {
        Objects {
            held: Mutex::new(held),
            ..Default::default()
        }
    }

    /// Marks keys in flight until the returned guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        InFlight {
            objects: self,
            keys: Vec::new(),
        }
    }

    /// The journal names what was held (a restore's checkpoint): stop holding it.
    pub(crate) fn release_held(&self) {
        self.held.lock().clear();
    }

    /// Every key named beyond the journal: in flight or held.
    pub(crate) fn named_beyond_journal(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.in_flight.lock().keys().cloned().collect();
        keys.extend(self.held.lock().iter().cloned());
        keys
    }

    /// The journal names new objects.
    pub(crate) fn record_changed(&self) {
        self.record_dirty.store(true, Ordering::Release);
    }

    /// The record was rewritten.
    pub(crate) fn record_written(&self) {
        self.record_dirty.store(false, Ordering::Release);
    }

    pub(crate) fn record_is_stale(&self) -> bool {
        self.record_dirty.load(Ordering::Acquire)
    }

    /// Whether `ino`'s local copy holds changes its last (failed) upload did not store.
    pub(crate) fn is_unsealed(&self, ino: Ino) -> bool {
        self.unsealed_changes.lock().contains(&ino)
    }

    pub(crate) fn set_unsealed(&self, ino: Ino, unsealed: bool) {
        let mut set = self.unsealed_changes.lock();
        if unsealed {
            set.insert(ino);
        } else {
            set.remove(&ino);
        }
    }

    /// A backing file was created: its directory entry awaits a sync.
    pub(crate) fn backing_created(&self) {
        self.created.store(true, Ordering::Release);
    }

    /// Runs `sync` if a backing file was created since the last successful one.
    pub(crate) fn sync_created(
        &self,
        sync: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if self.created.swap(false, Ordering::AcqRel)
            && let Err(e) = sync()
        {
            self.created.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(())
    }
}

/// Keys in flight for as long as it lives (see [`Objects::in_flight`]).
pub(crate) struct InFlight<'a> {
    objects: &'a Objects,
    keys: Vec<String>,
}

impl InFlight<'_> {
    pub(crate) fn add(&mut self, key: String) {
        *self
            .objects
            .in_flight
            .lock()
            .entry(key.clone())
            .or_insert(0) += 1;
        self.keys.push(key);
    }

    /// The keys may yet be named by something this mount cannot see (a manifest whose create
    /// had an unknown outcome): they stay named for the life of the mount.
    pub(crate) fn keep_for_the_mount(self) {
        self.objects.held.lock().extend(self.keys.iter().cloned());
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.objects.in_flight.lock();
        for key in self.keys.drain(..) {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}
