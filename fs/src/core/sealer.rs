//! The sealer: making a remote-placed file durable in the store. A sync (or the last writer's
//! release, or an unmount) uploads the file's bytes under a new key and journals the key, size,
//! CRC32C and the local copy's stamp; the object the file named before goes once the new record
//! is durable. Writing to a sealed file without a local copy downloads its object first.
//!
//! The upload of an inode runs under its upload lock (`OpenInode::upload`), with none of the
//! namespace's locks held; its key is in flight (`Objects::in_flight`) from before the upload
//! starts until the journal names it.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::io::stamp_of;
use super::{Doomed, FsCore};
use crate::error::{FsError, FsResult};
use crate::placement::Placement;
use crate::store::{StoreError, data_key};
use crate::table::{FileMeta, Ino, NodeKind, Op, Ownership, Sealed};

impl FsCore {
    /// Brings a sealed file's object into its local copy (for writing to it). Caller holds the upload
    /// lock of `ino`.
    pub(crate) fn download(&self, ino: Ino, f: &FileMeta, s: &Sealed) -> FsResult<()> {
        let path = self.local_path(f);
        let tmp = path.with_extension("download");
        // Streamed to the file: a download holds a bounded part of the object in memory.
        let got = self.remote.get_to_file(&s.key, &tmp)?;
        if got.size != s.size || got.crc32c != s.crc32c {
            let _ = std::fs::remove_file(&tmp);
            return Err(FsError::Remote(StoreError::Fatal {
                op: "get",
                key: s.key.clone(),
                message: format!(
                    "object does not match its record (size {} vs {}, or checksum)",
                    got.size, s.size
                ),
            }));
        }
        std::fs::rename(&tmp, &path)?;
        self.metrics.downloads.fetch_add(1, Ordering::Relaxed);
        let stamp = stamp_of(&std::fs::metadata(&path)?);
        let mut w = self.ns.writer();
        let Some(mut meta) = w.table().get(ino).map(|n| n.meta.clone()) else {
            return Ok(());
        };
        if let NodeKind::File(fm) = &mut meta.kind
            && let Some(sealed) = &mut fm.sealed
        {
            sealed.local_stamp = Some(stamp);
        }
        w.commit(&[Op::PutInode(meta)])
    }

    /// Uploads a remote-placed file if its local copy is not what its record names (see module doc).
    pub(crate) fn seal_if_needed(&self, ino: Ino) -> FsResult<()> {
        let (dirty, upload) = self.acquire(ino, false);
        let result = self.seal_locked(ino, &dirty, &upload);
        // A failed upload leaves a local copy that is not the sealed version: until a seal
        // succeeds, its attributes come from the copy, not from the record.
        if result.is_err() {
            self.objects.set_unsealed(ino, true);
        } else {
            self.objects.set_unsealed(ino, false);
        }
        self.release_count(ino, false);
        result
    }

    fn seal_locked(&self, ino: Ino, dirty: &AtomicBool, upload: &Mutex<()>) -> FsResult<()> {
        let _g = upload.lock();
        let f = match self.file_meta(ino) {
            Ok(f) => f,
            Err(FsError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        if f.placement != Placement::Remote {
            return Ok(());
        }
        let path = self.local_path(&f);
        let md = match std::fs::metadata(&path) {
            Ok(md) => md,
            // No local copy: nothing can have changed since the object was stored.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && f.sealed.is_some() => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let stamp = stamp_of(&md);
        let was_dirty = dirty.swap(false, Ordering::AcqRel);
        if !was_dirty
            && f.sealed
                .as_ref()
                .is_some_and(|s| s.local_stamp == Some(stamp))
        {
            // Unchanged; a copy that was untracked while open for writing re-enters the cache.
            if !self.cache.index().contains(&f.local_id) {
                self.cache_written(f.local_id, stamp.size);
            }
            return Ok(());
        }
        let key = data_key(&self.mount_id, &uuid::Uuid::new_v4());
        let span = tracing::debug_span!("upload", ino, key = %key, size = stamp.size);
        let _e = span.enter();
        // Until the record naming it is in the journal, the object is only in flight: a release
        // running meanwhile must not take it. A failed upload may still have stored it; the
        // release removes it later.
        let mut in_flight = self.in_flight();
        in_flight.add(key.clone());
        self.metrics
            .uploads_in_flight
            .fetch_add(1, Ordering::Relaxed);
        let uploaded = self.remote.put_file(&key, &path);
        self.metrics
            .uploads_in_flight
            .fetch_sub(1, Ordering::Relaxed);
        let up = match uploaded {
            Ok(u) => u,
            Err(e) => {
                dirty.store(true, Ordering::Release);
                return Err(e.into());
            }
        };
        self.metrics.uploads.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .upload_bytes
            .fetch_add(up.size, Ordering::Relaxed);
        let doomed = {
            let mut w = self.ns.writer();
            let meta = w.table().get(ino).map(|n| n.meta.clone());
            match meta {
                // Removed while uploading (the last handle is ours, so it cannot be): drop the object.
                None => vec![Doomed::Object(key)],
                Some(mut meta) => {
                    let NodeKind::File(fm) = &mut meta.kind else {
                        unreachable!("checked a file")
                    };
                    let new = Sealed {
                        key: key.clone(),
                        size: up.size,
                        crc32c: up.crc32c,
                        ownership: Ownership::Owned,
                        local_stamp: Some(stamp),
                    };
                    let old = fm.sealed.replace(new);
                    meta.mtime_ns = stamp.mtime_ns;
                    if let Err(e) = w.commit(&[Op::PutInode(meta)]) {
                        dirty.store(true, Ordering::Release);
                        drop(w);
                        self.deleter.queue([Doomed::Object(key)]);
                        return Err(e);
                    }
                    old.filter(|o| o.ownership == Ownership::Owned)
                        .map(|o| Doomed::Object(o.key))
                        .into_iter()
                        .collect()
                }
            }
        };
        let t = std::time::Instant::now();
        self.sync_journal()?;
        tracing::debug!(journal_sync_us = t.elapsed().as_micros() as u64, "sealed");
        self.objects.record_changed();
        self.deleter.queue(doomed);
        self.cache_written(f.local_id, up.size);
        Ok(())
    }
}
