//! The conformance suite every backend must pass: state semantics, TTL, snapshot/restore, rescaling
//! and the savepoint round trip. A backend's tests call [`run_all`] with a factory that makes an
//! empty backend for a key-group range and max parallelism, and [`checkpoints_restore_and_rescale`]
//! for the [`Checkpointed`] interface.

use std::sync::Arc;
use std::time::Duration;

use crate::StateError;
use crate::backend::StateBackend;
use crate::checkpoint::CheckpointStorage;
use crate::checkpointed::Checkpointed;
use crate::heap::HeapBackend;
use crate::keygroup::KeyGroupRange;
use crate::snapshot;
use crate::states::{Aggregate, Keyed};
use crate::ttl::{ManualClock, TtlConfig, UpdateType, Visibility};

pub trait Factory: Fn(KeyGroupRange, u32) -> Box<dyn StateBackend> {}
impl<F: Fn(KeyGroupRange, u32) -> Box<dyn StateBackend>> Factory for F {}

const MAXP: u32 = 128;

fn keyed(f: &dyn Factory, range: KeyGroupRange) -> Keyed<String, Box<dyn StateBackend>> {
    Keyed::new(f(range, MAXP))
}

pub fn run_all(f: &dyn Factory) {
    value_list_map_semantics(f);
    reducing_and_aggregating(f);
    namespaces_are_separate(f);
    keys_outside_the_range_are_refused(f);
    ttl_semantics(f);
    snapshot_restore_and_rescale(f);
    incompatible_restores_fail(f);
    corrupt_snapshots_fail(f);
    timers_fire_in_order_once(f);
    timers_restore_and_rescale(f);
    timers_snapshot_while_firing(f);
    async_api_matches_sync(f);
}

pub fn value_list_map_semantics(f: &dyn Factory) {
    let mut kb = keyed(f, KeyGroupRange::all(MAXP));
    let v = kb.value_state::<u64>("v", None).unwrap();
    let l = kb.list_state::<String>("l", None).unwrap();
    let m = kb.map_state::<String, i32>("m", None).unwrap();
    assert!(matches!(v.value(&mut kb), Err(StateError::NoCurrentKey)));
    kb.set_current_key(&"a".to_string()).unwrap();
    assert_eq!(v.value(&mut kb).unwrap(), None);
    v.update(&mut kb, &7).unwrap();
    assert_eq!(v.value(&mut kb).unwrap(), Some(7));
    kb.set_current_key(&"b".to_string()).unwrap();
    assert_eq!(v.value(&mut kb).unwrap(), None, "per key");
    l.add(&mut kb, &"x".into()).unwrap();
    l.add_all(&mut kb, &["y".into(), "z".into()]).unwrap();
    assert_eq!(l.get(&mut kb).unwrap(), vec!["x", "y", "z"]);
    l.update(&mut kb, &["q".into()]).unwrap();
    assert_eq!(l.get(&mut kb).unwrap(), vec!["q"]);
    l.update(&mut kb, &[]).unwrap();
    assert!(l.get(&mut kb).unwrap().is_empty());
    assert!(m.is_empty(&mut kb).unwrap());
    m.put_all(
        &mut kb,
        &[("k2".into(), 2), ("k1".into(), 1), ("k3".into(), 3)],
    )
    .unwrap();
    assert_eq!(m.get(&mut kb, &"k2".into()).unwrap(), Some(2));
    assert!(m.contains(&mut kb, &"k3".into()).unwrap());
    assert!(!m.contains(&mut kb, &"k9".into()).unwrap());
    m.remove(&mut kb, &"k3".into()).unwrap();
    let mut keys = m.keys(&mut kb).unwrap();
    keys.sort();
    assert_eq!(keys, vec!["k1", "k2"]);
    let mut values = m.values(&mut kb).unwrap();
    values.sort();
    assert_eq!(values, vec![1, 2]);
    m.clear(&mut kb).unwrap();
    assert!(m.is_empty(&mut kb).unwrap());
    kb.set_current_key(&"a".to_string()).unwrap();
    assert_eq!(v.value(&mut kb).unwrap(), Some(7));
    v.clear(&mut kb).unwrap();
    assert_eq!(v.value(&mut kb).unwrap(), None);
    // Key iteration for tooling.
    kb.set_current_key(&"c".to_string()).unwrap();
    v.update(&mut kb, &1).unwrap();
    kb.set_current_key(&"d".to_string()).unwrap();
    v.update(&mut kb, &2).unwrap();
    let mut keys: Vec<String> = kb.keys("v").unwrap().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, vec!["c", "d"]);
}

struct Avg;
impl Aggregate<u64, (u64, u64), f64> for Avg {
    fn create(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, v: u64, acc: (u64, u64)) -> (u64, u64) {
        (acc.0 + v, acc.1 + 1)
    }
    fn result(&self, acc: &(u64, u64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }
}

pub fn reducing_and_aggregating(f: &dyn Factory) {
    let mut kb = keyed(f, KeyGroupRange::all(MAXP));
    let sum = kb.reducing_state::<u64>("sum", |a, b| a + b, None).unwrap();
    let avg = kb.aggregating_state("avg", Avg, None).unwrap();
    kb.set_current_key(&"k".to_string()).unwrap();
    assert_eq!(sum.get(&mut kb).unwrap(), None);
    assert_eq!(avg.get(&mut kb).unwrap(), None);
    for x in [1u64, 2, 3, 4] {
        sum.add(&mut kb, x).unwrap();
        avg.add(&mut kb, x).unwrap();
    }
    assert_eq!(sum.get(&mut kb).unwrap(), Some(10));
    assert_eq!(avg.get(&mut kb).unwrap(), Some(2.5));
}

pub fn namespaces_are_separate(f: &dyn Factory) {
    let mut kb = keyed(f, KeyGroupRange::all(MAXP));
    let mut w = kb.list_state::<u32>("window", None).unwrap();
    kb.set_current_key(&"k".to_string()).unwrap();
    w.set_namespace(&(0u64, 10u64));
    w.add(&mut kb, &1).unwrap();
    w.set_namespace(&(10u64, 20u64));
    w.add(&mut kb, &2).unwrap();
    assert_eq!(w.get(&mut kb).unwrap(), vec![2]);
    w.clear(&mut kb).unwrap();
    w.set_namespace(&(0u64, 10u64));
    assert_eq!(
        w.get(&mut kb).unwrap(),
        vec![1],
        "clearing one window leaves the other"
    );

    // One record touching a window and default-namespace states, in turns, for two keys: each
    // access lands at its own (key, namespace), whatever the access before it addressed.
    let count = kb.value_state::<u32>("count", None).unwrap();
    let seen = kb.map_state::<u32, u32>("seen", None).unwrap();
    for (i, key) in ["a", "b"].into_iter().enumerate() {
        let i = i as u32;
        kb.set_current_key(&key.to_string()).unwrap();
        w.add(&mut kb, &(100 + i)).unwrap();
        count.update(&mut kb, &(200 + i)).unwrap();
        w.add(&mut kb, &(300 + i)).unwrap();
        seen.put(&mut kb, &7, &(400 + i)).unwrap();
        assert_eq!(w.get(&mut kb).unwrap(), vec![100 + i, 300 + i]);
        assert_eq!(count.value(&mut kb).unwrap(), Some(200 + i));
    }
    for (i, key) in ["a", "b"].into_iter().enumerate() {
        let i = i as u32;
        kb.set_current_key(&key.to_string()).unwrap();
        assert_eq!(seen.get(&mut kb, &7).unwrap(), Some(400 + i));
        assert_eq!(count.value(&mut kb).unwrap(), Some(200 + i));
        assert_eq!(w.get(&mut kb).unwrap(), vec![100 + i, 300 + i]);
    }
    let counts = kb.keys("count").unwrap();
    assert_eq!(counts.len(), 2, "only a's and b's counts");
    assert!(
        counts.iter().all(|(_, ns)| ns.is_empty()),
        "counts in the default namespace: {counts:?}"
    );
}

pub fn keys_outside_the_range_are_refused(f: &dyn Factory) {
    let range = KeyGroupRange::for_operator(MAXP, 4, 1);
    let mut kb = keyed(f, range);
    let mut refused = 0;
    for i in 0..200 {
        match kb.set_current_key(&format!("key{i}")) {
            Ok(()) => {}
            Err(StateError::KeyOutOfRange {
                key_group,
                range: r,
            }) => {
                assert!(!r.contains(key_group));
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        refused > 100,
        "three quarters of the keys belong to other subtasks"
    );
}

pub fn ttl_semantics(f: &dyn Factory) {
    let clock = ManualClock::new(1_000_000);
    let mut kb = keyed(f, KeyGroupRange::all(MAXP)).with_clock(Arc::new(clock.clone()));
    let ttl = TtlConfig::new(Duration::from_secs(10));
    let v = kb.value_state::<u32>("v", Some(ttl)).unwrap();
    let read_refresh = kb
        .value_state::<u32>(
            "r",
            Some(TtlConfig {
                update: UpdateType::OnReadAndWrite,
                ..ttl
            }),
        )
        .unwrap();
    let visible = kb
        .value_state::<u32>(
            "e",
            Some(TtlConfig {
                visibility: Visibility::ReturnExpiredIfNotCleanedUp,
                // Not cleaned up in the background, so the expired value is still there to return.
                cleanup_incremental: 0,
                ..ttl
            }),
        )
        .unwrap();
    let l = kb.list_state::<u32>("l", Some(ttl)).unwrap();
    let m = kb.map_state::<u32, u32>("m", Some(ttl)).unwrap();
    kb.set_current_key(&"k".to_string()).unwrap();
    v.update(&mut kb, &1).unwrap();
    read_refresh.update(&mut kb, &2).unwrap();
    visible.update(&mut kb, &3).unwrap();
    l.add(&mut kb, &1).unwrap();
    m.put(&mut kb, &1, &1).unwrap();
    clock.advance(Duration::from_secs(6));
    l.add(&mut kb, &2).unwrap();
    m.put(&mut kb, &2, &2).unwrap();
    assert_eq!(
        read_refresh.value(&mut kb).unwrap(),
        Some(2),
        "read at 6 s refreshes"
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        v.value(&mut kb).unwrap(),
        None,
        "expired after 10 s, never returned"
    );
    assert_eq!(
        read_refresh.value(&mut kb).unwrap(),
        Some(2),
        "refreshed 5 s ago"
    );
    assert_eq!(
        l.get(&mut kb).unwrap(),
        vec![2],
        "list elements expire one by one"
    );
    assert_eq!(m.entries(&mut kb).unwrap(), vec![(2, 2)], "map entries too");
    assert_eq!(
        visible.value(&mut kb).unwrap(),
        Some(3),
        "returned once, then cleaned up on read"
    );
    assert_eq!(visible.value(&mut kb).unwrap(), None);
    // Incremental cleanup: accesses to one key clean up expired entries of other keys.
    let inc = kb
        .value_state::<u32>(
            "inc",
            Some(TtlConfig {
                cleanup_incremental: 5,
                ..ttl
            }),
        )
        .unwrap();
    for i in 0..20 {
        kb.set_current_key(&format!("old{i}")).unwrap();
        inc.update(&mut kb, &i).unwrap();
    }
    clock.advance(Duration::from_secs(11));
    kb.set_current_key(&"fresh".to_string()).unwrap();
    for _ in 0..10 {
        inc.update(&mut kb, &1).unwrap();
    }
    let inc_id = (0..kb.backend().states().len())
        .find(|i| kb.backend().meta(*i).name == "inc")
        .unwrap();
    assert_eq!(
        kb.backend().entries(inc_id).unwrap().len(),
        1,
        "20 expired entries cleaned by 10 accesses x 5"
    );
    // Full-snapshot cleanup leaves expired entries out.
    let fs = kb
        .value_state::<u32>(
            "fs",
            Some(TtlConfig {
                cleanup_full_snapshot: true,
                ..ttl
            }),
        )
        .unwrap();
    fs.update(&mut kb, &9).unwrap();
    clock.advance(Duration::from_secs(11));
    let bytes = snapshot::write(
        kb.backend().snapshot_view().unwrap().as_ref(),
        clock_now(&clock),
    )
    .unwrap();
    let mut restored = keyed(f, KeyGroupRange::all(MAXP)).with_clock(Arc::new(clock.clone()));
    snapshot::restore(
        restored.backend_mut(),
        &[(&bytes as &dyn snapshot::ByteSource, "snapshot".into())],
    )
    .unwrap();
    let fs2 = restored.value_state::<u32>("fs", Some(ttl)).unwrap();
    let id = (0..restored.backend().states().len())
        .find(|i| restored.backend().meta(*i).name == "fs")
        .unwrap();
    assert!(
        restored.backend().entries(id).unwrap().is_empty(),
        "the expired value is not in the snapshot"
    );
    restored.set_current_key(&"k".to_string()).unwrap();
    assert_eq!(fs2.value(&mut restored).unwrap(), None);
}

fn clock_now(c: &ManualClock) -> u64 {
    use crate::ttl::Clock;
    c.now_ms()
}

/// Writes keys 0..n into a backend over all key groups.
fn fill(f: &dyn Factory, n: u32) -> Keyed<String, Box<dyn StateBackend>> {
    let mut kb = keyed(f, KeyGroupRange::all(MAXP));
    let v = kb.value_state::<u32>("v", None).unwrap();
    let m = kb.map_state::<u32, String>("m", None).unwrap();
    for i in 0..n {
        kb.set_current_key(&format!("key{i}")).unwrap();
        v.update(&mut kb, &i).unwrap();
        m.put(&mut kb, &i, &format!("m{i}")).unwrap();
        m.put(&mut kb, &(i + 1), &format!("m{}", i + 1)).unwrap();
    }
    kb
}

fn verify<B: StateBackend>(kbs: &mut [Keyed<String, B>], n: u32) {
    for kb in kbs.iter_mut() {
        kb.value_state::<u32>("v", None).unwrap();
        kb.map_state::<u32, String>("m", None).unwrap();
    }
    for i in 0..n {
        let key = format!("key{i}");
        let owner = kbs
            .iter_mut()
            .position(|kb| kb.set_current_key(&key).is_ok())
            .expect("some subtask owns every key");
        let kb = &mut kbs[owner];
        let v = kb.value_state::<u32>("v", None).unwrap();
        let m = kb.map_state::<u32, String>("m", None).unwrap();
        assert_eq!(v.value(kb).unwrap(), Some(i), "{key}");
        assert_eq!(m.get(kb, &(i + 1)).unwrap(), Some(format!("m{}", i + 1)));
    }
    let total: usize = kbs.iter().map(|kb| kb.keys("v").unwrap().len()).sum();
    assert_eq!(total, n as usize, "every key exactly once across subtasks");
}

/// Restores `snapshots` into subtasks 0..p (each reads only its key groups from every snapshot).
fn rescale(
    f: &dyn Factory,
    snapshots: &[Vec<u8>],
    p: u32,
) -> Vec<Keyed<String, Box<dyn StateBackend>>> {
    (0..p)
        .map(|i| {
            let mut kb = keyed(f, KeyGroupRange::for_operator(MAXP, p, i));
            let sources: Vec<(&dyn snapshot::ByteSource, String)> = snapshots
                .iter()
                .map(|s| (s as &dyn snapshot::ByteSource, "snapshot".to_string()))
                .collect();
            snapshot::restore(kb.backend_mut(), &sources).unwrap();
            kb
        })
        .collect()
}

pub fn snapshot_restore_and_rescale(f: &dyn Factory) {
    let n = 2_000;
    let mut kb = fill(f, n);
    // The snapshot is a version: writes after it are not in it.
    let view = kb.backend().snapshot_view().unwrap();
    let v = kb.value_state::<u32>("v", None).unwrap();
    kb.set_current_key(&"key0".to_string()).unwrap();
    v.update(&mut kb, &999_999).unwrap();
    let snap = snapshot::write(view.as_ref(), 0).unwrap();
    let one = rescale(f, &[snap], 1);
    let snaps: Vec<Vec<u8>> = one
        .iter()
        .map(|kb| snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap())
        .collect();
    let mut two = rescale(f, &snaps, 2);
    verify(&mut two, n);
    let snaps: Vec<Vec<u8>> = two
        .iter()
        .map(|kb| snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap())
        .collect();
    let mut three = rescale(f, &snaps, 3);
    verify(&mut three, n);
    let snaps: Vec<Vec<u8>> = three
        .iter()
        .map(|kb| snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap())
        .collect();
    let mut back = rescale(f, &snaps, 1);
    verify(&mut back, n);
}

pub fn incompatible_restores_fail(f: &dyn Factory) {
    let kb = fill(f, 10);
    let snap = snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap();
    let restored = || rescale(f, std::slice::from_ref(&snap), 1).pop().unwrap();
    let mut r = restored();
    let err = r
        .list_state::<u32>("v", None)
        .err()
        .expect("value state read as list");
    assert!(err.to_string().contains("it was a Value state"), "{err}");
    let mut r = restored();
    let err = r
        .value_state::<String>("v", None)
        .err()
        .expect("u32 read as String");
    assert!(
        matches!(err, StateError::Migration { .. }) && err.to_string().contains("value serializer"),
        "{err}"
    );
    let mut r = restored();
    let err = r
        .value_state::<u32>("v", Some(TtlConfig::new(Duration::from_secs(1))))
        .err()
        .expect("TTL switched on");
    assert!(err.to_string().contains("TTL"), "{err}");
    // Another max parallelism cannot read the key groups.
    let mut other = Keyed::<String, _>::new(f(KeyGroupRange::all(256), 256));
    let err = snapshot::restore(
        other.backend_mut(),
        &[(&snap as &dyn snapshot::ByteSource, "snapshot".into())],
    )
    .unwrap_err();
    assert!(err.to_string().contains("max parallelism 128"), "{err}");
}

pub fn corrupt_snapshots_fail(f: &dyn Factory) {
    let kb = fill(f, 200);
    let snap = snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap();
    let try_restore = |bytes: &[u8]| -> String {
        let mut t = keyed(f, KeyGroupRange::all(MAXP));
        let bytes = bytes.to_vec();
        snapshot::restore(
            t.backend_mut(),
            &[(&bytes as &dyn snapshot::ByteSource, "snapshot".into())],
        )
        .unwrap_err()
        .to_string()
    };
    assert!(try_restore(&snap[..snap.len() / 2]).contains("corrupt snapshot"));
    assert!(try_restore(&snap[..10]).contains("too short"));
    assert!(try_restore(b"definitely not a snapshot of anything at all").contains("bad magic"));
    let mut flipped = snap.clone();
    flipped[snap.len() / 3] ^= 0x40;
    let msg = try_restore(&flipped);
    assert!(
        msg.contains("checksum mismatch") || msg.contains("corrupt"),
        "{msg}"
    );
}

/// Writes keys `0..n` (a value and a map entry each, the value `i + round`) into `kb`.
fn fill_round<B: StateBackend>(kb: &mut Keyed<String, B>, n: u32, round: u32) {
    let v = kb.value_state::<u32>("v", None).unwrap();
    let m = kb.map_state::<u32, String>("m", None).unwrap();
    for i in 0..n {
        if kb.set_current_key(&format!("key{i}")).is_err() {
            continue;
        }
        v.update(kb, &(i + round)).unwrap();
        m.put(kb, &(i + 1), &format!("m{}", i + 1)).unwrap();
    }
}

/// The value of `key` in state `x` of whichever of `kbs` owns it.
fn value_of<B: StateBackend>(kbs: &mut [Keyed<String, B>], key: &str) -> Option<u32> {
    let owner = kbs
        .iter_mut()
        .position(|kb| kb.set_current_key(&key.to_string()).is_ok())
        .expect("some subtask owns every key");
    let kb = &mut kbs[owner];
    let x = kb.value_state::<u32>("x", None).unwrap();
    x.value(kb).unwrap()
}

/// Checkpoints `kbs` (one part each) as checkpoint `id`, completing it.
fn checkpoint_all<B: Checkpointed>(
    storage: &mut CheckpointStorage,
    kbs: &mut [Keyed<String, B>],
    id: u64,
) {
    let mut p = storage.begin(id, MAXP);
    for kb in kbs.iter_mut() {
        kb.backend_mut().checkpoint(&mut p).unwrap();
    }
    p.complete().unwrap();
}

/// Restores checkpoint `id` onto `p` subtasks, the `i`th at `home(&format!("{name}-{i}"))`.
fn restore_all<B: Checkpointed>(
    storage: &CheckpointStorage,
    id: u64,
    p: u32,
    name: &str,
    home: &dyn Fn(&str) -> B::Home,
) -> Vec<Keyed<String, B>> {
    let c = storage.load(id).unwrap();
    (0..p)
        .map(|i| {
            let range = KeyGroupRange::for_operator(MAXP, p, i);
            let b = B::restore(storage, &c, range, home(&format!("{name}-{i}"))).unwrap();
            Keyed::new(b)
        })
        .collect()
}

/// The [`Checkpointed`] interface: a checkpoint is a version (writes after it are not in it, an
/// older one still restores its own values), incremental checkpoints of one backend restore, and
/// state rescales through checkpoints 1 → 2 → 3 → 1 subtasks with every key exactly once. A
/// checkpoint written by another kind of backend is refused with an error that points to
/// savepoints. `open(name, range)` makes an empty backend; `home(name)` says where a restored one
/// lives; names are unique within one call. `storage` must retain at least 4 checkpoints.
pub fn checkpoints_restore_and_rescale<B: Checkpointed>(
    storage: &mut CheckpointStorage,
    open: &dyn Fn(&str, KeyGroupRange) -> B,
    home: &dyn Fn(&str) -> B::Home,
) {
    let n = 2_000;
    let mut one = vec![Keyed::new(open("first", KeyGroupRange::all(MAXP)))];
    let kind = one[0].backend().name();
    fill_round(&mut one[0], n, 0);
    checkpoint_all(storage, &mut one, 1);
    // The same backend's second checkpoint (incremental where the backend is), with a write
    // before it and one after it.
    let x = one[0].value_state::<u32>("x", None).unwrap();
    one[0].set_current_key(&"key0".to_string()).unwrap();
    x.update(&mut one[0], &999_999).unwrap();
    checkpoint_all(storage, &mut one, 2);
    one[0].set_current_key(&"key1".to_string()).unwrap();
    x.update(&mut one[0], &777).unwrap();
    drop(one);

    let mut old = restore_all::<B>(storage, 1, 1, "from-1", home);
    assert_eq!(
        value_of(&mut old, "key0"),
        None,
        "checkpoint 1 is a version"
    );
    verify(&mut old, n);
    drop(old);

    let mut two = restore_all::<B>(storage, 2, 2, "two", home);
    assert_eq!(value_of(&mut two, "key0"), Some(999_999));
    assert_eq!(
        value_of(&mut two, "key1"),
        None,
        "a write after the checkpoint"
    );
    verify(&mut two, n);
    checkpoint_all(storage, &mut two, 3);
    drop(two);

    let mut three = restore_all::<B>(storage, 3, 3, "three", home);
    verify(&mut three, n);
    assert_eq!(value_of(&mut three, "key0"), Some(999_999));
    checkpoint_all(storage, &mut three, 4);
    drop(three);

    let mut back = restore_all::<B>(storage, 4, 1, "back", home);
    verify(&mut back, n);
    assert_eq!(value_of(&mut back, "key0"), Some(999_999));
    drop(back);

    if kind != "heap" {
        let mut heap = Keyed::new(HeapBackend::new(KeyGroupRange::all(MAXP), MAXP));
        fill_round(&mut heap, 10, 0);
        checkpoint_all(storage, std::slice::from_mut(&mut heap), 5);
        let c = storage.load(5).unwrap();
        let err = B::restore(storage, &c, KeyGroupRange::all(MAXP), home("other-kind"))
            .err()
            .expect("another backend's checkpoint is refused")
            .to_string();
        assert!(err.contains("savepoint"), "{err}");
    }
}

/// Timers: deduplicated per (key, namespace, timestamp); a watermark fires the due ones in
/// timestamp order with their key current, never twice, and timers registered while firing fire
/// in the same advance when due; deleted timers never fire; processing time is separate.
pub fn timers_fire_in_order_once(f: &dyn Factory) {
    use crate::timers::{TimeDomain, TimerService};
    let mut kb = keyed(f, KeyGroupRange::all(MAXP));
    let mark = kb.value_state::<String>("mark", None).unwrap();
    let mut timers: TimerService<String> = TimerService::new(&mut kb, "op").unwrap();
    for i in 0..100i64 {
        let key = format!("k{i}");
        kb.set_current_key(&key).unwrap();
        mark.update(&mut kb, &key).unwrap();
        let ns = "w".to_string();
        // Backwards, twice each: order comes from the timestamps, not from registration.
        let ts = 1000 - i * 10;
        timers
            .register(&mut kb, TimeDomain::EventTime, &ns, ts)
            .unwrap();
        timers
            .register(&mut kb, TimeDomain::EventTime, &ns, ts)
            .unwrap();
        timers
            .register(&mut kb, TimeDomain::ProcessingTime, &ns, ts)
            .unwrap();
        if i % 10 == 0 {
            timers
                .register(&mut kb, TimeDomain::EventTime, &ns, ts + 1)
                .unwrap();
            timers
                .delete(&mut kb, TimeDomain::EventTime, &ns, ts + 1)
                .unwrap();
        }
    }
    assert_eq!(timers.len(&kb, TimeDomain::EventTime).unwrap(), 100);
    let mut fired = Vec::new();
    let n = timers
        .advance_watermark(&mut kb, 500, |kb, service, t| {
            // The timer's key is current: the value state answers for it.
            let mark = kb.value_state::<String>("mark", None)?;
            assert_eq!(mark.value(kb)?.as_deref(), Some(t.key.as_str()));
            if t.timestamp == 100 {
                // A timer registered while firing, due within this advance.
                service.register(kb, TimeDomain::EventTime, &"late".to_string(), 450)?;
            }
            fired.push((t.timestamp, t.namespace));
            Ok(())
        })
        .unwrap();
    assert_eq!(n, fired.len());
    let times: Vec<i64> = fired.iter().map(|(t, _)| *t).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "timestamp order");
    assert_eq!(times.first(), Some(&10));
    assert!(fired.contains(&(450, "late".to_string())));
    assert_eq!(
        fired.len(),
        50 + 1,
        "each timer once, the deleted ones never"
    );
    assert_eq!(timers.current_watermark(), 500);
    // A second advance to the same watermark fires nothing; processing time is untouched.
    assert_eq!(
        timers
            .advance_watermark(&mut kb, 500, |_, _, _| Ok(()))
            .unwrap(),
        0
    );
    assert_eq!(timers.len(&kb, TimeDomain::ProcessingTime).unwrap(), 100);
    let p = timers
        .advance_processing_time(&mut kb, 2000, |_, _, _| Ok(()))
        .unwrap();
    assert_eq!(p, 100);
    assert_eq!(timers.next_timestamp(TimeDomain::EventTime), Some(510));
}

/// Timers are state: a snapshot holds them, and restores at another parallelism put each timer
/// on the subtask that owns its key, where it fires once.
pub fn timers_restore_and_rescale(f: &dyn Factory) {
    use crate::timers::{TimeDomain, TimerService};
    let n = 500i64;
    let mut kb = keyed(f, KeyGroupRange::all(MAXP));
    let mut timers: TimerService<u32> = TimerService::new(&mut kb, "window").unwrap();
    for i in 0..n {
        kb.set_current_key(&format!("key{i}")).unwrap();
        timers
            .register(&mut kb, TimeDomain::EventTime, &(i as u32 % 3), i)
            .unwrap();
    }
    // Some fire before the snapshot: they are gone from it.
    timers
        .advance_watermark(&mut kb, 99, |_, _, _| Ok(()))
        .unwrap();
    let snap = snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap();
    for p in [1u32, 2, 3] {
        let mut subtasks = rescale(f, std::slice::from_ref(&snap), p);
        let mut seen = std::collections::BTreeMap::new();
        for kb in subtasks.iter_mut() {
            let mut t: TimerService<u32> = TimerService::new(kb, "window").unwrap();
            t.advance_watermark(kb, i64::MAX, |kb, _, timer| {
                // Restored on the subtask that owns the key.
                kb.set_current_key(&timer.key)?;
                assert_eq!(timer.namespace, timer.timestamp as u32 % 3);
                assert!(
                    seen.insert(timer.timestamp, timer.key).is_none(),
                    "fired twice"
                );
                Ok(())
            })
            .unwrap();
        }
        let want: Vec<i64> = (100..n).collect();
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            want,
            "parallelism {p}"
        );
    }
}

/// A snapshot taken while timers fire (from inside `on_timer`) holds exactly the timers not fired
/// yet: not the one firing, nor those fired before it; with the registrations and deletions made
/// while firing. Restored at parallelism 1 and 2, the rest fire once each, in order. Where the
/// backend keeps only the heads of its timers in memory, that memory stays within key groups x its
/// cache size.
pub fn timers_snapshot_while_firing(f: &dyn Factory) {
    use crate::timers::{TimeDomain, TimerService};
    let mut kb = keyed(f, KeyGroupRange::all(MAXP));
    let mut timers: TimerService<u32> = TimerService::new(&mut kb, "fire").unwrap();
    // 40 keys with 25 timers each: many per key group, so heads fill and reload.
    for i in 0..1000i64 {
        kb.set_current_key(&format!("key{}", i % 40)).unwrap();
        timers
            .register(&mut kb, TimeDomain::EventTime, &0, i)
            .unwrap();
    }
    if let Some(cache) = kb.backend().timer_cache_size() {
        assert!(timers.in_memory() <= MAXP as usize * cache);
    }
    let mut snap = None;
    let mut fired = Vec::new();
    timers
        .advance_watermark(&mut kb, 699, |kb, service, t| {
            fired.push(t.timestamp);
            if t.timestamp == 300 {
                // Registered while firing: one due in this advance, one later; and one deleted.
                service.register(kb, TimeDomain::EventTime, &1, 500)?;
                service.register(kb, TimeDomain::EventTime, &1, 5000)?;
                let firing = t.key.clone();
                kb.set_current_key(&format!("key{}", 600 % 40))?;
                service.delete(kb, TimeDomain::EventTime, &0, 600)?;
                kb.set_current_key(&firing)?;
                snap = Some(snapshot::write(kb.backend().snapshot_view()?.as_ref(), 0)?);
            }
            Ok(())
        })
        .unwrap();
    let mut want: Vec<i64> = (0..700).filter(|t| *t != 600).collect();
    want.push(500);
    want.sort();
    assert_eq!(fired, want, "in order, once, the deleted one never");
    let snap = snap.expect("a snapshot while firing");
    // After the snapshot: 301..=999 without 600, plus (key of 300, ns 1) at 500 and 5000.
    let mut rest: Vec<(i64, u32)> = (301..1000).filter(|t| *t != 600).map(|t| (t, 0)).collect();
    rest.extend([(500, 1), (5000, 1)]);
    rest.sort();
    for p in [1u32, 2] {
        let mut got = Vec::new();
        let mut held = 0;
        for kb in rescale(f, std::slice::from_ref(&snap), p).iter_mut() {
            let mut t: TimerService<u32> = TimerService::new(kb, "fire").unwrap();
            held += t.len(kb, TimeDomain::EventTime).unwrap();
            let mut last = i64::MIN;
            t.advance_watermark(kb, i64::MAX, |_, _, timer| {
                assert!(timer.timestamp >= last, "in order on each subtask");
                last = timer.timestamp;
                got.push((timer.timestamp, timer.namespace));
                Ok(())
            })
            .unwrap();
            assert!(t.is_empty());
        }
        assert_eq!(
            held,
            rest.len(),
            "parallelism {p}: timers held after the restore"
        );
        got.sort();
        assert_eq!(got, rest, "parallelism {p}");
    }
}

/// Operator state and timers in job checkpoints beside keyed state: an operator's instances add
/// their parts, and a restore at another parallelism gives each instance what Flink would (split
/// lists in consecutive parts, the first ones one longer; union lists whole; broadcast state to
/// all), with the timers on the subtask owning their keys. A checkpoint missing an instance's
/// operator state is refused and leaves no file behind. Uses its own job (`operators`) in
/// `storage`'s store; `open`/`home` as [`checkpoints_restore_and_rescale`].
pub fn operator_state_in_checkpoints<B: Checkpointed>(
    storage: &CheckpointStorage,
    open: &dyn Fn(&str, KeyGroupRange) -> B,
    home: &dyn Fn(&str) -> B::Home,
) {
    use crate::operator_state::OperatorState;
    use crate::timers::{TimeDomain, TimerService};
    let mut storage = CheckpointStorage::open(storage.remote().clone(), "operators", 5).unwrap();

    // One instance: 10 offsets (split), 3 names (union), 2 rules (broadcast); 30 timers.
    let mut source = OperatorState::new();
    let offsets = source.list_state::<u32>("offsets").unwrap();
    let names = source.union_list_state::<String>("names").unwrap();
    let rules = source.broadcast_state::<String, u32>("rules");
    offsets.update(&mut source, &(0..10).collect::<Vec<_>>());
    names.update(&mut source, &["a".into(), "b".into(), "c".into()]);
    rules.put(&mut source, &"max".into(), &9);
    rules.put(&mut source, &"min".into(), &1);
    let mut kb = Keyed::new(open("op-first", KeyGroupRange::all(MAXP)));
    let mut timers: TimerService<u8> = TimerService::new(&mut kb, "t").unwrap();
    for i in 0..30i64 {
        kb.set_current_key(&format!("key{i}")).unwrap();
        timers
            .register(&mut kb, TimeDomain::EventTime, &0, i)
            .unwrap();
    }
    let mut p = storage.begin(1, MAXP);
    kb.backend_mut().checkpoint(&mut p).unwrap();
    p.add_operator_state("source", 0, 1, &source).unwrap();
    p.complete().unwrap();
    drop(kb);

    // At parallelism 3: offsets 0..4, 4..7, 7..10 (Flink's round-robin repartitioner).
    let c = storage.load(1).unwrap();
    let mut three = Vec::new();
    let mut fired = Vec::new();
    for i in 0..3u32 {
        let mut st = storage.restore_operator_state(&c, "source", i, 3).unwrap();
        let want: Vec<u32> = [0..4, 4..7, 7..10][i as usize].clone().collect();
        assert_eq!(offsets.get(&mut st).unwrap(), want, "instance {i} of 3");
        assert_eq!(names.get(&mut st).unwrap(), ["a", "b", "c"]);
        assert_eq!(rules.get(&mut st, &"max".into()).unwrap(), Some(9));
        assert_eq!(rules.entries(&mut st).unwrap().len(), 2);
        offsets.add(&mut st, &(100 + i));
        three.push(st);
        let range = KeyGroupRange::for_operator(MAXP, 3, i);
        let b = B::restore(&storage, &c, range, home(&format!("op-three-{i}"))).unwrap();
        let mut kb: Keyed<String, B> = Keyed::new(b);
        let mut t: TimerService<u8> = TimerService::new(&mut kb, "t").unwrap();
        t.advance_watermark(&mut kb, i64::MAX, |kb, _, timer| {
            assert!(
                range.contains(kb.current_key_bytes()?.1),
                "fired where its key lives"
            );
            fired.push(timer.timestamp);
            Ok(())
        })
        .unwrap();
    }
    fired.sort();
    assert_eq!(fired, (0..30).collect::<Vec<_>>(), "every timer once");

    // Checkpoint 2 from the three instances, restored at 2: the concatenation in instance order
    // [0 1 2 3 100 4 5 6 101 7 8 9 102] cut into 7 + 6.
    let mut p = storage.begin(2, MAXP);
    for (i, st) in three.iter().enumerate() {
        p.add_operator_state("source", i as u32, 3, st).unwrap();
    }
    assert!(
        p.add_operator_state("source", 1, 3, &three[1]).is_err(),
        "an instance twice"
    );
    p.complete().unwrap();
    let c = storage.load(2).unwrap();
    let all = [0, 1, 2, 3, 100, 4, 5, 6, 101, 7, 8, 9, 102];
    for (i, want) in [&all[..7], &all[7..]].into_iter().enumerate() {
        let mut st = storage
            .restore_operator_state(&c, "source", i as u32, 2)
            .unwrap();
        assert_eq!(offsets.get(&mut st).unwrap(), want);
        assert_eq!(
            names.get(&mut st).unwrap().len(),
            9,
            "union of three copies"
        );
    }
    // An operator without state in the checkpoint starts empty; a bad instance is refused.
    let mut st = storage.restore_operator_state(&c, "sink", 0, 1).unwrap();
    assert!(
        st.list_state::<u32>("x")
            .unwrap()
            .get(&mut st)
            .unwrap()
            .is_empty()
    );
    assert!(storage.restore_operator_state(&c, "source", 2, 2).is_err());

    // A checkpoint missing an instance's part is refused; what it uploaded is deleted.
    let before = storage.remote().list("operators/").unwrap().len();
    let mut p = storage.begin(3, MAXP);
    p.add_operator_state("source", 0, 3, &three[0]).unwrap();
    p.add_operator_state("source", 2, 3, &three[2]).unwrap();
    let err = p.complete().unwrap_err().to_string();
    assert!(err.contains("instance(s) [1]"), "{err}");
    assert_eq!(storage.remote().list("operators/").unwrap().len(), before);
    assert_eq!(storage.completed_ids().unwrap(), vec![1, 2]);
}

/// The async State API on this backend: 600 records over 20 keys, each reading and writing a
/// value, a list, a map entry and a reducing state, run through [`crate::asyncstate::AsyncKeyed`]
/// with small batches and a small in-flight limit, then through the sync API on a fresh backend:
/// every record sees, per key, what the sync run saw, and both end in the same state. A checkpoint
/// after a drain holds whole records only: the snapshot restores to the sync run's state.
pub fn async_api_matches_sync(f: &dyn Factory) {
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::asyncstate::{AsyncKeyed, AsyncOptions};
    let records: Vec<(String, u32)> = (0..600u32)
        .map(|i| (format!("k{}", (i * 7) % 20), i))
        .collect();
    let opts = AsyncOptions {
        in_flight_records_limit: 50,
        buffer_size: 16,
        ..Default::default()
    };
    let mut ctl = AsyncKeyed::new(keyed(f, KeyGroupRange::all(MAXP)), opts);
    let v = ctl.value_state::<u32>("v", None).unwrap();
    let l = ctl.list_state::<u32>("l", None).unwrap();
    let m = ctl.map_state::<u32, u32>("m", None).unwrap();
    let r = ctl.reducing_state::<u64>("r", |a, b| a + b, None).unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    for (k, i) in &records {
        let (v, l, m, r, seen, i) = (v.clone(), l.clone(), m.clone(), r.clone(), seen.clone(), *i);
        let key = k.clone();
        ctl.process(k, move |ctx| async move {
            let before = v.value(&ctx).await?;
            let had = m.contains(&ctx, i % 3).await?;
            v.update(&ctx, i).await?;
            l.add(&ctx, i).await?;
            m.put(&ctx, i % 3, i).await?;
            r.add(&ctx, i as u64).await?;
            let sum = r.get(&ctx).await?;
            seen.borrow_mut().push((key, before, had, sum));
            Ok(())
        })
        .unwrap();
        assert!(ctl.in_flight() <= 50);
    }
    let kb = ctl.keyed_mut().unwrap();
    let snap = snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap();

    let mut sync = keyed(f, KeyGroupRange::all(MAXP));
    let (sv, sl) = (
        sync.value_state::<u32>("v", None).unwrap(),
        sync.list_state::<u32>("l", None).unwrap(),
    );
    let sm = sync.map_state::<u32, u32>("m", None).unwrap();
    let sr = sync.reducing_state::<u64>("r", |a, b| a + b, None).unwrap();
    let mut want = Vec::new();
    for (k, i) in &records {
        sync.set_current_key(k).unwrap();
        let before = sv.value(&mut sync).unwrap();
        let had = sm.contains(&mut sync, &(i % 3)).unwrap();
        sv.update(&mut sync, i).unwrap();
        sl.add(&mut sync, i).unwrap();
        sm.put(&mut sync, &(i % 3), i).unwrap();
        sr.add(&mut sync, *i as u64).unwrap();
        want.push((k.clone(), before, had, sr.get(&mut sync).unwrap()));
    }
    let seen = seen.borrow();
    assert_eq!(seen.len(), records.len());
    for key in 0..20 {
        let key = format!("k{key}");
        let per_key = |v: &[(String, Option<u32>, bool, Option<u64>)]| -> Vec<_> {
            v.iter().filter(|r| r.0 == key).cloned().collect()
        };
        assert_eq!(per_key(&seen), per_key(&want), "{key}");
    }
    let mut restored = rescale(f, std::slice::from_ref(&snap), 1).remove(0);
    for key in 0..20 {
        let key = format!("k{key}");
        for kb in [&mut restored, &mut sync] {
            kb.set_current_key(&key).unwrap();
        }
        let (rv, rl) = (
            restored.value_state::<u32>("v", None).unwrap(),
            restored.list_state::<u32>("l", None).unwrap(),
        );
        let rm = restored.map_state::<u32, u32>("m", None).unwrap();
        assert_eq!(
            rv.value(&mut restored).unwrap(),
            sv.value(&mut sync).unwrap()
        );
        assert_eq!(rl.get(&mut restored).unwrap(), sl.get(&mut sync).unwrap());
        assert_eq!(
            rm.entries(&mut restored).unwrap(),
            sm.entries(&mut sync).unwrap()
        );
    }
}
