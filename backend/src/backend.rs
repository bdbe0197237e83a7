//! The byte-level backend trait every backend (heap, rocksdb, forst) implements, and state metadata.
//!
//! A state is a sorted map per key group from a *composite key* to value bytes. The composite key is
//! `[u32 BE len][key][u32 BE len][namespace][user key]`, so all entries of one (key, namespace) —
//! a map state's user keys — are one prefix range.

use serde::{Deserialize, Serialize};

use crate::error::StateResult;
use crate::keygroup::KeyGroupRange;
use crate::serializer::SerializerId;
use crate::ttl::TtlConfig;

pub type StateId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateKind {
    Value,
    List,
    Map,
    Reducing,
    Aggregating,
}

/// What a snapshot records about each state; a restore compares it with the registering
/// descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    pub name: String,
    pub kind: StateKind,
    pub key: SerializerId,
    pub namespace: SerializerId,
    pub value: SerializerId,
    /// Map states: the user-key serializer.
    pub user_key: Option<SerializerId>,
    pub ttl: Option<TtlConfig>,
}

impl StateMeta {
    /// Whether this is a timer state of a [`crate::TimerService`]: entries ordered by key, which
    /// a backend must scan in order cheaply (the heap keeps them in an ordered map).
    pub fn is_timer_state(&self) -> bool {
        self.value.id == crate::timers::TIMER_SERIALIZER
    }

    /// Why `self` (registering now) cannot read state written as `old`, if it cannot.
    pub fn incompatibility(&self, old: &StateMeta) -> Option<String> {
        if self.kind != old.kind {
            return Some(format!(
                "it was a {:?} state, not {:?}",
                old.kind, self.kind
            ));
        }
        for (what, a, b) in [
            ("key", &self.key, &old.key),
            ("namespace", &self.namespace, &old.namespace),
            ("value", &self.value, &old.value),
        ] {
            if a != b {
                return Some(format!(
                    "{what} serializer {}/v{} cannot read {}/v{}",
                    a.id, a.version, b.id, b.version
                ));
            }
        }
        if self.user_key != old.user_key {
            return Some("user-key serializer changed".into());
        }
        if self.ttl.is_some() != old.ttl.is_some() {
            return Some("TTL was switched on or off (Flink's StateMigrationException too)".into());
        }
        None
    }
}

/// What `register` does with a state known already (restored or registered before): refuses an
/// incompatible descriptor, else takes the descriptor's TTL settings (Flink does not persist them
/// either; whether TTL is on at all must match).
pub fn reregister(existing: &mut StateMeta, meta: StateMeta) -> StateResult<()> {
    if let Some(why) = meta.incompatibility(existing) {
        return Err(crate::error::StateError::Migration {
            state: meta.name,
            why,
        });
    }
    existing.ttl = meta.ttl;
    Ok(())
}

/// What `adopt` does with a state known already: snapshots that disagree about it are damage.
pub fn readopt(existing: &StateMeta, meta: &StateMeta) -> StateResult<()> {
    match meta.incompatibility(existing) {
        None => Ok(()),
        Some(why) => Err(crate::error::StateError::corrupt(
            "restore",
            format!("handles disagree on state {:?}: {why}", meta.name),
        )),
    }
}

/// [`composite_key`] into a reused buffer.
pub fn composite_key_into(out: &mut Vec<u8>, key: &[u8], namespace: &[u8], user_key: &[u8]) {
    out.clear();
    out.reserve(8 + key.len() + namespace.len() + user_key.len());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    out.extend_from_slice(namespace);
    out.extend_from_slice(user_key);
}

pub fn composite_key(key: &[u8], namespace: &[u8], user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len() + namespace.len() + user_key.len());
    composite_key_into(&mut out, key, namespace, user_key);
    out
}

/// Splits a composite key into (key, namespace, user key).
pub fn split_composite(ck: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let klen = u32::from_be_bytes(ck.get(..4)?.try_into().ok()?) as usize;
    let key = ck.get(4..4 + klen)?;
    let rest = &ck[4 + klen..];
    let nlen = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let ns = rest.get(4..4 + nlen)?;
    Some((key, ns, &rest[4 + nlen..]))
}

/// One entry of a state: key group, composite key, value.
pub type Entry = (u32, Vec<u8>, Vec<u8>);

/// An entry about to be read: state, key group, composite key ([`StateBackend::preload`]).
pub type ReadKey = (StateId, u32, Vec<u8>);

/// Tells which entries of a [`StateBackend::preload`] are loaded, and when all are. Done or
/// not, nothing observable depends on it: reads are correct either way, only faster once loaded.
#[derive(Debug, Clone, Default)]
pub struct Preload {
    /// `None`: nothing to wait for.
    state: Option<std::sync::Arc<PreloadState>>,
}

#[derive(Debug, Default)]
struct PreloadState {
    news: std::sync::Mutex<PreloadNews>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct PreloadNews {
    /// Parts still running.
    parts_left: usize,
    /// Entries (indexes into the preload's keys) loaded and not yet taken.
    loaded: Vec<usize>,
}

impl PreloadState {
    fn news(&self) -> std::sync::MutexGuard<'_, PreloadNews> {
        // Counters and a list: no invariant a panic could break.
        self.news.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Preload {
    /// A preload with nothing to wait for.
    pub fn ready() -> Preload {
        Preload { state: None }
    }

    /// A preload of `parts` parts, each ended by one [`Preload::part_done`] (whether its entries
    /// loaded or failed: a failed load only means a slower read).
    pub fn of_parts(parts: usize) -> Preload {
        let state = PreloadState::default();
        state.news().parts_left = parts;
        Preload {
            state: Some(std::sync::Arc::new(state)),
        }
    }

    /// Entry `i` (an index into the preload's keys) is loaded.
    pub fn loaded(&self, i: usize) {
        if let Some(s) = &self.state {
            s.news().loaded.push(i);
            s.changed.notify_all();
        }
    }

    pub fn part_done(&self) {
        if let Some(s) = &self.state {
            let mut news = s.news();
            news.parts_left = news.parts_left.saturating_sub(1);
            drop(news);
            s.changed.notify_all();
        }
    }

    /// The entries loaded since the last call, and whether every part is done (then every entry
    /// is as loaded as it will be).
    pub fn take_loaded(&self) -> (Vec<usize>, bool) {
        match &self.state {
            None => (Vec::new(), true),
            Some(s) => {
                let mut news = s.news();
                (std::mem::take(&mut news.loaded), news.parts_left == 0)
            }
        }
    }

    /// Blocks until an entry is loaded that was not taken yet, or every part is done.
    pub fn wait_news(&self) {
        if let Some(s) = &self.state {
            let mut news = s.news();
            while news.loaded.is_empty() && news.parts_left > 0 {
                news = s.changed.wait(news).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

pub trait StateBackend: Send {
    /// `heap`, `rocksdb`, `forst`.
    fn name(&self) -> &'static str;
    fn key_group_range(&self) -> KeyGroupRange;
    fn max_parallelism(&self) -> u32;
    /// Registers a state, or checks a restored one against `meta`.
    fn register(&mut self, meta: StateMeta) -> StateResult<StateId>;
    fn meta(&self, id: StateId) -> &StateMeta;
    fn states(&self) -> Vec<StateMeta>;
    fn get(&self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<Option<Vec<u8>>>;
    /// A hint, given when a key becomes current: states are about to be read or written at
    /// `prefix` (the composite key of that key and the empty namespace) in key group `kg`. A
    /// backend may start loading what those accesses will touch, so that the wait for memory
    /// overlaps the work before them. Nothing observable changes; the default does nothing.
    fn prefetch(&self, _kg: u32, _prefix: &[u8]) {}
    /// Calls `f` with the value at `ck`, if any, without copying it where the backend can lend it.
    /// Returns whether there was a value.
    fn get_with(
        &self,
        s: StateId,
        kg: u32,
        ck: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> StateResult<bool> {
        match self.get(s, kg, ck)? {
            Some(v) => {
                f(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    /// Stores `value` at `ck`. Both are borrowed: callers encode into reused buffers, and a
    /// backend copies only what it keeps.
    fn put(&mut self, s: StateId, kg: u32, ck: &[u8], value: &[u8]) -> StateResult<()>;
    fn delete(&mut self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<()>;
    /// Appends `bytes` to the value at `ck` (list states: encoded elements concatenate). RocksDB
    /// does it with a merge operator, without reading the list.
    fn append(&mut self, s: StateId, kg: u32, ck: &[u8], bytes: &[u8]) -> StateResult<()> {
        let mut v = self.get(s, kg, ck)?.unwrap_or_default();
        v.extend_from_slice(bytes);
        self.put(s, kg, ck, &v)
    }
    /// Entries whose composite key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Calls `f(suffix, value)` for each entry whose composite key starts with `prefix`, in key
    /// order, where `suffix` is the composite key after `prefix`; stops when `f` returns false.
    /// Lends the bytes where the backend can (no per-entry copies).
    fn scan_prefix_with(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> StateResult<()> {
        for (k, v) in self.scan_prefix(s, kg, prefix)? {
            if !f(&k[prefix.len()..], &v) {
                break;
            }
        }
        Ok(())
    }
    fn delete_prefix(&mut self, s: StateId, kg: u32, prefix: &[u8]) -> StateResult<()>;
    /// Up to `limit` entries of key group `kg` after composite key `after` (from the start if
    /// `None`), in key order: the cursor of incremental TTL cleanup.
    fn scan_after(
        &self,
        s: StateId,
        kg: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Every entry of state `s` in key-group then key order (tooling, savepoints).
    fn entries(&self, s: StateId) -> StateResult<Vec<Entry>>;
    /// A consistent view of every state, taken cheaply; reading it does not block writers.
    fn snapshot_view(&self) -> StateResult<Box<dyn SnapshotView>>;
    /// Loads entries restored from a snapshot (already limited to this backend's key groups).
    fn load(&mut self, s: StateId, entries: Vec<Entry>) -> StateResult<()>;
    /// States known from a restore, registered before any descriptor asks for them.
    fn adopt(&mut self, meta: StateMeta) -> StateResult<StateId>;
    /// A hint, given by the async State API before it runs a batch of requests: the entries at
    /// `keys` are about to be read. A backend may load them (RocksDB: point reads on its read
    /// threads, which bring the blocks into its block cache, and on ForSt the SST blocks into the
    /// mount's cache, many at once) so that the reads that follow are served from memory. Nothing
    /// observable changes; the default has nothing to load.
    fn preload(&self, _keys: Vec<ReadKey>) -> Preload {
        Preload::ready()
    }
    /// Whether [`StateBackend::preload`] loads anything: the async State API batches requests
    /// only for backends that do, and runs them at once on the others (the heap).
    fn reads_ahead(&self) -> bool {
        false
    }
    /// Whether the entry at `key` can be read now without waiting for I/O (RocksDB: it is in a
    /// memtable or the block cache). The async State API runs such a read at once instead of
    /// batching it; a backend may keep the value it found for that read. Nothing observable
    /// depends on the answer. The default: every read can, unless the backend reads ahead.
    fn read_now(&self, _key: &ReadKey) -> bool {
        !self.reads_ahead()
    }
    /// While on, the backend may apply writes after they return (RocksDB: in write batches on a
    /// write thread), every read of this backend still seeing every earlier write. Turned on by
    /// the async State API while records run, off when it drains; turning it off returns once
    /// every write is applied, with the failure of any that was not. The default does nothing.
    fn write_behind(&mut self, _on: bool) -> StateResult<()> {
        Ok(())
    }
    /// Timers per key group a [`crate::TimerService`] keeps in memory, the rest staying in the
    /// backend; `None` (the default, the heap backend): all of them.
    fn timer_cache_size(&self) -> Option<usize> {
        None
    }
}

/// A frozen version of a backend's states, for writing a snapshot while writers go on.
pub trait SnapshotView: Send {
    fn states(&self) -> Vec<StateMeta>;
    fn key_group_range(&self) -> KeyGroupRange;
    fn max_parallelism(&self) -> u32;
    /// Entries of state `s` in key group `kg`, in key order.
    fn key_group_entries(&self, s: StateId, kg: u32) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// A boxed backend is a backend (the conformance suite and tools work on `Box<dyn StateBackend>`).
impl StateBackend for Box<dyn StateBackend> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn key_group_range(&self) -> KeyGroupRange {
        (**self).key_group_range()
    }
    fn max_parallelism(&self) -> u32 {
        (**self).max_parallelism()
    }
    fn register(&mut self, meta: StateMeta) -> StateResult<StateId> {
        (**self).register(meta)
    }
    fn meta(&self, id: StateId) -> &StateMeta {
        (**self).meta(id)
    }
    fn states(&self) -> Vec<StateMeta> {
        (**self).states()
    }
    fn get(&self, s: usize, kg: u32, ck: &[u8]) -> StateResult<Option<Vec<u8>>> {
        (**self).get(s, kg, ck)
    }
    fn get_with(
        &self,
        s: StateId,
        kg: u32,
        ck: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> StateResult<bool> {
        (**self).get_with(s, kg, ck, f)
    }
    fn prefetch(&self, kg: u32, prefix: &[u8]) {
        (**self).prefetch(kg, prefix)
    }
    fn put(&mut self, s: usize, kg: u32, ck: &[u8], v: &[u8]) -> StateResult<()> {
        (**self).put(s, kg, ck, v)
    }
    fn delete(&mut self, s: usize, kg: u32, ck: &[u8]) -> StateResult<()> {
        (**self).delete(s, kg, ck)
    }
    fn scan_prefix(&self, s: usize, kg: u32, p: &[u8]) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        (**self).scan_prefix(s, kg, p)
    }
    fn scan_prefix_with(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> StateResult<()> {
        (**self).scan_prefix_with(s, kg, prefix, f)
    }
    fn delete_prefix(&mut self, s: usize, kg: u32, p: &[u8]) -> StateResult<()> {
        (**self).delete_prefix(s, kg, p)
    }
    fn append(&mut self, s: StateId, kg: u32, ck: &[u8], bytes: &[u8]) -> StateResult<()> {
        (**self).append(s, kg, ck, bytes)
    }
    fn scan_after(
        &self,
        s: StateId,
        kg: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        (**self).scan_after(s, kg, after, limit)
    }
    fn entries(&self, s: usize) -> StateResult<Vec<Entry>> {
        (**self).entries(s)
    }
    fn snapshot_view(&self) -> StateResult<Box<dyn SnapshotView>> {
        (**self).snapshot_view()
    }
    fn load(&mut self, s: usize, e: Vec<Entry>) -> StateResult<()> {
        (**self).load(s, e)
    }
    fn adopt(&mut self, meta: StateMeta) -> StateResult<StateId> {
        (**self).adopt(meta)
    }
    fn timer_cache_size(&self) -> Option<usize> {
        (**self).timer_cache_size()
    }
    fn preload(&self, keys: Vec<ReadKey>) -> Preload {
        (**self).preload(keys)
    }
    fn reads_ahead(&self) -> bool {
        (**self).reads_ahead()
    }
}

/// `Debug` of a backend: its kind, key groups, max parallelism and number of states.
pub(crate) fn fmt_backend(
    b: &dyn StateBackend,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    f.debug_struct(b.name())
        .field("key_groups", &b.key_group_range())
        .field("max_parallelism", &b.max_parallelism())
        .field("states", &b.states().len())
        .finish_non_exhaustive()
}
