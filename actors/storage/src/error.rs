//! Typed errors of the storage crate.
//!
//! Errors split in two families. *Request* errors (`Compacted`,
//! `Unavailable`, `Gap`, `InvalidBatch`, `InvalidArgument`,
//! `SnapshotNotFound`) say the caller asked for something the log cannot
//! give; the store is fine and keeps serving. *Fatal* errors (`Io`, `Corrupt`,
//! `Failed`) say the disk misbehaved; the write-ahead log stops accepting
//! writes after one (an fsync that failed cannot be retried safely) and the
//! node must restart, which recovers from what is durable.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::GroupId;

/// Everything that can go wrong in the storage crate.
///
/// `Clone` so that one I/O failure of a group commit can be reported to every
/// appender whose batch was part of it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// An operating-system call on `path` failed.
    #[error(
        "I/O error on {path}: {source}; check the disk (space, permissions, health) and restart \
         the node, which recovers from what is durable"
    )]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The error the operating system returned.
        #[source]
        source: Arc<io::Error>,
    },
    /// Bytes on disk fail their checksum or do not parse, somewhere they
    /// cannot be a torn write.
    #[error(
        "corrupt data in {file} at byte offset {offset}: {reason}; the file was damaged after \
         it was written: restore this node from a snapshot or re-replicate it from its peers \
         (do not delete the file blindly)"
    )]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record or header within `file`.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The requested index was purged (it is covered by a snapshot).
    #[error(
        "group {group}: index {index} is compacted (first index in the log is {first_index}); \
         use the snapshot instead"
    )]
    Compacted {
        /// The group asked about.
        group: GroupId,
        /// The index asked for.
        index: u64,
        /// The first index the log still holds.
        first_index: u64,
    },
    /// The requested index is beyond the end of the log.
    #[error("group {group}: index {index} is not in the log (last index is {last_index})")]
    Unavailable {
        /// The group asked about.
        group: GroupId,
        /// The index asked for.
        index: u64,
        /// The last index the log holds.
        last_index: u64,
    },
    /// An append would leave a hole after the group's last entry.
    #[error(
        "group {group}: append starts at index {index} but the last index is {last_index}; \
         entries must continue the log (or overwrite its suffix)"
    )]
    Gap {
        /// The group written to.
        group: GroupId,
        /// First index of the rejected entries.
        index: u64,
        /// The group's last index at that point of the batch.
        last_index: u64,
    },
    /// A write batch is malformed (for example non-consecutive indexes).
    #[error("invalid write batch for group {group}: {reason}")]
    InvalidBatch {
        /// The group the bad operation was about.
        group: GroupId,
        /// What is wrong with it.
        reason: String,
    },
    /// A call got an argument it cannot accept (e.g. an empty range bound
    /// inversion or a bad option).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// No snapshot with that group and index exists.
    #[error("group {group}: no snapshot at index {index}")]
    SnapshotNotFound {
        /// The group asked about.
        group: GroupId,
        /// The snapshot index asked for.
        index: u64,
    },
    /// Another process (or another `Wal` in this one) has the directory open.
    #[error(
        "the WAL directory {path} is in use by another process (or another open log); stop it \
         or point this node at its own data directory"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The log stopped after an earlier fatal error and refuses all writes.
    #[error(
        "the write-ahead log stopped after an earlier failure ({reason}); restart the node \
         (reopen the log) to recover from what is durable"
    )]
    Failed {
        /// The first fatal error, as text.
        reason: String,
    },
}

impl StorageError {
    /// Wraps an `io::Error` about `path`.
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.as_ref().to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// Builds a `Corrupt` error.
    pub fn corrupt(file: impl AsRef<Path>, offset: u64, reason: impl Into<String>) -> Self {
        StorageError::Corrupt {
            file: file.as_ref().to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for errors after which the write-ahead log refuses writes
    /// (`Io`, `Corrupt`, `Failed`).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StorageError::Io { .. } | StorageError::Corrupt { .. } | StorageError::Failed { .. }
        )
    }
}

/// Result alias of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
