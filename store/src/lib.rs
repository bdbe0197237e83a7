//! The remote object layer: a small blocking trait over object storage, and the layers that wrap it.
//!
//! The filesystem core only ever talks to a [`RemoteStore`]. The real implementation
//! ([`ObjectStoreRemote`]) adapts any `object_store` backend (local directory, S3, memory); behaviour is
//! added by wrappers: [`RetryingRemote`] (bounded retries with backoff, a warning per retry),
//! [`MetricsRemote`] (operation and byte counters) and [`FailingRemote`] (fault injection for tests).
//!
//! Keys are relative to the store's prefix (`data/<mount-id>/<uuid>`), so the core never sees URLs.
//!
//! This crate is what the filesystem (`statefs`) and the state backends (`statefs-backend`) share:
//! the store and its layers, and the small helpers both need ([`private`] file modes, [`yaml`]
//! configuration files, [`histogram`]s, the [`runtime`] that drives `object_store`). It has no FUSE
//! and no RocksDB in it.

mod failing;
#[doc(hidden)]
pub mod fuzzing;
pub mod histogram;
mod metrics;
mod object;
pub mod options;
pub mod private;
mod retry;
#[cfg(feature = "testing")]
pub mod testing;
mod url;
pub mod yaml;

use std::fmt::Debug;
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

pub use failing::{FailingRemote, FaultCounts, FaultPlan, FaultRates};
pub use metrics::{MetricsRemote, RemoteMetrics};
pub use object::{DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, ObjectStoreRemote};
pub use retry::{RetryPolicy, RetryingRemote};
pub use url::{RemoteSpec, S3Options};

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's prefix.
    pub key: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// Outcome of moving a whole object between a file and the store: uploading, or downloading
/// ([`RemoteStore::get_to_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    /// Bytes stored.
    pub size: u64,
    /// CRC32C of the bytes stored.
    pub crc32c: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    /// A failure that may pass (network, throttling, server error): worth retrying.
    #[error("object store unavailable ({op} {key}): {message}")]
    Unavailable {
        op: &'static str,
        key: String,
        message: String,
    },
    /// A failure that will not pass by retrying (bad credentials, invalid request, bad config).
    #[error("object store refused {op} {key}: {message}")]
    Fatal {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("local I/O while transferring {key}: {source}")]
    LocalIo { key: String, source: std::io::Error },
    #[error("invalid remote: {0}")]
    Config(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Blocking access to objects under one prefix. Every method may be called from many threads at once.
pub trait RemoteStore: Send + Sync + Debug {
    /// Stores `data` under `key`, replacing any object there.
    fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// Stores `data` under `key` only if no object is there (atomic create).
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// Uploads the whole file at `path` to `key` (multipart above the store's threshold). The object
    /// appears atomically: readers see either nothing or all of it.
    fn put_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError>;
    /// Reads `range` of the object; the range must lie within the object.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;
    /// Reads the whole object.
    fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Writes the whole object into a new file at `path` (created, or truncated), and returns the
    /// size and CRC32C of what was written. Stores that can stream keep a bounded amount of the
    /// object in memory, whatever its size. On an error the file is removed. Callers download to a
    /// temporary name and rename, so that a file never holds part of an object under its name.
    fn get_to_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        let data = self.get(key)?;
        let written = private::write(path, &data).map_err(|source| StoreError::LocalIo {
            key: key.to_string(),
            source,
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(Uploaded {
            size: data.len() as u64,
            crc32c: crc32c::crc32c(&data),
        })
    }
    /// Size of the object.
    fn head(&self, key: &str) -> Result<u64, StoreError>;
    /// Deletes the object; deleting a missing object succeeds.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// All objects whose key (relative to the store's prefix) starts with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// Whether a call may wait on a network, or on a store that can stop answering, rather than
    /// answer as a local disk does. The FUSE adapter runs cold reads of a distant store on its
    /// store threads; a local directory's are read inline, as local files are (a handoff costs a
    /// thread wake-up, ~20 µs here, which is a fifth of a local-directory block read).
    fn is_distant(&self) -> bool {
        true
    }
}

/// The key of an SST object uploaded by mount `mount_id`: the key names its owner, the only
/// mount that may delete it while that mount has a record (see `checkpoint::gc`).
pub fn data_key(mount_id: &str, id: &uuid::Uuid) -> String {
    format!("data/{mount_id}/{}", id.as_hyphenated())
}

/// The tokio runtime that drives `object_store` under the blocking [`RemoteStore`] calls: two
/// worker threads, named `statefs-io`.
pub fn runtime() -> std::io::Result<std::sync::Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("statefs-io")
        .enable_all()
        .build()
        .map(std::sync::Arc::new)
}
