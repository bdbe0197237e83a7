//! Files and directories only the mounting user can reach.
//!
//! Invariant: every directory statefs creates or owns (local dir, cache dir, the journal, a
//! `file://` store's root) is mode 0700 and every file it creates is mode 0600, whatever mode a
//! file has inside the mount: the kernel checks a mounted file's mode against the caller, but the
//! bytes behind it are plain files that another local user must not be able to open. A directory
//! made 0700 also covers files created inside it by code that does not set a mode
//! (object_store's `LocalFileSystem`, RocksDB).

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file statefs creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory statefs creates or owns.
pub const DIR_MODE: u32 = 0o700;

/// `OpenOptions` whose `create`/`create_new` makes a file only its owner can read and write.
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates `path` and its missing parents with mode 0700 (parents that exist are left alone).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates `path` (and missing parents) with mode 0700, and takes group and other access away
/// from it if it existed with some: a directory statefs owns is private even when it was made
/// by hand (or by an older statefs) before the first mount.
pub fn own_dir(path: &Path) -> std::io::Result<()> {
    create_dir_all(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::info!(path = %path.display(), mode = format!("{:o}", mode & 0o7777), "making directory private (0700)");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Creates (or truncates) `path` with mode 0600 and writes `bytes`.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    create(path)?.write_all(bytes.as_ref())
}

/// Creates (or truncates) `path` with mode 0600 for writing. A file that was there with a wider
/// mode (made by an older statefs) is made 0600 before anything is written to it.
pub fn create(path: &Path) -> std::io::Result<std::fs::File> {
    let f = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_files_and_dirs_are_private_whatever_the_umask_allows() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_dir_all(&sub).unwrap();
        write(&sub.join("f"), b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("f")), 0o600);
        let old = sub.join("old");
        std::fs::write(&old, b"wide").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&old, b"x").unwrap();
        assert_eq!(mode(&old), 0o600, "a rewritten file is made private");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        own_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }
}
