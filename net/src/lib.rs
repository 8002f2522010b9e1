//! # synod-net: Synod's QUIC transport
//!
//! One QUIC connection per pair of nodes, mutual TLS against the cluster CA,
//! Raft traffic of all groups batched into frames, requests and snapshots
//! on streams of their own ([`transport`]); the frame format ([`frame`]);
//! TLS material and a dev certificate generator ([`tls`]). This crate knows
//! nothing of Raft: it carries items of a type the layer above chooses.
#![deny(missing_docs)]

pub mod frame;
pub mod tls;
pub mod transport;

pub use tls::{TlsError, TlsMaterial};
pub use transport::{
    BoxFuture, Connector, Handler, NetConfig, NetError, NetStats, Peer, SnapshotStream, Transport,
};
