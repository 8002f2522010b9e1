//! # synod-sim: a seeded, deterministic simulation of Synod's Raft core
//!
//! Runs N replicas of [`synod_core::Raft`] against a simulated network and
//! simulated disks, injects faults, and checks the Raft safety properties
//! after every step (see [`invariants`]). The same seed replays the same
//! run exactly, so any violation is a one-line reproduction:
//! `cargo run --release -p synod-sim --bin synod-sim -- --seed S --trace`.
#![deny(missing_docs)]

pub mod invariants;
pub mod world;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use synod_core::Bugs;
pub use world::{Faults, Outcome, SimConfig, World};

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Outcome {
    World::new(cfg).run()
}

/// Group sizes cycled through by seed when none is forced: 3, 5 and 7.
pub const NODE_COUNTS: [usize; 3] = [3, 5, 7];

/// The group size for `seed` (cycling through [`NODE_COUNTS`]).
pub fn nodes_for_seed(seed: u64) -> usize {
    NODE_COUNTS[(seed % NODE_COUNTS.len() as u64) as usize]
}

/// Totals over many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Runs that reported a violation, in seed order.
    pub failures: Vec<Outcome>,
    /// Elections started.
    pub elections: u64,
    /// Terms with a leader.
    pub leader_terms: u64,
    /// Entries committed and applied (highest applied index, summed).
    pub committed: u64,
    /// Messages sent.
    pub messages: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Snapshots adopted by followers (InstallSnapshot, §7).
    pub snapshots_installed: u64,
    /// Values acknowledged to clients.
    pub acked: u64,
    /// Longest convergence after heal, in ticks.
    pub max_heal_ticks: u64,
    /// Messages lost, duplicated, reordered and delayed (see [`Outcome`]).
    pub lost: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Messages that overtook an earlier one on their link.
    pub reordered: u64,
    /// Messages held back for many ticks.
    pub delayed: u64,
    /// Partitions put in place.
    pub partitions: u64,
    /// Nodes restarted with an empty disk.
    pub wipes: u64,
    /// Wiped nodes that caught up and left the rejoining state.
    pub rejoined: u64,
    /// Linearizable reads answered and checked.
    pub reads_checked: u64,
    /// Of them, reads a leader answered under its lease.
    pub lease_reads: u64,
    /// Times a replica quiesced.
    pub quiesced: u64,
    /// Leader transfers a leader accepted.
    pub transfers: u64,
    /// Transfers whose target was elected in the next term.
    pub transfers_completed: u64,
    /// Configuration changes a leader accepted.
    pub conf_changes: u64,
    /// Configuration entries committed.
    pub conf_changes_committed: u64,
    /// The fewest entries committed by one seed that ran to the end
    /// without a violation (`u64::MAX` for none).
    pub min_committed: u64,
    /// The fewest values acknowledged by one seed that ran to the end
    /// without a violation and without a wipe (`u64::MAX` for none). A
    /// wiped replica counts toward no commit until a leader confirmed
    /// without it answers its rejoin request, so a group that also has a
    /// replica down is rightly unavailable, and under this much chaos a
    /// wiped seed may acknowledge nothing before the heal; its safety
    /// checks still run, and `min_committed` still covers it.
    pub min_acked: u64,
    /// The seeds that set `min_committed` and `min_acked` (to replay).
    pub min_seeds: (u64, u64),
    /// `(acked, seed)` of every seed counted in `min_acked`, for the ack
    /// floor's rate.
    pub acked_by_seed: Vec<(u64, u64)>,
}

impl Summary {
    /// `(acked, seed)` of the seeds without a wipe or violation that
    /// acknowledged fewer than `floor` writes, fewest first.
    pub fn starved(&self, floor: u64) -> Vec<(u64, u64)> {
        let mut starved: Vec<(u64, u64)> = self
            .acked_by_seed
            .iter()
            .filter(|(acked, _)| *acked < floor)
            .copied()
            .collect();
        starved.sort_unstable();
        starved
    }

    /// How many starved seeds (see [`Summary::starved`]) a batch may hold
    /// and still count as having made progress: one in 1,000, rounded up.
    pub fn starved_allowed(&self) -> usize {
        (self.seeds as usize).div_ceil(1000)
    }

    /// Why this batch proves less than it seems, if it does: a seed that
    /// committed fewer than `min_committed` entries, more than one seed in
    /// 1,000 (rounded up) that acknowledged fewer than `min_acked` writes,
    /// or (over 100
    /// seeds or more) a fault kind
    /// of `faults` that never fired, crashes that never led to a snapshot
    /// install, or transfers none of which completed. Empty when the batch
    /// did real work.
    pub fn unproven(&self, faults: Faults, min_committed: u64, min_acked: u64) -> Vec<String> {
        let mut why = Vec::new();
        if self.seeds == 0 {
            return vec!["no seed ran".into()];
        }
        if self.min_committed < min_committed {
            why.push(format!(
                "seed {} committed only {} entries (floor {min_committed})",
                self.min_seeds.0, self.min_committed
            ));
        }
        // The ack floor is a rate: under this much chaos (no pre-vote,
        // seven nodes, a tenth of the messages lost, crashes) about one
        // seed in a few thousand never keeps a leader long enough to
        // acknowledge more than a handful of writes, and which one it is
        // moves with every change to the timers. More than one in 1,000
        // (rounded up) means the core stopped making progress.
        let starved = self.starved(min_acked);
        let allowed = self.starved_allowed();
        if starved.len() > allowed {
            let some: Vec<String> = starved
                .iter()
                .take(5)
                .map(|(acked, seed)| format!("seed {seed}: {acked}"))
                .collect();
            why.push(format!(
                "{} seeds acknowledged fewer than {min_acked} writes, more than the {allowed} \
                 allowed (one in 1,000, rounded up): {}",
                starved.len(),
                some.join(", ")
            ));
        }
        if self.seeds < 100 {
            return why;
        }
        let fired = [
            (faults.loss, "loss", self.lost),
            (faults.duplicate, "duplicate", self.duplicated),
            (faults.reorder, "reorder", self.reordered),
            (faults.delay, "delay", self.delayed),
            (faults.partition, "partition", self.partitions),
            (faults.crash, "crash", self.crashes),
            (faults.wipe, "wipe", self.wipes),
            (faults.crash, "snapshot install", self.snapshots_installed),
            (faults.transfer, "transfer", self.transfers),
            (
                faults.transfer,
                "completed transfer",
                self.transfers_completed,
            ),
            (faults.members, "conf change", self.conf_changes),
            (
                faults.members,
                "committed conf change",
                self.conf_changes_committed,
            ),
        ];
        for (on, kind, count) in fired {
            if on && count == 0 {
                why.push(format!("{kind} never happened in {} seeds", self.seeds));
            }
        }
        if self.reads_checked == 0 {
            why.push(format!("no read was answered in {} seeds", self.seeds));
        }
        if self.lease_reads == 0 {
            why.push(format!("no lease read was served in {} seeds", self.seeds));
        }
        if self.quiesced == 0 {
            why.push(format!("no replica quiesced in {} seeds", self.seeds));
        }
        why
    }
}

/// Runs every seed of `seeds` on `jobs` threads; `make` builds each run's
/// configuration. Results do not depend on `jobs`.
pub fn run_many(
    seeds: Range<u64>,
    jobs: usize,
    make: &(dyn Fn(u64) -> SimConfig + Sync),
) -> Summary {
    let next = AtomicU64::new(seeds.start);
    let summary = Mutex::new(Summary {
        min_committed: u64::MAX,
        min_acked: u64::MAX,
        min_seeds: (0, 0),
        acked_by_seed: Vec::new(),
        ..Summary::default()
    });
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                let o = run(make(seed));
                let mut sum = summary.lock().unwrap_or_else(|e| e.into_inner());
                sum.seeds += 1;
                sum.elections += o.elections;
                sum.leader_terms += o.leader_terms as u64;
                sum.committed += o.committed;
                sum.messages += o.messages;
                sum.crashes += o.crashes;
                sum.snapshots_installed += o.snapshots_installed;
                sum.acked += o.acked as u64;
                sum.max_heal_ticks = sum.max_heal_ticks.max(o.heal_ticks_used);
                sum.lost += o.lost;
                sum.duplicated += o.duplicated;
                sum.reordered += o.reordered;
                sum.delayed += o.delayed;
                sum.partitions += o.partitions;
                sum.wipes += o.wipes;
                sum.rejoined += o.rejoined;
                sum.transfers += o.transfers;
                sum.reads_checked += o.reads_checked;
                sum.lease_reads += o.lease_reads;
                sum.quiesced += o.quiesced;
                sum.transfers_completed += o.transfers_completed;
                sum.conf_changes += o.conf_changes;
                sum.conf_changes_committed += o.conf_changes_committed;
                if o.violation.is_some() {
                    // A violation ends the run early: it says nothing
                    // about progress.
                    sum.failures.push(o);
                } else {
                    if o.committed < sum.min_committed {
                        sum.min_committed = o.committed;
                        sum.min_seeds.0 = o.seed;
                    }
                    if o.wipes == 0 {
                        sum.acked_by_seed.push((o.acked as u64, o.seed));
                        if (o.acked as u64) < sum.min_acked {
                            sum.min_acked = o.acked as u64;
                            sum.min_seeds.1 = o.seed;
                        }
                    }
                }
            });
        }
    });
    let mut sum = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    sum.failures.sort_by_key(|o| o.seed);
    sum
}
