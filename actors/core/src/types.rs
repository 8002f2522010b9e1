//! Plain data shared by every part of the core: ids, entries, hard state.

use std::collections::BTreeSet;

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
    /// A configuration change: the group's whole new configuration. It
    /// takes effect on a replica as soon as the entry is in its log
    /// (thesis §4.1), committed or not, and is undone if the entry is
    /// truncated.
    ConfChange(Membership),
}

impl EntryKind {
    /// The configuration, if this is a configuration entry.
    pub fn conf(&self) -> Option<&Membership> {
        match self {
            EntryKind::ConfChange(m) => Some(m),
            _ => None,
        }
    }
}

/// A group's configuration: who votes and who only replicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members that vote and count toward quorums.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log and snapshots but never vote, never
    /// campaign and count toward no quorum.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A configuration of `voters` and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Voters then learners, ascending within each.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// A compact byte encoding (for log stores): the voter count, the
    /// voters, the learner count, the learners, all little-endian u64.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * (self.voters.len() + self.learners.len()));
        for set in [&self.voters, &self.learners] {
            out.extend_from_slice(&(set.len() as u64).to_le_bytes());
            for id in set {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out
    }

    /// Decodes what [`Membership::encode`] produced; `None` if the bytes
    /// are not such an encoding (treat the entry as corrupt).
    pub fn decode(mut data: &[u8]) -> Option<Membership> {
        fn u64_at(data: &mut &[u8]) -> Option<u64> {
            let (head, rest) = data.split_first_chunk::<8>()?;
            *data = rest;
            Some(u64::from_le_bytes(*head))
        }
        let mut sets = [BTreeSet::new(), BTreeSet::new()];
        for set in &mut sets {
            let n = u64_at(&mut data)?;
            if n > data.len() as u64 / 8 {
                return None;
            }
            for _ in 0..n {
                set.insert(u64_at(&mut data)?);
            }
        }
        if !data.is_empty() {
            return None;
        }
        let [voters, learners] = sets;
        Some(Membership { voters, learners })
    }
}

/// A configuration change a leader can propose (one server at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Adds a learner that is not yet a member.
    AddLearner(NodeId),
    /// Makes a learner, caught up with the leader's log, a voter.
    PromoteLearner(NodeId),
    /// Removes a voter or a learner (the leader included).
    RemoveMember(NodeId),
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
            EntryKind::ConfChange(m) => 8 * (m.voters.len() + m.learners.len()),
        }
    }

    /// The command bytes, if this is a normal entry.
    pub fn data(&self) -> Option<&Bytes> {
        match &self.kind {
            EntryKind::Normal(data) => Some(data),
            _ => None,
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
