//! kill -9 of the mount process: every write RocksDB acknowledged with sync survives a remount.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use statefs_tests::{CliMount, Dirs, crash_key, crash_progress, crash_value, unmount_dead};

#[test]
fn synced_writes_survive_kill9_of_the_mount() {
    let dirs = Dirs::new();
    let args = dirs.cli_args();
    let progress = dirs.root.path().join("progress");
    let db = dirs.mnt.join("db");
    let mut mount = CliMount::start(&args, &dirs.mnt);
    let mut writer = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
        .arg(&db)
        .arg(&progress)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Enough keys for several flushed (uploaded) SSTs, then kill the mount mid-write.
    let deadline = Instant::now() + Duration::from_secs(240);
    while crash_progress(&progress) < 8_000 || dirs.remote_objects().len() < 2 {
        assert!(writer.try_wait().unwrap().is_none(), "writer died early");
        assert!(
            Instant::now() < deadline,
            "writer too slow: {} keys",
            crash_progress(&progress)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    mount.kill9();
    std::thread::sleep(Duration::from_millis(200));
    let _ = writer.kill();
    let _ = writer.wait();
    let acked = crash_progress(&progress);
    drop(mount);
    if statefs_tests::is_mounted(&dirs.mnt) {
        unmount_dead(&dirs.mnt);
    }

    let mount = CliMount::start(&args, &dirs.mnt);
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let reopened = rocksdb::DB::open(&opts, &db).expect("RocksDB reopens after the crash");
    for i in 0..acked {
        assert_eq!(
            reopened.get(crash_key(i)).unwrap().as_deref(),
            Some(&crash_value(i)[..]),
            "key {i} of {acked}"
        );
    }
    drop(reopened);
    let log = mount.stop();
    assert!(log.contains("unmounted"), "{log}");
}

/// The crash loop, short (`STATEFS_CRASH_ROUNDS`, default 6; `scripts/crash-loop.sh` runs 200):
/// kill -9 at random points of synced writes with flushes, compactions and journal compactions,
/// checkpoint publishes, restores and gc, each followed by fsck, gc with no grace and a check of
/// every acknowledged key.
#[test]
fn crash_loop_short() {
    let rounds = std::env::var("STATEFS_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let seed = statefs_tests::seed_from(std::env::var("STATEFS_CRASH_SEED").ok());
    let summary = statefs_tests::crash_loop::run(
        rounds,
        seed,
        std::path::Path::new(env!("CARGO_BIN_EXE_crash_writer")),
        false,
    );
    eprintln!("crash loop (seed {seed}): {summary}");
    assert_eq!(summary.rounds, rounds);
    assert!(summary.acked > 0 && summary.keys_checked >= summary.acked);
}
