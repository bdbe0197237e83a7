//! Helpers for mount-level tests: scratch directories, the `statefs` binary, mounts made by a child
//! process (unmounted and killed on drop), and a loopback S3 server.
//!
//! Every guard here cleans up on drop, on success and on panic alike: no test leaves a mount or a
//! process behind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod crash_loop;
pub mod soak;

/// Scratch directories of one test: a `file://` remote, local dir, cache dir and an empty mount point.
pub struct Dirs {
    pub root: tempfile::TempDir,
    pub remote: PathBuf,
    pub local: PathBuf,
    pub cache: PathBuf,
    pub mnt: PathBuf,
}

impl Dirs {
    pub fn new() -> Dirs {
        // Under the target dir rather than /tmp: /tmp may be a small tmpfs, and these tests write
        // hundreds of megabytes.
        let base = std::env::var_os("STATEFS_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).unwrap();
        let root = tempfile::Builder::new()
            .prefix("statefs-test-")
            .tempdir_in(base)
            .unwrap();
        let p = root.path().to_path_buf();
        let d = Dirs {
            remote: p.join("remote"),
            local: p.join("local"),
            cache: p.join("cache"),
            mnt: p.join("mnt"),
            root,
        };
        std::fs::create_dir_all(&d.mnt).unwrap();
        d
    }

    pub fn remote_url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// `statefs mount` arguments naming these directories (the mount point not included).
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--remote".into(),
            self.remote_url(),
            "--local-dir".into(),
            self.local.display().to_string(),
            "--cache-dir".into(),
            self.cache.display().to_string(),
        ]
    }

    pub fn config(&self) -> statefs::MountConfig {
        statefs::MountConfig::new(self.remote_url(), &self.local, &self.cache)
    }

    /// SST objects under `data/` of the file remote (`data/<mount-id>/<uuid>`, or `data/<uuid>`
    /// of older versions): (key relative to `data/`, size).
    pub fn remote_objects(&self) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        let mut dirs = vec![(self.remote.join("data"), String::new())];
        while let Some((dir, prefix)) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.map(|e| e.unwrap()) {
                let name = format!("{prefix}{}", e.file_name().to_string_lossy());
                let md = e.metadata().unwrap();
                if md.is_dir() {
                    dirs.push((e.path(), format!("{name}/")));
                } else if !name.contains('#') {
                    // `<key>#<n>` files are uploads the local store is still writing.
                    v.push((name, md.len()));
                }
            }
        }
        v.sort();
        v
    }
}

impl Default for Dirs {
    fn default() -> Self {
        Self::new()
    }
}

/// Path of the `statefs` binary: `STATEFS_BIN` if set (scripts that built it), else built once
/// per test process with the same cargo.
pub fn statefs_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STATEFS_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "statefs-cli",
                "--bin",
                "statefs",
                "--manifest-path",
            ])
            .arg(&manifest)
            .status()
            .expect("running cargo build for the statefs binary");
        assert!(status.success(), "building the statefs binary failed");
        // Test executables live in <target>/<profile>/deps/, binaries in <target>/<profile>/.
        let exe = std::env::current_exe().unwrap();
        let mut dir = exe.parent().unwrap();
        if dir.ends_with("deps") {
            dir = dir.parent().unwrap();
        }
        let bin = dir.join("statefs");
        assert!(
            bin.exists(),
            "statefs binary not found at {}",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Resident memory of process `pid` (`VmRSS` of `/proc/<pid>/status`), in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Whether `path` is a mount point right now.
pub fn is_mounted(path: &Path) -> bool {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    statefs::mount::is_mounted(&abs)
}

/// A `statefs mount` child process. Drop unmounts (lazily, so a dead mount goes too) and reaps it.
pub struct CliMount {
    pub child: Option<Child>,
    pub mnt: PathBuf,
    pub stderr_path: PathBuf,
}

impl CliMount {
    /// Starts `statefs mount <args> <mnt>` and waits until the mount is live.
    pub fn start(args: &[String], mnt: &Path) -> CliMount {
        Self::start_with(args, mnt, |_| {})
    }

    /// As [`CliMount::start`], in a process limited to `n` open files (soft and hard), as under
    /// `ulimit -n n`.
    pub fn start_with_nofile(args: &[String], mnt: &Path, n: u64) -> CliMount {
        Self::start_with(args, mnt, |c| {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// As [`CliMount::start`], with the command adjusted first (environment, limits).
    pub fn start_with(
        args: &[String],
        mnt: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> CliMount {
        let stderr_path = mnt.with_extension("stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut command = Command::new(statefs_bin());
        command
            .arg("mount")
            .args(args)
            .arg(mnt)
            .stdout(Stdio::null())
            .stderr(stderr);
        configure(&mut command);
        let child = command.spawn().expect("spawning statefs mount");
        let mut m = CliMount {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(mnt) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("statefs mount exited with {status}: {}", m.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "mount did not come up: {}",
                m.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL the mount process: the crash case. The dead mount stays until [`unmount_dead`].
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Clean unmount: SIGTERM, then wait for the process to finish its shutdown.
    pub fn stop(mut self) -> String {
        self.stop_inner();
        self.stderr()
    }

    fn stop_inner(&mut self) {
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new(statefs_bin())
                .args(["unmount", "--lazy"])
                .arg(&self.mnt)
                .status();
        }
    }
}

impl Drop for CliMount {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Clears a dead mount left by a killed mount process.
pub fn unmount_dead(mnt: &Path) {
    let out = Command::new(statefs_bin())
        .arg("unmount")
        .arg(mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "statefs unmount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(mnt));
}

/// A loopback S3 server (moto), killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    /// Starts `moto_server` on a free loopback port and creates `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server not found: run scripts/setup.sh (pip install 'moto[server]')");
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let req = format!(
                    "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes()).unwrap();
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                assert!(resp.starts_with("HTTP/1.1 200"), "creating bucket: {resp}");
                return server;
            }
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store emulator on a free loopback port (Azurite), killed on drop.
pub struct Emulator {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Emulator {
    /// Starts `program args` (`{port}` and `{dir}` in an argument become the port and a scratch
    /// directory) and waits until it accepts connections.
    fn start(program: &str, args: &[&str], install_hint: &str) -> Emulator {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir.path().display().to_string())
            })
            .collect();
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}; {install_hint}"));
        let mut emulator = Emulator {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = emulator.child.try_wait() {
                panic!("{program} exited with {status}");
            }
            assert!(Instant::now() < deadline, "{program} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        emulator
    }

    /// Azurite's blob service, with `container` created (by Azure's own Python client: creating
    /// a container is not an object store call).
    pub fn azurite(container: &str) -> Emulator {
        let e = Emulator::start(
            "azurite-blob",
            &[
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "{port}",
                "--location",
                "{dir}",
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
            ],
            "run scripts/setup.sh (npm install -g azurite)",
        );
        let conn = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1;",
            e.port
        );
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys; from azure.storage.blob import BlobServiceClient as C; C.from_connection_string(sys.argv[1]).create_container(sys.argv[2])",
                &conn,
                container,
            ])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "creating container {container}: {} (scripts/setup.sh installs azure-storage-blob)",
            String::from_utf8_lossy(&out.stderr)
        );
        e
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RocksDB's block-based table magic number, stored in the last 8 bytes of every SST.
pub const SST_MAGIC: u64 = 0x88e241b785f4cff7;

/// Whether the file ends with the SST magic number.
pub fn looks_like_sst(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    data.len() >= 8 && u64::from_le_bytes(data[data.len() - 8..].try_into().unwrap()) == SST_MAGIC
}

/// Key `i` of the crash test.
pub fn crash_key(i: u64) -> Vec<u8> {
    format!("crash-{i:010}").into_bytes()
}

/// Value of key `i` of the crash test.
pub fn crash_value(i: u64) -> Vec<u8> {
    let mut v = format!("v{i}:").into_bytes();
    v.resize(200, b'a' + (i % 26) as u8);
    v
}

/// Keys acknowledged by the crash writer, from its progress file.
pub fn crash_progress(path: &Path) -> u64 {
    match std::fs::read(path) {
        Ok(b) if b.len() == 8 => u64::from_le_bytes(b.try_into().unwrap()),
        _ => 0,
    }
}

/// A seed from `arg` if given, else from the clock (printed by the caller, so a run replays).
pub fn seed_from(arg: Option<String>) -> u64 {
    arg.map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        },
        |a| a.parse().expect("a seed is a number"),
    )
}

/// Runs `sh -c script` as `nobody` (uid and gid 65534, no groups) through `setpriv`, in `dir`
/// when given: how the tests act as another local user.
pub fn as_nobody(dir: Option<&Path>, script: &str) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "sh",
        "-c",
        script,
    ]);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.output().expect("setpriv (util-linux)")
}
