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
}

/// A node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// The command or query's encoded result.
    Ok(Bytes),
    /// It did not happen (or its outcome is unknown): see the error.
    Err(RequestError),
    /// Answer to [`Request::Status`].
    Status(Vec<GroupStatus>),
    /// Answer to [`Request::Stats`].
    Stats(NodeStats),
}

/// Why a request failed. `NotLeader`, `Busy`, `Timeout` and `Unavailable`
/// are worth retrying; the others are not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// This node is not the group's leader; `leader` is the one it knows.
    #[error("not the leader of group {group}; leader hint: {leader:?}")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader this node believes in, if any.
        leader: Option<NodeId>,
    },
    /// The node hosts no such group.
    #[error("no group {0} on this node")]
    NoSuchGroup(GroupId),
    /// The group is restarting on this node (its supervisor is rebuilding
    /// it from durable state); nothing was proposed; retry shortly.
    #[error("group {0} is restarting on this node; retry shortly")]
    Restarting(GroupId),
    /// Too much is in flight; back off and retry.
    #[error("group {0} is busy (too many proposals in flight); back off and retry")]
    Busy(GroupId),
    /// No answer in time; the command may or may not have been applied.
    #[error("timed out waiting for group {0}; the command may or may not have been applied")]
    Timeout(GroupId),
    /// The group stopped (restarting, failed, or the node shuts down); the
    /// command may or may not have been applied.
    #[error("group {0} stopped before answering; the command may or may not have been applied")]
    Stopped(GroupId),
    /// The application refused the command (decode error, unknown message).
    #[error("the state machine refused the request: {0}")]
    Application(String),
    /// The node could not be reached or sent garbage.
    #[error("node unavailable: {0}")]
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
}

impl RequestError {
    /// Whether retrying (elsewhere or later) may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RequestError::NotLeader { .. }
                | RequestError::Restarting(_)
                | RequestError::Busy(_)
                | RequestError::Timeout(_)
                | RequestError::Unavailable(_)
                | RequestError::Stopped(_)
                | RequestError::NodeFailed { .. }
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
