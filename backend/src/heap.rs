//! The heap backend: a sorted map per state and key group, copied on write after a snapshot.
//!
//! Each key group's map sits behind an `Arc`. A snapshot clones the `Arc`s (one per state and key
//! group: "marking a version"), and the first write to a key group afterwards copies just that map
//! (`Arc::make_mut`). Writers never wait for a snapshot being written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::backend::{Entry, SnapshotView, StateBackend, StateId, StateMeta};
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;

type Group = Arc<BTreeMap<Vec<u8>, Vec<u8>>>;

struct HeapState {
    meta: StateMeta,
    /// Index: key group - range.start.
    groups: Vec<Group>,
    /// Registered by a descriptor (not only known from a restore).
    registered: bool,
}

pub struct HeapBackend {
    range: KeyGroupRange,
    max_parallelism: u32,
    states: Vec<HeapState>,
    by_name: HashMap<String, StateId>,
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
            states: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    fn group(&self, s: StateId, kg: u32) -> StateResult<&Group> {
        self.check(kg)?;
        Ok(&self.states[s].groups[(kg - self.range.start) as usize])
    }

    fn group_mut(&mut self, s: StateId, kg: u32) -> StateResult<&mut BTreeMap<Vec<u8>, Vec<u8>>> {
        self.check(kg)?;
        let start = self.range.start;
        Ok(Arc::make_mut(
            &mut self.states[s].groups[(kg - start) as usize],
        ))
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

    fn insert_state(&mut self, meta: StateMeta, registered: bool) -> StateId {
        let id = self.states.len();
        self.by_name.insert(meta.name.clone(), id);
        let groups = (0..self.range.len())
            .map(|_| Arc::new(BTreeMap::new()))
            .collect();
        self.states.push(HeapState {
            meta,
            groups,
            registered,
        });
        id
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

fn range_of<'a>(
    map: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    prefix: &[u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> {
    use std::ops::Bound;
    let upper = match prefix_end(prefix) {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    map.range((Bound::Included(prefix.to_vec()), upper))
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
                if let Some(why) = meta.incompatibility(&self.states[id].meta) {
                    return Err(StateError::Migration {
                        state: meta.name,
                        why,
                    });
                }
                // A restored state takes the new TTL settings (Flink does not persist them either).
                self.states[id].meta.ttl = meta.ttl;
                self.states[id].registered = true;
                Ok(id)
            }
            None => Ok(self.insert_state(meta, true)),
        }
    }

    fn meta(&self, id: StateId) -> &StateMeta {
        &self.states[id].meta
    }

    fn states(&self) -> Vec<StateMeta> {
        self.states.iter().map(|s| s.meta.clone()).collect()
    }

    fn get(&self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<Option<Vec<u8>>> {
        Ok(self.group(s, kg)?.get(ck).cloned())
    }

    fn put(&mut self, s: StateId, kg: u32, ck: Vec<u8>, value: Vec<u8>) -> StateResult<()> {
        self.group_mut(s, kg)?.insert(ck, value);
        Ok(())
    }

    fn delete(&mut self, s: StateId, kg: u32, ck: &[u8]) -> StateResult<()> {
        // Avoid copying a shared group just to find nothing to delete.
        if self.group(s, kg)?.contains_key(ck) {
            self.group_mut(s, kg)?.remove(ck);
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        s: StateId,
        kg: u32,
        prefix: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(range_of(self.group(s, kg)?, prefix)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn delete_prefix(&mut self, s: StateId, kg: u32, prefix: &[u8]) -> StateResult<()> {
        let keys: Vec<Vec<u8>> = range_of(self.group(s, kg)?, prefix)
            .map(|(k, _)| k.clone())
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
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Unbounded,
        };
        let g = self.group(s, kg)?;
        Ok(g.range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn entries(&self, s: StateId) -> StateResult<Vec<Entry>> {
        let mut out = Vec::new();
        for (i, g) in self.states[s].groups.iter().enumerate() {
            let kg = self.range.start + i as u32;
            out.extend(g.iter().map(|(k, v)| (kg, k.clone(), v.clone())));
        }
        Ok(out)
    }

    fn snapshot_view(&self) -> Box<dyn SnapshotView> {
        Box::new(HeapView {
            range: self.range,
            max_parallelism: self.max_parallelism,
            states: self
                .states
                .iter()
                .map(|s| (s.meta.clone(), s.groups.clone()))
                .collect(),
        })
    }

    fn load(&mut self, s: StateId, entries: Vec<Entry>) -> StateResult<()> {
        for (kg, k, v) in entries {
            self.group_mut(s, kg)?.insert(k, v);
        }
        Ok(())
    }

    fn adopt(&mut self, meta: StateMeta) -> StateResult<StateId> {
        match self.by_name.get(&meta.name).copied() {
            Some(id) => match meta.incompatibility(&self.states[id].meta) {
                None => Ok(id),
                Some(why) => Err(StateError::corrupt(
                    "restore",
                    format!("handles disagree on state {:?}: {why}", meta.name),
                )),
            },
            None => Ok(self.insert_state(meta, false)),
        }
    }
}

struct HeapView {
    range: KeyGroupRange,
    max_parallelism: u32,
    states: Vec<(StateMeta, Vec<Group>)>,
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
    fn key_group_entries(&self, s: StateId, kg: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let g = &self.states[s].1[(kg - self.range.start) as usize];
        g.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}
