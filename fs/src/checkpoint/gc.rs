//! Who may delete an object, and when: mount records, the owner's release of its orphans, and
//! `statefs gc` for the objects of mounts that are gone.
//!
//! Invariants (docs/CHECKPOINTS.md, "Ownership", says why they hold):
//! - **I1** A mount `m` writes its record `mounts/<m>` before it creates any object, and every
//!   object it creates is under `data/<m>/` or `copies/<m>/`. The record stays until `m` is
//!   forgotten (`statefs mounts forget`: the operator's word that `m` never runs again); `m`
//!   refuses to start once its record is gone.
//! - **I2** While `mounts/<m>` exists, only `m` deletes `m`'s objects: its deleter (an object its
//!   journal dropped, owned and never named by a checkpoint) and [`release_orphans`]. Once the
//!   record is gone, only [`collect_garbage`] does.
//! - **I3** A mount's record names every object its journal names, every object a publish or an
//!   upload of it has in flight (until the manifest naming it exists, or the upload is recorded
//!   or abandoned), and, from before a restore first trusts them, the objects of the checkpoint
//!   it restores.
//! - **I4** Release and gc keep every object named by a record they list before the manifests
//!   ([`References`]: records, manifests, records again), by a manifest, or by a record listed
//!   after them; release also keeps what the owner's journal names and has in flight, read after
//!   it listed its objects.
//!
//! No clock, age or grace period takes part: `--min-age` only delays a deletion.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    CheckpointError, ManifestCache, OWNED_AREAS, is_plain_id, listed, mount_record_key, now_ms,
    owner_of, scan,
};
use crate::store::{ObjectInfo, RemoteStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub mount_id: String,
    pub host: String,
    pub local_dir: String,
    pub updated_ms: u64,
    /// Every object the mount's journal names, and every object it has in flight (I3).
    pub keys: Vec<String>,
}

/// How often a running mount rewrites its record even when nothing changed, so that a record's
/// age tells a running mount from a stopped one ([`forget_mount`] refuses records younger than
/// several of these).
pub const MOUNT_HEARTBEAT: Duration = Duration::from_secs(600);

/// Every mount record in the store, least recently updated first. An unreadable record is an
/// error naming it. A record deleted between the LIST and its GET (a mount forgotten meanwhile)
/// is left out.
pub fn list_mounts(remote: &dyn RemoteStore) -> Result<Vec<MountRecord>, CheckpointError> {
    let mut records = Vec::new();
    for o in remote.list("mounts/")? {
        match read_mount_record(remote, &o.key) {
            Ok(r) => records.push(r),
            Err(CheckpointError::Remote(StoreError::NotFound { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    records.sort_by_key(|r| r.updated_ms);
    Ok(records)
}

fn read_mount_record(remote: &dyn RemoteStore, key: &str) -> Result<MountRecord, CheckpointError> {
    MountRecord::parse(key, &remote.get(key)?)
}

/// Whether `id` can be a mount id: what object keys and record names are built from.
pub fn valid_mount_id(id: &str) -> bool {
    super::is_plain_id(id)
}

impl MountRecord {
    /// Parses the record stored at `key`; its mount id must be one keys can be built from.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<MountRecord, CheckpointError> {
        let bad = |why: String| CheckpointError::BadManifest {
            id: key.to_string(),
            why,
        };
        let r: MountRecord = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("mount record unreadable ({e})")))?;
        if !valid_mount_id(&r.mount_id) {
            return Err(bad(format!("mount record names mount id {:?}", r.mount_id)));
        }
        Ok(r)
    }
}

/// Whether `mounts/<mount_id>` exists.
pub fn mount_record_exists(remote: &dyn RemoteStore, mount_id: &str) -> Result<bool, StoreError> {
    match remote.head(&mount_record_key(mount_id)) {
        Ok(_) => Ok(true),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the record of a mount that will never run again, so that `statefs gc` may delete the
/// objects it created and the objects only it referenced.
///
/// Refused when the record was updated less than `min_age` ago (a running mount rewrites it at
/// least every [`MOUNT_HEARTBEAT`]), and when the record's local dir on this host (`this_host`)
/// still holds this mount's `MOUNT_ID`: that dir can be mounted again and would find its objects
/// gone. A local dir on another host cannot be checked from here; forgetting a mount whose dir
/// lives on is the caller's mistake to avoid (that mount then refuses to start).
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

/// Everything some record or manifest names, read in the order I4 needs: records, then
/// manifests, then records again.
#[derive(Debug, Default)]
pub struct References {
    /// Mounts with a record in either listing: their objects are theirs to delete (I2).
    pub live: HashSet<String>,
    pub keys: HashSet<String>,
}

impl References {
    /// Reads them. `except` leaves one mount's record out (the releasing mount's own: its
    /// journal, read before, is newer). An unreadable record or manifest is an error: what it
    /// references is unknown, so nothing may be deleted.
    pub fn read(
        remote: &dyn RemoteStore,
        cache: &ManifestCache,
        except: Option<&str>,
    ) -> Result<References, CheckpointError> {
        let mut refs = References::default();
        let add_records = |refs: &mut References| -> Result<(), CheckpointError> {
            for r in list_mounts(remote)? {
                if Some(r.mount_id.as_str()) != except {
                    refs.keys.extend(r.keys);
                }
                refs.live.insert(r.mount_id);
            }
            Ok(())
        };
        add_records(&mut refs)?;
        let manifests = listed(remote, cache)?;
        if let Some(e) = manifests.unreadable.into_iter().next() {
            return Err(e);
        }
        for keys in manifests.keys {
            refs.keys.extend(keys.iter().cloned());
        }
        add_records(&mut refs)?;
        Ok(refs)
    }
}

/// Deletes the objects of mount `mount_id` that nothing can name any more: objects under its
/// areas that its journal does not name and has not in flight (`live`, called after the objects
/// are listed), and that no manifest and no other mount's record names (I4). Run by the mount
/// itself (I2): at start, where it removes what a crash left (uploads never recorded, copies of
/// publishes that never completed), and after retention, where it releases what dropped
/// checkpoints named. Returns the deleted keys.
pub fn release_orphans(
    remote: &dyn RemoteStore,
    mount_id: &str,
    cache: &ManifestCache,
    live: impl FnOnce() -> HashSet<String>,
) -> Result<Vec<String>, CheckpointError> {
    let mut objects = Vec::new();
    for area in OWNED_AREAS {
        objects.extend(remote.list(&format!("{area}{mount_id}/"))?);
    }
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let live = live();
    let refs = References::read(remote, cache, Some(mount_id))?;
    let mut deleted = Vec::new();
    for o in objects {
        if owner_of(&o.key) != Some(mount_id) || live.contains(&o.key) || refs.keys.contains(&o.key)
        {
            continue;
        }
        remote.delete(&o.key)?;
        deleted.push(o.key);
    }
    Ok(deleted)
}

/// What [`collect_garbage`] found (and, unless a dry run, deleted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Objects of forgotten mounts (and of older versions) that nothing references.
    pub garbage: Vec<(String, u64)>,
    /// Leftovers in the directories of checkpoints whose manifest is gone or never appeared
    /// (a claim, or copies of older versions).
    pub abandoned: Vec<String>,
    /// Garbage younger than `--min-age`: kept for now.
    pub too_young: usize,
    /// Objects of mounts that have a record: theirs to release (I2).
    pub owned_by_mounts: usize,
    pub referenced: usize,
}

/// Deletes the objects of mounts that have no record (forgotten ones, and keys of older
/// versions, which name no mount) that no manifest and no mount record references, and the
/// leftovers of checkpoints without a manifest. Objects of mounts with a record are left to
/// those mounts (I2). `min_age` only delays: nothing is deleted for being old, only for being
/// unreferenced.
pub fn collect_garbage(
    remote: &dyn RemoteStore,
    min_age: Duration,
    dry_run: bool,
) -> Result<GcReport, CheckpointError> {
    let now = SystemTime::now();
    let old_enough =
        |t: SystemTime| min_age.is_zero() || now.duration_since(t).is_ok_and(|age| age >= min_age);
    let mut objects: Vec<ObjectInfo> = Vec::new();
    let listing = crate::progress::task("gc: listing objects", None);
    for area in OWNED_AREAS {
        let found = remote.list(area)?;
        listing.add(found.len() as u64);
        objects.extend(found);
    }
    listing.done();
    let refs = References::read(remote, &ManifestCache::default(), None).map_err(|e| match e {
        CheckpointError::BadManifest { id, why } => CheckpointError::BadManifest {
            id,
            why: format!("{why}; refusing to collect anything"),
        },
        e => e,
    })?;
    let mut report = GcReport::default();
    for o in objects {
        if refs.keys.contains(&o.key) {
            report.referenced += 1;
        } else if owner_of(&o.key).is_some_and(|m| refs.live.contains(m)) {
            report.owned_by_mounts += 1;
        } else if old_enough(o.modified) {
            report.garbage.push((o.key, o.size));
        } else {
            report.too_young += 1;
        }
    }
    // A checkpoint's directory without a manifest holds nothing anyone reads: a claim written
    // onto a checkpoint dropped meanwhile, or what a drop or an older publish left.
    for (_, files) in scan(remote)?.incomplete {
        report.abandoned.extend(files);
    }
    if !dry_run {
        let deleting = crate::progress::task(
            "gc: deleting garbage",
            Some((report.garbage.len() + report.abandoned.len()) as u64),
        );
        let keys = report
            .garbage
            .iter()
            .map(|(k, _)| k)
            .chain(&report.abandoned);
        for key in keys {
            remote.delete(key)?;
            deleting.add(1);
        }
        deleting.done();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file, manifest_of, memory_store};
    use super::super::{Manifest, claim_key, copy_key, manifest_key};
    use super::*;

    /// A record whose mount id could not have made a key (a path, an empty id) is refused.
    #[test]
    fn records_with_impossible_mount_ids_are_refused() {
        let record = |id: &str| {
            serde_json::to_vec(&MountRecord {
                mount_id: id.into(),
                host: "h".into(),
                local_dir: "/l".into(),
                updated_ms: 1,
                keys: vec![],
            })
            .unwrap()
        };
        for bad in ["", "../m", "a/b", "-x", &"m".repeat(65)] {
            let err = MountRecord::parse("mounts/x", &record(bad)).unwrap_err();
            assert!(err.to_string().contains("mount id"), "{bad:?}: {err}");
        }
        let good = "0f6c2a4e-1111-4222-8333-944455556666";
        assert_eq!(
            MountRecord::parse("mounts/x", &record(good))
                .unwrap()
                .mount_id,
            good
        );
        assert!(MountRecord::parse("mounts/x", b"{not json").is_err());
    }
    use crate::store::data_key;

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

    fn put(store: &dyn RemoteStore, key: &str) {
        store.put(key, Bytes::from_static(b"x")).unwrap();
    }

    fn record(mount: &str, keys: &[&str]) -> MountRecord {
        MountRecord {
            mount_id: mount.into(),
            host: "h".into(),
            local_dir: "/nowhere".into(),
            updated_ms: 0,
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn keys(store: &dyn RemoteStore) -> Vec<String> {
        let mut v: Vec<String> = OWNED_AREAS
            .iter()
            .flat_map(|a| store.list(a).unwrap())
            .map(|o| o.key)
            .collect();
        v.sort();
        v
    }

    /// gc never takes an object of a mount that has a record, however old and unreferenced it
    /// looks (the mount may have just uploaded it and crashed before its record named it: only
    /// its own journal knows); once the mount is forgotten, gc takes what nothing references,
    /// and keeps what a manifest or another mount's record names. Objects of older versions
    /// (no owner in the key) are gc's too.
    #[test]
    fn gc_leaves_a_recorded_mounts_objects_to_it_and_takes_a_forgotten_ones() {
        let store = memory_store();
        let u = uuid::Uuid::new_v4;
        let (fresh, named, borrowed, copy) = (
            data_key("m-1", &u()),
            data_key("m-1", &u()),
            data_key("m-1", &u()),
            copy_key("m-1", &u()),
        );
        let legacy = format!("data/{}", u());
        for k in [&fresh, &named, &borrowed, &copy, &legacy] {
            put(&store, k);
        }
        write_mount_record(&store, &record("m-1", &[])).unwrap();
        write_mount_record(&store, &record("m-2", &[&borrowed])).unwrap();
        let id = "0000000000001-00000001";
        let m = manifest_of(
            id,
            "m-1",
            1,
            vec![file("a.sst", &named), file("CURRENT", &copy)],
        );
        store.put(&manifest_key(id), Bytes::from(m)).unwrap();
        // A claim left on a checkpoint whose manifest is gone.
        put(&store, &claim_key("0000000000002-00000002"));

        let report = collect_garbage(&store, Duration::ZERO, false).unwrap();
        assert_eq!(report.garbage, [(legacy.clone(), 1)]);
        assert_eq!(
            report.owned_by_mounts, 1,
            "the fresh object is m-1's to release"
        );
        assert_eq!(report.referenced, 3);
        assert_eq!(report.abandoned, [claim_key("0000000000002-00000002")]);
        assert!(keys(&store).contains(&fresh));

        forget_mount(&store, "m-1", Duration::ZERO, "elsewhere").unwrap();
        let report = collect_garbage(&store, Duration::ZERO, false).unwrap();
        assert_eq!(report.garbage, [(fresh.clone(), 1)]);
        let mut left = vec![named, borrowed, copy];
        left.sort();
        assert_eq!(keys(&store), left);
    }

    /// The owner's release takes its objects that nothing names: not what its journal names or
    /// has in flight, not what a manifest or another mount's record names, and never another
    /// mount's objects.
    #[test]
    fn release_takes_only_the_owners_unnamed_objects() {
        let store = memory_store();
        let u = uuid::Uuid::new_v4;
        let (live, in_manifest, borrowed, orphan, copy_orphan) = (
            data_key("m-1", &u()),
            data_key("m-1", &u()),
            data_key("m-1", &u()),
            data_key("m-1", &u()),
            copy_key("m-1", &u()),
        );
        let others = data_key("m-2", &u());
        for k in [
            &live,
            &in_manifest,
            &borrowed,
            &orphan,
            &copy_orphan,
            &others,
        ] {
            put(&store, k);
        }
        write_mount_record(&store, &record("m-1", &[&orphan])).unwrap();
        write_mount_record(&store, &record("m-2", &[&borrowed])).unwrap();
        let id = "0000000000001-00000001";
        let m = manifest_of(id, "m-1", 1, vec![file("a.sst", &in_manifest)]);
        store.put(&manifest_key(id), Bytes::from(m)).unwrap();
        let cache = ManifestCache::default();
        let mut deleted = release_orphans(&store, "m-1", &cache, || {
            [live.clone()].into_iter().collect()
        })
        .unwrap();
        deleted.sort();
        let mut want = vec![orphan.clone(), copy_orphan.clone()];
        want.sort();
        assert_eq!(
            deleted, want,
            "its own stale record does not keep an orphan"
        );
        let mut left = vec![live, in_manifest, borrowed, others];
        left.sort();
        assert_eq!(keys(&store), left);
        // An unreadable manifest: what it names is unknown, so nothing is released.
        put(&store, &orphan);
        store
            .put(
                &manifest_key("0000000000009-00000009"),
                Bytes::from_static(b"{"),
            )
            .unwrap();
        assert!(release_orphans(&store, "m-1", &cache, HashSet::new).is_err());
        assert!(keys(&store).contains(&orphan));
    }

    /// A manifest read for one release is not read again for the next (manifests never change).
    #[test]
    fn manifests_are_read_once_across_releases() {
        use crate::store::{MetricsRemote, RemoteMetrics};
        use std::sync::atomic::Ordering::Relaxed;
        let metrics = std::sync::Arc::new(RemoteMetrics::default());
        let store = MetricsRemote::new(memory_store(), metrics.clone());
        for i in 0..20 {
            let id = format!("{i:013}-00000001");
            let m: Manifest = serde_json::from_slice(&manifest_of(&id, "m-9", i, vec![])).unwrap();
            store
                .put(
                    &manifest_key(&id),
                    Bytes::from(serde_json::to_vec(&m).unwrap()),
                )
                .unwrap();
        }
        put(&store, &data_key("m-1", &uuid::Uuid::new_v4()));
        let cache = ManifestCache::default();
        release_orphans(&store, "m-1", &cache, HashSet::new).unwrap();
        put(&store, &data_key("m-1", &uuid::Uuid::new_v4()));
        let gets = metrics.gets.load(Relaxed);
        release_orphans(&store, "m-1", &cache, HashSet::new).unwrap();
        assert_eq!(metrics.gets.load(Relaxed), gets, "no manifest read twice");
    }
}
