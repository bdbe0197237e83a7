//! The fault soak: RocksDB on a mount whose object store fails a share of its calls at random
//! (before taking effect, after taking effect with the answer lost, after hanging until a
//! request timeout, and ranged reads coming back short), behind the mount's own retry layer.
//!
//! What it checks:
//! - every synced write either is acknowledged and then survives everything that follows, or
//!   fails with an error (RocksDB stops; the soak reopens the database and goes on);
//! - every read of an acknowledged key returns its value (never a wrong byte);
//! - at the end, on a store without faults: `fsck` finds no damage and no orphan once the mount
//!   has released what failed uploads left, `gc` has nothing to delete, and no multipart upload
//!   is left half-done in the store.
//!
//! Run by `scripts/soak.sh [SECONDS]` (the `soak` binary) and, shortly, by the test suite.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use statefs::MountHandle;
use statefs::store::{
    FailingRemote, FaultPlan, FaultRates, RemoteSpec, RemoteStore, RetryPolicy, RetryingRemote,
};

use crate::crash_loop::Rng;
use crate::{Dirs, crash_key, crash_value};

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub seconds: u64,
    pub store_calls: u64,
    pub failed: u64,
    pub ambiguous: u64,
    pub black_holed: u64,
    pub short_reads: u64,
    /// Synced writes acknowledged, and those that failed with an error.
    pub acked: u64,
    pub write_errors: u64,
    pub reads_checked: u64,
    pub reopens: u64,
    pub remounts: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} s: {} store calls, faults injected: {} failed, {} applied-then-failed, {} black-holed, {} short reads; {} synced writes acknowledged, {} failed with an error; {} reads of acknowledged keys checked; {} reopens, {} remounts; 0 keys lost, 0 wrong bytes, 0 leaked objects",
            self.seconds,
            self.store_calls,
            self.failed,
            self.ambiguous,
            self.black_holed,
            self.short_reads,
            self.acked,
            self.write_errors,
            self.reads_checked,
            self.reopens,
            self.remounts
        )
    }
}

/// Runs the soak for `duration` with `rate` of store calls failing (split over the kinds), from
/// `seed`. Panics at the first broken promise.
pub fn run(duration: Duration, rate: f64, seed: u64) -> Report {
    let dirs = Dirs::new();
    let rt = statefs::mount::runtime().unwrap();
    let store = RemoteSpec::parse(&dirs.remote_url())
        .unwrap()
        .open(&Default::default(), rt.clone())
        .unwrap();
    let faults = FaultPlan::default();
    let remote: Arc<dyn RemoteStore> = Arc::new(RetryingRemote::new(
        FailingRemote::new(store, faults.clone()),
        RetryPolicy {
            // Few attempts, so that some failures get through to RocksDB as EIO.
            attempts: 2,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(10),
            ..Default::default()
        },
    ));
    let mut config = dirs.config();
    // A small cache: most SST reads go to the store, where the faults are.
    config.cache.size_limit = 1 << 20;
    config.cache.target_file_size = 256 << 10;
    // Split so that a write or a ranged read meets a fault with probability `rate` (other calls,
    // HEAD and LIST, 0.85 of it): 80% fail before taking effect, 5% hang until a (simulated)
    // request timeout, 15% of writes take effect and then fail, 15% of ranged reads come back
    // short.
    let rates = FaultRates {
        fail: rate * 0.8,
        ambiguous: rate * 0.15,
        black_hole: rate * 0.05,
        black_hole_for: Duration::from_millis(30),
        short: rate * 0.15,
        corrupt: 0.0,
    };
    let mut rng = Rng::new(seed);
    let mut r = Report::default();
    let start = Instant::now();
    let db_path = dirs.mnt.join("db");
    let mut mount = None;
    faults.set_random(Some(rates), seed);
    while start.elapsed() < duration {
        if mount.is_none() {
            mount = Some(mount_retrying(&config, &dirs.mnt, &remote));
            r.remounts += 1;
        }
        let Ok(db) = rocksdb::DB::open(&options(), &db_path) else {
            // Opening reads SST footers from the store: a fault can fail it. Try again.
            r.reopens += 1;
            continue;
        };
        r.reopens += 1;
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        // Write until a synced write fails (RocksDB then refuses writes until reopened) or for
        // a while; read back acknowledged keys as we go.
        for _ in 0..2000 {
            let i = r.acked;
            match db.put_opt(crash_key(i), crash_value(i), &wo) {
                Ok(()) => r.acked += 1,
                Err(_) => {
                    r.write_errors += 1;
                    break;
                }
            }
            if rng.below(8) == 0 && r.acked > 0 {
                let k = rng.below(r.acked);
                match db.get(crash_key(k)) {
                    Ok(Some(v)) => {
                        assert!(v == crash_value(k), "seed {seed}: key {k} read back wrong");
                        r.reads_checked += 1;
                    }
                    Ok(None) => panic!("seed {seed}: acknowledged key {k} is missing"),
                    // A read may fail (a cold block the store would not give): an error, never
                    // a wrong byte.
                    Err(_) => {}
                }
            }
        }
        drop(db);
        if rng.below(5) == 0 {
            // An unmount under faults: what it cannot upload stays local, unsynced.
            drop(mount.take());
        }
    }
    drop(mount);
    faults.set_random(None, 0);
    let c = faults.counts();
    r.store_calls = c.calls.load(Ordering::Relaxed);
    r.failed = c.failed.load(Ordering::Relaxed);
    r.ambiguous = c.ambiguous.load(Ordering::Relaxed);
    r.black_holed = c.black_holed.load(Ordering::Relaxed);
    r.short_reads = c.short.load(Ordering::Relaxed);
    r.seconds = start.elapsed().as_secs();

    // Without faults: everything acknowledged is there, and nothing leaked.
    let m = MountHandle::mount_with_remote(&config, &dirs.mnt, Some(remote.clone())).unwrap();
    {
        let db = rocksdb::DB::open(&options(), &db_path).expect("reopen without faults");
        for i in 0..r.acked {
            assert!(
                db.get(crash_key(i)).unwrap().as_deref() == Some(&crash_value(i)[..]),
                "seed {seed}: acknowledged key {i} of {} lost",
                r.acked
            );
        }
        r.reads_checked += r.acked;
        // Its flush and compactions on close, then the mount's release of unnamed objects.
    }
    m.core().settle();
    drop(m);
    let fsck = statefs::fsck::fsck(&dirs.local, remote.as_ref()).unwrap();
    assert!(!fsck.damaged(), "seed {seed}: {fsck:?}");
    assert!(
        fsck.orphans.is_empty(),
        "seed {seed}: objects nothing names after the release: {:?}",
        fsck.orphans
    );
    let gc = statefs::checkpoint::collect_garbage(remote.as_ref(), Duration::ZERO, true).unwrap();
    assert!(
        gc.garbage.is_empty() && gc.abandoned.is_empty(),
        "seed {seed}: {gc:?}"
    );
    let half_done = half_done_uploads(&dirs.remote);
    assert!(
        half_done.is_empty(),
        "seed {seed}: multipart uploads left: {half_done:?}"
    );
    r
}

fn options() -> rocksdb::Options {
    let mut o = rocksdb::Options::default();
    o.create_if_missing(true);
    o.set_write_buffer_size(128 << 10);
    o.set_target_file_size_base(128 << 10);
    o.set_level_zero_file_num_compaction_trigger(2);
    o
}

/// Mounts, trying again when a fault fails the start (the store probe, the mount record).
fn mount_retrying(
    config: &statefs::MountConfig,
    mnt: &Path,
    remote: &Arc<dyn RemoteStore>,
) -> MountHandle {
    let mut last = None;
    for _ in 0..50 {
        match MountHandle::mount_with_remote(config, mnt, Some(remote.clone())) {
            Ok(m) => return m,
            Err(e) => last = Some(e),
        }
    }
    panic!("50 mounts in a row failed under faults: {last:?}");
}

/// Staging files of multipart uploads to a `file://` store (`<key>#<n>`) left behind.
fn half_done_uploads(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains('#') {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
