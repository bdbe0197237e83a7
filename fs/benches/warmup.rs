//! How fast a database on statefs gets back to speed after a start on a distant store, beside the
//! same database on local disk, in one run: db_bench `readrandom` (`THREADS` readers, default 8)
//! for `DURATION` seconds (60) against
//! 1. local disk (the baseline);
//! 2. a **cold remount**: the same mount's local dir, its cache dir lost, first with the warm-up
//!    off (`statefs.cache.warm.memory` 0: blocks fetched on demand), then as mounted by default;
//! 3. a **restore** of a checkpoint of the database into a fresh local dir and cache dir;
//!
//! with the store answering every call after `LATENCY_MS` (20; a `file://` store behind the fault
//! layer, or the S3 test server at `S3_ENDPOINT` with the latency on top) and the cache limited to
//! `CACHE_MB` (64). The database: `KEYS` keys (4M, 100-byte values, no compression, compacted into
//! 8 MB SSTs, ~450 MB), filled and compacted with no latency. The kernel page cache is dropped
//! before every run. Prints ops/s per second for the first 30 s, the time to 50% and 90% of local
//! (local: the median second of its run), the ratio over the whole run, and what the cache holds
//! against its limit at the end.
//!
//! Root (it mounts, drops caches). `cargo bench -p statefs --bench warmup`; `scripts/bench-warmup.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use statefs::store::{FailingRemote, FaultPlan, RemoteSpec, RemoteStore};
use statefs::{MountConfig, MountHandle};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    keys: u64,
    threads: u64,
    seconds: u64,
}

impl Setup {
    fn table(&self) -> Vec<String> {
        [
            "--value_size=100",
            "--compression_type=none",
            "--write_buffer_size=8388608",
            "--target_file_size_base=8388608",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--num={}", self.keys)])
        .collect()
    }

    fn db_bench(&self, db: &Path, args: &[String]) -> std::process::Output {
        let out = Command::new("db_bench")
            .arg(format!("--db={}", db.display()))
            .args(self.table())
            .args(args)
            .output()
            .expect("db_bench runs (scripts/setup.sh installs rocksdb-tools)");
        assert!(
            out.status.success(),
            "db_bench {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Fills and compacts a database at `db`.
    fn fill(&self, db: &Path) {
        self.db_bench(
            db,
            &[
                "--benchmarks=fillrandom".into(),
                "--threads=1".into(),
                "--seed=42".into(),
            ],
        );
        self.db_bench(
            db,
            &["--use_existing_db=1".into(), "--benchmarks=compact".into()],
        );
    }

    /// readrandom for `seconds`: ops/s in each second (db_bench's report file, all threads), and
    /// the seconds db_bench spent besides them (opening and closing the database).
    fn read(&self, db: &Path, report: &Path) -> (Vec<f64>, f64) {
        drop_caches();
        let t = std::time::Instant::now();
        let out = self.db_bench(
            db,
            &[
                "--use_existing_db=1".into(),
                "--benchmarks=readrandom".into(),
                format!("--threads={}", self.threads),
                format!("--duration={}", self.seconds),
                "--cache_size=8388608".into(),
                "--open_files=-1".into(),
                "--disable_auto_compactions=1".into(),
                "--seed=7".into(),
                "--report_interval_seconds=1".into(),
                format!("--report_file={}", report.display()),
            ],
        );
        // "(found of asked found)": a database that is not there reads nothing, fast.
        let text = String::from_utf8_lossy(&out.stdout);
        let found: u64 = text
            .lines()
            .filter(|l| l.ends_with("found)"))
            .find_map(|l| {
                l.rsplit_once('(')?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        assert!(
            found > 0,
            "readrandom at {} found no key: {text}",
            db.display()
        );
        let outside = t.elapsed().as_secs_f64() - self.seconds as f64;
        let per_second = std::fs::read_to_string(report)
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(1)?.trim().parse().ok())
            .collect();
        (per_second, outside.max(0.0))
    }
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Seconds until the first second at or above `level`, if any.
fn time_to(per_second: &[f64], level: f64) -> Option<usize> {
    per_second.iter().position(|&x| x >= level).map(|i| i + 1)
}

struct Store {
    faults: FaultPlan,
    s3: Option<String>,
}

impl Store {
    fn mount(&self, cfg: &MountConfig, mnt: &Path) -> MountHandle {
        let rt = statefs::mount::runtime().unwrap();
        let store = RemoteSpec::parse(&cfg.remote)
            .unwrap()
            .open(&cfg.s3, rt)
            .unwrap();
        let remote: Arc<dyn RemoteStore> = Arc::new(FailingRemote::new(store, self.faults.clone()));
        MountHandle::mount_with_remote(cfg, mnt, Some(remote)).unwrap()
    }

    fn config(&self, root: &Path, local: &str, cache: &str) -> MountConfig {
        let remote = match &self.s3 {
            Some(_) => format!(
                "s3://{}/warmup-{}",
                std::env::var("S3_BUCKET").unwrap_or_else(|_| "statefs-bench".into()),
                std::process::id()
            ),
            None => format!("file://{}", root.join("store").display()),
        };
        let mut cfg = MountConfig::new(remote, root.join(local), root.join(cache));
        if let Some(endpoint) = &self.s3 {
            cfg.s3 = statefs::store::S3Options {
                endpoint: Some(endpoint.clone()),
                region: Some("us-east-1".into()),
                access_key_id: Some("testing".into()),
                secret_access_key: Some("testing".into()),
                allow_http: true,
                request_timeout: None,
            };
        }
        if let Some(n) = std::env::var("READ_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            cfg.cache.blocks.in_flight = n;
        }
        cfg
    }
}

struct Run {
    name: &'static str,
    per_second: Vec<f64>,
    /// Seconds of db_bench outside the timed reads (open and close).
    outside: f64,
    held: Option<(u64, u64)>,
    /// Warm-up: files, MB into the page cache, seconds to warm (statefs_warm_*).
    warm: Option<(u64, u64, f64)>,
}

fn main() {
    let setup = Setup {
        keys: env("KEYS", 4_000_000),
        threads: env("THREADS", 8),
        seconds: env("DURATION", 60),
    };
    let latency = Duration::from_millis(env("LATENCY_MS", 20));
    let cache_limit = env("CACHE_MB", 64) << 20;
    let scratch = tempfile::Builder::new()
        .prefix("statefs-warmup-")
        .tempdir_in(std::env::var_os("STATEFS_TEST_TMP").unwrap_or_else(|| "/var/tmp".into()))
        .unwrap();
    let root = scratch.path();
    let mnt: PathBuf = root.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let store = Store {
        faults: FaultPlan::default(),
        s3: std::env::var("S3_ENDPOINT").ok(),
    };

    // The same database on local disk and on statefs (no latency, no cache limit), checkpointed.
    let local_db = root.join("localdisk/db");
    std::fs::create_dir_all(root.join("localdisk")).unwrap();
    setup.fill(&local_db);
    let cfg = store.config(root, "local", "cache");
    let checkpoint = {
        let m = store.mount(&cfg, &mnt);
        setup.fill(&mnt.join("db"));
        let published = m.checkpoint(&mnt.join("db"), 0).unwrap();
        m.unmount().unwrap();
        published.id
    };

    let (per_second, outside) = setup.read(&local_db, &root.join("local.csv"));
    let mut runs = vec![Run {
        name: "local disk",
        per_second,
        outside,
        held: None,
        warm: None,
    }];
    // `db`: where the database is on the mount (a restore puts the checkpoint's files at its root).
    let mut limited = |mut cfg: MountConfig, name: &'static str, db: &str| {
        cfg.cache.size_limit = cache_limit;
        let m = store.mount(&cfg, &mnt);
        store.faults.set_latency(latency);
        let (per_second, outside) = setup.read(&mnt.join(db), &root.join(format!("{name}.csv")));
        let held = (m.core().cache_stats().used, cache_limit);
        let w = m.core().warm_metrics();
        let warm = (
            w.files.load(Ordering::Relaxed),
            w.bytes.load(Ordering::Relaxed) >> 20,
            w.warm_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        store.faults.set_latency(Duration::ZERO);
        m.unmount().unwrap();
        runs.push(Run {
            name,
            per_second,
            outside,
            held: Some(held),
            warm: Some(warm),
        });
    };
    // Cold remount: the cache dir is gone. First with the warm-up off (what it replaces: reads
    // fetch their blocks on demand), then as a mount starts by default.
    std::fs::remove_dir_all(root.join("cache")).unwrap();
    let mut off = store.config(root, "local", "cache");
    off.cache.warm.memory = 0;
    limited(off, "cold remount, warm-up off", "db");
    std::fs::remove_dir_all(root.join("cache")).unwrap();
    limited(store.config(root, "local", "cache"), "cold remount", "db");
    // Restore into fresh dirs.
    let mut restore = store.config(root, "restored-local", "restored-cache");
    restore.restore = Some(statefs::config::RestoreFrom {
        id: checkpoint,
        claim: false,
    });
    limited(restore, "restore", "");

    let local = median(&runs[0].per_second);
    println!(
        "db_bench readrandom, {} keys, {} threads, {} s; store {} + {} ms per call; cache limit {} MB; {} cold-read threads",
        setup.keys,
        setup.threads,
        setup.seconds,
        if store.s3.is_some() {
            "S3 (moto)"
        } else {
            "file://"
        },
        latency.as_millis(),
        cache_limit >> 20,
        cfg.cache.blocks.in_flight
    );
    println!();
    print!("| second |");
    for r in &runs {
        print!(" {} |", r.name);
    }
    println!();
    println!("|---|{}", "---|".repeat(runs.len()));
    for s in 0..30.min(setup.seconds as usize) {
        print!("| {} |", s + 1);
        for r in &runs {
            print!(" {:.0} |", r.per_second.get(s).copied().unwrap_or(0.0));
        }
        println!();
    }
    println!();
    println!(
        "| start | db open + close, s | time to 50% of local | time to 90% of local | ratio over {} s | cache held / limit | warm-up: files, MB, seconds |",
        setup.seconds
    );
    println!("|---|---|---|---|---|---|---|");
    let total = |r: &Run| r.per_second.iter().sum::<f64>();
    for r in &runs {
        let t =
            |f: f64| time_to(&r.per_second, f * local).map_or("never".into(), |s| format!("{s} s"));
        println!(
            "| {} | {:.2} | {} | {} | {:.2}x | {} | {} |",
            r.name,
            r.outside,
            t(0.5),
            t(0.9),
            total(r) / total(&runs[0]),
            r.held.map_or(String::new(), |(u, l)| format!(
                "{} / {} MB ({:.0}%)",
                u >> 20,
                l >> 20,
                u as f64 * 100.0 / l as f64
            )),
            r.warm
                .map_or(String::new(), |(f, mb, s)| format!("{f}, {mb}, {s:.2}"))
        );
    }
}
