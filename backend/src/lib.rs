//! Keyed state backends for stream processors, with Flink's semantics: the State API (value, list,
//! map, reducing, aggregating; namespaces; TTL), key groups, a heap backend with copy-on-write
//! snapshots, and one canonical snapshot/savepoint format every backend reads and writes.
//!
//! Three backends implement [`StateBackend`]: [`HeapBackend`] (hash maps, copy-on-write snapshots),
//! [`RocksBackend`] (embedded RocksDB; feature `rocksdb`) and [`ForstBackend`] (RocksDB on a statefs
//! mount, SST files on an object store; feature `forst`). Both features are on by default; with
//! `default-features = false` the heap backend builds without RocksDB or FUSE.

pub mod asyncstate;
pub mod backend;
pub mod checkpoint;
pub mod checkpointed;
pub mod conformance;
pub mod error;
#[cfg(feature = "forst")]
pub mod forst;
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
pub mod keygroup;
pub mod operator_state;
#[cfg(feature = "rocksdb")]
pub mod rocks;
#[cfg(feature = "rocksdb")]
pub mod rocks_checkpoint;
#[cfg(feature = "rocksdb")]
pub mod rocks_options;
pub mod serializer;
pub mod snapshot;
pub mod states;
pub mod timers;
pub mod ttl;

#[cfg(test)]
mod tests;

pub use backend::{StateBackend, StateKind, StateMeta};
pub use checkpointed::{CheckpointStats, Checkpointed};
pub use error::{StateError, StateResult};
#[cfg(feature = "forst")]
pub use forst::{ForstBackend, ForstHome};
pub use heap::HeapBackend;
pub use keygroup::KeyGroupRange;
pub use operator_state::{BroadcastState, OperatorListState, OperatorState};
#[cfg(feature = "rocksdb")]
pub use rocks::RocksBackend;
#[cfg(feature = "rocksdb")]
pub use rocks_checkpoint::RocksHome;
pub use states::{
    Aggregate, AggregatingState, Keyed, ListState, MapState, ReducingState, ValueState,
};
pub use timers::{TimeDomain, Timer, TimerService};
pub use ttl::{Clock, ManualClock, SystemClock, TtlConfig, UpdateType, Visibility};
