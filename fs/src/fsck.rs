//! `statefs fsck`: a mount's journal and the object store, checked against each other.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::checkpoint;
use crate::journal::{Journal, JournalError};
use crate::placement::Placement;
use crate::store::{RemoteStore, StoreError};
use std::collections::HashMap;

use crate::table::{Ino, MappingTable, NodeKind, Op, ROOT_INO};

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error("local dir {0} is mounted (its lock is held); unmount it first")]
    Mounted(String),
    #[error("{0} has no statefs journal")]
    NoJournal(String),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("object store: {0}")]
    Remote(#[from] StoreError),
    #[error("{0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub files: usize,
    pub objects_checked: usize,
    /// (path, key): the journal names an object the store does not have.
    pub missing_objects: Vec<(String, String)>,
    /// (path, key, journal size, store size).
    pub size_mismatches: Vec<(String, String, u64, u64)>,
    /// Local-placed files whose backing file is gone.
    pub missing_local: Vec<String>,
    /// Objects of this mount that nothing references (its journal, any checkpoint, any other
    /// mount's record): its next start releases them.
    pub orphans: Vec<(String, u64)>,
    /// Remote-placed files never synced (their bytes are only in the cache dir).
    pub unsynced: usize,
}

impl FsckReport {
    pub fn damaged(&self) -> bool {
        !self.missing_objects.is_empty()
            || !self.size_mismatches.is_empty()
            || !self.missing_local.is_empty()
    }
}

/// Every name of a file in `table`: (directory, name, path from the mount root, inode).
fn file_names(table: &MappingTable) -> Vec<(Ino, String, String, Ino)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), ROOT_INO)];
    while let Some((prefix, d)) = stack.pop() {
        let Some(node) = table.get(d) else { continue };
        for (name, child) in &node.children {
            let p = format!("{prefix}/{name}");
            if table.get(*child).is_some_and(|n| n.meta.is_dir()) {
                stack.push((p, *child));
            } else {
                out.push((d, name.clone(), p, *child));
            }
        }
    }
    out
}

/// A path (from the mount root, `/`-separated) of every file of `table` that has a name.
pub fn paths(table: &MappingTable) -> HashMap<Ino, String> {
    file_names(table)
        .into_iter()
        .map(|(_, _, path, ino)| (ino, path))
        .collect()
}

/// Locks a stopped mount's local dir for fsck; the lock is held while the file lives.
fn lock_stopped(local_dir: &Path) -> Result<std::fs::File, FsckError> {
    if !local_dir.join("journal").join("snapshot").exists() {
        return Err(FsckError::NoJournal(local_dir.display().to_string()));
    }
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(local_dir.join("LOCK"))?;
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(FsckError::Mounted(local_dir.display().to_string()));
    }
    Ok(lock)
}

fn local_file_missing(local_dir: &Path, f: &crate::table::FileMeta) -> bool {
    f.placement == Placement::Local
        && !local_dir
            .join("files")
            .join(f.local_id.as_hyphenated().to_string())
            .exists()
}

/// `statefs fsck --drop-missing`: removes the names of local-placed files whose backing file is
/// gone (a mount refuses to start while any is), accepting their loss. Returns the paths
/// dropped. Nothing else changes: objects, checkpoints and the other files stay as they are.
pub fn drop_missing(local_dir: &Path) -> Result<Vec<String>, FsckError> {
    let _lock = lock_stopped(local_dir)?;
    let (journal, mut table) = Journal::open(&local_dir.join("journal"))?;
    let missing: std::collections::HashSet<Ino> = table
        .nodes()
        .filter(|n| {
            n.meta
                .file()
                .is_some_and(|f| local_file_missing(local_dir, f))
        })
        .map(|n| n.meta.ino)
        .collect();
    let mut ops = Vec::new();
    let mut dropped = Vec::new();
    for (parent, name, path, ino) in file_names(&table) {
        if missing.contains(&ino) {
            ops.push(Op::DelEntry { parent, name });
            dropped.push(path);
        }
    }
    ops.extend(missing.iter().map(|ino| Op::DropInode(*ino)));
    if !ops.is_empty() {
        journal.append(&ops)?;
        table
            .apply_all(&ops)
            .map_err(|source| JournalError::Inconsistent {
                path: local_dir.join("journal"),
                line: 0,
                source,
            })?;
        journal.syncer().sync()?;
    }
    dropped.sort();
    Ok(dropped)
}

pub fn fsck(local_dir: &Path, remote: &dyn RemoteStore) -> Result<FsckReport, FsckError> {
    let _lock = lock_stopped(local_dir)?;
    let table = Journal::read_only(&local_dir.join("journal"))?;
    let mount_id = std::fs::read_to_string(local_dir.join("MOUNT_ID"))
        .unwrap_or_default()
        .trim()
        .to_string();

    let paths = paths(&table);
    let mut report = FsckReport::default();
    let mut referenced = BTreeSet::new();
    let task = crate::progress::task("fsck: checking files", Some(table.nodes().count() as u64));
    for node in table.nodes() {
        task.add(1);
        let NodeKind::File(f) = &node.meta.kind else {
            continue;
        };
        report.files += 1;
        let path = paths
            .get(&node.meta.ino)
            .cloned()
            .unwrap_or_else(|| format!("<unlinked inode {}>", node.meta.ino));
        match (&f.sealed, f.placement) {
            (Some(s), _) => {
                referenced.insert(s.key.clone());
                report.objects_checked += 1;
                match remote.head(&s.key) {
                    Ok(size) if size == s.size => {}
                    Ok(size) => report
                        .size_mismatches
                        .push((path, s.key.clone(), s.size, size)),
                    Err(StoreError::NotFound { .. }) => {
                        report.missing_objects.push((path, s.key.clone()))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (None, Placement::Local) => {
                if local_file_missing(local_dir, f) {
                    report.missing_local.push(path);
                }
            }
            (None, Placement::Remote) => report.unsynced += 1,
        }
    }
    task.done();
    // This mount's objects that nothing names: what its next start releases (a crash between
    // an upload and its record, copies of a publish that never completed, objects of dropped
    // checkpoints). Objects of other mounts are theirs to account for.
    if !mount_id.is_empty() {
        let refs = checkpoint::gc::References::read(
            remote,
            &checkpoint::ManifestCache::default(),
            Some(&mount_id),
        )?;
        for area in checkpoint::OWNED_AREAS {
            for o in remote.list(&format!("{area}{mount_id}/"))? {
                if !referenced.contains(&o.key) && !refs.keys.contains(&o.key) {
                    report.orphans.push((o.key, o.size));
                }
            }
        }
    }
    Ok(report)
}
