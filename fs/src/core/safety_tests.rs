//! Tests of what must never be lost: crashes on a full disk, failed journal syncs, and (with the
//! store's fault layer) ambiguous and failing object-store calls.

use std::path::Path;
use std::sync::Arc;

use super::tests::{Env, HookRemote, test_cache};
use super::*;
use crate::table::ROOT_INO;

const ME: Caller = Caller { uid: 0, gid: 0 };
const RW: i32 = libc::O_RDWR;

fn start_at(local: &Path, cache: &Path, remote: Arc<dyn RemoteStore>) -> Arc<FsCore> {
    FsCore::start(local, cache, remote, test_cache()).unwrap()
}

/// Creates `name` in the root, writes `data`, fsyncs and closes it.
fn write_synced(core: &FsCore, name: &str, data: &[u8]) -> Ino {
    let (attr, o) = core.create(ROOT_INO, name, 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, data).unwrap();
    core.fsync(o.fh, true).unwrap();
    core.release(o.fh).unwrap();
    attr.ino
}

fn read_name(core: &FsCore, name: &str) -> Vec<u8> {
    let attr = core.lookup(ROOT_INO, name).unwrap();
    let o = core.open(attr.ino, libc::O_RDONLY).unwrap();
    let data = core.read(o.fh, 0, attr.size as u32 + 1).unwrap();
    core.release(o.fh).unwrap();
    data
}

/// A "kill -9": the core goes away without a shutdown (no compaction, no final record).
fn crash(core: Arc<FsCore>) {
    core.halt();
    drop(core);
}

/// After a crash on a full local disk the mount comes back (a compaction that does not fit is put
/// off, as during operation), with every synced byte.
#[test]
fn a_crash_on_a_full_local_disk_remounts_with_everything_synced() {
    let env = Env::new();
    let small = crate::testing::SmallFs::new(8 << 20);
    let (local, cache) = (small.path().join("local"), small.path().join("cache"));
    let wal: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let sst: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let core = start_at(&local, &cache, env.remote.clone());
    write_synced(&core, "000003.log", &wal);
    write_synced(&core, "000004.sst", &sst);
    let filler = small.fill();
    crash(core);
    let core = FsCore::start(&local, &cache, env.remote.clone(), test_cache())
        .expect("a full disk must not refuse the remount");
    assert_eq!(read_name(&core, "000003.log"), wal);
    assert_eq!(read_name(&core, "000004.sst"), sst);
    // Metadata goes on, and once space is back so do writes.
    core.rename(ROOT_INO, "000003.log", ROOT_INO, "000003.old", 0)
        .unwrap();
    std::fs::remove_file(filler).unwrap();
    write_synced(&core, "000005.log", b"after");
    core.shutdown().unwrap();
}

/// A failed journal sync poisons the mount's journal: that fsync and every later one fail with
/// EIO (never a success that a retried fdatasync would give after a writeback error), and so
/// does every operation that needs a record, until a remount replays what is on disk.
#[test]
fn a_failed_journal_sync_fails_every_later_fsync_with_eio() {
    let env = Env::new();
    let local = env.dir.path().join("local");
    let cache = env.dir.path().join("cache");
    let core = start_at(&local, &cache, env.remote.clone());
    write_synced(&core, "CURRENT", b"MANIFEST-000001\n");
    let (_, o) = core.create(ROOT_INO, "000001.log", 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, b"record").unwrap();
    core.ns.fail_syncs(1);
    let eio = |r: FsResult<()>| matches!(r, Err(e) if e.errno() == libc::EIO);
    assert!(eio(core.fsync(o.fh, true)));
    assert!(eio(core.fsync(o.fh, true)), "a retried fsync is no proof");
    assert!(eio(core.fsyncdir()));
    assert!(
        core.create(ROOT_INO, "000002.log", 0o644, RW, ME)
            .is_err_and(|e| e.errno() == libc::EIO)
    );
    core.release(o.fh).unwrap();
    crash(core);
    let core = start_at(&local, &cache, env.remote.clone());
    assert_eq!(read_name(&core, "CURRENT"), b"MANIFEST-000001\n");
    write_synced(&core, "000002.log", b"after the remount");
    core.shutdown().unwrap();
}

fn gc_now(remote: &dyn RemoteStore) -> crate::checkpoint::GcReport {
    crate::checkpoint::collect_garbage(remote, Duration::ZERO, false).unwrap()
}

/// Row 1 and 2 of the safety issue: an SST fsynced a moment ago, on a mount that then crashed
/// (its record never named the object) or that still runs, survives `statefs gc` with no grace
/// period at all: the object's key names its mount, whose record exists.
#[test]
fn gc_with_no_grace_period_never_takes_a_synced_sst() {
    let env = Env::new();
    let (local, cache) = (env.dir.path().join("local"), env.dir.path().join("cache"));
    let sst: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    let core = start_at(&local, &cache, env.remote.clone());
    write_synced(&core, "000009.sst", &sst);
    // Running: gc deletes nothing, the file reads back.
    let report = gc_now(env.remote.as_ref());
    assert!(report.garbage.is_empty(), "{report:?}");
    assert_eq!(report.owned_by_mounts, 1);
    assert_eq!(read_name(&core, "000009.sst"), sst);
    write_synced(&core, "000010.sst", &sst);
    crash(core);
    // Crashed, its record naming neither object: still nothing is taken.
    let record = crate::checkpoint::list_mounts(env.remote.as_ref()).unwrap();
    assert!(record[0].keys.is_empty(), "the record lags: {record:?}");
    assert!(gc_now(env.remote.as_ref()).garbage.is_empty());
    let core = start_at(&local, &cache, env.remote.clone());
    super::tests::lose_local_copies_at(&cache);
    assert_eq!(read_name(&core, "000009.sst"), sst);
    assert_eq!(read_name(&core, "000010.sst"), sst);
    core.shutdown().unwrap();
    drop(core);
    let fsck = crate::fsck::fsck(&local, env.remote.as_ref()).unwrap();
    assert!(!fsck.damaged(), "{fsck:?}");
}

/// A crash between an upload and the journal record naming it leaves an object nothing names;
/// the next mount releases it (no gc, no clock), and keeps everything its journal names.
#[test]
fn the_next_mount_releases_what_a_crash_left_unnamed() {
    let env = Env::new();
    let (local, cache) = (env.dir.path().join("local"), env.dir.path().join("cache"));
    let core = start_at(&local, &cache, env.remote.clone());
    write_synced(&core, "000001.sst", b"kept");
    // The upload lands, then the journal refuses its record: as a crash in between would.
    let (_, o) = core.create(ROOT_INO, "000002.sst", 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, b"never recorded").unwrap();
    core.ns.fail_syncs(1);
    core.fsyncdir().unwrap_err();
    assert!(core.fsync(o.fh, true).is_err());
    assert_eq!(env.objects().len(), 2, "both uploads are in the store");
    crash(core);
    let core = start_at(&local, &cache, env.remote.clone());
    core.settle();
    let objects = env.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(read_name(&core, "000001.sst"), b"kept");
    core.shutdown().unwrap();
}

/// A mount whose record was deleted (forgotten) refuses to start: gc may have taken its
/// objects. A local dir that never named an object starts whatever the store holds.
#[test]
fn a_forgotten_mount_refuses_to_start() {
    let env = Env::new();
    let (local, cache) = (env.dir.path().join("local"), env.dir.path().join("cache"));
    let core = start_at(&local, &cache, env.remote.clone());
    let id = core.mount_id.clone();
    write_synced(&core, "000001.sst", b"x");
    core.shutdown().unwrap();
    drop(core);
    env.remote
        .delete(&crate::checkpoint::mount_record_key(&id))
        .unwrap();
    let err = FsCore::start(&local, &cache, env.remote.clone(), test_cache()).unwrap_err();
    assert!(matches!(err, OpenError::Forgotten { .. }), "{err}");
    assert!(err.to_string().contains("forgotten"), "{err}");

    let other = env.dir.path().join("other");
    let core = start_at(&other, &env.dir.path().join("c2"), env.remote.clone());
    let id = core.mount_id.clone();
    core.shutdown().unwrap();
    drop(core);
    env.remote
        .delete(&crate::checkpoint::mount_record_key(&id))
        .unwrap();
    start_at(&other, &env.dir.path().join("c2"), env.remote.clone())
        .shutdown()
        .unwrap();
}

/// Publishes the mount's root directory `dir` with retention `retained`.
fn publish(core: &FsCore, dir: &str, retained: usize) -> String {
    core.publish(dir, retained).unwrap().id
}

/// Row 3: a NO_CLAIM restore races with its source's retention and release and with gc. Its
/// record names the checkpoint's objects before it checks them, and it reads the manifest again
/// after: if the checkpoint was dropped before that, the restore fails cleanly; if it was
/// dropped after, nothing it reads is deleted.
#[test]
fn a_restore_racing_retention_and_gc_fails_cleanly_or_keeps_its_objects() {
    for dropped_before_the_check in [true, false] {
        let env = Env::new();
        let sst: Vec<u8> = (0..50_000u32).map(|i| (i % 233) as u8).collect();
        let source = start_at(
            &env.dir.path().join("a"),
            &env.dir.path().join("ac"),
            env.remote.clone(),
        );
        let db = source.mkdir(ROOT_INO, "db", 0o755, ME).unwrap().ino;
        let (_, o) = source.create(db, "000001.sst", 0o644, RW, ME).unwrap();
        source.write(o.fh, 0, &sst).unwrap();
        source.release(o.fh).unwrap();
        let (_, o) = source.create(db, "CURRENT", 0o644, RW, ME).unwrap();
        source.write(o.fh, 0, b"MANIFEST-000001\n").unwrap();
        source.release(o.fh).unwrap();
        let old = publish(&source, "db", 1);
        // RocksDB compacts the SST away: only the checkpoint still names its object.
        source.unlink(db, "000001.sst").unwrap();
        // While the restore runs, the source publishes again (retention drops `old`), releases
        // what `old` named, and gc runs.
        let s = source.clone();
        let remote = env.remote.clone();
        let manifest_reads = std::sync::atomic::AtomicUsize::new(0);
        let when = move |op: &str, key: &str| {
            if dropped_before_the_check {
                // The second read of the manifest: after the restore's record exists, before
                // the restore trusts anything.
                op == "get"
                    && key.ends_with("/_metadata")
                    && manifest_reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
            } else {
                // Downloading the small files: the objects are verified and trusted.
                op == "get" && key.starts_with("copies/")
            }
        };
        let hooked = HookRemote::new(env.remote.clone(), when, move || {
            let newer = publish(&s, "db", 1);
            s.settle();
            assert!(crate::checkpoint::list_ids(remote.as_ref()).unwrap() == [newer]);
            gc_now(remote.as_ref());
        });
        let restored = FsCore::start_restored(
            &env.dir.path().join("b"),
            &env.dir.path().join("bc"),
            hooked,
            test_cache(),
            &old,
            false,
        );
        if dropped_before_the_check {
            let err = restored.unwrap_err().to_string();
            assert!(err.contains("dropped while it was being restored"), "{err}");
            let mounts = crate::checkpoint::list_mounts(env.remote.as_ref()).unwrap();
            assert_eq!(mounts.len(), 1, "the failed restore left no record");
            assert!(!env.dir.path().join("b/journal").exists());
        } else {
            let b = restored.unwrap();
            // Everything `old` named is still there, and it reads back; more releases and gc
            // change nothing while the restored mount names it.
            source
                .publisher
                .retainer
                .request(super::publish::Retention::Release);
            source.settle();
            gc_now(env.remote.as_ref());
            let attr = b.lookup(ROOT_INO, "000001.sst").unwrap();
            let o = b.open(attr.ino, libc::O_RDONLY).unwrap();
            assert_eq!(b.read(o.fh, 0, sst.len() as u32).unwrap(), sst);
            b.release(o.fh).unwrap();
            b.shutdown().unwrap();
        }
        source.shutdown().unwrap();
    }
}

/// Row 4: a checkpoint naming this mount with an id far in the future (another host's clock,
/// or a clock stepped back here) never makes a publish drop the checkpoint it just wrote.
#[test]
fn a_checkpoint_id_from_the_future_never_drops_the_one_just_published() {
    let env = Env::new();
    let core = env.core();
    core.mkdir(ROOT_INO, "db", 0o755, ME).unwrap();
    publish(&core, "db", 1);
    // A manifest as an older version wrote it (no sequence number), its id ten minutes ahead.
    let future = format!("{:013}-deadbeef", crate::checkpoint::now_ms() + 600_000);
    let planted = serde_json::json!({
        "format": crate::checkpoint::FORMAT, "version": crate::checkpoint::VERSION,
        "id": future, "mount_id": core.mount_id, "created_ms": crate::checkpoint::now_ms() + 600_000,
        "files": []
    });
    env.remote
        .put(
            &crate::checkpoint::manifest_key(&future),
            bytes::Bytes::from(serde_json::to_vec(&planted).unwrap()),
        )
        .unwrap();
    for _ in 0..3 {
        let id = publish(&core, "db", 1);
        let ids = crate::checkpoint::list_ids(env.remote.as_ref()).unwrap();
        assert_eq!(ids, [id], "the one just published is the one kept");
    }
    core.shutdown().unwrap();
}

/// Row 6: a manifest create whose answer is lost although it landed is retried, meets its own
/// manifest and succeeds: the publish reports the checkpoint it made.
#[test]
fn a_publish_whose_manifest_answer_is_lost_succeeds() {
    let env = Env::new();
    let core = env.core();
    let db = core.mkdir(ROOT_INO, "db", 0o755, ME).unwrap().ino;
    let (_, o) = core.create(db, "CURRENT", 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, b"MANIFEST-000001\n").unwrap();
    core.release(o.fh).unwrap();
    env.faults.ambiguous_keys_containing(Some("_metadata"));
    let p = core.publish("db", 1).unwrap();
    env.faults.ambiguous_keys_containing(None);
    assert!(env.faults.injected() >= 1);
    let m = crate::checkpoint::load_manifest(env.remote.as_ref(), &p.id).unwrap();
    assert_eq!(m.files.len(), 1);
    core.settle();
    env.remote.head(&m.files[0].key).unwrap();
    core.shutdown().unwrap();
}

/// Row 5: a cache dir is owned like the local dir. A second mount pointed at a mount's cache
/// dir (running or not), at its local dir as a cache dir, or with its local dir on another
/// mount's cache dir is refused with a clear error, and the first mount loses nothing.
#[test]
fn a_cache_dir_that_is_not_this_mounts_is_refused_never_cleaned() {
    let env = Env::new();
    let d = |p: &str| env.dir.path().join(p);
    let wal = vec![7u8; 1500];
    let a = start_at(&d("a"), &d("ac"), env.remote.clone());
    write_synced(&a, "000003.log", &wal);
    let (_, o) = a.create(ROOT_INO, "000004.sst", 0o644, RW, ME).unwrap();
    a.write(o.fh, 0, b"staged, not synced yet").unwrap();
    let refused = |local: &str, cache: &str, what: &str| {
        let err =
            FsCore::start(&d(local), &d(cache), env.remote.clone(), test_cache()).unwrap_err();
        assert!(
            matches!(err, OpenError::NotOurs { .. }) && err.to_string().contains(what),
            "{local} + {cache}: {err}"
        );
    };
    refused("b", "ac", "another statefs mount is using it");
    refused("b", "a", "local dir of mount");
    refused("ac", "bc", "cache dir of mount");
    // A's staging file and WAL are untouched; its sync works.
    a.fsync(o.fh, true).unwrap();
    a.release(o.fh).unwrap();
    a.shutdown().unwrap();
    drop(a);
    refused("b", "ac", "belongs to mount");
    std::fs::create_dir_all(d("junk")).unwrap();
    std::fs::write(d("junk/notes"), "mine").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d("junk"), std::fs::Permissions::from_mode(0o755)).unwrap();
    refused("b", "junk", "not empty");
    assert_eq!(std::fs::read(d("junk/notes")).unwrap(), b"mine");
    let mode = std::fs::metadata(d("junk")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "a refused dir is not ours to make private");
    let a = start_at(&d("a"), &d("ac"), env.remote.clone());
    assert_eq!(read_name(&a, "000003.log"), wal);
    assert_eq!(read_name(&a, "000004.sst"), b"staged, not synced yet");
    a.shutdown().unwrap();
    // One dir for both is one mount's.
    start_at(&d("same"), &d("same"), env.remote.clone())
        .shutdown()
        .unwrap();
    start_at(&d("same"), &d("same"), env.remote.clone())
        .shutdown()
        .unwrap();
}

/// Row 5, second half: a local-placed file whose backing file disappeared (removed outside
/// statefs) is damage. The mount is refused with the names, not given an empty file; fsck
/// reports it; `fsck --drop-missing` removes the names when the loss is accepted.
#[test]
fn a_missing_local_file_refuses_the_mount_instead_of_coming_back_empty() {
    let env = Env::new();
    let (local, cache) = (env.dir.path().join("local"), env.dir.path().join("cache"));
    let core = start_at(&local, &cache, env.remote.clone());
    let db = core.mkdir(ROOT_INO, "db", 0o755, ME).unwrap().ino;
    let (_, o) = core.create(db, "000003.log", 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, &[5u8; 1500]).unwrap();
    core.fsync(o.fh, true).unwrap();
    core.release(o.fh).unwrap();
    write_synced(&core, "CURRENT", b"MANIFEST-000001\n");
    let wal = core.lookup(db, "000003.log").unwrap().ino;
    let path = {
        let table = core.ns.read();
        core.local_path(table.get(wal).unwrap().meta.file().unwrap())
    };
    core.shutdown().unwrap();
    drop(core);
    std::fs::remove_file(&path).unwrap();
    let err = FsCore::start(&local, &cache, env.remote.clone(), test_cache()).unwrap_err();
    assert!(
        matches!(&err, OpenError::MissingLocalFiles { names, .. } if names == &["/db/000003.log"]),
        "{err}"
    );
    let report = crate::fsck::fsck(&local, env.remote.as_ref()).unwrap();
    assert!(report.damaged());
    assert_eq!(report.missing_local, ["/db/000003.log"]);
    assert_eq!(
        crate::fsck::drop_missing(&local).unwrap(),
        ["/db/000003.log"]
    );
    let core = start_at(&local, &cache, env.remote.clone());
    assert!(core.lookup(db, "000003.log").is_err());
    assert_eq!(read_name(&core, "CURRENT"), b"MANIFEST-000001\n");
    core.shutdown().unwrap();
}

/// Item 6: more open files than descriptors. With a budget of 8 backing-file descriptors, 60
/// files held open at once (SSTs and local files) all read and write correctly: idle
/// descriptors close and reopen by path, and no more than the budget stay open.
#[test]
fn more_open_files_than_descriptors_all_work() {
    let env = Env::new();
    let core = env.core();
    core.fds.set_limit(8);
    let content = |i: usize| format!("file {i} ").repeat(50).into_bytes();
    let names: Vec<String> = (0..60)
        .map(|i| {
            if i % 2 == 0 {
                format!("{i:06}.sst")
            } else {
                format!("{i:06}.log")
            }
        })
        .collect();
    let mut handles = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (_, o) = core.create(ROOT_INO, name, 0o644, RW, ME).unwrap();
        core.write(o.fh, 0, &content(i)).unwrap();
        handles.push(o.fh);
        assert!(core.fds.open_now() <= 9, "{} open", core.fds.open_now());
    }
    for (i, fh) in handles.iter().enumerate() {
        core.fsync(*fh, true).unwrap();
        let data = core.read(*fh, 0, 100_000).unwrap();
        assert!(data == content(i), "file {i} reads back wrong");
        assert!(core.fds.open_now() <= 9, "{} open", core.fds.open_now());
    }
    for fh in handles {
        core.release(fh).unwrap();
    }
    assert_eq!(
        core.fds.open_now(),
        0,
        "every descriptor closed with its inode"
    );
    core.shutdown().unwrap();
}

/// Publish vs gc and release: gc, and the publishing mount's own release of unnamed objects,
/// run at the worst moment of a publish (its copies stored, its manifest not yet written). The
/// checkpoint that appears names only objects that are there, and restores.
#[test]
fn gc_and_release_in_the_middle_of_a_publish_take_nothing_it_names() {
    let env = Env::new();
    let slot: Arc<std::sync::OnceLock<std::sync::Weak<FsCore>>> = Default::default();
    let (s, remote) = (slot.clone(), env.remote.clone());
    let hooked = HookRemote::new(
        env.remote.clone(),
        |op, key| op == "put_if_absent" && key.ends_with("/_metadata"),
        move || {
            let core = s.get().unwrap().upgrade().unwrap();
            core.release_orphans();
            assert!(gc_now(remote.as_ref()).garbage.is_empty());
        },
    );
    let core = FsCore::start(
        &env.dir.path().join("local"),
        &env.dir.path().join("cache"),
        hooked,
        test_cache(),
    )
    .unwrap();
    slot.set(Arc::downgrade(&core)).unwrap();
    let db = core.mkdir(ROOT_INO, "db", 0o755, ME).unwrap().ino;
    for (name, data) in [
        ("000007.sst", &b"sst bytes"[..]),
        ("CURRENT", b"MANIFEST-1\n"),
    ] {
        let (_, o) = core.create(db, name, 0o644, RW, ME).unwrap();
        core.write(o.fh, 0, data).unwrap();
        core.release(o.fh).unwrap();
    }
    let id = publish(&core, "db", 1);
    let m = crate::checkpoint::load_manifest(env.remote.as_ref(), &id).unwrap();
    crate::checkpoint::verify_objects(env.remote.as_ref(), &m).unwrap();
    core.shutdown().unwrap();
    let restored = FsCore::start_restored(
        &env.dir.path().join("r"),
        &env.dir.path().join("rc"),
        env.remote.clone(),
        test_cache(),
        &id,
        false,
    )
    .unwrap();
    assert_eq!(read_name(&restored, "000007.sst"), b"sst bytes");
    assert_eq!(read_name(&restored, "CURRENT"), b"MANIFEST-1\n");
    restored.shutdown().unwrap();
}

/// Two mounts on one prefix: each releases only its own objects (at start after a crash, after
/// retention), gc leaves both alone, and each reads back everything it wrote.
#[test]
fn two_mounts_on_one_prefix_never_take_each_others_objects() {
    let env = Env::new();
    let d = |p: &str| env.dir.path().join(p);
    let a = start_at(&d("a"), &d("ac"), env.remote.clone());
    let b = start_at(&d("b"), &d("bc"), env.remote.clone());
    for i in 0..5 {
        write_synced(&a, &format!("a{i}.sst"), format!("a{i}").as_bytes());
        write_synced(&b, &format!("b{i}.sst"), format!("b{i}").as_bytes());
    }
    a.mkdir(ROOT_INO, "chk", 0o755, ME).unwrap();
    for _ in 0..3 {
        publish(&a, "chk", 1);
    }
    crash(b);
    let b = start_at(&d("b"), &d("bc"), env.remote.clone());
    b.settle();
    a.settle();
    assert!(gc_now(env.remote.as_ref()).garbage.is_empty());
    for i in 0..5 {
        assert_eq!(
            read_name(&a, &format!("a{i}.sst")),
            format!("a{i}").as_bytes()
        );
        assert_eq!(
            read_name(&b, &format!("b{i}.sst")),
            format!("b{i}").as_bytes()
        );
    }
    assert_eq!(env.objects().len(), 10);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

/// Skewed clocks: with the store's clock ten hours behind this host's (every object looks ten
/// hours old) or ahead, gc with a grace period takes nothing a mount names; the grace period
/// only ever delays. A mount's own order of checkpoints does not care either (see the
/// retention tests).
#[test]
fn a_skewed_store_clock_never_makes_gc_take_a_live_object() {
    let env = Env::new();
    let core = env.core();
    write_synced(&core, "000001.sst", b"live");
    // An object of an older version that nothing names: real garbage.
    let legacy = format!("data/{}", uuid::Uuid::new_v4());
    env.remote
        .put(&legacy, bytes::Bytes::from_static(b"x"))
        .unwrap();
    for skew in [-36_000, 36_000] {
        env.faults.skew_store_clock(skew);
        let report = crate::checkpoint::collect_garbage(
            env.remote.as_ref(),
            Duration::from_secs(3600),
            true,
        )
        .unwrap();
        assert_eq!(report.owned_by_mounts, 1, "skew {skew}: {report:?}");
        let found = report.garbage.iter().any(|(k, _)| *k == legacy);
        assert_eq!(found, skew < 0, "skew {skew}: only the grace period moves");
    }
    env.faults.skew_store_clock(0);
    assert_eq!(read_name(&core, "000001.sst"), b"live");
    core.shutdown().unwrap();
}
