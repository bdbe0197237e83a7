//! State operation throughput shaped like Flink's state benchmarks (flink-benchmarks
//! `state/benchmark`): 500k preloaded keys, Long (u64) values, 10 map entries per key, 100-element
//! addAll batches; one thread. Prints ops/ms per operation, beside Flink's published heap figures.
//!
//!   cargo bench -p statefs-backend --bench state_ops

use std::time::{Duration, Instant};

use statefs_backend::keygroup::KeyGroupRange;
use statefs_backend::{HeapBackend, Keyed};

const KEYS: u64 = 500_000;
const MAP_ENTRIES: u64 = 10;

fn keyed() -> Keyed<u64, HeapBackend> {
    Keyed::new(HeapBackend::new(KeyGroupRange::all(128), 128))
}

/// `BENCH_ONLY=mapGet,listAdd` runs just those operations (for profiling one of them).
fn selected(name: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(only) => only.split(',').any(|o| name.starts_with(o.trim())),
        Err(_) => true,
    }
}

fn run(
    rows: &mut Vec<(&'static str, f64, &'static str)>,
    name: &'static str,
    budget: Duration,
    op: impl FnMut(u64),
    flink: &'static str,
) {
    if selected(name) {
        rows.push((name, measure(budget, op), flink));
    }
}

/// Runs `op(i)` for about `budget`, returns ops/ms.
fn measure(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            op(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64() / 1000.0
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1500),
    );
    let mut rows: Vec<(&'static str, f64, &'static str)> = Vec::new();
    let key = |i: u64| (i.wrapping_mul(2_654_435_761)) % KEYS;

    // value
    let mut kb = keyed();
    let v = kb.value_state::<u64>("v", None).unwrap();
    for i in 0..KEYS {
        kb.set_current_key(&i).unwrap();
        v.update(&mut kb, &i).unwrap();
    }
    run(
        &mut rows,
        "valueGet",
        budget,
        |i| {
            kb.set_current_key(&key(i)).unwrap();
            std::hint::black_box(v.value(&mut kb).unwrap());
        },
        "not found",
    );
    run(
        &mut rows,
        "valueUpdate",
        budget,
        |i| {
            kb.set_current_key(&key(i)).unwrap();
            v.update(&mut kb, &i).unwrap();
        },
        "not found",
    );
    run(
        &mut rows,
        "valueAdd",
        budget,
        |i| {
            kb.set_current_key(&(KEYS + i)).unwrap();
            v.update(&mut kb, &i).unwrap();
        },
        "not found",
    );
    drop(kb);

    // list
    let mut kb = keyed();
    let l = kb.list_state::<u64>("l", None).unwrap();
    for i in 0..KEYS {
        kb.set_current_key(&i).unwrap();
        l.add(&mut kb, &i).unwrap();
    }
    run(
        &mut rows,
        "listAdd",
        budget,
        |i| {
            kb.set_current_key(&(KEYS + i)).unwrap();
            l.add(&mut kb, &i).unwrap();
        },
        "4623",
    );
    run(
        &mut rows,
        "listUpdate",
        budget,
        |i| {
            kb.set_current_key(&key(i)).unwrap();
            l.update(&mut kb, &[i]).unwrap();
        },
        "2511",
    );
    run(
        &mut rows,
        "listGet",
        budget,
        |i| {
            kb.set_current_key(&key(i)).unwrap();
            std::hint::black_box(l.get(&mut kb).unwrap());
        },
        "2479",
    );
    let batch: Vec<u64> = (0..100).collect();
    run(
        &mut rows,
        "listAddAll (100)",
        budget,
        |i| {
            kb.set_current_key(&(2 * KEYS + i)).unwrap();
            l.add_all(&mut kb, &batch).unwrap();
        },
        "625",
    );
    drop(kb);

    // map
    let mut kb = keyed();
    let m = kb.map_state::<u64, u64>("m", None).unwrap();
    for i in 0..KEYS {
        kb.set_current_key(&i).unwrap();
        for e in 0..MAP_ENTRIES {
            m.put(&mut kb, &e, &(i + e)).unwrap();
        }
    }
    run(
        &mut rows,
        "mapGet",
        budget,
        |i| {
            kb.set_current_key(&key(i)).unwrap();
            std::hint::black_box(m.get(&mut kb, &(i % MAP_ENTRIES)).unwrap());
        },
        "3506",
    );
    run(
        &mut rows,
        "mapContains (missing)",
        budget,
        |i| {
            kb.set_current_key(&key(i)).unwrap();
            std::hint::black_box(m.contains(&mut kb, &(MAP_ENTRIES + 1)).unwrap());
        },
        "3728",
    );
    run(
        &mut rows,
        "mapUpdate",
        budget,
        |i| {
            kb.set_current_key(&key(i)).unwrap();
            m.put(&mut kb, &(i % MAP_ENTRIES), &i).unwrap();
        },
        "not found",
    );
    run(
        &mut rows,
        "mapAdd",
        budget,
        |i| {
            kb.set_current_key(&(KEYS + i / MAP_ENTRIES)).unwrap();
            m.put(&mut kb, &(i % MAP_ENTRIES), &i).unwrap();
        },
        "4429",
    );
    // Per entry, as Flink's mapIterator counts.
    if selected("mapIterator") {
        let per_key = measure(budget, |i| {
            kb.set_current_key(&key(i)).unwrap();
            std::hint::black_box(m.entries(&mut kb).unwrap());
        });
        rows.push((
            "mapIterator (per entry)",
            per_key * MAP_ENTRIES as f64,
            "21335",
        ));
    }

    println!(
        "statefs heap backend, {KEYS} preloaded keys, {MAP_ENTRIES} map entries per key, 1 thread"
    );
    println!("| operation | statefs heap ops/ms | Flink heap ops/ms (published) |");
    println!("|---|---|---|");
    for (name, ops, flink) in rows {
        println!("| {name} | {ops:.0} | {flink} |");
    }
}
