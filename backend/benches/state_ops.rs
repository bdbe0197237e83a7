//! State operation throughput shaped like Flink's state benchmarks (flink-benchmarks
//! `org.apache.flink.state.benchmark`), one thread, printed as ops/ms beside Flink's published heap
//! figures. The shapes follow `StateBenchmarkConstants` / `StateBenchmarkBase`:
//! - 500k setup keys `0..500k` and 500k new keys `500k..1M`, each visited in a shuffled order that
//!   cycles (so `*Add` inserts 500k keys, then overwrites them, as Flink's does);
//! - values from a shuffled `0..1M`; map states `u64 -> f64` with 10 entries per setup key, map keys
//!   `0..10` shuffled; `mapContains` asks for `mapKey << 1` (half present);
//! - list states: every setup key holds one element before the list benchmarks (Flink's
//!   per-iteration setup); `listAdd` is `update([v])` on a new key, `listAppend` is `add(v)`,
//!   `listAddAll` appends 100 random longs to a setup key.
//!
//! `listAdd` and `mapAdd` insert 500k new keys, so each runs on a state of its own, as JMH's fresh
//! fork per benchmark gives Flink's; the other operations of a kind share one preloaded state.
//!
//! Each operation runs `BENCH_ROUNDS` (3) times for `BENCH_MS` (1000) ms; the median is printed.
//! `BENCH_ONLY=mapGet,listAdd` runs just those (for profiling); `BENCH_VERBOSE=1` prints every
//! round.
//!
//!   cargo bench -p statefs-backend --bench state_ops

use std::time::{Duration, Instant};

use statefs_backend::{HeapBackend, Keyed};

mod proc;
mod shapes;
use proc::rss;
use shapes::*;

/// Memory a preload added, per key. Meaningful when the section runs alone (`BENCH_ONLY`): memory
/// freed by an earlier section is reused and hides growth.
fn memory_line(what: &str, before: u64, keys: u64) -> String {
    let grew = rss().saturating_sub(before);
    format!(
        "{what}: preload grew RSS by {:.0} MB, {:.0} bytes per key",
        grew as f64 / (1 << 20) as f64,
        grew as f64 / keys as f64
    )
}

struct Settings {
    budget: Duration,
    rounds: usize,
    only: Option<String>,
    /// `BENCH_VERBOSE=1`: every round's figure on stderr, not just the median.
    verbose: bool,
}

impl Settings {
    fn from_env() -> Self {
        let num = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(d)
        };
        Settings {
            budget: Duration::from_millis(num("BENCH_MS", 1000)),
            rounds: num("BENCH_ROUNDS", 3).max(1) as usize,
            only: std::env::var("BENCH_ONLY").ok(),
            verbose: std::env::var_os("BENCH_VERBOSE").is_some(),
        }
    }
    fn selected(&self, name: &str) -> bool {
        match &self.only {
            Some(only) => only.split(',').any(|o| name.starts_with(o.trim())),
            None => true,
        }
    }
}

struct Table {
    settings: Settings,
    /// Invocation index across all operations, as Flink's global `keyIndex`.
    index: u64,
    rows: Vec<(&'static str, f64, &'static str)>,
}

impl Table {
    fn any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.settings.selected(n))
    }

    /// Runs `op(state, index)` in rounds, each after an untimed `reset(state)` (Flink's per-iteration
    /// setup); records the median ops/ms times `per_call` (JMH's `@OperationsPerInvocation`).
    fn run<S>(
        &mut self,
        name: &'static str,
        flink: &'static str,
        per_call: u64,
        state: &mut S,
        mut reset: impl FnMut(&mut S),
        mut op: impl FnMut(&mut S, u64),
    ) {
        if !self.settings.selected(name) {
            return;
        }
        let mut results = Vec::new();
        for _ in 0..self.settings.rounds {
            reset(state);
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < self.settings.budget {
                for _ in 0..1000 {
                    op(state, self.index);
                    self.index += 1;
                    n += 1;
                }
            }
            results.push((n * per_call) as f64 / start.elapsed().as_secs_f64() / 1000.0);
            if self.settings.verbose {
                eprintln!(
                    "{name}: round {} {:.0} ops/ms",
                    results.len(),
                    results[results.len() - 1]
                );
            }
        }
        results.sort_by(f64::total_cmp);
        self.rows.push((name, results[results.len() / 2], flink));
    }
}

fn main() {
    let settings = Settings::from_env();
    let rounds = settings.rounds;
    let budget = settings.budget;
    let mut t = Table {
        settings,
        index: 0,
        rows: Vec::new(),
    };
    let mut memory = Vec::new();
    let inp = Inputs::new();

    // value
    if t.any(&["valueGet", "valueUpdate", "valueAdd"]) {
        let before = rss();
        let mut kb = keyed();
        let v = kb.value_state::<u64>("v", None).unwrap();
        preload_value(&mut kb, &v, &inp);
        memory.push(memory_line("value state (u64 -> u64)", before, SETUP_KEYS));
        t.run(
            "valueGet",
            "not found",
            1,
            &mut kb,
            |_| {},
            |kb, i| {
                op::value_get(kb, &v, &inp, i);
            },
        );
        t.run(
            "valueUpdate",
            "not found",
            1,
            &mut kb,
            |_| {},
            |kb, i| {
                op::value_update(kb, &v, &inp, i);
            },
        );
        t.run(
            "valueAdd",
            "not found",
            1,
            &mut kb,
            |_| {},
            |kb, i| {
                op::value_add(kb, &v, &inp, i);
            },
        );
    }

    // Not one of Flink's shapes: a record that reads three states of its key, as an operator with
    // several states does. Counted per record. With the key's slots prefetched in all three states
    // when the key becomes current (`StateBackend::prefetch`), their misses overlap.
    if t.any(&["recordGet3"]) {
        let mut kb = keyed();
        let states: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| kb.value_state::<u64>(n, None).unwrap())
            .collect();
        for k in 0..SETUP_KEYS {
            kb.set_current_key(&k).unwrap();
            for v in &states {
                v.update(&mut kb, &inp.value(k)).unwrap();
            }
        }
        t.run(
            "recordGet3 (3 value states)",
            "-",
            1,
            &mut kb,
            |_| {},
            |kb, i| {
                kb.set_current_key(&inp.setup_key(i)).unwrap();
                for v in &states {
                    std::hint::black_box(v.value(kb).unwrap());
                }
            },
        );
    }

    // list
    if t.any(&[
        "listUpdate",
        "listAdd",
        "listAppend",
        "listGet",
        "listAddAll",
    ]) {
        let mut kb = keyed();
        let l = kb.list_state::<u64>("l", None).unwrap();
        let one_each = |kb: &mut Keyed<u64, HeapBackend>| one_element_each(kb, &l, &inp);
        t.run("listUpdate", "2511", 1, &mut kb, one_each, |kb, i| {
            op::list_update(kb, &l, &inp, i);
        });
        t.run("listAppend", "3024", 1, &mut kb, one_each, |kb, i| {
            op::list_append(kb, &l, &inp, i);
        });
        t.run("listGet", "2479", 1, &mut kb, one_each, |kb, i| {
            op::list_get(kb, &l, &inp, i);
        });
        let batch = list_batch();
        t.run("listAddAll (100)", "625", 1, &mut kb, one_each, |kb, i| {
            op::list_add_all(kb, &l, &inp, &batch, i);
        });
        drop(kb);
        // `listAdd` inserts 500k new keys: on a state of its own (JMH runs each benchmark in a
        // fresh fork), so the others above measure a state of the setup keys only.
        let mut kb = keyed();
        let l = kb.list_state::<u64>("l", None).unwrap();
        let one_each = |kb: &mut Keyed<u64, HeapBackend>| one_element_each(kb, &l, &inp);
        t.run("listAdd", "4623", 1, &mut kb, one_each, |kb, i| {
            op::list_add(kb, &l, &inp, i);
        });
    }

    // map
    if t.any(&[
        "mapGet",
        "mapContains",
        "mapUpdate",
        "mapAdd",
        "mapIterator",
    ]) {
        let before = rss();
        let (mut kb, m) = preloaded_map(&inp);
        memory.push(memory_line(
            "map state (u64 -> {10 x u64 -> f64})",
            before,
            SETUP_KEYS,
        ));
        t.run(
            "mapGet",
            "3506",
            1,
            &mut kb,
            |_| {},
            |kb, i| {
                op::map_get(kb, &m, &inp, i);
            },
        );
        t.run(
            "mapContains",
            "3728",
            1,
            &mut kb,
            |_| {},
            |kb, i| {
                op::map_contains(kb, &m, &inp, i);
            },
        );
        t.run(
            "mapUpdate",
            "not found",
            1,
            &mut kb,
            |_| {},
            |kb, i| {
                op::map_update(kb, &m, &inp, i);
            },
        );
        t.run(
            "mapIterator (per entry)",
            "21335",
            MAP_ENTRIES,
            &mut kb,
            |_| {},
            |kb, i| {
                op::map_iterator(kb, &m, &inp, i);
            },
        );
        drop(kb);
        // `mapAdd` inserts 500k new keys: on a state of its own, as `listAdd`.
        let (mut kb, m) = preloaded_map(&inp);
        t.run(
            "mapAdd",
            "4429",
            1,
            &mut kb,
            |_| {},
            |kb, i| {
                op::map_add(kb, &m, &inp, i);
            },
        );
    }

    // The machine's floor, same run: typed Rust hash maps with the same key counts and access order,
    // no serialization, no key groups, no snapshots. What a state access cannot beat here.
    if t.any(&["floor"]) {
        let mut flat: hashbrown::HashMap<u64, u64, rustc_hash::FxBuildHasher> = Default::default();
        let mut nested: hashbrown::HashMap<
            u64,
            hashbrown::HashMap<u64, f64, rustc_hash::FxBuildHasher>,
            rustc_hash::FxBuildHasher,
        > = Default::default();
        for k in 0..SETUP_KEYS {
            flat.insert(k, inp.value(k));
            let inner = nested.entry(k).or_default();
            for e in 0..MAP_ENTRIES {
                inner.insert(inp.map_key(e), inp.map_value(k + e));
            }
        }
        let mut state = (flat, nested);
        t.run(
            "floor: HashMap<u64,u64> get",
            "-",
            1,
            &mut state,
            |_| {},
            |s, i| {
                std::hint::black_box(s.0.get(&inp.setup_key(i)));
            },
        );
        t.run(
            "floor: HashMap<u64,HashMap<u64,f64>> get",
            "-",
            1,
            &mut state,
            |_| {},
            |s, i| {
                std::hint::black_box(
                    s.1.get(&inp.setup_key(i))
                        .and_then(|m| m.get(&inp.map_key(i))),
                );
            },
        );
        // One dependent cache miss per operation: a random cyclic walk over 512 MB, one 64-byte
        // line per step. What any state access that misses the caches once costs here.
        let lines = 512usize << 20 >> 6;
        let mut rng = Rng(7);
        let order = rng.shuffled(0..lines as u64);
        let mut next = vec![0u64; lines * 8];
        for w in 0..lines {
            next[order[w] as usize * 8] = order[(w + 1) % lines] * 8;
        }
        drop(order);
        let mut walk = (next, 0u64);
        t.run(
            "floor: one dependent random load (512 MB)",
            "-",
            1,
            &mut walk,
            |_| {},
            |w, _| {
                w.1 = w.0[w.1 as usize];
            },
        );
        std::hint::black_box(walk.1);
    }

    println!(
        "statefs heap backend, {SETUP_KEYS} setup keys, {MAP_ENTRIES} map entries per key, \
         1 thread, median of {rounds} x {} ms",
        budget.as_millis()
    );
    println!("| operation | statefs heap ops/ms | Flink heap ops/ms (published) |");
    println!("|---|---|---|");
    for (name, ops, flink) in t.rows {
        println!("| {name} | {ops:.0} | {flink} |");
    }
    for line in memory {
        println!("{line}");
    }
}
