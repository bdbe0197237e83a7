//! Keyed state in ForSt mode: RocksDB on a statefs mount whose SST files live in an object store
//! (here a `file://` directory). A checkpoint copies no SST byte; a restore mounts the checkpoint
//! elsewhere and reads SSTs on first access. Needs root and /dev/fuse (it mounts).
//!
//! ```sh
//! cargo run -p statefs-backend --example forst_checkpoint
//! ```

use std::sync::Arc;

use statefs_backend::checkpoint::CheckpointStorage;
use statefs_backend::forst::MountConfig;
use statefs_backend::{Checkpointed, ForstBackend, ForstHome, KeyGroupRange, Keyed, StateResult};

const MAX_PARALLELISM: u32 = 128;

fn main() -> StateResult<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = |p: &str| {
        let p = dir.path().join(p);
        std::fs::create_dir_all(&p).expect("a scratch directory");
        p
    };
    // The store the SST files live in, and the job's checkpoint storage (here the same one).
    let url = format!("file://{}", path("store").display());
    let rt = statefs_store::runtime().expect("a tokio runtime");
    let store = statefs_store::RemoteSpec::parse(&url)?.open(&Default::default(), rt)?;
    let mut storage = CheckpointStorage::open(Arc::new(store), "orders", 2)?;

    let all = KeyGroupRange::all(MAX_PARALLELISM);
    let config = MountConfig::new(&url, path("a/local"), path("a/cache"));
    let forst = ForstBackend::open(&config, &path("a/mnt"), all, MAX_PARALLELISM)?;
    let mut kb: Keyed<String, ForstBackend> = Keyed::new(forst);
    let total = kb.reducing_state::<u64>("total", |a, b| a + b, None)?;
    for order in 0..5_000u64 {
        kb.set_current_key(&format!("customer-{}", order % 100))?;
        total.add(&mut kb, order)?;
    }
    let mut pending = storage.begin(1, MAX_PARALLELISM);
    let stats = kb.backend_mut().checkpoint(&mut pending)?;
    pending.complete()?;
    println!(
        "checkpoint 1: {} bytes copied, {} bytes of SST objects named without copying",
        stats.bytes_uploaded, stats.bytes_referenced
    );
    drop(kb); // closes the database, then unmounts

    // Restore on another mount (fresh local and cache dirs, the same store).
    let latest = storage.latest()?.expect("checkpoint 1 is complete");
    let config = MountConfig::new(&url, path("b/local"), path("b/cache"));
    let home = ForstHome::new(config, path("b/mnt"));
    let mut kb = Keyed::new(ForstBackend::restore(&storage, &latest, all, home)?);
    let total = kb.reducing_state::<u64>("total", |a, b| a + b, None)?;
    kb.set_current_key(&"customer-7".to_string())?;
    let got = total.get(&mut kb)?;
    println!("customer-7 ordered {got:?} in all");
    assert_eq!(got, Some((0..5_000u64).filter(|o| o % 100 == 7).sum()));
    Ok(())
}
