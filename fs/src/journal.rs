//! The mapping table's journal in the local dir.
//!
//! Layout of `<local-dir>/journal/`:
//! - `snapshot`: the whole table as ops, first line a header with the generation `G`;
//! - `journal.<G>`: records appended since that snapshot.
//!
//! A record is one line, `<crc32c of json, 8 hex digits> <json array of ops>\n`, written with a single
//! `write(2)` on an `O_APPEND` file: after a kill of the mount process every record whose write
//! returned is in the page cache and survives; `Journal::sync` (called by fsync, fsyncdir and before
//! remote deletes) makes them survive power loss too. A torn last line (power loss mid-write) is cut
//! off at replay; damage anywhere else is reported, never skipped.
//!
//! Compaction writes `snapshot.tmp` for generation `G+1` and fsyncs it, creates an empty
//! `journal.<G+1>`, renames the snapshot over `snapshot` and fsyncs the directory, and only then
//! appends to `journal.<G+1>`: a crash at any point leaves either the old snapshot with its journal or
//! the new snapshot with its (possibly empty or missing) journal.
//!
//! A full local disk:
//! - `RESERVE` bytes past the last record are allocated ahead (`fallocate` with `KEEP_SIZE`), so
//!   records keep fitting while data writes fail with ENOSPC. Unlink and rename, the way out of a
//!   full disk, go on working.
//! - A record whose write fails (the reserve used up too) is cut off again. A short write would
//!   otherwise leave a partial line that later records turn into damage in the middle of the journal,
//!   which replay refuses.
//! - A failed compaction leaves the journal as it was; it is retried after more records.
//!
//! A failed sync poisons the journal. Linux marks the pages of a failed writeback clean and reports
//! the error once: a retried `fdatasync` then succeeds although the records it should have made
//! durable may be gone. So after the first failed sync (of the journal file, or of its directory
//! after a compaction) every later sync and every append fails with [`JournalError::Poisoned`]
//! (EIO) until the mount is restarted, which replays what the disk really holds.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::table::{MappingTable, Op, TableError};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("journal {path} is damaged at line {line}: {why}")]
    Damaged {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("journal {path} line {line} does not apply to the table: {source}")]
    Inconsistent {
        path: PathBuf,
        line: usize,
        source: TableError,
    },
    /// A failed write could not be cut off, or a compaction failed after its snapshot was renamed
    /// into place: appending more could put records where replay would not find them.
    #[error(
        "journal in {dir} takes no more records after a failed write ({why}); remount to continue"
    )]
    Broken { dir: PathBuf, why: String },
    /// A sync failed: records acknowledged as appended may not be on disk, and a retried sync
    /// would wrongly report them durable (see the module doc).
    #[error(
        "journal in {dir} failed to sync ({why}); nothing more is acknowledged until the mount is restarted"
    )]
    Poisoned { dir: PathBuf, why: String },
}

/// Records appended since the last compaction beyond which [`Journal::should_compact`] says yes.
const COMPACT_AFTER_RECORDS: u64 = 100_000;

/// [`COMPACT_AFTER_RECORDS`], or the test knob `STATEFS_JOURNAL_COMPACT_RECORDS` (the crash loop
/// compacts every few thousand records to kill mounts in the middle of compactions).
fn compact_after() -> u64 {
    std::env::var("STATEFS_JOURNAL_COMPACT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(COMPACT_AFTER_RECORDS)
}

/// Records appended after a failed compaction before the next try: each try writes a snapshot of
/// the whole table, which is what a full disk refuses.
const COMPACT_RETRY_RECORDS: u64 = 10_000;

/// Journal space allocated ahead of the records (a record is about 100 to 300 bytes, so thousands
/// of metadata operations on a full disk). Refilled when less than half is left.
pub(crate) const RESERVE: u64 = 1 << 20;

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    generation: u64,
    file: Arc<File>,
    records: AtomicU64,
    /// `records` value at which `should_compact` says yes.
    compact_at: u64,
    /// Records between compactions ([`compact_after`]).
    compact_every: u64,
    /// Length of the journal file: where the next record starts. Appends are serialized by the
    /// caller (the namespace's writer lock), so this is exact.
    end: AtomicU64,
    /// File offset up to which space is allocated ahead of `end`.
    reserved: AtomicU64,
    /// Set when the file may hold a partial record or no longer be the one replay reads: see
    /// [`JournalError::Broken`].
    broken: parking_lot::Mutex<Option<String>>,
    dirty: Arc<AtomicBool>,
    /// The file a sync makes durable, and the lock held across a sync and across a compaction's
    /// switch to a new file: see [`JournalSyncer::sync`].
    sync: Arc<SyncState>,
}

/// What syncs share: the current journal file, the poison, and a fault switch for tests.
#[derive(Debug)]
struct SyncState {
    dir: PathBuf,
    /// The file records go to now. Replaced (under this lock) by a compaction.
    current: parking_lot::Mutex<Arc<File>>,
    /// Why the journal is poisoned, once a sync failed.
    poisoned: parking_lot::Mutex<Option<String>>,
    /// Syncs (file or directory) that fail on purpose from now on, for tests of the poison.
    fail_syncs: AtomicU64,
}

impl SyncState {
    fn poisoned(&self) -> Result<(), JournalError> {
        match self.poisoned.lock().clone() {
            Some(why) => Err(JournalError::Poisoned {
                dir: self.dir.clone(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// Runs one sync call; a failure poisons the journal for good.
    fn run(
        &self,
        what: &str,
        sync: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), JournalError> {
        let injected = self
            .fail_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = if injected {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        } else {
            sync()
        };
        result.map_err(|e| {
            let why = format!("{what}: {e}");
            tracing::error!(dir = %self.dir.display(), %why, "journal poisoned");
            *self.poisoned.lock() = Some(why.clone());
            JournalError::Poisoned {
                dir: self.dir.clone(),
                why,
            }
        })
    }
}

/// Allocates `len` bytes of `file` from `offset` without changing its size.
fn allocate_ahead(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset as libc::off_t,
        len as libc::off_t,
    )
    .map_err(std::io::Error::from)
}

/// Syncs the journal without holding the table lock (taken under the lock, used after it).
#[derive(Debug, Clone)]
pub struct JournalSyncer {
    dirty: Arc<AtomicBool>,
    sync: Arc<SyncState>,
}

impl JournalSyncer {
    /// Makes every record appended so far durable. Cheap when nothing was appended since the last sync.
    ///
    /// Invariant: when this returns Ok, every record appended before the call is on disk. The
    /// lock makes a caller that finds the flag clear wait for a sync that cleared it and is still
    /// running; without it, a second fsync returned while the first's fdatasync was in flight, before
    /// its records were durable. Concurrent callers share one fdatasync (group commit). The file
    /// synced is the current one, read under the lock: a syncer taken before a compaction syncs
    /// the new file, never the replaced one (whose records the compaction's snapshot holds). A
    /// compaction holds the lock until its directory sync is done and only then clears the flag,
    /// so a sync never returns between the two. After a failed sync every sync fails.
    pub fn sync(&self) -> Result<(), JournalError> {
        let current = self.sync.current.lock();
        self.sync.poisoned()?;
        // A sync made to fail (tests) fails even with nothing new to sync.
        let failing = self.sync.fail_syncs.load(Ordering::SeqCst) > 0;
        if self.dirty.swap(false, Ordering::AcqRel) || failing {
            self.sync.run("fdatasync", || current.sync_data())?;
        }
        Ok(())
    }
}

pub(crate) fn encode(ops: &[Op]) -> Vec<u8> {
    let json = serde_json::to_vec(ops).expect("ops serialize");
    let mut line = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

fn decode(line: &str) -> Result<Vec<Op>, String> {
    let (crc, json) = line.split_once(' ').ok_or("no checksum")?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| "bad checksum field")?;
    if crc32c::crc32c(json.as_bytes()) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| format!("bad record: {e}"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A replayed table that is not a tree ([`MappingTable::validate`]) is damage at `path`.
fn check_tree(table: &MappingTable, path: &Path) -> Result<(), JournalError> {
    table.validate().map_err(|why| JournalError::Damaged {
        path: path.to_path_buf(),
        line: 0,
        why: format!("the replayed table is not a tree: {why}"),
    })
}

/// Applies a snapshot's records to `table`; its generation.
fn replay_snapshot(
    reader: impl BufRead,
    table: &mut MappingTable,
    path: &Path,
) -> Result<u64, JournalError> {
    let mut generation = None;
    for (i, line) in reader.lines().enumerate() {
        let damaged = |why: String| JournalError::Damaged {
            path: path.to_path_buf(),
            line: i + 1,
            why,
        };
        let line = line.map_err(|e| damaged(e.to_string()))?;
        if i == 0 {
            generation = Some(
                line.strip_prefix("statefs-snapshot v1 generation ")
                    .and_then(|g| g.parse().ok())
                    .ok_or_else(|| damaged("bad header".into()))?,
            );
            continue;
        }
        // The snapshot was fsynced before it was renamed into place: any damage is real.
        let ops = decode(&line).map_err(damaged)?;
        table
            .apply_all(&ops)
            .map_err(|source| JournalError::Inconsistent {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })?;
    }
    generation.ok_or_else(|| JournalError::Damaged {
        path: path.to_path_buf(),
        line: 1,
        why: "empty snapshot".into(),
    })
}

/// Applies a journal's records to `table`: how many, and where a torn last record starts
/// (offset, line, why). Damage before the last record is an error: only the last can be torn by
/// a crash.
#[allow(clippy::type_complexity)]
fn replay_log(
    data: &[u8],
    table: &mut MappingTable,
    path: &Path,
) -> Result<(u64, Option<(usize, usize, String)>), JournalError> {
    let mut records = 0;
    let mut offset = 0usize;
    let mut line_no = 0;
    while offset < data.len() {
        line_no += 1;
        let end = data[offset..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| offset + p);
        let parsed = end
            .ok_or_else(|| "unterminated record".to_string())
            .and_then(|end| {
                std::str::from_utf8(&data[offset..end]).map_err(|_| "not UTF-8".to_string())
            })
            .and_then(decode);
        match parsed {
            Ok(ops) => {
                table
                    .apply_all(&ops)
                    .map_err(|source| JournalError::Inconsistent {
                        path: path.to_path_buf(),
                        line: line_no,
                        source,
                    })?;
                records += 1;
                offset = end.expect("parsed") + 1;
            }
            Err(why) => {
                let is_last = end.is_none_or(|e| e + 1 >= data.len());
                if !is_last {
                    return Err(JournalError::Damaged {
                        path: path.to_path_buf(),
                        line: line_no,
                        why,
                    });
                }
                return Ok((records, Some((offset, line_no, why))));
            }
        }
    }
    Ok((records, None))
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and replays it into a table. An empty directory yields
    /// an empty table (the caller adds the root).
    pub fn open(dir: &Path) -> Result<(Journal, MappingTable), JournalError> {
        crate::private::own_dir(dir)?;
        let (table, generation, records) = Self::replay(dir, true)?;
        let log_path = dir.join(format!("journal.{generation}"));
        // Journals of other generations are leftovers of an interrupted compaction.
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if (name.starts_with("journal.") && *name != *format!("journal.{generation}"))
                || name == "snapshot.tmp"
            {
                std::fs::remove_file(dir.join(&*name))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)?;
        let end = file.metadata()?.len();
        let file = Arc::new(file);
        let journal = Journal {
            dir: dir.to_path_buf(),
            generation,
            file: file.clone(),
            records: AtomicU64::new(records),
            compact_at: compact_after(),
            compact_every: compact_after(),
            end: AtomicU64::new(end),
            reserved: AtomicU64::new(end),
            broken: Default::default(),
            dirty: Arc::new(AtomicBool::new(false)),
            sync: Arc::new(SyncState {
                dir: dir.to_path_buf(),
                current: parking_lot::Mutex::new(file.clone()),
                poisoned: Default::default(),
                fail_syncs: AtomicU64::new(0),
            }),
        };
        journal.reserve();
        Ok((journal, table))
    }

    /// The table a journal describes, changing nothing on disk (for fsck). A torn tail is ignored
    /// here as it would be cut off at the next mount.
    pub fn read_only(dir: &Path) -> Result<MappingTable, JournalError> {
        Self::replay(dir, false).map(|(t, _, _)| t)
    }

    /// Replays snapshot and journal. `repair`: cut a torn tail off the journal file.
    fn replay(dir: &Path, repair: bool) -> Result<(MappingTable, u64, u64), JournalError> {
        let mut table = MappingTable::new();
        let snapshot = dir.join("snapshot");
        let mut generation = 0;
        if snapshot.exists() {
            let reader = BufReader::new(File::open(&snapshot)?);
            generation = replay_snapshot(reader, &mut table, &snapshot)?;
        }
        let log_path = dir.join(format!("journal.{generation}"));
        let mut records = 0;
        if log_path.exists() {
            let data = std::fs::read(&log_path)?;
            let (n, torn) = replay_log(&data, &mut table, &log_path)?;
            records = n;
            if let Some((offset, line, why)) = torn
                && repair
            {
                tracing::warn!(path = %log_path.display(), line, %why, "cutting off a torn journal tail");
                let f = OpenOptions::new().write(true).open(&log_path)?;
                f.set_len(offset as u64)?;
                f.sync_all()?;
            }
        }
        check_tree(&table, dir)?;
        Ok((table, generation, records))
    }

    /// Replays a snapshot and a journal given as bytes, as [`Journal::open`] would find them on
    /// disk (without repairing anything): for fuzzing, and for tools that hold the bytes.
    pub fn replay_bytes(snapshot: Option<&[u8]>, log: &[u8]) -> Result<MappingTable, JournalError> {
        let mut table = MappingTable::new();
        if let Some(s) = snapshot {
            replay_snapshot(s, &mut table, Path::new("snapshot"))?;
        }
        replay_log(log, &mut table, Path::new("journal"))?;
        check_tree(&table, Path::new("journal"))?;
        Ok(table)
    }

    /// Appends one record. Callers hold the table lock, so records are in apply order.
    ///
    /// On error nothing of the record is in the file (or the journal is broken and takes no more).
    pub fn append(&self, ops: &[Op]) -> Result<(), JournalError> {
        self.sync.poisoned()?;
        if let Some(why) = self.broken.lock().clone() {
            return Err(JournalError::Broken {
                dir: self.dir.clone(),
                why,
            });
        }
        let line = encode(ops);
        let start = self.end.load(Ordering::Relaxed);
        if let Err(e) = (&*self.file).write_all(&line) {
            // Cutting the file back also frees the space allocated ahead.
            self.reserved.store(start, Ordering::Relaxed);
            if let Err(cut) = self.file.set_len(start) {
                let why = format!("{e}; cutting off the partial record: {cut}");
                tracing::error!(dir = %self.dir.display(), %why, "journal broken");
                *self.broken.lock() = Some(why);
            }
            return Err(e.into());
        }
        self.end.store(start + line.len() as u64, Ordering::Relaxed);
        self.records.fetch_add(1, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Release);
        self.reserve();
        Ok(())
    }

    /// Tops the space allocated ahead up to [`RESERVE`] when less than half is left. Best effort:
    /// on a full disk it fails, and the next append tries again.
    fn reserve(&self) {
        let end = self.end.load(Ordering::Relaxed);
        if self.reserved.load(Ordering::Relaxed) >= end + RESERVE / 2 {
            return;
        }
        match allocate_ahead(&self.file, end, RESERVE) {
            Ok(()) => self.reserved.store(end + RESERVE, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "journal space not allocated ahead")
            }
        }
    }

    pub fn syncer(&self) -> JournalSyncer {
        JournalSyncer {
            dirty: self.dirty.clone(),
            sync: self.sync.clone(),
        }
    }

    /// Makes the next `n` syncs of the journal file, or of its directory after a compaction, fail
    /// with EIO as a failing disk would: for tests of the poison.
    pub fn fail_syncs(&self, n: u64) {
        self.sync.fail_syncs.store(n, Ordering::SeqCst);
    }

    /// Why the journal takes no more records, if it is poisoned or broken.
    pub fn refusal(&self) -> Option<JournalError> {
        self.sync.poisoned().err().or_else(|| {
            self.broken.lock().clone().map(|why| JournalError::Broken {
                dir: self.dir.clone(),
                why,
            })
        })
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Compacts every `records` records from now on (tests: compactions amid concurrent work).
    #[cfg(all(test, feature = "shuttle"))]
    pub(crate) fn compact_every(&mut self, records: u64) {
        self.compact_every = records.max(1);
        self.compact_at = self.records.load(Ordering::Relaxed) + self.compact_every;
    }

    pub fn should_compact(&self) -> bool {
        self.records.load(Ordering::Relaxed) >= self.compact_at
    }

    /// Replaces snapshot + journal with a snapshot of `table`. Callers hold the namespace's
    /// writer lock (no record is appended meanwhile) and a read guard of `table`.
    ///
    /// An error before the new snapshot is in place leaves the journal as it was (retried after
    /// `COMPACT_RETRY_RECORDS` more records); one after it breaks the journal.
    pub fn compact(&mut self, table: &MappingTable) -> Result<(), JournalError> {
        self.sync.poisoned()?;
        let next = self.generation + 1;
        let tmp = self.dir.join("snapshot.tmp");
        let log_path = self.dir.join(format!("journal.{next}"));
        // Held until the new snapshot is durable: a sync that starts meanwhile waits, and then
        // finds the records of the old file in the snapshot and the flag clear.
        let sync = self.sync.clone();
        let mut current = sync.current.lock();
        let installed = self
            .prepare_compaction(table, next, &tmp, &log_path)
            .and_then(|file| {
                std::fs::rename(&tmp, self.dir.join("snapshot"))?;
                Ok(file)
            });
        let file = match installed {
            Ok(file) => file,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(&log_path);
                self.compact_at = self.records.load(Ordering::Relaxed) + COMPACT_RETRY_RECORDS;
                return Err(e);
            }
        };
        // From here replay reads the new snapshot and `journal.<next>`: records may only go there,
        // and only once the rename is durable.
        let old = self.dir.join(format!("journal.{}", self.generation));
        let end = file.metadata().map(|m| m.len()).unwrap_or(0);
        let file = Arc::new(file);
        self.file = file.clone();
        *current = file;
        self.generation = next;
        self.records.store(0, Ordering::Relaxed);
        self.compact_at = self.compact_every;
        self.end.store(end, Ordering::Relaxed);
        self.reserved.store(end, Ordering::Relaxed);
        // A failed directory sync leaves it unknown which snapshot a restart finds; the records
        // of the old file are durable only in the new one. The poison says so from now on.
        self.sync
            .run("syncing the directory after a compaction", || {
                sync_dir(&self.dir)
            })?;
        // Every record appended so far is in the snapshot, which is durable now.
        self.dirty.store(false, Ordering::Release);
        drop(current);
        let _ = std::fs::remove_file(old);
        self.reserve();
        Ok(())
    }

    /// Writes and syncs the snapshot of generation `next` to `tmp` and creates its empty journal.
    fn prepare_compaction(
        &self,
        table: &MappingTable,
        next: u64,
        tmp: &Path,
        log_path: &Path,
    ) -> Result<File, JournalError> {
        let mut f = std::io::BufWriter::new(crate::private::create(tmp)?);
        writeln!(f, "statefs-snapshot v1 generation {next}")?;
        for chunk in table.snapshot_ops().chunks(512) {
            f.write_all(&encode(chunk))?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log_path)?;
        // A leftover of an earlier interrupted compaction to the same generation holds nothing we need.
        file.set_len(0)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{ROOT_INO, dir_op};

    fn setup(dir: &Path) -> MappingTable {
        let (j, mut t) = Journal::open(dir).unwrap();
        for ops in [
            vec![dir_op(ROOT_INO)],
            vec![
                dir_op(2),
                Op::PutEntry {
                    parent: ROOT_INO,
                    name: "a".into(),
                    ino: 2,
                },
            ],
            vec![
                dir_op(3),
                Op::PutEntry {
                    parent: 2,
                    name: "b".into(),
                    ino: 3,
                },
            ],
        ] {
            j.append(&ops).unwrap();
            t.apply_all(&ops).unwrap();
        }
        t
    }

    #[test]
    fn replay_rebuilds_table_and_compaction_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let t = setup(tmp.path());
        let (mut j, replayed) = Journal::open(tmp.path()).unwrap();
        assert_eq!(replayed.snapshot_ops(), t.snapshot_ops());
        j.compact(&replayed).unwrap();
        j.append(&[
            Op::DelEntry {
                parent: 2,
                name: "b".into(),
            },
            Op::DropInode(3),
        ])
        .unwrap();
        drop(j);
        let (_, after) = Journal::open(tmp.path()).unwrap();
        assert!(after.get(3).is_none());
        assert_eq!(after.lookup(ROOT_INO, "a").unwrap(), 2);
        assert!(!tmp.path().join("journal.0").exists());
    }

    #[test]
    fn torn_tail_is_cut_off() {
        let tmp = tempfile::tempdir().unwrap();
        setup(tmp.path());
        let path = tmp.path().join("journal.0");
        let mut data = std::fs::read(&path).unwrap();
        let full = data.len();
        data.extend_from_slice(b"1234abcd [{\"PutInode\":");
        std::fs::write(&path, &data).unwrap();
        let (_, t) = Journal::open(tmp.path()).unwrap();
        assert_eq!(t.lookup(2, "b").unwrap(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, full);
    }

    fn record(n: u64) -> Vec<Op> {
        vec![
            dir_op(10 + n),
            Op::PutEntry {
                parent: ROOT_INO,
                name: format!("directory-{n:06}"),
                ino: 10 + n,
            },
        ]
    }

    /// Appends records until one fails; returns how many went in and the error.
    fn append_until_error(j: &Journal, t: &mut MappingTable, from: u64) -> (u64, JournalError) {
        let mut n = from;
        loop {
            assert!(n < from + 1_000_000, "appends never failed");
            match j.append(&record(n)) {
                Ok(()) => t.apply_all(&record(n)).unwrap(),
                Err(e) => return (n - from, e),
            }
            n += 1;
        }
    }

    fn is_enospc(e: &JournalError) -> bool {
        matches!(e, JournalError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC))
    }

    /// On a full disk, records go on in the space allocated ahead (so unlink and rename work);
    /// when that is used up an append fails with ENOSPC and leaves nothing of itself, so once space
    /// is back appends continue and replay finds exactly the acknowledged records.
    #[test]
    fn a_full_disk_leaves_no_partial_record() {
        let fs = crate::testing::SmallFs::new(4 << 20);
        let dir = fs.path().join("journal");
        let (j, mut t) = Journal::open(&dir).unwrap();
        j.append(&[dir_op(ROOT_INO)]).unwrap();
        t.apply_all(&[dir_op(ROOT_INO)]).unwrap();
        let filler = fs.fill();
        let (went_in, err) = append_until_error(&j, &mut t, 0);
        assert!(is_enospc(&err), "{err}");
        let len = std::fs::metadata(dir.join("journal.0")).unwrap().len();
        assert!(
            len >= RESERVE / 2,
            "only {went_in} records ({len} bytes) fit on the full disk"
        );
        // Still full: another append fails the same way, again leaving nothing.
        assert!(is_enospc(&j.append(&record(went_in)).unwrap_err()));
        std::fs::remove_file(filler).unwrap();
        for n in went_in..went_in + 100 {
            j.append(&record(n)).unwrap();
            t.apply_all(&record(n)).unwrap();
        }
        drop(j);
        let (_, replayed) = Journal::open(&dir).unwrap();
        assert_eq!(replayed.snapshot_ops(), t.snapshot_ops());
    }

    /// A compaction the disk has no room for fails and changes nothing: the journal takes records as
    /// before, no `snapshot.tmp` is left, and a later compaction (space back) succeeds.
    #[test]
    fn a_compaction_without_room_changes_nothing() {
        let fs = crate::testing::SmallFs::new(4 << 20);
        let dir = fs.path().join("journal");
        let (mut j, mut t) = Journal::open(&dir).unwrap();
        j.append(&[dir_op(ROOT_INO)]).unwrap();
        t.apply_all(&[dir_op(ROOT_INO)]).unwrap();
        for n in 0..5000 {
            j.append(&record(n)).unwrap();
            t.apply_all(&record(n)).unwrap();
        }
        let filler = fs.fill();
        let err = j.compact(&t).unwrap_err();
        assert!(is_enospc(&err), "{err}");
        assert!(!dir.join("snapshot.tmp").exists());
        assert!(!dir.join("journal.1").exists());
        j.append(&record(5000)).unwrap();
        t.apply_all(&record(5000)).unwrap();
        std::fs::remove_file(filler).unwrap();
        j.compact(&t).unwrap();
        j.append(&record(5001)).unwrap();
        t.apply_all(&record(5001)).unwrap();
        drop(j);
        assert!(!dir.join("journal.0").exists());
        let (_, replayed) = Journal::open(&dir).unwrap();
        assert_eq!(replayed.snapshot_ops(), t.snapshot_ops());
    }

    fn is_poisoned<T: std::fmt::Debug>(r: Result<T, JournalError>) -> bool {
        matches!(r, Err(JournalError::Poisoned { .. }))
    }

    /// A failed sync poisons the journal: the retried sync, which Linux would report as a success
    /// after a writeback error although the records may be gone, fails too, and so does every
    /// append, until the journal is opened again (a remount), which replays what is on disk.
    #[test]
    fn a_failed_sync_poisons_the_journal_until_it_is_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(tmp.path()).unwrap();
        j.append(&[dir_op(ROOT_INO)]).unwrap();
        let syncer = j.syncer();
        j.fail_syncs(1);
        assert!(is_poisoned(syncer.sync()));
        assert!(is_poisoned(syncer.sync()), "a retried sync is no proof");
        assert!(is_poisoned(j.syncer().sync()));
        assert!(is_poisoned(j.append(&record(1))));
        assert!(j.refusal().is_some());
        drop(j);
        let (j, t) = Journal::open(tmp.path()).unwrap();
        assert!(t.get(ROOT_INO).is_some());
        j.append(&record(1)).unwrap();
        j.syncer().sync().unwrap();
    }

    /// A compaction whose directory sync fails leaves it unknown which snapshot a restart finds:
    /// a sync that follows must not report the old file's records durable, and nothing more is
    /// taken.
    #[test]
    fn a_compaction_whose_directory_sync_fails_poisons_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let t = setup(tmp.path());
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        j.append(&record(1)).unwrap();
        let syncer = j.syncer();
        j.fail_syncs(1);
        assert!(is_poisoned(j.compact(&t)));
        assert!(is_poisoned(syncer.sync()));
        assert!(is_poisoned(j.compact(&t)));
    }

    /// A syncer taken before a compaction syncs the current file afterwards: records appended
    /// to the new file after the compaction are made durable by it (and a failure to do so is
    /// reported), instead of the replaced file being synced and the flag cleared.
    #[test]
    fn a_syncer_taken_before_a_compaction_syncs_the_new_file() {
        let tmp = tempfile::tempdir().unwrap();
        let t = setup(tmp.path());
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        let syncer = j.syncer();
        j.compact(&t).unwrap();
        assert!(!j.is_dirty(), "the compaction made everything durable");
        j.append(&record(1)).unwrap();
        assert!(j.is_dirty());
        syncer.sync().unwrap();
        assert!(!j.is_dirty());
        // The sync went to a file, not to nothing: a failing disk is seen through the old syncer.
        j.append(&record(2)).unwrap();
        j.fail_syncs(1);
        assert!(is_poisoned(syncer.sync()));
    }

    /// Records with right checksums that do not describe a tree (a directory moved into its own
    /// subtree, a name no kernel could send) are refused as damage, not served: a cycle would
    /// make every later rename check loop forever.
    #[test]
    fn a_journal_that_is_not_a_tree_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        setup(tmp.path());
        let (j, _) = Journal::open(tmp.path()).unwrap();
        j.append(&[
            Op::DelEntry {
                parent: ROOT_INO,
                name: "a".into(),
            },
            Op::PutEntry {
                parent: 3,
                name: "a".into(),
                ino: 2,
            },
        ])
        .unwrap();
        drop(j);
        let err = Journal::open(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        setup(tmp.path());
        let (j, _) = Journal::open(tmp.path()).unwrap();
        j.append(&[Op::PutEntry {
            parent: ROOT_INO,
            name: "x/y".into(),
            ino: 3,
        }])
        .unwrap();
        drop(j);
        let err = Journal::open(tmp.path()).unwrap_err();
        assert!(matches!(err, JournalError::Inconsistent { .. }), "{err}");
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        setup(tmp.path());
        let path = tmp.path().join("journal.0");
        let mut data = std::fs::read(&path).unwrap();
        let second_line = data.iter().position(|b| *b == b'\n').unwrap() + 5;
        data[second_line] ^= 0x55;
        std::fs::write(&path, &data).unwrap();
        let err = Journal::open(tmp.path()).unwrap_err();
        assert!(
            matches!(err, JournalError::Damaged { line: 2, .. }),
            "{err}"
        );
    }
}
