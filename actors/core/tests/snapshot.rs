//! §7 "Log compaction" of "In Search of an Understandable Consensus
//! Algorithm (Extended Version)" (Ongaro & Ousterhout, 2014): snapshots,
//! compaction and InstallSnapshot. Each test asserts the exact output of
//! the step. The snapshot's data travels outside the core; these tests
//! only see its (index, term).

mod common;

use common::{config, msg, persist};
use synod_core::{
    AppendResponse, CompactError, Entry, EntryKind, HardState, Membership, Message, MessageBody,
    ProgressState, Raft, Ready, RestoreError, Role, SnapshotInfo,
};

fn cmd(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal(format!("c{index}").into()),
    }
}

fn accepted(from: u64, to: u64, term: u64, match_index: u64) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index,
            epoch: 0,
            rejoining: false,
        }),
    )
}

/// Node 1 leads a three-node group in term 1 with entries 1..=10 (the
/// no-op and nine commands) committed and applied with node 2's help.
fn leader_with_ten_applied() -> Raft {
    let mut r = Raft::new(config(1, 3)).unwrap();
    while r.role() != Role::Candidate {
        r.tick();
    }
    let _ = persist(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    let _ = persist(&mut r);
    r.propose((0..9).map(|k| format!("c{}", k + 2).into()).collect())
        .unwrap();
    let _ = persist(&mut r);
    r.step(accepted(2, 1, 1, 10));
    let _ = persist(&mut r);
    assert_eq!((r.log().committed(), r.log().applied()), (10, 10));
    r
}

#[test]
fn s7_compaction_drops_applied_entries_only() {
    let mut r = leader_with_ten_applied();
    assert_eq!(
        r.compact(11),
        Err(CompactError::NotApplied {
            index: 11,
            applied: 10
        })
    );
    r.compact(6).unwrap();
    assert_eq!(r.log().first_index(), 7);
    assert_eq!(r.log().snapshot(), SnapshotInfo { index: 6, term: 1 });
    assert_eq!(
        r.compact(5),
        Err(CompactError::AlreadyCompacted {
            index: 5,
            offset: 6
        })
    );
}

#[test]
fn s7_leader_sends_a_snapshot_when_the_follower_needs_compacted_entries() {
    let mut r = leader_with_ten_applied();
    r.compact(8).unwrap();
    // Node 3 answers the election's probe (at index 0): it holds nothing,
    // and everything it needs next is behind the snapshot.
    r.step(accepted(3, 1, 1, 0));
    let rd = persist(&mut r);
    let snapshot = SnapshotInfo { index: 8, term: 1 };
    assert_eq!(
        rd.messages,
        vec![msg(
            1,
            3,
            1,
            MessageBody::Snapshot {
                snapshot,
                membership: Membership::with_voters([1, 2, 3]),
                epoch: 0,
            }
        )]
    );
    let pr = r.progress(3).unwrap();
    assert_eq!(pr.state, ProgressState::Snapshot { pending: 8 });
    assert!(pr.is_paused(), "nothing else goes out during the transfer");
    // Heartbeat answers do not end the transfer.
    r.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round: 0,
        },
    ));
    assert!(r.progress(3).unwrap().is_paused());
    // The follower's answer does: it then streams from after the snapshot.
    r.step(accepted(3, 1, 1, 8));
    let pr = r.progress(3).unwrap();
    assert_eq!((pr.state, pr.match_index), (ProgressState::Replicate, 8));
    let rd = persist(&mut r);
    match &rd.messages[..] {
        [Message {
            to: 3,
            body:
                MessageBody::Append {
                    prev_log_index: 8,
                    entries,
                    ..
                },
            ..
        }] => assert_eq!(entries.len(), 2),
        other => panic!("expected an append after the snapshot, got {other:?}"),
    }
}

#[test]
fn s7_reported_transfer_returns_the_follower_to_probing() {
    let mut r = leader_with_ten_applied();
    r.compact(8).unwrap();
    r.step(accepted(3, 1, 1, 0));
    let _ = persist(&mut r);
    r.report_snapshot(3, 8, true);
    let pr = r.progress(3).unwrap();
    assert_eq!((pr.state, pr.next_index), (ProgressState::Probe, 9));
    assert!(pr.is_paused(), "resumes at the next heartbeat answer");
    r.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round: 0,
        },
    ));
    let rd = persist(&mut r);
    // Exactly the probe after the snapshot, with what follows it (9, 10).
    assert_eq!(
        rd.messages,
        vec![msg(
            1,
            3,
            1,
            MessageBody::Append {
                prev_log_index: 8,
                prev_log_term: 1,
                entries: vec![cmd(9, 1), cmd(10, 1)],
                leader_commit: 10,
                epoch: 0,
            }
        )]
    );
    // A failed transfer probes from the known match: the snapshot again.
    let mut r = leader_with_ten_applied();
    r.compact(8).unwrap();
    r.step(accepted(3, 1, 1, 0));
    let _ = persist(&mut r);
    r.report_snapshot(3, 8, false);
    r.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round: 0,
        },
    ));
    let rd = persist(&mut r);
    assert_eq!(
        rd.messages,
        vec![msg(
            1,
            3,
            1,
            MessageBody::Snapshot {
                snapshot: SnapshotInfo { index: 8, term: 1 },
                membership: Membership::with_voters([1, 2, 3]),
                epoch: 0,
            }
        )]
    );
}

/// A follower (node 2) in term 3 whose log is 1..=5 of term 1, 6..=7 of
/// term 2, nothing committed.
fn follower() -> Raft {
    let entries = vec![
        cmd(1, 1),
        cmd(2, 1),
        cmd(3, 1),
        cmd(4, 1),
        cmd(5, 1),
        cmd(6, 2),
        cmd(7, 2),
    ];
    let hs = HardState {
        term: 3,
        vote: None,
        commit: 0,
    };
    Raft::restore(config(2, 3), hs, entries, 0).unwrap()
}

#[test]
fn s7_follower_with_a_conflicting_log_discards_it_for_the_snapshot() {
    let mut r = follower();
    let snapshot = SnapshotInfo { index: 6, term: 3 };
    r.step(msg(
        1,
        2,
        3,
        MessageBody::Snapshot {
            snapshot,
            membership: Membership::with_voters([1, 2, 3]),
            epoch: 0,
        },
    ));
    let rd = r.ready();
    assert_eq!(rd.snapshot, Some(snapshot));
    assert!(rd.entries.is_empty());
    assert!(rd.committed_entries.is_empty(), "the snapshot is the state");
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 3,
            vote: None,
            commit: 6
        })
    );
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages, vec![accepted(2, 1, 3, 6)]);
    assert_eq!(
        (
            r.log().first_index(),
            r.log().last_index(),
            r.log().applied()
        ),
        (7, 6, 6)
    );
}

#[test]
fn s7_follower_holding_the_last_entry_keeps_the_suffix() {
    let mut r = follower();
    let snapshot = SnapshotInfo { index: 5, term: 1 };
    r.step(msg(
        1,
        2,
        3,
        MessageBody::Snapshot {
            snapshot,
            membership: Membership::with_voters([1, 2, 3]),
            epoch: 0,
        },
    ));
    let rd = persist(&mut r);
    assert_eq!(rd.snapshot, None);
    assert_eq!(r.log().last_index(), 7, "entries after it are retained");
    assert_eq!(r.log().committed(), 5);
    assert_eq!(rd.committed_entries.len(), 5, "applied from the log");
    assert_eq!(rd.persisted_messages, vec![accepted(2, 1, 3, 5)]);
}

#[test]
fn s7_stale_snapshot_is_acknowledged_with_the_commit_index() {
    let mut r = follower();
    r.step(msg(
        1,
        2,
        3,
        MessageBody::Heartbeat {
            commit: 7,
            round: 0,
        },
    ));
    let _ = persist(&mut r);
    assert_eq!(r.log().committed(), 7);
    let snapshot = SnapshotInfo { index: 4, term: 1 };
    r.step(msg(
        1,
        2,
        3,
        MessageBody::Snapshot {
            snapshot,
            membership: Membership::with_voters([1, 2, 3]),
            epoch: 0,
        },
    ));
    let rd = persist(&mut r);
    assert_eq!(rd.snapshot, None);
    assert_eq!(rd.persisted_messages, vec![accepted(2, 1, 3, 7)]);
}

#[test]
fn s7_restart_keeps_only_a_suffix_that_continues_the_snapshot() {
    let hs = HardState {
        term: 3,
        vote: Some(1),
        commit: 4,
    };
    let stored = vec![cmd(3, 1), cmd(4, 1), cmd(5, 2), cmd(6, 2)];
    // The stored entry at the snapshot's index has its term: keep 5..=6.
    let r = Raft::restore_from_snapshot(
        config(2, 3),
        hs,
        SnapshotInfo { index: 4, term: 1 },
        stored.clone(),
        4,
    )
    .unwrap();
    assert_eq!((r.log().first_index(), r.log().last_index()), (5, 6));
    assert_eq!((r.log().committed(), r.log().applied()), (4, 4));
    // It has another term: the suffix was divergent, drop it.
    let r = Raft::restore_from_snapshot(
        config(2, 3),
        hs,
        SnapshotInfo { index: 4, term: 2 },
        stored.clone(),
        4,
    )
    .unwrap();
    assert_eq!((r.log().first_index(), r.log().last_index()), (5, 4));
    // The snapshot is past everything stored (its install was not yet
    // durable): the log continues after it; its term is adopted.
    let r = Raft::restore_from_snapshot(
        config(2, 3),
        hs,
        SnapshotInfo { index: 9, term: 4 },
        stored,
        9,
    )
    .unwrap();
    assert_eq!(
        (r.log().last_index(), r.log().committed(), r.term()),
        (9, 9, 4)
    );
    assert_eq!(r.vote(), None, "a higher term carries no vote");
    // A stored log that starts after a gap is an error.
    let err = Raft::restore_from_snapshot(
        config(2, 3),
        hs,
        SnapshotInfo { index: 2, term: 1 },
        vec![cmd(5, 2)],
        2,
    )
    .unwrap_err();
    assert_eq!(
        err,
        RestoreError::SnapshotGap {
            first: 5,
            snapshot_index: 2
        }
    );
}

// ---------------------------------------------------------------------
// Regressions from an independent review of snapshots and compaction.
// Each failed on the code as first written.
// ---------------------------------------------------------------------

/// A state machine that durably applied through 8 restarts; its hard
/// state's commit (5) lagged, which the Ready contract allows (step 4 may
/// run before the write of step 2 is durable). Entries 6..=8 must not be
/// handed out again (the core once clamped `applied` down to the commit).
#[test]
fn restore_does_not_reapply_entries_the_state_machine_already_applied() {
    let entries: Vec<Entry> = (1..=10).map(|i| cmd(i, 1)).collect();
    let hs = HardState {
        term: 1,
        vote: None,
        commit: 5,
    };
    let mut r = Raft::restore(config(2, 3), hs, entries, 8).unwrap();
    r.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 10,
            round: 0,
        },
    ));
    let rd = persist(&mut r);
    let first = rd.committed_entries.first().map(|e| e.index);
    assert_eq!(
        first,
        Some(9),
        "entries 6..=8 were already applied before the restart (core applied = {})",
        r.log().applied()
    );
}

/// The leader's last entry of the conflicting term sits exactly at its
/// compaction point. `last_index_of_term` once ignored the offset, so the
/// hint fell back to the follower's first index of that term (1) and the
/// leader shipped a whole snapshot where an append after index 5 would do.
#[test]
fn conflict_term_ending_at_the_offset_does_not_force_a_snapshot() {
    // Node 1: 1..=5 of term 1, 6..=8 of term 2; it now campaigns in term 3.
    let mut entries: Vec<Entry> = (1..=5).map(|i| cmd(i, 1)).collect();
    entries.extend((6..=8).map(|i| cmd(i, 2)));
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 0,
    };
    let mut r = Raft::restore(config(1, 3), hs, entries, 0).unwrap();
    while r.role() != Role::Candidate {
        r.tick();
    }
    let _ = persist(&mut r);
    r.step(msg(2, 1, 3, MessageBody::VoteResponse { granted: true }));
    assert_eq!(r.role(), Role::Leader);
    let _ = persist(&mut r); // no-op 9 of term 3; probes at prev 8 go out
    r.step(msg(
        2,
        1,
        3,
        MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index: 9,
            epoch: 0,
            rejoining: false,
        }),
    ));
    let _ = persist(&mut r);
    assert_eq!(r.log().applied(), 9);
    r.compact(5).unwrap();
    // Node 3 holds 1..=8 of term 1 (6..=8 from a deposed term-1 leader).
    r.step(msg(
        3,
        1,
        3,
        MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index: 8,
            conflict_term: Some(1),
            conflict_index: 1,
        }),
    ));
    let rd = persist(&mut r);
    assert!(
        !matches!(r.progress(3).unwrap().state, ProgressState::Snapshot { .. }),
        "snapshot sent although entry 5 (term 1) is the offset: {:?}",
        rd.messages
    );
    // Not only no snapshot (which no message at all would satisfy): the
    // exact append after index 5, carrying the leader's 6..=9.
    let mut suffix: Vec<Entry> = (6..=8).map(|i| cmd(i, 2)).collect();
    suffix.push(Entry {
        index: 9,
        term: 3,
        kind: EntryKind::Noop,
    });
    assert_eq!(
        rd.messages,
        vec![msg(
            1,
            3,
            3,
            MessageBody::Append {
                prev_log_index: 5,
                prev_log_term: 1,
                entries: suffix,
                leader_commit: 9,
                epoch: 0,
            }
        )]
    );
}

/// A late report of an earlier transfer must not end the one in flight
/// (`report_snapshot` once did not say which transfer it reported).
#[test]
fn late_report_of_an_earlier_transfer_does_not_end_the_current_one() {
    let mut r = leader_with_ten_applied();
    r.compact(8).unwrap();
    r.step(accepted(3, 1, 1, 0)); // transfer A: snapshot 8
    let _ = persist(&mut r);
    r.step(accepted(3, 1, 1, 8)); // node 3 installed it (report of A still on its way)
    let _ = persist(&mut r);
    r.propose(vec!["x".into(), "y".into()]).unwrap(); // 11, 12
    let _ = persist(&mut r);
    r.step(accepted(2, 1, 1, 12));
    let _ = persist(&mut r);
    r.compact(12).unwrap();
    // Node 3 lost the appends after 8: its rejection sends snapshot 12 (transfer B).
    r.step(msg(
        3,
        1,
        1,
        MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index: 10,
            conflict_term: None,
            conflict_index: 9,
        }),
    ));
    let _ = persist(&mut r);
    assert_eq!(
        r.progress(3).unwrap().state,
        ProgressState::Snapshot { pending: 12 }
    );
    r.report_snapshot(3, 8, true); // the late report of transfer A
    assert_eq!(
        r.progress(3).unwrap().state,
        ProgressState::Snapshot { pending: 12 },
        "transfer B is still in flight"
    );
}

/// A follower that restarted in the same term with less than it had
/// acknowledged (its log replaced by a snapshot whose install write was
/// lost in a crash) once made the leader re-send the same probe on every
/// rejection (`become_probe` clamped next to match + 1).
#[test]
fn rejection_below_match_does_not_loop() {
    let mut r = leader_with_ten_applied();
    r.propose(vec!["x".into()]).unwrap(); // 11
    let _ = persist(&mut r);
    // Node 2 (match 10) now holds only 1..=5.
    r.step(msg(
        2,
        1,
        1,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round: 0,
        },
    ));
    let rd = persist(&mut r);
    let prev = |rd: &Ready| {
        rd.messages
            .iter()
            .filter_map(|m| match m.body {
                MessageBody::Append { prev_log_index, .. } if m.to == 2 => Some(prev_log_index),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let p = prev(&rd);
    let rejected_index = *p.last().unwrap();
    // Node 2 rejects: its log ends at 5.
    r.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index,
            conflict_term: None,
            conflict_index: 6,
        }),
    ));
    let rd = persist(&mut r);
    // The leader believes it (this probe was re-sent at the old match + 1
    // forever) and probes where the follower's log ends.
    assert_eq!(prev(&rd), vec![5], "{:?}", rd.messages);
    assert_eq!(r.progress(2).unwrap().match_index, 5);
}
