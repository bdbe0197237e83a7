//! Timers, with the semantics of Flink's `InternalTimerService`: event-time and processing-time
//! timers per (key, namespace, timestamp), deduplicated; a watermark (or the processing-time
//! clock) fires every due timer in timestamp order, with its key current, and timers registered
//! while firing are honoured in the same advance when they are due.
//!
//! Storage: each domain's timers are a keyed state of the backend (`_timers/<name>/event`,
//! `_timers/<name>/processing`), an entry per timer whose composite key is `(key, namespace,
//! timestamp)` — so timers are in every snapshot, checkpoint and savepoint, move between backends
//! with the canonical savepoint format, and restore and rescale by key group exactly like keyed
//! state, in every backend alike. An in-memory index ordered by timestamp (rebuilt from the state
//! at start) finds the next due timer.
//!
//! Not yet: a bounded head cache per key group for RocksDB and ForSt (Flink's
//! `RocksDBCachingPriorityQueueSet`): the index holds every timer in memory, outside the
//! backend's memory budget.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{StateBackend, StateId, StateKind, composite_key, split_composite};
use crate::error::{StateError, StateResult};
use crate::serializer::{Serde, SerializerId, StateSerializer};
use crate::states::Keyed;

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

fn ts_of(bytes: &[u8]) -> Option<i64> {
    let b: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// One domain's timers: the backend state, and the index of due order (timestamp, key group,
/// composite key).
struct Queue {
    state: StateId,
    index: BTreeSet<(i64, u32, Vec<u8>)>,
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
            .field("event_timers", &self.queues[0].index.len())
            .field("processing_timers", &self.queues[1].index.len())
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
    /// restored) and indexes the timers they hold (those of the backend's key groups).
    pub fn new<K, B: StateBackend>(kb: &mut Keyed<K, B>, name: &str) -> StateResult<Self> {
        let ns_ser = Serde::<N>::default();
        let queue = |kb: &mut Keyed<K, B>, domain: &str| -> StateResult<Queue> {
            let state = kb.register_timer_state(
                &format!("_timers/{name}/{domain}"),
                SerializerId::of(&ns_ser as &dyn StateSerializer<N>),
            )?;
            let mut index = BTreeSet::new();
            for (kg, ck, _) in kb.backend().entries(state)? {
                let ts = split_composite(&ck)
                    .and_then(|(_, _, t)| ts_of(t))
                    .ok_or_else(|| {
                        StateError::corrupt("timer state", "a timer key without a timestamp")
                    })?;
                index.insert((ts, kg, ck));
            }
            Ok(Queue { state, index })
        };
        Ok(TimerService {
            queues: [queue(kb, "event")?, queue(kb, "processing")?],
            watermark: i64::MIN,
            ns_ser,
            _n: PhantomData,
        })
    }

    /// The last watermark this service advanced to (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// Timers registered and not fired, in `domain`.
    pub fn len(&self, domain: TimeDomain) -> usize {
        self.queues[slot(domain)].index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(|q| q.index.is_empty())
    }

    /// The earliest timer of `domain`, if any.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.queues[slot(domain)]
            .index
            .first()
            .map(|(ts, _, _)| *ts)
    }

    fn entry<K, B: StateBackend>(
        &self,
        kb: &Keyed<K, B>,
        ns: &N,
        ts: i64,
    ) -> StateResult<(u32, Vec<u8>)> {
        let (key, kg) = kb.current_key_bytes()?;
        Ok((
            kg,
            composite_key(key, &self.ns_ser.serialize(ns), &ts_bytes(ts)),
        ))
    }

    /// Registers a timer at `ts` for the current key and `ns` (again: nothing changes).
    pub fn register<K, B: StateBackend>(
        &mut self,
        kb: &mut Keyed<K, B>,
        domain: TimeDomain,
        ns: &N,
        ts: i64,
    ) -> StateResult<()> {
        let (kg, ck) = self.entry(kb, ns, ts)?;
        let q = &mut self.queues[slot(domain)];
        if q.index.insert((ts, kg, ck.clone())) {
            kb.backend_mut().put(q.state, kg, &ck, &[])?;
        }
        Ok(())
    }

    /// Deletes the timer at `ts` of the current key and `ns`, if there is one.
    pub fn delete<K, B: StateBackend>(
        &mut self,
        kb: &mut Keyed<K, B>,
        domain: TimeDomain,
        ns: &N,
        ts: i64,
    ) -> StateResult<()> {
        let (kg, ck) = self.entry(kb, ns, ts)?;
        let q = &mut self.queues[slot(domain)];
        if q.index.remove(&(ts, kg, ck.clone())) {
            kb.backend_mut().delete(q.state, kg, &ck)?;
        }
        Ok(())
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
        loop {
            let q = &mut self.queues[slot(domain)];
            let due = q.index.first().is_some_and(|(ts, _, _)| *ts <= upto);
            if !due {
                return Ok(fired);
            }
            let (ts, kg, ck) = q.index.pop_first().expect("a due timer");
            kb.backend_mut().delete(q.state, kg, &ck)?;
            let (key, ns, _) = split_composite(&ck).ok_or_else(|| {
                StateError::corrupt("timer state", "a timer key that does not split")
            })?;
            let key = kb.decode_key(key)?;
            let namespace = self
                .ns_ser
                .deserialize(ns)
                .map_err(|why| StateError::corrupt("timer namespace", why))?;
            kb.set_current_key(&key)?;
            on_timer(
                kb,
                self,
                Timer {
                    timestamp: ts,
                    key,
                    namespace,
                },
            )?;
            fired += 1;
        }
    }
}

impl<K, B: StateBackend> Keyed<K, B> {
    /// Registers a timer state: a map state whose user key is the timer's timestamp and whose
    /// values are empty.
    fn register_timer_state(
        &mut self,
        name: &str,
        namespace: SerializerId,
    ) -> StateResult<StateId> {
        let meta = crate::backend::StateMeta {
            name: name.to_string(),
            kind: StateKind::Map,
            key: self.key_serializer_id(),
            namespace,
            value: SerializerId {
                id: "timer".into(),
                version: 1,
            },
            user_key: Some(SerializerId {
                id: "timer-timestamp".into(),
                version: 1,
            }),
            ttl: None,
        };
        self.backend_mut().register(meta)
    }
}
