//! The typed State API: value, list, map, reducing and aggregating state over any [`StateBackend`].
//!
//! A [`Keyed`] wraps a backend with the key serializer, the current key (and its key group) and the
//! clock. State handles are created from descriptors and address the current key and their namespace
//! (empty bytes = Flink's `VoidNamespace` unless `set_namespace` is called).

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{StateBackend, StateId, StateKind, StateMeta, composite_key, split_composite};
use crate::error::{StateError, StateResult};
use crate::keygroup::key_group_of;
use crate::serializer::{Serde, SerializerId, StateSerializer};
use crate::ttl::{self, Clock, SystemClock, TtlConfig, UpdateType, Visibility};

/// A backend with typed keys: the State API. Set the current key, then read and write the
/// states registered on it (value, list, map, reducing, aggregating), each optionally with TTL.
///
/// ```
/// use statefs_backend::{HeapBackend, KeyGroupRange, Keyed};
/// # fn main() -> statefs_backend::StateResult<()> {
/// let mut kb: Keyed<String, HeapBackend> =
///     Keyed::new(HeapBackend::new(KeyGroupRange::all(128), 128));
/// let clicks = kb.list_state::<String>("clicks", None)?;
/// let seen = kb.map_state::<String, u32>("seen", None)?;
/// kb.set_current_key(&"alice".to_string())?;
/// clicks.add(&mut kb, &"/home".to_string())?;
/// seen.put(&mut kb, &"/home".to_string(), &1)?;
/// assert_eq!(clicks.get(&mut kb)?, vec!["/home".to_string()]);
/// assert_eq!(seen.get(&mut kb, &"/home".to_string())?, Some(1));
/// # Ok(())
/// # }
/// ```
pub struct Keyed<K, B: StateBackend> {
    backend: B,
    key_ser: Arc<dyn StateSerializer<K>>,
    current: Option<(Vec<u8>, u32)>,
    clock: Arc<dyn Clock>,
    /// Reused buffers: the composite key and the value of the access in progress.
    scratch: Vec<u8>,
    vbuf: Vec<u8>,
    /// When not 0, `scratch` begins with the composite key of the current key and the empty
    /// namespace, this many bytes long: an access in the default namespace keeps that prefix and
    /// rebuilds only the user key.
    prefix_len: usize,
    /// Incremental TTL cleanup: per state, the key group and last key checked.
    cursors: std::collections::HashMap<StateId, (u32, Option<Vec<u8>>)>,
}

impl<K: Serialize + DeserializeOwned + 'static, B: StateBackend> Keyed<K, B> {
    pub fn new(backend: B) -> Self {
        Keyed {
            backend,
            key_ser: Arc::new(Serde::<K>::default()),
            current: None,
            clock: Arc::new(SystemClock),
            cursors: Default::default(),
            scratch: Vec::new(),
            vbuf: Vec::new(),
            prefix_len: 0,
        }
    }
}

impl<K, B: StateBackend> Keyed<K, B> {
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn into_backend(self) -> B {
        self.backend
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Flink's heap `cleanupIncrementally`: checks the next `ttl.cleanup_incremental` entries of
    /// state `s` for expiry (a cursor walks all key groups round and round) and removes what expired.
    fn cleanup_tick(&mut self, s: StateId, kind: StateKind, ttl: &TtlConfig) -> StateResult<()> {
        let mut budget = ttl.cleanup_incremental;
        if budget == 0 {
            return Ok(());
        }
        let range = self.backend.key_group_range();
        let now = self.now_ms();
        let (mut kg, mut after) = self.cursors.remove(&s).unwrap_or((range.start, None));
        let mut groups_seen = 0;
        while budget > 0 && groups_seen <= range.len() {
            let batch = self.backend.scan_after(s, kg, after.as_deref(), budget)?;
            if batch.is_empty() {
                kg = if kg >= range.end { range.start } else { kg + 1 };
                after = None;
                groups_seen += 1;
                continue;
            }
            budget -= batch.len();
            for (ck, v) in batch {
                if kind == StateKind::List {
                    let elems =
                        decode_list(&v).map_err(|e| StateError::corrupt("list state", e))?;
                    let kept: Vec<Vec<u8>> = elems
                        .into_iter()
                        .filter(|e| {
                            ttl::unwrap(e).is_some_and(|(st, _)| !ttl::expired(ttl, st, now))
                        })
                        .collect();
                    if kept.is_empty() {
                        self.backend.delete(s, kg, &ck)?;
                    } else if encode_list(&kept) != v {
                        self.backend.put(s, kg, &ck, &encode_list(&kept))?;
                    }
                } else if ttl::unwrap(&v).is_none_or(|(st, _)| ttl::expired(ttl, st, now)) {
                    self.backend.delete(s, kg, &ck)?;
                }
                after = Some(ck);
            }
        }
        self.cursors.insert(s, (kg, after));
        Ok(())
    }

    /// Sets the key the states read and write; a key outside the backend's key groups is refused,
    /// and then there is no current key (no state access can land on the previous key by mistake).
    pub fn set_current_key(&mut self, key: &K) -> StateResult<()> {
        // Reuse the previous key's buffer: one allocation less per record.
        let mut bytes = self.current.take().map(|(b, _)| b).unwrap_or_default();
        self.prefix_len = 0;
        let kg = self.encode_key(key, &mut bytes)?;
        // The composite key of this key and the empty namespace: where value, list and map states
        // of the default namespace keep it, and the prefix of every access in that namespace.
        crate::backend::composite_key_into(&mut self.scratch, &bytes, &[], &[]);
        self.backend.prefetch(kg, &self.scratch);
        self.prefix_len = self.scratch.len();
        self.current = Some((bytes, kg));
        Ok(())
    }

    /// Serializes `key` into `bytes` (cleared first) and returns its key group, which must be in
    /// this backend's range.
    fn encode_key(&self, key: &K, bytes: &mut Vec<u8>) -> StateResult<u32> {
        bytes.clear();
        self.key_ser.serialize_into(key, bytes);
        let kg = key_group_of(bytes, self.backend.max_parallelism());
        let range = self.backend.key_group_range();
        if !range.contains(kg) {
            return Err(StateError::KeyOutOfRange {
                key_group: kg,
                range,
            });
        }
        Ok(kg)
    }

    /// `key`'s serialized bytes and key group, checked against this backend's range, without
    /// making it current.
    pub(crate) fn key_bytes_of(&self, key: &K) -> StateResult<(Vec<u8>, u32)> {
        let mut bytes = Vec::new();
        let kg = self.encode_key(key, &mut bytes)?;
        Ok((bytes, kg))
    }

    /// Makes current the key whose serialized bytes are `bytes`, of key group `kg` (known to the
    /// caller: a timer firing from its key group), without serializing and hashing it again.
    pub(crate) fn set_current_key_bytes(&mut self, bytes: &[u8], kg: u32) {
        let mut buf = self.current.take().map(|(b, _)| b).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        crate::backend::composite_key_into(&mut self.scratch, &buf, &[], &[]);
        self.backend.prefetch(kg, &self.scratch);
        self.prefix_len = self.scratch.len();
        self.current = Some((buf, kg));
    }

    /// The current key's bytes and key group.
    pub(crate) fn current_key_bytes(&self) -> StateResult<(&[u8], u32)> {
        self.current()
    }

    /// A key from its serialized bytes.
    pub(crate) fn decode_key(&self, bytes: &[u8]) -> StateResult<K> {
        self.key_ser
            .deserialize(bytes)
            .map_err(|why| StateError::corrupt("key", why))
    }

    pub(crate) fn key_serializer_id(&self) -> SerializerId {
        SerializerId {
            id: self.key_ser.id(),
            version: self.key_ser.version(),
        }
    }

    // `ok_or(StateError::NoCurrentKey)` runs StateError's drop glue (an out-of-line call) on every
    // access that has a key: 23 instructions of an in-cache lookup. The closure does not.
    #[allow(clippy::unnecessary_lazy_evaluations)]
    fn current(&self) -> StateResult<(&[u8], u32)> {
        self.current
            .as_ref()
            .map(|(k, g)| (k.as_slice(), *g))
            .ok_or_else(|| StateError::NoCurrentKey)
    }

    fn register<V>(
        &mut self,
        name: &str,
        kind: StateKind,
        value: &dyn StateSerializer<V>,
        user_key: Option<SerializerId>,
        ttl: Option<TtlConfig>,
    ) -> StateResult<StateId> {
        let meta = StateMeta {
            name: name.to_string(),
            kind,
            key: SerializerId {
                id: self.key_ser.id(),
                version: self.key_ser.version(),
            },
            namespace: SerializerId {
                id: "bytes".into(),
                version: 1,
            },
            value: SerializerId::of(value),
            user_key,
            ttl,
        };
        self.backend.register(meta)
    }

    /// Every (key, namespace) that has an entry in state `name`, decoded with the key serializer.
    pub fn keys(&self, name: &str) -> StateResult<Vec<(K, Vec<u8>)>> {
        let id = (0..self.backend.states().len())
            .find(|i| self.backend.meta(*i).name == name)
            .ok_or_else(|| StateError::Invalid(format!("no state {name:?}")))?;
        let mut out: Vec<(K, Vec<u8>)> = Vec::new();
        let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
        for (_, ck, _) in self.backend.entries(id)? {
            let (k, ns, _) = split_composite(&ck)
                .ok_or_else(|| StateError::corrupt("state", "bad composite key"))?;
            if last.as_ref().is_some_and(|(lk, lns)| lk == k && lns == ns) {
                continue;
            }
            last = Some((k.to_vec(), ns.to_vec()));
            let key = self
                .key_ser
                .deserialize(k)
                .map_err(|why| StateError::Serialization {
                    state: name.into(),
                    why,
                })?;
            out.push((key, ns.to_vec()));
        }
        Ok(out)
    }

    pub fn value_state<V: Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        ttl: Option<TtlConfig>,
    ) -> StateResult<ValueState<V>> {
        let ser: Arc<dyn StateSerializer<V>> = Arc::new(Serde::<V>::default());
        let id = self.register(name, StateKind::Value, ser.as_ref(), None, ttl)?;
        Ok(ValueState {
            inner: Inner::new(id, name, ttl),
            ser,
        })
    }

    pub fn list_state<V: Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        ttl: Option<TtlConfig>,
    ) -> StateResult<ListState<V>> {
        let ser: Arc<dyn StateSerializer<V>> = Arc::new(Serde::<V>::default());
        let id = self.register(name, StateKind::List, ser.as_ref(), None, ttl)?;
        Ok(ListState {
            inner: Inner::new(id, name, ttl),
            ser,
        })
    }

    pub fn map_state<
        UK: Serialize + DeserializeOwned + 'static,
        V: Serialize + DeserializeOwned + 'static,
    >(
        &mut self,
        name: &str,
        ttl: Option<TtlConfig>,
    ) -> StateResult<MapState<UK, V>> {
        let ser: Arc<dyn StateSerializer<V>> = Arc::new(Serde::<V>::default());
        let uk: Arc<dyn StateSerializer<UK>> = Arc::new(Serde::<UK>::default());
        let id = self.register(
            name,
            StateKind::Map,
            ser.as_ref(),
            Some(SerializerId::of(uk.as_ref())),
            ttl,
        )?;
        Ok(MapState {
            inner: Inner::new(id, name, ttl),
            ser,
            uk,
        })
    }

    pub fn reducing_state<V: Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
        ttl: Option<TtlConfig>,
    ) -> StateResult<ReducingState<V>> {
        let ser: Arc<dyn StateSerializer<V>> = Arc::new(Serde::<V>::default());
        let id = self.register(name, StateKind::Reducing, ser.as_ref(), None, ttl)?;
        Ok(ReducingState {
            inner: Inner::new(id, name, ttl),
            ser,
            reduce: Arc::new(reduce),
        })
    }

    pub fn aggregating_state<IN, ACC: Serialize + DeserializeOwned + 'static, OUT>(
        &mut self,
        name: &str,
        agg: impl Aggregate<IN, ACC, OUT> + 'static,
        ttl: Option<TtlConfig>,
    ) -> StateResult<AggregatingState<IN, ACC, OUT>> {
        let ser: Arc<dyn StateSerializer<ACC>> = Arc::new(Serde::<ACC>::default());
        let id = self.register(name, StateKind::Aggregating, ser.as_ref(), None, ttl)?;
        Ok(AggregatingState {
            inner: Inner::new(id, name, ttl),
            ser,
            agg: Arc::new(agg),
            _p: PhantomData,
        })
    }
}

/// Flink's `AggregateFunction`.
pub trait Aggregate<IN, ACC, OUT>: Send + Sync {
    fn create(&self) -> ACC;
    fn add(&self, value: IN, acc: ACC) -> ACC;
    fn result(&self, acc: &ACC) -> OUT;
}

/// What every state handle has: id, name, namespace and TTL.
#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) id: StateId,
    name: String,
    pub(crate) namespace: Vec<u8>,
    ttl: Option<TtlConfig>,
}

impl Inner {
    fn new(id: StateId, name: &str, ttl: Option<TtlConfig>) -> Self {
        Inner {
            id,
            name: name.to_string(),
            namespace: Vec::new(),
            ttl,
        }
    }

    fn ck<K, B: StateBackend>(
        &self,
        kb: &Keyed<K, B>,
        user_key: &[u8],
    ) -> StateResult<(u32, Vec<u8>)> {
        let (k, kg) = kb.current()?;
        Ok((kg, composite_key(k, &self.namespace, user_key)))
    }

    /// Builds the composite key of the current key, this namespace and the user key `uk` writes
    /// into `kb.scratch`; returns the key group.
    #[allow(clippy::unnecessary_lazy_evaluations)] // see `Keyed::current`
    fn key_into<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        uk: impl FnOnce(&mut Vec<u8>),
    ) -> StateResult<u32> {
        let (k, kg) = kb
            .current
            .as_ref()
            .ok_or_else(|| StateError::NoCurrentKey)?;
        if self.namespace.is_empty() && kb.prefix_len != 0 {
            kb.scratch.truncate(kb.prefix_len);
            debug_assert_eq!(kb.scratch, crate::backend::composite_key(k, &[], &[]));
        } else {
            crate::backend::composite_key_into(&mut kb.scratch, k, &self.namespace, &[]);
            kb.prefix_len = if self.namespace.is_empty() {
                kb.scratch.len()
            } else {
                0
            };
        }
        uk(&mut kb.scratch);
        Ok(*kg)
    }

    /// Stores what `value` writes (after a TTL stamp, with TTL) at the key in `kb.scratch`.
    fn write_scratch<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        kg: u32,
        value: impl FnOnce(&mut Vec<u8>),
    ) -> StateResult<()> {
        // The incremental cleanup tick uses neither buffer.
        self.tick(kb)?;
        let mut v = std::mem::take(&mut kb.vbuf);
        v.clear();
        if self.ttl.is_some() {
            v.extend_from_slice(&kb.now_ms().to_le_bytes());
        }
        value(&mut v);
        let r = kb.backend.put(self.id, kg, &kb.scratch, &v);
        kb.vbuf = v;
        r
    }

    fn ser_err(&self, why: String) -> StateError {
        StateError::Serialization {
            state: self.name.clone(),
            why,
        }
    }

    fn tick<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<()> {
        match &self.ttl {
            Some(t) if t.cleanup_incremental > 0 => {
                let kind = kb.backend.meta(self.id).kind;
                kb.cleanup_tick(self.id, kind, t)
            }
            _ => Ok(()),
        }
    }

    /// Reads a raw stored value, applying TTL (expiry, cleanup on read, refresh on read).
    fn read<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        kg: u32,
        ck: &[u8],
    ) -> StateResult<Option<Vec<u8>>> {
        self.tick(kb)?;
        let Some(raw) = kb.backend.get(self.id, kg, ck)? else {
            return Ok(None);
        };
        let Some(t) = self.ttl else {
            return Ok(Some(raw));
        };
        let (stamp, v) = ttl::unwrap(&raw)
            .ok_or_else(|| StateError::corrupt("TTL value", "shorter than its timestamp"))?;
        let now = kb.now_ms();
        if ttl::expired(&t, stamp, now) {
            let visible = t.visibility == Visibility::ReturnExpiredIfNotCleanedUp;
            let out = visible.then(|| v.to_vec());
            kb.backend.delete(self.id, kg, ck)?;
            return Ok(out);
        }
        if t.update == UpdateType::OnReadAndWrite {
            let v = v.to_vec();
            kb.backend.put(self.id, kg, ck, &ttl::wrap(now, &v))?;
            return Ok(Some(v));
        }
        Ok(Some(v.to_vec()))
    }

    /// Reads and deserializes the value for `user_key` of the current key and namespace: without
    /// TTL, straight from the backend's bytes into a reused key buffer (no copies); with TTL,
    /// through [`Inner::read`].
    fn get_typed<K, B: StateBackend, T>(
        &self,
        kb: &mut Keyed<K, B>,
        user_key: impl FnOnce(&mut Vec<u8>),
        ser: &dyn StateSerializer<T>,
    ) -> StateResult<Option<T>> {
        let kg = self.key_into(kb, user_key)?;
        if self.ttl.is_some() {
            let ck = kb.scratch.clone();
            return self.read_typed(kb, kg, &ck, ser);
        }
        let mut out = None;
        kb.backend
            .get_with(self.id, kg, &kb.scratch, &mut |bytes| {
                out = Some(ser.deserialize(bytes))
            })?;
        out.transpose().map_err(|e| self.ser_err(e))
    }

    /// Reads the value at `ck` (TTL applied) and deserializes it.
    fn read_typed<K, B: StateBackend, T>(
        &self,
        kb: &mut Keyed<K, B>,
        kg: u32,
        ck: &[u8],
        ser: &dyn StateSerializer<T>,
    ) -> StateResult<Option<T>> {
        match self.read(kb, kg, ck)? {
            Some(b) => ser.deserialize(&b).map(Some).map_err(|e| self.ser_err(e)),
            None => Ok(None),
        }
    }

    fn clear<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<()> {
        let (kg, ck) = self.ck(kb, &[])?;
        kb.backend.delete_prefix(self.id, kg, &ck)
    }
}

macro_rules! namespace_methods {
    () => {
        /// Addresses `namespace` (e.g. a window) from now on; the default is the empty namespace.
        pub fn set_namespace<N: Serialize>(&mut self, namespace: &N) {
            self.inner.namespace = postcard::to_allocvec(namespace).expect("namespace serializes");
        }
        /// Removes this state's entries for the current key and namespace.
        pub fn clear<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<()> {
            self.inner.clear(kb)
        }
    };
}

pub struct ValueState<V> {
    pub(crate) inner: Inner,
    pub(crate) ser: Arc<dyn StateSerializer<V>>,
}

impl<V> ValueState<V> {
    namespace_methods!();

    pub fn value<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<Option<V>> {
        self.inner.get_typed(kb, |_| {}, self.ser.as_ref())
    }

    pub fn update<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>, value: &V) -> StateResult<()> {
        let kg = self.inner.key_into(kb, |_| {})?;
        self.inner
            .write_scratch(kb, kg, |out| self.ser.serialize_into(value, out))
    }
}

/// A list is stored as one value: `[u32 len][element]...`; with TTL each element has its own
/// timestamp, as in Flink.
pub fn encode_list(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        push_encoded(&mut out, e);
    }
    out
}

/// Appends one already encoded element (`[ttl stamp?][value]`) to a list value.
fn push_encoded(out: &mut Vec<u8>, e: &[u8]) {
    out.extend_from_slice(&(e.len() as u32).to_le_bytes());
    out.extend_from_slice(e);
}

pub fn decode_list(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for_each_element(bytes, |e| {
        out.push(e.to_vec());
        Ok(())
    })?;
    Ok(out)
}

#[cfg(feature = "rocksdb")]
/// Writes the elements of list value `bytes` that `keep` accepts, encoded, into `out` (cleared
/// first); returns (kept, total). An undecodable value is an error and `out` is then meaningless.
pub(crate) fn retain_elements(
    bytes: &[u8],
    out: &mut Vec<u8>,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> Result<(usize, usize), String> {
    out.clear();
    let (mut kept, mut total) = (0, 0);
    for_each_element(bytes, |e| {
        total += 1;
        if keep(e) {
            kept += 1;
            push_encoded(out, e);
        }
        Ok(())
    })?;
    Ok((kept, total))
}

/// Calls `f` with each encoded element of a list value, borrowed.
fn for_each_element(
    bytes: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut p = 0;
    while p < bytes.len() {
        let n = u32::from_le_bytes(
            bytes
                .get(p..p + 4)
                .ok_or("truncated list")?
                .try_into()
                .unwrap(),
        ) as usize;
        f(bytes
            .get(p + 4..p + 4 + n)
            .ok_or("truncated list element")?)?;
        p += 4 + n;
    }
    Ok(())
}

/// Appends one list element, `[u32 len][ttl stamp?][value]`, to `buf`.
fn push_element(buf: &mut Vec<u8>, stamp: Option<u64>, value: impl FnOnce(&mut Vec<u8>)) {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; 4]);
    if let Some(now) = stamp {
        buf.extend_from_slice(&now.to_le_bytes());
    }
    value(buf);
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

pub struct ListState<V> {
    pub(crate) inner: Inner,
    pub(crate) ser: Arc<dyn StateSerializer<V>>,
}

impl<V> ListState<V> {
    namespace_methods!();

    fn elements<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
    ) -> StateResult<(u32, Vec<u8>, Vec<Vec<u8>>)> {
        let (kg, ck) = self.inner.ck(kb, &[])?;
        let raw = kb.backend.get(self.inner.id, kg, &ck)?;
        let elems = match raw {
            Some(b) => decode_list(&b)
                .map_err(|e| StateError::corrupt(format!("list state {}", self.inner.name), e))?,
            None => Vec::new(),
        };
        Ok((kg, ck, elems))
    }

    pub fn get<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<Vec<V>> {
        if self.inner.ttl.is_none() {
            // Deserialize straight from the stored bytes.
            let kg = self.inner.key_into(kb, |_| {})?;
            let mut out = Vec::new();
            let mut failed = None;
            kb.backend
                .get_with(self.inner.id, kg, &kb.scratch, &mut |bytes| {
                    failed = for_each_element(bytes, |e| {
                        out.push(self.ser.deserialize(e)?);
                        Ok(())
                    })
                    .err();
                })?;
            return match failed {
                None => Ok(out),
                Some(e) => Err(StateError::corrupt(
                    format!("list state {}", self.inner.name),
                    e,
                )),
            };
        }
        let (kg, ck, elems) = self.elements(kb)?;
        let mut live = Vec::new();
        let mut changed = false;
        let now = kb.now_ms();
        for e in elems {
            match self.inner.ttl {
                None => live.push(e),
                Some(t) => {
                    let (stamp, v) = ttl::unwrap(&e)
                        .ok_or_else(|| StateError::corrupt("TTL element", "short"))?;
                    if ttl::expired(&t, stamp, now) {
                        changed = true;
                        if t.visibility == Visibility::ReturnExpiredIfNotCleanedUp {
                            live.push(ttl::wrap(stamp, v));
                        }
                        continue;
                    }
                    if t.update == UpdateType::OnReadAndWrite {
                        changed = true;
                        live.push(ttl::wrap(now, v));
                    } else {
                        live.push(e);
                    }
                }
            }
        }
        let out = live
            .iter()
            .map(|e| {
                let v = if self.inner.ttl.is_some() {
                    &e[8..]
                } else {
                    &e[..]
                };
                self.ser.deserialize(v).map_err(|e| self.inner.ser_err(e))
            })
            .collect::<StateResult<Vec<V>>>()?;
        if changed {
            // Expired elements are cleaned up on read; returned-if-not-cleaned ones go now too.
            let kept: Vec<Vec<u8>> = live
                .into_iter()
                .filter(|e| {
                    self.inner.ttl.is_none_or(|t| {
                        ttl::unwrap(e).is_some_and(|(s, _)| !ttl::expired(&t, s, now))
                    })
                })
                .collect();
            if kept.is_empty() {
                kb.backend.delete(self.inner.id, kg, &ck)?;
            } else {
                kb.backend
                    .put(self.inner.id, kg, &ck, &encode_list(&kept))?;
            }
        }
        Ok(out)
    }

    pub fn add<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>, value: &V) -> StateResult<()> {
        self.add_all(kb, std::slice::from_ref(value))
    }

    pub fn add_all<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        values: &[V],
    ) -> StateResult<()> {
        let kg = self.inner.key_into(kb, |_| {})?;
        let buf = self.encode_elements(kb, values);
        let r = kb.backend.append(self.inner.id, kg, &kb.scratch, &buf);
        kb.vbuf = buf;
        r
    }

    /// `values` encoded as list elements (`[u32 len][ttl stamp?][value]` each) in `kb`'s reused
    /// value buffer, taken out; the caller puts it back after use.
    fn encode_elements<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>, values: &[V]) -> Vec<u8> {
        let now = self.inner.ttl.map(|_| kb.now_ms());
        let mut buf = std::mem::take(&mut kb.vbuf);
        buf.clear();
        for v in values {
            push_element(&mut buf, now, |out| self.ser.serialize_into(v, out));
        }
        buf
    }

    /// Replaces the list; an empty list removes it.
    pub fn update<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        values: &[V],
    ) -> StateResult<()> {
        let kg = self.inner.key_into(kb, |_| {})?;
        if values.is_empty() {
            return kb.backend.delete(self.inner.id, kg, &kb.scratch);
        }
        let buf = self.encode_elements(kb, values);
        let r = kb.backend.put(self.inner.id, kg, &kb.scratch, &buf);
        kb.vbuf = buf;
        r
    }
}

pub struct MapState<UK, V> {
    pub(crate) inner: Inner,
    pub(crate) ser: Arc<dyn StateSerializer<V>>,
    pub(crate) uk: Arc<dyn StateSerializer<UK>>,
}

impl<UK, V> MapState<UK, V> {
    namespace_methods!();

    pub fn get<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        user_key: &UK,
    ) -> StateResult<Option<V>> {
        self.inner.get_typed(
            kb,
            |out| self.uk.serialize_into(user_key, out),
            self.ser.as_ref(),
        )
    }

    pub fn put<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        user_key: &UK,
        value: &V,
    ) -> StateResult<()> {
        let kg = self
            .inner
            .key_into(kb, |out| self.uk.serialize_into(user_key, out))?;
        self.inner
            .write_scratch(kb, kg, |out| self.ser.serialize_into(value, out))
    }

    pub fn put_all<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        entries: &[(UK, V)],
    ) -> StateResult<()> {
        entries.iter().try_for_each(|(k, v)| self.put(kb, k, v))
    }

    pub fn remove<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        user_key: &UK,
    ) -> StateResult<()> {
        let kg = self
            .inner
            .key_into(kb, |out| self.uk.serialize_into(user_key, out))?;
        kb.backend.delete(self.inner.id, kg, &kb.scratch)
    }

    pub fn contains<K, B: StateBackend>(
        &self,
        kb: &mut Keyed<K, B>,
        user_key: &UK,
    ) -> StateResult<bool> {
        let kg = self
            .inner
            .key_into(kb, |out| self.uk.serialize_into(user_key, out))?;
        if self.inner.ttl.is_none() {
            return kb
                .backend
                .get_with(self.inner.id, kg, &kb.scratch, &mut |_| {});
        }
        let ck = kb.scratch.clone();
        Ok(self.inner.read(kb, kg, &ck)?.is_some())
    }

    /// Live entries of the current key and namespace, in user-key byte order.
    pub fn entries<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<Vec<(UK, V)>> {
        if self.inner.ttl.is_none() {
            // Decode straight from the backend's bytes.
            let kg = self.inner.key_into(kb, |_| {})?;
            let mut out = Vec::with_capacity(16);
            let mut failed = None;
            kb.backend
                .scan_prefix_with(self.inner.id, kg, &kb.scratch, &mut |uk, v| match (
                    self.uk.deserialize(uk),
                    self.ser.deserialize(v),
                ) {
                    (Ok(k), Ok(v)) => {
                        out.push((k, v));
                        true
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        failed = Some(e);
                        false
                    }
                })?;
            return match failed {
                None => Ok(out),
                Some(e) => Err(self.inner.ser_err(e)),
            };
        }
        let (kg, prefix) = self.inner.ck(kb, &[])?;
        let raw = kb.backend.scan_prefix(self.inner.id, kg, &prefix)?;
        let mut out = Vec::with_capacity(raw.len());
        for (ck, raw_v) in raw {
            // Without TTL the scanned value is the value; with TTL, read applies expiry and refresh.
            let value = if self.inner.ttl.is_none() {
                Some(raw_v)
            } else {
                self.inner.read(kb, kg, &ck)?
            };
            if let Some(v) = value {
                let ukb = &ck[prefix.len()..];
                let uk = self
                    .uk
                    .deserialize(ukb)
                    .map_err(|e| self.inner.ser_err(e))?;
                out.push((
                    uk,
                    self.ser
                        .deserialize(&v)
                        .map_err(|e| self.inner.ser_err(e))?,
                ));
            }
        }
        Ok(out)
    }

    pub fn keys<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<Vec<UK>> {
        Ok(self.entries(kb)?.into_iter().map(|(k, _)| k).collect())
    }

    pub fn values<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<Vec<V>> {
        Ok(self.entries(kb)?.into_iter().map(|(_, v)| v).collect())
    }

    pub fn is_empty<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<bool> {
        if self.inner.ttl.is_none() {
            let kg = self.inner.key_into(kb, |_| {})?;
            let mut any = false;
            kb.backend
                .scan_prefix_with(self.inner.id, kg, &kb.scratch, &mut |_, _| {
                    any = true;
                    false
                })?;
            return Ok(!any);
        }
        Ok(self.entries(kb)?.is_empty())
    }
}

pub struct ReducingState<V> {
    pub(crate) inner: Inner,
    pub(crate) ser: Arc<dyn StateSerializer<V>>,
    pub(crate) reduce: Arc<dyn Fn(V, V) -> V + Send + Sync>,
}

impl<V> ReducingState<V> {
    namespace_methods!();

    pub fn get<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<Option<V>> {
        self.inner.get_typed(kb, |_| {}, self.ser.as_ref())
    }

    pub fn add<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>, value: V) -> StateResult<()> {
        let next = match self.get(kb)? {
            Some(cur) => (self.reduce)(cur, value),
            None => value,
        };
        let kg = self.inner.key_into(kb, |_| {})?;
        self.inner
            .write_scratch(kb, kg, |out| self.ser.serialize_into(&next, out))
    }
}

pub struct AggregatingState<IN, ACC, OUT> {
    pub(crate) inner: Inner,
    pub(crate) ser: Arc<dyn StateSerializer<ACC>>,
    pub(crate) agg: Arc<dyn Aggregate<IN, ACC, OUT>>,
    pub(crate) _p: PhantomData<fn(IN) -> OUT>,
}

impl<IN, ACC, OUT> AggregatingState<IN, ACC, OUT> {
    namespace_methods!();

    fn acc<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<Option<ACC>> {
        self.inner.get_typed(kb, |_| {}, self.ser.as_ref())
    }

    pub fn get<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>) -> StateResult<Option<OUT>> {
        Ok(self.acc(kb)?.map(|a| self.agg.result(&a)))
    }

    pub fn add<K, B: StateBackend>(&self, kb: &mut Keyed<K, B>, value: IN) -> StateResult<()> {
        let acc = self.acc(kb)?.unwrap_or_else(|| self.agg.create());
        let next = self.agg.add(value, acc);
        let kg = self.inner.key_into(kb, |_| {})?;
        self.inner
            .write_scratch(kb, kg, |out| self.ser.serialize_into(&next, out))
    }
}
