//! A replica that lost its durable state (issue 8, finding 8): Raft assumes
//! a replica's term, vote and log survive (Figure 2, "Persistent state on
//! all servers"). These tests check what the core does when one did not:
//! the leader repairs the follower at its next heartbeat instead of waiting
//! for a write, and the replica restricts its votes until it caught up.

mod common;

use common::{
    accepted, config, flush, heartbeat_round, leader_with_commands, msg, persist, tick_until,
};
use synod_core::{AppendResponse, Message, MessageBody, ProgressState, Raft, Role};

#[test]
fn an_idle_leader_repairs_a_follower_that_lost_its_log_at_the_next_heartbeat() {
    let mut r = leader_with_commands(10);
    // Nothing new to send: the heartbeat carries min(commit, match) = 11.
    for _ in 0..2 {
        r.tick();
    }
    let rd = persist(&mut r);
    assert!(rd
        .messages
        .iter()
        .any(|m| m.to == 2 && matches!(m.body, MessageBody::Heartbeat { commit: 11, .. })));
    // Node 2 comes back on an empty disk: its log ends at 0.
    let mut wiped = Raft::new(config(2, 3)).unwrap();
    wiped.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 11,
            round: 0,
        },
    ));
    let rd = persist(&mut wiped);
    assert_eq!(
        rd.messages,
        vec![msg(
            2,
            1,
            1,
            MessageBody::HeartbeatResponse {
                lacking: Some(0),
                round: 0
            }
        )]
    );
    // The leader believes it at once and sends the log from the start.
    r.step(rd.messages[0].clone());
    assert_eq!(r.stats().followers_lost_state, 1);
    let pr = r.progress(2).unwrap();
    assert_eq!(
        (pr.state, pr.match_index, pr.next_index),
        (ProgressState::Probe, 0, 1)
    );
    let rd = persist(&mut r);
    match &rd.messages[..] {
        [Message {
            to: 2,
            body:
                MessageBody::Append {
                    prev_log_index: 0,
                    entries,
                    ..
                },
            ..
        }] => assert_eq!(entries.len(), 11),
        other => panic!("expected an append from the start, got {other:?}"),
    }
    // A follower that holds what it acknowledged reports nothing.
    r.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round: 0,
        },
    ));
    assert_eq!(r.stats().followers_lost_state, 1);
}

#[test]
fn a_rejoining_replica_votes_for_nobody_until_caught_up() {
    let mut c = config(2, 3);
    c.rejoining = true;
    let mut r = Raft::new(c).unwrap();
    assert!(r.rejoining());
    // Node 3 campaigns in term 5 with a log; node 2 may have voted in term 5
    // before it lost its disk: it must not vote (again).
    r.step(msg(
        3,
        2,
        5,
        MessageBody::Vote {
            last_log_index: 7,
            last_log_term: 4,
        },
    ));
    let rd = persist(&mut r);
    assert_eq!(
        rd.messages,
        vec![msg(2, 3, 5, MessageBody::VoteResponse { granted: false })]
    );
    assert_eq!(r.hard_state().vote, None);
    // Not even a candidate with an empty log: a follower that lagged from
    // the start has one too, and with this vote it could lead without the
    // entries this replica's old state helped commit (seen in the
    // black-box tests: two leaders in term 1).
    r.step(msg(
        1,
        2,
        6,
        MessageBody::Vote {
            last_log_index: 0,
            last_log_term: 0,
        },
    ));
    let rd = persist(&mut r);
    assert_eq!(
        rd.messages,
        vec![msg(2, 1, 6, MessageBody::VoteResponse { granted: false })]
    );
    assert!(rd.persisted_messages.is_empty());
    // Node 1 leads term 6 and sends its log (commit 3); once that is
    // durable here, the replica is caught up and votes normally.
    let entries: Vec<_> = (1..=3)
        .map(|i| synod_core::Entry {
            index: i,
            term: 6,
            kind: synod_core::EntryKind::Noop,
        })
        .collect();
    r.step(msg(
        1,
        2,
        6,
        MessageBody::Append {
            prev_log_index: 0,
            prev_log_term: 0,
            entries,
            leader_commit: 3,
            epoch: 0,
        },
    ));
    flush(&mut r);
    assert!(
        r.rejoining(),
        "holding the entries is not enough: no leader confirmed a rejoin index"
    );
    // The next heartbeat makes it ask the leader for one; its answer to
    // the heartbeat confirms no round (it forgot its term).
    r.step(msg(
        1,
        2,
        6,
        MessageBody::Heartbeat {
            commit: 3,
            round: 4,
        },
    ));
    let rd = persist(&mut r);
    assert!(rd.messages.contains(&msg(
        2,
        1,
        6,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round: 0
        }
    )));
    let id = rd
        .messages
        .iter()
        .find_map(|m| match m.body {
            MessageBody::ReadIndex { id, rejoin: true } => Some(id),
            _ => None,
        })
        .expect("a rejoin request");
    // An answer to some other request does nothing.
    r.step(msg(
        1,
        2,
        6,
        MessageBody::ReadIndexResponse {
            id: id.wrapping_add(1),
            index: Some(3),
        },
    ));
    assert!(r.rejoining());
    r.step(msg(
        1,
        2,
        6,
        MessageBody::ReadIndexResponse { id, index: Some(3) },
    ));
    assert!(!r.rejoining(), "it holds index 3 durably and committed");
    // Term 9, a candidate with a longer log: granted now (the leader's
    // lease has expired after an election timeout).
    for _ in 0..30 {
        r.tick();
        if r.role() != Role::Follower {
            break;
        }
    }
    r.step(msg(
        3,
        2,
        9,
        MessageBody::Vote {
            last_log_index: 4,
            last_log_term: 8,
        },
    ));
    let rd = persist(&mut r);
    assert!(rd.persisted_messages.contains(&msg(
        2,
        3,
        9,
        MessageBody::VoteResponse { granted: true }
    )));
}

#[test]
fn a_rejoining_replica_refuses_pre_votes_from_candidates_with_a_log() {
    let mut c = config(2, 3);
    c.pre_vote = true;
    c.rejoining = true;
    let mut r = Raft::new(c).unwrap();
    r.step(msg(
        3,
        2,
        1,
        MessageBody::PreVote {
            last_log_index: 7,
            last_log_term: 4,
        },
    ));
    let rd = persist(&mut r);
    assert_eq!(
        rd.messages,
        vec![msg(
            2,
            3,
            0,
            MessageBody::PreVoteResponse { granted: false }
        )]
    );
}

#[test]
fn a_rejoining_replica_never_campaigns() {
    // Some log survived (a crash before the catch-up): no self-vote.
    let mut c = config(1, 3);
    c.rejoining = true;
    let entries = vec![synod_core::Entry {
        index: 1,
        term: 1,
        kind: synod_core::EntryKind::Noop,
    }];
    let hs = synod_core::HardState {
        term: 1,
        vote: None,
        commit: 0,
    };
    let mut r = Raft::restore_from_snapshot(c, hs, synod_core::SnapshotInfo::default(), entries, 0)
        .unwrap();
    for _ in 0..1000 {
        r.tick();
    }
    // No time limit: without a leader to catch it up it never campaigns
    // and never votes for a candidate with a log (a later version with a
    // time limit could help elect a leader lacking acknowledged entries).
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.stats().elections, 0);
    assert!(r.rejoining());
    r.step(msg(
        2,
        1,
        5,
        MessageBody::Vote {
            last_log_index: 1,
            last_log_term: 1,
        },
    ));
    assert_eq!(r.hard_state().vote, None);
    // An empty log too: it does not campaign; only a replica that is not
    // rejoining (a node vouched new) does, and its election ends nothing
    // here. Elected, a leader's log defines the group: not rejoining.
    let mut c = config(1, 3);
    c.rejoining = true;
    let mut r = Raft::new(c).unwrap();
    for _ in 0..1000 {
        r.tick();
    }
    assert_eq!(r.stats().elections, 0);
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    assert_eq!(r.role(), Role::Leader);
    assert!(!r.rejoining());
}

#[test]
fn an_acknowledgement_of_the_lost_state_still_in_flight_never_counts() {
    let mut r = leader_with_commands(10);
    r.propose(vec![b"x".to_vec().into()]).unwrap();
    flush(&mut r);
    // Node 2's previous incarnation acknowledged entry 12 just before its
    // disk was replaced; the acknowledgement is still on its way.
    let stale = accepted(2, 1, 12);
    // The new incarnation asks for a rejoin index: the leader fences.
    r.step(msg(
        2,
        1,
        1,
        MessageBody::ReadIndex {
            id: 99,
            rejoin: true,
        },
    ));
    flush(&mut r);
    let pr = r.progress(2).unwrap();
    assert_eq!((pr.match_index, pr.epoch), (0, 1));
    assert_eq!(r.stats().followers_lost_state, 1, "the repair is reported");
    r.step(stale);
    assert_eq!(r.progress(2).unwrap().match_index, 0);
    assert_eq!(
        r.log().committed(),
        11,
        "the stale acknowledgement committed 12"
    );
    // A second request from the same incarnation does not fence again
    // (its catch-up would restart every time).
    r.step(msg(
        2,
        1,
        1,
        MessageBody::ReadIndex {
            id: 99,
            rejoin: true,
        },
    ));
    assert_eq!(r.progress(2).unwrap().epoch, 1);
    // The new incarnation's own acknowledgement, while it is rejoining,
    // moves replication along but counts toward no commit.
    r.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index: 12,
            epoch: 1,
            rejoining: true,
        }),
    ));
    assert_eq!(r.progress(2).unwrap().match_index, 12);
    assert_eq!(r.log().committed(), 11);
    // Node 3 holds entry 12 too: now a quorum does.
    r.step(accepted(3, 1, 12));
    assert_eq!(r.log().committed(), 12);
}

#[test]
fn a_rejoin_index_is_confirmed_by_a_quorum_without_the_requester() {
    let mut r = leader_with_commands(10);
    r.step(msg(
        2,
        1,
        1,
        MessageBody::ReadIndex {
            id: 5,
            rejoin: true,
        },
    ));
    let rd = persist(&mut r);
    let round = heartbeat_round(&rd, 3).expect("a round starts at once");
    let answered = |rd: &synod_core::Ready| {
        rd.messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::ReadIndexResponse { .. }))
    };
    assert!(!answered(&rd));
    // The requester's own answer to the round confirms nothing for it: a
    // stale leader could otherwise count a replica that forgot its term.
    r.step(msg(
        2,
        1,
        1,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round,
        },
    ));
    assert!(!answered(&persist(&mut r)));
    r.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round,
        },
    ));
    let rd = persist(&mut r);
    assert!(rd.messages.contains(&msg(
        1,
        2,
        1,
        MessageBody::ReadIndexResponse {
            id: 5,
            index: Some(11)
        }
    )));
}
