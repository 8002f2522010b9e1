//! Typed errors. API errors (`NotLeader`, `Busy`, `Timeout`, ...) say what
//! happened to one request and whether retrying makes sense; `Start` and
//! `Config` errors say why a node could not run and what to change.

use std::path::PathBuf;

use synod_actors::{EngineError, RequestError};
use synod_core::NodeId;
use synod_storage::GroupId;

/// What can go wrong with a request to a replicated actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SynodError {
    /// The node asked is not the group's leader (and could not forward).
    #[error("not the leader of group {group}; leader hint: {leader_hint:?}")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader the node believes in.
        leader_hint: Option<NodeId>,
    },
    /// No answer in time. The command may or may not have been applied:
    /// retrying it may apply it twice.
    #[error("timed out on group {group}; the command may or may not have been applied")]
    Timeout {
        /// The group.
        group: GroupId,
    },
    /// Too many commands in flight; nothing was proposed. Back off, retry.
    #[error("group {group} is busy; nothing was proposed, back off and retry")]
    Busy {
        /// The group.
        group: GroupId,
    },
    /// The group stopped before answering (restart, shutdown). The command
    /// may or may not have been applied.
    #[error(
        "group {group} stopped before answering; the command may or may not have been applied"
    )]
    Stopped {
        /// The group.
        group: GroupId,
    },
    /// The group does not exist on the node asked.
    #[error("no group {group} on the node asked; create it on every node first")]
    NoSuchGroup {
        /// The group.
        group: GroupId,
    },
    /// The actor refused the request: no handler for it, or it did not
    /// decode (a version mismatch between nodes?). Nothing changed.
    #[error("the actor refused the request: {0}")]
    Rejected(String),
    /// The message or its result could not be encoded or decoded here.
    #[error("encoding error: {0}")]
    Codec(String),
    /// No node could be reached (nothing was sent).
    #[error("cluster unavailable: {0}")]
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
    #[error("the connection to node {node} broke after the request was sent; the command may or may not have been applied")]
    ConnectionLost {
        /// The node.
        node: NodeId,
    },
}

impl SynodError {
    /// Whether retrying cannot apply the command twice and may succeed.
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(
            self,
            SynodError::NotLeader { .. }
                | SynodError::Busy { .. }
                | SynodError::Unavailable(_)
                | SynodError::NodeFailed { .. }
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
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
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
}
