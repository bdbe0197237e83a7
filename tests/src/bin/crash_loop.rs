//! `crash_loop [ROUNDS] [SEED]`: the crash loop of `statefs_tests::crash_loop` (run it through
//! `scripts/crash-loop.sh`). A failure names its round and seed; the same seed replays it.

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().map_or(200, |a| a.parse().expect("ROUNDS"));
    let seed = statefs_tests::seed_from(args.next());
    let writer = std::env::current_exe()
        .expect("own path")
        .with_file_name("crash_writer");
    eprintln!("crash loop: {rounds} rounds, seed {seed}");
    let t = std::time::Instant::now();
    let summary = statefs_tests::crash_loop::run(rounds, seed, &writer, true);
    println!(
        "crash loop (seed {seed}, {:.0} s): {summary}",
        t.elapsed().as_secs_f64()
    );
}
