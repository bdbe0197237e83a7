//! The bounded cache through a real mount: RocksDB on a cache far smaller than its data, eviction
//! under an open reader, rebuild at remount, and the metrics a person reads.

use std::io::{Read, Seek, SeekFrom};
use std::process::Command;
use std::sync::atomic::Ordering;

use rocksdb::{DB, Options};
use statefs::MountHandle;
use statefs_tests::{CliMount, Dirs, statefs_bin};

fn sized_cache(dirs: &Dirs, limit: u64, target: u64) -> statefs::MountConfig {
    let mut c = dirs.config();
    c.cache.size_limit = limit;
    c.cache.reserve_size = 0;
    c.cache.target_file_size = target;
    c
}

fn key(i: u32) -> Vec<u8> {
    format!("k{:08}", i.wrapping_mul(2_654_435_761) % 1_000_000_007).into_bytes()
}
fn value(i: u32) -> Vec<u8> {
    let mut v = format!("v{i}").into_bytes();
    v.resize(120, (i % 251) as u8);
    v
}

/// Writes and fsyncs: the upload (and so the cache decision) is done when this returns. A plain
/// write+close uploads at release, which the kernel sends after close() has returned.
/// A mount of `config` at `mnt` whose store goes through `faults` (latency, holds, outages).
fn mount_faulty(
    config: &statefs::MountConfig,
    mnt: &std::path::Path,
    faults: &statefs::store::FaultPlan,
) -> MountHandle {
    use statefs::store::{FailingRemote, RemoteSpec, RemoteStore};
    let rt = statefs::mount::runtime().unwrap();
    let store = RemoteSpec::parse(&config.remote)
        .unwrap()
        .open(&Default::default(), rt)
        .unwrap();
    let remote: std::sync::Arc<dyn RemoteStore> =
        std::sync::Arc::new(FailingRemote::new(store, faults.clone()));
    MountHandle::mount_with_remote(config, mnt, Some(remote)).unwrap()
}

fn write_synced(path: &std::path::Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn rocksdb_verifies_fully_with_a_cache_of_a_tenth_of_its_data() {
    let dirs = Dirs::new();
    let n = 200_000;
    // About 26 MB of SSTs against a 2.5 MB cache.
    let config = sized_cache(&dirs, 2_600_000, 1 << 20);
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_write_buffer_size(1 << 20);
    o.set_target_file_size_base(1 << 20);
    o.set_compression_type(rocksdb::DBCompressionType::None);
    // No block cache of RocksDB's own worth mentioning: reads reach the filesystem.
    let mut bo = rocksdb::BlockBasedOptions::default();
    bo.set_block_cache(&rocksdb::Cache::new_lru_cache(64 << 10));
    o.set_block_based_table_factory(&bo);
    let db_path = dirs.mnt.join("db");
    {
        let db = DB::open(&o, &db_path).unwrap();
        for i in 0..n {
            db.put(key(i), value(i)).unwrap();
        }
        db.flush().unwrap();
        db.compact_range::<&[u8], &[u8]>(None, None);
        for i in 0..n {
            assert_eq!(
                db.get(key(i)).unwrap().as_deref(),
                Some(&value(i)[..]),
                "key {i}"
            );
        }
    }
    let remote_bytes: u64 = dirs.remote_objects().iter().map(|(_, s)| s).sum();
    let stats = mount.core().cache_stats();
    assert!(
        remote_bytes > 10 * config.cache.size_limit,
        "data {remote_bytes} is not 10x the cache"
    );
    assert!(
        stats.used <= config.cache.size_limit,
        "cache holds {} > limit",
        stats.used
    );
    assert!(stats.evictions > 0);
    let cached: u64 = std::fs::read_dir(dirs.cache.join("files"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        cached <= config.cache.size_limit,
        "{cached} bytes of copies on disk"
    );
    assert!(
        mount.core().metrics.remote_reads.load(Ordering::Relaxed) > 0,
        "cold reads went to the store"
    );
    mount.unmount().unwrap();

    // And again after a remount, with the rebuilt cache.
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let db = DB::open(&o, &db_path).unwrap();
    for i in (0..n).step_by(3) {
        assert_eq!(
            db.get(key(i)).unwrap().as_deref(),
            Some(&value(i)[..]),
            "key {i}"
        );
    }
    drop(db);
    assert!(mount.core().cache_stats().used <= config.cache.size_limit);
}

#[test]
fn a_reader_keeps_correct_bytes_when_its_copy_is_evicted() {
    let dirs = Dirs::new();
    let mut config = sized_cache(&dirs, 1_500_000, 1_000_000);
    // No promotion while a.sst is read back below: the copy count at the end must be exact.
    config.cache.access_before_promote = 1_000;
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let a: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    write_synced(&dirs.mnt.join("a.sst"), &a);
    let mut reader = std::fs::File::open(dirs.mnt.join("a.sst")).unwrap();
    let mut first = vec![0u8; 400_000];
    reader.read_exact(&mut first).unwrap();
    // b takes a's place in the cache while a is open.
    write_synced(&dirs.mnt.join("b.sst"), &[7u8; 1_000_000]);
    assert!(mount.core().cache_stats().evictions >= 1);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert_eq!(first, a, "the evicted reader read every byte right");
    reader.seek(SeekFrom::Start(123_456)).unwrap();
    let mut some = vec![0u8; 1000];
    reader.read_exact(&mut some).unwrap();
    assert_eq!(some, a[123_456..124_456]);
    drop(reader);
    // A new reader reads from the store (no copy any more), still correct.
    assert_eq!(std::fs::read(dirs.mnt.join("a.sst")).unwrap(), a);
    // The kernel sends RELEASE after close() returns: the deferred removal follows shortly.
    let copies = || std::fs::read_dir(dirs.cache.join("files")).unwrap().count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while copies() != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(copies(), 1, "only b's copy is left");
    mount.unmount().unwrap();
}

#[test]
fn remount_serves_hits_from_the_rebuilt_cache_and_drops_damaged_copies() {
    let dirs = Dirs::new();
    let mut config = sized_cache(&dirs, 10 << 20, 1 << 20);
    // Without the warm-up, which would load bad.sst's copy again as soon as it is opened and so
    // change the counts below.
    config.cache.warm.memory = 0;
    {
        let _m = MountHandle::mount(&config, &dirs.mnt).unwrap();
        write_synced(&dirs.mnt.join("good.sst"), &[1u8; 300_000]);
        write_synced(&dirs.mnt.join("bad.sst"), &[2u8; 300_000]);
    }
    // Damage one copy in place, keeping its size and mtime.
    let copy = std::fs::read_dir(dirs.cache.join("files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap()[0] == 2)
        .unwrap();
    let mtime = std::fs::metadata(&copy).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[150_000] = 99;
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    assert!(!copy.exists(), "the damaged copy was dropped at mount");
    assert_eq!(
        std::fs::read(dirs.mnt.join("good.sst")).unwrap(),
        vec![1u8; 300_000]
    );
    assert_eq!(
        std::fs::read(dirs.mnt.join("bad.sst")).unwrap(),
        vec![2u8; 300_000],
        "never a damaged byte"
    );
    let stats = mount.core().cache_stats();
    assert_eq!(stats.hits, 1, "good.sst was served from the rebuilt cache");
    assert!(stats.misses >= 1, "bad.sst was read from the store");
    mount.unmount().unwrap();
}

#[test]
fn stats_of_a_running_mount() {
    let dirs = Dirs::new();
    let mut args = dirs.cli_args();
    args.extend::<Vec<String>>(vec![
        "--cache-size-limit".into(),
        "1mb".into(),
        // A new file keeps its copy only if the cache has room for one target-size file.
        "--target-file-size".into(),
        "256kb".into(),
    ]);
    let mount = CliMount::start(&args, &dirs.mnt);
    write_synced(&dirs.mnt.join("x.sst"), &[5u8; 200_000]);
    assert_eq!(
        std::fs::read(dirs.mnt.join("x.sst")).unwrap().len(),
        200_000
    );
    let out = Command::new(statefs_bin())
        .arg("stats")
        .arg(&dirs.mnt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("uploads   1 files"), "{text}");
    assert!(text.contains("hot files"), "{text}");
    let raw = Command::new(statefs_bin())
        .args(["stats", "--raw"])
        .arg(&dirs.mnt)
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw.stdout);
    let metrics = statefs::metrics::parse(&raw);
    let get = |k: &str| metrics.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(get("statefs_uploads_total"), Some(1.0), "{raw}");
    assert_eq!(get("statefs_cache_used_bytes"), Some(200_000.0), "{raw}");
    assert!(get("statefs_fuse_operations_total{op=\"create\"}").unwrap() >= 1.0);
    // Every PUT (the SST, and the mount record written at mount) is in the latency histogram.
    let puts = get("statefs_remote_requests_total{op=\"put\"}").unwrap();
    assert!(puts >= 2.0, "{raw}");
    assert_eq!(
        get("statefs_remote_request_seconds_count{op=\"put\"}"),
        Some(puts),
        "{raw}"
    );
    // Not a statefs mount: a clear error.
    let out = Command::new(statefs_bin())
        .arg("stats")
        .arg(dirs.root.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a statefs mount"));
    drop(mount);
}

/// Cold reads from many threads reach the store together: the kernel reads missing pages through
/// read-ahead, as background requests, of which it keeps 12 pending unless the filesystem says
/// more at INIT; statefs allows twice its store threads. 48 readers of distinct blocks of an
/// uncached file on a 100 ms store had at most 16 GETs in flight before.
#[test]
fn cold_reads_from_many_threads_reach_the_store_together() {
    use statefs::store::FaultPlan;
    use std::os::unix::fs::FileExt;
    let dirs = Dirs::new();
    let mut config = sized_cache(&dirs, 1, 1);
    // Cold reads have threads of their own: two upload threads do not bound them.
    config.store_threads = 2;
    config.cache.blocks.in_flight = 32;
    // No warm-up either: every read below reaches the daemon.
    config.cache.warm.memory = 0;
    let faults = FaultPlan::default();
    let mount = || mount_faulty(&config, &dirs.mnt, &faults);
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    {
        let _m = mount();
        write_synced(&dirs.mnt.join("000001.sst"), &data);
    }
    // Remounted with a one-byte cache: no copy, no page cache; every read goes to the store.
    let _m = mount();
    faults.set_latency(std::time::Duration::from_millis(100));
    std::thread::scope(|s| {
        for i in 0..48u64 {
            let (data, path) = (&data, dirs.mnt.join("000001.sst"));
            s.spawn(move || {
                // Sequential reads of its own region: the kernel reads ahead in the background.
                let f = std::fs::File::open(path).unwrap();
                let mut buf = vec![0u8; 16 << 10];
                for j in 0..8u64 {
                    let off = i * (320 << 10) + j * (16 << 10);
                    f.read_exact_at(&mut buf, off).unwrap();
                    assert_eq!(buf, data[off as usize..off as usize + (16 << 10)]);
                }
            });
        }
    });
    faults.set_latency(std::time::Duration::ZERO);
    assert!(
        faults.max_in_flight() > 16,
        "GETs in flight at once: {}",
        faults.max_in_flight()
    );
}

/// A cold file opened for reading is fetched in the background into the kernel's page cache:
/// once warm, every byte of it reads with the store down, as from a local disk whose page cache is
/// warm, and the `statefs_warm_*` metrics count it. A file beyond the warm-up budget is not
/// warmed: with the store down its reads fail.
#[test]
fn an_opened_cold_file_is_warmed_into_the_page_cache() {
    use statefs::store::FaultPlan;
    use std::os::unix::fs::FileExt;
    let dirs = Dirs::new();
    let mut config = sized_cache(&dirs, 1, 1);
    config.cache.warm.memory = 32 << 20;
    config.cache.warm.in_flight = 4;
    let faults = FaultPlan::default();
    let mount = || mount_faulty(&config, &dirs.mnt, &faults);
    let a: Vec<u8> = (0..(24u32 << 20) + 12345)
        .map(|i| (i % 251) as u8)
        .collect();
    let b: Vec<u8> = (0..16u32 << 20).map(|i| (i % 241) as u8).collect();
    {
        let _m = mount();
        write_synced(&dirs.mnt.join("000001.sst"), &a);
        write_synced(&dirs.mnt.join("000002.sst"), &b);
    }
    // Remounted with a one-byte cache: no local copy of either file.
    let m = mount();
    faults.set_latency(std::time::Duration::from_millis(20));
    let fa = std::fs::File::open(dirs.mnt.join("000001.sst")).unwrap();
    let fb = std::fs::File::open(dirs.mnt.join("000002.sst")).unwrap();
    m.core().wait_warm();
    faults.set_down(true);
    let mut got = vec![0u8; a.len()];
    fa.read_exact_at(&mut got, 0).unwrap();
    assert!(
        got == a,
        "the warm file reads back whole with the store down"
    );
    let mut one = [0u8; 4096];
    assert!(
        fb.read_exact_at(&mut one, 8 << 20).is_err(),
        "a file beyond the budget was not warmed"
    );
    faults.set_down(false);
    let w = m.core().warm_metrics();
    assert_eq!(w.files.load(Ordering::Relaxed), 1);
    assert_eq!(w.bytes.load(Ordering::Relaxed), a.len() as u64);
    assert_eq!(w.failures.load(Ordering::Relaxed), 0);
    let mut got = vec![0u8; b.len()];
    fb.read_exact_at(&mut got, 0).unwrap();
    assert!(got == b, "read on demand once the store is back");
}

/// The kernel refuses to mix, on one inode, opens served through its page cache by the daemon and
/// opens in passthrough (the second fails with EIO). A cold file open through the daemon that gets
/// a local copy meanwhile (the warm-up fills the cache at its first open) still opens again, and
/// a file whose copy goes while a passthrough open holds it opens through the daemon: every open
/// succeeds and reads the file's bytes.
#[test]
fn opens_of_one_file_in_both_io_modes_all_succeed() {
    use std::os::unix::fs::FileExt;
    let dirs = Dirs::new();
    let config = sized_cache(&dirs, 64 << 20, 1);
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 239) as u8).collect();
    {
        let _m = MountHandle::mount(&config, &dirs.mnt).unwrap();
        write_synced(&dirs.mnt.join("000001.sst"), &data);
    }
    std::fs::remove_dir_all(&dirs.cache).unwrap();
    let m = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let path = dirs.mnt.join("000001.sst");
    // Cold: served by the daemon; the warm-up loads a copy in the background.
    let first = std::fs::File::open(&path).unwrap();
    m.core().settle();
    m.core().wait_warm();
    assert_eq!(
        m.core().cache_stats().hot_entries,
        1,
        "the warm-up filled the cache"
    );
    let mut opened = vec![first];
    for _ in 0..3 {
        opened.push(std::fs::File::open(&path).expect("an open next to a daemon-served one"));
    }
    for f in &opened {
        let mut got = vec![0u8; data.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got == data);
    }
    // Now only copies' opens (passthrough where the kernel has it) stay open; then a new open.
    drop(opened.remove(0));
    let again = std::fs::File::open(&path).unwrap();
    let mut got = vec![0u8; data.len()];
    again.read_exact_at(&mut got, 0).unwrap();
    assert!(got == data);
}

/// The hot list: a remount that lost its cache dir, and a restore of a checkpoint into fresh
/// dirs, load the copies the mount had, most recently used first, within the cache's room, before
/// anything opens them. With the store down afterwards, the hottest file reads whole; the others,
/// which did not fit, do not.
#[test]
fn warm_starts_load_the_hot_list_first() {
    use statefs::store::FaultPlan;
    let dirs = Dirs::new();
    let faults = FaultPlan::default();
    let mount =
        |config: &statefs::MountConfig, mnt: &std::path::Path| mount_faulty(config, mnt, &faults);
    let body = |n: u8| vec![n; 3 << 20];
    let checkpoint = {
        let m = mount(&sized_cache(&dirs, 16 << 20, 1), &dirs.mnt);
        std::fs::create_dir(dirs.mnt.join("db")).unwrap();
        for n in [1u8, 2, 3] {
            write_synced(&dirs.mnt.join(format!("db/{n}.sst")), &body(n));
        }
        // File 2 is used last: the hottest.
        drop(std::fs::read(dirs.mnt.join("db/2.sst")).unwrap());
        let id = m.checkpoint(&dirs.mnt.join("db"), 0).unwrap().id;
        m.unmount().unwrap();
        id
    };
    // Room for one file only.
    let check = |m: &MountHandle, root: &std::path::Path| {
        m.core().settle();
        assert_eq!(m.core().cache_stats().hot_entries, 1);
        faults.set_down(true);
        assert_eq!(
            std::fs::read(root.join("2.sst")).unwrap(),
            body(2),
            "the hottest file is local"
        );
        assert!(
            std::fs::read(root.join("3.sst")).is_err(),
            "the next did not fit"
        );
        faults.set_down(false);
    };
    std::fs::remove_dir_all(&dirs.cache).unwrap();
    let m = mount(&sized_cache(&dirs, 4 << 20, 1), &dirs.mnt);
    check(&m, &dirs.mnt.join("db"));
    m.unmount().unwrap();

    let fresh = dirs.root.path().join("restored");
    std::fs::create_dir_all(fresh.join("mnt")).unwrap();
    let mut config =
        statefs::MountConfig::new(dirs.remote_url(), fresh.join("local"), fresh.join("cache"));
    config.cache.size_limit = 4 << 20;
    config.cache.reserve_size = 0;
    config.cache.target_file_size = 1;
    config.restore = Some(statefs::config::RestoreFrom {
        id: checkpoint,
        claim: false,
    });
    let m = mount(&config, &fresh.join("mnt"));
    check(&m, &fresh.join("mnt"));
    m.unmount().unwrap();
}
