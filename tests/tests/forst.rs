//! ForSt mode: the RocksDB backend on a statefs mount.

use statefs::store::RemoteStore;
use statefs_backend::checkpoint::CheckpointStorage;
use statefs_backend::conformance;
use statefs_backend::keygroup::KeyGroupRange;
use statefs_backend::states::Keyed;
use statefs_backend::{
    Checkpointed, ForstBackend, ForstHome, HeapBackend, OperatorState, RocksBackend, StateBackend,
    TimeDomain, TimerService,
};
use statefs_tests::Dirs;

fn forst(range: KeyGroupRange, maxp: u32) -> Box<dyn StateBackend> {
    let dirs = Dirs::new();
    let b = ForstBackend::open(&dirs.config(), &dirs.mnt, range, maxp).unwrap();
    Box::new(b.keeping(Box::new(dirs)))
}

#[test]
fn forst_passes_the_conformance_suite_unchanged() {
    conformance::run_all(&forst);
}

/// The timer sections with heads of 2 timers per key group (the key ForSt users set:
/// `state.backend.forst.timer-service.cache-size`): heads spill to the column family on the
/// mount and reload from it as timers fire.
#[test]
fn forst_timers_with_a_small_head_cache() {
    let small = |range: KeyGroupRange, maxp: u32| -> Box<dyn StateBackend> {
        let dirs = Dirs::new();
        let tuning = statefs_backend::rocks_options::RocksTuning::from_pairs(&[(
            "state.backend.forst.timer-service.cache-size",
            "2",
        )])
        .unwrap();
        let b =
            ForstBackend::open_tuned(&dirs.config(), &dirs.mnt, range, maxp, None, tuning).unwrap();
        assert_eq!(b.timer_cache_size(), Some(2));
        Box::new(b.keeping(Box::new(dirs)))
    };
    conformance::timers_fire_in_order_once(&small);
    conformance::timers_restore_and_rescale(&small);
    conformance::timers_snapshot_while_firing(&small);
}

/// The checkpoint interface: job checkpoints of ForSt backends (handles naming statefs
/// checkpoints, each on its own mount of one store) restore and rescale like the others'.
#[test]
fn forst_checkpoints_restore_and_rescale() {
    let dirs = Dirs::new();
    let rt = statefs::mount::runtime().unwrap();
    let job_store = statefs::store::RemoteSpec::parse(&format!(
        "file://{}",
        dirs.root.path().join("jobs").display()
    ))
    .unwrap()
    .open(&Default::default(), rt)
    .unwrap();
    let mut storage = CheckpointStorage::open(std::sync::Arc::new(job_store), "job", 10).unwrap();
    let place = |name: &str| {
        let root = dirs.root.path().join(name);
        std::fs::create_dir_all(root.join("mnt")).unwrap();
        let config =
            statefs::MountConfig::new(dirs.remote_url(), root.join("local"), root.join("cache"));
        (config, root.join("mnt"))
    };
    let open = |name: &str, range| {
        let (config, mnt) = place(name);
        ForstBackend::open(&config, &mnt, range, 128).unwrap()
    };
    let home = |name: &str| {
        let (config, mnt) = place(name);
        ForstHome::new(config, mnt)
    };
    conformance::checkpoints_restore_and_rescale(&mut storage, &open, &home);
    conformance::operator_state_in_checkpoints(&storage, &open, &home);
}

fn write(kb: &mut Keyed<String, ForstBackend>, n: u32, round: u32) {
    let v = kb.value_state::<u32>("v", None).unwrap();
    let m = kb.map_state::<u32, u32>("m", None).unwrap();
    for i in 0..n {
        kb.set_current_key(&format!("k{i}")).unwrap();
        v.update(kb, &(i + round)).unwrap();
        m.put(kb, &1, &round).unwrap();
    }
}

fn check<B: StateBackend>(kb: &mut Keyed<String, B>, n: u32, round: u32) {
    let v = kb.value_state::<u32>("v", None).unwrap();
    let m = kb.map_state::<u32, u32>("m", None).unwrap();
    for i in 0..n {
        kb.set_current_key(&format!("k{i}")).unwrap();
        assert_eq!(v.value(kb).unwrap(), Some(i + round), "k{i}");
        assert_eq!(m.get(kb, &1).unwrap(), Some(round));
    }
}

/// Restores checkpoint `id` (key groups `range`) on a fresh mount of its own under `dirs`, named
/// `name`.
fn restore_at(
    dirs: &Dirs,
    name: &str,
    id: &str,
    range: KeyGroupRange,
) -> Keyed<String, ForstBackend> {
    let root = dirs.root.path().join(name);
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    let config =
        statefs::MountConfig::new(dirs.remote_url(), root.join("local"), root.join("cache"));
    Keyed::new(ForstBackend::restore_published(&config, &root.join("mnt"), id, range, 128).unwrap())
}

#[test]
fn forst_checkpoint_copies_no_sst_and_restores_lazily() {
    let dirs = Dirs::new();
    let range = KeyGroupRange::all(128);
    let mut kb = Keyed::new(ForstBackend::open(&dirs.config(), &dirs.mnt, range, 128).unwrap());
    write(&mut kb, 20_000, 1);
    kb.backend().rocks().compact_all().unwrap();
    let before: std::collections::BTreeSet<_> =
        dirs.remote_objects().into_iter().map(|(k, _)| k).collect();
    let id = kb.backend_mut().publish(0).unwrap().id;
    let after: std::collections::BTreeSet<_> =
        dirs.remote_objects().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        before, after,
        "the checkpoint uploaded no SST (the flush before it had nothing to write)"
    );
    // The source keeps going.
    write(&mut kb, 20_000, 2);
    kb.backend().rocks().compact_all().unwrap();

    let mut rkb = restore_at(&dirs, "restored", &id, range);
    // A savepoint's view of the restored database (the root of its mount) hard-links its SSTs on
    // the mount; it does not copy them (which would download every one).
    let view = rkb.backend().snapshot_view().unwrap();
    let ssts: Vec<_> = std::fs::read_dir(rkb.backend().db_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".statefs-view-")
        })
        .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    assert!(!ssts.is_empty(), "the view holds the SSTs");
    for p in &ssts {
        use std::os::unix::fs::MetadataExt;
        assert!(
            std::fs::metadata(p).unwrap().nlink() >= 2,
            "{} is a copy, not a link",
            p.display()
        );
    }
    drop(view);
    check(&mut rkb, 20_000, 1);
    check(&mut kb, 20_000, 2);
}

#[test]
fn savepoints_migrate_heap_rocksdb_forst_heap() {
    let range = KeyGroupRange::all(128);
    let mut heap: Keyed<String, HeapBackend> = Keyed::new(HeapBackend::new(range, 128));
    let v = heap.value_state::<u32>("v", None).unwrap();
    let m = heap.map_state::<u32, u32>("m", None).unwrap();
    let mut timers: TimerService<u32> = TimerService::new(&mut heap, "window").unwrap();
    for i in 0..3_000 {
        heap.set_current_key(&format!("k{i}")).unwrap();
        v.update(&mut heap, &(i + 7)).unwrap();
        m.put(&mut heap, &1, &7).unwrap();
        timers
            .register(&mut heap, TimeDomain::EventTime, &(i % 5), i as i64)
            .unwrap();
    }
    // Savepoints through checkpoint storage: keyed state (and timers) from each backend, and an
    // operator's state (2 instances, then 3, then 1) beside it.
    let rt = statefs::store::runtime().unwrap();
    let store = std::sync::Arc::new(statefs::store::ObjectStoreRemote::in_memory(rt));
    let storage = CheckpointStorage::open(store.clone(), "migrate", 1).unwrap();
    let mut two = vec![OperatorState::new(), OperatorState::new()];
    for (i, st) in two.iter_mut().enumerate() {
        let offsets = st.list_state::<u32>("offsets").unwrap();
        offsets.update(st, &[i as u32 * 10, i as u32 * 10 + 1]);
        st.broadcast_state::<String, u32>("rules")
            .put(st, &"limit".into(), &5);
    }
    let savepoint = |name: &str, b: &dyn StateBackend, ops: &[OperatorState]| {
        storage.savepoint(name, b, 0).unwrap();
        storage
            .savepoint_operator_state(name, "source", ops)
            .unwrap();
        store
            .get(&format!("migrate/savepoints/{name}/state"))
            .unwrap()
    };
    let restore_ops = |name: &str, p: u32| -> Vec<OperatorState> {
        (0..p)
            .map(|i| {
                storage
                    .restore_savepoint_operator_state(name, "source", i, p)
                    .unwrap()
            })
            .collect()
    };
    let sp1 = savepoint("sp1", heap.backend(), &two);
    let mut rocks = RocksBackend::temporary(range, 128).unwrap();
    storage.restore_savepoint("sp1", &mut rocks).unwrap();
    let three = restore_ops("sp1", 3);
    savepoint("sp2", &rocks, &three);
    let dirs = Dirs::new();
    let mut forst = ForstBackend::open(&dirs.config(), &dirs.mnt, range, 128).unwrap();
    storage.restore_savepoint("sp2", &mut forst).unwrap();
    let one = restore_ops("sp2", 1);
    let sp3 = savepoint("sp3", &forst, &one);
    let mut back: Keyed<String, HeapBackend> = Keyed::new(HeapBackend::new(range, 128));
    storage
        .restore_savepoint("sp3", back.backend_mut())
        .unwrap();
    let mut last = restore_ops("sp3", 1).remove(0);
    let offsets = last.list_state::<u32>("offsets").unwrap();
    assert_eq!(
        offsets.get(&mut last).unwrap(),
        [0, 1, 10, 11],
        "split 2 -> 3 -> 1"
    );
    let rules = last.broadcast_state::<String, u32>("rules");
    assert_eq!(rules.get(&mut last, &"limit".into()).unwrap(), Some(5));
    assert!(
        storage
            .savepoint_operator_state("sp3", "source", &one)
            .is_err(),
        "a savepoint is written once"
    );
    check(&mut back, 3_000, 7);
    assert_eq!(sp1, sp3, "every backend writes the same canonical bytes");
    // The timers came along: each fires once, in order, with its key and namespace.
    let mut timers: TimerService<u32> = TimerService::new(&mut back, "window").unwrap();
    let mut fired = Vec::new();
    timers
        .advance_watermark(&mut back, i64::MAX, |_, _, t| {
            assert_eq!(t.key, format!("k{}", t.timestamp));
            assert_eq!(t.namespace, t.timestamp as u32 % 5);
            fired.push(t.timestamp);
            Ok(())
        })
        .unwrap();
    assert_eq!(fired, (0..3_000).collect::<Vec<i64>>());
}

#[test]
fn forst_restore_rescales_by_clipping() {
    let dirs = Dirs::new();
    let all = KeyGroupRange::all(128);
    let mut kb = Keyed::new(ForstBackend::open(&dirs.config(), &dirs.mnt, all, 128).unwrap());
    write(&mut kb, 5_000, 3);
    let id = kb.backend_mut().publish(0).unwrap().id;
    drop(kb);
    let mut total = 0;
    for i in 0..2 {
        let range = KeyGroupRange::for_operator(128, 2, i);
        let mut sub = restore_at(&dirs, &format!("sub{i}"), &id, range);
        let v = sub.value_state::<u32>("v", None).unwrap();
        let mut owned = 0;
        for k in 0..5_000u32 {
            if sub.set_current_key(&format!("k{k}")).is_ok() {
                assert_eq!(v.value(&mut sub).unwrap(), Some(k + 3));
                owned += 1;
            }
        }
        assert_eq!(
            sub.keys("v").unwrap().len(),
            owned,
            "only this subtask's keys remain"
        );
        total += owned;
    }
    assert_eq!(total, 5_000, "every key in exactly one subtask");
}

/// ForSt mode reads the same tuning keys, from a Flink-style YAML file, and RocksDB on the mount
/// runs with them (its OPTIONS file says so).
#[test]
fn forst_applies_tuning_keys_from_yaml() {
    let dirs = Dirs::new();
    let yaml = dirs.root.path().join("config.yaml");
    std::fs::write(
        &yaml,
        "state:\n  backend:\n    forst:\n      writebuffer.size: 2mb\n      block.blocksize: 16kb\n",
    )
    .unwrap();
    let tuning = statefs_backend::rocks_options::RocksTuning::from_yaml_file(&yaml).unwrap();
    let b = ForstBackend::open_tuned(
        &dirs.config(),
        &dirs.mnt,
        KeyGroupRange::all(128),
        128,
        None,
        tuning,
    )
    .unwrap();
    let db_dir = b.db_dir().to_path_buf();
    let mut kb: Keyed<u32, ForstBackend> = Keyed::new(b);
    let v = kb.value_state::<u32>("v", None).unwrap();
    kb.set_current_key(&1).unwrap();
    v.update(&mut kb, &1).unwrap();
    let newest = statefs_backend::rocks_options::latest_options_file(&db_dir).unwrap();
    let options = std::fs::read_to_string(newest).unwrap();
    let section = &options[options.find("[CFOptions \"state-v\"]").unwrap()..];
    assert!(section.contains("write_buffer_size=2097152"), "{section}");
    assert!(section.contains("block_size=16384"), "{section}");
    // ForSt's own default where the configuration is silent: four background jobs.
    assert!(options.contains("max_background_jobs=4"), "{options}");
    drop(kb);
    drop(dirs);
}

/// Scaling in: two subtasks' ForSt checkpoints restore into one backend holding every key of both,
/// exactly once. A single checkpoint cannot stand in for both, and the scratch mounts and
/// directories are gone afterwards.
#[test]
fn forst_scale_in_merges_two_checkpoints() {
    let dirs = Dirs::new();
    let remote = dirs.remote_url();
    let mut ids = Vec::new();
    let mut owned = Vec::new();
    for sub in 0..2u32 {
        let root = dirs.root.path().join(format!("sub{sub}"));
        std::fs::create_dir_all(root.join("mnt")).unwrap();
        let config =
            statefs::MountConfig::new(remote.clone(), root.join("local"), root.join("cache"));
        let range = KeyGroupRange::for_operator(128, 2, sub);
        let mut kb: Keyed<String, ForstBackend> =
            Keyed::new(ForstBackend::open(&config, &root.join("mnt"), range, 128).unwrap());
        let v = kb.value_state::<u32>("v", None).unwrap();
        let l = kb.list_state::<u32>("l", None).unwrap();
        let mut mine = 0;
        for i in 0..4_000u32 {
            if kb.set_current_key(&format!("k{i}")).is_ok() {
                v.update(&mut kb, &i).unwrap();
                l.add(&mut kb, &i).unwrap();
                l.add(&mut kb, &(i + 1)).unwrap();
                mine += 1;
            }
        }
        owned.push(mine);
        ids.push(kb.backend_mut().publish(0).unwrap().id);
    }
    assert!(
        owned.iter().all(|n| *n > 1_000),
        "both subtasks own keys: {owned:?}"
    );

    let all = KeyGroupRange::all(128);
    let root = dirs.root.path().join("merged");
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    let config = statefs::MountConfig::new(remote.clone(), root.join("local"), root.join("cache"));
    let err = ForstBackend::restore_published(&config, &root.join("mnt"), &ids[0], all, 128)
        .expect_err("one subtask's checkpoint does not hold every key group")
        .to_string();
    assert!(err.contains("restore_published_merged"), "{err}");
    let fresh = |name: &str| {
        let r = dirs.root.path().join(name);
        std::fs::create_dir_all(r.join("mnt")).unwrap();
        (
            statefs::MountConfig::new(remote.clone(), r.join("local"), r.join("cache")),
            r.join("mnt"),
        )
    };
    let (c, m) = fresh("half");
    let err = ForstBackend::restore_published_merged(&c, &m, &[ids[1].as_str()], all, 128)
        .expect_err("half the key groups")
        .to_string();
    assert!(err.contains("do not hold key group"), "{err}");

    let (c, m) = fresh("both");
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut kb: Keyed<String, ForstBackend> =
        Keyed::new(ForstBackend::restore_published_merged(&c, &m, &id_refs, all, 128).unwrap());
    let v = kb.value_state::<u32>("v", None).unwrap();
    let l = kb.list_state::<u32>("l", None).unwrap();
    for i in 0..4_000u32 {
        kb.set_current_key(&format!("k{i}")).unwrap();
        assert_eq!(v.value(&mut kb).unwrap(), Some(i), "k{i}");
        assert_eq!(l.get(&mut kb).unwrap(), vec![i, i + 1], "k{i}");
    }
    assert_eq!(kb.keys("v").unwrap().len(), 4_000, "every key exactly once");
    // The other checkpoint's entries came in as ingested SSTs, written in a scratch directory on
    // the mount and linked into the database; the scratch directory is gone.
    let on_mount: Vec<_> = std::fs::read_dir(&m)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".statefs-"))
        .collect();
    assert!(
        on_mount.is_empty(),
        "scratch left on the mount: {on_mount:?}"
    );
    drop(kb);
    let leftovers: Vec<_> = std::fs::read_dir(dirs.root.path().join("both"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".statefs-merge-"))
        .collect();
    assert!(leftovers.is_empty(), "scratch left: {leftovers:?}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(".statefs-merge-"),
        "a scratch mount is still mounted"
    );
}

/// No hard-link directory (a `.statefs-view-` directory inside the database: RocksDB's
/// Checkpoint, the fallback, makes one) outlives a checkpoint, and one a crash left behind (whose
/// hard links would keep SST objects forever) goes at the next open.
#[test]
fn forst_removes_checkpoint_link_dirs() {
    let dirs = Dirs::new();
    let range = KeyGroupRange::all(128);
    let link_dirs = |db: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(db)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".statefs-view-"))
            .collect()
    };
    let mut kb = Keyed::new(ForstBackend::open(&dirs.config(), &dirs.mnt, range, 128).unwrap());
    write(&mut kb, 2_000, 1);
    kb.backend_mut().publish(2).unwrap();
    write(&mut kb, 2_000, 2);
    kb.backend_mut().publish(2).unwrap();
    let db = kb.backend().db_dir().to_path_buf();
    // What a crash between linking and removing leaves: a directory of hard links to live SSTs,
    // named for a process that no longer exists.
    let stale = db.join(".statefs-view-999999999-left-by-a-crash");
    std::fs::create_dir(&stale).unwrap();
    let sst = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sst"))
        .expect("an SST after the flushes");
    std::fs::hard_link(&sst, stale.join("000001.sst")).unwrap();
    drop(kb);

    let mut kb = Keyed::new(ForstBackend::open(&dirs.config(), &dirs.mnt, range, 128).unwrap());
    assert_eq!(link_dirs(&db), Vec::<String>::new());
    check(&mut kb, 2_000, 2);
    kb.backend_mut().publish(2).unwrap();
    drop(kb);
    let kb = ForstBackend::open(&dirs.config(), &dirs.mnt, range, 128).unwrap();
    assert_eq!(link_dirs(&db), Vec::<String>::new());
    drop(kb);
}

/// Checkpoints name the live database's files while RocksDB compacts in the background: small
/// write buffers flush often and keep compactions running, and each checkpoint restores exactly
/// the round it was taken after. None of them needs RocksDB's Checkpoint (no link directory).
#[test]
fn forst_checkpoints_of_the_live_directory_restore_exactly_while_compactions_run() {
    let dirs = Dirs::new();
    let range = KeyGroupRange::all(128);
    let tuning = statefs_backend::rocks_options::RocksTuning::from_pairs(&[
        ("state.backend.rocksdb.writebuffer.size", "64kb"),
        (
            "state.backend.rocksdb.compaction.level.target-file-size-base",
            "64kb",
        ),
        (
            "state.backend.rocksdb.compaction.level.max-size-level-base",
            "256kb",
        ),
    ])
    .unwrap();
    let b = ForstBackend::open_tuned(&dirs.config(), &dirs.mnt, range, 128, None, tuning).unwrap();
    let mut kb = Keyed::new(b);
    let mut ids = Vec::new();
    for round in 1..=6 {
        write(&mut kb, 8_000, round);
        ids.push(kb.backend_mut().publish(0).unwrap().id);
    }
    assert_eq!(kb.backend().checkpoint_sources(), (6, 0));
    for (round, id) in ids.iter().enumerate().skip(1).step_by(2) {
        let mut rkb = restore_at(&dirs, &format!("restored-{round}"), id, range);
        check(&mut rkb, 8_000, round as u32 + 1);
        // It keeps working as a database of its own: new files get numbers of their own. Its
        // database is the root of its mount, and its own checkpoints name that root's files.
        write(&mut rkb, 8_000, 100 + round as u32);
        rkb.backend().rocks().compact_all().unwrap();
        check(&mut rkb, 8_000, 100 + round as u32);
        let again = rkb.backend_mut().publish(0).unwrap().id;
        assert_eq!(rkb.backend().checkpoint_sources(), (1, 0));
        let mut rrkb = restore_at(&dirs, &format!("again-{round}"), &again, range);
        check(&mut rrkb, 8_000, 100 + round as u32);
    }
    check(&mut kb, 8_000, 6);
}

/// A live directory statefs does not understand (here: CURRENT names no MANIFEST) is not guessed
/// at: the checkpoint falls back to RocksDB's Checkpoint on the mount, and restores exactly.
#[test]
fn forst_falls_back_to_rocksdb_checkpoint_when_the_live_directory_is_not_understood() {
    let dirs = Dirs::new();
    let range = KeyGroupRange::all(128);
    let mut kb = Keyed::new(ForstBackend::open(&dirs.config(), &dirs.mnt, range, 128).unwrap());
    write(&mut kb, 3_000, 1);
    let current = kb.backend().db_dir().join("CURRENT");
    let real = std::fs::read(&current).unwrap();
    std::fs::write(&current, b"not a manifest name\n").unwrap();
    let id = kb.backend_mut().publish(0).unwrap().id;
    std::fs::write(&current, &real).unwrap();
    assert_eq!(kb.backend().checkpoint_sources(), (0, 1));
    let mut rkb = restore_at(&dirs, "restored", &id, range);
    check(&mut rkb, 3_000, 1);
}

/// RocksDB starts a new MANIFEST when the current one outgrows `manifest.max-file-size`; the
/// checkpoints around the switch name the MANIFEST that CURRENT named when they read it, and
/// restore exactly.
#[test]
fn forst_checkpoints_across_a_manifest_switch_restore_exactly() {
    let dirs = Dirs::new();
    let range = KeyGroupRange::all(128);
    let tuning = statefs_backend::rocks_options::RocksTuning::from_pairs(&[
        ("state.backend.rocksdb.writebuffer.size", "64kb"),
        ("state.backend.rocksdb.manifest.max-file-size", "64kb"),
    ])
    .unwrap();
    let b = ForstBackend::open_tuned(&dirs.config(), &dirs.mnt, range, 128, None, tuning).unwrap();
    let current = b.db_dir().join("CURRENT");
    let mut kb = Keyed::new(b);
    let first = std::fs::read(&current).unwrap();
    let mut checkpoints = Vec::new();
    let mut round = 0;
    while std::fs::read(&current).unwrap() == first {
        round += 1;
        assert!(round <= 300, "no MANIFEST switch after {round} rounds");
        write(&mut kb, 300, round);
        let id = kb.backend_mut().publish(0).unwrap().id;
        checkpoints.push((round, id));
    }
    // One more after the switch, on the new MANIFEST.
    round += 1;
    write(&mut kb, 300, round);
    checkpoints.push((round, kb.backend_mut().publish(0).unwrap().id));
    assert_eq!(kb.backend().checkpoint_sources(), (round as u64, 0));
    let n = checkpoints.len();
    for (round, id) in [&checkpoints[0], &checkpoints[n - 2], &checkpoints[n - 1]] {
        let mut rkb = restore_at(&dirs, &format!("restored-{round}"), id, range);
        check(&mut rkb, 300, *round);
    }
}

/// Job checkpoints of a ForSt backend with retention: the statefs checkpoints the retained job
/// checkpoints name always exist (the oldest retained one restores), and the backend drops the
/// others, including the one of an aborted job checkpoint, one checkpoint late.
#[test]
fn forst_drops_the_statefs_checkpoints_of_subsumed_job_checkpoints() {
    let dirs = Dirs::new();
    let rt = statefs::mount::runtime().unwrap();
    let open = |url: &str| {
        statefs::store::RemoteSpec::parse(url)
            .unwrap()
            .open(&Default::default(), rt.clone())
            .unwrap()
    };
    let jobs = format!("file://{}", dirs.root.path().join("jobs").display());
    let mut storage = CheckpointStorage::open(std::sync::Arc::new(open(&jobs)), "job", 2).unwrap();
    let statefs_store = open(&dirs.remote_url());
    let range = KeyGroupRange::all(128);
    let mut kb = Keyed::new(ForstBackend::open(&dirs.config(), &dirs.mnt, range, 128).unwrap());
    let named = |storage: &CheckpointStorage| -> Vec<String> {
        let mut ids = Vec::new();
        for id in storage.completed_ids().unwrap() {
            let c = storage.load(id).unwrap();
            for t in &c.subtasks {
                let handle: serde_json::Value =
                    serde_json::from_slice(&storage.remote().get(&t.file).unwrap()).unwrap();
                ids.push(handle["statefs_checkpoint"].as_str().unwrap().to_string());
            }
        }
        ids
    };
    for round in 1..=6u32 {
        write(&mut kb, 200, round);
        let mut p = storage.begin(round as u64, 128);
        kb.backend_mut().checkpoint(&mut p).unwrap();
        if round == 3 {
            p.abort().unwrap();
        } else {
            p.complete().unwrap();
        }
        kb.backend_mut().wait_for_release();
        let existing = statefs::checkpoint::list_ids(&statefs_store).unwrap();
        for id in named(&storage) {
            assert!(existing.contains(&id), "round {round}: {id} is gone");
        }
        // Those retained after the previous checkpoint (2), the aborted one until it is
        // subsumed, and this one.
        assert!(existing.len() <= 4, "round {round}: {existing:?}");
    }
    drop(kb);
    let existing = statefs::checkpoint::list_ids(&statefs_store).unwrap();
    let mut want = named(&storage);
    assert_eq!(storage.completed_ids().unwrap(), vec![5, 6]);
    // The release started with checkpoint 6 saw checkpoints 4 and 5 retained: checkpoint 4's
    // statefs checkpoint remains, nothing older.
    want.sort();
    assert!(
        existing.len() <= 3 && want.iter().all(|id| existing.contains(id)),
        "{existing:?} vs {want:?}"
    );
    // The oldest retained job checkpoint restores, on a fresh mount.
    let c = storage.load(5).unwrap();
    let root = dirs.root.path().join("restored");
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    let config =
        statefs::MountConfig::new(dirs.remote_url(), root.join("local"), root.join("cache"));
    let restored = ForstBackend::restore(
        &storage,
        &c,
        range,
        ForstHome::new(config, root.join("mnt")),
    );
    let mut restored = Keyed::new(restored.unwrap());
    check(&mut restored, 200, 5);
}
