//! Memory under a write-heavy workload: the RocksDB backend with a shared memory budget
//! (`SharedResources`: a strict-capacity block cache and a stalling write-buffer manager) against
//! RocksDB's defaults.
//! Peak RSS is per process, so one run measures one configuration; `scripts/bench-memory.sh`
//! runs both and prints them side by side.
//!
//!   BUDGET_MB=64 WRITE_MB=1024 cargo bench -p statefs-backend --bench memory   # budgeted
//!   BUDGET_MB=0  WRITE_MB=1024 cargo bench -p statefs-backend --bench memory   # RocksDB defaults

use std::time::Instant;

use statefs_backend::RocksBackend;
use statefs_backend::keygroup::KeyGroupRange;
use statefs_backend::rocks::SharedResources;
use statefs_backend::states::Keyed;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// (current RSS, peak RSS) in bytes, from /proc/self/status.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb << 10)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let budget_mb = env("BUDGET_MB", 64);
    let write_mb = env("WRITE_MB", 1024);
    let value = vec![0x5au8; 1024];
    let (base_rss, _) = rss();
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
            .expect("scratch dir");
    let shared =
        (budget_mb > 0).then(|| SharedResources::new((budget_mb << 20) as usize, 0.5).unwrap());
    let backend =
        RocksBackend::open_with(dir.path(), KeyGroupRange::all(128), 128, shared.clone()).unwrap();
    let mut kb: Keyed<u64, RocksBackend> = Keyed::new(backend);
    let v = kb.value_state::<Vec<u8>>("v", None).unwrap();
    let keys = (write_mb << 20) / value.len() as u64;
    let start = Instant::now();
    let (mut peak_cache, mut peak_memtables) = (0, 0);
    for i in 0..keys {
        // Random-ish key order (a multiplicative permutation): memtables fill and flush, compaction
        // runs, reads of recent keys hit the block cache.
        let k = i.wrapping_mul(2_654_435_761) % keys;
        kb.set_current_key(&k).unwrap();
        v.update(&mut kb, &value).unwrap();
        if i % 16 == 0 {
            let r = i.wrapping_mul(40_503) % (i + 1);
            kb.set_current_key(&(r.wrapping_mul(2_654_435_761) % keys))
                .unwrap();
            std::hint::black_box(v.value(&mut kb).unwrap());
        }
        if i % 1024 == 0 {
            let u = kb.backend().memory_usage().unwrap();
            peak_cache = peak_cache.max(u.block_cache);
            peak_memtables = peak_memtables.max(u.memtables);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (now_rss, peak_rss) = rss();
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "| {} | {write_mb} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
        if budget_mb > 0 {
            format!("budget {budget_mb} MB")
        } else {
            "RocksDB defaults".to_string()
        },
        mb(base_rss),
        mb(peak_rss),
        mb(now_rss),
        mb(peak_cache),
        mb(peak_memtables),
        write_mb as f64 / secs,
    );
}
