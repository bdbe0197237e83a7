//! The mapping table's journal in the local dir.
//!
//! Layout of `<local-dir>/journal/`:
//! - `snapshot`: the whole table as ops, first line a header with the generation `G`;
//! - `journal.<G>`: records appended since that snapshot.
//!
//! A record is one line, `<crc32c of json, 8 hex digits> <json array of ops>\n`, written with a single
//! `write(2)` on an `O_APPEND` file: after a kill of the mount process every record whose write
//! returned is in the page cache and survives; [`Journal::sync`] (called by fsync, fsyncdir and before
//! remote deletes) makes them survive power loss too. A torn last line (power loss mid-write) is cut
//! off at replay; damage anywhere else is reported, never skipped.
//!
//! Compaction writes `snapshot.tmp` for generation `G+1`, fsyncs it, renames it over `snapshot`,
//! fsyncs the directory and only then starts `journal.<G+1>`, so a crash at any point leaves either the
//! old snapshot with its journal or the new snapshot (whose journal may be missing: empty).

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
}

/// Records appended since the last compaction beyond which [`Journal::should_compact`] says yes.
const COMPACT_AFTER_RECORDS: u64 = 100_000;

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    generation: u64,
    file: Arc<File>,
    records: AtomicU64,
    dirty: Arc<AtomicBool>,
    /// Held across a sync: see [`JournalSyncer::sync`].
    sync_lock: Arc<parking_lot::Mutex<()>>,
}

/// Syncs the journal without holding the table lock (taken under the lock, used after it).
#[derive(Debug, Clone)]
pub struct JournalSyncer {
    file: Arc<File>,
    dirty: Arc<AtomicBool>,
    sync_lock: Arc<parking_lot::Mutex<()>>,
}

impl JournalSyncer {
    /// Makes every record appended so far durable. Cheap when nothing was appended since the last sync.
    ///
    /// Invariant: when this returns Ok, every record appended before the call is on disk. The
    /// lock makes a caller that finds the flag clear wait for a sync that cleared it and is still
    /// running; without it, a second fsync returned while the first's fdatasync was in flight, before
    /// its records were durable. Concurrent callers share one fdatasync (group commit).
    pub fn sync(&self) -> Result<(), JournalError> {
        let _g = self.sync_lock.lock();
        if self.dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = self.file.sync_data()
        {
            self.dirty.store(true, Ordering::Release);
            return Err(e.into());
        }
        Ok(())
    }
}

fn encode(ops: &[Op]) -> Vec<u8> {
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

impl Journal {
    /// Opens (or creates) the journal in `dir` and replays it into a table. An empty directory yields
    /// an empty table (the caller adds the root).
    pub fn open(dir: &Path) -> Result<(Journal, MappingTable), JournalError> {
        std::fs::create_dir_all(dir)?;
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
        let journal = Journal {
            dir: dir.to_path_buf(),
            generation,
            file: Arc::new(file),
            records: AtomicU64::new(records),
            dirty: Arc::new(AtomicBool::new(false)),
            sync_lock: Default::default(),
        };
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
            for (i, line) in reader.lines().enumerate() {
                let line = line?;
                if i == 0 {
                    generation = line
                        .strip_prefix("statefs-snapshot v1 generation ")
                        .and_then(|g| g.parse().ok())
                        .ok_or_else(|| JournalError::Damaged {
                            path: snapshot.clone(),
                            line: 1,
                            why: "bad header".into(),
                        })?;
                    continue;
                }
                // The snapshot was fsynced before it was renamed into place: any damage is real.
                let ops = decode(&line).map_err(|why| JournalError::Damaged {
                    path: snapshot.clone(),
                    line: i + 1,
                    why,
                })?;
                table
                    .apply_all(&ops)
                    .map_err(|source| JournalError::Inconsistent {
                        path: snapshot.clone(),
                        line: i + 1,
                        source,
                    })?;
            }
        }
        let log_path = dir.join(format!("journal.{generation}"));
        let mut records = 0;
        if log_path.exists() {
            let data = std::fs::read(&log_path)?;
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
                                path: log_path.clone(),
                                line: line_no,
                                source,
                            })?;
                        records += 1;
                        offset = end.expect("parsed") + 1;
                    }
                    Err(why) => {
                        // Only the last record can be torn by a crash.
                        let is_last = end.is_none_or(|e| e + 1 >= data.len());
                        if !is_last {
                            return Err(JournalError::Damaged {
                                path: log_path,
                                line: line_no,
                                why,
                            });
                        }
                        if repair {
                            tracing::warn!(path = %log_path.display(), line = line_no, %why, "cutting off a torn journal tail");
                            let f = OpenOptions::new().write(true).open(&log_path)?;
                            f.set_len(offset as u64)?;
                            f.sync_all()?;
                        }
                        break;
                    }
                }
            }
        }
        Ok((table, generation, records))
    }

    /// Appends one record. Callers hold the table lock, so records are in apply order.
    pub fn append(&self, ops: &[Op]) -> Result<(), JournalError> {
        let line = encode(ops);
        (&*self.file).write_all(&line)?;
        self.records.fetch_add(1, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    pub fn syncer(&self) -> JournalSyncer {
        JournalSyncer {
            file: self.file.clone(),
            dirty: self.dirty.clone(),
            sync_lock: self.sync_lock.clone(),
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    pub fn should_compact(&self) -> bool {
        self.records.load(Ordering::Relaxed) >= COMPACT_AFTER_RECORDS
    }

    /// Replaces snapshot + journal with a snapshot of `table`. Callers hold the table lock.
    pub fn compact(&mut self, table: &MappingTable) -> Result<(), JournalError> {
        let next = self.generation + 1;
        let tmp = self.dir.join("snapshot.tmp");
        {
            let mut f = std::io::BufWriter::new(File::create(&tmp)?);
            writeln!(f, "statefs-snapshot v1 generation {next}")?;
            for chunk in table.snapshot_ops().chunks(512) {
                f.write_all(&encode(chunk))?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join("snapshot"))?;
        sync_dir(&self.dir)?;
        let log_path = self.dir.join(format!("journal.{next}"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)?;
        // A leftover of an earlier interrupted compaction to the same generation holds nothing we need.
        file.set_len(0)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        let old = self.dir.join(format!("journal.{}", self.generation));
        self.file = Arc::new(file);
        self.generation = next;
        self.records.store(0, Ordering::Relaxed);
        self.dirty.store(false, Ordering::Release);
        let _ = std::fs::remove_file(old);
        Ok(())
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
