//! The CI batch: a fixed range of seeds over 3, 5 and 7 nodes with every
//! fault kind must report no violation. A rotating range runs in
//! `bench/sim-seeds.sh`; any seed that ever fails goes to
//! `regressions.rs` for good.

use synod_sim::{nodes_for_seed, run_many, Faults, SimConfig};

fn batch(seeds: std::ops::Range<u64>, faults: Faults) {
    let summary = run_many(seeds.clone(), 2, &|seed| {
        let mut c = SimConfig::new(seed, nodes_for_seed(seed));
        c.faults = faults;
        c
    });
    for o in &summary.failures {
        eprintln!(
            "seed {} ({} nodes): {}\n  replay: cargo run --release -p synod-sim --bin synod-sim -- --seed {} --trace",
            o.seed,
            o.nodes,
            o.violation.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            o.seed
        );
    }
    assert!(
        summary.failures.is_empty(),
        "{} violating seeds",
        summary.failures.len()
    );
    assert_eq!(summary.seeds, seeds.end - seeds.start);
    // The runs must have done real work, or passing proves nothing.
    assert!(
        summary.leader_terms >= summary.seeds,
        "too few elections: {summary:?}"
    );
    assert!(
        summary.acked >= 100 * summary.seeds,
        "too few acknowledged writes: {summary:?}"
    );
}

#[test]
fn ci_batch_all_faults_300_seeds() {
    batch(1..301, Faults::all());
}

#[test]
fn ci_batch_no_faults_keeps_one_leader() {
    let summary = run_many(1001..1031, 2, &|seed| {
        let mut c = SimConfig::new(seed, nodes_for_seed(seed));
        c.faults = Faults::none();
        c
    });
    assert!(summary.failures.is_empty());
    // Without faults the first leader keeps its office for the whole run.
    assert_eq!(
        summary.leader_terms, summary.seeds,
        "leader changed without faults: {summary:?}"
    );
    assert_eq!(summary.crashes, 0);
}

#[test]
fn ci_batch_each_fault_kind_alone() {
    for name in [
        "loss",
        "duplicate",
        "reorder",
        "delay",
        "partition",
        "crash",
    ] {
        let faults = Faults::parse(name).unwrap();
        let summary = run_many(2001..2031, 2, &|seed| {
            let mut c = SimConfig::new(seed, nodes_for_seed(seed));
            c.faults = faults;
            c
        });
        assert!(
            summary.failures.is_empty(),
            "{name}: {:?}",
            summary.failures[0].violation
        );
    }
}
