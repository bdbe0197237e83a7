//! The namespace: the mapping table and the journal that persists it, each behind its own lock.
//!
//! - `writer` (a mutex around the journal) is held by a mutation from its decision, through the
//!   journal append, to the apply, and by a compaction. Mutations are therefore serialized, and
//!   the journal's order is the order in which the table changed: replaying it rebuilds the table.
//! - `table` (a read-write lock) is shared by every read (lookup, getattr, readdir, a publish's
//!   listing). A mutation takes it for writing only to apply its ops, after its record was
//!   appended (in-memory work), and reads it while deciding; a compaction reads it.
//!
//! So a read never waits for journal I/O or a compaction: at most for an apply. The order is
//! `writer` before `table`; a thread holding a table guard never asks for the writer (the
//! [`Writer`]'s borrows enforce it for mutations: [`Writer::commit`] needs the writer mutably,
//! which no table guard of it may outlive).

use crate::core::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use crate::error::{FsError, FsResult};
use crate::journal::{Journal, JournalError, JournalSyncer};
use crate::table::{Ino, MappingTable, Op};

#[derive(Debug)]
pub(crate) struct Namespace {
    writer: Mutex<Journal>,
    table: RwLock<MappingTable>,
}

impl Namespace {
    pub(crate) fn new(table: MappingTable, journal: Journal) -> Namespace {
        Namespace {
            writer: Mutex::new(journal),
            table: RwLock::new(table),
        }
    }

    /// The table, for reading. Never held while asking for [`Namespace::writer`].
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, MappingTable> {
        self.table.read()
    }

    /// The right to change the namespace, until the returned writer is dropped.
    pub(crate) fn writer(&self) -> Writer<'_> {
        Writer {
            journal: self.writer.lock(),
            table: &self.table,
        }
    }

    /// A handle that syncs the journal without holding any namespace lock.
    pub(crate) fn syncer(&self) -> JournalSyncer {
        self.writer.lock().syncer()
    }

    /// Why the journal refuses records, if it does (a failed sync poisoned it).
    pub(crate) fn refusal(&self) -> Option<JournalError> {
        self.writer.lock().refusal()
    }

    /// Replaces the journal with a snapshot of the table (unmount).
    pub(crate) fn compact(&self) -> Result<(), JournalError> {
        let mut journal = self.writer.lock();
        let table = self.table.read();
        journal.compact(&table)
    }

    #[cfg(test)]
    pub(crate) fn fail_syncs(&self, n: u64) {
        self.writer.lock().fail_syncs(n)
    }
}

/// A mutation in progress: holds the namespace's writer lock.
pub(crate) struct Writer<'a> {
    journal: MutexGuard<'a, Journal>,
    table: &'a RwLock<MappingTable>,
}

impl Writer<'_> {
    /// The table as it is: no other mutation can change it while this writer lives.
    pub(crate) fn table(&self) -> RwLockReadGuard<'_, MappingTable> {
        self.table.read()
    }

    /// Journals `ops` and applies them. The caller has checked (on [`Writer::table`]) that they
    /// apply, so an apply error means a bug: it is reported as EIO, never ignored. A compaction
    /// that is due runs here, with reads going on beside it; its failure is not this operation's.
    pub(crate) fn commit(&mut self, ops: &[Op]) -> FsResult<()> {
        self.journal.append(ops)?;
        self.table.write().apply_all(ops).map_err(|e| {
            tracing::error!(error = %e, ?ops, "journaled ops did not apply");
            FsError::Internal(e.to_string())
        })?;
        if self.journal.should_compact() {
            let table = self.table.read();
            // A full disk may refuse the snapshot: the journal retries later, or, if the failure
            // broke it, refuses the next record.
            if let Err(e) = self.journal.compact(&table) {
                tracing::warn!(error = %e, "journal compaction failed");
            }
        }
        Ok(())
    }

    /// Replaces the journal with a snapshot of the table now.
    pub(crate) fn compact(&mut self) -> Result<(), JournalError> {
        let table = self.table.read();
        self.journal.compact(&table)
    }

    /// A new inode number (not journaled: replay rebuilds the counter from the table).
    pub(crate) fn allocate_ino(&mut self) -> Ino {
        self.table.write().allocate_ino()
    }

    /// Sets a directory's mtime and ctime (in memory, as its entries changed).
    pub(crate) fn touch_dir(&mut self, ino: Ino, now_ns: i64) {
        self.table.write().touch_dir(ino, now_ns)
    }
}

/// Model-checked under shuttle (`cargo test -p statefs --features shuttle --lib -- core::namespace::model core::cached::model`): random
/// schedules of two writers and a reader over a real journal, with compactions among them.
#[cfg(all(test, feature = "shuttle"))]
mod model {
    use std::sync::Arc;

    use super::*;
    use crate::table::{ROOT_INO, dir_op};

    const MARKERS: [&str; 2] = ["x", "y"];

    /// The ops that move the entry of `ino` found under one of `names` to the other.
    fn flip(table: &MappingTable, ino: Ino, names: [&str; 2]) -> Vec<Op> {
        let root = table.get(ROOT_INO).unwrap();
        let (from, to) = if root.children.contains_key(names[0]) {
            (names[0], names[1])
        } else {
            (names[1], names[0])
        };
        vec![
            Op::DelEntry {
                parent: ROOT_INO,
                name: from.into(),
            },
            Op::PutEntry {
                parent: ROOT_INO,
                name: to.into(),
                ino,
            },
        ]
    }

    fn entry(ino: Ino, name: &str) -> Op {
        Op::PutEntry {
            parent: ROOT_INO,
            name: name.into(),
            ino,
        }
    }

    /// Whatever the schedule: a reader sees every mutation whole (exactly one of a flipped
    /// entry's two names, never both or neither, and a tree), and the journal replays to the
    /// table the writers left, compactions included, so its order is the order of the applies.
    /// The two writers move one shared entry, whose next move depends on where the other put it:
    /// journaled in another order than applied, the replay would fail or differ.
    fn schedule(compact_every: u64) {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, mut table) = Journal::open(dir.path()).unwrap();
        journal.compact_every(compact_every);
        let setup = [
            MappingTable::root_op(0o755, 0, 0, 0),
            dir_op(2),
            entry(2, "shared-x"),
            dir_op(3),
            entry(3, "a-x"),
            dir_op(4),
            entry(4, "b-x"),
        ];
        journal.append(&setup).unwrap();
        table.apply_all(&setup).unwrap();
        let ns = Arc::new(Namespace::new(table, journal));
        let writers: Vec<_> = [(3, "a"), (4, "b")]
            .into_iter()
            .map(|(own, prefix)| {
                let ns = ns.clone();
                shuttle::thread::spawn(move || {
                    for _ in 0..3 {
                        for (ino, base) in [(own, prefix), (2, "shared")] {
                            let names = MARKERS.map(|m| format!("{base}-{m}"));
                            let mut w = ns.writer();
                            let ops = flip(&w.table(), ino, [&names[0], &names[1]]);
                            w.commit(&ops).unwrap();
                        }
                    }
                })
            })
            .collect();
        let reader = {
            let ns = ns.clone();
            shuttle::thread::spawn(move || {
                for _ in 0..4 {
                    let table = ns.read();
                    table.validate().unwrap();
                    let root = table.get(ROOT_INO).unwrap();
                    for base in ["shared", "a", "b"] {
                        let seen = MARKERS
                            .iter()
                            .filter(|m| root.children.contains_key(&format!("{base}-{m}")))
                            .count();
                        assert_eq!(seen, 1, "a reader saw a move of {base} half done");
                    }
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        reader.join().unwrap();
        let last = ns.read().snapshot_ops();
        drop(ns);
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(
            replayed.snapshot_ops(),
            last,
            "the journal replays to the table"
        );
    }

    #[test]
    fn model_namespace_without_compaction() {
        shuttle::check_random(|| schedule(1_000_000), 300);
    }

    #[test]
    fn model_namespace_with_compactions_among_the_writes() {
        shuttle::check_random(|| schedule(2), 300);
    }
}
