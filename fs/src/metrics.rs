//! Metrics in Prometheus text format, the names in one place, and the `/metrics` endpoint.
//!
//! Every metric name is a constant below; `docs/METRICS.md` lists them (a test checks that every
//! constant is documented there).

use std::time::Duration;

pub const CACHE_HITS: &str = "statefs_cache_hits_total";
pub const CACHE_MISSES: &str = "statefs_cache_misses_total";
pub const CACHE_LOADBACKS: &str = "statefs_cache_loadbacks_total";
pub const CACHE_PROMOTIONS: &str = "statefs_cache_promotions_total";
pub const CACHE_EVICTIONS: &str = "statefs_cache_evictions_total";
pub const CACHE_USED_BYTES: &str = "statefs_cache_used_bytes";
pub const CACHE_REMAINING_BYTES: &str = "statefs_cache_remaining_bytes";
pub const CACHE_HOT_FILES: &str = "statefs_cache_hot_files";
pub const CACHE_COLD_FILES: &str = "statefs_cache_cold_files";
pub const BLOCK_HITS: &str = "statefs_cold_block_hits_total";
pub const BLOCK_MISSES: &str = "statefs_cold_block_misses_total";
pub const REMOTE_REQUESTS: &str = "statefs_remote_requests_total";
pub const REMOTE_BYTES: &str = "statefs_remote_bytes_total";
pub const REMOTE_ERRORS: &str = "statefs_remote_errors_total";
pub const REMOTE_LATENCY: &str = "statefs_remote_request_seconds";
pub const UPLOADS: &str = "statefs_uploads_total";
pub const UPLOAD_BYTES: &str = "statefs_upload_bytes_total";
pub const UPLOADS_IN_FLIGHT: &str = "statefs_uploads_in_flight";
pub const DOWNLOADS: &str = "statefs_downloads_total";
pub const FUSE_OPS: &str = "statefs_fuse_operations_total";
pub const FUSE_LATENCY: &str = "statefs_fuse_operation_seconds";
pub const FUSE_OPENS: &str = "statefs_fuse_opens_total";
pub const STORE_QUEUE: &str = "statefs_store_queue";
pub const INODES: &str = "statefs_inodes";
pub const WARM_FILES: &str = "statefs_warm_files_total";
pub const WARM_BYTES: &str = "statefs_warm_bytes_total";
pub const WARM_IN_FLIGHT: &str = "statefs_warm_in_flight";
pub const WARM_FAILURES: &str = "statefs_warm_failures_total";
pub const WARM_SECONDS: &str = "statefs_warm_seconds";

/// Every metric name, for the documentation check.
pub const ALL: &[&str] = &[
    WARM_FILES,
    WARM_BYTES,
    WARM_IN_FLIGHT,
    WARM_FAILURES,
    WARM_SECONDS,
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_LOADBACKS,
    CACHE_PROMOTIONS,
    CACHE_EVICTIONS,
    CACHE_USED_BYTES,
    CACHE_REMAINING_BYTES,
    CACHE_HOT_FILES,
    CACHE_COLD_FILES,
    BLOCK_HITS,
    BLOCK_MISSES,
    REMOTE_REQUESTS,
    REMOTE_BYTES,
    REMOTE_ERRORS,
    REMOTE_LATENCY,
    UPLOADS,
    UPLOAD_BYTES,
    UPLOADS_IN_FLIGHT,
    DOWNLOADS,
    FUSE_OPS,
    FUSE_LATENCY,
    FUSE_OPENS,
    STORE_QUEUE,
    INODES,
];

pub use statefs_store::histogram::{Histogram, Timer};

/// Writes a `# HELP` / `# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

pub fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        out.push_str(&format!("{name} {value}\n"));
    } else {
        out.push_str(&format!("{name}{{{labels}}} {value}\n"));
    }
}

/// Fetches `/metrics` from `addr` (for `statefs stats`).
pub fn fetch(addr: &str) -> std::io::Result<String> {
    let sock = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("metrics address {addr:?}: {e}")))?;
    let addr = crate::endpoint::Addr::Tcp(sock);
    match crate::endpoint::request(&addr, "GET", "/metrics", Duration::from_secs(10))? {
        (200, body) => Ok(body),
        (status, body) => Err(std::io::Error::other(format!(
            "answer {status} from {addr:?}: {}",
            body.trim()
        ))),
    }
}

/// Parses Prometheus text into (name with labels, value) pairs, skipping comments.
pub fn parse(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../../docs/METRICS.md");
        for name in ALL {
            assert!(
                doc.contains(&format!("`{name}`")) || doc.contains(&format!("`{name}{{")),
                "{name} missing from docs/METRICS.md"
            );
        }
    }
}
