//! Plain data shared by every part of the core: ids, entries, hard state.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Identifies a node (a replica) within a group. `0` is never a valid id.
pub type NodeId = u64;
/// A Raft term (§5.1). Terms start at 0 and only grow.
pub type Term = u64;
/// A log index (§5.3). The first real entry has index 1; index 0 is the
/// empty prefix with term 0.
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// The empty entry a new leader appends in its own term so that it can
    /// commit entries of earlier terms (§5.4.2, §8).
    Noop,
    /// An application command, opaque to the core.
    ///
    /// `Bytes` serializes as a byte string (not an integer array), which
    /// is what rmp-serde needs to stay compact (STACK.md, gotcha 10).
    Normal(Bytes),
}

/// One log entry (§5.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What the entry carries.
    pub kind: EntryKind,
}

impl Entry {
    /// Bytes of payload, used for the per-message byte limit.
    pub fn payload_len(&self) -> usize {
        match &self.kind {
            EntryKind::Noop => 0,
            EntryKind::Normal(data) => data.len(),
        }
    }

    /// The command bytes, if this is a normal entry.
    pub fn data(&self) -> Option<&Bytes> {
        match &self.kind {
            EntryKind::Noop => None,
            EntryKind::Normal(data) => Some(data),
        }
    }
}

/// The state Raft requires on stable storage before answering RPCs
/// (Figure 2, "Persistent state on all servers"), plus the commit index so
/// that a restarted node can apply what it knew was committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known committed when this state was produced.
    pub commit: Index,
}

/// The role a node plays in its group (§5.1, plus the pre-vote phase of
/// the thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election before disrupting anyone.
    PreCandidate,
    /// Runs an election in its own (incremented) term.
    Candidate,
    /// Replicates the log and decides commitment.
    Leader,
}

/// Where a snapshot ends: the index and term of the last entry it covers.
/// The snapshot's data travels outside the core (the runtime streams it);
/// the core only needs to know where the log continues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Index of the last entry the snapshot includes.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
}
