//! Mounting: checks of the mount point, building the object-store stack, and the in-process
//! [`MountHandle`] (unmounts on drop) used by the CLI's foreground mount, the library and tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{MountOption, SessionACL};

use crate::config::MountConfig;
use crate::core::{FsCore, OpenError};
use crate::fuse::{FuseMetrics, FuseStatus, StatefsFuse};
use crate::store::{
    MetricsRemote, RemoteMetrics, RemoteSpec, RemoteStore, RetryingRemote, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{0}")]
    BadRemote(StoreError),
    #[error("mount point {path}: {why}")]
    MountPoint { path: PathBuf, why: String },
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the store threads: {0}")]
    Threads(std::io::Error),
    #[error("mounting FUSE at {path} failed: {source}")]
    Fuse {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// The mount point must be an existing, empty directory that is not already a mount.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    let err = |why: String| MountError::MountPoint {
        path: path.to_path_buf(),
        why,
    };
    if is_dead_mount(path) {
        return Err(err(format!(
            "a dead FUSE mount is there (its process died); run `statefs unmount {}` first",
            path.display()
        )));
    }
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err("does not exist".into()));
        }
        Err(e) => return Err(err(e.to_string())),
    };
    if !md.is_dir() {
        return Err(err("is not a directory".into()));
    }
    let abs = std::fs::canonicalize(path).map_err(|e| err(e.to_string()))?;
    if is_mounted(&abs) {
        return Err(err("something is already mounted there".into()));
    }
    let mut entries = std::fs::read_dir(&abs).map_err(|e| err(e.to_string()))?;
    if entries.next().is_some() {
        return Err(err("is not empty".into()));
    }
    Ok(abs)
}

/// Whether `path` is a FUSE mount whose process died. Asked with statfs, which always reaches the
/// filesystem: a stat may be answered from the kernel's attribute cache for a while after the
/// daemon is gone. ECONNABORTED: a request in flight as the connection went away.
pub fn is_dead_mount(path: &Path) -> bool {
    matches!(
        nix::sys::statfs::statfs(path),
        Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED)
    )
}

/// Whether `path` (absolute) is a mount point, from /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mount_path(mp) == want)
    })
}

fn unescape_mount_path(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The object-store stack of a mount: retries over counted calls over the store itself.
pub fn build_remote(
    config: &MountConfig,
    runtime: Arc<tokio::runtime::Runtime>,
    metrics: Arc<RemoteMetrics>,
) -> Result<Arc<dyn RemoteStore>, MountError> {
    let spec = RemoteSpec::parse(&config.remote).map_err(MountError::BadRemote)?;
    let s3 = crate::store::S3Options {
        request_timeout: Some(config.retry.request_timeout),
        ..config.s3.clone()
    };
    let store = spec
        .open(&s3, runtime)
        .map_err(MountError::BadRemote)?
        .with_multipart(config.multipart_threshold, config.part_size);
    Ok(Arc::new(RetryingRemote::new(
        MetricsRemote::new(store, metrics),
        config.retry,
    )))
}

/// [`statefs_store::runtime`], with a mount's error.
pub fn runtime() -> Result<Arc<tokio::runtime::Runtime>, MountError> {
    statefs_store::runtime().map_err(MountError::Runtime)
}

/// `statefs:<local-dir>`, or plain `statefs` when the path cannot travel in a mount option.
fn fs_name(local_dir: &Path) -> String {
    let dir = local_dir.to_string_lossy();
    if dir.contains([',', ' ', '\t', '\n', '\\']) {
        "statefs".into()
    } else {
        format!("statefs:{dir}")
    }
}

/// The local dir of the statefs mount at `mountpoint`, from the mount table.
pub fn local_dir_of(mountpoint: &Path) -> Option<PathBuf> {
    let abs = std::fs::canonicalize(mountpoint).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = abs.to_string_lossy();
    info.lines().find_map(|l| {
        let mut fields = l.split(' ');
        if fields.nth(4).map(unescape_mount_path)? != want {
            return None;
        }
        let rest = l.split(" - ").nth(1)?;
        let source = rest.split(' ').nth(1)?;
        source.strip_prefix("statefs:").map(PathBuf::from)
    })
}

fn fuser_config(config: &MountConfig) -> fuser::Config {
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        // The source names the local dir, so `statefs stats <mountpoint>` finds the mount's files.
        MountOption::FSName(fs_name(&config.local_dir)),
        MountOption::Subtype("statefs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if config.allow_other {
        c.acl = SessionACL::All;
    }
    c.n_threads = Some(config.fuse_threads.max(1));
    c.clone_fd = config.fuse_threads > 1;
    c
}

/// Renders every metric of a mount in Prometheus text format.
pub fn render_metrics(core: &FsCore, remote: &RemoteMetrics, fuse: &FuseMetrics) -> String {
    use crate::metrics::*;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    let c = core.cache_stats();
    let m = &core.metrics;
    let counters: [(&str, &str, u64); 13] = [
        (
            CACHE_HITS,
            "accesses of files with a hot local copy",
            c.hits,
        ),
        (
            CACHE_MISSES,
            "accesses of tracked files without a hot copy",
            c.misses,
        ),
        (
            CACHE_LOADBACKS,
            "promotions served by a demoted copy still on disk",
            c.loadbacks,
        ),
        (CACHE_PROMOTIONS, "cold files promoted to hot", c.promotions),
        (
            CACHE_EVICTIONS,
            "hot copies demoted to make room",
            c.evictions,
        ),
        (
            BLOCK_HITS,
            "cold-read blocks found in memory",
            m.block_hits.load(Relaxed),
        ),
        (
            BLOCK_MISSES,
            "cold-read blocks fetched from the store",
            m.block_misses.load(Relaxed),
        ),
        (
            REMOTE_ERRORS,
            "failed object-store attempts",
            remote.errors.load(Relaxed),
        ),
        (UPLOADS, "files uploaded", m.uploads.load(Relaxed)),
        (
            UPLOAD_BYTES,
            "bytes of uploaded files",
            m.upload_bytes.load(Relaxed),
        ),
        (DOWNLOADS, "whole-file downloads", m.downloads.load(Relaxed)),
        (
            INODES,
            "inodes in the mapping table",
            core.inode_count() as u64,
        ),
        (
            UPLOADS_IN_FLIGHT,
            "uploads running now",
            m.uploads_in_flight.load(Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        header(&mut out, name, kind, help);
        sample(&mut out, name, "", v);
    }
    let gauges: [(&str, &str, u64); 4] = [
        (
            CACHE_USED_BYTES,
            "bytes of hot copies plus demoted copies still open",
            c.used,
        ),
        (
            CACHE_REMAINING_BYTES,
            "bytes that fit before a limit is reached",
            core.cache_remaining(),
        ),
        (
            CACHE_HOT_FILES,
            "files with a hot local copy",
            c.hot_entries,
        ),
        (
            CACHE_COLD_FILES,
            "files tracked without a copy",
            c.cold_entries,
        ),
    ];
    for (name, help, v) in gauges {
        header(&mut out, name, "gauge", help);
        sample(&mut out, name, "", v);
    }
    header(
        &mut out,
        REMOTE_REQUESTS,
        "counter",
        "object-store requests by operation",
    );
    for (op, v) in [
        ("get", &remote.gets),
        ("put", &remote.puts),
        ("head", &remote.heads),
        ("delete", &remote.deletes),
        ("list", &remote.lists),
    ] {
        sample(
            &mut out,
            REMOTE_REQUESTS,
            &format!("op=\"{op}\""),
            v.load(Relaxed),
        );
    }
    header(
        &mut out,
        REMOTE_BYTES,
        "counter",
        "object-store bytes by operation",
    );
    sample(
        &mut out,
        REMOTE_BYTES,
        "op=\"get\"",
        remote.get_bytes.load(Relaxed),
    );
    sample(
        &mut out,
        REMOTE_BYTES,
        "op=\"put\"",
        remote.put_bytes.load(Relaxed),
    );
    header(
        &mut out,
        REMOTE_LATENCY,
        "histogram",
        "latency of one object-store attempt",
    );
    remote
        .get_latency
        .render(&mut out, REMOTE_LATENCY, "op=\"get\"");
    remote
        .put_latency
        .render(&mut out, REMOTE_LATENCY, "op=\"put\"");
    remote
        .delete_latency
        .render(&mut out, REMOTE_LATENCY, "op=\"delete\"");
    let w = core.warm_metrics();
    for (name, kind, help, v) in [
        (
            WARM_FILES,
            "counter",
            "cold files scheduled for warming into the page cache",
            w.files.load(Relaxed),
        ),
        (
            WARM_BYTES,
            "counter",
            "bytes handed to the page cache by the warm-up",
            w.bytes.load(Relaxed),
        ),
        (
            WARM_IN_FLIGHT,
            "gauge",
            "GETs of the warm-up running now",
            w.in_flight.load(Relaxed),
        ),
        (
            WARM_FAILURES,
            "counter",
            "warm-up GETs or page-cache stores that failed (those pages are read on demand)",
            w.failures.load(Relaxed),
        ),
    ] {
        header(&mut out, name, kind, help);
        sample(&mut out, name, "", v);
    }
    header(
        &mut out,
        WARM_SECONDS,
        "gauge",
        "seconds from the first file scheduled to the last piece warmed (0 while warming)",
    );
    sample(
        &mut out,
        WARM_SECONDS,
        "",
        format!("{:.3}", w.warm_ms.load(Relaxed) as f64 / 1000.0),
    );
    fuse.render(&mut out);
    out
}

/// The endpoints of a mount; both stop (after their running requests) on drop.
pub struct Endpoints {
    /// `GET /metrics` on TCP, for any local reader.
    pub metrics: crate::endpoint::Server,
    /// Control on `<local-dir>/control.sock`, for the mounting user only.
    pub control: crate::endpoint::Server,
}

/// The control socket of the mount whose local dir is `local_dir`.
pub fn control_socket(local_dir: &Path) -> PathBuf {
    local_dir.join("control.sock")
}

/// Sends a control request (`/checkpoint?dir=...`) to the mount whose local dir is `local_dir`;
/// the answer text, or its error text.
pub fn post_control(local_dir: &Path, target: &str) -> Result<String, String> {
    let sock = control_socket(local_dir);
    let addr = crate::endpoint::Addr::Unix(sock.clone());
    // A publish takes as long as its uploads.
    match crate::endpoint::request(&addr, "POST", target, Duration::from_secs(3600)) {
        Ok((200, body)) => Ok(body),
        Ok((_, body)) => Err(body.trim().to_string()),
        Err(e) => Err(format!(
            "the mount's control socket {}: {e}",
            sock.display()
        )),
    }
}

/// Starts the endpoints of a mount and records the metrics address in `<local-dir>/metrics.addr`
/// for `statefs stats`.
pub fn start_endpoints(
    config: &MountConfig,
    core: &Arc<FsCore>,
    remote: &Arc<RemoteMetrics>,
    fuse: &Arc<FuseMetrics>,
) -> Result<Endpoints, MountError> {
    use crate::endpoint::{Handler, Limits, Method, Request, Response, Server};
    let (c, r, f) = (Arc::downgrade(core), remote.clone(), fuse.clone());
    let render = Arc::new(move || match c.upgrade() {
        Some(core) => render_metrics(&core, &r, &f),
        None => String::new(),
    });
    let metrics_only = |render: Arc<dyn Fn() -> String + Send + Sync>| -> Arc<Handler> {
        Arc::new(
            move |req: &Request| match (req.method, req.target.as_str()) {
                (Method::Get, "/metrics" | "/") => Response::new(200, render()),
                (Method::Post, _) => Response::new(
                    403,
                    "control requests go to the mount's Unix socket, <local-dir>/control.sock\n",
                ),
                _ => Response::new(404, "not found\n"),
            },
        )
    };
    let metrics_handler = metrics_only(render);
    let (c, retained, reads) = (
        Arc::downgrade(core),
        config.num_retained,
        metrics_handler.clone(),
    );
    let control: Arc<Handler> = Arc::new(move |req: &Request| match req.method {
        Method::Post => match control(&c, &req.target, retained) {
            Ok(text) => Response::new(200, text),
            Err(text) => Response::new(500, text),
        },
        Method::Get => reads(req),
    });
    let endpoint_err = |addr: String| move |source| MountError::Metrics { addr, source };
    // An older statefs kept a control token here; control is the socket's now.
    let _ = std::fs::remove_file(config.local_dir.join("control.token"));
    let sock = control_socket(&config.local_dir);
    let control = Server::unix(&sock, Limits::default(), control)
        .map_err(endpoint_err(sock.display().to_string()))?;
    let metrics = Server::tcp(&config.metrics_addr, Limits::default(), metrics_handler)
        .map_err(endpoint_err(config.metrics_addr.clone()))?;
    // Where this mount's store is, for the checkpoint URL `statefs checkpoint` prints.
    let remote_file = config.local_dir.join("REMOTE");
    crate::private::write(&remote_file, format!("{}\n", config.remote))
        .map_err(endpoint_err(remote_file.display().to_string()))?;
    let path = config.local_dir.join("metrics.addr");
    crate::private::write(&path, format!("{}\n", metrics.tcp_addr()))
        .map_err(endpoint_err(path.display().to_string()))?;
    Ok(Endpoints { metrics, control })
}

/// `POST /checkpoint?dir=<path>`: publishes `<path>` (relative to the mount root) and answers
/// `<id>\n`.
fn control(core: &std::sync::Weak<FsCore>, path: &str, retained: usize) -> Result<String, String> {
    let op = parse_control(path)?;
    let core = core.upgrade().ok_or("the mount is shutting down")?;
    match op {
        ControlOp::Checkpoint { dir } => {
            let p = core
                .publish(&dir, retained)
                .map_err(|e| format!("checkpoint of {dir}: {e}"))?;
            Ok(format!("{}\n", p.id))
        }
    }
}

/// What a control request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlOp {
    /// `POST /checkpoint?dir=<path>`: publish `<path>` (relative to the mount root).
    Checkpoint { dir: String },
}

/// Parses the target of a control request (`/checkpoint?dir=db%2Fchk-1`).
pub fn parse_control(target: &str) -> Result<ControlOp, String> {
    let url = url::Url::parse(&format!("http://mount{target}")).map_err(|e| e.to_string())?;
    match url.path() {
        "/checkpoint" => {
            let dir = url
                .query_pairs()
                .find(|(k, _)| k == "dir")
                .map(|(_, v)| v.into_owned())
                .ok_or("missing dir=")?;
            Ok(ControlOp::Checkpoint { dir })
        }
        other => Err(format!("unknown operation {other}")),
    }
}

/// Everything a mount needs before the kernel is involved.
pub struct Prepared {
    pub core: Arc<FsCore>,
    pub fs: StatefsFuse,
    pub fuser: fuser::Config,
    pub mountpoint: PathBuf,
    pub remote_metrics: Arc<RemoteMetrics>,
    pub fuse_metrics: Arc<FuseMetrics>,
    pub status: Arc<FuseStatus>,
    pub runtime: Arc<tokio::runtime::Runtime>,
    pub endpoints: Endpoints,
}

/// Checks the mount point, opens the store and recovers the core. `remote` replaces the store named
/// by the config (tests inject faults this way).
pub fn prepare(
    config: &MountConfig,
    mountpoint: &Path,
    remote: Option<Arc<dyn RemoteStore>>,
) -> Result<Prepared, MountError> {
    let runtime = runtime()?;
    let remote_metrics = Arc::new(RemoteMetrics::default());
    let remote = match remote {
        Some(r) => r,
        None => build_remote(config, runtime.clone(), remote_metrics.clone())?,
    };
    let mountpoint = check_mountpoint(mountpoint)?;
    let local_dir = std::path::absolute(&config.local_dir).map_err(|e| MountError::MountPoint {
        path: config.local_dir.clone(),
        why: e.to_string(),
    })?;
    let config = &MountConfig {
        local_dir,
        ..config.clone()
    };
    let core = match &config.restore {
        Some(r) => FsCore::start_restored(
            &config.local_dir,
            &config.cache_dir,
            remote,
            config.cache,
            &r.id,
            r.claim,
        )?,
        None => FsCore::start(&config.local_dir, &config.cache_dir, remote, config.cache)?,
    };
    let fuse_metrics = Arc::new(FuseMetrics::default());
    let status = Arc::new(FuseStatus::default());
    let fs = StatefsFuse::new(
        core.clone(),
        config.attr_ttl,
        config.entry_ttl,
        config.passthrough,
        fuse_metrics.clone(),
        status.clone(),
        crate::fuse::StoreThreads {
            uploads: config.store_threads,
            reads: config.cache.blocks.in_flight,
        },
    )
    .map_err(MountError::Threads)?;
    let endpoints = start_endpoints(config, &core, &remote_metrics, &fuse_metrics)?;
    Ok(Prepared {
        core,
        fs,
        fuser: fuser_config(config),
        mountpoint,
        remote_metrics,
        fuse_metrics,
        status,
        runtime,
        endpoints,
    })
}

/// Unmounts `path`, waiting up to 2 s for files that are still being released (the kernel sends
/// RELEASE after `close()` returns), then detaching lazily: the caller is never left with a mount.
pub fn unmount_path(path: &Path) -> std::io::Result<()> {
    use nix::mount::{MntFlags, umount2};
    for _ in 0..100 {
        match umount2(path, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(nix::errno::Errno::EINVAL) if !is_mounted(path) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    tracing::warn!(path = %path.display(), "mount still busy after 2 s; detaching lazily");
    umount2(path, MntFlags::MNT_DETACH).map_err(Into::into)
}

/// A live in-process mount. Dropping it unmounts (and waits for the journal to be compacted).
///
/// ```no_run
/// use statefs::{MountConfig, MountHandle};
/// let config = MountConfig::new("file:///var/lib/statefs/store", "/var/lib/statefs/local",
///                               "/var/cache/statefs");
/// let mount = MountHandle::mount(&config, std::path::Path::new("/mnt/state")).unwrap();
/// // ... RocksDB writes /mnt/state/db ...
/// let published = mount.checkpoint(std::path::Path::new("/mnt/state/chk-1"), 3).unwrap();
/// println!("checkpoint {}", published.id);
/// mount.unmount().unwrap();
/// ```
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    core: Option<Arc<FsCore>>,
    mountpoint: PathBuf,
    pub remote_metrics: Arc<RemoteMetrics>,
    pub fuse_metrics: Arc<FuseMetrics>,
    pub status: Arc<FuseStatus>,
    pub endpoints: Option<Endpoints>,
    /// Signalled when the core is gone: the unmount waits for it.
    released: Arc<crate::core::Released>,
    _runtime: Arc<tokio::runtime::Runtime>,
}

impl MountHandle {
    pub fn mount(config: &MountConfig, mountpoint: &Path) -> Result<MountHandle, MountError> {
        Self::mount_with_remote(config, mountpoint, None)
    }

    pub fn mount_with_remote(
        config: &MountConfig,
        mountpoint: &Path,
        remote: Option<Arc<dyn RemoteStore>>,
    ) -> Result<MountHandle, MountError> {
        let p = prepare(config, mountpoint, remote)?;
        let session = fuser::spawn_mount(p.fs, &p.mountpoint, &p.fuser).map_err(|source| {
            MountError::Fuse {
                path: p.mountpoint.clone(),
                source,
            }
        })?;
        p.core
            .set_page_cache(Arc::new(crate::fuse::NotifyStore(session.notifier())));
        Ok(MountHandle {
            session: Some(session),
            released: p.core.released(),
            core: Some(p.core),
            mountpoint: p.mountpoint,
            remote_metrics: p.remote_metrics,
            fuse_metrics: p.fuse_metrics,
            status: p.status,
            endpoints: Some(p.endpoints),
            _runtime: p.runtime,
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Publishes directory `dir` of the mount (a path inside the mount, or relative to its root) as a
    /// checkpoint, applying `retained` (0 keeps all).
    pub fn checkpoint(
        &self,
        dir: &Path,
        retained: usize,
    ) -> crate::error::FsResult<crate::core::Published> {
        self.checkpoint_with(dir, retained, false)
    }

    /// [`MountHandle::checkpoint`], with retention optionally left to the mount's background worker
    /// (the core's `publish_with`).
    pub fn checkpoint_with(
        &self,
        dir: &Path,
        retained: usize,
        defer_retention: bool,
    ) -> crate::error::FsResult<crate::core::Published> {
        self.core()
            .publish_with(&self.relative(dir), retained, defer_retention)
    }

    /// Publishes a checkpoint of `files`, named as given, with no directory to hold them (see
    /// [`MountHandle::checkpoint_files`](crate::MountHandle::checkpoint_files)); paths may be inside the mount or relative to its root.
    pub fn checkpoint_files(
        &self,
        mut files: Vec<crate::core::CheckpointFile>,
        retained: usize,
        defer_retention: bool,
    ) -> crate::error::FsResult<crate::core::Published> {
        use crate::core::CheckpointFile as F;
        for f in &mut files {
            if let F::Mounted { path, .. } | F::SealedOnly { path, .. } = f {
                *path = self.relative(Path::new(path.as_str()));
            }
        }
        self.core().publish_files(files, retained, defer_retention)
    }

    /// Drops checkpoint `id` if this mount owns it ([`FsCore::drop_own_checkpoint`]).
    pub fn drop_checkpoint(&self, id: &str) -> crate::error::FsResult<bool> {
        self.core().drop_own_checkpoint(id)
    }

    /// `p` relative to the mount root if it lies inside the mount, else as given (already
    /// relative to the root).
    fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.mountpoint)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }

    pub fn core(&self) -> &Arc<FsCore> {
        self.core.as_ref().expect("mounted")
    }

    /// Unmounts and waits until the filesystem has shut down; the local dir is free afterwards.
    pub fn unmount(mut self) -> std::io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> std::io::Result<()> {
        let r = match self.session.take() {
            Some(s) => unmount_path(&self.mountpoint).and_then(|_| s.join()),
            None => return Ok(()),
        };
        // The endpoints' handlers hold the core: they go first.
        self.endpoints.take();
        self.core.take();
        if r.is_ok() {
            // The session ended, so nothing but a worker finishing its request holds the core:
            // wait for it, so that the dirs are free when the unmount returns.
            self.released.wait();
        }
        r
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::error!(mountpoint = %self.mountpoint.display(), error = %e, "unmount failed");
        }
    }
}
