//! Timers, with the semantics of Flink's `InternalTimerService`: event-time and processing-time
//! timers per (key, namespace, timestamp), deduplicated; a watermark (or the processing-time
//! clock) fires every due timer in timestamp order, with its key current, and timers registered
//! while firing are honoured in the same advance when they are due.
//!
//! # Storage
//! Each domain's timers are a state of the backend (`_timers/<name>/event`,
//! `_timers/<name>/processing`; in RocksDB and ForSt a column family of their own), an entry per
//! timer whose key is `[timestamp, 8 bytes, sorting as the number][u32 BE key length][key]
//! [namespace]`: within a key group the earliest timer is the first entry. Timers are therefore in
//! every snapshot, checkpoint (incremental for RocksDB and ForSt) and savepoint, move between
//! backends with the canonical savepoint format, and restore and rescale by key group exactly like
//! keyed state.
//!
//! # Memory (Flink's `KeyGroupPartitionedPriorityQueue`)
//! In memory each key group keeps the *head* of its timers: a prefix, in due order, of the timers
//! the backend holds for it, and whether that prefix is all of them. A set of the key groups'
//! earliest timestamps orders the key groups. RocksDB and ForSt keep at most
//! `timer-service.cache-size` timers per key group in the head (Flink's key, default 128, as its
//! `RocksDBCachingPriorityQueueSet`), reloading the next ones from the database when a head runs
//! out: timer memory is bounded by key groups × cache size whatever the number of timers. The heap
//! backend holds its timer states in ordered maps per key group (`heap/ordered.rs`, its priority
//! queue per key group), and its heads are 8 timers, so each timer is held once.
//!
//! Invariant, per key group and domain: `head` is the smallest `head.len()` timers the backend
//! holds, and `complete` says it is all of them; a head is empty only if the key group has no
//! timers (it is reloaded when it empties). Every change writes the backend first, so a snapshot
//! taken at any point (even while timers fire) holds exactly the timers not yet fired.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{StateBackend, StateId, StateKind};
use crate::error::{StateError, StateResult};
use crate::serializer::{Serde, SerializerId, StateSerializer};
use crate::states::Keyed;

/// The value serializer id that marks a timer state ([`crate::backend::StateMeta::is_timer_state`]).
pub const TIMER_SERIALIZER: &str = "timer";

/// Timers per key group a RocksDB or ForSt backend keeps in memory unless configured
/// (`state.backend.rocksdb.timer-service.cache-size`, Flink's default).
pub const DEFAULT_TIMER_CACHE_SIZE: usize = 128;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fired by watermarks ([`TimerService::advance_watermark`]).
    EventTime,
    /// Fired by the processing-time clock ([`TimerService::advance_processing_time`]).
    ProcessingTime,
}

/// A timer that fired: its timestamp, key and namespace (the key is current while it fires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K, N> {
    pub timestamp: i64,
    pub key: K,
    pub namespace: N,
}

/// Timestamps as bytes that sort like the numbers (sign bit flipped, big-endian).
fn ts_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// A timer's key in the backend: timestamp, key (length-prefixed), namespace.
fn timer_key(ts: i64, key: &[u8], ns: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.len() + ns.len());
    out.extend_from_slice(&ts_bytes(ts));
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(ns);
    out
}

/// (timestamp, key, namespace) of a timer's key.
fn split_timer_key(tk: &[u8]) -> Option<(i64, &[u8], &[u8])> {
    let ts = u64::from_be_bytes(tk.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let klen = u32::from_be_bytes(tk.get(8..12)?.try_into().ok()?) as usize;
    let key = tk.get(12..12usize.checked_add(klen)?)?;
    Some((ts as i64, key, &tk[12 + klen..]))
}

fn ts_of(tk: &[u8]) -> i64 {
    split_timer_key(tk).map_or(i64::MIN, |(ts, _, _)| ts)
}

type TimerEntry = (i64, Vec<u8>);

/// The head of one key group's timers (see the module's invariant).
#[derive(Default)]
struct Head {
    /// (timestamp, timer key): the timestamp first so that comparisons rarely reach the key's
    /// bytes (the order is the keys' own, whose first bytes are the timestamp).
    timers: BTreeSet<TimerEntry>,
    complete: bool,
    /// A timer key no timer of the key group in the backend sorts at or before (`None`: not
    /// known). A reload seeks past it instead of reading from the key group's start over the
    /// deletion markers of every timer fired since the last compaction (RocksDB iterators step
    /// over those one by one: firing 150k timers of one key took 4.7 s that way).
    ///
    /// Kept true: the head's first timer is the key group's smallest, so once it is removed
    /// nothing at or before it remains; adding a timer at or before the floor forgets it.
    floor: Option<Vec<u8>>,
}

/// One domain's timers: the backend state, each key group's head, and the key groups ordered by
/// their earliest timer.
struct Queue {
    state: StateId,
    /// Timers a head keeps at most (`usize::MAX`: all).
    limit: usize,
    first_kg: u32,
    heads: Vec<Head>,
    order: BTreeSet<(i64, u32)>,
}

impl Queue {
    fn open(backend: &dyn StateBackend, state: StateId, limit: usize) -> StateResult<Queue> {
        let range = backend.key_group_range();
        let mut q = Queue {
            state,
            limit,
            first_kg: range.start,
            heads: (0..range.len()).map(|_| Head::default()).collect(),
            order: BTreeSet::new(),
        };
        for kg in range.iter() {
            q.reload(backend, kg)?;
        }
        Ok(q)
    }

    fn head(&mut self, kg: u32) -> &mut Head {
        &mut self.heads[(kg - self.first_kg) as usize]
    }

    fn earliest(&self, kg: u32) -> Option<i64> {
        self.heads[(kg - self.first_kg) as usize]
            .timers
            .first()
            .map(|(ts, _)| *ts)
    }

    /// Runs `change` on key group `kg`'s head and keeps `order` in step with its earliest timer.
    fn update<T>(&mut self, kg: u32, change: impl FnOnce(&mut Head, usize) -> T) -> T {
        let before = self.earliest(kg);
        let limit = self.limit;
        let out = change(self.head(kg), limit);
        let after = self.earliest(kg);
        if before != after {
            if let Some(ts) = before {
                self.order.remove(&(ts, kg));
            }
            if let Some(ts) = after {
                self.order.insert((ts, kg));
            }
        }
        out
    }

    /// Fills an empty head of `kg` with the earliest timers the backend holds for it.
    fn reload(&mut self, backend: &dyn StateBackend, kg: u32) -> StateResult<()> {
        let limit = self.limit;
        let floor = self.head(kg).floor.clone();
        let loaded = backend.scan_after(self.state, kg, floor.as_deref(), limit)?;
        if let Some((tk, _)) = loaded.iter().find(|(tk, _)| split_timer_key(tk).is_none()) {
            return Err(StateError::corrupt(
                "timer state",
                format!("a timer key of {} bytes that does not split", tk.len()),
            ));
        }
        self.update(kg, |h, limit| {
            h.complete = loaded.len() < limit;
            h.timers = loaded.into_iter().map(|(tk, _)| (ts_of(&tk), tk)).collect();
        });
        Ok(())
    }

    /// Adds timer `e` of `kg` (nothing changes if it exists).
    fn add(&mut self, backend: &mut dyn StateBackend, kg: u32, e: TimerEntry) -> StateResult<()> {
        let h = self.head(kg);
        if h.timers.contains(&e) {
            return Ok(());
        }
        // An incomplete head takes the timer only if it sorts before its last one: the head stays
        // a prefix of the key group's timers.
        let in_head = h.complete || h.timers.last().is_some_and(|last| e < *last);
        if h.floor.as_ref().is_some_and(|floor| e.1 <= *floor) {
            h.floor = None;
        }
        backend.put(self.state, kg, &e.1, &[])?;
        if in_head {
            self.update(kg, |h, limit| {
                h.timers.insert(e);
                if h.timers.len() > limit {
                    // The last stays in the backend only.
                    h.timers.pop_last();
                    h.complete = false;
                }
            });
        }
        Ok(())
    }

    /// Deletes timer `e` of `kg`, if there is one.
    fn remove(
        &mut self,
        backend: &mut dyn StateBackend,
        kg: u32,
        e: &TimerEntry,
    ) -> StateResult<()> {
        let h = self.head(kg);
        let in_head = h.timers.contains(e);
        if !in_head && h.complete {
            return Ok(());
        }
        backend.delete(self.state, kg, &e.1)?;
        if in_head {
            let emptied = self.update(kg, |h, _| {
                if h.timers.first() == Some(e) {
                    // The key group's smallest timer: nothing at or before it remains.
                    h.floor = Some(e.1.clone());
                }
                h.timers.remove(e);
                h.timers.is_empty() && !h.complete
            });
            if emptied {
                self.reload(backend, kg)?;
            }
        }
        Ok(())
    }

    /// Removes and returns the earliest timer of all key groups if it is due at `upto`.
    fn pop_due(
        &mut self,
        backend: &mut dyn StateBackend,
        upto: i64,
    ) -> StateResult<Option<(u32, Vec<u8>)>> {
        let Some(&(ts, kg)) = self.order.first() else {
            return Ok(None);
        };
        if ts > upto {
            return Ok(None);
        }
        let state = self.state;
        let first = &self
            .head(kg)
            .timers
            .first()
            .expect("ordered key groups have timers")
            .1;
        // The backend first: a failed delete leaves the timer in both.
        backend.delete(state, kg, first)?;
        let (tk, refill) = self.update(kg, |h, _| {
            let (_, tk) = h.timers.pop_first().expect("just seen");
            // It was the key group's smallest timer: nothing at or before it remains.
            h.floor = Some(tk.clone());
            let refill = h.timers.is_empty() && !h.complete;
            (tk, refill)
        });
        if refill {
            self.reload(backend, kg)?;
        }
        Ok(Some((kg, tk)))
    }

    /// Timers held: counted in the heads where they are complete, in the backend elsewhere.
    fn len(&self, backend: &dyn StateBackend) -> StateResult<usize> {
        let mut n = 0;
        for (i, h) in self.heads.iter().enumerate() {
            if h.complete {
                n += h.timers.len();
            } else {
                let kg = self.first_kg + i as u32;
                backend.scan_prefix_with(self.state, kg, &[], &mut |_, _| {
                    n += 1;
                    true
                })?;
            }
        }
        Ok(n)
    }

    fn cached(&self) -> usize {
        self.heads.iter().map(|h| h.timers.len()).sum()
    }
}

/// The timers of one operator (`name`) on a [`Keyed`] backend, namespaces of type `N`.
pub struct TimerService<N> {
    queues: [Queue; 2],
    watermark: i64,
    ns_ser: Serde<N>,
    _n: PhantomData<fn() -> N>,
}

impl<N> std::fmt::Debug for TimerService<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerService")
            .field("event_timers_in_memory", &self.queues[0].cached())
            .field("processing_timers_in_memory", &self.queues[1].cached())
            .field("watermark", &self.watermark)
            .finish()
    }
}

fn slot(domain: TimeDomain) -> usize {
    match domain {
        TimeDomain::EventTime => 0,
        TimeDomain::ProcessingTime => 1,
    }
}

impl<N: Serialize + DeserializeOwned + 'static> TimerService<N> {
    /// The timer service `name` of `kb`'s operator: registers its two states (or finds them
    /// restored) and loads the head of each key group's timers.
    pub fn new<K, B: StateBackend>(kb: &mut Keyed<K, B>, name: &str) -> StateResult<Self> {
        let ns_ser = Serde::<N>::default();
        let limit = kb.backend().timer_cache_size().unwrap_or(usize::MAX).max(1);
        let mut queue = |domain: &str| -> StateResult<Queue> {
            let state = kb.register_timer_state(
                &format!("_timers/{name}/{domain}"),
                SerializerId::of(&ns_ser as &dyn StateSerializer<N>),
            )?;
            Queue::open(kb.backend(), state, limit)
        };
        Ok(TimerService {
            queues: [queue("event")?, queue("processing")?],
            watermark: i64::MIN,
            ns_ser,
            _n: PhantomData,
        })
    }

    /// The last watermark this service advanced to (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// Timers registered and not fired, in `domain`. Where the backend keeps only the heads in
    /// memory (RocksDB, ForSt), this reads the timer state of the key groups whose head is not
    /// all of their timers (as Flink's `size()` does): for tools and tests, not per record.
    pub fn len<K, B: StateBackend>(
        &self,
        kb: &Keyed<K, B>,
        domain: TimeDomain,
    ) -> StateResult<usize> {
        self.queues[slot(domain)].len(kb.backend())
    }

    /// Whether no timer of either domain is registered.
    pub fn is_empty(&self) -> bool {
        // A head is empty only when its key group has no timers.
        self.queues.iter().all(|q| q.order.is_empty())
    }

    /// Timers held in memory (the heads), both domains: at most key groups × the backend's
    /// timer cache size for RocksDB and ForSt.
    pub fn in_memory(&self) -> usize {
        self.queues.iter().map(Queue::cached).sum()
    }

    /// The earliest timer of `domain`, if any.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.queues[slot(domain)].order.first().map(|(ts, _)| *ts)
    }

    fn entry<K, B: StateBackend>(
        &self,
        kb: &Keyed<K, B>,
        ns: &N,
        ts: i64,
    ) -> StateResult<(u32, Vec<u8>)> {
        let (key, kg) = kb.current_key_bytes()?;
        Ok((kg, timer_key(ts, key, &self.ns_ser.serialize(ns))))
    }

    /// Registers a timer at `ts` for the current key and `ns` (again: nothing changes).
    pub fn register<K, B: StateBackend>(
        &mut self,
        kb: &mut Keyed<K, B>,
        domain: TimeDomain,
        ns: &N,
        ts: i64,
    ) -> StateResult<()> {
        let (kg, tk) = self.entry(kb, ns, ts)?;
        self.queues[slot(domain)].add(kb.backend_mut(), kg, (ts, tk))
    }

    /// Deletes the timer at `ts` of the current key and `ns`, if there is one.
    pub fn delete<K, B: StateBackend>(
        &mut self,
        kb: &mut Keyed<K, B>,
        domain: TimeDomain,
        ns: &N,
        ts: i64,
    ) -> StateResult<()> {
        let (kg, tk) = self.entry(kb, ns, ts)?;
        self.queues[slot(domain)].remove(kb.backend_mut(), kg, &(ts, tk))
    }

    /// Advances event time to `watermark`: fires every event-time timer at or before it, earliest
    /// first, each with its key current, through `on_timer` (which may register and delete
    /// timers; a new one at or before the watermark fires in this call). Returns how many fired.
    pub fn advance_watermark<K, B: StateBackend>(
        &mut self,
        kb: &mut Keyed<K, B>,
        watermark: i64,
        on_timer: impl FnMut(&mut Keyed<K, B>, &mut Self, Timer<K, N>) -> StateResult<()>,
    ) -> StateResult<usize>
    where
        K: DeserializeOwned,
    {
        self.watermark = self.watermark.max(watermark);
        self.fire(kb, TimeDomain::EventTime, watermark, on_timer)
    }

    /// Advances processing time to `now` (the caller's clock: injected in tests), firing every
    /// processing-time timer at or before it, as [`TimerService::advance_watermark`].
    pub fn advance_processing_time<K, B: StateBackend>(
        &mut self,
        kb: &mut Keyed<K, B>,
        now: i64,
        on_timer: impl FnMut(&mut Keyed<K, B>, &mut Self, Timer<K, N>) -> StateResult<()>,
    ) -> StateResult<usize>
    where
        K: DeserializeOwned,
    {
        self.fire(kb, TimeDomain::ProcessingTime, now, on_timer)
    }

    fn fire<K, B: StateBackend>(
        &mut self,
        kb: &mut Keyed<K, B>,
        domain: TimeDomain,
        upto: i64,
        mut on_timer: impl FnMut(&mut Keyed<K, B>, &mut Self, Timer<K, N>) -> StateResult<()>,
    ) -> StateResult<usize>
    where
        K: DeserializeOwned,
    {
        let mut fired = 0;
        // A timer leaves the backend before it fires (Flink polls it first): a snapshot taken in
        // `on_timer` no longer holds it.
        while let Some(timer) = self.pop_due(kb, domain, upto)? {
            on_timer(kb, self, timer)?;
            fired += 1;
        }
        Ok(fired)
    }

    /// Removes the earliest timer of `domain` if it is due at `upto`, with its key made current,
    /// and returns it: firing one timer at a time (the async API fires them as records).
    pub fn pop_due<K, B: StateBackend>(
        &mut self,
        kb: &mut Keyed<K, B>,
        domain: TimeDomain,
        upto: i64,
    ) -> StateResult<Option<Timer<K, N>>>
    where
        K: DeserializeOwned,
    {
        let Some((kg, tk)) = self.queues[slot(domain)].pop_due(kb.backend_mut(), upto)? else {
            return Ok(None);
        };
        let (ts, key_bytes, ns) = split_timer_key(&tk).expect("checked when loaded or made");
        let key = kb.decode_key(key_bytes)?;
        let namespace = self
            .ns_ser
            .deserialize(ns)
            .map_err(|why| StateError::corrupt("timer namespace", why))?;
        kb.set_current_key_bytes(key_bytes, kg);
        Ok(Some(Timer {
            timestamp: ts,
            key,
            namespace,
        }))
    }

    /// Advances the watermark this service reports (what [`TimerService::advance_watermark`]
    /// does before firing), for callers that fire with [`TimerService::pop_due`].
    pub fn note_watermark(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
    }
}

impl<K, B: StateBackend> Keyed<K, B> {
    /// Registers a timer state: entries keyed by timer key ([`timer_key`]) with empty values,
    /// stored as a value state (one flat map per key group in every backend).
    fn register_timer_state(
        &mut self,
        name: &str,
        namespace: SerializerId,
    ) -> StateResult<StateId> {
        let meta = crate::backend::StateMeta {
            name: name.to_string(),
            kind: StateKind::Value,
            key: self.key_serializer_id(),
            namespace,
            // Version 2: timestamp-first keys (version 1 kept them in (key, namespace) order).
            value: SerializerId {
                id: TIMER_SERIALIZER.into(),
                version: 2,
            },
            user_key: None,
            ttl: None,
        };
        self.backend_mut().register(meta)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::keygroup::KeyGroupRange;

    #[derive(Debug, Clone)]
    enum Op {
        Register(u32, i64),
        Delete(u32, i64),
        Advance(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..12u32, 0..40i64).prop_map(|(k, t)| Op::Register(k, t)),
            1 => (0..12u32, 0..40i64).prop_map(|(k, t)| Op::Delete(k, t)),
            1 => (0..45i64).prop_map(Op::Advance),
        ]
    }

    /// Random registrations, deletions and advances against a set of (timestamp, key): each
    /// advance fires exactly the model's due timers, in timestamp order, and the count and the
    /// next timestamp agree after every step. Over a backend with tiny heads (1 or 3 per key
    /// group, 4 key groups) heads fill, spill and reload all the time.
    fn check<B: StateBackend>(backend: B, ops: &[Op]) {
        let mut kb: Keyed<u32, B> = Keyed::new(backend);
        let mut timers: TimerService<u8> = TimerService::new(&mut kb, "t").unwrap();
        let mut model: BTreeSet<(i64, u32)> = BTreeSet::new();
        for op in ops {
            match *op {
                Op::Register(k, t) => {
                    kb.set_current_key(&k).unwrap();
                    timers
                        .register(&mut kb, TimeDomain::EventTime, &0, t)
                        .unwrap();
                    model.insert((t, k));
                }
                Op::Delete(k, t) => {
                    kb.set_current_key(&k).unwrap();
                    timers
                        .delete(&mut kb, TimeDomain::EventTime, &0, t)
                        .unwrap();
                    model.remove(&(t, k));
                }
                Op::Advance(wm) => {
                    let mut fired = Vec::new();
                    timers
                        .advance_watermark(&mut kb, wm, |_, _, t| {
                            fired.push((t.timestamp, t.key));
                            Ok(())
                        })
                        .unwrap();
                    assert!(fired.is_sorted_by_key(|(t, _)| *t), "{fired:?}");
                    let due: Vec<(i64, u32)> = model
                        .iter()
                        .copied()
                        .take_while(|(t, _)| *t <= wm)
                        .collect();
                    model.retain(|(t, _)| *t > wm);
                    fired.sort();
                    assert_eq!(fired, due);
                }
            }
            assert_eq!(timers.len(&kb, TimeDomain::EventTime).unwrap(), model.len());
            assert_eq!(
                timers.next_timestamp(TimeDomain::EventTime),
                model.first().map(|(t, _)| *t)
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn heap_timers_match_a_model(ops in prop::collection::vec(op(), 1..120)) {
            check(crate::HeapBackend::new(KeyGroupRange::all(4), 4), &ops);
        }

        #[cfg(feature = "rocksdb")]
        #[test]
        fn rocksdb_timers_with_tiny_heads_match_a_model(
            ops in prop::collection::vec(op(), 1..120),
            cache in prop_oneof![Just("1"), Just("3")],
        ) {
            let tuning = crate::rocks_options::RocksTuning::from_pairs(&[(
                "state.backend.rocksdb.timer-service.cache-size",
                cache,
            )])
            .unwrap();
            let b = crate::RocksBackend::temporary_tuned(KeyGroupRange::all(4), 4, tuning).unwrap();
            check(b, &ops);
        }
    }
}
