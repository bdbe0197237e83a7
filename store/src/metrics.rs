//! Operation and byte counters for remote calls.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{RemoteStore, StoreError, Uploaded};

/// Counters of calls that reached the wrapped store (after retries are expanded: one per attempt when
/// placed below the retry layer).
#[derive(Debug, Default)]
pub struct RemoteMetrics {
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub heads: AtomicU64,
    pub deletes: AtomicU64,
    pub lists: AtomicU64,
    pub errors: AtomicU64,
    pub get_latency: crate::histogram::Histogram,
    pub put_latency: crate::histogram::Histogram,
    pub delete_latency: crate::histogram::Histogram,
}

impl RemoteMetrics {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("remote_put_total", l(&self.puts)),
            ("remote_put_bytes_total", l(&self.put_bytes)),
            ("remote_get_total", l(&self.gets)),
            ("remote_get_bytes_total", l(&self.get_bytes)),
            ("remote_head_total", l(&self.heads)),
            ("remote_delete_total", l(&self.deletes)),
            ("remote_list_total", l(&self.lists)),
            ("remote_error_total", l(&self.errors)),
        ]
    }
}

#[derive(Debug)]
pub struct MetricsRemote<R> {
    inner: R,
    metrics: Arc<RemoteMetrics>,
}

impl<R: RemoteStore> MetricsRemote<R> {
    pub fn new(inner: R, metrics: Arc<RemoteMetrics>) -> Self {
        MetricsRemote { inner, metrics }
    }

    fn count<T>(&self, counter: &AtomicU64, r: Result<T, StoreError>) -> Result<T, StoreError> {
        counter.fetch_add(1, Ordering::Relaxed);
        // A missing object is an answer, not a failure (probes and deletes expect it).
        if r.as_ref()
            .is_err_and(|e| !matches!(e, StoreError::NotFound { .. }))
        {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<R: RemoteStore> RemoteStore for MetricsRemote<R> {
    fn is_distant(&self) -> bool {
        self.inner.is_distant()
    }

    fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let _t = crate::histogram::Timer::new(&self.metrics.put_latency);
        let n = data.len() as u64;
        let r = self.count(&self.metrics.puts, self.inner.put(key, data));
        if r.is_ok() {
            self.metrics.put_bytes.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let _t = crate::histogram::Timer::new(&self.metrics.put_latency);
        let n = data.len() as u64;
        let r = self.count(&self.metrics.puts, self.inner.put_if_absent(key, data));
        if r.is_ok() {
            self.metrics.put_bytes.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
    fn put_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        let _t = crate::histogram::Timer::new(&self.metrics.put_latency);
        let r = self.count(&self.metrics.puts, self.inner.put_file(key, path));
        if let Ok(u) = &r {
            self.metrics.put_bytes.fetch_add(u.size, Ordering::Relaxed);
        }
        r
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let _t = crate::histogram::Timer::new(&self.metrics.get_latency);
        let r = self.count(&self.metrics.gets, self.inner.get_range(key, range));
        if let Ok(b) = &r {
            self.metrics
                .get_bytes
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        r
    }
    fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let _t = crate::histogram::Timer::new(&self.metrics.get_latency);
        let r = self.count(&self.metrics.gets, self.inner.get(key));
        if let Ok(b) = &r {
            self.metrics
                .get_bytes
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        r
    }
    fn get_to_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        let _t = crate::histogram::Timer::new(&self.metrics.get_latency);
        let r = self.count(&self.metrics.gets, self.inner.get_to_file(key, path));
        if let Ok(u) = &r {
            self.metrics.get_bytes.fetch_add(u.size, Ordering::Relaxed);
        }
        r
    }
    fn head(&self, key: &str) -> Result<u64, StoreError> {
        self.count(&self.metrics.heads, self.inner.head(key))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _t = crate::histogram::Timer::new(&self.metrics.delete_latency);
        self.count(&self.metrics.deletes, self.inner.delete(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>, StoreError> {
        self.count(&self.metrics.lists, self.inner.list(prefix))
    }
}
