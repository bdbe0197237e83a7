//! Scaling in, 2 subtasks -> 1: restore every key group from two subtasks' checkpoints into one
//! backend, with the other subtask's entries ingested as SST files (the default) or copied
//! through write batches (`use-ingest-db-restore: false`), for rocksdb (incremental checkpoints on
//! a file:// store) and forst (statefs checkpoints). The baseline, in the same run, is restoring
//! one subtask's checkpoint as it is (no rescaling). Each restore is followed by settling
//! (flushing memtables and waiting for compactions): copied entries land in memtables and leave
//! flushes and compactions behind, which compete with the job after the restore returns. Runs as
//! root (forst mounts statefs).
//!
//!   STATE_MB=512 cargo bench -p statefs-backend --bench rescale

use std::sync::atomic::Ordering;
use std::time::Instant;

use statefs_backend::checkpoint::CheckpointStorage;
use statefs_backend::keygroup::KeyGroupRange;
use statefs_backend::rocks_options::RocksTuning;
use statefs_backend::states::Keyed;
use statefs_backend::{
    Checkpointed, ForstBackend, ForstHome, RocksBackend, RocksHome, StateBackend,
};
use statefs_store::RemoteSpec;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// An incompressible 1 KB value for key `i`: a real state's bytes do not shrink 100x in an SST.
fn value(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..128)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// Writes every key of `0..n` this subtask owns; returns how many.
fn fill<B: StateBackend>(kb: &mut Keyed<u64, B>, n: u64) -> u64 {
    let v = kb.value_state::<Vec<u8>>("blob", None).unwrap();
    let mut mine = 0;
    for i in 0..n {
        if kb.set_current_key(&i).is_ok() {
            v.update(kb, &value(i)).unwrap();
            mine += 1;
        }
    }
    mine
}

/// Checks the value of every 997th key the backend owns.
fn verify<B: StateBackend>(kb: &mut Keyed<u64, B>, n: u64) {
    let v = kb.value_state::<Vec<u8>>("blob", None).unwrap();
    for i in (0..n).step_by(997) {
        if kb.set_current_key(&i).is_ok() {
            assert_eq!(v.value(kb).unwrap(), Some(value(i)), "key {i}");
        }
    }
}

fn tuning(ingest: bool) -> RocksTuning {
    RocksTuning::from_pairs(&[(
        "state.backend.rocksdb.use-ingest-db-restore",
        if ingest { "true" } else { "false" },
    )])
    .unwrap()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn merged(ingest: bool) -> &'static str {
    if ingest {
        "both, merged by ingesting SSTs"
    } else {
        "both, merged by copying"
    }
}

/// Settles a restored forst backend; returns how long that took (ms) and the bytes its mount has
/// uploaded since it was mounted.
fn settle_forst(kb: &Keyed<u64, ForstBackend>) -> (f64, u64) {
    let t = Instant::now();
    kb.backend().rocks().settle().unwrap();
    let uploaded = kb
        .backend()
        .mount()
        .remote_metrics
        .put_bytes
        .load(Ordering::Relaxed);
    (ms(t), uploaded)
}

fn main() {
    let state_mb = env("STATE_MB", 512);
    let n = state_mb * 1024 * 1024 / 1100;
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let scratch = tempfile::Builder::new()
        .prefix("statefs-bench-rescale-")
        .tempdir_in(base)
        .unwrap();
    let path = |p: &str| {
        let p = scratch.path().join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let halves = [0, 1].map(|i| KeyGroupRange::for_operator(128, 2, i));
    let all = KeyGroupRange::all(128);

    // rocksdb: two subtasks checkpoint into one incremental checkpoint.
    let rt = statefs_store::runtime().unwrap();
    let store = RemoteSpec::parse(&format!("file://{}", path("chk-store").display()))
        .unwrap()
        .open(&Default::default(), rt)
        .unwrap();
    let mut storage = CheckpointStorage::open(std::sync::Arc::new(store), "bench", 1).unwrap();
    let mut p = storage.begin(1, 128);
    eprintln!("filling {n} keys x 1 KB into two rocksdb and two forst subtasks");
    for (i, r) in halves.iter().enumerate() {
        let mut kb: Keyed<u64, RocksBackend> =
            Keyed::new(RocksBackend::open(&path(&format!("rocks-sub{i}")), *r, 128).unwrap());
        fill(&mut kb, n);
        kb.backend_mut().checkpoint(&mut p).unwrap();
    }
    p.complete().unwrap();
    let c = storage.latest().unwrap().unwrap();
    let mut rocks_rows = Vec::new();
    let t = Instant::now();
    let mut kb: Keyed<u64, RocksBackend> = Keyed::new(
        RocksBackend::restore(
            &storage,
            &c,
            halves[0],
            RocksHome::new(path("rocks-one").join("db")),
        )
        .unwrap(),
    );
    let took = ms(t);
    let t = Instant::now();
    kb.backend().settle().unwrap();
    rocks_rows.push(("one subtask's checkpoint as it is (baseline)", took, ms(t)));
    verify(&mut kb, n);
    drop(kb);
    for ingest in [true, false] {
        let t = Instant::now();
        let mut kb: Keyed<u64, RocksBackend> = Keyed::new(
            RocksBackend::restore(
                &storage,
                &c,
                all,
                RocksHome {
                    dir: path(&format!("rocks-merged-{ingest}"))
                        .join("db")
                        .to_path_buf(),
                    shared: None,
                    tuning: tuning(ingest),
                },
            )
            .unwrap(),
        );
        let took = ms(t);
        let t = Instant::now();
        kb.backend().settle().unwrap();
        rocks_rows.push((merged(ingest), took, ms(t)));
        verify(&mut kb, n);
    }

    // forst: two subtasks, a statefs checkpoint each, one shared store.
    let remote = format!("file://{}", path("forst-store").display());
    let config = |name: &str| {
        statefs::MountConfig::new(
            remote.clone(),
            path(&format!("{name}/local")),
            path(&format!("{name}/cache")),
        )
    };
    let mut p = storage.begin(2, 128);
    for (i, r) in halves.iter().enumerate() {
        let name = format!("forst-sub{i}");
        let mut kb: Keyed<u64, ForstBackend> = Keyed::new(
            ForstBackend::open(&config(&name), &path(&format!("{name}/mnt")), *r, 128).unwrap(),
        );
        fill(&mut kb, n);
        kb.backend_mut().checkpoint(&mut p).unwrap();
    }
    p.complete().unwrap();
    let c = storage.latest().unwrap().unwrap();
    let home = |name: &str, ingest: bool| ForstHome {
        config: config(name),
        mountpoint: path(&format!("{name}/mnt")),
        shared: None,
        tuning: tuning(ingest),
    };
    let mut forst_rows = Vec::new();
    let t = Instant::now();
    let mut kb: Keyed<u64, ForstBackend> = Keyed::new(
        ForstBackend::restore(&storage, &c, halves[0], home("forst-one", true)).unwrap(),
    );
    let took = ms(t);
    let (settle, uploaded) = settle_forst(&kb);
    forst_rows.push((
        "one subtask's checkpoint as it is (baseline, lazy)",
        took,
        settle,
        uploaded,
    ));
    verify(&mut kb, n);
    drop(kb);
    for ingest in [true, false] {
        let name = format!("forst-merged-{ingest}");
        let t = Instant::now();
        let mut kb: Keyed<u64, ForstBackend> =
            Keyed::new(ForstBackend::restore(&storage, &c, all, home(&name, ingest)).unwrap());
        let took = ms(t);
        let (settle, uploaded) = settle_forst(&kb);
        forst_rows.push((merged(ingest), took, settle, uploaded));
        verify(&mut kb, n);
    }

    println!("scaling in 2 -> 1: {state_mb} MB of state ({n} keys x 1 KB) in two subtasks");
    println!(
        "| backend | restore | restore ms | then settle ms | total ms | MB uploaded by the restored mount, settled |"
    );
    println!("|---|---|---|---|---|---|");
    for (what, t, f) in &rocks_rows {
        println!("| rocksdb | {what} | {t:.0} | {f:.0} | {:.0} | - |", t + f);
    }
    for (what, t, f, up) in &forst_rows {
        println!(
            "| forst | {what} | {t:.0} | {f:.0} | {:.0} | {:.1} |",
            t + f,
            *up as f64 / (1 << 20) as f64
        );
    }
    let total = |t: f64, f: f64| t + f;
    println!(
        "copying / ingesting, restore and settle: rocksdb {:.2}x, forst {:.2}x",
        total(rocks_rows[2].1, rocks_rows[2].2) / total(rocks_rows[1].1, rocks_rows[1].2),
        total(forst_rows[2].1, forst_rows[2].2) / total(forst_rows[1].1, forst_rows[1].2)
    );
}
