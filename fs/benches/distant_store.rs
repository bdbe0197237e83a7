//! A mount on a distant store: a `file://` store behind the fault layer, every call delayed as a
//! network store's would be (`LATENCY_MS`, default 20). Measures, in one run:
//! 1. cold random 4 KB reads with one reader and with eight (baseline: one reader): GETs in
//!    flight are bounded by `statefs.fuse.store-threads`, not by the FUSE workers;
//! 2. the slowest metadata operation (create + hard link + stat of a small file) while four
//!    fsyncs upload (at ten times the latency, so they last), against the same operations on an
//!    idle mount;
//! 3. a checkpoint publish of a database directory (hard-linked SSTs, MANIFEST, CURRENT, OPTIONS)
//!    keeping one checkpoint, so that each publish drops the one before: with retention on the
//!    publishing thread, and left to the mount's retention worker (what forst does).
//!
//! Root (it mounts). `cargo bench -p statefs --bench distant_store`.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statefs::store::{FailingRemote, FaultPlan, RemoteSpec, RemoteStore};
use statefs::{MountConfig, MountHandle};

const FILES: usize = 8;
const FILE_SIZE: u64 = 8 << 20;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mount(cfg: &MountConfig, mnt: &Path, faults: &FaultPlan) -> MountHandle {
    let rt = statefs::mount::runtime().unwrap();
    let store = RemoteSpec::parse(&cfg.remote)
        .unwrap()
        .open(&Default::default(), rt)
        .unwrap();
    let remote: Arc<dyn RemoteStore> = Arc::new(FailingRemote::new(store, faults.clone()));
    MountHandle::mount_with_remote(cfg, mnt, Some(remote)).unwrap()
}

/// Reads/s of `readers` threads, each making `per` random 4 KB reads over the files.
fn cold_reads(mnt: &Path, readers: usize, per: usize) -> f64 {
    let t = Instant::now();
    let threads: Vec<_> = (0..readers)
        .map(|n| {
            let mnt = mnt.to_path_buf();
            std::thread::spawn(move || {
                let files: Vec<_> = (0..FILES)
                    .map(|i| std::fs::File::open(mnt.join(format!("{i}.sst"))).unwrap())
                    .collect();
                let mut x = (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut buf = vec![0u8; 4096];
                for _ in 0..per {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let page = (x >> 8) % (FILE_SIZE / 4096);
                    files[(x % FILES as u64) as usize]
                        .read_exact_at(&mut buf, page * 4096)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (readers * per) as f64 / t.elapsed().as_secs_f64()
}

/// The slowest of 20 create + hard link + stat of small files, in ms.
fn slowest_metadata_op(mnt: &Path, tag: &str) -> f64 {
    let mut worst = Duration::ZERO;
    for j in 0..20 {
        let t = Instant::now();
        let a = mnt.join(format!("{tag}-{j}.log"));
        std::fs::write(&a, b"x").unwrap();
        std::fs::hard_link(&a, mnt.join(format!("{tag}-{j}.link"))).unwrap();
        std::fs::metadata(&a).unwrap();
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    worst.as_secs_f64() * 1000.0
}

fn main() {
    let latency = Duration::from_millis(env("LATENCY_MS", 20));
    let scratch = tempfile::Builder::new()
        .prefix("statefs-bench-")
        .tempdir_in(std::env::var_os("STATEFS_TEST_TMP").unwrap_or_else(|| "/var/tmp".into()))
        .unwrap();
    let root = scratch.path();
    let mnt = root.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut cfg = MountConfig::new(
        format!("file://{}", root.join("remote").display()),
        root.join("local"),
        root.join("cache"),
    );
    // No local copies: every read of the files goes to the store (or to the in-memory blocks).
    cfg.cache.size_limit = 4096;
    let faults = FaultPlan::default();
    {
        let m = mount(&cfg, &mnt, &faults);
        for i in 0..FILES {
            std::fs::write(
                mnt.join(format!("{i}.sst")),
                vec![i as u8; FILE_SIZE as usize],
            )
            .unwrap();
        }
        m.unmount().unwrap();
    }
    std::fs::remove_dir_all(root.join("cache")).unwrap();
    let m = mount(&cfg, &mnt, &faults);
    faults.set_latency(latency);
    let one = cold_reads(&mnt, 1, 40);
    let eight = cold_reads(&mnt, 8, 40);
    println!(
        "cold random 4 KB reads, {} ms per store call, {} store threads, {} FUSE workers",
        latency.as_millis(),
        cfg.store_threads,
        cfg.fuse_threads
    );
    println!("| readers | reads/s |");
    println!("|---|---|");
    println!("| 1 | {one:.0} |");
    println!("| 8 | {eight:.0} |");
    println!(
        "8 readers / 1 reader: {:.1}x; most store calls in flight: {}",
        eight / one,
        faults.max_in_flight()
    );

    let idle = slowest_metadata_op(&mnt, "idle");
    // Uploads ten times slower, so that they last through the metadata operations.
    faults.set_latency(latency * 10);
    let syncs: Vec<_> = (0..4)
        .map(|i| {
            let mut f = std::fs::File::create(mnt.join(format!("out{i}.sst"))).unwrap();
            std::io::Write::write_all(&mut f, &vec![1u8; 1 << 20]).unwrap();
            f
        })
        .collect();
    let syncing: Vec<_> = syncs
        .into_iter()
        .map(|f| std::thread::spawn(move || f.sync_all().unwrap()))
        .collect();
    let busy = slowest_metadata_op(&mnt, "busy");
    for s in syncing {
        s.join().unwrap();
    }
    println!();
    println!("slowest create + hard link + stat of a small file, of 20");
    println!("| mount | ms |");
    println!("|---|---|");
    println!("| idle | {idle:.1} |");
    println!(
        "| four fsyncs uploading ({} ms per store call) | {busy:.1} |",
        latency.as_millis() * 10
    );

    faults.set_latency(latency);
    let db = mnt.join("db");
    std::fs::create_dir(&db).unwrap();
    for i in 0..2 {
        std::fs::hard_link(
            mnt.join(format!("{i}.sst")),
            db.join(format!("00000{i}.sst")),
        )
        .unwrap();
    }
    std::fs::write(db.join("MANIFEST-000005"), vec![7u8; 20 << 10]).unwrap();
    std::fs::write(db.join("OPTIONS-000007"), vec![7u8; 6 << 10]).unwrap();
    std::fs::write(db.join("CURRENT"), b"MANIFEST-000005\n").unwrap();
    let publish_ms = |defer: bool| -> f64 {
        let mut ms: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                m.checkpoint_with(&db, 1, defer).unwrap();
                let took = t.elapsed().as_secs_f64() * 1e3;
                m.core().settle_retention();
                took
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    };
    let inline = publish_ms(false);
    let deferred = publish_ms(true);
    println!();
    println!(
        "checkpoint publish keeping one (each drops the previous), {} ms per store call, median of 7",
        latency.as_millis()
    );
    println!("| retention | publish ms |");
    println!("|---|---|");
    println!("| on the publishing thread | {inline:.0} |");
    println!("| on the mount's retention worker | {deferred:.0} |");
    m.unmount().unwrap();
}
