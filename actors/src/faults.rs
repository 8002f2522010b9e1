//! Disk fault injection: a [`FaultyStore`] wraps any [`Store`] and, when a
//! test or the simulation arms a [`DiskFault`] through its [`DiskFaults`]
//! handle, makes the next write or sync fail the way a real disk does.
//!
//! ```text
//!  test / simulation ──arm(SyncFails)──► DiskFaults ◄──checks── FaultyStore ──► Wal / MemLog
//!                    ◄──fired()────────
//! ```
//!
//! A failed sync is modelled as Linux reports one: the error comes back,
//! and what the sync should have made durable is gone from the disk (for
//! an in-memory store, [`Store::lose_unsynced`]) while memory still shows
//! it. The log writer must then refuse to trust memory (see
//! `docs/STORAGE.md`, "A failed write is fatal").
//!
//! Production does not wrap its store at all (`EngineConfig::disk_faults`
//! is `None`); a wrapped store with nothing armed takes one uncontended
//! mutex per append and per sync.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use synod_core::{Entry, Index};
use synod_storage::{GroupId, GroupState, LogStore, StorageError, WriteBatch};

use crate::log_writer::Store;

/// Linux's "I/O error".
const EIO: i32 = 5;
/// Linux's "No space left on device".
const ENOSPC: i32 = 28;

/// A fault a disk can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// The next sync fails with EIO; what it was to make durable is lost.
    SyncFails,
    /// The next sync makes only the first staged batch durable, then fails
    /// with EIO (a torn group commit).
    TornWrite,
    /// The next write fails with EIO; nothing of it is staged.
    WriteFails,
    /// The next write fails with ENOSPC; nothing of it is staged.
    NoSpace,
    /// The next sync takes this long, then succeeds (a slow disk; blocks
    /// the log writer's thread, so use it with real threads only).
    SlowSync(Duration),
}

impl DiskFault {
    fn on_sync(self) -> bool {
        matches!(
            self,
            DiskFault::SyncFails | DiskFault::TornWrite | DiskFault::SlowSync(_)
        )
    }
}

#[derive(Debug, Default)]
struct Plan {
    /// Faults waiting for the operation they apply to, oldest first.
    armed: VecDeque<DiskFault>,
    /// Faults that happened, in order.
    fired: Vec<DiskFault>,
}

/// The control handle of a [`FaultyStore`]: arm faults, see which fired.
/// Cheap to clone; all clones control the same store.
#[derive(Clone, Debug, Default)]
pub struct DiskFaults(Arc<Mutex<Plan>>);

impl DiskFaults {
    /// A handle with nothing armed.
    pub fn new() -> Self {
        DiskFaults::default()
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Arms `fault`: the next operation it applies to (a sync, or a write)
    /// suffers it.
    pub fn arm(&self, fault: DiskFault) {
        self.plan().armed.push_back(fault);
    }

    /// The faults that happened so far, in order.
    pub fn fired(&self) -> Vec<DiskFault> {
        self.plan().fired.clone()
    }

    /// Faults armed that have not happened yet.
    pub fn pending(&self) -> usize {
        self.plan().armed.len()
    }

    /// Takes the first armed fault that applies to a sync (`sync = true`)
    /// or a write, and records it as fired.
    fn take(&self, sync: bool) -> Option<DiskFault> {
        let mut plan = self.plan();
        let at = plan.armed.iter().position(|f| f.on_sync() == sync)?;
        let fault = plan.armed.remove(at)?;
        plan.fired.push(fault);
        Some(fault)
    }
}

/// A [`Store`] that suffers the faults armed on its [`DiskFaults`].
pub struct FaultyStore<S> {
    inner: S,
    faults: DiskFaults,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`, controlled by `faults`.
    pub fn new(inner: S, faults: DiskFaults) -> Self {
        FaultyStore { inner, faults }
    }
}

fn injected(errno: i32, what: &str) -> StorageError {
    StorageError::io(
        format!("<injected {what} fault>"),
        io::Error::from_raw_os_error(errno),
    )
}

impl<S: Store> LogStore for FaultyStore<S> {
    fn append(&mut self, batch: &WriteBatch) -> Result<(), StorageError> {
        match self.faults.take(false) {
            Some(DiskFault::NoSpace) => Err(injected(ENOSPC, "write")),
            Some(_) => Err(injected(EIO, "write")),
            None => self.inner.append(batch),
        }
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        match self.faults.take(true) {
            Some(DiskFault::SlowSync(d)) => {
                std::thread::sleep(d);
                self.inner.sync()
            }
            Some(DiskFault::TornWrite) => {
                self.inner.lose_unsynced(1);
                Err(injected(EIO, "torn sync"))
            }
            Some(_) => {
                self.inner.lose_unsynced(0);
                Err(injected(EIO, "sync"))
            }
            None => self.inner.sync(),
        }
    }

    fn entries(
        &mut self,
        group: GroupId,
        low: Index,
        high: Index,
        max_bytes: Option<usize>,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(group, low, high, max_bytes)
    }

    fn group(&self, group: GroupId) -> Option<GroupState> {
        self.inner.group(group)
    }

    fn groups(&self) -> Vec<GroupId> {
        self.inner.groups()
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn fsyncs(&self) -> u64 {
        self.inner.fsyncs()
    }

    fn lose_unsynced(&mut self, keep: usize) {
        self.inner.lose_unsynced(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::EntryKind;
    use synod_storage::MemLog;

    fn batch(index: Index) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.append(
            1,
            vec![Entry {
                index,
                term: 1,
                kind: EntryKind::Normal(vec![1].into()),
            }],
        );
        b
    }

    #[test]
    fn each_fault_fires_once_on_its_operation() {
        let faults = DiskFaults::new();
        let mut s = FaultyStore::new(MemLog::new(), faults.clone());
        faults.arm(DiskFault::SyncFails);
        faults.arm(DiskFault::NoSpace);
        // The write fault applies to the next write, not to the sync.
        let e = s.append(&batch(1)).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        s.append(&batch(1)).unwrap();
        assert!(s.sync().is_err());
        assert_eq!(
            faults.fired(),
            vec![DiskFault::NoSpace, DiskFault::SyncFails]
        );
        assert_eq!(faults.pending(), 0);
        // Memory still shows the entry whose sync failed; the "disk" does
        // not have it.
        assert_eq!(s.group(1).map(|g| g.last_index), Some(1));
        s.inner.crash();
        assert_eq!(s.group(1), None);
    }

    #[test]
    fn a_torn_write_keeps_only_the_first_batch() {
        let faults = DiskFaults::new();
        let mut s = FaultyStore::new(MemLog::new(), faults.clone());
        s.append(&batch(1)).unwrap();
        s.append(&batch(2)).unwrap();
        faults.arm(DiskFault::TornWrite);
        assert!(s.sync().is_err());
        s.inner.crash();
        assert_eq!(s.group(1).map(|g| g.last_index), Some(1));
    }
}
