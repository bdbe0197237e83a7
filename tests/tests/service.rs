//! Running statefs as operators run mounts: `mount -t fuse.statefs`, an fstab line, `statefs mount
//! --daemon`, and the systemd unit in contrib/ (readiness, clean stop, restart after kill -9).
//! systemd is not PID 1 on the test machines, so the unit's own ExecStart line is run here the way
//! systemd runs it: with a NOTIFY_SOCKET, SIGTERM to stop, the same line again after a crash.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use statefs_tests::{Dirs, is_mounted, statefs_bin};

/// Unmounts (lazily, so a dead mount goes too) and kills a daemon on drop: a failed assertion
/// leaves nothing behind.
struct DaemonGuard {
    mnt: PathBuf,
    pids: Vec<u32>,
}

impl DaemonGuard {
    fn new(mnt: &Path) -> DaemonGuard {
        DaemonGuard {
            mnt: mnt.to_path_buf(),
            pids: Vec::new(),
        }
    }

    /// Unmounts as an operator does (`umount`) and waits for the daemon to exit.
    fn umount(&mut self) {
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        assert!(out.status.success(), "umount: {}", text(&out.stderr));
        for pid in self.pids.drain(..) {
            wait_gone(pid);
        }
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        for pid in &self.pids {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The mount at `mnt` is dead: its process was killed.
fn assert_dead(mnt: &Path) {
    // An open, not a stat: the kernel may answer a stat from its attribute cache. ENOTCONN, or
    // ECONNABORTED for a request that met the connection going away.
    let dead = std::fs::read_dir(mnt).unwrap_err();
    assert!(
        matches!(
            dead.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "{dead}"
    );
}

/// The command succeeded; the daemon pid it printed.
fn started(out: &Output, what: &str) -> u32 {
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    daemon_pid(out)
}

/// The command failed and said `why`.
fn assert_failed_with(out: &Output, why: &str) {
    assert!(!out.status.success(), "succeeded: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
}

/// The daemon pid a successful `--daemon` start printed.
fn daemon_pid(out: &Output) -> u32 {
    let e = text(&out.stderr);
    let at = e
        .find("daemon pid ")
        .unwrap_or_else(|| panic!("no pid in {e:?}"));
    e[at + 11..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        // Reaped by init once it exits (it runs in a session of its own); a zombie counts as gone.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split(' ').nth(2) == Some("Z") {
            return;
        }
        assert!(Instant::now() < deadline, "daemon {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Installs `mount.fuse.statefs` where mount(8) looks for helpers (a symlink to the statefs
/// binary, as an installation makes it), and removes it again on drop if it was not there.
struct HelperInstalled {
    path: PathBuf,
    was: Option<PathBuf>,
}

impl HelperInstalled {
    fn new() -> HelperInstalled {
        let path = PathBuf::from("/usr/sbin/mount.fuse.statefs");
        let was = std::fs::read_link(&path).ok();
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(statefs_bin(), &path).unwrap();
        HelperInstalled { path, was }
    }
}

impl Drop for HelperInstalled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(was) = &self.was {
            let _ = std::os::unix::fs::symlink(was, &self.path);
        }
    }
}

#[test]
fn mount_t_and_an_fstab_line_mount_through_the_helper() {
    let _helper = HelperInstalled::new();
    let dirs = Dirs::new();
    let mut guard = DaemonGuard::new(&dirs.mnt);
    let opts = format!(
        "local_dir={},cache_dir={},_netdev,nofail,x-systemd.automount,x-systemd.mount-timeout=30,statefs.cache.warm.memory=0",
        dirs.local.display(),
        dirs.cache.display()
    );
    let mount_t = |opts: &str| {
        Command::new("mount")
            .args(["-t", "fuse.statefs", &dirs.remote_url()])
            .arg(&dirs.mnt)
            .args(["-o", opts])
            .output()
            .unwrap()
    };
    guard.pids.push(started(&mount_t(&opts), "mount -t"));
    // Live when mount(8) returns.
    std::fs::write(dirs.mnt.join("f"), b"through mount -t").unwrap();
    // Mounting it again (`mount -a` run twice) is done already, and starts no second daemon.
    let again = mount_t(&opts);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("mounted already"),
        "{}",
        text(&again.stderr)
    );
    guard.umount();
    assert!(!is_mounted(&dirs.mnt));

    // The same as an fstab line (an fstab of the test's own: mount -T).
    let fstab = dirs.root.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# statefs\n{} {} fuse.statefs {opts} 0 0\n",
            dirs.remote_url(),
            dirs.mnt.display()
        ),
    )
    .unwrap();
    let mount_fstab = || {
        Command::new("mount")
            .arg("-T")
            .arg(&fstab)
            .arg(&dirs.mnt)
            .output()
            .unwrap()
    };
    let killed = started(&mount_fstab(), "mount from fstab");
    guard.pids.push(killed);
    assert_eq!(
        std::fs::read(dirs.mnt.join("f")).unwrap(),
        b"through mount -t"
    );
    // A crash of the daemon leaves a dead mount; mounting the fstab line again clears it.
    unsafe { libc::kill(killed as i32, libc::SIGKILL) };
    wait_gone(killed);
    assert_dead(&dirs.mnt);
    guard
        .pids
        .push(started(&mount_fstab(), "remount after kill -9"));
    assert_eq!(
        std::fs::read(dirs.mnt.join("f")).unwrap(),
        b"through mount -t"
    );
    guard.umount();

    // A bad option fails the mount with its name, and mounts nothing.
    let out = mount_t(&format!("{opts},cache_sise=1g"));
    assert_failed_with(&out, "unknown mount option \"cache_sise=1g\"");
    assert!(!is_mounted(&dirs.mnt));
}

#[test]
fn the_daemon_returns_once_live_and_fails_loudly() {
    let dirs = Dirs::new();
    let mut guard = DaemonGuard::new(&dirs.mnt);
    let daemon = |mnt: &Path, remote: &str| {
        let mut args = dirs.cli_args();
        args[1] = remote.to_string();
        Command::new(statefs_bin())
            .args(["mount", "--daemon"])
            .args(args)
            .arg(mnt)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    guard
        .pids
        .push(started(&daemon(&dirs.mnt, &dirs.remote_url()), "--daemon"));
    std::fs::write(dirs.mnt.join("f"), b"x").unwrap();
    assert!(
        std::fs::read_to_string(dirs.local.join("statefs.log"))
            .unwrap()
            .contains("mounted"),
        "the daemon logs to <local-dir>/statefs.log"
    );
    guard.umount();

    // Failures that only the daemon meets (the mount point, the store) come back to the caller.
    std::fs::write(dirs.mnt.join("not-empty"), b"").unwrap();
    let out = daemon(&dirs.mnt, &dirs.remote_url());
    assert_failed_with(&out, "is not empty");
    std::fs::remove_file(dirs.mnt.join("not-empty")).unwrap();
    let out = daemon(&dirs.mnt, "gopher://x");
    assert_failed_with(&out, "unsupported scheme");
    assert!(!is_mounted(&dirs.mnt));
}

/// The unit's `KEY=` line.
fn unit_line(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_string()
}

/// Runs the unit's ExecStart as systemd does, with `%i` = `name`, the installed paths replaced by
/// the test's, and a NOTIFY_SOCKET.
fn start_unit(unit: &str, config: &Path, mnt: &Path, notify: &Path, log: &Path) -> Child {
    let exec = unit_line(unit, "ExecStart")
        .replace(
            "/usr/local/bin/statefs",
            &statefs_bin().display().to_string(),
        )
        .replace("/etc/statefs/%i.yaml", &config.display().to_string())
        .replace("/srv/statefs/%i", &mnt.display().to_string());
    assert!(!exec.contains('%'), "unexpanded specifier in {exec}");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    Command::new(argv[0])
        .args(&argv[1..])
        .env("NOTIFY_SOCKET", notify)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap()
}

/// The next sd_notify message, within `timeout`.
fn next_notice(sock: &UnixDatagram, timeout: Duration) -> String {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).expect("no sd_notify message in time");
    text(&buf[..n])
}

#[test]
fn the_unit_reports_ready_stops_cleanly_and_restarts_after_kill_9() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/statefs@.service"),
    )
    .unwrap();
    assert_eq!(unit_line(&unit, "Type"), "notify");
    assert_eq!(unit_line(&unit, "Restart"), "on-failure");
    assert_eq!(unit_line(&unit, "KillSignal"), "SIGTERM");
    let dirs = Dirs::new();
    let mut guard = DaemonGuard::new(&dirs.mnt);
    let config = dirs.root.path().join("unit.yaml");
    std::fs::write(
        &config,
        format!(
            "state.backend.forst.primary-dir: {}\nstate.backend.forst.local-dir: {}\nstate.backend.forst.cache.dir: {}\n",
            dirs.remote_url(),
            dirs.local.display(),
            dirs.cache.display()
        ),
    )
    .unwrap();
    let notify_path = dirs.root.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let log = dirs.root.path().join("journal");

    let mut first = start_unit(&unit, &config, &dirs.mnt, &notify_path, &log);
    guard.pids.push(first.id());
    let ready = next_notice(&notify, Duration::from_secs(60));
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", first.id())),
        "{ready}"
    );
    // Ready means usable.
    std::fs::write(dirs.mnt.join("kept"), b"acknowledged before the crash").unwrap();
    std::fs::File::open(dirs.mnt.join("kept"))
        .unwrap()
        .sync_all()
        .unwrap();

    // Crash: kill -9 leaves a dead mount; Restart=on-failure runs ExecStart again.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_dead(&dirs.mnt);
    let mut second = start_unit(&unit, &config, &dirs.mnt, &notify_path, &log);
    guard.pids.push(second.id());
    let ready = next_notice(&notify, Duration::from_secs(60));
    assert!(
        ready.starts_with("READY=1\n"),
        "{ready}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        std::fs::read(dirs.mnt.join("kept")).unwrap(),
        b"acknowledged before the crash"
    );

    // systemctl stop: SIGTERM, a clean unmount, exit 0.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    assert!(next_notice(&notify, Duration::from_secs(30)).starts_with("STOPPING=1"));
    let status = second.wait().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(!is_mounted(&dirs.mnt));
    guard.pids.clear();
}

#[test]
fn the_unit_file_passes_systemd_analyze() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: skipped");
        return;
    }
    // Verified as installed, with the binary where the test's is.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/statefs@.service"),
    )
    .unwrap()
    .replace(
        "/usr/local/bin/statefs",
        &statefs_bin().display().to_string(),
    );
    std::fs::write(dir.path().join("statefs@.service"), unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./statefs@test.service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).trim().is_empty(),
        "systemd-analyze: {}",
        text(&out.stderr)
    );
}
