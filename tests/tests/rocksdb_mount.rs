//! Real RocksDB (the `rocksdb` crate) on a statefs mount.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rocksdb::{DB, Options};
use statefs::MountHandle;
use statefs_tests::{Dirs, looks_like_sst};

const KEYS: u32 = 200_000;

fn key(i: u32) -> Vec<u8> {
    format!("key{:08}", (i.wrapping_mul(2_654_435_761)) % 1_000_000_007).into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(100, (i % 251) as u8);
    v
}

fn small_lsm_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    // Small memtables and files: many flushes, many SSTs and real compactions from 200k keys.
    o.set_write_buffer_size(1 << 20);
    o.set_target_file_size_base(1 << 20);
    o.set_max_bytes_for_level_base(4 << 20);
    o.set_level_zero_file_num_compaction_trigger(2);
    o
}

fn verify_all(db: &DB) {
    for i in 0..KEYS {
        let got = db.get(key(i)).unwrap();
        assert_eq!(got.as_deref(), Some(&value(i)[..]), "key {i}");
    }
}

#[test]
fn rocksdb_writes_compacts_reopens_with_ssts_in_the_store() {
    let dirs = Dirs::new();
    let db_path = dirs.mnt.join("db");
    {
        let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
        let db = DB::open(&small_lsm_options(), &db_path).unwrap();
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
            let mut batch = rocksdb::WriteBatch::default();
            for &i in chunk {
                batch.put(key(i), value(i));
            }
            db.write(batch).unwrap();
        }
        db.flush().unwrap();
        db.compact_range::<&[u8], &[u8]>(None, None);
        verify_all(&db);
        drop(db);
        assert!(
            mount
                .core()
                .metrics
                .uploads
                .load(std::sync::atomic::Ordering::Relaxed)
                > 5
        );
        mount.unmount().unwrap();
    }
    assert!(!statefs_tests::is_mounted(&dirs.mnt));

    // SST bytes live in the store; the local dir holds no SST.
    let objects = dirs.remote_objects();
    assert!(!objects.is_empty());
    let remote_bytes: u64 = objects.iter().map(|(_, s)| s).sum();
    for entry in walk(&dirs.local) {
        assert!(
            !looks_like_sst(&entry),
            "SST data in the local dir: {}",
            entry.display()
        );
    }
    assert!(
        walk(&dirs.remote.join("data"))
            .iter()
            .all(|p| looks_like_sst(p)),
        "every data object is an SST"
    );

    // Remount and reopen: every key is there.
    let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let ssts: Vec<_> = std::fs::read_dir(&db_path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert!(!ssts.is_empty());
    let live_sst_bytes: u64 = ssts
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        objects.len(),
        ssts.len(),
        "one object per live SST, deleted SSTs are gone from the store"
    );
    assert_eq!(remote_bytes, live_sst_bytes);
    let db = DB::open(&small_lsm_options(), &db_path).unwrap();
    verify_all(&db);
    drop(db);
    mount.unmount().unwrap();
}

#[test]
fn cold_reads_after_cache_loss_come_from_the_store() {
    let dirs = Dirs::new();
    let db_path = dirs.mnt.join("db");
    {
        let _mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
        let db = DB::open(&small_lsm_options(), &db_path).unwrap();
        for i in 0..20_000 {
            db.put(key(i), value(i)).unwrap();
        }
        db.flush().unwrap();
    }
    // Lose every local copy: the mount must still serve each SST from the object store (on
    // demand: the warm-up, which would fetch them first, is off; tests/cache.rs covers it).
    std::fs::remove_dir_all(&dirs.cache).unwrap();
    let mut config = dirs.config();
    config.cache.warm.memory = 0;
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let db = DB::open(&small_lsm_options(), &db_path).unwrap();
    for i in 0..20_000 {
        assert_eq!(db.get(key(i)).unwrap().as_deref(), Some(&value(i)[..]));
    }
    drop(db);
    assert!(
        mount
            .core()
            .metrics
            .remote_reads
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[test]
fn checkpoint_hard_links_and_renames_through_the_mount() {
    let dirs = Dirs::new();
    let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let m = &dirs.mnt;

    // Plain POSIX semantics first.
    std::fs::write(m.join("a.sst"), b"A").unwrap();
    std::fs::File::open(m.join("a.sst"))
        .unwrap()
        .sync_all()
        .unwrap();
    std::fs::hard_link(m.join("a.sst"), m.join("b.sst")).unwrap();
    let (a, b) = (
        std::fs::metadata(m.join("a.sst")).unwrap(),
        std::fs::metadata(m.join("b.sst")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    let objects = dirs.remote_objects();
    assert_eq!(objects.len(), 1, "a hard link copies nothing");
    // Synced, so its upload (otherwise at release, after close returns) is done before we count.
    let mut c = std::fs::File::create(m.join("c.sst")).unwrap();
    std::io::Write::write_all(&mut c, b"C").unwrap();
    c.sync_all().unwrap();
    drop(c);
    std::fs::rename(m.join("c.sst"), m.join("a.sst")).unwrap();
    assert_eq!(std::fs::read(m.join("a.sst")).unwrap(), b"C");
    assert_eq!(std::fs::read(m.join("b.sst")).unwrap(), b"A");
    assert_eq!(std::fs::metadata(m.join("b.sst")).unwrap().nlink(), 1);
    let objects = dirs.remote_objects();
    assert_eq!(objects.len(), 2, "A (still named b.sst) and C");
    let err = renameat2_noreplace(&m.join("a.sst"), &m.join("b.sst"));
    assert_eq!(err, Some(libc::EEXIST));
    std::fs::create_dir(m.join("dir")).unwrap();
    std::fs::rename(m.join("b.sst"), m.join("dir/b.sst")).unwrap();
    std::fs::rename(m.join("dir"), m.join("dir2")).unwrap();
    assert_eq!(std::fs::read(m.join("dir2/b.sst")).unwrap(), b"A");
    assert_eq!(dirs.remote_objects(), objects, "renames move no bytes");

    // RocksDB's Checkpoint API: hard links of the SSTs, copies of the rest.
    let db_path = m.join("db");
    // No background compaction: it would delete SSTs (and their objects) while we count.
    let mut o = small_lsm_options();
    o.set_disable_auto_compactions(true);
    let db = DB::open(&o, &db_path).unwrap();
    for i in 0..30_000 {
        db.put(key(i), value(i)).unwrap();
    }
    db.flush().unwrap();
    let before = dirs.remote_objects().len();
    rocksdb::checkpoint::Checkpoint::new(&db)
        .unwrap()
        .create_checkpoint(m.join("chk"))
        .unwrap();
    assert_eq!(
        dirs.remote_objects().len(),
        before,
        "checkpoint copied no SST bytes"
    );
    for i in 30_000..40_000 {
        db.put(key(i), value(i)).unwrap();
    }
    drop(db);
    let chk = DB::open_for_read_only(&Options::default(), m.join("chk"), false).unwrap();
    assert_eq!(
        chk.get(key(29_999)).unwrap().as_deref(),
        Some(&value(29_999)[..])
    );
    assert_eq!(chk.get(key(35_000)).unwrap(), None);
    drop(chk);
    mount.unmount().unwrap();
}

#[test]
fn unreachable_store_gives_eio_and_keeps_the_mapping() {
    use statefs::store::{FailingRemote, FaultPlan, RemoteStore, RetryPolicy, RetryingRemote};
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    let dirs = Dirs::new();
    let rt = statefs::mount::runtime().unwrap();
    let faults = FaultPlan::default();
    let store = statefs::store::RemoteSpec::parse(&dirs.remote_url())
        .unwrap()
        .open(&Default::default(), rt.clone())
        .unwrap();
    let policy = RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let remote: Arc<dyn RemoteStore> = Arc::new(RetryingRemote::new(
        FailingRemote::new(store, faults.clone()),
        policy,
    ));
    {
        let mount = MountHandle::mount_with_remote(&dirs.config(), &dirs.mnt, Some(remote.clone()))
            .unwrap();
        let path = dirs.mnt.join("x.sst");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![42u8; 300_000]).unwrap();
        faults.set_down(true);
        let err = f.sync_all().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        assert!(faults.injected() >= 3, "retried before giving up");
        assert!(dirs.remote_objects().is_empty());
        faults.set_down(false);
        f.sync_all().unwrap();
        drop(f);
        assert_eq!(dirs.remote_objects().len(), 1);
        mount.unmount().unwrap();
    }
    let mount = MountHandle::mount_with_remote(&dirs.config(), &dirs.mnt, Some(remote)).unwrap();
    assert_eq!(
        std::fs::read(dirs.mnt.join("x.sst")).unwrap(),
        vec![42u8; 300_000]
    );
    drop(mount);
}

fn renameat2_noreplace(from: &Path, to: &Path) -> Option<i32> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let f = CString::new(from.as_os_str().as_bytes()).unwrap();
    let t = CString::new(to.as_os_str().as_bytes()).unwrap();
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    (r != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Runs a small RocksDB workload with passthrough forced on or off and checks which path served it.
fn workload_in_mode(mode: statefs::PassthroughMode) -> (u64, u64, u64, u64) {
    use std::sync::atomic::Ordering;
    let dirs = Dirs::new();
    let mut config = dirs.config();
    config.passthrough = mode;
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let db_path = dirs.mnt.join("db");
    {
        let db = DB::open(&small_lsm_options(), &db_path).unwrap();
        for i in 0..30_000 {
            db.put(key(i), value(i)).unwrap();
        }
        db.flush().unwrap();
        for i in 0..30_000 {
            assert_eq!(db.get(key(i)).unwrap().as_deref(), Some(&value(i)[..]));
        }
    }
    // O_APPEND through either path.
    let log = dirs.mnt.join("append.txt");
    for part in ["one,", "two,", "three"] {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        f.write_all(part.as_bytes()).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "one,two,three");
    let ops = mount.fuse_metrics.snapshot();
    let count = |name: &str| ops.iter().find(|(op, _)| *op == name).unwrap().1;
    let (reads, writes) = (count("read"), count("write"));
    let counts = (
        mount.fuse_metrics.passthrough_opens.load(Ordering::Relaxed),
        mount.fuse_metrics.daemon_opens.load(Ordering::Relaxed),
        reads,
        writes,
    );
    mount.unmount().unwrap();
    counts
}

#[test]
fn daemon_mode_serves_io_itself() {
    let (passthrough, daemon, _reads, writes) = workload_in_mode(statefs::PassthroughMode::Off);
    assert_eq!(passthrough, 0);
    assert!(daemon > 0);
    assert!(writes > 100, "every write reaches the daemon: {writes}");
}

#[test]
fn passthrough_serves_files_with_a_local_backing_file() {
    // This kernel (Linux >= 6.9, root) offers passthrough: `on` fails the mount otherwise.
    let (passthrough, daemon, reads, writes) = workload_in_mode(statefs::PassthroughMode::On);
    assert_eq!(writes, 0, "writes go to the backing file");
    assert!(passthrough > 0);
    assert_eq!(daemon, 0, "every file had a complete local backing file");
    // Reads go to the backing file; only readahead(2) hints (RocksDB prefetches SST tails) still
    // reach the daemon, as they act on the FUSE inode's page cache.
    assert!(
        reads < 200,
        "{reads} reads reached the daemon for 30000 gets"
    );
}

#[test]
fn rocksdb_lock_excludes_a_second_open_on_the_same_host() {
    let dirs = Dirs::new();
    let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let db_path = dirs.mnt.join("db");
    let db = DB::open(&small_lsm_options(), &db_path).unwrap();
    // Another process (the crash test's writer) opening the same DB must hit the LOCK file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crash_writer"))
        .arg(&db_path)
        .arg(dirs.root.path().join("progress"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second process opened a locked DB");
    assert!(stderr.contains("lock"), "{stderr}");
    drop(db);
    mount.unmount().unwrap();
}

/// Builds a mount with `store_threads` whose store calls can be held, as a store that stopped
/// answering.
fn mount_with_faults(
    dirs: &Dirs,
    store_threads: usize,
) -> (MountHandle, statefs::store::FaultPlan) {
    use statefs::store::{FailingRemote, FaultPlan, RemoteStore};
    let rt = statefs::mount::runtime().unwrap();
    let faults = FaultPlan::default();
    let store = statefs::store::RemoteSpec::parse(&dirs.remote_url())
        .unwrap()
        .open(&Default::default(), rt)
        .unwrap();
    let remote: std::sync::Arc<dyn RemoteStore> =
        std::sync::Arc::new(FailingRemote::new(store, faults.clone()));
    let mut config = dirs.config();
    config.store_threads = store_threads;
    // These tests count the store calls of on-demand reads: no warm-up GETs beside them.
    config.cache.warm.memory = 0;
    let mount = MountHandle::mount_with_remote(&config, &dirs.mnt, Some(remote)).unwrap();
    (mount, faults)
}

/// Lets held store calls go on when dropped, so that a failing test can still unmount.
struct ReleaseHolds(statefs::store::FaultPlan);

impl Drop for ReleaseHolds {
    fn drop(&mut self) {
        self.0.hold_uploads(false);
        self.0.hold_reads(false);
    }
}

/// Writes `n` 1 MiB SSTs `out<i>.sst`, holds the store's uploads and fsyncs each file on a thread
/// of its own. Dropping the guard lets the uploads go on.
fn held_syncs(
    mnt: &Path,
    faults: &statefs::store::FaultPlan,
    n: u64,
) -> (
    ReleaseHolds,
    Vec<std::thread::JoinHandle<std::io::Result<()>>>,
) {
    use std::io::Write;
    let files: Vec<_> = (0..n)
        .map(|i| {
            let mut f = std::fs::File::create(mnt.join(format!("out{i}.sst"))).unwrap();
            f.write_all(&vec![i as u8; 1 << 20]).unwrap();
            f
        })
        .collect();
    faults.hold_uploads(true);
    let release = ReleaseHolds(faults.clone());
    let syncing = files
        .into_iter()
        .map(|f| std::thread::spawn(move || f.sync_all()))
        .collect();
    (release, syncing)
}

/// Waits (up to 30 s, a liveness bound) until `done`, failing with `what`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Everything else RocksDB does while store calls are pending: a WAL append and fsync, the
/// directory, hard link and rename of a checkpoint (of `sst`), a listing. Fails if they stall.
fn meanwhile_the_mount_answers(mnt: &Path, sst: &str) {
    use std::io::Write;
    let (tx, rx) = std::sync::mpsc::channel();
    let (m, sst) = (mnt.to_path_buf(), sst.to_string());
    let ops = std::thread::spawn(move || {
        let mut wal = std::fs::File::create(m.join("000001.log")).unwrap();
        wal.write_all(b"record").unwrap();
        wal.sync_data().unwrap();
        std::fs::create_dir(m.join("chk")).unwrap();
        std::fs::hard_link(m.join(&sst), m.join("chk").join(&sst)).unwrap();
        std::fs::rename(m.join("000001.log"), m.join("chk/000001.log")).unwrap();
        let names = std::fs::read_dir(m.join("chk")).unwrap().count();
        tx.send(names).unwrap();
    });
    let listed = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("metadata and WAL operations stalled behind requests that wait on the store");
    assert_eq!(listed, 2);
    ops.join().unwrap();
}

#[test]
fn uploads_waiting_on_the_store_hold_no_fuse_worker() {
    use std::io::Write;

    let dirs = Dirs::new();
    let (mount, faults) = mount_with_faults(&dirs, 8);
    let mnt = dirs.mnt.clone();
    {
        // Synced, so that no upload of it is left for its (asynchronous) release.
        let mut f = std::fs::File::create(mnt.join("sealed.sst")).unwrap();
        f.write_all(&vec![3u8; 100_000]).unwrap();
        f.sync_all().unwrap();
    }
    // More syncs than the mount has FUSE workers (2), all waiting on the store at once: what two
    // compaction outputs being uploaded over a slow link look like.
    let syncs = 3;
    let (release, syncing) = held_syncs(&mnt, &faults, syncs);
    wait_until(
        "fewer fsyncs reached the store than were made: syncs wait for each other",
        || faults.uploads_waiting() == syncs,
    );
    meanwhile_the_mount_answers(&mnt, "sealed.sst");
    assert_eq!(
        std::fs::read(mnt.join("sealed.sst")).unwrap(),
        vec![3u8; 100_000]
    );
    assert_eq!(
        faults.uploads_waiting(),
        syncs,
        "the uploads are still held"
    );
    drop(release);
    for s in syncing {
        s.join().unwrap().unwrap();
    }
    // The three outputs and the first file, each stored once.
    assert_eq!(dirs.remote_objects().len(), 4);
    mount.unmount().unwrap();
}

/// Writes `n` 1 MiB SSTs `<i>.sst` (bytes `i`), loses their local copies and mounts again with
/// the store's reads held: every read or download of them waits until the guard is dropped.
fn cold_files_with_reads_held(
    dirs: &Dirs,
    n: u8,
) -> (MountHandle, statefs::store::FaultPlan, ReleaseHolds) {
    {
        let (mount, _) = mount_with_faults(dirs, 8);
        for i in 0..n {
            std::fs::write(dirs.mnt.join(format!("{i}.sst")), vec![i; 1 << 20]).unwrap();
        }
        mount.unmount().unwrap();
    }
    // No local copy is left: every read of these files goes to the store.
    std::fs::remove_dir_all(&dirs.cache).unwrap();
    let (mount, faults) = mount_with_faults(dirs, 8);
    // The mount's release of unnamed objects at start reads records and manifests: done before
    // the reads are held, so that only the test's own reads wait.
    mount.core().settle();
    faults.hold_reads(true);
    let release = ReleaseHolds(faults.clone());
    (mount, faults, release)
}

#[test]
fn cold_reads_waiting_on_the_store_hold_no_fuse_worker() {
    use std::io::Read;

    let dirs = Dirs::new();
    let files = 3u8;
    let (mount, faults, release) = cold_files_with_reads_held(&dirs, files);
    let mnt = dirs.mnt.clone();
    // More cold readers than FUSE workers, as RocksDB's threads right after a lazy restore.
    let readers: Vec<_> = (0..files)
        .map(|i| {
            let path = mnt.join(format!("{i}.sst"));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                std::fs::File::open(path)?.read_exact(&mut buf)?;
                std::io::Result::Ok(buf)
            })
        })
        .collect();
    wait_until("fewer cold reads reached the store than were made", || {
        faults.reads_waiting() == files as u64
    });
    meanwhile_the_mount_answers(&mnt, "0.sst");
    drop(release);
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(r.join().unwrap().unwrap(), vec![i as u8; 4096]);
    }
    mount.unmount().unwrap();
}

/// Opening a cold sealed file for writing, or truncating one, downloads it first: that wait is on
/// a store thread too. RocksDB does neither; a tool or a person may.
#[test]
fn writes_to_cold_sealed_files_hold_no_fuse_worker() {
    use std::io::{Read, Seek, Write};

    let dirs = Dirs::new();
    let (mount, faults, release) = cold_files_with_reads_held(&dirs, 3);
    let mnt = dirs.mnt.clone();
    let path = |i: u8| mnt.join(format!("{i}.sst"));
    // Two opens for writing and a truncate by path: more than the FUSE workers.
    let writers: Vec<_> = (0..2u8)
        .map(|i| {
            let p = path(i);
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().read(true).write(true).open(p)?;
                f.write_all(b"head")?;
                f.sync_all()
            })
        })
        .collect();
    let p2 = path(2);
    let truncate = std::thread::spawn(move || nix::unistd::truncate(&p2, 4096));
    wait_until(
        "fewer downloads reached the store than were asked for",
        || faults.reads_waiting() == 3,
    );
    meanwhile_the_mount_answers(&mnt, "0.sst");
    drop(release);
    for w in writers {
        w.join().unwrap().unwrap();
    }
    truncate.join().unwrap().unwrap();
    mount.unmount().unwrap();
    let (mount, _) = mount_with_faults(&dirs, 8);
    for i in 0..2u8 {
        let mut want = vec![i; 1 << 20];
        want[..4].copy_from_slice(b"head");
        let mut got = Vec::new();
        let mut f = std::fs::File::open(path(i)).unwrap();
        f.rewind().unwrap();
        f.read_to_end(&mut got).unwrap();
        assert!(got == want, "{i}.sst after writing at its head");
    }
    assert_eq!(std::fs::read(path(2)).unwrap(), vec![2u8; 4096]);
    mount.unmount().unwrap();
}

#[test]
fn cold_reads_do_not_queue_behind_uploads() {
    use std::io::Read;

    let dirs = Dirs::new();
    {
        let (mount, _) = mount_with_faults(&dirs, 2);
        std::fs::write(dirs.mnt.join("cold.sst"), vec![5u8; 1 << 20]).unwrap();
        mount.unmount().unwrap();
    }
    std::fs::remove_dir_all(&dirs.cache).unwrap();
    // Two store threads, three held uploads: every upload thread is taken and one sync queues,
    // as when compaction outputs upload to a slow store.
    let (mount, faults) = mount_with_faults(&dirs, 2);
    let mnt = dirs.mnt.clone();
    let (release, syncing) = held_syncs(&mnt, &faults, 3);
    wait_until("the uploads did not start", || {
        faults.uploads_waiting() == 2
    });
    // The third waits for a store thread, and the metrics say so.
    let queue = mount.fuse_metrics.upload_queue.clone();
    wait_until("the third sync is not queued", || {
        queue.load(std::sync::atomic::Ordering::Relaxed) == 1
    });
    let text =
        statefs::mount::render_metrics(mount.core(), &mount.remote_metrics, &mount.fuse_metrics);
    assert!(
        text.contains("statefs_store_queue{pool=\"uploads\"} 1\n"),
        "{text}"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let path = mnt.join("cold.sst");
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        std::fs::File::open(path)
            .unwrap()
            .read_exact(&mut buf)
            .unwrap();
        tx.send(buf).unwrap();
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a cold read queued behind uploads that wait on the store");
    assert_eq!(got, vec![5u8; 4096]);
    reader.join().unwrap();
    drop(release);
    for s in syncing {
        s.join().unwrap().unwrap();
    }
    mount.unmount().unwrap();
}

#[test]
fn unmount_finishes_the_uploads_of_files_closed_without_fsync() {
    use std::io::Write;
    let dirs = Dirs::new();
    let (mount, faults) = mount_with_faults(&dirs, 8);
    let release = ReleaseHolds(faults.clone());
    let files: Vec<_> = (0..5u8)
        .map(|i| {
            let mut f = std::fs::File::create(dirs.mnt.join(format!("{i}.sst"))).unwrap();
            f.write_all(&vec![i; 300_000]).unwrap();
            f
        })
        .collect();
    // The kernel sends RELEASE after close() returns; its upload runs on a sync thread. Holding
    // the uploads keeps them pending into the unmount.
    faults.hold_uploads(true);
    // On another thread: close() waits for FLUSH, which must not queue behind held uploads.
    let closing = std::thread::spawn(move || drop(files));
    wait_until("no upload at close", || faults.uploads_waiting() > 0);
    let mnt = dirs.mnt.clone();
    let unmounting = std::thread::spawn(move || mount.unmount());
    wait_until("the unmount did not begin", || {
        !statefs::mount::is_mounted(&mnt)
    });
    drop(release);
    closing.join().unwrap();
    unmounting.join().unwrap().unwrap();
    assert_eq!(dirs.remote_objects().len(), 5);
    // Nothing local to fall back on: every byte must come from the store.
    std::fs::remove_dir_all(&dirs.cache).unwrap();
    let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    for i in 0..5u8 {
        assert_eq!(
            std::fs::read(dirs.mnt.join(format!("{i}.sst"))).unwrap(),
            vec![i; 300_000]
        );
    }
    mount.unmount().unwrap();
}

/// Hostile load on the upload queue: hundreds of written SSTs closed without a sync while the
/// store holds every upload. The queue holds jobs, not file data (the bytes wait in the staging
/// files), and the kernel holds back releases beyond its background limit: the daemon's memory
/// does not grow with the bytes waiting for the store.
#[test]
fn queued_uploads_hold_no_file_data() {
    use std::io::Write;
    let dirs = Dirs::new();
    let (mount, faults) = mount_with_faults(&dirs, 2);
    let rss_kib = || statefs_tests::vm_rss_kib(std::process::id());
    let addr = std::fs::read_to_string(dirs.local.join("metrics.addr")).unwrap();
    let queued = || -> f64 {
        let text = statefs::metrics::fetch(addr.trim()).unwrap();
        statefs::metrics::parse(&text)
            .into_iter()
            .find(|(k, _)| k == "statefs_store_queue{pool=\"uploads\"}")
            .map(|(_, v)| v)
            .unwrap_or(0.0)
    };
    faults.hold_uploads(true);
    let release = ReleaseHolds(faults.clone());
    let data = vec![7u8; 1 << 20];
    let before = rss_kib();
    for i in 0..200 {
        let mut f = std::fs::File::create(dirs.mnt.join(format!("q{i:03}.sst"))).unwrap();
        f.write_all(&data).unwrap();
    }
    // The kernel sends RELEASE as a background request and keeps at most `max_background` (12)
    // of them unanswered: the rest wait in the kernel, not in the daemon.
    wait_until("uploads queued behind the held store", || queued() >= 10.0);
    let after = rss_kib();
    eprintln!(
        "{} uploads queued, 200 MiB waiting; RSS {before} -> {after} KiB",
        queued()
    );
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB with 200 MiB queued"
    );
    drop(release);
    wait_until("the queue drained", || queued() == 0.0);
    mount.unmount().unwrap();
    assert!(
        dirs.remote_objects().len() >= 200,
        "every queued upload reached the store"
    );
}
