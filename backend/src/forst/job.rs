//! ForSt in a job's checkpoints ([`Checkpointed`]): a job checkpoint's part for a ForSt backend is
//! a small handle naming a statefs checkpoint of the backend's mount, which names the database's
//! SST objects without copying them.
//!
//! Which statefs checkpoints may be dropped, and when. The statefs checkpoint of job checkpoint
//! `n` is published with retention off (0 keeps all), because only the job's storage knows which
//! job checkpoints are retained. At the start of each job checkpoint, on a thread of its own
//! (joined before the next one and when the backend closes), the backend drops the statefs
//! checkpoints it published for job checkpoints older than the oldest completed one:
//! - a retained job checkpoint is never older than the oldest completed one, so every statefs
//!   checkpoint a retained job checkpoint names stays;
//! - job checkpoint `n` is pending while its statefs checkpoint is published, and is not older
//!   than the oldest completed one until a newer one completes and retention passes it: so a job
//!   checkpoint whose metadata write had an unknown outcome (it may still become visible) keeps
//!   its statefs checkpoint until it is subsumed like any other;
//! - only checkpoints this mount owns are dropped ([`statefs::MountHandle::drop_checkpoint`]), so
//!   another subtask's, or the one this backend was restored from (owned by the mount that
//!   published it), is never touched.
//!
//! Starting it with a checkpoint, after the previous one completed, fixes what it sees: once it is
//! done (`ForstBackend::wait_for_release`), only the statefs checkpoints of the job checkpoints
//! retained when the previous one completed, of later ones, and of this one remain. A backend
//! forgets its list when it closes: statefs checkpoints a closed backend published stay until `statefs checkpoint drop`
//! or `statefs gc` (as for any mount that is gone).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use statefs::MountConfig;

use super::ForstBackend;
use crate::backend::StateBackend;
use crate::checkpoint::{CheckpointStorage, CompletedCheckpoint, PendingCheckpoint, SubtaskState};
use crate::checkpointed::{CheckpointStats, Checkpointed};
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;
use crate::rocks::SharedResources;
use crate::rocks_options::RocksTuning;

const HANDLE_FORMAT: &str = "statefs-forst-handle";

/// A ForSt backend's part of a job checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Handle {
    format: String,
    version: u32,
    /// The statefs checkpoint holding the database, in the mount's store.
    statefs_checkpoint: String,
    range: KeyGroupRange,
}

/// Where a restored ForSt backend lives: a statefs mount of `config` (its local and cache dirs
/// fresh; its store the one the checkpoints were published to) on `mountpoint`, with an optional
/// shared memory budget and tuning keys.
#[derive(Debug, Clone)]
pub struct ForstHome {
    pub config: MountConfig,
    pub mountpoint: PathBuf,
    pub shared: Option<Arc<SharedResources>>,
    pub tuning: RocksTuning,
}

impl ForstHome {
    pub fn new(config: MountConfig, mountpoint: impl Into<PathBuf>) -> Self {
        ForstHome {
            config,
            mountpoint: mountpoint.into(),
            shared: None,
            tuning: RocksTuning::default(),
        }
    }
}

fn load_handle(storage: &CheckpointStorage, t: &SubtaskState) -> StateResult<Handle> {
    let what = format!("forst handle {}", t.file);
    let bytes = storage
        .remote()
        .get(&t.file)
        .map_err(StateError::reading_checkpoint)?;
    let h: Handle =
        serde_json::from_slice(&bytes).map_err(|e| StateError::corrupt(&what, e.to_string()))?;
    if h.format != HANDLE_FORMAT || h.version != 1 || h.range != t.range {
        return Err(StateError::corrupt(
            what,
            "another format, version or key-group range",
        ));
    }
    statefs::checkpoint::check_id(&h.statefs_checkpoint)
        .map_err(|e| StateError::corrupt(&what, e.to_string()))?;
    Ok(h)
}

/// Drops the statefs checkpoints in `published` made for job checkpoints older than the oldest
/// completed one (the invariant is in this module's comment); returns those it kept. A failure is
/// logged and the rest kept, to be retried after the next checkpoint: it never fails one.
fn release_subsumed(
    mut published: Vec<(u64, String)>,
    remote: &dyn statefs_store::RemoteStore,
    job: &str,
    mount: &statefs::FsCore,
) -> Vec<(u64, String)> {
    let oldest = match crate::checkpoint::completed_ids(remote, job) {
        Ok(ids) => match ids.first() {
            Some(id) => *id,
            None => return published,
        },
        Err(e) => {
            tracing::warn!(error = %e, "listing the job's checkpoints failed; subsumed statefs checkpoints are dropped after the next checkpoint");
            return published;
        }
    };
    while let Some((job_id, statefs_id)) = published.first() {
        if *job_id >= oldest {
            break;
        }
        if let Err(e) = mount.drop_own_checkpoint(statefs_id) {
            tracing::warn!(error = %e, checkpoint = %statefs_id, "dropping a subsumed statefs checkpoint failed; retried after the next checkpoint");
            break;
        }
        published.remove(0);
    }
    published
}

impl ForstBackend {
    /// Starts [`release_subsumed`] on a thread of its own, off the checkpoint's path, as Flink
    /// discards subsumed checkpoints. Joined before the next checkpoint and when the backend
    /// closes, so one runs at a time and none outlives the mount.
    fn release_in_background(&mut self, storage: &CheckpointStorage) {
        let published = std::mem::take(&mut self.published);
        let remote = storage.remote().clone();
        let job = storage.job().to_string();
        let core = self.mount.core().clone();
        self.release = Some(std::thread::spawn(move || {
            release_subsumed(published, remote.as_ref(), &job, &core)
        }));
    }

    /// Waits until the release of subsumed statefs checkpoints started by the last checkpoint
    /// is done (tests, and tools that list the store right after a checkpoint).
    pub fn wait_for_release(&mut self) {
        self.join_release()
    }

    /// Waits for the release started by the last checkpoint, and takes back its list.
    pub(super) fn join_release(&mut self) {
        if let Some(h) = self.release.take() {
            match h.join() {
                Ok(mut kept) => {
                    kept.append(&mut self.published);
                    self.published = kept;
                }
                Err(_) => tracing::error!("the release of subsumed statefs checkpoints panicked"),
            }
        }
    }
}

impl Checkpointed for ForstBackend {
    type Home = ForstHome;

    /// Starts dropping the statefs checkpoints of subsumed job checkpoints, then publishes a
    /// statefs checkpoint of the database (no SST byte copied) and adds a handle naming it to
    /// `pending`.
    fn checkpoint(&mut self, pending: &mut PendingCheckpoint<'_>) -> StateResult<CheckpointStats> {
        self.join_release();
        self.release_in_background(pending.storage());
        let published = self.publish(0)?;
        // From here the statefs checkpoint exists: it is remembered before anything else can
        // fail, so that it is dropped once subsumed, whether or not the job checkpoint completes.
        self.published.push((pending.id(), published.id.clone()));
        let handle = Handle {
            format: HANDLE_FORMAT.into(),
            version: 1,
            statefs_checkpoint: published.id.clone(),
            range: self.key_group_range(),
        };
        let bytes = serde_json::to_vec(&handle).expect("handle serializes");
        let size = bytes.len() as u64;
        let file = pending.upload_bytes(false, bytes)?;
        pending.add_subtask(SubtaskState {
            range: self.key_group_range(),
            file,
            size,
            shared: Vec::new(),
            backend: Some("forst".into()),
        });
        Ok(CheckpointStats {
            files: published.files as u64 + 1,
            bytes_uploaded: published.copied_bytes + size,
            bytes_referenced: published.referenced_bytes,
        })
    }

    /// Mounts the statefs checkpoint holding most of `range` as this backend's own (lazily: SSTs
    /// are fetched on first read) and merges in the others' entries, as
    /// [`ForstBackend::restore_published_merged`].
    fn restore(
        storage: &CheckpointStorage,
        checkpoint: &CompletedCheckpoint,
        range: KeyGroupRange,
        home: ForstHome,
    ) -> StateResult<Self> {
        let mut handles = checkpoint.handles_for(range, &["forst"])?;
        let overlap = |t: &SubtaskState| t.range.intersect(&range).map_or(0, |r| r.len());
        handles.sort_by_key(|t| std::cmp::Reverse(overlap(t)));
        let ids = handles
            .iter()
            .map(|t| load_handle(storage, t).map(|h| h.statefs_checkpoint))
            .collect::<StateResult<Vec<String>>>()?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        ForstBackend::restore_published_merged_tuned(
            &home.config,
            &home.mountpoint,
            &ids,
            range,
            checkpoint.max_parallelism,
            home.shared,
            home.tuning,
        )
    }
}
