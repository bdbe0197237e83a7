//! Property test: random sequences of namespace and data operations (create, overwrite, truncate,
//! chmod, rename, link, unlink), with clean restarts, crashes, store failures and crashes
//! between an upload and its journal record, applied to the core and to a plain model on a cache
//! small enough to evict; after every step both must agree on names, contents, modes, link
//! counts and the set of objects in the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::store::{FailingRemote, FaultPlan, ObjectStoreRemote};
use crate::table::ROOT_INO;

const NAMES: [&str; 6] = ["a.sst", "b.sst", "c.sst", "MANIFEST", "d.log", "CURRENT"];
const ME: Caller = Caller { uid: 0, gid: 0 };

/// Bytes that print short in a failing case.
#[derive(Clone)]
struct Data(Vec<u8>);

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes from {:?}",
            self.0.len(),
            &self.0[..self.0.len().min(4)]
        )
    }
}

fn data() -> impl Strategy<Value = Data> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Data)
}

/// A change of a file's bytes, made through one handle (opened, changed, released).
#[derive(Debug, Clone)]
enum Change {
    /// Truncate to nothing and write `data`, optionally fsync before closing.
    Replace {
        data: Data,
        sync: bool,
    },
    Write {
        offset: u16,
        data: Data,
    },
    /// `truncate(2)` by path.
    Truncate {
        size: u16,
    },
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)` through a handle: the range reads as zeros, the size
    /// stays.
    Punch {
        offset: u16,
        len: u16,
    },
}

#[derive(Debug, Clone)]
enum Step {
    /// Creates the name if missing, then applies the change.
    Create {
        name: usize,
        change: Change,
    },
    /// Applies the change to an existing name.
    Modify {
        name: usize,
        change: Change,
        /// The store refuses every write during this step: uploads fail.
        store_down: bool,
    },
    Chmod {
        name: usize,
        perm: u16,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Link {
        from: usize,
        to: usize,
    },
    Unlink {
        name: usize,
    },
    Restart,
    Crash,
    /// Rewrites a name and syncs it; the upload lands but the journal refuses its record (as
    /// when the process dies between the two); then a crash.
    CrashAfterUpload {
        name: usize,
        data: Data,
    },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (data(), any::<bool>()).prop_map(|(data, sync)| Change::Replace { data, sync }),
        2 => (0u16..400, data()).prop_map(|(offset, data)| Change::Write { offset, data }),
        1 => (0u16..400).prop_map(|size| Change::Truncate { size }),
        1 => (0u16..400, 1u16..200).prop_map(|(offset, len)| Change::Punch { offset, len }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let name = 0..NAMES.len();
    prop_oneof![
        4 => (name.clone(), change()).prop_map(|(name, change)| Step::Create { name, change }),
        3 => (name.clone(), change(), proptest::bool::weighted(0.3))
            .prop_map(|(name, change, store_down)| Step::Modify { name, change, store_down }),
        1 => (name.clone(), 0u16..0o1000).prop_map(|(name, perm)| Step::Chmod { name, perm }),
        2 => (name.clone(), name.clone()).prop_map(|(from, to)| Step::Rename { from, to }),
        2 => (name.clone(), name.clone()).prop_map(|(from, to)| Step::Link { from, to }),
        2 => name.clone().prop_map(|name| Step::Unlink { name }),
        1 => Just(Step::Restart),
        1 => Just(Step::Crash),
        1 => (name, data()).prop_map(|(name, data)| Step::CrashAfterUpload { name, data }),
    ]
}

/// One file of the model.
#[derive(Debug, Clone)]
struct File {
    content: Vec<u8>,
    remote: bool,
    /// A remote-placed file's bytes as last uploaded (what a crash brings back: the object wins
    /// over a local copy that differs); `None` while never uploaded.
    durable: Option<Vec<u8>>,
    perm: u16,
}

/// The model: names map to file ids.
#[derive(Default, Debug)]
struct Model {
    names: BTreeMap<&'static str, u32>,
    files: BTreeMap<u32, File>,
    next: u32,
}

impl Model {
    fn gc(&mut self) {
        let live: std::collections::BTreeSet<u32> = self.names.values().copied().collect();
        self.files.retain(|id, _| live.contains(id));
    }

    /// After a crash: a remote-placed file that was uploaded is its last upload.
    fn crash(&mut self) {
        for f in self.files.values_mut() {
            if let Some(d) = &f.durable {
                f.content = d.clone();
            }
        }
    }

    /// A clean shutdown uploads every remote-placed file whose bytes changed.
    fn seal_all(&mut self) {
        for f in self.files.values_mut().filter(|f| f.remote) {
            f.durable = Some(f.content.clone());
        }
    }
}

fn apply(content: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Replace { data, .. } => *content = data.0.clone(),
        Change::Write { offset, data } => {
            let data = &data.0;
            // A zero-length write changes nothing, even past the end.
            if !data.is_empty() {
                let end = *offset as usize + data.len();
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[*offset as usize..end].copy_from_slice(data);
            }
        }
        Change::Truncate { size } => content.resize(*size as usize, 0),
        Change::Punch { offset, len } => {
            let end = (*offset as usize + *len as usize).min(content.len());
            if (*offset as usize) < end {
                content[*offset as usize..end].fill(0);
            }
        }
    }
}

/// Applies `change` to `ino` through the core; false if an upload failed on the way.
fn change_core(core: &FsCore, ino: Ino, change: &Change) -> bool {
    match change {
        Change::Replace { data, sync } => {
            let o = core.open(ino, libc::O_RDWR | libc::O_TRUNC).unwrap();
            core.write(o.fh, 0, &data.0).unwrap();
            let synced = !*sync || core.fsync(o.fh, true).is_ok();
            core.release(o.fh).is_ok() && synced
        }
        Change::Write { offset, data } => {
            let o = core.open(ino, libc::O_RDWR).unwrap();
            core.write(o.fh, *offset as u64, &data.0).unwrap();
            core.release(o.fh).is_ok()
        }
        Change::Punch { offset, len } => {
            let o = core.open(ino, libc::O_RDWR).unwrap();
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            core.fallocate(o.fh, *offset as u64, *len as u64, mode)
                .unwrap();
            core.release(o.fh).is_ok()
        }
        Change::Truncate { size } => {
            let set = SetAttr {
                size: Some(*size as u64),
                ..Default::default()
            };
            core.setattr(ino, None, set).is_ok()
        }
    }
}

/// A cache of a few hundred bytes: files are evicted, promoted and read from the store.
fn small_cache() -> crate::cache::CacheConfig {
    crate::cache::CacheConfig {
        size_limit: 700,
        reserve_size: 0,
        access_before_promote: 2,
        promote_limit: 3,
        target_file_size: 100,
        ..Default::default()
    }
}

fn run(steps: Vec<Step>) {
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let faults = FaultPlan::default();
    let remote: Arc<dyn RemoteStore> = Arc::new(FailingRemote::new(
        ObjectStoreRemote::in_memory(rt),
        faults.clone(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        FsCore::start(
            &dir.path().join("l"),
            &dir.path().join("c"),
            remote.clone(),
            small_cache(),
        )
        .unwrap()
    };
    let mut core = start();
    let mut m = Model::default();
    for step in steps {
        match step.clone() {
            Step::Create { name, change } => {
                let n = NAMES[name];
                let (attr, o) = core.create(ROOT_INO, n, 0o644, libc::O_RDWR, ME).unwrap();
                core.release(o.fh).unwrap();
                let id = *m.names.entry(n).or_insert_with(|| {
                    m.next += 1;
                    let remote = placement_for(n) == Placement::Remote;
                    m.files.insert(
                        m.next,
                        File {
                            content: Vec::new(),
                            remote,
                            // Released after its (empty) create: uploaded.
                            durable: remote.then(Vec::new),
                            perm: 0o644,
                        },
                    );
                    m.next
                });
                assert!(change_core(&core, attr.ino, &change), "{step:?}");
                let f = m.files.get_mut(&id).unwrap();
                apply(&mut f.content, &change);
                if f.remote {
                    f.durable = Some(f.content.clone());
                }
            }
            Step::Modify {
                name,
                change,
                store_down,
            } => {
                let n = NAMES[name];
                let Some(id) = m.names.get(n).copied() else {
                    continue;
                };
                let ino = core.lookup(ROOT_INO, n).unwrap().ino;
                faults.set_writes_down(store_down);
                let uploaded = change_core(&core, ino, &change);
                faults.set_writes_down(false);
                let f = m.files.get_mut(&id).unwrap();
                apply(&mut f.content, &change);
                // A change that leaves the durable bytes as they are (a truncate to the size the
                // file has) needs no upload: it succeeds with the store down too.
                let nothing_to_upload = f.durable.as_ref() == Some(&f.content);
                if f.remote && !(nothing_to_upload && uploaded) {
                    // Otherwise an upload fails exactly when the store was down.
                    assert_eq!(uploaded, !store_down, "{step:?}");
                    if uploaded {
                        f.durable = Some(f.content.clone());
                    }
                }
            }
            Step::Chmod { name, perm } => {
                let n = NAMES[name];
                let Some(id) = m.names.get(n).copied() else {
                    continue;
                };
                let ino = core.lookup(ROOT_INO, n).unwrap().ino;
                let set = SetAttr {
                    perm: Some(perm),
                    ..Default::default()
                };
                core.setattr(ino, None, set).unwrap();
                m.files.get_mut(&id).unwrap().perm = perm;
            }
            Step::Rename { from, to } => {
                let (f, t) = (NAMES[from], NAMES[to]);
                let r = core.rename(ROOT_INO, f, ROOT_INO, t, 0);
                match m.names.get(f).copied() {
                    None => assert!(matches!(r, Err(FsError::NotFound))),
                    Some(id) => {
                        r.unwrap();
                        if f != t && m.names.get(t) != Some(&id) {
                            m.names.remove(f);
                            m.names.insert(t, id);
                        }
                    }
                }
            }
            Step::Link { from, to } => {
                let (f, t) = (NAMES[from], NAMES[to]);
                let Some(id) = m.names.get(f).copied() else {
                    continue;
                };
                let ino = core.lookup(ROOT_INO, f).unwrap().ino;
                let r = core.link(ino, ROOT_INO, t);
                if m.names.contains_key(t) {
                    assert!(matches!(r, Err(FsError::Exists)));
                } else {
                    r.unwrap();
                    m.names.insert(t, id);
                }
            }
            Step::Unlink { name } => {
                let n = NAMES[name];
                let r = core.unlink(ROOT_INO, n);
                if m.names.remove(n).is_some() {
                    r.unwrap()
                } else {
                    assert!(matches!(r, Err(FsError::NotFound)))
                }
            }
            Step::Restart => {
                core.shutdown().unwrap();
                drop(core);
                core = start();
                m.seal_all();
            }
            Step::Crash => {
                core.halt();
                drop(core);
                core = start();
                m.crash();
            }
            Step::CrashAfterUpload { name, data } => {
                let n = NAMES[name];
                let Some(id) = m.names.get(n).copied() else {
                    continue;
                };
                let ino = core.lookup(ROOT_INO, n).unwrap().ino;
                let o = core.open(ino, libc::O_RDWR | libc::O_TRUNC).unwrap();
                core.write(o.fh, 0, &data.0).unwrap();
                // Poison the journal: the upload below lands, its record is refused.
                core.ns.fail_syncs(1);
                core.fsyncdir().unwrap_err();
                let _ = core.fsync(o.fh, true);
                let _ = core.release(o.fh);
                core.halt();
                drop(core);
                core = start();
                // Local bytes survive a crash; a remote file is its last upload (or, never
                // uploaded, its staging file).
                m.files.get_mut(&id).unwrap().content = data.0;
                m.crash();
            }
        }
        m.gc();
        check(&core, &m, remote.as_ref(), &step);
    }
    core.shutdown().unwrap();
}

fn check(core: &FsCore, m: &Model, remote: &dyn RemoteStore, step: &Step) {
    let fh = core.opendir(ROOT_INO).unwrap();
    let listed: Vec<String> = core
        .readdir(fh)
        .unwrap()
        .iter()
        .skip(2)
        .map(|e| e.name.clone())
        .collect();
    core.releasedir(fh);
    let expected: Vec<String> = m.names.keys().map(|s| s.to_string()).collect();
    assert_eq!(listed, expected, "after {step:?}");
    for (name, id) in &m.names {
        let attr = core.lookup(ROOT_INO, name).unwrap();
        let links = m.names.values().filter(|i| *i == id).count() as u32;
        assert_eq!(attr.nlink, links, "{name} after {step:?}");
        let f = &m.files[id];
        assert_eq!(attr.perm, f.perm, "{name} after {step:?}");
        assert_eq!(attr.size, f.content.len() as u64, "{name} after {step:?}");
        let o = core.open(attr.ino, libc::O_RDONLY).unwrap();
        let got = core.read(o.fh, 0, 4096).unwrap();
        assert!(got == f.content, "{name} after {step:?}: {:?}", Data(got));
        core.release(o.fh).unwrap();
    }
    // Every uploaded remote-placed file has exactly its object; nothing else is in the store
    // once what a crash left unnamed is released (at the start after it).
    core.settle();
    let uploaded = m.files.values().filter(|f| f.durable.is_some()).count();
    let objects = remote.list("data/").unwrap();
    if objects.len() != uploaded {
        let table = core.ns.read();
        let named: Vec<_> = table
            .nodes()
            .filter_map(|n| {
                Some((
                    n.meta.ino,
                    n.nlink,
                    n.meta.file()?.sealed.as_ref()?.key.clone(),
                ))
            })
            .collect();
        panic!(
            "objects after {step:?}: {} in the store, {uploaded} expected\nstore: {:?}\njournal: {named:?}\nmodel: {m:?}",
            objects.len(),
            objects.iter().map(|o| &o.key).collect::<Vec<_>>()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn core_agrees_with_model(steps in proptest::collection::vec(step(), 1..80)) {
        run(steps);
    }
}
