//! `soak [SECONDS] [RATE] [SEED]`: the fault soak of `statefs_tests::soak` (run it through
//! `scripts/soak.sh`): RocksDB on a mount whose store fails RATE (default 0.1) of its calls.

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(600, |a| a.parse().expect("SECONDS"));
    let rate: f64 = args.next().map_or(0.1, |a| a.parse().expect("RATE"));
    let seed = statefs_tests::seed_from(args.next());
    eprintln!("soak: {seconds} s, {rate} of store calls failing, seed {seed}");
    let report = statefs_tests::soak::run(std::time::Duration::from_secs(seconds), rate, seed);
    println!("soak (seed {seed}, fault rate {rate}): {report}");
}
