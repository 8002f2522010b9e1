//! The output of the core: everything the caller must do, and in which
//! order, after feeding it inputs.

use crate::error::ReadError;
use crate::message::Message;
use crate::types::{Entry, HardState, Index, NodeId, Role, SnapshotInfo, Term};

/// A batch of work for the caller. Carry it out in this order:
///
/// 0. If [`Ready::snapshot`] is set, the replica has adopted that
///    snapshot (the leader's, received out of band): first finish applying
///    the committed entries of earlier Readies, then restore the state
///    machine from the snapshot, before applying anything later; in the
///    write of step 2 drop the whole stored log (purge up to the snapshot,
///    truncate after it). The snapshot data must already be durable. From
///    the install on, `log().applied()` counts the snapshot as applied.
/// 1. Send [`Ready::messages`] at once (they depend on nothing unwritten:
///    a leader may replicate in parallel with its own disk write, thesis
///    §10.2.1).
/// 2. Durably write [`Ready::hard_state`] (if any) and [`Ready::entries`]
///    (truncating the stored log of this group from the first entry's
///    index, then appending).
/// 3. Only after that write, and the writes of every earlier Ready, are
///    durable: call [`crate::Raft::on_persisted`] with
///    [`Ready::persist_up_to`], and send [`Ready::persisted_messages`]
///    (votes granted, appends acknowledged, a candidate's vote requests:
///    Figure 2 says to persist "before responding to RPCs"). A Ready with
///    nothing to write can still hold such messages (say, a duplicate
///    append acknowledged while its entries are being written): they wait
///    for the writes already in flight.
/// 4. Apply [`Ready::committed_entries`] in order, then call
///    [`crate::Raft::on_applied`] with the last index applied. These
///    entries are already durable locally and committed, so step 4 may
///    run before, during or after steps 2-3.
/// 5. For each of [`Ready::read_states`] that holds an index: serve that
///    read once the state machine has applied up to the index.
///
/// Several Readies may be in flight at once as long as their writes become
/// durable in the order the Readies were taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a Ready holds work that must be carried out"]
pub struct Ready {
    /// New role or leader, when either changed since the previous Ready.
    pub soft_state: Option<SoftState>,
    /// Term, vote and commit to persist, when they changed.
    pub hard_state: Option<HardState>,
    /// Entries to persist. They may replace a suffix of the stored log.
    pub entries: Vec<Entry>,
    /// Messages that may be sent immediately.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after `hard_state` and `entries`, and
    /// everything earlier Readies asked to persist, are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed, locally durable entries to apply, in index order.
    pub committed_entries: Vec<Entry>,
    /// A snapshot the replica installed in place of its log (step 0).
    pub snapshot: Option<SnapshotInfo>,
    /// Answers to [`crate::Raft::read_index`] (step 5).
    pub read_states: Vec<ReadState>,
}

/// The answer to one [`crate::Raft::read_index`] request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id the request was made with.
    pub id: u64,
    /// The read index: serve the read once applied up to it.
    pub result: Result<Index, ReadError>,
}

impl Ready {
    /// The (index, term) of the last entry to persist, to pass back through
    /// [`crate::Raft::on_persisted`] once durable.
    pub fn persist_up_to(&self) -> Option<(Index, Term)> {
        self.entries.last().map(|e| (e.index, e.term))
    }

    /// Whether steps 2-3 involve a disk write.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }
}

/// Volatile facts the application may want to observe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The replica's role.
    pub role: Role,
    /// The leader it believes in.
    pub leader_id: Option<NodeId>,
}
