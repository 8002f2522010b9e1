//! The interface between a group and the application state it replicates.
//! The runtime's typed `ReplicatedActor` API implements it; the actors only
//! see bytes.

use synod_core::{Index, Term};

/// Where a command is being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyContext {
    /// The group.
    pub group: u64,
    /// Log index of the command.
    pub index: Index,
    /// Term of the command's entry.
    pub term: Term,
}

/// A replicated state machine, driven by its group's `FsmCaller`.
///
/// Every replica applies the same commands in the same order, so `apply`
/// must be deterministic: same state and command, same result and new
/// state, on every machine. Errors are values (returned to the caller),
/// not failures of the group.
///
/// A panic in `apply` is a bug and stops the group on this node, once and
/// for good (no restart: the same entry would panic again): its `FsmCaller`
/// answers every request of the group with `RequestError::Poisoned`
/// (naming the entry's index, [`StateMachine::describe`] of the command
/// and the panic message) and its status reports `role: "Poisoned"`. The
/// way out is to fix `apply` (return an error for that input) and restart
/// the node: the entry is applied again from the log. A panic in `query`
/// changes nothing (`&self`) and is the asker's error only.
pub trait StateMachine: Send + 'static {
    /// Applies a command; returns its encoded result.
    fn apply(&mut self, command: &[u8], ctx: &ApplyContext) -> Result<Vec<u8>, String>;
    /// Answers a read-only query; returns its encoded result.
    fn query(&self, query: &[u8]) -> Result<Vec<u8>, String>;
    /// Serializes the whole state (for a snapshot).
    fn snapshot(&self) -> Result<Vec<u8>, String>;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, data: &[u8]) -> Result<(), String>;
    /// Names what `command` is (its message type), for the error and the
    /// log line of a command whose `apply` panicked. `None` (the default)
    /// when the state machine cannot tell; it must not panic.
    fn describe(&self, command: &[u8]) -> Option<String> {
        let _ = command;
        None
    }
    /// Whether the last `apply` changed nothing and should not be shown
    /// to watches as a change (a retried command answered from a kept
    /// result, say). Default `false`.
    fn changed_nothing(&self) -> bool {
        false
    }
}

/// Makes a fresh, empty state machine: used when a group starts and when
/// its supervisor restarts it (then restores the latest snapshot and
/// replays the log).
pub type StateMachineFactory = std::sync::Arc<dyn Fn() -> Box<dyn StateMachine> + Send + Sync>;

/// Entry payloads start with one of these bytes.
pub(crate) const ENTRY_COMMAND: u8 = 1;
/// A read through the log, as earlier versions proposed it (reads use
/// ReadIndex now); logs written by them may still hold such entries.
pub(crate) const ENTRY_READ: u8 = 2;
