//! Checkpoints in the object store: manifests, retention, and (in [`gc`]) the registry of mounts,
//! the ownership of objects and garbage collection.
//!
//! Layout under the remote prefix:
//! - `data/<mount-id>/<uuid>`: SST objects, written by the mount named in the key, never
//!   rewritten (`data/<uuid>`: written by a version that did not name the mount);
//! - `copies/<mount-id>/<uuid>`: copies of small local-placed files (MANIFEST, CURRENT, OPTIONS)
//!   that a checkpoint of that mount names;
//! - `checkpoints/<id>/_metadata`: the manifest, written last and only if absent, so a checkpoint is
//!   visible exactly when it is complete;
//! - `checkpoints/<id>/_claimed_by`: a restore in claim mode took the checkpoint over;
//! - `checkpoints/<id>/files/<n>`: copies made by versions that did not name the mount;
//! - `mounts/<mount-id>`: the mount's record: every object its journal names and every object
//!   a publish or upload of it has in flight. It exists before the mount creates any object.
//!
//! Who deletes what is written in `docs/CHECKPOINTS.md` (Ownership) and in [`gc`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::store::{RemoteStore, StoreError};

pub mod gc;
pub use gc::{
    GcReport, MOUNT_HEARTBEAT, MountRecord, collect_garbage, forget_mount, list_mounts,
    write_mount_record,
};

pub const FORMAT: &str = "statefs-checkpoint";
pub const VERSION: u32 = 1;

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the checkpoint directory, `/`-separated.
    pub name: String,
    /// Object holding the bytes: `data/<mount>/<uuid>` (an SST, shared with the mount's
    /// journal), `copies/<mount>/<uuid>` (a copy of a small file), or, from older versions,
    /// `data/<uuid>` or `checkpoints/<id>/files/<n>`.
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
    /// A copy of a local-placed file: a restore writes it to the local dir instead of reading
    /// it lazily. (Older manifests: the files under `checkpoints/<id>/files/`.)
    #[serde(default)]
    pub local: bool,
    /// Rank in the publishing mount's hot list (0: its most recently used local copy), for files
    /// that had a local copy then: a restore loads those copies first, in this order, within its
    /// cache's room. Absent in older manifests and for files that had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heat: Option<u32>,
}

impl ManifestFile {
    /// Whether a restore makes this file local (downloaded) rather than remote (read lazily).
    pub fn is_local(&self) -> bool {
        self.local || self.key.starts_with("checkpoints/")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub id: String,
    /// The mount that published it.
    pub mount_id: String,
    pub created_ms: u64,
    /// The publishing mount's checkpoint sequence number (from its journal): the order of its
    /// checkpoints, which retention follows. 0 in manifests of older versions.
    #[serde(default)]
    pub seq: u64,
    pub files: Vec<ManifestFile>,
}

/// What `checkpoints/<id>/_claimed_by` holds: the mount that took the checkpoint over, and its
/// checkpoint sequence number at the claim (the claimed checkpoint comes before everything that
/// mount publishes after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub mount_id: String,
    pub seq: u64,
}

impl Claim {
    /// Reads a claim; older versions wrote the bare mount id (sequence 0).
    pub fn parse(bytes: &[u8]) -> Claim {
        serde_json::from_slice(bytes).unwrap_or_else(|_| Claim {
            mount_id: String::from_utf8_lossy(bytes).trim().to_string(),
            seq: 0,
        })
    }
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

/// Where copies of small files of `mount_id`'s checkpoints go.
pub fn copy_key(mount_id: &str, id: &uuid::Uuid) -> String {
    format!("copies/{mount_id}/{}", id.as_hyphenated())
}

pub fn mount_record_key(mount_id: &str) -> String {
    format!("mounts/{mount_id}")
}

/// The areas whose objects belong to the mount named in their key.
pub const OWNED_AREAS: [&str; 2] = ["data/", "copies/"];

/// The mount that created `key`, when the key names it (`data/<mount>/<uuid>`,
/// `copies/<mount>/<uuid>`); `None` for keys of older versions (`data/<uuid>`) and anything else.
pub fn owner_of(key: &str) -> Option<&str> {
    let rest = OWNED_AREAS.iter().find_map(|a| key.strip_prefix(a))?;
    let (owner, object) = rest.split_once('/')?;
    (is_plain_id(owner) && uuid::Uuid::parse_str(object).is_ok() && !object.contains('/'))
        .then_some(owner)
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

/// An object a checkpoint may name outside its own directory: one a mount owns, or an SST key
/// of an older version (`data/<uuid>`).
fn is_object_key(key: &str) -> bool {
    owner_of(key).is_some()
        || key
            .strip_prefix("data/")
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
            if !own && !is_object_key(&f.key) {
                return Err(bad(format!(
                    "file {:?} names key {:?} outside the checkpoint and the data area",
                    f.name, f.key
                )));
            }
        }
        Ok(m)
    }

    /// Keys of the SST objects this checkpoint references.
    pub fn data_keys(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .map(|f| f.key.as_str())
            .filter(|k| k.starts_with("data/"))
    }

    /// Every object this checkpoint references outside its own directory (SSTs and copies):
    /// what must outlive it.
    pub fn object_keys(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .map(|f| f.key.as_str())
            .filter(|k| !k.starts_with("checkpoints/"))
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
    let task = crate::progress::task(
        "checking the checkpoint's objects",
        Some(m.files.len() as u64),
    );
    let sizes = in_parallel(&m.files, VERIFY_PARALLELISM, |f| {
        let head = remote.head(&f.key);
        task.add(1);
        head
    });
    task.done();
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
    /// The publisher's sequence number ([`Manifest::seq`]).
    pub seq: u64,
    pub files: usize,
    pub bytes: u64,
    pub claimed_by: Option<Claim>,
}

impl CheckpointInfo {
    /// The mount that owns it now (its claimant, else its publisher) and that mount's sequence
    /// number for it: retention's order.
    pub fn owner(&self) -> (&str, u64) {
        match &self.claimed_by {
            Some(c) => (&c.mount_id, c.seq),
            None => (&self.mount_id, self.seq),
        }
    }
}

/// What one LIST of `checkpoints/` shows: ids of complete checkpoints (those with a manifest),
/// sorted, the ids among them that carry a claim, and ids with files but no manifest.
struct Scan {
    ids: Vec<String>,
    claimed: HashSet<String>,
    incomplete: BTreeMap<String, Vec<String>>,
}

fn scan(remote: &dyn RemoteStore) -> Result<Scan, CheckpointError> {
    let (mut ids, mut claimed) = (Vec::new(), HashSet::new());
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in remote.list("checkpoints/")? {
        let Some(rest) = o.key.strip_prefix("checkpoints/") else {
            continue;
        };
        let Some((id, _)) = rest.split_once('/') else {
            continue;
        };
        if rest.ends_with("/_metadata") {
            ids.push(id.to_string());
        } else {
            if rest.ends_with("/_claimed_by") {
                claimed.insert(id.to_string());
            }
            files.entry(id.to_string()).or_default().push(o.key);
        }
    }
    ids.retain(|id| check_id(id).is_ok());
    ids.sort();
    for id in &ids {
        files.remove(id);
    }
    Ok(Scan {
        ids,
        claimed,
        incomplete: files,
    })
}

/// Ids of complete checkpoints (those with a manifest), sorted.
pub fn list_ids(remote: &dyn RemoteStore) -> Result<Vec<String>, CheckpointError> {
    Ok(scan(remote)?.ids)
}

/// What a checkpoint's manifest says about it, kept across listings. Sound because a manifest is
/// written once (put-if-absent) under an id no other checkpoint ever gets, and never rewritten: a
/// dropped checkpoint's id leaves the listing and is never read again.
#[derive(Clone, Debug)]
struct ManifestSummary {
    mount_id: String,
    created_ms: u64,
    seq: u64,
    files: usize,
    bytes: u64,
    /// [`Manifest::object_keys`]: what the checkpoint keeps alive.
    keys: Arc<Vec<String>>,
}

/// Manifest summaries already read, so a mount's retention and release after each publish read
/// only the manifests they have not seen: one LIST per publish, not a GET per checkpoint in the
/// store (which may be a bucket shared with many jobs).
#[derive(Default, Debug)]
pub struct ManifestCache(parking_lot::Mutex<HashMap<String, ManifestSummary>>);

/// Every complete checkpoint in the store, oldest first by creation time (for a person; retention
/// orders by sequence numbers, not clocks). A manifest that cannot be read is an error naming it.
pub fn list(remote: &dyn RemoteStore) -> Result<Vec<CheckpointInfo>, CheckpointError> {
    let l = listed(remote, &ManifestCache::default())?;
    if let Some(e) = l.unreadable.into_iter().next() {
        return Err(e);
    }
    let mut out = l.infos;
    out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    Ok(out)
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
            seq: m.seq,
            files: m.files.len(),
            bytes: m.files.iter().map(|f| f.size).sum(),
            keys: Arc::new(m.object_keys().map(str::to_string).collect()),
        };
        self.0.lock().insert(m.id.clone(), summary.clone());
        summary
    }
}

/// One listing of the store's checkpoints, with what their manifests reference.
pub(crate) struct Listed {
    pub(crate) infos: Vec<CheckpointInfo>,
    /// Object keys the listed checkpoints reference.
    pub(crate) keys: Vec<Arc<Vec<String>>>,
    /// Manifests that could not be read or parsed: what they reference is unknown.
    pub(crate) unreadable: Vec<CheckpointError>,
}

/// [`list`] for retention, reading only manifests `cache` lacks. A checkpoint whose manifest
/// cannot be parsed is left out with a warning: retention must not stop over another job's
/// checkpoint, and leaving a checkpoint alone is the safe side. A claim is read only where the
/// listing shows one: claims change hands (a later restore with claim rewrites it), so they are
/// never cached.
pub fn list_with(
    remote: &dyn RemoteStore,
    cache: &ManifestCache,
) -> Result<Vec<CheckpointInfo>, CheckpointError> {
    let l = listed(remote, cache)?;
    for e in &l.unreadable {
        tracing::warn!(error = %e, "unreadable manifest left alone by retention");
    }
    Ok(l.infos)
}

/// Every checkpoint the store lists, each manifest read once into `cache`. A manifest gone by
/// the time it is read (dropped after the LIST) references nothing any more and is left out.
pub(crate) fn listed(
    remote: &dyn RemoteStore,
    cache: &ManifestCache,
) -> Result<Listed, CheckpointError> {
    let Scan { ids, claimed, .. } = scan(remote)?;
    let mut out = Listed {
        infos: Vec::new(),
        keys: Vec::new(),
        unreadable: Vec::new(),
    };
    for id in ids {
        let known = cache.0.lock().get(&id).cloned();
        let m = match known {
            Some(m) => m,
            None => match load_manifest(remote, &id) {
                Ok(m) => cache.keep(&m),
                Err(CheckpointError::NotFound(_)) => continue,
                Err(e @ CheckpointError::BadManifest { .. }) => {
                    out.unreadable.push(e);
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let claimed_by = if claimed.contains(&id) {
            match remote.get(&claim_key(&id)) {
                Ok(b) => Some(Claim::parse(&b)),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        out.keys.push(m.keys.clone());
        out.infos.push(CheckpointInfo {
            id,
            mount_id: m.mount_id,
            created_ms: m.created_ms,
            seq: m.seq,
            files: m.files,
            bytes: m.bytes,
            claimed_by,
        });
    }
    let listed: HashSet<&str> = out.infos.iter().map(|c| c.id.as_str()).collect();
    cache.0.lock().retain(|id, _| listed.contains(id.as_str()));
    Ok(out)
}

/// Deletes a checkpoint: its manifest first (it is gone from then on), then what lies in its
/// directory (a claim, copies of older versions). The objects it referenced are released by
/// their owner ([`gc::release_orphans`]) or, once the owner is forgotten, by
/// [`gc::collect_garbage`].
pub fn drop_checkpoint(remote: &dyn RemoteStore, id: &str) -> Result<(), CheckpointError> {
    check_id(id)?;
    remote.delete(&manifest_key(id))?;
    let files = remote.list(&format!("checkpoints/{id}/"))?;
    for deleted in in_parallel(&files, DELETE_PARALLELISM, |o| remote.delete(&o.key)) {
        deleted?;
    }
    Ok(())
}

/// Whose checkpoints a retention keeps, and what that mount knows of its own order.
#[derive(Debug, Clone, Copy)]
pub struct RetentionOf<'a> {
    pub mount_id: &'a str,
    /// The mount's checkpoint sequence number now (from its journal). A checkpoint that names
    /// this mount with a higher number was not made by it (another host's clock or a hand-made
    /// manifest cannot forge this mount's order): it is left alone, never dropped, never kept in
    /// place of one of ours.
    pub seq_now: u64,
    /// The checkpoint just published, never dropped by the retention that follows it.
    pub just_published: Option<&'a str>,
}

/// Keeps the newest `retained` checkpoints owned by the mount (published by it, or claimed by
/// it), newest by the mount's own sequence numbers; drops the older ones. Returns the dropped ids.
pub fn apply_retention(
    remote: &dyn RemoteStore,
    of: RetentionOf<'_>,
    retained: usize,
    cache: &ManifestCache,
) -> Result<Vec<String>, CheckpointError> {
    let mut owned: Vec<(u64, CheckpointInfo)> = Vec::new();
    for c in list_with(remote, cache)? {
        let (owner, seq) = c.owner();
        if owner != of.mount_id {
            continue;
        }
        if seq > of.seq_now {
            tracing::warn!(checkpoint = %c.id, seq, seq_now = of.seq_now, "a checkpoint names this mount with a sequence number it never reached; left alone");
            continue;
        }
        owned.push((seq, c));
    }
    owned.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    let mut dropped = Vec::new();
    if owned.len() > retained {
        for (_, c) in &owned[..owned.len() - retained] {
            if Some(c.id.as_str()) == of.just_published {
                continue;
            }
            drop_checkpoint(remote, &c.id)?;
            dropped.push(c.id.clone());
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    pub(crate) fn manifest(id: &str, files: Vec<ManifestFile>) -> Vec<u8> {
        manifest_of(id, "m", 1, files)
    }

    pub(crate) fn manifest_of(
        id: &str,
        mount: &str,
        seq: u64,
        files: Vec<ManifestFile>,
    ) -> Vec<u8> {
        serde_json::to_vec(&Manifest {
            format: FORMAT.into(),
            version: VERSION,
            id: id.into(),
            mount_id: mount.into(),
            created_ms: 1,
            seq,
            files,
        })
        .unwrap()
    }

    /// Stores a manifest of no files for checkpoint `id` of `mount` at sequence `seq`.
    fn put_manifest(remote: &dyn RemoteStore, id: &str, mount: &str, seq: u64) {
        let bytes = Bytes::from(manifest_of(id, mount, seq, vec![]));
        remote.put(&manifest_key(id), bytes).unwrap();
    }

    fn put_claim(remote: &dyn RemoteStore, id: &str, claim: &Claim) {
        let bytes = Bytes::from(serde_json::to_vec(claim).unwrap());
        remote.put(&claim_key(id), bytes).unwrap();
    }

    pub(crate) fn file(name: &str, key: &str) -> ManifestFile {
        ManifestFile {
            name: name.into(),
            key: key.into(),
            size: 1,
            crc32c: 0,
            local: false,
            heat: None,
        }
    }

    pub(crate) fn memory_store() -> crate::store::ObjectStoreRemote {
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
        let put = |id: &str, mount: &str, seq: u64| put_manifest(&remote, id, mount, seq);
        // Forty checkpoints of other jobs sharing the bucket, and three of mount "m".
        for i in 0..40 {
            put(&format!("{:013}-0000aaaa", i), "other", i);
        }
        for i in 40..43 {
            put(&format!("{:013}-0000bbbb", i), "m", i - 39);
        }
        // And one whose manifest is garbage: retention leaves it alone and goes on.
        remote
            .put(
                &manifest_key("0000000000039-0000cccc"),
                Bytes::from_static(b"{not json"),
            )
            .unwrap();
        let cache = ManifestCache::default();
        let of = |seq_now| RetentionOf {
            mount_id: "m",
            seq_now,
            just_published: None,
        };
        let dropped = apply_retention(&remote, of(3), 2, &cache).unwrap();
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
        put("0000000000043-0000bbbb", "m", 4);
        let claim = Claim {
            mount_id: "n".into(),
            seq: 1,
        };
        put_claim(&remote, "0000000000041-0000bbbb", &claim);
        let (gets, lists) = (metrics.gets.load(Relaxed), metrics.lists.load(Relaxed));
        let dropped = apply_retention(&remote, of(4), 2, &cache).unwrap();
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

    /// Retention follows the mount's own sequence numbers, never ids or clocks: a checkpoint
    /// whose id (a timestamp) lies in the future, written by a host whose clock runs fast or
    /// after a clock step, neither makes retention drop the checkpoint just published nor is
    /// taken for this mount's newest; one that names this mount with a sequence number it never
    /// reached is not this mount's and is left alone. Claims count at the claimant's sequence
    /// number.
    #[test]
    fn retention_orders_by_the_mounts_own_sequence_not_by_clocks() {
        let remote = memory_store();
        let put = |id: &str, mount: &str, seq: u64| put_manifest(&remote, id, mount, seq);
        // This mount's checkpoints 1 and 2, stamped by a clock that later stepped back: its
        // checkpoint 3 gets an id that sorts before both.
        put("2000000000000-00000001", "m", 1);
        put("2000000000001-00000002", "m", 2);
        put("1000000000000-00000003", "m", 3);
        // A forged (or foreign) one naming "m" with a sequence "m" never reached.
        put("3000000000000-0000ffff", "m", 99);
        let cache = ManifestCache::default();
        let dropped = apply_retention(
            &remote,
            RetentionOf {
                mount_id: "m",
                seq_now: 3,
                just_published: Some("1000000000000-00000003"),
            },
            1,
            &cache,
        )
        .unwrap();
        assert_eq!(
            dropped,
            ["2000000000000-00000001", "2000000000001-00000002"],
            "the newest by sequence is kept, the forged one left alone"
        );
        let ids = list_ids(&remote).unwrap();
        assert_eq!(ids, ["1000000000000-00000003", "3000000000000-0000ffff"]);

        // A checkpoint of another mount claimed by "m" at its sequence 4 comes after 3.
        put("0500000000000-0000aaaa", "other", 7);
        let claim = Claim {
            mount_id: "m".into(),
            seq: 4,
        };
        put_claim(&remote, "0500000000000-0000aaaa", &claim);
        let of = RetentionOf {
            mount_id: "m",
            seq_now: 4,
            just_published: None,
        };
        let dropped = apply_retention(&remote, of, 1, &cache).unwrap();
        assert_eq!(dropped, ["1000000000000-00000003"]);
        // A claim of an older version (the bare mount id) reads as sequence 0.
        assert_eq!(
            Claim::parse(b"m\n"),
            Claim {
                mount_id: "m".into(),
                seq: 0
            }
        );
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
            (manifest(id, vec![file("x.sst", &format!("data/m-1/{}/x", uuid::Uuid::new_v4()))]), "outside the checkpoint"),
            (manifest(id, vec![file("x.sst", &format!("data/../{}", uuid::Uuid::new_v4()))]), "outside the checkpoint"),
            (manifest(id, vec![file("x", &format!("copies/-m/{}", uuid::Uuid::new_v4()))]), "outside the checkpoint"),
            (manifest(id, vec![file("x", &format!("mounts/m/{}", uuid::Uuid::new_v4()))]), "outside the checkpoint"),
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
                file("CURRENT", &format!("checkpoints/{id}/files/0")),
                file("OPTIONS", &copy_key("m-1", &uuid::Uuid::new_v4())),
            ],
        );
        let m = Manifest::parse(id, &ok).unwrap();
        assert_eq!(m.data_keys().count(), 1);
        assert_eq!(
            m.object_keys().count(),
            2,
            "the SST and the copy, not the old own file"
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
