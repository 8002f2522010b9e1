//! The safety and liveness properties the simulation checks, one file per
//! invariant, each citing the section of "In Search of an Understandable
//! Consensus Algorithm (Extended Version)", Ongaro & Ousterhout, 2014, that
//! states it. Every checker is fed observations by the simulator and is
//! tested on its own with crafted histories that break it.

use std::fmt;

pub mod election_safety;
pub mod leader_completeness;
pub mod linearizable_reads;
pub mod liveness;
pub mod log_matching;
pub mod state_machine_safety;

pub use election_safety::ElectionSafety;
pub use leader_completeness::LeaderCompleteness;
pub use linearizable_reads::LinearizableReads;
pub use liveness::Liveness;
pub use log_matching::LogMatching;
pub use state_machine_safety::StateMachineSafety;

/// A broken invariant: which one, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Name of the invariant ("election safety", ...).
    pub invariant: &'static str,
    /// What was observed.
    pub detail: String,
}

impl Violation {
    pub(crate) fn new(invariant: &'static str, detail: String) -> Self {
        Violation { invariant, detail }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}
