//! Log Matching (§5.3, Figure 3): "if two logs contain an entry with the
//! same index and term, then the logs are identical in all entries up
//! through the given index."
//!
//! Two checks. Incrementally, as entries are written: by induction on the
//! index, the property holds iff every (index, term) pair ever written
//! always comes with the same content and the same previous term; the
//! checker remembers both per pair. At the end, and whenever asked, a
//! direct pairwise comparison of whole logs checks the definition itself.

use std::collections::BTreeMap;

use synod_core::{Entry, EntryKind, Index, Term};

use super::Violation;

const NAME: &str = "log matching (§5.3)";

/// What an (index, term) pair must always stand for.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    kind: EntryKind,
    prev_term: Term,
}

/// Remembers the identity of every (index, term) pair ever written.
#[derive(Debug, Default)]
pub struct LogMatching {
    seen: BTreeMap<(Index, Term), Identity>,
}

impl LogMatching {
    /// Records entries a node holds; `prev_term` is the term of the entry
    /// just before `entries[0]` in that node's log (0 for index 1).
    pub fn observe(&mut self, prev_term: Term, entries: &[Entry]) -> Result<(), Violation> {
        let mut prev = prev_term;
        for e in entries {
            let id = Identity {
                kind: e.kind.clone(),
                prev_term: prev,
            };
            match self.seen.get(&(e.index, e.term)) {
                Some(known) if *known != id => {
                    return Err(Violation::new(
                        NAME,
                        format!(
                            "entry ({}, term {}) seen as {:?} and as {:?}",
                            e.index, e.term, known, id
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    self.seen.insert((e.index, e.term), id);
                }
            }
            prev = e.term;
        }
        Ok(())
    }

    /// The definition, checked directly on two logs, each contiguous but
    /// possibly starting after a snapshot: only their common range can be
    /// compared.
    pub fn check_pair(a: &[Entry], b: &[Entry]) -> Result<(), Violation> {
        let (Some(a0), Some(b0)) = (a.first(), b.first()) else {
            return Ok(());
        };
        let start = a0.index.max(b0.index);
        let end = (a0.index + a.len() as Index).min(b0.index + b.len() as Index);
        fn at(log: &[Entry], first: Index, i: Index) -> &Entry {
            &log[(i - first) as usize]
        }
        // Find the highest common index where both have the same term...
        let Some(top) = (start..end)
            .rev()
            .find(|&i| at(a, a0.index, i).term == at(b, b0.index, i).term)
        else {
            return Ok(());
        };
        // ...then everything up through it must be identical.
        for i in start..=top {
            let (x, y) = (at(a, a0.index, i), at(b, b0.index, i));
            if x != y {
                return Err(Violation::new(
                    NAME,
                    format!(
                        "logs agree on ({top}, term {}) but differ at index {i}: {x:?} vs {y:?}",
                        at(a, a0.index, top).term
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: Index, term: Term, v: u8) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal(vec![v].into()),
        }
    }

    #[test]
    fn consistent_logs_pass() {
        let mut c = LogMatching::default();
        c.observe(0, &[e(1, 1, 1), e(2, 1, 2)]).unwrap();
        c.observe(1, &[e(2, 1, 2), e(3, 2, 3)]).unwrap();
        LogMatching::check_pair(&[e(1, 1, 1), e(2, 1, 2)], &[e(1, 1, 1), e(2, 2, 9)]).unwrap();
    }

    #[test]
    fn same_index_and_term_with_other_content_fires() {
        let mut c = LogMatching::default();
        c.observe(0, &[e(1, 1, 1)]).unwrap();
        assert!(c.observe(0, &[e(1, 1, 2)]).is_err());
    }

    #[test]
    fn same_entry_after_a_different_prefix_fires() {
        let mut c = LogMatching::default();
        c.observe(1, &[e(2, 2, 5)]).unwrap();
        // Same (2, term 2) entry, but here it follows a term-2 entry.
        assert!(c.observe(2, &[e(2, 2, 5)]).is_err());
    }

    #[test]
    fn pairwise_check_fires_on_divergent_prefix() {
        let a = [e(1, 1, 1), e(2, 1, 2)];
        let b = [e(1, 1, 7), e(2, 1, 2)];
        assert!(LogMatching::check_pair(&a, &b).is_err());
    }
}
