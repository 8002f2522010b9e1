//! The replicated log of one replica, as the core sees it: every entry it
//! holds in memory, which of them are durable, committed and applied.
//!
//! ```text
//!   1 ........ applied ... applying ... commit ..... persisted ...... last
//!   |<-- applied by the state machine -->|
//!   |<----------- durable on this node's disk ----------->|
//!                              unstable_from -> |<-- not yet handed to a Ready -->|
//! ```
//!
//! Indexes only move forward except on a conflict, which truncates the
//! suffix (never below `commit`, §5.3/§5.4) and pulls `persisted` and
//! `unstable_from` back with it.

use crate::types::{Entry, Index, SnapshotInfo, Term};

/// The log and its four cursors.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    /// `entries[0]` has index `offset + 1`: the offset is where the latest
    /// snapshot ends (0 before any compaction).
    offset: Index,
    /// Term of the entry at `offset` (0 for the empty prefix).
    offset_term: Term,
    entries: Vec<Entry>,
    /// Highest index known committed (§5.3).
    committed: Index,
    /// Highest index handed to the state machine in a `Ready`.
    applying: Index,
    /// Highest index the state machine reported applied.
    applied: Index,
    /// Highest index known durable on this node.
    persisted: Index,
    /// First index not yet handed out for persistence in a `Ready`.
    unstable_from: Index,
}

impl RaftLog {
    /// A log restored from durable entries (all of them persisted) that
    /// continue a snapshot ending at `offset` (0 for none). `entries` must
    /// be contiguous from `offset + 1`; the caller checks. Everything the
    /// snapshot covers counts as committed and applied.
    pub(crate) fn restored(
        offset: Index,
        offset_term: Term,
        entries: Vec<Entry>,
        committed: Index,
        applied: Index,
    ) -> Self {
        let last = entries.last().map_or(offset, |e| e.index);
        // What the state machine applied was committed, even if the hard
        // state recording that commit was not yet durable (a Ready's
        // entries may be applied before its write completes): never hand
        // those entries out again.
        let applied = applied.min(last);
        let committed = committed.max(applied).clamp(offset, last);
        let applied = applied.clamp(offset, committed);
        RaftLog {
            offset,
            offset_term,
            entries,
            committed,
            applying: applied,
            applied,
            persisted: last,
            unstable_from: last + 1,
        }
    }

    /// Index of the last entry (0 when empty).
    pub fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index
    }

    /// Term of the last entry (0 when empty).
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    /// Index of the first entry held (the snapshot's index + 1).
    pub fn first_index(&self) -> Index {
        self.offset + 1
    }

    /// The latest snapshot point: the log continues after it.
    pub fn snapshot(&self) -> SnapshotInfo {
        SnapshotInfo {
            index: self.offset,
            term: self.offset_term,
        }
    }

    /// Drops the entries up to `index`, now covered by a snapshot. The
    /// caller checked that `index` is applied and past the offset.
    pub(crate) fn compact(&mut self, index: Index) {
        assert!(
            index > self.offset && index <= self.applied,
            "compact to {index} outside ({}, applied {}]",
            self.offset,
            self.applied
        );
        let term = self.term(index).expect("applied entries are held");
        self.entries.drain(..(index - self.offset) as usize);
        self.offset = index;
        self.offset_term = term;
    }

    /// Replaces the whole log with a snapshot (a follower far behind, §7):
    /// everything up to `snap.index` is committed, durable and applied by
    /// restoring the snapshot.
    pub(crate) fn install_snapshot(&mut self, snap: SnapshotInfo) {
        assert!(
            snap.index > self.committed,
            "snapshot at {} does not pass commit {}",
            snap.index,
            self.committed
        );
        self.entries.clear();
        self.offset = snap.index;
        self.offset_term = snap.term;
        self.committed = snap.index;
        self.applying = snap.index;
        self.applied = snap.index;
        self.persisted = snap.index;
        self.unstable_from = snap.index + 1;
    }

    /// The term of the entry at `index`, if this log holds it.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if this log holds it.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        self.entries.get((index - self.offset - 1) as usize)
    }

    /// All entries held in memory, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether the entry at `index` has term `term` (§5.3 consistency check).
    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as this one if
    /// its last term is greater, or equal with an index at least as large.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Highest index known committed.
    pub fn committed(&self) -> Index {
        self.committed
    }

    /// Highest index the state machine reported applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// Highest index known durable on this node.
    pub fn persisted(&self) -> Index {
        self.persisted
    }

    /// First index of the run of entries with term `term` that contains
    /// `index` (the conflict hint of §5.3).
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut first = index;
        while first > self.first_index() && self.term(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// Highest index `<= upto` whose term is `term`, if any (the snapshot
    /// point counts: its term is known).
    pub fn last_index_of_term(&self, term: Term, upto: Index) -> Option<Index> {
        let mut i = upto.min(self.last_index());
        while i >= self.first_index() {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                _ => {}
            }
            i -= 1;
        }
        (self.offset > 0 && self.offset <= upto && self.offset_term == term).then_some(self.offset)
    }

    /// Appends entries that continue the log (leader path).
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            assert_eq!(
                e.index,
                self.last_index() + 1,
                "append must continue the log"
            );
            assert!(
                e.term >= self.last_term(),
                "terms never decrease along the log"
            );
            self.entries.push(e);
        }
    }

    /// The follower side of AppendEntries (§5.3): if the log matches at
    /// `prev_index`/`prev_term`, removes conflicting entries, appends new
    /// ones and returns the index of the last entry the message covered.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<Index> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as Index;
        // The first entry whose term differs from ours (or that we lack).
        let conflict = entries.iter().find(|e| !self.match_term(e.index, e.term));
        if let Some(first) = conflict {
            assert!(
                first.index > self.committed,
                "conflict at {} would truncate committed entries (commit {})",
                first.index,
                self.committed
            );
            self.truncate_from(first.index);
            let start = (first.index - prev_index - 1) as usize;
            self.append(entries[start..].iter().cloned());
        }
        Some(last_new)
    }

    /// Removes every entry at or after `index`.
    fn truncate_from(&mut self, index: Index) {
        if index > self.last_index() {
            return;
        }
        self.entries.truncate((index - self.offset - 1) as usize);
        self.persisted = self.persisted.min(index - 1);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// Entries in `[low, high)`, at most `max_count` of them and at most
    /// `max_bytes` of payload, but always at least one if the range is not
    /// empty.
    pub fn slice(&self, low: Index, high: Index, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut i = low.max(self.first_index());
        let high = high.min(self.last_index() + 1);
        while i < high && out.len() < max_count {
            let Some(e) = self.entry(i) else { break };
            bytes += e.payload_len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Raises the commit index; never lowers it.
    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Whether entries await a `Ready` for persistence.
    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Hands out the entries not yet given to a `Ready`.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let out = self.slice(
            self.unstable_from,
            self.last_index() + 1,
            usize::MAX,
            usize::MAX,
        );
        self.unstable_from = self.last_index() + 1;
        out
    }

    /// Records that everything up to `index` (whose entry had `term`) is
    /// durable. Stale reports (the entry was replaced meanwhile) are
    /// ignored: by log matching, an equal (index, term) means an equal
    /// prefix, so a match is always safe to accept.
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) -> bool {
        if index > self.persisted && index < self.unstable_from && self.match_term(index, term) {
            self.persisted = index;
            true
        } else {
            false
        }
    }

    /// Whether committed, durable entries await the state machine.
    pub(crate) fn has_next_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applying
    }

    /// Hands out up to `max` committed, durable entries to apply.
    pub(crate) fn take_committed(&mut self, max: usize) -> Vec<Entry> {
        let high = self.committed.min(self.persisted) + 1;
        let out = self.slice(self.applying + 1, high, max, usize::MAX);
        if let Some(last) = out.last() {
            self.applying = last.index;
        }
        out
    }

    /// Records what the state machine has applied. Reports at or below
    /// the snapshot point (a late report after a snapshot install) are
    /// ignored.
    pub(crate) fn applied_to(&mut self, index: Index) {
        assert!(
            index <= self.applying,
            "applied {index} but only {} was handed out",
            self.applying
        );
        self.applied = self.applied.max(index);
    }

    /// Highest index handed to the state machine.
    pub fn applying(&self) -> Index {
        self.applying
    }

    /// Checks the cursors and the shape of the log; describes the first
    /// violation found.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let last = self.last_index();
        if self.committed > last {
            return Err(format!("commit {} > last index {last}", self.committed));
        }
        if self.applied < self.offset || self.committed < self.offset {
            return Err(format!(
                "snapshot at {} but applied {} / commit {}",
                self.offset, self.applied, self.committed
            ));
        }
        if self.applied > self.applying || self.applying > self.committed.min(self.persisted) {
            return Err(format!(
                "applied {} / applying {} / commit {} / persisted {} out of order",
                self.applied, self.applying, self.committed, self.persisted
            ));
        }
        if self.persisted >= self.unstable_from || self.unstable_from > last + 1 {
            return Err(format!(
                "persisted {} / unstable_from {} / last {last} out of order",
                self.persisted, self.unstable_from
            ));
        }
        let mut prev_term = self.offset_term;
        for (i, e) in self.entries.iter().enumerate() {
            let expected = self.offset + 1 + i as Index;
            if e.index != expected {
                return Err(format!(
                    "entry at slot {i} has index {} != {expected}",
                    e.index
                ));
            }
            if e.term < prev_term {
                return Err(format!("term decreases at index {}", e.index));
            }
            prev_term = e.term;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Noop,
        }
    }

    fn log_with(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| e(i as Index + 1, *t))
            .collect();
        RaftLog::restored(0, 0, entries, 0, 0)
    }

    #[test]
    fn up_to_date_compares_last_term_then_index() {
        let log = log_with(&[1, 1, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(9, 1));
    }

    #[test]
    fn maybe_append_truncates_only_on_conflict() {
        let mut log = log_with(&[1, 1, 2, 2]);
        // A stale, shorter message must not truncate the matching suffix.
        assert_eq!(log.maybe_append(1, 1, &[e(2, 1)]), Some(2));
        assert_eq!(log.last_index(), 4);
        // A conflict at 3 replaces 3 and 4.
        assert_eq!(log.maybe_append(2, 1, &[e(3, 3)]), Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.persisted(), 2, "truncation pulls persisted back");
        // Mismatch at prev rejects.
        assert_eq!(log.maybe_append(3, 2, &[]), None);
    }

    #[test]
    fn conflict_hints() {
        let log = log_with(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.last_index_of_term(2, 6), Some(5));
        assert_eq!(log.last_index_of_term(3, 6), None);
    }

    #[test]
    fn slice_respects_limits_but_sends_one() {
        let mut log = RaftLog::default();
        let big = Entry {
            index: 1,
            term: 1,
            kind: EntryKind::Normal(vec![0u8; 100].into()),
        };
        log.append([big, e(2, 1), e(3, 1)]);
        assert_eq!(log.slice(1, 4, 10, 10).len(), 1);
        assert_eq!(log.slice(2, 4, 1, 10).len(), 1);
        assert_eq!(log.slice(2, 4, 10, 10).len(), 2);
    }

    #[test]
    fn committed_entries_wait_for_persistence() {
        let mut log = RaftLog::default();
        log.append([e(1, 1), e(2, 1)]);
        log.commit_to(2);
        assert!(!log.has_next_committed());
        let unstable = log.take_unstable();
        assert_eq!(unstable.len(), 2);
        assert!(log.persisted_to(1, 1));
        assert_eq!(log.take_committed(10).len(), 1);
        assert!(!log.persisted_to(2, 9), "wrong term is a stale report");
        assert!(log.persisted_to(2, 1));
        assert_eq!(log.take_committed(10)[0].index, 2);
        log.applied_to(2);
        log.validate().unwrap();
    }

    #[test]
    fn compaction_keeps_terms_and_slices_working() {
        let mut log = log_with(&[1, 1, 2, 2, 3]);
        log.commit_to(4);
        log.take_committed(10);
        log.applied_to(4);
        log.compact(3);
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term(3), Some(2), "the snapshot point keeps its term");
        assert_eq!(log.term(2), None);
        assert_eq!(log.slice(1, 6, 10, 1000).len(), 2);
        assert_eq!(log.first_index_of_term_at(4), 4);
        log.validate().unwrap();
        log.install_snapshot(SnapshotInfo { index: 9, term: 4 });
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (10, 9, 4)
        );
        assert_eq!(log.committed(), 9);
        log.validate().unwrap();
    }
}
