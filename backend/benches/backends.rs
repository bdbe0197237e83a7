//! heap vs rocksdb vs forst: state operation throughput, checkpoint cost over a steady update
//! workload, and restore time to first state access. Runs as root (forst mounts statefs).
//!
//!   cargo bench -p statefs-backend --bench backends
//!   STATE_MB=1024 ROUNDS=5 UPDATE_PCT=20 cargo bench -p statefs-backend --bench backends
//!   BUDGET_MB=64 ...   (a memory budget per backend, as Flink's managed memory per slot)
//!   TUNING=state.backend.rocksdb.thread.num=4 ...   (tuning keys for both backends)
//!   WRITE_MB_S=20 ...   (each round's writes at a steady rate; 0 = a burst, as fast as possible)
//!   STORE_DIR=/mnt/stores ...   (both backends' file:// stores there, e.g. on another device)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use statefs_backend::checkpoint::CheckpointStorage;
use statefs_backend::keygroup::KeyGroupRange;
use statefs_backend::rocks_options::RocksTuning;
use statefs_backend::states::{Keyed, MapState, ValueState};
use statefs_backend::{
    Checkpointed, ForstBackend, ForstHome, HeapBackend, RocksBackend, RocksHome, StateBackend,
};
use statefs_store::{MetricsRemote, RemoteMetrics, RemoteSpec, RemoteStore};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The operations timed, in the table's order.
const OPS: [&str; 4] = ["valueGet", "valueUpdate", "mapGet", "mapPut"];

/// One backend preloaded for the operations: a value and a map state over `keys` keys.
struct OpsBench<B: StateBackend> {
    kb: Keyed<u64, B>,
    v: ValueState<u64>,
    m: MapState<u64, u64>,
    keys: u64,
    /// Operations run so far: each round goes on where the last stopped.
    n: u64,
}

impl<B: StateBackend> OpsBench<B> {
    /// Preloads `keys` keys, then lets the backend `settle` (RocksDB: flush and finish
    /// compactions, so the timed rounds do not race the preload's compactions for the two cores).
    fn preload(backend: B, keys: u64, settle: impl Fn(&B)) -> Self {
        let mut kb = Keyed::new(backend);
        let v = kb.value_state::<u64>("v", None).unwrap();
        let m = kb.map_state::<u64, u64>("m", None).unwrap();
        for i in 0..keys {
            kb.set_current_key(&i).unwrap();
            v.update(&mut kb, &i).unwrap();
            m.put(&mut kb, &(i % 10), &i).unwrap();
        }
        settle(kb.backend());
        OpsBench {
            kb,
            v,
            m,
            keys,
            n: 0,
        }
    }

    /// Ops/ms of operation `op` (an index into [`OPS`]) over one round of `budget`.
    fn round(&mut self, op: usize, budget: Duration) -> f64 {
        let start = Instant::now();
        let first = self.n;
        while start.elapsed() < budget {
            for _ in 0..200 {
                let i = self.n;
                let kb = &mut self.kb;
                kb.set_current_key(&(i.wrapping_mul(2_654_435_761) % self.keys))
                    .unwrap();
                match op {
                    0 => drop(std::hint::black_box(self.v.value(kb).unwrap())),
                    1 => self.v.update(kb, &i).unwrap(),
                    2 => drop(std::hint::black_box(self.m.get(kb, &(i % 10)).unwrap())),
                    _ => self.m.put(kb, &(i % 10), &i).unwrap(),
                }
                self.n += 1;
            }
        }
        (self.n - first) as f64 / start.elapsed().as_secs_f64() / 1000.0
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median ops/ms of three rounds of `budget` for each operation (one round swung by 20% on
/// this VM).
fn ops_alone<B: StateBackend>(b: &mut OpsBench<B>, budget: Duration) -> [f64; 4] {
    std::array::from_fn(|op| median((0..3).map(|_| b.round(op, budget)).collect()))
}

/// rocksdb and forst in alternating rounds, so that a change in the machine's speed during the
/// run (seen on this VM: every figure of one run 1.6-2.3x those of the next) moves both alike.
/// Per operation: each backend's median ops/ms, and the median of the per-pair ratios b / a.
fn ops_paired<A: StateBackend, B: StateBackend>(
    a: &mut OpsBench<A>,
    b: &mut OpsBench<B>,
    budget: Duration,
) -> [(f64, f64, f64); 4] {
    std::array::from_fn(|op| {
        let pairs: Vec<(f64, f64)> = (0..3)
            .map(|k| {
                if k % 2 == 0 {
                    let x = a.round(op, budget);
                    (x, b.round(op, budget))
                } else {
                    let y = b.round(op, budget);
                    (a.round(op, budget), y)
                }
            })
            .collect();
        (
            median(pairs.iter().map(|p| p.0).collect()),
            median(pairs.iter().map(|p| p.1).collect()),
            median(pairs.iter().map(|p| p.1 / p.0).collect()),
        )
    })
}

/// Writes every dirty page to disk: the other backend's writeback out of this one's round.
fn quiet_disk() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

struct Scratch {
    dir: tempfile::TempDir,
    /// Where both backends' `file://` stores live: `STORE_DIR`, or `dir`.
    stores: Option<tempfile::TempDir>,
}

impl Scratch {
    fn new() -> Scratch {
        let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
        let stores = std::env::var("STORE_DIR").ok().map(|d| {
            tempfile::Builder::new()
                .prefix("statefs-bench-stores-")
                .tempdir_in(d)
                .unwrap()
        });
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("statefs-bench-backends-")
                .tempdir_in(base)
                .unwrap(),
            stores,
        }
    }
    /// A directory for a `file://` store: on `STORE_DIR` when set, so that uploads (forst's
    /// through statefs, rocksdb's to checkpoint storage) can be kept off the disk the databases
    /// use, as with remote storage.
    fn store(&self, p: &str) -> std::path::PathBuf {
        Self::made(self.stores.as_ref().unwrap_or(&self.dir), p)
    }
    fn path(&self, p: &str) -> std::path::PathBuf {
        Self::made(&self.dir, p)
    }
    /// `base/p`, created.
    fn made(base: &tempfile::TempDir, p: &str) -> std::path::PathBuf {
        let p = base.path().join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

fn forst_config(s: &Scratch, name: &str) -> statefs::MountConfig {
    statefs::MountConfig::new(
        format!("file://{}", s.store("remote").display()),
        s.path(&format!("{name}/local")),
        s.path(&format!("{name}/cache")),
    )
}

fn main() {
    // RUST_LOG=statefs_backend=info prints each checkpoint's phases (flush, links, upload/publish).
    // BENCH_SPANS=1 also prints each span's busy and idle time when it closes (with, say,
    // RUST_LOG=statefs_backend=info,statefs::fuse=debug: every FUSE operation of a flush).
    let spans = match std::env::var_os("BENCH_SPANS") {
        Some(_) => tracing_subscriber::fmt::format::FmtSpan::CLOSE,
        None => tracing_subscriber::fmt::format::FmtSpan::NONE,
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_span_events(spans)
        .with_writer(std::io::stderr)
        .init();
    let keys = env("KEYS", 200_000);
    let budget = Duration::from_millis(env("BENCH_MS", 1000));
    let state_mb = env("STATE_MB", 256);
    let rounds = env("ROUNDS", 3);
    // Percent of the keys rewritten between checkpoints.
    let update_pct = env("UPDATE_PCT", 5).clamp(1, 100);
    // MB/s of value bytes a round writes: a job's steady update rate, against which compaction
    // keeps pace or falls behind. 0 writes the round as one burst and checkpoints right after,
    // with that burst's compactions running: the hardest case for a checkpoint.
    let write_mb_s = env("WRITE_MB_S", 0);
    let range = KeyGroupRange::all(128);
    let scratch = Scratch::new();
    // A memory budget per backend instance (Flink's managed memory per slot); 0 = RocksDB's
    // defaults. Memtables get half of it, so they flush during a round rather than at its
    // checkpoint once the budget is small against the writes per round.
    // TUNING="state.backend.rocksdb.thread.num=4,..." adds tuning keys, for both backends.
    let budget_mb = env("BUDGET_MB", 0);
    let mut pairs: Vec<(String, String)> = std::env::var("TUNING")
        .unwrap_or_default()
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("TUNING entries are key=value");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    if budget_mb > 0 {
        pairs.push((
            "state.backend.rocksdb.memory.fixed-per-slot".into(),
            format!("{budget_mb}mb"),
        ));
    }
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let tuning = RocksTuning::from_pairs(&refs).unwrap();

    // 1. Operations.
    let heap = ops_alone(
        &mut OpsBench::preload(HeapBackend::new(range, 128), keys, |_| {}),
        budget,
    );
    let paired = {
        let mut rocks = OpsBench::preload(
            RocksBackend::open_tuned(&scratch.path("ops-rocks"), range, 128, None, tuning.clone())
                .unwrap(),
            keys,
            |b: &RocksBackend| b.settle().unwrap(),
        );
        let mut forst = OpsBench::preload(
            ForstBackend::open_tuned(
                &forst_config(&scratch, "ops-forst"),
                &scratch.path("ops-forst/mnt"),
                range,
                128,
                None,
                tuning.clone(),
            )
            .unwrap(),
            keys,
            |b: &ForstBackend| b.rocks().settle().unwrap(),
        );
        ops_paired(&mut rocks, &mut forst, budget)
    };
    println!(
        "state operations, {keys} keys, ops/ms (one thread; rocksdb and forst in alternating rounds, \
         forst / rocksdb the median of the three pairs' ratios)"
    );
    println!("| op | heap | rocksdb | forst | forst / rocksdb |");
    println!("|---|---|---|---|---|");
    for (i, name) in OPS.iter().enumerate() {
        let (rocks, forst, ratio) = paired[i];
        println!(
            "| {name} | {:.0} | {rocks:.0} | {forst:.0} | {ratio:.2}x |",
            heap[i]
        );
    }

    // 2. Checkpoints over a steady update workload.
    let value = vec![7u8; 1000];
    let n = state_mb * 1024 * 1024 / 1100;
    #[allow(clippy::too_many_arguments)]
    fn fill<B: StateBackend>(
        kb: &mut Keyed<u64, B>,
        value: &[u8],
        n: u64,
        from: u64,
        to: u64,
        round: u64,
        mb_s: u64,
    ) {
        let v = kb.value_state::<Vec<u8>>("blob", None).unwrap();
        let start = Instant::now();
        let mut val = value.to_vec();
        // Incompressible values: a real state's bytes do not shrink 100x in an SST.
        let mut x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for i in from..to {
            for chunk in val.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = x.to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
            kb.set_current_key(&(i.wrapping_mul(2_654_435_761) % n))
                .unwrap();
            v.update(kb, &val).unwrap();
            let done = i + 1 - from;
            if mb_s > 0 && done.is_multiple_of(1024) {
                let due = Duration::from_secs_f64(
                    (done * value.len() as u64) as f64 / (mb_s as f64 * 1e6),
                );
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    let rt = statefs_store::runtime().unwrap();
    let metrics = Arc::new(RemoteMetrics::default());
    let chk_store = RemoteSpec::parse(&format!("file://{}", scratch.store("chk-store").display()))
        .unwrap()
        .open(&Default::default(), rt)
        .unwrap();
    let chk_remote: Arc<dyn RemoteStore> = Arc::new(MetricsRemote::new(chk_store, metrics.clone()));
    let mut storage = CheckpointStorage::open(chk_remote, "bench", 2).unwrap();
    // ForSt's job checkpoints (handles naming statefs checkpoints) in the same store, counted apart.
    let forst_chk_metrics = Arc::new(RemoteMetrics::default());
    let forst_chk_store =
        RemoteSpec::parse(&format!("file://{}", scratch.store("chk-store").display()))
            .unwrap()
            .open(&Default::default(), statefs_store::runtime().unwrap())
            .unwrap();
    let mut forst_storage = CheckpointStorage::open(
        Arc::new(MetricsRemote::new(
            forst_chk_store,
            forst_chk_metrics.clone(),
        )),
        "bench-forst",
        2,
    )
    .unwrap();
    let mut rkb: Keyed<u64, RocksBackend> = Keyed::new(
        RocksBackend::open_tuned(&scratch.path("chk-rocks"), range, 128, None, tuning.clone())
            .unwrap(),
    );
    let forst_cfg = forst_config(&scratch, "chk-forst");
    let fb = ForstBackend::open_tuned(
        &forst_cfg,
        &scratch.path("chk-forst/mnt"),
        range,
        128,
        None,
        tuning.clone(),
    )
    .unwrap();
    let forst_metrics = fb.mount().remote_metrics.clone();
    let mut fkb: Keyed<u64, ForstBackend> = Keyed::new(fb);
    eprintln!("filling {n} keys x 1 KB into rocksdb and forst");
    fill(&mut rkb, &value, n, 0, n, 0, 0);
    fill(&mut fkb, &value, n, 0, n, 0, 0);
    let mut rows = Vec::new();
    let mut last_round = 0u64;
    for round in 1..=rounds {
        let per_round = n * update_pct / 100;
        let from = ((round - 1) * per_round) % n;
        // Each backend writes its round and checkpoints while the other is idle. Two backends on
        // one machine's two cores and one disk otherwise slow each other's checkpoints (each one's
        // compactions ran through the other's checkpoint), which the backends of a job never do.
        // A backend's own background work, the compactions its writes start, stays in its time.
        // So does its writeback: the other backend's compactions leave hundreds of MB dirty in the
        // page cache, and an fsync on the same disk waits behind their writeback (a 100-byte
        // fdatasync here: 0.09 ms on an idle disk, 25 ms median while 64 MB files are written).
        fkb.backend().rocks().wait_for_background_work().unwrap();
        quiet_disk();
        fill(
            &mut rkb,
            &value,
            n,
            from,
            from + per_round,
            round,
            write_mb_s,
        );
        // rocksdb incremental
        let put0 = metrics.put_bytes.load(Ordering::Relaxed);
        let t = Instant::now();
        let mut p = storage.begin(round, 128);
        rkb.backend_mut().checkpoint(&mut p).unwrap();
        // Complete means visible. Dropping the subsumed checkpoints is outside the timed window
        // for both backends, as in Flink (forst's mount drops them on its retention worker).
        p.complete_keeping_all().unwrap();
        let rocks_ms = t.elapsed().as_secs_f64() * 1000.0;
        storage.apply_retention().unwrap();
        let rocks_bytes = metrics.put_bytes.load(Ordering::Relaxed) - put0;
        rkb.backend().wait_for_background_work().unwrap();
        quiet_disk();
        fill(
            &mut fkb,
            &value,
            n,
            from,
            from + per_round,
            round,
            write_mb_s,
        );
        // forst
        let forst_put = || {
            forst_metrics.put_bytes.load(Ordering::Relaxed)
                + forst_chk_metrics.put_bytes.load(Ordering::Relaxed)
        };
        let fput0 = forst_put();
        let t = Instant::now();
        let mut p = forst_storage.begin(round, 128);
        fkb.backend_mut().checkpoint(&mut p).unwrap();
        p.complete_keeping_all().unwrap();
        let forst_ms = t.elapsed().as_secs_f64() * 1000.0;
        forst_storage.apply_retention().unwrap();
        let forst_bytes = forst_put() - fput0;
        rows.push((round, rocks_ms, rocks_bytes, forst_ms, forst_bytes));
        last_round = round;
    }
    println!();
    println!(
        "checkpoints: {state_mb} MB of state ({n} keys x 1 KB), {update_pct}% of keys updated between checkpoints {}, memory budget {}; each backend alone",
        if write_mb_s > 0 {
            format!("at {write_mb_s} MB/s")
        } else {
            "in a burst".into()
        },
        if budget_mb > 0 {
            format!("{budget_mb} MB per backend")
        } else {
            "none (RocksDB defaults)".into()
        }
    );
    println!(
        "| round | rocksdb incremental ms | rocksdb bytes uploaded | forst ms | forst bytes uploaded | rocksdb / forst time |"
    );
    println!("|---|---|---|---|---|---|");
    for (r, rm, rb, fm, fbytes) in &rows {
        println!(
            "| {r} | {rm:.0} | {rb} | {fm:.0} | {fbytes} | {:.1}x |",
            rm / fm
        );
    }
    // Round 1 follows the bulk fill (everything is new to rocksdb); the rest is the steady state.
    let steady = &rows[rows.len().min(1)..];
    if !steady.is_empty() {
        let (rs, fs) = steady
            .iter()
            .fold((0.0, 0.0), |(r, f), row| (r + row.1, f + row.3));
        let tenfold = steady.iter().filter(|row| row.1 >= 10.0 * row.3).count();
        println!(
            "steady rounds 2-{}: rocksdb / forst over their summed time {:.1}x; {tenfold} of {} rounds at 10x or more",
            rows.len(),
            rs / fs,
            steady.len()
        );
    }

    // 3. Restore to first state access, with the checkpointing backends closed: their background
    // compactions would otherwise compete with the restores for the two cores and the disk.
    drop(rkb);
    drop(fkb);
    let c = storage.load(last_round).unwrap();
    let t = Instant::now();
    let restored = RocksBackend::restore(
        &storage,
        &c,
        range,
        RocksHome {
            dir: scratch.path("restore-rocks").join("db").to_path_buf(),
            shared: None,
            tuning: tuning.clone(),
        },
    )
    .unwrap();
    let mut rk: Keyed<u64, RocksBackend> = Keyed::new(restored);
    let v = rk.value_state::<Vec<u8>>("blob", None).unwrap();
    rk.set_current_key(&1).unwrap();
    v.value(&mut rk).unwrap().unwrap();
    let rocks_restore = t.elapsed();
    drop(rk);
    let t = Instant::now();
    let fc = forst_storage.load(last_round).unwrap();
    let home = ForstHome {
        config: forst_config(&scratch, "restore-forst"),
        mountpoint: scratch.path("restore-forst/mnt"),
        shared: None,
        tuning: tuning.clone(),
    };
    let fr = ForstBackend::restore(&forst_storage, &fc, range, home).unwrap();
    let mut fk: Keyed<u64, ForstBackend> = Keyed::new(fr);
    let v = fk.value_state::<Vec<u8>>("blob", None).unwrap();
    fk.set_current_key(&1).unwrap();
    v.value(&mut fk).unwrap().unwrap();
    let forst_restore = t.elapsed();
    println!();
    println!(
        "restore to first state access: rocksdb (download everything) {:.0} ms, forst (lazy) {:.0} ms",
        rocks_restore.as_secs_f64() * 1000.0,
        forst_restore.as_secs_f64() * 1000.0
    );
}
