//! Mounting: checks of the mount point, building the object-store stack, and the in-process
//! [`MountHandle`] (unmounts on drop) used by the CLI's foreground mount, the library and tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    #[error("mounting FUSE at {path} failed: {source}")]
    Fuse {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The mount point must be an existing, empty directory that is not already a mount.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    let err = |why: String| MountError::MountPoint {
        path: path.to_path_buf(),
        why,
    };
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(err(format!(
                "a dead FUSE mount is there (its process died); run `statefs unmount {}` first",
                path.display()
            )));
        }
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
    let store = spec
        .open(&config.s3, runtime)
        .map_err(MountError::BadRemote)?
        .with_multipart(config.multipart_threshold, config.part_size);
    Ok(Arc::new(RetryingRemote::new(
        MetricsRemote::new(store, metrics),
        config.retry,
    )))
}

pub fn runtime() -> Result<Arc<tokio::runtime::Runtime>, MountError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("statefs-io")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(MountError::Runtime)
}

fn fuser_config(config: &MountConfig) -> fuser::Config {
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        MountOption::FSName("statefs".into()),
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
    let core = FsCore::start(&config.local_dir, &config.cache_dir, remote, config.cache)?;
    let fuse_metrics = Arc::new(FuseMetrics::default());
    let status = Arc::new(FuseStatus::default());
    let fs = StatefsFuse::new(
        core.clone(),
        config.attr_ttl,
        config.entry_ttl,
        config.passthrough,
        fuse_metrics.clone(),
        status.clone(),
    );
    Ok(Prepared {
        core,
        fs,
        fuser: fuser_config(config),
        mountpoint,
        remote_metrics,
        fuse_metrics,
        status,
        runtime,
    })
}

/// A live in-process mount. Dropping it unmounts (and waits for the journal to be compacted).
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    core: Option<Arc<FsCore>>,
    mountpoint: PathBuf,
    pub remote_metrics: Arc<RemoteMetrics>,
    pub fuse_metrics: Arc<FuseMetrics>,
    pub status: Arc<FuseStatus>,
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
        Ok(MountHandle {
            session: Some(session),
            core: Some(p.core),
            mountpoint: p.mountpoint,
            remote_metrics: p.remote_metrics,
            fuse_metrics: p.fuse_metrics,
            status: p.status,
            _runtime: p.runtime,
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
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
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        };
        self.core.take();
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
