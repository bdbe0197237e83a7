//! The heap backend against the conformance suite and a model.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::conformance;
use crate::keygroup::KeyGroupRange;
use crate::snapshot;
use crate::states::Keyed;
use crate::{HeapBackend, StateBackend};

fn heap(range: KeyGroupRange, maxp: u32) -> Box<dyn StateBackend> {
    Box::new(HeapBackend::new(range, maxp))
}

#[test]
fn heap_passes_the_conformance_suite() {
    conformance::run_all(&heap);
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8, u16),
    Remove(u8, u8),
    Add(u8, u16),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..20, 0u8..5, any::<u16>()).prop_map(|(k, uk, v)| Op::Put(k, uk, v)),
        2 => (0u8..20, 0u8..5).prop_map(|(k, uk)| Op::Remove(k, uk)),
        3 => (0u8..20, any::<u16>()).prop_map(|(k, v)| Op::Add(k, v)),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    /// Random map and list operations, with snapshot + restore in between, agree with BTreeMaps.
    #[test]
    fn heap_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut kb: Keyed<u8, HeapBackend> = Keyed::new(HeapBackend::new(KeyGroupRange::all(128), 128));
        let mut map_model: BTreeMap<(u8, u8), u16> = BTreeMap::new();
        let mut list_model: BTreeMap<u8, Vec<u16>> = BTreeMap::new();
        for op in ops {
            let m = kb.map_state::<u8, u16>("m", None).unwrap();
            let l = kb.list_state::<u16>("l", None).unwrap();
            match op {
                Op::Put(k, uk, v) => { kb.set_current_key(&k).unwrap(); m.put(&mut kb, &uk, &v).unwrap(); map_model.insert((k, uk), v); }
                Op::Remove(k, uk) => { kb.set_current_key(&k).unwrap(); m.remove(&mut kb, &uk).unwrap(); map_model.remove(&(k, uk)); }
                Op::Add(k, v) => { kb.set_current_key(&k).unwrap(); l.add(&mut kb, &v).unwrap(); list_model.entry(k).or_default().push(v); }
                Op::Snapshot => {
                    let bytes = snapshot::write(kb.backend().snapshot_view().as_ref(), 0);
                    let mut fresh = HeapBackend::new(KeyGroupRange::all(128), 128);
                    snapshot::restore(&mut fresh, &[(&bytes as &dyn snapshot::ByteSource, "snapshot".into())]).unwrap();
                    kb = Keyed::new(fresh);
                }
            }
            let m = kb.map_state::<u8, u16>("m", None).unwrap();
            let l = kb.list_state::<u16>("l", None).unwrap();
            for k in 0u8..20 {
                kb.set_current_key(&k).unwrap();
                let got: BTreeMap<u8, u16> = m.entries(&mut kb).unwrap().into_iter().collect();
                let want: BTreeMap<u8, u16> = map_model.range((k, 0)..=(k, 255)).map(|((_, uk), v)| (*uk, *v)).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(l.get(&mut kb).unwrap(), list_model.get(&k).cloned().unwrap_or_default());
            }
        }
    }
}
