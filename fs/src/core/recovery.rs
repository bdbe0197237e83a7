//! Opening a core: locking the local dir, replaying the journal and reconciling it with the files on
//! disk after a clean unmount or a crash.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Deleter, Doomed, FsCore, now_ns};
use crate::cache::{CacheConfig, CacheIndex, LimitPolicy, StatvfsFreeSpace};
use crate::journal::{Journal, JournalError};
use crate::placement::Placement;
use crate::store::{RemoteStore, StoreError};
use crate::table::{MappingTable, NodeKind, Op, ROOT_INO, Stamp};

/// Fails at mount, with the store's own words, rather than at the first fsync.
fn probe(remote: &dyn RemoteStore) -> Result<(), OpenError> {
    match remote.head("data/.statefs-probe") {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(OpenError::Remote(e)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("local dir {path} is in use by another statefs mount{holder}")]
    LocalDirInUse { path: PathBuf, holder: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot recover the mapping journal: {0}")]
    Journal(#[from] JournalError),
    #[error("object store is not usable: {0}")]
    Remote(#[from] StoreError),
    #[error("--restore needs a fresh local dir, but {0} already holds a filesystem")]
    NotFresh(PathBuf),
    #[error("cannot restore: {0}")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("restore failed (nothing was kept): {0}")]
    Restore(String),
    #[error(
        "local dir {path}: the local files of {} are gone (removed outside statefs?); their synced bytes are lost. \
         The mount was refused. Restore a checkpoint into a fresh local dir, or accept the loss with \
         `statefs fsck --drop-missing` (removes those names), then mount again",
        names.join(", ")
    )]
    MissingLocalFiles { path: PathBuf, names: Vec<String> },
    #[error("{what} {path} is not this mount's: {why}")]
    NotOurs {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error(
        "local dir {path} belongs to mount {mount_id}, whose record is gone from the store: it was forgotten \
         (statefs mounts forget), so gc may have deleted its objects. It cannot be mounted again; \
         restore a checkpoint into a fresh local dir instead (statefs fsck shows what is missing)"
    )]
    Forgotten { path: PathBuf, mount_id: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OpenError + 'a {
    move |source| OpenError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the exclusive lock of the local dir, recording our pid for the error message of the next
/// taker. The lock is released by the kernel when the process dies, so a crashed mount never leaves a
/// stale lock behind.
fn lock_local_dir(local_dir: &Path) -> Result<File, OpenError> {
    let path = local_dir.join("LOCK");
    let (mut file, locked) = try_lock(&path)?;
    if let Err(err) = locked {
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(OpenError::LocalDirInUse {
                path: local_dir.to_path_buf(),
                holder,
            });
        }
        return Err(OpenError::Io {
            what: "cannot lock",
            path,
            source: err,
        });
    }
    // The pid is only for the next taker's error message: a full disk that refuses it is no
    // reason to refuse the mount.
    if let Err(e) = file
        .set_len(0)
        .and_then(|_| writeln!(file, "{}", std::process::id()))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot record the pid in the lock file");
    }
    Ok(file)
}

/// Opens (creating) the lock file at `path` and tries to take its exclusive lock without waiting:
/// the file, and whether the lock was taken (the kernel releases it when the process dies).
fn try_lock(path: &Path) -> Result<(File, std::io::Result<()>), OpenError> {
    let file = crate::private::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("cannot open lock file", path))?;
    let locked = if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    Ok((file, locked))
}

/// This local dir's mount id, created at its first mount; and whether it existed before.
fn mount_id(local_dir: &Path) -> Result<(String, bool), OpenError> {
    let path = local_dir.join("MOUNT_ID");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => Ok((s.trim().to_string(), true)),
        Ok(_) => Err(OpenError::Io {
            what: "damaged mount id in",
            path,
            source: std::io::Error::other("not a UUID"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            let tmp = local_dir.join("MOUNT_ID.tmp");
            crate::private::write(&tmp, format!("{id}\n"))
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .and_then(|_| File::open(local_dir)?.sync_all())
                .map_err(io_err("cannot write", &path))?;
            Ok((id, false))
        }
        Err(e) => Err(OpenError::Io {
            what: "cannot read",
            path,
            source: e,
        }),
    }
}

/// A local dir made ready and locked, with its mount id.
struct LocalDir {
    lock: File,
    cache_lock: File,
    mount_id: String,
    /// The mount id was there before this start: the dir has been mounted.
    known: bool,
    local_files: PathBuf,
    cache_files: PathBuf,
}

fn open_local(local_dir: &Path, cache_dir: &Path) -> Result<LocalDir, OpenError> {
    let local_files = local_dir.join("files");
    let cache_files = cache_dir.join("files");
    for dir in [local_dir, cache_dir] {
        crate::private::create_dir_all(dir).map_err(io_err("cannot create directory", dir))?;
    }
    let lock = lock_local_dir(local_dir)?;
    let (mount_id, known) = mount_id(local_dir)?;
    // Another mount's cache dir is no local dir of ours: recovery would clean its files.
    if let Some(owner) = cache_owner(local_dir)?
        && owner != mount_id
    {
        return Err(OpenError::NotOurs {
            what: "local dir",
            path: local_dir.to_path_buf(),
            why: format!("it is the cache dir of mount {owner}"),
        });
    }
    let cache_lock = own_cache_dir(cache_dir, local_dir, &mount_id)?;
    // Both dirs are this mount's now: a dir made by hand with a wider mode is made private
    // before any file bytes land in it (its lock and mark hold no data).
    for dir in [local_dir, cache_dir, &local_files, &cache_files] {
        crate::private::own_dir(dir).map_err(io_err("cannot create directory", dir))?;
    }
    Ok(LocalDir {
        lock,
        cache_lock,
        mount_id,
        known,
        local_files,
        cache_files,
    })
}

/// The mount a cache dir is marked with (`CACHE_ID`), if any.
fn cache_owner(dir: &Path) -> Result<Option<String>, OpenError> {
    let path = dir.join("CACHE_ID");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OpenError::Io {
            what: "cannot read",
            path,
            source: e,
        }),
    }
}

/// Takes the cache dir for mount `mount_id`: locked (`CACHE_LOCK`) like the local dir, and
/// marked with the mount's id (`CACHE_ID`). Recovery deletes every file of `<cache>/files` its
/// journal does not name, so a dir that is not this mount's is refused, never cleaned: another
/// mount's cache dir (marked with its id, or locked), another mount's local dir, or any other
/// non-empty directory.
fn own_cache_dir(cache_dir: &Path, local_dir: &Path, mount_id: &str) -> Result<File, OpenError> {
    let refuse = |why: String| OpenError::NotOurs {
        what: "cache dir",
        path: cache_dir.to_path_buf(),
        why,
    };
    let path = cache_dir.join("CACHE_LOCK");
    let (lock, locked) = try_lock(&path)?;
    match locked {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            return Err(refuse("another statefs mount is using it".into()));
        }
        Err(source) => {
            return Err(OpenError::Io {
                what: "cannot lock",
                path,
                source,
            });
        }
    }
    match cache_owner(cache_dir)? {
        Some(owner) if owner == mount_id => return Ok(lock),
        Some(owner) => {
            return Err(refuse(format!(
                "it belongs to mount {owner}; give each mount its own cache dir (or empty this one)"
            )));
        }
        None => {}
    }
    let same_as_local =
        std::fs::canonicalize(cache_dir).ok() == std::fs::canonicalize(local_dir).ok();
    if !same_as_local {
        if let Ok(other) = std::fs::read_to_string(cache_dir.join("MOUNT_ID")) {
            return Err(refuse(format!(
                "it is the local dir of mount {}",
                other.trim()
            )));
        }
        let entries = std::fs::read_dir(cache_dir).map_err(io_err("cannot read", cache_dir))?;
        for e in entries {
            let e = e.map_err(io_err("cannot read", cache_dir))?;
            let name = e.file_name();
            let empty_files = name == "files"
                && std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_none());
            if name != "CACHE_LOCK" && !empty_files {
                return Err(refuse(format!(
                    "it is not empty ({} is there) and not marked as this mount's",
                    name.to_string_lossy()
                )));
            }
        }
    }
    let tmp = cache_dir.join("CACHE_ID.tmp");
    crate::private::write(&tmp, format!("{mount_id}\n"))
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, cache_dir.join("CACHE_ID")))
        .and_then(|_| File::open(cache_dir)?.sync_all())
        .map_err(io_err("cannot write", &cache_dir.join("CACHE_ID")))?;
    Ok(lock)
}

/// CRC32C of a whole file.
fn crc_of(path: &Path) -> std::io::Result<u32> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

impl FsCore {
    /// Starts a fresh mount from checkpoint `id`: nothing is created unless the manifest is sound,
    /// every object it names exists with its size, and the small files are downloaded and checked.
    /// `claim` takes the checkpoint over (it becomes subject to this mount's retention).
    ///
    /// The new mount's record names the checkpoint's objects before anything is checked or
    /// trusted, and the manifest is read again after that record exists: if the checkpoint is
    /// still there then, no release or gc can delete its objects while this mount names them
    /// (invariant I3/I4 of `checkpoint::gc`).
    pub(crate) fn start_restored(
        local_dir: &Path,
        cache_dir: &Path,
        remote: Arc<dyn RemoteStore>,
        cache: CacheConfig,
        id: &str,
        claim: bool,
    ) -> Result<Arc<FsCore>, OpenError> {
        use crate::checkpoint::{self, CheckpointError};
        let journal = local_dir.join("journal");
        if std::fs::read_dir(&journal).is_ok_and(|mut d| d.next().is_some()) {
            return Err(OpenError::NotFresh(local_dir.to_path_buf()));
        }
        let m = checkpoint::load_manifest(remote.as_ref(), id)?;
        probe(remote.as_ref())?;
        let local = open_local(local_dir, cache_dir)?;
        let mount_id = local.mount_id.clone();
        let held: HashSet<String> = m.object_keys().map(str::to_string).collect();
        let borrow = checkpoint::MountRecord {
            mount_id: mount_id.clone(),
            host: checkpoint::host_name(),
            local_dir: local_dir.display().to_string(),
            updated_ms: checkpoint::now_ms(),
            keys: held.iter().cloned().collect(),
        };
        // From here on a failure removes this record again: the restore never happened.
        let forget = |e: OpenError| {
            let _ = remote.delete(&checkpoint::mount_record_key(&mount_id));
            for p in ["journal", "files", "MOUNT_ID", "metrics.addr"] {
                let p = local_dir.join(p);
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            let _ = std::fs::remove_dir_all(cache_dir.join("files"));
            let _ = std::fs::remove_file(cache_dir.join("CACHE_ID"));
            e
        };
        checkpoint::write_mount_record(remote.as_ref(), &borrow).map_err(|e| forget(e.into()))?;
        let checked = (|| {
            match checkpoint::load_manifest(remote.as_ref(), id) {
                Ok(again) if again == m => {}
                Ok(_) | Err(CheckpointError::NotFound(_)) => {
                    return Err(OpenError::Restore(format!(
                        "checkpoint {id} was dropped while it was being restored"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            checkpoint::verify_objects(remote.as_ref(), &m)?;
            let mut small = Vec::new();
            let task = crate::progress::task(
                "restore: fetching the local files (MANIFEST, OPTIONS...)",
                Some(m.files.iter().filter(|f| f.is_local()).count() as u64),
            );
            for (i, f) in m.files.iter().enumerate() {
                if !f.is_local() {
                    continue;
                }
                let bytes = remote.get(&f.key)?;
                task.add(1);
                if bytes.len() as u64 != f.size || crc32c::crc32c(&bytes) != f.crc32c {
                    return Err(OpenError::Checkpoint(CheckpointError::BadManifest {
                        id: id.to_string(),
                        why: format!(
                            "file {:?}: object {} does not match its size or checksum",
                            f.name, f.key
                        ),
                    }));
                }
                small.push((i, bytes.to_vec()));
            }
            task.done();
            Ok(small)
        })();
        let small = checked.map_err(forget)?;
        let core = Self::start_with(local_dir, cache_dir, remote.clone(), cache, local, held)
            .map_err(forget)?;
        let result = core.restore_namespace(&m, &small).and_then(|_| {
            if claim {
                core.claim(id)?;
            }
            // The journal names the checkpoint's objects now.
            core.objects.release_held();
            core.write_mount_record()
        });
        if let Err(e) = result {
            let _ = core.shutdown();
            drop(core);
            return Err(forget(OpenError::Restore(e.to_string())));
        }
        Ok(core)
    }

    /// Opens the filesystem state in `local_dir` (created if missing) with data under `cache_dir`.
    pub fn start(
        local_dir: &Path,
        cache_dir: &Path,
        remote: Arc<dyn RemoteStore>,
        cache: CacheConfig,
    ) -> Result<Arc<FsCore>, OpenError> {
        probe(remote.as_ref())?;
        let local = open_local(local_dir, cache_dir)?;
        Self::start_with(local_dir, cache_dir, remote, cache, local, HashSet::new())
    }

    fn start_with(
        local_dir: &Path,
        cache_dir: &Path,
        remote: Arc<dyn RemoteStore>,
        cache: CacheConfig,
        local: LocalDir,
        held: HashSet<String>,
    ) -> Result<Arc<FsCore>, OpenError> {
        let (journal, table) = Journal::open(&local_dir.join("journal"))?;
        // I1: a mount whose record is gone was forgotten, and gc may have taken its objects.
        // (A first start that failed before its record was written named no object.)
        let names_objects = table.publish_seq() > 0
            || table
                .nodes()
                .any(|n| n.meta.file().is_some_and(|f| f.sealed.is_some()));
        if local.known
            && names_objects
            && !crate::checkpoint::gc::mount_record_exists(remote.as_ref(), &local.mount_id)?
        {
            return Err(OpenError::Forgotten {
                path: local_dir.to_path_buf(),
                mount_id: local.mount_id,
            });
        }
        let ns = Arc::new(super::namespace::Namespace::new(table, journal));
        let deleter = Deleter::start(ns.clone(), remote.clone());
        let policy = LimitPolicy::from_config(
            cache.size_limit,
            cache.reserve_size,
            Box::new(StatvfsFreeSpace(cache_dir.to_path_buf())),
        );
        let core = Arc::new_cyclic(|me| FsCore {
            ns,
            opens: Default::default(),
            dispatch: Default::default(),
            handles: Default::default(),
            remote,
            deleter,
            cache: super::cached::CacheManager::new(
                CacheIndex::new(cache, policy),
                crate::cache::BlockCache::new(cache.blocks),
                super::cached::Loader::start(me.clone()),
                local.cache_files.clone(),
            ),
            warmer: super::warm::Warmer::new(cache.warm, me.clone()),
            publisher: super::publish::Publisher {
                manifests: Default::default(),
                registrar: super::publish::Registrar::start(me.clone()),
                retainer: super::publish::Retainer::start(me.clone()),
                retention: Mutex::new(()),
            },
            mount_id: local.mount_id,
            objects: super::objects::Objects::new(held),
            local_files: local.local_files,
            cache_files: local.cache_files,
            statfs_dir: local_dir.to_path_buf(),
            metrics: Default::default(),
            fds: Arc::new(super::fds::FdBudget::from_rlimit()),
            _dir_lock: (local.lock, local.cache_lock),
            released: Default::default(),
        });
        core.recover()?;
        // I1: the record exists before this mount creates any object.
        core.write_mount_record().map_err(|e| match e {
            crate::error::FsError::Remote(r) => OpenError::Remote(r),
            other => OpenError::Io {
                what: "writing the mount record of",
                path: local_dir.to_path_buf(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        // The copies the last run had, back in the background (a cache dir lost or emptied).
        core.load_hot_list();
        // What a crash left in the store (uploads never recorded, copies of publishes that
        // never completed) goes in the background.
        core.publisher
            .retainer
            .request(super::publish::Retention::Release);
        Ok(core)
    }

    /// Brings table and disk into agreement. Runs before any handle exists.
    fn recover(&self) -> Result<(), OpenError> {
        let mut missing = Vec::new();
        self.reconcile(&mut missing).map_err(|e| match e {
            crate::error::FsError::Journal(j) => OpenError::Journal(j),
            other => OpenError::Io {
                what: "recovery failed in",
                path: self.statfs_dir.clone(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        if missing.is_empty() {
            return Ok(());
        }
        let paths = crate::fsck::paths(&self.ns.read());
        let mut names: Vec<String> = missing
            .iter()
            .map(|ino| {
                paths
                    .get(ino)
                    .cloned()
                    .unwrap_or_else(|| format!("<inode {ino}>"))
            })
            .collect();
        names.sort();
        Err(OpenError::MissingLocalFiles {
            path: self.statfs_dir.clone(),
            names,
        })
    }

    /// Brings table and disk into agreement; local-placed files whose backing file is gone are
    /// listed in `missing`.
    fn reconcile(&self, missing: &mut Vec<crate::table::Ino>) -> crate::error::FsResult<()> {
        let mut doomed = Vec::new();
        let mut present = Vec::new();
        let mut absent = Vec::new();
        {
            let mut w = self.ns.writer();
            let has_root = w.table().get(ROOT_INO).is_some();
            if !has_root {
                let uid = nix::unistd::geteuid().as_raw();
                let gid = nix::unistd::getegid().as_raw();
                w.commit(&[MappingTable::root_op(0o755, uid, gid, now_ns())])?;
            }
            // Nameless inodes were open when the previous mount ended: nobody holds them now.
            let orphans: Vec<_> = w
                .table()
                .nodes()
                .filter(|n| n.nlink == 0 && n.meta.ino != ROOT_INO)
                .map(|n| n.meta.clone())
                .collect();
            for meta in orphans {
                doomed.extend(self.doomed_data(&meta));
                w.commit(&[Op::DropInode(meta.ino)])?;
            }
            let mut referenced = HashSet::new();
            let mut restamp = Vec::new();
            let table = w.table();
            for node in table.nodes() {
                let NodeKind::File(f) = &node.meta.kind else {
                    continue;
                };
                let path = self.local_path(f);
                referenced.insert(path.clone());
                match (std::fs::metadata(&path), &f.sealed) {
                    (Ok(md), Some(s)) => {
                        let stamp = Stamp {
                            size: md.len(),
                            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                        };
                        // A copy is served only if it is exactly the synced version: same stamp, same
                        // checksum. Otherwise (changes after the last sync, a partial or damaged
                        // copy) the object is the truth.
                        let why = if s.local_stamp != Some(stamp) {
                            Some("differs from the synced version")
                        } else if crc_of(&path)? != s.crc32c {
                            Some("fails its checksum")
                        } else {
                            None
                        };
                        match why {
                            Some(why) => {
                                tracing::warn!(ino = node.meta.ino, path = %path.display(), "local copy {why}; dropping it");
                                std::fs::remove_file(&path)?;
                                restamp.push(node.meta.clone());
                                absent.push((f.local_id, s.size));
                            }
                            None => present.push((f.local_id, s.size)),
                        }
                    }
                    (Ok(_), None) => {}
                    (Err(_), Some(s)) => {
                        if s.local_stamp.is_some() {
                            restamp.push(node.meta.clone());
                        }
                        absent.push((f.local_id, s.size));
                    }
                    // A local-placed file's backing file is created before the journal names
                    // it, and its directory entry is synced before any fsync returns: one that
                    // is missing was removed outside statefs (or the dir is shared with another
                    // mount), and its synced bytes are lost. That is damage to report, never to
                    // paper over with an empty file.
                    (Err(_), None) if f.placement == Placement::Local => {
                        missing.push(node.meta.ino);
                    }
                    (Err(_), None) => {
                        // An SST never synced: nothing of it was acknowledged.
                        tracing::warn!(ino = node.meta.ino, path = %path.display(), "staging file of a never-synced file missing; recreating it empty");
                        crate::private::options()
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .open(&path)?;
                    }
                }
            }
            drop(table);
            for mut meta in restamp {
                if let NodeKind::File(f) = &mut meta.kind
                    && let Some(s) = &mut f.sealed
                {
                    s.local_stamp = None;
                }
                w.commit(&[Op::PutInode(meta)])?;
            }
            // Files no inode names: creates that never reached the journal, removals cut short,
            // interrupted downloads.
            for dir in [&self.local_files, &self.cache_files] {
                for entry in std::fs::read_dir(dir)? {
                    let path = entry?.path();
                    if !referenced.contains(&path) {
                        tracing::info!(path = %path.display(), "removing a file no inode names");
                        std::fs::remove_file(&path)?;
                    }
                }
            }
            // Compaction only shortens the replay of the next start: one that does not fit on a
            // full disk is put off (the journal retries it after more records), never a reason to
            // refuse the mount.
            if let Err(e) = w.compact() {
                tracing::warn!(error = %e, "journal compaction at mount put off");
            }
        }
        // The cache index is rebuilt from what is on disk: verified copies are hot (as far as the
        // limits allow), the rest cold.
        let mut demoted = Vec::new();
        {
            let mut cache = self.cache.index();
            for (id, size) in present {
                demoted.extend(cache.register_present(id, size));
            }
            for (id, size) in absent {
                cache.register_cold(id, size, false);
            }
        }
        self.drop_copies(demoted);
        self.deleter.queue(
            doomed
                .into_iter()
                .filter(|d| matches!(d, Doomed::Object(_))),
        );
        Ok(())
    }
}
