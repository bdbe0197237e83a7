//! Metadata operations of one mount against the number of threads: each thread looks up and
//! stats its own files (`FsCore::lookup` + `FsCore::getattr`, what the FUSE adapter calls) for a
//! fixed time, with 1 thread and then with 8, while another thread keeps writing and fsyncing
//! SSTs to a store that takes `LATENCY_MS` (default 200) per call. Prints operations per second
//! and the ratio 8 threads / 1 thread (the baseline, same run): at least 1.0 means metadata
//! does not serialize behind uploads, journal writes or each other.
//!
//! No FUSE and no root: the core only. `cargo bench -p statefs --bench metadata_scaling`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use statefs::FsCore;
use statefs::core::Caller;
use statefs::store::{FailingRemote, FaultPlan, ObjectStoreRemote, RemoteStore};

const FILES_PER_THREAD: usize = 64;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Lookups + getattrs per second of `threads` threads over their own files, for `run`.
fn stat_rate(core: &Arc<FsCore>, dir: u64, threads: usize, run: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (core, done) = (core.clone(), done.clone());
            std::thread::spawn(move || {
                let names: Vec<String> = (0..FILES_PER_THREAD)
                    .map(|i| format!("t{t}-{i}.log"))
                    .collect();
                let mut n = 0u64;
                while start.elapsed() < run {
                    for name in &names {
                        let a = core.lookup(dir, name).unwrap();
                        core.getattr(a.ino).unwrap();
                        n += 2;
                    }
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let latency = Duration::from_millis(env("LATENCY_MS", 200));
    let run = Duration::from_millis(env("BENCH_MS", 2000));
    let scratch = tempfile::tempdir().unwrap();
    let rt = statefs::mount::runtime().unwrap();
    let faults = FaultPlan::default();
    let remote: Arc<dyn RemoteStore> = Arc::new(FailingRemote::new(
        ObjectStoreRemote::in_memory(rt.clone()),
        faults.clone(),
    ));
    let core = FsCore::start(
        &scratch.path().join("local"),
        &scratch.path().join("cache"),
        remote,
        Default::default(),
    )
    .unwrap();
    let me = Caller { uid: 0, gid: 0 };
    let dir = core.mkdir(1, "db", 0o755, me).unwrap().ino;
    for t in 0..8 {
        for i in 0..FILES_PER_THREAD {
            let (_, o) = core
                .create(dir, &format!("t{t}-{i}.log"), 0o644, libc::O_WRONLY, me)
                .unwrap();
            core.release(o.fh).unwrap();
        }
    }
    faults.set_latency(latency);
    // The writer: one SST after another, each written and fsynced (uploaded) while the
    // metadata threads run, as RocksDB's flushes and compactions do.
    let stop = Arc::new(AtomicBool::new(false));
    let uploads = Arc::new(AtomicU64::new(0));
    let writer = {
        let (core, stop, uploads) = (core.clone(), stop.clone(), uploads.clone());
        std::thread::spawn(move || {
            let data = vec![7u8; 1 << 20];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("{i:06}.sst");
                let (_, o) = core.create(dir, &name, 0o644, libc::O_WRONLY, me).unwrap();
                core.write(o.fh, 0, &data).unwrap();
                core.fsync(o.fh, false).unwrap();
                core.release(o.fh).unwrap();
                core.unlink(dir, &name).unwrap();
                uploads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let one = stat_rate(&core, dir, 1, run);
    let eight = stat_rate(&core, dir, 8, run);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    println!(
        "lookup + getattr of distinct files, {} ms per store call, SSTs uploading meanwhile ({} fsynced)",
        latency.as_millis(),
        uploads.load(Ordering::Relaxed)
    );
    println!("| threads | operations/s |");
    println!("|---|---|");
    println!("| 1 | {one:.0} |");
    println!("| 8 | {eight:.0} |");
    println!("8 threads / 1 thread: {:.2}x", eight / one);
    core.shutdown().unwrap();
}
