//! Helpers for the workspace's tests (feature `testing`). Not part of the store.

use std::path::{Path, PathBuf};

/// A small tmpfs mounted on a fresh temporary directory, unmounted on drop: a local file system that
/// fills up, for the full-disk paths. Needs root (CAP_SYS_ADMIN), as the FUSE tests do.
pub struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `size` bytes (rounded up to pages by the kernel).
    pub fn new(size: u64) -> SmallFs {
        let dir = std::env::temp_dir().join(format!("statefs-smallfs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("temporary directory");
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap_or_else(|e| {
            panic!(
                "mounting a {size}-byte tmpfs on {} (tests need root): {e}",
                dir.display()
            )
        });
        SmallFs { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `<dir>/filler` until the file system is full; returns its path (remove it to free
    /// the space).
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // Page-sized tails: the last chunk may have left part of a page.
        while f.write(&[0u8; 1]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        match nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {
                let _ = std::fs::remove_dir(&self.dir);
            }
            Err(e) => eprintln!("unmounting {}: {e}", self.dir.display()),
        }
    }
}
