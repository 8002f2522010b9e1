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

    let m = c.node(1).force_voters(set(&[1])).unwrap();
    assert_eq!(m.voters, set(&[1]));
    assert_eq!(
        c.node(1).role(),
        Role::Follower,
        "a forced leader steps down"
    );
    assert_eq!(c.node(1).voters(), &set(&[1]));
    assert_eq!(c.node(1).forced_voters().map(|(at, _)| at), Some(b));

    c.elect(1);
    c.settle();
    // The new leader wrote the forced configuration right after its no-op,
    // and everything up to it is committed, "b" included.
    let log = c.node(1).log();
    let last = log.last_index();
    let conf = log.entries().last().unwrap();
    assert_eq!(conf.kind, EntryKind::ConfChange(m.clone()));
    assert_eq!(log.committed(), last);
    assert!(last > b);
    // The override is no longer needed: the log says it.
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
    let (at, m) = {
        let (at, m) = c.node(1).forced_voters().unwrap();
        (at, m.clone())
    };
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
    again.restore_forced_voters(at, m);
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
