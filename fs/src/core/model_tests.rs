//! Property test: random sequences of namespace and data operations, with clean restarts and crashes,
//! applied to the core and to a plain model; after every step both must agree on names, contents,
//! link counts and the set of objects in the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::store::ObjectStoreRemote;
use crate::table::ROOT_INO;

const NAMES: [&str; 6] = ["a.sst", "b.sst", "c.sst", "MANIFEST", "d.log", "CURRENT"];
const ME: Caller = Caller { uid: 0, gid: 0 };

#[derive(Debug, Clone)]
enum Step {
    Create {
        name: usize,
        data: Vec<u8>,
        sync: bool,
    },
    Overwrite {
        name: usize,
        offset: u16,
        data: Vec<u8>,
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
}

fn step() -> impl Strategy<Value = Step> {
    let name = 0..NAMES.len();
    let data = proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        4 => (name.clone(), data.clone(), any::<bool>()).prop_map(|(name, data, sync)| Step::Create { name, data, sync }),
        2 => (name.clone(), 0u16..400, data).prop_map(|(name, offset, data)| Step::Overwrite { name, offset, data }),
        2 => (name.clone(), name.clone()).prop_map(|(from, to)| Step::Rename { from, to }),
        2 => (name.clone(), name.clone()).prop_map(|(from, to)| Step::Link { from, to }),
        2 => name.prop_map(|name| Step::Unlink { name }),
        1 => Just(Step::Restart),
        1 => Just(Step::Crash),
    ]
}

/// The model: names map to file ids; a file is its bytes and whether it is remote-placed.
#[derive(Default, Debug)]
struct Model {
    names: BTreeMap<&'static str, u32>,
    files: BTreeMap<u32, (Vec<u8>, bool)>,
    next: u32,
}

impl Model {
    fn gc(&mut self) {
        let live: std::collections::BTreeSet<u32> = self.names.values().copied().collect();
        self.files.retain(|id, _| live.contains(id));
    }
}

fn run(steps: Vec<Step>) {
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let remote: Arc<dyn RemoteStore> = Arc::new(ObjectStoreRemote::in_memory(rt));
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        FsCore::start(
            &dir.path().join("l"),
            &dir.path().join("c"),
            remote.clone(),
            crate::core::tests::test_cache(),
        )
        .unwrap()
    };
    let mut core = start();
    let mut m = Model::default();
    for step in steps {
        match step.clone() {
            Step::Create { name, data, sync } => {
                let n = NAMES[name];
                let (_, o) = core
                    .create(ROOT_INO, n, 0o644, libc::O_RDWR | libc::O_TRUNC, ME)
                    .unwrap();
                let o2 = core
                    .open(
                        core.lookup(ROOT_INO, n).unwrap().ino,
                        libc::O_RDWR | libc::O_TRUNC,
                    )
                    .unwrap();
                core.write(o2.fh, 0, &data).unwrap();
                if sync {
                    core.fsync(o2.fh, true).unwrap();
                }
                core.release(o2.fh).unwrap();
                core.release(o.fh).unwrap();
                match m.names.get(n) {
                    Some(id) => m.files.get_mut(id).unwrap().0 = data,
                    None => {
                        m.next += 1;
                        m.names.insert(n, m.next);
                        m.files
                            .insert(m.next, (data, placement_for(n) == Placement::Remote));
                    }
                }
            }
            Step::Overwrite { name, offset, data } => {
                let n = NAMES[name];
                let Some(id) = m.names.get(n) else { continue };
                let ino = core.lookup(ROOT_INO, n).unwrap().ino;
                let o = core.open(ino, libc::O_RDWR).unwrap();
                core.write(o.fh, offset as u64, &data).unwrap();
                core.release(o.fh).unwrap();
                let content = &mut m.files.get_mut(id).unwrap().0;
                // A zero-length write changes nothing, even past the end.
                if !data.is_empty() {
                    let end = offset as usize + data.len();
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[offset as usize..end].copy_from_slice(&data);
                }
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
            }
            Step::Crash => {
                core.settle();
                drop(core);
                core = start();
            }
        }
        m.gc();
        check(&core, &m, remote.as_ref(), &step);
    }
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
        let (content, _) = &m.files[id];
        assert_eq!(attr.size, content.len() as u64, "{name} after {step:?}");
        let o = core.open(attr.ino, libc::O_RDONLY).unwrap();
        assert_eq!(
            &core.read(o.fh, 0, 4096).unwrap(),
            content,
            "{name} after {step:?}"
        );
        core.release(o.fh).unwrap();
    }
    // Every live remote-placed file was uploaded at its last release; nothing else is in the store.
    core.settle();
    let remote_files = m.files.values().filter(|(_, r)| *r).count();
    assert_eq!(
        remote.list("data/").unwrap().len(),
        remote_files,
        "objects after {step:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn core_agrees_with_model(steps in proptest::collection::vec(step(), 1..40)) {
        run(steps);
    }
}
