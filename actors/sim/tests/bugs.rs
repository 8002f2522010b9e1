//! The simulation must catch classic Raft bugs: each one is switched on in
//! the core (feature `fault-injection`) and must produce a violation of the
//! invariant it breaks within a fixed range of seeds (the first violating
//! seed is printed, and replays with
//! `synod-sim --seed S --bug NAME --trace`). A range rather than pinned
//! seeds: any change to the simulator or the core moves which seeds hit,
//! but a checker that works keeps finding the bug.

use synod_sim::{nodes_for_seed, run, Bugs, SimConfig};

/// The first seed in `seeds` whose run reports a violation, and which.
fn first_violation(
    bugs: Bugs,
    skip_validate: bool,
    seeds: std::ops::Range<u64>,
) -> Option<(u64, String)> {
    seeds.into_iter().find_map(|seed| {
        let mut c = SimConfig::new(seed, nodes_for_seed(seed));
        c.bugs = bugs;
        c.skip_validate = skip_validate;
        run(c).violation.map(|v| (seed, v.invariant.to_string()))
    })
}

fn assert_caught(name: &str, bugs: Bugs, skip_validate: bool, invariant: &str) {
    match first_violation(bugs, skip_validate, 1..1500) {
        Some((seed, found)) => {
            eprintln!("{name}: seed {seed} violates {found}");
            assert!(
                found.starts_with(invariant),
                "{name}: seed {seed} reported {found}, expected {invariant}"
            );
        }
        None => panic!("{name}: no violation in 1500 seeds"),
    }
}

#[test]
fn correct_core_passes_a_batch() {
    assert_eq!(first_violation(Bugs::default(), false, 1..200), None);
}

#[test]
fn vote_without_log_check_breaks_leader_completeness() {
    let bugs = Bugs {
        vote_without_log_check: true,
        ..Bugs::default()
    };
    assert_caught("vote without log check", bugs, false, "leader completeness");
}

#[test]
fn committing_previous_term_entries_by_counting_loses_a_commit() {
    let bugs = Bugs {
        commit_previous_term_by_counting: true,
        ..Bugs::default()
    };
    assert_caught(
        "commit previous term by counting",
        bugs,
        false,
        "leader completeness",
    );
}

#[test]
fn replying_before_persisting_the_vote_is_caught() {
    let bugs = Bugs {
        reply_before_persisting_vote: true,
        ..Bugs::default()
    };
    // Two leaders in one term, or (when the forgotten vote elects a leader
    // missing a committed entry) leader completeness.
    let (seed, found) = first_violation(bugs, false, 1..3000).expect("no violation in 3000 seeds");
    eprintln!("reply before persisting vote: seed {seed} violates {found}");
    assert!(
        found.starts_with("election safety") || found.starts_with("leader completeness"),
        "seed {seed}: {found}"
    );
}

#[test]
fn leader_keeping_its_role_on_a_higher_term() {
    let bugs = Bugs {
        leader_ignores_higher_term: true,
        ..Bugs::default()
    };
    // The replica's own validate() notices first...
    assert_caught(
        "leader ignores higher term",
        bugs,
        false,
        "replica invariants",
    );
    // ...and without it, the election safety checker does.
    assert_caught(
        "leader ignores higher term (no validate)",
        bugs,
        true,
        "election safety",
    );
}
