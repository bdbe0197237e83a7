//! Operator state, with the semantics of Flink's `OperatorStateBackend`: state of a parallel
//! operator instance rather than of a key. Three kinds, registered by name and typed like keyed
//! state:
//! - [`OperatorListState`] from [`OperatorState::list_state`]: on a restore at another
//!   parallelism the elements of all instances are split evenly (Flink's `SPLIT_DISTRIBUTE`);
//! - the same from [`OperatorState::union_list_state`]: every new instance gets every element
//!   (`UNION`);
//! - [`BroadcastState`]: a map every instance holds the same copy of (`BROADCAST`).
//!
//! [`OperatorState::snapshot`] writes an instance's state as bytes (versioned, checked at
//! restore); [`redistribute`] turns the snapshots of N instances into the states of M, exactly as
//! Flink's `RoundRobinOperatorStateRepartitioner` assigns them.
//!
//! In job checkpoints every instance adds its state
//! ([`crate::checkpoint::PendingCheckpoint::add_operator_state`]) and a restore at any parallelism
//! takes its share ([`crate::checkpoint::CheckpointStorage::restore_operator_state`]); savepoints
//! hold all instances of an operator in one object beside the keyed state
//! ([`crate::checkpoint::CheckpointStorage::savepoint_operator_state`]). Operator state does not
//! depend on the keyed backend: a savepoint's moves with it between backends.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{StateError, StateResult};
use crate::serializer::{Serde, StateSerializer};

/// How a list state is redistributed when the parallelism changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Distribution {
    /// Split evenly among the new instances, in order.
    SplitDistribute,
    /// Every new instance gets every element.
    Union,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Stored {
    lists: BTreeMap<String, (Distribution, Vec<Vec<u8>>)>,
    broadcast: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

const FORMAT: &str = "statefs-operator-state";

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: String,
    version: u32,
    state: Stored,
}

/// The operator state of one parallel instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorState {
    stored: Stored,
}

/// A list of `T` held by one instance ([`OperatorState::list_state`]).
#[derive(Debug, Clone)]
pub struct OperatorListState<T> {
    name: String,
    _t: PhantomData<fn() -> T>,
}

/// A map every instance holds the same copy of ([`OperatorState::broadcast_state`]).
#[derive(Debug, Clone)]
pub struct BroadcastState<K, V> {
    name: String,
    _kv: PhantomData<fn() -> (K, V)>,
}

fn decode<T: Serialize + DeserializeOwned + 'static>(what: &str, bytes: &[u8]) -> StateResult<T> {
    Serde::<T>::default()
        .deserialize(bytes)
        .map_err(|why| StateError::Serialization {
            state: what.to_string(),
            why,
        })
}

fn encode<T: Serialize + DeserializeOwned + 'static>(value: &T) -> Vec<u8> {
    Serde::<T>::default().serialize(value)
}

impl OperatorState {
    pub fn new() -> Self {
        Self::default()
    }

    fn list<T>(&mut self, name: &str, mode: Distribution) -> StateResult<OperatorListState<T>> {
        let (have, _) = self
            .stored
            .lists
            .entry(name.to_string())
            .or_insert((mode, Vec::new()));
        if *have != mode {
            return Err(StateError::Migration {
                state: name.to_string(),
                why: format!("it is a {have:?} list, not {mode:?}"),
            });
        }
        Ok(OperatorListState {
            name: name.to_string(),
            _t: PhantomData,
        })
    }

    /// A list split evenly among the instances on a restore at another parallelism.
    pub fn list_state<T>(&mut self, name: &str) -> StateResult<OperatorListState<T>> {
        self.list(name, Distribution::SplitDistribute)
    }

    /// A list every instance gets whole on a restore at another parallelism.
    pub fn union_list_state<T>(&mut self, name: &str) -> StateResult<OperatorListState<T>> {
        self.list(name, Distribution::Union)
    }

    /// A map every instance holds the same copy of.
    pub fn broadcast_state<K, V>(&mut self, name: &str) -> BroadcastState<K, V> {
        self.stored.broadcast.entry(name.to_string()).or_default();
        BroadcastState {
            name: name.to_string(),
            _kv: PhantomData,
        }
    }

    /// This instance's state as bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&Snapshot {
            format: FORMAT.into(),
            version: 1,
            state: self.stored.clone(),
        })
        .expect("operator state serializes")
    }

    /// An instance's state from [`OperatorState::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> StateResult<Self> {
        let s: Snapshot = postcard::from_bytes(bytes)
            .map_err(|e| StateError::corrupt("operator state", e.to_string()))?;
        if s.format != FORMAT || s.version != 1 {
            return Err(StateError::corrupt(
                "operator state",
                "another format or version",
            ));
        }
        Ok(OperatorState { stored: s.state })
    }
}

impl<T: Serialize + DeserializeOwned + 'static> OperatorListState<T> {
    fn elements<'a>(&self, st: &'a mut OperatorState) -> &'a mut Vec<Vec<u8>> {
        &mut st
            .stored
            .lists
            .get_mut(&self.name)
            .expect("registered by OperatorState")
            .1
    }

    pub fn get(&self, st: &mut OperatorState) -> StateResult<Vec<T>> {
        self.elements(st)
            .iter()
            .map(|b| decode(&self.name, b))
            .collect()
    }

    pub fn add(&self, st: &mut OperatorState, value: &T) {
        self.elements(st).push(encode(value));
    }

    pub fn update(&self, st: &mut OperatorState, values: &[T]) {
        *self.elements(st) = values.iter().map(encode).collect();
    }

    pub fn clear(&self, st: &mut OperatorState) {
        self.elements(st).clear();
    }
}

impl<K, V> BroadcastState<K, V>
where
    K: Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    fn map<'a>(&self, st: &'a mut OperatorState) -> &'a mut BTreeMap<Vec<u8>, Vec<u8>> {
        st.stored
            .broadcast
            .get_mut(&self.name)
            .expect("registered by OperatorState")
    }

    pub fn get(&self, st: &mut OperatorState, key: &K) -> StateResult<Option<V>> {
        self.map(st)
            .get(&encode(key))
            .map(|v| decode(&self.name, v))
            .transpose()
    }

    pub fn put(&self, st: &mut OperatorState, key: &K, value: &V) {
        self.map(st).insert(encode(key), encode(value));
    }

    pub fn remove(&self, st: &mut OperatorState, key: &K) {
        self.map(st).remove(&encode(key));
    }

    pub fn entries(&self, st: &mut OperatorState) -> StateResult<Vec<(K, V)>> {
        self.map(st)
            .iter()
            .map(|(k, v)| Ok((decode(&self.name, k)?, decode(&self.name, v)?)))
            .collect()
    }
}

/// The operator states of `new_parallelism` instances from those of the instances before
/// (`old`, by instance index), as Flink's `RoundRobinOperatorStateRepartitioner` assigns them:
/// - at the same parallelism, every instance keeps its own state;
/// - a split list's elements, taken instance by instance in order, are cut into
///   `new_parallelism` consecutive parts, the first `total % new_parallelism` parts one
///   element longer;
/// - a union list goes whole to every instance (instance by instance, in order);
/// - instance `i`'s broadcast state is old instance `i % old.len()`'s (all copies are equal).
pub fn redistribute(old: &[OperatorState], new_parallelism: usize) -> Vec<OperatorState> {
    if old.len() == new_parallelism {
        return old.to_vec();
    }
    let mut new = vec![OperatorState::default(); new_parallelism];
    let names: std::collections::BTreeSet<(&String, Distribution)> = old
        .iter()
        .flat_map(|s| s.stored.lists.iter().map(|(n, (d, _))| (n, *d)))
        .collect();
    for (name, mode) in names {
        let all: Vec<Vec<u8>> = old
            .iter()
            .filter_map(|s| s.stored.lists.get(name))
            .flat_map(|(_, e)| e.iter().cloned())
            .collect();
        match mode {
            Distribution::Union => {
                for s in new.iter_mut() {
                    s.stored.lists.insert(name.clone(), (mode, all.clone()));
                }
            }
            Distribution::SplitDistribute => {
                let base = all.len() / new_parallelism.max(1);
                let mut longer = all.len() % new_parallelism.max(1);
                let mut rest = all.into_iter();
                for s in new.iter_mut() {
                    let take = base + usize::from(longer > 0);
                    longer = longer.saturating_sub(1);
                    let part: Vec<Vec<u8>> = rest.by_ref().take(take).collect();
                    s.stored.lists.insert(name.clone(), (mode, part));
                }
            }
        }
    }
    if !old.is_empty() {
        for (i, s) in new.iter_mut().enumerate() {
            s.stored.broadcast = old[i % old.len()].stored.broadcast.clone();
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Instances holding `lists[i]` in a split list, a union list, and a broadcast map naming
    /// the instance (equal in all but the name, to see which copy travelled).
    fn instances(lists: &[Vec<u32>]) -> Vec<OperatorState> {
        lists
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut st = OperatorState::new();
                let split = st.list_state::<u32>("offsets").unwrap();
                split.update(&mut st, l);
                let union = st.union_list_state::<u32>("all").unwrap();
                union.update(&mut st, l);
                st.broadcast_state::<String, u32>("rules").put(
                    &mut st,
                    &"from".into(),
                    &(i as u32),
                );
                st
            })
            .collect()
    }

    /// Where Flink puts element `j` of `total` among `p` instances: the first `total % p`
    /// instances take one element more, all consecutive (computed apart from `redistribute`).
    fn flink_instance_of(j: usize, total: usize, p: usize) -> usize {
        let (base, rem) = (total / p, total % p);
        // Instances 0..rem hold base + 1 elements each.
        if j < rem * (base + 1) {
            j / (base + 1)
        } else {
            rem + (j - rem * (base + 1)) / base.max(1)
        }
    }

    #[test]
    fn rescaling_assigns_elements_as_flink_does() {
        let lists = vec![vec![10, 11, 12, 13, 14], vec![20, 21], vec![]];
        let all: Vec<u32> = lists.concat();
        for p in [1usize, 2, 4, 7, 9] {
            let mut new = redistribute(&instances(&lists), p);
            assert_eq!(new.len(), p);
            for (i, st) in new.iter_mut().enumerate() {
                let split = st.list_state::<u32>("offsets").unwrap().get(st).unwrap();
                let want: Vec<u32> = all
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| flink_instance_of(*j, all.len(), p) == i)
                    .map(|(_, v)| *v)
                    .collect();
                assert_eq!(split, want, "instance {i} of {p}");
                assert_eq!(
                    st.union_list_state::<u32>("all").unwrap().get(st).unwrap(),
                    all
                );
                let rules = st.broadcast_state::<String, u32>("rules");
                assert_eq!(rules.get(st, &"from".into()).unwrap(), Some((i % 3) as u32));
            }
        }
        // At the same parallelism every instance keeps its own state.
        let same = redistribute(&instances(&lists), 3);
        assert_eq!(same, instances(&lists));
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let mut st = instances(&[vec![1, 2, 3]]).remove(0);
        let back = OperatorState::restore(&st.snapshot()).unwrap();
        assert_eq!(back, st);
        let mut bytes = st.snapshot();
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(
            OperatorState::restore(&bytes),
            Err(StateError::Corrupt { .. })
        ));
        assert!(matches!(
            st.union_list_state::<u32>("offsets"),
            Err(StateError::Migration { .. })
        ));
    }

    proptest! {
        /// Whatever the lists and parallelisms: no element is lost or added, split parts differ
        /// by at most one element and, read instance by instance, keep the old order.
        #[test]
        fn split_lists_keep_every_element_in_order(
            lists in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 0..20), 1..6),
            p in 1usize..10,
        ) {
            let all: Vec<u32> = lists.concat();
            let mut new = redistribute(&instances(&lists), p);
            let parts: Vec<Vec<u32>> = new
                .iter_mut()
                .map(|st| st.list_state::<u32>("offsets").unwrap().get(st).unwrap())
                .collect();
            prop_assert_eq!(parts.concat(), all);
            if p != lists.len() {
                let (min, max) = (
                    parts.iter().map(Vec::len).min().unwrap(),
                    parts.iter().map(Vec::len).max().unwrap(),
                );
                prop_assert!(max - min <= 1);
                prop_assert!(parts.windows(2).all(|w| w[0].len() >= w[1].len()));
            }
        }
    }
}
