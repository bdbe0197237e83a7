//! Tests of what must never be lost: crashes on a full disk, failed journal syncs, and (with the
//! store's fault layer) ambiguous and failing object-store calls.

use std::path::Path;
use std::sync::Arc;

use super::tests::{Env, test_cache};
use super::*;
use crate::table::ROOT_INO;

const ME: Caller = Caller { uid: 0, gid: 0 };
const RW: i32 = libc::O_RDWR;

fn start_at(local: &Path, cache: &Path, remote: Arc<dyn RemoteStore>) -> Arc<FsCore> {
    FsCore::start(local, cache, remote, test_cache()).unwrap()
}

/// Creates `name` in the root, writes `data`, fsyncs and closes it.
fn write_synced(core: &FsCore, name: &str, data: &[u8]) -> Ino {
    let (attr, o) = core.create(ROOT_INO, name, 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, data).unwrap();
    core.fsync(o.fh, true).unwrap();
    core.release(o.fh).unwrap();
    attr.ino
}

fn read_name(core: &FsCore, name: &str) -> Vec<u8> {
    let attr = core.lookup(ROOT_INO, name).unwrap();
    let o = core.open(attr.ino, libc::O_RDONLY).unwrap();
    let data = core.read(o.fh, 0, attr.size as u32 + 1).unwrap();
    core.release(o.fh).unwrap();
    data
}

/// A "kill -9": the core goes away without a shutdown (no compaction, no final record).
fn crash(core: Arc<FsCore>) {
    core.deleter.shutdown();
    drop(core);
}

/// After a crash on a full local disk the mount comes back (a compaction that does not fit is put
/// off, as during operation), with every synced byte.
#[test]
fn a_crash_on_a_full_local_disk_remounts_with_everything_synced() {
    let env = Env::new();
    let small = crate::testing::SmallFs::new(8 << 20);
    let (local, cache) = (small.path().join("local"), small.path().join("cache"));
    let wal: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let sst: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let core = start_at(&local, &cache, env.remote.clone());
    write_synced(&core, "000003.log", &wal);
    write_synced(&core, "000004.sst", &sst);
    let filler = small.fill();
    crash(core);
    let core = FsCore::start(&local, &cache, env.remote.clone(), test_cache())
        .expect("a full disk must not refuse the remount");
    assert_eq!(read_name(&core, "000003.log"), wal);
    assert_eq!(read_name(&core, "000004.sst"), sst);
    // Metadata goes on, and once space is back so do writes.
    core.rename(ROOT_INO, "000003.log", ROOT_INO, "000003.old", 0)
        .unwrap();
    std::fs::remove_file(filler).unwrap();
    write_synced(&core, "000005.log", b"after");
    core.shutdown().unwrap();
}

/// A failed journal sync poisons the mount's journal: that fsync and every later one fail with
/// EIO (never a success that a retried fdatasync would give after a writeback error), and so
/// does every operation that needs a record, until a remount replays what is on disk.
#[test]
fn a_failed_journal_sync_fails_every_later_fsync_with_eio() {
    let env = Env::new();
    let local = env.dir.path().join("local");
    let cache = env.dir.path().join("cache");
    let core = start_at(&local, &cache, env.remote.clone());
    write_synced(&core, "CURRENT", b"MANIFEST-000001\n");
    let (_, o) = core.create(ROOT_INO, "000001.log", 0o644, RW, ME).unwrap();
    core.write(o.fh, 0, b"record").unwrap();
    core.state.lock().journal.fail_syncs(1);
    let eio = |r: FsResult<()>| matches!(r, Err(e) if e.errno() == libc::EIO);
    assert!(eio(core.fsync(o.fh, true)));
    assert!(eio(core.fsync(o.fh, true)), "a retried fsync is no proof");
    assert!(eio(core.fsyncdir()));
    assert!(
        core.create(ROOT_INO, "000002.log", 0o644, RW, ME)
            .is_err_and(|e| e.errno() == libc::EIO)
    );
    core.release(o.fh).unwrap();
    crash(core);
    let core = start_at(&local, &cache, env.remote.clone());
    assert_eq!(read_name(&core, "CURRENT"), b"MANIFEST-000001\n");
    write_synced(&core, "000002.log", b"after the remount");
    core.shutdown().unwrap();
}
