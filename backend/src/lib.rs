//! Keyed state backends for stream processors (heap, embedded RocksDB, ForSt on statefs).
//!
//! Not built yet: the State API, backends and checkpoint storage arrive with their own issue. The crate
//! exists so the workspace has its final shape.
