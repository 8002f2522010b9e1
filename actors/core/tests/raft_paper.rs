//! Tests of the rules in "In Search of an Understandable Consensus
//! Algorithm (Extended Version)" (Ongaro & Ousterhout, 2014) and of the
//! thesis extensions Synod implements (pre-vote and check-quorum, thesis
//! §9.6 and §6.2). Each test names the section it checks and asserts the
//! exact output of the step.

mod common;

use common::{config, flush, msg, persist};
use synod_core::{
    AppendResponse, Config, ConfigError, Entry, EntryKind, HardState, Message, MessageBody,
    ProgressState, ProposeError, Raft, RestoreError, Role,
};

fn noop(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Noop,
    }
}

fn cmd(index: u64, term: u64, v: &'static str) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal(v.into()),
    }
}

fn tick_until(r: &mut Raft, role: Role) -> u32 {
    for n in 1..=100 {
        r.tick();
        if r.role() == role {
            return n;
        }
    }
    panic!("never became {role:?}");
}

/// Node 1 of a three-node group elected leader in term 1, its no-op
/// written locally; followers have answered nothing yet.
fn leader_of_three() -> Raft {
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    assert_eq!(r.role(), Role::Leader);
    flush(&mut r);
    r
}

fn accepted(from: u64, term: u64, match_index: u64) -> Message {
    msg(
        from,
        1,
        term,
        MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index,
            epoch: 0,
            rejoining: false,
        }),
    )
}

// ---------------------------------------------------------------------
// §5.1 Terms
// ---------------------------------------------------------------------

#[test]
fn s5_1_higher_term_turns_leader_into_follower() {
    let mut r = leader_of_three();
    r.step(msg(
        3,
        1,
        5,
        MessageBody::Append {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            epoch: 0,
        },
    ));
    assert_eq!(
        (r.role(), r.term(), r.leader_id(), r.vote()),
        (Role::Follower, 5, Some(3), None)
    );
}

#[test]
fn s5_1_stale_term_request_is_answered_with_current_term() {
    let mut r = Raft::restore(
        config(1, 3),
        HardState {
            term: 4,
            vote: None,
            commit: 0,
        },
        vec![],
        0,
    )
    .unwrap();
    r.step(msg(
        2,
        1,
        3,
        MessageBody::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    let rd = r.ready();
    assert_eq!(
        rd.messages,
        vec![msg(
            1,
            2,
            4,
            MessageBody::HeartbeatResponse {
                lacking: None,
                round: 0
            }
        )]
    );
    assert_eq!((r.term(), r.leader_id()), (4, None), "no state change");
    assert!(rd.hard_state.is_none());
}

#[test]
fn s5_1_a_stale_candidate_is_refused_with_the_current_term_and_adopts_it() {
    // Without the answer a candidate that hears from no one else keeps
    // campaigning in terms everyone ignores (simulation seed 2263: the
    // voters that heard it could not win or were rejoining).
    let mut r = Raft::restore(
        config(1, 3),
        HardState {
            term: 9,
            vote: None,
            commit: 0,
        },
        vec![],
        0,
    )
    .unwrap();
    let vote = MessageBody::Vote {
        last_log_index: 5,
        last_log_term: 3,
    };
    r.step(msg(2, 1, 4, vote));
    let rd = r.ready();
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 9, MessageBody::VoteResponse { granted: false })]
    );
    assert_eq!(r.term(), 9);
    // The candidate takes the term and follows; its next campaign is in
    // term 10, which the others hear.
    let mut c = Raft::restore(
        config(2, 3),
        HardState {
            term: 3,
            vote: Some(2),
            commit: 0,
        },
        vec![],
        0,
    )
    .unwrap();
    tick_until(&mut c, Role::Candidate);
    let _ = c.ready();
    c.step(rd.messages[0].clone());
    assert_eq!((c.term(), c.role()), (9, Role::Follower));
}

// ---------------------------------------------------------------------
// §5.2 Leader election
// ---------------------------------------------------------------------

#[test]
fn s5_2_follower_times_out_and_campaigns_after_persisting_its_vote() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    let ticks = tick_until(&mut r, Role::Candidate);
    assert!(
        (10..20).contains(&ticks),
        "timeout in [election, 2*election): {ticks}"
    );
    let rd = r.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 1,
            vote: Some(1),
            commit: 0
        })
    );
    assert!(
        rd.messages.is_empty(),
        "vote requests wait for the vote to be durable"
    );
    let vote = MessageBody::Vote {
        last_log_index: 0,
        last_log_term: 0,
    };
    assert_eq!(
        rd.persisted_messages,
        vec![msg(1, 2, 1, vote.clone()), msg(1, 3, 1, vote)]
    );
}

#[test]
fn s5_2_election_timeouts_are_randomized_by_seed() {
    let timeouts: std::collections::BTreeSet<u32> = (1..=20)
        .map(|seed| {
            let mut c = config(1, 3);
            c.seed = seed;
            tick_until(&mut Raft::new(c).unwrap(), Role::Candidate)
        })
        .collect();
    assert!(
        timeouts.len() > 3,
        "seeds should spread timeouts: {timeouts:?}"
    );
    assert!(timeouts.iter().all(|t| (10..20).contains(t)));
}

#[test]
fn s5_2_candidate_with_majority_leads_and_appends_a_noop() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    assert_eq!((r.role(), r.leader_id()), (Role::Leader, Some(1)));
    let rd = r.ready();
    // §8: the new leader's first entry is an empty entry of its term.
    assert_eq!(rd.entries, vec![noop(1, 1)]);
    let append = MessageBody::Append {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![noop(1, 1)],
        leader_commit: 0,
        epoch: 0,
    };
    // Thesis §10.2.1: the leader replicates in parallel with its own write.
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 1, append.clone()), msg(1, 3, 1, append)]
    );
}

#[test]
fn s5_2_candidate_rejected_by_majority_returns_to_follower() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: false }));
    assert_eq!(r.role(), Role::Candidate);
    r.step(msg(3, 1, 1, MessageBody::VoteResponse { granted: false }));
    assert_eq!((r.role(), r.term()), (Role::Follower, 1));
}

#[test]
fn s5_2_candidate_recognizes_leader_of_its_term() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    r.step(msg(
        2,
        1,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    assert_eq!(
        (r.role(), r.term(), r.leader_id()),
        (Role::Follower, 1, Some(2))
    );
}

#[test]
fn s5_2_at_most_one_vote_per_term_and_only_after_persisting() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    let req = MessageBody::Vote {
        last_log_index: 0,
        last_log_term: 0,
    };
    r.step(msg(2, 1, 1, req.clone()));
    let rd = r.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 1,
            vote: Some(2),
            commit: 0
        })
    );
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.persisted_messages,
        vec![msg(1, 2, 1, MessageBody::VoteResponse { granted: true })]
    );
    r.step(msg(3, 1, 1, req.clone()));
    let rd = r.ready();
    assert_eq!(
        rd.messages,
        vec![msg(1, 3, 1, MessageBody::VoteResponse { granted: false })]
    );
    // A retransmitted request from the same candidate is granted again.
    r.step(msg(2, 1, 1, req));
    let rd = r.ready();
    assert_eq!(
        rd.persisted_messages,
        vec![msg(1, 2, 1, MessageBody::VoteResponse { granted: true })]
    );
}

// ---------------------------------------------------------------------
// §5.4.1 Election restriction
// ---------------------------------------------------------------------

#[test]
fn s5_4_1_vote_refused_to_candidate_with_less_up_to_date_log() {
    let log = vec![cmd(1, 1, "a"), cmd(2, 2, "b")];
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 0,
    };
    let mut r = Raft::restore(config(1, 3), hs, log, 0).unwrap();
    // Older last term, longer log: refused.
    r.step(msg(
        2,
        1,
        3,
        MessageBody::Vote {
            last_log_index: 9,
            last_log_term: 1,
        },
    ));
    // Same last term, shorter log: refused.
    r.step(msg(
        3,
        1,
        4,
        MessageBody::Vote {
            last_log_index: 1,
            last_log_term: 2,
        },
    ));
    let rd = r.ready();
    assert_eq!(
        rd.messages,
        vec![
            msg(1, 2, 3, MessageBody::VoteResponse { granted: false }),
            msg(1, 3, 4, MessageBody::VoteResponse { granted: false }),
        ]
    );
    // Same last term, same length: granted.
    r.step(msg(
        3,
        1,
        5,
        MessageBody::Vote {
            last_log_index: 2,
            last_log_term: 2,
        },
    ));
    assert_eq!(r.vote(), Some(3));
}

// ---------------------------------------------------------------------
// Thesis §9.6: pre-vote, and refusing votes while a leader is live
// ---------------------------------------------------------------------

#[test]
fn s9_6_pre_vote_changes_no_term() {
    let mut c = config(1, 3);
    c.pre_vote = true;
    let mut r = Raft::new(c).unwrap();
    tick_until(&mut r, Role::PreCandidate);
    assert_eq!(r.term(), 0);
    let rd = r.ready();
    assert!(rd.hard_state.is_none(), "nothing to persist for a pre-vote");
    let pre = MessageBody::PreVote {
        last_log_index: 0,
        last_log_term: 0,
    };
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 1, pre.clone()), msg(1, 3, 1, pre)]
    );
    // A granted pre-vote (carrying term + 1) starts the real election.
    r.step(msg(2, 1, 1, MessageBody::PreVoteResponse { granted: true }));
    assert_eq!(
        (r.role(), r.term(), r.vote()),
        (Role::Candidate, 1, Some(1))
    );
}

#[test]
fn s9_6_pre_vote_receiver_keeps_its_term() {
    let mut r = Raft::new(config(2, 3)).unwrap();
    r.step(msg(
        1,
        2,
        1,
        MessageBody::PreVote {
            last_log_index: 0,
            last_log_term: 0,
        },
    ));
    let rd = r.ready();
    assert_eq!(
        rd.messages,
        vec![msg(2, 1, 1, MessageBody::PreVoteResponse { granted: true })]
    );
    assert_eq!((r.term(), r.vote()), (0, None));
}

#[test]
fn s9_6_follower_hearing_a_live_leader_ignores_vote_requests() {
    let mut r = Raft::new(config(2, 3)).unwrap();
    r.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            round: 0,
        },
    ));
    let _ = r.ready();
    r.step(msg(
        3,
        2,
        2,
        MessageBody::Vote {
            last_log_index: 5,
            last_log_term: 1,
        },
    ));
    let rd = r.ready();
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty());
    assert_eq!((r.term(), r.vote(), r.leader_id()), (1, None, Some(1)));
    // Once an election timeout passes without the leader, it may vote.
    for _ in 0..10 {
        r.tick();
    }
    r.step(msg(
        3,
        2,
        2,
        MessageBody::Vote {
            last_log_index: 5,
            last_log_term: 1,
        },
    ));
    assert_eq!((r.term(), r.vote()), (2, Some(3)));
}

// ---------------------------------------------------------------------
// Thesis §6.2: check-quorum
// ---------------------------------------------------------------------

#[test]
fn s6_2_leader_without_quorum_contact_steps_down() {
    let mut r = leader_of_three();
    for _ in 0..10 {
        r.tick();
    }
    assert_eq!(
        (r.role(), r.term(), r.leader_id()),
        (Role::Follower, 1, None)
    );
    assert_eq!(r.stats().check_quorum_stepdowns, 1);
}

#[test]
fn s6_2_leader_hearing_a_quorum_keeps_leading() {
    let mut r = leader_of_three();
    for round in 0..3 {
        for _ in 0..9 {
            r.tick();
        }
        r.step(msg(
            2,
            1,
            1,
            MessageBody::HeartbeatResponse {
                lacking: None,
                round: 0,
            },
        ));
        r.tick();
        assert_eq!(r.role(), Role::Leader, "round {round}");
    }
}

// ---------------------------------------------------------------------
// §5.3 Log replication
// ---------------------------------------------------------------------

#[test]
fn s5_3_follower_rejects_mismatch_with_conflict_hint() {
    let log = vec![cmd(1, 1, "a"), cmd(2, 2, "b"), cmd(3, 2, "c")];
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 0,
    };
    let mut r = Raft::restore(config(2, 3), hs, log, 0).unwrap();
    r.step(msg(
        1,
        2,
        3,
        MessageBody::Append {
            prev_log_index: 3,
            prev_log_term: 3,
            entries: vec![],
            leader_commit: 0,
            epoch: 0,
        },
    ));
    let rd = r.ready();
    let rejected = AppendResponse::Rejected {
        rejected_index: 3,
        conflict_term: Some(2),
        conflict_index: 2,
    };
    assert_eq!(
        rd.messages,
        vec![msg(2, 1, 3, MessageBody::AppendResponse(rejected))]
    );
    // A log too short: the hint is our last index + 1.
    r.step(msg(
        1,
        2,
        3,
        MessageBody::Append {
            prev_log_index: 7,
            prev_log_term: 3,
            entries: vec![],
            leader_commit: 0,
            epoch: 0,
        },
    ));
    let rd = r.ready();
    let rejected = AppendResponse::Rejected {
        rejected_index: 7,
        conflict_term: None,
        conflict_index: 4,
    };
    assert_eq!(
        rd.messages,
        vec![msg(2, 1, 3, MessageBody::AppendResponse(rejected))]
    );
}

#[test]
fn s5_3_follower_replaces_conflicting_suffix_and_acks_after_persisting() {
    let log = vec![cmd(1, 1, "a"), cmd(2, 2, "b"), cmd(3, 2, "c")];
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 1,
    };
    let mut r = Raft::restore(config(2, 3), hs, log, 0).unwrap();
    let new = vec![cmd(2, 3, "x"), cmd(3, 3, "y"), cmd(4, 3, "z")];
    r.step(msg(
        1,
        2,
        3,
        MessageBody::Append {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: new.clone(),
            leader_commit: 3,
            epoch: 0,
        },
    ));
    let rd = r.ready();
    assert_eq!(rd.entries, new, "persist from the first conflicting index");
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 3,
            vote: None,
            commit: 3
        })
    );
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.persisted_messages,
        vec![msg(
            2,
            1,
            3,
            MessageBody::AppendResponse(AppendResponse::Accepted {
                match_index: 4,
                epoch: 0,
                rejoining: false
            })
        )]
    );
    // Committed entries are applied only once durable here.
    assert_eq!(rd.committed_entries, vec![cmd(1, 1, "a")]);
    r.on_persisted(4, 3);
    let rd = r.ready();
    assert_eq!(rd.committed_entries, vec![cmd(2, 3, "x"), cmd(3, 3, "y")]);
}

#[test]
fn s5_3_leader_backtracks_a_whole_term_per_rejection() {
    // Leader log: 1-2 of term 1, 3-4 of term 2; it wins term 3 (no-op at 5).
    let log = vec![
        cmd(1, 1, "a"),
        cmd(2, 1, "b"),
        cmd(3, 2, "c"),
        cmd(4, 2, "d"),
    ];
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 0,
    };
    let mut r = Raft::restore(config(1, 3), hs, log, 0).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 3, MessageBody::VoteResponse { granted: true }));
    let _ = persist(&mut r);
    assert_eq!(r.progress(2).unwrap().next_index, 5);
    // Follower 2 has term 1 at index 4 (its run of term 1 starts at 1):
    // the leader's last term-1 entry is 2, so it retries right after it,
    // skipping index 3 without a round trip.
    let rejected = AppendResponse::Rejected {
        rejected_index: 4,
        conflict_term: Some(1),
        conflict_index: 1,
    };
    r.step(msg(2, 1, 3, MessageBody::AppendResponse(rejected)));
    assert_eq!(r.progress(2).unwrap().next_index, 3);
    let rd = r.ready();
    let append = MessageBody::Append {
        prev_log_index: 2,
        prev_log_term: 1,
        entries: vec![cmd(3, 2, "c"), cmd(4, 2, "d"), noop(5, 3)],
        leader_commit: 0,
        epoch: 0,
    };
    assert_eq!(rd.messages, vec![msg(1, 2, 3, append)]);
    // A term the leader never had: jump to the follower's first index of it.
    let rejected = AppendResponse::Rejected {
        rejected_index: 2,
        conflict_term: Some(7),
        conflict_index: 2,
    };
    r.step(msg(2, 1, 3, MessageBody::AppendResponse(rejected)));
    assert_eq!(r.progress(2).unwrap().next_index, 2);
    // A stale rejection (not of the probe in flight) is ignored.
    let stale = AppendResponse::Rejected {
        rejected_index: 4,
        conflict_term: None,
        conflict_index: 1,
    };
    r.step(msg(2, 1, 3, MessageBody::AppendResponse(stale)));
    assert_eq!(r.progress(2).unwrap().next_index, 2);
}

#[test]
fn s5_3_probe_then_pipeline_within_window() {
    let mut c = config(1, 3);
    c.max_entries_per_msg = 1;
    c.max_inflight_msgs = 3;
    let mut r = Raft::new(c).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    flush(&mut r);
    // Probe state: one message until the follower answers.
    assert_eq!(r.progress(2).unwrap().state, ProgressState::Probe);
    r.step(accepted(2, 1, 1));
    assert_eq!(r.progress(2).unwrap().state, ProgressState::Replicate);
    let commands = (0..10).map(|i| format!("c{i}").into()).collect();
    r.propose(commands).unwrap();
    let rd = persist(&mut r);
    let to_2: Vec<_> = rd.messages.iter().filter(|m| m.to == 2).collect();
    assert_eq!(
        to_2.len(),
        3,
        "the window of 3 single-entry messages is filled"
    );
    assert_eq!(r.progress(2).unwrap().next_index, 5);
    r.step(accepted(2, 1, 2));
    let rd = r.ready();
    assert_eq!(
        rd.messages.iter().filter(|m| m.to == 2).count(),
        1,
        "one slot freed, one sent"
    );
}

#[test]
fn s5_3_proposals_of_one_ready_share_one_message_per_follower() {
    let mut r = leader_of_three();
    r.step(accepted(2, 1, 1));
    r.step(accepted(3, 1, 1));
    let _ = persist(&mut r);
    r.propose(vec!["a".into()]).unwrap();
    r.propose(vec!["b".into(), "c".into()]).unwrap();
    let rd = r.ready();
    assert_eq!(rd.entries.len(), 3, "one write");
    assert_eq!(rd.messages.len(), 2, "one append per follower");
    let MessageBody::Append { entries, .. } = &rd.messages[0].body else {
        panic!()
    };
    assert_eq!(entries.len(), 3);
}

#[test]
fn s5_3_leader_commits_once_a_majority_including_itself_is_durable() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    let rd = r.ready(); // the no-op's write is issued, not yet durable
    r.step(accepted(2, 1, 1));
    assert_eq!(
        r.log().committed(),
        0,
        "the leader counts itself only once its write is durable"
    );
    r.on_persisted(1, 1);
    assert_eq!(r.log().committed(), 1);
    assert_eq!(rd.entries, vec![noop(1, 1)]);
}

#[test]
fn s5_3_two_durable_followers_commit_without_the_leaders_disk() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    let _ = r.ready();
    r.step(accepted(2, 1, 1));
    r.step(accepted(3, 1, 1));
    assert_eq!(r.log().committed(), 1, "a majority holds it durably");
    let rd = r.ready();
    assert!(
        rd.committed_entries.is_empty(),
        "applied only once durable locally too"
    );
}

// ---------------------------------------------------------------------
// §5.4.2 Committing entries from previous terms
// ---------------------------------------------------------------------

#[test]
fn s5_4_2_entries_of_earlier_terms_are_not_committed_by_counting() {
    // Node 1 holds (1, term 1) and (2, term 2) from earlier terms; it wins
    // term 3 and appends its no-op at 3.
    let log = vec![cmd(1, 1, "a"), cmd(2, 2, "b")];
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 0,
    };
    let mut r = Raft::restore(config(1, 3), hs, log, 0).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 3, MessageBody::VoteResponse { granted: true }));
    flush(&mut r);
    // Follower 2 acknowledges index 2 (term 2): a majority stores it...
    r.step(accepted(2, 3, 2));
    assert_eq!(
        r.log().committed(),
        0,
        "...but it is of an earlier term (Figure 8)"
    );
    // Once the current-term no-op at 3 is on a majority, 1-3 commit.
    r.step(accepted(2, 3, 3));
    assert_eq!(r.log().committed(), 3);
}

// ---------------------------------------------------------------------
// Proposals, restore and configuration
// ---------------------------------------------------------------------

#[test]
fn proposals_are_refused_off_leader_and_when_too_many_await_commit() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    assert_eq!(
        r.propose(vec!["x".into()]),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
    let mut c = config(1, 3);
    c.max_uncommitted_entries = 3;
    let mut r = Raft::new(c).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    // The no-op is uncommitted: 1 + 2 fit, a third does not.
    r.propose(vec!["a".into(), "b".into()]).unwrap();
    assert_eq!(
        r.propose(vec!["c".into()]),
        Err(ProposeError::Busy {
            uncommitted: 3,
            limit: 3
        })
    );
    assert_eq!(r.propose(vec![]), Err(ProposeError::Empty));
}

#[test]
fn restart_restores_term_vote_log_and_commit() {
    let log = vec![cmd(1, 1, "a"), cmd(2, 1, "b")];
    let hs = HardState {
        term: 3,
        vote: Some(2),
        commit: 2,
    };
    let mut r = Raft::restore(config(1, 3), hs, log, 0).unwrap();
    assert_eq!(
        (
            r.term(),
            r.vote(),
            r.log().last_index(),
            r.log().committed()
        ),
        (3, Some(2), 2, 2)
    );
    // Committed entries are re-applied from scratch (applied = 0).
    let rd = r.ready();
    assert_eq!(rd.committed_entries.len(), 2);
    assert!(rd.hard_state.is_none(), "nothing changed since the restart");
    // A vote in term 3 for someone else is refused.
    r.step(msg(
        3,
        1,
        3,
        MessageBody::Vote {
            last_log_index: 9,
            last_log_term: 9,
        },
    ));
    assert_eq!(r.vote(), Some(2));
}

#[test]
fn restore_rejects_broken_persisted_state() {
    let hs = HardState {
        term: 3,
        vote: None,
        commit: 0,
    };
    let gap = vec![cmd(1, 1, "a"), cmd(3, 1, "b")];
    assert_eq!(
        Raft::restore(config(1, 3), hs, gap, 0).unwrap_err(),
        RestoreError::Gap {
            index: 3,
            expected: 2
        }
    );
    let future = vec![cmd(1, 4, "a")];
    assert!(matches!(
        Raft::restore(config(1, 3), hs, future, 0),
        Err(RestoreError::BadTerm { index: 1, .. })
    ));
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    // A replica outside the initial voters is valid: it joins later as a
    // learner and never campaigns until it is made a voter.
    let mut c = Config::new(4, [1, 2, 3]);
    assert_eq!(c.validate(), Ok(()));
    c = Config::new(0, [0, 1]);
    assert_eq!(c.validate(), Err(ConfigError::ZeroId));
    c = Config::new(1, [1]);
    c.heartbeat_ticks = 10;
    assert!(matches!(c.validate(), Err(ConfigError::Timing { .. })));
    c = Config::new(1, [1]);
    c.max_inflight_msgs = 0;
    assert_eq!(c.validate(), Err(ConfigError::ZeroLimit));
    assert!(Raft::new(Config::new(2, [0])).is_err());
}
