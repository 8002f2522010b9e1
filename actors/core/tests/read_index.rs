//! ReadIndex (Raft thesis §6.4): a linearizable read without a log entry.
//! The leader records its commit index, confirms with one heartbeat round
//! that a quorum still follows it, and answers; a fresh leader first
//! commits an entry of its own term; a follower asks the leader.

mod common;

use common::{
    accepted, config, flush, heartbeat_round, leader_with_commands, msg, persist, tick_until,
};
use synod_core::{MessageBody, Raft, ReadError, ReadState, Role};

fn heartbeat_answer(from: u64, term: u64, round: u64) -> synod_core::Message {
    msg(
        from,
        1,
        term,
        MessageBody::HeartbeatResponse {
            lacking: None,
            round,
        },
    )
}

#[test]
fn a_leader_read_waits_for_one_quorum_round_which_reads_share() {
    let mut r = leader_with_commands(3);
    r.read_index(1).unwrap();
    r.read_index(2).unwrap();
    let rd = persist(&mut r);
    assert!(rd.read_states.is_empty(), "answered before any round");
    let round = heartbeat_round(&rd, 2).expect("a round starts at once");
    assert_eq!(heartbeat_round(&rd, 3), Some(round), "one round for both");
    // An answer to an earlier round proves nothing about now.
    r.step(heartbeat_answer(2, 1, round - 1));
    assert!(persist(&mut r).read_states.is_empty());
    r.step(heartbeat_answer(2, 1, round));
    let rd = persist(&mut r);
    assert_eq!(
        rd.read_states,
        vec![
            ReadState {
                id: 1,
                result: Ok(4)
            },
            ReadState {
                id: 2,
                result: Ok(4)
            }
        ]
    );
}

#[test]
fn a_fresh_leader_serves_reads_only_after_committing_an_entry_of_its_term() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    r.read_index(9).unwrap();
    let rd = persist(&mut r);
    assert!(rd.read_states.is_empty());
    assert_eq!(
        heartbeat_round(&rd, 2),
        None,
        "no round before the no-op commits"
    );
    r.step(accepted(2, 1, 1));
    let rd = persist(&mut r);
    let round = heartbeat_round(&rd, 3).expect("the round starts once the no-op commits");
    r.step(heartbeat_answer(3, 1, round));
    assert_eq!(
        persist(&mut r).read_states,
        vec![ReadState {
            id: 9,
            result: Ok(1)
        }]
    );
}

#[test]
fn a_leader_that_steps_down_fails_its_pending_reads() {
    let mut r = leader_with_commands(1);
    r.read_index(3).unwrap();
    flush(&mut r);
    // A higher term: the leader steps down before any quorum answered.
    r.step(heartbeat_answer(2, 2, 0));
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(
        persist(&mut r).read_states,
        vec![ReadState {
            id: 3,
            result: Err(ReadError::NotLeader { leader_hint: None })
        }]
    );
    assert_eq!(
        r.read_index(4),
        Err(ReadError::NotLeader { leader_hint: None }),
        "a follower that knows no leader refuses at once"
    );
}

#[test]
fn a_follower_read_asks_the_leader_and_gets_its_confirmed_index() {
    let mut f = Raft::new(config(2, 3)).unwrap();
    f.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    flush(&mut f);
    f.read_index(7).unwrap();
    let rd = persist(&mut f);
    let ask = msg(
        2,
        1,
        1,
        MessageBody::ReadIndex {
            id: 7,
            rejoin: false,
        },
    );
    assert!(rd.messages.contains(&ask));
    let mut r = leader_with_commands(2);
    r.step(ask);
    let rd = persist(&mut r);
    let round = heartbeat_round(&rd, 3).expect("a round starts at once");
    r.step(heartbeat_answer(3, 1, round));
    let rd = persist(&mut r);
    let answer = msg(
        1,
        2,
        1,
        MessageBody::ReadIndexResponse {
            id: 7,
            index: Some(3),
        },
    );
    assert!(rd.messages.contains(&answer));
    f.step(answer);
    assert_eq!(
        persist(&mut f).read_states,
        vec![ReadState {
            id: 7,
            result: Ok(3)
        }]
    );
}

#[test]
fn a_single_voter_answers_at_once() {
    let mut r = Raft::new(synod_core::Config::new(1, [1])).unwrap();
    tick_until(&mut r, Role::Leader);
    flush(&mut r);
    assert_eq!(r.log().committed(), 1);
    r.read_index(1).unwrap();
    assert_eq!(
        persist(&mut r).read_states,
        vec![ReadState {
            id: 1,
            result: Ok(1)
        }]
    );
}
