//! Debian's unmodified db_bench (package rocksdb-tools) on a statefs mount.

use std::process::Command;

use statefs_tests::{CliMount, Dirs};

fn db_bench() -> &'static str {
    let path = "/usr/bin/db_bench";
    assert!(
        std::path::Path::new(path).exists(),
        "db_bench missing: scripts/setup.sh installs rocksdb-tools"
    );
    path
}

#[test]
fn db_bench_fillrandom_readrandom_on_the_mount() {
    let dirs = Dirs::new();
    let args = dirs.cli_args();
    let mount = CliMount::start(&args, &dirs.mnt);
    let out = Command::new(db_bench())
        .arg(format!("--db={}", dirs.mnt.join("db").display()))
        .args([
            "--benchmarks=fillrandom,readrandom,stats",
            "--num=100000",
            "--reads=20000",
            "--value_size=100",
            "--write_buffer_size=1048576",
            "--target_file_size_base=1048576",
            "--compression_type=none",
            "--threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "db_bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bench in ["fillrandom", "readrandom"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(bench) && l.contains("ops/sec")),
            "{bench} missing:\n{stdout}"
        );
    }
    // readrandom reports how many of its keys it found: all of them were written by fillrandom
    // (same key space, one thread), up to collisions of the random generator.
    let found = stdout
        .lines()
        .find(|l| l.starts_with("readrandom"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|s| s.split(" of ").next())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .expect("readrandom found-count");
    assert!(
        found > 12_000,
        "readrandom found only {found} of 20000 keys:\n{stdout}"
    );
    assert!(!dirs.remote_objects().is_empty(), "SSTs reached the store");
    let log = mount.stop();
    assert!(log.contains("unmounted"), "{log}");
}
