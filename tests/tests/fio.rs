//! Data integrity under random I/O: `fio` (Debian's) writes random blocks with a checksum in each
//! and reads every one back (`--verify=crc32c`), on a mount with and without passthrough: an
//! SST (uploaded at its syncs), a local-placed file with O_DIRECT, and three writers on one file
//! at once. fio's verify fails on any block that does not read back as written.

use std::path::Path;
use std::process::Command;

use statefs::{MountHandle, PassthroughMode};
use statefs_tests::Dirs;

/// Runs fio in `dir` with `args`; panics with its output unless every job ended without error.
fn fio(dir: &Path, args: &[&str]) {
    let out = Command::new("fio")
        .args([
            "--ioengine=psync",
            "--bs=4k",
            "--verify=crc32c",
            "--verify_fatal=1",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("fio (scripts/setup.sh installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("err=") && !l.contains("err= 0"))
        .collect();
    assert!(
        out.status.success() && errors.is_empty(),
        "fio {args:?} failed:\n{text}"
    );
    assert!(text.contains("err= 0"), "fio {args:?} ran no job:\n{text}");
}

fn jobs(mnt: &Path) {
    // An SST written at random offsets, synced every 16 writes (each sync uploads it), then
    // verified: through the upload path and the local copy.
    fio(
        mnt,
        &[
            "--name=sst",
            "--filename=000007.sst",
            "--size=16m",
            "--rw=randwrite",
            "--fsync=16",
        ],
    );
    // A local-placed file read and written with O_DIRECT.
    fio(
        mnt,
        &[
            "--name=direct",
            "--filename=direct.log",
            "--size=8m",
            "--rw=randrw",
            "--direct=1",
        ],
    );
    // Three writers at once on one file, each in its own 8 MiB region.
    fio(
        mnt,
        &[
            "--name=three",
            "--filename=three.sst",
            "--size=8m",
            "--offset_increment=8m",
            "--numjobs=3",
            "--rw=randwrite",
            "--group_reporting",
        ],
    );
}

#[test]
fn random_io_reads_back_what_was_written_with_passthrough() {
    let dirs = Dirs::new();
    let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    jobs(&dirs.mnt);
    drop(mount);
}

#[test]
fn random_io_reads_back_what_was_written_through_the_daemon() {
    let dirs = Dirs::new();
    let mut config = dirs.config();
    config.passthrough = PassthroughMode::Off;
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    jobs(&dirs.mnt);
    drop(mount);
}
