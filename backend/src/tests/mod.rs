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

/// An in-memory object store and the runtime it runs on (keep the runtime alive with the store).
fn memory_remote() -> (
    std::sync::Arc<dyn statefs_store::RemoteStore>,
    std::sync::Arc<tokio::runtime::Runtime>,
) {
    let rt = statefs_store::runtime().unwrap();
    let store = statefs_store::ObjectStoreRemote::in_memory(rt.clone());
    (std::sync::Arc::new(store), rt)
}

#[test]
fn heap_passes_the_conformance_suite() {
    conformance::run_all(&heap);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_passes_the_conformance_suite_unchanged() {
    conformance::run_all(&|range, maxp| {
        Box::new(crate::RocksBackend::temporary(range, maxp).unwrap()) as Box<dyn StateBackend>
    });
}

/// The timer sections again with heads of 2 timers per key group: heads fill, spill to the
/// column family and reload as timers fire.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_timers_with_a_small_head_cache() {
    let small = |range, maxp| {
        let tuning = crate::rocks_options::RocksTuning::from_pairs(&[(
            "state.backend.rocksdb.timer-service.cache-size",
            "2",
        )])
        .unwrap();
        Box::new(crate::RocksBackend::temporary_tuned(range, maxp, tuning).unwrap())
            as Box<dyn StateBackend>
    };
    conformance::timers_fire_in_order_once(&small);
    conformance::timers_restore_and_rescale(&small);
    conformance::timers_snapshot_while_firing(&small);
}

#[test]
fn heap_checkpoints_restore_and_rescale() {
    let (r, _rt) = memory_remote();
    let mut storage = crate::checkpoint::CheckpointStorage::open(r, "job", 10).unwrap();
    conformance::checkpoints_restore_and_rescale(
        &mut storage,
        &|_, range| HeapBackend::new(range, 128),
        &|_| (),
    );
    conformance::operator_state_in_checkpoints(
        &storage,
        &|_, range| HeapBackend::new(range, 128),
        &|_| (),
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_checkpoints_restore_and_rescale() {
    let (r, _rt) = memory_remote();
    let mut storage = crate::checkpoint::CheckpointStorage::open(r, "job", 10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    conformance::checkpoints_restore_and_rescale(
        &mut storage,
        &|name, range| crate::RocksBackend::open(&dir.path().join(name), range, 128).unwrap(),
        &|name| crate::RocksHome::new(dir.path().join(name)),
    );
    conformance::operator_state_in_checkpoints(
        &storage,
        &|name, range| crate::RocksBackend::open(&dir.path().join(name), range, 128).unwrap(),
        &|name| crate::RocksHome::new(dir.path().join(name)),
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn savepoints_move_state_between_heap_and_rocksdb() {
    use crate::states::Keyed;
    let mut heap_kb: Keyed<String, Box<dyn StateBackend>> =
        Keyed::new(heap(KeyGroupRange::all(128), 128));
    let m = heap_kb.map_state::<u32, String>("m", None).unwrap();
    for i in 0..500u32 {
        heap_kb.set_current_key(&format!("k{i}")).unwrap();
        m.put(&mut heap_kb, &i, &format!("v{i}")).unwrap();
    }
    // heap -> rocksdb -> heap, through the canonical format.
    let sp1 = snapshot::write(heap_kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap();
    let mut rocks = crate::RocksBackend::temporary(KeyGroupRange::all(128), 128).unwrap();
    snapshot::restore(
        &mut rocks,
        &[(&sp1 as &dyn snapshot::ByteSource, "savepoint".into())],
    )
    .unwrap();
    let sp2 = snapshot::write(rocks.snapshot_view().unwrap().as_ref(), 0).unwrap();
    let mut back: Keyed<String, Box<dyn StateBackend>> =
        Keyed::new(heap(KeyGroupRange::all(128), 128));
    snapshot::restore(
        back.backend_mut(),
        &[(&sp2 as &dyn snapshot::ByteSource, "savepoint".into())],
    )
    .unwrap();
    let m2 = back.map_state::<u32, String>("m", None).unwrap();
    for i in 0..500u32 {
        back.set_current_key(&format!("k{i}")).unwrap();
        assert_eq!(m2.get(&mut back, &i).unwrap(), Some(format!("v{i}")));
    }
    assert_eq!(sp1, sp2, "both backends write the same canonical bytes");
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
                    let bytes = snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap();
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

/// Metadata of a state registered straight on a backend, bypassing the typed API: one test
/// serializer everywhere, a user-key serializer for map states.
fn raw_meta(
    name: &str,
    kind: crate::backend::StateKind,
    ttl: Option<crate::ttl::TtlConfig>,
) -> crate::backend::StateMeta {
    let sid = || crate::serializer::SerializerId {
        id: "test".into(),
        version: 1,
    };
    crate::backend::StateMeta {
        name: name.into(),
        kind,
        key: sid(),
        namespace: sid(),
        value: sid(),
        user_key: (kind == crate::backend::StateKind::Map).then(sid),
        ttl,
    }
}

/// A raw backend operation for [`held_writes_are_invisible_except_in_time`].
#[derive(Debug, Clone)]
enum RawOp {
    Put(usize, u8, u8, u8),
    Append(usize, u8, u8, u8),
    Delete(usize, u8, u8),
    Clear(usize, u8),
    Get(usize, u8, u8),
    Snapshot,
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    // States 0 (value-like), 1 (map) and 2 (TTL: a sorted map, never held).
    let s = 0usize..3;
    prop_oneof![
        6 => (s.clone(), 0u8..12, 0u8..3, any::<u8>()).prop_map(|(s, k, u, v)| RawOp::Put(s, k, u, v)),
        4 => (s.clone(), 0u8..12, 0u8..3, any::<u8>()).prop_map(|(s, k, u, v)| RawOp::Append(s, k, u, v)),
        2 => (s.clone(), 0u8..12, 0u8..3).prop_map(|(s, k, u)| RawOp::Delete(s, k, u)),
        1 => (s.clone(), 0u8..12).prop_map(|(s, k)| RawOp::Clear(s, k)),
        2 => (s, 0u8..12, 0u8..3).prop_map(|(s, k, u)| RawOp::Get(s, k, u)),
        1 => Just(RawOp::Snapshot),
    ]
}

proptest! {
    /// Long runs of puts and appends (held back by the heap backend, `heap/pending.rs`) mixed with
    /// deletes, clears, point reads and snapshots agree with a model at every read, and every
    /// snapshot view still shows the state at its mark after all later writes.
    #[test]
    fn held_writes_are_invisible_except_in_time(ops in proptest::collection::vec(raw_op(), 1..200)) {
        use crate::backend::{composite_key, StateKind};
        let range = KeyGroupRange::new(0, 15);
        let mut b = HeapBackend::new(range, 128);
        for (name, kind, ttl) in [
            ("v", StateKind::Value, None),
            ("m", StateKind::Map, None),
            ("t", StateKind::Value, Some(crate::ttl::TtlConfig::new(std::time::Duration::from_secs(60)))),
        ] {
            b.register(raw_meta(name, kind, ttl)).unwrap();
        }
        // Value-like states have no user key; the map state's user key is one byte.
        let ck = |s: usize, k: u8, u: u8| if s == 1 { composite_key(&[k], b"", &[u]) } else { composite_key(&[k], b"", &[]) };
        let kg = |k: u8| u32::from(k) % 16;
        type Model = BTreeMap<(usize, u32, Vec<u8>), Vec<u8>>;
        let mut model: Model = BTreeMap::new();
        let mut views: Vec<(Box<dyn crate::backend::SnapshotView>, Model)> = Vec::new();
        for op in ops {
            match op {
                RawOp::Put(s, k, u, v) => {
                    b.put(s, kg(k), &ck(s, k, u), &[v, v]).unwrap();
                    model.insert((s, kg(k), ck(s, k, u)), vec![v, v]);
                }
                RawOp::Append(s, k, u, v) => {
                    b.append(s, kg(k), &ck(s, k, u), &[v]).unwrap();
                    model.entry((s, kg(k), ck(s, k, u))).or_default().push(v);
                }
                RawOp::Delete(s, k, u) => {
                    b.delete(s, kg(k), &ck(s, k, u)).unwrap();
                    model.remove(&(s, kg(k), ck(s, k, u)));
                }
                RawOp::Clear(s, k) => {
                    let prefix = composite_key(&[k], b"", &[]);
                    b.delete_prefix(s, kg(k), &prefix).unwrap();
                    model.retain(|(ms, mkg, mck), _| !(*ms == s && *mkg == kg(k) && mck.starts_with(&prefix)));
                }
                RawOp::Get(s, k, u) => {
                    let got = b.get(s, kg(k), &ck(s, k, u)).unwrap();
                    prop_assert_eq!(got.as_ref(), model.get(&(s, kg(k), ck(s, k, u))));
                }
                RawOp::Snapshot => views.push((b.snapshot_view().unwrap(), model.clone())),
            }
        }
        // An out-of-range write is refused at once, and holds nothing.
        prop_assert!(b.put(0, 16, &ck(0, 1, 0), b"x").is_err());
        let listed = |entries: Vec<(u32, Vec<u8>, Vec<u8>)>, s: usize| -> Model {
            entries.into_iter().map(|(g, k, v)| ((s, g, k), v)).collect()
        };
        let mut live = Model::new();
        for s in 0..3 {
            live.extend(listed(b.entries(s).unwrap(), s));
        }
        prop_assert_eq!(live, model);
        for (view, at_mark) in views {
            let mut seen = Model::new();
            for s in 0..3 {
                for g in 0..16 {
                    for (k, v) in view.key_group_entries(s, g).unwrap() {
                        seen.insert((s, g, k), v);
                    }
                }
            }
            prop_assert_eq!(seen, at_mark);
        }
    }
}

/// A read lends its bytes to a callback; the callback may read the backend again, including a
/// state whose writes are still held (`heap/pending.rs`), and sees them.
#[test]
fn a_read_inside_a_read_sees_held_writes() {
    use crate::backend::{StateKind, composite_key};
    let mut b = HeapBackend::new(KeyGroupRange::all(128), 128);
    for name in ["a", "b"] {
        b.register(raw_meta(name, StateKind::Value, None)).unwrap();
    }
    let k = composite_key(b"k", b"", b"");
    b.put(0, 3, &k, b"in a").unwrap();
    assert_eq!(b.get(0, 3, &k).unwrap().as_deref(), Some(&b"in a"[..]));
    // Held: state 1 has a held write, state 0 has none.
    b.put(1, 3, &k, b"in b").unwrap();
    let b = &b;
    let mut inner = None;
    let mut scanned = Vec::new();
    let found = b
        .get_with(0, 3, &k, &mut |v| {
            assert_eq!(v, b"in a");
            inner = b.get(1, 3, &k).unwrap();
            b.scan_prefix_with(1, 3, &k, &mut |_, v| {
                scanned.push(v.to_vec());
                true
            })
            .unwrap();
            assert_eq!(b.entries(1).unwrap().len(), 1);
            drop(b.snapshot_view().unwrap());
        })
        .unwrap();
    assert!(found);
    assert_eq!(inner.as_deref(), Some(&b"in b"[..]));
    assert_eq!(scanned, vec![b"in b".to_vec()]);
}

mod storage {
    use statefs_store::RemoteStore;

    use crate::checkpoint::{CheckpointStorage, SharedStateRegistry};
    use crate::keygroup::KeyGroupRange;
    use crate::states::Keyed;
    use crate::{Checkpointed, HeapBackend, StateError};

    fn filled(n: u32, round: u32) -> Keyed<String, HeapBackend> {
        let mut kb = Keyed::new(HeapBackend::new(KeyGroupRange::all(128), 128));
        let v = kb.value_state::<u32>("v", None).unwrap();
        for i in 0..n {
            kb.set_current_key(&format!("k{i}")).unwrap();
            v.update(&mut kb, &(i + round)).unwrap();
        }
        kb
    }

    fn check(kb: &mut Keyed<String, HeapBackend>, n: u32, round: u32) {
        let v = kb.value_state::<u32>("v", None).unwrap();
        for i in 0..n {
            if kb.set_current_key(&format!("k{i}")).is_ok() {
                assert_eq!(v.value(kb).unwrap(), Some(i + round));
            }
        }
    }

    fn objects(r: &dyn RemoteStore) -> Vec<String> {
        let mut v: Vec<String> = r.list("").unwrap().into_iter().map(|o| o.key).collect();
        v.sort();
        v
    }

    #[test]
    fn checkpoints_restore_rescale_and_are_retained() {
        let (r, _rt) = super::memory_remote();
        let mut storage = CheckpointStorage::open(r.clone(), "job-1", 2).unwrap();
        for round in 1..=3u32 {
            let mut kb = filled(500, round);
            let mut p = storage.begin(round as u64, 128);
            kb.backend_mut().checkpoint(&mut p).unwrap();
            let dropped = p.complete().unwrap();
            assert_eq!(dropped, if round == 3 { vec![1] } else { vec![] });
        }
        assert_eq!(storage.completed_ids().unwrap(), vec![2, 3]);
        let files = objects(r.as_ref());
        assert_eq!(
            files.iter().filter(|k| k.contains("/taskowned/")).count(),
            2,
            "{files:?}: the dropped checkpoint's file is gone"
        );
        let latest = storage.latest().unwrap().unwrap();
        assert_eq!(latest.id, 3);
        // Restore on two subtasks (rescale 1 -> 2), each reading only its key groups.
        for i in 0..2 {
            let range = KeyGroupRange::for_operator(128, 2, i);
            let mut kb = Keyed::new(HeapBackend::restore(&storage, &latest, range, ()).unwrap());
            check(&mut kb, 500, 3);
        }
        // Reopening rebuilds from the store.
        let again = CheckpointStorage::open(r, "job-1", 2).unwrap();
        assert_eq!(again.latest().unwrap().unwrap(), latest);
    }

    #[test]
    fn an_aborted_checkpoint_leaves_nothing() {
        let (r, _rt) = super::memory_remote();
        let mut storage = CheckpointStorage::open(r.clone(), "job", 1).unwrap();
        let mut kb = filled(100, 0);
        let mut p = storage.begin(1, 128);
        kb.backend_mut().checkpoint(&mut p).unwrap();
        p.abort().unwrap();
        assert!(objects(r.as_ref()).is_empty());
        {
            let mut p = storage.begin(2, 128);
            kb.backend_mut().checkpoint(&mut p).unwrap();
            // dropped without completing: aborted too
        }
        assert!(objects(r.as_ref()).is_empty());
        assert!(storage.latest().unwrap().is_none());
    }

    /// A metadata create whose answer is lost although it landed (on the last attempt, so the
    /// retry layer cannot see its own object) completes the checkpoint: its files stay, and it
    /// restores. When the outcome cannot be known at all (the store is down for the read back
    /// too), the checkpoint fails but deletes nothing: a visible checkpoint might name its files.
    #[test]
    fn an_ambiguous_metadata_create_never_deletes_a_visible_checkpoint() {
        use statefs_store::{
            FailingRemote, FaultPlan, ObjectStoreRemote, RetryPolicy, RetryingRemote,
        };
        let rt = statefs_store::runtime().unwrap();
        let faults = FaultPlan::default();
        let r: std::sync::Arc<dyn RemoteStore> = std::sync::Arc::new(RetryingRemote::new(
            FailingRemote::new(ObjectStoreRemote::in_memory(rt.clone()), faults.clone()),
            RetryPolicy {
                attempts: 1,
                ..Default::default()
            },
        ));
        let mut storage = CheckpointStorage::open(r.clone(), "job", 3).unwrap();
        let mut kb = filled(200, 7);
        let mut p = storage.begin(1, 128);
        kb.backend_mut().checkpoint(&mut p).unwrap();
        faults.ambiguous_next(1);
        p.complete().unwrap();
        assert_eq!(faults.injected(), 1);
        let latest = storage.latest().unwrap().unwrap();
        let all = KeyGroupRange::all(128);
        let mut restored = Keyed::new(HeapBackend::restore(&storage, &latest, all, ()).unwrap());
        check(&mut restored, 200, 7);

        // Unknown outcome: the create fails, and so does the read back.
        let mut p = storage.begin(2, 128);
        kb.backend_mut().checkpoint(&mut p).unwrap();
        let before = objects(r.as_ref());
        faults.fail_keys_containing(Some("chk-2/_metadata"));
        let err = p.complete().unwrap_err().to_string();
        faults.fail_keys_containing(None);
        assert!(err.contains("unknown"), "{err}");
        let after = objects(r.as_ref());
        assert!(
            before.iter().all(|k| after.contains(k)),
            "nothing of the checkpoint was deleted: {before:?} -> {after:?}"
        );
    }

    /// Checkpoint storage on a `file://` directory whose disk fills up: the checkpoint fails with
    /// an error that names the cause, leaves no file behind (no object, no partial upload), the
    /// previous checkpoint stays the latest and restores, and once space is back the next
    /// checkpoint completes.
    #[test]
    fn a_checkpoint_onto_a_full_disk_fails_cleanly() {
        let small = statefs_store::testing::SmallFs::new(4 << 20);
        let dir = small.path().join("checkpoints");
        std::fs::create_dir(&dir).unwrap();
        let rt = statefs_store::runtime().unwrap();
        let r: std::sync::Arc<dyn RemoteStore> = std::sync::Arc::from(
            statefs_store::RemoteSpec::parse(&format!("file://{}", dir.display()))
                .unwrap()
                .open(&Default::default(), rt)
                .unwrap(),
        );
        let mut storage = CheckpointStorage::open(r.clone(), "job", 2).unwrap();
        let mut p = storage.begin(1, 128);
        filled(500, 1).backend_mut().checkpoint(&mut p).unwrap();
        p.complete().unwrap();
        let before = objects(r.as_ref());
        let filler = small.fill();

        let mut big = filled(50_000, 2);
        let mut p = storage.begin(2, 128);
        let err = big
            .backend_mut()
            .checkpoint(&mut p)
            .map(drop)
            .and_then(|()| p.complete().map(|_| ()))
            .unwrap_err();
        assert!(
            err.to_string().contains("No space left on device"),
            "the error names the cause: {err}"
        );
        assert_eq!(
            objects(r.as_ref()),
            before,
            "nothing of checkpoint 2 is left"
        );
        let on_disk = walk(&dir);
        assert!(
            on_disk.iter().all(|p| !p.contains('#')),
            "no partial upload is left: {on_disk:?}"
        );
        assert_eq!(storage.latest().unwrap().unwrap().id, 1);
        let latest = storage.latest().unwrap().unwrap();
        let all = KeyGroupRange::all(128);
        let mut kb = Keyed::new(HeapBackend::restore(&storage, &latest, all, ()).unwrap());
        check(&mut kb, 500, 1);

        std::fs::remove_file(filler).unwrap();
        let mut p = storage.begin(3, 128);
        big.backend_mut().checkpoint(&mut p).unwrap();
        p.complete().unwrap();
        let latest = storage.latest().unwrap().unwrap();
        let all = KeyGroupRange::all(128);
        let mut kb = Keyed::new(HeapBackend::restore(&storage, &latest, all, ()).unwrap());
        check(&mut kb, 50_000, 2);
    }

    /// Every file under `dir`, as paths relative to it.
    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                    out.push(rel);
                }
            }
        }
        out
    }

    #[test]
    fn missing_or_damaged_checkpoint_files_are_clear_errors() {
        let (r, _rt) = super::memory_remote();
        let mut storage = CheckpointStorage::open(r.clone(), "job", 1).unwrap();
        let mut kb = filled(100, 0);
        let mut p = storage.begin(7, 128);
        kb.backend_mut().checkpoint(&mut p).unwrap();
        p.complete().unwrap();
        let c = storage.load(7).unwrap();
        r.delete(&c.subtasks[0].file).unwrap();
        let err = HeapBackend::restore(&storage, &c, KeyGroupRange::all(128), ()).unwrap_err();
        assert!(
            matches!(err, StateError::Corrupt { .. }) && err.to_string().contains("is missing"),
            "{err}"
        );
        r.put("job/chk-8/_metadata", b"{ not json".to_vec().into())
            .unwrap();
        assert!(
            storage
                .load(8)
                .unwrap_err()
                .to_string()
                .contains("corrupt checkpoint 8")
        );
        let mut hostile = serde_json::to_value(&c).unwrap();
        hostile["id"] = 9.into();
        hostile["subtasks"][0]["file"] = "other-job/taskowned/x".into();
        r.put(
            "job/chk-9/_metadata",
            serde_json::to_vec(&hostile).unwrap().into(),
        )
        .unwrap();
        assert!(
            storage
                .load(9)
                .unwrap_err()
                .to_string()
                .contains("outside the job's directory")
        );
        assert!(CheckpointStorage::open(r, "../escape", 1).is_err());
    }

    #[test]
    fn registry_counts_references_and_offers_only_confirmed_files() {
        let mut reg = SharedStateRegistry::default();
        assert!(
            !reg.reusable("job/shared/a"),
            "nothing is reusable before a checkpoint completes"
        );
        reg.register(1, ["job/shared/a".to_string(), "job/shared/b".to_string()]);
        reg.register(2, ["job/shared/b".to_string(), "job/shared/c".to_string()]);
        assert_eq!(reg.ref_count("job/shared/b"), 2);
        assert_eq!(reg.release(1), vec!["job/shared/a".to_string()]);
        assert!(reg.reusable("job/shared/b"));
        let mut dead = reg.release(2);
        dead.sort();
        assert_eq!(
            dead,
            vec!["job/shared/b".to_string(), "job/shared/c".to_string()]
        );
    }

    #[test]
    fn savepoints_round_trip_and_never_overwrite() {
        let (r, _rt) = super::memory_remote();
        let storage = CheckpointStorage::open(r, "job", 1).unwrap();
        let kb = filled(300, 5);
        storage.savepoint("sp1", kb.backend(), 0).unwrap();
        let err = storage.savepoint("sp1", kb.backend(), 0).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        let mut restored = Keyed::new(HeapBackend::new(
            KeyGroupRange::for_operator(128, 3, 2),
            128,
        ));
        storage
            .restore_savepoint("sp1", restored.backend_mut())
            .unwrap();
        check(&mut restored, 300, 5);
        let mut none = HeapBackend::new(KeyGroupRange::all(128), 128);
        assert!(
            storage
                .restore_savepoint("nope", &mut none)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}

#[test]
fn writers_go_on_while_a_snapshot_is_written() {
    let mut kb: Keyed<u32, HeapBackend> =
        Keyed::new(HeapBackend::new(KeyGroupRange::all(128), 128));
    let v = kb.value_state::<u32>("v", None).unwrap();
    for i in 0..20_000 {
        kb.set_current_key(&i).unwrap();
        v.update(&mut kb, &i).unwrap();
    }
    // Marking the version is all a writer waits for; the snapshot is written on another thread.
    let view = kb.backend().snapshot_view().unwrap();
    let writer = std::thread::spawn(move || snapshot::write(view.as_ref(), 0).unwrap());
    for i in 0..20_000 {
        kb.set_current_key(&i).unwrap();
        v.update(&mut kb, &(i + 1_000_000)).unwrap();
    }
    let bytes = writer.join().unwrap();
    let mut restored: Keyed<u32, HeapBackend> =
        Keyed::new(HeapBackend::new(KeyGroupRange::all(128), 128));
    snapshot::restore(
        restored.backend_mut(),
        &[(&bytes as &dyn snapshot::ByteSource, "snapshot".into())],
    )
    .unwrap();
    let rv = restored.value_state::<u32>("v", None).unwrap();
    for i in (0..20_000).step_by(97) {
        restored.set_current_key(&i).unwrap();
        assert_eq!(
            rv.value(&mut restored).unwrap(),
            Some(i),
            "the snapshot holds the version at the mark"
        );
        kb.set_current_key(&i).unwrap();
        assert_eq!(
            v.value(&mut kb).unwrap(),
            Some(i + 1_000_000),
            "the writes after it are live"
        );
    }
}

/// The prefetch hint at `set_current_key` follows the states a record touched, including state
/// ids past the 64 it tracks, states with TTL (sorted maps, not prefetched), map states, empty
/// tables and a subtask's partial key-group range; none of it changes what is read.
#[test]
fn key_prefetch_is_only_a_hint() {
    let range = KeyGroupRange::for_operator(128, 3, 1);
    let mut kb: Keyed<u64, HeapBackend> = Keyed::new(HeapBackend::new(range, 128));
    let values: Vec<_> = (0..70)
        .map(|i| kb.value_state::<u64>(&format!("v{i}"), None).unwrap())
        .collect();
    let ttl = crate::ttl::TtlConfig::new(std::time::Duration::from_secs(3600));
    let with_ttl = kb.value_state::<u64>("ttl", Some(ttl)).unwrap();
    let map = kb.map_state::<u64, u64>("m", None).unwrap();
    let mine: Vec<u64> = (0..5_000u64)
        .filter(|k| {
            let bytes = postcard::to_allocvec(k).unwrap();
            range.contains(crate::keygroup::key_group_of(&bytes, 128))
        })
        .collect();
    // A key outside the range is refused before any hint.
    let outside = (0..100u64).find(|k| !mine.contains(k)).unwrap();
    assert!(kb.set_current_key(&outside).is_err());
    for (n, k) in mine.iter().enumerate() {
        kb.set_current_key(k).unwrap();
        // A changing mix of states per record, so the tracked set changes from key to key.
        for s in [0, 63, 64, 69, n % 70] {
            values[s].update(&mut kb, &(k * 100 + s as u64)).unwrap();
        }
        with_ttl.update(&mut kb, k).unwrap();
        if n % 2 == 0 {
            map.put(&mut kb, &1, k).unwrap();
        }
    }
    for (n, k) in mine.iter().enumerate().rev() {
        kb.set_current_key(k).unwrap();
        for s in [0, 63, 64, 69, n % 70] {
            assert_eq!(values[s].value(&mut kb).unwrap(), Some(k * 100 + s as u64));
        }
        assert_eq!(with_ttl.value(&mut kb).unwrap(), Some(*k));
        let want = (n % 2 == 0).then_some(*k);
        assert_eq!(map.get(&mut kb, &1).unwrap(), want);
    }
}

#[cfg(feature = "rocksdb")]
mod rocks;
