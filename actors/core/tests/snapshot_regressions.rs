//! Regressions from an independent review of snapshot and compaction
//! support (§7). Each failed on the code as first written.

use synod_core::{
    AppendResponse, Config, Entry, EntryKind, HardState, Message, MessageBody, ProgressState, Raft,
    Ready, Role,
};

fn config(id: u64, n: u64) -> Config {
    let mut c = Config::new(id, 1..=n);
    c.pre_vote = false;
    c
}

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn cmd(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal(format!("c{index}").into()),
    }
}

fn persist(r: &mut Raft) -> Ready {
    let rd = r.ready();
    if let Some((index, term)) = rd.persist_up_to() {
        r.on_persisted(index, term);
    }
    if let Some(last) = rd.committed_entries.last() {
        r.on_applied(last.index);
    }
    rd
}

/// A state machine that durably applied through 8 restarts; its hard
/// state's commit (5) lagged, which the Ready contract allows (step 4 may
/// run before the write of step 2 is durable). The core clamps `applied`
/// down to the stored commit and hands 6..=8 to the state machine again.
#[test]
fn restore_does_not_reapply_entries_the_state_machine_already_applied() {
    let entries: Vec<Entry> = (1..=10).map(|i| cmd(i, 1)).collect();
    let hs = HardState {
        term: 1,
        vote: None,
        commit: 5,
    };
    let mut r = Raft::restore(config(2, 3), hs, entries, 8).unwrap();
    r.step(msg(1, 2, 1, MessageBody::Heartbeat { commit: 10 }));
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
/// compaction point. `last_index_of_term` never looks at the offset, so the
/// hint falls back to the follower's first index of that term (1) and the
/// leader ships a whole snapshot where an append after index 5 would do.
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
        MessageBody::AppendResponse(AppendResponse::Accepted { match_index: 9 }),
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
}

fn accepted(from: u64, to: u64, term: u64, match_index: u64) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::AppendResponse(AppendResponse::Accepted { match_index }),
    )
}

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
    r
}

/// `report_snapshot` does not say which transfer it reports: a late report
/// of an earlier transfer ends the tracking of the one in flight.
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
/// lost; see the report) makes the leader re-send the same probe on every
/// rejection: `become_probe` clamps next to match + 1.
#[test]
fn rejection_below_match_does_not_loop() {
    let mut r = leader_with_ten_applied();
    r.propose(vec!["x".into()]).unwrap(); // 11
    let _ = persist(&mut r);
    // Node 2 (match 10) now holds only 1..=5.
    r.step(msg(2, 1, 1, MessageBody::HeartbeatResponse));
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
