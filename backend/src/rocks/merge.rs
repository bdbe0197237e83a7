//! The merge step of scaling in: the entries of another subtask's database whose key group this
//! backend now owns are brought in, either as SST files written aside and ingested (the default,
//! Flink's `use-ingest-db-restore`), or copied through write batches.
//!
//! Both read the source in key order: a state's in-range entries are one contiguous key range of
//! its column family (keys start with the key group), and the raw key is the target's key too
//! (same layout on both sides). Lists arrive merged: the source iterator resolves merge operands.

use rocksdb::{IngestExternalFileOptions, SstFileWriter, WriteBatch};

use super::{RemoveOnDrop, RocksBackend, cf_options, db_key, rocks_err, view_dir};
use crate::backend::{StateBackend, StateId, StateMeta};
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;

/// Entries written to one ingested SST at most (RocksDB's default target file size).
const SST_BYTES: u64 = 64 << 20;
/// Entries held in one write batch when copying.
const BATCH_BYTES: usize = 4 << 20;

impl RocksBackend {
    /// Brings into this backend the entries of `source` (states `metas`, as its checkpoint
    /// recorded them) whose key group is in `range`. Holds one SST's or one batch's worth of
    /// entries in memory, never a whole state.
    pub(crate) fn merge_in_range_from(
        &mut self,
        source: &mut RocksBackend,
        metas: &[StateMeta],
        range: KeyGroupRange,
    ) -> StateResult<()> {
        let Some(r) = range.intersect(&source.range) else {
            // Still register the states: a restored backend knows every state of its job.
            for m in metas {
                self.adopt(m.clone())?;
            }
            return Ok(());
        };
        let ingest = self.tuning.use_ingest_db_restore.unwrap_or(true);
        for m in metas {
            let sid = source.adopt(m.clone())?;
            let tid = self.adopt(m.clone())?;
            if ingest {
                self.ingest_state(source, sid, tid, r)?;
            } else {
                self.copy_state(source, sid, tid, r)?;
            }
        }
        Ok(())
    }

    /// Calls `each` with every entry of state `sid` of `source` in key groups `r`, in key order.
    fn scan_range(
        source: &RocksBackend,
        sid: StateId,
        r: KeyGroupRange,
        mut each: impl FnMut(&[u8], &[u8]) -> StateResult<()>,
    ) -> StateResult<()> {
        let start = db_key(r.start, &[]);
        // Past the last key group there is no upper key: the range runs to the end.
        let end = (r.end < u16::MAX as u32).then(|| db_key(r.end + 1, &[]));
        let mut it = source.db.raw_iterator_cf(source.cf(sid));
        it.seek(&start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if end.as_deref().is_some_and(|e| k >= e) {
                break;
            }
            each(k, v)?;
            it.next();
        }
        it.status().map_err(rocks_err)
    }

    fn copy_state(
        &mut self,
        source: &RocksBackend,
        sid: StateId,
        tid: StateId,
        r: KeyGroupRange,
    ) -> StateResult<()> {
        let cf = self.cf(tid);
        let mut batch = WriteBatch::default();
        Self::scan_range(source, sid, r, |k, v| {
            batch.put_cf(cf, k, v);
            if batch.size_in_bytes() >= BATCH_BYTES {
                self.db
                    .write_opt(std::mem::take(&mut batch), &self.write_opts)
                    .map_err(rocks_err)?;
            }
            Ok(())
        })?;
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(rocks_err)
    }

    /// Writes the state's in-range entries into SST files in a scratch directory inside the
    /// database directory (same filesystem: on statefs the files are uploaded once, at their
    /// fsync), then
    /// ingests them with `move_files`, which hard-links them into the database (metadata only on
    /// statefs). The scratch directory goes whatever happens; one a crashed process left is
    /// removed at the next open, as snapshot views are.
    ///
    /// Reading the source and writing the SSTs (which on statefs includes their upload) run on
    /// two threads, batches of about 1 MiB between them: done one after the other, they made
    /// ingesting on statefs slower than copying, whose flushes run beside the reader.
    fn ingest_state(
        &mut self,
        source: &RocksBackend,
        sid: StateId,
        tid: StateId,
        r: KeyGroupRange,
    ) -> StateResult<()> {
        let dir = view_dir(&self.path);
        let _guard = RemoveOnDrop(dir.clone());
        std::fs::create_dir(&dir).map_err(crate::error::local_io(format!(
            "ingest scratch dir {}",
            dir.display()
        )))?;
        let opts = cf_options(self.shared.as_deref(), &self.tuning)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
        let files = std::thread::scope(|s| {
            let writer = s.spawn(|| write_ssts(&opts, &dir, rx));
            let mut batch = Batch::default();
            let scanned = Self::scan_range(source, sid, r, |k, v| {
                batch.push(k, v);
                if batch.data.len() >= BATCH_BYTES / 4 {
                    tx.send(std::mem::take(&mut batch))
                        .map_err(|_| StateError::Invalid("sst writer stopped".into()))?;
                }
                Ok(())
            })
            .and_then(|()| {
                tx.send(batch)
                    .map_err(|_| StateError::Invalid("sst writer stopped".into()))
            });
            drop(tx);
            // The writer's own error explains a stopped writer better than the send failure.
            let files = writer.join().expect("the sst writer does not panic")?;
            scanned.map(|()| files)
        })?;
        if files.is_empty() {
            return Ok(());
        }
        let mut io = IngestExternalFileOptions::default();
        io.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.cf(tid), &io, files)
            .map_err(rocks_err)
    }
}

/// Entries in key order, keys and values back to back in one buffer.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    /// (end of key, end of value) of each entry in `data`.
    ends: Vec<(usize, usize)>,
}

impl Batch {
    fn push(&mut self, k: &[u8], v: &[u8]) {
        self.data.extend_from_slice(k);
        let k_end = self.data.len();
        self.data.extend_from_slice(v);
        self.ends.push((k_end, self.data.len()));
    }

    fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(k_end, v_end)| {
            let e = (&self.data[start..k_end], &self.data[k_end..v_end]);
            start = v_end;
            e
        })
    }
}

/// Writes the entries received into SST files of about [`SST_BYTES`] in `dir`; returns them.
fn write_ssts(
    opts: &rocksdb::Options,
    dir: &std::path::Path,
    rx: std::sync::mpsc::Receiver<Batch>,
) -> StateResult<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut writer: Option<SstFileWriter> = None;
    for batch in rx {
        for (k, v) in batch.entries() {
            let w = match &mut writer {
                Some(w) => w,
                None => {
                    let path = dir.join(format!("{:06}.sst", files.len()));
                    let w = SstFileWriter::create(opts);
                    w.open(&path).map_err(rocks_err)?;
                    files.push(path);
                    writer.insert(w)
                }
            };
            w.put(k, v).map_err(rocks_err)?;
            if w.file_size() >= SST_BYTES {
                w.finish().map_err(rocks_err)?;
                writer = None;
            }
        }
    }
    if let Some(mut w) = writer {
        w.finish().map_err(rocks_err)?;
    }
    Ok(files)
}
