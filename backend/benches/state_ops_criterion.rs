//! Flink's state benchmark shapes (the operations of `state_ops`, same keys, values and access
//! order: `shapes/`) under criterion, for its statistics: confidence intervals per operation and
//! the change against the previous run (`--save-baseline` / `--baseline` work as usual). Each
//! sample is a timed run of consecutive invocations (`iter_custom`); list benchmarks reset every
//! setup key to one element before each sample, as Flink's per-iteration setup (samples are
//! shorter than JMH's 1 s iterations, so lists grow less between resets than in `state_ops`, and
//! listAddAll runs faster here). Criterion's own lines give time per operation and throughput in
//! elements (operations) per second; a table of ops/ms over every timed call (warm-up included)
//! beside Flink's published heap figures follows.
//!
//!   cargo bench -p statefs-backend --bench state_ops_criterion [-- <name filter>]
//!
//! `state_ops` remains the bench of record for the tables in docs/BENCHMARKS.md: its rounds of 1 s
//! with a median are JMH's shape, which Flink's figures come from.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use statefs_backend::{HeapBackend, Keyed};

mod shapes;
use shapes::*;

/// One measured operation: its name, Flink's published figure, and ops/ms over all samples.
struct Row {
    name: &'static str,
    flink: &'static str,
    ops: u64,
    time: Duration,
}

struct Runner {
    c: Criterion,
    /// The global invocation index (Flink's `keyIndex`): every operation continues the sequence.
    index: u64,
    rows: Vec<Row>,
}

impl Runner {
    /// Benchmarks `op(state, index)`, each sample after an untimed `reset(state)`.
    #[allow(clippy::too_many_arguments)]
    fn run<S>(
        &mut self,
        group: &str,
        name: &'static str,
        flink: &'static str,
        per_call: u64,
        state: &mut S,
        reset: impl Fn(&mut S),
        mut op: impl FnMut(&mut S, u64),
    ) {
        let (mut ops, mut time) = (0u64, Duration::ZERO);
        let index = &mut self.index;
        let mut g = self.c.benchmark_group(group);
        g.throughput(Throughput::Elements(per_call));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                reset(state);
                let start = Instant::now();
                for _ in 0..iters {
                    op(state, *index);
                    *index += 1;
                }
                let took = start.elapsed();
                ops += iters * per_call;
                time += took;
                took
            })
        });
        g.finish();
        if ops > 0 {
            self.rows.push(Row {
                name,
                flink,
                ops,
                time,
            });
        }
    }
}

fn main() {
    let c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut r = Runner {
        c,
        index: 0,
        rows: Vec::new(),
    };
    let inp = Inputs::new();
    let none = |_: &mut Keyed<u64, HeapBackend>| {};

    let mut kb = keyed();
    let v = kb.value_state::<u64>("v", None).unwrap();
    preload_value(&mut kb, &v, &inp);
    r.run(
        "value",
        "valueGet",
        "not found",
        1,
        &mut kb,
        none,
        |kb, i| {
            op::value_get(kb, &v, &inp, i);
        },
    );
    r.run(
        "value",
        "valueUpdate",
        "not found",
        1,
        &mut kb,
        none,
        |kb, i| {
            op::value_update(kb, &v, &inp, i);
        },
    );
    r.run(
        "value",
        "valueAdd",
        "not found",
        1,
        &mut kb,
        none,
        |kb, i| {
            op::value_add(kb, &v, &inp, i);
        },
    );
    drop(kb);

    let mut kb = keyed();
    let l = kb.list_state::<u64>("l", None).unwrap();
    let one_each = |kb: &mut Keyed<u64, HeapBackend>| one_element_each(kb, &l, &inp);
    r.run(
        "list",
        "listUpdate",
        "2511",
        1,
        &mut kb,
        one_each,
        |kb, i| {
            op::list_update(kb, &l, &inp, i);
        },
    );
    r.run(
        "list",
        "listAppend",
        "3024",
        1,
        &mut kb,
        one_each,
        |kb, i| {
            op::list_append(kb, &l, &inp, i);
        },
    );
    r.run("list", "listGet", "2479", 1, &mut kb, one_each, |kb, i| {
        op::list_get(kb, &l, &inp, i);
    });
    let batch = list_batch();
    r.run(
        "list",
        "listAddAll (100)",
        "625",
        1,
        &mut kb,
        one_each,
        |kb, i| {
            op::list_add_all(kb, &l, &inp, &batch, i);
        },
    );
    drop(kb);
    // Inserts 500k new keys: on a state of its own, as JMH's fresh fork per benchmark gives Flink's.
    let mut kb = keyed();
    let l = kb.list_state::<u64>("l", None).unwrap();
    let one_each = |kb: &mut Keyed<u64, HeapBackend>| one_element_each(kb, &l, &inp);
    r.run("list", "listAdd", "4623", 1, &mut kb, one_each, |kb, i| {
        op::list_add(kb, &l, &inp, i);
    });
    drop(kb);

    let (mut kb, m) = preloaded_map(&inp);
    r.run("map", "mapGet", "3506", 1, &mut kb, none, |kb, i| {
        op::map_get(kb, &m, &inp, i);
    });
    r.run("map", "mapContains", "3728", 1, &mut kb, none, |kb, i| {
        op::map_contains(kb, &m, &inp, i);
    });
    r.run(
        "map",
        "mapUpdate",
        "not found",
        1,
        &mut kb,
        none,
        |kb, i| {
            op::map_update(kb, &m, &inp, i);
        },
    );
    r.run(
        "map",
        "mapIterator (per entry)",
        "21335",
        MAP_ENTRIES,
        &mut kb,
        none,
        |kb, i| {
            op::map_iterator(kb, &m, &inp, i);
        },
    );
    drop(kb);
    let (mut kb, m) = preloaded_map(&inp);
    r.run("map", "mapAdd", "4429", 1, &mut kb, none, |kb, i| {
        op::map_add(kb, &m, &inp, i);
    });
    drop(kb);

    r.c.final_summary();
    println!(
        "\nheap state operations, ops/ms over all measured samples ({} key groups)",
        key_groups()
    );
    println!("| operation | statefs heap ops/ms | Flink heap ops/ms (published) |");
    println!("|---|---|---|");
    for row in &r.rows {
        let per_ms = row.ops as f64 / (row.time.as_secs_f64() * 1e3);
        println!("| {} | {:.0} | {} |", row.name, per_ms, row.flink);
    }
}
