//! What a local user who is not the mounting user can do to a mount (SECURITY.md): read none of
//! the bytes statefs keeps, publish nothing, exhaust nothing, stall nothing; and where a secret
//! given to a mount can be seen (nowhere).
//!
//! "Another user" is `nobody` (uid 65534), reached with `setpriv`; the tests run as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use statefs_tests::{CliMount, S3Server, statefs_bin, vm_rss_kib};

/// Runs `sh -c script` as `nobody`.
fn as_nobody(script: &str) -> Output {
    statefs_tests::as_nobody(None, script)
}

/// Scratch dirs that another user could reach if statefs let them: under /tmp, mode 0755 (the
/// suite's usual scratch root is under root's home, which nobody can enter at all, and would
/// prove nothing).
struct OpenDirs {
    root: PathBuf,
    remote: PathBuf,
    local: PathBuf,
    cache: PathBuf,
    mnt: PathBuf,
}

impl OpenDirs {
    fn new() -> OpenDirs {
        let root = std::env::temp_dir().join(format!("statefs-privacy-{}", uuid::Uuid::new_v4()));
        let d = OpenDirs {
            remote: root.join("remote"),
            local: root.join("local"),
            cache: root.join("cache"),
            mnt: root.join("mnt"),
            root,
        };
        // As a user would make them, with the usual umask: readable by all.
        for p in [&d.root, &d.local, &d.cache, &d.mnt] {
            std::fs::create_dir_all(p).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        d
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--remote".into(),
            format!("file://{}", self.remote.display()),
            "--local-dir".into(),
            self.local.display().to_string(),
            "--cache-dir".into(),
            self.cache.display().to_string(),
        ]
    }
}

impl Drop for OpenDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Every path under `dir` (not `dir` itself), as root sees them.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `statefs checkpoint <mnt> <dir>`: publishes `dir` through the mount's control socket.
fn publish(mnt: &Path, dir: &Path) -> Output {
    Command::new(statefs_bin())
        .arg("checkpoint")
        .arg(mnt)
        .arg(dir)
        .output()
        .unwrap()
}

/// Finding 1: the files of a 0600 file on the mount (its backing file, its object, the journal
/// naming it, the cache) are private to the mounting user, and so is everything else statefs
/// keeps. Checked as `nobody` for every file, and by mode for every file and directory.
#[test]
fn nothing_statefs_keeps_is_readable_by_another_user() {
    let d = OpenDirs::new();
    let probe = d.root.join("probe");
    std::fs::write(&probe, b"readable").unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mount = CliMount::start(&d.args(), &d.mnt);
    let db = d.mnt.join("db");
    std::fs::create_dir(&db).unwrap();
    let write = |name: &str, len: usize, perm: u32| {
        let p = db.join(name);
        std::fs::write(&p, vec![b'S'; len]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(perm)).unwrap();
        std::fs::File::open(&p).unwrap().sync_all().unwrap();
    };
    write("000001.sst", 3 << 20, 0o600);
    write("000002.sst", 1 << 20, 0o644);
    write("CURRENT", 16, 0o600);
    write("MANIFEST-000001", 4096, 0o600);
    let out = publish(&d.mnt, &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read back through the mount so the cache holds a copy too.
    let _ = std::fs::read(db.join("000001.sst")).unwrap();

    let mut paths = Vec::new();
    for root in [&d.local, &d.cache, &d.remote] {
        paths.push(root.clone());
        walk(root, &mut paths);
    }
    let files: Vec<&PathBuf> = paths.iter().filter(|p| !p.is_dir()).collect();
    assert!(
        files
            .iter()
            .any(|p| p.starts_with(&d.remote) && p.to_string_lossy().contains("/data/")),
        "no object written: {paths:?}"
    );
    for p in &paths {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{} is {:o}", p.display(), mode(p));
    }
    // As another user: the probe proves the scratch root is reachable; nothing statefs keeps is.
    let mut script = String::new();
    for p in files.iter().map(|p| p.as_path()).chain([probe.as_path()]) {
        script.push_str(&format!(
            "cat '{}' >/dev/null 2>&1 && echo '{}'\n",
            p.display(),
            p.display()
        ));
    }
    for dir in [&d.local, &d.cache, &d.remote] {
        script.push_str(&format!(
            "ls '{}' >/dev/null 2>&1 && echo '{}'\n",
            dir.display(),
            dir.display()
        ));
    }
    let out = as_nobody(&script);
    let readable = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        readable.trim(),
        probe.display().to_string(),
        "readable by nobody"
    );
    drop(mount);
}

/// Finding 2: the control socket refuses another user; a POST on the TCP endpoint reaches
/// nothing; an endless request does not grow the daemon's memory; a flood of slow connections
/// stalls neither metrics nor a publish.
#[test]
fn another_user_cannot_publish_exhaust_or_stall_the_mount() {
    let d = OpenDirs::new();
    let mount = CliMount::start(&d.args(), &d.mnt);
    let db = d.mnt.join("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("CURRENT"), b"x").unwrap();
    let sock = d.local.join("control.sock");
    assert_eq!(mode(&sock), 0o600);
    let addr = std::fs::read_to_string(d.local.join("metrics.addr"))
        .unwrap()
        .trim()
        .to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    // nobody cannot even find the socket's directory, so give them the path and the port.
    let py = |body: &str| {
        format!(
            "exec python3 - <<'EOF'\nimport socket, sys, time\nHOST, PORT, SOCK = '{host}', {port}, '{}'\n{body}\nEOF\n",
            sock.display()
        )
    };
    let out = as_nobody(&py(
        "try:\n    s = socket.socket(socket.AF_UNIX)\n    s.connect(SOCK)\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)",
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("refused"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&py(
        "s = socket.create_connection((HOST, PORT))\ns.sendall(b'POST /checkpoint?dir=db HTTP/1.1\\r\\nContent-Length: 0\\r\\n\\r\\n')\nprint(s.recv(100).decode().splitlines()[0])",
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "HTTP/1.1 403 Forbidden",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = Command::new(statefs_bin())
        .args(["checkpoints", "list", "--remote"])
        .arg(format!("file://{}", d.remote.display()))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("ckp"),
        "a checkpoint was published: {}",
        String::from_utf8_lossy(&list.stdout)
    );

    // 256 MiB of request head, as fast as it goes.
    let before = vm_rss_kib(mount.pid());
    let out = as_nobody(&py(
        "s = socket.create_connection((HOST, PORT))\nsent = 0\nchunk = b'a' * (1 << 20)\ntry:\n    for _ in range(256):\n        s.sendall(chunk)\n        sent += len(chunk)\nexcept OSError:\n    pass\nprint(sent)",
    ));
    let sent: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let after = vm_rss_kib(mount.pid());
    eprintln!("endless head: {sent} bytes accepted of 256 MiB; daemon RSS {before} -> {after} KiB");
    assert!(
        sent < 64 << 20,
        "the daemon took {sent} bytes of one request"
    );
    assert!(
        after < before + 32 * 1024,
        "daemon RSS grew from {before} KiB to {after} KiB"
    );

    // 200 connections that never finish their head, held while root scrapes and publishes.
    let mut flood = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c"])
        .arg(py("held = []\nfor _ in range(200):\n    try:\n        s = socket.create_connection((HOST, PORT))\n        s.sendall(b'GET /')\n        held.append(s)\n    except OSError:\n        pass\nprint(len(held), flush=True)\ntime.sleep(60)"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(flood.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.trim().parse::<u32>().unwrap() > 0, "{line}");
    }
    let started = std::time::Instant::now();
    let stats = Command::new(statefs_bin())
        .args(["stats", "--raw"])
        .arg(&d.mnt)
        .output()
        .unwrap();
    let publish = publish(&d.mnt, &db);
    eprintln!(
        "under a flood of 200 slow connections: stats and a publish took {:?} in all",
        started.elapsed()
    );
    let _ = flood.kill();
    let _ = flood.wait();
    assert!(
        stats.status.success() && String::from_utf8_lossy(&stats.stdout).contains("statefs_"),
        "metrics under a flood: {}",
        String::from_utf8_lossy(&stats.stderr)
    );
    assert!(
        publish.status.success(),
        "publish under a flood: {}",
        String::from_utf8_lossy(&publish.stderr)
    );
    drop(mount);
}

/// Finding 3: a secret given to a mount (config file, environment) is in no command line, no
/// log line and no error message; on a command line or in a config file others can read it is
/// refused, without being echoed.
#[test]
fn a_secret_is_never_on_a_command_line_or_in_a_log() {
    const SECRET: &str = "zQ7-statefs-secret-4f2b";
    let server = S3Server::start("privacy");
    let d = OpenDirs::new();
    let config = d.root.join("statefs.yaml");
    let yaml = |endpoint: &str| {
        format!(
            "statefs:\n  s3:\n    endpoint: {endpoint}\n    region: us-east-1\n    access-key-id: testing\n    secret-access-key: {SECRET}\n"
        )
    };
    let private_config = |endpoint: &str| {
        std::fs::write(&config, yaml(endpoint)).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let base_args = |remote: &str, config: &Path| -> Vec<String> {
        vec![
            "--remote".into(),
            remote.into(),
            "--local-dir".into(),
            d.local.display().to_string(),
            "--cache-dir".into(),
            d.cache.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ]
    };
    let run = |args: &[String], env: &[(&str, &str)]| -> Output {
        let mut c = Command::new(statefs_bin());
        c.args(["--log", "trace", "mount"]).args(args).arg(&d.mnt);
        for (k, v) in env {
            c.env(k, v);
        }
        c.env_remove("RUST_LOG").output().unwrap()
    };

    // A live mount on S3 with the secret from a 0600 config file, logging everything.
    private_config(&server.endpoint);
    let args = base_args("s3://privacy/p", &config);
    let mount = CliMount::start_with(&args, &d.mnt, |c| {
        c.env("RUST_LOG", "trace");
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", mount.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET));
    let db = d.mnt.join("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("000001.sst"), vec![1u8; 1 << 20]).unwrap();
    std::fs::File::open(db.join("000001.sst"))
        .unwrap()
        .sync_all()
        .unwrap();
    let published = publish(&d.mnt, &db);
    assert!(published.status.success());
    let log = mount.stop();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "logging was not on: {log}"
    );
    assert!(!log.contains(SECRET), "the secret is in the mount's log");

    // Failures: an unreachable store, a config file others can read, the secret as a flag or
    // with --set. Each fails with a message that does not carry the secret.
    private_config("http://127.0.0.1:9");
    let unreachable = run(
        &[args.clone(), vec!["--retry-attempts".into(), "1".into()]].concat(),
        &[],
    );
    std::fs::write(&config, yaml(&server.endpoint)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let readable = run(&args, &[]);
    let flag = run(
        &[
            args[..6].to_vec(),
            vec!["--s3-secret-access-key".into(), SECRET.into()],
        ]
        .concat(),
        &[],
    );
    let set = run(
        &[
            args[..6].to_vec(),
            vec![
                "--set".into(),
                format!("statefs.s3.secret-access-key={SECRET}"),
            ],
        ]
        .concat(),
        &[],
    );
    for (what, out, expect) in [
        (
            "unreachable store",
            &unreachable,
            "object store is not usable",
        ),
        ("config readable by others", &readable, "chmod 600"),
        ("secret flag", &flag, "AWS_SECRET_ACCESS_KEY"),
        ("secret --set", &set, "AWS_SECRET_ACCESS_KEY"),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: mounted");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            !err.contains(SECRET),
            "{what}: the secret is in the message: {err}"
        );
    }

    // The environment works as well, and is not in the command line either.
    std::fs::write(
        &config,
        format!(
            "statefs.s3.endpoint: {}\nstatefs.s3.region: us-east-1\n",
            server.endpoint
        ),
    )
    .unwrap();
    let mount = CliMount::start_with(&args, &d.mnt, |c| {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("RUST_LOG", "trace");
    });
    assert_eq!(
        std::fs::read(db.join("000001.sst")).unwrap(),
        vec![1u8; 1 << 20]
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", mount.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET));
    let log = mount.stop();
    assert!(!log.contains(SECRET), "the secret is in the mount's log");
}
