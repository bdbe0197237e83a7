//! Core tests without FUSE, on an in-memory object store.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::store::{FailingRemote, FaultPlan, ObjectStoreRemote, RetryPolicy, RetryingRemote};
use crate::table::ROOT_INO;

/// A cache that holds everything: tests of other behaviour must not depend on this disk's free space.
/// The cache of core tests: no limit, and no warm-up (no hot list loaded at start either), so that
/// copies are there exactly when a test made them; the warm-up has its own tests.
pub(crate) fn test_cache() -> crate::cache::CacheConfig {
    crate::cache::CacheConfig {
        size_limit: 1 << 40,
        reserve_size: 0,
        warm: crate::core::warm::WarmConfig {
            memory: 0,
            ..Default::default()
        },
        ..Default::default()
    }
}

const ME: Caller = Caller { uid: 0, gid: 0 };
const RW: i32 = libc::O_RDWR;

/// Scratch dirs and an in-memory store behind fault injection and fast retries.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) remote: Arc<dyn RemoteStore>,
    pub(crate) faults: FaultPlan,
    _rt: Arc<tokio::runtime::Runtime>,
}

impl Env {
    pub(crate) fn new() -> Env {
        let rt = crate::mount::runtime().unwrap();
        let faults = FaultPlan::default();
        let policy = RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            ..Default::default()
        };
        let remote: Arc<dyn RemoteStore> = Arc::new(RetryingRemote::new(
            FailingRemote::new(ObjectStoreRemote::in_memory(rt.clone()), faults.clone()),
            policy,
        ));
        Env {
            dir: tempfile::tempdir().unwrap(),
            remote,
            faults,
            _rt: rt,
        }
    }

    pub(crate) fn core(&self) -> Arc<FsCore> {
        self.core_with(test_cache())
    }

    pub(crate) fn core_with(&self, cache: crate::cache::CacheConfig) -> Arc<FsCore> {
        FsCore::start(
            &self.dir.path().join("local"),
            &self.dir.path().join("cache"),
            self.remote.clone(),
            cache,
        )
        .unwrap()
    }

    pub(crate) fn objects(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .remote
            .list("data/")
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        v.sort();
        v
    }
}

fn write_file(core: &FsCore, parent: Ino, name: &str, data: &[u8], sync: bool) -> Ino {
    let (attr, o) = core.create(parent, name, 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, data).unwrap();
    if sync {
        core.fsync(o.fh, true).unwrap();
    }
    core.release(o.fh).unwrap();
    attr.ino
}

/// Creates `name` and writes `data` through a handle that is never released (as when the kernel
/// dropped the RELEASE at unmount).
fn write_unreleased(core: &FsCore, name: &str, data: &[u8]) {
    let (_, o) = core.create(ROOT_INO, name, 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, data).unwrap();
}

/// Deletes every local copy and staging file: what is read next comes from the store.
fn lose_local_copies(env: &Env) {
    lose_local_copies_at(&env.dir.path().join("cache"));
}

pub(crate) fn lose_local_copies_at(cache_dir: &Path) {
    for entry in std::fs::read_dir(cache_dir.join("files")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
}

fn read_all(core: &FsCore, ino: Ino) -> Vec<u8> {
    let o = core.open(ino, libc::O_RDONLY).unwrap();
    let size = core.getattr(ino).unwrap().size;
    let data = core.read(o.fh, 0, size as u32 + 10).unwrap();
    core.release(o.fh).unwrap();
    data
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

impl FsCore {
    /// What a kill leaves: background work stops (queued removals finish: they only ever follow
    /// durable records), with no upload, no record and no compaction, and the local dir's lock
    /// goes with the last reference.
    pub(crate) fn halt(&self) {
        self.cache.shutdown();
        self.publisher.retainer.shutdown();
        self.publisher.registrar.shutdown();
        self.deleter.shutdown();
    }
}

/// Waits for the background deleter (removal happens after a journal sync, off the caller's thread).
fn settle(core: &FsCore) {
    core.settle();
}

#[test]
fn sst_is_uploaded_on_fsync_and_survives_restart() {
    let env = Env::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    {
        let core = env.core();
        let db = core.mkdir(ROOT_INO, "db", 0o755, ME).unwrap().ino;
        let ino = write_file(&core, db, "000007.sst", &data, true);
        let objects = env.objects();
        assert_eq!(objects.len(), 1, "one object per synced SST");
        assert_eq!(objects[0].1, data.len() as u64);
        assert_eq!(read_all(&core, ino), data);
        write_file(&core, db, "MANIFEST-000001", b"manifest", true);
        assert_eq!(
            env.objects().len(),
            1,
            "local-placed files never reach the store"
        );
        core.shutdown().unwrap();
    }
    let core = env.core();
    let db = core.lookup(ROOT_INO, "db").unwrap().ino;
    let sst = core.lookup(db, "000007.sst").unwrap();
    assert_eq!(sst.size, data.len() as u64);
    assert_eq!(read_all(&core, sst.ino), data);
    assert_eq!(
        read_all(&core, core.lookup(db, "MANIFEST-000001").unwrap().ino),
        b"manifest"
    );
}

/// A file closed without a sync whose RELEASE never reached the daemon (the kernel drops one
/// still queued when the connection ends at unmount) is uploaded at shutdown all the same.
#[test]
fn shutdown_uploads_files_closed_without_sync_and_never_released() {
    let env = Env::new();
    let data = vec![3u8; 50_000];
    {
        let core = env.core();
        write_unreleased(&core, "lost.sst", &data);
        write_unreleased(&core, "LOG", b"local");
        assert!(env.objects().is_empty());
        core.shutdown().unwrap();
    }
    assert_eq!(env.objects().len(), 1, "the SST, not the local-placed LOG");
    lose_local_copies(&env);
    let core = env.core();
    let ino = core.lookup(ROOT_INO, "lost.sst").unwrap().ino;
    assert_eq!(read_all(&core, ino), data);
}

/// When that upload at shutdown fails (the store is down for writes), the shutdown still
/// finishes, nothing is lost: the file keeps its local bytes, unsealed, and the next shutdown with
/// the store back uploads it.
#[test]
fn a_failed_upload_at_shutdown_keeps_the_local_bytes() {
    let env = Env::new();
    let data = vec![4u8; 30_000];
    {
        let core = env.core();
        write_unreleased(&core, "lost.sst", &data);
        env.faults.set_writes_down(true);
        core.shutdown().unwrap();
        env.faults.set_writes_down(false);
    }
    assert!(env.objects().is_empty());
    {
        let core = env.core();
        let ino = core.lookup(ROOT_INO, "lost.sst").unwrap().ino;
        assert_eq!(read_all(&core, ino), data);
        core.shutdown().unwrap();
    }
    assert_eq!(env.objects().len(), 1);
}

/// `a.sst` holding `data`, uploaded, its local copies lost, opened for reading by a new core.
fn open_cold(env: &Env, data: &[u8]) -> (Arc<FsCore>, Opened) {
    {
        let core = env.core();
        write_file(&core, ROOT_INO, "a.sst", data, true);
        core.shutdown().unwrap();
    }
    lose_local_copies(env);
    let core = env.core();
    let ino = core.lookup(ROOT_INO, "a.sst").unwrap().ino;
    let o = core.open(ino, libc::O_RDONLY).unwrap();
    (core, o)
}

#[test]
fn reads_fall_back_to_the_store_without_a_local_copy() {
    let env = Env::new();
    let (core, o) = open_cold(&env, &vec![7u8; 100_000]);
    assert!(
        o.backing.is_none(),
        "no local copy: the daemon serves reads"
    );
    assert_eq!(core.read(o.fh, 99_990, 100).unwrap(), vec![7u8; 10]);
    assert_eq!(core.read(o.fh, 100_000, 100).unwrap(), Vec::<u8>::new());
    core.release(o.fh).unwrap();
    assert_eq!(core.metrics.remote_reads.load(Ordering::Relaxed), 1);
}

/// Cold reads of different blocks through one handle (RocksDB reads every SST through one
/// descriptor, from many threads) are fetched at the same time, not one after another: the
/// handle's read pattern is updated before a fetch, not held during it. Held, four readers kept
/// one GET in flight, and an async State API batch reading an SST from 64 threads waited 20 ms
/// per block in turn.
#[test]
fn cold_reads_through_one_handle_fetch_in_parallel() {
    let env = Env::new();
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let (core, o) = open_cold(&env, &data);
    env.faults.set_latency(Duration::from_millis(200));
    let data = &data;
    std::thread::scope(|s| {
        for i in 0..4u64 {
            let core = core.clone();
            s.spawn(move || {
                // Blocks a megabyte apart: no read-ahead joins them.
                let off = i << 20;
                let got = core.read(o.fh, off, 4096).unwrap();
                assert_eq!(got, data[off as usize..off as usize + 4096]);
            });
        }
    });
    env.faults.set_latency(Duration::ZERO);
    assert!(
        env.faults.max_in_flight() >= 3,
        "GETs in flight at once: {}",
        env.faults.max_in_flight()
    );
    core.release(o.fh).unwrap();
}

#[test]
fn rename_and_link_are_metadata_only_and_delete_on_last_name() {
    let env = Env::new();
    let core = env.core();
    let ino = write_file(&core, ROOT_INO, "1.sst", b"one", true);
    let before = env.objects();
    core.link(ino, ROOT_INO, "chk.sst").unwrap();
    core.rename(ROOT_INO, "1.sst", ROOT_INO, "2.sst", 0)
        .unwrap();
    assert_eq!(env.objects(), before, "no bytes move");
    assert_eq!(core.getattr(ino).unwrap().nlink, 2);
    core.unlink(ROOT_INO, "2.sst").unwrap();
    settle(&core);
    assert_eq!(env.objects(), before, "still named by chk.sst");
    assert_eq!(
        read_all(&core, core.lookup(ROOT_INO, "chk.sst").unwrap().ino),
        b"one"
    );
    let core = {
        drop(core);
        env.core()
    };
    core.unlink(ROOT_INO, "chk.sst").unwrap();
    settle(&core);
    assert!(env.objects().is_empty(), "last name gone: object deleted");
    assert_eq!(files_in(&env.dir.path().join("cache/files")), 0);
}

#[test]
fn rename_over_existing_file_releases_the_target() {
    let env = Env::new();
    let core = env.core();
    write_file(&core, ROOT_INO, "old.sst", b"old", true);
    let new = write_file(&core, ROOT_INO, "new.sst", b"new", true);
    assert_eq!(env.objects().len(), 2);
    core.rename(ROOT_INO, "new.sst", ROOT_INO, "old.sst", 0)
        .unwrap();
    settle(&core);
    assert_eq!(env.objects().len(), 1);
    assert_eq!(core.lookup(ROOT_INO, "old.sst").unwrap().ino, new);
    assert!(matches!(
        core.lookup(ROOT_INO, "new.sst"),
        Err(FsError::NotFound)
    ));
    // CURRENT-style replace of a local file.
    write_file(&core, ROOT_INO, "CURRENT", b"MANIFEST-1\n", true);
    write_file(&core, ROOT_INO, "000002.dbtmp", b"MANIFEST-2\n", true);
    core.rename(ROOT_INO, "000002.dbtmp", ROOT_INO, "CURRENT", 0)
        .unwrap();
    assert_eq!(
        read_all(&core, core.lookup(ROOT_INO, "CURRENT").unwrap().ino),
        b"MANIFEST-2\n"
    );
}

#[test]
fn rename_rules() {
    let env = Env::new();
    let core = env.core();
    let d = core.mkdir(ROOT_INO, "d", 0o755, ME).unwrap().ino;
    let sub = core.mkdir(d, "sub", 0o755, ME).unwrap().ino;
    write_file(&core, ROOT_INO, "f", b"x", false);
    write_file(&core, ROOT_INO, "g", b"y", false);
    let noreplace = libc::RENAME_NOREPLACE;
    assert!(matches!(
        core.rename(ROOT_INO, "f", ROOT_INO, "g", noreplace),
        Err(FsError::Exists)
    ));
    assert!(matches!(
        core.rename(ROOT_INO, "d", sub, "x", 0),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        core.rename(ROOT_INO, "f", ROOT_INO, "d", 0),
        Err(FsError::IsDir)
    ));
    assert!(matches!(
        core.rename(ROOT_INO, "d", ROOT_INO, "f", 0),
        Err(FsError::NotDir)
    ));
    // RENAME_EXCHANGE swaps the two names' inodes; a directory may not go inside itself.
    let (f_ino, g_ino) = (
        core.lookup(ROOT_INO, "f").unwrap().ino,
        core.lookup(ROOT_INO, "g").unwrap().ino,
    );
    core.rename(ROOT_INO, "f", ROOT_INO, "g", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(core.lookup(ROOT_INO, "f").unwrap().ino, g_ino);
    assert_eq!(core.lookup(ROOT_INO, "g").unwrap().ino, f_ino);
    core.rename(ROOT_INO, "g", ROOT_INO, "f", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(core.lookup(ROOT_INO, "f").unwrap().ino, f_ino);
    assert!(matches!(
        core.rename(ROOT_INO, "d", sub, "x", libc::RENAME_EXCHANGE),
        Err(FsError::NotFound)
    ));
    core.mkdir(sub, "y", 0o755, ME).unwrap();
    assert!(matches!(
        core.rename(ROOT_INO, "d", sub, "y", libc::RENAME_EXCHANGE),
        Err(FsError::Invalid(_))
    ));
    core.rmdir(sub, "y").unwrap();
    core.rename(ROOT_INO, "f", d, "f2", noreplace).unwrap();
    assert!(core.lookup(d, "f2").is_ok());
    let e = core.mkdir(ROOT_INO, "e", 0o755, ME).unwrap().ino;
    assert!(matches!(
        core.rename(ROOT_INO, "e", ROOT_INO, "d", 0),
        Err(FsError::NotEmpty)
    ));
    core.rmdir(d, "sub").unwrap();
    core.rename(d, "f2", ROOT_INO, "f", 0).unwrap();
    core.rename(ROOT_INO, "e", ROOT_INO, "d", 0).unwrap();
    assert_eq!(core.lookup(ROOT_INO, "d").unwrap().ino, e);
    assert!(matches!(core.rmdir(ROOT_INO, "f"), Err(FsError::NotDir)));
    assert!(matches!(core.unlink(ROOT_INO, "d"), Err(FsError::IsDir)));
    assert!(matches!(
        core.link(e, ROOT_INO, "x"),
        Err(FsError::NotPermitted(_))
    ));
}

#[test]
fn unlinked_open_file_lives_until_release() {
    let env = Env::new();
    let core = env.core();
    let ino = write_file(&core, ROOT_INO, "t.sst", b"still here", true);
    let o = core.open(ino, libc::O_RDONLY).unwrap();
    core.unlink(ROOT_INO, "t.sst").unwrap();
    assert_eq!(core.read(o.fh, 0, 100).unwrap(), b"still here");
    assert_eq!(env.objects().len(), 1);
    core.release(o.fh).unwrap();
    settle(&core);
    assert!(env.objects().is_empty());
    assert!(matches!(core.getattr(ino), Err(FsError::NotFound)));
}

#[test]
fn orphan_left_by_a_crash_is_collected_at_recovery() {
    let env = Env::new();
    {
        let core = env.core();
        let ino = write_file(&core, ROOT_INO, "t.sst", b"data", true);
        let o = core.open(ino, libc::O_RDONLY).unwrap();
        core.unlink(ROOT_INO, "t.sst").unwrap();
        // "Crash": the core goes away with the handle still open, no shutdown.
        std::mem::forget(o);
        core.halt();
    }
    let core = env.core();
    settle(&core);
    assert!(env.objects().is_empty());
    assert_eq!(core.inode_count(), 1);
    assert_eq!(files_in(&env.dir.path().join("cache/files")), 0);
}

/// Opening a sealed file with no local copy for writing downloads it first: whole, and only if the
/// object matches the size and CRC32C its record names. A damaged object fails the open and leaves
/// no partial copy behind.
#[test]
fn a_download_for_writing_is_whole_or_refused() {
    let env = Env::new();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let (good, bad) = {
        let core = env.core();
        let good = write_file(&core, ROOT_INO, "good.sst", &data, true);
        let bad = write_file(&core, ROOT_INO, "bad.sst", &data, true);
        core.shutdown().unwrap();
        (good, bad)
    };
    lose_local_copies(&env);
    let core = env.core();
    let key = core.file_meta(bad).unwrap().sealed.unwrap().key;
    let mut damaged = data.clone();
    damaged[400_000] ^= 1;
    env.remote.put(&key, damaged.into()).unwrap();

    let o = core.open(good, RW).unwrap();
    core.release(o.fh).unwrap();
    assert_eq!(read_all(&core, good), data);
    assert!(
        core.open(bad, RW).is_err(),
        "a damaged object must not become the local copy"
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path().join("cache/files"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".download"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial downloads left: {leftovers:?}"
    );
    // The file still reads from the store: the damage is the store's, the record is intact.
    assert_eq!(core.getattr(bad).unwrap().size, data.len() as u64);
}

#[test]
fn rewriting_a_sealed_file_uploads_a_new_object_and_deletes_the_old() {
    let env = Env::new();
    let core = env.core();
    let ino = write_file(&core, ROOT_INO, "x.sst", b"version one", true);
    let first = env.objects();
    let o = core.open(ino, RW).unwrap();
    core.write(o.fh, 0, b"VERSION").unwrap();
    core.fsync(o.fh, false).unwrap();
    core.release(o.fh).unwrap();
    settle(&core);
    let second = env.objects();
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    assert_eq!(read_all(&core, ino), b"VERSION one");
    // Opening for write without writing uploads nothing.
    let core = {
        drop(core);
        env.core()
    };
    let o = core.open(ino, RW).unwrap();
    core.release(o.fh).unwrap();
    settle(&core);
    assert_eq!(env.objects(), second);
}

#[test]
fn truncate_to_own_size_after_sync_keeps_the_sealed_version() {
    // RocksDB: fallocate(KEEP_SIZE), write, fdatasync, ftruncate(size), close.
    let env = Env::new();
    let core = env.core();
    let (attr, o) = core.create(ROOT_INO, "9.sst", 0o644, RW, ME).unwrap();
    core.fallocate(o.fh, 0, 1 << 20, libc::FALLOC_FL_KEEP_SIZE)
        .unwrap();
    core.write(o.fh, 0, &[1u8; 5000]).unwrap();
    core.fsync(o.fh, true).unwrap();
    core.setattr(
        attr.ino,
        Some(o.fh),
        SetAttr {
            size: Some(5000),
            ..Default::default()
        },
    )
    .unwrap();
    core.fallocate(
        o.fh,
        5000,
        1 << 20,
        libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE,
    )
    .unwrap();
    core.release(o.fh).unwrap();
    assert_eq!(
        core.metrics.uploads.load(Ordering::Relaxed),
        1,
        "one upload per SST"
    );
    assert_eq!(core.getattr(attr.ino).unwrap().size, 5000);
    // A hole punched inside the data changes bytes: the next sync uploads the new version.
    let o = core.open(attr.ino, RW).unwrap();
    core.fallocate(
        o.fh,
        0,
        4096,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    core.fsync(o.fh, true).unwrap();
    core.release(o.fh).unwrap();
    assert_eq!(core.metrics.uploads.load(Ordering::Relaxed), 2);
    let o = core.open(attr.ino, libc::O_RDONLY).unwrap();
    let data = core.read(o.fh, 0, 5000).unwrap();
    assert!(data[..4096].iter().all(|b| *b == 0) && data[4096..].iter().all(|b| *b == 1));
    core.release(o.fh).unwrap();
}

#[test]
fn unavailable_store_fails_fsync_with_eio_and_keeps_the_mapping() {
    let env = Env::new();
    let core = env.core();
    let (attr, o) = core.create(ROOT_INO, "5.sst", 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, b"precious").unwrap();
    env.faults.set_down(true);
    let err = core.fsync(o.fh, true).unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(env.faults.injected() >= 2, "retried before failing");
    // The store comes back: the next fsync uploads what the failed one could not.
    env.faults.set_down(false);
    core.fsync(o.fh, true).unwrap();
    core.release(o.fh).unwrap();
    assert_eq!(env.objects().len(), 1);
    assert_eq!(read_all(&core, attr.ino), b"precious");
}

#[test]
fn unsynced_changes_to_a_sealed_copy_are_dropped_at_recovery() {
    let env = Env::new();
    let ino;
    {
        let core = env.core();
        ino = write_file(&core, ROOT_INO, "s.sst", b"synced", true);
        let o = core.open(ino, RW).unwrap();
        core.write(o.fh, 0, b"UNSYNCED!").unwrap();
        std::mem::forget(o); // crash before release
        core.halt();
    }
    let core = env.core();
    assert_eq!(read_all(&core, ino), b"synced");
}

#[test]
fn local_dir_is_locked_while_open() {
    let env = Env::new();
    let core = env.core();
    let err = FsCore::start(
        &env.dir.path().join("local"),
        &env.dir.path().join("cache2"),
        env.remote.clone(),
        crate::core::tests::test_cache(),
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::LocalDirInUse { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // Shut down as an unmount does: a background worker of the core (the mount-record
    // registrar, in a store call) can hold the last reference for a moment after a bare drop.
    core.shutdown().unwrap();
    drop(core);
    env.core();
}

#[test]
fn unreachable_store_fails_the_start() {
    let env = Env::new();
    env.faults.set_down(true);
    let err = FsCore::start(
        &env.dir.path().join("local"),
        &env.dir.path().join("cache"),
        env.remote.clone(),
        crate::core::tests::test_cache(),
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::Remote(_)), "{err}");
}

#[test]
fn names_are_validated() {
    let env = Env::new();
    let core = env.core();
    assert!(matches!(
        core.mkdir(ROOT_INO, &"x".repeat(256), 0o755, ME),
        Err(FsError::NameTooLong)
    ));
    assert!(matches!(
        core.create(ROOT_INO, "a/b", 0o644, RW, ME),
        Err(FsError::Invalid(_))
    ));
    write_file(&core, ROOT_INO, "f", b"", false);
    assert!(matches!(
        core.create(ROOT_INO, "f", 0o644, RW | libc::O_EXCL, ME),
        Err(FsError::Exists)
    ));
    assert!(matches!(
        core.mkdir(ROOT_INO, "f", 0o755, ME),
        Err(FsError::Exists)
    ));
}

#[test]
fn readdir_lists_a_snapshot() {
    let env = Env::new();
    let core = env.core();
    write_file(&core, ROOT_INO, "b", b"", false);
    core.mkdir(ROOT_INO, "a", 0o755, ME).unwrap();
    let fh = core.opendir(ROOT_INO).unwrap();
    write_file(&core, ROOT_INO, "c", b"", false);
    let names: Vec<_> = core
        .readdir(fh)
        .unwrap()
        .iter()
        .map(|e| (e.name.clone(), e.kind == crate::core::FileKind::Dir))
        .collect();
    assert_eq!(
        names,
        vec![
            (".".into(), true),
            ("..".into(), true),
            ("a".into(), true),
            ("b".into(), false)
        ]
    );
    core.releasedir(fh);
    assert_eq!(core.getattr(ROOT_INO).unwrap().nlink, 3);
}

/// An SST removed while a publish runs (RocksDB finishing a purge it began before deletions were
/// paused) loses its object; a `SealedOnly` file so removed is left out of the checkpoint, a
/// `Mounted` one fails the publish, and no manifest names an object that is gone.
#[test]
fn a_file_removed_during_a_publish_is_never_named_by_it() {
    use crate::core::CheckpointFile as F;
    for optional in [true, false] {
        let env = Env::new();
        let core_slot: Arc<std::sync::OnceLock<std::sync::Weak<FsCore>>> = Default::default();
        let slot = core_slot.clone();
        // The first copy of a small file stored: between the sealing of the publish's SSTs and
        // their borrowing.
        let remote = HookRemote::new(
            env.remote.clone(),
            |op, key| op == "put" && key.starts_with("copies/"),
            move || {
                let core = slot.get().unwrap().upgrade().unwrap();
                core.unlink(ROOT_INO, "000002.sst").unwrap();
            },
        );
        let core = FsCore::start(
            &env.dir.path().join("local"),
            &env.dir.path().join("cache"),
            remote,
            test_cache(),
        )
        .unwrap();
        core_slot.set(Arc::downgrade(&core)).unwrap();
        write_file(&core, ROOT_INO, "000001.sst", b"kept", true);
        write_file(&core, ROOT_INO, "000002.sst", b"removed meanwhile", true);
        write_file(&core, ROOT_INO, "CURRENT", b"MANIFEST-000003\n", true);
        let sst = |name: &str| {
            if optional {
                F::SealedOnly {
                    name: name.into(),
                    path: name.into(),
                }
            } else {
                F::Mounted {
                    name: name.into(),
                    path: name.into(),
                }
            }
        };
        let files = vec![
            sst("000001.sst"),
            sst("000002.sst"),
            F::Mounted {
                name: "CURRENT".into(),
                path: "CURRENT".into(),
            },
        ];
        let result = core.publish_files(files, 0, false);
        let ids = crate::checkpoint::list_ids(env.remote.as_ref()).unwrap();
        if optional {
            let p = result.unwrap();
            assert_eq!((p.files, p.referenced_bytes), (2, 4));
            let m = crate::checkpoint::load_manifest(env.remote.as_ref(), &p.id).unwrap();
            let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["000001.sst", "CURRENT"]);
            for f in &m.files {
                env.remote.head(&f.key).unwrap();
            }
        } else {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("000002.sst"), "{err}");
            assert!(ids.is_empty(), "no checkpoint: {ids:?}");
        }
    }
}

/// Runs `hook` once, at the first store call for which `when(op, key)` holds, before the call.
pub(crate) struct HookRemote {
    inner: Arc<dyn RemoteStore>,
    #[allow(clippy::type_complexity)]
    when: Box<dyn Fn(&str, &str) -> bool + Send + Sync>,
    #[allow(clippy::type_complexity)]
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for HookRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookRemote")
    }
}

impl HookRemote {
    pub(crate) fn new(
        inner: Arc<dyn RemoteStore>,
        when: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
        hook: impl FnOnce() + Send + 'static,
    ) -> Arc<HookRemote> {
        Arc::new(HookRemote {
            inner,
            when: Box::new(when),
            hook: std::sync::Mutex::new(Some(Box::new(hook))),
        })
    }

    fn at(&self, op: &str, key: &str) {
        if (self.when)(op, key)
            && let Some(hook) = self.hook.lock().unwrap().take()
        {
            hook();
        }
    }
}

impl RemoteStore for HookRemote {
    fn put(&self, key: &str, data: bytes::Bytes) -> Result<(), crate::store::StoreError> {
        self.at("put", key);
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: bytes::Bytes) -> Result<(), crate::store::StoreError> {
        self.at("put_if_absent", key);
        self.inner.put_if_absent(key, data)
    }
    fn put_file(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<crate::store::Uploaded, crate::store::StoreError> {
        self.at("put_file", key);
        self.inner.put_file(key, path)
    }
    fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, crate::store::StoreError> {
        self.at("get_range", key);
        self.inner.get_range(key, range)
    }
    fn get(&self, key: &str) -> Result<bytes::Bytes, crate::store::StoreError> {
        self.at("get", key);
        self.inner.get(key)
    }
    fn head(&self, key: &str) -> Result<u64, crate::store::StoreError> {
        self.at("head", key);
        self.inner.head(key)
    }
    fn delete(&self, key: &str) -> Result<(), crate::store::StoreError> {
        self.at("delete", key);
        self.inner.delete(key)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<crate::store::ObjectInfo>, crate::store::StoreError> {
        self.at("list", prefix);
        self.inner.list(prefix)
    }
}

/// Symlinks, FIFOs, sockets and device nodes are journaled inodes: with their type, target or
/// device number, hard links to them, and their times and modes, they come back after a crash.
#[test]
fn symlinks_and_special_files_survive_a_crash() {
    use crate::core::FileKind;
    let env = Env::new();
    {
        let core = env.core();
        let l = core
            .symlink(ROOT_INO, "l", "target/of/the link", ME)
            .unwrap();
        assert_eq!((l.kind, l.size, l.perm), (FileKind::Symlink, 18, 0o777));
        let fifo = libc::S_IFIFO | 0o640;
        assert_eq!(
            core.mknod(ROOT_INO, "p", fifo, 0, ME).unwrap().kind,
            FileKind::Fifo
        );
        let sock = libc::S_IFSOCK | 0o600;
        assert_eq!(
            core.mknod(ROOT_INO, "s", sock, 0, ME).unwrap().kind,
            FileKind::Socket
        );
        let chr = core
            .mknod(ROOT_INO, "c", libc::S_IFCHR | 0o600, 0x0103, ME)
            .unwrap();
        assert_eq!((chr.kind, chr.rdev), (FileKind::CharDevice, 0x0103));
        let reg = core
            .mknod(ROOT_INO, "r", libc::S_IFREG | 0o644, 0, ME)
            .unwrap();
        assert_eq!(reg.kind, FileKind::File);
        core.link(l.ino, ROOT_INO, "l2").unwrap();
        assert!(matches!(
            core.mknod(ROOT_INO, "dir", libc::S_IFDIR | 0o755, 0, ME),
            Err(FsError::NotPermitted(_))
        ));
        assert!(matches!(
            core.symlink(ROOT_INO, "p", "x", ME),
            Err(FsError::Exists)
        ));
        assert!(matches!(
            core.symlink(ROOT_INO, "e", "", ME),
            Err(FsError::NotFound)
        ));
        let long = "t".repeat(crate::core::SYMLINK_MAX + 1);
        assert!(matches!(
            core.symlink(ROOT_INO, "e", &long, ME),
            Err(FsError::NameTooLong)
        ));
        core.halt();
    }
    let core = env.core();
    let l = core.lookup(ROOT_INO, "l").unwrap();
    assert_eq!((l.kind, l.nlink), (FileKind::Symlink, 2));
    assert_eq!(core.readlink(l.ino).unwrap(), "target/of/the link");
    assert_eq!(core.lookup(ROOT_INO, "l2").unwrap().ino, l.ino);
    let p = core.lookup(ROOT_INO, "p").unwrap();
    assert_eq!((p.kind, p.perm), (FileKind::Fifo, 0o640));
    assert_eq!(core.lookup(ROOT_INO, "s").unwrap().kind, FileKind::Socket);
    assert_eq!(core.lookup(ROOT_INO, "c").unwrap().rdev, 0x0103);
    assert!(matches!(core.readlink(p.ino), Err(FsError::Invalid(_))));
    let kinds: Vec<_> = {
        let fh = core.opendir(ROOT_INO).unwrap();
        core.readdir(fh)
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.kind))
            .collect()
    };
    assert!(
        kinds.contains(&("p".to_string(), FileKind::Fifo)),
        "{kinds:?}"
    );
    core.unlink(ROOT_INO, "l").unwrap();
    core.unlink(ROOT_INO, "l2").unwrap();
    assert!(matches!(core.lookup(ROOT_INO, "l"), Err(FsError::NotFound)));
}

/// A name longer than NAME_MAX is ENAMETOOLONG for every call that takes one, not ENOENT.
#[test]
fn names_longer_than_name_max_are_too_long_everywhere() {
    let env = Env::new();
    let core = env.core();
    let f = write_file(&core, ROOT_INO, "f", b"x", true);
    let long = "n".repeat(crate::core::NAME_MAX + 1);
    let too_long = |r: FsResult<()>| assert!(matches!(r, Err(FsError::NameTooLong)), "{r:?}");
    too_long(core.lookup(ROOT_INO, &long).map(drop));
    too_long(core.unlink(ROOT_INO, &long));
    too_long(core.rmdir(ROOT_INO, &long));
    too_long(core.rename(ROOT_INO, &long, ROOT_INO, "g", 0));
    too_long(core.rename(ROOT_INO, "f", ROOT_INO, &long, 0));
    too_long(core.link(f, ROOT_INO, &long).map(drop));
    too_long(core.mkdir(ROOT_INO, &long, 0o755, ME).map(drop));
    too_long(core.symlink(ROOT_INO, &long, "t", ME).map(drop));
    too_long(
        core.mknod(ROOT_INO, &long, libc::S_IFIFO | 0o600, 0, ME)
            .map(drop),
    );
    let exactly = "n".repeat(crate::core::NAME_MAX);
    core.mkdir(ROOT_INO, &exactly, 0o755, ME).unwrap();
}

/// ctime moves whenever the inode changes, also where the backing file is not touched: chmod of
/// a regular file, link, unlink of one of several names, rename; utimensat sets a directory's
/// times.
#[test]
fn ctime_follows_every_change_of_the_inode() {
    let env = Env::new();
    let core = env.core();
    let f = write_file(&core, ROOT_INO, "f.log", b"x", true);
    let step = || std::thread::sleep(Duration::from_millis(20));
    let mut last = core.getattr(f).unwrap().ctime;
    let mut moved = |what: &str| {
        let now = core.getattr(f).unwrap().ctime;
        assert!(now > last, "{what} left ctime at {last:?}");
        last = now;
    };
    step();
    core.setattr(
        f,
        None,
        SetAttr {
            perm: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    moved("chmod");
    step();
    core.link(f, ROOT_INO, "g.log").unwrap();
    moved("link");
    step();
    core.unlink(ROOT_INO, "g.log").unwrap();
    moved("unlink of one of two names");
    step();
    core.rename(ROOT_INO, "f.log", ROOT_INO, "h.log", 0)
        .unwrap();
    moved("rename");
    let d = core.mkdir(ROOT_INO, "d", 0o755, ME).unwrap().ino;
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let times = SetAttr {
        atime: Some(t),
        mtime: Some(t),
        ..Default::default()
    };
    let a = core.setattr(d, None, times).unwrap();
    assert_eq!((a.atime, a.mtime), (t, t));
    assert!(a.ctime > t);
}

/// The warm-up hands the page cache only bytes of the version an inode maps to when they arrive:
/// a file removed while its warm-up GETs are held gets nothing; a file left alone gets every byte
/// at its offset, tail first.
#[test]
fn the_warm_up_stores_only_the_current_version() {
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(Ino, u64, Vec<u8>)>>);
    impl super::warm::PageCache for Recorder {
        fn store(&self, ino: Ino, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().push((ino, offset, data.to_vec()));
            Ok(())
        }
    }
    let env = Env::new();
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (a, b) = {
        let core = env.core();
        let a = write_file(&core, ROOT_INO, "a.sst", &bytes, true);
        let b = write_file(&core, ROOT_INO, "b.sst", &bytes, true);
        core.shutdown().unwrap();
        (a, b)
    };
    lose_local_copies(&env);
    // No hot list either: its loads could give b a local copy before it is opened, and then
    // nothing is warmed (warm_starts_load_the_hot_list_first covers those loads).
    std::fs::remove_file(env.dir.path().join("local/hot-files")).unwrap();
    let mut cache = test_cache();
    cache.warm.memory = 1 << 30;
    // One GET at a time: pieces complete in the order they are taken, tails first.
    cache.warm.in_flight = 1;
    let core = env.core_with(cache);
    let rec = Arc::new(Recorder::default());
    core.set_page_cache(rec.clone());
    env.faults.hold_reads(true);
    let oa = core.open(a, libc::O_RDONLY).unwrap();
    let ob = core.open(b, libc::O_RDONLY).unwrap();
    core.release(oa.fh).unwrap();
    core.unlink(ROOT_INO, "a.sst").unwrap();
    env.faults.hold_reads(false);
    core.wait_warm();
    let stored = rec.0.lock().unwrap().clone();
    assert!(
        stored.iter().all(|(ino, _, _)| *ino == b),
        "nothing of the removed file"
    );
    let mut whole = vec![0u8; bytes.len()];
    for (_, off, data) in &stored {
        whole[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    let mut ranges: Vec<(u64, usize)> = stored.iter().map(|(_, o, d)| (*o, d.len())).collect();
    ranges.sort();
    assert!(
        whole == bytes,
        "every byte of b at its offset: stored {ranges:?}, failures {}",
        core.warm_metrics()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(
        stored.iter().map(|(_, _, d)| d.len()).sum::<usize>(),
        bytes.len(),
        "each byte once"
    );
    assert!(stored[0].1 > 0, "the tail comes first");
    core.release(ob.fh).unwrap();
}
