//! The `statefs` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use statefs::MountConfig;
use statefs::options::{self, Settings};

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
    /// Print every configuration option (Markdown; this is docs/CONFIG.md).
    Config,
    /// Print the metrics of a running mount, readable by a person.
    Stats {
        mountpoint: PathBuf,
        /// Print the raw Prometheus text instead.
        #[arg(long)]
        raw: bool,
    },
}

/// `statefs mount` flags. Every flag is optional here: defaults live in the option registry
/// (`statefs config`), a `--config` file comes next, flags last.
#[derive(Args)]
struct MountArgs {
    /// Empty directory to mount on.
    mountpoint: PathBuf,
    /// YAML file of options (keys as `statefs config` lists them).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Any option by key, e.g. --set state.backend.forst.cache.size-based-limit=1gb (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Where SST files live: file:///abs/path, s3://bucket/prefix or memory://.
    #[arg(long)]
    remote: Option<String>,
    /// Journal and local-placed files (MANIFEST, WAL, ...). Locked while mounted.
    #[arg(long)]
    local_dir: Option<PathBuf>,
    /// Staging files and local copies of SST files.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Bytes of local SST copies (e.g. 10gb); 0 = no size limit.
    #[arg(long)]
    cache_size_limit: Option<String>,
    /// Free disk space to keep (e.g. 256mb); 0 = no space limit.
    #[arg(long)]
    cache_reserve_size: Option<String>,
    /// Cold accesses before a copy is loaded again.
    #[arg(long)]
    cache_access_before_promote: Option<String>,
    /// Evictions after which a file is no longer promoted.
    #[arg(long)]
    cache_promote_limit: Option<String>,
    /// Room a new SST needs to keep its copy (RocksDB's target file size).
    #[arg(long)]
    target_file_size: Option<String>,
    /// Unit of cold reads (e.g. 64kb).
    #[arg(long)]
    block_size: Option<String>,
    /// Memory for cold-read blocks.
    #[arg(long)]
    block_memory: Option<String>,
    /// Largest read-ahead of a sequential cold reader.
    #[arg(long)]
    max_readahead: Option<String>,
    /// FUSE worker threads.
    #[arg(long)]
    fuse_threads: Option<String>,
    /// FUSE passthrough for files with a complete local copy: auto, on or off.
    #[arg(long)]
    passthrough: Option<String>,
    /// Kernel attribute cache lifetime (e.g. 1s, 200ms).
    #[arg(long)]
    attr_ttl: Option<String>,
    /// Kernel name-lookup cache lifetime.
    #[arg(long)]
    entry_ttl: Option<String>,
    /// Allow other users to use the mount.
    #[arg(long)]
    allow_other: bool,
    /// Files larger than this are uploaded in parts (e.g. 16mb).
    #[arg(long)]
    multipart_threshold: Option<String>,
    /// Multipart part size (at least 5mb).
    #[arg(long)]
    part_size: Option<String>,
    /// Attempts per object-store call before an operation fails with EIO.
    #[arg(long)]
    retry_attempts: Option<String>,
    /// Wait before the first retry (doubled each time).
    #[arg(long)]
    retry_initial_backoff: Option<String>,
    /// Longest wait between retries.
    #[arg(long)]
    retry_max_backoff: Option<String>,
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
    /// Address of the Prometheus /metrics endpoint (port 0: any free port).
    #[arg(long)]
    metrics_addr: Option<String>,
}

impl MountArgs {
    fn config(&self) -> Result<MountConfig, String> {
        let mut settings = Settings::default();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("configuration file {}: {e}", path.display()))?;
            settings
                .load_yaml(&text, &path.display().to_string())
                .map_err(|e| e.to_string())?;
        }
        for kv in &self.sets {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--set takes KEY=VALUE, not {kv:?}"))?;
            settings
                .set(k.trim(), v.trim())
                .map_err(|e| e.to_string())?;
        }
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let flags: [(&str, Option<String>); 26] = [
            ("--remote", self.remote.clone()),
            ("--local-dir", path(&self.local_dir)),
            ("--cache-dir", path(&self.cache_dir)),
            ("--cache-size-limit", self.cache_size_limit.clone()),
            ("--cache-reserve-size", self.cache_reserve_size.clone()),
            (
                "--cache-access-before-promote",
                self.cache_access_before_promote.clone(),
            ),
            ("--cache-promote-limit", self.cache_promote_limit.clone()),
            ("--target-file-size", self.target_file_size.clone()),
            ("--block-size", self.block_size.clone()),
            ("--block-memory", self.block_memory.clone()),
            ("--max-readahead", self.max_readahead.clone()),
            ("--fuse-threads", self.fuse_threads.clone()),
            ("--passthrough", self.passthrough.clone()),
            ("--attr-ttl", self.attr_ttl.clone()),
            ("--entry-ttl", self.entry_ttl.clone()),
            ("--allow-other", self.allow_other.then(|| "true".into())),
            ("--multipart-threshold", self.multipart_threshold.clone()),
            ("--part-size", self.part_size.clone()),
            ("--retry-attempts", self.retry_attempts.clone()),
            (
                "--retry-initial-backoff",
                self.retry_initial_backoff.clone(),
            ),
            ("--retry-max-backoff", self.retry_max_backoff.clone()),
            ("--s3-endpoint", self.s3_endpoint.clone()),
            ("--s3-region", self.s3_region.clone()),
            ("--s3-access-key-id", self.s3_access_key_id.clone()),
            ("--s3-secret-access-key", self.s3_secret_access_key.clone()),
            ("--s3-allow-http", self.s3_allow_http.then(|| "true".into())),
        ];
        for (flag, value) in flags {
            if let Some(v) = value {
                let spec = options::spec_by_flag(flag).expect("every flag is registered");
                settings
                    .set(spec.key, &v)
                    .map_err(|e| format!("{flag}: {e}"))?;
            }
        }
        if let Some(addr) = &self.metrics_addr {
            settings
                .set("statefs.metrics.addr", addr)
                .map_err(|e| e.to_string())?;
        }
        settings.mount_config().map_err(|e| e.to_string())
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
        Command::Stats { mountpoint, raw } => stats(mountpoint, *raw),
        Command::Config => {
            print!("{}", options::config_doc());
            Ok(())
        }
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
    let config = args.config()?;
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

/// Appends a formatted line to a String (stats builds its whole report before printing it).
macro_rules! outln {
    ($out:expr) => { $out.push('\n') };
    ($out:expr, $($arg:tt)*) => {{ $out.push_str(&format!($($arg)*)); $out.push('\n'); }};
}

/// Prints, ignoring a closed pipe (`statefs stats | head`).
fn print_all(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn stats(mountpoint: &Path, raw: bool) -> Result<(), String> {
    let mut out = String::new();
    let local = statefs::mount::local_dir_of(mountpoint)
        .ok_or_else(|| format!("{} is not a statefs mount", mountpoint.display()))?;
    let addr_file = local.join("metrics.addr");
    let addr = std::fs::read_to_string(&addr_file)
        .map_err(|e| format!("reading {}: {e}", addr_file.display()))?;
    let text = statefs::metrics::fetch(addr.trim())
        .map_err(|e| format!("metrics of the mount at {}: {e}", addr.trim()))?;
    if raw {
        out.push_str(&text);
        print_all(&out);
        return Ok(());
    }
    let values = statefs::metrics::parse(&text);
    let get = |name: &str| {
        values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    };
    let sum_prefix = |prefix: &str| {
        values
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let mib = |v: f64| format!("{:.1} MiB", v / (1024.0 * 1024.0));
    use statefs::metrics as m;
    outln!(
        out,
        "statefs mount {} (local dir {}, metrics {})",
        mountpoint.display(),
        local.display(),
        addr.trim()
    );
    outln!(out);
    outln!(
        out,
        "cache     used {} of {} more allowed, {} hot files, {} cold files",
        mib(get(m::CACHE_USED_BYTES)),
        mib(get(m::CACHE_REMAINING_BYTES)),
        get(m::CACHE_HOT_FILES),
        get(m::CACHE_COLD_FILES)
    );
    outln!(
        out,
        "          hits {}, misses {}, promotions {}, loadbacks {}, evictions {}",
        get(m::CACHE_HITS),
        get(m::CACHE_MISSES),
        get(m::CACHE_PROMOTIONS),
        get(m::CACHE_LOADBACKS),
        get(m::CACHE_EVICTIONS)
    );
    outln!(
        out,
        "cold      block hits {}, block misses {}",
        get(m::BLOCK_HITS),
        get(m::BLOCK_MISSES)
    );
    outln!(
        out,
        "remote    gets {}, puts {}, deletes {}, errors {}",
        get(&format!("{}{{op=\"get\"}}", m::REMOTE_REQUESTS)),
        get(&format!("{}{{op=\"put\"}}", m::REMOTE_REQUESTS)),
        get(&format!("{}{{op=\"delete\"}}", m::REMOTE_REQUESTS)),
        get(m::REMOTE_ERRORS)
    );
    outln!(
        out,
        "          read {}, written {}",
        mib(get(&format!("{}{{op=\"get\"}}", m::REMOTE_BYTES))),
        mib(get(&format!("{}{{op=\"put\"}}", m::REMOTE_BYTES)))
    );
    for op in ["get", "put", "delete"] {
        let count = get(&format!("{}_count{{op=\"{op}\"}}", m::REMOTE_LATENCY));
        let sum = get(&format!("{}_sum{{op=\"{op}\"}}", m::REMOTE_LATENCY));
        if count > 0.0 {
            outln!(
                out,
                "          {op:<6} mean latency {:.2} ms over {count} requests",
                1000.0 * sum / count
            );
        }
    }
    outln!(
        out,
        "uploads   {} files, {}, {} in flight; downloads {}",
        get(m::UPLOADS),
        mib(get(m::UPLOAD_BYTES)),
        get(m::UPLOADS_IN_FLIGHT),
        get(m::DOWNLOADS)
    );
    outln!(
        out,
        "fuse      {} requests; opens: {} passthrough, {} daemon; {} inodes",
        sum_prefix(&format!("{}{{", m::FUSE_OPS)),
        get(&format!("{}{{path=\"passthrough\"}}", m::FUSE_OPENS)),
        get(&format!("{}{{path=\"daemon\"}}", m::FUSE_OPENS)),
        get(m::INODES)
    );
    let mut ops: Vec<(String, f64)> = values
        .iter()
        .filter(|(k, v)| k.starts_with(&format!("{}{{", m::FUSE_OPS)) && *v > 0.0)
        .map(|(k, v)| (k.split('"').nth(1).unwrap_or("?").to_string(), *v))
        .collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (op, n) in ops {
        let count = get(&format!("{}_count{{op=\"{op}\"}}", m::FUSE_LATENCY));
        let sum = get(&format!("{}_sum{{op=\"{op}\"}}", m::FUSE_LATENCY));
        outln!(
            out,
            "          {op:<10} {n:>10}  mean {:>8.1} us",
            if count > 0.0 { 1e6 * sum / count } else { 0.0 }
        );
    }
    print_all(&out);
    Ok(())
}
