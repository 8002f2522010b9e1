//! Typed errors. API errors (`NotLeader`, `Busy`, `Timeout`, ...) say what
//! happened to one request and whether retrying makes sense; `Start` and
//! `Config` errors say why a node could not run and what to change.

use std::path::PathBuf;

use synod_actors::{EngineError, RequestError};
use synod_core::NodeId;
use synod_storage::GroupId;

/// What can go wrong with a request to a replicated actor, and what is
/// known of its outcome.
///
/// | error            | the command was...          | safe to retry |
/// |------------------|-----------------------------|---------------|
/// | `NotLeader`      | not applied                 | yes           |
/// | `Busy`           | not applied                 | yes           |
/// | `Unavailable`    | not applied (nothing sent)  | yes           |
/// | `NoSuchGroup`    | not applied                 | no            |
/// | `Rejected`       | refused by the actor        | no            |
/// | `Codec`          | not sent; or applied, when its result did not decode | no |
/// | `Timeout`        | unknown                     | no            |
/// | `Stopped`        | unknown                     | no            |
/// | `ConnectionLost` | unknown                     | no            |
/// | `OutcomeUnknown` | unknown                     | no            |
/// | `ResultTooLarge` | applied (a read: nothing)   | no            |
/// | `Poisoned`       | committed; its effect discarded, applied again on restart | no |
/// | `NotAVoter`      | (a leader transfer) refused | no            |
/// | `TransferInProgress` | (a leader transfer) refused | yes       |
/// | `TransferFailed` | (a leader transfer) not done | yes          |
/// | `ChangeInProgress` | (a membership change) refused for now | yes |
/// | `LearnerBehind`  | (a promotion) refused for now | yes          |
/// | `BadChange`, `NoQuorumLeft`, `UnknownNode`, `CannotHost` | (a membership change) refused | no |
/// | `NoGroupService`, `GroupExists` | (a run-time create) refused | no |
/// | `GroupRemoved` | (the group was deleted) not applied | no: ids are not reused |
/// | `MemberUnreachable` | (a run-time create or delete) done on the nodes that answered | once the node is up |
///
/// [`SynodError::is_safe_to_retry`] says which; it agrees with
/// `RequestError::is_safe_to_retry` for every error a node sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SynodError {
    /// The node asked is not the group's leader (and could not forward).
    /// Nothing was proposed; send the request to the leader.
    #[error("not the leader of group {group}; leader hint: {leader_hint:?}; nothing was proposed, send it to the leader")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader the node believes in.
        leader_hint: Option<NodeId>,
    },
    /// No answer in time. The command may or may not have been applied:
    /// retrying it may apply it twice.
    #[error("timed out on group {group}; the command may or may not have been applied, check before retrying")]
    Timeout {
        /// The group.
        group: GroupId,
    },
    /// Too many commands in flight, or the group is restarting; nothing was
    /// proposed. Back off, retry.
    #[error("group {group} is busy; nothing was proposed, back off and retry")]
    Busy {
        /// The group.
        group: GroupId,
    },
    /// The group stopped before answering (restart, shutdown). The command
    /// may or may not have been applied.
    #[error(
        "group {group} stopped before answering; the command may or may not have been applied, check before retrying"
    )]
    Stopped {
        /// The group.
        group: GroupId,
    },
    /// The group does not exist on the node asked. Nothing was proposed.
    #[error("no group {group} on the node asked; create it on every node first")]
    NoSuchGroup {
        /// The group.
        group: GroupId,
    },
    /// The actor refused the request: no handler for it, it did not decode
    /// (a version mismatch between nodes?), or the handler returned an
    /// error. Its state did not change; retrying gets the same answer.
    #[error("the actor refused the request: {0}")]
    Rejected(String),
    /// The message could not be encoded here (nothing was sent), or a
    /// result could not be decoded into the expected type (the command
    /// was applied: its result is of another type than this client
    /// expects).
    #[error("encoding error: {0}")]
    Codec(String),
    /// No node could be reached, or none was ready: nothing was sent (or
    /// handled), so retrying is safe.
    #[error("cluster unavailable, nothing was sent: {0}")]
    Unavailable(String),
    /// A write to `node`'s log failed, so it stopped serving; nothing was
    /// proposed there. Retry on another node; restart that node after
    /// checking its disk.
    #[error(
        "node {node} stopped serving after a write to its log failed ({reason}); nothing was \
         proposed there: retry on another node, and restart it after checking its disk"
    )]
    NodeFailed {
        /// The node.
        node: NodeId,
        /// The storage error.
        reason: String,
    },
    /// The connection to `node` broke after the request was sent: the
    /// command may or may not have been applied.
    #[error("the connection to node {node} broke after the request was sent; the command may or may not have been applied, check before retrying")]
    ConnectionLost {
        /// The node.
        node: NodeId,
    },
    /// The request reached the group's leader (or may have), but no usable
    /// answer came back (a forwarded answer was lost or did not decode).
    /// The command may or may not have been applied.
    #[error("the outcome of the request to group {group} is unknown ({reason}); the command may or may not have been applied, check before retrying")]
    OutcomeUnknown {
        /// The group.
        group: GroupId,
        /// What went wrong.
        reason: String,
    },
    /// The request ran (a command was applied) but its result exceeds the
    /// frame limit and could not be returned. Do not retry a command.
    #[error("group {group} ran the request (a command was applied) but its result of {size} bytes exceeds the frame limit of {limit}; do not retry, return a smaller result")]
    ResultTooLarge {
        /// The group.
        group: GroupId,
        /// Size of the encoded answer.
        size: usize,
        /// The frame limit.
        limit: usize,
    },
    /// The actor's handler panicked on the message at log `index` (of type
    /// `message_type`), so the group stopped on the node asked (on every
    /// node, when the handler panics deterministically) and is not
    /// restarted. That message is committed: its effect was discarded with
    /// the half-modified state, and it is handled again when the node
    /// restarts. Other commands in flight may be committed too. Do not
    /// retry: make the handler return an error for that message, deploy
    /// it and restart the nodes.
    #[error(
        "group {group} stopped: the handler of {message_type} panicked on log entry {index}: \
         {panic_message}; the message is committed and will be handled again when the node \
         restarts; fix the handler so it does not panic on it, then restart the nodes (do not \
         retry)"
    )]
    Poisoned {
        /// The group.
        group: GroupId,
        /// Log index of the message whose handler panicked.
        index: u64,
        /// The message type's [`Message::NAME`](crate::Message::NAME).
        message_type: String,
        /// The panic's message.
        panic_message: String,
    },
    /// A leader transfer named a node that is not a voter of the group.
    /// Nothing changed; choose one of `voters`.
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
    /// The leader is already handing its leadership to `pending` (it
    /// finishes or gives up within one election timeout). Nothing
    /// changed; retry then.
    #[error("group {group} is already transferring its leadership to node {pending}; nothing changed, retry after an election timeout")]
    TransferInProgress {
        /// The group.
        group: GroupId,
        /// The node the pending transfer goes to.
        pending: NodeId,
    },
    /// Leadership did not move to `to` in time: the target was down, cut
    /// off, rejoining or too far behind, or another node won. Nothing else
    /// changed: check the target (`synod kv status`), then retry.
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
    /// (A run-time create) the node creates no groups at run time: its
    /// application registered no service for them
    /// ([`Node::serve_groups_of`](crate::Node::serve_groups_of); `synod
    /// node` serves its key-value store). Nothing changed there.
    #[error(
        "node {node} creates no groups at run time: its application registered no service for \
         them (Node::serve_groups_of); nothing changed there: register one, or list other nodes"
    )]
    NoGroupService {
        /// The node.
        node: NodeId,
    },
    /// (A run-time create) the group already exists with other voters.
    /// Nothing changed: choose another id, or the same voters (a create of
    /// an existing group with its voters succeeds).
    #[error(
        "group {group} already exists with voters {voters:?} (as node {node} records its \
         creation; empty: node {node} joined it later or does not know them); nothing changed: \
         choose another group id, or create it with the same voters"
    )]
    GroupExists {
        /// The group.
        group: GroupId,
        /// The node that answered.
        node: NodeId,
        /// The voters the group was created with there.
        voters: Vec<NodeId>,
    },
    /// The group was deleted (from `node`, or `node` was removed from it).
    /// A request for it was not applied; creating it again is refused:
    /// group ids are not reused.
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
    /// (A run-time create or delete) `node` could not be reached; the other
    /// nodes did their part. Run the same call again once it is up: both
    /// are idempotent, and the retry completes the job.
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
    /// (A watch) the changes from `requested` on are no longer all kept by
    /// the node that answered (its history starts at `oldest`: older
    /// changes were dropped for its bound, or are inside a snapshot it
    /// restored). Read the current state and watch again from the
    /// revision after it, as after etcd's `ErrCompacted`.
    #[error(
        "group {group}: the changes from revision {requested} on were compacted (the history \
         kept starts at {oldest}); read the current state, then watch again from the revision after it"
    )]
    Compacted {
        /// The group.
        group: GroupId,
        /// The first revision asked for.
        requested: u64,
        /// The oldest revision still kept.
        oldest: u64,
    },
    /// (A client session's command) the group no longer knows the session:
    /// it expired as the least recently used of too many (see
    /// [`crate::session`]). The command may have been applied before it
    /// expired: its outcome is unknown. Check the state, then go on with a
    /// new session.
    #[error(
        "group {group} no longer knows client session {session} (it expired: the least recently \
         used of too many); the command may or may not have been applied, check the state, \
         then use a new session"
    )]
    SessionExpired {
        /// The group.
        group: GroupId,
        /// The session's id in the group.
        session: u64,
    },
}

impl SynodError {
    /// Whether retrying cannot apply the command twice and may succeed:
    /// only when nothing was proposed or nothing was sent (a leader
    /// transfer proposes nothing: refused while another runs, or not
    /// finished in time, it may be retried).
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(
            self,
            SynodError::NotLeader { .. }
                | SynodError::Busy { .. }
                | SynodError::Unavailable(_)
                | SynodError::NodeFailed { .. }
                | SynodError::TransferInProgress { .. }
                | SynodError::TransferFailed { .. }
                | SynodError::ChangeInProgress { .. }
                | SynodError::LearnerBehind { .. }
        )
    }
}

impl SynodError {
    /// Whether asking again (elsewhere, later) may succeed for a request
    /// that cannot apply anything twice (a watch; a session's command):
    /// the errors safe to retry, and those that leave the outcome of a
    /// plain command unknown or found no replica (`Timeout`, `Stopped`,
    /// `ConnectionLost`, `NoSuchGroup`).
    pub(crate) fn is_transient(&self) -> bool {
        self.is_safe_to_retry()
            || matches!(
                self,
                SynodError::Timeout { .. }
                    | SynodError::Stopped { .. }
                    | SynodError::ConnectionLost { .. }
                    | SynodError::NoSuchGroup { .. }
            )
    }
}

impl From<RequestError> for SynodError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotLeader { group, leader } => SynodError::NotLeader {
                group,
                leader_hint: leader,
            },
            RequestError::NoSuchGroup(group) => SynodError::NoSuchGroup { group },
            RequestError::Busy(group) | RequestError::Restarting(group) => {
                SynodError::Busy { group }
            }
            RequestError::Timeout(group) => SynodError::Timeout { group },
            RequestError::Stopped(group) => SynodError::Stopped { group },
            RequestError::Application(m) => SynodError::Rejected(m),
            RequestError::Unavailable(m) => SynodError::Unavailable(m),
            RequestError::NodeFailed { node, reason } => SynodError::NodeFailed { node, reason },
            RequestError::OutcomeUnknown { group, reason } => {
                SynodError::OutcomeUnknown { group, reason }
            }
            RequestError::ResultTooLarge { group, size, limit } => {
                SynodError::ResultTooLarge { group, size, limit }
            }
            RequestError::Poisoned {
                group,
                index,
                message_type,
                panic_message,
            } => SynodError::Poisoned {
                group,
                index,
                message_type,
                panic_message,
            },
            RequestError::NotAVoter {
                group,
                node,
                voters,
            } => SynodError::NotAVoter {
                group,
                node,
                voters,
            },
            RequestError::TransferInProgress { group, pending } => {
                SynodError::TransferInProgress { group, pending }
            }
            RequestError::TransferFailed { group, to, leader } => {
                SynodError::TransferFailed { group, to, leader }
            }
            RequestError::ChangeInProgress { group, reason } => {
                SynodError::ChangeInProgress { group, reason }
            }
            RequestError::LearnerBehind {
                group,
                node,
                matched,
                last,
            } => SynodError::LearnerBehind {
                group,
                node,
                matched,
                last,
            },
            RequestError::BadChange { group, reason } => SynodError::BadChange { group, reason },
            RequestError::NoQuorumLeft { group, node } => SynodError::NoQuorumLeft { group, node },
            RequestError::UnknownNode { node } => SynodError::UnknownNode { node },
            RequestError::CannotHost {
                group,
                node,
                reason,
            } => SynodError::CannotHost {
                group,
                node,
                reason,
            },
            RequestError::NoGroupService { node } => SynodError::NoGroupService { node },
            RequestError::GroupExists {
                group,
                node,
                voters,
            } => SynodError::GroupExists {
                group,
                node,
                voters,
            },
            RequestError::GroupRemoved { group, node } => SynodError::GroupRemoved { group, node },
            RequestError::MemberUnreachable {
                group,
                node,
                reason,
            } => SynodError::MemberUnreachable {
                group,
                node,
                reason,
            },
            RequestError::Compacted {
                group,
                requested,
                oldest,
            } => SynodError::Compacted {
                group,
                requested,
                oldest,
            },
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node config.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with the line and the offending key).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// TLS material could not be loaded or does not fit this node.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine could not start (data directory in use, port in use,
    /// damaged log...).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Two actor messages share a name.
    #[error("actor {actor}: message name {name:?} is registered twice; names must be unique")]
    DuplicateMessage {
        /// The actor type.
        actor: &'static str,
        /// The name.
        name: &'static str,
    },
    /// An actor message uses a name reserved for Synod's own entries
    /// (`synod.session` and `synod.session.open`: client sessions).
    #[error(
        "actor {actor}: message name {name:?} is reserved by Synod (client sessions); rename it"
    )]
    ReservedMessage {
        /// The actor type.
        actor: &'static str,
        /// The name.
        name: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error a node can send, one of each kind.
    fn every_request_error() -> Vec<RequestError> {
        vec![
            RequestError::NotLeader {
                group: 1,
                leader: Some(2),
            },
            RequestError::NotLeader {
                group: 1,
                leader: None,
            },
            RequestError::NoSuchGroup(1),
            RequestError::Restarting(1),
            RequestError::Busy(1),
            RequestError::Timeout(1),
            RequestError::Stopped(1),
            RequestError::Application("no handler".into()),
            RequestError::Unavailable("no route".into()),
            RequestError::OutcomeUnknown {
                group: 1,
                reason: "garbled answer".into(),
            },
            RequestError::ResultTooLarge {
                group: 1,
                size: 10,
                limit: 5,
            },
            RequestError::NodeFailed {
                node: 2,
                reason: "EIO".into(),
            },
            RequestError::Poisoned {
                group: 1,
                index: 7,
                message_type: "Boom".into(),
                panic_message: "boom".into(),
            },
            RequestError::NotAVoter {
                group: 1,
                node: 9,
                voters: vec![1, 2, 3],
            },
            RequestError::TransferInProgress {
                group: 1,
                pending: 2,
            },
            RequestError::TransferFailed {
                group: 1,
                to: 2,
                leader: None,
            },
            RequestError::NoGroupService { node: 2 },
            RequestError::GroupExists {
                group: 1,
                node: 2,
                voters: vec![1, 2],
            },
            RequestError::GroupRemoved { group: 1, node: 2 },
            RequestError::MemberUnreachable {
                group: 1,
                node: 3,
                reason: "down".into(),
            },
            RequestError::Compacted {
                group: 1,
                requested: 3,
                oldest: 9,
            },
        ]
    }

    /// Issue 8, finding 5: one rule decides whether a retry is safe, on
    /// both sides of the conversion.
    #[test]
    fn request_and_client_errors_agree_on_retry_safety() {
        for e in every_request_error() {
            let client = SynodError::from(e.clone());
            assert_eq!(
                e.is_safe_to_retry(),
                client.is_safe_to_retry(),
                "{e:?} -> {client:?}"
            );
        }
    }

    /// Issue 8: a poison message's error names the group, the entry and
    /// the message type, and says what to do.
    #[test]
    fn a_poisoned_group_error_names_group_index_and_message_type() {
        let e = SynodError::from(RequestError::Poisoned {
            group: 4,
            index: 17,
            message_type: "Transfer".into(),
            panic_message: "overflow".into(),
        });
        let text = e.to_string();
        for part in ["group 4", "entry 17", "Transfer", "overflow", "restart"] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }
        assert!(!e.is_safe_to_retry());
    }
}
