//! Property test: the file-backed WAL behaves exactly like the in-memory
//! store under random appends (with overwrites), truncations, purges,
//! group removals, hard states, syncs, and crash-reopens, with tiny
//! segments so that rotation and segment deletion happen all the time.

mod common;

use common::{dump, entry};
use proptest::prelude::*;
use synod_core::HardState;
use synod_storage::{GroupState, LogStore, MemLog, StorageError, Wal, WalOptions, WriteBatch};

#[derive(Clone, Debug)]
enum Step {
    /// Append `count` entries to `group`, starting `back` entries before
    /// the end (0 = continue the log; >0 overwrites a suffix), or with
    /// `gap` one index past the end (which must be refused).
    Append {
        group: u64,
        back: u64,
        count: u64,
        term_bump: u64,
        size: usize,
        gap: bool,
    },
    HardState {
        group: u64,
        term: u64,
    },
    /// Truncate `back` entries before the end, or with `below` just
    /// below the first index (which must be refused once anything was
    /// purged).
    Truncate {
        group: u64,
        back: u64,
        below: bool,
    },
    Purge {
        group: u64,
        ahead: u64,
    },
    Remove {
        group: u64,
    },
    Sync,
    /// Drop the log without syncing and open it again: what a crash after
    /// the last sync leaves.
    CrashReopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (1..4u64, 0..3u64, 1..6u64, 0..2u64, 0..300usize, prop::bool::weighted(0.1)).prop_map(
            |(group, back, count, term_bump, size, gap)| Step::Append { group, back, count, term_bump, size, gap }
        ),
        2 => (1..4u64, 1..50u64).prop_map(|(group, term)| Step::HardState { group, term }),
        1 => (1..4u64, 0..4u64, prop::bool::weighted(0.3))
            .prop_map(|(group, back, below)| Step::Truncate { group, back, below }),
        2 => (1..4u64, 0..12u64).prop_map(|(group, ahead)| Step::Purge { group, ahead }),
        1 => (1..4u64).prop_map(|group| Step::Remove { group }),
        4 => Just(Step::Sync),
        1 => Just(Step::CrashReopen),
    ]
}

fn options() -> WalOptions {
    WalOptions {
        segment_size: 4096,
        cache_bytes: 2048,
        ..WalOptions::default()
    }
}

/// Builds the batch for a step from the model's current state, or `None`
/// when the step does not apply.
fn batch_for(step: &Step, model: &MemLog, terms: &mut [u64; 4]) -> Option<WriteBatch> {
    let mut b = WriteBatch::new();
    match *step {
        Step::Append {
            group,
            back,
            count,
            term_bump,
            size,
            gap,
        } => {
            let s = model.group(group).unwrap_or_default();
            let (first, last) = if model.group(group).is_some() {
                (s.first_index, s.last_index)
            } else {
                (1, 0)
            };
            let start = if gap {
                last + 2
            } else {
                (last + 1).saturating_sub(back).max(first)
            };
            terms[group as usize] += term_bump;
            let t = terms[group as usize];
            let entries = (start..start + count)
                .map(|i| entry(group, i, t, size))
                .collect();
            b.append(group, entries);
        }
        Step::HardState { group, term } => {
            b.set_hard_state(
                group,
                HardState {
                    term,
                    vote: Some(term % 3 + 1),
                    commit: term / 2,
                },
            );
        }
        Step::Truncate { group, back, below } => {
            let s = model.group(group)?;
            let from = if below && s.first_index > 1 {
                s.first_index - 1
            } else {
                (s.last_index + 1).saturating_sub(back).max(s.first_index)
            };
            b.truncate(group, from);
        }
        Step::Purge { group, ahead } => {
            let s = model.group(group)?;
            b.purge(group, s.first_index + ahead);
        }
        Step::Remove { group } => {
            model.group(group)?;
            b.remove_group(group);
        }
        Step::Sync | Step::CrashReopen => return None,
    }
    Some(b)
}

/// Why a step must be refused.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    Gap { index: u64, last_index: u64 },
    Compacted { index: u64, first_index: u64 },
}

impl Refusal {
    fn is(&self, e: &StorageError) -> bool {
        match (*self, e) {
            (
                Refusal::Gap { index, last_index },
                &StorageError::Gap {
                    index: i,
                    last_index: l,
                    ..
                },
            ) => (i, l) == (index, last_index),
            (
                Refusal::Compacted { index, first_index },
                &StorageError::Compacted {
                    index: i,
                    first_index: f,
                    ..
                },
            ) => (i, f) == (index, first_index),
            _ => false,
        }
    }
}

/// What a step must do to its group, worked out here from the step and
/// the group's state before it, by arithmetic of its own: the stores share
/// `WriteBatch::validate`, so comparing one store's verdict with the
/// other's compared that code with itself. `Ok` holds the group's state
/// after the step (`None`: removed).
fn expected(step: &Step, before: Option<GroupState>) -> Result<Option<GroupState>, Refusal> {
    let mut s = before.unwrap_or(GroupState {
        first_index: 1,
        last_index: 0,
        hard_state: HardState::default(),
    });
    match *step {
        Step::Append {
            back, count, gap, ..
        } => {
            if gap {
                return Err(Refusal::Gap {
                    index: s.last_index + 2,
                    last_index: s.last_index,
                });
            }
            let start = (s.last_index + 1).saturating_sub(back).max(s.first_index);
            s.last_index = start + count - 1;
        }
        Step::HardState { term, .. } => {
            s.hard_state = HardState {
                term,
                vote: Some(term % 3 + 1),
                commit: term / 2,
            };
        }
        Step::Truncate { back, below, .. } => {
            if below && s.first_index > 1 {
                return Err(Refusal::Compacted {
                    index: s.first_index - 1,
                    first_index: s.first_index,
                });
            }
            let from = (s.last_index + 1).saturating_sub(back).max(s.first_index);
            s.last_index = s.last_index.min(from - 1);
        }
        Step::Purge { ahead, .. } => {
            let first_index = s.first_index + ahead;
            s.last_index = s.last_index.max(first_index - 1);
            s.first_index = first_index;
        }
        Step::Remove { .. } => return Ok(None),
        Step::Sync | Step::CrashReopen => unreachable!("no batch"),
    }
    Ok(Some(s))
}

fn group_of(step: &Step) -> u64 {
    match *step {
        Step::Append { group, .. }
        | Step::HardState { group, .. }
        | Step::Truncate { group, .. }
        | Step::Purge { group, .. }
        | Step::Remove { group } => group,
        Step::Sync | Step::CrashReopen => unreachable!("no group"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_the_model(steps in prop::collection::vec(step(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options()).unwrap();
        let mut model = MemLog::new();
        let mut terms = [1u64; 4];
        // Batches appended since the last sync: a crash may keep any prefix
        // of them (the log is free to make more durable than asked, e.g.
        // when a segment fills up), but never less than what was synced.
        let mut unsynced: Vec<WriteBatch> = Vec::new();
        for s in &steps {
            match s {
                Step::Sync => {
                    wal.sync().unwrap();
                    model.sync().unwrap();
                    unsynced.clear();
                }
                Step::CrashReopen => {
                    drop(wal);
                    wal = Wal::open(dir.path(), options()).unwrap();
                    model.crash();
                    let recovered = dump(&mut wal);
                    let mut kept = 0;
                    while dump(&mut model) != recovered && kept < unsynced.len() {
                        model.append(&unsynced[kept]).unwrap();
                        model.sync().unwrap();
                        kept += 1;
                    }
                    prop_assert_eq!(&recovered, &dump(&mut model), "not a prefix of the batches");
                    unsynced.clear();
                    // Terms must not go back below what survived.
                    for g in 1..4u64 {
                        if let Some(st) = model.group(g) {
                            if st.last_index >= st.first_index {
                                let t = model.term(g, st.last_index).unwrap();
                                terms[g as usize] = terms[g as usize].max(t);
                            }
                        }
                    }
                }
                other => {
                    let Some(b) = batch_for(other, &model, &mut terms) else { continue };
                    let group = group_of(other);
                    let before = model.group(group);
                    let want = expected(other, before);
                    let in_model = model.append(&b);
                    let got = wal.append(&b);
                    match &want {
                        Ok(after) => {
                            prop_assert!(in_model.is_ok() && got.is_ok(),
                                "{:?} refused: model {:?}, wal {:?}", other, in_model, got);
                            prop_assert_eq!(wal.group(group), *after, "{:?}", other);
                            prop_assert_eq!(model.group(group), *after, "{:?}", other);
                            unsynced.push(b);
                        }
                        Err(refusal) => {
                            for (store, r) in [("model", &in_model), ("wal", &got)] {
                                prop_assert!(r.as_ref().is_err_and(|e| refusal.is(e)),
                                    "{:?}: {} answered {:?}, expected {:?}", other, store, r, refusal);
                            }
                            prop_assert_eq!(wal.group(group), before, "a refusal changed the log");
                        }
                    }
                }
            }
            prop_assert_eq!(dump(&mut wal), dump(&mut model));
        }
        wal.sync().unwrap();
        model.sync().unwrap();
        drop(wal);
        let mut wal = Wal::open(dir.path(), options()).unwrap();
        prop_assert_eq!(dump(&mut wal), dump(&mut model));
    }
}

#[test]
fn appends_refused_by_validation_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    let mut b = WriteBatch::new();
    b.append(1, vec![entry(1, 1, 1, 10)]);
    wal.append(&b).unwrap();
    let before = dump(&mut wal);
    let mut b = WriteBatch::new();
    b.append(2, vec![entry(2, 1, 1, 10)]);
    b.append(1, vec![entry(1, 5, 1, 10)]); // gap: whole batch refused
    assert!(matches!(wal.append(&b), Err(StorageError::Gap { .. })));
    assert_eq!(dump(&mut wal), before);
}

#[test]
fn reads_report_compacted_and_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    let mut b = WriteBatch::new();
    b.append(1, (1..=10).map(|i| entry(1, i, 1, 10)).collect());
    b.purge(1, 4);
    wal.append(&b).unwrap();
    wal.sync().unwrap();
    assert!(matches!(
        wal.entries(1, 3, 5, None),
        Err(StorageError::Compacted { first_index: 4, .. })
    ));
    assert!(matches!(
        wal.entries(1, 5, 12, None),
        Err(StorageError::Unavailable { last_index: 10, .. })
    ));
    assert_eq!(wal.entries(1, 4, 11, Some(1)).unwrap().len(), 1);
    assert_eq!(wal.term(1, 7).unwrap(), 1);
}
