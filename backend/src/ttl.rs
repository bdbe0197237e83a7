//! State time-to-live, as Flink's `StateTtlConfig`, with an injected clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Milliseconds since an arbitrary epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(start_ms)))
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UpdateType {
    /// The timestamp is refreshed when a value is created or written (Flink's default).
    OnCreateAndWrite,
    /// Also refreshed on every read.
    OnReadAndWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Visibility {
    /// An expired value is never returned (Flink's default).
    NeverReturnExpired,
    /// An expired value is returned until it is cleaned up.
    ReturnExpiredIfNotCleanedUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TtlConfig {
    pub ttl_ms: u64,
    pub update: UpdateType,
    pub visibility: Visibility,
    /// Expired entries are left out of full snapshots and savepoints.
    pub cleanup_full_snapshot: bool,
    /// Heap: entries checked for expiry per state access (0 = off). Flink's background default is 5.
    pub cleanup_incremental: usize,
}

impl TtlConfig {
    pub fn new(ttl: Duration) -> Self {
        TtlConfig {
            ttl_ms: ttl.as_millis() as u64,
            update: UpdateType::OnCreateAndWrite,
            visibility: Visibility::NeverReturnExpired,
            cleanup_full_snapshot: false,
            cleanup_incremental: 5,
        }
    }
}

/// Values of TTL states carry the time they were last written (or read): 8 bytes little-endian.
pub(crate) fn wrap(now_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&now_ms.to_le_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn unwrap(bytes: &[u8]) -> Option<(u64, &[u8])> {
    (bytes.len() >= 8).then(|| {
        (
            u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            &bytes[8..],
        )
    })
}

pub(crate) fn expired(ttl: &TtlConfig, stamp: u64, now: u64) -> bool {
    now.saturating_sub(stamp) >= ttl.ttl_ms
}
