//! What nodes and clients say to each other on the wire. Every value here
//! travels inside a versioned frame (see `synod_net::frame`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use synod_core::{Message, NodeId};
use synod_storage::GroupId;

/// One Raft message of one group: the item the transport batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftItem {
    /// The group the message belongs to.
    pub group: GroupId,
    /// The message.
    pub msg: Message,
}

impl RaftItem {
    /// Rough size in bytes, for the transport's queue bound.
    pub fn size_hint(&self) -> usize {
        64 + self.msg.payload_len()
    }
}

/// A request to a node, from a client or from another node forwarding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Commit `payload` as a command of `group` and return its result.
    Command {
        /// The group.
        group: GroupId,
        /// The encoded command.
        payload: Bytes,
    },
    /// Run the read-only query `payload` on `group`, linearizably.
    Read {
        /// The group.
        group: GroupId,
        /// The encoded query.
        payload: Bytes,
    },
    /// Run the read-only query `payload` on this node's replica of
    /// `group`, without going through the log: fast, but possibly stale
    /// (it sees what this replica applied, which may lag the leader).
    LocalRead {
        /// The group.
        group: GroupId,
        /// The encoded query.
        payload: Bytes,
    },
    /// The node's view of each group it hosts.
    Status,
    /// The node's counters.
    Stats,
    /// Run the read-only query `payload` on `group` under the leader's
    /// lease (no heartbeat round while the lease runs; the node's
    /// `lease_reads` setting must be on, else this is [`Request::Read`]).
    /// Linearizable only while clocks drift less than the lease margin.
    ReadLease {
        /// The group.
        group: GroupId,
        /// The encoded query.
        payload: Bytes,
    },
    /// Hand the leadership of `group` to voter `to` (Raft thesis §3.10)
    /// and answer once `to` leads (`Response::Ok` naming it). Any node
    /// takes it: a follower forwards it to the leader.
    TransferLeader {
        /// The group.
        group: GroupId,
        /// The node that should lead.
        to: NodeId,
    },
    /// The group's configuration (from its leader when known).
    Membership {
        /// The group.
        group: GroupId,
    },
    /// Add `node` as a learner of `group` (it first hosts an empty
    /// replica); answered with the new configuration.
    AddLearner {
        /// The group.
        group: GroupId,
        /// The node to add.
        node: NodeId,
    },
    /// Make learner `node` a voter of `group` once it caught up.
    Promote {
        /// The group.
        group: GroupId,
        /// The learner.
        node: NodeId,
    },
    /// Remove `node` from `group`, then delete its replica there.
    RemoveMember {
        /// The group.
        group: GroupId,
        /// The member to remove.
        node: NodeId,
    },
    /// Node to node: propose one configuration change at the leader.
    ChangeMembership {
        /// The group.
        group: GroupId,
        /// The change.
        change: synod_core::ConfChange,
    },
    /// Node to node: host an empty replica of `group` (about to be added).
    HostGroup {
        /// The group.
        group: GroupId,
    },
    /// Node to node: delete this node's replica of `group` (removed).
    DropGroup {
        /// The group.
        group: GroupId,
    },
    /// Create `group` at run time with the bootstrap voters `voters`, as a
    /// group of the nodes' service (the actor type each node registered for
    /// groups created at run time). From a client: the node asked makes
    /// every voter host a replica. From a node: host this node's replica
    /// (never forwarded further). Idempotent. See
    /// `Engine::create_service_group`.
    CreateGroup {
        /// The group.
        group: GroupId,
        /// The nodes that start as its voters.
        voters: Vec<NodeId>,
    },
    /// Delete `group` at run time. From a client: the node asked makes
    /// every node drop its replica (actors stopped, log and snapshots
    /// deleted). From a node: drop this node's replica. Idempotent. See
    /// `Engine::delete_group`.
    DeleteGroup {
        /// The group.
        group: GroupId,
    },
    /// **Unsafe recovery**: force `voters` on the replica of `group` of
    /// the node asked (never forwarded). See `Engine::unsafe_force_voters`.
    ForceVoters {
        /// The group.
        group: GroupId,
        /// The surviving voters.
        voters: Vec<NodeId>,
    },
    /// Who each group hosted here follows, as its replica here believes:
    /// cheap (no group is asked), for watching thousands of groups.
    Leaders,
    /// The commands this node's replica of `group` applied from log index
    /// `from` on (`None`: from its next apply), with their results, as
    /// [`Response::Changes`]. Waits up to `wait_ms` for one when there is
    /// none yet (a long poll); `RequestError::Compacted` when `from` is
    /// older than the history the replica keeps. See `Engine::watch`.
    Watch {
        /// The group.
        group: GroupId,
        /// The first log index wanted.
        from: Option<u64>,
        /// The answer stops after the change that reaches this many bytes
        /// (at least one change is answered).
        max_bytes: u32,
        /// How long to wait for a change, in milliseconds (0: answer at
        /// once).
        wait_ms: u32,
    },
}

impl Request {
    /// The group a command or read is about (`None` for node requests).
    pub fn group(&self) -> Option<GroupId> {
        match self {
            Request::Command { group, .. }
            | Request::Read { group, .. }
            | Request::LocalRead { group, .. }
            | Request::ReadLease { group, .. }
            | Request::TransferLeader { group, .. }
            | Request::Membership { group }
            | Request::AddLearner { group, .. }
            | Request::Promote { group, .. }
            | Request::RemoveMember { group, .. }
            | Request::ChangeMembership { group, .. }
            | Request::HostGroup { group }
            | Request::DropGroup { group }
            | Request::CreateGroup { group, .. }
            | Request::DeleteGroup { group }
            | Request::ForceVoters { group, .. }
            | Request::Watch { group, .. } => Some(*group),
            Request::Status | Request::Stats | Request::Leaders => None,
        }
    }
}

/// A node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// The command or query's encoded result.
    Ok {
        /// The encoded result.
        result: Bytes,
        /// The group's leader that committed the command or read (this
        /// node, or the one it forwarded to): where to send the group's
        /// next requests. `None` for a local read.
        leader: Option<NodeId>,
    },
    /// It did not happen (or its outcome is unknown): see the error.
    Err(RequestError),
    /// Answer to [`Request::Status`].
    Status(Vec<GroupStatus>),
    /// Answer to [`Request::Stats`].
    Stats(NodeStats),
    /// A group's configuration: the answer to [`Request::Membership`] and
    /// to the membership changes.
    Membership(MembershipInfo),
    /// Answer to [`Request::Leaders`]: `(group, leader)` for every group
    /// running here, 0 for no known leader.
    Leaders(Vec<(GroupId, NodeId)>),
    /// Answer to [`Request::Watch`].
    Changes(ChangeBatch),
}

/// A command a replica applied, with its result: one item of a watch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedChange {
    /// Its log index (the same on every replica).
    pub index: u64,
    /// The term of its entry.
    pub term: u64,
    /// The encoded command, as proposed.
    pub command: Bytes,
    /// What the state machine returned (`Err`: the application refused it,
    /// which changed nothing unless the application says otherwise).
    pub result: Result<Bytes, String>,
}

impl AppliedChange {
    /// Bytes it holds (for the history's and the answers' bounds).
    pub fn size(&self) -> usize {
        48 + self.command.len()
            + match &self.result {
                Ok(b) => b.len(),
                Err(e) => e.len(),
            }
    }
}

/// Answer to a watch: changes in log order, and where to go on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// The changes (empty when none came within the wait).
    pub changes: Vec<AppliedChange>,
    /// The log index to ask for next: past every change here and past the
    /// entries applied meanwhile that were not commands.
    pub next: u64,
    /// The replica's applied index when it answered.
    pub applied: u64,
}

/// Why a request failed, and what is known of its outcome.
///
/// | error            | the command was...            | safe to retry |
/// |------------------|-------------------------------|---------------|
/// | `NotLeader`      | not applied                   | yes (leader)  |
/// | `Restarting`     | not applied                   | yes           |
/// | `Busy`           | not applied                   | yes           |
/// | `Unavailable`    | not applied (nothing sent)    | yes           |
/// | `NoSuchGroup`    | not applied                   | no (create it)|
/// | `Application`    | refused by the state machine  | no            |
/// | `Timeout`        | unknown                       | no            |
/// | `Stopped`        | unknown                       | no            |
/// | `OutcomeUnknown` | unknown                       | no            |
/// | `ResultTooLarge` | applied (a read: nothing)     | no            |
/// | `Poisoned`       | committed; effect discarded (see below) | no  |
/// | `NotAVoter`      | (a leader transfer) refused    | no            |
/// | `TransferInProgress` | (a leader transfer) refused | yes          |
/// | `TransferFailed` | (a leader transfer) not done   | yes           |
/// | `ChangeInProgress` | (a membership change) refused for now | yes |
/// | `LearnerBehind`  | (a promotion) refused for now  | yes           |
/// | `BadChange`, `NoQuorumLeft`, `UnknownNode`, `CannotHost` | (a membership change) refused | no |
/// | `NoGroupService`, `GroupExists`, `GroupRemoved` | (a run-time create) refused | no |
/// | `MemberUnreachable` | (a run-time create or delete) done on the nodes that answered | once the node is up |
///
/// [`RequestError::is_safe_to_retry`] is the one place that rule lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// This node is not the group's leader; `leader` is the one it knows.
    /// Nothing was proposed: send the request to `leader` (or, without a
    /// hint, to another node after a pause).
    #[error("not the leader of group {group}; leader hint: {leader:?}; nothing was proposed, send it to the leader")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader this node believes in, if any.
        leader: Option<NodeId>,
    },
    /// The node hosts no such group. Nothing was proposed; create the group
    /// on every node first.
    #[error(
        "no group {0} on this node; nothing was proposed, create the group on every node first"
    )]
    NoSuchGroup(GroupId),
    /// The group is restarting on this node (its supervisor is rebuilding
    /// it from durable state); nothing was proposed; retry shortly.
    #[error("group {0} is restarting on this node; nothing was proposed, retry shortly")]
    Restarting(GroupId),
    /// Too much is in flight; nothing was proposed; back off and retry.
    #[error("group {0} is busy (too many proposals in flight); nothing was proposed, back off and retry")]
    Busy(GroupId),
    /// No answer in time; the command may or may not have been applied.
    /// Do not retry blindly: read the state to find out, or make the
    /// command idempotent.
    #[error("timed out waiting for group {0}; the command may or may not have been applied, check before retrying")]
    Timeout(GroupId),
    /// The group stopped (restarting, failed, or the node shuts down) after
    /// the command was handed to it; the command may or may not have been
    /// applied.
    #[error("group {0} stopped before answering; the command may or may not have been applied, check before retrying")]
    Stopped(GroupId),
    /// The state machine refused the request (decode error, unknown
    /// message, an error the application returned) and reported that
    /// error as its result. Retrying gets the same answer.
    #[error("the state machine refused the request: {0}")]
    Application(String),
    /// The node could not be reached, or is not ready to serve: nothing was
    /// sent to (or handled by) any group, so a retry elsewhere is safe.
    #[error("node unavailable, nothing was sent: {0}")]
    Unavailable(String),
    /// A write to this node's log failed, so it stopped serving (a failed
    /// write is fatal: see docs/STORAGE.md). Nothing was proposed here;
    /// retry on another node. The node must be restarted.
    #[error(
        "node {node} stopped serving after a write to its log failed ({reason}); nothing was \
         proposed there: retry on another node, and restart this one after checking its disk"
    )]
    NodeFailed {
        /// The failed node.
        node: NodeId,
        /// The storage error that stopped it.
        reason: String,
    },
    /// The request reached the group's leader (or may have), but no usable
    /// answer came back: the connection broke after sending, or the answer
    /// did not decode (a node of another version?). The command may or may
    /// not have been applied; retrying may apply it twice.
    #[error("the outcome of the request to group {group} is unknown ({reason}); the command may or may not have been applied, check before retrying")]
    OutcomeUnknown {
        /// The group.
        group: GroupId,
        /// What went wrong.
        reason: String,
    },
    /// The request ran (a command was applied) but its result is larger
    /// than the frame limit, so it could not be returned. Do not retry a
    /// command: it would apply again. Make the result smaller, or raise
    /// `max_frame_bytes` on every node.
    #[error("group {group} ran the request (a command was applied) but its result of {size} bytes exceeds the frame limit of {limit}; do not retry, return a smaller result")]
    ResultTooLarge {
        /// The group.
        group: GroupId,
        /// Size of the encoded answer.
        size: usize,
        /// The frame limit.
        limit: usize,
    },
    /// The group's state machine panicked applying the entry at `index`,
    /// so the group stopped on this node (and, when the panic is
    /// deterministic, on every node): it answers nothing until the node is
    /// restarted with a handler that does not panic on that entry.
    ///
    /// For the command at `index`: it is committed (it stays in the log),
    /// but its effect is unknown and discarded: the panic may have left the
    /// in-memory state half-modified, and that state is dropped. On
    /// restart the entry is applied again from the log, with the code
    /// running then. For any other command of the group in flight: it may
    /// be committed, and will then be applied on restart. Do not retry:
    /// fix the handler (make it return an error for that input) and
    /// restart the node; see docs/USER_GUIDE.md, "A poison message".
    #[error(
        "group {group} stopped: its state machine panicked applying entry {index} \
         ({message_type}): {panic_message}; the command is committed and will be applied \
         again when the node restarts; fix the handler so it does not panic on it, then \
         restart the node (do not retry the command)"
    )]
    Poisoned {
        /// The group.
        group: GroupId,
        /// Log index of the entry whose apply panicked.
        index: u64,
        /// What the entry is, as the state machine describes it (the
        /// typed API gives the message type name), or `"unknown"`.
        message_type: String,
        /// The panic's message.
        panic_message: String,
    },
    /// A leader transfer named a node that is not a voter of the group,
    /// so it can never lead it. Nothing changed; choose one of `voters`.
    #[error(
        "node {node} is not a voter of group {group}; nothing changed, choose one of {voters:?}"
    )]
    NotAVoter {
        /// The group.
        group: GroupId,
        /// The node asked for.
        node: NodeId,
        /// The group's voters.
        voters: Vec<NodeId>,
    },
    /// The leader is already handing its leadership to `pending`; it
    /// finishes or gives up within one election timeout. Nothing changed;
    /// retry then.
    #[error("group {group} is already transferring its leadership to node {pending}; nothing changed, retry after an election timeout")]
    TransferInProgress {
        /// The group.
        group: GroupId,
        /// The node the pending transfer goes to.
        pending: NodeId,
    },
    /// Leadership of the group did not move to `to` before the deadline:
    /// the target was down, cut off, rejoining (it lost its disk and has
    /// not caught up) or too far behind, or another node won the
    /// election. Nothing else changed (no command is involved): check the
    /// target with `synod kv status`, then retry.
    #[error("leadership of group {group} did not move to node {to} in time (leader now: {leader:?}); nothing else changed: check that node {to} is up, connected and caught up, then retry")]
    TransferFailed {
        /// The group.
        group: GroupId,
        /// The node that was to lead.
        to: NodeId,
        /// The leader last seen.
        leader: Option<NodeId>,
    },
    /// Another membership change (or the new leader's first commit, or a
    /// leader transfer) is still under way and changes go one at a time.
    /// Nothing changed; the membership calls retry this themselves until
    /// their deadline, so seeing it means the group stayed busy that long.
    #[error(
        "group {group} cannot change its membership now ({reason}); nothing changed, retry shortly"
    )]
    ChangeInProgress {
        /// The group.
        group: GroupId,
        /// What is under way.
        reason: String,
    },
    /// A learner cannot be promoted before its log is close to the
    /// leader's. Nothing changed; retry once it caught up (`promote`
    /// waits for that until its deadline).
    #[error("node {node} is a learner of group {group} that holds up to index {matched}, the leader up to {last}; nothing changed, retry once it caught up")]
    LearnerBehind {
        /// The group.
        group: GroupId,
        /// The learner.
        node: NodeId,
        /// What it is known to hold.
        matched: u64,
        /// The leader's last index.
        last: u64,
    },
    /// The change does not fit the group's configuration (adding a
    /// member twice, promoting a voter, removing a non-member, node id 0).
    /// Nothing changed.
    #[error("group {group}: {reason}; nothing changed")]
    BadChange {
        /// The group.
        group: GroupId,
        /// What does not fit, and what to do.
        reason: String,
    },
    /// Removing this voter would leave the group without a voter. Nothing
    /// changed: add and promote another node first.
    #[error("node {node} is the last voter of group {group}; nothing changed: add and promote another node first")]
    NoQuorumLeft {
        /// The group.
        group: GroupId,
        /// The last voter.
        node: NodeId,
    },
    /// The node is not one of the cluster's configured nodes, so no one
    /// could reach it. Nothing changed: add it to every node's `peers`.
    #[error("node {node} is not a configured node of this cluster; nothing changed: list it in every node's peers first")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// The node could not host a replica of the group (it does not know
    /// the group's state machine, or its disk failed). Nothing changed.
    #[error("node {node} cannot host group {group}: {reason}")]
    CannotHost {
        /// The group.
        group: GroupId,
        /// The node.
        node: NodeId,
        /// Why, and what to do.
        reason: String,
    },
    /// The node creates no groups at run time: its application registered
    /// no service (the actor type of run-time groups; `synod node` serves
    /// its key-value store). Nothing changed on that node.
    #[error(
        "node {node} creates no groups at run time: its application registered no service for \
         them (Node::serve_groups_of); nothing changed there: register one, or list other nodes"
    )]
    NoGroupService {
        /// The node.
        node: NodeId,
    },
    /// The group already exists with other bootstrap voters than the create
    /// asked for. Nothing changed: use another group id, or the same voters
    /// (then the create succeeds, it is idempotent).
    #[error(
        "group {group} already exists with voters {voters:?} (as node {node} records its \
         creation; empty: node {node} joined it later); nothing changed: choose another group \
         id, or create it with the same voters"
    )]
    GroupExists {
        /// The group.
        group: GroupId,
        /// The node that answered.
        node: NodeId,
        /// The voters the group was created with there.
        voters: Vec<NodeId>,
    },
    /// The group was deleted from the node (or the node was removed from
    /// it), and group ids are not reused: a request for it gets this
    /// instead of `NoSuchGroup`, and creating it again is refused. Nothing
    /// changed: use another group id.
    #[error(
        "group {group} was deleted from node {node} (or node {node} was removed from it); group \
         ids are not reused: nothing changed, use another group id"
    )]
    GroupRemoved {
        /// The group.
        group: GroupId,
        /// The node that says so.
        node: NodeId,
    },
    /// A run-time create or delete could not reach a node it must reach
    /// (a voter of the new group; a node that may hold a replica of the
    /// deleted one). The other nodes did their part; the operation is
    /// idempotent, so running it again once the node is up completes it.
    #[error(
        "group {group}: node {node} could not be reached ({reason}); the other nodes did their \
         part: run the same command again when node {node} is up, it completes the job"
    )]
    MemberUnreachable {
        /// The group.
        group: GroupId,
        /// The node.
        node: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// (A watch) the changes from `requested` on are no longer all kept
    /// by the node that answered: its history of applied commands starts
    /// at `oldest` (older ones were dropped for its bound, or are inside a
    /// snapshot it restored). Read the current state and watch from its
    /// revision (etcd's `ErrCompacted`).
    #[error(
        "group {group}: the changes from index {requested} on were compacted (the history kept          starts at {oldest}); read the current state, then watch again from the revision after it"
    )]
    Compacted {
        /// The group.
        group: GroupId,
        /// The first index asked for.
        requested: u64,
        /// The oldest index still kept.
        oldest: u64,
    },
}

impl RequestError {
    /// Whether retrying (elsewhere or later) cannot apply the command twice
    /// and may succeed: true only when nothing was proposed (`NotLeader`,
    /// `Restarting`, `Busy`, a leader transfer that is refused while
    /// another one runs or that did not finish) or nothing was sent
    /// (`Unavailable`). The
    /// runtime's `SynodError::is_safe_to_retry` agrees for every error
    /// converted from this one.
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(
            self,
            RequestError::NotLeader { .. }
                | RequestError::Restarting(_)
                | RequestError::Busy(_)
                | RequestError::Unavailable(_)
                | RequestError::NodeFailed { .. }
                | RequestError::TransferInProgress { .. }
                | RequestError::TransferFailed { .. }
                | RequestError::ChangeInProgress { .. }
                | RequestError::LearnerBehind { .. }
        )
    }
}

/// One group as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// Role of this node's replica.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// The leader this replica believes in.
    pub leader: Option<NodeId>,
    /// Last log index.
    pub last_index: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Times the group was restarted by its supervisor.
    pub restarts: u32,
    /// This replica booted without its durable state (an empty data
    /// directory) and has not caught up from a leader yet: it votes only
    /// for candidates with an empty log until then.
    pub rejoining: bool,
    /// Leader only: times it found a follower missing entries the follower
    /// had acknowledged (a follower that lost its disk) and repaired it.
    pub followers_lost_state: u64,
    /// Set when the group stopped on this node because its state machine
    /// panicked on an entry (`role` is then `"Poisoned"`).
    #[serde(default)]
    pub poison: Option<Poison>,
    /// Leader only: the node a leader transfer in progress goes to
    /// (proposals are refused meanwhile, with that node as the hint).
    #[serde(default)]
    pub transfer_to: Option<NodeId>,
    /// The group's voters, as this replica's log says (the latest
    /// configuration entry, committed or not).
    #[serde(default)]
    pub voters: Vec<NodeId>,
    /// The group's learners (non-voting members), likewise.
    #[serde(default)]
    pub learners: Vec<NodeId>,
    /// Leader only: how far each other member's log is known to match the
    /// leader's (`last_index - matched` is its lag).
    #[serde(default)]
    pub progress: Vec<MemberProgress>,
}

/// A leader's view of one member's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProgress {
    /// The member.
    pub node: NodeId,
    /// The highest index known to match the leader's log.
    pub matched: u64,
}

/// A group's configuration, from the replica that answered (its leader
/// when one is known).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipInfo {
    /// The group.
    pub group: GroupId,
    /// Members that vote.
    pub voters: Vec<NodeId>,
    /// Members that only replicate.
    pub learners: Vec<NodeId>,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// Index of the configuration's entry (0: the group's bootstrap one).
    pub index: u64,
    /// Whether that entry is committed.
    pub committed: bool,
    /// The node whose replica answered (the leader when `leader` names
    /// it).
    #[serde(default)]
    pub answered_by: NodeId,
}

/// The entry on which a group's state machine panicked, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poison {
    /// Log index of the entry.
    pub index: u64,
    /// What the entry is, as the state machine describes it, or
    /// `"unknown"`.
    pub message_type: String,
    /// The panic's message.
    pub panic_message: String,
}

impl Poison {
    /// The error a request to the group poisoned by this entry gets.
    pub fn error(&self, group: GroupId) -> RequestError {
        RequestError::Poisoned {
            group,
            index: self.index,
            message_type: self.message_type.clone(),
            panic_message: self.panic_message.clone(),
        }
    }
}

/// A node's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// This node.
    pub node: NodeId,
    /// `fdatasync` calls of the WAL.
    pub fsyncs: u64,
    /// Write batches the log writer received.
    pub log_writes: u64,
    /// Group-commit rounds (one sync each).
    pub log_rounds: u64,
    /// Entries written to the WAL.
    pub log_entries: u64,
    /// Commands applied on this node (all groups).
    pub applied: u64,
    /// Commands this node proposed as leader and answered.
    pub answered: u64,
    /// Times a group on this node became leader.
    pub leader_changes: u64,
    /// Group restarts by the supervisor.
    pub restarts: u64,
    /// Snapshots saved.
    pub snapshots_saved: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Raft frames sent.
    pub frames_sent: u64,
    /// Raft items sent.
    pub items_sent: u64,
    /// Rounds of the leader balancer (also counted when it is turned off).
    #[serde(default)]
    pub balance_rounds: u64,
    /// Leaderships the leader balancer handed from this node to another.
    #[serde(default)]
    pub balance_transfers: u64,
    /// Groups the node clock ticks now (the others are quiesced).
    #[serde(default)]
    pub awake_groups: u64,
}

/// The header of a snapshot stream: whose snapshot, and the InstallSnapshot
/// message to step into the follower once the data is stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The group.
    pub group: GroupId,
    /// The leader's InstallSnapshot message.
    pub msg: Message,
    /// Voters as of the snapshot.
    pub voters: Vec<NodeId>,
}
