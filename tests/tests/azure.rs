//! The store suite (remote_suite) on `az://` against Azurite, Azure's storage emulator.
//!
//! One test in this binary: the Azure client reads its settings from the environment, which is
//! set here before any other thread of the test exists.

use statefs_tests::{Dirs, Emulator};

mod remote_suite;

#[test]
fn azure_blob_storage_passes_the_store_suite() {
    let azurite = Emulator::azurite("statefs");
    // SAFETY: the only test of this binary sets these before it starts a thread.
    unsafe {
        std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
        std::env::set_var("AZURITE_BLOB_STORAGE_URL", azurite.endpoint());
    }
    let dirs = Dirs::new();
    let config = statefs::MountConfig::new("az://statefs/prefix/one", &dirs.local, &dirs.cache);
    remote_suite::rocksdb_workload(config, &dirs, "az://statefs");

    let dirs = Dirs::new();
    let config = statefs::MountConfig::new("az://statefs/gc", &dirs.local, &dirs.cache);
    let remote = remote_suite::open_store("az://statefs/gc", &config);
    remote_suite::gc_scenario(remote, config, &dirs.mnt, &dirs);
}
