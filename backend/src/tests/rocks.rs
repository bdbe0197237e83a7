//! The RocksDB backend's own tests (the conformance suite runs in the parent module): incremental
//! checkpoints and rescaling, the TTL compaction filter, the memory budget, tuning, snapshot views
//! and the WAL.

use crate::StateBackend;
use crate::keygroup::KeyGroupRange;
use crate::snapshot;

/// Entries in column family `cf` as RocksDB holds them, bypassing the backend's range checks.
fn entries_on_disk(b: &crate::RocksBackend, cf: &str) -> usize {
    let db = b.db();
    db.iterator_cf(db.cf_handle(cf).unwrap(), rocksdb::IteratorMode::Start)
        .count()
}

mod rocks_incremental {
    use super::entries_on_disk;
    use crate::RocksBackend;
    use crate::checkpoint::CheckpointStorage;
    use crate::checkpointed::Checkpointed;
    use crate::keygroup::KeyGroupRange;
    use crate::rocks_checkpoint::RocksHome;
    use crate::states::Keyed;

    fn write(kb: &mut Keyed<String, RocksBackend>, from: u32, to: u32, round: u32) {
        let v = kb.value_state::<u32>("v", None).unwrap();
        for i in from..to {
            kb.set_current_key(&format!("k{i}")).unwrap();
            v.update(kb, &(i + round)).unwrap();
        }
        kb.backend().flush().unwrap();
    }

    /// A new backend with keys 0..n written (value i + round), and checkpoint 1 of it completed.
    fn checkpointed(
        storage: &mut CheckpointStorage,
        n: u32,
        round: u32,
    ) -> Keyed<String, RocksBackend> {
        let mut kb = Keyed::new(RocksBackend::temporary(KeyGroupRange::all(128), 128).unwrap());
        write(&mut kb, 0, n, round);
        let mut p = storage.begin(1, 128);
        kb.backend_mut().checkpoint_into(&mut p, false).unwrap();
        p.complete().unwrap();
        kb
    }

    fn check(kb: &mut Keyed<String, RocksBackend>, n: u32, round: u32) {
        let v = kb.value_state::<u32>("v", None).unwrap();
        let mut seen = 0;
        for i in 0..n {
            if kb.set_current_key(&format!("k{i}")).is_ok() {
                assert_eq!(v.value(kb).unwrap(), Some(i + round), "k{i}");
                seen += 1;
            }
        }
        assert!(seen > 0);
    }

    #[test]
    fn uploads_only_new_ssts_and_restores_and_rescales() {
        let (r, _rt) = crate::tests::memory_remote();
        let mut storage = CheckpointStorage::open(r.clone(), "job", 2).unwrap();
        let mut kb: Keyed<String, RocksBackend> =
            Keyed::new(RocksBackend::temporary(KeyGroupRange::all(128), 128).unwrap());
        write(&mut kb, 0, 2000, 1);
        let mut p = storage.begin(1, 128);
        let s1 = kb.backend_mut().checkpoint_into(&mut p, false).unwrap();
        p.complete().unwrap();
        assert!(s1.sst_bytes_uploaded > 0 && s1.sst_files_uploaded == s1.sst_files);

        // No writes: the next checkpoint uploads no SST byte.
        let mut p = storage.begin(2, 128);
        let s2 = kb.backend_mut().checkpoint_into(&mut p, false).unwrap();
        p.complete().unwrap();
        assert_eq!(
            (s2.sst_bytes_uploaded, s2.sst_files_uploaded),
            (0, 0),
            "{s2:?}"
        );
        assert!(
            s2.misc_bytes_uploaded > 0,
            "MANIFEST, CURRENT, OPTIONS every time"
        );

        // New data and a compaction: only the new SSTs are uploaded.
        write(&mut kb, 2000, 4000, 1);
        kb.backend().compact_all().unwrap();
        let mut p = storage.begin(3, 128);
        let s3 = kb.backend_mut().checkpoint_into(&mut p, false).unwrap();
        let dropped = p.complete().unwrap();
        assert_eq!(dropped, vec![1]);
        assert!(s3.sst_files_uploaded >= 1 && s3.sst_files_uploaded <= s3.sst_files);

        // Full mode uploads everything.
        let mut p = storage.begin(4, 128);
        let s4 = kb.backend_mut().checkpoint_into(&mut p, true).unwrap();
        p.abort().unwrap();
        assert_eq!(s4.sst_files_uploaded, s4.sst_files);
        // The checkpoints' link directories lived inside the database directory and are gone.
        let left: Vec<_> = std::fs::read_dir(kb.backend().path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // Restore exactly, and rescale 1 -> 2.
        let c = storage.latest().unwrap().unwrap();
        assert_eq!(c.id, 3);
        let dir = tempfile::tempdir().unwrap();
        let mut same: Keyed<String, RocksBackend> = Keyed::new(
            RocksBackend::restore(
                &storage,
                &c,
                KeyGroupRange::all(128),
                RocksHome::new(dir.path().join("a")),
            )
            .unwrap(),
        );
        check(&mut same, 4000, 1);
        for i in 0..2 {
            let range = KeyGroupRange::for_operator(128, 2, i);
            let mut half: Keyed<String, RocksBackend> = Keyed::new(
                RocksBackend::restore(
                    &storage,
                    &c,
                    range,
                    RocksHome::new(dir.path().join(format!("h{i}"))),
                )
                .unwrap(),
            );
            check(&mut half, 4000, 1);
            let n: usize = half.keys("v").unwrap().len();
            assert!(n > 1000 && n < 3000, "{n}");
            // Clipped physically, not just hidden: the column family holds only this range.
            let raw = entries_on_disk(half.backend(), "state-v");
            assert_eq!(raw, n, "entries outside the range were deleted");
        }
    }

    /// A restore downloads to temporary names and checks each file's size and CRC32C: an SST
    /// damaged in place, cut short in the store, or gone, fails the restore with a clear error and leaves no file that could pass
    /// for a whole one.
    #[test]
    fn a_damaged_or_missing_sst_fails_the_restore_cleanly() {
        let (r, _rt) = crate::tests::memory_remote();
        let mut storage = CheckpointStorage::open(r.clone(), "job", 2).unwrap();
        checkpointed(&mut storage, 2000, 1);
        let c = storage.latest().unwrap().unwrap();
        let sst = crate::rocks_checkpoint::shared_files(&c)
            .into_keys()
            .next()
            .expect("a shared SST");
        let whole = r.get(&sst).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let restore = |to: &str| {
            RocksBackend::restore(
                &storage,
                &c,
                KeyGroupRange::all(128),
                RocksHome::new(dir.path().join(to)),
            )
            .map(drop)
            .unwrap_err()
            .to_string()
        };
        // The same size with one bit flipped: only the recorded CRC32C tells.
        let mut flipped = whole.to_vec();
        flipped[whole.len() / 3] ^= 0x10;
        r.put(&sst, flipped.into()).unwrap();
        let err = restore("flipped");
        assert!(err.contains("does not match the checksum"), "{err}");
        r.put(&sst, whole.slice(..whole.len() / 2)).unwrap();
        let err = restore("cut");
        assert!(err.contains("the manifest says"), "{err}");
        // Whatever the failed restore left in its directory, no download is half done.
        let partial: Vec<_> = std::fs::read_dir(dir.path().join("cut"))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".download"))
            .collect();
        assert!(partial.is_empty(), "{partial:?}");
        r.delete(&sst).unwrap();
        let err = restore("gone");
        assert!(err.contains("is missing"), "{err}");
        // Put back whole, the same checkpoint restores.
        r.put(&sst, whole).unwrap();
        let mut back: Keyed<String, RocksBackend> = Keyed::new(
            RocksBackend::restore(
                &storage,
                &c,
                KeyGroupRange::all(128),
                RocksHome::new(dir.path().join("back")),
            )
            .unwrap(),
        );
        check(&mut back, 2000, 1);
    }

    /// After a restore, the next checkpoint names the restored SSTs instead of uploading them
    /// again (as Flink's backend does), and they outlive the checkpoint they were restored from.
    #[test]
    fn a_restored_backend_reuses_the_restored_ssts() {
        let (r, _rt) = crate::tests::memory_remote();
        let mut storage = CheckpointStorage::open(r.clone(), "job", 1).unwrap();
        drop(checkpointed(&mut storage, 2000, 1));
        let c = storage.latest().unwrap().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let all = KeyGroupRange::all(128);
        let mut back: Keyed<String, RocksBackend> = Keyed::new(
            RocksBackend::restore(&storage, &c, all, RocksHome::new(dir.path().join("a"))).unwrap(),
        );
        let mut p = storage.begin(2, 128);
        let s = back.backend_mut().checkpoint_into(&mut p, false).unwrap();
        assert_eq!(p.complete().unwrap(), vec![1], "checkpoint 1 is dropped");
        assert!(s.sst_files > 0);
        assert_eq!(
            (s.sst_files_uploaded, s.sst_bytes_uploaded),
            (0, 0),
            "{s:?}"
        );
        let c2 = storage.latest().unwrap().unwrap();
        let mut again: Keyed<String, RocksBackend> = Keyed::new(
            RocksBackend::restore(&storage, &c2, all, RocksHome::new(dir.path().join("b")))
                .unwrap(),
        );
        check(&mut again, 2000, 1);
        // New writes after the restore: only their SST goes up.
        write(&mut back, 2000, 2100, 1);
        let mut p = storage.begin(3, 128);
        let s = back.backend_mut().checkpoint_into(&mut p, false).unwrap();
        p.complete().unwrap();
        assert_eq!(s.sst_files_uploaded, 1, "{s:?}");
    }

    /// Manifests written before files carried a CRC32C still load; their files are checked by
    /// size. New manifests carry it.
    #[test]
    fn manifest_files_without_a_checksum_still_load() {
        let old: crate::rocks_checkpoint::DbFile =
            serde_json::from_str(r#"{"name":"000012.sst","key":"job/shared/x","size":42}"#)
                .unwrap();
        assert_eq!(old.crc32c, None);
        let new = crate::rocks_checkpoint::DbFile {
            crc32c: Some(7),
            ..old
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains("\"crc32c\":7"), "{json}");
    }

    /// Scaling in: two subtasks checkpoint into one checkpoint; one backend restores all key
    /// groups from both handles (the merge path) with every key exactly once, by ingesting SSTs
    /// (the default) and by copying.
    #[test]
    fn scale_in_merges_two_handles() {
        let (r, _rt) = crate::tests::memory_remote();
        let mut storage = CheckpointStorage::open(r.clone(), "job", 1).unwrap();
        let mut p = storage.begin(1, 128);
        for i in 0..2 {
            let range = KeyGroupRange::for_operator(128, 2, i);
            let mut kb: Keyed<String, RocksBackend> =
                Keyed::new(RocksBackend::temporary(range, 128).unwrap());
            let v = kb.value_state::<u32>("v", None).unwrap();
            let l = kb.list_state::<u32>("l", None).unwrap();
            for k in 0..3000u32 {
                if kb.set_current_key(&format!("k{k}")).is_ok() {
                    v.update(&mut kb, &(k + 5)).unwrap();
                    l.add(&mut kb, &k).unwrap();
                }
            }
            kb.backend().flush().unwrap();
            // Merge operands still in the memtable at checkpoint time arrive merged too.
            for k in 0..3000u32 {
                if kb.set_current_key(&format!("k{k}")).is_ok() {
                    l.add(&mut kb, &(k + 1)).unwrap();
                }
            }
            kb.backend_mut().checkpoint_into(&mut p, false).unwrap();
        }
        p.complete().unwrap();
        let c = storage.latest().unwrap().unwrap();
        assert_eq!(c.subtasks.len(), 2);
        for ingest in [true, false] {
            let tuning = crate::rocks_options::RocksTuning::from_pairs(&[(
                "state.backend.rocksdb.use-ingest-db-restore",
                if ingest { "true" } else { "false" },
            )])
            .unwrap();
            let restore = |range: KeyGroupRange, dir: &std::path::Path| {
                RocksBackend::restore(
                    &storage,
                    &c,
                    range,
                    RocksHome {
                        dir: (dir).to_path_buf(),
                        shared: None,
                        tuning: tuning.clone(),
                    },
                )
                .unwrap()
            };
            let root = tempfile::tempdir().unwrap();
            let mut all: Keyed<String, RocksBackend> =
                Keyed::new(restore(KeyGroupRange::all(128), &root.path().join("all")));
            check(&mut all, 3000, 5);
            assert_eq!(all.keys("v").unwrap().len(), 3000, "every key exactly once");
            let l = all.list_state::<u32>("l", None).unwrap();
            for k in (0..3000u32).step_by(7) {
                all.set_current_key(&format!("k{k}")).unwrap();
                assert_eq!(l.get(&mut all).unwrap(), vec![k, k + 1], "k{k}");
            }
            // Ingested entries never pass through the memtable; copied ones do.
            let (db, cf) = all.backend().raw("v");
            let in_memtable = db
                .property_int_value_cf(cf, "rocksdb.num-entries-active-mem-table")
                .unwrap()
                .unwrap();
            assert_eq!(
                in_memtable == 0,
                ingest,
                "{in_memtable} entries in the memtable"
            );
            let leftovers: Vec<_> = std::fs::read_dir(root.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n != "all")
                .collect();
            assert!(leftovers.is_empty(), "scratch left: {leftovers:?}");

            // A range across both handles' boundary takes part of each, and nothing outside it.
            let middle = KeyGroupRange { start: 32, end: 95 };
            let mut mid: Keyed<String, RocksBackend> =
                Keyed::new(restore(middle, &root.path().join("mid")));
            check(&mut mid, 3000, 5);
            let n = mid.keys("v").unwrap().len();
            let want = (0..3000)
                .filter(|k| {
                    let kg = crate::keygroup::key_group_of(
                        &postcard::to_allocvec(&format!("k{k}")).unwrap(),
                        128,
                    );
                    middle.contains(kg)
                })
                .count();
            assert_eq!(n, want, "exactly the keys of key groups 32..=95");
            let raw = entries_on_disk(mid.backend(), "state-v");
            assert_eq!(raw, want, "nothing outside the range was merged");
        }
    }

    #[test]
    fn dropped_checkpoints_free_exactly_their_files() {
        let (r, _rt) = crate::tests::memory_remote();
        let mut storage = CheckpointStorage::open(r.clone(), "job", 1).unwrap();
        let mut kb = checkpointed(&mut storage, 1000, 0);
        let first: std::collections::BTreeSet<String> = r
            .list("job/shared/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        write(&mut kb, 1000, 2000, 0);
        kb.backend().compact_all().unwrap();
        let mut p = storage.begin(2, 128);
        kb.backend_mut().checkpoint_into(&mut p, false).unwrap();
        p.complete().unwrap();
        let c2 = storage.load(2).unwrap();
        let live: std::collections::BTreeSet<String> =
            c2.subtasks.iter().flat_map(|t| t.shared.clone()).collect();
        let now: std::collections::BTreeSet<String> = r
            .list("job/shared/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            now, live,
            "shared files are exactly those the retained checkpoint references"
        );
        assert!(
            first.difference(&live).count() > 0,
            "compaction made some of the first SSTs obsolete, and they are gone"
        );
    }
}

#[test]
fn rocksdb_compaction_drops_expired_ttl_values() {
    use crate::states::Keyed;
    let mut kb: Keyed<String, crate::RocksBackend> =
        Keyed::new(crate::RocksBackend::temporary(KeyGroupRange::all(128), 128).unwrap());
    let ttl = crate::TtlConfig {
        cleanup_incremental: 0,
        ..crate::TtlConfig::new(std::time::Duration::from_millis(30))
    };
    let v = kb.value_state::<u32>("v", Some(ttl)).unwrap();
    let m = kb.map_state::<u32, u32>("m", Some(ttl)).unwrap();
    for i in 0..200u32 {
        kb.set_current_key(&format!("k{i}")).unwrap();
        v.update(&mut kb, &i).unwrap();
        m.put(&mut kb, &i, &i).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(60));
    kb.backend().compact_all().unwrap();
    // Lists: see rocksdb_compaction_drops_expired_lists_once_merged.
    for name in ["v", "m"] {
        let id = (0..kb.backend().states().len())
            .find(|i| kb.backend().meta(*i).name == name)
            .unwrap();
        assert!(
            kb.backend().entries(id).unwrap().is_empty(),
            "state {name}: expired entries left after compaction"
        );
    }
}

/// A RocksDB backend on a manual clock set "in 1970" (long expired by the system clock the TTL
/// compaction filter uses), with a TTL list state `l` holding two elements for each of 100 keys;
/// returns the backend, the clock, the state and its id.
fn expired_lists() -> (
    crate::states::Keyed<String, crate::RocksBackend>,
    std::sync::Arc<crate::ttl::ManualClock>,
    crate::states::ListState<u32>,
    usize,
) {
    let clock = std::sync::Arc::new(crate::ttl::ManualClock::new(1_000));
    let mut kb = crate::states::Keyed::new(
        crate::RocksBackend::temporary(KeyGroupRange::all(128), 128).unwrap(),
    )
    .with_clock(clock.clone());
    let ttl = crate::TtlConfig {
        cleanup_incremental: 0,
        ..crate::TtlConfig::new(std::time::Duration::from_secs(3600))
    };
    let l = kb.list_state::<u32>("l", Some(ttl)).unwrap();
    for i in 0..100u32 {
        kb.set_current_key(&format!("k{i}")).unwrap();
        l.add(&mut kb, &i).unwrap();
        l.add(&mut kb, &(i + 1)).unwrap();
    }
    let id = (0..kb.backend().states().len())
        .find(|i| kb.backend().meta(*i).name == "l")
        .unwrap();
    (kb, clock, l, id)
}

/// List appends are merge operands, which RocksDB's compaction filter (through the C API) never
/// sees; a compaction merges them into one value, and the next compaction filters that value.
/// So expired lists are dropped from the second full compaction on.
#[test]
fn rocksdb_compaction_drops_expired_lists_once_merged() {
    let (kb, _clock, _l, id) = expired_lists();
    kb.backend().compact_all().unwrap();
    kb.backend().compact_all().unwrap();
    assert_eq!(
        kb.backend().entries(id).unwrap().len(),
        0,
        "expired lists left after two compactions"
    );
}

/// A list whose elements expire at different times loses only the expired ones in compaction
/// (Flink's list element filter), once its merge operands are merged into one value.
#[test]
fn rocksdb_compaction_trims_expired_list_elements() {
    let (mut kb, clock, l, id) = expired_lists();
    // A third element per key, written now: alive.
    let now = crate::ttl::Clock::now_ms(&crate::ttl::SystemClock);
    clock.advance(std::time::Duration::from_millis(now - 1_000));
    for i in 0..100u32 {
        kb.set_current_key(&format!("k{i}")).unwrap();
        l.add(&mut kb, &(i + 2)).unwrap();
    }
    kb.backend().compact_all().unwrap();
    kb.backend().compact_all().unwrap();
    let entries = kb.backend().entries(id).unwrap();
    assert_eq!(entries.len(), 100, "no list was alive only in part");
    for (_, _, raw) in &entries {
        let elements = crate::states::decode_list(raw).unwrap();
        assert_eq!(elements.len(), 1, "the expired elements are gone from disk");
    }
    for i in (0..100u32).step_by(9) {
        kb.set_current_key(&format!("k{i}")).unwrap();
        assert_eq!(l.get(&mut kb).unwrap(), vec![i + 2]);
    }
}

/// A database opened from disk (restart, restore) installs the TTL compaction filter on its TTL
/// column families before any descriptor arrives: it keeps everything until the descriptor says
/// what the TTL is, then drops what expired. A state without TTL is never filtered.
#[test]
fn rocksdb_ttl_filter_survives_reopen_and_spares_plain_states() {
    use crate::states::Keyed;
    let dir = tempfile::tempdir().unwrap();
    let ttl = crate::TtlConfig {
        cleanup_incremental: 0,
        ..crate::TtlConfig::new(std::time::Duration::from_secs(3600))
    };
    // Written "in 1970" (a manual clock): long expired by the system clock the filter uses.
    let clock = std::sync::Arc::new(crate::ttl::ManualClock::new(1_000));
    {
        let mut kb = keyed_at(dir.path(), &clock);
        let v = kb.value_state::<u32>("v", Some(ttl)).unwrap();
        let p = kb.value_state::<u32>("p", None).unwrap();
        for i in 0..200u32 {
            kb.set_current_key(&format!("k{i}")).unwrap();
            v.update(&mut kb, &i).unwrap();
            p.update(&mut kb, &i).unwrap();
        }
        kb.backend().flush().unwrap();
    }
    let b = crate::RocksBackend::open(dir.path(), KeyGroupRange::all(128), 128).unwrap();
    let count = |b: &crate::RocksBackend, name: &str| {
        let id = (0..b.states().len())
            .find(|i| b.meta(*i).name == name)
            .unwrap();
        b.entries(id).unwrap().len()
    };
    // Before any descriptor: the TTL is unknown, a compaction drops nothing.
    {
        let db = b.db();
        let cf = db
            .cf_handle("ttlstate-v")
            .expect("TTL state in its own family");
        db.compact_range_cf::<&[u8], &[u8]>(cf, None, None);
    }
    let mut kb: Keyed<String, crate::RocksBackend> = Keyed::new(b).with_clock(clock);
    kb.value_state::<u32>("v", Some(ttl)).unwrap();
    kb.value_state::<u32>("p", None).unwrap();
    assert_eq!(
        count(kb.backend(), "v"),
        200,
        "kept while the TTL was unknown"
    );
    kb.backend().compact_all().unwrap();
    assert_eq!(
        count(kb.backend(), "v"),
        0,
        "expired entries left after reopen"
    );
    assert_eq!(
        count(kb.backend(), "p"),
        200,
        "a state without TTL lost entries"
    );
}

/// A RocksDB backend over all 128 key groups at `path`, with a manual clock.
fn keyed_at(
    path: &std::path::Path,
    clock: &std::sync::Arc<crate::ttl::ManualClock>,
) -> crate::states::Keyed<String, crate::RocksBackend> {
    crate::states::Keyed::new(
        crate::RocksBackend::open(path, KeyGroupRange::all(128), 128).unwrap(),
    )
    .with_clock(clock.clone())
}

/// Rewrites the closed database at `path` so TTL state `v` has the layout written before TTL
/// families were named apart: its entries under `state-v`. With `cut_short`, `ttlstate-v` is also
/// left holding a few wrong entries, as a move interrupted by a crash leaves it.
fn make_legacy_ttl_layout(path: &std::path::Path, cut_short: bool) {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
    let mut db = rocksdb::DB::open_cf(&opts, path, &cfs).unwrap();
    db.create_cf("state-v", &opts).unwrap();
    type Entry = (Box<[u8]>, Box<[u8]>);
    let entries: Vec<Entry> = db
        .iterator_cf(
            db.cf_handle("ttlstate-v").unwrap(),
            rocksdb::IteratorMode::Start,
        )
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(entries.len(), 200);
    for (k, v) in &entries {
        db.put_cf(db.cf_handle("state-v").unwrap(), k, v).unwrap();
    }
    db.drop_cf("ttlstate-v").unwrap();
    if cut_short {
        db.create_cf("ttlstate-v", &opts).unwrap();
        for (k, _) in entries.iter().take(10) {
            db.put_cf(db.cf_handle("ttlstate-v").unwrap(), k, b"wrong")
                .unwrap();
        }
    }
    db.flush_cf(db.cf_handle("state-v").unwrap()).unwrap();
}

/// A TTL state in the old layout (`state-` family, no compaction filter after reopen) moves to a
/// `ttlstate-` family when its descriptor registers: every entry is kept, the old family is gone,
/// and the compaction filter now drops what expired. A move cut short by a crash is redone from
/// the old family.
#[test]
fn rocksdb_moves_a_legacy_ttl_state_to_its_filtered_family() {
    let ttl = crate::TtlConfig {
        cleanup_incremental: 0,
        ..crate::TtlConfig::new(std::time::Duration::from_secs(3600))
    };
    for cut_short in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // Written "in 1970" (a manual clock): long expired by the system clock the filter uses.
        let clock = std::sync::Arc::new(crate::ttl::ManualClock::new(1_000));
        {
            let mut kb = keyed_at(dir.path(), &clock);
            let v = kb.value_state::<u32>("v", Some(ttl)).unwrap();
            for i in 0..200u32 {
                kb.set_current_key(&format!("k{i}")).unwrap();
                v.update(&mut kb, &i).unwrap();
            }
            kb.backend().flush().unwrap();
        }
        make_legacy_ttl_layout(dir.path(), cut_short);
        let mut kb = keyed_at(dir.path(), &clock);
        let v = kb.value_state::<u32>("v", Some(ttl)).unwrap();
        for i in 0..200u32 {
            kb.set_current_key(&format!("k{i}")).unwrap();
            assert_eq!(v.value(&mut kb).unwrap(), Some(i), "cut short: {cut_short}");
        }
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        assert!(cfs.contains(&"ttlstate-v".to_string()), "{cfs:?}");
        assert!(!cfs.contains(&"state-v".to_string()), "{cfs:?}");
        kb.backend().compact_all().unwrap();
        assert_eq!(
            entries_on_disk(kb.backend(), "ttlstate-v"),
            0,
            "expired entries survived a compaction: no filter"
        );
    }
}

#[test]
fn rocksdb_respects_a_shared_memory_budget() {
    use crate::states::Keyed;
    let budget = 8 << 20;
    let shared = crate::rocks::SharedResources::new(budget, 0.5).unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // Two backends (two subtasks) share one budget.
    let mut kbs: Vec<Keyed<u64, crate::RocksBackend>> = (0..2u32)
        .map(|i| {
            let b = crate::RocksBackend::open_with(
                dirs[i as usize].path(),
                KeyGroupRange::for_operator(128, 2, i),
                128,
                Some(shared.clone()),
            )
            .unwrap();
            Keyed::new(b)
        })
        .collect();
    let blob = vec![9u8; 1000];
    fn owner(kbs: &mut [Keyed<u64, crate::RocksBackend>], k: u64) -> usize {
        (0..kbs.len())
            .find(|&x| kbs[x].set_current_key(&k).is_ok())
            .expect("one subtask owns every key")
    }
    let (mut peak_cache, mut peak_memtables) = (0, 0);
    for i in 0..60_000u64 {
        let o = owner(&mut kbs, i);
        let v = kbs[o].value_state::<Vec<u8>>("v", None).unwrap();
        v.update(&mut kbs[o], &blob).unwrap();
        if i % 7 == 0 {
            let o = owner(&mut kbs, i / 2);
            let v = kbs[o].value_state::<Vec<u8>>("v", None).unwrap();
            assert_eq!(v.value(&mut kbs[o]).unwrap(), Some(blob.clone()));
        }
        if i % 64 == 0 {
            let a = kbs[0].backend().memory_usage().unwrap();
            assert_eq!(a.block_cache_capacity, shared.cache_capacity as u64);
            peak_cache = peak_cache.max(a.block_cache);
            peak_memtables = peak_memtables.max(a.memtables);
        }
    }
    // 60 MB written through an 8 MB budget. The cache's capacity is strict, and writers stall at
    // the memtables' limit; the write-buffer manager counts memtable arena blocks, which may pass
    // its limit by the block being filled when the stall starts.
    assert!(
        peak_cache <= shared.cache_capacity as u64,
        "peak cache usage {peak_cache} over its capacity {}",
        shared.cache_capacity
    );
    let memtable_limit = (budget - shared.cache_capacity) as u64;
    assert!(
        peak_memtables <= memtable_limit + (1 << 20),
        "peak memtable usage {peak_memtables} over {memtable_limit}"
    );
    assert!(
        peak_cache > shared.cache_capacity as u64 / 4,
        "the cache is used: {peak_cache}"
    );
    assert!(
        peak_memtables > memtable_limit / 4,
        "memtables are counted: {peak_memtables}"
    );
    // A third backend on the budget, with no data of its own, sees the cache the two others
    // filled: there is one cache, not one per backend.
    let idle_dir = tempfile::tempdir().unwrap();
    let idle = crate::RocksBackend::open_with(
        idle_dir.path(),
        KeyGroupRange::all(128),
        128,
        Some(shared.clone()),
    )
    .unwrap();
    let busy = kbs[0].backend().memory_usage().unwrap().block_cache;
    let seen = idle.memory_usage().unwrap().block_cache;
    assert!(
        seen >= busy / 2 && busy > 0,
        "an idle backend sees {seen} bytes cached, the busy one {busy}"
    );
}

/// The shared cache's capacity is strict: readers that pin more blocks than it holds do not grow
/// it past its capacity, and every read still returns the right value.
#[test]
fn rocksdb_budget_holds_with_pinned_blocks() {
    use crate::states::Keyed;
    let shared = crate::rocks::SharedResources::new(4 << 20, 0.5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tuning = crate::rocks_options::RocksTuning::from_pairs(&[(
        "state.backend.rocksdb.block.blocksize",
        "64kb",
    )])
    .unwrap();
    let mut kb: Keyed<u64, crate::RocksBackend> = Keyed::new(
        crate::RocksBackend::open_tuned(
            dir.path(),
            KeyGroupRange::all(128),
            128,
            Some(shared.clone()),
            tuning,
        )
        .unwrap(),
    );
    let v = kb.value_state::<Vec<u8>>("v", None).unwrap();
    let value = |i: u64| vec![(i % 251) as u8; 1000];
    for i in 0..20_000u64 {
        kb.set_current_key(&i).unwrap();
        v.update(&mut kb, &value(i)).unwrap();
    }
    kb.backend().flush().unwrap();
    // 20 MB in 64 KiB blocks; each open iterator pins its current block. 128 iterators at spread
    // positions pin about 8 MB, four times the cache's 2 MB.
    let (db, cf) = kb.backend().raw("v");
    let mut all = db.raw_iterator_cf(cf);
    all.seek_to_first();
    let mut keys = Vec::new();
    while let Some(k) = all.key() {
        keys.push(k.to_vec());
        all.next();
    }
    drop(all);
    assert_eq!(keys.len(), 20_000);
    let mut pinned = Vec::new();
    let mut failed = 0;
    for k in keys.iter().step_by(keys.len() / 128) {
        let mut it = db.raw_iterator_cf(cf);
        it.seek(k);
        match it.status() {
            Ok(()) => {
                assert!(it.valid());
                pinned.push(it);
            }
            // A strict cache may refuse a block that cannot fit; the error says so.
            Err(e) => {
                assert!(e.to_string().contains("cache"), "{e}");
                failed += 1;
            }
        }
        let u = kb.backend().memory_usage().unwrap();
        assert!(
            u.block_cache <= u.block_cache_capacity,
            "cache at {} over its capacity {} with {} iterators open",
            u.block_cache,
            u.block_cache_capacity,
            pinned.len()
        );
    }
    eprintln!("{} iterators open, {failed} refused", pinned.len());
    drop(pinned);
    for i in (0..20_000u64).step_by(97) {
        kb.set_current_key(&i).unwrap();
        assert_eq!(v.value(&mut kb).unwrap(), Some(value(i)));
    }
}

/// Writes skip the WAL (as Flink's): no log grows while state is written, and a clean close
/// flushes the memtables, so a reopened database has every write.
#[test]
fn rocksdb_writes_skip_the_wal_and_a_clean_close_keeps_them() {
    use crate::states::Keyed;
    let dir = tempfile::tempdir().unwrap();
    let wal_bytes = || -> u64 {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    {
        let mut kb: Keyed<u32, crate::RocksBackend> = Keyed::new(
            crate::RocksBackend::open(dir.path(), KeyGroupRange::all(128), 128).unwrap(),
        );
        let v = kb.value_state::<u32>("v", None).unwrap();
        let l = kb.list_state::<u32>("l", None).unwrap();
        for i in 0..5_000u32 {
            kb.set_current_key(&i).unwrap();
            v.update(&mut kb, &i).unwrap();
            l.add(&mut kb, &i).unwrap();
        }
        for i in (0..5_000u32).step_by(2) {
            kb.set_current_key(&i).unwrap();
            v.clear(&mut kb).unwrap();
        }
        assert_eq!(wal_bytes(), 0, "nothing was written to a WAL");
    }
    let mut kb: Keyed<u32, crate::RocksBackend> =
        Keyed::new(crate::RocksBackend::open(dir.path(), KeyGroupRange::all(128), 128).unwrap());
    let v = kb.value_state::<u32>("v", None).unwrap();
    let l = kb.list_state::<u32>("l", None).unwrap();
    for i in 0..5_000u32 {
        kb.set_current_key(&i).unwrap();
        let want = (i % 2 == 1).then_some(i);
        assert_eq!(v.value(&mut kb).unwrap(), want, "key {i}");
        assert_eq!(l.get(&mut kb).unwrap(), vec![i]);
    }
}

/// A RocksDB backend in `dir` opened with `tuning`, with value state `v` holding one entry.
fn one_value_tuned(
    dir: &std::path::Path,
    tuning: crate::rocks_options::RocksTuning,
) -> crate::Keyed<u32, crate::RocksBackend> {
    let mut kb = crate::Keyed::new(
        crate::RocksBackend::open_tuned(dir, KeyGroupRange::all(128), 128, None, tuning).unwrap(),
    );
    let v = kb.value_state::<u32>("v", None).unwrap();
    kb.set_current_key(&1).unwrap();
    v.update(&mut kb, &1).unwrap();
    kb
}

/// The part of the newest OPTIONS file of the database in `dir` from section `header` on (the
/// newest file, written after the column families were created, has the states' options).
fn options_section(dir: &std::path::Path, header: &str) -> String {
    let newest = crate::rocks_options::latest_options_file(dir).unwrap();
    let options = std::fs::read_to_string(newest).unwrap();
    options[options.find(header).unwrap()..].to_string()
}

/// `memory.*` keys configure a budget for a backend opened with tuning alone, and bad values are
/// errors naming the key.
#[test]
fn rocksdb_memory_keys_configure_a_budget() {
    use crate::rocks_options::RocksTuning;
    let dir = tempfile::tempdir().unwrap();
    let tuning = RocksTuning::from_pairs(&[
        ("state.backend.rocksdb.memory.fixed-per-slot", "64mb"),
        ("state.backend.rocksdb.memory.write-buffer-ratio", "0.25"),
        ("state.backend.forst.memory.high-prio-pool-ratio", "0.2"),
    ])
    .unwrap();
    let kb = one_value_tuned(dir.path(), tuning);
    let u = kb.backend().memory_usage().unwrap();
    assert_eq!(u.block_cache_capacity, 48 << 20, "64 MB less a quarter");
    drop(kb);
    let section = options_section(dir.path(), "[TableOptions/BlockBasedTable \"state-v\"]");
    // (RocksDB's options file does not record the cache itself.)
    for line in [
        "cache_index_and_filter_blocks=true",
        "cache_index_and_filter_blocks_with_high_priority=true",
        "pin_l0_filter_and_index_blocks_in_cache=true",
    ] {
        assert!(section.contains(line), "{line}");
    }
    for bad in [
        ("state.backend.rocksdb.memory.write-buffer-ratio", "1"),
        ("state.backend.rocksdb.memory.high-prio-pool-ratio", "-0.1"),
        ("state.backend.rocksdb.memory.fixed-per-slot", "lots"),
        ("state.backend.rocksdb.memory.malloc-mmap-threshold", "64mb"),
        ("state.backend.rocksdb.memory.malloc-mmap-threshold", "1kb"),
        ("state.backend.rocksdb.manifest.max-file-size", "1kb"),
    ] {
        let e = RocksTuning::from_pairs(&[bad]).unwrap_err().to_string();
        assert!(e.contains(bad.0), "{e}");
    }
}

#[test]
fn rocksdb_refuses_a_bad_memory_budget() {
    use crate::rocks::SharedResources;
    for (budget, wb, hp) in [
        (64 << 20, 0.0, 0.1),
        (64 << 20, 1.0, 0.1),
        (64 << 20, 0.5, 1.5),
        (64 << 20, 0.5, f64::NAN),
        (1000, 0.5, 0.1),
    ] {
        let e = SharedResources::with_ratios(budget, wb, hp).err().unwrap();
        assert!(e.to_string().contains("rocksdb memory"), "{e}");
    }
    assert!(SharedResources::with_ratios(64 << 20, 0.3, 0.2).is_ok());
}

#[test]
fn rocksdb_applies_profiles_and_configured_keys() {
    use crate::rocks_options::RocksTuning;
    let dir = tempfile::tempdir().unwrap();
    let tuning = RocksTuning::from_pairs(&[
        (
            "state.backend.rocksdb.predefined-options",
            "SPINNING_DISK_OPTIMIZED_HIGH_MEM",
        ),
        ("state.backend.rocksdb.writebuffer.size", "1mb"),
    ])
    .unwrap();
    drop(one_value_tuned(dir.path(), tuning));
    // RocksDB writes the options in force to OPTIONS-*: the profile's and the configured values.
    let section = options_section(dir.path(), "[CFOptions \"state-v\"]");
    assert!(
        section.contains("write_buffer_size=1048576"),
        "configured value"
    );
    assert!(
        section.contains("target_file_size_base=268435456"),
        "profile value"
    );
    assert!(section.contains("max_write_buffer_number=4"));
    assert!(section.contains("block_size=131072"));
    // The MANIFEST bound: statefs's default, and a configured one.
    let db = options_section(dir.path(), "[DBOptions]");
    assert!(db.contains("max_manifest_file_size=1048576"), "default");
    let dir = tempfile::tempdir().unwrap();
    let tuning =
        RocksTuning::from_pairs(&[("state.backend.rocksdb.manifest.max-file-size", "2mb")])
            .unwrap();
    drop(one_value_tuned(dir.path(), tuning));
    let db = options_section(dir.path(), "[DBOptions]");
    assert!(db.contains("max_manifest_file_size=2097152"), "configured");
}

/// A RocksDB snapshot view is a checkpoint inside the database directory (hard links need the
/// same filesystem): it exists while the view lives and is removed with it; one a dead process
/// left is removed when the database opens, and a live process's view is not touched.
#[test]
fn rocksdb_snapshot_views_clean_up_after_themselves() {
    use crate::states::Keyed;
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("db");
    let views = || -> Vec<String> {
        std::fs::read_dir(&db)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".statefs-view-"))
            .collect()
    };
    let mut kb: Keyed<u32, crate::RocksBackend> =
        Keyed::new(crate::RocksBackend::open(&db, KeyGroupRange::all(128), 128).unwrap());
    let v = kb.value_state::<u32>("v", None).unwrap();
    for i in 0..100u32 {
        kb.set_current_key(&i).unwrap();
        v.update(&mut kb, &i).unwrap();
    }
    let view = kb.backend().snapshot_view().unwrap();
    let live = views();
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0].starts_with(&format!(".statefs-view-{}-", std::process::id())));
    assert!(
        std::fs::read_dir(root.path()).unwrap().count() == 1,
        "nothing beside the database"
    );
    let bytes = snapshot::write(view.as_ref(), 0).unwrap();
    drop(view);
    assert!(views().is_empty(), "the view's checkpoint was removed");
    assert!(!bytes.is_empty());
    drop(kb);

    let stale = db.join(".statefs-view-999999999-0123");
    let alive = db.join(format!(".statefs-view-{}-0456", std::process::id()));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::create_dir_all(&alive).unwrap();
    let b = crate::RocksBackend::open(&db, KeyGroupRange::all(128), 128).unwrap();
    assert!(
        !stale.exists(),
        "a dead process's view of this database is removed"
    );
    assert!(alive.exists(), "a live process's view is not touched");
    drop(b);
}

/// RocksDB's errors reach the caller by what to do about them: a damaged database is corruption
/// (restore from a checkpoint), not an invalid argument.
#[test]
fn a_damaged_database_is_a_corruption_error() {
    use crate::error::ErrorKind;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    drop(crate::RocksBackend::open(&db, KeyGroupRange::all(128), 128).unwrap());
    std::fs::write(db.join("CURRENT"), b"MANIFEST-000001").unwrap();
    let err = crate::RocksBackend::open(&db, KeyGroupRange::all(128), 128).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
}

/// Many timers on RocksDB: memory holds at most key groups x `timer-service.cache-size` of them
/// (the rest stay in the column family), they fire in order, each once, and a restart (a new
/// service over the same database, as after a restore) finds the unfired ones. 300k here
/// (`STATEFS_TIMER_SCALE` for more; the timers bench registers and fires 2M).
#[test]
fn rocksdb_timers_at_scale_stay_within_the_head_bound() {
    use crate::states::Keyed;
    use crate::timers::{TimeDomain, TimerService};
    let n: i64 = std::env::var("STATEFS_TIMER_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let dir = tempfile::tempdir().unwrap();
    let range = KeyGroupRange::all(128);
    let mut kb: Keyed<u64, crate::RocksBackend> =
        Keyed::new(crate::RocksBackend::open(dir.path(), range, 128).unwrap());
    let mut timers: TimerService<()> = TimerService::new(&mut kb, "scale").unwrap();
    let bound = 128 * crate::timers::DEFAULT_TIMER_CACHE_SIZE;
    for i in 0..n {
        // Timestamps in a scrambled order, 7 per key.
        let ts = (i * 7_919) % n;
        kb.set_current_key(&((i / 7) as u64)).unwrap();
        timers
            .register(&mut kb, TimeDomain::EventTime, &(), ts)
            .unwrap();
        assert!(timers.in_memory() <= bound);
    }
    let mut next = 0;
    let fired = timers
        .advance_watermark(&mut kb, n / 2 - 1, |_, service, t| {
            assert_eq!(t.timestamp, next, "in order, each once");
            next += 1;
            assert!(service.in_memory() <= bound);
            Ok(())
        })
        .unwrap();
    assert_eq!(fired as i64, n / 2);
    drop(timers);
    drop(kb);
    let mut kb: Keyed<u64, crate::RocksBackend> =
        Keyed::new(crate::RocksBackend::open(dir.path(), range, 128).unwrap());
    let mut timers: TimerService<()> = TimerService::new(&mut kb, "scale").unwrap();
    assert!(timers.in_memory() <= bound);
    assert_eq!(
        timers.len(&kb, TimeDomain::EventTime).unwrap() as i64,
        n - n / 2
    );
    let fired = timers
        .advance_watermark(&mut kb, i64::MAX, |_, _, t| {
            assert_eq!(t.timestamp, next);
            next += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(fired as i64, n - n / 2);
}

/// Write-behind (`rocks/write_behind.rs`): the async State API's writes applied by a write thread.
mod rocks_write_behind {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use crate::backend::{StateBackend, StateKind, composite_key};
    use crate::keygroup::KeyGroupRange;
    use crate::{RocksBackend, StateError};

    #[derive(Debug, Clone)]
    enum Op {
        Put(usize, u8, u8, u8),
        Append(usize, u8, u8, u8),
        Delete(usize, u8, u8),
        Clear(usize, u8),
        Get(usize, u8, u8),
        /// A preload of the entry (waited for), then a read of it.
        Preload(usize, u8, u8),
        /// Asks whether the entry is in memory (which may keep a value for the read), then reads.
        ReadNow(usize, u8, u8),
        /// More puts than a batch holds (keys 100..100+n of state 0).
        Bulk(u8, u16),
        Snapshot,
        /// Write-behind off (everything applied) and on again.
        Toggle,
    }

    fn op() -> impl Strategy<Value = Op> {
        // State 0: values; state 1: a map (one-byte user keys).
        let s = 0usize..2;
        prop_oneof![
            6 => (s.clone(), 0u8..12, 0u8..3, any::<u8>()).prop_map(|(s, k, u, v)| Op::Put(s, k, u, v)),
            4 => (s.clone(), 0u8..12, 0u8..3, any::<u8>()).prop_map(|(s, k, u, v)| Op::Append(s, k, u, v)),
            2 => (s.clone(), 0u8..12, 0u8..3).prop_map(|(s, k, u)| Op::Delete(s, k, u)),
            1 => (s.clone(), 0u8..12).prop_map(|(s, k)| Op::Clear(s, k)),
            3 => (s.clone(), 0u8..12, 0u8..3).prop_map(|(s, k, u)| Op::Get(s, k, u)),
            3 => (s.clone(), 0u8..12, 0u8..3).prop_map(|(s, k, u)| Op::Preload(s, k, u)),
            3 => (s, 0u8..12, 0u8..3).prop_map(|(s, k, u)| Op::ReadNow(s, k, u)),
            1 => (any::<u8>(), 400u16..1300).prop_map(|(v, n)| Op::Bulk(v, n)),
            1 => Just(Op::Snapshot),
            1 => Just(Op::Toggle),
        ]
    }

    type Model = BTreeMap<(usize, u32, Vec<u8>), Vec<u8>>;

    fn backend(dir: &std::path::Path) -> RocksBackend {
        let mut b = RocksBackend::open(dir, KeyGroupRange::new(0, 15), 128).unwrap();
        for (name, kind) in [("v", StateKind::Value), ("m", StateKind::Map)] {
            b.register(super::super::raw_meta(name, kind, None))
                .unwrap();
        }
        b
    }

    fn ck(s: usize, k: u16, u: u8) -> Vec<u8> {
        let key = k.to_be_bytes();
        if s == 1 {
            composite_key(&key, b"", &[u])
        } else {
            composite_key(&key, b"", &[])
        }
    }

    fn kg(k: u16) -> u32 {
        u32::from(k) % 16
    }

    fn wait(p: &crate::backend::Preload) {
        while !p.take_loaded().1 {
            p.wait_news();
        }
    }

    fn listed(b: &RocksBackend) -> Model {
        let mut live = Model::new();
        for s in 0..2 {
            for (g, k, v) in b.entries(s).unwrap() {
                live.insert((s, g, k), v);
            }
        }
        live
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// With write-behind on, every read agrees with a model of all earlier writes: point reads
        /// of puts, deletes and appends not yet applied, reads after a preload or a memory probe
        /// (whose read threads may see the database before those writes), scans, snapshots and
        /// batches past the batch size. A close with writes pending keeps them all.
        #[test]
        fn reads_see_every_write_not_yet_applied(ops in proptest::collection::vec(op(), 1..120)) {
            let dir = tempfile::tempdir().unwrap();
            let mut b = backend(dir.path());
            b.write_behind(true).unwrap();
            let mut model = Model::new();
            let mut views = Vec::new();
            for op in ops {
                let get = |b: &RocksBackend, model: &Model, s: usize, k: u16, u: u8| {
                    let got = b.get(s, kg(k), &ck(s, k, u)).unwrap();
                    assert_eq!(got.as_ref(), model.get(&(s, kg(k), ck(s, k, u))), "{s} {k} {u}");
                };
                match op {
                    Op::Put(s, k, u, v) => {
                        let k = u16::from(k);
                        b.put(s, kg(k), &ck(s, k, u), &[v, v]).unwrap();
                        model.insert((s, kg(k), ck(s, k, u)), vec![v, v]);
                    }
                    Op::Append(s, k, u, v) => {
                        let k = u16::from(k);
                        b.append(s, kg(k), &ck(s, k, u), &[v]).unwrap();
                        model.entry((s, kg(k), ck(s, k, u))).or_default().push(v);
                    }
                    Op::Delete(s, k, u) => {
                        let k = u16::from(k);
                        b.delete(s, kg(k), &ck(s, k, u)).unwrap();
                        model.remove(&(s, kg(k), ck(s, k, u)));
                    }
                    Op::Clear(s, k) => {
                        let k = u16::from(k);
                        let prefix = composite_key(&k.to_be_bytes(), b"", &[]);
                        b.delete_prefix(s, kg(k), &prefix).unwrap();
                        model.retain(|(ms, g, c), _| !(*ms == s && *g == kg(k) && c.starts_with(&prefix)));
                    }
                    Op::Get(s, k, u) => get(&b, &model, s, u16::from(k), u),
                    Op::Preload(s, k, u) => {
                        let k = u16::from(k);
                        wait(&b.preload(vec![(s, kg(k), ck(s, k, u))]));
                        get(&b, &model, s, k, u);
                    }
                    Op::ReadNow(s, k, u) => {
                        let k = u16::from(k);
                        b.read_now(&(s, kg(k), ck(s, k, u)));
                        get(&b, &model, s, k, u);
                    }
                    Op::Bulk(v, n) => {
                        for k in 100..100 + n {
                            b.put(0, kg(k), &ck(0, k, 0), &[v]).unwrap();
                            model.insert((0, kg(k), ck(0, k, 0)), vec![v]);
                        }
                        get(&b, &model, 0, 100, 0);
                    }
                    Op::Snapshot => views.push((b.snapshot_view().unwrap(), model.clone())),
                    Op::Toggle => {
                        b.write_behind(false).unwrap();
                        prop_assert_eq!(&listed(&b), &model);
                        b.write_behind(true).unwrap();
                    }
                }
            }
            prop_assert_eq!(&listed(&b), &model);
            for (view, at_mark) in views {
                let mut seen = Model::new();
                for s in 0..2 {
                    for g in 0..16 {
                        for (k, v) in view.key_group_entries(s, g).unwrap() {
                            seen.insert((s, g, k), v);
                        }
                    }
                }
                prop_assert_eq!(seen, at_mark);
            }
            // Closed with write-behind on: the close applies what is pending.
            b.put(0, 3, &ck(0, 3, 0), b"last").unwrap();
            model.insert((0, 3, ck(0, 3, 0)), b"last".to_vec());
            drop(b);
            let b = backend(dir.path());
            prop_assert_eq!(&listed(&b), &model);
        }
    }

    /// A value read ahead never stands in for a write not yet applied: the read thread reads the
    /// database, which does not have the write yet; the read that follows returns the write.
    #[test]
    fn a_preload_does_not_bring_back_an_overwritten_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backend(dir.path());
        let key = ck(0, 1, 0);
        b.put(0, kg(1), &key, b"old").unwrap();
        b.flush().unwrap();
        b.write_behind(true).unwrap();
        b.put(0, kg(1), &key, b"new").unwrap();
        wait(&b.preload(vec![(0, kg(1), key.clone())]));
        assert_eq!(b.get(0, kg(1), &key).unwrap().as_deref(), Some(&b"new"[..]));
        assert!(b.read_now(&(0, kg(1), key.clone())));
        assert_eq!(b.get(0, kg(1), &key).unwrap().as_deref(), Some(&b"new"[..]));
        b.write_behind(false).unwrap();
        assert_eq!(b.get(0, kg(1), &key).unwrap().as_deref(), Some(&b"new"[..]));
    }

    /// A write out of the backend's key groups is refused at once with write-behind on, as off.
    #[test]
    fn a_write_out_of_range_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backend(dir.path());
        b.write_behind(true).unwrap();
        assert!(matches!(
            b.put(0, 16, &ck(0, 1, 0), b"x"),
            Err(StateError::KeyOutOfRange { .. })
        ));
        b.write_behind(false).unwrap();
        assert!(listed(&b).is_empty());
    }
}
