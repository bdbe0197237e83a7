//! Keyed state on the embedded RocksDB backend: two incremental checkpoints (the second names
//! the SST files the first uploaded instead of uploading them again) and a restore.
//!
//! ```sh
//! cargo run -p statefs-backend --example rocksdb_checkpoint
//! ```

use std::sync::Arc;

use statefs_backend::checkpoint::CheckpointStorage;
use statefs_backend::{Checkpointed, KeyGroupRange, Keyed, RocksBackend, RocksHome, StateResult};

const MAX_PARALLELISM: u32 = 128;

fn main() -> StateResult<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = statefs_store::runtime().expect("a tokio runtime");
    let url = format!("file://{}", dir.path().join("store").display());
    let store = statefs_store::RemoteSpec::parse(&url)?.open(&Default::default(), rt)?;
    let mut storage = CheckpointStorage::open(Arc::new(store), "sessions", 2)?;

    let all = KeyGroupRange::all(MAX_PARALLELISM);
    let db = RocksBackend::open(&dir.path().join("db"), all, MAX_PARALLELISM)?;
    let mut kb: Keyed<u64, RocksBackend> = Keyed::new(db);
    let clicks = kb.list_state::<String>("clicks", None)?;
    for user in 0..10_000u64 {
        kb.set_current_key(&user)?;
        clicks.add(&mut kb, &format!("/page/{}", user % 7))?;
    }
    for id in 1..=2 {
        // A few more clicks between the checkpoints: the second uploads only what is new.
        kb.set_current_key(&id)?;
        clicks.add(&mut kb, &"/checkout".to_string())?;
        let mut pending = storage.begin(id, MAX_PARALLELISM);
        let stats = kb.backend_mut().checkpoint(&mut pending)?;
        pending.complete()?;
        println!(
            "checkpoint {id}: {} bytes uploaded, {} bytes of earlier uploads named again",
            stats.bytes_uploaded, stats.bytes_referenced
        );
        if id == 2 {
            assert!(
                stats.bytes_referenced > 0,
                "incremental: earlier SSTs are reused"
            );
        }
    }
    drop(kb);

    // Restore into a new database directory.
    let latest = storage.latest()?.expect("checkpoint 2 is complete");
    let home = RocksHome::new(dir.path().join("restored"));
    let mut kb = Keyed::new(RocksBackend::restore(&storage, &latest, all, home)?);
    let clicks = kb.list_state::<String>("clicks", None)?;
    kb.set_current_key(&2u64)?;
    let got = clicks.get(&mut kb)?;
    println!("user 2 clicked {got:?}");
    assert_eq!(got, vec!["/page/2".to_string(), "/checkout".to_string()]);
    Ok(())
}
