//! Fault injection: a [`RemoteStore`] wrapper that fails calls on demand.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use super::{RemoteStore, StoreError, Uploaded};

/// Shared switch board for a [`FailingRemote`]; clone it to flip faults from a test while the store is
/// in use by a mount.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    inner: Arc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Every call fails while set (an unreachable store).
    down: AtomicBool,
    /// This many next calls fail, then calls pass again.
    fail_next: AtomicU64,
    /// Only writes (put, put_file) fail while set.
    writes_down: AtomicBool,
    /// Calls that were failed on purpose.
    injected: AtomicU64,
    /// Every call on a key containing this text fails while set.
    key_pattern: std::sync::Mutex<Option<String>>,
    /// Every call first waits this long (a distant store), microseconds.
    latency_us: AtomicU64,
    /// Calls waiting out the latency now, and the most there ever were at once.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// File uploads (`put_file`), and reads (`get_range`, `get`), wait while held.
    uploads: Hold,
    reads: Hold,
}

/// Calls wait here while it is held, as on a store that stopped answering.
#[derive(Debug, Default)]
struct Hold {
    held: std::sync::Mutex<bool>,
    released: std::sync::Condvar,
    waiting: AtomicU64,
}

impl Hold {
    fn set(&self, hold: bool) {
        *self.held.lock().unwrap() = hold;
        self.released.notify_all();
    }

    fn wait(&self) {
        let mut held = self.held.lock().unwrap();
        if *held {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *held {
                held = self.released.wait(held).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl FaultPlan {
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }
    pub fn set_writes_down(&self, down: bool) {
        self.inner.writes_down.store(down, Ordering::SeqCst);
    }
    pub fn fail_next(&self, n: u64) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }
    /// Fails every call on keys containing `pattern` (e.g. `_metadata`: a crash before the manifest).
    pub fn fail_keys_containing(&self, pattern: Option<&str>) {
        *self.inner.key_pattern.lock().unwrap() = pattern.map(str::to_string);
    }

    /// Makes every call wait `latency` first, as a store across a network would.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.inner
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// The most calls that were waiting out the latency at the same time.
    pub fn max_in_flight(&self) -> u64 {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// While `hold` is set, every file upload (`put_file`) waits, as on a store that stopped
    /// answering; clearing it lets them go on.
    pub fn hold_uploads(&self, hold: bool) {
        self.inner.uploads.set(hold)
    }

    /// File uploads waiting on [`hold_uploads`](Self::hold_uploads) now.
    pub fn uploads_waiting(&self) -> u64 {
        self.inner.uploads.waiting.load(Ordering::SeqCst)
    }

    /// As [`hold_uploads`](Self::hold_uploads), for reads: `get_range` (cold blocks) and `get`
    /// (whole objects: downloads, cache loads).
    pub fn hold_reads(&self, hold: bool) {
        self.inner.reads.set(hold)
    }

    /// Reads waiting on [`hold_reads`](Self::hold_reads) now.
    pub fn reads_waiting(&self) -> u64 {
        self.inner.reads.waiting.load(Ordering::SeqCst)
    }

    pub fn injected(&self) -> u64 {
        self.inner.injected.load(Ordering::SeqCst)
    }

    fn check(&self, op: &'static str, key: &str, is_write: bool) -> Result<(), StoreError> {
        let s = &self.inner;
        let latency = s.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            s.max_in_flight.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_micros(latency));
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let fail = s
            .key_pattern
            .lock()
            .unwrap()
            .as_deref()
            .is_some_and(|p| key.contains(p))
            || s.down.load(Ordering::SeqCst)
            || (is_write && s.writes_down.load(Ordering::SeqCst))
            || s.fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            s.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable {
                op,
                key: key.to_string(),
                message: "injected fault".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct FailingRemote<R> {
    inner: R,
    plan: FaultPlan,
}

impl<R: RemoteStore> FailingRemote<R> {
    pub fn new(inner: R, plan: FaultPlan) -> Self {
        FailingRemote { inner, plan }
    }
}

impl<R: RemoteStore> RemoteStore for FailingRemote<R> {
    /// Distant whatever it wraps: it can be made slow or stop answering.
    fn is_distant(&self) -> bool {
        true
    }

    fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.plan.check("put", key, true)?;
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.plan.check("put_if_absent", key, true)?;
        self.inner.put_if_absent(key, data)
    }
    fn put_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        self.plan.inner.uploads.wait();
        self.plan.check("put_file", key, true)?;
        self.inner.put_file(key, path)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.plan.inner.reads.wait();
        self.plan.check("get_range", key, false)?;
        self.inner.get_range(key, range)
    }
    fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.plan.inner.reads.wait();
        self.plan.check("get", key, false)?;
        self.inner.get(key)
    }
    fn get_to_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        self.plan.inner.reads.wait();
        self.plan.check("get", key, false)?;
        self.inner.get_to_file(key, path)
    }
    fn head(&self, key: &str) -> Result<u64, StoreError> {
        self.plan.check("head", key, false)?;
        self.inner.head(key)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.plan.check("delete", key, true)?;
        self.inner.delete(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>, StoreError> {
        self.plan.check("list", prefix, false)?;
        self.inner.list(prefix)
    }
}
