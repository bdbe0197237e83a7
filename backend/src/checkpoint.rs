//! Checkpoint storage on an object store, Flink's layout:
//!
//! ```text
//! <job>/chk-<n>/_metadata        the completed checkpoint (JSON), written last, only if absent
//! <job>/taskowned/<uuid>         exclusive state files (full snapshots of subtasks)
//! <job>/shared/<uuid>            files incremental checkpoints share (refcounted by the registry)
//! <job>/savepoints/<name>/...    self-contained canonical savepoints: `state` (keyed state,
//!                                any backend's) and `operator-<operator>` (operator state)
//! ```
//!
//! A checkpoint holds keyed state by key-group range ([`SubtaskState`]) and operator state by
//! operator and instance ([`OperatorPart`]): every instance of an operator that takes part adds
//! its part, and a checkpoint missing one instance's part is refused at completion.
//!
//! A checkpoint is visible only once its `_metadata` exists; an aborted one deletes what it uploaded.
//! Retention keeps the newest N completed checkpoints; dropping one deletes its exclusive files and
//! releases its shared ones, which the [`SharedStateRegistry`] deletes when no retained checkpoint
//! references them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use statefs_store::{RemoteStore, StoreError, Uploaded};

use crate::backend::StateBackend;
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;
use crate::operator_state::OperatorState;
use crate::snapshot::{self, RemoteObject};

/// One subtask's part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskState {
    pub range: KeyGroupRange,
    /// Object key (relative to the storage root) of the snapshot file.
    pub file: String,
    pub size: u64,
    /// Files of `shared/` this subtask's state also needs (incremental checkpoints).
    pub shared: Vec<String>,
    /// The backend that wrote `file` ([`StateBackend::name`]): `heap`, `rocksdb` or `forst`.
    /// Absent in metadata written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// The backends whose state a checkpoint may hold.
pub const BACKENDS: &[&str] = &["heap", "rocksdb", "forst"];

/// One parallel instance's operator state ([`crate::OperatorState`]) in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorPart {
    /// The operator's name (unique in the job).
    pub operator: String,
    /// This instance's index, below `parallelism`.
    pub subtask: u32,
    /// The operator's parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// Object key of the instance's snapshot bytes.
    pub file: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedCheckpoint {
    pub format: String,
    pub version: u32,
    pub job: String,
    pub id: u64,
    pub max_parallelism: u32,
    pub subtasks: Vec<SubtaskState>,
    /// Operator state, every instance of each operator that has some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorPart>,
}

/// Why `parts` are not exactly one part per instance `0..parallelism` of each operator, if
/// they are not.
fn operator_parts_problem(parts: &[OperatorPart]) -> Option<String> {
    let mut by_op: BTreeMap<&str, (u32, BTreeSet<u32>)> = BTreeMap::new();
    for p in parts {
        let (par, seen) = by_op
            .entry(p.operator.as_str())
            .or_insert((p.parallelism, BTreeSet::new()));
        if *par != p.parallelism || p.subtask >= p.parallelism {
            return Some(format!(
                "operator {:?}: instance {} of {} beside parts of parallelism {par}",
                p.operator, p.subtask, p.parallelism
            ));
        }
        if !seen.insert(p.subtask) {
            return Some(format!(
                "operator {:?}: instance {} twice",
                p.operator, p.subtask
            ));
        }
    }
    for (op, (par, seen)) in by_op {
        if seen.len() != par as usize {
            let missing: Vec<u32> = (0..par).filter(|i| !seen.contains(i)).collect();
            return Some(format!(
                "operator {op:?}: no state of instance(s) {missing:?} of {par}"
            ));
        }
    }
    None
}

const FORMAT: &str = "statefs-backend-checkpoint";

impl CompletedCheckpoint {
    /// The subtask states holding key groups of `range`, which must all have been written by one
    /// of `backends` (a backend restores only its own checkpoints; state moves between backends
    /// through savepoints). Every key group of `range` must be held.
    pub fn handles_for(
        &self,
        range: KeyGroupRange,
        backends: &[&str],
    ) -> StateResult<Vec<&SubtaskState>> {
        let handles: Vec<&SubtaskState> = self
            .subtasks
            .iter()
            .filter(|t| t.range.intersect(&range).is_some())
            .collect();
        for t in &handles {
            // Metadata from before the backend was recorded: the state file's own format check
            // still refuses a mismatch.
            if let Some(b) = &t.backend
                && !backends.contains(&b.as_str())
            {
                return Err(StateError::Invalid(format!(
                    "checkpoint {} holds key groups {:?} written by the {b} backend, which a {} \
                     backend cannot restore: move state between backends with a savepoint",
                    self.id,
                    t.range,
                    backends.join("/")
                )));
            }
        }
        if let Some(kg) = range
            .iter()
            .find(|kg| !handles.iter().any(|t| t.range.contains(*kg)))
        {
            return Err(StateError::Invalid(format!(
                "checkpoint {} holds no state for key group {kg} of {range:?}",
                self.id
            )));
        }
        Ok(handles)
    }

    /// Parses and checks the metadata of checkpoint `id` of `job` (`what` names it in errors):
    /// format, version, id and job, key-group ranges within the max parallelism, and state files
    /// inside the job's directory.
    pub fn parse(bytes: &[u8], id: u64, job: &str, what: &str) -> StateResult<CompletedCheckpoint> {
        let c: CompletedCheckpoint = serde_json::from_slice(bytes)
            .map_err(|e| StateError::corrupt(what.to_string(), e.to_string()))?;
        if c.format != FORMAT || c.version != 1 || c.id != id || c.job != job {
            return Err(StateError::corrupt(
                what.to_string(),
                "metadata of another format, version, id or job",
            ));
        }
        let own = format!("{job}/");
        for t in &c.subtasks {
            if !t.file.starts_with(&own)
                || t.file.contains("..")
                || t.shared
                    .iter()
                    .any(|f| !f.starts_with(&own) || f.contains(".."))
            {
                return Err(StateError::corrupt(
                    what.to_string(),
                    "a state file outside the job's directory",
                ));
            }
            if let Some(b) = &t.backend
                && !BACKENDS.contains(&b.as_str())
            {
                return Err(StateError::corrupt(
                    what.to_string(),
                    format!("state written by an unknown backend {b:?}"),
                ));
            }
            if t.range.start > t.range.end || t.range.end >= c.max_parallelism {
                return Err(StateError::corrupt(
                    what.to_string(),
                    format!(
                        "key groups {}..={} outside max parallelism {}",
                        t.range.start, t.range.end, c.max_parallelism
                    ),
                ));
            }
        }
        for p in &c.operators {
            if !p.file.starts_with(&own)
                || p.file.contains("..")
                || check_name(&p.operator).is_err()
            {
                return Err(StateError::corrupt(
                    what.to_string(),
                    "operator state outside the job's directory or of a bad operator name",
                ));
            }
        }
        if let Some(why) = operator_parts_problem(&c.operators) {
            return Err(StateError::corrupt(what.to_string(), why));
        }
        Ok(c)
    }
}

/// Reference counts of shared files by the completed checkpoints that use them. Only files
/// registered by a *completed* checkpoint are offered for reuse: an upload of a failed checkpoint is
/// never referenced again.
#[derive(Debug, Default, Clone)]
pub struct SharedStateRegistry {
    refs: BTreeMap<String, BTreeSet<u64>>,
}

impl SharedStateRegistry {
    pub fn register(&mut self, checkpoint: u64, files: impl IntoIterator<Item = String>) {
        for f in files {
            self.refs.entry(f).or_default().insert(checkpoint);
        }
    }

    /// Drops `checkpoint`'s references; returns the files no checkpoint references any more.
    pub fn release(&mut self, checkpoint: u64) -> Vec<String> {
        let mut dead = Vec::new();
        self.refs.retain(|f, cps| {
            cps.remove(&checkpoint);
            if cps.is_empty() {
                dead.push(f.clone());
                false
            } else {
                true
            }
        });
        dead
    }

    /// Whether `file` may be referenced by a new checkpoint without uploading it again.
    pub fn reusable(&self, file: &str) -> bool {
        self.refs.contains_key(file)
    }

    pub fn ref_count(&self, file: &str) -> usize {
        self.refs.get(file).map_or(0, |c| c.len())
    }
}

pub struct CheckpointStorage {
    remote: Arc<dyn RemoteStore>,
    job: String,
    retained: usize,
    registry: SharedStateRegistry,
}

/// A checkpoint being written. Dropping it without [`PendingCheckpoint::complete`] aborts it.
pub struct PendingCheckpoint<'a> {
    storage: &'a mut CheckpointStorage,
    id: u64,
    max_parallelism: u32,
    subtasks: Vec<SubtaskState>,
    operators: Vec<OperatorPart>,
    uploaded: Vec<String>,
    done: bool,
    full: bool,
    timestamp_ms: u64,
}

/// Job, savepoint and operator names: 1 to 128 of `[A-Za-z0-9_-]` (they become object keys).
fn check_name(name: &str) -> Result<(), ()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok { Ok(()) } else { Err(()) }
}

fn check_job(job: &str) -> StateResult<()> {
    check_name(job).map_err(|_| StateError::Invalid(format!("bad job name {job:?}")))
}

fn check_operator(operator: &str) -> StateResult<()> {
    check_name(operator).map_err(|_| {
        StateError::Invalid(format!(
            "bad operator name {operator:?}: 1 to 128 of A-Z a-z 0-9 _ -"
        ))
    })
}

const OPERATOR_SAVEPOINT_FORMAT: &str = "statefs-operator-savepoint";

/// A savepoint's operator state: every instance's snapshot bytes, by instance index.
#[derive(Serialize, Deserialize)]
struct OperatorSavepoint {
    format: String,
    version: u32,
    operator: String,
    instances: Vec<Vec<u8>>,
}

impl CheckpointStorage {
    /// Opens the storage of `job`, rebuilding the shared-state registry from its retained
    /// checkpoints. `retained` is Flink's `state.checkpoints.num-retained` (at least 1).
    pub fn open(remote: Arc<dyn RemoteStore>, job: &str, retained: usize) -> StateResult<Self> {
        check_job(job)?;
        let mut s = CheckpointStorage {
            remote,
            job: job.into(),
            retained: retained.max(1),
            registry: Default::default(),
        };
        for id in s.completed_ids()? {
            let c = s.load(id)?;
            s.registry
                .register(id, c.subtasks.iter().flat_map(|t| t.shared.clone()));
        }
        Ok(s)
    }

    pub fn registry(&self) -> &SharedStateRegistry {
        &self.registry
    }

    pub fn remote(&self) -> &Arc<dyn RemoteStore> {
        &self.remote
    }

    fn metadata_key(&self, id: u64) -> String {
        format!("{}/chk-{id}/_metadata", self.job)
    }

    /// Keeps the newest `retained` completed checkpoints and drops the older ones (their files, and
    /// shared files no retained checkpoint references). Returns the dropped ids.
    pub fn apply_retention(&mut self) -> StateResult<Vec<u64>> {
        let ids = self.completed_ids()?;
        let mut dropped = Vec::new();
        if ids.len() > self.retained {
            for id in &ids[..ids.len() - self.retained] {
                self.drop_checkpoint(*id)?;
                dropped.push(*id);
            }
        }
        Ok(dropped)
    }

    /// Ids of completed checkpoints, oldest first.
    pub fn completed_ids(&self) -> StateResult<Vec<u64>> {
        completed_ids(self.remote.as_ref(), &self.job)
    }

    pub fn latest(&self) -> StateResult<Option<CompletedCheckpoint>> {
        match self.completed_ids()?.last() {
            Some(id) => self.load(*id).map(Some),
            None => Ok(None),
        }
    }

    pub fn load(&self, id: u64) -> StateResult<CompletedCheckpoint> {
        let what = format!("checkpoint {id} of job {}", self.job);
        let bytes = match self.remote.get(&self.metadata_key(id)) {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => {
                return Err(StateError::Invalid(format!("no {what}")));
            }
            Err(e) => return Err(e.into()),
        };
        CompletedCheckpoint::parse(&bytes, id, &self.job, &what)
    }

    /// Starts checkpoint `id` (ids grow; an id that exists is refused at completion). Backends
    /// that can are incremental: they name files of earlier completed checkpoints again.
    pub fn begin(&mut self, id: u64, max_parallelism: u32) -> PendingCheckpoint<'_> {
        PendingCheckpoint {
            storage: self,
            id,
            max_parallelism,
            subtasks: Vec::new(),
            operators: Vec::new(),
            uploaded: Vec::new(),
            done: false,
            full: false,
            timestamp_ms: 0,
        }
    }

    /// Starts checkpoint `id` as a full one: the RocksDB backend uploads every file (Flink's
    /// full mode). The heap backend's checkpoints are always full; ForSt's always name the live
    /// database's objects.
    pub fn begin_full(&mut self, id: u64, max_parallelism: u32) -> PendingCheckpoint<'_> {
        let mut p = self.begin(id, max_parallelism);
        p.full = true;
        p
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    /// Restores the key groups of `backend` from the canonical snapshots of checkpoint `c`
    /// (reading only them): what heap backends checkpoint.
    pub(crate) fn restore_snapshots(
        &self,
        c: &CompletedCheckpoint,
        backend: &mut dyn StateBackend,
    ) -> StateResult<()> {
        let range = backend.key_group_range();
        let handles = c.handles_for(range, &["heap"])?;
        let objects: Vec<RemoteObject<'_>> = handles
            .into_iter()
            .map(|t| RemoteObject {
                store: self.remote.as_ref(),
                key: t.file.clone(),
            })
            .collect();
        let sources: Vec<(&dyn snapshot::ByteSource, String)> = objects
            .iter()
            .map(|o| {
                (
                    o as &dyn snapshot::ByteSource,
                    format!("checkpoint {} file {}", c.id, o.key),
                )
            })
            .collect();
        snapshot::restore(backend, &sources)
    }

    fn drop_checkpoint(&mut self, id: u64) -> StateResult<()> {
        let c = self.load(id)?;
        // The metadata goes first: from then on the checkpoint does not exist.
        self.remote.delete(&self.metadata_key(id))?;
        for t in &c.subtasks {
            self.remote.delete(&t.file)?;
        }
        for p in &c.operators {
            self.remote.delete(&p.file)?;
        }
        for f in self.registry.release(id) {
            self.remote.delete(&f)?;
        }
        Ok(())
    }

    /// Writes a self-contained canonical savepoint of `backend` under `savepoints/<name>/`.
    pub fn savepoint(
        &self,
        name: &str,
        backend: &dyn StateBackend,
        now_ms: u64,
    ) -> StateResult<String> {
        check_job(name)?;
        let key = format!("{}/savepoints/{name}/state", self.job);
        let bytes = snapshot::write(backend.snapshot_view()?.as_ref(), now_ms)?;
        self.remote
            .put_if_absent(&key, Bytes::from(bytes))
            .map_err(|e| match e {
                StoreError::AlreadyExists { .. } => {
                    StateError::Invalid(format!("savepoint {name} exists"))
                }
                e => e.into(),
            })?;
        Ok(key)
    }

    /// Restores `backend`'s key groups from savepoint `name` (written by any backend).
    pub fn restore_savepoint(&self, name: &str, backend: &mut dyn StateBackend) -> StateResult<()> {
        check_job(name)?;
        let o = RemoteObject {
            store: self.remote.as_ref(),
            key: format!("{}/savepoints/{name}/state", self.job),
        };
        snapshot::restore(
            backend,
            &[(&o as &dyn snapshot::ByteSource, format!("savepoint {name}"))],
        )
    }
}

impl CheckpointStorage {
    /// The operator state of instance `index` of `operator` running at `parallelism`, from
    /// checkpoint `c`: the instances' parts redistributed as Flink does
    /// ([`crate::operator_state::redistribute`]). An operator the checkpoint holds no state of
    /// starts empty (as in Flink, a new operator).
    pub fn restore_operator_state(
        &self,
        c: &CompletedCheckpoint,
        operator: &str,
        index: u32,
        parallelism: u32,
    ) -> StateResult<OperatorState> {
        check_operator(operator)?;
        check_instance(index, parallelism)?;
        let mut parts: Vec<&OperatorPart> = c
            .operators
            .iter()
            .filter(|p| p.operator == operator)
            .collect();
        parts.sort_by_key(|p| p.subtask);
        let old = parts
            .iter()
            .map(|p| {
                let bytes = self.remote.get(&p.file).map_err(|e| match e {
                    StoreError::NotFound { .. } => StateError::corrupt(
                        format!("checkpoint {} of job {}", c.id, self.job),
                        format!("operator state file {} is missing", p.file),
                    ),
                    e => e.into(),
                })?;
                OperatorState::restore(&bytes)
            })
            .collect::<StateResult<Vec<_>>>()?;
        Ok(pick(old, index, parallelism))
    }

    /// Writes the operator state of all instances of `operator` (by index) into savepoint
    /// `name`, beside its keyed state ([`CheckpointStorage::savepoint`]). Operator state is the
    /// same whatever the keyed backend, so any backend's job restores it.
    pub fn savepoint_operator_state(
        &self,
        name: &str,
        operator: &str,
        instances: &[OperatorState],
    ) -> StateResult<String> {
        check_job(name)?;
        check_operator(operator)?;
        let key = format!("{}/savepoints/{name}/operator-{operator}", self.job);
        let bytes = postcard::to_allocvec(&OperatorSavepoint {
            format: OPERATOR_SAVEPOINT_FORMAT.into(),
            version: 1,
            operator: operator.into(),
            instances: instances.iter().map(OperatorState::snapshot).collect(),
        })
        .expect("operator savepoint serializes");
        self.remote
            .put_if_absent(&key, Bytes::from(bytes))
            .map_err(|e| match e {
                StoreError::AlreadyExists { .. } => StateError::Invalid(format!(
                    "savepoint {name} holds operator state of {operator} already"
                )),
                e => e.into(),
            })?;
        Ok(key)
    }

    /// The operator state of instance `index` of `operator` at `parallelism` from savepoint
    /// `name`, redistributed as from a checkpoint; empty if the savepoint has none for it.
    pub fn restore_savepoint_operator_state(
        &self,
        name: &str,
        operator: &str,
        index: u32,
        parallelism: u32,
    ) -> StateResult<OperatorState> {
        check_job(name)?;
        check_operator(operator)?;
        check_instance(index, parallelism)?;
        let key = format!("{}/savepoints/{name}/operator-{operator}", self.job);
        let what = format!("operator state of {operator} in savepoint {name}");
        let bytes = match self.remote.get(&key) {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => return Ok(OperatorState::new()),
            Err(e) => return Err(e.into()),
        };
        let sp: OperatorSavepoint =
            postcard::from_bytes(&bytes).map_err(|e| StateError::corrupt(&what, e.to_string()))?;
        if sp.format != OPERATOR_SAVEPOINT_FORMAT || sp.version != 1 || sp.operator != operator {
            return Err(StateError::corrupt(
                &what,
                "another format, version or operator",
            ));
        }
        let old = sp
            .instances
            .iter()
            .map(|b| OperatorState::restore(b))
            .collect::<StateResult<Vec<_>>>()?;
        Ok(pick(old, index, parallelism))
    }
}

fn check_instance(index: u32, parallelism: u32) -> StateResult<()> {
    if index >= parallelism {
        return Err(StateError::Invalid(format!(
            "instance {index} of an operator of parallelism {parallelism}"
        )));
    }
    Ok(())
}

/// Instance `index`'s share of `old` redistributed to `parallelism`.
fn pick(old: Vec<OperatorState>, index: u32, parallelism: u32) -> OperatorState {
    if old.is_empty() {
        return OperatorState::new();
    }
    crate::operator_state::redistribute(&old, parallelism as usize).swap_remove(index as usize)
}

impl PendingCheckpoint<'_> {
    /// Adds the operator state of instance `subtask` of `operator` (running at `parallelism`),
    /// uploaded as task-owned state. Every instance of the operator must add its part before
    /// [`PendingCheckpoint::complete`].
    pub fn add_operator_state(
        &mut self,
        operator: &str,
        subtask: u32,
        parallelism: u32,
        state: &OperatorState,
    ) -> StateResult<crate::checkpointed::CheckpointStats> {
        check_operator(operator)?;
        check_instance(subtask, parallelism)?;
        let mut parts = self.operators.clone();
        parts.push(OperatorPart {
            operator: operator.into(),
            subtask,
            parallelism,
            file: String::new(),
            size: 0,
        });
        // Only a duplicate or a parallelism mismatch matters here; missing instances may come.
        if let Some(why) = operator_parts_problem(&parts).filter(|w| !w.contains("no state of")) {
            return Err(StateError::Invalid(why));
        }
        let bytes = state.snapshot();
        let size = bytes.len() as u64;
        let file = self.upload_bytes(false, bytes)?;
        self.operators.push(OperatorPart {
            operator: operator.into(),
            subtask,
            parallelism,
            file,
            size,
        });
        Ok(crate::checkpointed::CheckpointStats {
            files: 1,
            bytes_uploaded: size,
            bytes_referenced: 0,
        })
    }

    pub fn registry(&self) -> &SharedStateRegistry {
        &self.storage.registry
    }

    /// The storage this checkpoint is written to.
    pub fn storage(&self) -> &CheckpointStorage {
        self.storage
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the checkpoint was begun full ([`CheckpointStorage::begin_full`]).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The checkpoint's time (ms since the epoch, the caller's clock): states whose TTL asks for
    /// cleanup in full snapshots leave out what expired by then. 0 (the default) keeps everything.
    pub fn at(mut self, timestamp_ms: u64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// Uploads a full canonical snapshot of `backend` (its whole key-group range) as task-owned
    /// state, `written_by` naming the backend.
    pub(crate) fn add_snapshot(
        &mut self,
        backend: &dyn StateBackend,
        written_by: &str,
    ) -> StateResult<crate::checkpointed::CheckpointStats> {
        let bytes = snapshot::write(backend.snapshot_view()?.as_ref(), self.timestamp_ms)?;
        let key = self.new_key(false);
        let size = bytes.len() as u64;
        self.uploaded.push(key.clone());
        self.storage.remote.put(&key, Bytes::from(bytes))?;
        self.subtasks.push(SubtaskState {
            range: backend.key_group_range(),
            file: key,
            size,
            shared: Vec::new(),
            backend: Some(written_by.into()),
        });
        Ok(crate::checkpointed::CheckpointStats {
            files: 1,
            bytes_uploaded: size,
            bytes_referenced: 0,
        })
    }

    fn new_key(&self, shared: bool) -> String {
        let area = if shared { "shared" } else { "taskowned" };
        format!("{}/{area}/{}", self.storage.job, uuid_v4())
    }

    /// Uploads a file to `shared/` or `taskowned/`; an aborted checkpoint deletes it again.
    pub fn upload_file(
        &mut self,
        shared: bool,
        path: &std::path::Path,
    ) -> StateResult<(String, Uploaded)> {
        let key = self.new_key(shared);
        self.uploaded.push(key.clone());
        let up = self.storage.remote.put_file(&key, path)?;
        Ok((key, up))
    }

    /// Uploads files with up to `threads` in flight; returns their keys, sizes and CRC32Cs in
    /// order.
    pub fn upload_files(
        &mut self,
        shared: bool,
        paths: &[std::path::PathBuf],
        threads: usize,
    ) -> StateResult<Vec<(String, Uploaded)>> {
        let keys: Vec<String> = paths.iter().map(|_| self.new_key(shared)).collect();
        self.uploaded.extend(keys.iter().cloned());
        let remote = self.storage.remote.as_ref();
        let done = in_parallel(paths.len(), threads, |i| {
            remote.put_file(&keys[i], &paths[i])
        })?;
        Ok(keys.into_iter().zip(done).collect())
    }

    pub fn upload_bytes(&mut self, shared: bool, bytes: Vec<u8>) -> StateResult<String> {
        let key = self.new_key(shared);
        self.uploaded.push(key.clone());
        self.storage.remote.put(&key, Bytes::from(bytes))?;
        Ok(key)
    }

    pub fn add_subtask(&mut self, state: SubtaskState) {
        self.subtasks.push(state);
    }

    /// Makes the checkpoint visible (atomically), then applies retention. Returns dropped ids.
    pub fn complete(mut self) -> StateResult<Vec<u64>> {
        self.make_visible()?;
        self.storage.apply_retention()
    }

    /// Makes the checkpoint visible (atomically) and leaves retention to a later
    /// [`CheckpointStorage::apply_retention`]: Flink, too, discards subsumed checkpoints after the
    /// new one is complete, off the checkpoint's path.
    pub fn complete_keeping_all(mut self) -> StateResult<()> {
        self.make_visible()
    }

    fn make_visible(&mut self) -> StateResult<()> {
        if let Some(why) = operator_parts_problem(&self.operators) {
            return Err(StateError::Invalid(format!(
                "checkpoint {} is incomplete: {why}",
                self.id
            )));
        }
        let c = CompletedCheckpoint {
            format: FORMAT.into(),
            version: 1,
            job: self.storage.job.clone(),
            id: self.id,
            max_parallelism: self.max_parallelism,
            subtasks: std::mem::take(&mut self.subtasks),
            operators: std::mem::take(&mut self.operators),
        };
        let bytes =
            Bytes::from(serde_json::to_vec_pretty(&c).expect("checkpoint metadata serializes"));
        let key = self.storage.metadata_key(self.id);
        match self.storage.remote.put_if_absent(&key, bytes.clone()) {
            Ok(()) => {}
            // Someone else's metadata (the retry layer read it back: not our bytes): nothing
            // references what this checkpoint uploaded, so an abort may delete it.
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(StateError::Invalid(format!(
                    "checkpoint {} exists already",
                    self.id
                )));
            }
            // The create may have landed unseen, or may still land (a request the client gave
            // up on can be applied after; the store's retry layer already looked for our bytes
            // and could not tell): a visible checkpoint might name these files, so they are
            // kept, never deleted.
            Err(e) => {
                self.done = true;
                self.uploaded.clear();
                return Err(StateError::transient(
                    format!(
                        "checkpoint {}: the outcome of writing its metadata is unknown; its \
                         files are kept",
                        self.id
                    ),
                    e,
                ));
            }
        }
        self.done = true;
        self.storage
            .registry
            .register(self.id, c.subtasks.iter().flat_map(|t| t.shared.clone()));
        Ok(())
    }

    /// Deletes everything this checkpoint uploaded.
    pub fn abort(mut self) -> StateResult<()> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> StateResult<()> {
        self.done = true;
        for key in std::mem::take(&mut self.uploaded) {
            self.storage.remote.delete(&key)?;
        }
        Ok(())
    }
}

impl Drop for PendingCheckpoint<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.cleanup();
        }
    }
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs `job(0..count)` on up to `threads` threads, each taking the next index, and returns the
/// results in index order; after the first error no new index is started, and that error is
/// returned.
pub(crate) fn in_parallel<T: Send + Sync, E: Send>(
    count: usize,
    threads: usize,
    job: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: Vec<std::sync::OnceLock<T>> =
        (0..count).map(|_| std::sync::OnceLock::new()).collect();
    let failure: std::sync::Mutex<Option<E>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(count.max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count || failure.lock().unwrap().is_some() {
                        break;
                    }
                    match job(i) {
                        Ok(r) => drop(done[i].set(r)),
                        Err(e) => drop(failure.lock().unwrap().get_or_insert(e)),
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap() {
        Some(e) => Err(e),
        // No error: every index was taken, ran once and set its result.
        None => Ok(done
            .into_iter()
            .map(|r| r.into_inner().expect("every index ran"))
            .collect()),
    }
}

/// Ids of the completed checkpoints of `job` in `remote`, oldest first.
pub fn completed_ids(remote: &dyn RemoteStore, job: &str) -> StateResult<Vec<u64>> {
    // Object stores list by whole path segments: list the job, then pick the checkpoints.
    let prefix = format!("{job}/chk-");
    let mut ids: Vec<u64> = remote
        .list(&format!("{job}/"))?
        .into_iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(&prefix)?
                .strip_suffix("/_metadata")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort();
    Ok(ids)
}
