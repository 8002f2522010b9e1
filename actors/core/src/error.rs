//! Errors the core returns. Broken invariants are not errors: they panic
//! with group and term context, because they mean a bug, not bad input.

use thiserror::Error;

use crate::types::{Index, NodeId, Term};

/// A [`crate::Config`] that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Node id 0 is reserved for "nobody".
    #[error("node id 0 is reserved; give every replica an id >= 1")]
    ZeroId,
    /// A voter has id 0.
    #[error("voter id 0 is reserved; give every replica an id >= 1")]
    ZeroVoter,
    /// Heartbeats would not arrive before elections start.
    #[error(
        "heartbeat_ticks ({heartbeat_ticks}) must be >= 1 and smaller than election_ticks \
         ({election_ticks}); a ratio of 5-10 is usual"
    )]
    Timing {
        /// The configured heartbeat interval.
        heartbeat_ticks: u32,
        /// The configured election timeout.
        election_ticks: u32,
    },
    /// A limit of zero would stop replication or proposals for good.
    #[error("max_entries_per_msg, max_bytes_per_msg, max_inflight_msgs and max_uncommitted_entries must all be >= 1")]
    ZeroLimit,
}

/// Why a read index was not served. Nothing changed; a retry is safe.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    /// This replica cannot serve the read: it does not lead, and (for a
    /// follower read) knows no leader to ask, or the leader stepped down
    /// before confirming it. Retry at `leader_hint` if known.
    #[error("no leader confirmed the read (leader hint: {leader_hint:?}); retry at the leader")]
    NotLeader {
        /// The leader this replica believes in, if any.
        leader_hint: Option<NodeId>,
    },
}

/// Why a proposal was not appended. None of these changed any state.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader appends proposals; retry at `leader_hint` if known.
    #[error("not the leader (leader hint: {leader_hint:?}); send the proposal to the leader")]
    NotLeader {
        /// The leader this replica believes in, if any.
        leader_hint: Option<NodeId>,
    },
    /// Too many entries are waiting for commitment; retry later.
    #[error("{uncommitted} entries await commitment (limit {limit}); back off and retry")]
    Busy {
        /// Entries proposed but not committed.
        uncommitted: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Nothing to propose.
    #[error("empty proposal: pass at least one command")]
    Empty,
}

/// Why a restore from durable state was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RestoreError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The persisted entries are not a contiguous run starting at 1.
    #[error("persisted log is not contiguous at index {index}: expected {expected}; the log store returned a broken range")]
    Gap {
        /// Index where the gap was found.
        index: Index,
        /// Index that was expected there.
        expected: Index,
    },
    /// The persisted entries do not continue the snapshot.
    #[error("persisted entries start at {first}, but the snapshot ends at {snapshot_index}; they must continue it")]
    SnapshotGap {
        /// First persisted entry.
        first: Index,
        /// The snapshot's last index.
        snapshot_index: Index,
    },
    /// An entry's term is greater than the persisted current term, or terms
    /// decrease along the log.
    #[error("persisted entry {index} has term {entry_term}, inconsistent with hard-state term {term} or the previous entry")]
    BadTerm {
        /// Index of the offending entry.
        index: Index,
        /// Its term.
        entry_term: Term,
        /// The persisted current term.
        term: Term,
    },
}

/// Why [`crate::Raft::compact`] refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CompactError {
    /// Only applied entries may be covered by a snapshot.
    #[error("cannot compact to {index}: only {applied} is applied; snapshot applied state only")]
    NotApplied {
        /// The index asked for.
        index: Index,
        /// The highest applied index.
        applied: Index,
    },
    /// The log is already compacted that far.
    #[error("already compacted to {offset}; nothing to do for {index}")]
    AlreadyCompacted {
        /// The index asked for.
        index: Index,
        /// The current compaction point.
        offset: Index,
    },
}

/// Why [`crate::Raft::transfer_leader`] refused. None of these changed any
/// state.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can hand its leadership over.
    #[error("not the leader (leader hint: {leader_hint:?}); ask the leader to transfer")]
    NotLeader {
        /// The leader this replica believes in, if any.
        leader_hint: Option<NodeId>,
    },
    /// The target is this replica, which already leads.
    #[error("node {to} already leads; nothing to transfer")]
    ToSelf {
        /// The target (this replica).
        to: NodeId,
    },
    /// The target is not a voting member of the group, so it cannot be
    /// elected.
    #[error("node {to} is not a voter of this group; choose one of {voters:?}")]
    NotAVoter {
        /// The target asked for.
        to: NodeId,
        /// The group's voters.
        voters: Vec<NodeId>,
    },
    /// A transfer to another node is already under way; it ends when that
    /// node is elected or after one election timeout.
    #[error("a transfer to node {pending} is in progress; wait for it to finish or time out (one election timeout), then retry")]
    InProgress {
        /// The node the pending transfer goes to.
        pending: NodeId,
    },
}

/// Why a configuration change was not proposed. Nothing changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfChangeError {
    /// Only the leader proposes changes; retry at `leader_hint` if known.
    #[error("not the leader (leader hint: {leader_hint:?}); send the change to the leader")]
    NotLeader {
        /// The leader this replica believes in, if any.
        leader_hint: Option<NodeId>,
    },
    /// A leader transfer is pending; retry once it completed or gave up.
    #[error("a leader transfer to {to} is pending; retry the change after it")]
    TransferPending {
        /// The transfer's target.
        to: NodeId,
    },
    /// The leader has not committed an entry of its own term yet (the
    /// 2015 single-server rule); retry shortly.
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    TermNotCommitted,
    /// An earlier change is not committed yet: one change at a time.
    #[error("the change at index {index} is not committed yet; retry once it is")]
    ChangePending {
        /// Index of the uncommitted configuration entry.
        index: Index,
    },
    /// Node 0 is reserved.
    #[error("node id 0 is reserved; use an id >= 1")]
    ZeroId,
    /// Adding a node that already is a voter or a learner.
    #[error("node {id} is already a member; remove it first or promote it")]
    AlreadyMember {
        /// The node.
        id: NodeId,
    },
    /// Promoting a node that is not a learner.
    #[error("node {id} is not a learner; add it as a learner first")]
    NotALearner {
        /// The node.
        id: NodeId,
    },
    /// Removing a node that is not a member.
    #[error("node {id} is not a member of the group")]
    NotAMember {
        /// The node.
        id: NodeId,
    },
    /// The learner's log is too far behind the leader's to vote yet.
    #[error(
        "learner {id} holds up to {matched}, the leader up to {last}; retry once it caught up"
    )]
    LearnerBehind {
        /// The learner.
        id: NodeId,
        /// What it is known to hold.
        matched: Index,
        /// The leader's last index.
        last: Index,
    },
    /// Removing the last voter would leave a group that can elect no one.
    #[error("node {id} is the last voter; add and promote another one first")]
    LastVoter {
        /// The node.
        id: NodeId,
    },
}
