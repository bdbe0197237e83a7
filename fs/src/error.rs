//! Errors of filesystem operations and their errno values.

use crate::journal::JournalError;
use crate::store::StoreError;

/// The error of one filesystem operation. [`FsError::errno`] is the only place errors become errno
/// values; its match has no catch-all arm, so a new variant must choose its errno.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    #[error("bad file handle")]
    BadHandle,
    #[error("file not open for writing")]
    NotWritable,
    #[error("object store: {0}")]
    Remote(#[from] StoreError),
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The mapping table refused an operation the core believed valid: a bug, reported as EIO.
    #[error("mapping table inconsistency: {0}")]
    Internal(String),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::Unsupported(_) => libc::EOPNOTSUPP,
            FsError::BadHandle => libc::EBADF,
            FsError::NotWritable => libc::EBADF,
            // Local I/O keeps its own errno (ENOSPC, EDQUOT...): the caller can act on it.
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            FsError::Remote(StoreError::LocalIo { source, .. }) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            FsError::Remote(_) => libc::EIO,
            FsError::Journal(JournalError::Io(e)) => e.raw_os_error().unwrap_or(libc::EIO),
            FsError::Journal(_) => libc::EIO,
            FsError::Internal(_) => libc::EIO,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(
            FsError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)).errno(),
            libc::ENOSPC
        );
        let unavailable = StoreError::Unavailable {
            op: "put",
            key: "k".into(),
            message: "down".into(),
        };
        assert_eq!(FsError::Remote(unavailable).errno(), libc::EIO);
        assert_eq!(FsError::Unsupported("x").errno(), libc::EOPNOTSUPP);
    }
}
