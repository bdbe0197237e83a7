//! Checkpoints from the core's side: publishing a directory of the mount, restoring one into a fresh
//! mount, and the mount record that keeps a running mount's objects safe from GC.
//!
//! Publish order, so that a crash at any step leaves no checkpoint that names a missing object:
//! 1. every remote-placed file is sealed (uploaded);
//! 2. copies of the local-placed files go to `checkpoints/<id>/files/`;
//! 3. the referenced objects become *borrowed* in the journal, with the checkpoint's sequence
//!    number (synced): from now on RocksDB deleting a file no longer deletes its object;
//! 4. the mount record is rewritten;
//! 5. the manifest is written if absent — the checkpoint exists from this moment.
//!
//! From step 1 to step 5 every object the checkpoint names is in flight (`FsCore::in_flight`):
//! the mount's release of its orphans keeps them and its record names them, even if RocksDB
//! drops an SST meanwhile (invariant I3 of `checkpoint::gc`).

use bytes::Bytes;

use super::FsCore;
use super::worker::Worker;
use crate::checkpoint::{self, CheckpointError, Manifest, ManifestFile, MountRecord};
use crate::error::{FsError, FsResult};
use crate::placement::Placement;
use crate::store::StoreError;
use crate::table::{FileMeta, Ino, InodeMeta, NodeKind, Op, Ownership, ROOT_INO, Sealed};

/// A published checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub files: usize,
    /// Bytes of SST objects referenced (not copied).
    pub referenced_bytes: u64,
    /// Bytes of small files copied.
    pub copied_bytes: u64,
    /// Older checkpoints dropped by retention.
    pub dropped: Vec<String>,
    /// Why retention failed after the checkpoint was complete, if it did.
    pub retention_error: Option<String>,
    /// Retention was handed to the mount's background worker (`MountHandle::checkpoint_with`):
    /// `dropped` and `retention_error` say nothing; the worker logs what it drops.
    pub retention_deferred: bool,
}

/// A file of a checkpoint published with [`MountHandle::checkpoint_files`](crate::MountHandle::checkpoint_files); `name` is its path inside the
/// checkpoint (relative, `/`-separated), `path` a file's path relative to the mount root.
#[derive(Debug, Clone)]
pub enum CheckpointFile {
    /// A file of the mount: referenced if remote-placed (sealed first), copied if local-placed.
    Mounted { name: String, path: String },
    /// As `Mounted`, except that a remote-placed file not sealed yet, or gone, is left out: for a
    /// caller naming every SST of a directory while some are still being written, which knows that
    /// only synced files can matter to it (RocksDB syncs an SST before its MANIFEST names it).
    SealedOnly { name: String, path: String },
    /// Bytes the caller gives, stored as a copy.
    Bytes { name: String, data: Bytes },
}

enum Source {
    Ino { ino: Ino, sealed_only: bool },
    Data(Bytes),
}

/// Where a copied file's bytes come from.
enum CopyFrom {
    Local(std::path::PathBuf),
    Data(Bytes),
}

/// Small files a publish uploads at once.
const COPY_PARALLELISM: usize = 8;

impl From<CheckpointError> for FsError {
    fn from(e: CheckpointError) -> FsError {
        match e {
            CheckpointError::Remote(r) => FsError::Remote(r),
            other => FsError::Internal(other.to_string()),
        }
    }
}

impl FsCore {
    /// The inode at `path` (relative to the mount root, `/`-separated).
    pub(crate) fn resolve(&self, path: &str) -> FsResult<Ino> {
        let table = self.ns.read();
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let node = table.get(ino).ok_or(FsError::NotFound)?;
            if !node.meta.is_dir() {
                return Err(FsError::NotDir);
            }
            ino = if part == ".." {
                node.parent
            } else {
                *node.children.get(part).ok_or(FsError::NotFound)?
            };
        }
        Ok(ino)
    }

    /// Files below directory `dir`, with their paths relative to it.
    fn files_below(&self, dir: Ino) -> FsResult<Vec<(String, Ino)>> {
        let table = self.ns.read();
        let root = table.get(dir).ok_or(FsError::NotFound)?;
        if !root.meta.is_dir() {
            return Err(FsError::NotDir);
        }
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), dir)];
        while let Some((prefix, d)) = stack.pop() {
            let node = table.get(d).ok_or(FsError::NotFound)?;
            for (name, child) in &node.children {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                // Checkpoints hold directories and regular files: symlinks and special files
                // are left out (SEMANTICS.md).
                match table.get(*child).map(|n| &n.meta.kind) {
                    Some(NodeKind::Dir) => stack.push((path, *child)),
                    Some(NodeKind::File(_)) => out.push((path, *child)),
                    _ => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Publishes directory `path` of the mount as a checkpoint; keeps the newest `retained` of this
    /// mount's checkpoints (0 = keep all), dropping older ones before it returns.
    pub fn publish(&self, path: &str, retained: usize) -> FsResult<Published> {
        self.publish_with(path, retained, false)
    }

    /// [`FsCore::publish`], with retention optionally deferred to the mount's background worker:
    /// the checkpoint is complete when this returns, and the older ones are dropped shortly after
    /// (before unmount finishes at the latest). On a distant store retention is a listing and a few
    /// deletions, as many round trips as the publish itself; a caller timing its checkpoints (as
    /// Flink's, which discards subsumed checkpoints asynchronously) need not wait for them.
    pub(crate) fn publish_with(
        &self,
        path: &str,
        retained: usize,
        defer_retention: bool,
    ) -> FsResult<Published> {
        let dir = self.resolve(path)?;
        let span = tracing::info_span!("publish", path);
        let _e = span.enter();
        let files = self.files_below(dir)?;
        let sources = files
            .into_iter()
            .map(|(name, ino)| {
                (
                    name,
                    Source::Ino {
                        ino,
                        sealed_only: false,
                    },
                )
            })
            .collect();
        self.publish_sources(sources, retained, defer_retention)
    }

    /// Publishes a checkpoint made of `files`, named as given, without a directory to hold them:
    /// a caller that knows which files of the mount make a consistent state (RocksDB's live files
    /// and a MANIFEST prefix) saves the links and copies of assembling one. Retention as in
    /// `FsCore::publish_with`. Fails with `FsError::Invalid` on a name a restore would refuse
    /// (not a relative path of ordinary components) or one given twice.
    pub(crate) fn publish_files(
        &self,
        files: Vec<CheckpointFile>,
        retained: usize,
        defer_retention: bool,
    ) -> FsResult<Published> {
        let span = tracing::info_span!("publish_files", files = files.len());
        let _e = span.enter();
        let mut names = std::collections::HashSet::new();
        let mut sources = Vec::with_capacity(files.len());
        for f in files {
            let (name, source) = match f {
                CheckpointFile::Mounted { name, path } => {
                    let ino = self.resolve(&path)?;
                    (
                        name,
                        Source::Ino {
                            ino,
                            sealed_only: false,
                        },
                    )
                }
                CheckpointFile::SealedOnly { name, path } => match self.resolve(&path) {
                    Ok(ino) => (
                        name,
                        Source::Ino {
                            ino,
                            sealed_only: true,
                        },
                    ),
                    Err(FsError::NotFound) => continue,
                    Err(e) => return Err(e),
                },
                CheckpointFile::Bytes { name, data } => (name, Source::Data(data)),
            };
            // A manifest a restore would refuse is never written.
            if let Err(why) = checkpoint::check_name(&name) {
                tracing::warn!(%why, "checkpoint file name refused");
                return Err(FsError::Invalid(
                    "checkpoint file name is not a relative path",
                ));
            }
            if !names.insert(name.clone()) {
                return Err(FsError::Invalid("checkpoint file named twice"));
            }
            sources.push((name, source));
        }
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        self.publish_sources(sources, retained, defer_retention)
    }

    fn publish_sources(
        &self,
        sources: Vec<(String, Source)>,
        retained: usize,
        defer_retention: bool,
    ) -> FsResult<Published> {
        let id = checkpoint::new_id();
        if let Some(refused) = self.ns.refusal() {
            return Err(refused.into());
        }
        let span = tracing::info_span!("checkpoint", %id);
        let _e = span.enter();
        // Phase ends, for the trace: where a slow publish spent its time.
        let start = std::time::Instant::now();
        let mut entries = Vec::new();
        let mut borrowed = Vec::new();
        // Files copied: their entry's index and where their bytes come from.
        let mut copies: Vec<(usize, CopyFrom)> = Vec::new();
        let mut copied_bytes = 0;
        // The hot list (see `warm.rs`): each local copy's rank, most recently used first.
        let heat = self.hot_ranks();
        let mut in_flight = self.in_flight();
        for (name, source) in sources {
            let (ino, sealed_only) = match source {
                Source::Ino { ino, sealed_only } => (ino, sealed_only),
                Source::Data(data) => {
                    copies.push((entries.len(), CopyFrom::Data(data)));
                    entries.push(self.copy_entry(name, &mut in_flight));
                    continue;
                }
            };
            // An optional (`SealedOnly`) file that goes away meanwhile is left out.
            let f = match self.file_meta(ino) {
                Err(FsError::NotFound) if sealed_only => continue,
                other => other?,
            };
            match f.placement {
                Placement::Remote => {
                    if sealed_only && f.sealed.is_none() {
                        continue;
                    }
                    self.seal_if_needed(ino)?;
                    let f = match self.file_meta(ino) {
                        Err(FsError::NotFound) if sealed_only => continue,
                        other => other?,
                    };
                    let s = f.sealed.clone().ok_or_else(|| {
                        FsError::Internal(format!("{name} not sealed after sync"))
                    })?;
                    in_flight.add(s.key.clone());
                    borrowed.push((entries.len(), ino, s.key.clone(), sealed_only));
                    entries.push(ManifestFile {
                        name,
                        key: s.key,
                        size: s.size,
                        crc32c: s.crc32c,
                        local: false,
                        heat: heat.get(&f.local_id).copied(),
                    });
                }
                Placement::Local => {
                    copies.push((entries.len(), CopyFrom::Local(self.local_path(&f))));
                    entries.push(self.copy_entry(name, &mut in_flight));
                }
            }
        }
        let named_us = start.elapsed().as_micros() as u64;
        // The small files (MANIFEST, OPTIONS, CURRENT...) are a few requests' latency apart on a
        // distant store, not bandwidth: they go up at once, each read by the worker that sends it
        // (at most COPY_PARALLELISM of them in memory). The manifest names them only after every
        // one is stored.
        let task = crate::progress::task(
            &format!("checkpoint {id}: storing the local files"),
            Some(copies.len() as u64),
        );
        let copied = checkpoint::in_parallel(&copies, COPY_PARALLELISM, |(at, copy)| {
            let data = match copy {
                CopyFrom::Local(path) => Bytes::from(std::fs::read(path)?),
                CopyFrom::Data(data) => data.clone(),
            };
            let (size, crc) = (data.len() as u64, crc32c::crc32c(&data));
            self.remote.put(&entries[*at].key, data)?;
            task.add(1);
            FsResult::Ok((size, crc))
        });
        task.done();
        for ((at, _), copy) in copies.iter().zip(copied) {
            let (size, crc) = copy?;
            entries[*at].size = size;
            entries[*at].crc32c = crc;
            copied_bytes += size;
        }
        let copied_us = start.elapsed().as_micros() as u64;
        // From here on the mount never deletes these objects. A file removed or rewritten since
        // it was sealed above may have lost its object already: an optional one is left out, any
        // other fails the publish (nothing is borrowed then, and nothing visible was written).
        let mut gone = Vec::new();
        let mut referenced_bytes = 0;
        let seq;
        {
            let mut w = self.ns.writer();
            let table = w.table();
            let mut ops = Vec::new();
            for (at, ino, key, optional) in &borrowed {
                let mut meta = match table.get(*ino) {
                    Some(node) => node.meta.clone(),
                    None => {
                        gone.push((*at, *optional));
                        continue;
                    }
                };
                match &mut meta.kind {
                    NodeKind::File(FileMeta {
                        sealed: Some(s), ..
                    }) if &s.key == key => {
                        referenced_bytes += s.size;
                        if s.ownership == Ownership::Owned {
                            s.ownership = Ownership::Borrowed;
                            ops.push(Op::PutInode(meta));
                        }
                    }
                    _ => gone.push((*at, *optional)),
                }
            }
            if let Some((at, _)) = gone.iter().find(|(_, optional)| !optional) {
                return Err(FsError::Internal(format!(
                    "{} was removed or rewritten while it was being published",
                    entries[*at].name
                )));
            }
            // The checkpoint's place in this mount's order, from the journal: retention follows
            // it, never a clock.
            seq = table.publish_seq() + 1;
            drop(table);
            ops.push(Op::PublishSeq(seq));
            w.commit(&ops)?;
        }
        // `gone` is in entry order.
        for (at, _) in gone.iter().rev() {
            entries.remove(*at);
        }
        let borrowed_us = start.elapsed().as_micros() as u64;
        self.sync_journal()?;
        let synced_us = start.elapsed().as_micros() as u64;
        self.write_mount_record()?;
        let recorded_us = start.elapsed().as_micros() as u64;
        let manifest = Manifest {
            format: checkpoint::FORMAT.into(),
            version: checkpoint::VERSION,
            id: id.clone(),
            mount_id: self.mount_id.clone(),
            created_ms: checkpoint::now_ms(),
            seq,
            files: entries,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        match self
            .remote
            .put_if_absent(&checkpoint::manifest_key(&id), Bytes::from(bytes))
        {
            Ok(()) => {}
            // Ids are random: another manifest under this id is someone else's, and ours was not
            // written; what it would have named is released as usual.
            Err(e @ StoreError::AlreadyExists { .. }) => return Err(e.into()),
            Err(e) => {
                // The create may still land (the store layer could not tell): whatever it names
                // stays named as long as this mount runs, and is found in the manifest after.
                in_flight.keep_for_the_mount();
                return Err(FsError::Remote(StoreError::Unavailable {
                    op: "put_if_absent",
                    key: checkpoint::manifest_key(&id),
                    message: format!(
                        "checkpoint {id}: the outcome of writing its manifest is unknown ({e}); it may yet appear"
                    ),
                }));
            }
        }
        self.publisher.manifests.remember(&manifest);
        drop(in_flight);
        let manifest_us = start.elapsed().as_micros() as u64;
        // The checkpoint is complete from here on. A failed retention does not make it a failed
        // publish (the caller would discard a valid checkpoint); it is reported, and the next
        // publish drops what this one could not.
        let keep = Retention::Keep {
            retained,
            just_published: id.clone(),
        };
        let retention_deferred =
            retained > 0 && defer_retention && self.publisher.retainer.request(keep);
        let (dropped, retention_error) = if retained > 0 && !retention_deferred {
            self.retain(retained, Some(&id))
        } else {
            (Vec::new(), None)
        };
        if !dropped.is_empty() {
            self.publisher.retainer.request(Retention::Release);
        }
        tracing::info!(
            files = manifest.files.len(),
            referenced_bytes,
            copied_bytes,
            dropped = dropped.len(),
            named_us,
            copied_us,
            borrowed_us,
            synced_us,
            recorded_us,
            manifest_us,
            "checkpoint published"
        );
        Ok(Published {
            id,
            files: manifest.files.len(),
            referenced_bytes,
            copied_bytes,
            dropped,
            retention_error,
            retention_deferred,
        })
    }

    /// Keeps the newest `retained` of this mount's checkpoints. One retention runs at a time (a
    /// deferred one and a caller's could otherwise drop the same checkpoint twice). Returns what
    /// it dropped, or why it failed: the checkpoints it could not drop are dropped next time.
    fn retain(
        &self,
        retained: usize,
        just_published: Option<&str>,
    ) -> (Vec<String>, Option<String>) {
        let _one = self.publisher.retention.lock();
        let of = checkpoint::RetentionOf {
            mount_id: &self.mount_id,
            seq_now: self.ns.read().publish_seq(),
            just_published,
        };
        match checkpoint::apply_retention(
            self.remote.as_ref(),
            of,
            retained,
            &self.publisher.manifests,
        ) {
            Ok(dropped) => {
                if !dropped.is_empty() {
                    tracing::info!(?dropped, retained, "retention dropped checkpoints");
                }
                (dropped, None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention after the publish failed; the next publish retries it");
                (Vec::new(), Some(e.to_string()))
            }
        }
    }

    /// Drops checkpoint `id` if this mount owns it (published or claimed it), for a caller that
    /// keeps its own retention (the ForSt backend drops what no retained job checkpoint names).
    /// The objects only it named are released off this thread. Returns whether it was dropped:
    /// a checkpoint of another mount, or one already gone, is left alone.
    pub fn drop_own_checkpoint(&self, id: &str) -> FsResult<bool> {
        let _one = self.publisher.retention.lock();
        let seq_now = self.ns.read().publish_seq();
        let ours = checkpoint::list_with(self.remote.as_ref(), &self.publisher.manifests)?
            .into_iter()
            .find(|c| c.id == id)
            .is_some_and(|c| {
                let (owner, seq) = c.owner();
                owner == self.mount_id && seq <= seq_now
            });
        if !ours {
            return Ok(false);
        }
        checkpoint::drop_checkpoint(self.remote.as_ref(), id)?;
        tracing::info!(
            checkpoint = id,
            "dropped a checkpoint its publisher released"
        );
        self.publisher.retainer.request(Retention::Release);
        Ok(true)
    }

    /// Waits until every retention deferred so far has run (tests, and tools that list the store
    /// right after a checkpoint).
    pub fn settle_retention(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.publisher.retainer.request(Retention::Barrier(tx)) {
            let _ = rx.recv();
        }
    }

    /// Every object key the journal names, and every one in flight (I3 of `checkpoint::gc`).
    fn live_keys(&self) -> std::collections::BTreeSet<String> {
        let table = self.ns.read();
        let mut keys: std::collections::BTreeSet<String> = table
            .nodes()
            .filter_map(|n| n.meta.file()?.sealed.as_ref().map(|s| s.key.clone()))
            .collect();
        drop(table);
        keys.extend(self.objects.named_beyond_journal());
        keys
    }

    /// A manifest entry for a copy of a small file, stored under this mount's `copies/` area and
    /// in flight until the manifest exists. Size and CRC are filled in when the copy is made.
    fn copy_entry(
        &self,
        name: String,
        in_flight: &mut super::objects::InFlight<'_>,
    ) -> ManifestFile {
        let key = checkpoint::copy_key(&self.mount_id, &uuid::Uuid::new_v4());
        in_flight.add(key.clone());
        ManifestFile {
            name,
            key,
            size: 0,
            crc32c: 0,
            local: true,
            heat: None,
        }
    }

    /// Deletes this mount's objects that nothing names any more (`checkpoint::gc::release_orphans`):
    /// what a crash left and what dropped checkpoints named. Runs on the retention worker.
    pub(crate) fn release_orphans(&self) {
        let live = || self.live_keys().into_iter().collect();
        match checkpoint::gc::release_orphans(
            self.remote.as_ref(),
            &self.mount_id,
            &self.publisher.manifests,
            live,
        ) {
            Ok(deleted) if !deleted.is_empty() => {
                tracing::info!(
                    count = deleted.len(),
                    "released objects nothing names any more"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "releasing unnamed objects failed; retried after the next retention or at the next mount")
            }
        }
    }

    /// Rewrites `mounts/<mount-id>` with the objects the journal names now.
    pub(crate) fn write_mount_record(&self) -> FsResult<()> {
        let record = MountRecord {
            mount_id: self.mount_id.clone(),
            host: checkpoint::host_name(),
            local_dir: self.statfs_dir.display().to_string(),
            updated_ms: checkpoint::now_ms(),
            keys: self.live_keys().into_iter().collect(),
        };
        checkpoint::write_mount_record(self.remote.as_ref(), &record)?;
        self.objects.record_written();
        Ok(())
    }

    /// Takes checkpoint `id` over (CLAIM mode). Its place in this mount's order is the next
    /// sequence number, journaled before the claim is written: everything this mount publishes
    /// later comes after it, whatever the clocks say.
    pub(crate) fn claim(&self, id: &str) -> FsResult<()> {
        let seq = {
            let mut w = self.ns.writer();
            let seq = w.table().publish_seq() + 1;
            w.commit(&[Op::PublishSeq(seq)])?;
            seq
        };
        self.sync_journal()?;
        let claim = checkpoint::Claim {
            mount_id: self.mount_id.clone(),
            seq,
        };
        let bytes = serde_json::to_vec(&claim).expect("claim serializes");
        self.remote
            .put(&checkpoint::claim_key(id), Bytes::from(bytes))?;
        Ok(())
    }

    /// Builds the namespace of checkpoint `m` in this (fresh) core: SSTs borrowed from the store and
    /// read lazily, small files written locally from `small` (their bytes, already checked).
    pub(crate) fn restore_namespace(
        &self,
        m: &Manifest,
        small: &[(usize, Vec<u8>)],
    ) -> FsResult<()> {
        let now = super::now_ns();
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let mut cold = Vec::new();
        // Files the publisher had local copies of: (rank, inode, local id).
        let mut hot = Vec::new();
        for (i, f) in m.files.iter().enumerate() {
            let mut parts: Vec<&str> = f.name.split('/').collect();
            let base = parts.pop().expect("names are checked non-empty");
            let mut parent = ROOT_INO;
            for dir in parts {
                parent = match self.lookup(parent, dir) {
                    Ok(a) if a.is_dir() => a.ino,
                    Ok(_) => return Err(FsError::NotDir),
                    Err(FsError::NotFound) => {
                        self.mkdir(parent, dir, 0o755, super::Caller { uid, gid })?
                            .ino
                    }
                    Err(e) => return Err(e),
                };
            }
            let local_id = uuid::Uuid::new_v4();
            let meta = if !f.is_local() {
                cold.push((local_id, f.size));
                FileMeta {
                    placement: Placement::Remote,
                    local_id,
                    sealed: Some(Sealed {
                        key: f.key.clone(),
                        size: f.size,
                        crc32c: f.crc32c,
                        ownership: Ownership::Borrowed,
                        local_stamp: None,
                    }),
                }
            } else {
                let fm = FileMeta {
                    placement: Placement::Local,
                    local_id,
                    sealed: None,
                };
                let bytes = small
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, b)| b.as_slice())
                    .unwrap_or_default();
                // Durable before the journal names it (synced below, with its directory entry).
                let mut file = crate::private::create(&self.local_path(&fm))?;
                std::io::Write::write_all(&mut file, bytes)?;
                file.sync_all()?;
                self.objects.backing_created();
                fm
            };
            let mut w = self.ns.writer();
            if w.table()
                .get(parent)
                .is_some_and(|p| p.children.contains_key(base))
            {
                return Err(FsError::Exists);
            }
            let ino = w.allocate_ino();
            if let (Some(rank), Placement::Remote) = (f.heat, meta.placement) {
                hot.push((rank, ino, local_id));
            }
            let inode = InodeMeta {
                ino,
                kind: NodeKind::File(meta),
                perm: 0o644,
                uid,
                gid,
                mtime_ns: now,
                ctime_ns: now,
                atime_ns: None,
            };
            w.commit(&[
                Op::PutInode(inode),
                Op::PutEntry {
                    parent,
                    name: base.to_string(),
                    ino,
                },
            ])?;
        }
        self.sync_created()?;
        self.sync_journal()?;
        let mut cache = self.cache.index();
        for (id, size) in cold {
            cache.register_cold(id, size, true);
        }
        drop(cache);
        hot.sort_unstable();
        self.load_hot(hot.into_iter().map(|(_, ino, id)| (ino, id)));
        Ok(())
    }
}

/// The publisher's state: what it knows of the store's checkpoints, and its workers.
#[derive(Debug)]
pub(crate) struct Publisher {
    /// Manifests of the store's checkpoints already read (retention after each publish).
    pub(crate) manifests: checkpoint::ManifestCache,
    /// Rewrites the mount record while the journal names new objects.
    pub(crate) registrar: Registrar,
    /// Deferred retention (`MountHandle::checkpoint_with`) and the release of unnamed objects.
    pub(crate) retainer: Retainer,
    /// Held while retention runs: one at a time (first in the core's lock order).
    pub(crate) retention: parking_lot::Mutex<()>,
}

/// A request to the retention worker.
#[derive(Debug)]
pub(crate) enum Retention {
    /// Keep the newest `retained` of the mount's checkpoints, never dropping `just_published`.
    Keep {
        retained: usize,
        just_published: String,
    },
    /// Delete this mount's objects that nothing names any more.
    Release,
    /// Answer once every earlier request has run.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// Runs deferred retention, and the release of unnamed objects, off the publishing thread.
/// Requests waiting together are coalesced: the newest `Keep` is what counts, since retention
/// always works from the store's current list; a release follows a retention that dropped
/// something.
#[derive(Debug)]
pub(crate) struct Retainer(Worker<Retention>);

impl Retainer {
    pub(crate) fn start(core: std::sync::Weak<FsCore>) -> Retainer {
        Retainer(Worker::spawn("statefs-retention", move |rx| {
            while let Ok(first) = rx.recv() {
                let (mut keep, mut release, mut barriers) = (None, false, Vec::new());
                for r in std::iter::once(first).chain(rx.try_iter()) {
                    match r {
                        Retention::Keep {
                            retained,
                            just_published,
                        } => keep = Some((retained, just_published)),
                        Retention::Release => release = true,
                        Retention::Barrier(done) => barriers.push(done),
                    }
                }
                if let Some(core) = core.upgrade() {
                    if let Some((n, id)) = keep {
                        release |= !core.retain(n, Some(&id)).0.is_empty();
                    }
                    if release {
                        core.release_orphans();
                    }
                }
                for done in barriers {
                    let _ = done.send(());
                }
            }
        }))
    }

    /// Queues `r`; false once the worker has been shut down.
    pub(crate) fn request(&self, r: Retention) -> bool {
        self.0.send(r)
    }

    /// Runs what is queued, then stops the worker.
    pub(crate) fn shutdown(&self) {
        self.0.shutdown()
    }
}

/// Rewrites the mount record every minute while the journal names new objects, so `statefs gc`
/// (whose grace period is far longer) never sees a live object as unreferenced, and at least
/// every [`checkpoint::MOUNT_HEARTBEAT`] in any case.
#[derive(Debug)]
pub(crate) struct Registrar(Worker<()>);

/// When the registrar rewrites the record: at a tick ([`RECORD_INTERVAL`]) when it changed, and
/// also unchanged once [`checkpoint::MOUNT_HEARTBEAT`] passed since the last write, so that an
/// idle running mount's record never grows older than a heartbeat and a tick (what
/// `statefs mounts forget` relies on to tell it from a stopped one).
#[derive(Debug, Default)]
struct RecordSchedule {
    since_write: std::time::Duration,
}

impl RecordSchedule {
    /// One tick: whether the record is due.
    fn tick(&mut self, dirty: bool) -> bool {
        self.since_write += RECORD_INTERVAL;
        dirty || self.since_write >= checkpoint::MOUNT_HEARTBEAT
    }

    /// The record was written (a failed write leaves it due at the next tick).
    fn written(&mut self) {
        self.since_write = std::time::Duration::ZERO;
    }
}

/// How often a changed mount record is rewritten.
pub const RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Registrar {
    pub(crate) fn start(core: std::sync::Weak<FsCore>) -> Registrar {
        // Nothing is ever sent: the channel closing at shutdown ends the wait.
        Registrar(Worker::spawn("statefs-registrar", move |rx| {
            let mut due = RecordSchedule::default();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(RECORD_INTERVAL)
            {
                let Some(core) = core.upgrade() else { break };
                if due.tick(core.objects.record_is_stale()) {
                    match core.write_mount_record() {
                        Ok(()) => due.written(),
                        Err(e) => {
                            tracing::warn!(error = %e, "refreshing the mount record failed; retrying in a minute")
                        }
                    }
                }
            }
        }))
    }

    pub(crate) fn shutdown(&self) {
        self.0.shutdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle mount's record is rewritten once per heartbeat, a changed one at every tick, and
    /// a failed write is retried at the next tick.
    #[test]
    fn the_record_is_rewritten_at_least_every_heartbeat() {
        let per_beat = (checkpoint::MOUNT_HEARTBEAT.as_secs() / RECORD_INTERVAL.as_secs()) as usize;
        let mut s = RecordSchedule::default();
        let mut writes = Vec::new();
        for t in 1..=3 * per_beat {
            if s.tick(false) {
                s.written();
                writes.push(t);
            }
        }
        assert_eq!(writes, [per_beat, 2 * per_beat, 3 * per_beat]);
        assert!(s.tick(true), "a change is due at the next tick");
        s.written();
        for _ in 1..per_beat {
            assert!(!s.tick(false));
        }
        assert!(s.tick(false), "due at the heartbeat");
        assert!(s.tick(false), "still due after a failed write");
    }
}
