//! The checkpoint interface every backend implements: its part of a checkpoint, and a restore of a
//! key-group range from a completed one.
//!
//! A checkpoint is taken by the caller (Flink's checkpoint coordinator):
//!
//! ```
//! use statefs_backend::checkpoint::CheckpointStorage;
//! use statefs_backend::{Checkpointed, HeapBackend, KeyGroupRange, Keyed};
//!
//! # fn main() -> statefs_backend::StateResult<()> {
//! let rt = statefs_store::runtime().unwrap();
//! let store = std::sync::Arc::new(statefs_store::ObjectStoreRemote::in_memory(rt));
//! let mut storage = CheckpointStorage::open(store, "job", 2)?;
//!
//! let range = KeyGroupRange::all(128);
//! let mut kb: Keyed<String, HeapBackend> = Keyed::new(HeapBackend::new(range, 128));
//! let count = kb.value_state::<u64>("count", None)?;
//! kb.set_current_key(&"alice".to_string())?;
//! count.update(&mut kb, &7)?;
//!
//! // Checkpoint 1: every subtask adds its part, then the checkpoint completes atomically.
//! let mut pending = storage.begin(1, 128);
//! kb.backend_mut().checkpoint(&mut pending)?;
//! pending.complete()?;
//!
//! // Restore (here the same key groups; a rescaled job asks for other ranges).
//! let latest = storage.latest()?.expect("a completed checkpoint");
//! let restored = HeapBackend::restore(&storage, &latest, range, ())?;
//! let mut kb = Keyed::new(restored);
//! let count = kb.value_state::<u64>("count", None)?;
//! kb.set_current_key(&"alice".to_string())?;
//! assert_eq!(count.value(&mut kb)?, Some(7));
//! # Ok(())
//! # }
//! ```
//!
//! Every backend writes into the same [`CheckpointStorage`] under the same `u64` ids, and a
//! checkpoint's metadata records which backend wrote each part: a backend restores only its own
//! kind's checkpoints (state moves between kinds through savepoints).

use crate::backend::StateBackend;
use crate::checkpoint::{CheckpointStorage, CompletedCheckpoint, PendingCheckpoint};
use crate::error::StateResult;
use crate::heap::HeapBackend;
use crate::keygroup::KeyGroupRange;

/// What one backend's part of a checkpoint cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Files the part names (uploaded now, or by an earlier checkpoint, or objects the ForSt
    /// mount already holds).
    pub files: u64,
    /// Bytes this checkpoint uploaded or copied.
    pub bytes_uploaded: u64,
    /// Bytes the part names without uploading them: shared files of earlier checkpoints
    /// (incremental RocksDB) or the live database's SST objects (ForSt).
    pub bytes_referenced: u64,
}

/// A backend that takes part in checkpoints and can be restored from them.
pub trait Checkpointed: StateBackend + Sized {
    /// Where a restored backend lives: nothing for the heap ([`HeapBackend`]), a database directory
    /// for RocksDB (`RocksHome`), a statefs mount for ForSt (`ForstHome`).
    type Home;

    /// Adds this backend's state (its whole key-group range) to `pending`. A failed call leaves
    /// `pending` to be aborted (dropping it aborts it): what it uploaded is deleted then.
    fn checkpoint(&mut self, pending: &mut PendingCheckpoint<'_>) -> StateResult<CheckpointStats>;

    /// A backend for key groups `range` holding their state as of `checkpoint`: from one part of
    /// it, or merged from several (rescaling). Every key group of `range` must be in the
    /// checkpoint, written by this kind of backend.
    fn restore(
        storage: &CheckpointStorage,
        checkpoint: &CompletedCheckpoint,
        range: KeyGroupRange,
        home: Self::Home,
    ) -> StateResult<Self>;
}

impl Checkpointed for HeapBackend {
    type Home = ();

    /// A full canonical snapshot of the backend, uploaded as task-owned state.
    fn checkpoint(&mut self, pending: &mut PendingCheckpoint<'_>) -> StateResult<CheckpointStats> {
        pending.add_snapshot(self, "heap")
    }

    fn restore(
        storage: &CheckpointStorage,
        checkpoint: &CompletedCheckpoint,
        range: KeyGroupRange,
        (): (),
    ) -> StateResult<Self> {
        let mut backend = HeapBackend::new(range, checkpoint.max_parallelism);
        storage.restore_snapshots(checkpoint, &mut backend)?;
        Ok(backend)
    }
}
