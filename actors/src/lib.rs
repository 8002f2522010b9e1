//! # synod-actors: the node engine
//!
//! The actors that turn the pure Raft core (`synod-core`) and the WAL
//! (`synod-storage`) into a running multi-raft node over QUIC
//! (`synod-net`):
//!
//! * [`group::RaftGroup`], one per group: drives the core and carries out
//!   each Ready in the order its contract demands;
//! * [`replicator::Replicator`], one per follower per group on the leader:
//!   AppendEntries to the transport, snapshots on streams of their own;
//! * [`fsm::FsmCaller`], one per group: applies committed entries to the
//!   application's [`StateMachine`] and answers the proposers;
//! * [`snapshot_exec::SnapshotExecutor`], one per group: saves, streams and
//!   stores snapshots;
//! * [`log_writer::LogWriter`], one per node: group commit of every group's
//!   writes with one fsync per round;
//! * [`node::NodeActor`], one per node: router and supervisor, restarting a
//!   group from durable state when one of its actors dies.
//!
//! [`Engine`] assembles them; the public, typed API lives in the `synod`
//! crate. See `docs/ARCHITECTURE.md` for the flow of one write.
#![deny(missing_docs)]

pub mod catalog;
pub mod clock;
pub mod engine;
pub mod faults;
pub mod fsm;
pub mod group;
pub mod identity;
pub mod log_writer;
pub mod node;
pub mod proto;
pub mod replicator;
pub mod shared;
pub mod snapshot_exec;
pub mod state_machine;

pub use engine::{Engine, EngineConfig, EngineError, FaultTarget, Listen, Placement};
pub use faults::{DiskFault, DiskFaults, FaultyStore};
pub use log_writer::{LogWriter, SharedMemLog};
pub use proto::{
    AppliedChange, ChangeBatch, GroupStatus, MemberProgress, MembershipInfo, NodeStats, Poison,
    Request, RequestError, Response,
};
pub use shared::{GroupConfig, Leadership};
pub use state_machine::{ApplyContext, StateMachine, StateMachineFactory};
pub use synod_core::{ConfChange, Membership};
