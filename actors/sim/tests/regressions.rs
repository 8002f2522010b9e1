//! Seeds that once exposed a bug, kept forever. Each names what it found.

use synod_sim::{nodes_for_seed, run, SimConfig};

/// (seed, what it caught)
const REGRESSIONS: &[(u64, &str)] = &[
    // A follower in the replicate state whose last appends were lost never
    // received them again when no new proposals came: the heartbeat answer
    // sent nothing because next_index was already past the leader's log.
    (
        68,
        "lost pipelined appends never re-sent without new proposals",
    ),
    (
        113,
        "lost pipelined appends never re-sent without new proposals",
    ),
    (
        177,
        "lost pipelined appends never re-sent without new proposals",
    ),
    // A 690-entry backlog at one entry per message and a window of one
    // needs more than a fixed heal deadline (a simulator fix).
    (138, "convergence deadline must scale with the backlog"),
    // Voters {1, 2, 5}: 1's log was short, 2 was rejoining after a wipe,
    // and 5 campaigned in terms below theirs, which both ignored, so 5
    // never learned the term it had to beat: nobody was elected again.
    (2263, "a stale candidate's vote request went unanswered"),
];

/// Seeds the `wipe` fault found (with `all,wipe` at the time; `all` now),
/// each a hole in the rejoin rule of a replica that lost its state.
const WIPE_REGRESSIONS: &[(u64, &str)] = &[
    (
        123,
        "rejoin index taken from a heartbeat's capped commit: rejoined at 51 with 737 \
         committed",
    ),
    (
        3999,
        "a wiped replica acknowledged a stale leader of a term it forgot, which committed \
         over a newer leader's entries",
    ),
    (
        3468,
        "a wiped replica committed its divergent log from a heartbeat carrying its previous \
         incarnation's match",
    ),
];

#[test]
fn wipe_regression_seeds_pass() {
    for &(seed, what) in WIPE_REGRESSIONS {
        let o = run(SimConfig::new(seed, nodes_for_seed(seed)));
        assert!(
            o.violation.is_none(),
            "seed {seed} ({what}): {:?}",
            o.violation
        );
    }
}

#[test]
fn regression_seeds_pass() {
    for &(seed, what) in REGRESSIONS {
        // Exactly the run that exposed the bug (these seeds predate
        // snapshots, which change what a seed does)...
        let mut c = SimConfig::new(seed, nodes_for_seed(seed));
        c.snapshots = false;
        let o = run(c);
        assert!(
            o.violation.is_none(),
            "seed {seed} ({what}): {:?}",
            o.violation
        );
        // ...and the same seed with today's defaults.
        let o = run(SimConfig::new(seed, nodes_for_seed(seed)));
        assert!(
            o.violation.is_none(),
            "seed {seed} (defaults): {:?}",
            o.violation
        );
    }
}
