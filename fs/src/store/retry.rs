//! Bounded retries with exponential backoff for transient object-store failures.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::{RemoteStore, StoreError, Uploaded};

/// How often and how long to retry a transient failure before the filesystem call fails with EIO.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (key `statefs.remote.retry.attempts`, default 4).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time (default 100 ms).
    pub initial_backoff: Duration,
    /// Upper bound of one wait (default 2 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

#[derive(Debug)]
pub struct RetryingRemote<R> {
    inner: R,
    policy: RetryPolicy,
}

impl<R: RemoteStore> RetryingRemote<R> {
    pub fn new(inner: R, policy: RetryPolicy) -> Self {
        RetryingRemote { inner, policy }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn run<T>(
        &self,
        op: &str,
        key: &str,
        f: impl Fn() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut backoff = self.policy.initial_backoff;
        let mut attempt = 1;
        loop {
            match f() {
                Err(e) if e.is_transient() && attempt < self.policy.attempts.max(1) => {
                    tracing::warn!(op, key, attempt, error = %e, "object store call failed, retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                    attempt += 1;
                }
                Err(e) => {
                    if e.is_transient() {
                        tracing::error!(op, key, attempts = attempt, error = %e, "object store call failed, giving up");
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }
}

impl<R: RemoteStore> RemoteStore for RetryingRemote<R> {
    fn is_distant(&self) -> bool {
        self.inner.is_distant()
    }

    fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.run("put", key, || self.inner.put(key, data.clone()))
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        // A retried create whose first attempt landed reports AlreadyExists: the caller decides.
        self.run("put_if_absent", key, || {
            self.inner.put_if_absent(key, data.clone())
        })
    }
    fn put_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        self.run("put_file", key, || self.inner.put_file(key, path))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.run("get_range", key, || {
            self.inner.get_range(key, range.clone())
        })
    }
    fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.run("get", key, || self.inner.get(key))
    }
    fn get_to_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        self.run("get", key, || self.inner.get_to_file(key, path))
    }
    fn head(&self, key: &str) -> Result<u64, StoreError> {
        self.run("head", key, || self.inner.head(key))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run("delete", key, || self.inner.delete(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>, StoreError> {
        self.run("list", prefix, || self.inner.list(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FailingRemote, FaultPlan, ObjectStoreRemote};

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let rt = crate::mount::runtime().unwrap();
        let faults = FaultPlan::default();
        let store = RetryingRemote::new(
            FailingRemote::new(ObjectStoreRemote::in_memory(rt), faults.clone()),
            policy(3),
        );
        faults.fail_next(2);
        store.put("k", Bytes::from_static(b"v")).unwrap();
        assert_eq!(store.get("k").unwrap(), Bytes::from_static(b"v"));
        faults.fail_next(3);
        assert!(matches!(
            store.get("k"),
            Err(StoreError::Unavailable { .. })
        ));
        // NotFound is final, not retried: the fault budget stays untouched.
        faults.fail_next(0);
        assert!(matches!(
            store.get("missing"),
            Err(StoreError::NotFound { .. })
        ));
    }
}
