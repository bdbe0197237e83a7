//! The heap backend: a map per state and key group, copied on write after a snapshot.
//!
//! Each key group's map sits behind an `Arc`. A snapshot clones the `Arc`s (one per state and key
//! group: "marking a version"), and the first write to a key group afterwards copies just that map
//! (`Arc::make_mut`). Writers never wait for a snapshot being written.
//!
//! Map states, and states with TTL (whose incremental cleanup walks entries in order), keep a sorted
//! map; timer states keep an ordered map of their own (`ordered.rs`), which timer services read a
//! key group's earliest timers from. Every other state keeps a hash map: it is only ever looked up by its exact composite key.
//! That is sound because composite keys are length-prefixed (`[len][key][len][ns][user key]`) and
//! only map states have a user key, so no composite key of another kind is a prefix of another: a
//! prefix scan of such a state is an exact lookup.
//!
//! Puts and appends to states without TTL are held back for a few operations (`pending.rs`) so
//! that their cache misses overlap; every read, snapshot and other write of a state applies its
//! held ops first.

use std::cell::{Ref, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{Entry, SnapshotView, StateBackend, StateId, StateKind, StateMeta};
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;

mod bytes;
mod kv;
mod map_slot;
mod ordered;
mod pending;
mod table;
mod user_map;
use bytes::Bytes;
use kv::Kv;
use map_slot::MapSlot;
use ordered::Ordered;
use pending::{Kind, Pending};
use table::{KeyHasher, Table, TableEntry};

#[derive(Clone)]
enum Group {
    /// Map states without TTL: (key, namespace) prefix -> user key -> value. A point access is a
    /// hash lookup plus a search among one key's entries (in the same slot while they fit,
    /// `map_slot.rs`), not a search of the whole key group.
    TwoLevel(Table<MapSlot>),
    Sorted(BTreeMap<Bytes, Bytes>),
    /// Timer states: ordered by key, compared as integers first (`ordered.rs`).
    Ordered(Ordered),
    /// Value and list states: key and value in one 32-byte slot while they fit (`kv.rs`).
    Hashed(Table<Kv>),
}

/// Overwrites `k`'s value in place, or inserts it; an existing key is not rebuilt.
fn set(m: &mut BTreeMap<Bytes, Bytes>, k: &[u8], v: &[u8]) {
    match m.get_mut(k) {
        Some(old) => {
            old.set(v);
        }
        None => {
            m.insert(k.into(), v.into());
        }
    }
}

/// Appends to `k`'s value in place, or inserts it.
fn extend(m: &mut BTreeMap<Bytes, Bytes>, k: &[u8], v: &[u8]) {
    match m.get_mut(k) {
        Some(old) => old.extend_from_slice(v),
        None => {
            m.insert(k.into(), v.into());
        }
    }
}

impl Group {
    fn for_meta(meta: &StateMeta, hasher: KeyHasher) -> Group {
        if meta.is_timer_state() {
            Group::Ordered(Ordered::default())
        } else if meta.ttl.is_some() {
            Group::Sorted(BTreeMap::new())
        } else if meta.kind == StateKind::Map {
            Group::TwoLevel(Table::with_hasher(hasher))
        } else {
            Group::Hashed(Table::with_hasher(hasher))
        }
    }

    /// Starts loading the slot of the key whose (key, namespace) prefix hashes to `hash`.
    fn prefetch(&self, hash: u32) {
        match self {
            Group::TwoLevel(t) => t.prefetch(hash),
            Group::Hashed(t) => t.prefetch(hash),
            Group::Sorted(_) | Group::Ordered(_) => {}
        }
    }

    /// Starts loading the slot that an access to composite key `k` will touch.
    fn prefetch_key(&self, hasher: &KeyHasher, k: &[u8]) {
        match self {
            Group::TwoLevel(t) => t.prefetch(hasher.hash(split_prefix(k).0)),
            Group::Hashed(t) => t.prefetch(hasher.hash(k)),
            Group::Sorted(_) | Group::Ordered(_) => {}
        }
    }

    fn get(&self, k: &[u8]) -> Option<&[u8]> {
        match self {
            Group::TwoLevel(m) => {
                let (p, uk) = split_prefix(k);
                m.get(p)?.get(uk)
            }
            Group::Sorted(m) => m.get(k).map(|v| v.as_slice()),
            Group::Ordered(m) => m.get(k),
            Group::Hashed(m) => m.get(k).map(Kv::value),
        }
    }

    fn contains(&self, k: &[u8]) -> bool {
        self.get(k).is_some()
    }

    fn insert(&mut self, k: &[u8], v: &[u8]) {
        match self {
            Group::TwoLevel(m) => {
                let (p, uk) = split_prefix(k);
                m.find_or_insert_with(p, MapSlot::new).0.set(uk, v);
            }
            Group::Sorted(m) => set(m, k, v),
            Group::Ordered(m) => m.insert(k, v),
            Group::Hashed(m) => {
                let (e, inserted) = m.find_or_insert_with(k, |h, k| Kv::new(h, k, v));
                if !inserted {
                    e.set_value(v);
                }
            }
        }
    }

    fn append(&mut self, k: &[u8], bytes: &[u8]) {
        match self {
            Group::TwoLevel(m) => {
                let (p, uk) = split_prefix(k);
                m.find_or_insert_with(p, MapSlot::new).0.extend(uk, bytes);
            }
            Group::Sorted(m) => extend(m, k, bytes),
            Group::Ordered(m) => m.append(k, bytes),
            Group::Hashed(m) => {
                let (e, inserted) = m.find_or_insert_with(k, |h, k| Kv::new(h, k, bytes));
                if !inserted {
                    e.append_value(bytes);
                }
            }
        }
    }

    fn write(&mut self, kind: Kind, k: &[u8], v: &[u8]) {
        match kind {
            Kind::Put => self.insert(k, v),
            Kind::Append => self.append(k, v),
        }
    }

    fn remove(&mut self, k: &[u8]) {
        match self {
            Group::TwoLevel(m) => {
                let (p, uk) = split_prefix(k);
                if let Some(inner) = m.get_mut(p) {
                    inner.remove(uk);
                    if inner.is_empty() {
                        m.remove(p);
                    }
                }
            }
            Group::Sorted(m) => {
                m.remove(k);
            }
            Group::Ordered(m) => m.remove(k),
            Group::Hashed(m) => {
                m.remove(k);
            }
        }
    }

    /// Calls `f(suffix, value)` for the entries whose key starts with `prefix`, in key order,
    /// until `f` returns false; `suffix` is the key after `prefix`.
    fn for_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        match self {
            Group::TwoLevel(m) => match split_prefix(prefix) {
                (p, uk) if uk.is_empty() && p.len() == prefix.len() => {
                    for (uk, v) in m.get(p).into_iter().flat_map(MapSlot::iter) {
                        if !f(uk, v) {
                            return;
                        }
                    }
                }
                // Any other prefix: filter the ordered whole.
                _ => {
                    for (k, v) in self.sorted() {
                        if k.starts_with(prefix) && !f(&k[prefix.len()..], &v) {
                            return;
                        }
                    }
                }
            },
            Group::Sorted(m) => {
                let end = prefix_end(prefix);
                let upper = match &end {
                    Some(e) => Bound::Excluded(e.as_slice()),
                    None => Bound::Unbounded,
                };
                for (k, v) in m.range::<[u8], _>((Bound::Included(prefix), upper)) {
                    if !f(&k[prefix.len()..], v) {
                        return;
                    }
                }
            }
            Group::Ordered(m) => m.for_prefix(prefix, f),
            // Prefix-free keys (see the module doc): the prefix is the whole key.
            Group::Hashed(m) => {
                if let Some(e) = m.get(prefix) {
                    f(&[], e.value());
                }
            }
        }
    }

    /// Entries whose key starts with `prefix`, in key order.
    fn prefixed(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        self.for_prefix(prefix, &mut |suffix, v| {
            out.push(([prefix, suffix].concat(), v.to_vec()));
            true
        });
        out
    }

    /// Every entry, in key order.
    fn sorted(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            // Prefixes are prefix-free, so ordering by prefix, then user key, is composite-key order.
            Group::TwoLevel(m) => {
                let mut prefixes: Vec<&MapSlot> = m.iter().collect();
                prefixes.sort_unstable_by(|a, b| a.key().cmp(b.key()));
                prefixes
                    .into_iter()
                    .flat_map(|e| {
                        e.iter()
                            .map(move |(uk, v)| ([e.key(), uk].concat(), v.to_vec()))
                    })
                    .collect()
            }
            Group::Sorted(m) => m.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
            Group::Ordered(m) => m.sorted(),
            Group::Hashed(m) => {
                let mut v: Vec<_> = m
                    .iter()
                    .map(|e| (e.key().to_vec(), e.value().to_vec()))
                    .collect();
                v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                v
            }
        }
    }

    fn after(&self, after: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            Group::Sorted(m) => {
                let lower = match after {
                    Some(a) => Bound::Excluded(a),
                    None => Bound::Unbounded,
                };
                m.range::<[u8], _>((lower, Bound::Unbounded))
                    .take(limit)
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect()
            }
            Group::Ordered(m) => m.after(after, limit),
            Group::Hashed(_) | Group::TwoLevel(_) => {
                let all = self.sorted();
                let start = match after {
                    Some(a) => all.partition_point(|(k, _)| k.as_slice() <= a),
                    None => 0,
                };
                all.into_iter().skip(start).take(limit).collect()
            }
        }
    }
}

/// Timers per key group a timer service on the heap backend keeps beside the backend's ordered
/// map. Measured (`--bench timers`, 200k timers): 1 makes firing reload after every timer (fire
/// 2.5k ops/ms), 32 makes registering maintain a longer head (3.9k); 8 was best on all four
/// operations within noise.
const HEAP_TIMER_HEAD: usize = 8;

pub struct HeapBackend {
    range: KeyGroupRange,
    max_parallelism: u32,
    metas: Vec<StateMeta>,
    /// `groups[state][key group - range.start]`, a `RefCell` per state so that a read, which
    /// borrows the backend shared, can apply that state's held writes first. A state's cell is
    /// borrowed mutably only to apply its held writes ([`HeapBackend::settle_state`]); a read of
    /// the state applies them before it borrows, and none can be added while that borrow is out
    /// (holding needs `&mut self`), so the two never meet, even when a read's callback reads the
    /// backend again.
    groups: Vec<RefCell<Vec<Arc<Group>>>>,
    /// Writes not applied yet (`pending.rs`).
    pending: RefCell<Pending>,
    by_name: HashMap<String, StateId>,
    /// The hash of every table of this backend (see [`StateBackend::prefetch`]).
    hasher: KeyHasher,
    /// Bit `s` is set when state `s` (< 64) was accessed since the last `prefetch`: the states a
    /// record touches, which the next record's key is prefetched in. Relaxed: it is only a hint.
    recent: AtomicU64,
}

impl HeapBackend {
    pub fn new(range: KeyGroupRange, max_parallelism: u32) -> Self {
        assert!(
            range.end < max_parallelism,
            "range {range:?} beyond max parallelism {max_parallelism}"
        );
        HeapBackend {
            range,
            max_parallelism,
            metas: Vec::new(),
            groups: Vec::new(),
            pending: RefCell::new(Pending::default()),
            by_name: HashMap::new(),
            hasher: KeyHasher::random(),
            recent: AtomicU64::new(0),
        }
    }

    /// Notes that state `s` is in use (for [`StateBackend::prefetch`]). A load and, the first
    /// time per record, a store: no read-modify-write on the access path.
    #[inline(always)]
    fn touch(&self, s: StateId) {
        if s < 64 {
            let r = self.recent.load(Ordering::Relaxed);
            if r & (1 << s) == 0 {
                self.recent.store(r | (1 << s), Ordering::Relaxed);
            }
        }
    }

    /// State `s`'s map of key group `kg`, its held writes applied.
    fn group(&self, s: StateId, kg: u32) -> StateResult<Ref<'_, Group>> {
        self.check(kg)?;
        self.settle_state(s);
        self.touch(s);
        let i = (kg - self.range.start) as usize;
        Ok(Ref::map(self.groups[s].borrow(), |g| &*g[i]))
    }

    /// State `s`'s map of key group `kg`, copied first if a snapshot shares it, its held writes
    /// applied.
    fn group_mut(&mut self, s: StateId, kg: u32) -> StateResult<&mut Group> {
        self.check(kg)?;
        self.settle_state(s);
        self.touch(s);
        let i = (kg - self.range.start) as usize;
        Ok(Arc::make_mut(&mut self.groups[s].get_mut()[i]))
    }

    /// Applies state `s`'s held writes, oldest first, if it has any.
    #[inline(always)]
    fn settle_state(&self, s: StateId) {
        if self.pending.borrow().holds(s) {
            self.settle_held(s);
        }
    }

    fn settle_held(&self, s: StateId) {
        let mut groups = self.groups[s].borrow_mut();
        let start = self.range.start;
        self.pending.borrow_mut().drain_state(s, |kg, kind, k, v| {
            Arc::make_mut(&mut groups[(kg - start) as usize]).write(kind, k, v)
        });
    }

    /// Applies every held write.
    fn settle_all(&self) {
        let mut states = self.pending.borrow().states();
        while states != 0 {
            let s = states.trailing_zeros() as usize;
            states &= states - 1;
            self.settle_held(s);
        }
    }

    /// Writes `value` at `k` now, or holds the write (`pending.rs`) where the state allows it.
    fn write(
        &mut self,
        s: StateId,
        kg: u32,
        kind: Kind,
        k: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        self.check(kg)?;
        if !Pending::can_hold(s) || self.metas[s].ttl.is_some() {
            self.group_mut(s, kg)?.write(kind, k, value);
            return Ok(());
        }
        self.touch(s);
        let i = (kg - self.range.start) as usize;
        self.groups[s].get_mut()[i].prefetch_key(&self.hasher, k);
        if self.pending.get_mut().push(s, kg, kind, k, value) {
            self.settle_all();
        }
        Ok(())
    }

    fn check(&self, kg: u32) -> StateResult<()> {
        if self.range.contains(kg) {
            Ok(())
        } else {
            Err(StateError::KeyOutOfRange {
                key_group: kg,
                range: self.range,
            })
        }
    }

    fn insert_state(&mut self, meta: StateMeta) -> StateId {
        let id = self.metas.len();
        self.by_name.insert(meta.name.clone(), id);
        let groups = (0..self.range.len())
            .map(|_| Arc::new(Group::for_meta(&meta, self.hasher)))
            .collect();
        self.groups.push(RefCell::new(groups));
        self.metas.push(meta);
        id
    }
}

/// Splits a composite key into its (key, namespace) prefix and the user key. A key that is not a
/// composite key (never produced by the State API) is all prefix.
fn split_prefix(ck: &[u8]) -> (&[u8], &[u8]) {
    match crate::backend::split_composite(ck) {
        Some((k, ns, _)) => ck.split_at(8 + k.len() + ns.len()),
        None => (ck, &[]),
    }
}

fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl std::fmt::Debug for HeapBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::backend::fmt_backend(self, f)
    }
}

impl StateBackend for HeapBackend {
    fn name(&self) -> &'static str {
        "heap"
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn register(&mut self, meta: StateMeta) -> StateResult<StateId> {
        match self.by_name.get(&meta.name).copied() {
            Some(id) => {
                crate::backend::reregister(&mut self.metas[id], meta)?;
                Ok(id)
            }
            None => Ok(self.insert_state(meta)),
        }
    }

    fn meta(&self, id: StateId) -> &StateMeta {
        &self.metas[id]
    }

    fn states(&self) -> Vec<StateMeta> {
        self.metas.clone()
    }

    fn get(&self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<Option<Vec<u8>>> {
        Ok(self.group(s, kg)?.get(ck).map(<[u8]>::to_vec))
    }

    /// Prefetches `prefix`'s slot in the key group of each state the previous record accessed
    /// (`recent`): an operator mostly touches the same states for every record. The miss then
    /// overlaps the serialization and bookkeeping before the lookup.
    fn prefetch(&self, kg: u32, prefix: &[u8]) {
        let mut states = self.recent.load(Ordering::Relaxed);
        if states == 0 {
            return;
        }
        self.recent.store(0, Ordering::Relaxed);
        if !self.range.contains(kg) {
            return;
        }
        let hash = self.hasher.hash(prefix);
        let g = (kg - self.range.start) as usize;
        while states != 0 {
            let s = states.trailing_zeros() as usize;
            states &= states - 1;
            // A hint never panics: a state whose cell is borrowed mutably (only ever while its
            // held writes are applied, which calls nothing that prefetches) would be skipped.
            if let Some(Ok(state)) = self.groups.get(s).map(RefCell::try_borrow) {
                state[g].prefetch(hash);
            }
        }
    }

    fn get_with(
        &self,
        s: StateId,
        kg: u32,
        ck: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> StateResult<bool> {
        match self.group(s, kg)?.get(ck) {
            Some(v) => {
                f(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn put(&mut self, s: StateId, kg: u32, ck: &[u8], value: &[u8]) -> StateResult<()> {
        self.write(s, kg, Kind::Put, ck, value)
    }

    fn append(&mut self, s: StateId, kg: u32, ck: &[u8], bytes: &[u8]) -> StateResult<()> {
        self.write(s, kg, Kind::Append, ck, bytes)
    }

    fn delete(&mut self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<()> {
        self.check(kg)?;
        self.settle_state(s);
        self.touch(s);
        let i = (kg - self.range.start) as usize;
        let group = &mut self.groups[s].get_mut()[i];
        if Arc::get_mut(group).is_some() {
            // Not shared with a snapshot: one search.
            Arc::make_mut(group).remove(ck);
        } else if group.contains(ck) {
            // Shared: copied only when there is something to delete.
            Arc::make_mut(group).remove(ck);
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.group(s, kg)?.prefixed(prefix))
    }

    fn scan_prefix_with(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> StateResult<()> {
        self.group(s, kg)?.for_prefix(prefix, f);
        Ok(())
    }

    fn delete_prefix(&mut self, s: StateId, kg: u32, prefix: &[u8]) -> StateResult<()> {
        let keys: Vec<Vec<u8>> = self
            .group(s, kg)?
            .prefixed(prefix)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if !keys.is_empty() {
            let g = self.group_mut(s, kg)?;
            for k in keys {
                g.remove(&k);
            }
        }
        Ok(())
    }

    fn scan_after(
        &self,
        s: StateId,
        kg: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.group(s, kg)?.after(after, limit))
    }

    fn entries(&self, s: StateId) -> StateResult<Vec<Entry>> {
        self.settle_state(s);
        let mut out = Vec::new();
        for (i, g) in self.groups[s].borrow().iter().enumerate() {
            let kg = self.range.start + i as u32;
            out.extend(g.sorted().into_iter().map(|(k, v)| (kg, k, v)));
        }
        Ok(out)
    }

    fn snapshot_view(&self) -> StateResult<Box<dyn SnapshotView>> {
        self.settle_all();
        Ok(Box::new(HeapView {
            range: self.range,
            max_parallelism: self.max_parallelism,
            states: self
                .metas
                .iter()
                .cloned()
                .zip(self.groups.iter().map(|g| g.borrow().clone()))
                .collect(),
        }))
    }

    fn load(&mut self, s: StateId, entries: Vec<Entry>) -> StateResult<()> {
        for (kg, k, v) in entries {
            self.group_mut(s, kg)?.insert(&k, &v);
        }
        Ok(())
    }

    fn adopt(&mut self, meta: StateMeta) -> StateResult<StateId> {
        match self.by_name.get(&meta.name).copied() {
            Some(id) => crate::backend::readopt(&self.metas[id], &meta).map(|_| id),
            None => Ok(self.insert_state(meta)),
        }
    }

    /// Timer states live in ordered maps here (`ordered.rs`), so a timer service keeps only a
    /// short head per key group and every timer is held once.
    fn timer_cache_size(&self) -> Option<usize> {
        Some(HEAP_TIMER_HEAD)
    }
}

struct HeapView {
    range: KeyGroupRange,
    max_parallelism: u32,
    states: Vec<(StateMeta, Vec<Arc<Group>>)>,
}

impl SnapshotView for HeapView {
    fn states(&self) -> Vec<StateMeta> {
        self.states.iter().map(|(m, _)| m.clone()).collect()
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }
    fn key_group_entries(&self, s: StateId, kg: u32) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.states[s].1[(kg - self.range.start) as usize].sorted())
    }
}
