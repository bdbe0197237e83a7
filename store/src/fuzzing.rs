//! The harness shared by the crates' fuzz targets: how a target is named, and the replay of the
//! inputs checked in under `fuzz/` that the normal test suite runs.

/// A fuzz target: its name (the directory under `fuzz/corpus/`) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// The test both crates run: every target has a checked-in corpus, and every checked-in input
/// (corpus and regressions) passes.
pub fn assert_checked_in_inputs_pass(fuzz_dir: &std::path::Path, targets: &[Target]) {
    let ran = replay_checked_in(fuzz_dir, targets);
    for (name, _) in targets {
        assert!(
            fuzz_dir.join("corpus").join(name).is_dir(),
            "no checked-in corpus for fuzz target {name}"
        );
    }
    assert!(ran >= targets.len(), "only {ran} inputs");
}

/// Replays every input checked in under `fuzz/<kind>/<target>/` for `targets`: the corpus that
/// seeds the fuzzer and the regressions it found. Returns how many inputs ran.
pub fn replay_checked_in(fuzz_dir: &std::path::Path, targets: &[Target]) -> usize {
    let mut ran = 0;
    for (name, target) in targets {
        for kind in ["corpus", "regressions"] {
            let dir = fuzz_dir.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
            paths.sort();
            for p in paths {
                let data = std::fs::read(&p).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "fuzz input {} failed", p.display());
                ran += 1;
            }
        }
    }
    ran
}

/// Writes `seeds` into `fuzz/corpus/<target>/seed-<n>`.
pub fn write_seeds(fuzz_dir: &std::path::Path, seeds: &[(&str, Vec<u8>)]) {
    let mut n = std::collections::HashMap::new();
    for (target, bytes) in seeds {
        let dir = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let i = n.entry(*target).or_insert(0);
        *i += 1;
        std::fs::write(dir.join(format!("seed-{i}")), bytes).unwrap();
    }
}
