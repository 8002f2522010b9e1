//! Synod's actor layer.
//!
//! This crate will host the actix actors that carry out what the pure Raft
//! core ([`synod_core`]) decides, using the node's write-ahead log
//! ([`synod_storage`]). For now it re-exports both so that upper layers
//! depend on one crate.
#![deny(missing_docs)]

pub use synod_core as core;
pub use synod_storage as storage;
