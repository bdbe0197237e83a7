//! Incremental checkpoints of the RocksDB backend, Flink's scheme.
//!
//! RocksDB's Checkpoint API makes a consistent directory of hard links. Its SST files are immutable
//! and uniquely named within a database, so an SST uploaded to `shared/` by a *completed* checkpoint
//! is referenced again instead of uploaded (the shared-state registry confirms it); new SSTs go to
//! `shared/<uuid>`. MANIFEST, CURRENT and OPTIONS are uploaded every time, as task-owned files. A
//! small JSON manifest (also task-owned) lists every file and the backend's state metadata; it is the
//! subtask's entry in the checkpoint's `_metadata`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// SST uploads in flight at once per checkpoint.
const UPLOAD_THREADS: usize = 4;

use serde::{Deserialize, Serialize};

use crate::backend::{StateBackend, StateMeta};
use crate::checkpoint::{CheckpointStorage, CompletedCheckpoint, PendingCheckpoint, SubtaskState};
use crate::checkpointed::{CheckpointStats, Checkpointed};
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;
use crate::rocks::{RocksBackend, SharedResources, UploadedSst};
use crate::rocks_options::RocksTuning;

const FORMAT: &str = "statefs-rocksdb-incremental";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbFile {
    pub name: String,
    pub key: String,
    pub size: u64,
    /// CRC32C of the file's bytes, checked when it is downloaded. Absent in manifests written
    /// before it was recorded; such files are checked by size only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbManifest {
    pub format: String,
    pub version: u32,
    pub range: KeyGroupRange,
    pub max_parallelism: u32,
    pub states: Vec<StateMeta>,
    pub files: Vec<DbFile>,
}

/// What one checkpoint of one RocksDB backend cost, by kind of file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RocksCheckpointStats {
    pub sst_files: usize,
    pub sst_files_uploaded: usize,
    pub sst_bytes_uploaded: u64,
    /// Bytes of SSTs named again (uploaded by an earlier completed checkpoint).
    pub sst_bytes_reused: u64,
    /// MANIFEST, CURRENT, OPTIONS and the checkpoint's own manifest.
    pub misc_files: usize,
    pub misc_bytes_uploaded: u64,
}

/// Where a restored RocksDB backend lives: its database directory (created; must not hold a
/// database), with an optional shared memory budget and tuning keys.
#[derive(Debug, Clone)]
pub struct RocksHome {
    pub dir: PathBuf,
    pub shared: Option<std::sync::Arc<SharedResources>>,
    pub tuning: RocksTuning,
}

impl RocksHome {
    /// `dir` with no memory budget and the default tuning.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RocksHome {
            dir: dir.into(),
            shared: None,
            tuning: RocksTuning::default(),
        }
    }
}

impl Checkpointed for RocksBackend {
    type Home = RocksHome;

    /// Incremental (Flink's scheme, above) unless `pending` was begun full.
    fn checkpoint(&mut self, pending: &mut PendingCheckpoint<'_>) -> StateResult<CheckpointStats> {
        let full = pending.is_full();
        let s = self.checkpoint_into(pending, full)?;
        Ok(CheckpointStats {
            files: (s.sst_files + s.misc_files) as u64,
            bytes_uploaded: s.sst_bytes_uploaded + s.misc_bytes_uploaded,
            bytes_referenced: s.sst_bytes_reused,
        })
    }

    fn restore(
        storage: &CheckpointStorage,
        checkpoint: &CompletedCheckpoint,
        range: KeyGroupRange,
        home: RocksHome,
    ) -> StateResult<Self> {
        RocksBackend::restore_incremental_tuned(
            storage,
            checkpoint,
            range,
            &home.dir,
            home.shared,
            home.tuning,
        )
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |e| StateError::unavailable(what, e)
}

impl RocksBackend {
    /// Adds this backend's state to `pending`. `full`: upload every SST (Flink's full mode).
    pub(crate) fn checkpoint_into(
        &mut self,
        pending: &mut PendingCheckpoint<'_>,
        full: bool,
    ) -> StateResult<RocksCheckpointStats> {
        let _span = tracing::info_span!("rocksdb_checkpoint", full).entered();
        let start = std::time::Instant::now();
        let l0_files = self.level0_files();
        // Inside the database directory: hard links need the same filesystem (elsewhere RocksDB
        // would copy every SST), and one left by a crash is removed at the next open.
        let dir = crate::rocks::view_dir(self.path());
        let _remove = crate::rocks::RemoveOnDrop(dir.clone());
        self.checkpoint_to(&dir)?;
        let linked = start.elapsed();
        let mut stats = RocksCheckpointStats::default();
        let mut files = Vec::new();
        let mut shared = Vec::new();
        let mut new_ssts: Vec<(String, PathBuf)> = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io("checkpoint dir"))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io("checkpoint dir"))?;
        names.sort();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            let path = dir.join(&name);
            let size = std::fs::metadata(&path)
                .map_err(io("checkpoint file"))?
                .len();
            if name.ends_with(".sst") {
                stats.sst_files += 1;
                let reuse = (!full)
                    .then(|| self.uploaded_ssts().get(&name).cloned())
                    .flatten()
                    .filter(|up| pending.registry().reusable(&up.key));
                match reuse {
                    Some(up) => {
                        stats.sst_bytes_reused += size;
                        shared.push(up.key.clone());
                        files.push(DbFile {
                            name,
                            key: up.key,
                            size,
                            crc32c: Some(up.crc32c),
                        });
                    }
                    None => new_ssts.push((name, path)),
                }
            } else {
                let (key, up) = pending.upload_file(false, &path)?;
                stats.misc_files += 1;
                stats.misc_bytes_uploaded += up.size;
                files.push(DbFile {
                    name,
                    key,
                    size: up.size,
                    crc32c: Some(up.crc32c),
                });
            }
        }
        // New SSTs are uploaded in parallel.
        let paths: Vec<PathBuf> = new_ssts.iter().map(|(_, p)| p.clone()).collect();
        let uploaded = pending.upload_files(true, &paths, UPLOAD_THREADS)?;
        for ((name, _), (key, up)) in new_ssts.into_iter().zip(uploaded) {
            stats.sst_files_uploaded += 1;
            stats.sst_bytes_uploaded += up.size;
            let sst = UploadedSst {
                key: key.clone(),
                crc32c: up.crc32c,
            };
            self.uploaded_ssts_mut().insert(name.clone(), sst);
            shared.push(key.clone());
            files.push(DbFile {
                name,
                key,
                size: up.size,
                crc32c: Some(up.crc32c),
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let manifest = DbManifest {
            format: FORMAT.into(),
            version: 1,
            range: self.key_group_range(),
            max_parallelism: self.max_parallelism(),
            states: self.states(),
            files,
        };
        let bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
        let size = bytes.len() as u64;
        let file = pending.upload_bytes(false, bytes)?;
        stats.misc_files += 1;
        stats.misc_bytes_uploaded += size;
        pending.add_subtask(SubtaskState {
            range: self.key_group_range(),
            file,
            size,
            shared,
            backend: Some("rocksdb".into()),
        });
        tracing::info!(
            l0_files_before = l0_files,
            flush_and_links_ms = linked.as_millis() as u64,
            upload_ms = (start.elapsed() - linked).as_millis() as u64,
            sst_bytes_uploaded = stats.sst_bytes_uploaded,
            sst_files_uploaded = stats.sst_files_uploaded,
            "rocksdb checkpoint"
        );
        Ok(stats)
    }

    /// Restores key groups `range` from an incremental checkpoint into a new database at `dir`.
    /// One handle covering exactly `range` is downloaded and opened as is; otherwise every
    /// overlapping handle is opened aside and its in-range entries merged in (rescaling: ingested
    /// as new SSTs, or copied; see `use-ingest-db-restore`).
    /// With a shared memory budget and tuning keys (`use-ingest-db-restore` chooses how other
    /// handles' entries come in when scaling in).
    pub(crate) fn restore_incremental_tuned(
        storage: &CheckpointStorage,
        c: &CompletedCheckpoint,
        range: KeyGroupRange,
        dir: &Path,
        shared: Option<std::sync::Arc<SharedResources>>,
        tuning: RocksTuning,
    ) -> StateResult<RocksBackend> {
        let handles = c.handles_for(range, &["rocksdb"])?;
        if let [only] = handles.as_slice()
            && only.range.intersect(&range) == Some(range)
        {
            // One handle covers the range: download, open, and clip what lies outside with
            // DeleteRange (Flink's clipDBWithKeyGroupRange).
            let m = load_manifest(storage, only)?;
            download(storage, &m, dir)?;
            let mut restored = RocksBackend::open_restored(
                dir,
                range,
                c.max_parallelism,
                shared,
                tuning,
                m.states,
                only.range,
            )?;
            // The restored SSTs are already in `shared/`: the next checkpoint names them again
            // instead of uploading them, as Flink's does after a restore, when the registry
            // still holds them. SSTs are immutable and RocksDB never reuses a file number, so a
            // name keeps meaning these bytes (a clipped range only adds tombstones in new files).
            // Entries written before CRC32Cs were recorded are uploaded anew.
            let shared_keys: std::collections::HashSet<&str> =
                only.shared.iter().map(String::as_str).collect();
            for f in m.files {
                if let Some(crc32c) = f.crc32c
                    && f.name.ends_with(".sst")
                    && shared_keys.contains(f.key.as_str())
                {
                    let sst = UploadedSst { key: f.key, crc32c };
                    restored.uploaded_ssts_mut().insert(f.name, sst);
                }
            }
            return Ok(restored);
        }
        let mut target = RocksBackend::open_tuned(dir, range, c.max_parallelism, shared, tuning)?;
        for h in handles {
            let m = load_manifest(storage, h)?;
            let tmp = tempfile::tempdir().map_err(io("restore scratch dir"))?;
            download(storage, &m, tmp.path())?;
            // Read-only: a source opened for writing would start compactions nobody needs.
            let mut source = RocksBackend::open_read_only(tmp.path(), m.range, m.max_parallelism)?;
            target.merge_in_range_from(&mut source, &m.states, range)?;
        }
        Ok(target)
    }
}

fn load_manifest(storage: &CheckpointStorage, h: &SubtaskState) -> StateResult<DbManifest> {
    let bytes = storage
        .remote()
        .get(&h.file)
        .map_err(StateError::reading_checkpoint)?;
    let m: DbManifest = serde_json::from_slice(&bytes)
        .map_err(|e| StateError::corrupt(format!("rocksdb manifest {}", h.file), e.to_string()))?;
    if m.format != FORMAT || m.version != 1 || m.range != h.range {
        return Err(StateError::corrupt(
            format!("rocksdb manifest {}", h.file),
            "another format, version or key-group range",
        ));
    }
    for f in &m.files {
        if f.name.contains('/') || f.name == ".." || f.name.is_empty() {
            return Err(StateError::corrupt(
                format!("rocksdb manifest {}", h.file),
                format!("bad file name {:?}", f.name),
            ));
        }
    }
    Ok(m)
}

/// Downloads every file of `m` into `dir`, `UPLOAD_THREADS` at a time (Flink's RocksDB backend
/// transfers on 4 threads by default, both ways), each streamed to a temporary name and renamed
/// once its size (and CRC32C, when the manifest records one) is checked.
fn download(storage: &CheckpointStorage, m: &DbManifest, dir: &Path) -> StateResult<()> {
    std::fs::create_dir_all(dir).map_err(io("restore dir"))?;
    crate::checkpoint::in_parallel(m.files.len(), UPLOAD_THREADS, |i| {
        let f = &m.files[i];
        let to = dir.join(&f.name);
        let tmp = dir.join(format!("{}.download", f.name));
        let got = storage
            .remote()
            .get_to_file(&f.key, &tmp)
            .map_err(StateError::reading_checkpoint)?;
        let damage = if got.size != f.size {
            Some(format!(
                "has {} bytes, the manifest says {}",
                got.size, f.size
            ))
        } else if f.crc32c.is_some_and(|crc| crc != got.crc32c) {
            Some("does not match the checksum the manifest records".to_string())
        } else {
            None
        };
        if let Some(damage) = damage {
            let _ = std::fs::remove_file(&tmp);
            return Err(StateError::corrupt(
                "checkpoint",
                format!("file {} {damage}", f.key),
            ));
        }
        std::fs::rename(&tmp, &to).map_err(io("restore file"))
    })
    .map(drop)
}

/// For tests and tools: how the SSTs of a checkpoint are shared.
pub fn shared_files(c: &CompletedCheckpoint) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for t in &c.subtasks {
        for f in &t.shared {
            *m.entry(f.clone()).or_insert(0) += 1;
        }
    }
    m
}
