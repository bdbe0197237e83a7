//! The fault soak, short (`STATEFS_SOAK_SECONDS`, default 20; `scripts/soak.sh` runs 600 s).

#[test]
fn rocksdb_on_a_store_failing_10_percent_of_calls_loses_nothing() {
    let seconds = std::env::var("STATEFS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = statefs_tests::seed_from(std::env::var("STATEFS_SOAK_SEED").ok());
    let report = statefs_tests::soak::run(std::time::Duration::from_secs(seconds), 0.1, seed);
    eprintln!("soak (seed {seed}): {report}");
    assert!(report.acked > 0, "{report}");
    assert!(
        report.failed + report.ambiguous > 0,
        "faults were injected: {report}"
    );
}
