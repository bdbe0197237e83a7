//! The hot/cold lists and the promotion rules.

use ::lru::LruCache;
use uuid::Uuid;

use super::{CacheConfig, LimitPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    size: u64,
    /// Times this entry was demoted from hot.
    evictions: u32,
    /// Accesses while cold, since the count last restarted.
    accesses: u32,
    /// Cold-list clock value of the last access (older half = stale accesses).
    epoch: u64,
}

/// An entry that lost its local copy: the core deletes the copy (once no handle uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demoted {
    pub id: Uuid,
    pub size: u64,
}

/// Outcome of an access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The local copy is hot.
    Hit,
    /// No local copy, and no promotion yet.
    Miss,
    /// No local copy; it should be loaded now (space is already reserved), and these lost theirs.
    Promote(Vec<Demoted>),
    /// The file is not tracked by the cache.
    Untracked,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub promotions: u64,
    pub evictions: u64,
    pub loadbacks: u64,
    /// Bytes of hot copies.
    pub used: u64,
    pub hot_entries: u64,
    pub cold_entries: u64,
}

#[derive(Debug)]
pub struct CacheIndex {
    cfg: CacheConfig,
    policy: LimitPolicy,
    hot: LruCache<Uuid, Entry>,
    cold: LruCache<Uuid, Entry>,
    used: u64,
    cold_clock: u64,
    stats: CacheStats,
    /// The largest file written through the mount (or found at mount): the room a new file needs
    /// when `target_file_size` is not configured.
    largest_written: u64,
}

impl CacheIndex {
    pub fn new(cfg: CacheConfig, policy: LimitPolicy) -> CacheIndex {
        CacheIndex {
            cfg,
            policy,
            hot: LruCache::unbounded(),
            cold: LruCache::unbounded(),
            used: 0,
            cold_clock: 0,
            stats: CacheStats::default(),
            largest_written: 0,
        }
    }

    pub fn policy(&self) -> &LimitPolicy {
        &self.policy
    }

    pub fn remaining(&self) -> u64 {
        self.policy.remaining(self.used)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            used: self.used,
            hot_entries: self.hot.len() as u64,
            cold_entries: self.cold.len() as u64,
            ..self.stats
        }
    }

    pub fn is_hot(&self, id: &Uuid) -> bool {
        self.hot.contains(id)
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.hot.contains(id) || self.cold.contains(id)
    }

    fn push_cold(&mut self, id: Uuid, mut e: Entry) {
        self.cold_clock += 1;
        e.epoch = self.cold_clock;
        self.cold.put(id, e);
    }

    /// Demotes hot entries from the LRU end until `size` more bytes fit. `on_disk`: those bytes are
    /// already on disk. Never demotes `keep`.
    fn make_room(&mut self, size: u64, on_disk: bool, keep: Uuid) -> Vec<Demoted> {
        let mut out = Vec::new();
        while self.policy.is_overflow(size, self.used, on_disk) {
            let Some((id, _)) = self
                .hot
                .iter()
                .rev()
                .find(|(id, _)| **id != keep)
                .map(|(id, e)| (*id, *e))
            else {
                break;
            };
            let mut e = self.hot.pop(&id).expect("found above");
            self.used -= e.size;
            e.evictions += 1;
            e.accesses = 0;
            self.stats.evictions += 1;
            out.push(Demoted { id, size: e.size });
            self.push_cold(id, e);
        }
        out
    }

    /// A file written through the mount became durable with `size` bytes on disk. Returns whether
    /// its copy stays (hot) and the entries that lost theirs to make room.
    pub fn insert_written(&mut self, id: Uuid, size: u64) -> (bool, Vec<Demoted>) {
        self.remove(&id);
        let fresh = Entry {
            size,
            evictions: 0,
            accesses: 0,
            epoch: 0,
        };
        // The room for one file of the size files are written at: configured, or the largest
        // written so far (this one included).
        self.largest_written = self.largest_written.max(size);
        let room = match self.cfg.target_file_size {
            0 => self.largest_written,
            configured => configured.max(size),
        };
        if !self.policy.direct_write(room, self.used) {
            self.push_cold(id, fresh);
            return (false, Vec::new());
        }
        let demoted = self.make_room(size, true, id);
        self.hot.put(id, fresh);
        self.used += size;
        (true, demoted)
    }

    /// A file known from elsewhere (a restore, or a copy found missing at mount): cold, close to
    /// promotion, as ForSt registers restored files.
    pub fn register_cold(&mut self, id: Uuid, size: u64, head_start: bool) {
        if self.contains(&id) {
            return;
        }
        let accesses = if head_start {
            self.cfg.access_before_promote.saturating_sub(2)
        } else {
            0
        };
        self.push_cold(
            id,
            Entry {
                size,
                evictions: 0,
                accesses,
                epoch: 0,
            },
        );
    }

    /// A complete local copy found at mount: hot if it fits, else demoted at once.
    pub fn register_present(&mut self, id: Uuid, size: u64) -> Vec<Demoted> {
        let (hot, mut demoted) = self.insert_written(id, size);
        if !hot {
            demoted.push(Demoted { id, size });
        }
        demoted
    }

    /// Records one access (an open, or a read served by the daemon).
    pub fn access(&mut self, id: Uuid) -> Access {
        if self.hot.get(&id).is_some() {
            self.stats.hits += 1;
            return Access::Hit;
        }
        let cold_len = self.cold.len() as u64;
        let clock = self.cold_clock;
        let Some(mut e) = self.cold.pop(&id) else {
            return Access::Untracked;
        };
        self.stats.misses += 1;
        if clock - e.epoch >= cold_len / 2 && cold_len > 1 {
            e.accesses = 0;
        }
        e.accesses += 1;
        let promote = e.evictions < self.cfg.promote_limit
            && e.accesses >= self.cfg.access_before_promote
            && self.policy.is_safe_to_add(e.size, self.used);
        if !promote {
            self.push_cold(id, e);
            return Access::Miss;
        }
        e.accesses = 0;
        let demoted = self.make_room(e.size, false, id);
        self.hot.put(id, e);
        self.used += e.size;
        self.stats.promotions += 1;
        Access::Promote(demoted)
    }

    /// Hot entries, most recently used first: what a warm start brings back first.
    pub fn hot_ids(&self) -> Vec<Uuid> {
        self.hot.iter().map(|(id, _)| *id).collect()
    }

    /// Promotes cold entry `id` if it fits in the room the limits leave now, demoting nothing: the
    /// warm-up of a cold start fills free room only, so it never evicts a copy that reads earned.
    /// Returns whether it was promoted (its copy is then to be loaded, the space reserved).
    pub fn fill(&mut self, id: Uuid) -> bool {
        let Some(e) = self.cold.peek(&id).copied() else {
            return false;
        };
        if e.evictions >= self.cfg.promote_limit
            || self.policy.is_overflow(e.size, self.used, false)
        {
            return false;
        }
        let mut e = self.cold.pop(&id).expect("peeked");
        e.accesses = 0;
        self.hot.put(id, e);
        self.used += e.size;
        self.stats.promotions += 1;
        true
    }

    /// Loading a promoted entry failed: it goes back to cold.
    pub fn load_failed(&mut self, id: Uuid) {
        if let Some(e) = self.hot.pop(&id) {
            self.used -= e.size;
            self.push_cold(id, e);
        }
    }

    /// The file is gone (last name removed) or was rewritten: forget it.
    pub fn remove(&mut self, id: &Uuid) {
        if let Some(e) = self.hot.pop(id) {
            self.used -= e.size;
        }
        self.cold.pop(id);
    }

    /// Bytes of copies that were demoted but are still open: counted as used until released.
    pub fn hold(&mut self, bytes: u64) {
        self.used += bytes;
    }

    pub fn unhold(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// A demoted copy was still on disk when promoted again: no download needed.
    pub fn count_loadback(&mut self) {
        self.stats.loadbacks += 1;
    }

    /// Re-checks the limits (free space shrinks from outside): demotes what no longer fits.
    pub fn enforce(&mut self) -> Vec<Demoted> {
        self.make_room(0, false, Uuid::nil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::tests::free;

    fn cfg() -> CacheConfig {
        CacheConfig {
            size_limit: 100,
            reserve_size: 0,
            access_before_promote: 3,
            promote_limit: 2,
            target_file_size: 10,
            ..Default::default()
        }
    }
    fn index(capacity: u64) -> CacheIndex {
        CacheIndex::new(
            CacheConfig {
                size_limit: capacity,
                ..cfg()
            },
            LimitPolicy::Size { capacity },
        )
    }
    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn written_files_enter_hot_and_evict_lru() {
        let mut c = index(100);
        for n in 1..=3 {
            assert_eq!(c.insert_written(id(n), 30), (true, vec![]));
        }
        assert_eq!(
            c.insert_written(id(4), 30),
            (
                true,
                vec![Demoted {
                    id: id(1),
                    size: 30
                }]
            )
        );
        assert_eq!(c.stats().used, 90);
        assert!(!c.is_hot(&id(1)) && c.contains(&id(1)));
        // Touching 2 makes 3 the LRU.
        assert_eq!(c.access(id(2)), Access::Hit);
        let (hot, demoted) = c.insert_written(id(5), 30);
        assert!(hot);
        assert_eq!(
            demoted,
            vec![Demoted {
                id: id(3),
                size: 30
            }]
        );
        assert_eq!(c.stats().evictions, 2);
    }

    /// Unconfigured, the room a new file needs is the largest file written so far: a limit of
    /// 32 over files of 8 holds 4 of them. With Flink's fixed 64 (MB) a cache smaller than that
    /// kept no new file at all.
    #[test]
    fn the_room_for_a_new_file_is_learned_from_the_files_written() {
        // What a mount gets unless the key is set (Flink's 64 MB before: no file kept here).
        let learned = CacheConfig {
            target_file_size: CacheConfig::default().target_file_size,
            ..cfg()
        };
        let mut c = CacheIndex::new(learned, LimitPolicy::Size { capacity: 32 });
        for i in 0..4 {
            assert_eq!(c.insert_written(id(i), 8), (true, vec![]), "file {i}");
        }
        assert_eq!(c.used, 32);
        let fixed = CacheConfig {
            target_file_size: 64,
            ..cfg()
        };
        let mut c = CacheIndex::new(fixed, LimitPolicy::Size { capacity: 32 });
        assert!(!c.insert_written(id(0), 8).0, "no room for a 64");
        assert_eq!(c.used, 0);
    }

    /// A warm-up fills free room only: cold files become hot while they fit, then nothing more,
    /// and no hot copy is ever demoted for one.
    #[test]
    fn a_fill_takes_free_room_and_demotes_nothing() {
        let mut c = index(100);
        assert_eq!(c.insert_written(id(1), 30), (true, vec![]));
        for n in 2..=5 {
            c.register_cold(id(n), 30, false);
        }
        assert!(c.fill(id(2)));
        assert!(c.fill(id(3)));
        assert!(!c.fill(id(4)), "90 used: 30 more do not fit");
        assert!(c.is_hot(&id(1)) && c.is_hot(&id(2)) && c.is_hot(&id(3)));
        assert!(!c.is_hot(&id(4)) && c.contains(&id(4)));
        assert_eq!(c.stats().used, 90);
        assert!(!c.fill(id(2)), "already hot");
        assert!(!c.fill(id(9)), "untracked");
    }

    #[test]
    fn no_room_for_a_target_file_means_cold() {
        // Capacity below the target file size: nothing is written into the cache.
        let mut c = CacheIndex::new(cfg(), LimitPolicy::Size { capacity: 5 });
        assert_eq!(c.insert_written(id(1), 3), (false, vec![]));
        assert!(c.contains(&id(1)) && !c.is_hot(&id(1)));
        let mut off = CacheIndex::new(cfg(), LimitPolicy::Disabled);
        assert_eq!(off.insert_written(id(1), 3), (false, vec![]));
        for _ in 0..10 {
            assert_eq!(
                off.access(id(1)),
                Access::Miss,
                "a disabled cache never promotes"
            );
        }
    }

    #[test]
    fn promotion_after_n_accesses_until_promote_limit() {
        let mut c = index(100);
        c.register_cold(id(1), 40, false);
        // access_before_promote = 3
        assert_eq!(c.access(id(1)), Access::Miss);
        assert_eq!(c.access(id(1)), Access::Miss);
        assert_eq!(c.access(id(1)), Access::Promote(vec![]));
        assert_eq!(c.access(id(1)), Access::Hit);
        assert_eq!(c.stats().used, 40);
        // Evicted twice (promote_limit = 2): never promoted again.
        for round in 0..2 {
            c.insert_written(id(10 + round), 70);
            assert!(!c.is_hot(&id(1)), "round {round}");
            c.remove(&id(10 + round));
            let mut last = Access::Miss;
            for _ in 0..3 {
                last = c.access(id(1));
            }
            if round == 0 {
                assert!(matches!(last, Access::Promote(_)));
            } else {
                assert_eq!(last, Access::Miss);
            }
        }
    }

    #[test]
    fn restored_files_start_close_to_promotion() {
        let mut c = index(100);
        c.register_cold(id(1), 10, true); // access_before_promote 3 -> starts at 1
        assert_eq!(c.access(id(1)), Access::Miss);
        assert_eq!(c.access(id(1)), Access::Promote(vec![]));
    }

    #[test]
    fn stale_cold_accesses_restart_the_count() {
        let mut c = index(100);
        c.register_cold(id(1), 10, false);
        assert_eq!(c.access(id(1)), Access::Miss);
        assert_eq!(c.access(id(1)), Access::Miss);
        // Four newer cold entries push 1 into the older half of the cold list.
        for n in 2..6 {
            c.register_cold(id(n), 10, false);
        }
        assert_eq!(c.access(id(1)), Access::Miss, "count restarted");
        assert_eq!(c.access(id(1)), Access::Miss);
        assert_eq!(c.access(id(1)), Access::Promote(vec![]));
    }

    #[test]
    fn promotion_needs_room_for_the_whole_file() {
        let mut c = index(100);
        c.register_cold(id(1), 150, false);
        for _ in 0..5 {
            assert_eq!(c.access(id(1)), Access::Miss);
        }
    }

    #[test]
    fn space_policy_follows_free_disk() {
        let f = free(1000);
        let mut c = CacheIndex::new(
            CacheConfig {
                size_limit: 0,
                reserve_size: 100,
                ..cfg()
            },
            LimitPolicy::Space {
                free: Box::new(f.clone()),
                reserved: 100,
            },
        );
        assert!(c.insert_written(id(1), 50).0);
        f.0.store(120, std::sync::atomic::Ordering::Relaxed);
        assert!(
            c.enforce().is_empty(),
            "20 bytes above the reserve: nothing to do"
        );
        f.0.store(90, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            c.enforce(),
            vec![Demoted {
                id: id(1),
                size: 50
            }]
        );
    }
}

#[cfg(test)]
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Clone)]
    enum Op {
        Write(u8, u64),
        Cold(u8, u64, bool),
        Access(u8),
        Remove(u8),
        LoadFailed(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..12, 1u64..60).prop_map(|(i, s)| Op::Write(i, s)),
            2 => (0u8..12, 1u64..60, any::<bool>()).prop_map(|(i, s, h)| Op::Cold(i, s, h)),
            6 => (0u8..12).prop_map(Op::Access),
            1 => (0u8..12).prop_map(Op::Remove),
            1 => (0u8..12).prop_map(Op::LoadFailed),
        ]
    }

    proptest! {
        /// Hot bytes never exceed the limit, the `used` counter equals the hot bytes, every tracked
        /// file stays tracked until removed, and every copy that goes is reported exactly once.
        #[test]
        fn never_over_the_limit_and_never_loses_a_file(ops in proptest::collection::vec(op(), 1..200)) {
            let capacity = 100;
            let cfg = CacheConfig { size_limit: capacity, reserve_size: 0, access_before_promote: 2, promote_limit: 3, target_file_size: 10, ..Default::default() };
            let mut c = CacheIndex::new(cfg, LimitPolicy::Size { capacity });
            let mut tracked: BTreeMap<u8, u64> = BTreeMap::new();
            let mut hot: BTreeSet<u8> = BTreeSet::new();
            for op in ops {
                let demoted = match op {
                    Op::Write(i, s) => {
                        let (is_hot, d) = c.insert_written(Uuid::from_u128(i as u128), s);
                        hot.remove(&i);
                        tracked.insert(i, s);
                        if is_hot { hot.insert(i); }
                        d
                    }
                    Op::Cold(i, s, h) => {
                        tracked.entry(i).or_insert_with(|| {
                            c.register_cold(Uuid::from_u128(i as u128), s, h);
                            s
                        });
                        vec![]
                    }
                    Op::Access(i) => match c.access(Uuid::from_u128(i as u128)) {
                        Access::Promote(d) => { prop_assert!(!hot.contains(&i)); hot.insert(i); d }
                        Access::Hit => { prop_assert!(hot.contains(&i)); vec![] }
                        Access::Miss => { prop_assert!(tracked.contains_key(&i) && !hot.contains(&i)); vec![] }
                        Access::Untracked => { prop_assert!(!tracked.contains_key(&i)); vec![] }
                    },
                    Op::Remove(i) => { c.remove(&Uuid::from_u128(i as u128)); tracked.remove(&i); hot.remove(&i); vec![] }
                    Op::LoadFailed(i) => { c.load_failed(Uuid::from_u128(i as u128)); hot.remove(&i); vec![] }
                };
                for d in demoted {
                    let i = d.id.as_u128() as u8;
                    prop_assert!(hot.remove(&i), "demoted {i} was not hot");
                    prop_assert_eq!(tracked[&i], d.size);
                }
                let hot_bytes: u64 = hot.iter().map(|i| tracked[i]).sum();
                prop_assert!(hot_bytes <= capacity, "{hot_bytes} > {capacity}");
                prop_assert_eq!(c.stats().used, hot_bytes);
                for i in tracked.keys() {
                    let id = Uuid::from_u128(*i as u128);
                    prop_assert!(c.contains(&id));
                    prop_assert_eq!(c.is_hot(&id), hot.contains(i));
                }
            }
        }
    }
}
