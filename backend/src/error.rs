//! Errors of the state backends, grouped by what the caller should do.

use crate::keygroup::KeyGroupRange;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A caller bug: a key this backend does not own, no current key, a bad argument.
    #[error("key group {key_group} of this key is outside the backend's range {range:?}")]
    KeyOutOfRange {
        key_group: u32,
        range: KeyGroupRange,
    },
    #[error("no current key: call set_current_key first")]
    NoCurrentKey,
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The state exists (restored or registered) with another kind, serializer or TTL setting.
    #[error("state {state:?} cannot be migrated: {why}")]
    Migration { state: String, why: String },
    #[error("state {state:?}: cannot (de)serialize: {why}")]
    Serialization { state: String, why: String },
    /// Snapshot, savepoint or checkpoint bytes that are not what they claim.
    #[error("corrupt {what}: {why}")]
    Corrupt { what: String, why: String },
    #[error("checkpoint storage: {0}")]
    Storage(#[from] statefs_store::StoreError),
}

impl StateError {
    pub fn corrupt(what: impl Into<String>, why: impl Into<String>) -> Self {
        StateError::Corrupt {
            what: what.into(),
            why: why.into(),
        }
    }

    /// A store error while reading a file a checkpoint names: a missing file is a corrupt
    /// checkpoint, anything else the storage's error.
    pub(crate) fn reading_checkpoint(e: statefs_store::StoreError) -> Self {
        match e {
            statefs_store::StoreError::NotFound { key } => {
                StateError::corrupt("checkpoint", format!("file {key} is missing"))
            }
            e => e.into(),
        }
    }
}

pub type StateResult<T> = Result<T, StateError>;
