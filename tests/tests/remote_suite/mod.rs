//! What every store a mount may use must pass: the RocksDB workload (writes, multipart uploads,
//! a reopen that reads every SST cold, a whole-file download for a write) and the checkpoint
//! garbage scenario. Run against S3 (moto) and Azure (Azurite) by their test files, and the gc
//! scenario against `file://` by checkpoint.rs.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rocksdb::{DB, Options};
use statefs::MountHandle;
use statefs::checkpoint;
use statefs::config::RestoreFrom;
use statefs::store::{RemoteSpec, RemoteStore};
use statefs_tests::Dirs;

pub fn key(i: u32) -> Vec<u8> {
    format!("k{:08}", i.wrapping_mul(2_654_435_761) % 1_000_000_007).into_bytes()
}
pub fn value(i: u32, round: u32) -> Vec<u8> {
    let mut v = format!("v{i}-r{round}").into_bytes();
    v.resize(100, (i % 251) as u8);
    v
}

pub fn opts() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_write_buffer_size(512 << 10);
    o.set_target_file_size_base(512 << 10);
    o.set_level_zero_file_num_compaction_trigger(2);
    o
}

pub fn write_round(db: &DB, round: u32, n: u32) {
    for i in 0..n {
        db.put(key(i), value(i, round)).unwrap();
    }
    db.flush().unwrap();
}

pub fn verify_round(db: &DB, round: u32, n: u32) {
    for i in 0..n {
        assert_eq!(
            db.get(key(i)).unwrap().as_deref(),
            Some(&value(i, round)[..]),
            "key {i} round {round}"
        );
    }
}

pub fn data_keys(remote: &dyn RemoteStore) -> BTreeSet<String> {
    remote
        .list("data/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// The store at `url`, opened as a mount would with `config`'s client settings.
pub fn open_store(url: &str, config: &statefs::MountConfig) -> Arc<dyn RemoteStore> {
    let rt = statefs::mount::runtime().unwrap();
    Arc::new(
        RemoteSpec::parse(url)
            .unwrap()
            .open(&config.s3, rt)
            .unwrap(),
    )
}

/// RocksDB through a mount on the store `url` (its bucket or container `bucket_url`):
/// everything lands under the prefix, multipart uploads (files above 6 MB, in 5 MB parts) store
/// big files whole, and a remount without local copies reads every SST from the store.
pub fn rocksdb_workload(mut config: statefs::MountConfig, dirs: &Dirs, bucket_url: &str) {
    config.multipart_threshold = 6 << 20;
    config.part_size = 5 << 20;
    let url = config.remote.clone();
    let prefix = format!(
        "{}/",
        url.strip_prefix(bucket_url).unwrap().trim_matches('/')
    );

    let db_path = dirs.mnt.join("db");
    let key = |i: u32| format!("k{i:07}").into_bytes();
    let value = |i: u32| vec![(i % 251) as u8; 200];
    {
        let _mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_write_buffer_size(8 << 20);
        let db = DB::open(&o, &db_path).unwrap();
        for i in 0..60_000 {
            db.put(key(i), value(i)).unwrap();
        }
        db.flush().unwrap();
        db.compact_range::<&[u8], &[u8]>(None, None);
        // A big file through the mount takes the multipart path.
        std::fs::write(dirs.mnt.join("big.sst"), vec![9u8; 13 << 20]).unwrap();
        std::fs::File::open(dirs.mnt.join("big.sst"))
            .unwrap()
            .sync_all()
            .unwrap();
    }
    let store = open_store(&url, &config);
    let objects = store.list("data/").unwrap();
    assert!(objects.len() >= 2, "{objects:?}");
    assert!(
        objects.iter().any(|o| o.size == 13 << 20),
        "multipart object stored whole"
    );
    // Seen from the bucket root, everything the mount wrote is under its prefix.
    let bucket = open_store(bucket_url, &config);
    let all = bucket.list("").unwrap();
    assert!(all.iter().all(|o| o.key.starts_with(&prefix)), "{all:?}");
    assert!(
        all.iter()
            .any(|o| o.key.starts_with(&format!("{prefix}mounts/"))),
        "the mount record is there too"
    );

    // Cold: no local copies at all, every read goes to S3 (the warm-up, which would load the
    // hot list's copies back and fetch opened files first, is off: tests/cache.rs covers it).
    std::fs::remove_dir_all(&dirs.cache).unwrap();
    let mut config = config;
    config.cache.warm.memory = 0;
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let db = DB::open(&Options::default(), &db_path).unwrap();
    for i in (0..60_000).step_by(7) {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    drop(db);
    let downloads = || {
        mount
            .core()
            .metrics
            .downloads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Promoted SSTs that RocksDB read may be loading meanwhile, so at least one more.
    let before = downloads();
    // Opening the cold 13 MB file for writing downloads it first, streamed from S3 into its local
    // copy; the appended bytes then go up as a new version.
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dirs.mnt.join("big.sst"))
            .unwrap();
        f.seek(std::io::SeekFrom::End(0)).unwrap();
        f.write_all(b"tail").unwrap();
        f.sync_all().unwrap();
    }
    let mut want = vec![9u8; 13 << 20];
    want.extend_from_slice(b"tail");
    assert!(std::fs::read(dirs.mnt.join("big.sst")).unwrap() == want);
    assert!(downloads() > before, "a whole-file download, for the write");
    assert!(
        mount
            .remote_metrics
            .gets
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    mount.unmount().unwrap();
}

pub fn gc_scenario(
    remote: Arc<dyn RemoteStore>,
    config: statefs::MountConfig,
    mnt: &Path,
    restore_into: &Dirs,
) {
    let mount = MountHandle::mount(&config, mnt).unwrap();
    let db = DB::open(&opts(), mnt.join("db")).unwrap();
    let n = 10_000;
    write_round(&db, 1, n);
    rocksdb::checkpoint::Checkpoint::new(&db)
        .unwrap()
        .create_checkpoint(mnt.join("c1"))
        .unwrap();
    let c1 = mount.checkpoint(&mnt.join("c1"), 1).unwrap();
    std::fs::remove_dir_all(mnt.join("c1")).unwrap();
    write_round(&db, 2, n);
    db.compact_range::<&[u8], &[u8]>(None, None);
    rocksdb::checkpoint::Checkpoint::new(&db)
        .unwrap()
        .create_checkpoint(mnt.join("c2"))
        .unwrap();
    let m1 = checkpoint::load_manifest(remote.as_ref(), &c1.id).unwrap();
    let c2 = mount.checkpoint(&mnt.join("c2"), 1).unwrap();
    assert_eq!(
        c2.dropped,
        vec![c1.id.clone()],
        "retention 1 drops the older checkpoint"
    );
    std::fs::remove_dir_all(mnt.join("c2")).unwrap();
    mount.core().settle();

    // Expected garbage: what only the dropped checkpoint referenced.
    let m2 = checkpoint::load_manifest(remote.as_ref(), &c2.id).unwrap();
    let record: checkpoint::MountRecord = serde_json::from_slice(
        &remote
            .get(&checkpoint::mount_record_key(&mount.core().mount_id))
            .unwrap(),
    )
    .unwrap();
    let keep: BTreeSet<String> = m2
        .object_keys()
        .map(str::to_string)
        .chain(record.keys.iter().cloned())
        .collect();
    let expected: BTreeSet<String> = m1
        .data_keys()
        .filter(|k| !keep.contains(*k))
        .map(str::to_string)
        .collect();
    assert!(!expected.is_empty(), "the scenario must leave garbage");
    // The mount released what only the dropped checkpoint named (after its retention, on its
    // worker: settled above), and nothing else.
    let left: BTreeSet<String> = ["data/", "copies/"]
        .iter()
        .flat_map(|a| remote.list(a).unwrap())
        .map(|o| o.key)
        .collect();
    assert!(
        expected.iter().all(|k| !left.contains(k)),
        "released: {:?}",
        expected.intersection(&left).collect::<Vec<_>>()
    );
    let lost: Vec<&String> = keep.iter().filter(|k| !left.contains(*k)).collect();
    assert!(lost.is_empty(), "named but gone: {lost:?}");
    // gc leaves a mount that has a record alone: its objects are its own to release.
    for dry_run in [true, false] {
        let report = checkpoint::collect_garbage(remote.as_ref(), Duration::ZERO, dry_run).unwrap();
        assert!(report.garbage.is_empty(), "{report:?}");
        assert_eq!(report.owned_by_mounts + report.referenced, left.len());
    }
    assert_eq!(
        data_keys(remote.as_ref()),
        left.iter()
            .filter(|k| k.starts_with("data/"))
            .cloned()
            .collect()
    );

    // The retained checkpoint still restores, and the source still reads everything.
    let root = restore_into.root.path().join("after-gc");
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    let mut rc = config.clone();
    rc.local_dir = root.join("local");
    rc.cache_dir = root.join("cache");
    rc.restore = Some(RestoreFrom {
        id: c2.id.clone(),
        claim: false,
    });
    let restored =
        MountHandle::mount_with_remote(&rc, &root.join("mnt"), Some(remote.clone())).unwrap();
    let rdb = DB::open(&opts(), root.join("mnt")).unwrap();
    verify_round(&rdb, 2, n);
    drop(rdb);
    drop(restored);
    verify_round(&db, 2, n);
    drop(db);
    mount.unmount().unwrap();
}
