//! Unsafe recovery (`Raft::force_voters`): survivors of a group that lost
//! a majority of its voters for good are given a new voter set, elect a
//! leader among themselves, write the forced configuration into the log,
//! and commit again; the override survives a restart until that entry is
//! in the log.

mod common;

use std::collections::BTreeSet;

use common::cluster::Cluster;
use common::persist;
use synod_core::{
    ConfChangeError, Config, EntryKind, HardState, Membership, Raft, Role, SnapshotInfo,
};

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

#[test]
fn a_lone_survivor_forced_to_be_the_only_voter_commits_again() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    let a = c.propose(1, "a");
    assert_eq!(c.node(1).log().committed(), a);
    // Nodes 2 and 3 are lost for good: nothing commits any more.
    c.isolate(2);
    c.isolate(3);
    let b = c.propose(1, "b");
    assert!(c.node(1).log().committed() < b);

    let f = c.node(1).force_voters(set(&[1])).unwrap();
    let m = f.membership.clone();
    assert_eq!(m.voters, set(&[1]));
    assert_eq!(
        c.node(1).role(),
        Role::Follower,
        "a forced leader steps down"
    );
    assert_eq!(c.node(1).voters(), &set(&[1]));
    assert_eq!(c.node(1).forced_voters().map(|f| f.at), Some(b));

    c.elect(1);
    c.settle();
    // The new leader's first entry is the forced configuration, then its
    // no-op; everything is committed, "b" included.
    let log = c.node(1).log();
    let last = log.last_index();
    let conf = log.entry(b + 1).unwrap();
    assert_eq!(conf.kind, EntryKind::ConfChange(m.clone()));
    assert_eq!(log.entry(b + 2).unwrap().kind, EntryKind::Noop);
    assert_eq!(log.committed(), last);
    // The override is retired: the log says it, committed.
    assert_eq!(c.node(1).forced_voters(), None);
    assert_eq!(c.node(1).membership(), &m);
    let c_index = c.propose(1, "c");
    assert_eq!(c.node(1).log().committed(), c_index);
}

#[test]
fn two_survivors_of_five_forced_alike_elect_one_leader_and_agree() {
    let mut c = Cluster::new(5, 5);
    c.elect(1);
    c.propose(1, "a");
    for lost in [3, 4, 5] {
        c.isolate(lost);
    }
    let b = c.propose(1, "b");
    assert!(c.node(1).log().committed() < b);
    for survivor in [1, 2] {
        c.node(survivor).force_voters(set(&[1, 2])).unwrap();
    }
    c.elect(2);
    c.settle();
    let d = c.propose(2, "d");
    for survivor in [1, 2] {
        let r = c.node(survivor);
        assert_eq!(r.log().committed(), d, "node {survivor}");
        assert_eq!(r.voters(), &set(&[1, 2]));
        assert_eq!(r.forced_voters(), None);
    }
    let (l1, l2) = (c.nodes[0].log().entries(), c.nodes[1].log().entries());
    assert_eq!(l1, l2, "the survivors' logs match");
    assert_eq!(c.node(1).role(), Role::Follower);
}

#[test]
fn the_override_survives_a_restart_until_the_log_carries_it() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    c.propose(1, "a");
    c.isolate(2);
    c.isolate(3);
    c.node(1).force_voters(set(&[1])).unwrap();
    let forced = c.node(1).forced_voters().unwrap().clone();
    let _ = persist(c.node(1));
    // Restart from what is durable: the log still says {1, 2, 3}.
    let r = c.node(1);
    let hs: HardState = r.hard_state();
    let entries = r.log().entries().to_vec();
    let mut again = Raft::restore_with_membership(
        Config::new(1, 1..=3),
        hs,
        SnapshotInfo::default(),
        None,
        entries,
        0,
    )
    .unwrap();
    assert_eq!(again.voters(), &set(&[1, 2, 3]));
    again.restore_forced_voters(forced);
    assert_eq!(again.voters(), &set(&[1]));
    c.nodes[0] = again;
    c.elect(1);
    c.settle();
    assert_eq!(c.node(1).forced_voters(), None);
    let i = c.propose(1, "after");
    assert_eq!(c.node(1).log().committed(), i);
}

#[test]
fn forcing_nonsense_is_refused() {
    let mut c = Cluster::new(3, 3);
    assert_eq!(
        c.node(1).force_voters(BTreeSet::new()),
        Err(ConfChangeError::LastVoter { id: 1 })
    );
    assert_eq!(
        c.node(1).force_voters(set(&[0, 1])),
        Err(ConfChangeError::ZeroId)
    );
    assert_eq!(c.node(1).membership(), &Membership::with_voters([1, 2, 3]));
}

/// Review finding F1: once the group moved on from the forced set (nodes
/// re-added, the log compacted past every configuration entry), a restart
/// that is handed the old override must not bring it back.
#[test]
fn a_retired_override_never_comes_back_after_compaction_and_a_restart() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    c.propose(1, "a");
    c.isolate(2);
    c.isolate(3);
    let forced = c.node(1).force_voters(set(&[1])).unwrap();
    c.elect(1);
    c.settle();
    assert_eq!(c.node(1).forced_voters(), None, "retired once committed");
    // The group grows back: 2 returns (wiped) as a learner, then a voter.
    c.cut.clear();
    c.nodes[1] = Raft::new(Config::new(2, [])).unwrap();
    c.node(1)
        .propose_conf_change(synod_core::ConfChange::AddLearner(2))
        .unwrap();
    c.settle();
    for _ in 0..3 {
        c.propose(1, "x");
    }
    c.node(1)
        .propose_conf_change(synod_core::ConfChange::PromoteLearner(2))
        .unwrap();
    c.settle();
    let i = c.propose(1, "y");
    assert_eq!(c.node(1).voters(), &set(&[1, 2]));
    // Compact past every configuration entry, then restart node 1 from
    // the snapshot, handing it the stale override as a lost catalog
    // update would.
    c.node(1).compact(i).unwrap();
    let snap = c.node(1).log().snapshot();
    let hs = c.node(1).hard_state();
    let mut again = Raft::restore_with_membership(
        Config::new(1, 1..=3),
        hs,
        snap,
        Some(c.node(1).snapshot_membership().clone()),
        Vec::new(),
        snap.index,
    )
    .unwrap();
    again.restore_forced_voters(forced);
    assert_eq!(again.forced_voters(), None);
    assert_eq!(again.voters(), &set(&[1, 2]));
}

/// Review finding F2: survivor 2 is forced while its log runs far ahead
/// (entries of an old term); survivor 3, with a shorter log of a later
/// term, wins and writes the forced configuration, then later ones, at
/// indexes below 2's. Those entries (of later terms) supersede 2's
/// override: 2 follows the group's real configuration.
#[test]
fn a_configuration_of_a_later_term_supersedes_the_override_even_below_its_index() {
    // Without check-quorum, so that only node 3's timer has to run for it
    // to be elected (the others still heard from node 1 recently).
    let mut c = Cluster::with(5, 5, |c| c.check_quorum = false);
    c.elect(1);
    c.propose(1, "a");
    // Term 1: node 1 replicates many entries to node 2 only.
    for other in [3, 4, 5] {
        c.cut.insert((1, other));
        c.cut.insert((other, 1));
    }
    for _ in 0..20 {
        c.propose(1, "old");
    }
    // Term 2: node 3 leads 3, 4, 5, with a shorter log.
    for other in [3, 4, 5] {
        c.cut.insert((2, other));
        c.cut.insert((other, 2));
    }
    c.elect(3);
    c.propose(3, "new");
    assert!(c.node(3).log().last_index() < c.node(2).log().last_index());
    // Nodes 1, 4 and 5 are lost; 2 and 3 are forced.
    c.cut.clear();
    for lost in [1, 4, 5] {
        c.isolate(lost);
    }
    let f2 = c.node(2).force_voters(set(&[2, 3])).unwrap();
    c.node(3).force_voters(set(&[2, 3])).unwrap();
    c.elect(3);
    c.settle();
    let conf_at = c.node(3).log().last_index() - 1;
    assert!(
        conf_at <= f2.at,
        "the forced entry lands below node 2's override"
    );
    // A new node 4 (wiped) joins and is promoted.
    let mut fresh = Config::new(4, []);
    fresh.check_quorum = false;
    c.nodes[3] = Raft::new(fresh).unwrap();
    c.cut.retain(|&(a, b)| a != 4 && b != 4);
    c.node(3)
        .propose_conf_change(synod_core::ConfChange::AddLearner(4))
        .unwrap();
    c.settle();
    c.propose(3, "x");
    c.node(3)
        .propose_conf_change(synod_core::ConfChange::PromoteLearner(4))
        .unwrap();
    c.settle();
    let i = c.propose(3, "y");
    assert!(i <= f2.at, "every new-era entry is below node 2's override");
    assert_eq!(c.node(2).forced_voters(), None);
    assert_eq!(c.node(2).voters(), &set(&[2, 3, 4]));
    assert_eq!(c.node(2).log().committed(), i);
}
