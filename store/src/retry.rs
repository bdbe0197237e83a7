//! The one retry policy of a mount: bounded attempts with exponential backoff, within a bounded
//! total time, for transient object-store failures. The store client under it retries nothing
//! itself (object_store's own retries are switched off where the store is built), so a call makes
//! at most `attempts` requests and fails with EIO, at the latest, one attempt after `total` has
//! passed.
//!
//! Every attempt may have taken effect even when it failed (a timeout may hide a success), so:
//! - a create ([`RemoteStore::put_if_absent`]) that meets an existing object reads it back and
//!   succeeds when it holds the bytes being created: the object is ours, from an earlier attempt
//!   whose answer was lost (or identical bytes, which is the same outcome);
//! - a ranged read whose answer is not exactly the range asked for is a failed attempt, never
//!   a short block handed up.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{RemoteStore, StoreError, Uploaded};

/// How often and how long to retry a transient failure before the filesystem call fails with EIO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (key `statefs.remote.retry.attempts`, default 4).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time (default 100 ms).
    pub initial_backoff: Duration,
    /// Upper bound of one wait (default 2 s).
    pub max_backoff: Duration,
    /// No retry starts once this much time has passed since the first attempt began
    /// (`statefs.remote.retry.total-time`, default 30 s).
    pub total: Duration,
    /// Longest time one request to a network store may take before it counts as failed
    /// (`statefs.remote.request-timeout`, default 30 s; connecting: at most 5 s of it). A
    /// black-holed request ends here instead of hanging the call.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            total: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry).
    fn backoff(&self, retry: u32) -> Duration {
        let doubled = self
            .initial_backoff
            .checked_mul(
                1u32.checked_shl(retry.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .unwrap_or(self.max_backoff);
        doubled.min(self.max_backoff)
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
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            let result = f();
            let wait = self.policy.backoff(attempt);
            let in_time = start.elapsed() + wait < self.policy.total;
            match result {
                Err(e) if e.is_transient() && attempt < self.policy.attempts.max(1) && in_time => {
                    tracing::warn!(op, key, attempt, error = %e, "object store call failed, retrying");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => {
                    if e.is_transient() {
                        tracing::error!(
                            op,
                            key,
                            attempts = attempt,
                            elapsed_ms = start.elapsed().as_millis() as u64,
                            error = %e,
                            "object store call failed, giving up"
                        );
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
        let ours = |there: &Bytes| {
            let yes = *there == data;
            if yes {
                tracing::info!(
                    key,
                    "create found its own object from an attempt whose answer was lost"
                );
            }
            yes
        };
        match self.run("put_if_absent", key, || {
            self.inner.put_if_absent(key, data.clone())
        }) {
            Err(StoreError::AlreadyExists { .. }) => {
                match self.run("get", key, || self.inner.get(key)) {
                    Ok(there) if ours(&there) => Ok(()),
                    Ok(_) | Err(StoreError::NotFound { .. }) => Err(StoreError::AlreadyExists {
                        key: key.to_string(),
                    }),
                    Err(e) => Err(e),
                }
            }
            // The last attempt may have landed too: one look settles it when the store answers.
            // Otherwise the outcome stays unknown, and the caller must not act as if the object
            // were absent (it may yet appear: a request the client gave up on can still apply).
            Err(e) if e.is_transient() => match self.inner.get(key) {
                Ok(there) if ours(&there) => Ok(()),
                _ => Err(e),
            },
            other => other,
        }
    }
    fn put_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        self.run("put_file", key, || self.inner.put_file(key, path))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.run("get_range", key, || {
            let data = self.inner.get_range(key, range.clone())?;
            let want = range.end.saturating_sub(range.start);
            if data.len() as u64 != want {
                return Err(StoreError::Unavailable {
                    op: "get_range",
                    key: key.to_string(),
                    message: format!(
                        "asked for {want} bytes at {}, got {}",
                        range.start,
                        data.len()
                    ),
                });
            }
            Ok(data)
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
    use crate::{FailingRemote, FaultPlan, ObjectStoreRemote};

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..Default::default()
        }
    }

    fn store_with(p: RetryPolicy) -> (RetryingRemote<FailingRemote<ObjectStoreRemote>>, FaultPlan) {
        let rt = crate::runtime().unwrap();
        let faults = FaultPlan::default();
        let store = RetryingRemote::new(
            FailingRemote::new(ObjectStoreRemote::in_memory(rt), faults.clone()),
            p,
        );
        (store, faults)
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let (store, faults) = store_with(policy(3));
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

    /// A create whose attempt landed but whose answer was lost (the store applied it, then the
    /// call timed out) is retried, meets its own object and succeeds; a create over someone
    /// else's bytes still fails with AlreadyExists.
    #[test]
    fn a_retried_create_that_meets_its_own_object_succeeds() {
        let (store, faults) = store_with(policy(4));
        faults.ambiguous_next(1);
        store
            .put_if_absent("manifest", Bytes::from_static(b"ours"))
            .unwrap();
        assert_eq!(faults.injected(), 1, "the first answer was lost");
        assert_eq!(store.get("manifest").unwrap(), Bytes::from_static(b"ours"));
        assert!(matches!(
            store.put_if_absent("manifest", Bytes::from_static(b"theirs")),
            Err(StoreError::AlreadyExists { .. })
        ));
        // The last attempt's answer lost too: the look after the attempts finds it.
        let (store, faults) = store_with(policy(1));
        faults.ambiguous_next(1);
        store
            .put_if_absent("manifest", Bytes::from_static(b"ours"))
            .unwrap();
        // And a create that failed without landing stays failed.
        faults.fail_next(1);
        assert!(matches!(
            store.put_if_absent("other", Bytes::from_static(b"x")),
            Err(StoreError::Unavailable { .. })
        ));
    }

    /// Retries stop when the total time is spent, whatever the attempt count: a call against a
    /// store that keeps failing ends within the bound (plus the attempt running when it passed).
    #[test]
    fn retries_stop_when_the_total_time_is_spent() {
        let (store, faults) = store_with(RetryPolicy {
            attempts: 1000,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(20),
            total: Duration::from_millis(200),
            ..Default::default()
        });
        faults.set_down(true);
        let t = Instant::now();
        assert!(store.get("k").is_err());
        let took = t.elapsed();
        assert!(took < Duration::from_millis(400), "took {took:?}");
        let attempts = faults.injected();
        assert!((5..=11).contains(&attempts), "{attempts} attempts");
    }

    /// A ranged read answered with fewer bytes than asked for is a failed attempt: retried, and
    /// never handed up as a short block.
    #[test]
    fn a_short_ranged_read_is_retried() {
        let (store, faults) = store_with(policy(3));
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        store.put("k", Bytes::from(data.clone())).unwrap();
        faults.short_reads_next(2);
        assert_eq!(store.get_range("k", 100..600).unwrap(), &data[100..600]);
        faults.short_reads_next(3);
        assert!(matches!(
            store.get_range("k", 100..600),
            Err(StoreError::Unavailable { .. })
        ));
    }

    /// Against a network store that accepts connections and never answers (a black hole), or
    /// that refuses them, a call fails within the policy's bound: the store client does not
    /// retry on its own, and every request ends at the request timeout.
    #[test]
    fn a_black_holed_or_unreachable_store_fails_within_the_bound() {
        let rt = crate::runtime().unwrap();
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let policy = RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            total: Duration::from_secs(30),
            request_timeout: Duration::from_millis(300),
        };
        for (what, port) in [
            ("black hole", hole.local_addr().unwrap().port()),
            ("refused", closed_port),
        ] {
            let s3 = crate::S3Options {
                endpoint: Some(format!("http://127.0.0.1:{port}")),
                region: Some("us-east-1".into()),
                access_key_id: Some("k".into()),
                secret_access_key: Some("s".into()),
                allow_http: false,
                request_timeout: Some(policy.request_timeout),
            };
            let store = crate::RemoteSpec::parse("s3://b/p")
                .unwrap()
                .open(&s3, rt.clone())
                .unwrap();
            let store = RetryingRemote::new(store, policy);
            let t = Instant::now();
            let err = store.head("data/x").unwrap_err();
            let took = t.elapsed();
            assert!(err.is_transient(), "{what}: {err}");
            // Three attempts of at most 300 ms and two short waits; object_store's defaults
            // (10 retries with backoff per request, no request bound that short) took minutes.
            assert!(took < Duration::from_secs(3), "{what}: took {took:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_without_overflow() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(6), Duration::from_secs(2));
        assert_eq!(p.backoff(200), Duration::from_secs(2));
    }
}
