//! The bounded local cache of remote-placed files, with Flink ForSt's semantics.
//!
//! Whole-file local copies sit in a *hot* LRU list; a *cold* list keeps only metadata and access
//! counts (a ghost list). Only hot entries hold bytes, and only hot bytes count against the limits.
//!
//! - A file written through the mount enters hot when the policy has room for one target file size
//!   ([`LimitPolicy::direct_write`]), else cold (its staging copy is dropped once it is durable).
//! - A cold entry is promoted (its bytes loaded again) after `access_before_promote` accesses, unless
//!   it was evicted `promote_limit` times already. Accesses in the older half of the cold list restart
//!   the count.
//! - Making room demotes hot entries from the LRU end: each demotion drops the local copy and counts an
//!   eviction of that entry.
//! - Entries that are pinned (being written: not yet durable) are never demoted.
//!
//! This module is pure bookkeeping: [`CacheIndex`] says what to drop or load; the core does the I/O.

mod blocks;
mod lru;
mod policy;

pub use blocks::{BlockCache, BlockConfig, BlockStats, ObjectRef, ReadPattern};
pub use lru::{Access, CacheIndex, CacheStats, Demoted};
pub use policy::{FreeSpace, LimitPolicy, StatvfsFreeSpace};

/// ForSt's cache options (`state.backend.forst.cache.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// `state.backend.forst.cache.size-based-limit`: bytes of hot copies, 0 = no size limit.
    pub size_limit: u64,
    /// `state.backend.forst.cache.reserve-size`: free disk space to keep, 0 = no space limit.
    pub reserve_size: u64,
    /// `state.backend.forst.cache.lru.access-before-promote`: cold accesses before a promotion.
    pub access_before_promote: u32,
    /// `state.backend.forst.cache.lru.promote-limit`: evictions after which an entry is no longer
    /// promoted.
    pub promote_limit: u32,
    /// `state.backend.forst.compaction.level.target-file-size-base`: the room a new file needs to be
    /// written into the cache directly. 0 (the default): the largest file written so far, which
    /// is what RocksDB's own `target_file_size_base` makes them; so a limit holds as many files
    /// as fit, not one per 64 MB guessed.
    pub target_file_size: u64,
    /// Cold reads of files without a local copy.
    pub blocks: BlockConfig,
    /// Background fetches of cold files into the kernel's page cache.
    pub warm: crate::core::warm::WarmConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            size_limit: 0,
            reserve_size: 256 << 20,
            access_before_promote: 6,
            promote_limit: 3,
            target_file_size: 0,
            blocks: BlockConfig::default(),
            warm: Default::default(),
        }
    }
}

impl CacheConfig {
    /// Both limits off means no cache at all: every copy is dropped once durable.
    pub fn enabled(&self) -> bool {
        self.size_limit > 0 || self.reserve_size > 0
    }
}
