use std::cell::RefCell;
use std::rc::Rc;

use proptest::prelude::*;

use super::*;
use crate::keygroup::KeyGroupRange;
use crate::states::Keyed;
use crate::{HeapBackend, StateError};

fn heap() -> Keyed<u32, HeapBackend> {
    Keyed::new(HeapBackend::new(KeyGroupRange::all(16), 16))
}

fn small_batches() -> AsyncOptions {
    AsyncOptions {
        in_flight_records_limit: 7,
        buffer_size: 3,
        ..Default::default()
    }
}

/// What a record saw: its key, the count it set, the list's length before its element.
type Seen = (u32, u64, usize);

/// A record stream: (key, value), each record adds its value to a list of its key, counts it, and
/// logs (key, the count it saw) in the order records ran.
fn run_counts<B: StateBackend + 'static>(
    kb: Keyed<u32, B>,
    opts: AsyncOptions,
    records: &[(u32, u32)],
) -> (Vec<Seen>, Keyed<u32, B>) {
    let limit = opts.in_flight_records_limit;
    let mut ctl = AsyncKeyed::new(kb, opts);
    let count = ctl.value_state::<u64>("count", None).unwrap();
    let list = ctl.list_state::<u32>("list", None).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    for &(k, v) in records {
        let (count, list, log) = (count.clone(), list.clone(), log.clone());
        ctl.process(&k, move |ctx| async move {
            let n = count.value(&ctx).await?.unwrap_or(0);
            // A read and two writes issued before any is awaited: they run in issue order, so
            // the read sees the list without this record's element.
            let before = list.get(&ctx);
            let a = count.update(&ctx, n + 1);
            let b = list.add(&ctx, v);
            let before = before.await?.len();
            a.await?;
            b.await?;
            log.borrow_mut().push((k, n + 1, before));
            Ok(())
        })
        .unwrap();
        assert!(ctl.in_flight() <= limit);
    }
    let kb = ctl.into_keyed().unwrap();
    let log = log.borrow().clone();
    (log, kb)
}

/// What the sync API gives for the same stream, record after record.
fn sync_counts<B: StateBackend>(kb: &mut Keyed<u32, B>, records: &[(u32, u32)]) -> Vec<Seen> {
    let count = kb.value_state::<u64>("count", None).unwrap();
    let list = kb.list_state::<u32>("list", None).unwrap();
    records
        .iter()
        .map(|&(k, v)| {
            kb.set_current_key(&k).unwrap();
            let n = count.value(kb).unwrap().unwrap_or(0) + 1;
            let before = list.get(kb).unwrap().len();
            count.update(kb, &n).unwrap();
            list.add(kb, &v).unwrap();
            (k, n, before)
        })
        .collect()
}

fn state_of<B: StateBackend>(kb: &mut Keyed<u32, B>, keys: u32) -> Vec<(Option<u64>, Vec<u32>)> {
    let count = kb.value_state::<u64>("count", None).unwrap();
    let list = kb.list_state::<u32>("list", None).unwrap();
    (0..keys)
        .map(|k| {
            kb.set_current_key(&k).unwrap();
            (count.value(kb).unwrap(), list.get(kb).unwrap())
        })
        .collect()
}

/// Per key, the async run saw the counts 1, 2, 3... in arrival order, and ends in the sync
/// API's state; records of different keys may interleave.
fn check_matches_sync<B: StateBackend + 'static>(
    fresh: impl Fn() -> Keyed<u32, B>,
    opts: AsyncOptions,
    records: &[(u32, u32)],
) {
    let (log, mut kb) = run_counts(fresh(), opts, records);
    let mut sync = fresh();
    let want = sync_counts(&mut sync, records);
    for key in 0..8 {
        let got: Vec<_> = log.iter().filter(|(k, _, _)| *k == key).collect();
        let exp: Vec<_> = want.iter().filter(|(k, _, _)| *k == key).collect();
        assert_eq!(got, exp, "key {key}: per-key order");
    }
    assert_eq!(log.len(), records.len(), "every record ran once");
    assert_eq!(state_of(&mut kb, 8), state_of(&mut sync, 8));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random streams over the heap: per-key order, and the sync API's results.
    #[test]
    fn heap_async_matches_sync(records in prop::collection::vec((0u32..8, any::<u32>()), 0..200)) {
        check_matches_sync(heap, small_batches(), &records);
    }

    /// The same over RocksDB, whose requests are batched behind preloads that finish in any
    /// order relative to new records arriving.
    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_async_matches_sync(
        records in prop::collection::vec((0u32..8, any::<u32>()), 0..120),
        buffer in 1usize..6,
        limit in 1usize..10,
    ) {
        let fresh = || Keyed::new(crate::RocksBackend::temporary(KeyGroupRange::all(16), 16).unwrap());
        let opts = AsyncOptions { in_flight_records_limit: limit, buffer_size: buffer, ..Default::default() };
        check_matches_sync(fresh, opts, &records);
    }
}

#[test]
fn every_state_kind_through_the_async_api() {
    let mut ctl = AsyncKeyed::new(heap(), small_batches());
    let m = ctl.map_state::<String, i32>("m", None).unwrap();
    let r = ctl
        .reducing_state::<u64>("sum", |a, b| a + b, None)
        .unwrap();
    let v = ctl.value_state::<String>("v", None).unwrap();
    let windowed = v.in_namespace(&7u64);
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    let (m2, r2, v2, w2) = (m.clone(), r.clone(), v.clone(), windowed.clone());
    ctl.process(&1, move |ctx| async move {
        m2.put_all(&ctx, vec![("b".into(), 2), ("a".into(), 1)])
            .await?;
        m2.put(&ctx, "c".into(), 3).await?;
        m2.remove(&ctx, "b".into()).await?;
        r2.add(&ctx, 5).await?;
        r2.add(&ctx, 7).await?;
        v2.update(&ctx, "default".into()).await?;
        w2.update(&ctx, "window 7".into()).await?;
        let entries = m2.entries(&ctx).await?;
        let has_b = m2.contains(&ctx, "b".into()).await?;
        let a = m2.get(&ctx, "a".into()).await?;
        let sum = r2.get(&ctx).await?;
        let (d, w) = (v2.value(&ctx).await?, w2.value(&ctx).await?);
        o.borrow_mut()
            .push(format!("{entries:?} {has_b} {a:?} {sum:?} {d:?} {w:?}"));
        w2.clear(&ctx).await?;
        let cleared = w2.value(&ctx).await?;
        o.borrow_mut().push(format!("{cleared:?}"));
        Ok(())
    })
    .unwrap();
    ctl.drain().unwrap();
    assert_eq!(
        *out.borrow(),
        [
            r#"[("a", 1), ("c", 3)] false Some(1) Some(12) Some("default") Some("window 7")"#,
            "None"
        ]
    );
}

#[test]
fn a_failed_record_stops_the_controller_with_its_error() {
    let mut ctl = AsyncKeyed::new(heap(), small_batches());
    let v = ctl.value_state::<u32>("v", None).unwrap();
    let v2 = v.clone();
    // Reported by the call during which the record failed (here at once: the heap runs requests
    // as they come) or by the next.
    let err = ctl
        .process(&1, move |ctx| async move {
            v2.value(&ctx).await?;
            Err(StateError::Invalid("the record's own error".into()))
        })
        .and_then(|_| ctl.drain())
        .unwrap_err()
        .to_string();
    assert!(err.contains("the record's own error"), "{err}");
    let later = ctl
        .process(&2, |_| async { Ok(()) })
        .unwrap_err()
        .to_string();
    assert!(later.contains("stopped"), "{later}");
}

#[test]
fn a_body_awaiting_something_else_is_an_error() {
    let mut ctl = AsyncKeyed::new(heap(), small_batches());
    ctl.process(&1, |_| async {
        std::future::pending::<()>().await;
        Ok(())
    })
    .unwrap_err();
}

#[test]
fn options_from_flink_keys() {
    let o = AsyncOptions::from_pairs(&[
        ("execution.async-state.in-flight-records-limit", "100"),
        ("execution.async-state.buffer-size", "10"),
        ("execution.async-state.buffer-timeout", "5 ms"),
        ("other.key", "x"),
    ])
    .unwrap();
    assert_eq!(
        (o.in_flight_records_limit, o.buffer_size, o.buffer_timeout),
        (100, 10, std::time::Duration::from_millis(5))
    );
    let err = AsyncOptions::from_pairs(&[("execution.async-state.buffer-size", "0")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("execution.async-state.buffer-size"), "{err}");
}

/// A window count through the async API with event-time timers: the records before a watermark
/// all count before the window's timer fires, and the timer's clear is seen by the records after.
#[cfg(feature = "rocksdb")]
#[test]
fn timers_fire_in_order_with_async_records() {
    use crate::timers::{TimeDomain, TimerService};
    let kb = Keyed::new(crate::RocksBackend::temporary(KeyGroupRange::all(16), 16).unwrap());
    let mut ctl = AsyncKeyed::new(kb, small_batches());
    let count = ctl.value_state::<u64>("count", None).unwrap();
    let mut timers: TimerService<()> = TimerService::new(ctl.keyed_mut().unwrap(), "w").unwrap();
    let fired = Rc::new(RefCell::new(Vec::new()));
    for round in 0..3i64 {
        for i in 0..40u32 {
            let count = count.clone();
            ctl.process(&(i % 4), move |ctx| async move {
                let n = count.value(&ctx).await?.unwrap_or(0);
                count.update(&ctx, n + 1).await
            })
            .unwrap();
        }
        // The window's timer for every key, registered through the sync API.
        let kb = ctl.keyed_mut().unwrap();
        for k in 0..4u32 {
            kb.set_current_key(&k).unwrap();
            timers
                .register(kb, TimeDomain::EventTime, &(), round * 100 + 99)
                .unwrap();
        }
        let f = fired.clone();
        let sync_count = ctl
            .keyed_mut()
            .unwrap()
            .value_state::<u64>("count", None)
            .unwrap();
        ctl.advance_watermark(&mut timers, round * 100 + 99, |kb, _, t| {
            f.borrow_mut().push((t.key, sync_count.value(kb)?));
            sync_count.clear(kb)
        })
        .unwrap();
    }
    let fired = fired.borrow();
    assert_eq!(fired.len(), 12);
    assert!(
        fired.iter().all(|(_, n)| *n == Some(10)),
        "each window saw exactly its 10 records: {fired:?}"
    );
}

/// A heap backend whose preloads report their entries loaded in a scrambled order, on another
/// thread, some never (their part just ends): requests become runnable in any order, which the
/// controller must turn back into each record's issue order.
struct Scrambled {
    inner: HeapBackend,
    seed: std::cell::Cell<u64>,
}

impl StateBackend for Scrambled {
    fn name(&self) -> &'static str {
        "heap"
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.inner.key_group_range()
    }
    fn max_parallelism(&self) -> u32 {
        self.inner.max_parallelism()
    }
    fn register(&mut self, meta: crate::StateMeta) -> StateResult<crate::backend::StateId> {
        self.inner.register(meta)
    }
    fn meta(&self, id: crate::backend::StateId) -> &crate::StateMeta {
        self.inner.meta(id)
    }
    fn states(&self) -> Vec<crate::StateMeta> {
        self.inner.states()
    }
    fn get(&self, s: usize, kg: u32, ck: &[u8]) -> StateResult<Option<Vec<u8>>> {
        self.inner.get(s, kg, ck)
    }
    fn put(&mut self, s: usize, kg: u32, ck: &[u8], v: &[u8]) -> StateResult<()> {
        self.inner.put(s, kg, ck, v)
    }
    fn delete(&mut self, s: usize, kg: u32, ck: &[u8]) -> StateResult<()> {
        self.inner.delete(s, kg, ck)
    }
    fn scan_prefix(&self, s: usize, kg: u32, p: &[u8]) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan_prefix(s, kg, p)
    }
    fn delete_prefix(&mut self, s: usize, kg: u32, p: &[u8]) -> StateResult<()> {
        self.inner.delete_prefix(s, kg, p)
    }
    fn scan_after(
        &self,
        s: usize,
        kg: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan_after(s, kg, after, limit)
    }
    fn entries(&self, s: usize) -> StateResult<Vec<crate::backend::Entry>> {
        self.inner.entries(s)
    }
    fn snapshot_view(&self) -> StateResult<Box<dyn crate::backend::SnapshotView>> {
        self.inner.snapshot_view()
    }
    fn load(&mut self, s: usize, e: Vec<crate::backend::Entry>) -> StateResult<()> {
        self.inner.load(s, e)
    }
    fn adopt(&mut self, meta: crate::StateMeta) -> StateResult<crate::backend::StateId> {
        self.inner.adopt(meta)
    }
    fn reads_ahead(&self) -> bool {
        true
    }
    /// Every other entry, by the seed, is in memory: records mix running at once and batched.
    fn read_now(&self, _key: &crate::backend::ReadKey) -> bool {
        let x = self.seed.get().rotate_left(7) ^ 0x9E37_79B9_7F4A_7C15;
        self.seed.set(x.wrapping_mul(6364136223846793005));
        x >> 63 == 1
    }
    fn preload(&self, keys: Vec<crate::backend::ReadKey>) -> crate::backend::Preload {
        let mut x = self
            .seed
            .get()
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.seed.set(x);
        let p = crate::backend::Preload::of_parts(1);
        let done = p.clone();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        std::thread::spawn(move || {
            for (n, i) in order.into_iter().enumerate() {
                if n % 5 != 4 {
                    done.loaded(i);
                }
                if n % 3 == 0 {
                    std::thread::yield_now();
                }
            }
            done.part_done();
        });
        p
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Requests runnable in a scrambled order still run in each record's issue order, records of
    /// a key in arrival order, with the sync API's results.
    #[test]
    fn scrambled_loads_keep_the_order(
        records in prop::collection::vec((0u32..8, any::<u32>()), 0..150),
        buffer in 1usize..8,
        limit in 1usize..12,
        seed in any::<u64>(),
    ) {
        let fresh = || Keyed::new(Scrambled {
            inner: HeapBackend::new(KeyGroupRange::all(16), 16),
            seed: std::cell::Cell::new(seed),
        });
        let opts = AsyncOptions { in_flight_records_limit: limit, buffer_size: buffer, ..Default::default() };
        check_matches_sync(fresh, opts, &records);
    }
}

/// Timers fired as async records: each window's timer sees exactly its window's records, fires
/// once, and a timer registered by a timer body that is due fires in the same advance.
#[cfg(feature = "rocksdb")]
#[test]
fn timers_fire_as_async_records() {
    use crate::timers::{TimeDomain, TimerService};
    let kb = Keyed::new(crate::RocksBackend::temporary(KeyGroupRange::all(16), 16).unwrap());
    let mut ctl = AsyncKeyed::new(kb, small_batches());
    let count = ctl.value_state::<u64>("count", None).unwrap();
    let timers: Rc<RefCell<TimerService<u32>>> = Rc::new(RefCell::new(
        TimerService::new(ctl.keyed_mut().unwrap(), "w").unwrap(),
    ));
    for i in 0..40u32 {
        let (count, t) = (count.clone(), timers.clone());
        ctl.process(&(i % 4), move |ctx| async move {
            let n = count.value(&ctx).await?.unwrap_or(0);
            count.update(&ctx, n + 1).await?;
            // The window's timer (registered again by each record: deduplicated).
            ctx.sync(move |kb| t.borrow_mut().register(kb, TimeDomain::EventTime, &0, 99))
                .await
        })
        .unwrap();
    }
    let fired = Rc::new(RefCell::new(Vec::new()));
    let n = ctl
        .advance_watermark_async(&timers, 150, |ctx, timer| {
            let (count, fired, t) = (count.clone(), fired.clone(), timers.clone());
            async move {
                let n = count.value(&ctx).await?;
                count.clear(&ctx).await?;
                fired.borrow_mut().push((timer.key, timer.namespace, n));
                if timer.namespace == 0 {
                    // A follow-up timer of the same key, due within this advance.
                    ctx.sync(move |kb| t.borrow_mut().register(kb, TimeDomain::EventTime, &1, 120))
                        .await?;
                }
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(n, 8, "4 window timers and their 4 follow-ups");
    let mut fired = fired.borrow().clone();
    fired.sort();
    let want: Vec<(u32, u32, Option<u64>)> = (0..4)
        .flat_map(|k| [(k, 0, Some(10)), (k, 1, None)])
        .collect();
    assert_eq!(fired, want);
    assert!(timers.borrow().is_empty());
}

/// Processing-time timers fire as records too, each once, at or after their time only.
#[test]
fn processing_time_timers_fire_as_async_records() {
    use crate::timers::{TimeDomain, TimerService};
    let mut ctl = AsyncKeyed::new(heap(), small_batches());
    let timers: Rc<RefCell<TimerService<()>>> = Rc::new(RefCell::new(
        TimerService::new(ctl.keyed_mut().unwrap(), "p").unwrap(),
    ));
    for k in 0..6u32 {
        let t = timers.clone();
        ctl.process(&k, move |ctx| async move {
            ctx.sync(move |kb| {
                t.borrow_mut()
                    .register(kb, TimeDomain::ProcessingTime, &(), 10 * k as i64)
            })
            .await
        })
        .unwrap();
    }
    let fired = Rc::new(RefCell::new(Vec::new()));
    for now in [25, 25, 100] {
        let f = fired.clone();
        ctl.advance_processing_time_async(&timers, now, |_, t| {
            let f = f.clone();
            async move {
                f.borrow_mut().push((now, t.key, t.timestamp));
                Ok(())
            }
        })
        .unwrap();
    }
    let got: Vec<(i64, u32)> = fired.borrow().iter().map(|(n, k, _)| (*n, *k)).collect();
    assert_eq!(
        got,
        [(25, 0), (25, 1), (25, 2), (100, 3), (100, 4), (100, 5)]
    );
}

/// On RocksDB, a record whose entries are in memory (a memtable, the block cache) runs to its end
/// inside `process`, without waiting for a batch to fill or time out: a hot key's records do not
/// queue behind batches. A record whose entry is on disk only waits for its batch.
#[cfg(feature = "rocksdb")]
#[test]
fn records_whose_entries_are_in_memory_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let range = KeyGroupRange::all(16);
    let open = || Keyed::new(crate::RocksBackend::open(dir.path(), range, 16).unwrap());
    let opts = AsyncOptions {
        buffer_size: 1000,
        buffer_timeout: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let mut kb = open();
    let count = kb.value_state::<u64>("count", None).unwrap();
    for k in 0..2u32 {
        kb.set_current_key(&k).unwrap();
        count.update(&mut kb, &10).unwrap();
    }
    drop(kb);
    // Reopened: both entries are in an SST only, the block cache is empty.
    let mut ctl = AsyncKeyed::new(open(), opts);
    let count = ctl.value_state::<u64>("count", None).unwrap();
    let record = |ctl: &mut AsyncKeyed<u32, _>, key: u32| {
        let count = count.clone();
        ctl.process(&key, move |ctx| async move {
            let n = count.value(&ctx).await?.unwrap_or(0);
            count.update(&ctx, n + 1).await
        })
        .unwrap();
    };
    record(&mut ctl, 0);
    assert_eq!(ctl.in_flight(), 1, "an entry on disk waits for its batch");
    for _ in 0..5 {
        record(&mut ctl, 0);
    }
    assert_eq!(ctl.in_flight(), 6, "records of the key wait for the first");
    ctl.drain().unwrap();
    for n in 0..50 {
        record(&mut ctl, 0);
        assert_eq!(
            ctl.in_flight(),
            0,
            "record {n}: its entry is in the memtable"
        );
    }
    record(&mut ctl, 1);
    let mut kb = ctl.into_keyed().unwrap();
    let count = kb.value_state::<u64>("count", None).unwrap();
    for (k, want) in [(0u32, 66u64), (1, 11)] {
        kb.set_current_key(&k).unwrap();
        assert_eq!(count.value(&mut kb).unwrap(), Some(want));
    }
}
