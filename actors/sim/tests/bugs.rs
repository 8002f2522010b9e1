//! The simulation must catch classic Raft bugs: each one is switched on in
//! the core (feature `fault-injection`) and must produce a violation of the
//! invariant it breaks, on seeds found with
//! `synod-sim --seeds 1..10000 --bug NAME`. The runs are deterministic, so
//! these seeds stay valid until the simulator itself changes (then re-find
//! them the same way).

use synod_sim::{nodes_for_seed, run, Bugs, SimConfig};

fn violation_of(seed: u64, bugs: Bugs, skip_validate: bool) -> Option<&'static str> {
    let mut c = SimConfig::new(seed, nodes_for_seed(seed));
    c.bugs = bugs;
    c.skip_validate = skip_validate;
    run(c).violation.map(|v| v.invariant)
}

#[test]
fn correct_core_passes_the_seeds_used_below() {
    for seed in [1, 2, 3, 13, 31, 138, 627] {
        assert_eq!(
            violation_of(seed, Bugs::default(), false),
            None,
            "seed {seed}"
        );
    }
}

#[test]
fn vote_without_log_check_breaks_leader_completeness() {
    let bugs = Bugs {
        vote_without_log_check: true,
        ..Bugs::default()
    };
    for seed in [1, 3] {
        let v = violation_of(seed, bugs, false);
        assert!(
            v.is_some_and(|v| v.starts_with("leader completeness")),
            "seed {seed}: {v:?}"
        );
    }
}

#[test]
fn committing_previous_term_entries_by_counting_loses_a_commit() {
    let bugs = Bugs {
        commit_previous_term_by_counting: true,
        ..Bugs::default()
    };
    for seed in [13, 31] {
        let v = violation_of(seed, bugs, false);
        assert!(
            v.is_some_and(|v| v.starts_with("leader completeness")),
            "seed {seed}: {v:?}"
        );
    }
}

#[test]
fn replying_before_persisting_the_vote_elects_two_leaders() {
    let bugs = Bugs {
        reply_before_persisting_vote: true,
        ..Bugs::default()
    };
    for seed in [138, 627] {
        let v = violation_of(seed, bugs, false);
        assert!(
            v.is_some_and(|v| v.starts_with("election safety")),
            "seed {seed}: {v:?}"
        );
    }
}

#[test]
fn leader_keeping_its_role_on_a_higher_term() {
    let bugs = Bugs {
        leader_ignores_higher_term: true,
        ..Bugs::default()
    };
    // The replica's own validate() notices first...
    let v = violation_of(1, bugs, false);
    assert!(
        v.is_some_and(|v| v.starts_with("replica invariants")),
        "{v:?}"
    );
    // ...and without it, the election safety checker does.
    let v = violation_of(2, bugs, true);
    assert!(v.is_some_and(|v| v.starts_with("election safety")), "{v:?}");
}
