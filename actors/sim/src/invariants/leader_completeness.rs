//! Leader Completeness (§5.4, Figure 3; argued in §5.4.3): "if a log entry
//! is committed in a given term, then that entry will be present in the
//! logs of the leaders for all higher-numbered terms."
//!
//! When a node learns a commit index, the entries it newly knows committed
//! are recorded with the node's current term as an upper bound of the term
//! in which they were committed (a node cannot learn of a commitment that
//! happened in a later term than its own). Every leader of a strictly
//! higher term must hold each such entry: checked when a node becomes
//! leader, and for current leaders whenever a new commitment is recorded.
//! Two different entries recorded as committed at one index is a violation
//! too (a committed entry was lost).

use std::collections::BTreeMap;

use synod_core::{Entry, Index, NodeId, Term};

use super::Violation;

const NAME: &str = "leader completeness (§5.4)";

#[derive(Debug)]
struct Committed {
    entry: Entry,
    /// Smallest term of a node that was seen knowing this commitment.
    known_in_term: Term,
}

/// The committed entries observed so far.
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    committed: BTreeMap<Index, Committed>,
}

impl LeaderCompleteness {
    /// Records that a node in term `node_term` knows `entries` committed.
    /// Returns the indexes whose record is new or now known earlier, which
    /// current leaders must then be checked against.
    pub fn observe_commit(
        &mut self,
        node: NodeId,
        node_term: Term,
        entries: &[Entry],
    ) -> Result<Vec<Index>, Violation> {
        let mut changed = Vec::new();
        for e in entries {
            match self.committed.get_mut(&e.index) {
                Some(c) if c.entry != *e => {
                    return Err(Violation::new(
                        NAME,
                        format!(
                            "index {} committed as {:?} and later as {:?} (node {node})",
                            e.index, c.entry, e
                        ),
                    ))
                }
                Some(c) => {
                    if node_term < c.known_in_term {
                        c.known_in_term = node_term;
                        changed.push(e.index);
                    }
                }
                None => {
                    self.committed.insert(
                        e.index,
                        Committed {
                            entry: e.clone(),
                            known_in_term: node_term,
                        },
                    );
                    changed.push(e.index);
                }
            }
        }
        Ok(changed)
    }

    /// Checks that a leader of `term` with `log` (contiguous from index 1)
    /// holds every entry committed in an earlier term; restrict to
    /// `only` indexes when given.
    pub fn check_leader(
        &self,
        leader: NodeId,
        term: Term,
        log: &[Entry],
        first_index: Index,
        only: Option<&[Index]>,
    ) -> Result<(), Violation> {
        let check = |index: Index, c: &Committed| -> Result<(), Violation> {
            if c.known_in_term >= term || index < first_index {
                // Not yet required of this leader, or compacted into its
                // snapshot (which only ever covers applied, hence
                // committed, entries: state machine safety checks those).
                return Ok(());
            }
            let held = log.get((index - first_index) as usize);
            if held != Some(&c.entry) {
                return Err(Violation::new(
                    NAME,
                    format!(
                        "leader {leader} of term {term} holds {held:?} at {index}, but {:?} \
                         was committed by term {}",
                        c.entry, c.known_in_term
                    ),
                ));
            }
            Ok(())
        };
        match only {
            Some(indexes) => {
                for i in indexes {
                    if let Some(c) = self.committed.get(i) {
                        check(*i, c)?;
                    }
                }
            }
            None => {
                for (i, c) in &self.committed {
                    check(*i, c)?;
                }
            }
        }
        Ok(())
    }

    /// Number of committed indexes recorded.
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::EntryKind;

    fn e(index: Index, term: Term, v: u8) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal(vec![v].into()),
        }
    }

    #[test]
    fn later_leader_with_committed_entries_passes() {
        let mut c = LeaderCompleteness::default();
        c.observe_commit(1, 2, &[e(1, 1, 1), e(2, 2, 2)]).unwrap();
        c.check_leader(3, 3, &[e(1, 1, 1), e(2, 2, 2), e(3, 3, 3)], 1, None)
            .unwrap();
        // A leader of the same term need not be checked (it committed them).
        c.check_leader(1, 2, &[], 1, None).unwrap();
        // Compacted entries are covered by the leader's snapshot.
        c.check_leader(3, 3, &[e(3, 3, 3)], 3, None).unwrap();
    }

    #[test]
    fn later_leader_missing_a_committed_entry_fires() {
        let mut c = LeaderCompleteness::default();
        c.observe_commit(1, 2, &[e(1, 1, 1), e(2, 2, 2)]).unwrap();
        assert!(c.check_leader(3, 4, &[e(1, 1, 1)], 1, None).is_err());
        assert!(c
            .check_leader(3, 4, &[e(1, 1, 1), e(2, 3, 2)], 1, Some(&[2]))
            .is_err());
    }

    #[test]
    fn earlier_knowledge_tightens_the_bound() {
        let mut c = LeaderCompleteness::default();
        c.observe_commit(1, 5, &[e(1, 1, 1)]).unwrap();
        c.check_leader(2, 4, &[], 1, None).unwrap();
        assert_eq!(c.observe_commit(2, 3, &[e(1, 1, 1)]).unwrap(), vec![1]);
        assert!(c.check_leader(2, 4, &[], 1, None).is_err());
    }

    #[test]
    fn two_entries_committed_at_one_index_fire() {
        let mut c = LeaderCompleteness::default();
        c.observe_commit(1, 2, &[e(1, 1, 1)]).unwrap();
        assert!(c.observe_commit(2, 3, &[e(1, 2, 1)]).is_err());
    }
}
