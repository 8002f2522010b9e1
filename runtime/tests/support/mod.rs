//! Helpers of the simulation tests.
pub mod turmoil_udp;
