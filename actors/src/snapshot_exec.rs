//! SnapshotExecutor: saves a group's snapshots, streams them to followers
//! that need them, and stores the ones a leader streams here.
//!
//! ```text
//!  FsmCaller ── Save{index, term, data} ──► store (chunked, fsync, atomic rename)
//!                                           └─► RaftGroup: SnapshotSaved (compact + purge the WAL)
//!  Replicator ── open the snapshot ──► transport stream to the follower ──► report to RaftGroup
//!  transport ── Receive{header, chunks} ──► store, then RaftGroup: StepSnapshot(InstallSnapshot msg)
//! ```
//!
//! The receiving side stores the data durably before the InstallSnapshot
//! message is stepped into the core, which is what the core's Ready
//! contract requires.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use slog::{info, warn, Logger};
use synod_core::{Index, Membership, MessageBody, Term};
use synod_net::SnapshotStream;
use synod_storage::{GroupId, SnapshotMeta, SnapshotStore};

use crate::fsm::{FsmCaller, SnapshotFinished};
use crate::group::{RaftGroup, SnapshotSaved, StepSnapshot};
use crate::proto::SnapshotHeader;
use crate::shared::{DeathGuard, NodeShared};

/// Saves the state machine's state at `index` as a snapshot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Save {
    /// Last applied index the state covers.
    pub index: Index,
    /// Its term.
    pub term: Term,
    /// The group's configuration as of `index`.
    pub membership: Membership,
    /// The serialized state.
    pub data: Vec<u8>,
}

/// A snapshot streamed here by a leader.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Receive {
    /// Who sent it.
    pub from: u64,
    /// What it is.
    pub header: SnapshotHeader,
    /// The data.
    pub data: SnapshotStream,
}

/// Late wiring: the FsmCaller is created after this actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetFsm(pub Addr<FsmCaller>);

/// The SnapshotExecutor of one group.
pub struct SnapshotExecutor {
    group: GroupId,
    shared: Arc<NodeShared>,
    raft: Addr<RaftGroup>,
    fsm: Option<Addr<FsmCaller>>,
    log: Logger,
    _guard: DeathGuard,
}

impl SnapshotExecutor {
    pub(crate) fn new(
        group: GroupId,
        shared: Arc<NodeShared>,
        raft: Addr<RaftGroup>,
        guard: DeathGuard,
    ) -> Self {
        let log = shared
            .log
            .new(slog::o!("group" => group, "actor" => "snapshot"));
        SnapshotExecutor {
            group,
            shared,
            raft,
            fsm: None,
            log,
            _guard: guard,
        }
    }

    fn meta(&self, m: &Save) -> SnapshotMeta {
        SnapshotMeta {
            group: self.group,
            index: m.index,
            term: m.term,
            voters: m.membership.voters.iter().copied().collect(),
            learners: m.membership.learners.iter().copied().collect(),
        }
    }

    fn finish_save(&self, index: Index, bytes: usize, result: Result<(), String>) {
        let ok = result.is_ok();
        match result {
            Ok(()) => {
                self.shared
                    .counters
                    .snapshots_saved
                    .fetch_add(1, Ordering::Relaxed);
                info!(self.log, "snapshot saved"; "index" => index, "bytes" => bytes);
                self.raft.do_send(SnapshotSaved { index });
            }
            Err(e) => warn!(self.log, "saving a snapshot failed"; "index" => index, "error" => e),
        }
        if let Some(fsm) = &self.fsm {
            fsm.do_send(SnapshotFinished { index, ok });
        }
    }
}

/// Writes a snapshot's data durably (chunked, fsync, atomic publish).
fn save(store: &SnapshotStore, meta: SnapshotMeta, data: &[u8]) -> Result<(), String> {
    let mut w = store.writer(meta).map_err(|e| e.to_string())?;
    for chunk in data.chunks(1 << 20) {
        w.write_chunk(chunk).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    Ok(())
}

impl Actor for SnapshotExecutor {
    type Context = Context<Self>;
}

impl Handler<SetFsm> for SnapshotExecutor {
    type Result = ();

    fn handle(&mut self, m: SetFsm, _: &mut Context<Self>) {
        self.fsm = Some(m.0);
    }
}

impl Handler<Save> for SnapshotExecutor {
    type Result = ();

    fn handle(&mut self, m: Save, ctx: &mut Context<Self>) {
        let meta = self.meta(&m);
        let (index, bytes) = (m.index, m.data.len());
        if !self.shared.offload_io {
            // Simulation: no OS threads; the store is fast there.
            let result = save(&self.shared.snapshots, meta, &m.data);
            self.finish_save(index, bytes, result);
            return;
        }
        // Writing and fsyncing megabytes would stall every group on this
        // thread: do it on a thread of its own and come back for the rest.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = self.shared.snapshots.clone();
        let spawned = std::thread::Builder::new()
            .name("synod-snapshot".into())
            .spawn(move || {
                let _ = tx.send(save(&store, meta, &m.data));
            });
        if let Err(e) = spawned {
            self.finish_save(index, bytes, Err(e.to_string()));
            return;
        }
        ctx.spawn(rx.into_actor(self).map(move |r, act, _| {
            let result = r.unwrap_or_else(|_| Err("the snapshot thread died".into()));
            act.finish_save(index, bytes, result);
        }));
    }
}

impl Handler<Receive> for SnapshotExecutor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, m: Receive, _: &mut Context<Self>) -> Self::Result {
        let shared = Arc::clone(&self.shared);
        let raft = self.raft.clone();
        let group = self.group;
        let log = self.log.clone();
        Box::pin(async move {
            let MessageBody::Snapshot {
                snapshot,
                ref membership,
                ..
            } = m.header.msg.body
            else {
                return Err("the header does not carry an InstallSnapshot message".into());
            };
            let meta = SnapshotMeta {
                group,
                index: snapshot.index,
                term: snapshot.term,
                voters: membership.voters.iter().copied().collect(),
                learners: membership.learners.iter().copied().collect(),
            };
            let mut w = shared.snapshots.writer(meta).map_err(|e| e.to_string())?;
            let mut data = m.data;
            let mut bytes = 0usize;
            while let Some(chunk) = data.next_chunk().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                bytes += chunk.len();
                w.write_chunk(&chunk).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
            info!(log, "snapshot received"; "from" => m.from, "index" => snapshot.index,
                  "bytes" => bytes);
            raft.send(StepSnapshot(m.header.msg))
                .await
                .map_err(|e| format!("group {group} is gone: {e}"))
        })
    }
}
