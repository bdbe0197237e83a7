//! Mount-level safety: a mount with few file descriptors, a crash on a full local disk, and a
//! cache dir that is not the mount's. (Ownership, gc and retention races are tested in the core:
//! `fs/src/core/safety_tests.rs`.)

use std::io::{Read, Write};
use std::path::Path;

use statefs_tests::{CliMount, Dirs, statefs_bin};

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn content(i: usize) -> Vec<u8> {
    format!("sst {i:05} ").repeat(40).into_bytes()
}

/// Item 6 of the safety issue: a mount started under `ulimit -n 256` serves 400 SSTs held open
/// at once (RocksDB with max_open_files=-1 holds every SST open), every one reading back right;
/// before, 161 of 400 opens failed with EMFILE.
#[test]
fn a_mount_under_ulimit_256_serves_400_open_files() {
    let dirs = Dirs::new();
    // This process holds the 400 descriptors of the client side.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if soft < 1024 {
        nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            hard.min(4096),
            hard,
        )
        .unwrap();
    }
    let mount = CliMount::start_with_nofile(&dirs.cli_args(), &dirs.mnt, 256);
    let n = 400;
    for i in 0..n {
        write_synced(&dirs.mnt.join(format!("{i:06}.sst")), &content(i));
    }
    let mut files = Vec::new();
    for i in 0..n {
        match std::fs::File::open(dirs.mnt.join(format!("{i:06}.sst"))) {
            Ok(f) => files.push(f),
            Err(e) => panic!("open {i} of {n}: {e}\n{}", mount.stderr()),
        }
    }
    for (i, f) in files.iter_mut().enumerate() {
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        assert!(data == content(i), "file {i} reads back wrong");
    }
    // And writes, with everything still open.
    write_synced(&dirs.mnt.join("CURRENT"), b"MANIFEST-000001\n");
    drop(files);
    let log = mount.stop();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// Row 10 of the safety issue, through the CLI: a mount killed on a full local disk comes back
/// (the journal compaction that does not fit is put off), with everything that was synced.
#[test]
fn kill9_on_a_full_local_disk_remounts() {
    let dirs = Dirs::new();
    let small = statefs::testing::SmallFs::new(16 << 20);
    let args = vec![
        "--remote".to_string(),
        dirs.remote_url(),
        "--local-dir".into(),
        small.path().join("local").display().to_string(),
        "--cache-dir".into(),
        small.path().join("cache").display().to_string(),
    ];
    let mut mount = CliMount::start(&args, &dirs.mnt);
    let wal = vec![3u8; 1500];
    write_synced(&dirs.mnt.join("000003.log"), &wal);
    write_synced(&dirs.mnt.join("000004.sst"), &content(4));
    let _filler = small.fill();
    mount.kill9();
    drop(mount);
    if statefs_tests::is_mounted(&dirs.mnt) {
        statefs_tests::unmount_dead(&dirs.mnt);
    }
    let mount = CliMount::start(&args, &dirs.mnt);
    assert_eq!(std::fs::read(dirs.mnt.join("000003.log")).unwrap(), wal);
    assert_eq!(
        std::fs::read(dirs.mnt.join("000004.sst")).unwrap(),
        content(4)
    );
    mount.stop();
}

/// Row 5 of the safety issue, through the CLI: a second mount given the first one's cache dir
/// (or its local dir as a cache dir) is refused with a clear error and cleans nothing.
#[test]
fn a_second_mount_on_anothers_cache_dir_is_refused() {
    let dirs = Dirs::new();
    let a = CliMount::start(&dirs.cli_args(), &dirs.mnt);
    let wal = vec![9u8; 1500];
    write_synced(&dirs.mnt.join("000003.log"), &wal);
    let mnt_b = dirs.root.path().join("mnt-b");
    std::fs::create_dir(&mnt_b).unwrap();
    for cache in [&dirs.cache, &dirs.local] {
        let out = std::process::Command::new(statefs_bin())
            .arg("mount")
            .args(["--remote", &dirs.remote_url(), "--local-dir"])
            .arg(dirs.root.path().join("local-b"))
            .arg("--cache-dir")
            .arg(cache)
            .arg(&mnt_b)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("is not this mount's"), "{err}");
        assert!(!statefs_tests::is_mounted(&mnt_b));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dirs.mnt.join("000003.log"))
        .unwrap();
    f.write_all(b"more").unwrap();
    f.sync_all().unwrap();
    drop(f);
    a.stop();
    let a = CliMount::start(&dirs.cli_args(), &dirs.mnt);
    let mut want = wal.clone();
    want.extend_from_slice(b"more");
    assert_eq!(std::fs::read(dirs.mnt.join("000003.log")).unwrap(), want);
    a.stop();
}
