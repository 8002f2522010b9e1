//! The messages replicas of one group exchange. The transport adds the
//! group id; the core never sees other groups.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, Index, Membership, NodeId, SnapshotInfo, Term};

/// One Raft message between two replicas of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term, or for a pre-vote request the term it would
    /// campaign in (§5.1: every RPC carries a term).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message (Figure 2, plus pre-vote from the thesis §9.6 and
/// heartbeats split from AppendEntries as etcd and braft do, so that they
/// can be coalesced across groups by the transport).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" Changes no state at the receiver.
    PreVote {
        /// Index of the candidate's last entry.
        last_log_index: Index,
        /// Term of the candidate's last entry.
        last_log_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the receiver would grant its vote.
        granted: bool,
    },
    /// RequestVote RPC (§5.2).
    Vote {
        /// Index of the candidate's last entry.
        last_log_index: Index,
        /// Term of the candidate's last entry.
        last_log_term: Term,
    },
    /// Answer to [`MessageBody::Vote`].
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries RPC (§5.3).
    Append {
        /// Index of the entry immediately preceding `entries`.
        prev_log_index: Index,
        /// Term of that entry.
        prev_log_term: Term,
        /// Entries to store (may be empty).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: Index,
        /// The leader's fence for this follower, echoed in
        /// [`AppendResponse::Accepted`]: an acknowledgement counts only if
        /// it echoes the current one (see [`crate::Progress::epoch`]).
        epoch: u32,
    },
    /// Answer to [`MessageBody::Append`].
    AppendResponse(AppendResponse),
    /// Leader liveness and commit propagation without entries.
    Heartbeat {
        /// `min(leader commit, follower match)`: never more than the
        /// follower is known to hold.
        commit: Index,
        /// The leader's heartbeat round in this term. Every heartbeat
        /// broadcast starts a new one; answers echo it, and a quorum of
        /// answers to round `r` confirms that the sender still led when
        /// `r` began (ReadIndex, thesis §6.4).
        round: u64,
    },
    /// The leader's group is idle and every member holds its whole log:
    /// the receiver commits up to `commit` and quiesces (stops its election
    /// timer) until a message, a proposal or the runtime wakes it (see
    /// [`crate::Raft::wake`]). Not answered.
    Quiesce {
        /// The leader's commit index, which is also its last index (an
        /// entry of its term) and the follower's match. A follower whose
        /// log does not end there stays awake.
        commit: Index,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// `Some(last index)` when the follower's log ends before the
        /// heartbeat's commit, which never exceeds what the follower
        /// acknowledged: it lost entries it had (a wiped or replaced
        /// disk), and the leader must repair it now rather than at the
        /// next write.
        lacking: Option<Index>,
        /// The round of the heartbeat answered, or 0 from a replica that
        /// is rejoining (its term is not to be trusted, so it confirms
        /// nobody's leadership).
        round: u64,
    },
    /// InstallSnapshot (§7): the follower needs entries the leader has
    /// compacted. The message names the snapshot; its data travels beside
    /// the core (the runtime streams it on its own channel and steps this
    /// message into the follower only once the data is stored there). The
    /// follower answers with an [`MessageBody::AppendResponse`].
    Snapshot {
        /// The snapshot's last index and term.
        snapshot: SnapshotInfo,
        /// The group's configuration as of the snapshot's index.
        membership: Membership,
        /// As in [`MessageBody::Append`].
        epoch: u32,
    },
    /// A follower asks the leader for a read index: for a follower read
    /// (`rejoin == false`), or, from a replica that lost its state, for
    /// the index it must hold before it may vote again (`rejoin == true`;
    /// see [`crate::Config::rejoining`]).
    ReadIndex {
        /// Chosen by the follower; echoed in the answer.
        id: u64,
        /// Whether this is a rejoining replica's request.
        rejoin: bool,
    },
    /// Answer to [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// The request's id.
        id: u64,
        /// The leader's commit index when the request arrived, confirmed
        /// by a quorum round begun after it (excluding the requester when
        /// it rejoins); `None` when the leader could not serve it.
        index: Option<Index>,
    },
    /// Leader transfer (thesis §3.10): the leader tells its chosen
    /// successor, whose log it has brought up to date, to start an
    /// election at once, without waiting for its election timeout and
    /// without a pre-vote round.
    TimeoutNow,
    /// RequestVote (§5.2) sent by a candidate that campaigns because its
    /// leader sent it [`MessageBody::TimeoutNow`]. Voters treat it like
    /// [`MessageBody::Vote`] in every way but one: they grant it (and
    /// adopt its term) even if they heard from the leader within the
    /// election timeout, since that leader asked for this election
    /// (etcd's `campaignTransfer` context does the same). The log check
    /// (§5.4.1) and the one-vote-per-term rule still apply. Answered with
    /// [`MessageBody::VoteResponse`].
    TransferVote {
        /// Index of the candidate's last entry.
        last_log_index: Index,
        /// Term of the candidate's last entry.
        last_log_term: Term,
    },
}

/// The outcome of an AppendEntries at the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to `match_index`.
    Accepted {
        /// Highest index known to match the leader's log.
        match_index: Index,
        /// The `epoch` of the Append or Snapshot answered.
        epoch: u32,
        /// The follower lost its state and has not rejoined (see
        /// [`crate::Config::rejoining`]): it holds these entries, but it
        /// forgot its term, so it may be answering a stale leader that a
        /// newer one already replaced. Its acknowledgement moves
        /// replication along but counts toward no commit.
        rejoining: bool,
    },
    /// The consistency check failed at `rejected_index`; the hint lets the
    /// leader skip a whole conflicting term at once (§5.3, "the follower
    /// can include the term of the conflicting entry and the first index
    /// it stores for that term").
    Rejected {
        /// The `prev_log_index` of the rejected request.
        rejected_index: Index,
        /// Term of the follower's entry at `rejected_index`, if it has one.
        conflict_term: Option<Term>,
        /// First index of `conflict_term` in the follower's log, or the
        /// follower's last index + 1 when its log is too short.
        conflict_index: Index,
    },
}

impl Message {
    /// Whether this message is a vote or pre-vote request (a
    /// [`MessageBody::TransferVote`] included).
    pub fn is_vote_request(&self) -> bool {
        matches!(
            self.body,
            MessageBody::Vote { .. }
                | MessageBody::PreVote { .. }
                | MessageBody::TransferVote { .. }
        )
    }

    /// Payload bytes carried (used by the transport for batching limits).
    pub fn payload_len(&self) -> usize {
        match &self.body {
            MessageBody::Append { entries, .. } => entries.iter().map(Entry::payload_len).sum(),
            _ => 0,
        }
    }
}
