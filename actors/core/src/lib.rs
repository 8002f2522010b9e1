//! # synod-core: the Raft state machine of Synod, pure and deterministic
//!
//! One [`Raft`] value is one replica of one Raft group. It never performs
//! I/O, reads a clock, spawns a thread or draws OS randomness: time arrives
//! as [`Raft::tick`], the network as [`Raft::step`], clients as
//! [`Raft::propose`], the disk's answers as [`Raft::on_persisted`] and the
//! state machine's as [`Raft::on_applied`]. Everything the replica wants
//! done comes out of [`Raft::ready`] as a [`Ready`], which also says what
//! must be durable before which message may leave. Same inputs, same
//! Readies: that is what lets `synod-sim` replay any failure from a seed.
//!
//! Implemented: leader election with randomized timeouts (§5.2), pre-vote
//! and check-quorum (thesis §9.6, §6.2), refusal of votes while a live
//! leader is heard, a no-op entry per new leader (§8), log replication with
//! the consistency check and conflict-term backtracking (§5.3), per-follower
//! progress with probe/replicate states and a bounded pipeline window,
//! batched proposals with back-pressure, commitment only of current-term
//! entries by counting (§5.4.2), leader transfer with `TimeoutNow`
//! ([`Raft::transfer_leader`], thesis §3.10).
//!
//! ## Walkthrough: a one-replica group
//!
//! ```
//! use synod_core::{Config, Raft, Role};
//!
//! let mut raft = Raft::new(Config::new(1, [1])).unwrap();
//! // Time passes until the election timeout fires; alone, it wins.
//! while raft.role() != Role::Leader {
//!     raft.tick();
//! }
//! let proposed = raft.propose(vec!["hello".into(), "world".into()]).unwrap();
//!
//! // Carry out Readies until the commands are applied.
//! let mut applied = Vec::new();
//! while raft.log().applied() < proposed.last_index {
//!     let rd = raft.ready();
//!     // 1. rd.messages would go to peers now (there are none).
//!     // 2. Write rd.hard_state and rd.entries durably, then say so:
//!     if let Some((index, term)) = rd.persist_up_to() {
//!         raft.on_persisted(index, term);
//!     }
//!     // 3. rd.persisted_messages may now be sent.
//!     // 4. Apply committed entries and report the last one.
//!     for e in &rd.committed_entries {
//!         if let Some(data) = e.data() {
//!             applied.push(data.clone());
//!         }
//!     }
//!     if let Some(last) = rd.committed_entries.last() {
//!         raft.on_applied(last.index);
//!     }
//! }
//! assert_eq!(applied, vec!["hello", "world"]);
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod log;
mod message;
mod progress;
mod raft;
mod ready;
pub mod rng;
mod types;

#[cfg(feature = "fault-injection")]
pub use config::Bugs;
pub use config::Config;
pub use error::{
    CompactError, ConfChangeError, ConfigError, ProposeError, ReadError, RestoreError,
    TransferError,
};
pub use log::RaftLog;
pub use message::{AppendResponse, Message, MessageBody};
pub use progress::{Progress, ProgressState};
pub use raft::{ForcedVoters, Proposed, Raft, Stats, PROMOTE_MAX_LAG};
pub use ready::{ReadState, Ready, SoftState};
pub use types::{
    ConfChange, Entry, EntryKind, HardState, Index, Membership, NodeId, Role, SnapshotInfo, Term,
};
