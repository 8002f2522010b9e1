//! The LogWriter: one per node, it owns the node's log store and makes the
//! writes of all groups durable together.
//!
//! ```text
//!  RaftGroup ─┐                        ┌─ drain everything queued (up to 4096 requests)
//!  RaftGroup ─┼─► unbounded channel ──►├─ append each write batch (validated, staged)
//!  RaftGroup ─┘   (bounded by each     ├─ ONE sync for all of them (group commit)
//!                 group's in-flight    ├─ answer every write (Persisted), then reads
//!                 write limit)         └─ repeat
//! ```
//!
//! One loop, two placements: on a thread of its own with a file-backed
//! [`Wal`] (production: blocking fsyncs never stall the actors), or as a
//! task on the current runtime with a [`MemLog`] (simulation: no OS
//! threads). Reads are answered after the round's sync, so they only ever
//! see durable state.
//!
//! **A failed write is fatal.** After a write or a sync fails with an I/O
//! error, the writer trusts nothing in memory any more (a failed fsync may
//! have dropped the dirty pages, and a later fsync would report success
//! without writing them: the PostgreSQL "fsyncgate" lesson). It answers
//! every later write *and read* with [`StorageError::Failed`] and publishes
//! the failure ([`LogWriter::failure`], [`LogWriter::failed`]), so the node
//! stops every group instead of rebuilding one from memory. Only a restart
//! of the process, which recovers from what is on disk, serves again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use synod_core::{Entry, HardState, Index};
use synod_storage::{GroupId, LogStore, MemLog, StorageError, Wal, WriteBatch};
use tokio::sync::{mpsc, watch};

/// Most requests handled in one round.
const MAX_ROUND: usize = 4096;

/// What a group's log looks like in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredGroup {
    /// The hard state.
    pub hard_state: HardState,
    /// First index in the store (`last + 1` when empty).
    pub first_index: Index,
    /// All entries from `first_index`.
    pub entries: Vec<Entry>,
}

/// A callback run on the log writer's thread with the outcome.
pub type Done<T> = Box<dyn FnOnce(Result<T, StorageError>) + Send>;

enum Request {
    Write {
        batch: WriteBatch,
        done: Done<()>,
    },
    Read {
        group: GroupId,
        done: Done<StoredGroup>,
    },
}

/// Counters of the log writer.
#[derive(Default, Debug)]
pub struct LogWriterStats {
    /// Write requests received.
    pub writes: AtomicU64,
    /// Rounds (one sync each).
    pub rounds: AtomicU64,
    /// Entries appended.
    pub entries: AtomicU64,
    /// fdatasyncs (as the store reports them).
    pub fsyncs: AtomicU64,
}

/// Handle to the node's log writer; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<Request>,
    stats: Arc<LogWriterStats>,
    /// `Some(reason)` once a write failed; never cleared.
    failure: watch::Receiver<Option<String>>,
}

/// A log store the writer can drive, with its fsync count.
pub trait Store: LogStore + Send + 'static {
    /// fdatasyncs performed so far.
    fn fsyncs(&self) -> u64;

    /// Fault injection ([`crate::faults`]): a sync failed and only the
    /// first `keep` staged batches reached the disk. A real disk needs
    /// nothing here (what reached it is what it has); an in-memory store
    /// forgets the rest from its durable layer.
    fn lose_unsynced(&mut self, keep: usize) {
        let _ = keep;
    }
}

impl Store for Wal {
    fn fsyncs(&self) -> u64 {
        self.stats().fsyncs
    }
}

impl Store for MemLog {
    fn fsyncs(&self) -> u64 {
        self.syncs()
    }

    fn lose_unsynced(&mut self, keep: usize) {
        MemLog::lose_unsynced(self, keep)
    }
}

/// An in-memory store shared with whoever simulates the node, so that it
/// outlives a simulated crash: the simulation calls [`MemLog::crash`] on it
/// (dropping what was not synced) before starting the node again.
#[derive(Clone, Default)]
pub struct SharedMemLog(pub Arc<std::sync::Mutex<MemLog>>);

impl SharedMemLog {
    fn with<R>(&self, f: impl FnOnce(&mut MemLog) -> R) -> R {
        let mut guard = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

impl LogStore for SharedMemLog {
    fn append(&mut self, batch: &WriteBatch) -> Result<(), StorageError> {
        self.with(|m| m.append(batch))
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.with(|m| m.sync())
    }
    fn entries(
        &mut self,
        group: GroupId,
        low: Index,
        high: Index,
        max_bytes: Option<usize>,
    ) -> Result<Vec<Entry>, StorageError> {
        self.with(|m| m.entries(group, low, high, max_bytes))
    }
    fn group(&self, group: GroupId) -> Option<synod_storage::GroupState> {
        self.with(|m| m.group(group))
    }
    fn groups(&self) -> Vec<GroupId> {
        self.with(|m| m.groups())
    }
}

impl Store for SharedMemLog {
    fn fsyncs(&self) -> u64 {
        self.with(|m| m.syncs())
    }

    fn lose_unsynced(&mut self, keep: usize) {
        self.with(|m| m.lose_unsynced(keep))
    }
}

impl LogWriter {
    /// Starts the writer on a thread of its own (production).
    pub fn spawn_thread(store: impl Store) -> std::io::Result<LogWriter> {
        let (handle, fut) = LogWriter::make(store);
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        std::thread::Builder::new()
            .name("synod-log-writer".into())
            .spawn(move || rt.block_on(fut))?;
        Ok(handle)
    }

    /// Starts the writer as a task on the current `LocalSet` (simulation).
    pub fn spawn_local(store: impl Store) -> LogWriter {
        let (handle, fut) = LogWriter::make(store);
        tokio::task::spawn_local(fut);
        handle
    }

    fn make(store: impl Store) -> (LogWriter, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(LogWriterStats::default());
        let (failure_tx, failure) = watch::channel(None);
        let fut = run(store, rx, Arc::clone(&stats), failure_tx);
        (LogWriter { tx, stats, failure }, fut)
    }

    /// Why the log failed, once a write or sync failed (it never recovers
    /// in this process).
    pub fn failure(&self) -> Option<String> {
        if let Some(reason) = self.failure.borrow().clone() {
            return Some(reason);
        }
        // The writer is gone without saying why (its thread panicked):
        // nothing it was asked to write can be trusted to be durable.
        self.failure
            .has_changed()
            .is_err()
            .then(|| "the log writer stopped".to_string())
    }

    /// Waits until the log fails (or the writer stops) and says why.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return "the log writer stopped".into();
            }
        }
    }

    /// Queues `batch`; `done` runs (on the writer) once it is durable or
    /// failed. If the writer is gone, `done` runs at once with an error.
    pub fn write(&self, batch: WriteBatch, done: Done<()>) {
        if let Err(mpsc::error::SendError(Request::Write { done, .. })) =
            self.tx.send(Request::Write { batch, done })
        {
            done(Err(stopped()));
        }
    }

    /// Reads a group's durable state; `done` runs with it.
    pub fn read(&self, group: GroupId, done: Done<StoredGroup>) {
        if let Err(mpsc::error::SendError(Request::Read { done, .. })) =
            self.tx.send(Request::Read { group, done })
        {
            done(Err(stopped()));
        }
    }

    /// Reads a group's durable state.
    pub async fn read_async(&self, group: GroupId) -> Result<StoredGroup, StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.read(
            group,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.map_err(|_| stopped())?
    }

    /// Writes `batch` and waits until it is durable.
    pub async fn write_async(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(
            batch,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.map_err(|_| stopped())?
    }

    /// Counters.
    pub fn stats(&self) -> &LogWriterStats {
        &self.stats
    }
}

fn stopped() -> StorageError {
    StorageError::Failed {
        reason: "the log writer has stopped".into(),
    }
}

fn read_group(store: &mut impl Store, group: GroupId) -> Result<StoredGroup, StorageError> {
    let Some(s) = store.group(group) else {
        return Ok(StoredGroup {
            first_index: 1,
            ..StoredGroup::default()
        });
    };
    let entries = if s.is_empty() {
        Vec::new()
    } else {
        store.entries(group, s.first_index, s.last_index + 1, None)?
    };
    Ok(StoredGroup {
        hard_state: s.hard_state,
        first_index: s.first_index,
        entries,
    })
}

async fn run(
    mut store: impl Store,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: Arc<LogWriterStats>,
    failure: watch::Sender<Option<String>>,
) {
    let mut round = Vec::with_capacity(64);
    // The first fatal error; from then on nothing is written or read.
    let mut failed: Option<StorageError> = None;
    while let Some(first) = rx.recv().await {
        round.push(first);
        while round.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(r) => round.push(r),
                Err(_) => break,
            }
        }
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        for r in round.drain(..) {
            match r {
                Request::Write { batch, done } => {
                    stats.writes.fetch_add(1, Ordering::Relaxed);
                    if failed.is_some() {
                        writes.push((Ok(()), done));
                        continue;
                    }
                    stats
                        .entries
                        .fetch_add(batch.entry_count() as u64, Ordering::Relaxed);
                    let staged = store.append(&batch);
                    if let Err(e) = &staged {
                        if e.is_fatal() {
                            failed = Some(fatal(e));
                        }
                    }
                    writes.push((staged, done));
                }
                Request::Read { group, done } => reads.push((group, done)),
            }
        }
        let synced = if failed.is_none() && writes.iter().any(|(r, _)| r.is_ok()) {
            let s = store.sync();
            stats.rounds.fetch_add(1, Ordering::Relaxed);
            stats.fsyncs.store(store.fsyncs(), Ordering::Relaxed);
            if let Err(e) = &s {
                failed = Some(fatal(e));
            }
            s
        } else {
            Ok(())
        };
        if let Some(e) = &failed {
            // Publish before answering anyone: a group that hears of the
            // failure through its own write already sees the node failed.
            failure.send_if_modified(|f| {
                let first = f.is_none();
                if first {
                    *f = Some(e.to_string());
                }
                first
            });
        }
        for (staged, done) in writes {
            let result = match &failed {
                // Nothing of this round is trusted, not even a batch whose
                // own append went through.
                Some(e) => Err(staged.err().unwrap_or_else(|| e.clone())),
                None => staged.and_then(|_| synced.clone()),
            };
            done(result);
        }
        for (group, done) in reads {
            match &failed {
                Some(e) => done(Err(e.clone())),
                None => done(read_group(&mut store, group)),
            }
        }
    }
}

/// The error every later request gets once `e` failed the log.
fn fatal(e: &StorageError) -> StorageError {
    match e {
        StorageError::Failed { .. } => e.clone(),
        other => StorageError::Failed {
            reason: other.to_string(),
        },
    }
}
