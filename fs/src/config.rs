//! Mount configuration. Every field documents its CLI flag, its default and what it means.

use std::path::PathBuf;
use std::time::Duration;

use crate::cache::CacheConfig;
use crate::store::{RetryPolicy, S3Options};

/// Whether files with a complete local backing file are opened with FUSE passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassthroughMode {
    /// Use passthrough when the kernel offers it, else serve I/O in the daemon.
    Auto,
    /// Require passthrough: the mount fails if the kernel does not offer it.
    On,
    /// Serve every read and write in the daemon (for comparison benchmarks).
    Off,
}

impl std::str::FromStr for PassthroughMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PassthroughMode::Auto),
            "on" => Ok(PassthroughMode::On),
            "off" => Ok(PassthroughMode::Off),
            other => Err(format!(
                "passthrough must be auto, on or off, not {other:?}"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MountConfig {
    /// `--remote`: where SST objects live (`file:///abs/path`, `s3://bucket/prefix`, `memory://`).
    pub remote: String,
    /// `--s3-*` flags; unset fields come from `AWS_*` environment variables.
    pub s3: S3Options,
    /// `--local-dir`: the journal and local-placed files (MANIFEST, WAL, ...). Locked while mounted.
    pub local_dir: PathBuf,
    /// `--cache-dir`: staging files of SSTs being written and local copies of SSTs.
    pub cache_dir: PathBuf,
    /// `--fuse-threads` (default 2): FUSE worker threads, each with its own /dev/fuse clone. More
    /// threads than cores was measured slower on 2-core machines.
    pub fuse_threads: usize,
    /// `--store-threads` (default 8): threads that run the uploads (an uploading fsync or close),
    /// and as many again for the reads that fetch blocks of a distant store, so that none holds a
    /// FUSE worker. Requests beyond this wait in a queue.
    pub store_threads: usize,
    /// `--passthrough` (default auto).
    pub passthrough: PassthroughMode,
    /// `--attr-ttl` (default 1s): how long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// `--entry-ttl` (default 1s): how long the kernel may cache name lookups.
    pub entry_ttl: Duration,
    /// `--multipart-threshold` (default 16 MiB): larger files are uploaded in parts.
    pub multipart_threshold: u64,
    /// `--part-size` (default 8 MiB, at least 5 MiB): size of one multipart part.
    pub part_size: usize,
    /// Retries of transient object-store failures before a call fails with EIO.
    pub retry: RetryPolicy,
    /// `--allow-other`: let users other than the mounting one use the mount.
    pub allow_other: bool,
    /// The local cache of SST copies (`state.backend.forst.cache.*`).
    pub cache: CacheConfig,
    /// `--metrics-addr` (default `127.0.0.1:0`, a free loopback port): the `/metrics` endpoint.
    pub metrics_addr: String,
    /// `--restore ID` / `--claim`: start from a checkpoint (needs a fresh local dir).
    pub restore: Option<RestoreFrom>,
    /// `state.checkpoints.num-retained` (default 1): checkpoints of this mount kept; older ones are
    /// dropped when a new one is published. 0 keeps all.
    pub num_retained: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFrom {
    pub id: String,
    /// Take the checkpoint over (Flink's CLAIM mode); without it, nothing it names is ever deleted by
    /// this mount (NO_CLAIM).
    pub claim: bool,
}

impl MountConfig {
    pub fn new(
        remote: impl Into<String>,
        local_dir: impl Into<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        MountConfig {
            remote: remote.into(),
            s3: S3Options::default(),
            local_dir: local_dir.into(),
            cache_dir: cache_dir.into(),
            fuse_threads: 2,
            store_threads: 8,
            passthrough: PassthroughMode::Auto,
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            multipart_threshold: crate::store::DEFAULT_MULTIPART_THRESHOLD,
            part_size: crate::store::DEFAULT_PART_SIZE,
            retry: RetryPolicy::default(),
            allow_other: false,
            cache: CacheConfig::default(),
            metrics_addr: "127.0.0.1:0".into(),
            restore: None,
            num_retained: 1,
        }
    }
}
