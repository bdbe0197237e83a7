//! Bad input to `statefs mount`: one clear message, a non-zero exit, nothing left mounted.

use std::process::Command;

use statefs::MountHandle;
use statefs_tests::{Dirs, is_mounted, statefs_bin};

fn mount_cli(remote: &str, dirs: &Dirs, mnt: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let r = run_mount(remote, dirs, mnt, extra);
    assert!(
        !is_mounted(mnt),
        "a failed mount left {} mounted",
        mnt.display()
    );
    r
}

fn run_mount(remote: &str, dirs: &Dirs, mnt: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(statefs_bin())
        .arg("mount")
        .args(["--remote", remote])
        .arg("--local-dir")
        .arg(&dirs.local)
        .arg("--cache-dir")
        .arg(&dirs.cache)
        .args(extra)
        .arg(mnt)
        // The S3 cases' secret: the environment is where it comes from.
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_bad_input_fails_with_its_message() {
    let dirs = Dirs::new();
    let good = dirs.remote_url();
    let cases: Vec<(String, std::path::PathBuf, Vec<&str>, &str)> = vec![
        (
            "ftp://host/x".into(),
            dirs.mnt.clone(),
            vec![],
            "unsupported scheme \"ftp\"",
        ),
        (
            "file://relative/x".into(),
            dirs.mnt.clone(),
            vec![],
            "file URLs take an absolute path",
        ),
        (
            "not a url".into(),
            dirs.mnt.clone(),
            vec![],
            "bad --remote URL",
        ),
        ("s3://".into(), dirs.mnt.clone(), vec![], "bad --remote URL"),
        (
            good.clone(),
            dirs.root.path().join("missing"),
            vec![],
            "does not exist",
        ),
        (
            good.clone(),
            dirs.local.join("LOCK-not-a-dir"),
            vec![],
            "does not exist",
        ),
        (
            good.clone(),
            dirs.mnt.clone(),
            vec!["--passthrough", "sometimes"],
            "expected one of auto, on, off",
        ),
    ];
    for (remote, mnt, extra, want) in cases {
        let (ok, stderr) = mount_cli(&remote, &dirs, &mnt, &extra);
        assert!(!ok, "{remote} {}: succeeded", mnt.display());
        assert!(
            stderr.contains(want),
            "{remote} {}: wanted {want:?} in {stderr}",
            mnt.display()
        );
    }

    // A file is not a mount point; a non-empty directory neither.
    let file = dirs.root.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let (ok, stderr) = mount_cli(&good, &dirs, &file, &[]);
    assert!(!ok && stderr.contains("is not a directory"), "{stderr}");
    std::fs::write(dirs.mnt.join("stray"), b"x").unwrap();
    let (ok, stderr) = mount_cli(&good, &dirs, &dirs.mnt, &[]);
    assert!(!ok && stderr.contains("is not empty"), "{stderr}");
    std::fs::remove_file(dirs.mnt.join("stray")).unwrap();

    // An unreachable S3 endpoint fails at mount with the store's error.
    let (ok, stderr) = mount_cli(
        "s3://bucket/p",
        &dirs,
        &dirs.mnt,
        &[
            "--s3-endpoint",
            "http://127.0.0.1:9",
            "--s3-region",
            "us-east-1",
            "--s3-access-key-id",
            "k",
            "--retry-attempts",
            "1",
        ],
    );
    assert!(
        !ok && stderr.contains("object store is not usable"),
        "{stderr}"
    );

    // The local dir of a live mount is locked.
    let mnt2 = dirs.root.path().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let live = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let (ok, stderr) = mount_cli(&good, &dirs, &mnt2, &[]);
    assert!(
        !ok && stderr.contains("is in use by another statefs mount"),
        "{stderr}"
    );
    // Mounting over a live mount is refused too.
    let other = Dirs::new();
    let (ok, stderr) = run_mount(&other.remote_url(), &other, &dirs.mnt, &[]);
    assert!(
        !ok && stderr.contains("something is already mounted there"),
        "{stderr}"
    );
    live.unmount().unwrap();

    // After all of that, a good mount works.
    let m = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    m.unmount().unwrap();
}
