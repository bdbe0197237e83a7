//! The mapping table: directories, files and hard links as an inode table.
//!
//! Every change is expressed as a list of [`Op`]s. The same [`MappingTable::apply`] runs for live
//! operations (after the ops are journaled) and for journal replay, so what recovery rebuilds is by
//! construction what the mount had. A journal record holds all the ops of one filesystem operation and
//! is atomic (checksummed line), so a rename never half-happens.
//!
//! Invariants:
//! - inode 1 is the root directory and is never dropped;
//! - a file's `nlink` equals the number of directory entries naming it; a directory has exactly one
//!   entry (or none, for the root);
//! - an inode is dropped only when `nlink == 0` (directories: also empty); a file with `nlink == 0` may
//!   stay while handles are open (an orphan) and is dropped at the last release or at recovery;
//! - inode numbers are never reused within a mount's lifetime (`next_ino` only grows).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::placement::Placement;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// Who may delete a remote object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    /// Created by this mount: deleted when its last name goes.
    Owned,
    /// Belongs to someone else (a checkpoint this mount was restored from): never deleted here.
    Borrowed,
}

/// Size and modification time of a local file, to tell whether it still holds what was uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
}

/// A remote-placed file's durable version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Object key relative to the remote prefix (`data/<uuid>`).
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
    pub ownership: Ownership,
    /// Stamp of the local copy when it was uploaded; a copy with another stamp is not this version.
    pub local_stamp: Option<Stamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub placement: Placement,
    /// Name of the local backing file (local-placed data, or the staging file / cached copy of a
    /// remote-placed file). Never changes for the inode's life, so renames touch no bytes.
    pub local_id: uuid::Uuid,
    /// `None` while a remote-placed file has never been synced (state *writing*); always `None` for
    /// local-placed files.
    pub sealed: Option<Sealed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    Dir,
    File(FileMeta),
    /// A symbolic link: its target, as given (the kernel follows it).
    Symlink(String),
    /// A FIFO, socket or device node: the kernel does its I/O; only its type and device number
    /// are kept.
    Special {
        kind: SpecialKind,
        rdev: u32,
    },
}

/// The kinds of [`NodeKind::Special`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialKind {
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeMeta {
    pub ino: Ino,
    pub kind: NodeKind,
    /// Permission bits (07777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the epoch. For files with a local backing file, the backing file's own times
    /// are reported instead.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Access time, where the record keeps it (directories, symlinks, special files, sealed files
    /// nobody modifies); `None`: the modification time (records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime_ns: Option<i64>,
}

impl InodeMeta {
    pub fn file(&self) -> Option<&FileMeta> {
        match &self.kind {
            NodeKind::File(f) => Some(f),
            _ => None,
        }
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Inserts an inode or replaces its metadata (links are untouched).
    PutInode(InodeMeta),
    /// Adds a name; the name must be free and the target must exist.
    PutEntry { parent: Ino, name: String, ino: Ino },
    /// Removes a name.
    DelEntry { parent: Ino, name: String },
    /// Removes an inode that has no names (and, for a directory, no children).
    DropInode(Ino),
    /// The mount's checkpoint sequence reached this number: the order of its publishes (and
    /// claims), which retention follows instead of any clock. Never goes back.
    PublishSeq(u64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("inode {0} does not exist")]
    NoInode(Ino),
    #[error("inode {0} is not a directory")]
    NotDir(Ino),
    #[error("name {name:?} already exists in {parent}")]
    NameTaken { parent: Ino, name: String },
    #[error("name {name:?} does not exist in {parent}")]
    NoName { parent: Ino, name: String },
    #[error("inode {0} still has names or children")]
    StillLinked(Ino),
    #[error("directory {0} would get a second name")]
    DirLinked(Ino),
    #[error("the root cannot be dropped")]
    Root,
    #[error("inode number {0} is reserved")]
    BadIno(Ino),
    #[error("{0:?} is not a valid file name")]
    BadName(String),
}

/// Whether `name` can be a directory entry: what the kernel could pass us in a lookup (1 to 255
/// bytes, no `/`, no NUL, not `.` or `..`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == 0)
}

#[derive(Debug, Clone)]
pub struct Node {
    pub meta: InodeMeta,
    pub nlink: u32,
    /// For directories: the parent (root: itself) and the children by name.
    pub parent: Ino,
    pub children: BTreeMap<String, Ino>,
}

#[derive(Debug, Clone)]
pub struct MappingTable {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    /// The highest [`Op::PublishSeq`] applied.
    publish_seq: u64,
}

impl MappingTable {
    /// An empty table; the root directory comes from an op like every other inode.
    pub fn new() -> Self {
        MappingTable {
            nodes: HashMap::new(),
            next_ino: ROOT_INO + 1,
            publish_seq: 0,
        }
    }

    pub fn root_op(perm: u16, uid: u32, gid: u32, now_ns: i64) -> Op {
        Op::PutInode(InodeMeta {
            ino: ROOT_INO,
            kind: NodeKind::Dir,
            perm,
            uid,
            gid,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
            atime_ns: None,
        })
    }

    pub fn allocate_ino(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// The last checkpoint sequence number this mount used (0: none yet).
    pub fn publish_seq(&self) -> u64 {
        self.publish_seq
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Ino, TableError> {
        let dir = self.dir(parent)?;
        dir.children
            .get(name)
            .copied()
            .ok_or_else(|| TableError::NoName {
                parent,
                name: name.into(),
            })
    }

    fn dir(&self, ino: Ino) -> Result<&Node, TableError> {
        let n = self.nodes.get(&ino).ok_or(TableError::NoInode(ino))?;
        if !n.meta.is_dir() {
            return Err(TableError::NotDir(ino));
        }
        Ok(n)
    }

    /// Whether `ino` is `ancestor` or lies below it.
    pub fn is_within(&self, mut ino: Ino, ancestor: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.nodes.get(&ino) {
                Some(n) if n.meta.is_dir() && n.parent != ino => ino = n.parent,
                _ => return false,
            }
        }
    }

    /// Updates a directory's times in memory only: directory times are not worth a journal record.
    pub fn touch_dir(&mut self, ino: Ino, now_ns: i64) {
        if let Some(n) = self.nodes.get_mut(&ino)
            && n.meta.is_dir()
        {
            n.meta.mtime_ns = now_ns;
            n.meta.ctime_ns = now_ns;
        }
    }

    /// Applies ops in order. On error the ops before the failing one stay applied: callers check
    /// preconditions first, so an error here is a bug (or a damaged journal) and is reported as such.
    pub fn apply_all(&mut self, ops: &[Op]) -> Result<(), TableError> {
        ops.iter().try_for_each(|op| self.apply(op))
    }

    pub fn apply(&mut self, op: &Op) -> Result<(), TableError> {
        match op {
            Op::PutInode(meta) => {
                // 0 is no inode for the kernel, and u64::MAX would leave no next number.
                if meta.ino == 0 || meta.ino == Ino::MAX {
                    return Err(TableError::BadIno(meta.ino));
                }
                if meta.ino == ROOT_INO && !meta.is_dir() {
                    return Err(TableError::NotDir(ROOT_INO));
                }
                self.next_ino = self.next_ino.max(meta.ino + 1);
                match self.nodes.get_mut(&meta.ino) {
                    Some(n) => {
                        if n.meta.is_dir() != meta.is_dir() {
                            return Err(TableError::NotDir(meta.ino));
                        }
                        n.meta = meta.clone();
                    }
                    None => {
                        self.nodes.insert(
                            meta.ino,
                            Node {
                                meta: meta.clone(),
                                nlink: 0,
                                parent: meta.ino,
                                children: BTreeMap::new(),
                            },
                        );
                    }
                }
                Ok(())
            }
            Op::PutEntry { parent, name, ino } => {
                if !valid_name(name) {
                    return Err(TableError::BadName(name.clone()));
                }
                let dir = self.dir(*parent)?;
                if dir.children.contains_key(name) {
                    return Err(TableError::NameTaken {
                        parent: *parent,
                        name: name.clone(),
                    });
                }
                let target = self.nodes.get(ino).ok_or(TableError::NoInode(*ino))?;
                if target.meta.is_dir() && (target.nlink > 0 || *ino == ROOT_INO) {
                    return Err(TableError::DirLinked(*ino));
                }
                self.nodes
                    .get_mut(parent)
                    .expect("checked")
                    .children
                    .insert(name.clone(), *ino);
                let target = self.nodes.get_mut(ino).expect("checked");
                target.nlink += 1;
                if target.meta.is_dir() {
                    target.parent = *parent;
                }
                Ok(())
            }
            Op::DelEntry { parent, name } => {
                let ino = self.lookup(*parent, name)?;
                self.nodes
                    .get_mut(parent)
                    .expect("checked")
                    .children
                    .remove(name);
                let target = self.nodes.get_mut(&ino).ok_or(TableError::NoInode(ino))?;
                target.nlink = target.nlink.saturating_sub(1);
                Ok(())
            }
            Op::DropInode(ino) => {
                if *ino == ROOT_INO {
                    return Err(TableError::Root);
                }
                let n = self.nodes.get(ino).ok_or(TableError::NoInode(*ino))?;
                if n.nlink > 0 || !n.children.is_empty() {
                    return Err(TableError::StillLinked(*ino));
                }
                self.nodes.remove(ino);
                Ok(())
            }
            Op::PublishSeq(seq) => {
                self.publish_seq = self.publish_seq.max(*seq);
                Ok(())
            }
        }
    }

    /// Checks the invariants at the top of this file that single ops cannot: every directory with
    /// a name reaches the root through its parents (no cycle, nothing detached), link counts
    /// match the entries, an unnamed directory is empty. Run after a replay: a journal that
    /// passes its checksums can still describe something that is not a tree.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Ok(());
        }
        let root = self.nodes.get(&ROOT_INO).ok_or("no root directory")?;
        if !root.meta.is_dir() || root.nlink != 0 {
            return Err("the root is not an unnamed directory".into());
        }
        let mut names: HashMap<Ino, u32> = HashMap::new();
        for (ino, n) in &self.nodes {
            if n.meta.ino != *ino {
                return Err(format!("inode {ino} holds inode {}", n.meta.ino));
            }
            for (name, child) in &n.children {
                let c = self
                    .nodes
                    .get(child)
                    .ok_or_else(|| format!("{name:?} in {ino} names missing inode {child}"))?;
                if c.meta.is_dir() && c.parent != *ino {
                    return Err(format!(
                        "directory {child} is named in {ino} but its parent is {}",
                        c.parent
                    ));
                }
                *names.entry(*child).or_default() += 1;
            }
        }
        for (ino, n) in &self.nodes {
            let named = names.get(ino).copied().unwrap_or(0);
            if n.nlink != named {
                return Err(format!(
                    "inode {ino} counts {} links but has {named} names",
                    n.nlink
                ));
            }
            if n.meta.is_dir() && *ino != ROOT_INO && n.nlink == 0 && !n.children.is_empty() {
                return Err(format!("unnamed directory {ino} is not empty"));
            }
        }
        // Walk up from every named directory; a walk ends at the root or at a directory already
        // known to reach it, so the whole check is linear in the table.
        let mut reaches_root: std::collections::HashSet<Ino> = [ROOT_INO].into();
        for (ino, n) in &self.nodes {
            if !n.meta.is_dir() || n.nlink == 0 || reaches_root.contains(ino) {
                continue;
            }
            let mut path: std::collections::HashSet<Ino> = [*ino].into();
            let mut at = n.parent;
            while !reaches_root.contains(&at) {
                if !path.insert(at) {
                    return Err(format!("directory {ino} is in a cycle"));
                }
                let p = &self.nodes[&at];
                if p.nlink == 0 {
                    return Err(format!("directory {ino} lies below unnamed directory {at}"));
                }
                at = p.parent;
            }
            reaches_root.extend(path);
        }
        Ok(())
    }

    /// Ops that rebuild this table from empty: every inode, then every name. Used as the journal's
    /// snapshot.
    pub fn snapshot_ops(&self) -> Vec<Op> {
        let mut inos: Vec<&Ino> = self.nodes.keys().collect();
        inos.sort();
        let mut ops: Vec<Op> = inos
            .iter()
            .map(|i| Op::PutInode(self.nodes[i].meta.clone()))
            .collect();
        // Directories in inode order: a child's entry only needs its parent inode to exist, which
        // every PutInode above guarantees.
        for ino in inos {
            for (name, child) in &self.nodes[ino].children {
                ops.push(Op::PutEntry {
                    parent: *ino,
                    name: name.clone(),
                    ino: *child,
                });
            }
        }
        if self.publish_seq > 0 {
            ops.push(Op::PublishSeq(self.publish_seq));
        }
        ops
    }
}

impl Default for MappingTable {
    fn default() -> Self {
        Self::new()
    }
}

/// An `Op` that creates directory `ino` (root-owned, 0755): the start of most test histories
/// (and of the fuzz seeds).
pub(crate) fn dir_op(ino: Ino) -> Op {
    Op::PutInode(InodeMeta {
        ino,
        kind: NodeKind::Dir,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        atime_ns: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: Ino) -> Op {
        Op::PutInode(InodeMeta {
            ino,
            kind: NodeKind::File(FileMeta {
                placement: Placement::Local,
                local_id: uuid::Uuid::new_v4(),
                sealed: None,
            }),
            perm: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            atime_ns: None,
        })
    }
    fn entry(parent: Ino, name: &str, ino: Ino) -> Op {
        Op::PutEntry {
            parent,
            name: name.into(),
            ino,
        }
    }

    fn base() -> MappingTable {
        let mut t = MappingTable::new();
        t.apply_all(&[
            dir_op(ROOT_INO),
            dir_op(2),
            entry(ROOT_INO, "db", 2),
            file(3),
            entry(2, "a.sst", 3),
        ])
        .unwrap();
        t
    }

    #[test]
    fn links_count_names() {
        let mut t = base();
        t.apply(&entry(ROOT_INO, "b.sst", 3)).unwrap();
        assert_eq!(t.get(3).unwrap().nlink, 2);
        t.apply(&Op::DelEntry {
            parent: 2,
            name: "a.sst".into(),
        })
        .unwrap();
        assert_eq!(t.get(3).unwrap().nlink, 1);
        assert_eq!(t.apply(&Op::DropInode(3)), Err(TableError::StillLinked(3)));
        t.apply(&Op::DelEntry {
            parent: ROOT_INO,
            name: "b.sst".into(),
        })
        .unwrap();
        t.apply(&Op::DropInode(3)).unwrap();
        assert!(t.get(3).is_none());
    }

    #[test]
    fn rejects_invalid_ops() {
        let mut t = base();
        assert!(matches!(
            t.apply(&entry(2, "a.sst", 3)),
            Err(TableError::NameTaken { .. })
        ));
        assert_eq!(t.apply(&entry(3, "x", 3)), Err(TableError::NotDir(3)));
        assert_eq!(
            t.apply(&entry(ROOT_INO, "db2", 2)),
            Err(TableError::DirLinked(2))
        );
        assert_eq!(t.apply(&Op::DropInode(2)), Err(TableError::StillLinked(2)));
        assert_eq!(t.apply(&Op::DropInode(ROOT_INO)), Err(TableError::Root));
        assert!(matches!(
            t.apply(&Op::DelEntry {
                parent: 2,
                name: "zz".into()
            }),
            Err(TableError::NoName { .. })
        ));
    }

    #[test]
    fn snapshot_rebuilds_the_same_table() {
        let mut t = base();
        t.apply_all(&[
            dir_op(7),
            entry(2, "sub", 7),
            file(9),
            entry(7, "x", 9),
            entry(ROOT_INO, "y", 9),
        ])
        .unwrap();
        let mut rebuilt = MappingTable::new();
        rebuilt.apply_all(&t.snapshot_ops()).unwrap();
        assert_eq!(rebuilt.snapshot_ops(), t.snapshot_ops());
        assert_eq!(rebuilt.get(9).unwrap().nlink, 2);
        assert_eq!(rebuilt.get(7).unwrap().parent, 2);
        assert_eq!(rebuilt.allocate_ino(), 10);
        assert!(
            rebuilt.is_within(7, 2) && rebuilt.is_within(7, ROOT_INO) && !rebuilt.is_within(2, 7)
        );
    }
}
