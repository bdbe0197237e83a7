//! Errors of the state backends, grouped by what the caller should do ([`StateError::kind`]).

use statefs_store::StoreError;

use crate::keygroup::KeyGroupRange;

/// The cause of an error the backend passes on (a store's, RocksDB's, the filesystem's).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the caller should do about a [`StateError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call or its input is wrong: a key outside the backend's key groups, no current key, a
    /// state registered again with another type, a bad option or argument. Retrying fails the same
    /// way; the caller (or its configuration) must change.
    InvalidInput,
    /// Stored state is not what it claims: a checkpoint, savepoint or database file that is
    /// damaged or missing. Restore from another checkpoint.
    Corruption,
    /// A failure that may pass (the store was unreachable, throttled or timed out): retry the
    /// operation; for a checkpoint, take the next one.
    Retry,
    /// Something the backend needs failed and will not recover by retrying alone: the store
    /// refused the request (credentials, permissions), the local disk is full or failing, the
    /// database or the statefs mount could not be opened. Needs an operator.
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// [`ErrorKind::InvalidInput`].
    #[error("key group {key_group} of this key is outside the backend's range {range:?}")]
    KeyOutOfRange {
        key_group: u32,
        range: KeyGroupRange,
    },
    /// [`ErrorKind::InvalidInput`].
    #[error("no current key: call set_current_key first")]
    NoCurrentKey,
    /// [`ErrorKind::InvalidInput`]: a bad argument or option.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// [`ErrorKind::InvalidInput`]: the state exists (restored or registered) with another kind,
    /// serializer or TTL setting.
    #[error("state {state:?} cannot be migrated: {why}")]
    Migration { state: String, why: String },
    /// [`ErrorKind::InvalidInput`]: a value the state's serializer cannot (de)serialize.
    #[error("state {state:?}: cannot (de)serialize: {why}")]
    Serialization { state: String, why: String },
    /// [`ErrorKind::Corruption`]: snapshot, savepoint, checkpoint or database bytes that are not
    /// what they claim.
    #[error("corrupt {what}: {why}")]
    Corrupt { what: String, why: String },
    /// [`ErrorKind::Retry`].
    #[error("{what}: {source}")]
    Transient {
        what: String,
        #[source]
        source: Cause,
    },
    /// [`ErrorKind::Unavailable`].
    #[error("{what}: {source}")]
    Unavailable {
        what: String,
        #[source]
        source: Cause,
    },
}

impl StateError {
    pub fn corrupt(what: impl Into<String>, why: impl Into<String>) -> Self {
        StateError::Corrupt {
            what: what.into(),
            why: why.into(),
        }
    }

    /// `what` failed because of `source`, which will not pass by retrying.
    pub fn unavailable(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        StateError::Unavailable {
            what: what.into(),
            source: source.into(),
        }
    }

    /// `what` failed because of `source`, which may pass.
    pub fn transient(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        StateError::Transient {
            what: what.into(),
            source: source.into(),
        }
    }

    /// What the caller should do.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StateError::KeyOutOfRange { .. }
            | StateError::NoCurrentKey
            | StateError::Invalid(_)
            | StateError::Migration { .. }
            | StateError::Serialization { .. } => ErrorKind::InvalidInput,
            StateError::Corrupt { .. } => ErrorKind::Corruption,
            StateError::Transient { .. } => ErrorKind::Retry,
            StateError::Unavailable { .. } => ErrorKind::Unavailable,
        }
    }

    /// Whether retrying the operation may succeed ([`ErrorKind::Retry`]).
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Retry
    }

    /// A store error while reading a file a checkpoint names: a missing file is a corrupt
    /// checkpoint, anything else the storage's error.
    pub(crate) fn reading_checkpoint(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { key } => {
                StateError::corrupt("checkpoint", format!("file {key} is missing"))
            }
            e => e.into(),
        }
    }
}

/// A store error from checkpoint storage, by what it means for the caller.
impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Config(why) => StateError::Invalid(format!("checkpoint storage: {why}")),
            e if e.is_transient() => StateError::transient("checkpoint storage", e),
            e => StateError::unavailable("checkpoint storage", e),
        }
    }
}

/// A local I/O error: a full disk, permissions, a failing device.
#[cfg(feature = "rocksdb")]
pub(crate) fn local_io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StateError {
    let what = what.into();
    move |e| StateError::unavailable(what, e)
}

pub type StateResult<T> = Result<T, StateError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_what_the_caller_should_do() {
        let unavailable = StoreError::Unavailable {
            op: "put",
            key: "k".into(),
            message: "connection reset".into(),
        };
        assert_eq!(StateError::from(unavailable).kind(), ErrorKind::Retry);
        let fatal = StoreError::Fatal {
            op: "put",
            key: "k".into(),
            message: "access denied".into(),
        };
        let e = StateError::from(fatal);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("access denied"), "{e}");
        let missing = StoreError::NotFound { key: "k".into() };
        assert_eq!(
            StateError::reading_checkpoint(missing).kind(),
            ErrorKind::Corruption
        );
        let bad = StoreError::Config("no bucket".into());
        assert_eq!(StateError::from(bad).kind(), ErrorKind::InvalidInput);
    }
}
