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

/// Node 1 leads a three-node group with lease reads on, and a quorum
/// answered the heartbeat round it sent at its latest tick.
fn leader_with_a_lease() -> Raft {
    let mut c = config(1, 3);
    c.lease_reads = true;
    let mut r = Raft::new(c).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    flush(&mut r);
    r.step(accepted(2, 1, 1));
    flush(&mut r);
    r.read_index(100).unwrap();
    let rd = persist(&mut r);
    let round = heartbeat_round(&rd, 2).unwrap();
    r.step(heartbeat_answer(2, 1, round));
    assert_eq!(persist(&mut r).read_states.len(), 1);
    r
}

#[test]
fn a_leader_within_its_lease_answers_at_once_and_after_it_takes_the_round() {
    let mut r = leader_with_a_lease();
    r.read_lease(1).unwrap();
    let rd = persist(&mut r);
    assert_eq!(
        rd.read_states,
        vec![ReadState {
            id: 1,
            result: Ok(1)
        }]
    );
    assert_eq!(heartbeat_round(&rd, 2), None, "no round under the lease");
    assert_eq!(r.stats().lease_reads, 1);
    // The lease is election_ticks - lease_margin_ticks (10 - 2) from the
    // round's send tick; the heartbeats of those ticks go unanswered.
    for _ in 0..8 {
        r.tick();
    }
    flush(&mut r);
    r.read_lease(2).unwrap();
    let rd = persist(&mut r);
    assert!(rd.read_states.is_empty(), "the lease ran out: a round");
    assert!(heartbeat_round(&rd, 3).is_some());
    assert_eq!(r.stats().lease_reads, 1);
}

#[test]
fn no_lease_without_the_setting_or_after_a_leader_transfer_began() {
    // Lease reads off: every read takes the round.
    let mut r = leader_with_commands(1);
    let rd = persist(&mut r);
    assert!(rd.read_states.is_empty());
    r.read_index(7).unwrap();
    let rd = persist(&mut r);
    let round = heartbeat_round(&rd, 2).unwrap();
    r.step(heartbeat_answer(2, 1, round));
    flush(&mut r);
    r.read_lease(8).unwrap();
    assert!(persist(&mut r).read_states.is_empty());
    // A transfer's target is elected despite the followers' lease: a
    // leader that started one serves no lease read for the rest of its
    // term.
    let mut r = leader_with_a_lease();
    r.transfer_leader(3).unwrap();
    flush(&mut r);
    r.read_lease(9).unwrap();
    assert!(persist(&mut r).read_states.is_empty());
    assert_eq!(r.stats().lease_reads, 0);
}

#[test]
fn with_lease_reads_a_restarted_replica_refuses_votes_for_an_election_timeout() {
    // Before it went down it may have confirmed a leader's lease.
    let mut c = config(2, 3);
    c.lease_reads = true;
    let mut r = Raft::new(c).unwrap();
    let vote = msg(
        3,
        2,
        1,
        MessageBody::Vote {
            last_log_index: 0,
            last_log_term: 0,
        },
    );
    r.step(vote.clone());
    assert_eq!(
        r.vote(),
        None,
        "voted within an election timeout of its start"
    );
    for _ in 0..10 {
        r.tick();
    }
    // An election timeout later (it may have campaigned itself meanwhile:
    // a later term).
    let mut later = vote;
    later.term = 5;
    r.step(later);
    assert_eq!((r.term(), r.vote()), (5, Some(3)));
}
