//! The configuration registry: every option of a mount, with its key (Flink's key where Flink has
//! one), type, default and description. Loaded from YAML (`--config`); command-line flags override.
//! `statefs config` prints [`markdown_table`], and `docs/CONFIG.md` is that output (a test checks).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{MountConfig, PassthroughMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A size: a number with an optional unit (`b`, `kb`, `mb`, `gb`, `tb`; 1024-based), e.g. `256mb`.
    Bytes,
    /// A non-negative whole number.
    Count,
    Bool,
    /// A duration: a number with a unit (`ms`, `s`, `min`), e.g. `100ms`; a bare number is ms.
    Duration,
    Text,
    /// A credential: text that is never shown (not in errors, not in logs) and has no flag, since
    /// a command line is readable by every local user in `/proc/PID/cmdline`. It comes from the
    /// environment or from a config file only its owner can read.
    Secret,
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

impl Kind {
    fn name(&self) -> String {
        match self {
            Kind::Bytes => "bytes".into(),
            Kind::Count => "count".into(),
            Kind::Bool => "bool".into(),
            Kind::Duration => "duration".into(),
            Kind::Text => "text".into(),
            Kind::Secret => "secret".into(),
            Kind::Choice(c) => c.join(" \\| "),
        }
    }
}

#[derive(Debug)]
pub struct OptionSpec {
    pub key: &'static str,
    /// The `statefs mount` flag that sets it.
    pub flag: &'static str,
    pub kind: Kind,
    /// Default, in the option's own syntax; empty = unset.
    pub default: &'static str,
    pub description: &'static str,
}

const fn opt(
    key: &'static str,
    flag: &'static str,
    kind: Kind,
    default: &'static str,
    description: &'static str,
) -> OptionSpec {
    OptionSpec {
        key,
        flag,
        kind,
        default,
        description,
    }
}

pub const REMOTE: &str = "state.backend.forst.primary-dir";
pub const LOCAL_DIR: &str = "state.backend.forst.local-dir";
pub const CACHE_DIR: &str = "state.backend.forst.cache.dir";

/// Every option. Keys under `state.backend.forst.` are Flink's, with Flink's defaults.
pub const OPTIONS: &[OptionSpec] = &[
    opt(
        REMOTE,
        "--remote",
        Kind::Text,
        "",
        "Where SST files live: `file:///abs/path`, `s3://bucket/prefix` or `memory://`. Required.",
    ),
    opt(
        LOCAL_DIR,
        "--local-dir",
        Kind::Text,
        "",
        "Journal and local-placed files (MANIFEST, WAL, ...). Locked while mounted. Required.",
    ),
    opt(
        CACHE_DIR,
        "--cache-dir",
        Kind::Text,
        "",
        "Staging files of SSTs being written and local copies of SSTs. Required.",
    ),
    opt(
        "state.backend.forst.cache.size-based-limit",
        "--cache-size-limit",
        Kind::Bytes,
        "0",
        "Bytes of local SST copies the cache may hold; 0 = no size limit.",
    ),
    opt(
        "state.backend.forst.cache.reserve-size",
        "--cache-reserve-size",
        Kind::Bytes,
        "256mb",
        "Free disk space the cache keeps on the cache dir's file system; 0 = no space limit. Both limits 0 = no cache.",
    ),
    opt(
        "state.backend.forst.cache.lru.access-before-promote",
        "--cache-access-before-promote",
        Kind::Count,
        "6",
        "Accesses of a cold file before its copy is loaded again.",
    ),
    opt(
        "state.backend.forst.cache.lru.promote-limit",
        "--cache-promote-limit",
        Kind::Count,
        "3",
        "Evictions after which a file is no longer promoted.",
    ),
    opt(
        "state.backend.forst.compaction.level.target-file-size-base",
        "--target-file-size",
        Kind::Bytes,
        "64mb",
        "Room the cache needs for a newly written SST to keep its copy (RocksDB's target file size).",
    ),
    opt(
        "statefs.cache.block.size",
        "--block-size",
        Kind::Bytes,
        "64kb",
        "Unit and alignment of cold reads (files without a local copy).",
    ),
    opt(
        "statefs.cache.block.memory",
        "--block-memory",
        Kind::Bytes,
        "64mb",
        "Memory for blocks of cold reads.",
    ),
    opt(
        "statefs.cache.block.max-readahead",
        "--max-readahead",
        Kind::Bytes,
        "4mb",
        "Largest read-ahead of a sequential cold reader.",
    ),
    opt(
        "statefs.fuse.threads",
        "--fuse-threads",
        Kind::Count,
        "2",
        "FUSE worker threads (more than cores was measured slower on 2 cores).",
    ),
    opt(
        "statefs.fuse.store-threads",
        "--store-threads",
        Kind::Count,
        "8",
        "Threads for the uploads (an uploading fsync or close), and as many for cold reads of a network store, so that no FUSE worker waits on the store; more than this queue.",
    ),
    opt(
        "statefs.fuse.passthrough",
        "--passthrough",
        Kind::Choice(&["auto", "on", "off"]),
        "auto",
        "FUSE passthrough for files with a complete local copy: auto uses it when the kernel offers it, on requires it, off serves all I/O in the daemon.",
    ),
    opt(
        "statefs.fuse.attr-ttl",
        "--attr-ttl",
        Kind::Duration,
        "1s",
        "How long the kernel may cache attributes.",
    ),
    opt(
        "statefs.fuse.entry-ttl",
        "--entry-ttl",
        Kind::Duration,
        "1s",
        "How long the kernel may cache name lookups.",
    ),
    opt(
        "statefs.fuse.allow-other",
        "--allow-other",
        Kind::Bool,
        "false",
        "Let users other than the mounting one use the mount.",
    ),
    opt(
        "statefs.remote.multipart-threshold",
        "--multipart-threshold",
        Kind::Bytes,
        "16mb",
        "Files larger than this are uploaded to a network store in parts (a `file://` store copies every file in 256 KiB chunks through a buffer kept per thread).",
    ),
    opt(
        "statefs.remote.part-size",
        "--part-size",
        Kind::Bytes,
        "8mb",
        "Size of one multipart part for a network store (at least 5mb).",
    ),
    opt(
        "statefs.remote.retry.attempts",
        "--retry-attempts",
        Kind::Count,
        "4",
        "Attempts per object-store call (the first included) before the operation fails with EIO.",
    ),
    opt(
        "statefs.remote.retry.initial-backoff",
        "--retry-initial-backoff",
        Kind::Duration,
        "100ms",
        "Wait before the first retry; doubled each time.",
    ),
    opt(
        "statefs.remote.retry.max-backoff",
        "--retry-max-backoff",
        Kind::Duration,
        "2s",
        "Longest wait between retries.",
    ),
    opt(
        "statefs.remote.retry.total-time",
        "--retry-total-time",
        Kind::Duration,
        "30s",
        "No retry starts after this much time since a call's first attempt: a call fails with EIO at the latest this long plus one attempt after it began.",
    ),
    opt(
        "statefs.remote.request-timeout",
        "--request-timeout",
        Kind::Duration,
        "30s",
        "Longest time one request to a network store may take (connecting: at most 5s of it) before it counts as a failed attempt; a black-holed request ends here. The store client itself never retries.",
    ),
    opt(
        "statefs.s3.endpoint",
        "--s3-endpoint",
        Kind::Text,
        "",
        "S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).",
    ),
    opt(
        "statefs.s3.region",
        "--s3-region",
        Kind::Text,
        "",
        "S3 region (default: AWS_REGION).",
    ),
    opt(
        "statefs.s3.access-key-id",
        "--s3-access-key-id",
        Kind::Text,
        "",
        "S3 access key id (default: AWS_ACCESS_KEY_ID).",
    ),
    opt(
        "statefs.s3.secret-access-key",
        "",
        Kind::Secret,
        "",
        "S3 secret access key (default: AWS_SECRET_ACCESS_KEY). Never on a command line: in the environment, or in a config file that only its owner can read (statefs refuses one that others can).",
    ),
    opt(
        "statefs.s3.allow-http",
        "--s3-allow-http",
        Kind::Bool,
        "false",
        "Allow plain http to a non-loopback S3 endpoint (loopback endpoints always may).",
    ),
    opt(
        "state.checkpoints.num-retained",
        "--num-retained",
        Kind::Count,
        "1",
        "Checkpoints of this mount to keep; publishing a new one drops the oldest beyond this. 0 keeps all.",
    ),
    opt(
        "statefs.restore.checkpoint",
        "--restore",
        Kind::Text,
        "",
        "Start from this checkpoint id (the local dir must be fresh). Its files are fetched when first read.",
    ),
    opt(
        "statefs.restore.claim",
        "--claim",
        Kind::Bool,
        "false",
        "With --restore: take the checkpoint over (Flink's CLAIM), so this mount's retention may drop it. Without it (NO_CLAIM) the mount never deletes anything it restored from.",
    ),
    opt(
        "statefs.metrics.addr",
        "--metrics-addr",
        Kind::Text,
        "127.0.0.1:0",
        "Address of the Prometheus `/metrics` endpoint; port 0 picks a free port. The address is written to `<local-dir>/metrics.addr`.",
    ),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("unknown configuration key `{0}` (`statefs config` lists them)")]
    UnknownKey(String),
    #[error("bad value {value:?} for `{key}`: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
    #[error("configuration file {path}: {why}")]
    File { path: String, why: String },
    #[error(
        "`{0}` is a secret: a command line is readable by every local user (/proc/PID/cmdline). \
         Set it in the environment (AWS_SECRET_ACCESS_KEY) or in a config file only you can read"
    )]
    SecretOnCommandLine(String),
    #[error("`{key}` ({flag}) is required")]
    Missing {
        key: &'static str,
        flag: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bytes(u64),
    Count(u64),
    Bool(bool),
    Duration(Duration),
    Text(String),
    Secret(Secret),
}

/// A credential's value; its `Debug` never shows it.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

pub fn spec(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.key == key)
}

pub fn spec_by_flag(flag: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .iter()
        .find(|o| !o.flag.is_empty() && o.flag == flag)
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number with an optional unit (b, kb, mb, gb, tb)".to_string())?;
    let mult: u64 = match unit.trim() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| "too large".to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number with a unit (ms, s, min)".to_string())?;
    match unit.trim() {
        "" | "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "min" | "m" => Ok(Duration::from_secs(n * 60)),
        other => Err(format!("unknown duration unit {other:?}")),
    }
}

fn parse_value(spec: &OptionSpec, raw: &str) -> Result<Value, OptionError> {
    let bad = |why: String| OptionError::BadValue {
        key: spec.key.into(),
        value: raw.into(),
        why,
    };
    match spec.kind {
        Kind::Bytes => parse_bytes(raw).map(Value::Bytes).map_err(bad),
        Kind::Count => raw
            .trim()
            .parse()
            .map(Value::Count)
            .map_err(|_| bad("expected a whole number".into())),
        Kind::Bool => match raw.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(bad("expected true or false".into())),
        },
        Kind::Duration => parse_duration(raw).map(Value::Duration).map_err(bad),
        Kind::Text => Ok(Value::Text(raw.to_string())),
        Kind::Secret => Ok(Value::Secret(Secret(raw.to_string()))),
        Kind::Choice(choices) => {
            if choices.contains(&raw.trim()) {
                Ok(Value::Text(raw.trim().to_string()))
            } else {
                Err(bad(format!("expected one of {}", choices.join(", "))))
            }
        }
    }
}

/// Settings by key: defaults, then a YAML file, then flags.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<&'static str, Value>,
}

impl Default for Settings {
    fn default() -> Self {
        let values = OPTIONS
            .iter()
            .filter(|o| !o.default.is_empty())
            .map(|o| {
                (
                    o.key,
                    parse_value(o, o.default).expect("registry defaults parse"),
                )
            })
            .collect();
        Settings { values }
    }
}

impl Settings {
    pub fn set(&mut self, key: &str, raw: &str) -> Result<(), OptionError> {
        let spec = spec(key).ok_or_else(|| OptionError::UnknownKey(key.to_string()))?;
        self.values.insert(spec.key, parse_value(spec, raw)?);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Reads a YAML mapping of keys to values; nested mappings are joined with dots
    /// (`state: {backend: ...}` is `state.backend...`).
    /// Reads a YAML config file ([`Settings::load_yaml`]). A file that sets a secret must be
    /// readable by its owner only: one that others can read is refused, naming the key and the
    /// mode, never the value.
    pub fn load_yaml_file(&mut self, path: &std::path::Path) -> Result<(), OptionError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let file_err = |why: String| OptionError::File {
            path: shown.clone(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let mode = std::fs::metadata(path)
            .map_err(|e| file_err(e.to_string()))?
            .permissions()
            .mode();
        let mut loaded = self.clone();
        loaded.load_yaml(&text, &shown)?;
        if let Some(secret) = OPTIONS
            .iter()
            .find(|o| o.kind == Kind::Secret && loaded.values.get(o.key) != self.values.get(o.key))
            && mode & 0o077 != 0
        {
            return Err(file_err(format!(
                "it holds a secret (`{}`) and other users can read it (mode {:o}): `chmod 600 {shown}`",
                secret.key,
                mode & 0o777
            )));
        }
        *self = loaded;
        Ok(())
    }

    /// Sets `key` from a command line (`--set`): refused for a secret, which every local user
    /// could read there.
    pub fn set_from_command_line(&mut self, key: &str, raw: &str) -> Result<(), OptionError> {
        if spec(key).is_some_and(|s| s.kind == Kind::Secret) {
            return Err(OptionError::SecretOnCommandLine(key.to_string()));
        }
        self.set(key, raw)
    }

    pub fn load_yaml(&mut self, text: &str, path: &str) -> Result<(), OptionError> {
        let pairs = yaml_pairs(text).map_err(|why| OptionError::File {
            path: path.to_string(),
            why,
        })?;
        for (k, v) in pairs {
            self.set(&k, &v)?;
        }
        Ok(())
    }

    fn text(&self, key: &str) -> Option<String> {
        match self.values.get(key) {
            Some(Value::Text(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
    fn bytes(&self, key: &str) -> u64 {
        match self.values.get(key) {
            Some(Value::Bytes(b)) => *b,
            _ => unreachable!("{key} is a size with a default"),
        }
    }
    fn count(&self, key: &str) -> u64 {
        match self.values.get(key) {
            Some(Value::Count(b)) => *b,
            _ => unreachable!("{key} is a count with a default"),
        }
    }
    fn flag(&self, key: &str) -> bool {
        matches!(self.values.get(key), Some(Value::Bool(true)))
    }
    fn duration(&self, key: &str) -> Duration {
        match self.values.get(key) {
            Some(Value::Duration(d)) => *d,
            _ => unreachable!("{key} is a duration with a default"),
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
        c.cache.size_limit = self.bytes("state.backend.forst.cache.size-based-limit");
        c.cache.reserve_size = self.bytes("state.backend.forst.cache.reserve-size");
        c.cache.access_before_promote =
            self.count("state.backend.forst.cache.lru.access-before-promote") as u32;
        c.cache.promote_limit = self.count("state.backend.forst.cache.lru.promote-limit") as u32;
        c.cache.target_file_size =
            self.bytes("state.backend.forst.compaction.level.target-file-size-base");
        c.cache.blocks.block_size = self.bytes("statefs.cache.block.size").max(512);
        c.cache.blocks.memory = self.bytes("statefs.cache.block.memory");
        c.cache.blocks.max_readahead = self.bytes("statefs.cache.block.max-readahead");
        c.fuse_threads = self.count("statefs.fuse.threads").max(1) as usize;
        c.store_threads = self.count("statefs.fuse.store-threads").max(1) as usize;
        c.passthrough = match self.text("statefs.fuse.passthrough").as_deref() {
            Some("on") => PassthroughMode::On,
            Some("off") => PassthroughMode::Off,
            _ => PassthroughMode::Auto,
        };
        c.attr_ttl = self.duration("statefs.fuse.attr-ttl");
        c.entry_ttl = self.duration("statefs.fuse.entry-ttl");
        c.allow_other = self.flag("statefs.fuse.allow-other");
        c.multipart_threshold = self.bytes("statefs.remote.multipart-threshold");
        c.part_size = self.bytes("statefs.remote.part-size") as usize;
        c.retry.attempts = self.count("statefs.remote.retry.attempts").max(1) as u32;
        c.retry.initial_backoff = self.duration("statefs.remote.retry.initial-backoff");
        c.retry.max_backoff = self.duration("statefs.remote.retry.max-backoff");
        c.retry.total = self.duration("statefs.remote.retry.total-time");
        c.retry.request_timeout = self
            .duration("statefs.remote.request-timeout")
            .max(Duration::from_millis(1));
        c.s3.endpoint = self.text("statefs.s3.endpoint");
        c.s3.region = self.text("statefs.s3.region");
        c.s3.access_key_id = self.text("statefs.s3.access-key-id");
        c.s3.secret_access_key = match self.values.get("statefs.s3.secret-access-key") {
            Some(Value::Secret(s)) if !s.expose().is_empty() => Some(s.expose().to_string()),
            _ => None,
        };
        c.s3.allow_http = self.flag("statefs.s3.allow-http");
        c.metrics_addr = self
            .text("statefs.metrics.addr")
            .unwrap_or_else(|| "127.0.0.1:0".into());
        c.num_retained = self.count("state.checkpoints.num-retained") as usize;
        c.restore = self
            .text("statefs.restore.checkpoint")
            .map(|id| crate::config::RestoreFrom {
                id,
                claim: self.flag("statefs.restore.claim"),
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
    let mut out =
        String::from("| Key | Flag | Type | Default | Description |\n|---|---|---|---|---|\n");
    for o in OPTIONS {
        let default = if o.default.is_empty() {
            "(none)".to_string()
        } else {
            format!("`{}`", o.default)
        };
        let flag = if o.flag.is_empty() {
            "(none)".to_string()
        } else {
            format!("`{}`", o.flag)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            o.key,
            flag,
            o.kind.name(),
            default,
            o.description
        ));
    }
    out
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
        let secrets = OPTIONS.iter().filter(|o| o.kind == Kind::Secret).count();
        assert!(
            OPTIONS
                .iter()
                .all(|o| o.flag.is_empty() == (o.kind == Kind::Secret)),
            "a secret has no flag; everything else has one"
        );
        assert_eq!(flags.len() + secrets.saturating_sub(1), OPTIONS.len());
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
