//! Opening a core: locking the local dir, replaying the journal and reconciling it with the files on
//! disk after a clean unmount or a crash.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};

use super::{Deleter, Doomed, FsCore, State, now_ns};
use crate::cache::{CacheConfig, CacheIndex, LimitPolicy, StatvfsFreeSpace};
use crate::journal::{Journal, JournalError};
use crate::store::{RemoteStore, StoreError};
use crate::table::{MappingTable, NodeKind, Op, ROOT_INO, Stamp};

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
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("cannot open lock file", &path))?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
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

/// This local dir's mount id, created at its first mount.
fn mount_id(local_dir: &Path) -> Result<String, OpenError> {
    let path = local_dir.join("MOUNT_ID");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => Ok(s.trim().to_string()),
        Ok(_) => Err(OpenError::Io {
            what: "damaged mount id in",
            path,
            source: std::io::Error::other("not a UUID"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            let tmp = local_dir.join("MOUNT_ID.tmp");
            std::fs::write(&tmp, format!("{id}\n"))
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(io_err("cannot write", &path))?;
            Ok(id)
        }
        Err(e) => Err(OpenError::Io {
            what: "cannot read",
            path,
            source: e,
        }),
    }
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
    pub fn start_restored(
        local_dir: &Path,
        cache_dir: &Path,
        remote: Arc<dyn RemoteStore>,
        cache: CacheConfig,
        id: &str,
        claim: bool,
    ) -> Result<Arc<FsCore>, OpenError> {
        let journal = local_dir.join("journal");
        if std::fs::read_dir(&journal).is_ok_and(|mut d| d.next().is_some()) {
            return Err(OpenError::NotFresh(local_dir.to_path_buf()));
        }
        let m = crate::checkpoint::load_manifest(remote.as_ref(), id)?;
        crate::checkpoint::verify_objects(remote.as_ref(), &m)?;
        let mut small = Vec::new();
        for (i, f) in m.files.iter().enumerate() {
            if f.key.starts_with("data/") {
                continue;
            }
            let bytes = remote.get(&f.key)?;
            if bytes.len() as u64 != f.size || crc32c::crc32c(&bytes) != f.crc32c {
                return Err(OpenError::Checkpoint(
                    crate::checkpoint::CheckpointError::BadManifest {
                        id: id.to_string(),
                        why: format!(
                            "file {:?}: object {} does not match its size or checksum",
                            f.name, f.key
                        ),
                    },
                ));
            }
            small.push((i, bytes.to_vec()));
        }
        let core = Self::start(local_dir, cache_dir, remote.clone(), cache)?;
        let result = core.restore_namespace(&m, &small).and_then(|_| {
            if claim {
                remote.put(
                    &crate::checkpoint::claim_key(id),
                    bytes::Bytes::from(core.mount_id.clone()),
                )?;
            }
            core.write_mount_record()
        });
        if let Err(e) = result {
            let _ = core.shutdown();
            drop(core);
            // The local dir was fresh: remove what this attempt made, so a retry starts clean.
            for p in ["journal", "files", "MOUNT_ID", "metrics.addr"] {
                let p = local_dir.join(p);
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            let _ = std::fs::remove_dir_all(cache_dir.join("files"));
            return Err(OpenError::Restore(e.to_string()));
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
        let local_files = local_dir.join("files");
        let cache_files = cache_dir.join("files");
        for dir in [local_dir, &local_files, cache_dir, &cache_files] {
            std::fs::create_dir_all(dir).map_err(io_err("cannot create directory", dir))?;
        }
        let dir_lock = lock_local_dir(local_dir)?;
        // Fail at mount, with the store's own words, rather than at the first fsync.
        match remote.head("data/.statefs-probe") {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(OpenError::Remote(e)),
        }
        let mount_id = mount_id(local_dir)?;
        let (journal, table) = Journal::open(&local_dir.join("journal"))?;
        let state = Arc::new(Mutex::new(State { table, journal }));
        let deleter = Deleter::start(state.clone(), remote.clone());
        let policy = LimitPolicy::from_config(
            cache.size_limit,
            cache.reserve_size,
            Box::new(StatvfsFreeSpace(cache_dir.to_path_buf())),
        );
        let core = Arc::new_cyclic(|me| FsCore {
            state,
            open: Mutex::new(HashMap::new()),
            handles: RwLock::new(HashMap::new()),
            dir_handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            remote,
            deleter,
            blocks: crate::cache::BlockCache::new(cache.blocks),
            cache: Mutex::new(CacheIndex::new(cache, policy)),
            loader: super::cached::Loader::start(me.clone()),
            registrar: super::publish::Registrar::start(me.clone()),
            retainer: super::publish::Retainer::start(me.clone()),
            retention: Mutex::new(()),
            mount_id,
            record_dirty: std::sync::atomic::AtomicBool::new(false),
            manifests: Default::default(),
            local_files,
            cache_files,
            statfs_dir: local_dir.to_path_buf(),
            metrics: Default::default(),
            _dir_lock: dir_lock,
        });
        core.recover()
            .and_then(|_| core.write_mount_record())
            .map_err(|e| match e {
                crate::error::FsError::Journal(j) => OpenError::Journal(j),
                other => OpenError::Io {
                    what: "recovery failed in",
                    path: local_dir.to_path_buf(),
                    source: std::io::Error::other(other.to_string()),
                },
            })?;
        Ok(core)
    }

    /// Brings table and disk into agreement. Runs before any handle exists.
    fn recover(&self) -> crate::error::FsResult<()> {
        let mut doomed = Vec::new();
        let mut present = Vec::new();
        let mut absent = Vec::new();
        {
            let mut st = self.state.lock();
            if st.table.get(ROOT_INO).is_none() {
                let uid = nix::unistd::geteuid().as_raw();
                let gid = nix::unistd::getegid().as_raw();
                Self::commit(&mut st, &[MappingTable::root_op(0o755, uid, gid, now_ns())])?;
            }
            // Nameless inodes were open when the previous mount ended: nobody holds them now.
            let orphans: Vec<_> = st
                .table
                .nodes()
                .filter(|n| n.nlink == 0 && n.meta.ino != ROOT_INO)
                .map(|n| n.meta.clone())
                .collect();
            for meta in orphans {
                doomed.extend(self.doomed_data(&meta));
                Self::commit(&mut st, &[Op::DropInode(meta.ino)])?;
            }
            let mut referenced = HashSet::new();
            let mut restamp = Vec::new();
            for node in st.table.nodes() {
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
                    (Err(_), None) => {
                        // Local-placed or never synced: created but its bytes never reached the disk.
                        tracing::warn!(ino = node.meta.ino, path = %path.display(), "backing file missing; recreating it empty");
                        std::fs::OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .open(&path)?;
                    }
                }
            }
            for mut meta in restamp {
                if let NodeKind::File(f) = &mut meta.kind
                    && let Some(s) = &mut f.sealed
                {
                    s.local_stamp = None;
                }
                Self::commit(&mut st, &[Op::PutInode(meta)])?;
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
            let State { table, journal } = &mut *st;
            if let Err(e) = journal.compact(table) {
                tracing::warn!(error = %e, "journal compaction at mount put off");
            }
        }
        // The cache index is rebuilt from what is on disk: verified copies are hot (as far as the
        // limits allow), the rest cold.
        let mut demoted = Vec::new();
        {
            let mut cache = self.cache.lock();
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
