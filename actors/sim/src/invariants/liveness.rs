//! Durability and liveness after heal: every proposal acknowledged to a
//! client (committed and applied by the leader that accepted it, §5.3:
//! "the leader applies the entry to its state machine and returns the
//! result of that execution to the client") is eventually applied, exactly
//! once, by every node once the network heals and every node is up (§5.6:
//! "the system will be able to elect and maintain a steady leader" when
//! timing allows).

use std::collections::BTreeSet;

use synod_core::NodeId;

use super::Violation;

const NAME: &str = "acknowledged writes applied after heal (§5.3, §5.6)";

/// The acknowledged values of one run.
#[derive(Debug, Default)]
pub struct Liveness {
    acked: BTreeSet<u64>,
}

impl Liveness {
    /// Records that a client saw `value` acknowledged.
    pub fn observe_ack(&mut self, value: u64) {
        self.acked.insert(value);
    }

    /// Number of acknowledged values.
    pub fn acked(&self) -> usize {
        self.acked.len()
    }

    /// Checks one node's applied values (in apply order) after the heal:
    /// each acknowledged value present, none applied twice.
    pub fn check_node(&self, node: NodeId, applied: &[u64]) -> Result<(), Violation> {
        let mut seen = BTreeSet::new();
        for v in applied {
            if !seen.insert(*v) {
                return Err(Violation::new(
                    NAME,
                    format!("node {node} applied value {v} twice"),
                ));
            }
        }
        if let Some(missing) = self.acked.iter().find(|v| !seen.contains(v)) {
            return Err(Violation::new(
                NAME,
                format!(
                    "node {node} never applied acknowledged value {missing} ({} of {} acked present)",
                    self.acked.iter().filter(|v| seen.contains(v)).count(),
                    self.acked.len()
                ),
            ));
        }
        Ok(())
    }

    /// A run whose cluster did not converge within the heal deadline.
    pub fn not_converged(detail: String) -> Violation {
        Violation::new(NAME, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_acked_present_passes() {
        let mut c = Liveness::default();
        c.observe_ack(1);
        c.observe_ack(2);
        c.check_node(1, &[1, 3, 2]).unwrap();
    }

    #[test]
    fn missing_ack_fires() {
        let mut c = Liveness::default();
        c.observe_ack(1);
        c.observe_ack(2);
        assert!(c.check_node(1, &[1]).is_err());
    }

    #[test]
    fn duplicate_apply_fires() {
        let c = Liveness::default();
        assert!(c.check_node(1, &[4, 4]).is_err());
    }
}
