//! Group commit for concurrent appenders: many threads, one write and one
//! fdatasync per round.
//!
//! Each appender queues its batch with a private slot and parks. Whoever
//! finds no commit in progress becomes the *leader*: it takes every queued
//! batch, appends them all to the [`Wal`], syncs once, and fills each
//! waiter's slot (waking only that thread). If more batches queued up
//! meanwhile, it hands leadership to the oldest of those waiters, so the
//! busier the log, the more batches share one fsync, and no thread is
//! woken just to go back to sleep. This is the scheme of RocksDB's write
//! thread and of raft-engine.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;

use crate::batch::WriteBatch;
use crate::error::{Result, StorageError};
use crate::wal::Wal;
use crate::LogStore;

enum SlotState {
    Waiting,
    /// The commit round that held this batch finished.
    Done(Result<()>),
    /// The previous leader handed over: commit the queue.
    Lead,
}

/// Where one waiting appender learns its fate.
struct Slot {
    thread: Thread,
    state: Mutex<SlotState>,
}

impl Slot {
    fn set(&self, state: SlotState) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
        self.thread.unpark();
    }
}

struct Queue {
    waiting: Vec<(WriteBatch, Arc<Slot>)>,
    leader_active: bool,
}

/// A [`Wal`] that many threads can append to at once, with group commit.
pub struct SharedWal {
    wal: Mutex<Wal>,
    queue: Mutex<Queue>,
}

fn poisoned() -> StorageError {
    StorageError::Failed {
        reason: "a thread panicked while holding the log".into(),
    }
}

impl SharedWal {
    /// Wraps an open log.
    pub fn new(wal: Wal) -> Self {
        SharedWal {
            wal: Mutex::new(wal),
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                leader_active: false,
            }),
        }
    }

    /// Appends `batch` and returns once it is durable (per the log's sync
    /// policy), sharing the write and fsync with every batch queued
    /// meanwhile. A batch that fails validation fails alone.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let slot = Arc::new(Slot {
            thread: std::thread::current(),
            state: Mutex::new(SlotState::Waiting),
        });
        let lead_now = {
            let mut q = self.queue.lock().map_err(|_| poisoned())?;
            q.waiting.push((batch, Arc::clone(&slot)));
            !std::mem::replace(&mut q.leader_active, true)
        };
        if lead_now {
            self.lead()?;
        }
        loop {
            let state = {
                let mut s = slot.state.lock().map_err(|_| poisoned())?;
                std::mem::replace(&mut *s, SlotState::Waiting)
            };
            match state {
                SlotState::Done(result) => return result,
                SlotState::Lead => self.lead()?,
                SlotState::Waiting => std::thread::park(),
            }
        }
    }

    /// Commits one round, then hands leadership on (or gives it up). A
    /// panic inside the round (a bug) fails that round's batches instead of
    /// leaving every later writer waiting for a leader that died.
    fn lead(&self) -> Result<()> {
        let round = {
            let mut q = self.queue.lock().map_err(|_| poisoned())?;
            std::mem::take(&mut q.waiting)
        };
        let committed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit_round(&round)));
        let results = committed.unwrap_or_else(|_| {
            let failed = StorageError::Failed {
                reason: "a commit round panicked; the log must be reopened".into(),
            };
            round.iter().map(|_| Err(failed.clone())).collect()
        });
        for ((_, slot), result) in round.iter().zip(results) {
            slot.set(SlotState::Done(result));
        }
        let mut q = self.queue.lock().map_err(|_| poisoned())?;
        match q.waiting.first() {
            Some((_, next)) => next.set(SlotState::Lead),
            None => q.leader_active = false,
        }
        Ok(())
    }

    /// The leader's work: append everything, sync once.
    fn commit_round(&self, round: &[(WriteBatch, Arc<Slot>)]) -> Vec<Result<()>> {
        let mut wal = match self.wal.lock() {
            Ok(w) => w,
            Err(_) => return round.iter().map(|_| Err(poisoned())).collect(),
        };
        let appended: Vec<Result<()>> = round.iter().map(|(b, _)| wal.append(b)).collect();
        let synced = wal.sync();
        appended
            .into_iter()
            .map(|r| r.and_then(|_| synced.clone()))
            .collect()
    }

    /// Runs `f` with the log locked (reads, stats). Blocks while a commit
    /// round holds it.
    pub fn with<R>(&self, f: impl FnOnce(&mut Wal) -> R) -> Result<R> {
        let mut wal: MutexGuard<'_, Wal> = self.wal.lock().map_err(|_| poisoned())?;
        Ok(f(&mut wal))
    }

    /// Unwraps the log.
    pub fn into_inner(self) -> Result<Wal> {
        self.wal.into_inner().map_err(|_| poisoned())
    }
}
