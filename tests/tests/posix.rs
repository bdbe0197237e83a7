//! POSIX conformance: a table of system calls × file types with the expected outcome, run on a
//! statefs mount and, as a check of the table itself, on a plain local directory. Each case
//! returns what it observed (an outcome per call: `ok`, a value, or the errno's name); both runs
//! must observe the same, and the local run must observe what the table expects.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use statefs::MountHandle;
use statefs_tests::Dirs;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `ok`, or the errno's name.
fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(n) => format!("{:?}", nix::errno::Errno::from_raw(n)),
            None => format!("{e}"),
        },
    }
}

fn errno(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn kind(p: &Path) -> String {
    match std::fs::symlink_metadata(p) {
        Ok(m) => {
            let t = m.file_type();
            let k = if t.is_symlink() {
                "symlink"
            } else if t.is_dir() {
                "dir"
            } else if t.is_fifo() {
                "fifo"
            } else if t.is_socket() {
                "socket"
            } else if t.is_char_device() {
                "char"
            } else if t.is_block_device() {
                "block"
            } else {
                "file"
            };
            k.into()
        }
        Err(e) => outcome::<()>(Err(e)),
    }
}

fn ctime_ns(p: &Path) -> i128 {
    let m = std::fs::symlink_metadata(p).unwrap();
    m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
}

/// Lets a clock tick pass, so that a time that moves is seen to move.
fn tick() {
    std::thread::sleep(Duration::from_millis(15));
}

type Case = (
    &'static str,
    fn(&Path) -> Vec<String>,
    &'static [&'static str],
);

/// The table: a name, the calls, and what a local file system answers.
const CASES: &[Case] = &[
    (
        "symlink, readlink, lstat and stat",
        |d| {
            let l = d.join("l");
            vec![
                outcome(std::os::unix::fs::symlink("t", &l)),
                kind(&l),
                std::fs::read_link(&l)
                    .map_or_else(|e| outcome::<()>(Err(e)), |t| t.display().to_string()),
                outcome(std::fs::metadata(&l)),
                outcome(std::fs::write(d.join("t"), b"x")),
                std::fs::read(&l)
                    .map_or_else(|e| outcome::<()>(Err(e)), |b| format!("{} bytes", b.len())),
                outcome(std::os::unix::fs::symlink("u", &l)),
            ]
        },
        &["ok", "symlink", "t", "ENOENT", "ok", "1 bytes", "EEXIST"],
    ),
    (
        "O_NOFOLLOW and symlink loops",
        |d| {
            std::os::unix::fs::symlink("b", d.join("a")).unwrap();
            std::os::unix::fs::symlink("a", d.join("b")).unwrap();
            let nofollow = unsafe {
                libc::open(
                    cpath(&d.join("a")).as_ptr(),
                    libc::O_RDONLY | libc::O_NOFOLLOW,
                )
            };
            let nofollow = if nofollow >= 0 {
                unsafe { libc::close(nofollow) };
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
            vec![outcome(std::fs::File::open(d.join("a"))), outcome(nofollow)]
        },
        &["ELOOP", "ELOOP"],
    ),
    (
        "hard link to a symlink, lchown",
        |d| {
            std::os::unix::fs::symlink("nowhere", d.join("l")).unwrap();
            let link = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    cpath(&d.join("l")).as_ptr(),
                    libc::AT_FDCWD,
                    cpath(&d.join("l2")).as_ptr(),
                    0,
                )
            };
            let lchown = unsafe { libc::lchown(cpath(&d.join("l")).as_ptr(), 1, 2) };
            let m = std::fs::symlink_metadata(d.join("l2")).unwrap();
            vec![
                outcome(errno(link)),
                outcome(errno(lchown)),
                format!("nlink {} uid {} gid {}", m.nlink(), m.uid(), m.gid()),
            ]
        },
        &["ok", "ok", "nlink 2 uid 1 gid 2"],
    ),
    (
        "mkfifo, open non-blocking, EEXIST",
        |d| {
            let p = d.join("p");
            let mk = unsafe { libc::mkfifo(cpath(&p).as_ptr(), 0o640) };
            let fd = unsafe { libc::open(cpath(&p).as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
            let opened = fd >= 0;
            if opened {
                unsafe { libc::close(fd) };
            }
            let again = unsafe { libc::mkfifo(cpath(&p).as_ptr(), 0o640) };
            let m = std::fs::symlink_metadata(&p).unwrap();
            vec![
                outcome(errno(mk)),
                kind(&p),
                format!("opened {opened}"),
                outcome(errno(again)),
                format!("{:o}", m.permissions().mode() & 0o7777),
            ]
        },
        &["ok", "fifo", "opened true", "EEXIST", "640"],
    ),
    (
        "device nodes and a unix socket",
        |d| {
            let c = d.join("c");
            let mk = unsafe {
                libc::mknod(
                    cpath(&c).as_ptr(),
                    libc::S_IFCHR | 0o600,
                    libc::makedev(1, 3),
                )
            };
            let b = d.join("b");
            let mkb = unsafe {
                libc::mknod(
                    cpath(&b).as_ptr(),
                    libc::S_IFBLK | 0o600,
                    libc::makedev(7, 0),
                )
            };
            let s = d.join("s");
            let bound = std::os::unix::net::UnixListener::bind(&s);
            let rdev = std::fs::symlink_metadata(&c).map(|m| m.rdev()).unwrap_or(0);
            vec![
                outcome(errno(mk)),
                kind(&c),
                format!("rdev {}:{}", libc::major(rdev), libc::minor(rdev)),
                outcome(errno(mkb)),
                kind(&b),
                outcome(bound.map(drop)),
                kind(&s),
            ]
        },
        &["ok", "char", "rdev 1:3", "ok", "block", "ok", "socket"],
    ),
    (
        "names longer than NAME_MAX",
        |d| {
            let long = d.join("n".repeat(256));
            std::fs::write(d.join("f"), b"x").unwrap();
            vec![
                outcome(std::fs::metadata(&long)),
                outcome(std::fs::remove_file(&long)),
                outcome(std::fs::remove_dir(&long)),
                outcome(std::fs::create_dir(&long)),
                outcome(std::fs::rename(d.join("f"), &long)),
                outcome(std::fs::hard_link(d.join("f"), &long)),
                outcome(std::os::unix::fs::symlink("t", &long)),
                outcome(errno(unsafe { libc::mkfifo(cpath(&long).as_ptr(), 0o600) })),
                outcome(std::fs::create_dir(d.join("n".repeat(255)))),
            ]
        },
        &[
            "ENAMETOOLONG",
            "ENAMETOOLONG",
            "ENAMETOOLONG",
            "ENAMETOOLONG",
            "ENAMETOOLONG",
            "ENAMETOOLONG",
            "ENAMETOOLONG",
            "ENAMETOOLONG",
            "ok",
        ],
    ),
    (
        "ENOTDIR and EISDIR",
        |d| {
            std::fs::write(d.join("f"), b"x").unwrap();
            std::fs::create_dir(d.join("dir")).unwrap();
            vec![
                outcome(std::fs::metadata(d.join("f/x"))),
                outcome(std::fs::create_dir(d.join("f/x"))),
                outcome(std::fs::remove_file(d.join("dir"))),
                outcome(std::fs::remove_dir(d.join("f"))),
                outcome(std::fs::rename(d.join("dir"), d.join("f"))),
                outcome(std::fs::rename(d.join("f"), d.join("dir"))),
            ]
        },
        &[
            "ENOTDIR", "ENOTDIR", "EISDIR", "ENOTDIR", "ENOTDIR", "EISDIR",
        ],
    ),
    (
        "ctime moves with chmod, link, unlink and rename",
        |d| {
            let f = d.join("f");
            std::fs::write(&f, b"x").unwrap();
            let mut out = Vec::new();
            let mut last = ctime_ns(&f);
            let mut step = |what: &str, act: &dyn Fn()| {
                tick();
                act();
                let g = d.join("g");
                let now = ctime_ns(if g.exists() { &g } else { &f });
                out.push(format!(
                    "{what} {}",
                    if now > last { "moved" } else { "stayed" }
                ));
                last = now;
            };
            step("chmod", &|| {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap()
            });
            step("link", &|| std::fs::hard_link(&f, d.join("h")).unwrap());
            step("unlink", &|| std::fs::remove_file(d.join("h")).unwrap());
            step("rename", &|| std::fs::rename(&f, d.join("g")).unwrap());
            out
        },
        &["chmod moved", "link moved", "unlink moved", "rename moved"],
    ),
    (
        "utimensat on a directory and a symlink",
        |d| {
            let dir = d.join("dir");
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::fs::symlink("dir", d.join("l")).unwrap();
            let t = [
                libc::timespec {
                    tv_sec: 1_000_000,
                    tv_nsec: 500,
                },
                libc::timespec {
                    tv_sec: 2_000_000,
                    tv_nsec: 700,
                },
            ];
            let on_dir =
                unsafe { libc::utimensat(libc::AT_FDCWD, cpath(&dir).as_ptr(), t.as_ptr(), 0) };
            let on_link = unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    cpath(&d.join("l")).as_ptr(),
                    t.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            let md = std::fs::metadata(&dir).unwrap();
            let ml = std::fs::symlink_metadata(d.join("l")).unwrap();
            vec![
                outcome(errno(on_dir)),
                format!(
                    "{}.{} {}.{}",
                    md.atime(),
                    md.atime_nsec(),
                    md.mtime(),
                    md.mtime_nsec()
                ),
                outcome(errno(on_link)),
                format!("{} {}", ml.atime(), ml.mtime()),
            ]
        },
        &["ok", "1000000.500 2000000.700", "ok", "1000000 2000000"],
    ),
    (
        "renameat2 RENAME_EXCHANGE and RENAME_NOREPLACE",
        |d| {
            std::fs::write(d.join("a"), b"aa").unwrap();
            std::fs::create_dir(d.join("b")).unwrap();
            let ex = |flags| unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    cpath(&d.join("a")).as_ptr(),
                    libc::AT_FDCWD,
                    cpath(&d.join("b")).as_ptr(),
                    flags,
                )
            };
            let exchanged = ex(libc::RENAME_EXCHANGE);
            let kinds = format!("a {} b {}", kind(&d.join("a")), kind(&d.join("b")));
            let noreplace = ex(libc::RENAME_NOREPLACE);
            vec![outcome(errno(exchanged)), kinds, outcome(errno(noreplace))]
        },
        &["ok", "a dir b file", "EEXIST"],
    ),
    (
        "fallocate punch, zero range, keep size",
        |d| {
            use std::io::Write;
            use std::os::fd::AsRawFd;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(d.join("f"))
                .unwrap();
            f.write_all(&[7u8; 16384]).unwrap();
            let fd = f.as_raw_fd();
            let punch = unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    4096,
                    4096,
                )
            };
            let zero = unsafe { libc::fallocate(fd, libc::FALLOC_FL_ZERO_RANGE, 12288, 8192) };
            let keep = unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20) };
            drop(f);
            let data = std::fs::read(d.join("f")).unwrap();
            let zeros = |r: std::ops::Range<usize>| data[r].iter().all(|b| *b == 0);
            vec![
                outcome(errno(punch)),
                outcome(errno(zero)),
                outcome(errno(keep)),
                format!(
                    "len {} punched {} zeroed {} kept {}",
                    data.len(),
                    zeros(4096..8192),
                    zeros(12288..20480),
                    data[..4096].iter().all(|b| *b == 7)
                ),
            ]
        },
        &[
            "ok",
            "ok",
            "ok",
            "len 20480 punched true zeroed true kept true",
        ],
    ),
    (
        "chmod with set-ID bits and chown as root",
        |d| {
            let f = d.join("f");
            std::fs::write(&f, b"x").unwrap();
            let chmod = std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6755));
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
            let chown = std::os::unix::fs::chown(&f, Some(65534), Some(65534));
            let m = std::fs::metadata(&f).unwrap();
            vec![
                outcome(chmod),
                format!("{mode:o}"),
                outcome(chown),
                format!("{} {}", m.uid(), m.gid()),
            ]
        },
        &["ok", "6755", "ok", "65534 65534"],
    ),
];

fn run(root: &Path) -> Vec<(String, Vec<String>)> {
    CASES
        .iter()
        .enumerate()
        .map(|(i, (name, case, _))| {
            let d = root.join(format!("case{i}"));
            std::fs::create_dir(&d).unwrap();
            (name.to_string(), case(&d))
        })
        .collect()
}

/// The table run on a plain local directory (checking the table) and on a statefs mount: both
/// observe what the table expects.
#[test]
fn the_mount_answers_as_a_local_file_system() {
    let dirs = Dirs::new();
    let local = dirs.root.path().join("plain");
    std::fs::create_dir(&local).unwrap();
    let expected: Vec<Vec<String>> = CASES
        .iter()
        .map(|(_, _, e)| e.iter().map(|s| s.to_string()).collect())
        .collect();
    let on_local = run(&local);
    for ((name, got), want) in on_local.iter().zip(&expected) {
        assert_eq!(
            got, want,
            "the table is wrong about a local file system: {name}"
        );
    }
    let mount = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let on_mount = run(&dirs.mnt);
    let mut failed = Vec::new();
    for ((name, got), want) in on_mount.iter().zip(&expected) {
        if got != want {
            failed.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    drop(mount);
    assert!(
        failed.is_empty(),
        "{} of {} cases differ:\n{}",
        failed.len(),
        CASES.len(),
        failed.join("\n")
    );
}

/// Special files and symlinks made through the mount are there, with their types, after an
/// unmount and a mount of the same local dir.
#[test]
fn special_files_survive_a_remount() {
    let dirs = Dirs::new();
    {
        let _m = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
        std::os::unix::fs::symlink("target", dirs.mnt.join("l")).unwrap();
        assert_eq!(
            unsafe { libc::mkfifo(cpath(&dirs.mnt.join("p")).as_ptr(), 0o600) },
            0
        );
    }
    let _m = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    assert_eq!(kind(&dirs.mnt.join("l")), "symlink");
    assert_eq!(
        std::fs::read_link(dirs.mnt.join("l")).unwrap(),
        Path::new("target")
    );
    assert_eq!(kind(&dirs.mnt.join("p")), "fifo");
}

/// An unmount returns only once the core is gone and its local and cache dirs are free, even when
/// background work of the core (its workers hold it weakly and take it for a request) still holds
/// it at the unmount: a mount of the same dirs right after succeeds. Before, the last reference
/// could drop on a worker thread after the unmount returned, and the next mount found the local
/// dir locked by its own process (`special_files_survive_a_remount` failed that way in CI).
#[test]
fn a_remount_right_after_an_unmount_finds_the_dirs_free() {
    let dirs = Dirs::new();
    let m = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let weak = std::sync::Arc::downgrade(m.core());
    let (taken, wait) = std::sync::mpsc::channel();
    // What a worker does: take the core for a request that outlasts the unmount.
    let worker = std::thread::spawn(move || {
        let core = weak.upgrade().expect("mounted");
        taken.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(core);
    });
    wait.recv().unwrap();
    drop(m);
    let again = MountHandle::mount(&dirs.config(), &dirs.mnt);
    assert!(again.is_ok(), "{:?}", again.err());
    worker.join().unwrap();
}

/// What a user copies a database directory with: `cp -a` and `tar` onto the mount and back keep
/// file types, symlinks, hard links, modes and modification times.
#[test]
fn cp_a_and_tar_keep_the_tree() {
    use std::process::Command;
    let dirs = Dirs::new();
    let src = dirs.root.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("000001.sst"), vec![5u8; 100_000]).unwrap();
    std::fs::write(src.join("CURRENT"), b"MANIFEST-000002\n").unwrap();
    std::fs::hard_link(src.join("CURRENT"), src.join("sub/current-link")).unwrap();
    std::os::unix::fs::symlink("../000001.sst", src.join("sub/sst")).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(cpath(&src.join("pipe")).as_ptr(), 0o600) },
        0
    );
    std::fs::set_permissions(src.join("CURRENT"), std::fs::Permissions::from_mode(0o640)).unwrap();
    // One line per entry: path, type, mode, size, mtime, link target, link count. tar keeps whole
    // seconds only: `seconds` compares those.
    let listing_at = |dir: &Path, seconds: bool| {
        let out = Command::new("find")
            .args([".", "-printf", "%p %y %m %s %T@ %l %n\n"])
            .current_dir(dir)
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            // A directory's size and link count are its file system's own.
            .map(|l| {
                let mut f: Vec<String> = l.split(' ').map(str::to_string).collect();
                if seconds {
                    f[4] = f[4].split('.').next().unwrap().to_string();
                }
                if f[1] == "d" {
                    format!("{} d {}", f[0], f[2])
                } else {
                    f.join(" ")
                }
            })
            .collect();
        lines.sort();
        lines
    };
    let listing = |dir: &Path| listing_at(dir, false);
    let _m = MountHandle::mount(&dirs.config(), &dirs.mnt).unwrap();
    let run = |cmd: &str| {
        let s = Command::new("sh").args(["-c", cmd]).status().unwrap();
        assert!(s.success(), "{cmd}");
    };
    let (mnt, root) = (dirs.mnt.display(), dirs.root.path().display());
    run(&format!("cp -a {root}/src {mnt}/copy"));
    assert_eq!(
        listing(&dirs.mnt.join("copy")),
        listing(&src),
        "cp -a onto the mount"
    );
    run(&format!(
        "tar -C {mnt}/copy -cf {root}/t.tar . && mkdir {root}/back && tar -C {root}/back -xpf {root}/t.tar"
    ));
    assert_eq!(
        listing_at(&dirs.root.path().join("back"), true),
        listing_at(&src, true),
        "tar off the mount"
    );
    run(&format!(
        "mkdir {mnt}/untar && tar -C {mnt}/untar -xpf {root}/t.tar"
    ));
    assert_eq!(
        listing_at(&dirs.mnt.join("untar"), true),
        listing_at(&src, true),
        "tar onto the mount"
    );
}
