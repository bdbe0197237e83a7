//! Running as a service: readiness reports (systemd's `sd_notify` protocol and the `--daemon`
//! parent's pipe), detaching (`statefs mount --daemon`) and clearing a dead mount left by a
//! killed daemon.
//!
//! Invariants:
//! - Ready is reported only once the mount answers: a `statfs` of the mount point returned from
//!   our own filesystem (FUSE's magic number), so whoever waits on readiness (systemd, mount(8),
//!   the `--daemon` parent) may use the mount at once.
//! - The `--daemon` parent exits 0 only after the child reported ready; it exits non-zero with
//!   the child's error when the child fails, dies, or is not live within the timeout (then it is
//!   asked to stop with SIGTERM, which unmounts whatever it mounted).
//! - A dead mount (ENOTCONN: its process died) is only ever detached, never a live one: a live
//!   mount at the mount point is refused by the mount itself.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// The environment variable that hands the `--daemon` child the write end of its readiness pipe.
const READY_FD_ENV: &str = "STATEFS_READY_FD";

/// Where readiness and failure are reported: the `--daemon` parent's pipe and/or systemd.
pub struct Readiness {
    pipe: Option<std::fs::File>,
    systemd: Option<std::os::unix::net::UnixDatagram>,
}

impl Readiness {
    /// What this process was given: `STATEFS_READY_FD` and `NOTIFY_SOCKET` (both removed from
    /// the environment so that nothing started later inherits them).
    pub fn from_env() -> Readiness {
        let pipe = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            // SAFETY: F_GETFD only asks whether the descriptor is open.
            .filter(|fd| *fd > 2 && unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0)
            // SAFETY: the parent passed this descriptor for us alone; it is open (checked above)
            // and nothing else in this process owns it.
            .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        let systemd = std::env::var_os("NOTIFY_SOCKET").and_then(|p| notify_socket(&p).ok());
        // SAFETY: called from main before any thread is started.
        unsafe {
            std::env::remove_var(READY_FD_ENV);
            std::env::remove_var("NOTIFY_SOCKET");
        }
        Readiness { pipe, systemd }
    }

    /// Reports that the mount is live.
    pub fn ready(&mut self, status: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = writeln!(p, "ready");
        }
        self.systemd_send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// Reports that the mount will not come up (before ready) or is stopping (after).
    pub fn failed(&mut self, why: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = writeln!(p, "error {}", why.replace('\n', " "));
        }
        self.systemd_send(&format!("STATUS=failed: {}", why.replace('\n', " ")));
    }

    pub fn stopping(&self) {
        self.systemd_send("STOPPING=1\nSTATUS=unmounting");
    }

    fn systemd_send(&self, msg: &str) {
        if let Some(s) = &self.systemd
            && let Err(e) = s.send(msg.as_bytes())
        {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

/// A datagram socket connected to systemd's `NOTIFY_SOCKET` (a path, or `@name` for an abstract
/// socket).
fn notify_socket(path: &std::ffi::OsStr) -> std::io::Result<std::os::unix::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(Path::new(path))?,
    };
    let s = UnixDatagram::unbound()?;
    s.connect_addr(&addr)?;
    Ok(s)
}

/// Waits until `mountpoint` is answered by a FUSE filesystem (ours: the session serving it runs
/// on another thread), for at most `timeout`.
pub fn wait_until_live(mountpoint: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match nix::sys::statfs::statfs(mountpoint) {
            Ok(s) if s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(_) => bail!("{} is not a FUSE mount", mountpoint.display()),
            Err(e) => bail!("{}: {e}", mountpoint.display()),
        }
    }
}

/// Detaches a dead FUSE mount at `mountpoint` (its process was killed: every access fails with
/// ENOTCONN), so that a restarted daemon can mount there again. A live mount is left alone.
pub fn clear_dead_mount(mountpoint: &Path) -> anyhow::Result<()> {
    if statefs::mount::is_dead_mount(mountpoint) {
        nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH).with_context(|| {
            format!(
                "clearing the dead mount at {} (left by a killed statefs)",
                mountpoint.display()
            )
        })?;
        tracing::warn!(mountpoint = %mountpoint.display(), "cleared a dead mount left by a killed statefs");
    }
    Ok(())
}

/// What `statefs mount --daemon` needs to start its child.
pub struct Detach {
    /// The child's arguments: this command line without `--daemon`.
    pub args: Vec<std::ffi::OsString>,
    /// Where the child's log goes.
    pub log_file: PathBuf,
    /// How long the mount may take to come up.
    pub timeout: Duration,
    pub mountpoint: PathBuf,
}

/// Starts the mount in a child process of its own session, logging to `log_file`, and returns
/// once it is live (its pid), or fails with why it is not.
pub fn detach(d: &Detach) -> anyhow::Result<u32> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let log = open_log(&d.log_file)?;
    let exe = std::env::current_exe().context("finding the statefs executable")?;
    let wfd = write_end.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&d.args)
        .env(READY_FD_ENV, wfd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec (setsid, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // Keep the pipe's write end open across exec, for the child alone.
            if libc::fcntl(wfd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the statefs daemon")?;
    drop(write_end);
    let pid = child.id();
    let shown_log = d.log_file.display();
    match read_report(read_end, d.timeout) {
        Report::Ready => Ok(pid),
        Report::Error(why) => {
            let _ = child.wait();
            Err(anyhow!("{why} (log: {shown_log})"))
        }
        Report::Closed => {
            let status = child.wait()?;
            Err(anyhow!(
                "the statefs daemon exited ({status}) before {} was mounted (log: {shown_log})",
                d.mountpoint.display()
            ))
        }
        Report::Timeout => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            Err(anyhow!(
                "{} was not mounted within {:?}; the daemon was stopped (log: {shown_log})",
                d.mountpoint.display(),
                d.timeout
            ))
        }
    }
}

enum Report {
    Ready,
    Error(String),
    /// The child closed the pipe without a word: it died.
    Closed,
    Timeout,
}

/// The child's one line on the readiness pipe.
fn read_report(fd: OwnedFd, timeout: Duration) -> Report {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + timeout;
    let mut file = std::fs::File::from(fd);
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Report::Timeout;
        }
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return Report::Closed,
        }
        let mut buf = [0u8; 512];
        match file.read(&mut buf) {
            Ok(0) | Err(_) => return Report::Closed,
            Ok(n) => line.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            let text = String::from_utf8_lossy(&line[..end]).to_string();
            return match text.strip_prefix("error ") {
                Some(why) => Report::Error(why.to_string()),
                None if text == "ready" => Report::Ready,
                None => Report::Error(format!("unexpected report from the daemon: {text:?}")),
            };
        }
    }
}

/// The daemon's log, appended to, readable by its user alone.
pub fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the log's directory {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_parent_reads_ready_errors_and_deaths() {
        type Case = (&'static [u8], fn(&Report) -> bool);
        let cases: [Case; 3] = [
            (b"ready\n", |r| matches!(r, Report::Ready)),
            (
                b"error bad --remote URL\n",
                |r| matches!(r, Report::Error(w) if w == "bad --remote URL"),
            ),
            (b"", |r| matches!(r, Report::Closed)),
        ];
        for (said, want) in cases {
            let (r, w) = nix::unistd::pipe().unwrap();
            let mut w = std::fs::File::from(w);
            w.write_all(said).unwrap();
            drop(w);
            let got = read_report(r, Duration::from_secs(5));
            assert!(want(&got), "{:?}", String::from_utf8_lossy(said));
        }
        // A child that says nothing and keeps the pipe open is given up on.
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(matches!(
            read_report(r, Duration::from_millis(50)),
            Report::Timeout
        ));
    }

    #[test]
    fn readiness_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let mut r = Readiness {
            pipe: None,
            systemd: Some(notify_socket(path.as_os_str()).unwrap()),
        };
        r.ready("mounted");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            msg.starts_with("READY=1\nSTATUS=mounted\nMAINPID="),
            "{msg}"
        );
    }
}
