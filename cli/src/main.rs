//! The `statefs` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use statefs::options;

mod args;
mod daemon;
mod helper;
mod progress;
use args::{MountArgs, RemoteArgs};
use daemon::Readiness;

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
    /// Mount a statefs filesystem: in the foreground (SIGINT/SIGTERM unmount cleanly; readiness
    /// goes to systemd's NOTIFY_SOCKET when set), or detached with --daemon. A dead mount left
    /// at the mount point by a killed statefs is cleared first.
    Mount(Box<MountArgs>),
    /// Unmount a statefs filesystem (also clears a dead mount left by a killed process).
    Unmount {
        mountpoint: PathBuf,
        /// Detach even if files are open (lazy unmount).
        #[arg(long)]
        lazy: bool,
    },
    /// Print every configuration option (Markdown; this is docs/CONFIG.md).
    Config,
    /// Publish a directory of a running mount (e.g. made by RocksDB's Checkpoint API) as a checkpoint.
    /// The id is the last line of the output.
    Checkpoint {
        mountpoint: PathBuf,
        /// Directory inside the mount.
        dir: PathBuf,
    },
    /// Checkpoints in an object store.
    Checkpoints {
        #[command(subcommand)]
        command: CheckpointsCommand,
    },
    /// Mount records in an object store: every mount that ran on it and may run again keeps the
    /// objects its journal names alive.
    Mounts {
        #[command(subcommand)]
        command: MountsCommand,
    },
    /// Delete the objects of forgotten mounts that no checkpoint and no mount references, and
    /// leftovers of dropped checkpoints. A mount with a record releases its own objects.
    Gc {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Only delete garbage older than this by the store's clock (e.g. 1h, 30min): a delay,
        /// never needed for safety.
        #[arg(long, default_value = "0s")]
        min_age: String,
    },
    /// Check a mount's journal against the object store (the mount must not be running).
    Fsck {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        local_dir: PathBuf,
        /// Remove the names of local files whose bytes are gone (a mount refuses to start while
        /// there are any), accepting their loss; then check.
        #[arg(long)]
        drop_missing: bool,
    },
    /// Print the metrics of a running mount, readable by a person.
    Stats {
        mountpoint: PathBuf,
        /// Print the raw Prometheus text instead.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Subcommand)]
enum CheckpointsCommand {
    /// List complete checkpoints, oldest first.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Drop a checkpoint (its manifest and its own files; shared objects are left to gc).
    Drop {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
}

#[derive(Subcommand)]
enum MountsCommand {
    /// List mount records, least recently updated first.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Forget a mount that will never run again (its local dir is gone), so that gc may delete
    /// the objects only it referenced. Refused while its record is young (a running mount
    /// rewrites it every 10 minutes) or while its local dir on this host is still its own.
    Forget {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        /// Refuse a record updated more recently than this.
        #[arg(long, default_value = "1h")]
        min_age: String,
    },
}

fn main() -> ExitCode {
    // Before any thread exists: every thread inherits this mask, so only the waiter below sees
    // SIGINT/SIGTERM and unmounting happens in one place.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    let _ = signals.thread_block();

    // Run as mount(8)'s helper (`mount -t fuse.statefs`): its arguments become `statefs mount
    // --daemon`'s.
    let mut raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv0 = raw.first().map(Path::new).and_then(Path::file_name);
    if argv0.is_some_and(|n| n == "mount.fuse.statefs" || n == "mount.statefs") {
        match helper::translate(&raw[1..]) {
            Ok(call) => {
                for (k, v) in &call.env {
                    // SAFETY: no other thread exists yet.
                    unsafe { std::env::set_var(k, v) };
                }
                raw = call.args;
                if call.fake {
                    // `mount -f`: check the options, mount nothing.
                    let cli = Cli::parse_from(&raw);
                    return match &cli.command {
                        Command::Mount(args) => match args.config() {
                            Ok(_) => ExitCode::SUCCESS,
                            Err(e) => fail(&e),
                        },
                        _ => unreachable!("the helper always mounts"),
                    };
                }
            }
            Err(e) => return fail(&e),
        }
    }
    let readiness = std::sync::Arc::new(parking_lot::Mutex::new(Readiness::from_env()));
    let cli = Cli::parse_from(&raw);
    if let Command::Mount(args) = &cli.command
        && let (Some(path), false) = (&args.log_file, args.daemon)
    {
        // Everything this process says (its log, its last words) goes to the file.
        match daemon::open_log(path) {
            Ok(f) => {
                let _ = nix::unistd::dup2_stderr(f);
            }
            Err(e) => return fail(&e),
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    statefs::progress::set_display(Box::new(progress::Progress::for_stderr()));

    let result = match &cli.command {
        Command::Mount(args) if args.daemon => detach(args, &raw),
        Command::Mount(args) => mount(args, signals, &readiness),
        Command::Unmount { mountpoint, lazy } => unmount(mountpoint, *lazy),
        Command::Stats { mountpoint, raw } => stats(mountpoint, *raw),
        Command::Checkpoint { mountpoint, dir } => checkpoint(mountpoint, dir),
        Command::Checkpoints { command } => checkpoints(command),
        Command::Mounts { command } => mounts(command),
        Command::Gc {
            remote,
            dry_run,
            min_age,
        } => gc(remote, *dry_run, min_age),
        Command::Fsck {
            remote,
            local_dir,
            drop_missing,
        } => fsck(remote, local_dir, *drop_missing),
        Command::Config => {
            print!("{}", options::config_doc());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Before the mount was live, this tells the --daemon parent or systemd why.
            readiness.lock().failed(&format!("{e:#}"));
            fail(&e)
        }
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("statefs: {e:#}");
    ExitCode::FAILURE
}

/// `statefs mount --daemon`: starts this command line without `--daemon` in the background and
/// returns once the mount is live.
fn detach(args: &MountArgs, raw: &[std::ffi::OsString]) -> anyhow::Result<()> {
    // Configuration errors are reported here, not in a log.
    let config = args.config()?;
    let timeout = options::parse_duration(&args.ready_timeout)
        .map_err(|why| anyhow!("bad --ready-timeout {:?}: {why}", args.ready_timeout))?;
    // Mounted already, by a live mount of the same local dir: done (`mount -a` run again).
    let same_dir =
        |d: &Path| std::fs::canonicalize(d).ok() == std::fs::canonicalize(&config.local_dir).ok();
    if statefs::mount::local_dir_of(&args.mountpoint).is_some_and(|d| same_dir(&d))
        && daemon::wait_until_live(&args.mountpoint, Duration::ZERO).is_ok()
    {
        eprintln!(
            "statefs: {} is mounted already (local dir {})",
            args.mountpoint.display(),
            config.local_dir.display()
        );
        return Ok(());
    }
    let log_file = args
        .log_file
        .clone()
        .unwrap_or_else(|| config.local_dir.join("statefs.log"));
    let log_file = std::path::absolute(&log_file).unwrap_or(log_file);
    // The child logs to its stderr, which is the log file.
    let child_args: Vec<std::ffi::OsString> = raw[1..]
        .iter()
        .filter(|a| *a != "--daemon")
        .cloned()
        .collect();
    let pid = daemon::detach(&daemon::Detach {
        args: child_args,
        log_file: log_file.clone(),
        timeout,
        mountpoint: args.mountpoint.clone(),
    })?;
    eprintln!(
        "statefs: mounted {} at {} (daemon pid {pid}, log {})",
        config.remote,
        args.mountpoint.display(),
        log_file.display()
    );
    Ok(())
}

fn mount(
    args: &MountArgs,
    signals: SigSet,
    readiness: &std::sync::Arc<parking_lot::Mutex<Readiness>>,
) -> anyhow::Result<()> {
    // Everything the daemon creates is its user's alone, also files made by code that sets no
    // mode of its own (object_store's file:// store): the bytes of a 0600 file on the mount
    // must not be readable outside it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let config = args.config()?;
    // A restart after a crash (systemd's Restart=, a remount) finds the killed daemon's dead
    // mount there.
    daemon::clear_dead_mount(&args.mountpoint)?;
    let p = statefs::mount::prepare(&config, &args.mountpoint, None)?;
    let mountpoint = p.mountpoint.clone();
    let mut session = fuser::Session::new(p.fs, &mountpoint, &p.fuser)
        .map_err(|e| anyhow!("mounting FUSE at {} failed: {e}", mountpoint.display()))?;
    p.core
        .set_page_cache(std::sync::Arc::new(statefs::fuse::NotifyStore(
            session.notifier(),
        )));
    let mut unmounter = session.unmount_callable();
    let on_signal = readiness.clone();
    std::thread::Builder::new()
        .name("statefs-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(signal = ?sig, "unmounting");
                on_signal.lock().stopping();
                if let Err(e) = unmounter.unmount() {
                    tracing::error!(error = %e, "unmount on signal failed");
                }
            }
        })?;
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
    // Ready once the mount answers (the session below serves it).
    let (live, status) = (
        readiness.clone(),
        format!("mounted {} at {}", config.remote, mountpoint.display()),
    );
    let at = mountpoint.clone();
    std::thread::Builder::new()
        .name("statefs-ready".into())
        .spawn(
            move || match daemon::wait_until_live(&at, Duration::from_secs(600)) {
                Ok(()) => live.lock().ready(&status),
                Err(e) => live.lock().failed(&format!("{e:#}")),
            },
        )?;
    let core = p.core.clone();
    session.run().context("FUSE session failed")?;
    drop(core);
    eprintln!("statefs: unmounted {}", mountpoint.display());
    Ok(())
}

fn unmount(mountpoint: &Path, lazy: bool) -> anyhow::Result<()> {
    use nix::mount::{MntFlags, umount2};
    let dead = statefs::mount::is_dead_mount(mountpoint);
    let flags = if lazy || dead {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match umount2(mountpoint, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(anyhow!(
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
                .context("running fusermount3")?;
            if status.success() {
                Ok(())
            } else {
                Err(anyhow!("fusermount3 -u {} failed", mountpoint.display()))
            }
        }
        Err(nix::errno::Errno::EINVAL) => {
            Err(anyhow!("{} is not a mount point", mountpoint.display()))
        }
        Err(e) => Err(anyhow!("unmounting {}: {e}", mountpoint.display())),
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

fn stats(mountpoint: &Path, raw: bool) -> anyhow::Result<()> {
    let mut out = String::new();
    let local = statefs::mount::local_dir_of(mountpoint)
        .ok_or_else(|| anyhow!("{} is not a statefs mount", mountpoint.display()))?;
    let addr_file = local.join("metrics.addr");
    let addr = std::fs::read_to_string(&addr_file)
        .map_err(|e| anyhow!("reading {}: {e}", addr_file.display()))?;
    let text = statefs::metrics::fetch(addr.trim())
        .map_err(|e| anyhow!("metrics of the mount at {}: {e}", addr.trim()))?;
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
        "cold      block hits {}, block misses {}, reads waiting for the store {}",
        get(m::BLOCK_HITS),
        get(m::BLOCK_MISSES),
        get(&format!("{}{{pool=\"reads\"}}", m::STORE_QUEUE))
    );
    outln!(
        out,
        "warm-up   {} files, {} into the page cache in {:.1} s, {} GETs in flight, {} failed",
        get(m::WARM_FILES),
        mib(get(m::WARM_BYTES)),
        get(m::WARM_SECONDS),
        get(m::WARM_IN_FLIGHT),
        get(m::WARM_FAILURES)
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
        "uploads   {} files, {}, {} in flight, {} waiting; downloads {}",
        get(m::UPLOADS),
        mib(get(m::UPLOAD_BYTES)),
        get(m::UPLOADS_IN_FLIGHT),
        get(&format!("{}{{pool=\"uploads\"}}", m::STORE_QUEUE)),
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

fn checkpoint(mountpoint: &Path, dir: &Path) -> anyhow::Result<()> {
    let local = statefs::mount::local_dir_of(mountpoint)
        .ok_or_else(|| anyhow!("{} is not a statefs mount", mountpoint.display()))?;
    let mnt = std::fs::canonicalize(mountpoint)?;
    let dir = std::fs::canonicalize(dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    let rel = dir.strip_prefix(&mnt).map_err(|_| {
        anyhow!(
            "{} is not inside the mount {}",
            dir.display(),
            mnt.display()
        )
    })?;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("dir", &rel.to_string_lossy())
        .finish();
    // The mount does the work; a spinner (on a terminal) says it is under way.
    let waiting = statefs::progress::task(&format!("publishing {}", dir.display()), None);
    let id = statefs::mount::post_control(&local, &format!("/checkpoint?{query}"))
        .map_err(anyhow::Error::msg)?;
    waiting.done();
    let id = id.trim();
    let remote = remote_of(&local).unwrap_or_default();
    print_all(&format!(
        "published {}/checkpoints/{id}\n{id}\n",
        remote.trim_end_matches('/')
    ));
    Ok(())
}

/// The `--remote` a mount was started with, from its mount record's neighbour file.
fn remote_of(local: &Path) -> Option<String> {
    std::fs::read_to_string(local.join("REMOTE"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn checkpoints(command: &CheckpointsCommand) -> anyhow::Result<()> {
    match command {
        CheckpointsCommand::List { remote } => {
            let (store, _rt) = remote.open()?;
            let list = statefs::checkpoint::list(store.as_ref())?;
            let mut out = String::from(
                "id                      created (UTC)        files       bytes  mount / claimed by\n",
            );
            for c in list {
                let created = chrono_like(c.created_ms);
                outln!(
                    out,
                    "{:<23} {created}  {:>5} {:>11}  {}{}",
                    c.id,
                    c.files,
                    c.bytes,
                    c.mount_id,
                    c.claimed_by
                        .map(|m| format!(" / {}", m.mount_id))
                        .unwrap_or_default()
                );
            }
            print_all(&out);
            Ok(())
        }
        CheckpointsCommand::Drop { remote, id } => {
            let (store, _rt) = remote.open()?;
            statefs::checkpoint::load_manifest(store.as_ref(), id)?;
            statefs::checkpoint::drop_checkpoint(store.as_ref(), id)?;
            print_all(&format!(
                "dropped {id}; run statefs gc to delete the objects only it referenced\n"
            ));
            Ok(())
        }
    }
}

fn mounts(command: &MountsCommand) -> anyhow::Result<()> {
    match command {
        MountsCommand::List { remote } => {
            let (store, _rt) = remote.open()?;
            let records = statefs::checkpoint::list_mounts(store.as_ref())?;
            let now = statefs::checkpoint::now_ms();
            let mut out = String::from(
                "mount id                              updated (UTC)          age   objects  host:local dir\n",
            );
            for r in records {
                outln!(
                    out,
                    "{:<37} {}  {:>6}  {:>7}  {}:{}",
                    r.mount_id,
                    chrono_like(r.updated_ms),
                    short_age(now.saturating_sub(r.updated_ms)),
                    r.keys.len(),
                    r.host,
                    r.local_dir
                );
            }
            print_all(&out);
            Ok(())
        }
        MountsCommand::Forget {
            remote,
            id,
            min_age,
        } => {
            let min_age = parse_age(min_age)?;
            let (store, _rt) = remote.open()?;
            let host = statefs::checkpoint::host_name();
            let r = statefs::checkpoint::forget_mount(store.as_ref(), id, min_age, &host)?;
            print_all(&format!(
                "forgot mount {id} ({}:{}, {} objects); run statefs gc to delete those no checkpoint references\n",
                r.host,
                r.local_dir,
                r.keys.len()
            ));
            Ok(())
        }
    }
}

/// `3d`, `5h`, `12m` or `40s`: the largest whole unit of an age in milliseconds.
fn short_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time in milliseconds (UTC), without a date library.
fn chrono_like(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn gc(remote: &RemoteArgs, dry_run: bool, min_age: &str) -> anyhow::Result<()> {
    let min_age = parse_age(min_age)?;
    let (store, _rt) = remote.open()?;
    let report = statefs::checkpoint::collect_garbage(store.as_ref(), min_age, dry_run)?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut out = String::new();
    for (key, size) in &report.garbage {
        outln!(out, "{verb} {key} ({size} bytes)");
    }
    for key in &report.abandoned {
        outln!(out, "{verb} {key} (left by an interrupted checkpoint)");
    }
    let bytes: u64 = report.garbage.iter().map(|(_, s)| s).sum();
    outln!(
        out,
        "{verb} {} objects ({bytes} bytes) and {} abandoned checkpoint files; {} referenced; {} belong to mounts with a record (they release their own); {} unreferenced but younger than --min-age",
        report.garbage.len(),
        report.abandoned.len(),
        report.referenced,
        report.owned_by_mounts,
        report.too_young
    );
    print_all(&out);
    Ok(())
}

/// `--min-age`: a duration in the registry's syntax (`30s`, `1h`, `2d`; a bare number is ms).
fn parse_age(s: &str) -> anyhow::Result<Duration> {
    options::parse_duration(s).map_err(|why| anyhow!("bad --min-age {s:?}: {why}"))
}

fn fsck(remote: &RemoteArgs, local_dir: &Path, drop_missing: bool) -> anyhow::Result<()> {
    let (store, _rt) = remote.open()?;
    let mut out = String::new();
    if drop_missing {
        for path in statefs::fsck::drop_missing(local_dir)? {
            outln!(
                out,
                "DROPPED  {path}: its local file was gone; the name is removed"
            );
        }
    }
    let r = statefs::fsck::fsck(local_dir, store.as_ref())?;
    for (path, key) in &r.missing_objects {
        outln!(out, "MISSING  {path}: object {key} is not in the store");
    }
    for (path, key, want, got) in &r.size_mismatches {
        outln!(
            out,
            "SIZE     {path}: object {key} has {got} bytes, the journal says {want}"
        );
    }
    for path in &r.missing_local {
        outln!(out, "MISSING  {path}: its local file is gone");
    }
    for (key, size) in &r.orphans {
        outln!(
            out,
            "orphan   {key} ({size} bytes): referenced by nothing (the next mount of this dir releases it)"
        );
    }
    outln!(
        out,
        "{} files, {} objects checked, {} missing, {} size mismatches, {} missing local files, {} orphans, {} never synced",
        r.files,
        r.objects_checked,
        r.missing_objects.len(),
        r.size_mismatches.len(),
        r.missing_local.len(),
        r.orphans.len(),
        r.unsynced
    );
    print_all(&out);
    if r.damaged() {
        Err(anyhow!("damage found"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row 11 of the safety issue: an age too large for a duration is an error, never a wrap
    /// to a small age that would let gc delete fresh garbage.
    #[test]
    fn ages_parse_and_overflow_is_an_error() {
        assert_eq!(parse_age("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_age("90min").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_age("2d").unwrap(), Duration::from_secs(172_800));
        let err = parse_age("1152921504606846976h").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(parse_age("5 parsecs").is_err());
    }
}
