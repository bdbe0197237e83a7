//! The `statefs` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use statefs::store::{RetryPolicy, S3Options};
use statefs::{MountConfig, PassthroughMode};

#[derive(Parser)]
#[command(
    name = "statefs",
    version,
    about = "RocksDB state on object storage, through FUSE"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount a statefs filesystem in the foreground; SIGINT/SIGTERM unmount cleanly.
    Mount(MountArgs),
    /// Unmount a statefs filesystem (also clears a dead mount left by a killed process).
    Unmount {
        mountpoint: PathBuf,
        /// Detach even if files are open (lazy unmount).
        #[arg(long)]
        lazy: bool,
    },
}

#[derive(Args)]
struct MountArgs {
    /// Where SST objects live: file:///abs/path, s3://bucket/prefix or memory://.
    #[arg(long)]
    remote: String,
    /// Journal and local-placed files (MANIFEST, WAL, ...). Locked while mounted.
    #[arg(long)]
    local_dir: PathBuf,
    /// Staging files and local copies of SST files.
    #[arg(long)]
    cache_dir: PathBuf,
    /// Empty directory to mount on.
    mountpoint: PathBuf,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 2)]
    fuse_threads: usize,
    /// FUSE passthrough for files with a complete local copy: auto, on or off.
    #[arg(long, default_value = "auto")]
    passthrough: PassthroughMode,
    /// Kernel attribute cache lifetime in milliseconds.
    #[arg(long, default_value_t = 1000)]
    attr_ttl_ms: u64,
    /// Kernel name-lookup cache lifetime in milliseconds.
    #[arg(long, default_value_t = 1000)]
    entry_ttl_ms: u64,
    /// Files larger than this many bytes are uploaded in parts.
    #[arg(long, default_value_t = statefs::store::DEFAULT_MULTIPART_THRESHOLD)]
    multipart_threshold: u64,
    /// Multipart part size in bytes (at least 5 MiB).
    #[arg(long, default_value_t = statefs::store::DEFAULT_PART_SIZE)]
    part_size: usize,
    /// Attempts per object-store call before an operation fails with EIO.
    #[arg(long, default_value_t = 4)]
    retry_attempts: u32,
    /// Allow other users to use the mount.
    #[arg(long)]
    allow_other: bool,
    /// S3 endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL, else AWS).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION).
    #[arg(long, env = "AWS_REGION")]
    s3_region: Option<String>,
    /// S3 access key id (default: AWS_ACCESS_KEY_ID).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    s3_access_key_id: Option<String>,
    /// S3 secret access key (default: AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
    /// Allow plain http to a non-loopback S3 endpoint.
    #[arg(long)]
    s3_allow_http: bool,
}

impl MountArgs {
    fn config(&self) -> MountConfig {
        let mut c = MountConfig::new(self.remote.clone(), &self.local_dir, &self.cache_dir);
        c.fuse_threads = self.fuse_threads;
        c.passthrough = self.passthrough;
        c.attr_ttl = Duration::from_millis(self.attr_ttl_ms);
        c.entry_ttl = Duration::from_millis(self.entry_ttl_ms);
        c.multipart_threshold = self.multipart_threshold;
        c.part_size = self.part_size;
        c.retry = RetryPolicy {
            attempts: self.retry_attempts.max(1),
            ..RetryPolicy::default()
        };
        c.allow_other = self.allow_other;
        c.s3 = S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            allow_http: self.s3_allow_http,
        };
        c
    }
}

fn main() -> ExitCode {
    // Before any thread exists: every thread inherits this mask, so only the waiter below sees
    // SIGINT/SIGTERM and unmounting happens in one place.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    let _ = signals.thread_block();

    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let result = match &cli.command {
        Command::Mount(args) => mount(args, signals),
        Command::Unmount { mountpoint, lazy } => unmount(mountpoint, *lazy),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("statefs: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn mount(args: &MountArgs, signals: SigSet) -> Result<(), String> {
    let config = args.config();
    let p = statefs::mount::prepare(&config, &args.mountpoint, None).map_err(|e| e.to_string())?;
    let mountpoint = p.mountpoint.clone();
    let mut session = fuser::Session::new(p.fs, &mountpoint, &p.fuser)
        .map_err(|e| format!("mounting FUSE at {} failed: {e}", mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    std::thread::Builder::new()
        .name("statefs-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(signal = ?sig, "unmounting");
                if let Err(e) = unmounter.unmount() {
                    tracing::error!(error = %e, "unmount on signal failed");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    eprintln!(
        "statefs: mounted {} at {} (passthrough {})",
        config.remote,
        mountpoint.display(),
        if p.status.passthrough.load(Ordering::Relaxed) {
            "on"
        } else {
            "off"
        }
    );
    let core = p.core.clone();
    session
        .run()
        .map_err(|e| format!("FUSE session failed: {e}"))?;
    drop(core);
    eprintln!("statefs: unmounted {}", mountpoint.display());
    Ok(())
}

fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), String> {
    use nix::mount::{MntFlags, umount2};
    let dead =
        matches!(std::fs::metadata(mountpoint), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
    let flags = if lazy || dead {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match umount2(mountpoint, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(format!(
            "{} is busy: a process has files open there (close them, or use --lazy)",
            mountpoint.display()
        )),
        Err(nix::errno::Errno::EPERM) => {
            // Not root: the setuid helper may unmount a FUSE mount of ours.
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .args(lazy.then_some("-z"))
                .arg(mountpoint)
                .status()
                .map_err(|e| format!("running fusermount3: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("fusermount3 -u {} failed", mountpoint.display()))
            }
        }
        Err(nix::errno::Errno::EINVAL) => {
            Err(format!("{} is not a mount point", mountpoint.display()))
        }
        Err(e) => Err(format!("unmounting {}: {e}", mountpoint.display())),
    }
}
