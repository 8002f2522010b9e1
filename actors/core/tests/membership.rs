//! Membership change (thesis ch. 4, single-server changes with the 2015
//! rule): learners receive the log but never vote nor count, promotion
//! once caught up, removals shrink the quorum, a leader that removes
//! itself steps down once the change commits, and the configuration is
//! the latest in the log (it travels in snapshots and reverts when its
//! entry is truncated).

mod common;

use common::cluster::Cluster;

use std::collections::BTreeSet;

use common::{config, msg, persist};
use synod_core::{
    ConfChange, ConfChangeError, Config, Entry, EntryKind, Membership, MessageBody, Raft, Role,
    SnapshotInfo, PROMOTE_MAX_LAG,
};

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

#[test]
fn a_learner_receives_the_log_but_never_votes_campaigns_or_counts() {
    let mut c = Cluster::new(3, 4);
    c.elect(1);
    c.propose(1, "a");
    let at = c.change(1, ConfChange::AddLearner(4));
    assert_eq!(c.node(1).log().committed(), at);
    assert_eq!(c.node(1).membership().learners, set(&[4]));
    assert_eq!(c.node(1).voters(), &set(&[1, 2, 3]));
    // It holds the whole log, configuration included, and knows its role.
    let last = c.node(1).log().last_index();
    assert_eq!(c.node(4).log().last_index(), last);
    assert_eq!(c.node(4).membership().learners, set(&[4]));

    // Not in the quorum: with voters 2 and 3 cut off, its ack commits nothing.
    c.isolate(2);
    c.isolate(3);
    let i = c.propose(1, "b");
    assert_eq!(c.node(4).log().last_index(), i);
    assert!(c.node(1).log().committed() < i);

    // Never campaigns, however long it hears nothing.
    c.isolate(4);
    for _ in 0..200 {
        c.node(4).tick();
    }
    c.settle();
    assert_eq!(c.node(4).role(), Role::Follower);
    assert_eq!(c.node(4).stats().elections, 0);
}

#[test]
fn a_caught_up_learner_is_promoted_and_then_counts() {
    let mut c = Cluster::new(3, 4);
    c.elect(1);
    c.change(1, ConfChange::AddLearner(4));
    let at = c.change(1, ConfChange::PromoteLearner(4));
    assert_eq!(c.node(1).log().committed(), at);
    assert_eq!(c.node(1).voters(), &set(&[1, 2, 3, 4]));
    assert!(c.node(1).membership().learners.is_empty());
    assert_eq!(c.node(4).voters(), &set(&[1, 2, 3, 4]));

    // Four voters: a quorum is 3, and node 4 is part of it.
    c.isolate(2);
    c.isolate(3);
    let i = c.propose(1, "a");
    assert!(
        c.node(1).log().committed() < i,
        "1 and 4 are not a quorum of 4"
    );
    c.reconnect(3);
    c.node(1).tick();
    c.node(1).tick();
    c.settle();
    assert_eq!(c.node(1).log().committed(), i, "1, 3 and 4 are");
}

#[test]
fn a_lagging_learner_is_not_promoted() {
    let mut c = Cluster::new(3, 4);
    c.elect(1);
    c.isolate(4);
    c.change(1, ConfChange::AddLearner(4));
    for _ in 0..PROMOTE_MAX_LAG + 2 {
        c.propose(1, "x");
    }
    let last = c.node(1).log().last_index();
    assert_eq!(
        c.node(1).propose_conf_change(ConfChange::PromoteLearner(4)),
        Err(ConfChangeError::LearnerBehind {
            id: 4,
            matched: 0,
            last
        })
    );
    c.reconnect(4);
    for _ in 0..3 {
        c.node(1).tick();
        c.settle();
    }
    assert_eq!(c.node(4).log().last_index(), last);
    c.change(1, ConfChange::PromoteLearner(4));
    assert!(c.node(1).voters().contains(&4));
}

#[test]
fn removing_followers_shrinks_the_quorum() {
    let mut c = Cluster::new(5, 5);
    c.elect(1);
    c.change(1, ConfChange::RemoveMember(5));
    c.change(1, ConfChange::RemoveMember(4));
    assert_eq!(c.node(1).voters(), &set(&[1, 2, 3]));
    assert!(c.node(1).progress(4).is_none() && c.node(1).progress(5).is_none());
    // Three voters: 1 and 2 commit without 3, 4 and 5.
    c.isolate(3);
    c.isolate(4);
    c.isolate(5);
    let i = c.propose(1, "a");
    assert_eq!(c.node(1).log().committed(), i);
    // A removed learner or voter can be added again as a learner.
    c.reconnect(5);
    c.change(1, ConfChange::AddLearner(5));
    assert_eq!(c.node(1).membership().learners, set(&[5]));
}

#[test]
fn a_leader_that_removes_itself_leads_until_the_change_commits_then_steps_down() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    c.propose(1, "a");
    c.isolate(3);
    let p = c
        .node(1)
        .propose_conf_change(ConfChange::RemoveMember(1))
        .unwrap();
    c.settle();
    // The new configuration {2, 3} needs both: node 2's ack is not enough,
    // and the leader does not count itself.
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(c.node(1).log().committed() < p.last_index);
    assert_eq!(c.node(1).voters(), &set(&[2, 3]));
    // Still leading: it replicates and accepts proposals meanwhile.
    assert!(c.node(1).propose(vec!["b".into()]).is_ok());
    c.reconnect(3);
    c.node(1).tick();
    c.node(1).tick();
    c.settle();
    assert!(c.node(1).log().committed() >= p.last_index);
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).stats().removed_stepdowns, 1);
    // Followers learned the commit before it stepped down, and one of them
    // takes over; the removed node never campaigns again.
    assert_eq!(c.node(2).voters(), &set(&[2, 3]));
    let elections = c.node(1).stats().elections;
    for _ in 0..100 {
        for id in 1..=3 {
            c.node(id).tick();
        }
        c.settle();
    }
    assert_eq!(c.node(1).stats().elections, elections);
    let leaders: Vec<u64> = (1..=3)
        .filter(|&id| c.node(id).role() == Role::Leader)
        .collect();
    assert!(leaders == [2] || leaders == [3], "{leaders:?}");
}

#[test]
fn changes_are_refused_with_a_reason() {
    let mut c = Cluster::new(3, 4);
    c.elect(1);
    assert!(matches!(
        c.node(2).propose_conf_change(ConfChange::AddLearner(4)),
        Err(ConfChangeError::NotLeader {
            leader_hint: Some(1)
        })
    ));
    let n = |c: &mut Cluster, ch| c.node(1).propose_conf_change(ch);
    assert_eq!(
        n(&mut c, ConfChange::AddLearner(2)),
        Err(ConfChangeError::AlreadyMember { id: 2 })
    );
    assert_eq!(
        n(&mut c, ConfChange::PromoteLearner(4)),
        Err(ConfChangeError::NotALearner { id: 4 })
    );
    assert_eq!(
        n(&mut c, ConfChange::RemoveMember(9)),
        Err(ConfChangeError::NotAMember { id: 9 })
    );
    assert_eq!(
        n(&mut c, ConfChange::AddLearner(0)),
        Err(ConfChangeError::ZeroId)
    );
    // One change at a time.
    c.isolate(2);
    c.isolate(3);
    let p = n(&mut c, ConfChange::AddLearner(4)).unwrap();
    assert_eq!(
        n(&mut c, ConfChange::RemoveMember(3)),
        Err(ConfChangeError::ChangePending {
            index: p.last_index
        })
    );
    // Not while a transfer is pending.
    c.reconnect(2);
    c.reconnect(3);
    c.node(1).tick();
    c.node(1).tick();
    c.settle();
    c.isolate(2);
    c.node(1).transfer_leader(2).unwrap();
    assert_eq!(
        n(&mut c, ConfChange::RemoveMember(3)),
        Err(ConfChangeError::TransferPending { to: 2 })
    );

    // The last voter cannot be removed.
    let mut solo = Cluster::new(1, 1);
    solo.elect(1);
    assert_eq!(
        solo.node(1)
            .propose_conf_change(ConfChange::RemoveMember(1)),
        Err(ConfChangeError::LastVoter { id: 1 })
    );
}

#[test]
fn a_new_leader_proposes_no_change_before_it_commits_an_entry_of_its_term() {
    let mut r = Raft::new(config(1, 3)).unwrap();
    for _ in 0..100 {
        r.tick();
        if r.role() == Role::Candidate {
            break;
        }
    }
    let _ = persist(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    assert_eq!(r.role(), Role::Leader);
    let _ = persist(&mut r);
    assert_eq!(
        r.propose_conf_change(ConfChange::AddLearner(4)),
        Err(ConfChangeError::TermNotCommitted)
    );
    r.step(common::accepted(2, 1, 1));
    assert_eq!(r.log().committed(), 1);
    assert!(r.propose_conf_change(ConfChange::AddLearner(4)).is_ok());
}

#[test]
fn the_configuration_travels_in_snapshots() {
    let mut c = Cluster::new(3, 4);
    c.elect(1);
    c.change(1, ConfChange::AddLearner(4));
    c.change(1, ConfChange::PromoteLearner(4));
    c.change(1, ConfChange::RemoveMember(3));
    c.isolate(4);
    let i = c.propose(1, "a");
    c.node(1).compact(i).unwrap();
    let expected = Membership {
        voters: set(&[1, 2, 4]),
        learners: BTreeSet::new(),
    };
    assert_eq!(c.node(1).snapshot_membership(), &expected);
    assert_eq!(c.node(1).conf_index(), None);
    assert_eq!(c.node(1).membership(), &expected);

    // Node 4 has been away; it gets the snapshot and its configuration.
    c.reconnect(4);
    c.propose(1, "b");
    for _ in 0..3 {
        c.node(1).tick();
        c.settle();
    }
    assert_eq!(c.node(4).snapshot_membership(), &expected);
    assert_eq!(c.node(4).membership(), &expected);

    // A restart from the snapshot uses the stored configuration, not the
    // initial voters of its Config.
    let snap = c.node(1).log().snapshot();
    let hs = c.node(1).hard_state();
    let r = Raft::restore_with_membership(
        Config::new(2, [1, 2, 3]),
        hs,
        snap,
        Some(expected.clone()),
        Vec::new(),
        snap.index,
    )
    .unwrap();
    assert_eq!(r.membership(), &expected);
    assert_eq!(r.membership_at(snap.index), expected);
}

#[test]
fn a_configuration_reverts_when_its_entry_is_truncated() {
    let mut r = Raft::new(config(2, 3)).unwrap();
    let grown = Membership {
        voters: set(&[1, 2, 3]),
        learners: set(&[4]),
    };
    let entries = vec![
        Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Noop,
        },
        Entry {
            term: 1,
            index: 2,
            kind: EntryKind::ConfChange(grown.clone()),
        },
    ];
    let append = |term, prev_log_index, prev_log_term, entries, from| {
        msg(
            from,
            2,
            term,
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: 1,
                epoch: 0,
            },
        )
    };
    r.step(append(1, 0, 0, entries, 1));
    // In effect as soon as it is in the log, uncommitted.
    assert_eq!(r.log().committed(), 1);
    assert_eq!(r.membership(), &grown);
    assert_eq!(r.conf_index(), Some(2));
    // A leader of term 2 never had it: its entry 2 replaces ours.
    let other = vec![Entry {
        term: 2,
        index: 2,
        kind: EntryKind::Noop,
    }];
    r.step(append(2, 1, 1, other, 3));
    assert_eq!(r.log().term(2), Some(2));
    assert_eq!(r.membership(), &Membership::with_voters([1, 2, 3]));
    assert_eq!(r.conf_index(), None);
    let _ = SnapshotInfo::default();
}

#[test]
fn a_configuration_encodes_and_decodes() {
    let m = Membership {
        voters: set(&[1, 2, 7]),
        learners: set(&[9]),
    };
    assert_eq!(Membership::decode(&m.encode()), Some(m.clone()));
    assert_eq!(Membership::decode(&m.encode()[1..]), None);
    assert_eq!(Membership::decode(&[0xff; 8]), None);
}
