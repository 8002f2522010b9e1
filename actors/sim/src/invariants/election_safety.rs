//! Election Safety (§5.2, Figure 3): "at most one leader can be elected in
//! a given term."
//!
//! The simulator reports every (term, node) it sees in the leader role,
//! across crashes; a second node leading the same term is a violation.

use std::collections::BTreeMap;

use synod_core::{NodeId, Term};

use super::Violation;

const NAME: &str = "election safety (§5.2)";

/// Remembers the leader of every term ever observed.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    /// Records that `node` is leader in `term`.
    pub fn observe_leader(&mut self, term: Term, node: NodeId) -> Result<(), Violation> {
        match self.leaders.get(&term) {
            Some(&other) if other != node => Err(Violation::new(
                NAME,
                format!("term {term} has two leaders: {other} and {node}"),
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, node);
                Ok(())
            }
        }
    }

    /// Number of distinct terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_per_term_passes() {
        let mut c = ElectionSafety::default();
        c.observe_leader(1, 1).unwrap();
        c.observe_leader(1, 1).unwrap();
        c.observe_leader(2, 2).unwrap();
        assert_eq!(c.leader_terms(), 2);
    }

    #[test]
    fn two_leaders_in_one_term_fire() {
        let mut c = ElectionSafety::default();
        c.observe_leader(3, 1).unwrap();
        let v = c.observe_leader(3, 2).unwrap_err();
        assert_eq!(v.invariant, NAME);
    }
}
