//! statefs: a FUSE filesystem that runs an unmodified RocksDB with its SST files on an object store.
//!
//! Layers, top down: [`fuse`] (thin fuser adapter) → [`core::FsCore`] (all operations, no FUSE types)
//! → [`table::MappingTable`] + [`journal::Journal`] (the persisted mapping) → [`store::RemoteStore`]
//! (object storage behind retry/metrics/fault-injection layers).

pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod core;
pub mod endpoint;
pub mod error;
pub mod fsck;
pub mod fuse;
#[doc(hidden)]
pub mod fuzzing;
pub mod journal;
pub mod metrics;
pub mod mount;
pub mod options;
pub mod placement;
pub mod progress;
pub mod store_pool;
pub mod table;

/// The object store and its layers (crate `statefs-store`).
pub use statefs_store as store;
pub use statefs_store::{private, testing};

pub use config::{MountConfig, PassthroughMode};
pub use core::FsCore;
pub use error::{FsError, FsResult};
pub use mount::{MountError, MountHandle};
