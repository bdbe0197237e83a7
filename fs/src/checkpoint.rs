//! Checkpoints in the object store: manifests, the registry of live mounts, retention and GC.
//!
//! Layout under the remote prefix:
//! - `data/<uuid>`: SST objects (written by mounts, never rewritten);
//! - `checkpoints/<id>/_metadata`: the manifest, written last and only if absent, so a checkpoint is
//!   visible exactly when it is complete;
//! - `checkpoints/<id>/files/<n>`: copies of the small local-placed files (MANIFEST, CURRENT, OPTIONS);
//! - `checkpoints/<id>/_claimed_by`: a restore in claim mode took the checkpoint over;
//! - `mounts/<mount-id>`: the objects a mount's journal names (its live references), rewritten at
//!   start, at every checkpoint and at unmount.
//!
//! Who deletes what: a mount deletes an object only if it created it and no checkpoint ever named it;
//! once a checkpoint names an object, only [`collect_garbage`] deletes it, and only when no retained
//! checkpoint and no mount record names it and it is older than the grace period.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{RemoteStore, StoreError};

pub const FORMAT: &str = "statefs-checkpoint";
pub const VERSION: u32 = 1;

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the checkpoint directory, `/`-separated.
    pub name: String,
    /// Object holding the bytes: `data/<uuid>` (an SST, shared) or `checkpoints/<id>/files/<n>` (a
    /// copy of a small file, owned by the checkpoint).
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub id: String,
    /// The mount that published it.
    pub mount_id: String,
    pub created_ms: u64,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub mount_id: String,
    pub host: String,
    pub local_dir: String,
    pub updated_ms: u64,
    /// Every object key the mount's journal names.
    pub keys: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {id}: manifest rejected: {why}")]
    BadManifest { id: String, why: String },
    #[error("no checkpoint {0} in the store")]
    NotFound(String),
    #[error("bad checkpoint id {0:?}")]
    BadId(String),
    #[error("object store: {0}")]
    Remote(#[from] StoreError),
    #[error("no mount record {0} in the store")]
    NoMount(String),
    #[error("mount {id} not forgotten: {why}")]
    MountRefused { id: String, why: String },
}

pub fn manifest_key(id: &str) -> String {
    format!("checkpoints/{id}/_metadata")
}

pub fn claim_key(id: &str) -> String {
    format!("checkpoints/{id}/_claimed_by")
}

pub fn file_key(id: &str, n: usize) -> String {
    format!("checkpoints/{id}/files/{n}")
}

pub fn mount_record_key(mount_id: &str) -> String {
    format!("mounts/{mount_id}")
}

/// This host's name as mount records carry it (empty if the system will not say).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new checkpoint id: sortable by creation time, unique by its random tail.
pub fn new_id() -> String {
    format!(
        "{:013}-{}",
        now_ms(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Whether `id` can be the last part of a key: at most 64 letters, digits and dashes, not
/// starting with a dash. Checkpoint ids and mount ids are checked with it before they become keys.
fn is_plain_id(id: &str) -> bool {
    id.len() <= 64
        && !id.is_empty()
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.starts_with('-')
}

/// Ids are what [`new_id`] makes: digits, a dash, hex. Anything else never reaches a key.
pub fn check_id(id: &str) -> Result<(), CheckpointError> {
    if is_plain_id(id) {
        Ok(())
    } else {
        Err(CheckpointError::BadId(id.to_string()))
    }
}

fn is_data_key(key: &str) -> bool {
    key.strip_prefix("data/")
        .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok() && !u.contains('/'))
}

/// A name is a relative path of ordinary components (what a restore accepts).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('/') {
        return Err(format!("file name {name:?} is empty or absolute"));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') || part.len() > 255
        {
            return Err(format!("file name {name:?} has a bad component {part:?}"));
        }
    }
    Ok(())
}

impl Manifest {
    /// Parses and checks a manifest: format and version, safe names, keys inside this checkpoint or
    /// the data area, no duplicates. Sizes are checked against the store by [`verify_objects`].
    pub fn parse(id: &str, bytes: &[u8]) -> Result<Manifest, CheckpointError> {
        let bad = |why: String| CheckpointError::BadManifest {
            id: id.to_string(),
            why,
        };
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(bad(format!("unknown format {:?}", m.format)));
        }
        if m.version != VERSION {
            return Err(bad(format!(
                "unsupported version {} (this statefs reads {VERSION})",
                m.version
            )));
        }
        if m.id != id {
            return Err(bad(format!("names itself {:?}", m.id)));
        }
        let mut seen = BTreeSet::new();
        for f in &m.files {
            check_name(&f.name).map_err(&bad)?;
            if !seen.insert(f.name.as_str()) {
                return Err(bad(format!("file {:?} listed twice", f.name)));
            }
            let own = f
                .key
                .strip_prefix(&format!("checkpoints/{id}/files/"))
                .is_some_and(|n| n.parse::<usize>().is_ok());
            if !own && !is_data_key(&f.key) {
                return Err(bad(format!(
                    "file {:?} names key {:?} outside the checkpoint and the data area",
                    f.name, f.key
                )));
            }
        }
        Ok(m)
    }

    /// Object keys in the data area this checkpoint references.
    pub fn data_keys(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .map(|f| f.key.as_str())
            .filter(|k| k.starts_with("data/"))
    }
}

/// Reads and checks a checkpoint's manifest.
pub fn load_manifest(remote: &dyn RemoteStore, id: &str) -> Result<Manifest, CheckpointError> {
    check_id(id)?;
    let bytes = match remote.get(&manifest_key(id)) {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => return Err(CheckpointError::NotFound(id.to_string())),
        Err(e) => return Err(e.into()),
    };
    Manifest::parse(id, &bytes)
}

/// HEADs in flight while verifying a checkpoint: a restore's latency on S3 is this many times
/// shorter than one HEAD per file in a row.
const VERIFY_PARALLELISM: usize = 16;

/// Deletes in flight while dropping a checkpoint's own files.
const DELETE_PARALLELISM: usize = 8;

/// `f` of every item, on up to `workers` threads at once (each takes the next item when done);
/// the results in item order. For store requests whose latency, not bandwidth, sets the time.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return out;
                        };
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a store request worker panicked"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    // Every index below the item count was taken by exactly one worker.
    debug_assert_eq!(out.len(), items.len());
    out.into_iter().map(|(_, r)| r).collect()
}

/// Checks that every object the manifest names exists with the size it claims. The HEADs run in
/// parallel; the error reported is that of the first bad file in manifest order.
pub fn verify_objects(remote: &dyn RemoteStore, m: &Manifest) -> Result<(), CheckpointError> {
    let sizes = in_parallel(&m.files, VERIFY_PARALLELISM, |f| remote.head(&f.key));
    for (f, head) in m.files.iter().zip(sizes) {
        match head {
            Ok(size) if size == f.size => {}
            Ok(size) => {
                return Err(CheckpointError::BadManifest {
                    id: m.id.clone(),
                    why: format!(
                        "file {:?}: manifest says {} bytes, object {} has {size}",
                        f.name, f.size, f.key
                    ),
                });
            }
            Err(StoreError::NotFound { .. }) => {
                return Err(CheckpointError::BadManifest {
                    id: m.id.clone(),
                    why: format!("file {:?}: object {} is missing", f.name, f.key),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A checkpoint as `statefs checkpoints list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub id: String,
    pub mount_id: String,
    pub created_ms: u64,
    pub files: usize,
    pub bytes: u64,
    pub claimed_by: Option<String>,
}

/// What one LIST of `checkpoints/` shows: ids of complete checkpoints (those with a manifest),
/// oldest first, and the ids among them that carry a claim.
fn scan(remote: &dyn RemoteStore) -> Result<(Vec<String>, HashSet<String>), CheckpointError> {
    let (mut ids, mut claimed) = (Vec::new(), HashSet::new());
    for o in remote.list("checkpoints/")? {
        let Some(rest) = o.key.strip_prefix("checkpoints/") else {
            continue;
        };
        if let Some(id) = rest.strip_suffix("/_metadata") {
            ids.push(id.to_string());
        } else if let Some(id) = rest.strip_suffix("/_claimed_by") {
            claimed.insert(id.to_string());
        }
    }
    ids.retain(|id| check_id(id).is_ok());
    ids.sort();
    Ok((ids, claimed))
}

/// Ids of complete checkpoints (those with a manifest), oldest first.
pub fn list_ids(remote: &dyn RemoteStore) -> Result<Vec<String>, CheckpointError> {
    Ok(scan(remote)?.0)
}

/// What a checkpoint's manifest says about it, kept across listings. Sound because a manifest is
/// written once (put-if-absent) under an id no other checkpoint ever gets, and never rewritten: a
/// dropped checkpoint's id leaves the listing and is never read again.
#[derive(Clone, Debug)]
struct ManifestSummary {
    mount_id: String,
    created_ms: u64,
    files: usize,
    bytes: u64,
}

/// Manifest summaries already read, so a mount's retention after each publish reads only the
/// manifests it has not seen: one LIST per publish, not a GET per checkpoint in the store (which
/// may be a bucket shared with many jobs).
#[derive(Default, Debug)]
pub struct ManifestCache(parking_lot::Mutex<HashMap<String, ManifestSummary>>);

/// Every complete checkpoint in the store, oldest first. A manifest that cannot be read is an
/// error naming it.
pub fn list(remote: &dyn RemoteStore) -> Result<Vec<CheckpointInfo>, CheckpointError> {
    list_inner(remote, &ManifestCache::default(), false)
}

impl ManifestCache {
    /// Records a manifest this process just wrote, so the next listing need not read it back.
    pub fn remember(&self, m: &Manifest) {
        self.keep(m);
    }

    /// Records `m`'s summary and returns it.
    fn keep(&self, m: &Manifest) -> ManifestSummary {
        let summary = ManifestSummary {
            mount_id: m.mount_id.clone(),
            created_ms: m.created_ms,
            files: m.files.len(),
            bytes: m.files.iter().map(|f| f.size).sum(),
        };
        self.0.lock().insert(m.id.clone(), summary.clone());
        summary
    }
}

/// [`list`] for retention, reading only manifests `cache` lacks. A checkpoint whose manifest is
/// gone by the time it is read (another mount dropped it after the LIST) or cannot be parsed is
/// left out with a warning: retention must not stop over another job's checkpoint, and leaving a
/// checkpoint alone is the safe side. A claim is read only where the listing shows one: claims
/// change hands (a later restore with claim rewrites it), so they are never cached.
pub fn list_with(
    remote: &dyn RemoteStore,
    cache: &ManifestCache,
) -> Result<Vec<CheckpointInfo>, CheckpointError> {
    list_inner(remote, cache, true)
}

fn list_inner(
    remote: &dyn RemoteStore,
    cache: &ManifestCache,
    skip_unreadable: bool,
) -> Result<Vec<CheckpointInfo>, CheckpointError> {
    let (ids, claimed) = scan(remote)?;
    let mut out = Vec::new();
    for id in ids {
        let known = cache.0.lock().get(&id).cloned();
        let m = match known {
            Some(m) => m,
            None => match load_manifest(remote, &id) {
                Ok(m) => cache.keep(&m),
                Err(e @ (CheckpointError::NotFound(_) | CheckpointError::BadManifest { .. }))
                    if skip_unreadable =>
                {
                    tracing::warn!(checkpoint = %id, error = %e, "left out of retention");
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let claimed_by = if claimed.contains(&id) {
            match remote.get(&claim_key(&id)) {
                Ok(b) => Some(String::from_utf8_lossy(&b).trim().to_string()),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        out.push(CheckpointInfo {
            id,
            mount_id: m.mount_id,
            created_ms: m.created_ms,
            files: m.files,
            bytes: m.bytes,
            claimed_by,
        });
    }
    let listed: HashSet<&str> = out.iter().map(|c| c.id.as_str()).collect();
    cache.0.lock().retain(|id, _| listed.contains(id.as_str()));
    Ok(out)
}

/// Deletes a checkpoint: its manifest first (it is gone from then on), then its own files. Data
/// objects it referenced are left to [`collect_garbage`].
pub fn drop_checkpoint(remote: &dyn RemoteStore, id: &str) -> Result<(), CheckpointError> {
    check_id(id)?;
    remote.delete(&manifest_key(id))?;
    let files = remote.list(&format!("checkpoints/{id}/"))?;
    for deleted in in_parallel(&files, DELETE_PARALLELISM, |o| remote.delete(&o.key)) {
        deleted?;
    }
    Ok(())
}

/// Keeps the newest `retained` checkpoints owned by `mount_id` (published by it, or claimed by it);
/// drops the older ones. Returns the dropped ids.
pub fn apply_retention(
    remote: &dyn RemoteStore,
    mount_id: &str,
    retained: usize,
    cache: &ManifestCache,
) -> Result<Vec<String>, CheckpointError> {
    let owned: Vec<CheckpointInfo> = list_with(remote, cache)?
        .into_iter()
        .filter(|c| c.claimed_by.as_deref().unwrap_or(&c.mount_id) == mount_id)
        .collect();
    let mut dropped = Vec::new();
    if owned.len() > retained {
        for c in &owned[..owned.len() - retained] {
            drop_checkpoint(remote, &c.id)?;
            dropped.push(c.id.clone());
        }
    }
    Ok(dropped)
}

/// How often a running mount rewrites its record even when nothing changed, so that a record's
/// age tells a running mount from a stopped one ([`forget_mount`] refuses records younger than
/// several of these).
pub const MOUNT_HEARTBEAT: Duration = Duration::from_secs(600);

/// Every mount record in the store, least recently updated first. An unreadable record is an
/// error naming it.
pub fn list_mounts(remote: &dyn RemoteStore) -> Result<Vec<MountRecord>, CheckpointError> {
    let mut records = Vec::new();
    for o in remote.list("mounts/")? {
        records.push(read_mount_record(remote, &o.key)?);
    }
    records.sort_by_key(|r| r.updated_ms);
    Ok(records)
}

fn read_mount_record(remote: &dyn RemoteStore, key: &str) -> Result<MountRecord, CheckpointError> {
    let bytes = remote.get(key)?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::BadManifest {
        id: key.to_string(),
        why: format!("mount record unreadable ({e})"),
    })
}

/// Deletes the record of a mount that will never run again, so that `statefs gc` may delete the
/// objects only it referenced (a record keeps every object its journal names alive).
///
/// Refused when the record was updated less than `min_age` ago (a running mount rewrites it at
/// least every [`MOUNT_HEARTBEAT`]), and when the record's local dir on this host (`this_host`)
/// still holds this mount's `MOUNT_ID`: that dir can be mounted again and would find its objects
/// gone. A local dir on another host cannot be checked from here; forgetting a mount whose dir
/// lives on is the caller's mistake to avoid.
pub fn forget_mount(
    remote: &dyn RemoteStore,
    mount_id: &str,
    min_age: Duration,
    this_host: &str,
) -> Result<MountRecord, CheckpointError> {
    let refused = |why: String| CheckpointError::MountRefused {
        id: mount_id.to_string(),
        why,
    };
    if !is_plain_id(mount_id) {
        return Err(refused("not a mount id".into()));
    }
    let key = mount_record_key(mount_id);
    let record = match read_mount_record(remote, &key) {
        Err(CheckpointError::Remote(StoreError::NotFound { .. })) => {
            return Err(CheckpointError::NoMount(mount_id.to_string()));
        }
        other => other?,
    };
    let age = Duration::from_millis(now_ms().saturating_sub(record.updated_ms));
    if age < min_age {
        return Err(refused(format!(
            "its record was updated {}s ago, less than the minimum age of {}s (a running mount rewrites it every {}s)",
            age.as_secs(),
            min_age.as_secs(),
            MOUNT_HEARTBEAT.as_secs()
        )));
    }
    let local_dir = std::path::Path::new(&record.local_dir);
    if record.host == this_host && !local_dir.is_absolute() {
        return Err(refused(format!(
            "its local dir {} is a relative path, which cannot be checked from here",
            record.local_dir
        )));
    }
    if record.host == this_host
        && std::fs::read_to_string(local_dir.join("MOUNT_ID")).is_ok_and(|id| id.trim() == mount_id)
    {
        return Err(refused(format!(
            "its local dir {} is on this host and is still this mount's: it can be mounted again. \
             Remove it first if it never will be",
            record.local_dir
        )));
    }
    remote.delete(&key)?;
    Ok(record)
}

pub fn write_mount_record(
    remote: &dyn RemoteStore,
    record: &MountRecord,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(record).expect("record serializes");
    remote.put(&mount_record_key(&record.mount_id), Bytes::from(bytes))
}

/// What [`collect_garbage`] found (and, unless a dry run, deleted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Unreferenced data objects older than the grace period.
    pub garbage: Vec<(String, u64)>,
    /// Files of checkpoints whose manifest never appeared (an interrupted publish), old enough.
    pub abandoned: Vec<String>,
    /// Unreferenced objects younger than the grace period: kept.
    pub too_young: usize,
    pub referenced: usize,
}

/// Deletes data objects that no retained checkpoint and no mount record references, and leftovers of
/// interrupted publishes, if older than `min_age`. A running mount registers its references before
/// the objects can be that old, so its files are never collected.
pub fn collect_garbage(
    remote: &dyn RemoteStore,
    min_age: Duration,
    dry_run: bool,
) -> Result<GcReport, CheckpointError> {
    let now = SystemTime::now();
    let old_enough = |t: SystemTime| now.duration_since(t).unwrap_or_default() >= min_age;
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    let ids = list_ids(remote)?;
    for id in &ids {
        let m = load_manifest(remote, id)?;
        referenced.extend(m.data_keys().map(str::to_string));
    }
    let mounts = list_mounts(remote).map_err(|e| match e {
        CheckpointError::BadManifest { id, why } => CheckpointError::BadManifest {
            id,
            why: format!("{why}; refusing to collect anything"),
        },
        e => e,
    })?;
    for r in mounts {
        referenced.extend(r.keys);
    }
    let mut report = GcReport {
        referenced: referenced.len(),
        ..Default::default()
    };
    for o in remote.list("data/")? {
        if referenced.contains(&o.key) {
            continue;
        }
        if old_enough(o.modified) {
            report.garbage.push((o.key, o.size));
        } else {
            report.too_young += 1;
        }
    }
    let complete: BTreeSet<&String> = ids.iter().collect();
    let mut by_checkpoint: BTreeMap<String, Vec<(String, SystemTime)>> = BTreeMap::new();
    for o in remote.list("checkpoints/")? {
        let Some(id) = o
            .key
            .strip_prefix("checkpoints/")
            .and_then(|r| r.split('/').next())
        else {
            continue;
        };
        if !complete.contains(&id.to_string()) {
            by_checkpoint
                .entry(id.to_string())
                .or_default()
                .push((o.key.clone(), o.modified));
        }
    }
    for (_, files) in by_checkpoint {
        if files.iter().all(|(_, t)| old_enough(*t)) {
            report.abandoned.extend(files.into_iter().map(|(k, _)| k));
        }
    }
    if !dry_run {
        for (key, _) in &report.garbage {
            remote.delete(key)?;
        }
        for key in &report.abandoned {
            remote.delete(key)?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, files: Vec<ManifestFile>) -> Vec<u8> {
        serde_json::to_vec(&Manifest {
            format: FORMAT.into(),
            version: VERSION,
            id: id.into(),
            mount_id: "m".into(),
            created_ms: 1,
            files,
        })
        .unwrap()
    }

    fn file(name: &str, key: &str) -> ManifestFile {
        ManifestFile {
            name: name.into(),
            key: key.into(),
            size: 1,
            crc32c: 0,
        }
    }

    fn memory_store() -> crate::store::ObjectStoreRemote {
        crate::store::RemoteSpec::parse("memory://")
            .unwrap()
            .open(&Default::default(), crate::mount::runtime().unwrap())
            .unwrap()
    }

    /// Verification HEADs the objects in parallel (a restore from a distant store waits for about
    /// files / 16 round trips, not one per file), and still reports the first bad file in manifest
    /// order, whichever HEAD finished first.
    #[test]
    fn objects_are_verified_in_parallel_and_the_first_bad_file_is_named() {
        use crate::store::{FailingRemote, FaultPlan};
        let store = memory_store();
        let plan = FaultPlan::default();
        let remote = FailingRemote::new(store, plan.clone());
        let id = "0000000000001-abcdef12";
        let mut files = Vec::new();
        for i in 0..64 {
            let key = format!("data/{}", uuid::Uuid::new_v4());
            // Files 10 and 40 are missing from the store.
            if i != 10 && i != 40 {
                remote.put(&key, Bytes::from_static(b"x")).unwrap();
            }
            files.push(file(&format!("{i:06}.sst"), &key));
        }
        let m = Manifest::parse(id, &manifest(id, files)).unwrap();
        plan.set_latency(std::time::Duration::from_millis(5));
        let err = verify_objects(&remote, &m).unwrap_err().to_string();
        assert!(
            err.contains("000010.sst") && err.contains("missing"),
            "{err}"
        );
        let most = plan.max_in_flight();
        assert!(
            most > 1 && most <= VERIFY_PARALLELISM as u64,
            "{most} HEADs at once"
        );
    }

    /// Retention after each publish reads only the manifests it has not seen (one LIST and no
    /// GET for a store whose checkpoints it knows) and reads a claim only where the listing shows
    /// one; a checkpoint another mount claims since the last listing is not dropped.
    #[test]
    fn retention_reads_new_manifests_and_current_claims_only() {
        use crate::store::{MetricsRemote, RemoteMetrics};
        use std::sync::atomic::Ordering::Relaxed;
        let store = memory_store();
        let metrics = std::sync::Arc::new(RemoteMetrics::default());
        let remote = MetricsRemote::new(store, metrics.clone());
        let put = |id: &str, mount: &str| {
            let mut m: serde_json::Value = serde_json::from_slice(&manifest(id, vec![])).unwrap();
            m["mount_id"] = mount.into();
            remote
                .put(
                    &manifest_key(id),
                    Bytes::from(serde_json::to_vec(&m).unwrap()),
                )
                .unwrap();
        };
        // Forty checkpoints of other jobs sharing the bucket, and three of mount "m".
        for i in 0..40 {
            put(&format!("{:013}-0000aaaa", i), "other");
        }
        for i in 40..43 {
            put(&format!("{:013}-0000bbbb", i), "m");
        }
        // And one whose manifest is garbage: retention leaves it alone and goes on.
        remote
            .put(
                &manifest_key("0000000000039-0000cccc"),
                Bytes::from_static(b"{not json"),
            )
            .unwrap();
        let cache = ManifestCache::default();
        let dropped = apply_retention(&remote, "m", 2, &cache).unwrap();
        assert_eq!(dropped, vec!["0000000000040-0000bbbb".to_string()]);
        assert_eq!(
            metrics.gets.load(Relaxed),
            44,
            "the first listing reads each manifest once"
        );
        assert!(
            list(&remote).is_err(),
            "a plain listing names the bad manifest"
        );

        // A new checkpoint of "m", and another mount claims the oldest one "m" still owns.
        put("0000000000043-0000bbbb", "m");
        remote
            .put(
                &claim_key("0000000000041-0000bbbb"),
                Bytes::from_static(b"n"),
            )
            .unwrap();
        let (gets, lists) = (metrics.gets.load(Relaxed), metrics.lists.load(Relaxed));
        let dropped = apply_retention(&remote, "m", 2, &cache).unwrap();
        assert!(
            dropped.is_empty(),
            "dropped {dropped:?}: 41 is claimed away, 42 and 43 kept"
        );
        assert_eq!(
            metrics.gets.load(Relaxed) - gets,
            3,
            "the new manifest, the one claim and the unreadable one again, nothing else"
        );
        assert_eq!(metrics.lists.load(Relaxed) - lists, 1);
        let ids: Vec<String> = list_with(&remote, &cache)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids.len(), 43);
        assert!(ids.contains(&"0000000000041-0000bbbb".to_string()));
    }

    #[test]
    fn hostile_manifests_are_rejected_with_their_reason() {
        let id = "0000000000001-abcdef12";
        let data = format!("data/{}", uuid::Uuid::new_v4());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "not a manifest"),
            (b"[]".to_vec(), "not a manifest"),
            (manifest("other-id", vec![]), "names itself"),
            (
                serde_json::to_vec(&serde_json::json!({"format": FORMAT, "version": 99, "id": id, "mount_id": "m", "created_ms": 1, "files": []})).unwrap(),
                "unsupported version 99",
            ),
            (
                serde_json::to_vec(&serde_json::json!({"format": "zip", "version": 1, "id": id, "mount_id": "m", "created_ms": 1, "files": []})).unwrap(),
                "unknown format",
            ),
            (manifest(id, vec![file("../etc/passwd", &data)]), "bad component \"..\""),
            (manifest(id, vec![file("/abs", &data)]), "empty or absolute"),
            (manifest(id, vec![file("a//b", &data)]), "bad component \"\""),
            (manifest(id, vec![file("x.sst", "../../elsewhere")]), "outside the checkpoint"),
            (manifest(id, vec![file("x.sst", "data/not-a-uuid")]), "outside the checkpoint"),
            (manifest(id, vec![file("x", "checkpoints/other/files/1")]), "outside the checkpoint"),
            (manifest(id, vec![file("x.sst", &data), file("x.sst", &data)]), "listed twice"),
        ];
        for (bytes, want) in cases {
            let err = Manifest::parse(id, &bytes).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let ok = manifest(
            id,
            vec![
                file("db/000001.sst", &data),
                file("CURRENT", &file_key(id, 0)),
            ],
        );
        assert_eq!(Manifest::parse(id, &ok).unwrap().data_keys().count(), 1);
    }

    /// A mount is forgotten only when its record is old enough and its local dir on this host is
    /// no longer its own; then only its record goes, and gc may take its objects.
    #[test]
    fn a_mount_is_forgotten_only_when_it_cannot_come_back() {
        let store = memory_store();
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local");
        std::fs::create_dir(&local).unwrap();
        std::fs::write(local.join("MOUNT_ID"), "m-1\n").unwrap();
        let record = |updated_ms| MountRecord {
            mount_id: "m-1".into(),
            host: "here".into(),
            local_dir: local.display().to_string(),
            updated_ms,
            keys: vec!["data/a".into()],
        };
        let hour = Duration::from_secs(3600);
        write_mount_record(&store, &record(now_ms())).unwrap();
        let err = forget_mount(&store, "m-1", hour, "here").unwrap_err();
        assert!(err.to_string().contains("updated 0s ago"), "{err}");
        write_mount_record(&store, &record(now_ms() - 2 * 3_600_000)).unwrap();
        let err = forget_mount(&store, "m-1", hour, "here").unwrap_err();
        assert!(err.to_string().contains("can be mounted again"), "{err}");
        assert_eq!(
            list_mounts(&store).unwrap().len(),
            1,
            "refusals delete nothing"
        );
        // Another host's dir cannot be checked from here; this one's can once it is gone.
        assert_eq!(
            forget_mount(&store, "m-1", hour, "elsewhere").unwrap().keys,
            ["data/a"]
        );
        assert!(list_mounts(&store).unwrap().is_empty());
        write_mount_record(&store, &record(now_ms() - 2 * 3_600_000)).unwrap();
        std::fs::remove_dir_all(&local).unwrap();
        forget_mount(&store, "m-1", hour, "here").unwrap();
        assert!(matches!(
            forget_mount(&store, "m-1", hour, "here"),
            Err(CheckpointError::NoMount(_))
        ));
        let relative = MountRecord {
            local_dir: "local".into(),
            ..record(now_ms() - 2 * 3_600_000)
        };
        write_mount_record(&store, &relative).unwrap();
        let err = forget_mount(&store, "m-1", hour, "here").unwrap_err();
        assert!(err.to_string().contains("relative path"), "{err}");
        assert!(
            forget_mount(&store, "../checkpoints", hour, "here")
                .unwrap_err()
                .to_string()
                .contains("not a mount id")
        );
    }

    /// An unreadable mount record stops gc before it deletes anything: it cannot know what that
    /// mount references.
    #[test]
    fn an_unreadable_mount_record_stops_gc() {
        let store = memory_store();
        store.put("data/orphan", Bytes::from_static(b"x")).unwrap();
        store
            .put("mounts/m-2", Bytes::from_static(b"{ not json"))
            .unwrap();
        let err = collect_garbage(&store, Duration::ZERO, false).unwrap_err();
        assert!(
            err.to_string().contains("refusing to collect anything"),
            "{err}"
        );
        assert_eq!(store.list("data/").unwrap().len(), 1);
        assert!(
            list_mounts(&store).is_err(),
            "listing names the bad record too"
        );
    }

    #[test]
    fn ids_are_checked_before_they_become_keys() {
        check_id(&new_id()).unwrap();
        for bad in ["", "../x", "a/b", "-x", "a b"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
