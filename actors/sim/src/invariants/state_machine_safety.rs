//! State Machine Safety (§5.4.3, Figure 3): "if a server has applied a log
//! entry at a given index to its state machine, no other server will ever
//! apply a different log entry for the same index."
//!
//! Every applied entry is compared with the first one ever applied at its
//! index, by any node, in any incarnation.

use std::collections::BTreeMap;

use bytes::Bytes;
use synod_core::{Entry, Index, NodeId};

use super::Violation;

const NAME: &str = "state machine safety (§5.4.3)";

/// The entry applied first at each index, and by whom.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<Index, (NodeId, Entry)>,
}

impl StateMachineSafety {
    /// Records that `node` applied `entry`.
    pub fn observe_apply(&mut self, node: NodeId, entry: &Entry) -> Result<(), Violation> {
        match self.applied.get(&entry.index) {
            Some((first, known)) if known != entry => Err(Violation::new(
                NAME,
                format!(
                    "index {}: node {first} applied {known:?}, node {node} applied {entry:?}",
                    entry.index
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(entry.index, (node, entry.clone()));
                Ok(())
            }
        }
    }

    /// A node adopted a snapshot ending at `index` whose state is the
    /// `(index, value)` of every command applied up to it: each must be
    /// what was applied at that index anywhere, and every command applied
    /// anywhere up to `index` must be in it (§7: a snapshot is the state
    /// machine after applying exactly the committed prefix).
    pub fn observe_snapshot(
        &mut self,
        node: NodeId,
        index: Index,
        state: &[(Index, Bytes)],
    ) -> Result<(), Violation> {
        let in_snapshot: BTreeMap<Index, &Bytes> = state.iter().map(|(i, d)| (*i, d)).collect();
        if let Some((&i, _)) = in_snapshot.range(index + 1..).next() {
            return Err(Violation::new(
                NAME,
                format!("node {node}: snapshot at {index} holds a command of index {i}"),
            ));
        }
        for (&i, (first, known)) in self.applied.range(..=index) {
            let expected = known.data();
            let got = in_snapshot.get(&i).copied();
            if expected != got {
                return Err(Violation::new(
                    NAME,
                    format!(
                        "node {node}: snapshot at {index} has {got:?} at {i}, but node {first} \
                         applied {known:?} there"
                    ),
                ));
            }
        }
        // Every snapshot is taken from applied state, and every apply is
        // observed first, so a command no one applied was invented.
        if let Some(i) = in_snapshot.keys().find(|i| !self.applied.contains_key(i)) {
            return Err(Violation::new(
                NAME,
                format!("node {node}: snapshot at {index} holds a command at {i} no one applied"),
            ));
        }
        Ok(())
    }

    /// Highest index applied anywhere.
    pub fn max_applied(&self) -> Index {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::EntryKind;

    fn e(index: Index, term: u64, v: u8) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal(vec![v].into()),
        }
    }

    #[test]
    fn same_entries_pass() {
        let mut c = StateMachineSafety::default();
        c.observe_apply(1, &e(1, 1, 1)).unwrap();
        c.observe_apply(2, &e(1, 1, 1)).unwrap();
        c.observe_apply(1, &e(2, 1, 2)).unwrap();
        assert_eq!(c.max_applied(), 2);
    }

    #[test]
    fn snapshots_must_hold_exactly_the_applied_commands() {
        let mut c = StateMachineSafety::default();
        c.observe_apply(1, &e(1, 1, 1)).unwrap();
        c.observe_apply(1, &e(2, 1, 2)).unwrap();
        let d = |v: u8| Bytes::from(vec![v]);
        c.observe_snapshot(2, 2, &[(1, d(1)), (2, d(2))]).unwrap();
        assert!(c.observe_snapshot(2, 2, &[(1, d(1))]).is_err(), "missing");
        assert!(
            c.observe_snapshot(2, 2, &[(1, d(1)), (2, d(7))]).is_err(),
            "altered"
        );
        assert!(
            c.observe_snapshot(2, 1, &[(1, d(1)), (2, d(2))]).is_err(),
            "beyond"
        );
        assert!(
            c.observe_snapshot(2, 3, &[(1, d(1)), (2, d(2)), (3, d(3))])
                .is_err(),
            "invented"
        );
    }

    #[test]
    fn different_entry_at_same_index_fires() {
        let mut c = StateMachineSafety::default();
        c.observe_apply(1, &e(5, 2, 1)).unwrap();
        assert!(c.observe_apply(3, &e(5, 3, 1)).is_err(), "other term");
        assert!(c.observe_apply(3, &e(5, 2, 9)).is_err(), "other content");
    }
}
