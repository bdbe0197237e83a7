//! Filesystem checkpoints: metadata-only publish, lazy restore, retention, GC, fsck, hostile manifests.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rocksdb::DB;
use statefs::MountHandle;
use statefs::checkpoint;
use statefs::config::RestoreFrom;
use statefs::store::{
    FailingRemote, FaultPlan, RemoteSpec, RemoteStore, RetryPolicy, RetryingRemote,
};
use statefs_tests::{Dirs, statefs_bin};

mod remote_suite;
use remote_suite::{data_keys, gc_scenario, opts, verify_round, write_round};

/// A second mount restored from `id`, with its own fresh local and cache dirs.
fn restore(dirs: &Dirs, name: &str, id: &str, claim: bool) -> (MountHandle, std::path::PathBuf) {
    let root = dirs.root.path().join(name);
    let mnt = root.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut c =
        statefs::MountConfig::new(dirs.remote_url(), root.join("local"), root.join("cache"));
    c.restore = Some(RestoreFrom {
        id: id.into(),
        claim,
    });
    // These tests count what a restore itself fetches: without the warm-up's background loads
    // of the checkpoint's hot copies (tests/cache.rs covers those).
    c.cache.warm.memory = 0;
    (MountHandle::mount(&c, &mnt).unwrap(), mnt)
}

fn file_remote(dirs: &Dirs) -> (Arc<dyn RemoteStore>, Arc<tokio::runtime::Runtime>) {
    let rt = statefs::mount::runtime().unwrap();
    let store = RemoteSpec::parse(&dirs.remote_url())
        .unwrap()
        .open(&Default::default(), rt.clone())
        .unwrap();
    (Arc::new(store), rt)
}

#[test]
fn checkpoint_copies_no_sst_and_restores_exactly_while_the_source_keeps_working() {
    let dirs = Dirs::new();
    let (remote, _rt) = file_remote(&dirs);
    let mut config = dirs.config();
    config.num_retained = 0;
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let db = DB::open(&opts(), dirs.mnt.join("db")).unwrap();
    let n = 20_000;
    write_round(&db, 1, n);
    rocksdb::checkpoint::Checkpoint::new(&db)
        .unwrap()
        .create_checkpoint(dirs.mnt.join("chk1"))
        .unwrap();
    // Every SST the checkpoint names was in the store before the publish: none was copied.
    let before = data_keys(remote.as_ref());
    let published = mount.checkpoint(&dirs.mnt.join("chk1"), 0).unwrap();
    assert!(published.referenced_bytes > 256 << 10, "{published:?}");
    let named: BTreeSet<String> = checkpoint::load_manifest(remote.as_ref(), &published.id)
        .unwrap()
        .data_keys()
        .map(str::to_string)
        .collect();
    assert!(named.is_subset(&before), "the publish uploaded an SST");
    assert!(published.copied_bytes < published.referenced_bytes / 10);
    let m = checkpoint::load_manifest(remote.as_ref(), &published.id).unwrap();
    assert!(
        m.files.iter().any(|f| f.name == "CURRENT")
            && m.files.iter().any(|f| f.name.ends_with(".sst"))
    );

    // The source keeps writing and compacting: RocksDB deletes the checkpointed SSTs.
    std::fs::remove_dir_all(dirs.mnt.join("chk1")).unwrap();
    write_round(&db, 2, n);
    db.compact_range::<&[u8], &[u8]>(None, None);
    let live: Vec<_> = std::fs::read_dir(dirs.mnt.join("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        m.files
            .iter()
            .filter(|f| f.name.ends_with(".sst"))
            .all(|f| !live.contains(&f.name.clone().into())),
        "compaction replaced every checkpointed SST"
    );
    mount.core().settle();
    for k in m.data_keys() {
        assert!(
            remote.head(k).is_ok(),
            "{k} was deleted although the checkpoint names it"
        );
    }

    // Two restores of one checkpoint, side by side, while the source still works.
    let (r1, mnt1) = restore(&dirs, "r1", &published.id, false);
    let (r2, mnt2) = restore(&dirs, "r2", &published.id, false);
    // Restoring fetched only the manifest and the small files: no SST byte before the first read.
    let fetched = r1
        .remote_metrics
        .get_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        fetched <= published.copied_bytes + (64 << 10),
        "restore fetched {fetched} bytes"
    );
    assert_eq!(
        std::fs::read_dir(mnt1.parent().unwrap().join("cache/files"))
            .unwrap()
            .count(),
        0,
        "no SST copy yet"
    );
    let db1 = DB::open(&opts(), &mnt1).unwrap();
    let db2 = DB::open(&opts(), &mnt2).unwrap();
    verify_round(&db1, 1, n);
    verify_round(&db2, 1, n);
    db1.put(b"only-in-r1", b"x").unwrap();
    assert_eq!(db2.get(b"only-in-r1").unwrap(), None);
    verify_round(&db, 2, n);
    drop((db1, db2));
    drop((r1, r2));
    drop(db);
    mount.unmount().unwrap();
}

#[test]
fn gc_removes_exactly_the_unreferenced_objects() {
    let dirs = Dirs::new();
    let (remote, _rt) = file_remote(&dirs);
    gc_scenario(remote, dirs.config(), &dirs.mnt, &dirs);
}

#[test]
fn crash_before_the_manifest_leaves_no_checkpoint_and_loses_nothing() {
    let dirs = Dirs::new();
    let rt = statefs::mount::runtime().unwrap();
    let faults = FaultPlan::default();
    let store = RemoteSpec::parse(&dirs.remote_url())
        .unwrap()
        .open(&Default::default(), rt.clone())
        .unwrap();
    let policy = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        ..Default::default()
    };
    let remote: Arc<dyn RemoteStore> = Arc::new(RetryingRemote::new(
        FailingRemote::new(store, faults.clone()),
        policy,
    ));
    let mount =
        MountHandle::mount_with_remote(&dirs.config(), &dirs.mnt, Some(remote.clone())).unwrap();
    let db = DB::open(&opts(), dirs.mnt.join("db")).unwrap();
    write_round(&db, 1, 10_000);
    rocksdb::checkpoint::Checkpoint::new(&db)
        .unwrap()
        .create_checkpoint(dirs.mnt.join("chk"))
        .unwrap();
    faults.fail_keys_containing(Some("_metadata"));
    let err = mount.checkpoint(&dirs.mnt.join("chk"), 1).unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    faults.fail_keys_containing(None);
    assert!(
        checkpoint::list_ids(remote.as_ref()).unwrap().is_empty(),
        "no visible checkpoint"
    );
    // Nothing lost: every object the mount names is there, and gc keeps them (they are the
    // mount's). The copies of the small files stay too while the mount runs: the manifest's
    // create could not be confirmed either way, and a manifest that appears later names them.
    let report = checkpoint::collect_garbage(remote.as_ref(), Duration::ZERO, false).unwrap();
    assert!(report.garbage.is_empty(), "{report:?}");
    assert!(report.abandoned.is_empty(), "{report:?}");
    assert!(remote.list("checkpoints/").unwrap().is_empty());
    assert!(!remote.list("copies/").unwrap().is_empty());
    verify_round(&db, 1, 10_000);
    // A retry succeeds. On a store with a distant store's latency, the small files (MANIFEST,
    // OPTIONS, CURRENT) go up at once, not one round trip after another.
    faults.set_latency(Duration::from_millis(20));
    let ok = mount.checkpoint(&dirs.mnt.join("chk"), 1).unwrap();
    faults.set_latency(Duration::ZERO);
    assert!(
        faults.max_in_flight() >= 3,
        "{} store requests at once",
        faults.max_in_flight()
    );
    assert_eq!(
        checkpoint::list_ids(remote.as_ref()).unwrap(),
        vec![ok.id.clone()]
    );

    // Retention failing after a complete publish does not fail the publish: the checkpoint is
    // valid and kept, and the next publish drops what this one could not. (Another job's claimed
    // checkpoint shares the bucket; reading claims fails.)
    let foreign = "0000000000001-0000abcd";
    let foreign_manifest = serde_json::json!({"format": checkpoint::FORMAT,
        "version": checkpoint::VERSION, "id": foreign, "mount_id": "another-job",
        "created_ms": 1, "files": []});
    remote
        .put(
            &checkpoint::manifest_key(foreign),
            serde_json::to_vec(&foreign_manifest).unwrap().into(),
        )
        .unwrap();
    remote
        .put(&checkpoint::claim_key(foreign), "yet-another".into())
        .unwrap();
    faults.fail_keys_containing(Some("_claimed_by"));
    let kept = mount.checkpoint(&dirs.mnt.join("chk"), 1).unwrap();
    faults.fail_keys_containing(None);
    assert!(kept.retention_error.is_some() && kept.dropped.is_empty());
    let ids = checkpoint::list_ids(remote.as_ref()).unwrap();
    assert!(ids.contains(&ok.id) && ids.contains(&kept.id), "{ids:?}");
    let last = mount.checkpoint(&dirs.mnt.join("chk"), 1).unwrap();
    assert_eq!(last.retention_error, None);
    assert_eq!(
        checkpoint::list_ids(remote.as_ref()).unwrap(),
        vec![foreign.to_string(), last.id],
        "ours dropped down to one, the other job's untouched"
    );
    drop(db);
    mount.unmount().unwrap();
}

#[test]
fn hostile_manifests_are_refused_and_nothing_is_half_restored() {
    let dirs = Dirs::new();
    let (remote, _rt) = file_remote(&dirs);
    {
        let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
        std::fs::create_dir(dirs.mnt.join("c")).unwrap();
        let mut f = std::fs::File::create(dirs.mnt.join("c/000001.sst")).unwrap();
        std::io::Write::write_all(&mut f, &[1u8; 5000]).unwrap();
        f.sync_all().unwrap();
        std::fs::write(dirs.mnt.join("c/CURRENT"), b"MANIFEST-000001\n").unwrap();
        mount.checkpoint(&dirs.mnt.join("c"), 0).unwrap();
    }
    let good_id = checkpoint::list_ids(remote.as_ref())
        .unwrap()
        .pop()
        .unwrap();
    let good: serde_json::Value =
        serde_json::from_slice(&remote.get(&checkpoint::manifest_key(&good_id)).unwrap()).unwrap();
    // Variants keep only the SST entry: the copies of small files belong to the good checkpoint's id.
    let variant = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        v["files"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["key"].as_str().unwrap().starts_with("data/"));
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("0000000000001-00000001", b"{".to_vec(), "not a manifest"),
        (
            "0000000000001-00000002",
            serde_json::to_vec(&variant(&|v| v["version"] = 7.into())).unwrap(),
            "unsupported version 7",
        ),
        (
            "0000000000001-00000003",
            serde_json::to_vec(&variant(&|v| v["files"][0]["name"] = "../../etc/x".into()))
                .unwrap(),
            "bad component",
        ),
        (
            "0000000000001-00000004",
            serde_json::to_vec(&variant(&|v| v["files"][0]["name"] = "/abs".into())).unwrap(),
            "absolute",
        ),
        (
            "0000000000001-00000005",
            serde_json::to_vec(&variant(&|v| v["files"][0]["key"] = "../outside".into())).unwrap(),
            "outside the checkpoint",
        ),
        (
            "0000000000001-00000006",
            serde_json::to_vec(&variant(&|v| v["files"][0]["size"] = 4999.into())).unwrap(),
            "manifest says 4999 bytes",
        ),
        (
            "0000000000001-00000007",
            serde_json::to_vec(&variant(&|v| {
                v["files"][0]["key"] = format!("data/{}", uuid::Uuid::new_v4()).into()
            }))
            .unwrap(),
            "is missing",
        ),
    ];
    for (id, bytes, want) in cases {
        let mut bytes_json = bytes.clone();
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            v["id"] = id.into();
            bytes_json = serde_json::to_vec(&v).unwrap();
        }
        remote
            .put(&checkpoint::manifest_key(id), bytes_json.into())
            .unwrap();
        let root = dirs.root.path().join(format!("h-{id}"));
        std::fs::create_dir_all(root.join("mnt")).unwrap();
        let mut c =
            statefs::MountConfig::new(dirs.remote_url(), root.join("local"), root.join("cache"));
        c.restore = Some(RestoreFrom {
            id: id.into(),
            claim: false,
        });
        let err = MountHandle::mount(&c, &root.join("mnt"))
            .err()
            .expect("hostile manifest accepted")
            .to_string();
        assert!(err.contains(want), "{id}: {err}");
        assert!(!statefs_tests::is_mounted(&root.join("mnt")));
        assert!(!root.join("local/journal").exists(), "{id}: half-restored");
        remote.delete(&checkpoint::manifest_key(id)).unwrap();
    }
    // An unknown id, and an id that is not one.
    let out = Command::new(statefs_bin())
        .args([
            "mount",
            "--remote",
            &dirs.remote_url(),
            "--restore",
            "../../x",
            "--local-dir",
        ])
        .arg(dirs.root.path().join("x/l"))
        .arg("--cache-dir")
        .arg(dirs.root.path().join("x/c"))
        .arg(&dirs.mnt)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad checkpoint id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `statefs mounts list` shows a mount's record; `mounts forget` refuses it while it is young
/// and while its local dir is still its own, and once the dir is gone, forgets it so that gc
/// deletes the objects only it referenced.
#[test]
fn cli_mounts_list_and_forget() {
    let dirs = Dirs::new();
    let (remote, _rt) = file_remote(&dirs);
    let mount = statefs_tests::CliMount::start(&dirs.cli_args(), &dirs.mnt);
    let mut f = std::fs::File::create(dirs.mnt.join("000007.sst")).unwrap();
    std::io::Write::write_all(&mut f, &[5u8; 50_000]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    drop(mount);
    let id = std::fs::read_to_string(dirs.local.join("MOUNT_ID"))
        .unwrap()
        .trim()
        .to_string();
    let objects = || remote.list("data/").unwrap().len();
    assert_eq!(objects(), 1);
    let cli = |args: &[&str]| {
        let out = Command::new(statefs_bin())
            .args(args)
            .args(["--remote", &dirs.remote_url()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, list) = cli(&["mounts", "list"]);
    assert!(ok && list.contains(&id), "{list}");
    let (ok, young) = cli(&["mounts", "forget", &id]);
    assert!(
        !ok && young.contains("less than the minimum age"),
        "{young}"
    );
    let (ok, again) = cli(&["mounts", "forget", &id, "--min-age", "0s"]);
    assert!(!ok && again.contains("can be mounted again"), "{again}");
    let (ok, _) = cli(&["gc", "--min-age", "0s"]);
    assert!(ok);
    assert_eq!(objects(), 1, "the record keeps the object");
    std::fs::remove_dir_all(&dirs.local).unwrap();
    let (ok, forgot) = cli(&["mounts", "forget", &id, "--min-age", "0s"]);
    assert!(ok && forgot.contains("forgot mount"), "{forgot}");
    let (ok, gc) = cli(&["gc", "--min-age", "0s"]);
    assert!(ok, "{gc}");
    assert_eq!(objects(), 0, "{gc}");
}

#[test]
fn cli_checkpoint_list_gc_and_fsck() {
    let dirs = Dirs::new();
    let (remote, _rt) = file_remote(&dirs);
    let mount = statefs_tests::CliMount::start(&dirs.cli_args(), &dirs.mnt);
    std::fs::create_dir(dirs.mnt.join("chk")).unwrap();
    let mut f = std::fs::File::create(dirs.mnt.join("chk/000009.sst")).unwrap();
    std::io::Write::write_all(&mut f, &[3u8; 70_000]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::write(dirs.mnt.join("chk/CURRENT"), b"MANIFEST-000004\n").unwrap();
    // Control is on the mount's Unix socket (0600); the TCP metrics endpoint refuses a publish.
    let sock = dirs.local.join("control.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", sock.display());
    let addr = std::fs::read_to_string(dirs.local.join("metrics.addr")).unwrap();
    let (status, body) = statefs::endpoint::request(
        &statefs::endpoint::Addr::Tcp(addr.trim().parse().unwrap()),
        "POST",
        "/checkpoint?dir=chk",
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        status == 403 && body.contains("control.sock"),
        "{status} {body}"
    );
    let out = Command::new(statefs_bin())
        .arg("checkpoint")
        .arg(&dirs.mnt)
        .arg(dirs.mnt.join("chk"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout.lines().last().unwrap().trim().to_string();
    checkpoint::check_id(&id).unwrap();
    assert!(
        stdout.contains(&format!("{}/checkpoints/{id}", dirs.remote_url())),
        "{stdout}"
    );
    let list = Command::new(statefs_bin())
        .args(["checkpoints", "list", "--remote", &dirs.remote_url()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    drop(mount);

    let fsck = |expect_ok: bool| {
        let out = Command::new(statefs_bin())
            .args(["fsck", "--remote", &dirs.remote_url(), "--local-dir"])
            .arg(&dirs.local)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            expect_ok,
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(fsck(true).contains("0 missing"));
    // An orphan of this mount (what a crash between an upload and its record leaves) is
    // reported, not damage; a missing object is damage.
    let mount_id = std::fs::read_to_string(dirs.local.join("MOUNT_ID")).unwrap();
    let own_orphan = format!(
        "data/{}/00000000-0000-0000-0000-000000000001",
        mount_id.trim()
    );
    remote.put(&own_orphan, vec![0u8; 10].into()).unwrap();
    assert!(fsck(true).contains(&format!("orphan   {own_orphan}")));
    // An object of an older version that nothing names.
    let legacy = "data/00000000-0000-0000-0000-000000000002";
    remote.put(legacy, vec![0u8; 10].into()).unwrap();
    let m = checkpoint::load_manifest(remote.as_ref(), &id).unwrap();
    let sst_key = m.data_keys().next().unwrap().to_string();
    let saved = remote.get(&sst_key).unwrap();
    remote.delete(&sst_key).unwrap();
    assert!(fsck(false).contains(&format!("MISSING  /chk/000009.sst: object {sst_key}")));
    remote.put(&sst_key, saved).unwrap();

    let gc = Command::new(statefs_bin())
        .args([
            "gc",
            "--remote",
            &dirs.remote_url(),
            "--min-age",
            "0s",
            "--dry-run",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&gc.stdout);
    assert!(text.contains(&format!("would delete {legacy}")), "{text}");
    assert!(
        !text.contains(&sst_key) && !text.contains(&own_orphan),
        "a mount with a record releases its own objects: {text}"
    );
}

#[test]
fn claim_hands_the_checkpoint_to_the_new_mount_and_no_claim_never_deletes_it() {
    let dirs = Dirs::new();
    let (remote, _rt) = file_remote(&dirs);
    let id = {
        let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
        let db = DB::open(&opts(), dirs.mnt.join("db")).unwrap();
        write_round(&db, 1, 5_000);
        rocksdb::checkpoint::Checkpoint::new(&db)
            .unwrap()
            .create_checkpoint(dirs.mnt.join("c"))
            .unwrap();
        drop(db);
        mount.checkpoint(&dirs.mnt.join("c"), 1).unwrap().id
    };
    // NO_CLAIM: the restored mount's own checkpoints and retention never touch the original.
    let (nc, nc_mnt) = restore(&dirs, "noclaim", &id, false);
    {
        let db = DB::open(&opts(), &nc_mnt).unwrap();
        write_round(&db, 2, 5_000);
        rocksdb::checkpoint::Checkpoint::new(&db)
            .unwrap()
            .create_checkpoint(nc_mnt.join("c"))
            .unwrap();
    }
    let first = nc.checkpoint(&nc_mnt.join("c"), 1).unwrap();
    std::fs::remove_dir_all(nc_mnt.join("c")).unwrap();
    let second = nc.checkpoint(&nc_mnt, 1).unwrap();
    assert_eq!(
        second.dropped,
        vec![first.id],
        "retention drops only the mount's own checkpoints"
    );
    assert!(
        checkpoint::list_ids(remote.as_ref()).unwrap().contains(&id),
        "the restored-from checkpoint stays"
    );
    drop(nc);
    // CLAIM: the checkpoint becomes the new mount's, and its retention drops it.
    let (cl, cl_mnt) = restore(&dirs, "claim", &id, true);
    let infos = checkpoint::list(remote.as_ref()).unwrap();
    let claimed = infos.iter().find(|c| c.id == id).unwrap();
    assert_eq!(
        claimed.claimed_by.as_ref().map(|c| c.mount_id.as_str()),
        Some(cl.core().mount_id.as_str())
    );
    let own = cl.checkpoint(&cl_mnt, 1).unwrap();
    assert_eq!(own.dropped, vec![id.clone()]);
    assert!(!checkpoint::list_ids(remote.as_ref()).unwrap().contains(&id));
    // Its SSTs are still readable through the claiming mount (gc keeps what a mount names).
    checkpoint::collect_garbage(remote.as_ref(), Duration::ZERO, false).unwrap();
    let db = DB::open(&opts(), &cl_mnt).unwrap();
    verify_round(&db, 1, 5_000);
}

/// Retention left to the mount's worker (`checkpoint_with(.., true)`, what forst uses): each publish
/// returns with its checkpoint complete and drops nothing itself; the older checkpoints, manifest
/// and files, are gone once `settle_retention` returns, and a retention still queued at unmount
/// runs before the unmount finishes.
#[test]
fn deferred_retention_drops_old_checkpoints_after_the_publish() {
    let dirs = Dirs::new();
    let (remote, _rt) = file_remote(&dirs);
    let ids_in_store = || -> BTreeSet<String> {
        checkpoint::list_ids(remote.as_ref())
            .unwrap()
            .into_iter()
            .collect()
    };
    let files_of = |id: &str| remote.list(&format!("checkpoints/{id}/")).unwrap().len();
    let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let dir = dirs.mnt.join("db");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let p = mount.checkpoint_with(&dir, 2, true).unwrap();
        assert!(p.retention_deferred, "the worker takes retention");
        assert_eq!((p.dropped.len(), p.retention_error), (0, None));
        assert!(
            ids_in_store().contains(&p.id),
            "complete when the publish returns"
        );
        ids.push(p.id);
    }
    mount.core().settle_retention();
    assert_eq!(ids_in_store(), ids[2..].iter().cloned().collect());
    for dropped in &ids[..2] {
        assert_eq!(
            files_of(dropped),
            0,
            "the dropped checkpoint's files go too"
        );
    }
    // A synchronous publish on the same mount still reports what it dropped.
    let sync = mount.checkpoint(&dir, 2).unwrap();
    assert!(!sync.retention_deferred);
    assert_eq!(sync.dropped, vec![ids[2].clone()]);
    // Queued at unmount: done before the unmount returns.
    let last = mount.checkpoint_with(&dir, 1, true).unwrap();
    mount.unmount().unwrap();
    assert_eq!(ids_in_store(), BTreeSet::from([last.id.clone()]));
    assert_eq!(files_of(&ids[3]), 0);
    assert_eq!(files_of(&sync.id), 0);
    assert!(files_of(&last.id) > 0);
}

/// A checkpoint assembled from named files, with no directory holding them: a synced SST is
/// referenced (no byte copied), an SST still being written and one already gone are left out when
/// asked (`SealedOnly`), a local file is copied, and the caller's bytes are stored. The restore has
/// exactly those files under the given names. Names that are not relative paths, or repeat, are
/// refused before anything is stored.
#[test]
fn a_checkpoint_of_named_files_restores_exactly_them() {
    use statefs::core::CheckpointFile as F;
    use std::io::Write;
    let dirs = Dirs::new();
    let (remote, _rt) = file_remote(&dirs);
    let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let db = dirs.mnt.join("db");
    std::fs::create_dir(&db).unwrap();
    let synced: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut f = std::fs::File::create(db.join("000007.sst")).unwrap();
    f.write_all(&synced).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut writing = std::fs::File::create(db.join("000009.sst")).unwrap();
    writing.write_all(b"half an sst").unwrap();
    std::fs::write(db.join("CURRENT"), b"MANIFEST-000003\n").unwrap();
    let sst_objects = data_keys(remote.as_ref());
    let files = vec![
        F::SealedOnly {
            name: "000007.sst".into(),
            path: db.join("000007.sst").to_string_lossy().into(),
        },
        F::SealedOnly {
            name: "000009.sst".into(),
            path: "db/000009.sst".into(),
        },
        F::SealedOnly {
            name: "000004.sst".into(),
            path: "db/000004.sst".into(),
        },
        F::Mounted {
            name: "CURRENT".into(),
            path: "db/CURRENT".into(),
        },
        F::Bytes {
            name: "meta/MANIFEST-000003".into(),
            data: bytes::Bytes::from_static(b"a manifest prefix"),
        },
    ];
    for bad in ["", "/abs", "a/../b", "nul\0", "CURRENT"] {
        let mut with_bad = files.clone();
        with_bad.push(F::Bytes {
            name: bad.into(),
            data: bytes::Bytes::new(),
        });
        let err = mount.checkpoint_files(with_bad, 0, false).unwrap_err();
        assert!(
            matches!(err, statefs::FsError::Invalid(_)),
            "{bad:?}: {err:?}"
        );
    }
    assert!(checkpoint::list_ids(remote.as_ref()).unwrap().is_empty());
    let p = mount.checkpoint_files(files, 0, false).unwrap();
    assert_eq!(p.files, 3);
    assert_eq!(p.referenced_bytes, synced.len() as u64);
    assert_eq!(p.copied_bytes, 16 + 17);
    assert_eq!(
        data_keys(remote.as_ref()),
        sst_objects,
        "no SST object is written by the checkpoint"
    );
    writing.write_all(b", the rest").unwrap();
    drop(writing);
    let (restored, mnt) = restore(&dirs, "r", &p.id, false);
    let mut names: Vec<String> = walk(&mnt);
    names.sort();
    assert_eq!(names, ["000007.sst", "CURRENT", "meta/MANIFEST-000003"]);
    assert_eq!(std::fs::read(mnt.join("000007.sst")).unwrap(), synced);
    assert_eq!(
        std::fs::read(mnt.join("CURRENT")).unwrap(),
        b"MANIFEST-000003\n"
    );
    assert_eq!(
        std::fs::read(mnt.join("meta/MANIFEST-000003")).unwrap(),
        b"a manifest prefix"
    );
    restored.unmount().unwrap();
    mount.unmount().unwrap();
}

/// Files below `dir`, relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}
