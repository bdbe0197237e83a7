//! A ForSt checkpoint read straight from the live database directory, with no RocksDB Checkpoint
//! in between: RocksDB's checkpoint on the mount links every SST into a new directory and copies
//! the small files through FUSE, each a journaled operation, and the directory must be unlinked
//! again afterwards. statefs can name the live files in a checkpoint instead.
//!
//! What makes the named set consistent (RocksDB's file deletions are paused throughout, by the
//! caller):
//! 1. CURRENT is read, then the MANIFEST it names, cut after its last complete record
//!    ([`complete_prefix`]). A MANIFEST switch after the read leaves this one complete.
//! 2. The directory is listed after that. RocksDB syncs an SST before an edit names it, and a
//!    synced SST on statefs is sealed (uploaded) before the sync returns. So every SST the cut
//!    MANIFEST names was sealed before the MANIFEST was read, and is still there: it is listed,
//!    and published. SSTs not sealed yet cannot be named by it and are left out
//!    (`CheckpointFile::SealedOnly`).
//!
//!    Pausing deletions does not stop a purge RocksDB began before (`DisableFileDeletions` only
//!    counts), so files may still disappear meanwhile. They are files no version needs any more:
//!    the edit that dropped them was written before the purge found them, so it is in the cut
//!    MANIFEST too. Such an SST is left out of the publish (`SealedOnly` tolerates a file that
//!    goes away, up to the moment its object is borrowed); the MANIFEST RocksDB switched away
//!    from is replaced by the one CURRENT names then.
//! 3. Sealed SSTs the MANIFEST does not name (obsolete ones waiting for deletion, or outputs of a
//!    compaction whose edit came later) are published too. A restored RocksDB deletes them when it
//!    opens, after moving its next file number past the largest one present (RocksDB 11's
//!    `MaybeUpdateNextFileNumber`), so they can neither be read nor collide with a new file.

use std::path::Path;

use bytes::Bytes;
use statefs::core::CheckpointFile;

use crate::rocks::manifest_log::complete_prefix;

/// Why the live directory could not be named as a checkpoint; the caller falls back to RocksDB's
/// Checkpoint, which needs no understanding of the directory.
#[derive(Debug, thiserror::Error)]
pub(super) enum LiveError {
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("CURRENT does not name a MANIFEST: {0:?}")]
    Current(String),
    #[error("{0}: {1}")]
    Manifest(String, crate::rocks::manifest_log::ManifestDamaged),
    #[error("{0} holds no complete record")]
    EmptyManifest(String),
}

/// The files of a checkpoint of the database in `db_dir` (a directory of the mount) as it is now,
/// plus `extra` (name, bytes). RocksDB's file deletions must stay paused from before this is
/// called until the checkpoint is published.
pub(super) fn checkpoint_files(
    db_dir: &Path,
    extra: Vec<(String, Bytes)>,
) -> Result<Vec<CheckpointFile>, LiveError> {
    let read = |name: &str| std::fs::read(db_dir.join(name));
    let io = |name: &str| {
        let name = name.to_string();
        move |e| LiveError::Io(name, e)
    };
    // RocksDB deletes the MANIFEST it switched away from with a purge that may have begun before
    // deletions were paused: if the MANIFEST is gone by the time it is read, CURRENT names a newer
    // one.
    let mut attempts = 0;
    let (current, manifest_name, mut manifest) = loop {
        let current = read("CURRENT").map_err(io("CURRENT"))?;
        let manifest_name = std::str::from_utf8(&current)
            .ok()
            .and_then(|c| c.strip_suffix('\n'))
            .filter(|m| numbered(m, "MANIFEST-"))
            .ok_or_else(|| LiveError::Current(String::from_utf8_lossy(&current).into_owned()))?
            .to_string();
        match read(&manifest_name) {
            Ok(m) => break (current, manifest_name, m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
            Err(e) => return Err(io(&manifest_name)(e)),
        }
    };
    let complete =
        complete_prefix(&manifest).map_err(|e| LiveError::Manifest(manifest_name.clone(), e))?;
    if complete == 0 {
        return Err(LiveError::EmptyManifest(manifest_name));
    }
    manifest.truncate(complete);

    let mut files = Vec::new();
    let mut options: Option<(u64, String)> = None;
    for entry in std::fs::read_dir(db_dir).map_err(io("the directory"))? {
        let entry = entry.map_err(io("the directory"))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.strip_suffix(".sst").is_some_and(|n| numbered(n, "")) {
            files.push(CheckpointFile::SealedOnly {
                path: db_dir.join(&name).to_string_lossy().into_owned(),
                name,
            });
        } else if numbered(&name, "OPTIONS-") {
            let n: u64 = name["OPTIONS-".len()..].parse().unwrap_or(0);
            if options.as_ref().is_none_or(|(m, _)| n > *m) {
                options = Some((n, name));
            }
        }
    }
    // RocksDB reads the newest OPTIONS file when asked for the options a database was made with;
    // the restore passes its own, so this is for tools, and one removed meanwhile (RocksDB keeps
    // the newest two) is left out.
    if let Some((_, name)) = options {
        match read(&name) {
            Ok(data) => files.push(CheckpointFile::Bytes {
                name,
                data: Bytes::from(data),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&name)(e)),
        }
    }
    files.push(CheckpointFile::Bytes {
        name: "CURRENT".into(),
        data: Bytes::from(current),
    });
    files.push(CheckpointFile::Bytes {
        name: manifest_name,
        data: Bytes::from(manifest),
    });
    files.extend(
        extra
            .into_iter()
            .map(|(name, data)| CheckpointFile::Bytes { name, data }),
    );
    Ok(files)
}

/// `name` is `prefix` followed by one or more decimal digits.
fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}
