//! Synod's network layer (QUIC + mutual TLS). Built in the runtime issue;
//! this crate is a placeholder so the workspace has its final shape.
#![deny(missing_docs)]

/// Version byte carried at the start of every frame this crate will write.
pub const FRAME_VERSION: u8 = 1;
