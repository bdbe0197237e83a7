//! The async State API against the sync one on ForSt over a distant store, beside the RocksDB
//! backend on local disk, in one run: a keyed count (value state `u64 -> u64`, +1 per record) over
//! `KEYS` keys, records drawn Zipf-skewed (`ZIPF`, default 0.99, as Nexmark's hot bids), on ForSt
//! whose store answers every call after `LATENCY_MS` (20: a `file://` store behind the fault
//! layer), with the mount's file cache at 100%, 10% and 0% of the state. Per configuration:
//! records/s, p99 record latency (from `process` to the end of the record's body; sync: one record)
//! and remote GETs per 1,000 records. Root (ForSt mounts).
//!
//! The state is loaded with no latency, the database compacted, and the mount's cache limited
//! before the timed records run; RocksDB's block cache (`BLOCK_CACHE_MB`, 8) and the mount's
//! cold-block memory (4 MiB) are small beside the state, so reads that miss the file cache go to
//! the store.
//!
//!   KEYS=10000000 RECORDS=200000 SYNC_RECORDS=300 LATENCY_MS=20 cargo bench -p statefs-backend --bench async_state
//!
//! `IN_FLIGHT` and `BUFFER_SIZE` set the controller's limits (Flink's defaults: 6000, 1000);
//! `PCTS=100` runs only that cache size; `READ_THREADS`, `STORE_THREADS`, `FUSE_THREADS` set the
//! backend's read threads (384), the mount's cold-read threads (`statefs.cache.block.in-flight`,
//! 384) and FUSE workers (8): each cold
//! read in flight holds one of each, and at 20 ms per request the GETs in flight bound throughput.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use statefs_backend::asyncstate::{AsyncKeyed, AsyncOptions};
use statefs_backend::keygroup::KeyGroupRange;
use statefs_backend::rocks_options::RocksTuning;
use statefs_backend::states::Keyed;
use statefs_backend::{ForstBackend, RocksBackend, StateBackend};
use statefs_store::{
    FailingRemote, FaultPlan, MetricsRemote, RemoteMetrics, RemoteSpec, RemoteStore,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Keys of `n` records, Zipf(`s`) over `keys` keys (rank 1 hottest), scattered so hot keys are
/// not neighbours; one fixed sequence.
fn zipf_keys(n: usize, keys: u64, s: f64, seed: u64) -> Vec<u64> {
    // Inverse CDF over a table of cumulative weights (keys up to a few million).
    let mut cdf = Vec::with_capacity(keys as usize);
    let mut total = 0.0;
    for r in 1..=keys {
        total += 1.0 / (r as f64).powf(s);
        cdf.push(total);
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64 * total;
            let rank = cdf.partition_point(|c| *c < u) as u64;
            rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % keys
        })
        .collect()
}

fn tuning(block_cache_mb: u64) -> RocksTuning {
    RocksTuning::from_pairs(&[
        (
            "state.backend.rocksdb.block.cache-size",
            &format!("{block_cache_mb}mb"),
        ),
        (
            "state.backend.rocksdb.compaction.level.target-file-size-base",
            "8mb",
        ),
        (
            "state.backend.rocksdb.executor.read-io-parallelism",
            &env("READ_THREADS", 384).to_string(),
        ),
    ])
    .unwrap()
}

fn load<B: StateBackend>(kb: &mut Keyed<u64, B>, keys: u64) {
    let count = kb.value_state::<u64>("count", None).unwrap();
    for k in 0..keys {
        kb.set_current_key(&k).unwrap();
        count.update(kb, &1).unwrap();
    }
}

struct Result {
    records_s: f64,
    p99_ms: f64,
    gets_per_record: f64,
}

fn p99(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() * 99 / 100)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The sync API: one record after another.
fn run_sync<B: StateBackend>(
    kb: &mut Keyed<u64, B>,
    keys: &[u64],
    gets: &dyn Fn() -> u64,
) -> Result {
    let count = kb.value_state::<u64>("count", None).unwrap();
    let before = gets();
    let mut lat = Vec::with_capacity(keys.len());
    let t = Instant::now();
    for k in keys {
        let r = Instant::now();
        kb.set_current_key(k).unwrap();
        let n = count.value(kb).unwrap().unwrap_or(0);
        count.update(kb, &(n + 1)).unwrap();
        lat.push(r.elapsed());
    }
    Result {
        records_s: keys.len() as f64 / t.elapsed().as_secs_f64(),
        p99_ms: p99(lat),
        gets_per_record: (gets() - before) as f64 / keys.len() as f64,
    }
}

/// The async API: records in flight, per-key order kept by the controller.
fn run_async<B: StateBackend + 'static>(
    kb: Keyed<u64, B>,
    keys: &[u64],
    gets: &dyn Fn() -> u64,
) -> (Result, Keyed<u64, B>) {
    let opts = AsyncOptions {
        in_flight_records_limit: env("IN_FLIGHT", 6000) as usize,
        buffer_size: env("BUFFER_SIZE", 1000) as usize,
        ..Default::default()
    };
    let mut ctl = AsyncKeyed::new(kb, opts);
    let count = ctl.value_state::<u64>("count", None).unwrap();
    let lat = Rc::new(RefCell::new(Vec::with_capacity(keys.len())));
    let before = gets();
    let t = Instant::now();
    for k in keys {
        let (count, lat, start) = (count.clone(), lat.clone(), Instant::now());
        ctl.process(k, move |ctx| async move {
            let n = count.value(&ctx).await?.unwrap_or(0);
            count.update(&ctx, n + 1).await?;
            lat.borrow_mut().push(start.elapsed());
            Ok(())
        })
        .unwrap();
    }
    ctl.drain().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let kb = ctl.into_keyed().unwrap();
    let lat = lat.borrow().clone();
    (
        Result {
            records_s: keys.len() as f64 / secs,
            p99_ms: p99(lat),
            gets_per_record: (gets() - before) as f64 / keys.len() as f64,
        },
        kb,
    )
}

fn main() {
    let keys = env("KEYS", 10_000_000);
    let records = env("RECORDS", 200_000) as usize;
    let sync_records = env("SYNC_RECORDS", 300) as usize;
    let latency = Duration::from_millis(env("LATENCY_MS", 20));
    let block_cache_mb = env("BLOCK_CACHE_MB", 8);
    let zipf = env("ZIPF_PERMILLE", 990) as f64 / 1000.0;
    let stream = zipf_keys(records, keys, zipf, 1);
    let range = KeyGroupRange::all(128);
    println!(
        "keyed count, {keys} keys, Zipf {zipf}, {records} records (sync: {sync_records}), \
         store {} + {} ms per call, one task thread, {} cores",
        if std::env::var("S3_ENDPOINT").is_ok() {
            "S3 (moto)"
        } else {
            "file://"
        },
        latency.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // The baseline: the RocksDB backend on local disk, sync API.
    let dir = tempfile::tempdir().unwrap();
    let mut local = Keyed::new(
        RocksBackend::open_tuned(dir.path(), range, 128, None, tuning(block_cache_mb)).unwrap(),
    );
    load(&mut local, keys);
    local.backend().compact_all().unwrap();
    let base = run_sync(&mut local, &stream, &|| 0);
    drop(local);
    println!(
        "| configuration | records/s | x local RocksDB | p99 record latency, ms | GETs per 1,000 records |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| RocksDB, local disk, sync | {:.0} | 1.00 | {:.2} | |",
        base.records_s, base.p99_ms
    );

    let pcts: Vec<u64> = std::env::var("PCTS")
        .unwrap_or_else(|_| "100,10,0".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    for pct in pcts {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("mnt")).unwrap();
        let store_dir = root.path().join("store");
        // `S3_ENDPOINT` (and `S3_BUCKET`): an S3 server (the script starts moto) instead of a
        // `file://` store; the injected latency comes on top of the server's own.
        let remote_url = match std::env::var("S3_ENDPOINT") {
            Ok(_) => format!(
                "s3://{}/async-{pct}-{}",
                std::env::var("S3_BUCKET").unwrap_or_else(|_| "statefs-bench".into()),
                std::process::id()
            ),
            Err(_) => format!("file://{}", store_dir.display()),
        };
        let mut config = statefs::MountConfig::new(
            remote_url,
            root.path().join("local"),
            root.path().join("cache"),
        );
        if let Ok(endpoint) = std::env::var("S3_ENDPOINT") {
            config.s3 = statefs_store::S3Options {
                endpoint: Some(endpoint),
                region: Some("us-east-1".into()),
                access_key_id: Some("testing".into()),
                secret_access_key: Some("testing".into()),
                allow_http: true,
                request_timeout: None,
            };
        }
        config.cache.blocks.in_flight = env("STORE_THREADS", 384) as usize;
        // Cold reads on demand, as the cache limit leaves them: no warm-up fetching every SST
        // into the page cache when RocksDB opens it (scripts/bench-warmup.sh measures that).
        config.cache.warm.memory = 0;
        config.fuse_threads = env("FUSE_THREADS", 8) as usize;
        config.cache.blocks.memory = 4 << 20;
        let faults = FaultPlan::default();
        let metrics = Arc::new(RemoteMetrics::default());
        let mount_on = |config: &statefs::MountConfig| {
            let rt = statefs::mount::runtime().unwrap();
            let store = RemoteSpec::parse(&config.remote)
                .unwrap()
                .open(&config.s3, rt)
                .unwrap();
            let remote: Arc<dyn RemoteStore> = Arc::new(MetricsRemote::new(
                FailingRemote::new(store, faults.clone()),
                metrics.clone(),
            ));
            statefs::MountHandle::mount_with_remote(config, &root.path().join("mnt"), Some(remote))
                .unwrap()
        };
        // Loaded with an unlimited cache and no latency, compacted and closed; then mounted again
        // with the cache limited to `pct` of the state (0%: one byte) and the store distant.
        let fb =
            ForstBackend::open_mounted(mount_on(&config), range, 128, None, tuning(block_cache_mb))
                .unwrap();
        let mut kb = Keyed::new(fb);
        load(&mut kb, keys);
        kb.backend().rocks().compact_all().unwrap();
        drop(kb);
        // What the store holds (the SSTs).
        let state_bytes: u64 = RemoteSpec::parse(&config.remote)
            .unwrap()
            .open(&config.s3, statefs::mount::runtime().unwrap())
            .unwrap()
            .list("data/")
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum::<u64>()
            .max(1);
        config.cache.size_limit = if pct == 100 {
            0
        } else {
            (state_bytes * pct / 100).max(1)
        };
        let mount = mount_on(&config);
        let fb =
            ForstBackend::open_mounted(mount, range, 128, None, tuning(block_cache_mb)).unwrap();
        let kb = Keyed::new(fb);
        faults.set_latency(latency);
        // Warm-up: the first records (untimed) let the cache take what its limit allows.
        let warm = env("WARM_RECORDS", 2_000) as usize;
        let (_, mut kb) = run_async(kb, &zipf_keys(warm, keys, zipf, 2), &|| 0);
        let gets = || metrics.gets.load(Ordering::Relaxed);
        let sync = run_sync(&mut kb, &stream[..sync_records.min(stream.len())], &gets);
        let (asy, kb) = run_async(kb, &stream, &gets);
        faults.set_latency(Duration::ZERO);
        drop(kb);
        for (api, r) in [("sync", &sync), ("async", &asy)] {
            println!(
                "| ForSt, {pct}% cached, {api} | {:.0} | {:.3} | {:.2} | {:.2} |",
                r.records_s,
                r.records_s / base.records_s,
                r.p99_ms,
                r.gets_per_record * 1000.0
            );
        }
        println!(
            "| ForSt, {pct}% cached: async / sync | {:.1}x | | | (most GETs in flight at once: {}) |",
            asy.records_s / sync.records_s,
            faults.max_in_flight()
        );
    }
}
