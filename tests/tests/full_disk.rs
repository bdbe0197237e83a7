//! A full local disk under a running mount: writes fail with ENOSPC, metadata operations (the way
//! out: unlink, rename) and reads go on, nothing acknowledged is lost, and once space is back the
//! mount writes again, before and after a remount. Also a restore onto a full disk, and the
//! cache's free-space limit on a real small disk. Each test's local dir is a small tmpfs
//! (`statefs::testing::SmallFs`).

use std::io::Write;
use std::path::Path;

use statefs::MountHandle;
use statefs::testing::SmallFs;
use statefs_tests::Dirs;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Creates `path`, writes `data` and fsyncs: acknowledged once this returns Ok.
fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// A mount config with the local dir and cache dir on `small`, and the `file://` store elsewhere.
fn on_small_disk(dirs: &Dirs, small: &SmallFs) -> statefs::MountConfig {
    statefs::MountConfig::new(
        dirs.remote_url(),
        small.path().join("local"),
        small.path().join("cache"),
    )
}

fn assert_enospc(r: std::io::Result<()>, what: &str) {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
        other => panic!("{what} on a full disk: expected ENOSPC, got {other:?}"),
    }
}

#[test]
fn a_full_local_disk_fails_writes_with_enospc_and_loses_nothing() {
    let dirs = Dirs::new();
    let small = SmallFs::new(32 << 20);
    let config = on_small_disk(&dirs, &small);
    let m = &dirs.mnt;
    let sst = pattern(4 << 20, 1);
    let wal = pattern(256 << 10, 2);
    let later = pattern(1 << 20, 3);
    let mount = MountHandle::mount(&config, m).unwrap();
    write_synced(&m.join("000010.sst"), &sst).unwrap();
    write_synced(&m.join("000011.log"), &wal).unwrap();

    let filler = small.fill();
    // `df` on the mount tells the truth: it reports the local dir's file system, which is full.
    let on_mount = free_bytes(m);
    assert!(
        on_mount < 1 << 20,
        "the mount reports {on_mount} bytes free"
    );
    // A local-placed file (a WAL) and a remote-placed one (an SST, staged locally) both fail.
    assert_enospc(
        write_synced(&m.join("000012.log"), &pattern(1 << 20, 4)),
        "a WAL write",
    );
    assert_enospc(
        write_synced(&m.join("000013.sst"), &pattern(1 << 20, 5)),
        "an SST write",
    );
    // Metadata goes on: what a process does to free space, or to carry on with what it has.
    std::fs::remove_file(m.join("000012.log")).unwrap();
    std::fs::remove_file(m.join("000013.sst")).unwrap();
    std::fs::rename(m.join("000011.log"), m.join("000011.kept")).unwrap();
    std::fs::hard_link(m.join("000010.sst"), m.join("000010.link")).unwrap();
    std::fs::create_dir(m.join("dir")).unwrap();
    // Pages' worth of journal records, past whatever room the full disk's last page had.
    for i in 0..300 {
        std::fs::File::create(m.join(format!("dir/{i:06}.tmp"))).unwrap();
    }
    for i in 0..300 {
        let from = m.join(format!("dir/{i:06}.tmp"));
        if i % 2 == 0 {
            std::fs::remove_file(from).unwrap();
        } else {
            std::fs::rename(from, m.join(format!("dir/{i:06}.kept"))).unwrap();
        }
    }
    // Reads go on.
    assert!(std::fs::read(m.join("000010.sst")).unwrap() == sst);
    assert!(std::fs::read(m.join("000011.kept")).unwrap() == wal);

    // Space is back: writing works again, for both placements.
    std::fs::remove_file(filler).unwrap();
    write_synced(&m.join("000013.sst"), &later).unwrap();
    write_synced(&m.join("000014.log"), &later).unwrap();
    mount.unmount().unwrap();

    let mount = MountHandle::mount(&config, m).unwrap();
    assert!(std::fs::read(m.join("000010.sst")).unwrap() == sst);
    assert!(std::fs::read(m.join("000010.link")).unwrap() == sst);
    assert!(std::fs::read(m.join("000011.kept")).unwrap() == wal);
    assert!(std::fs::read(m.join("000013.sst")).unwrap() == later);
    assert!(std::fs::read(m.join("000014.log")).unwrap() == later);
    let mut kept: Vec<String> = std::fs::read_dir(m.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    let want: Vec<String> = (1..300)
        .step_by(2)
        .map(|i| format!("{i:06}.kept"))
        .collect();
    assert_eq!(kept, want);
    for gone in ["000011.log", "000012.log"] {
        assert!(!m.join(gone).exists(), "{gone}");
    }
    mount.unmount().unwrap();
}

/// RocksDB on a mount whose local disk fills up: a write fails (RocksDB stops writing), and once
/// space is back the mount remounts and the database reopens with every key a synced write
/// acknowledged.
#[test]
fn rocksdb_reopens_with_every_acknowledged_key_after_a_full_disk() {
    use rocksdb::{DB, Options, WriteOptions};
    let dirs = Dirs::new();
    let small = SmallFs::new(48 << 20);
    let config = on_small_disk(&dirs, &small);
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let db_path = dirs.mnt.join("db");
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_write_buffer_size(1 << 20);
    o.set_target_file_size_base(1 << 20);
    o.set_compression_type(rocksdb::DBCompressionType::None);
    let key = |i: u64| format!("key{i:010}").into_bytes();
    let value = |i: u64| pattern(1000, i as u8);
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let filler;
    let acknowledged;
    {
        let db = DB::open(&o, &db_path).unwrap();
        for i in 0..2000 {
            db.put_opt(key(i), value(i), &sync).unwrap();
        }
        filler = small.fill();
        let mut i = 2000;
        let err = loop {
            assert!(i < 1_000_000, "RocksDB kept writing on a full disk");
            match db.put_opt(key(i), value(i), &sync) {
                Ok(()) => i += 1,
                Err(e) => break e,
            }
        };
        acknowledged = i;
        let msg = err.to_string();
        assert!(
            msg.contains("No space left on device"),
            "RocksDB's error names the cause: {msg}"
        );
    }
    std::fs::remove_file(filler).unwrap();
    // Through a remount too: the mapping journal written on the full disk replays.
    mount.unmount().unwrap();
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let db = DB::open(&o, &db_path).unwrap();
    for i in 0..acknowledged {
        assert_eq!(
            db.get(key(i)).unwrap().as_deref(),
            Some(&value(i)[..]),
            "key {i} of {acknowledged} acknowledged"
        );
    }
    // And it writes again.
    db.put_opt(key(acknowledged), value(acknowledged), &sync)
        .unwrap();
    drop(db);
    mount.unmount().unwrap();
}

/// A restore onto a local disk with no room for the checkpoint's local-placed files fails with an
/// error that names the cause and leaves nothing half-restored; once there is room, the same
/// directories restore.
#[test]
fn a_restore_onto_a_full_disk_fails_cleanly_and_succeeds_with_room() {
    let dirs = Dirs::new();
    let sst = pattern(1 << 20, 6);
    let manifest = pattern(512 << 10, 7);
    let id = {
        let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
        std::fs::create_dir(dirs.mnt.join("chk")).unwrap();
        write_synced(&dirs.mnt.join("chk/000010.sst"), &sst).unwrap();
        write_synced(&dirs.mnt.join("chk/MANIFEST-000001"), &manifest).unwrap();
        let id = mount.checkpoint(&dirs.mnt.join("chk"), 0).unwrap().id;
        mount.unmount().unwrap();
        id
    };
    let small = SmallFs::new(16 << 20);
    let mut config = on_small_disk(&dirs, &small);
    config.restore = Some(statefs::config::RestoreFrom {
        id: id.clone(),
        claim: false,
    });
    let mnt = small.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let filler = small.fill();
    let err = MountHandle::mount(&config, &mnt)
        .err()
        .expect("a restore onto a full disk succeeded")
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!statefs_tests::is_mounted(&mnt));
    assert!(
        !small.path().join("local/journal").exists(),
        "half-restored: {err}"
    );
    std::fs::remove_file(filler).unwrap();
    let mount = MountHandle::mount(&config, &mnt).unwrap();
    assert!(std::fs::read(mnt.join("000010.sst")).unwrap() == sst);
    assert!(std::fs::read(mnt.join("MANIFEST-000001")).unwrap() == manifest);
    mount.unmount().unwrap();
}

/// Free bytes of the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_available() as u64 * s.fragment_size() as u64
}

/// The cache's free-space limit on a real small disk: after every sealed SST the cache dir's file
/// system keeps its reserve free (copies are dropped, oldest first), the cache still holds copies,
/// and every file reads back. When something else takes the disk's space, the next seal gives
/// copies back until the reserve is free again.
#[test]
fn the_cache_keeps_its_reserve_free_on_a_small_disk() {
    let dirs = Dirs::new();
    let small = SmallFs::new(48 << 20);
    let reserve = 16 << 20;
    let mut config = on_small_disk(&dirs, &small);
    config.cache.size_limit = 0;
    config.cache.reserve_size = reserve;
    config.cache.target_file_size = 4 << 20;
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let files: Vec<Vec<u8>> = (0..12u8).map(|i| pattern(4 << 20, i)).collect();
    for (i, data) in files.iter().enumerate() {
        write_synced(&dirs.mnt.join(format!("{i:06}.sst")), data).unwrap();
        let free = free_bytes(small.path());
        assert!(
            free >= reserve,
            "after SST {i}: {free} bytes free, reserve {reserve}"
        );
    }
    let cached = mount.core().cache_stats().used;
    assert!(
        cached >= 8 << 20,
        "the cache kept {cached} bytes of a 48 MiB disk with 16 MiB reserved"
    );
    // Something else fills the disk to 4 MiB short of the reserve.
    let other = small.path().join("other");
    let take = free_bytes(small.path()) - reserve + (4 << 20);
    std::fs::write(&other, vec![0u8; take as usize]).unwrap();
    assert!(free_bytes(small.path()) < reserve);
    write_synced(&dirs.mnt.join("000012.sst"), &files[0]).unwrap();
    let free = free_bytes(small.path());
    assert!(free >= reserve, "after the disk filled: {free} bytes free");
    for (i, data) in files.iter().enumerate() {
        let got = std::fs::read(dirs.mnt.join(format!("{i:06}.sst"))).unwrap();
        assert!(got == *data, "{i:06}.sst");
    }
    mount.unmount().unwrap();
}
