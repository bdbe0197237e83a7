//! Fault injection: a [`RemoteStore`] wrapper that fails calls on demand, or at random rates.
//!
//! The faults are those a real store shows:
//! - a call fails before it takes effect (`fail_next`, `set_down`, the `fail` rate);
//! - a write takes effect and its answer is lost, so the caller sees a failure (`ambiguous_next`,
//!   the `ambiguous` rate): what a timeout after a successful PUT or DELETE looks like;
//! - a call hangs until the client's request timeout ends it (`black_hole` rate, with the
//!   timeout the mount would apply); [`FaultPlan::hold_uploads`] / `hold_reads` hang calls
//!   until released;
//! - a ranged read returns fewer bytes than asked (`short_reads_next`, `short` rate) or
//!   flipped bytes (`corrupt_reads_next`, `corrupt` rate).

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
    /// This many next writes take effect, then report a failure.
    ambiguous_next: AtomicU64,
    /// Every write on a key containing this text takes effect, then reports a failure.
    ambiguous_pattern: std::sync::Mutex<Option<String>>,
    /// This many next ranged reads come back short, or with a flipped byte.
    short_next: AtomicU64,
    corrupt_next: AtomicU64,
    /// Seconds added to the modification times a listing reports (a store whose clock is off).
    mtime_skew_s: std::sync::atomic::AtomicI64,
    /// Random faults, if set: the rates and the generator's state.
    random: std::sync::Mutex<Option<(FaultRates, u64)>>,
    /// Counts of what was injected at random, by kind.
    counts: FaultCounts,
}

/// Probabilities (0 to 1) of each fault per call, for [`FaultPlan::set_random`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// The call fails without taking effect.
    pub fail: f64,
    /// A write takes effect, then the call fails.
    pub ambiguous: f64,
    /// The call hangs for [`FaultRates::black_hole_for`], then fails as a request timeout would.
    pub black_hole: f64,
    pub black_hole_for: std::time::Duration,
    /// A ranged read returns a prefix of the range.
    pub short: f64,
    /// A ranged read returns the range with one byte flipped.
    pub corrupt: f64,
}

/// What the fault layer injected, by kind.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub calls: AtomicU64,
    pub failed: AtomicU64,
    pub ambiguous: AtomicU64,
    pub black_holed: AtomicU64,
    pub short: AtomicU64,
    pub corrupt: AtomicU64,
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pass,
    Fail,
    /// Applied, then reported failed (writes only).
    Ambiguous,
    Short,
    Corrupt,
}

fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
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

    /// The next `n` writes (put, put_if_absent, put_file, delete) take effect and then report a
    /// failure, as when the answer to a successful request is lost.
    pub fn ambiguous_next(&self, n: u64) {
        self.inner.ambiguous_next.store(n, Ordering::SeqCst);
    }

    /// Every write on a key containing `pattern` takes effect and then reports a failure.
    pub fn ambiguous_keys_containing(&self, pattern: Option<&str>) {
        *self.inner.ambiguous_pattern.lock().unwrap() = pattern.map(str::to_string);
    }

    /// The next `n` ranged reads return only the first half of the range.
    pub fn short_reads_next(&self, n: u64) {
        self.inner.short_next.store(n, Ordering::SeqCst);
    }

    /// The next `n` ranged reads return the range with its first byte flipped.
    pub fn corrupt_reads_next(&self, n: u64) {
        self.inner.corrupt_next.store(n, Ordering::SeqCst);
    }

    /// Makes listings report modification times `seconds` off (negative: in the past), as a
    /// store whose clock disagrees with this host's.
    pub fn skew_store_clock(&self, seconds: i64) {
        self.inner.mtime_skew_s.store(seconds, Ordering::SeqCst);
    }

    /// Injects faults at random from now on (`None`: stops), reproducibly from `seed`.
    pub fn set_random(&self, rates: Option<FaultRates>, seed: u64) {
        *self.inner.random.lock().unwrap() = rates.map(|r| (r, seed));
    }

    /// What was injected so far, by kind.
    pub fn counts(&self) -> &FaultCounts {
        &self.inner.counts
    }

    /// Decides the fate of one call: the switches first, then the random rates.
    fn fate(&self, key: &str, is_write: bool, is_range: bool) -> Fate {
        let s = &self.inner;
        let take = |n: &AtomicU64| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        let pattern = || {
            s.ambiguous_pattern
                .lock()
                .unwrap()
                .as_deref()
                .is_some_and(|p| key.contains(p))
        };
        if is_write && (take(&s.ambiguous_next) || pattern()) {
            return Fate::Ambiguous;
        }
        if is_range && take(&s.short_next) {
            return Fate::Short;
        }
        if is_range && take(&s.corrupt_next) {
            return Fate::Corrupt;
        }
        let mut random = s.random.lock().unwrap();
        let Some((rates, state)) = random.as_mut() else {
            return Fate::Pass;
        };
        let rates = *rates;
        let mut roll = || splitmix(state);
        if roll() < rates.black_hole {
            drop(random);
            s.counts.black_holed.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(rates.black_hole_for);
            return Fate::Fail;
        }
        if roll() < rates.fail {
            s.counts.failed.fetch_add(1, Ordering::Relaxed);
            return Fate::Fail;
        }
        if is_write && roll() < rates.ambiguous {
            s.counts.ambiguous.fetch_add(1, Ordering::Relaxed);
            return Fate::Ambiguous;
        }
        if is_range && roll() < rates.short {
            s.counts.short.fetch_add(1, Ordering::Relaxed);
            return Fate::Short;
        }
        if is_range && roll() < rates.corrupt {
            s.counts.corrupt.fetch_add(1, Ordering::Relaxed);
            return Fate::Corrupt;
        }
        Fate::Pass
    }

    fn injected_error(&self, op: &'static str, key: &str, message: &str) -> StoreError {
        self.inner.injected.fetch_add(1, Ordering::SeqCst);
        StoreError::Unavailable {
            op,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Runs a write through the plan: it may fail before or after `apply` takes effect.
    fn write<T>(
        &self,
        op: &'static str,
        key: &str,
        apply: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.check(op, key, true)?;
        match self.fate(key, true, false) {
            Fate::Fail => Err(self.injected_error(op, key, "injected fault")),
            Fate::Ambiguous => {
                apply()?;
                Err(self.injected_error(op, key, "injected: applied, then the answer was lost"))
            }
            _ => apply(),
        }
    }

    /// Runs a read through the plan; a ranged read may come back short or corrupt.
    fn read(
        &self,
        op: &'static str,
        key: &str,
        is_range: bool,
        fetch: impl FnOnce() -> Result<Bytes, StoreError>,
    ) -> Result<Bytes, StoreError> {
        self.check(op, key, false)?;
        match self.fate(key, false, is_range) {
            Fate::Fail => Err(self.injected_error(op, key, "injected fault")),
            Fate::Short => {
                let data = fetch()?;
                self.inner.injected.fetch_add(1, Ordering::SeqCst);
                Ok(data.slice(..data.len() / 2))
            }
            Fate::Corrupt => {
                let mut data = fetch()?.to_vec();
                self.inner.injected.fetch_add(1, Ordering::SeqCst);
                if let Some(b) = data.first_mut() {
                    *b ^= 0xff;
                }
                Ok(Bytes::from(data))
            }
            _ => fetch(),
        }
    }

    /// A call that is neither a plain write nor a read of bytes (head, list, a download).
    fn other(&self, op: &'static str, key: &str) -> Result<(), StoreError> {
        self.check(op, key, false)?;
        match self.fate(key, false, false) {
            Fate::Fail => Err(self.injected_error(op, key, "injected fault")),
            _ => Ok(()),
        }
    }

    fn check(&self, op: &'static str, key: &str, is_write: bool) -> Result<(), StoreError> {
        self.inner.counts.calls.fetch_add(1, Ordering::Relaxed);
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
        self.plan.write("put", key, || self.inner.put(key, data))
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.plan
            .write("put_if_absent", key, || self.inner.put_if_absent(key, data))
    }
    fn put_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        self.plan.inner.uploads.wait();
        self.plan
            .write("put_file", key, || self.inner.put_file(key, path))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.plan.inner.reads.wait();
        self.plan
            .read("get_range", key, true, || self.inner.get_range(key, range))
    }
    fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.plan.inner.reads.wait();
        self.plan.read("get", key, false, || self.inner.get(key))
    }
    fn get_to_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        self.plan.inner.reads.wait();
        self.plan.other("get", key)?;
        self.inner.get_to_file(key, path)
    }
    fn head(&self, key: &str) -> Result<u64, StoreError> {
        self.plan.other("head", key)?;
        self.inner.head(key)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.plan.write("delete", key, || self.inner.delete(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>, StoreError> {
        self.plan.other("list", prefix)?;
        let skew = self.plan.inner.mtime_skew_s.load(Ordering::SeqCst);
        let mut listed = self.inner.list(prefix)?;
        if skew != 0 {
            let by = std::time::Duration::from_secs(skew.unsigned_abs());
            for o in &mut listed {
                o.modified = if skew > 0 {
                    o.modified + by
                } else {
                    o.modified.checked_sub(by).unwrap_or(std::time::UNIX_EPOCH)
                };
            }
        }
        Ok(listed)
    }
}
