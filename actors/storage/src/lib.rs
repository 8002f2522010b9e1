//! Synod's durable storage (write-ahead log, hard state, snapshots).
#![deny(missing_docs)]
