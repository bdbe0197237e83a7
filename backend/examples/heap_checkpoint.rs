//! Keyed state on the heap backend, checkpointed to a `file://` store and restored on two
//! subtasks (rescaling 1 → 2).
//!
//! ```sh
//! cargo run -p statefs-backend --example heap_checkpoint
//! ```

use std::sync::Arc;

use statefs_backend::checkpoint::CheckpointStorage;
use statefs_backend::{Checkpointed, HeapBackend, KeyGroupRange, Keyed, StateResult};

const MAX_PARALLELISM: u32 = 128;

fn main() -> StateResult<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = statefs_store::runtime().expect("a tokio runtime");
    let store = statefs_store::RemoteSpec::parse(&format!("file://{}", dir.path().display()))?
        .open(&Default::default(), rt)?;
    let mut storage = CheckpointStorage::open(Arc::new(store), "word-count", 2)?;

    // One subtask owns every key group: count words, remember the last line each was seen in.
    let all = KeyGroupRange::all(MAX_PARALLELISM);
    let mut kb: Keyed<String, HeapBackend> = Keyed::new(HeapBackend::new(all, MAX_PARALLELISM));
    let count = kb.value_state::<u64>("count", None)?;
    let seen_in = kb.map_state::<u32, String>("seen-in", None)?;
    let lines = ["to be or not to be", "that is the question"];
    for (n, line) in lines.iter().enumerate() {
        for word in line.split_whitespace() {
            kb.set_current_key(&word.to_string())?;
            let c = count.value(&mut kb)?.unwrap_or(0);
            count.update(&mut kb, &(c + 1))?;
            seen_in.put(&mut kb, &(n as u32), &line.to_string())?;
        }
    }

    // Checkpoint 1: each subtask adds its part; completing makes it visible atomically.
    let mut pending = storage.begin(1, MAX_PARALLELISM);
    let stats = kb.backend_mut().checkpoint(&mut pending)?;
    pending.complete()?;
    println!("checkpoint 1: {stats:?}");

    // Restore on two subtasks: each reads only its own key groups.
    let latest = storage.latest()?.expect("checkpoint 1 is complete");
    let mut total = 0;
    for i in 0..2 {
        let range = KeyGroupRange::for_operator(MAX_PARALLELISM, 2, i);
        let restored = HeapBackend::restore(&storage, &latest, range, ())?;
        let mut kb: Keyed<String, HeapBackend> = Keyed::new(restored);
        let count = kb.value_state::<u64>("count", None)?;
        for (word, _) in kb.keys("count")? {
            kb.set_current_key(&word)?;
            let c = count.value(&mut kb)?.expect("restored");
            println!("subtask {i} ({range:?}): {word} = {c}");
            total += c;
        }
    }
    assert_eq!(total, 10, "every word of both lines, counted once");
    Ok(())
}
