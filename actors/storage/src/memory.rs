//! An in-memory [`LogStore`] for simulations: the same validation and
//! semantics as the [`crate::Wal`], with a durable layer and a staged layer
//! so that a simulated crash loses exactly what was not synced.

use std::collections::{BTreeMap, VecDeque};

use synod_core::{Entry, HardState, Index};

use crate::batch::{Op, WriteBatch};
use crate::error::Result;
use crate::{GroupId, GroupState, LogStore};

#[derive(Clone, Debug)]
struct MemGroup {
    first_index: Index,
    entries: VecDeque<Entry>,
    hard_state: HardState,
}

impl MemGroup {
    fn new() -> Self {
        MemGroup {
            first_index: 1,
            entries: VecDeque::new(),
            hard_state: HardState::default(),
        }
    }

    fn last_index(&self) -> Index {
        self.first_index + self.entries.len() as Index - 1
    }

    fn state(&self) -> GroupState {
        GroupState {
            first_index: self.first_index,
            last_index: self.last_index(),
            hard_state: self.hard_state,
        }
    }

    fn truncate(&mut self, from: Index) {
        let keep = from.saturating_sub(self.first_index) as usize;
        self.entries.truncate(keep);
    }
}

#[derive(Clone, Debug, Default)]
struct MemState {
    groups: BTreeMap<GroupId, MemGroup>,
}

impl MemState {
    /// Applies a validated op.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { group, entries } => {
                let g = self.groups.entry(*group).or_insert_with(MemGroup::new);
                g.truncate(entries[0].index);
                g.entries.extend(entries.iter().cloned());
            }
            Op::HardState { group, hard_state } => {
                self.groups
                    .entry(*group)
                    .or_insert_with(MemGroup::new)
                    .hard_state = *hard_state;
            }
            Op::Truncate { group, from } => {
                self.groups
                    .entry(*group)
                    .or_insert_with(MemGroup::new)
                    .truncate(*from);
            }
            Op::Purge { group, first_index } => {
                let g = self.groups.entry(*group).or_insert_with(MemGroup::new);
                if *first_index > g.first_index {
                    let drop = ((first_index - g.first_index) as usize).min(g.entries.len());
                    g.entries.drain(..drop);
                    g.first_index = *first_index;
                }
            }
            Op::RemoveGroup { group } => {
                self.groups.remove(group);
            }
        }
    }

    fn apply_batch(&mut self, batch: &WriteBatch) {
        for op in batch.ops() {
            self.apply(op);
        }
    }
}

/// An in-memory log store. `append` stages, `sync` makes durable, and
/// [`MemLog::crash`] forgets everything staged since the last sync, as a
/// machine crash would.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    durable: MemState,
    visible: MemState,
    staged: VecDeque<WriteBatch>,
    syncs: u64,
}

impl MemLog {
    /// An empty store.
    pub fn new() -> Self {
        MemLog::default()
    }

    /// Makes only the oldest staged batch durable (a simulated disk that
    /// completes writes one at a time). Returns whether there was one.
    pub fn sync_one(&mut self) -> bool {
        match self.staged.pop_front() {
            Some(b) => {
                self.durable.apply_batch(&b);
                self.syncs += 1;
                true
            }
            None => false,
        }
    }

    /// Batches staged but not yet durable.
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Forgets every staged batch: what a crash leaves.
    pub fn crash(&mut self) {
        self.staged.clear();
        self.visible = self.durable.clone();
    }

    /// An fsync that failed, as Linux reports one: of the staged batches,
    /// only the first `keep` reached the disk (a torn group commit when
    /// `keep > 0`), the rest are gone from the disk for good (the kernel
    /// dropped the dirty pages), yet the visible state still shows them,
    /// as a process's memory would. A later [`LogStore::sync`] succeeds
    /// without bringing them back: this is the trap a store must not fall
    /// into (the PostgreSQL "fsyncgate" lesson).
    pub fn lose_unsynced(&mut self, keep: usize) {
        for _ in 0..keep {
            if !self.sync_one() {
                break;
            }
        }
        self.staged.clear();
    }

    /// Number of syncs that made something durable.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Every entry of `group`, in order (a convenience for restarts).
    pub fn all_entries(&self, group: GroupId) -> Vec<Entry> {
        self.visible
            .groups
            .get(&group)
            .map(|g| g.entries.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl LogStore for MemLog {
    fn append(&mut self, batch: &WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.validate(|g| self.group(g))?;
        self.visible.apply_batch(batch);
        self.staged.push_back(batch.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        while self.sync_one() {}
        Ok(())
    }

    fn entries(
        &mut self,
        group: GroupId,
        low: Index,
        high: Index,
        max_bytes: Option<usize>,
    ) -> Result<Vec<Entry>> {
        GroupState::check_range(self.group(group), group, low, high)?;
        let g = &self.visible.groups[&group];
        let picked = (low..high).map(|i| g.entries[(i - g.first_index) as usize].clone());
        Ok(crate::within_bytes(picked, max_bytes))
    }

    fn group(&self, group: GroupId) -> Option<GroupState> {
        self.visible.groups.get(&group).map(MemGroup::state)
    }

    fn groups(&self) -> Vec<GroupId> {
        self.visible.groups.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::EntryKind;

    fn e(index: Index, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal(vec![index as u8].into()),
        }
    }

    #[test]
    fn crash_loses_exactly_the_unsynced_batches() {
        let mut m = MemLog::new();
        let mut b = WriteBatch::new();
        b.append(1, vec![e(1, 1), e(2, 1)]);
        m.append(&b).unwrap();
        m.sync().unwrap();
        let mut b = WriteBatch::new();
        b.append(1, vec![e(3, 1)]);
        m.append(&b).unwrap();
        let mut b = WriteBatch::new();
        b.append(1, vec![e(4, 1)]);
        m.append(&b).unwrap();
        assert_eq!(m.group(1).unwrap().last_index, 4);
        assert!(m.sync_one());
        m.crash();
        assert_eq!(m.group(1).unwrap().last_index, 3);
        assert_eq!(m.entries(1, 1, 4, None).unwrap().len(), 3);
    }

    #[test]
    fn a_failed_sync_loses_the_staged_batches_for_good() {
        let mut m = MemLog::new();
        for i in 1..=3 {
            let mut b = WriteBatch::new();
            b.append(1, vec![e(i, 1)]);
            m.append(&b).unwrap();
        }
        // The first batch reached the disk; the others did not.
        m.lose_unsynced(1);
        // Memory still believes in all three ...
        assert_eq!(m.group(1).unwrap().last_index, 3);
        // ... a later sync "succeeds" ...
        m.sync().unwrap();
        // ... but a crash shows what the disk really holds.
        m.crash();
        assert_eq!(m.group(1).unwrap().last_index, 1);
    }
}
