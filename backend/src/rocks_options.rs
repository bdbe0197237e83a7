//! RocksDB tuning: Flink's predefined option profiles and configurable keys.
//!
//! Precedence, as Flink: a configured key > the profile's value > RocksDB's default; a shared
//! memory budget ([`crate::rocks::SharedResources`]) overrides cache and write-buffer sizes. Keys are
//! accepted under `state.backend.rocksdb.` and `state.backend.forst.`.

use rocksdb::Options;
use statefs_store::options::{Kind, OptionSpec, Value};

use crate::error::{StateError, StateResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Default,
    SpinningDiskOptimized,
    SpinningDiskOptimizedHighMem,
    FlashSsdOptimized,
}

/// Configured values; `None` = the profile's value, else RocksDB's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RocksTuning {
    pub profile: Profile,
    pub block_size: Option<usize>,
    pub block_cache_size: Option<usize>,
    pub write_buffer_size: Option<usize>,
    pub max_write_buffer_number: Option<i32>,
    pub min_write_buffer_number_to_merge: Option<i32>,
    pub target_file_size_base: Option<u64>,
    pub max_bytes_for_level_base: Option<u64>,
    pub use_dynamic_level_size: Option<bool>,
    pub use_bloom_filter: Option<bool>,
    pub bloom_bits_per_key: Option<f64>,
    pub thread_num: Option<i32>,
    /// A memory budget ([`crate::rocks::SharedResources::from_tuning`]).
    pub memory_budget: Option<usize>,
    pub write_buffer_ratio: Option<f64>,
    pub high_pri_pool_ratio: Option<f64>,
    /// glibc's `M_MMAP_THRESHOLD` set with a budget (`memory.malloc-mmap-threshold`); `Some(0)`
    /// leaves glibc's dynamic threshold.
    pub malloc_mmap_threshold: Option<usize>,
    /// `manifest.max-file-size`; [`DEFAULT_MAX_MANIFEST_FILE_SIZE`] when unset.
    pub max_manifest_file_size: Option<usize>,
    pub use_ingest_db_restore: Option<bool>,
    /// `timer-service.cache-size`; [`crate::timers::DEFAULT_TIMER_CACHE_SIZE`] when unset.
    pub timer_cache_size: Option<usize>,
    /// `executor.read-io-parallelism`; [`DEFAULT_READ_THREADS`] when unset.
    pub read_threads: Option<usize>,
}

/// Read threads of the async State API's preloads unless configured. ForSt's own default is 3,
/// each thread running one MultiGet whose block reads proceed in parallel; statefs' threads issue
/// point reads, so reads in flight are as many as threads, and a store 20 ms away needs tens
/// (the async bench: 64 threads 75k records/s, 128 110k, 256 124k at 10% cached).
pub const DEFAULT_READ_THREADS: usize = 64;

/// MANIFEST size at which RocksDB rolls over to a compact new one, unless configured: small enough
/// that copying it at every checkpoint stays cheap, large enough that rollovers (a snapshot of
/// the file list) are rare.
pub const DEFAULT_MAX_MANIFEST_FILE_SIZE: usize = 1 << 20;

/// The keys [`RocksTuning::from_pairs`] understands, after the `state.backend.rocksdb.` or
/// `state.backend.forst.` prefix: entries of the option registry (`statefs_store::options`), with
/// no default of their own (an unset key is the profile's value, else RocksDB's: each description
/// says which). `docs/ROCKSDB_OPTIONS.md` is [`markdown_table`] of them (a test checks).
pub const KEYS: &[OptionSpec] = &[
    OptionSpec::new(
        "predefined-options",
        "",
        Kind::Choice(&[
            "DEFAULT",
            "SPINNING_DISK_OPTIMIZED",
            "SPINNING_DISK_OPTIMIZED_HIGH_MEM",
            "FLASH_SSD_OPTIMIZED",
        ]),
        "",
        "Flink's option profile; it fills every key below that is not configured. Non-default profiles also keep all files open and use 4 background jobs. Default: DEFAULT.",
    ),
    OptionSpec::new(
        "block.blocksize",
        "",
        Kind::Bytes,
        "",
        "Uncompressed data per SST block. Default: 4kb (RocksDB).",
    ),
    OptionSpec::new(
        "block.cache-size",
        "",
        Kind::Bytes,
        "",
        "LRU block cache of each column family. A shared memory budget replaces it. Default: 32mb (RocksDB).",
    ),
    OptionSpec::new(
        "writebuffer.size",
        "",
        Kind::Bytes,
        "",
        "Memtable size before it is switched for flushing. A shared memory budget replaces it. Default: 64mb (RocksDB).",
    ),
    OptionSpec::new(
        "writebuffer.count",
        "",
        Kind::Count,
        "",
        "Memtables held in memory at most, the active one included. At least 1. Default: 2 (RocksDB).",
    ),
    OptionSpec::new(
        "writebuffer.number-to-merge",
        "",
        Kind::Count,
        "",
        "Immutable memtables merged into one flush. At least 1. Default: 1 (RocksDB).",
    ),
    OptionSpec::new(
        "compaction.level.target-file-size-base",
        "",
        Kind::Bytes,
        "",
        "Target SST size at level 1 (the SST size on statefs' object store). Default: 64mb (RocksDB).",
    ),
    OptionSpec::new(
        "compaction.level.max-size-level-base",
        "",
        Kind::Bytes,
        "",
        "Total size of level 1. Default: 256mb (RocksDB).",
    ),
    OptionSpec::new(
        "compaction.level.use-dynamic-size",
        "",
        Kind::Bool,
        "",
        "Size levels from the last level upwards (`level_compaction_dynamic_level_bytes`). Default: true (RocksDB).",
    ),
    OptionSpec::new(
        "use-bloom-filter",
        "",
        Kind::Bool,
        "",
        "Bloom filter in every SST (full filter, not block-based). Default: false.",
    ),
    OptionSpec::new(
        "bloom-filter.bits-per-key",
        "",
        Kind::Number,
        "",
        "Bloom filter bits per key, when the filter is on. Default: 10.",
    ),
    OptionSpec::new(
        "thread.num",
        "",
        Kind::Count,
        "",
        "Background flush and compaction jobs (and the thread pools' sizes). At least 1. Default: 2 (RocksDB); 4 in ForSt mode.",
    ),
    OptionSpec::new(
        "memory.fixed-per-slot",
        "",
        Kind::Bytes,
        "",
        "A memory budget for the backend: a strict-capacity block cache plus memtables that stall writers at their share. `RocksBackend::open_tuned` without a `SharedResources` makes one per backend; pass one `SharedResources::from_tuning` to several backends to share it. It replaces the block cache and write buffer sizes. Default: none.",
    ),
    OptionSpec::new(
        "memory.write-buffer-ratio",
        "",
        Kind::Ratio,
        "",
        "Share of the budget for memtables; the rest is the block cache. Default: 0.5.",
    ),
    OptionSpec::new(
        "memory.high-prio-pool-ratio",
        "",
        Kind::Ratio,
        "",
        "Share of the block cache kept for index and filter blocks (cached at high priority). Default: 0.1.",
    ),
    OptionSpec::new(
        "memory.malloc-mmap-threshold",
        "",
        Kind::Bytes,
        "",
        "With a budget, on glibc: fixes malloc's mmap threshold (process-wide, set by the first budget made), so memory RocksDB frees goes back to the system. glibc raises the threshold after each large free, and RocksDB's freed memtable and compaction buffers then stayed in malloc's heap: peak RSS 104 MB with a 32 MB budget, 65 MB with the threshold fixed (docs/BENCHMARKS.md). `0` leaves glibc's dynamic threshold. 0, or 4kb to 32mb. Default: 128kb.",
    ),
    OptionSpec::new(
        "manifest.max-file-size",
        "",
        Kind::Bytes,
        "",
        "MANIFEST size at which RocksDB starts a new, compact one (`max_manifest_file_size`, a floor: RocksDB raises it with the size of a compacted MANIFEST, `max_manifest_space_amp_pct`; its own default is 1gb, and its docs name 1mb as the likely better one). Every checkpoint copies the whole MANIFEST (rocksdb uploads it, forst copies it into the statefs checkpoint), and it grows by every flush and compaction until it rolls over (measured: 21 KB after a 1 GB load, +3-5 KB per checkpoint round of the backends bench), so under RocksDB's default a job running for weeks copies ever more of it. At least 64kb. Default: 1mb.",
    ),
    OptionSpec::new(
        "use-ingest-db-restore",
        "",
        Kind::Bool,
        "",
        "When scaling in, bring the other subtasks' key groups in as SST files written aside and ingested; `false` copies them through write batches (memtables, flushes, compactions). Default: true.",
    ),
    OptionSpec::new(
        "executor.read-io-parallelism",
        "",
        Kind::Count,
        "",
        "Threads that read, ahead of the task thread, the entries a batch of async State API requests is about to read (point reads: as many in flight as threads; ForSt's threads each run a MultiGet). On ForSt, raise the mount's `statefs.cache.block.in-flight` with it: the mount fetches as many blocks at once as it has cold-read threads. At least 1. Default: 64 (ForSt's: 3).",
    ),
    OptionSpec::new(
        "timer-service.cache-size",
        "",
        Kind::Count,
        "",
        "Timers per key group and time domain kept in memory (the earliest ones); the rest stay in the timer state's column family and are read back as the cached ones fire. Timer memory is bounded by key groups x this, whatever the number of timers. At least 1. Default: 128 (Flink's).",
    ),
];

/// The tuning keys in Markdown (`docs/ROCKSDB_OPTIONS.md` holds this).
pub fn markdown_table() -> String {
    statefs_store::options::markdown_table(
        KEYS,
        "Key (after `state.backend.rocksdb.` or `state.backend.forst.`)",
        false,
    )
}

/// `docs/ROCKSDB_OPTIONS.md`.
pub fn options_doc() -> String {
    format!(
        "# RocksDB and ForSt tuning keys\n\n\
         The embedded RocksDB backend and the ForSt mode read these keys (Flink's names) from a\n\
         Flink-style YAML file (`RocksTuning::from_yaml_file`: flat keys or nested mappings, as in\n\
         Flink's `config.yaml`) or from `(key, value)` pairs (`RocksTuning::from_pairs`), and apply\n\
         them with `RocksBackend::open_tuned`. Precedence, as in Flink: a configured\n\
         key, then the `predefined-options` profile, then RocksDB's default. Sizes take `b`, `kb`, `mb`,\n\
         `gb`. An unknown key under `state.backend.rocksdb.` or a bad value is an error naming the key;\n\
         other `state.backend.forst.` keys are statefs' own (docs/CONFIG.md).\n\n\
         Generated from `backend/src/rocks_options.rs`; a test fails when it drifts. Regenerate with\n\
         `STATEFS_BLESS=1 cargo test -p statefs-backend rocksdb_options_doc`.\n\n{}",
        markdown_table()
    )
}

/// The OPTIONS file RocksDB wrote last in database directory `dir` (`OPTIONS-<n>`, highest `n`):
/// the options in force, to check what a tuning did.
pub fn latest_options_file(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("OPTIONS-")?
                .parse::<u64>()
                .ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

fn bad(key: &str, v: &str, why: &str) -> StateError {
    StateError::Invalid(format!("bad value {v:?} for `{key}`: {why}"))
}

impl RocksTuning {
    /// Reads Flink-style YAML configuration (`config.yaml`: flat `state.backend.rocksdb.x: v` keys
    /// or nested mappings); keys outside the RocksDB/ForSt prefixes are ignored, as in
    /// [`RocksTuning::from_pairs`]. `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &str) -> StateResult<RocksTuning> {
        let pairs = statefs_store::yaml::yaml_pairs(text)
            .map_err(|why| StateError::Invalid(format!("{origin}: {why}")))?;
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Self::from_pairs(&refs).map_err(|e| StateError::Invalid(format!("{origin}: {e}")))
    }

    /// [`RocksTuning::from_yaml`] of a file.
    pub fn from_yaml_file(path: &std::path::Path) -> StateResult<RocksTuning> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StateError::Invalid(format!("{}: {e}", path.display())))?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses `(key, value)` pairs; unknown keys under the RocksDB/ForSt prefixes and bad values are
    /// errors naming the key; other keys are not ours and are ignored. Values are parsed by the
    /// option registry's parsers (one per type), then checked against each key's range.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> StateResult<RocksTuning> {
        let mut t = RocksTuning::default();
        for (key, v) in pairs {
            let Some(k) = key
                .strip_prefix("state.backend.rocksdb.")
                .or_else(|| key.strip_prefix("state.backend.forst."))
            else {
                continue;
            };
            let Some(spec) = KEYS.iter().find(|t| t.key == k) else {
                // ForSt's cache and directory keys belong to statefs' own registry.
                if key.starts_with("state.backend.forst.") {
                    continue;
                }
                return Err(StateError::Invalid(format!(
                    "unknown configuration key `{key}`"
                )));
            };
            let value = statefs_store::options::parse_value(spec.kind, v)
                .map_err(|why| bad(key, v, &why))?;
            let size = || match value {
                Value::Bytes(n) => usize::try_from(n).map_err(|_| bad(key, v, "too large")),
                _ => unreachable!("{k} is a size"),
            };
            let positive = || match value {
                Value::Count(n) if n >= 1 => i32::try_from(n).map_err(|_| bad(key, v, "too large")),
                Value::Count(_) => Err(bad(key, v, "at least 1")),
                _ => unreachable!("{k} is a count"),
            };
            let number = || match value {
                Value::Number(n) => n,
                _ => unreachable!("{k} is a number"),
            };
            let boolean = || matches!(value, Value::Bool(true));
            match k {
                "predefined-options" => {
                    t.profile = match v.trim() {
                        "SPINNING_DISK_OPTIMIZED" => Profile::SpinningDiskOptimized,
                        "SPINNING_DISK_OPTIMIZED_HIGH_MEM" => Profile::SpinningDiskOptimizedHighMem,
                        "FLASH_SSD_OPTIMIZED" => Profile::FlashSsdOptimized,
                        _ => Profile::Default,
                    }
                }
                "block.blocksize" => t.block_size = Some(size()?),
                "block.cache-size" => t.block_cache_size = Some(size()?),
                "writebuffer.size" => t.write_buffer_size = Some(size()?),
                "writebuffer.count" => t.max_write_buffer_number = Some(positive()?),
                "writebuffer.number-to-merge" => {
                    t.min_write_buffer_number_to_merge = Some(positive()?)
                }
                "compaction.level.target-file-size-base" => {
                    t.target_file_size_base = Some(size()? as u64)
                }
                "compaction.level.max-size-level-base" => {
                    t.max_bytes_for_level_base = Some(size()? as u64)
                }
                "compaction.level.use-dynamic-size" => t.use_dynamic_level_size = Some(boolean()),
                "use-bloom-filter" => t.use_bloom_filter = Some(boolean()),
                "bloom-filter.bits-per-key" => t.bloom_bits_per_key = Some(number()),
                "thread.num" => t.thread_num = Some(positive()?),
                "memory.fixed-per-slot" => t.memory_budget = Some(size()?),
                "memory.write-buffer-ratio" => t.write_buffer_ratio = Some(number()),
                "memory.high-prio-pool-ratio" => t.high_pri_pool_ratio = Some(number()),
                "manifest.max-file-size" => {
                    let n = size()?;
                    if n < 64 << 10 {
                        return Err(bad(key, v, "at least 64kb"));
                    }
                    t.max_manifest_file_size = Some(n);
                }
                "memory.malloc-mmap-threshold" => {
                    let n = size()?;
                    if n != 0 && !(4 << 10..=32 << 20).contains(&n) {
                        return Err(bad(key, v, "0, or between 4kb and 32mb"));
                    }
                    t.malloc_mmap_threshold = Some(n);
                }
                "use-ingest-db-restore" => t.use_ingest_db_restore = Some(boolean()),
                "timer-service.cache-size" => t.timer_cache_size = Some(positive()? as usize),
                "executor.read-io-parallelism" => t.read_threads = Some(positive()? as usize),
                _ => unreachable!("checked against KEYS"),
            }
        }
        Ok(t)
    }

    /// The profile's values under the configured ones.
    fn resolved(&self) -> RocksTuning {
        let mut r = self.clone();
        let jobs = Some(4);
        match self.profile {
            Profile::Default => {}
            Profile::SpinningDiskOptimized | Profile::FlashSsdOptimized => {
                r.thread_num = r.thread_num.or(jobs);
                if self.profile == Profile::SpinningDiskOptimized {
                    r.use_dynamic_level_size = r.use_dynamic_level_size.or(Some(true));
                }
            }
            Profile::SpinningDiskOptimizedHighMem => {
                r.block_cache_size = r.block_cache_size.or(Some(256 << 20));
                r.block_size = r.block_size.or(Some(128 << 10));
                r.max_bytes_for_level_base = r.max_bytes_for_level_base.or(Some(1 << 30));
                r.target_file_size_base = r.target_file_size_base.or(Some(256 << 20));
                r.write_buffer_size = r.write_buffer_size.or(Some(64 << 20));
                r.max_write_buffer_number = r.max_write_buffer_number.or(Some(4));
                r.min_write_buffer_number_to_merge = r.min_write_buffer_number_to_merge.or(Some(3));
                r.use_bloom_filter = r.use_bloom_filter.or(Some(true));
                r.use_dynamic_level_size = r.use_dynamic_level_size.or(Some(true));
                r.thread_num = r.thread_num.or(jobs);
            }
        }
        r
    }

    pub(crate) fn apply_db(&self, o: &mut Options) {
        let r = self.resolved();
        if let Some(n) = r.thread_num {
            o.increase_parallelism(n);
            o.set_max_background_jobs(n);
        }
        if self.profile != Profile::Default {
            o.set_max_open_files(-1);
        }
        o.set_max_manifest_file_size(
            self.max_manifest_file_size
                .unwrap_or(DEFAULT_MAX_MANIFEST_FILE_SIZE),
        );
    }

    /// Block-based table options as a RocksDB options string (the inside of
    /// `block_based_table_factory={...}`); `shared_cache`: a budget's cache, which wins over the
    /// configured cache size.
    pub(crate) fn table_options(&self, shared_cache: bool) -> String {
        let r = self.resolved();
        let mut t = Vec::new();
        if let Some(b) = r.block_size {
            t.push(format!("block_size={b}"));
        }
        if !shared_cache && let Some(c) = r.block_cache_size {
            t.push(format!("block_cache={c}"));
        }
        if r.use_bloom_filter == Some(true) {
            // A full filter (not the legacy block-based one).
            t.push(format!(
                "filter_policy=bloomfilter:{}:false",
                r.bloom_bits_per_key.unwrap_or(10.0)
            ));
        }
        t.join(";")
    }

    /// Column-family options other than the table's; `shared_cache`: a budget sets the write
    /// buffer size.
    pub(crate) fn apply_cf(&self, o: &mut Options, shared_cache: bool) {
        let r = self.resolved();
        if !shared_cache && let Some(w) = r.write_buffer_size {
            o.set_write_buffer_size(w);
        }
        if let Some(n) = r.max_write_buffer_number {
            o.set_max_write_buffer_number(n);
        }
        if let Some(n) = r.min_write_buffer_number_to_merge {
            o.set_min_write_buffer_number_to_merge(n);
        }
        if let Some(n) = r.target_file_size_base {
            o.set_target_file_size_base(n);
        }
        if let Some(n) = r.max_bytes_for_level_base {
            o.set_max_bytes_for_level_base(n);
        }
        if let Some(d) = r.use_dynamic_level_size {
            o.set_level_compaction_dynamic_level_bytes(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_profiles() {
        let t = RocksTuning::from_pairs(&[
            (
                "state.backend.rocksdb.predefined-options",
                "SPINNING_DISK_OPTIMIZED_HIGH_MEM",
            ),
            ("state.backend.rocksdb.block.blocksize", "16kb"),
            ("state.backend.forst.writebuffer.count", "5"),
            ("state.backend.forst.cache.size-based-limit", "1gb"),
            ("execution.checkpointing.interval", "10s"),
        ])
        .unwrap();
        let r = t.resolved();
        assert_eq!(r.block_size, Some(16 << 10), "configured beats the profile");
        assert_eq!(r.max_write_buffer_number, Some(5));
        assert_eq!(
            r.target_file_size_base,
            Some(256 << 20),
            "the profile fills the rest"
        );
        assert_eq!(r.use_bloom_filter, Some(true));
        for (pairs, want) in [
            (
                vec![("state.backend.rocksdb.nope", "1")],
                "unknown configuration key `state.backend.rocksdb.nope`",
            ),
            (
                vec![("state.backend.rocksdb.writebuffer.size", "lots")],
                "`state.backend.rocksdb.writebuffer.size`",
            ),
            (
                vec![("state.backend.rocksdb.predefined-options", "FAST")],
                "SPINNING_DISK_OPTIMIZED",
            ),
            (
                vec![("state.backend.rocksdb.use-bloom-filter", "yes")],
                "true or false",
            ),
        ] {
            let err = RocksTuning::from_pairs(&pairs).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    /// Flink's `config.yaml` in both spellings (nested and flat) gives the same tuning; a bad value
    /// or an unknown key names the file and the key; keys of other subsystems are ignored.
    #[test]
    fn yaml_nested_and_flat_and_errors() {
        let nested = "state:\n  backend:\n    rocksdb:\n      block.blocksize: 16kb\n      \
                      writebuffer.count: 5\n      use-bloom-filter: true\n      \
                      bloom-filter.bits-per-key: 12.5\n\
                      execution.checkpointing.interval: 10s\n";
        let flat = "state.backend.rocksdb.block.blocksize: 16kb\n\
                    state.backend.rocksdb.writebuffer.count: 5\n\
                    state.backend.rocksdb.use-bloom-filter: true\n\
                    state.backend.rocksdb.bloom-filter.bits-per-key: 12.5\n";
        let a = RocksTuning::from_yaml(nested, "a.yaml").unwrap();
        let b = RocksTuning::from_yaml(flat, "b.yaml").unwrap();
        assert_eq!(a, b);
        let r = a.resolved();
        assert_eq!(r.block_size, Some(16 << 10));
        assert_eq!(r.max_write_buffer_number, Some(5));
        assert_eq!(r.bloom_bits_per_key, Some(12.5));
        assert_eq!(
            RocksTuning::from_yaml("", "empty.yaml").unwrap(),
            RocksTuning::default()
        );
        for (yaml, want) in [
            (
                "state.backend.rocksdb.writebuffer.count: many\n",
                "writebuffer.count",
            ),
            ("state.backend.rocksdb.no-such-key: 1\n", "no-such-key"),
            ("state: [1, 2]\n", "unsupported value"),
            ("- a\n- b\n", "mapping"),
            ("a: [1\n", "c.yaml"),
        ] {
            let err = RocksTuning::from_yaml(yaml, "c.yaml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("c.yaml") && err.contains(want),
                "{yaml:?}: {err}"
            );
        }
        let missing = RocksTuning::from_yaml_file(std::path::Path::new("/nonexistent/x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/x.yaml"), "{missing}");
    }

    #[test]
    fn every_documented_key_parses() {
        for k in KEYS {
            let v = match k.kind {
                Kind::Bytes => "8mb",
                Kind::Count => "3",
                Kind::Bool => "true",
                Kind::Number => "12.5",
                Kind::Ratio => "0.3",
                Kind::Choice(_) => "FLASH_SSD_OPTIMIZED",
                other => unreachable!("no tuning key is a {other:?}"),
            };
            let key = format!("state.backend.forst.{}", k.key);
            let t = RocksTuning::from_pairs(&[(key.as_str(), v)]).unwrap();
            assert_ne!(
                t,
                RocksTuning::default(),
                "{key} was parsed but set nothing"
            );
        }
    }

    #[test]
    fn rocksdb_options_doc() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ROCKSDB_OPTIONS.md");
        let want = options_doc();
        if std::env::var_os("STATEFS_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/ROCKSDB_OPTIONS.md is out of date: regenerate it with \
             `STATEFS_BLESS=1 cargo test -p statefs-backend rocksdb_options_doc`"
        );
    }
}
