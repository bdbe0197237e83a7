//! Timer operations on the heap and RocksDB backends, in the shapes `scripts/bench-timers.sh` also
//! runs on Flink 2.3's heap backend (scripts/jvm/FlinkTimerReference.java), plus Flink's own
//! timer benchmark shape:
//! - `timerRegister`: `TIMERS` (200k) event-time timers, 10 per key over `TIMERS / 10` long keys,
//!   timestamps pseudo-random in `0..1M` (one sequence, both languages), registered with their
//!   key current, into an empty service;
//! - `timerDelete`: the same timers deleted (with their key current) from a full service;
//! - `timerFire`: a watermark past all of them fires every timer (its key set current);
//! - `fireProcessingTimers`: flink-benchmarks' `ProcessingTimerBenchmark` shape: one key, 150k
//!   processing-time timers at consecutive timestamps, all registered, then all fired; one
//!   operation is one timer registered and fired (Flink's figure also includes starting a job).
//!
//! Each operation runs `BENCH_ROUNDS` (5) invocations on a fresh backend (setup untimed) after
//! one warm-up; the median is printed as ops/ms. For profiling: `BENCH_ONLY=timerFire,...` runs
//! just those, `BENCH_HEAP_ONLY=1` skips RocksDB.
//!
//! `TIMER_SCALE` (default 2M; 0 skips) then registers that many timers on a RocksDB backend and
//! fires them all, printing throughput, the timers held in memory (heads) and the RSS growth:
//! timer memory is bounded by key groups x `timer-service.cache-size`, not by the timer count.
//!
//!   cargo bench -p statefs-backend --bench timers

use std::time::Instant;

use statefs_backend::keygroup::KeyGroupRange;
use statefs_backend::states::Keyed;
use statefs_backend::{HeapBackend, RocksBackend, StateBackend, TimeDomain, TimerService};

mod proc;
use proc::rss;

const KEY_GROUPS: u32 = 128;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: the same sequence as FlinkTimerReference's.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Timer `i`: (key, timestamp).
fn timer(i: u64, timers: u64) -> (u64, i64) {
    (i % (timers / 10).max(1), (mix(i) % 1_000_000) as i64)
}

type Kb<B> = Keyed<u64, B>;

fn register_all<B: StateBackend>(kb: &mut Kb<B>, t: &mut TimerService<()>, n: u64) {
    for i in 0..n {
        let (key, ts) = timer(i, n);
        kb.set_current_key(&key).unwrap();
        t.register(kb, TimeDomain::EventTime, &(), ts).unwrap();
    }
}

/// One invocation of `op` on a fresh backend: operations done, seconds.
fn invoke<B: StateBackend>(op: &str, fresh: &dyn Fn() -> B, n: u64) -> (u64, f64) {
    let mut kb = Keyed::new(fresh());
    let mut t: TimerService<()> = TimerService::new(&mut kb, "bench").unwrap();
    match op {
        "timerRegister" => {
            let start = Instant::now();
            register_all(&mut kb, &mut t, n);
            (n, start.elapsed().as_secs_f64())
        }
        "timerDelete" => {
            register_all(&mut kb, &mut t, n);
            let start = Instant::now();
            for i in 0..n {
                // Another order than registration: every 7th, wrapping.
                let (key, ts) = timer((i * 7) % n, n);
                kb.set_current_key(&key).unwrap();
                t.delete(&mut kb, TimeDomain::EventTime, &(), ts).unwrap();
            }
            assert!(t.is_empty());
            (n, start.elapsed().as_secs_f64())
        }
        "timerFire" => {
            register_all(&mut kb, &mut t, n);
            let start = Instant::now();
            let mut sum = 0u64;
            let fired = t
                .advance_watermark(&mut kb, i64::MAX, |_, _, timer| {
                    sum = sum.wrapping_add(timer.key);
                    Ok(())
                })
                .unwrap();
            std::hint::black_box(sum);
            (fired as u64, start.elapsed().as_secs_f64())
        }
        "fireProcessingTimers" => {
            const PER_INVOCATION: i64 = 150_000;
            let now = 1_700_000_000_000i64;
            let start = Instant::now();
            kb.set_current_key(&42).unwrap();
            for i in 0..PER_INVOCATION {
                t.register(
                    &mut kb,
                    TimeDomain::ProcessingTime,
                    &(),
                    now - PER_INVOCATION + i,
                )
                .unwrap();
            }
            let fired = t
                .advance_processing_time(&mut kb, now, |_, _, _| Ok(()))
                .unwrap();
            assert_eq!(fired as i64, PER_INVOCATION);
            (fired as u64, start.elapsed().as_secs_f64())
        }
        _ => unreachable!("{op}"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = env("TIMERS", 200_000);
    let rounds = env("BENCH_ROUNDS", 5).max(1);
    let range = KeyGroupRange::all(KEY_GROUPS);
    let heap = || HeapBackend::new(range, KEY_GROUPS);
    let rocks = || RocksBackend::temporary(range, KEY_GROUPS).unwrap();
    println!(
        "timer operations, ops/ms, median of {rounds}, {n} timers, {KEY_GROUPS} key groups, \
         one thread"
    );
    println!("| operation | statefs heap | statefs rocksdb |");
    println!("|---|---|---|");
    for op in [
        "timerRegister",
        "timerDelete",
        "timerFire",
        "fireProcessingTimers",
    ] {
        let rate = |fresh: &dyn Fn() -> Box<dyn StateBackend>| {
            invoke(op, fresh, n); // warm-up
            median(
                (0..rounds)
                    .map(|_| {
                        let (ops, secs) = invoke(op, fresh, n);
                        ops as f64 / secs / 1000.0
                    })
                    .collect(),
            )
        };
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        if !only.is_empty() && !only.split(',').any(|o| o == op) {
            continue;
        }
        let h = rate(&|| Box::new(heap()));
        let r = if std::env::var("BENCH_HEAP_ONLY").is_ok() {
            0.0
        } else {
            rate(&|| Box::new(rocks()))
        };
        println!("| {op} | {h:.0} | {r:.0} |");
    }

    let scale = env("TIMER_SCALE", 2_000_000);
    if scale > 0 {
        let before = rss();
        let mut kb = Keyed::new(rocks());
        let mut t: TimerService<()> = TimerService::new(&mut kb, "scale").unwrap();
        let start = Instant::now();
        register_all(&mut kb, &mut t, scale);
        let registered = start.elapsed().as_secs_f64();
        let held = t.in_memory();
        let grown = rss().saturating_sub(before);
        // Fewer than `scale`: a (key, timestamp) drawn twice is one timer.
        let distinct = t.len(&kb, TimeDomain::EventTime).unwrap() as u64;
        let start = Instant::now();
        let mut last = i64::MIN;
        let fired = t
            .advance_watermark(&mut kb, i64::MAX, |_, _, timer| {
                assert!(timer.timestamp >= last);
                last = timer.timestamp;
                Ok(())
            })
            .unwrap();
        let fire = start.elapsed().as_secs_f64();
        assert_eq!(fired as u64, distinct);
        println!();
        println!(
            "scale (rocksdb, default cache-size 128): {scale} timers registered at {:.0} ops/ms, \
             fired in order at {:.0} ops/ms; {held} timers in memory after registering \
             (bound {} = key groups x 128); RSS +{} MB; {distinct} distinct timers",
            scale as f64 / registered / 1000.0,
            fired as f64 / fire / 1000.0,
            KEY_GROUPS as usize * 128,
            grown >> 20
        );
    }
}
