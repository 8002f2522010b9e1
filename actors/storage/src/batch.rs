//! A write batch: operations on many groups that become durable together.

use std::collections::BTreeMap;

use synod_core::{Entry, HardState, Index};

use crate::error::{Result, StorageError};
use crate::{GroupId, GroupState};

/// Indexes above this are refused: far beyond any real log, and it keeps
/// index arithmetic free of overflow.
pub const MAX_INDEX: Index = 1 << 62;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Appends entries with consecutive indexes. If the first index is at
    /// or before the group's last index, the log is first truncated from
    /// there (a follower overwriting a conflicting suffix, §5.3).
    Append {
        /// The group.
        group: GroupId,
        /// Entries, consecutive and non-empty.
        entries: Vec<Entry>,
    },
    /// Replaces the group's hard state.
    HardState {
        /// The group.
        group: GroupId,
        /// Its new hard state.
        hard_state: HardState,
    },
    /// Removes every entry at or after `from`.
    Truncate {
        /// The group.
        group: GroupId,
        /// First index removed.
        from: Index,
    },
    /// Drops every entry before `first_index` (they are covered by a
    /// snapshot). `first_index` may lie past the last entry: the log then
    /// becomes empty and continues at `first_index` (a follower that
    /// installed a snapshot ahead of its log).
    Purge {
        /// The group.
        group: GroupId,
        /// The new first index.
        first_index: Index,
    },
    /// Forgets the group: its entries and hard state.
    RemoveGroup {
        /// The group.
        group: GroupId,
    },
}

impl Op {
    /// The group the operation is about.
    pub fn group(&self) -> GroupId {
        match self {
            Op::Append { group, .. }
            | Op::HardState { group, .. }
            | Op::Truncate { group, .. }
            | Op::Purge { group, .. }
            | Op::RemoveGroup { group } => *group,
        }
    }
}

/// Operations on any number of groups, applied in order and atomically:
/// after a crash either the whole batch is recovered or none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Appends `entries` to `group` (see [`Op::Append`]). Empty lists are
    /// ignored.
    pub fn append(&mut self, group: GroupId, entries: Vec<Entry>) -> &mut Self {
        if !entries.is_empty() {
            self.ops.push(Op::Append { group, entries });
        }
        self
    }

    /// Sets the hard state of `group`.
    pub fn set_hard_state(&mut self, group: GroupId, hard_state: HardState) -> &mut Self {
        self.ops.push(Op::HardState { group, hard_state });
        self
    }

    /// Removes entries of `group` from `from` on.
    pub fn truncate(&mut self, group: GroupId, from: Index) -> &mut Self {
        self.ops.push(Op::Truncate { group, from });
        self
    }

    /// Drops entries of `group` before `first_index`.
    pub fn purge(&mut self, group: GroupId, first_index: Index) -> &mut Self {
        self.ops.push(Op::Purge { group, first_index });
        self
    }

    /// Forgets `group` entirely.
    pub fn remove_group(&mut self, group: GroupId) -> &mut Self {
        self.ops.push(Op::RemoveGroup { group });
        self
    }

    /// Adds one operation.
    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// The operations in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of entries appended by the batch.
    pub fn entry_count(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Append { entries, .. } => entries.len(),
                _ => 0,
            })
            .sum()
    }

    /// Payload bytes appended by the batch.
    pub fn payload_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Append { entries, .. } => entries.iter().map(Entry::payload_len).sum(),
                _ => 0,
            })
            .sum()
    }

    /// Moves the operations of `other` to the end of this batch.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// The ops that make a group's stored log hold exactly what a Raft
    /// replica restored from a snapshot at `snapshot_index` kept, entries up
    /// to `kept_last`. A snapshot adopted just before a crash is durable,
    /// but the write that dropped the old log may not be: the store may
    /// still hold entries the snapshot covers (or nothing at all, starting
    /// at 1), or a suffix the replica dropped as divergent. Without this
    /// the replica's next append would not fit the store.
    pub fn realign(
        group: GroupId,
        stored: Option<GroupState>,
        snapshot_index: Index,
        kept_last: Index,
    ) -> WriteBatch {
        let (first, last) = stored.map_or((1, 0), |s| (s.first_index, s.last_index));
        let mut b = WriteBatch::new();
        if snapshot_index > 0 && first <= snapshot_index {
            b.purge(group, snapshot_index + 1);
        }
        if last > kept_last {
            b.truncate(group, kept_last + 1);
        }
        b
    }

    /// Checks that every operation applies cleanly, in order, on top of
    /// the groups as `current` describes them, without changing anything.
    /// Both log stores call it before staging a batch, so a bad batch never
    /// reaches the disk (where it would break recovery).
    pub(crate) fn validate(&self, current: impl Fn(GroupId) -> Option<GroupState>) -> Result<()> {
        // The effect of the earlier ops of this batch, per group.
        let mut shadow: BTreeMap<GroupId, Option<GroupState>> = BTreeMap::new();
        for op in &self.ops {
            let g = op.group();
            let state = *shadow.entry(g).or_insert_with(|| current(g));
            let new = validate_op(op, state)?;
            shadow.insert(g, new);
        }
        Ok(())
    }
}

/// The state of a group after `op`, or why `op` cannot apply.
pub(crate) fn validate_op(op: &Op, state: Option<GroupState>) -> Result<Option<GroupState>> {
    let fresh = GroupState {
        first_index: 1,
        last_index: 0,
        hard_state: HardState::default(),
    };
    match op {
        Op::Append { group, entries } => {
            let mut s = state.unwrap_or(fresh);
            let Some(head) = entries.first() else {
                return Err(StorageError::InvalidBatch {
                    group: *group,
                    reason: "an append of no entries".into(),
                });
            };
            let first = head.index;
            if first == 0
                || first
                    .checked_add(entries.len() as Index)
                    .is_none_or(|e| e > MAX_INDEX)
            {
                return Err(StorageError::InvalidBatch {
                    group: *group,
                    reason: format!("indexes must lie in 1..{MAX_INDEX}"),
                });
            }
            for (k, e) in entries.iter().enumerate() {
                if e.index != first + k as Index {
                    return Err(StorageError::InvalidBatch {
                        group: *group,
                        reason: format!(
                            "entry {} follows {}: indexes must be consecutive",
                            e.index,
                            first + k as Index - 1
                        ),
                    });
                }
                if k > 0 && e.term < entries[k - 1].term {
                    return Err(StorageError::InvalidBatch {
                        group: *group,
                        reason: format!("term decreases at index {}", e.index),
                    });
                }
            }
            if first < s.first_index {
                return Err(StorageError::Compacted {
                    group: *group,
                    index: first,
                    first_index: s.first_index,
                });
            }
            if first > s.last_index + 1 {
                return Err(StorageError::Gap {
                    group: *group,
                    index: first,
                    last_index: s.last_index,
                });
            }
            s.last_index = first + entries.len() as Index - 1;
            Ok(Some(s))
        }
        Op::HardState { hard_state, .. } => {
            let mut s = state.unwrap_or(fresh);
            s.hard_state = *hard_state;
            Ok(Some(s))
        }
        Op::Truncate { group, from } => {
            let mut s = state.unwrap_or(fresh);
            if *from == 0 || *from > MAX_INDEX {
                return Err(StorageError::InvalidBatch {
                    group: *group,
                    reason: format!("truncate index must lie in 1..{MAX_INDEX}"),
                });
            }
            if *from < s.first_index {
                return Err(StorageError::Compacted {
                    group: *group,
                    index: *from,
                    first_index: s.first_index,
                });
            }
            s.last_index = s.last_index.min(from - 1);
            Ok(Some(s))
        }
        Op::Purge { group, first_index } => {
            let mut s = state.unwrap_or(fresh);
            if *first_index == 0 || *first_index > MAX_INDEX {
                return Err(StorageError::InvalidBatch {
                    group: *group,
                    reason: format!("purge index must lie in 1..{MAX_INDEX}"),
                });
            }
            if *first_index > s.first_index {
                s.first_index = *first_index;
                s.last_index = s.last_index.max(first_index - 1);
            }
            Ok(Some(s))
        }
        Op::RemoveGroup { .. } => Ok(None),
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
            kind: EntryKind::Noop,
        }
    }

    #[test]
    fn validation_follows_earlier_ops_of_the_batch() {
        let mut b = WriteBatch::new();
        b.append(1, vec![e(1, 1), e(2, 1)]).append(1, vec![e(3, 1)]);
        assert!(b.validate(|_| None).is_ok());
        let mut b = WriteBatch::new();
        b.append(1, vec![e(1, 1)]).append(1, vec![e(3, 1)]);
        assert!(matches!(
            b.validate(|_| None),
            Err(StorageError::Gap { index: 3, .. })
        ));
        let mut b = WriteBatch::new();
        b.purge(1, 10).append(1, vec![e(5, 1)]);
        assert!(matches!(
            b.validate(|_| None),
            Err(StorageError::Compacted { index: 5, .. })
        ));
        let mut b = WriteBatch::new();
        b.purge(1, 10).append(1, vec![e(10, 1)]);
        assert!(b.validate(|_| None).is_ok());
    }

    #[test]
    fn realign_makes_the_store_continue_after_the_snapshot() {
        let stored = |first, last| {
            Some(GroupState {
                first_index: first,
                last_index: last,
                hard_state: HardState::default(),
            })
        };
        // Nothing stored (the install write was lost): the log must still
        // continue after the snapshot, or the next append is a gap.
        let b = WriteBatch::realign(1, None, 50, 50);
        assert_eq!(
            b.ops(),
            &[Op::Purge {
                group: 1,
                first_index: 51
            }]
        );
        let b = WriteBatch::realign(1, stored(1, 0), 50, 50);
        assert_eq!(
            b.ops(),
            &[Op::Purge {
                group: 1,
                first_index: 51
            }]
        );
        // Entries the snapshot covers, and a dropped divergent suffix.
        let b = WriteBatch::realign(1, stored(1, 60), 50, 50);
        assert_eq!(
            b.ops(),
            &[
                Op::Purge {
                    group: 1,
                    first_index: 51
                },
                Op::Truncate { group: 1, from: 51 }
            ]
        );
        // Already aligned, or no snapshot: nothing to do.
        assert!(WriteBatch::realign(1, stored(51, 60), 50, 60).is_empty());
        assert!(WriteBatch::realign(1, None, 0, 0).is_empty());
        // Whatever it returns applies cleanly, and the next append fits.
        for (st, snap, kept) in [
            (None, 50, 50),
            (stored(1, 60), 50, 55),
            (stored(3, 9), 50, 50),
        ] {
            let mut b = WriteBatch::realign(1, st, snap, kept);
            b.append(1, vec![e(kept + 1, 2)]);
            assert!(b.validate(|_| st).is_ok(), "{st:?} {snap} {kept}");
        }
    }

    #[test]
    fn bad_entry_runs_are_refused() {
        let mut b = WriteBatch::new();
        b.append(1, vec![e(1, 1), e(3, 1)]);
        assert!(matches!(
            b.validate(|_| None),
            Err(StorageError::InvalidBatch { .. })
        ));
        let mut b = WriteBatch::new();
        b.append(1, vec![e(1, 2), e(2, 1)]);
        assert!(b.validate(|_| None).is_err());
    }
}
