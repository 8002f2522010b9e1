//! # Synod: replicated actors on multi-raft over QUIC
//!
//! An application spawns a [`ReplicatedActor`]: an actor whose messages
//! are agreed on by a Raft group before they are handled, so that every
//! replica applies the same messages in the same order and the actor
//! survives the loss of any minority of nodes. One node hosts many groups;
//! nodes talk over QUIC with mutual TLS.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use synod::{ApplyContext, Command, Handler, Node, NodeConfig, Query, QueryHandler, ReplicatedActor};
//!
//! #[derive(Clone, Default, Serialize, Deserialize, ReplicatedActor)]
//! #[synod(commands(Add), queries(Value))]   // what it handles (checked at compile time)
//! struct Counter { value: u64 }
//!
//! #[derive(Serialize, Deserialize, Command)]
//! #[synod(name = "counter.add", result = "u64")]   // its wire name: explicit, stable
//! struct Add(u64);
//!
//! #[derive(Serialize, Deserialize, Query)]
//! #[synod(name = "counter.value", result = "u64")]
//! struct Value;
//!
//! impl Handler<Add> for Counter {
//!     fn handle(&mut self, Add(n): Add, _: &ApplyContext) -> u64 {
//!         self.value += n;
//!         self.value
//!     }
//! }
//! impl QueryHandler<Value> for Counter {
//!     fn query(&self, _: Value) -> u64 { self.value }
//! }
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = NodeConfig::from_file("node-1.toml".as_ref())?;
//!     // Once, before a NEW node's first start (`synod init` does the same):
//!     // a node started on an empty directory without it is treated as one
//!     // that lost its disk and votes for nobody until it caught up.
//!     Node::init_new(&config)?;
//!     let node = Node::start(config, synod::logging::discard()).await?;
//!     let counter = node.spawn_replicated(1, Counter::default()).await?;
//!     let v = counter.send(Add(5)).await?;   // committed by the group, then applied
//!     assert_eq!(counter.read(Value).await?, v);
//!     Ok(())
//! }
//! ```
//!
//! See `docs/USER_GUIDE.md` for the rules handlers must follow
//! (determinism), configuration, errors and operations.
#![deny(missing_docs)]

pub mod actor;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod kv;
/// The local process cluster (dev certificates, node processes on free
/// loopback ports, SIGKILL/SIGSTOP): for demos, benchmarks and tests, not
/// for production, so it exists only with the feature `testing`.
#[cfg(feature = "testing")]
pub mod local;
pub mod logging;
pub mod node;
pub mod session;
pub mod shared;
pub mod watch;

pub use actor::{
    ApplyContext, Handler, Handlers, Message, Query, QueryHandler, Registered, ReplicatedActor,
};
/// Derive macros: `Command` and `Query` (explicit wire names) and
/// `ReplicatedActor` (registration checked at compile time); see
/// [`Registered`].
pub use synod_derive::{Command, Query, ReplicatedActor};

// The derive macros name `::synod::...`, which must resolve in this crate
// too (KvStore derives its registration).
extern crate self as synod;
pub use client::{Client, ClientConfig};
pub use config::{Fsync, LogLevel, NodeConfig};
pub use error::{ConfigError, StartError, SynodError};
pub use node::{Node, ReplicatedAddr};
pub use session::{Session, SessionStats};
pub use synod_actors::{GroupStatus, Leadership, MemberProgress, MembershipInfo, NodeStats};
pub use synod_net::TlsMaterial;
pub use watch::{Change, Watch, WatchOptions};
