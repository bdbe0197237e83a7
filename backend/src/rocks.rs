//! The embedded RocksDB backend (first part: the State API on RocksDB).
//!
//! One column family per state; keys are `[key group: u16 BE][composite key]`, so a key-group range
//! is one contiguous byte range of every column family (rescaling can clip it with DeleteRange).
//!
//! Writes skip the WAL, as Flink's do: a checkpoint (which flushes) or a clean close makes state
//! durable, and a crashed job restores from its last checkpoint.
//!
//! Lists are merge operands (concatenation); states with TTL live in `ttlstate-` column families
//! with a compaction filter, installed at open for every such family, so a restarted or restored
//! database keeps cleaning (a TTL state written under the plain `state-` name by an older build
//! moves to its `ttlstate-` family when it registers). Incremental checkpoints are in `rocks_checkpoint.rs`. The canonical
//! snapshot (savepoints) reads a RocksDB checkpoint taken beside the database and opened
//! read-only, one key group at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};

use crate::backend::{Entry, SnapshotView, StateBackend, StateId, StateKind, StateMeta};
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;
use crate::rocks_options::RocksTuning;

pub(crate) mod manifest_log;
mod merge;
mod preload;
mod write_behind;

/// An SST a checkpoint of this backend uploaded: its object and the CRC32C of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadedSst {
    pub key: String,
    pub crc32c: u32,
}

pub struct RocksBackend {
    /// The read threads of [`StateBackend::preload`], started by the first; declared first so
    /// that dropping the backend waits for their running reads before anything else goes.
    preloader: std::sync::OnceLock<preload::Preloader>,
    /// The async State API's writes, applied by a write thread while on (see
    /// `rocks/write_behind.rs`); only the task thread locks it.
    write_behind: std::sync::Mutex<write_behind::WriteBehind>,
    /// Shared only with running preload jobs (see `rocks/preload.rs`).
    db: std::sync::Arc<DB>,
    /// Values the preload read, for the task thread's next read (see `rocks/preload.rs`).
    read_ahead: std::sync::Arc<preload::ReadAhead>,
    path: PathBuf,
    range: KeyGroupRange,
    max_parallelism: u32,
    states: Vec<StateMeta>,
    by_name: HashMap<String, StateId>,
    /// Removes the database directory on drop (temporary backends).
    _temp: Option<tempfile::TempDir>,
    /// SST file name -> its object in `shared/`, from earlier checkpoints (reused only when the
    /// shared-state registry confirms a completed checkpoint holds it).
    uploaded: HashMap<String, UploadedSst>,
    /// Options of column families created here: they own the compaction filter and merge operator
    /// callbacks, which RocksDB calls for as long as the database is open.
    cf_opts: Vec<Options>,
    /// The shared block cache and write-buffer manager, when a memory budget is set.
    shared: Option<std::sync::Arc<SharedResources>>,
    tuning: RocksTuning,
    /// Column family of each state, by `StateId`.
    cf_names: Vec<String>,
    /// What the TTL compaction filter of each TTL column family knows, by column-family name.
    ttl_slots: HashMap<String, std::sync::Arc<TtlSlot>>,
    /// Every write skips the WAL, as Flink's RocksDB backend does: state is made durable by
    /// checkpoints (which flush memtables), a clean close flushes, and after a crash a job restores
    /// from its last checkpoint, never from the local database.
    write_opts: rocksdb::WriteOptions,
}

/// Options of every state's column family: list appends are merges that concatenate encoded
/// elements (the list encoding is a concatenation of length-prefixed elements).
///
/// Table options are applied as a RocksDB options string on top of the base options: RocksDB
/// clones the base's block-based table factory for that, and a clone keeps the factory's block
/// cache, so with a budget every column family of every backend shares the budget's one cache.
fn cf_options(shared: Option<&SharedResources>, tuning: &RocksTuning) -> StateResult<Options> {
    let mut base = shared.map(|sh| sh.base.clone()).unwrap_or_default();
    let table = tuning.table_options(shared.is_some());
    let mut o = base
        .get_options_from_string(format!("block_based_table_factory={{{table}}}"))
        .map_err(|e| StateError::Invalid(format!("rocksdb table options `{table}`: {e}")))?;
    o.set_merge_operator_associative("statefs-list-append", concat_merge);
    tuning.apply_cf(&mut o, shared.is_some());
    if let Some(sh) = shared {
        o.set_write_buffer_size(sh.write_buffer_size);
    }
    Ok(o)
}

/// Memory one or several RocksDB backends share (Flink's `state.backend.rocksdb.memory.*`), as a
/// hard split of `budget`: memtables get `write_buffer_ratio` of it through a write-buffer
/// manager that stalls writers at its limit, and the rest is one LRU block cache with a strict
/// capacity (an insert that would exceed it fails instead of growing the cache). Index and filter
/// blocks are cached in it, at high priority, in a pool of `high_pri_pool_ratio` of the cache.
///
/// Flink charges memtables to the cache instead; that needs the cache object for the write-buffer
/// manager, which the `rocksdb` crate cannot build with a strict capacity. The split is strict on
/// both sides, at the price of the cache not borrowing memtable memory left unused.
pub struct SharedResources {
    /// Options whose block-based table factory holds the shared cache; every database and column
    /// family starts from a copy, and a copy shares the factory's cache (a `shared_ptr`).
    base: Options,
    pub write_buffers: rocksdb::WriteBufferManager,
    pub budget: usize,
    /// Bytes of the block cache (`budget` minus the memtables' share).
    pub cache_capacity: usize,
    write_buffer_size: usize,
}

impl std::fmt::Debug for SharedResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedResources")
            .field("budget", &self.budget)
            .field("cache_capacity", &self.cache_capacity)
            .field("write_buffer_size", &self.write_buffer_size)
            .finish_non_exhaustive()
    }
}

impl SharedResources {
    /// `budget` bytes in all, `write_buffer_ratio` (Flink's default 0.5) of it for memtables, and
    /// Flink's default high-priority pool ratio (0.1).
    pub fn new(budget: usize, write_buffer_ratio: f64) -> StateResult<std::sync::Arc<Self>> {
        Self::with_ratios(budget, write_buffer_ratio, 0.1)
    }

    /// The budget `memory.fixed-per-slot` configures, with the configured ratios; `None` when no
    /// budget is configured.
    pub fn from_tuning(tuning: &RocksTuning) -> StateResult<Option<std::sync::Arc<Self>>> {
        tuning
            .memory_budget
            .map(|b| {
                Self::make(
                    b,
                    tuning.write_buffer_ratio.unwrap_or(0.5),
                    tuning.high_pri_pool_ratio.unwrap_or(0.1),
                    tuning
                        .malloc_mmap_threshold
                        .unwrap_or(DEFAULT_MALLOC_MMAP_THRESHOLD),
                )
            })
            .transpose()
    }

    /// Flink's `memory.write-buffer-ratio` and `memory.high-prio-pool-ratio`, both in (0, 1).
    pub fn with_ratios(
        budget: usize,
        write_buffer_ratio: f64,
        high_pri_pool_ratio: f64,
    ) -> StateResult<std::sync::Arc<Self>> {
        Self::make(
            budget,
            write_buffer_ratio,
            high_pri_pool_ratio,
            DEFAULT_MALLOC_MMAP_THRESHOLD,
        )
    }

    fn make(
        budget: usize,
        write_buffer_ratio: f64,
        high_pri_pool_ratio: f64,
        malloc_mmap_threshold: usize,
    ) -> StateResult<std::sync::Arc<Self>> {
        for (name, r) in [
            ("write-buffer ratio", write_buffer_ratio),
            ("high-priority pool ratio", high_pri_pool_ratio),
        ] {
            if !(r > 0.0 && r < 1.0) {
                return Err(StateError::Invalid(format!(
                    "rocksdb memory {name} {r}: must be above 0 and below 1"
                )));
            }
        }
        if budget < 1 << 20 {
            return Err(StateError::Invalid(format!(
                "rocksdb memory budget {budget} bytes: at least 1 MiB"
            )));
        }
        let wb = (budget as f64 * write_buffer_ratio) as usize;
        let cache_capacity = budget - wb;
        // The strict limit holds per shard, and a shard's capacity is its share of the total: with
        // RocksDB's default 512 KiB shards, two readers holding index blocks of 64 MB SSTs (about
        // 400 KB each) that hash to one shard made the next read fail. Shards of 16 MiB or more.
        let shard_bits = (cache_capacity >> 24).max(1).ilog2().min(6);
        let table = format!(
            "block_based_table_factory={{block_cache={{capacity={cache_capacity};\
             num_shard_bits={shard_bits};strict_capacity_limit=true;\
             high_pri_pool_ratio={high_pri_pool_ratio}}};cache_index_and_filter_blocks=true;\
             cache_index_and_filter_blocks_with_high_priority=true;\
             pin_l0_filter_and_index_blocks_in_cache=true}}"
        );
        let base = Options::default()
            .get_options_from_string(&table)
            .map_err(|e| StateError::Invalid(format!("rocksdb shared cache `{table}`: {e}")))?;
        fix_malloc_mmap_threshold(malloc_mmap_threshold);
        Ok(std::sync::Arc::new(SharedResources {
            base,
            write_buffers: rocksdb::WriteBufferManager::new_write_buffer_manager(wb, true),
            budget,
            cache_capacity,
            write_buffer_size: (wb / 4).clamp(64 << 10, 64 << 20),
        }))
    }
}

/// `memory.malloc-mmap-threshold`'s default: glibc's initial threshold, kept fixed.
const DEFAULT_MALLOC_MMAP_THRESHOLD: usize = 128 << 10;

/// The threshold the first budget of this process set (0: left dynamic); later budgets do not
/// change it, since it is one setting of the whole process.
static MALLOC_MMAP_THRESHOLD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Fixes glibc's mmap threshold at `bytes` (0: leave it), once per process. glibc starts at 128 KiB
/// and raises the threshold to the size of each mmapped block freed; after RocksDB frees its
/// memtable arenas and compaction buffers, blocks of that size come from malloc's heap, where freed
/// ones stay resident. Fixed, they are mmapped and unmapped when freed, so RSS follows the budget.
fn fix_malloc_mmap_threshold(bytes: usize) {
    let first = *MALLOC_MMAP_THRESHOLD.get_or_init(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if bytes != 0 {
            // SAFETY: mallopt only changes allocator parameters; the value was checked to lie
            // within glibc's accepted range (at most 32 MiB on 64-bit).
            let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes as libc::c_int) };
            if ok == 1 {
                tracing::info!(
                    bytes,
                    "glibc malloc mmap threshold fixed for the RocksDB budget"
                );
            } else {
                tracing::warn!(bytes, "glibc refused the malloc mmap threshold");
            }
        }
        bytes
    });
    if first != bytes {
        tracing::debug!(
            first,
            asked = bytes,
            "malloc mmap threshold already set by an earlier budget; left as is"
        );
    }
}

/// Memory a RocksDB backend reports (RocksDB's properties), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// What the block cache holds; with a budget, the shared cache of all its backends.
    pub block_cache: u64,
    /// Of that, blocks in use by readers (not evictable).
    pub block_cache_pinned: u64,
    pub block_cache_capacity: u64,
    /// Memtables: with a budget, of all its backends (the write-buffer manager's count); without,
    /// of this database's states.
    pub memtables: u64,
}

fn concat_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}

/// What a TTL column family's compaction filter needs from the state's descriptor: its TTL and
/// kind. A database opened from disk (a restart or a restore) installs the filter before any
/// descriptor is registered; until one is, the slot is unknown and the filter keeps everything.
/// Registering sets it (and a descriptor with another TTL duration updates it, as Flink lets TTL
/// durations change across restores).
#[derive(Default)]
struct TtlSlot {
    /// Milliseconds; `u64::MAX` = not known yet.
    ttl_ms: std::sync::atomic::AtomicU64,
    /// 0 = not known yet, 1 = list, 2 = any other kind.
    kind: std::sync::atomic::AtomicU8,
}

impl TtlSlot {
    fn unknown() -> std::sync::Arc<Self> {
        let s = TtlSlot::default();
        s.ttl_ms
            .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        std::sync::Arc::new(s)
    }

    fn set(&self, meta: &StateMeta) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(t) = meta.ttl {
            self.kind
                .store(if meta.kind == StateKind::List { 1 } else { 2 }, Relaxed);
            self.ttl_ms.store(t.ttl_ms, Relaxed);
        }
    }
}

/// Column families of states with TTL are named apart (`ttlstate-`), so a database opened from
/// disk knows which ones get the TTL compaction filter before any descriptor arrives. A filter on
/// a state without TTL would not be harmless: RocksDB rewrites the bottommost level in a manual
/// compaction whenever a column family has a filter.
fn cf_name_for(meta: &StateMeta) -> String {
    if meta.ttl.is_some() {
        format!("ttlstate-{}", meta.name)
    } else {
        cf_name(&meta.name)
    }
}

/// Drops expired TTL values during compaction (Flink's `cleanupInRocksdbCompactFilter`), with the
/// system clock. A list loses its expired elements one by one and is dropped when none is left.
/// Appends are merge operands, which the filter never sees (the C API filters values only): a
/// compaction first merges them into a value, and the next one filters it.
fn ttl_filter(
    slot: std::sync::Arc<TtlSlot>,
) -> impl FnMut(u32, &[u8], &[u8]) -> rocksdb::compaction_filter::Decision + Send + 'static {
    use rocksdb::compaction_filter::Decision;
    use std::sync::atomic::Ordering::Relaxed;
    // The trimmed list handed back to RocksDB; reused across calls.
    let mut trimmed = Vec::new();
    move |_level, _key, value| {
        let (ttl_ms, kind) = (slot.ttl_ms.load(Relaxed), slot.kind.load(Relaxed));
        if ttl_ms == u64::MAX || kind == 0 {
            return Decision::Keep;
        }
        let now = crate::ttl::Clock::now_ms(&crate::ttl::SystemClock);
        let cfg = crate::ttl::TtlConfig {
            ttl_ms,
            ..crate::ttl::TtlConfig::new(std::time::Duration::ZERO)
        };
        let dead = |v: &[u8]| {
            crate::ttl::unwrap(v).is_some_and(|(stamp, _)| crate::ttl::expired(&cfg, stamp, now))
        };
        if kind != 1 {
            return if dead(value) {
                Decision::Remove
            } else {
                Decision::Keep
            };
        }
        // A list: expired elements go one by one, as Flink's list element filter does. What
        // cannot be decoded is kept (cleanup never drops what it cannot read).
        match crate::states::retain_elements(value, &mut trimmed, |e| !dead(e)) {
            Ok((0, total)) if total > 0 => Decision::Remove,
            Ok((kept, total)) if kept < total => {
                // SAFETY: RocksDB's C API copies the new value (`new_value->assign` in
                // c.cc's compaction filter wrapper) before the callback returns, and `trimmed`
                // is not touched again until the next call; the 'static the rocksdb crate asks
                // for is never relied on.
                let v: &'static [u8] =
                    unsafe { std::slice::from_raw_parts(trimmed.as_ptr(), trimmed.len()) };
                Decision::Change(v)
            }
            _ => Decision::Keep,
        }
    }
}

fn cf_name(state: &str) -> String {
    format!("state-{state}")
}

/// A RocksDB error by what the caller should do: damaged data is corruption, a busy or
/// interrupted call may be retried, a refused argument is the caller's, and the rest (I/O errors,
/// a full disk, a database that cannot open) makes the backend unavailable.
pub(crate) fn rocks_err(e: rocksdb::Error) -> StateError {
    use rocksdb::ErrorKind as K;
    let hint = if e.to_string().contains("Memory limit") {
        " (the memory budget's block cache is full of blocks in use by readers: raise the budget)"
    } else {
        ""
    };
    match e.kind() {
        K::Corruption => StateError::corrupt("rocksdb database", format!("{e}{hint}")),
        K::InvalidArgument | K::NotSupported => StateError::Invalid(format!("rocksdb: {e}{hint}")),
        K::Busy | K::TryAgain | K::TimedOut | K::Incomplete | K::MergeInProgress => {
            StateError::transient(format!("rocksdb{hint}"), e)
        }
        _ => StateError::unavailable(format!("rocksdb{hint}"), e),
    }
}

fn db_key(kg: u32, ck: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + ck.len());
    db_key_into(&mut k, kg, ck);
    k
}

/// [`db_key`] into a reused buffer.
fn db_key_into(out: &mut Vec<u8>, kg: u32, ck: &[u8]) {
    out.clear();
    out.extend_from_slice(&(kg as u16).to_be_bytes());
    out.extend_from_slice(ck);
}

impl RocksBackend {
    /// Opens (creating) a database at `path` for key groups `range`.
    pub fn open(path: &Path, range: KeyGroupRange, max_parallelism: u32) -> StateResult<Self> {
        Self::open_with(path, range, max_parallelism, None)
    }

    /// Opens with a memory budget shared with other backends (see [`SharedResources`]).
    pub fn open_with(
        path: &Path,
        range: KeyGroupRange,
        max_parallelism: u32,
        shared: Option<std::sync::Arc<SharedResources>>,
    ) -> StateResult<Self> {
        Self::open_tuned(path, range, max_parallelism, shared, RocksTuning::default())
    }

    /// Opens with Flink's predefined profile and configured keys applied ([`RocksTuning`]).
    pub fn open_tuned(
        path: &Path,
        range: KeyGroupRange,
        max_parallelism: u32,
        shared: Option<std::sync::Arc<SharedResources>>,
        tuning: RocksTuning,
    ) -> StateResult<Self> {
        Self::open_inner(path, range, max_parallelism, shared, tuning, false)
    }

    /// Opens an existing database read-only (a source to copy from: nothing on disk changes, no
    /// flush, no compaction); writes fail.
    pub fn open_read_only(
        path: &Path,
        range: KeyGroupRange,
        max_parallelism: u32,
    ) -> StateResult<Self> {
        Self::open_inner(
            path,
            range,
            max_parallelism,
            None,
            RocksTuning::default(),
            true,
        )
    }

    fn open_inner(
        path: &Path,
        range: KeyGroupRange,
        max_parallelism: u32,
        shared: Option<std::sync::Arc<SharedResources>>,
        tuning: RocksTuning,
        read_only: bool,
    ) -> StateResult<Self> {
        if max_parallelism > 1 << 16 {
            return Err(StateError::Invalid("max parallelism above 65536".into()));
        }
        let shared = match shared {
            Some(sh) => Some(sh),
            None => SharedResources::from_tuning(&tuning)?,
        };
        // With a budget the default column family shares its cache too, so the database's
        // cache properties report the shared cache.
        let mut opts = shared
            .as_ref()
            .map(|sh| sh.base.clone())
            .unwrap_or_default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        if let Some(sh) = &shared {
            opts.set_write_buffer_manager(&sh.write_buffers);
        }
        tuning.apply_db(&mut opts);
        if !read_only {
            remove_stale_views(path);
        }
        let cfs = DB::list_cf(&opts, path).unwrap_or_default();
        let mut ttl_slots = HashMap::new();
        let descriptors = cfs
            .iter()
            .filter(|c| *c != "default")
            .map(|c| {
                let mut o = cf_options(shared.as_deref(), &tuning)?;
                if c.starts_with("ttlstate-") {
                    let slot = TtlSlot::unknown();
                    o.set_compaction_filter("statefs-ttl", ttl_filter(slot.clone()));
                    ttl_slots.insert(c.clone(), slot);
                }
                Ok(ColumnFamilyDescriptor::new(c, o))
            })
            .collect::<StateResult<Vec<_>>>()?;
        let db = if read_only {
            DB::open_cf_descriptors_read_only(&opts, path, descriptors, false)
        } else {
            DB::open_cf_descriptors(&opts, path, descriptors)
        }
        .map_err(rocks_err)?;
        Ok(RocksBackend {
            preloader: std::sync::OnceLock::new(),
            write_behind: Default::default(),
            db: std::sync::Arc::new(db),
            read_ahead: Default::default(),
            path: path.to_path_buf(),
            range,
            max_parallelism,
            states: Vec::new(),
            by_name: HashMap::new(),
            _temp: None,
            uploaded: HashMap::new(),
            cf_opts: Vec::new(),
            shared,
            tuning,
            cf_names: Vec::new(),
            ttl_slots,
            write_opts: {
                let mut w = rocksdb::WriteOptions::default();
                w.disable_wal(true);
                w
            },
        })
    }

    /// A backend in a fresh temporary directory, removed on drop.
    pub fn temporary(range: KeyGroupRange, max_parallelism: u32) -> StateResult<Self> {
        let dir = tempfile::tempdir().map_err(crate::error::local_io("temporary dir"))?;
        let mut b = Self::open(dir.path(), range, max_parallelism)?;
        b._temp = Some(dir);
        Ok(b)
    }

    /// A temporary database (removed on drop) with `tuning`.
    pub fn temporary_tuned(
        range: KeyGroupRange,
        max_parallelism: u32,
        tuning: RocksTuning,
    ) -> StateResult<Self> {
        let dir = tempfile::tempdir().map_err(crate::error::local_io("temporary dir"))?;
        let mut b = Self::open_tuned(dir.path(), range, max_parallelism, None, tuning)?;
        b._temp = Some(dir);
        Ok(b)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// Flushes every memtable and compacts every state's column family fully.
    pub fn compact_all(&self) -> StateResult<()> {
        self.settle_writes()?;
        for name in &self.cf_names {
            let cf = self.db.cf_handle(name).expect("registered");
            self.db.flush_cf(cf).map_err(rocks_err)?;
            self.db.compact_range_cf::<&[u8], &[u8]>(cf, None, None);
        }
        Ok(())
    }

    /// Flushes the memtables and waits until no flush or compaction is pending or running: the
    /// background work a restore or a burst of writes left behind.
    pub fn settle(&self) -> StateResult<()> {
        self.wait_for_compact(true)
    }

    /// Waits until no flush or compaction is pending or running, leaving the memtables as they
    /// are: the background work of earlier writes, without changing what a checkpoint will flush.
    pub fn wait_for_background_work(&self) -> StateResult<()> {
        self.wait_for_compact(false)
    }

    fn wait_for_compact(&self, flush: bool) -> StateResult<()> {
        let mut o = rocksdb::WaitForCompactOptions::default();
        o.set_flush(flush);
        self.db.wait_for_compact(&o).map_err(rocks_err)
    }

    /// Deletes the key groups of `had` outside `keep` from every state (DeleteRange).
    pub fn clip_to(&self, keep: KeyGroupRange, had: KeyGroupRange) -> StateResult<()> {
        self.settle_writes()?;
        for name in &self.cf_names {
            let cf = self.db.cf_handle(name).expect("registered");
            if had.start < keep.start {
                self.db
                    .delete_range_cf_opt(
                        cf,
                        db_key(had.start, &[]),
                        db_key(keep.start, &[]),
                        &self.write_opts,
                    )
                    .map_err(rocks_err)?;
            }
            if had.end > keep.end {
                let upper = if had.end + 1 > u16::MAX as u32 {
                    vec![0xff; 3]
                } else {
                    db_key(had.end + 1, &[])
                };
                self.db
                    .delete_range_cf_opt(cf, db_key(keep.end + 1, &[]), upper, &self.write_opts)
                    .map_err(rocks_err)?;
            }
        }
        Ok(())
    }

    /// RocksDB's checkpoint of this database into `dir` (which must not exist): memtables
    /// flushed, SST files hard-linked, the small files copied.
    pub(crate) fn checkpoint_to(&self, dir: &Path) -> StateResult<()> {
        self.settle_writes()?;
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(|e| match rocks_err(e) {
                StateError::Unavailable { source, .. } => StateError::unavailable(
                    format!("rocksdb checkpoint into {}", dir.display()),
                    source,
                ),
                other => other,
            })
    }

    /// Opens a database restored from a checkpoint that held key groups `had`: adopts the
    /// states the checkpoint recorded and deletes what lies outside `range` (DeleteRange).
    pub(crate) fn open_restored(
        path: &Path,
        range: KeyGroupRange,
        max_parallelism: u32,
        shared: Option<std::sync::Arc<SharedResources>>,
        tuning: RocksTuning,
        states: Vec<StateMeta>,
        had: KeyGroupRange,
    ) -> StateResult<Self> {
        let mut b = Self::open_tuned(path, range, max_parallelism, shared, tuning)?;
        for s in states {
            b.adopt(s)?;
        }
        b.clip_to(range, had)?;
        Ok(b)
    }

    /// Memory RocksDB holds for this backend (with a budget: for all backends sharing it).
    pub fn memory_usage(&self) -> StateResult<MemoryUsage> {
        let prop = |cf: Option<&str>, name: &str| -> StateResult<u64> {
            let v = match cf.and_then(|c| self.db.cf_handle(c)) {
                Some(h) => self.db.property_int_value_cf(h, name),
                None => self.db.property_int_value(name),
            };
            v.map_err(rocks_err)?
                .ok_or_else(|| StateError::Invalid(format!("rocksdb property {name} missing")))
        };
        let cache = |cf: Option<&str>| -> StateResult<[u64; 3]> {
            Ok([
                prop(cf, "rocksdb.block-cache-usage")?,
                prop(cf, "rocksdb.block-cache-pinned-usage")?,
                prop(cf, "rocksdb.block-cache-capacity")?,
            ])
        };
        let mut u = MemoryUsage::default();
        if let Some(sh) = &self.shared {
            // One cache for every column family, the default one included.
            [u.block_cache, u.block_cache_pinned, u.block_cache_capacity] = cache(None)?;
            u.memtables = sh.write_buffers.get_usage() as u64;
        } else {
            // Each column family has its own cache and memtables; the default one holds no state.
            for name in &self.cf_names {
                let [used, pinned, cap] = cache(Some(name))?;
                u.block_cache += used;
                u.block_cache_pinned += pinned;
                u.block_cache_capacity += cap;
                u.memtables += prop(Some(name), "rocksdb.cur-size-all-mem-tables")?;
            }
        }
        Ok(u)
    }

    /// Flushes every state's memtable.
    pub fn flush(&self) -> StateResult<()> {
        self.settle_writes()?;
        for name in &self.cf_names {
            self.db
                .flush_cf(self.db.cf_handle(name).expect("registered"))
                .map_err(rocks_err)?;
        }
        Ok(())
    }

    /// Keeps RocksDB from starting to delete obsolete files until the guard drops (RocksDB counts
    /// pauses, so its own Checkpoint inside one is fine). A purge already under way still
    /// finishes: files no version needs may vanish meanwhile (see `forst/live.rs`).
    pub(crate) fn pause_file_deletions(&self) -> StateResult<DeletionsPaused<'_>> {
        self.db.disable_file_deletions().map_err(rocks_err)?;
        Ok(DeletionsPaused(&self.db))
    }

    /// Level-0 files over all states (RocksDB's `num-files-at-level0`), for checkpoint traces:
    /// a flush waits while one more L0 file would slow writes down.
    pub(crate) fn level0_files(&self) -> u64 {
        self.cf_names
            .iter()
            .filter_map(|n| self.db.cf_handle(n))
            .filter_map(|h| {
                self.db
                    .property_int_value_cf(h, "rocksdb.num-files-at-level0")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    pub(crate) fn uploaded_ssts(&self) -> &HashMap<String, UploadedSst> {
        &self.uploaded
    }

    pub(crate) fn uploaded_ssts_mut(&mut self) -> &mut HashMap<String, UploadedSst> {
        &mut self.uploaded
    }

    /// The database and a state's column family, for tests that drive RocksDB directly.
    #[cfg(test)]
    pub(crate) fn raw(&self, state: &str) -> (&DB, &rocksdb::ColumnFamily) {
        (&self.db, self.cf(self.by_name[state]))
    }

    /// The database, to create or drop a column family: preload jobs are waited for first, so no
    /// other reference is held (see `rocks/preload.rs`).
    fn db_mut(&mut self) -> &mut DB {
        if let Some(p) = self.preloader.get() {
            p.wait_idle();
        }
        let db = self.db.clone();
        if let Err(e) = self
            .write_behind
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .pause(&db)
        {
            // Reported again by the next write, read of a pending entry or settle.
            tracing::warn!(error = %e, "rocksdb: writes applied behind failed");
        }
        drop(db);
        std::sync::Arc::get_mut(&mut self.db).expect("no preload job runs")
    }

    fn behind(&self) -> std::sync::MutexGuard<'_, write_behind::WriteBehind> {
        self.write_behind.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every write applied behind is in the database: before any read other than a
    /// point read (see `rocks/write_behind.rs`).
    fn settle_writes(&self) -> StateResult<()> {
        let mut wb = self.behind();
        if wb.is_on() {
            wb.settle(&self.db)
        } else {
            Ok(())
        }
    }

    /// A write: into the write-behind batch while on, else straight to RocksDB.
    fn write(&self, s: StateId, key: Vec<u8>, w: write_behind::Write<'_>) -> StateResult<()> {
        use write_behind::Write;
        self.read_ahead.forget(s, &key);
        let mut wb = self.behind();
        if wb.is_on() {
            return wb.write(&self.db, self.cf(s), s, key, w);
        }
        drop(wb);
        let (cf, o) = (self.cf(s), &self.write_opts);
        match w {
            Write::Put(v) => self.db.put_cf_opt(cf, key, v, o),
            Write::Delete => self.db.delete_cf_opt(cf, key, o),
            Write::Merge(v) => self.db.merge_cf_opt(cf, key, v, o),
        }
        .map_err(rocks_err)
    }

    /// A point read's answer from writes not yet applied, if it has one.
    fn written(&self, s: StateId, key: &[u8]) -> StateResult<Option<Option<Vec<u8>>>> {
        let mut wb = self.behind();
        if !wb.is_on() {
            return Ok(None);
        }
        Ok(match wb.lookup(&self.db, s, key)? {
            write_behind::Lookup::Written(v) => Some(v),
            write_behind::Lookup::InDatabase => None,
        })
    }

    fn cf(&self, s: StateId) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(&self.cf_names[s])
            .expect("registered states have a column family")
    }

    fn check(&self, kg: u32) -> StateResult<()> {
        if self.range.contains(kg) {
            Ok(())
        } else {
            Err(StateError::KeyOutOfRange {
                key_group: kg,
                range: self.range,
            })
        }
    }

    fn insert_state(&mut self, meta: StateMeta) -> StateResult<StateId> {
        let name = cf_name_for(&meta);
        if meta.ttl.is_some() {
            self.move_legacy_ttl_family(&meta.name, &name)?;
        }
        if self.db.cf_handle(&name).is_none() {
            self.create_family(&name, meta.ttl.is_some())?;
        }
        if let Some(slot) = self.ttl_slots.get(&name) {
            slot.set(&meta);
        }
        let id = self.states.len();
        self.by_name.insert(meta.name.clone(), id);
        self.states.push(meta);
        self.cf_names.push(name);
        Ok(id)
    }

    /// Creates column family `name`, with the TTL compaction filter (TTL still unknown) if `ttl`.
    fn create_family(&mut self, name: &str, ttl: bool) -> StateResult<()> {
        let mut opts = cf_options(self.shared.as_deref(), &self.tuning)?;
        if ttl {
            let slot = TtlSlot::unknown();
            opts.set_compaction_filter("statefs-ttl", ttl_filter(slot.clone()));
            self.ttl_slots.insert(name.to_string(), slot);
        }
        self.db_mut().create_cf(name, &opts).map_err(rocks_err)?;
        self.cf_opts.push(opts);
        Ok(())
    }

    /// A database written before TTL column families were named apart holds a TTL state under the
    /// plain name, where no compaction filter reaches it after a reopen. Its entries move to the
    /// `ttlstate-` family: copied, flushed (writes skip the WAL), and only then is the old family
    /// dropped. So both families present means a move was cut short: the copy is dropped and the
    /// move redone from the old family, which is complete.
    fn move_legacy_ttl_family(&mut self, state: &str, ttl_name: &str) -> StateResult<()> {
        let old = cf_name(state);
        if self.db.cf_handle(&old).is_none() {
            return Ok(());
        }
        if self.db.cf_handle(ttl_name).is_some() {
            tracing::warn!(state, "an interrupted move of a TTL state is redone");
            self.db_mut().drop_cf(ttl_name).map_err(rocks_err)?;
            self.ttl_slots.remove(ttl_name);
        }
        self.create_family(ttl_name, true)?;
        let (mut entries, mut batch) = (0u64, rocksdb::WriteBatch::default());
        {
            let from = self.db.cf_handle(&old).expect("checked above");
            let to = self.db.cf_handle(ttl_name).expect("created above");
            for item in self.db.iterator_cf(from, IteratorMode::Start) {
                let (k, v) = item.map_err(rocks_err)?;
                batch.put_cf(to, k, v);
                entries += 1;
                if batch.size_in_bytes() >= 4 << 20 {
                    let full = std::mem::take(&mut batch);
                    self.db
                        .write_opt(full, &self.write_opts)
                        .map_err(rocks_err)?;
                }
            }
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(rocks_err)?;
            self.db.flush_cf(to).map_err(rocks_err)?;
        }
        self.db_mut().drop_cf(&old).map_err(rocks_err)?;
        tracing::info!(state, entries, "moved a TTL state to its own column family");
        Ok(())
    }

    /// Entries of key group `kg` whose composite key starts with `prefix`, after `after`.
    fn scan(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check(kg)?;
        self.settle_writes()?;
        let start = db_key(kg, after.unwrap_or(prefix));
        let group_prefix = db_key(kg, prefix);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(s), IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item.map_err(rocks_err)?;
            if !k.starts_with(&group_prefix) {
                break;
            }
            if after.is_some_and(|a| &k[2..] == a) {
                continue;
            }
            out.push((k[2..].to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

impl std::fmt::Debug for RocksBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::backend::fmt_backend(self, f)
    }
}

impl StateBackend for RocksBackend {
    fn name(&self) -> &'static str {
        "rocksdb"
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn register(&mut self, meta: StateMeta) -> StateResult<StateId> {
        match self.by_name.get(&meta.name).copied() {
            Some(id) => {
                crate::backend::reregister(&mut self.states[id], meta)?;
                if let Some(slot) = self.ttl_slots.get(&self.cf_names[id]) {
                    slot.set(&self.states[id]);
                }
                Ok(id)
            }
            None => self.insert_state(meta),
        }
    }

    fn meta(&self, id: StateId) -> &StateMeta {
        &self.states[id]
    }

    fn states(&self) -> Vec<StateMeta> {
        self.states.clone()
    }

    fn get(&self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<Option<Vec<u8>>> {
        self.check(kg)?;
        let key = db_key(kg, ck);
        if let Some(v) = self.read_ahead.take(s, &key) {
            return Ok(v);
        }
        if let Some(v) = self.written(s, &key)? {
            return Ok(v);
        }
        self.db.get_cf(self.cf(s), key).map_err(rocks_err)
    }

    fn get_with(
        &self,
        s: StateId,
        kg: u32,
        ck: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> StateResult<bool> {
        self.check(kg)?;
        let key = db_key(kg, ck);
        if let Some(v) = match self.read_ahead.take(s, &key) {
            Some(v) => Some(v),
            None => self.written(s, &key)?,
        } {
            if let Some(v) = &v {
                f(v);
            }
            return Ok(v.is_some());
        }
        match self.db.get_pinned_cf(self.cf(s), key).map_err(rocks_err)? {
            Some(v) => {
                f(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn put(&mut self, s: StateId, kg: u32, ck: &[u8], value: &[u8]) -> StateResult<()> {
        self.check(kg)?;
        self.write(s, db_key(kg, ck), write_behind::Write::Put(value))
    }

    fn append(&mut self, s: StateId, kg: u32, ck: &[u8], bytes: &[u8]) -> StateResult<()> {
        self.check(kg)?;
        self.write(s, db_key(kg, ck), write_behind::Write::Merge(bytes))
    }

    fn scan_prefix_with(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> StateResult<()> {
        self.check(kg)?;
        self.settle_writes()?;
        let start = db_key(kg, prefix);
        let mut it = self.db.raw_iterator_cf(self.cf(s));
        it.seek(&start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&start) || !f(&k[start.len()..], v) {
                break;
            }
            it.next();
        }
        it.status().map_err(rocks_err)
    }

    fn delete(&mut self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<()> {
        self.check(kg)?;
        self.write(s, db_key(kg, ck), write_behind::Write::Delete)
    }

    fn scan_prefix(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(s, kg, prefix, None, usize::MAX)
    }

    fn delete_prefix(&mut self, s: StateId, kg: u32, prefix: &[u8]) -> StateResult<()> {
        self.settle_writes()?;
        self.read_ahead.forget_prefix(s, &db_key(kg, prefix));
        let keys = self.scan(s, kg, prefix, None, usize::MAX)?;
        let mut batch = WriteBatch::default();
        for (k, _) in keys {
            batch.delete_cf(self.cf(s), db_key(kg, &k));
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(rocks_err)
    }

    fn scan_after(
        &self,
        s: StateId,
        kg: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(s, kg, &[], after, limit)
    }

    fn entries(&self, s: StateId) -> StateResult<Vec<Entry>> {
        self.settle_writes()?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(s), IteratorMode::Start) {
            let (k, v) = item.map_err(rocks_err)?;
            let kg = u16::from_be_bytes([k[0], k[1]]) as u32;
            if self.range.contains(kg) {
                out.push((kg, k[2..].to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    fn snapshot_view(&self) -> StateResult<Box<dyn SnapshotView>> {
        // RocksDB's checkpoint (memtables flushed, files hard-linked: cheap, and on statefs
        // metadata only) beside the database, opened read-only: a frozen version that writers do
        // not block on, read one key group at a time.
        let dir = view_dir(&self.path);
        // Armed first: a checkpoint that fails half-way leaves nothing behind either.
        let guard = RemoveOnDrop(dir.clone());
        self.checkpoint_to(&dir)?;
        let db = RocksBackend::open_read_only(&dir, self.range, self.max_parallelism)?;
        Ok(Box::new(CheckpointView {
            db,
            cf_names: self.cf_names.clone(),
            states: self.states.clone(),
            _dir: guard,
        }))
    }

    fn load(&mut self, s: StateId, entries: Vec<Entry>) -> StateResult<()> {
        self.settle_writes()?;
        self.read_ahead.forget_prefix(s, &[]);
        let mut batch = WriteBatch::default();
        for (kg, k, v) in entries {
            self.check(kg)?;
            batch.put_cf(self.cf(s), db_key(kg, &k), v);
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(rocks_err)
    }

    fn adopt(&mut self, meta: StateMeta) -> StateResult<StateId> {
        match self.by_name.get(&meta.name).copied() {
            Some(id) => crate::backend::readopt(&self.states[id], &meta).map(|_| id),
            None => self.insert_state(meta),
        }
    }

    fn reads_ahead(&self) -> bool {
        true
    }

    fn write_behind(&mut self, on: bool) -> StateResult<()> {
        let db = self.db.clone();
        let wb = self
            .write_behind
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        if on { wb.start() } else { wb.stop(&db) }
    }

    fn read_now(&self, (s, kg, ck): &crate::backend::ReadKey) -> bool {
        if self.check(*kg).is_err() || *s >= self.cf_names.len() {
            return true; // the read itself reports it
        }
        let key = db_key(*kg, ck);
        if self.behind().is_pending(*s, &key) {
            return true; // the read is answered from the write not yet applied
        }
        // Memtables and the block cache only: `Incomplete` when the entry needs a file read.
        let mut memory_only = rocksdb::ReadOptions::default();
        memory_only.set_read_tier(rocksdb::ReadTier::BlockCache);
        match self.db.get_cf_opt(self.cf(*s), &key, &memory_only) {
            Ok(value) => {
                self.read_ahead.put_now(*s, key, value);
                true
            }
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => false,
            Err(_) => true, // the read itself reports it
        }
    }

    fn preload(&self, keys: Vec<crate::backend::ReadKey>) -> crate::backend::Preload {
        let threads = self
            .tuning
            .read_threads
            .unwrap_or(crate::rocks_options::DEFAULT_READ_THREADS);
        self.preloader
            .get_or_init(|| preload::Preloader::new(threads))
            .preload(
                &self.db,
                std::sync::Arc::new(self.cf_names.clone()),
                &self.read_ahead,
                keys,
                &|s, key| self.behind().is_pending(s, key),
            )
    }

    fn timer_cache_size(&self) -> Option<usize> {
        Some(
            self.tuning
                .timer_cache_size
                .unwrap_or(crate::timers::DEFAULT_TIMER_CACHE_SIZE),
        )
    }
}

/// Snapshot views, the scratch files of an ingesting restore and checkpoints' hard-link
/// directories (rocksdb's and forst's) live inside the database directory, in
/// `.statefs-view-<pid>-<uuid>` directories removed after use; RocksDB ignores names it did not
/// make. Inside, not beside: hard links need the same filesystem, and a restored
/// ForSt database is the root of its mount, whose parent is another filesystem (RocksDB then falls
/// back to copying every SST, downloading them all on statefs). One left behind by a process that
/// died is removed when the database opens next; views of live processes (a view may outlive the
/// backend that made it) are left alone.
const VIEW_PREFIX: &str = ".statefs-view-";

/// Resumes RocksDB's file deletions when dropped (see [`RocksBackend::pause_file_deletions`]).
pub(crate) struct DeletionsPaused<'a>(&'a DB);

impl Drop for DeletionsPaused<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.enable_file_deletions() {
            // Obsolete files then stay until the database reopens; nothing is lost.
            tracing::warn!(error = %e, "rocksdb: resuming file deletions failed");
        }
    }
}

pub(crate) fn view_dir(db: &Path) -> PathBuf {
    db.join(format!(
        "{VIEW_PREFIX}{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Removes views of the database at `db` that a dead process left (they pin its files).
fn remove_stale_views(db: &Path) {
    let Ok(dir) = std::fs::read_dir(db) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(VIEW_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl Drop for RocksBackend {
    /// Writes still applied behind go in before the database closes (the preload threads end
    /// after, their jobs holding no write).
    fn drop(&mut self) {
        let db = self.db.clone();
        let wb = self
            .write_behind
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        if let Err(e) = wb.stop(&db) {
            tracing::error!(error = %e, "rocksdb: writes applied behind failed before the close");
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A read-only database opened on a RocksDB checkpoint. Field order matters: the database closes
/// before its directory is removed.
struct CheckpointView {
    db: RocksBackend,
    cf_names: Vec<String>,
    states: Vec<StateMeta>,
    _dir: RemoveOnDrop,
}

impl SnapshotView for CheckpointView {
    fn states(&self) -> Vec<StateMeta> {
        self.states.clone()
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.db.range
    }
    fn max_parallelism(&self) -> u32 {
        self.db.max_parallelism
    }
    fn key_group_entries(&self, s: StateId, kg: u32) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf =
            self.db.db.cf_handle(&self.cf_names[s]).ok_or_else(|| {
                StateError::corrupt("snapshot view", "a column family is missing")
            })?;
        let prefix = db_key(kg, &[]);
        let mut it = self.db.db.raw_iterator_cf(cf);
        it.seek(&prefix);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            out.push((k[2..].to_vec(), v.to_vec()));
            it.next();
        }
        it.status().map_err(rocks_err)?;
        Ok(out)
    }
}
