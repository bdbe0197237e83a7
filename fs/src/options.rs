//! The mount options: every option of a mount, with its key (Flink's key where Flink has one),
//! flag, type, default and description, in the registry of `statefs_store::options`. Loaded from
//! YAML (`--config`); command-line flags override. `statefs config` prints [`config_doc`], and
//! `docs/CONFIG.md` is that output (a test checks).

use std::time::Duration;

pub use statefs_store::options::{
    Kind, OptionError, OptionSpec, Secret, Value, parse_bytes, parse_duration,
};

use crate::config::{MountConfig, PassthroughMode};
use crate::store::S3Options;

pub const REMOTE: &str = "state.backend.forst.primary-dir";
pub const LOCAL_DIR: &str = "state.backend.forst.local-dir";
pub const CACHE_DIR: &str = "state.backend.forst.cache.dir";

/// Every option. Keys under `state.backend.forst.` are Flink's, with Flink's defaults.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new(
        REMOTE,
        "--remote",
        Kind::Text,
        "",
        "Where SST files live: `file:///abs/path`, `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or `memory://`. Credentials of gs:// and az:// come from their usual environment variables and files (docs/DEVELOPMENT.md). Required.",
    ),
    OptionSpec::new(
        LOCAL_DIR,
        "--local-dir",
        Kind::Text,
        "",
        "Journal and local-placed files (MANIFEST, WAL, ...). Locked while mounted. Required.",
    ),
    OptionSpec::new(
        CACHE_DIR,
        "--cache-dir",
        Kind::Text,
        "",
        "Staging files of SSTs being written and local copies of SSTs. Required.",
    ),
    OptionSpec::new(
        "state.backend.forst.cache.size-based-limit",
        "--cache-size-limit",
        Kind::Bytes,
        "0",
        "Bytes of local SST copies the cache may hold; 0 = no size limit.",
    ),
    OptionSpec::new(
        "state.backend.forst.cache.reserve-size",
        "--cache-reserve-size",
        Kind::Bytes,
        "256mb",
        "Free disk space the cache keeps on the cache dir's file system; 0 = no space limit. Both limits 0 = no cache.",
    ),
    OptionSpec::new(
        "state.backend.forst.cache.lru.access-before-promote",
        "--cache-access-before-promote",
        Kind::Count,
        "6",
        "Accesses of a cold file before its copy is loaded again.",
    ),
    OptionSpec::new(
        "state.backend.forst.cache.lru.promote-limit",
        "--cache-promote-limit",
        Kind::Count,
        "3",
        "Evictions after which a file is no longer promoted.",
    ),
    OptionSpec::new(
        "state.backend.forst.compaction.level.target-file-size-base",
        "--target-file-size",
        Kind::Bytes,
        "",
        "Room the cache needs for a newly written SST to keep its copy. Unset: the largest SST written through the mount so far (RocksDB's own target file size shows in them), so a limit holds as many files as fit. Set: that fixed room (Flink's default is 64mb, which held one 8 MB SST in a 64 MB cache).",
    ),
    OptionSpec::new(
        "statefs.cache.block.size",
        "--block-size",
        Kind::Bytes,
        "64kb",
        "Unit and alignment of cold reads (files without a local copy).",
    ),
    OptionSpec::new(
        "statefs.cache.block.memory",
        "--block-memory",
        Kind::Bytes,
        "64mb",
        "Memory for blocks of cold reads.",
    ),
    OptionSpec::new(
        "statefs.cache.block.in-flight",
        "--block-in-flight",
        Kind::Count,
        "64",
        "Cold reads (blocks of files without a local copy) waiting on the store at once, each on a read thread of its own: sized for an object store's latency (tens to hundreds), apart from the upload threads (`statefs.fuse.store-threads`). More readers than this queue.",
    ),
    OptionSpec::new(
        "statefs.cache.warm.memory",
        "--warm-memory",
        Kind::Bytes,
        "1gb",
        "Bytes of cold files a mount fetches in the background into the kernel's page cache when they are opened for reading (RocksDB opens every SST of a database at open): footers, index and filter blocks of every file first, then the bodies. Those pages are clean, so the kernel reclaims them under memory pressure. The same files also take the disk cache's free room (never evicting a copy). 0: off.",
    ),
    OptionSpec::new(
        "statefs.cache.warm.in-flight",
        "--warm-in-flight",
        Kind::Count,
        "32",
        "GETs of the background warm-up at once.",
    ),
    OptionSpec::new(
        "statefs.cache.block.max-readahead",
        "--max-readahead",
        Kind::Bytes,
        "4mb",
        "Largest read-ahead of a sequential cold reader.",
    ),
    OptionSpec::new(
        "statefs.fuse.threads",
        "--fuse-threads",
        Kind::Count,
        "2",
        "FUSE worker threads (more than cores was measured slower on 2 cores).",
    ),
    OptionSpec::new(
        "statefs.fuse.store-threads",
        "--store-threads",
        Kind::Count,
        "8",
        "Threads for the uploads (an uploading fsync or close), so that no FUSE worker waits on the store; more than this queue. Cold reads have their own threads (`statefs.cache.block.in-flight`).",
    ),
    OptionSpec::new(
        "statefs.fuse.passthrough",
        "--passthrough",
        Kind::Choice(&["auto", "on", "off"]),
        "auto",
        "FUSE passthrough for files with a complete local copy: auto uses it when the kernel offers it, on requires it, off serves all I/O in the daemon.",
    ),
    OptionSpec::new(
        "statefs.fuse.attr-ttl",
        "--attr-ttl",
        Kind::Duration,
        "1s",
        "How long the kernel may cache attributes.",
    ),
    OptionSpec::new(
        "statefs.fuse.entry-ttl",
        "--entry-ttl",
        Kind::Duration,
        "1s",
        "How long the kernel may cache name lookups.",
    ),
    OptionSpec::new(
        "statefs.fuse.allow-other",
        "--allow-other",
        Kind::Bool,
        "false",
        "Let users other than the mounting one use the mount.",
    ),
    OptionSpec::new(
        "statefs.remote.multipart-threshold",
        "--multipart-threshold",
        Kind::Bytes,
        "16mb",
        "Files larger than this are uploaded to a network store in parts (a `file://` store copies every file in 256 KiB chunks through a buffer kept per thread).",
    ),
    OptionSpec::new(
        "statefs.remote.part-size",
        "--part-size",
        Kind::Bytes,
        "8mb",
        "Size of one multipart part for a network store (at least 5mb).",
    ),
    OptionSpec::new(
        "statefs.remote.retry.attempts",
        "--retry-attempts",
        Kind::Count,
        "4",
        "Attempts per object-store call (the first included) before the operation fails with EIO.",
    ),
    OptionSpec::new(
        "statefs.remote.retry.initial-backoff",
        "--retry-initial-backoff",
        Kind::Duration,
        "100ms",
        "Wait before the first retry; doubled each time.",
    ),
    OptionSpec::new(
        "statefs.remote.retry.max-backoff",
        "--retry-max-backoff",
        Kind::Duration,
        "2s",
        "Longest wait between retries.",
    ),
    OptionSpec::new(
        "statefs.remote.retry.total-time",
        "--retry-total-time",
        Kind::Duration,
        "30s",
        "No retry starts after this much time since a call's first attempt: a call fails with EIO at the latest this long plus one attempt after it began.",
    ),
    OptionSpec::new(
        "statefs.remote.request-timeout",
        "--request-timeout",
        Kind::Duration,
        "30s",
        "Longest time one request to a network store may take (connecting: at most 5s of it) before it counts as a failed attempt; a black-holed request ends here. The store client itself never retries.",
    ),
    OptionSpec::new(
        "statefs.s3.endpoint",
        "--s3-endpoint",
        Kind::Text,
        "",
        "S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).",
    )
    .with_env("AWS_ENDPOINT_URL"),
    OptionSpec::new(
        "statefs.s3.region",
        "--s3-region",
        Kind::Text,
        "",
        "S3 region (default: AWS_REGION).",
    )
    .with_env("AWS_REGION"),
    OptionSpec::new(
        "statefs.s3.access-key-id",
        "--s3-access-key-id",
        Kind::Text,
        "",
        "S3 access key id (default: AWS_ACCESS_KEY_ID).",
    )
    .with_env("AWS_ACCESS_KEY_ID"),
    OptionSpec::new(
        "statefs.s3.secret-access-key",
        "--s3-secret-access-key",
        Kind::Secret,
        "",
        "S3 secret access key (default: AWS_SECRET_ACCESS_KEY). Never on a command line: in the environment, or in a config file that only its owner can read (statefs refuses one that others can).",
    ),
    OptionSpec::new(
        "statefs.s3.allow-http",
        "--s3-allow-http",
        Kind::Bool,
        "false",
        "Allow plain http to a non-loopback S3 endpoint (loopback endpoints always may).",
    ),
    OptionSpec::new(
        "state.checkpoints.num-retained",
        "--num-retained",
        Kind::Count,
        "1",
        "Checkpoints of this mount to keep; publishing a new one drops the oldest beyond this. 0 keeps all.",
    ),
    OptionSpec::new(
        "statefs.restore.checkpoint",
        "--restore",
        Kind::Text,
        "",
        "Start from this checkpoint id (the local dir must be fresh). Its files are fetched when first read.",
    ),
    OptionSpec::new(
        "statefs.restore.claim",
        "--claim",
        Kind::Bool,
        "false",
        "With --restore: take the checkpoint over (Flink's CLAIM), so this mount's retention may drop it. Without it (NO_CLAIM) the mount never deletes anything it restored from.",
    ),
    OptionSpec::new(
        "statefs.metrics.addr",
        "--metrics-addr",
        Kind::Text,
        "127.0.0.1:0",
        "Address of the Prometheus `/metrics` endpoint; port 0 picks a free port. The address is written to `<local-dir>/metrics.addr`.",
    ),
];

pub fn spec(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.key == key)
}

pub fn spec_by_flag(flag: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .iter()
        .find(|o| !o.flag.is_empty() && o.flag == flag)
}

/// The mount options' settings: defaults, then a YAML file, then flags
/// (`statefs_store::options::Settings` over [`OPTIONS`]).
#[derive(Debug, Clone)]
pub struct Settings(statefs_store::options::Settings);

impl Default for Settings {
    fn default() -> Self {
        Settings(statefs_store::options::Settings::new(OPTIONS))
    }
}

impl std::ops::Deref for Settings {
    type Target = statefs_store::options::Settings;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Settings {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Settings {
    /// The value of an option that has a default.
    fn must<T>(&self, key: &str, get: impl Fn(&Self, &str) -> Option<T>) -> T {
        get(self, key).unwrap_or_else(|| unreachable!("{key} has a default of its type"))
    }

    fn must_bytes(&self, key: &str) -> u64 {
        self.must(key, |s, k| s.bytes(k))
    }
    fn must_count(&self, key: &str) -> u64 {
        self.must(key, |s, k| s.count(k))
    }
    fn must_duration(&self, key: &str) -> Duration {
        self.must(key, |s, k| s.duration(k))
    }
    fn is_on(&self, key: &str) -> bool {
        self.bool(key) == Some(true)
    }

    /// The S3 client options these settings describe (`statefs.s3.*`).
    pub fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: self.text("statefs.s3.endpoint"),
            region: self.text("statefs.s3.region"),
            access_key_id: self.text("statefs.s3.access-key-id"),
            secret_access_key: self
                .secret("statefs.s3.secret-access-key")
                .map(|s| s.expose().to_string()),
            allow_http: self.is_on("statefs.s3.allow-http"),
            request_timeout: None,
        }
    }

    /// The mount configuration these settings describe.
    pub fn mount_config(&self) -> Result<MountConfig, OptionError> {
        let required = |key: &'static str| {
            self.text(key).ok_or(OptionError::Missing {
                key,
                flag: spec(key).expect("registered").flag,
            })
        };
        let mut c = MountConfig::new(
            required(REMOTE)?,
            required(LOCAL_DIR)?,
            required(CACHE_DIR)?,
        );
        c.cache.size_limit = self.must_bytes("state.backend.forst.cache.size-based-limit");
        c.cache.reserve_size = self.must_bytes("state.backend.forst.cache.reserve-size");
        c.cache.access_before_promote =
            self.must_count("state.backend.forst.cache.lru.access-before-promote") as u32;
        c.cache.promote_limit =
            self.must_count("state.backend.forst.cache.lru.promote-limit") as u32;
        c.cache.target_file_size = self
            .bytes("state.backend.forst.compaction.level.target-file-size-base")
            .unwrap_or(0);
        c.cache.blocks.block_size = self.must_bytes("statefs.cache.block.size").max(512);
        c.cache.blocks.memory = self.must_bytes("statefs.cache.block.memory");
        c.cache.blocks.max_readahead = self.must_bytes("statefs.cache.block.max-readahead");
        c.cache.blocks.in_flight = self.must_count("statefs.cache.block.in-flight").max(1) as usize;
        c.cache.warm.memory = self.must_bytes("statefs.cache.warm.memory");
        c.cache.warm.in_flight = self.must_count("statefs.cache.warm.in-flight").max(1) as usize;
        c.fuse_threads = self.must_count("statefs.fuse.threads").max(1) as usize;
        c.store_threads = self.must_count("statefs.fuse.store-threads").max(1) as usize;
        c.passthrough = match self.text("statefs.fuse.passthrough").as_deref() {
            Some("on") => PassthroughMode::On,
            Some("off") => PassthroughMode::Off,
            _ => PassthroughMode::Auto,
        };
        c.attr_ttl = self.must_duration("statefs.fuse.attr-ttl");
        c.entry_ttl = self.must_duration("statefs.fuse.entry-ttl");
        c.allow_other = self.is_on("statefs.fuse.allow-other");
        c.multipart_threshold = self.must_bytes("statefs.remote.multipart-threshold");
        c.part_size = self.must_bytes("statefs.remote.part-size") as usize;
        c.retry.attempts = self.must_count("statefs.remote.retry.attempts").max(1) as u32;
        c.retry.initial_backoff = self.must_duration("statefs.remote.retry.initial-backoff");
        c.retry.max_backoff = self.must_duration("statefs.remote.retry.max-backoff");
        c.retry.total = self.must_duration("statefs.remote.retry.total-time");
        c.retry.request_timeout = self
            .must_duration("statefs.remote.request-timeout")
            .max(Duration::from_millis(1));
        c.s3 = self.s3_options();
        c.metrics_addr = self
            .text("statefs.metrics.addr")
            .unwrap_or_else(|| "127.0.0.1:0".into());
        c.num_retained = self.must_count("state.checkpoints.num-retained") as usize;
        c.restore = self
            .text("statefs.restore.checkpoint")
            .map(|id| crate::config::RestoreFrom {
                id,
                claim: self.is_on("statefs.restore.claim"),
            });
        Ok(c)
    }
}

pub use statefs_store::yaml::yaml_pairs;

/// `docs/CONFIG.md`: what `statefs config` prints.
pub fn config_doc() -> String {
    format!(
        "# statefs configuration\n\n\
         Every option of a mount. Set them in a YAML file (`statefs mount --config FILE`: flat dotted keys\n\
         or nested mappings), with the flag in the second column, or with `--set KEY=VALUE`; flags\n\
         override the file. Keys under `state.backend.forst.` are Flink ForSt's own keys, with Flink's\n\
         defaults. Unknown keys and bad values are errors that name the key. RocksDB tuning keys\n\
         (`state.backend.rocksdb.*`, and the same names under `state.backend.forst.`) belong to the\n\
         state backend library: see docs/ROCKSDB_OPTIONS.md.\n\n\
         This file is generated by `statefs config > docs/CONFIG.md`; a test fails when it drifts from the\n\
         registry in `fs/src/options.rs`.\n\n{}",
        markdown_table()
    )
}

/// The options table in Markdown (what `statefs config` prints and `docs/CONFIG.md` holds).
pub fn markdown_table() -> String {
    statefs_store::options::markdown_table(OPTIONS, "Key", true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        let mut s = Settings::default();
        s.set(REMOTE, "file:///r").unwrap();
        s.set(LOCAL_DIR, "/l").unwrap();
        s.set(CACHE_DIR, "/c").unwrap();
        s
    }

    #[test]
    fn defaults_match_the_config_structs() {
        let c = base().mount_config().unwrap();
        let d = MountConfig::new("file:///r", "/l", "/c");
        assert_eq!(c.cache, d.cache);
        assert_eq!(
            (
                c.fuse_threads,
                c.store_threads,
                c.passthrough,
                c.attr_ttl,
                c.entry_ttl
            ),
            (
                d.fuse_threads,
                d.store_threads,
                d.passthrough,
                d.attr_ttl,
                d.entry_ttl
            )
        );
        assert_eq!(
            (c.multipart_threshold, c.part_size, c.metrics_addr.clone()),
            (d.multipart_threshold, d.part_size, d.metrics_addr)
        );
        assert_eq!(c.retry, d.retry);
    }

    #[test]
    fn yaml_nested_and_flat_keys_and_values() {
        let mut s = base();
        s.load_yaml(
            "state.backend.forst.cache.size-based-limit: 1gb\nstate:\n  backend:\n    forst:\n      cache:\n        lru:\n          promote-limit: 5\nstatefs.fuse.passthrough: off\nstatefs.fuse.attr-ttl: 250ms\nstatefs.s3.allow-http: true\n",
            "t.yaml",
        )
        .unwrap();
        let c = s.mount_config().unwrap();
        assert_eq!(c.cache.size_limit, 1 << 30);
        assert_eq!(c.cache.promote_limit, 5);
        assert_eq!(c.passthrough, PassthroughMode::Off);
        assert_eq!(c.attr_ttl, Duration::from_millis(250));
        assert!(c.s3.allow_http);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: Vec<(&str, &str)> = vec![
            (
                "statefs.no.such: 1\n",
                "unknown configuration key `statefs.no.such`",
            ),
            (
                "state.backend.forst.cache.reserve-size: lots\n",
                "bad value \"lots\" for `state.backend.forst.cache.reserve-size`",
            ),
            (
                "state.backend.forst.cache.reserve-size: 5 parsecs\n",
                "unknown size unit",
            ),
            (
                "statefs.fuse.threads: -1\n",
                "bad value \"-1\" for `statefs.fuse.threads`",
            ),
            (
                "statefs.fuse.passthrough: maybe\n",
                "expected one of auto, on, off",
            ),
            (
                "statefs.fuse.allow-other: yes please\n",
                "expected true or false",
            ),
            (
                "statefs.fuse.attr-ttl: 3 fortnights\n",
                "unknown duration unit",
            ),
            ("- a\n- b\n", "expected a mapping"),
            ("a: [1\n", "t.yaml"),
        ];
        for (yaml, want) in cases {
            let err = base().load_yaml(yaml, "t.yaml").unwrap_err().to_string();
            assert!(err.contains(want), "{yaml:?}: {err}");
        }
        let err = Settings::default().mount_config().unwrap_err().to_string();
        assert_eq!(
            err,
            "`state.backend.forst.primary-dir` (--remote) is required"
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("256mb"), Ok(256 << 20));
        assert_eq!(parse_bytes("64 KB"), Ok(64 << 10));
        assert_eq!(parse_bytes("12"), Ok(12));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_millis(15)));
        assert!(parse_bytes("99999999999tb").is_err());
    }

    #[test]
    fn flags_are_unique_and_registered() {
        let mut flags: Vec<_> = OPTIONS.iter().map(|o| o.flag).collect();
        flags.sort();
        flags.dedup();
        assert!(
            OPTIONS
                .iter()
                .all(|o| o.flag.starts_with("--") && o.flag.len() > 2),
            "every option has a flag (a secret's is refused with an explanation)"
        );
        assert_eq!(flags.len(), OPTIONS.len(), "flags are unique");
        assert!(spec_by_flag("--remote").is_some());
    }

    /// A secret is taken from a config file only its owner can read, never from a command line,
    /// and no error or `Debug` output shows it.
    #[test]
    fn secrets_come_from_private_files_and_are_never_shown() {
        use std::os::unix::fs::PermissionsExt;
        const KEY: &str = "statefs.s3.secret-access-key";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("statefs.yaml");
        std::fs::write(
            &file,
            format!("{KEY}: hunter2-value\nstatefs.s3.region: eu-west-1\n"),
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut s = base();
        let err = s.load_yaml_file(&file).unwrap_err().to_string();
        assert!(err.contains(KEY) && err.contains("chmod 600"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(s.get(KEY).is_none(), "a refused file sets nothing");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        s.load_yaml_file(&file).unwrap();
        let c = s.mount_config().unwrap();
        assert_eq!(c.s3.secret_access_key.as_deref(), Some("hunter2-value"));
        for shown in [format!("{s:?}"), format!("{c:?}"), format!("{:?}", c.s3)] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        // A file without a secret may be readable by others.
        std::fs::write(&file, "statefs.s3.region: eu-west-1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        base().load_yaml_file(&file).unwrap();
        let err = base()
            .set_from_command_line(KEY, "hunter2-value")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AWS_SECRET_ACCESS_KEY") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(spec_by_flag("").is_none());
        let err = base()
            .set_from_command_line(KEY, "hunter2-value")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--s3-secret-access-key"), "{err}");
    }

    #[test]
    fn committed_docs_match_the_registry() {
        let doc = include_str!("../../docs/CONFIG.md");
        assert!(
            doc == config_doc(),
            "docs/CONFIG.md is out of date: regenerate it with `statefs config > docs/CONFIG.md` (see the file's header)"
        );
    }
}
