//! POSIX rules for a user who does not own a file, on a mount with `--allow-other`: ownership
//! and permission checks, sticky directories, and the clearing of set-ID bits on write. Each case
//! is set up as root and then tried as `nobody` (`setpriv`), on a plain local directory (checking
//! the table) and on the mount: both must answer as the table says.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use statefs::{MountConfig, MountHandle};

const NOBODY: u32 = 65534;

/// Runs `sh -c script` as `nobody` in `dir`; its exit status.
fn as_nobody(dir: &Path, script: &str) -> i32 {
    statefs_tests::as_nobody(Some(dir), script)
        .status
        .code()
        .unwrap_or(-1)
}

fn mode(p: &Path) -> String {
    format!(
        "{:o}",
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    )
}

fn write_as_root(p: &Path, mode: u32, owner: u32) {
    std::fs::write(p, b"data").unwrap();
    std::os::unix::fs::chown(p, Some(owner), Some(owner)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `d/s`, world-writable and sticky (1777), as /tmp is.
fn sticky_dir(d: &Path) -> PathBuf {
    let s = d.join("s");
    std::fs::create_dir(&s).unwrap();
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o1777)).unwrap();
    s
}

type Case = (
    &'static str,
    fn(&Path),
    &'static str,
    fn(&Path) -> String,
    &'static str,
);

/// Name, setup as root, script as nobody, observation afterwards, expected `exit observation`.
const CASES: &[Case] = &[
    (
        "chmod of root's file",
        |d| write_as_root(&d.join("f"), 0o644, 0),
        "chmod 600 f",
        |d| mode(&d.join("f")),
        "1 644",
    ),
    (
        "chown of one's own file to root",
        |d| write_as_root(&d.join("f"), 0o644, NOBODY),
        "chown 0 f",
        |d| std::fs::metadata(d.join("f")).unwrap().uid().to_string(),
        "1 65534",
    ),
    (
        "chmod of one's own file",
        |d| write_as_root(&d.join("f"), 0o644, NOBODY),
        "chmod 600 f",
        |d| mode(&d.join("f")),
        "0 600",
    ),
    (
        "appending to root's 0644 file",
        |d| write_as_root(&d.join("f"), 0o644, 0),
        "echo x >> f",
        |d| std::fs::read(d.join("f")).unwrap().len().to_string(),
        "2 4",
    ),
    (
        "creating a file in root's 0755 directory",
        |_| {},
        "touch new",
        |d| d.join("new").exists().to_string(),
        "1 false",
    ),
    (
        "removing root's file from a sticky 1777 directory",
        |d| write_as_root(&sticky_dir(d).join("f"), 0o666, 0),
        "rm -f s/f",
        |d| d.join("s/f").exists().to_string(),
        "1 true",
    ),
    (
        "removing one's own file from a sticky directory",
        |d| drop(sticky_dir(d)),
        "touch s/mine && rm s/mine",
        |d| d.join("s/mine").exists().to_string(),
        "0 false",
    ),
    (
        "writing clears the set-user-ID bit",
        |d| write_as_root(&d.join("f"), 0o4777, NOBODY),
        "echo x >> f",
        |d| mode(&d.join("f")),
        "0 777",
    ),
    (
        "reading root's 0600 file",
        |d| write_as_root(&d.join("f"), 0o600, 0),
        "cat f > /dev/null",
        |_| String::new(),
        "1 ",
    ),
];

fn run(root: &Path) -> Vec<(String, String)> {
    CASES
        .iter()
        .enumerate()
        .map(|(i, (name, setup, script, observe, _))| {
            let d = root.join(format!("case{i}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            setup(&d);
            let code = as_nobody(&d, script);
            (name.to_string(), format!("{code} {}", observe(&d)))
        })
        .collect()
}

/// Scratch under /tmp, mode 0755, that `nobody` can traverse (the suite's usual scratch root is
/// under root's home).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn other_users_meet_the_permission_rules() {
    let root =
        Scratch(std::env::temp_dir().join(format!("statefs-posix-{}", uuid::Uuid::new_v4())));
    let (local, mnt) = (root.0.join("plain"), root.0.join("mnt"));
    for p in [&root.0, &local, &mnt] {
        std::fs::create_dir_all(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let on_local = run(&local);
    for ((name, got), (_, _, _, _, want)) in on_local.iter().zip(CASES) {
        assert_eq!(
            got, want,
            "the table is wrong about a local file system: {name}"
        );
    }
    let mut config = MountConfig::new(
        format!("file://{}", root.0.join("remote").display()),
        root.0.join("local"),
        root.0.join("cache"),
    );
    config.allow_other = true;
    let mount = MountHandle::mount(&config, &mnt).unwrap();
    std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let on_mount = run(&mnt);
    drop(mount);
    let failed: Vec<String> = on_mount
        .iter()
        .zip(CASES)
        .filter(|((_, got), (_, _, _, _, want))| got != want)
        .map(|((name, got), (_, _, _, _, want))| format!("{name}: got {got:?}, want {want:?}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases differ:\n{}",
        failed.len(),
        CASES.len(),
        failed.join("\n")
    );
}
