//! Synod's public API. The `Node`, `ReplicatedActor` and `SharedState`
//! types arrive with the runtime issue; today the crate re-exports the
//! layers below so applications can already reach the pure Raft core.
#![deny(missing_docs)]

pub use synod_actors::core;
pub use synod_net as net;
