//! ForSt mode: the RocksDB backend with its database directory on a statefs mount, so its SST files
//! live in the object store and a checkpoint copies no SST byte.
//!
//! Checkpoint = a statefs publish naming the live database's files: its SSTs (referenced, not
//! copied), a complete prefix of its MANIFEST, CURRENT and OPTIONS (see `live`). Should statefs not
//! understand the directory, RocksDB's Checkpoint on the mount (hard links) is published instead.
//! The checkpoint handle is the statefs checkpoint id. Restore = a statefs
//! mount restored from that id (lazy: SSTs are fetched on first read) and RocksDB opened on it.
//! Ownership stays unambiguous: the mount deletes only objects no checkpoint names; statefs GC
//! deletes the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use statefs::MountHandle;
use statefs::config::RestoreFrom;
use statefs::core::Published;

use crate::backend::{Entry, SnapshotView, StateBackend, StateId, StateMeta};
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;
use crate::rocks::{RocksBackend, SharedResources};
use crate::rocks_options::RocksTuning;

mod job;
mod live;

pub use job::ForstHome;
/// A statefs mount's configuration: where a ForSt backend keeps its files.
pub use statefs::MountConfig;

const STATES_FILE: &str = "STATEFS-STATES.json";

/// What a ForSt checkpoint records beside the database files.
#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointMeta {
    range: KeyGroupRange,
    max_parallelism: u32,
    states: Vec<StateMeta>,
}

/// A RocksDB backend on a statefs mount. Field order matters: the database closes before the
/// mount goes away.
pub struct ForstBackend {
    rocks: RocksBackend,
    mount: MountHandle,
    db_dir: PathBuf,
    /// Removes a fallback checkpoint's link directory off the checkpoint's critical path (on the
    /// mount, each unlink is a journaled metadata operation: up to ~120 ms measured). Joined before
    /// the next checkpoint and before the backend closes.
    link_cleanup: Option<std::thread::JoinHandle<()>>,
    /// Checkpoints published from the live directory, and from the fallback RocksDB Checkpoint.
    from_live_dir: u64,
    from_links: u64,
    /// statefs checkpoints this backend published for job checkpoints (job checkpoint id,
    /// statefs id), oldest first, until dropped (see `job`).
    published: Vec<(u64, String)>,
    /// The release of subsumed statefs checkpoints the last checkpoint started (see `job`).
    release: Option<std::thread::JoinHandle<Vec<(u64, String)>>>,
    /// Dropped last: e.g. the temporary directories a test mounted from.
    _keep: Option<Box<dyn std::any::Any + Send>>,
}

/// A failure of the statefs mount or of local files: the backend cannot go on without them.
fn fs_err(what: &str, e: impl Into<crate::error::Cause>) -> StateError {
    StateError::unavailable(what, e)
}

impl ForstBackend {
    /// Mounts statefs with `config` on `mountpoint` and opens the database in `<mountpoint>/db`.
    pub fn open(
        config: &MountConfig,
        mountpoint: &Path,
        range: KeyGroupRange,
        max_parallelism: u32,
    ) -> StateResult<Self> {
        Self::open_tuned(
            config,
            mountpoint,
            range,
            max_parallelism,
            None,
            RocksTuning::default(),
        )
    }

    /// [`ForstBackend::open`] with a shared memory budget and tuning keys, as
    /// [`RocksBackend::open_tuned`].
    pub fn open_tuned(
        config: &MountConfig,
        mountpoint: &Path,
        range: KeyGroupRange,
        max_parallelism: u32,
        shared: Option<Arc<SharedResources>>,
        tuning: RocksTuning,
    ) -> StateResult<Self> {
        let mount =
            MountHandle::mount(config, mountpoint).map_err(|e| fs_err("statefs mount", e))?;
        Self::open_mounted(mount, range, max_parallelism, shared, tuning)
    }

    /// [`ForstBackend::open_tuned`] on a mount made by the caller (for example over a store
    /// behind its own layers: `MountHandle::mount_with_remote`).
    pub fn open_mounted(
        mount: MountHandle,
        range: KeyGroupRange,
        max_parallelism: u32,
        shared: Option<Arc<SharedResources>>,
        tuning: RocksTuning,
    ) -> StateResult<Self> {
        let db_dir = mount.mountpoint().join("db");
        let rocks = RocksBackend::open_tuned(
            &db_dir,
            range,
            max_parallelism,
            shared,
            forst_defaults(tuning),
        )?;
        Ok(Self::assemble(rocks, mount, db_dir))
    }

    /// Mounts `config` restored from statefs checkpoint `id` (a fresh local dir) and opens the
    /// database found there, with the state metadata the checkpoint recorded.
    pub fn restore_published(
        config: &MountConfig,
        mountpoint: &Path,
        id: &str,
        range: KeyGroupRange,
        max_parallelism: u32,
    ) -> StateResult<Self> {
        Self::restore_published_tuned(
            config,
            mountpoint,
            id,
            range,
            max_parallelism,
            None,
            RocksTuning::default(),
        )
    }

    /// [`ForstBackend::restore_published`] with a shared memory budget and tuning keys.
    pub fn restore_published_tuned(
        config: &MountConfig,
        mountpoint: &Path,
        id: &str,
        range: KeyGroupRange,
        max_parallelism: u32,
        shared: Option<Arc<SharedResources>>,
        tuning: RocksTuning,
    ) -> StateResult<Self> {
        let (mount, db_dir, meta) = mount_restored(config, mountpoint, id, max_parallelism)?;
        if meta.range.intersect(&range) != Some(range) {
            return Err(StateError::Invalid(format!(
                "checkpoint {id} holds key groups {:?}, not all of {range:?}: restore from every \
                 checkpoint that holds them with ForstBackend::restore_published_merged",
                meta.range
            )));
        }
        // Rescaling out clips the key groups another subtask takes over (their objects stay with
        // the checkpoint, which statefs GC manages).
        let rocks = RocksBackend::open_restored(
            &db_dir,
            range,
            max_parallelism,
            shared,
            forst_defaults(tuning),
            meta.states,
            meta.range,
        )?;
        Ok(Self::assemble(rocks, mount, db_dir))
    }

    /// Restores key groups `range` from several ForSt checkpoints, as after scaling in (each was
    /// one subtask's). The first is mounted as this backend's own, lazily as in
    /// [`ForstBackend::restore_published`], and clipped to `range`. Each other one is mounted aside (local
    /// and cache dirs in a scratch directory beside `config.local_dir`, removed afterwards), its
    /// database opened read-only, and its entries in `range` copied in; then it is unmounted.
    /// Together the checkpoints must hold every key group of `range`.
    ///
    /// The merge reads every entry of the other checkpoints (downloading their SSTs through the
    /// scratch mount) and, by default, writes them into new SSTs that are ingested (uploaded once,
    /// linked into the database); only the first checkpoint's SSTs are reused as they are.
    pub fn restore_published_merged(
        config: &MountConfig,
        mountpoint: &Path,
        ids: &[&str],
        range: KeyGroupRange,
        max_parallelism: u32,
    ) -> StateResult<Self> {
        Self::restore_published_merged_tuned(
            config,
            mountpoint,
            ids,
            range,
            max_parallelism,
            None,
            RocksTuning::default(),
        )
    }

    /// [`ForstBackend::restore_published_merged`] with a shared memory budget and tuning keys
    /// (`use-ingest-db-restore` chooses how the other checkpoints' entries come in).
    pub fn restore_published_merged_tuned(
        config: &MountConfig,
        mountpoint: &Path,
        ids: &[&str],
        range: KeyGroupRange,
        max_parallelism: u32,
        shared: Option<Arc<SharedResources>>,
        tuning: RocksTuning,
    ) -> StateResult<Self> {
        let Some((first, rest)) = ids.split_first() else {
            return Err(StateError::Invalid("no checkpoint to restore from".into()));
        };
        let (mount, db_dir, meta) = mount_restored(config, mountpoint, first, max_parallelism)?;
        let mut covered = vec![meta.range];
        let mut rocks = RocksBackend::open_restored(
            &db_dir,
            range,
            max_parallelism,
            shared,
            forst_defaults(tuning),
            meta.states,
            meta.range,
        )?;
        let scratch_parent = config
            .local_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        for id in rest {
            let scratch = tempfile::Builder::new()
                .prefix(".statefs-merge-")
                .tempdir_in(&scratch_parent)
                .map_err(|e| fs_err("merge scratch directory", e))?;
            let mut c = config.clone();
            c.local_dir = scratch.path().join("local");
            c.cache_dir = scratch.path().join("cache");
            c.metrics_addr = "127.0.0.1:0".into();
            let mnt = scratch.path().join("mnt");
            std::fs::create_dir_all(&mnt).map_err(|e| fs_err("merge scratch mount point", e))?;
            let (source_mount, source_dir, source_meta) =
                mount_restored(&c, &mnt, id, max_parallelism)?;
            if source_meta.range.intersect(&range).is_none() {
                return Err(StateError::Invalid(format!(
                    "checkpoint {id} holds key groups {:?}, none of {range:?}",
                    source_meta.range
                )));
            }
            let mut source =
                RocksBackend::open_read_only(&source_dir, source_meta.range, max_parallelism)?;
            rocks.merge_in_range_from(&mut source, &source_meta.states, range)?;
            // The database closes before its mount goes away.
            drop(source);
            drop(source_mount);
            covered.push(source_meta.range);
        }
        if let Some(kg) = range
            .iter()
            .find(|kg| !covered.iter().any(|r| r.contains(*kg)))
        {
            return Err(StateError::Invalid(format!(
                "checkpoints {ids:?} do not hold key group {kg} of {range:?}"
            )));
        }
        Ok(Self::assemble(rocks, mount, db_dir))
    }

    /// Keeps `guard` alive until after the database is closed and the mount is gone.
    pub fn keeping(mut self, guard: Box<dyn std::any::Any + Send>) -> Self {
        self._keep = Some(guard);
        self
    }

    pub fn mount(&self) -> &MountHandle {
        &self.mount
    }

    pub fn rocks(&self) -> &RocksBackend {
        &self.rocks
    }

    /// Publishes a statefs checkpoint of the database, outside any job's checkpoint storage (the
    /// [`Checkpointed`](crate::Checkpointed) interface publishes one and records it in the job's
    /// storage): no SST byte is copied. Older statefs checkpoints of this mount beyond `retained`
    /// (0 keeps all) are dropped by the mount's retention worker after this returns, as Flink
    /// discards subsumed checkpoints off the checkpoint's path; they are gone by unmount at the
    /// latest (`MountHandle::checkpoint_with`). [`ForstBackend::restore_published`] opens one.
    ///
    /// The checkpoint names the live directory's files (module `live`); if statefs does not understand
    /// what it finds there, it publishes a RocksDB Checkpoint made on the mount instead.
    pub fn publish(&mut self, retained: usize) -> StateResult<Published> {
        let _span = tracing::info_span!("forst_checkpoint").entered();
        let start = std::time::Instant::now();
        self.join_link_cleanup();
        let l0_files = self.rocks.level0_files();
        self.rocks.flush()?;
        let flushed = start.elapsed();
        let states = Bytes::from(
            serde_json::to_vec(&CheckpointMeta {
                range: self.rocks.key_group_range(),
                max_parallelism: self.rocks.max_parallelism(),
                states: self.rocks.states(),
            })
            .expect("state metadata serializes"),
        );
        let paused = self.rocks.pause_file_deletions()?;
        let files =
            live::checkpoint_files(&self.db_dir, vec![(STATES_FILE.into(), states.clone())]);
        let assembled = start.elapsed();
        let (published, linked_dir) = match files {
            Ok(files) => {
                self.from_live_dir += 1;
                let p = self.mount.checkpoint_files(files, retained, true);
                (p.map_err(|e| fs_err("statefs checkpoint", e)), None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing a RocksDB checkpoint made on the mount instead of the live directory");
                self.from_links += 1;
                let (p, dir) = self.publish_linked(&states, retained);
                (p, Some(dir))
            }
        };
        drop(paused);
        tracing::info!(
            l0_files_before = l0_files,
            live = linked_dir.is_none(),
            flush_ms = flushed.as_millis() as u64,
            assemble_ms = (assembled - flushed).as_millis() as u64,
            publish_ms = (start.elapsed() - assembled).as_millis() as u64,
            ok = published.is_ok(),
            "forst checkpoint"
        );
        if let Some(dir) = linked_dir {
            // The directory was only names (hard links and small copies); the published
            // checkpoint holds what it needs, and a failed one needs nothing. RocksDB links into
            // `<dir>.tmp` first.
            self.link_cleanup = Some(std::thread::spawn(move || {
                let _ = std::fs::remove_dir_all(&dir);
                let mut tmp = dir.into_os_string();
                tmp.push(".tmp");
                let _ = std::fs::remove_dir_all(tmp);
            }));
        }
        published
    }

    /// Checkpoints published so far from the live directory, and from a RocksDB Checkpoint (the
    /// fallback), in that order.
    pub fn checkpoint_sources(&self) -> (u64, u64) {
        (self.from_live_dir, self.from_links)
    }

    /// Publishes a RocksDB Checkpoint made in a directory of the mount; returns the directory,
    /// which the caller removes.
    fn publish_linked(&self, states: &[u8], retained: usize) -> (StateResult<Published>, PathBuf) {
        // Inside the database directory, like snapshot views: one a crashed process left (its hard
        // links would keep the SSTs' objects forever) is removed when the database opens next.
        let dir = crate::rocks::view_dir(&self.db_dir);
        let published = self
            .rocks
            .checkpoint_to(&dir)
            .and_then(|()| {
                std::fs::write(dir.join(STATES_FILE), states)
                    .map_err(|e| fs_err("state metadata", e))
            })
            .and_then(|()| {
                self.mount
                    .checkpoint_with(&dir, retained, true)
                    .map_err(|e| fs_err("statefs checkpoint", e))
            });
        (published, dir)
    }

    fn assemble(rocks: RocksBackend, mount: MountHandle, db_dir: PathBuf) -> Self {
        ForstBackend {
            rocks,
            mount,
            db_dir,
            link_cleanup: None,
            from_live_dir: 0,
            from_links: 0,
            published: Vec::new(),
            release: None,
            _keep: None,
        }
    }

    fn join_link_cleanup(&mut self) {
        if let Some(h) = self.link_cleanup.take() {
            let _ = h.join();
        }
    }

    pub fn db_dir(&self) -> &Path {
        &self.db_dir
    }
}

impl Drop for ForstBackend {
    /// The link directory and the release of subsumed checkpoints finish before the database
    /// and the mount go.
    fn drop(&mut self) {
        self.join_link_cleanup();
        self.join_release();
    }
}

/// Background jobs of a ForSt database unless `thread.num` is configured. A compaction on statefs
/// uploads each output before it finishes, so it spends much of its time waiting on the store;
/// with RocksDB's default two jobs, L0 reached the slowdown trigger after bursts of flushes and a
/// checkpoint's flush waited seconds for it to drain. Four jobs overlap those uploads (measured in
/// docs/BENCHMARKS.md).
const FORST_BACKGROUND_JOBS: i32 = 4;

fn forst_defaults(mut tuning: RocksTuning) -> RocksTuning {
    tuning.thread_num = tuning.thread_num.or(Some(FORST_BACKGROUND_JOBS));
    tuning
}

/// Mounts `config` restored from statefs checkpoint `id` (no claim) on `mountpoint` and reads the
/// state metadata the ForSt checkpoint recorded; the database is the mount's root.
fn mount_restored(
    config: &MountConfig,
    mountpoint: &Path,
    id: &str,
    max_parallelism: u32,
) -> StateResult<(MountHandle, PathBuf, CheckpointMeta)> {
    let mut c = config.clone();
    c.restore = Some(RestoreFrom {
        id: id.to_string(),
        claim: false,
    });
    let mount = MountHandle::mount(&c, mountpoint).map_err(|e| fs_err("statefs restore", e))?;
    let db_dir = mount.mountpoint().to_path_buf();
    let meta: CheckpointMeta = std::fs::read(db_dir.join(STATES_FILE))
        .map_err(|e| fs_err("checkpoint state metadata", e))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| StateError::corrupt("forst checkpoint", e.to_string()))
        })?;
    if meta.max_parallelism != max_parallelism {
        return Err(StateError::Invalid(format!(
            "checkpoint {id} has max parallelism {}, not {max_parallelism}",
            meta.max_parallelism
        )));
    }
    Ok((mount, db_dir, meta))
}

impl std::fmt::Debug for ForstBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::backend::fmt_backend(self, f)
    }
}

impl StateBackend for ForstBackend {
    fn name(&self) -> &'static str {
        "forst"
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.rocks.key_group_range()
    }
    fn max_parallelism(&self) -> u32 {
        self.rocks.max_parallelism()
    }
    fn register(&mut self, meta: StateMeta) -> StateResult<StateId> {
        self.rocks.register(meta)
    }
    fn meta(&self, id: StateId) -> &StateMeta {
        self.rocks.meta(id)
    }
    fn states(&self) -> Vec<StateMeta> {
        self.rocks.states()
    }
    fn get(&self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<Option<Vec<u8>>> {
        self.rocks.get(s, kg, ck)
    }
    fn get_with(
        &self,
        s: StateId,
        kg: u32,
        ck: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> StateResult<bool> {
        self.rocks.get_with(s, kg, ck, f)
    }
    fn put(&mut self, s: StateId, kg: u32, ck: &[u8], value: &[u8]) -> StateResult<()> {
        self.rocks.put(s, kg, ck, value)
    }
    fn delete(&mut self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<()> {
        self.rocks.delete(s, kg, ck)
    }
    fn append(&mut self, s: StateId, kg: u32, ck: &[u8], bytes: &[u8]) -> StateResult<()> {
        self.rocks.append(s, kg, ck, bytes)
    }
    fn scan_prefix_with(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> StateResult<()> {
        self.rocks.scan_prefix_with(s, kg, prefix, f)
    }
    fn scan_prefix(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.rocks.scan_prefix(s, kg, prefix)
    }
    fn delete_prefix(&mut self, s: StateId, kg: u32, prefix: &[u8]) -> StateResult<()> {
        self.rocks.delete_prefix(s, kg, prefix)
    }
    fn scan_after(
        &self,
        s: StateId,
        kg: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.rocks.scan_after(s, kg, after, limit)
    }
    fn entries(&self, s: StateId) -> StateResult<Vec<Entry>> {
        self.rocks.entries(s)
    }
    fn snapshot_view(&self) -> StateResult<Box<dyn SnapshotView>> {
        self.rocks.snapshot_view()
    }
    fn load(&mut self, s: StateId, entries: Vec<Entry>) -> StateResult<()> {
        self.rocks.load(s, entries)
    }
    fn adopt(&mut self, meta: StateMeta) -> StateResult<StateId> {
        self.rocks.adopt(meta)
    }
    fn timer_cache_size(&self) -> Option<usize> {
        self.rocks.timer_cache_size()
    }
    fn preload(&self, keys: Vec<crate::backend::ReadKey>) -> crate::backend::Preload {
        self.rocks.preload(keys)
    }
    fn reads_ahead(&self) -> bool {
        self.rocks.reads_ahead()
    }
    fn read_now(&self, key: &crate::backend::ReadKey) -> bool {
        self.rocks.read_now(key)
    }
    fn write_behind(&mut self, on: bool) -> StateResult<()> {
        self.rocks.write_behind(on)
    }
}
