//! What Flink's state benchmarks (flink-benchmarks `org.apache.flink.state.benchmark`) set up,
//! shared by the two benches that run their shapes: `state_ops` (JMH-like rounds, a table of ops/ms
//! beside Flink's figures) and `state_ops_criterion` (criterion's statistics). Constants follow
//! `StateBenchmarkConstants`; inputs are picked by a global index as `StateBenchmarkBase.KeyValue`.
#![allow(dead_code)] // each bench uses a part

use statefs_backend::keygroup::KeyGroupRange;
use statefs_backend::{HeapBackend, Keyed, ListState, MapState, ValueState};

/// The keyed backend every shape runs on.
pub type Kb = Keyed<u64, HeapBackend>;

pub const SETUP_KEYS: u64 = 500_000;
pub const NEW_KEYS: u64 = 500_000;
pub const MAP_ENTRIES: u64 = 10;
pub const LIST_BATCH: usize = 100;
pub const RANDOM_VALUES: u64 = 1_000_000;

/// Max parallelism of the bench's backend: `BENCH_KEY_GROUPS`, default 128 (Flink's default).
/// flink-benchmarks builds its heap backend with 2 key groups; set 2 to match it exactly.
pub fn key_groups() -> u32 {
    std::env::var("BENCH_KEY_GROUPS")
        .ok()
        .map(|v| v.parse().expect("BENCH_KEY_GROUPS: a number of key groups"))
        .unwrap_or(128)
}

pub fn keyed() -> Keyed<u64, HeapBackend> {
    let groups = key_groups();
    Keyed::new(HeapBackend::new(KeyGroupRange::all(groups), groups))
}

/// xorshift64*: deterministic, so every run shuffles alike.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn shuffled(&mut self, range: std::ops::Range<u64>) -> Vec<u64> {
        let mut v: Vec<u64> = range.collect();
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// What one invocation uses, as Flink's `KeyValue` picks it by a global index.
pub struct Inputs {
    setup: Vec<u64>,
    new: Vec<u64>,
    map_keys: Vec<u64>,
    map_values: Vec<f64>,
    values: Vec<u64>,
}

impl Inputs {
    pub fn new() -> Self {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let map_keys = rng.shuffled(0..MAP_ENTRIES);
        let map_values = (0..MAP_ENTRIES)
            .map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64)
            .collect();
        Inputs {
            setup: rng.shuffled(0..SETUP_KEYS),
            new: rng.shuffled(SETUP_KEYS..SETUP_KEYS + NEW_KEYS),
            map_keys,
            map_values,
            values: rng.shuffled(0..RANDOM_VALUES),
        }
    }
    pub fn setup_key(&self, i: u64) -> u64 {
        self.setup[(i % SETUP_KEYS) as usize]
    }
    pub fn new_key(&self, i: u64) -> u64 {
        self.new[(i % NEW_KEYS) as usize]
    }
    pub fn map_key(&self, i: u64) -> u64 {
        self.map_keys[(i % MAP_ENTRIES) as usize]
    }
    pub fn map_value(&self, i: u64) -> f64 {
        self.map_values[(i % MAP_ENTRIES) as usize]
    }
    pub fn value(&self, i: u64) -> u64 {
        self.values[(i % RANDOM_VALUES) as usize]
    }
}

/// The list benchmarks' per-iteration setup and teardown (Flink's): every setup key holds exactly
/// one element.
pub fn one_element_each(kb: &mut Keyed<u64, HeapBackend>, l: &ListState<u64>, inp: &Inputs) {
    for k in 0..SETUP_KEYS {
        kb.set_current_key(&k).unwrap();
        l.update(kb, &[inp.value(k)]).unwrap();
    }
}

/// The map benchmarks' setup: every setup key holds `MAP_ENTRIES` entries.
pub fn preload_map(kb: &mut Keyed<u64, HeapBackend>, m: &MapState<u64, f64>, inp: &Inputs) {
    for k in 0..SETUP_KEYS {
        kb.set_current_key(&k).unwrap();
        for e in 0..MAP_ENTRIES {
            m.put(kb, &inp.map_key(e), &inp.map_value(k + e)).unwrap();
        }
    }
}

/// A fresh backend with the map benchmarks' state, preloaded.
pub fn preloaded_map(inp: &Inputs) -> (Kb, MapState<u64, f64>) {
    let mut kb = keyed();
    let m = kb.map_state::<u64, f64>("m", None).unwrap();
    preload_map(&mut kb, &m, inp);
    (kb, m)
}

/// The value benchmarks' setup: every setup key holds a value.
pub fn preload_value(kb: &mut Keyed<u64, HeapBackend>, v: &ValueState<u64>, inp: &Inputs) {
    for k in 0..SETUP_KEYS {
        kb.set_current_key(&k).unwrap();
        v.update(kb, &inp.value(k)).unwrap();
    }
}

/// `listAddAll`'s batch: `LIST_BATCH` random longs.
pub fn list_batch() -> Vec<u64> {
    let mut rng = Rng(42);
    (0..LIST_BATCH).map(|_| rng.next()).collect()
}

/// One invocation of each operation (`i` is the global invocation index), as flink-benchmarks'
/// `ValueStateBenchmark`, `ListStateBenchmark` and `MapStateBenchmark` define them.
pub mod op {
    use super::{Inputs, Kb};
    use statefs_backend::{ListState, MapState, ValueState};
    use std::hint::black_box;

    pub fn value_get(kb: &mut Kb, v: &ValueState<u64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        black_box(v.value(kb).unwrap());
    }
    pub fn value_update(kb: &mut Kb, v: &ValueState<u64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        v.update(kb, &inp.value(i)).unwrap();
    }
    pub fn value_add(kb: &mut Kb, v: &ValueState<u64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.new_key(i)).unwrap();
        v.update(kb, &inp.value(i)).unwrap();
    }
    pub fn list_update(kb: &mut Kb, l: &ListState<u64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        l.update(kb, &[inp.value(i)]).unwrap();
    }
    pub fn list_append(kb: &mut Kb, l: &ListState<u64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        l.add(kb, &inp.value(i)).unwrap();
    }
    pub fn list_get(kb: &mut Kb, l: &ListState<u64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        black_box(l.get(kb).unwrap());
    }
    pub fn list_add_all(kb: &mut Kb, l: &ListState<u64>, inp: &Inputs, batch: &[u64], i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        l.add_all(kb, batch).unwrap();
    }
    pub fn list_add(kb: &mut Kb, l: &ListState<u64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.new_key(i)).unwrap();
        l.update(kb, &[inp.value(i)]).unwrap();
    }
    pub fn map_get(kb: &mut Kb, m: &MapState<u64, f64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        black_box(m.get(kb, &inp.map_key(i)).unwrap());
    }
    pub fn map_contains(kb: &mut Kb, m: &MapState<u64, f64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        black_box(m.contains(kb, &(inp.map_key(i) << 1)).unwrap());
    }
    pub fn map_update(kb: &mut Kb, m: &MapState<u64, f64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        m.put(kb, &inp.map_key(i), &inp.map_value(i)).unwrap();
    }
    pub fn map_add(kb: &mut Kb, m: &MapState<u64, f64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.new_key(i)).unwrap();
        m.put(kb, &inp.map_key(i), &inp.map_value(i)).unwrap();
    }
    /// Counts `MAP_ENTRIES` operations (JMH's `@OperationsPerInvocation`).
    pub fn map_iterator(kb: &mut Kb, m: &MapState<u64, f64>, inp: &Inputs, i: u64) {
        kb.set_current_key(&inp.setup_key(i)).unwrap();
        black_box(m.entries(kb).unwrap());
    }
}
