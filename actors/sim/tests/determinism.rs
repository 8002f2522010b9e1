//! A seed replays exactly: same seed, same trace, same outcome.

use synod_sim::{run, SimConfig};

fn traced(seed: u64) -> (Vec<String>, u64, u64) {
    let mut c = SimConfig::new(seed, 5);
    c.trace = true;
    c.chaos_ticks = 300;
    let o = run(c);
    (o.trace, o.messages, o.elections)
}

#[test]
fn same_seed_same_run() {
    let a = traced(4242);
    let b = traced(4242);
    assert!(a.0.len() > 100, "trace too short to prove anything");
    assert_eq!(a, b);
}

#[test]
fn different_seeds_differ() {
    assert_ne!(traced(1).0, traced(2).0);
}
