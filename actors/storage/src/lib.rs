//! # synod-storage: the durable side of a Synod node
//!
//! One node hosts many Raft groups. Their logs share **one** write-ahead
//! log ([`Wal`]): appends of every group queued at the same moment become
//! one write and one `fdatasync` (group commit), so a thousand groups cost
//! one fsync per batch, not a thousand. The same records carry each group's
//! hard state (term, vote, commit), so "entries and the vote are durable
//! before the reply leaves" is one sync, not two. Snapshots live beside the
//! log in a [`SnapshotStore`].
//!
//! ```text
//!  appenders ──► WriteBatch (ops of many groups) ──► Wal::append   (encode, validate, index)
//!                                                      │
//!                                   Wal::sync ──► one write(2) + one fdatasync ──► durable
//!                                                      │
//!   reads ◄── per-group index (term, segment, offset) ◄┘  + a bounded cache of recent entries
//! ```
//!
//! Everything here is synchronous and free of actix/tokio: the runtime's
//! `LogWriter` drives a [`Wal`] on its own thread, concurrent threads can
//! share one through [`SharedWal`] (leader/follower group commit), and the
//! simulation uses [`MemLog`], an in-memory [`LogStore`] that loses
//! unsynced writes on a simulated crash.
//!
//! ## Walkthrough
//!
//! ```
//! use synod_core::{Entry, EntryKind, HardState};
//! use synod_storage::{LogStore, Wal, WalOptions, WriteBatch};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
//! let mut batch = WriteBatch::new();
//! for group in [1, 2] {
//!     batch.append(group, vec![Entry { term: 1, index: 1, kind: EntryKind::Normal("x".into()) }]);
//!     batch.set_hard_state(group, HardState { term: 1, vote: Some(1), commit: 0 });
//! }
//! wal.append(&batch).unwrap(); // staged: visible to reads, not yet durable
//! wal.sync().unwrap();         // one fdatasync for both groups
//! drop(wal);
//!
//! let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
//! assert_eq!(wal.group(2).unwrap().last_index, 1);
//! assert_eq!(wal.entries(1, 1, 2, None).unwrap()[0].data().unwrap(), "x");
//! ```
#![deny(missing_docs)]

mod batch;
mod codec;
mod error;
mod group_commit;
mod memory;
mod snapshot;
#[doc(hidden)]
pub mod testkit;
mod wal;

pub use batch::{Op, WriteBatch, MAX_INDEX};
pub use error::{Result, StorageError};
pub use group_commit::SharedWal;
pub use memory::MemLog;
pub use snapshot::{SnapshotMeta, SnapshotReader, SnapshotStore, SnapshotWriter};
pub use wal::{SyncPolicy, Wal, WalOptions, WalStats};

use synod_core::{Entry, HardState, Index};

/// Identifies a Raft group within a node. Groups are independent: each has
/// its own log indexes, hard state and snapshots.
pub type GroupId = u64;

/// What the log store knows about one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// First index still in the log (everything before it was purged
    /// after a snapshot). `last_index + 1` when the log is empty.
    pub first_index: Index,
    /// Last index in the log (`first_index - 1` when empty).
    pub last_index: Index,
    /// The latest hard state written for the group.
    pub hard_state: HardState,
}

impl GroupState {
    /// Number of entries held.
    pub fn len(&self) -> u64 {
        self.last_index + 1 - self.first_index
    }

    /// Whether the group holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GroupState {
    /// Checks that `[low, high)` can be read from a group in this state
    /// (`state` is `None` when the group does not exist).
    pub(crate) fn check_range(
        state: Option<GroupState>,
        group: GroupId,
        low: Index,
        high: Index,
    ) -> Result<GroupState> {
        let Some(s) = state else {
            return Err(StorageError::Unavailable {
                group,
                index: low,
                last_index: 0,
            });
        };
        if low < s.first_index {
            return Err(StorageError::Compacted {
                group,
                index: low,
                first_index: s.first_index,
            });
        }
        if high > s.last_index + 1 {
            return Err(StorageError::Unavailable {
                group,
                index: high - 1,
                last_index: s.last_index,
            });
        }
        Ok(s)
    }
}

/// Takes entries in order until their payload would exceed `max_bytes`
/// (always at least one).
pub(crate) fn within_bytes(
    entries: impl Iterator<Item = Entry>,
    max_bytes: Option<usize>,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for e in entries {
        bytes += e.payload_len();
        if let Some(max) = max_bytes {
            if !out.is_empty() && bytes > max {
                break;
            }
        }
        out.push(e);
    }
    out
}

/// The operations every log store offers: the file-backed [`Wal`] and the
/// in-memory [`MemLog`] used by simulations.
///
/// `append` stages a batch: it is validated, visible to reads at once and
/// written in order, but durable only after `sync` returns. A batch is
/// atomic: after a crash either all of it or none of it is recovered.
pub trait LogStore {
    /// Validates and stages `batch`. On a validation error nothing of the
    /// batch is applied.
    fn append(&mut self, batch: &WriteBatch) -> Result<()>;

    /// Makes everything staged so far durable.
    fn sync(&mut self) -> Result<()>;

    /// Entries of `group` in `[low, high)`; with `max_bytes`, stops once the
    /// payload would exceed it (but returns at least one entry if the range
    /// is not empty).
    fn entries(
        &mut self,
        group: GroupId,
        low: Index,
        high: Index,
        max_bytes: Option<usize>,
    ) -> Result<Vec<Entry>>;

    /// The group's first/last index and hard state, if the group exists.
    fn group(&self, group: GroupId) -> Option<GroupState>;

    /// Every group that has written anything and was not removed.
    fn groups(&self) -> Vec<GroupId>;

    /// Term of the entry at `index` of `group`.
    fn term(&mut self, group: GroupId, index: Index) -> Result<u64> {
        let e = self.entries(group, index, index + 1, None)?;
        Ok(e[0].term)
    }
}
