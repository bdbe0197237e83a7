//! The cache as the core uses it: eviction, deferred eviction of open copies, promotion, rebuild at
//! mount, damaged copies.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::cache::CacheConfig;
use crate::table::ROOT_INO;

const ME: Caller = Caller { uid: 0, gid: 0 };

use super::tests::Env;

impl Env {
    fn copies(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("cache/files"))
            .unwrap()
            .count()
    }
}

fn sized(limit: u64) -> CacheConfig {
    CacheConfig {
        size_limit: limit,
        reserve_size: 0,
        access_before_promote: 3,
        promote_limit: 3,
        target_file_size: 1000,
        ..super::tests::test_cache()
    }
}

fn data(n: u8) -> Vec<u8> {
    vec![n; 1000]
}

fn put(core: &FsCore, name: &str, bytes: &[u8]) -> Ino {
    let (attr, o) = core
        .create(ROOT_INO, name, 0o644, libc::O_RDWR, ME)
        .unwrap();
    core.write(o.fh, 0, bytes).unwrap();
    core.fsync(o.fh, true).unwrap();
    core.release(o.fh).unwrap();
    attr.ino
}

fn read_all(core: &FsCore, ino: Ino) -> (Vec<u8>, bool) {
    let o = core.open(ino, libc::O_RDONLY).unwrap();
    let d = core.read(o.fh, 0, 100_000).unwrap();
    let local = o.backing.is_some();
    core.release(o.fh).unwrap();
    (d, local)
}

#[test]
fn least_recently_used_copy_goes_first_and_reads_stay_correct() {
    let env = Env::new();
    let core = env.core_with(sized(2500));
    let a = put(&core, "a.sst", &data(1));
    let b = put(&core, "b.sst", &data(2));
    assert_eq!(read_all(&core, a), (data(1), true)); // a is now more recent than b
    let c = put(&core, "c.sst", &data(3));
    assert_eq!(env.copies(), 2);
    assert_eq!(
        read_all(&core, b),
        (data(2), false),
        "b was evicted: read from the store"
    );
    assert_eq!(read_all(&core, a), (data(1), true));
    assert_eq!(read_all(&core, c), (data(3), true));
    let stats = core.cache_stats();
    assert_eq!(
        (stats.used, stats.evictions, stats.hot_entries),
        (2000, 1, 2)
    );
}

#[test]
fn an_open_copy_is_evicted_only_when_its_last_handle_closes() {
    let env = Env::new();
    let core = env.core_with(sized(1500));
    let a = put(&core, "a.sst", &data(1));
    let reader = core.open(a, libc::O_RDONLY).unwrap();
    assert!(reader.backing.is_some());
    assert_eq!(core.read(reader.fh, 0, 10).unwrap(), vec![1; 10]);
    put(&core, "b.sst", &data(2)); // demotes a while it is open
    assert_eq!(env.copies(), 2, "a's copy stays while open");
    assert_eq!(core.cache_stats().used, 2000, "and stays counted");
    assert_eq!(
        core.read(reader.fh, 10, 990).unwrap(),
        vec![1; 990],
        "the open reader reads on, correctly"
    );
    // A new open no longer uses the demoted copy.
    assert_eq!(read_all(&core, a), (data(1), false));
    core.release(reader.fh).unwrap();
    assert_eq!(env.copies(), 1);
    assert_eq!(core.cache_stats().used, 1000);
}

/// Row 7 of the safety issue: a copy demoted while a reader holds it, then opened for writing
/// and written while the store refuses the upload, is the only place those bytes live: the
/// reader's last close must not delete it, and the file must not revert to its old object.
#[test]
fn an_evicted_open_copy_written_again_is_not_deleted_at_the_last_close() {
    let env = Env::new();
    let core = env.core_with(sized(1500));
    let a = put(&core, "a.sst", &data(1));
    let reader = core.open(a, libc::O_RDONLY).unwrap();
    put(&core, "b.sst", &data(2)); // demotes a while it is open
    let writer = core.open(a, libc::O_RDWR).unwrap();
    core.write(writer.fh, 0, &data(9)).unwrap();
    env.faults.set_writes_down(true);
    assert!(
        core.release(writer.fh).is_err(),
        "the upload at close fails"
    );
    core.release(reader.fh).unwrap();
    let (bytes, _) = read_all(&core, a);
    assert!(
        bytes == data(9),
        "the unsynced write is lost: {:?}",
        &bytes[..4]
    );
    env.faults.set_writes_down(false);
    let w = core.open(a, libc::O_RDWR).unwrap();
    core.fsync(w.fh, true).unwrap();
    core.release(w.fh).unwrap();
    core.shutdown().unwrap();
    drop(core);
    let core = env.core_with(sized(1500));
    super::tests::lose_local_copies_at(&env.dir.path().join("cache"));
    assert!(read_all(&core, a).0 == data(9), "the synced write is lost");
}

#[test]
fn cold_file_is_promoted_after_enough_reads() {
    let env = Env::new();
    let core = env.core_with(sized(2500));
    let a = put(&core, "a.sst", &data(1));
    put(&core, "b.sst", &data(2));
    put(&core, "c.sst", &data(3)); // a demoted
    core.unlink(ROOT_INO, "c.sst").unwrap(); // room again
    core.settle();
    let o = core.open(a, libc::O_RDONLY).unwrap();
    assert!(o.backing.is_none());
    // Open counted 1 access, reads count the rest (access_before_promote = 3).
    core.read(o.fh, 0, 100).unwrap();
    core.read(o.fh, 100, 100).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while core.metrics.downloads.load(Ordering::Relaxed) < 1 {
        assert!(Instant::now() < deadline, "promoted copy never loaded");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The handle opened before the promotion moves to the copy: no more store reads.
    let gets = core.metrics.remote_reads.load(Ordering::Relaxed);
    assert_eq!(core.read(o.fh, 500, 500).unwrap(), vec![1; 500]);
    assert_eq!(core.metrics.remote_reads.load(Ordering::Relaxed), gets);
    core.release(o.fh).unwrap();
    assert_eq!(read_all(&core, a), (data(1), true));
    assert_eq!(core.cache_stats().promotions, 1);
}

#[test]
fn rebuilt_at_mount_and_damaged_copies_are_dropped() {
    let env = Env::new();
    let (a, b);
    {
        let core = env.core_with(sized(10_000));
        a = put(&core, "a.sst", &data(1));
        b = put(&core, "b.sst", &data(2));
        core.shutdown().unwrap();
    }
    // Damage b's copy without changing its size or mtime: only the checksum can tell.
    let path = std::fs::read_dir(env.dir.path().join("cache/files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap()[0] == 2)
        .unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, data(9)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let core = env.core_with(sized(10_000));
    assert_eq!(env.copies(), 1, "the damaged copy is gone");
    assert_eq!(
        read_all(&core, a),
        (data(1), true),
        "an intact copy serves hits after remount"
    );
    assert_eq!(read_all(&core, b), (data(2), false), "never a damaged byte");
    assert_eq!(core.cache_stats().hits, 1);
}

#[test]
fn disabled_cache_keeps_no_copies() {
    let env = Env::new();
    let core = env.core_with(CacheConfig {
        size_limit: 0,
        reserve_size: 0,
        ..sized(0)
    });
    let a = put(&core, "a.sst", &data(1));
    assert_eq!(env.copies(), 0);
    assert_eq!(read_all(&core, a), (data(1), false));
    let o = core.open(a, libc::O_RDWR).unwrap();
    core.write(o.fh, 0, &[7]).unwrap();
    core.release(o.fh).unwrap();
    assert_eq!(env.copies(), 0, "rewritten and sealed again: the copy goes");
    assert_eq!(read_all(&core, a).0[..2], [7, 1]);
}
