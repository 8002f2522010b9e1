//! Leader transfer (Raft thesis §3.10, "Leadership transfer extension"):
//! the leader brings the target up to date, refuses proposals meanwhile,
//! sends `TimeoutNow`, and the target wins an election in the next term;
//! a transfer that does not finish within an election timeout is given up.
//!
//! The replicas run with the default configuration (pre-vote and
//! check-quorum on), so these tests also show that a transfer's election
//! skips pre-vote and passes the voters' lease check (thesis §6.2 / §9.6).

mod common;

use common::cluster::Cluster;

use common::{flush, msg, persist};
use synod_core::{Config, Message, MessageBody, ProposeError, Raft, Role, TransferError};

fn sends_timeout_now(messages: &[Message], to: u64) -> bool {
    messages
        .iter()
        .any(|m| m.to == to && m.body == MessageBody::TimeoutNow)
}

/// §3.10: a target that already holds the whole log gets `TimeoutNow` at
/// once and is elected in the next term, although every voter heard from
/// the old leader within the election timeout (its lease).
#[test]
fn transfer_to_an_up_to_date_follower_elects_it_in_the_next_term() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    c.propose(1, "a");
    let term = c.node(1).term();
    let last = c.node(1).log().last_index();
    assert_eq!(c.node(1).progress(2).unwrap().match_index, last);

    c.node(1).transfer_leader(2).unwrap();
    assert_eq!(c.node(1).lead_transferee(), Some(2));
    let rd = c.node(1).ready();
    assert!(sends_timeout_now(&rd.messages, 2), "{:?}", rd.messages);
    for m in rd.messages {
        c.node(2).step(m);
    }
    // The target campaigns at once, with no pre-vote round.
    assert_eq!(c.node(2).role(), Role::Candidate);
    assert_eq!(c.node(2).term(), term + 1);
    assert_eq!(c.node(2).stats().transfer_elections, 1);
    let rd = persist(c.node(2));
    assert!(rd.persisted_messages.iter().all(|m| matches!(
        m.body,
        MessageBody::TransferVote {
            last_log_index,
            ..
        } if last_log_index == last
    )));
    for m in rd.persisted_messages.into_iter().chain(rd.messages) {
        let to = m.to;
        c.node(to).step(m);
    }
    c.settle();
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!(c.node(2).term(), term + 1);
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).lead_transferee(), None);
    // The new leader serves writes, the old one points to it.
    c.propose(2, "b");
    assert_eq!(
        c.node(1).propose(vec!["c".into()]),
        Err(ProposeError::NotLeader {
            leader_hint: Some(2)
        })
    );
    assert_eq!(
        c.node(1).log().committed(),
        c.node(2).log().last_index(),
        "the old leader follows the new one"
    );
}

/// §3.10: "the prior leader sends its log entries to the target server":
/// a lagging target is caught up before `TimeoutNow` goes out, and
/// proposals are refused meanwhile with the target as the hint.
#[test]
fn transfer_to_a_lagging_follower_catches_it_up_first() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    c.cut.insert((1, 3));
    for v in ["a", "b", "c", "d"] {
        c.propose(1, v);
    }
    let last = c.node(1).log().last_index();
    assert!(c.node(3).log().last_index() < last);

    c.node(1).transfer_leader(3).unwrap();
    assert_eq!(
        c.node(1).propose(vec!["refused".into()]),
        Err(ProposeError::NotLeader {
            leader_hint: Some(3)
        })
    );
    let rd = c.node(1).ready();
    assert!(!sends_timeout_now(&rd.messages, 3));
    assert!(rd
        .messages
        .iter()
        .any(|m| m.to == 3 && matches!(m.body, MessageBody::Append { .. })));

    c.cut.clear();
    for m in rd.messages {
        let to = m.to;
        c.node(to).step(m);
    }
    c.settle();
    assert_eq!(c.leaders(), vec![3]);
    assert!(c.node(3).log().last_index() > last);
    for v in ["a", "b", "c", "d"] {
        let held = (1..=last).any(|i| {
            c.node(3)
                .log()
                .entry(i)
                .and_then(|e| e.data())
                .is_some_and(|d| d == v)
        });
        assert!(held, "the new leader holds {v}");
    }
}

/// §3.10: "if the transfer does not complete within about one election
/// timeout, the prior leader aborts the transfer and resumes accepting
/// client requests."
#[test]
fn a_transfer_that_does_not_finish_is_given_up_after_an_election_timeout() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    // Node 3 is unreachable: it can never catch up.
    c.cut.insert((1, 3));
    c.cut.insert((3, 1));
    c.propose(1, "a");
    c.node(1).transfer_leader(3).unwrap();
    let election_ticks = Config::new(1, [1, 2, 3]).election_ticks;
    for _ in 1..election_ticks {
        c.node(1).tick();
        c.settle();
        assert_eq!(c.node(1).lead_transferee(), Some(3));
        assert!(c.node(1).propose(vec!["x".into()]).is_err());
    }
    c.node(1).tick();
    assert_eq!(c.node(1).lead_transferee(), None);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).stats().transfers_started, 1);
    assert_eq!(c.node(1).stats().transfers_aborted, 1);
    assert!(c.node(1).propose(vec!["accepted again".into()]).is_ok());
}

/// What `transfer_leader` refuses, and that a repeated request for the
/// pending target changes nothing.
#[test]
fn transfer_refuses_non_leaders_self_non_voters_and_a_second_target() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    assert_eq!(
        c.node(2).transfer_leader(3),
        Err(TransferError::NotLeader {
            leader_hint: Some(1)
        })
    );
    assert_eq!(
        c.node(1).transfer_leader(1),
        Err(TransferError::ToSelf { to: 1 })
    );
    assert_eq!(
        c.node(1).transfer_leader(9),
        Err(TransferError::NotAVoter {
            to: 9,
            voters: vec![1, 2, 3]
        })
    );
    c.cut.insert((1, 3));
    c.propose(1, "a");
    c.node(1).transfer_leader(3).unwrap();
    assert_eq!(
        c.node(1).transfer_leader(2),
        Err(TransferError::InProgress { pending: 3 })
    );
    assert_eq!(c.node(1).transfer_leader(3), Ok(()));
    assert_eq!(c.node(1).stats().transfers_started, 1);
    assert_eq!(c.node(1).lead_transferee(), Some(3));
}

/// §4.2.3 / §9.6 against §3.10: a plain vote request is ignored by a
/// follower that heard from its leader within the election timeout, a
/// transfer's vote request is granted (and the term adopted).
#[test]
fn a_transfer_vote_passes_the_lease_check_a_plain_vote_does_not() {
    let mut r = Raft::new(Config::new(3, [1, 2, 3])).unwrap();
    r.step(msg(
        1,
        3,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    flush(&mut r);
    assert_eq!(r.leader_id(), Some(1));

    let vote = MessageBody::Vote {
        last_log_index: 0,
        last_log_term: 0,
    };
    r.step(msg(2, 3, 2, vote));
    let rd = persist(&mut r);
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty());
    assert_eq!((r.term(), r.vote()), (1, None));

    let transfer_vote = MessageBody::TransferVote {
        last_log_index: 0,
        last_log_term: 0,
    };
    r.step(msg(2, 3, 2, transfer_vote));
    let rd = persist(&mut r);
    assert_eq!(
        rd.persisted_messages,
        vec![msg(3, 2, 2, MessageBody::VoteResponse { granted: true })]
    );
    assert_eq!((r.term(), r.vote(), r.leader_id()), (2, Some(2), None));
}

/// A transfer's vote request still obeys §5.4.1: a voter whose log is
/// more up to date refuses it.
#[test]
fn a_transfer_vote_still_needs_an_up_to_date_log() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    c.propose(1, "a");
    let mut follower = c.node(3).clone();
    follower.step(msg(
        2,
        3,
        c.node(1).term() + 1,
        MessageBody::TransferVote {
            last_log_index: 1,
            last_log_term: 1,
        },
    ));
    let rd = persist(&mut follower);
    assert_eq!(
        rd.messages,
        vec![msg(
            3,
            2,
            c.node(1).term() + 1,
            MessageBody::VoteResponse { granted: false }
        )]
    );
}

/// A replica that lost its state (rejoining) is no valid successor: it
/// ignores `TimeoutNow`, as it may not vote for itself, and the leader's
/// transfer times out.
#[test]
fn a_rejoining_replica_ignores_timeout_now() {
    let mut config = Config::new(2, [1, 2, 3]);
    config.rejoining = true;
    let mut r = Raft::new(config).unwrap();
    r.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    flush(&mut r);
    r.step(msg(1, 2, 1, MessageBody::TimeoutNow));
    let rd = persist(&mut r);
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty());
    assert_eq!((r.role(), r.term()), (Role::Follower, 1));
    assert_eq!(r.stats().transfer_elections, 0);
}

/// A stale `TimeoutNow` (from an earlier term's leader) starts nothing.
#[test]
fn a_stale_timeout_now_is_ignored() {
    let mut r = Raft::new(Config::new(2, [1, 2, 3])).unwrap();
    r.step(msg(
        1,
        2,
        3,
        MessageBody::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    flush(&mut r);
    r.step(msg(3, 2, 2, MessageBody::TimeoutNow));
    assert_eq!((r.role(), r.term()), (Role::Follower, 3));
    assert_eq!(r.stats().elections, 0);
}
