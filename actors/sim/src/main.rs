//! `synod-sim`: run seeds of the deterministic Raft simulation.
//!
//! ```text
//! synod-sim --seeds 1..1000            # many seeds, 3/5/7 nodes by seed
//! synod-sim --seed 42 --trace          # replay one seed with a trace
//! synod-sim --seeds 1..500 --bug vote-without-log-check
//! ```
//! Exits with status 1 when any seed reports a violation.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use synod_sim::{nodes_for_seed, run, run_many, Bugs, Faults, SimConfig};

#[derive(Parser, Debug)]
#[command(
    name = "synod-sim",
    about = "Seeded deterministic simulation of Synod's Raft core"
)]
struct Cli {
    /// Range of seeds to run, `A..B` (B excluded) or `A..=B`.
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<String>,
    /// One seed to replay.
    #[arg(long)]
    seed: Option<u64>,
    /// Force the group size (default: 3, 5 or 7 chosen by seed).
    #[arg(long)]
    nodes: Option<usize>,
    /// Faults: `all`, `none`, or a list of
    /// loss,duplicate,reorder,delay,partition,crash,wipe,transfer,members.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Switch on a deliberate bug (repeatable): vote-without-log-check,
    /// commit-previous-term, reply-before-persisting-vote, leader-ignores-higher-term,
    /// append-without-prev-check, commit-past-verified-entries, rejoin-votes-freely,
    /// rejoin-without-fence, read-index-without-quorum-check, change-before-term-commit,
    /// two-changes-at-once, ack-before-commit (the simulated client's).
    #[arg(long = "bug")]
    bugs: Vec<String>,
    /// Length of the chaos phase in ticks.
    #[arg(long, default_value_t = 1500)]
    chaos_ticks: u64,
    /// Skip each replica's own validate(): only the paper-level checkers judge.
    #[arg(long)]
    skip_validate: bool,
    /// Never take snapshots (replays seeds exactly as before snapshots existed)
    #[arg(long)]
    no_snapshots: bool,
    /// Weight of wipes among the nemesis's actions (1: rare).
    #[arg(long, default_value_t = 1)]
    wipe_weight: usize,
    /// Fail a batch in which a seed committed fewer entries.
    #[arg(long, default_value_t = 20)]
    min_committed: u64,
    /// Fail a batch in which more than one seed in 1,000 (rounded up)
    /// acknowledged fewer writes.
    #[arg(long, default_value_t = 5)]
    min_acked: u64,
    /// Print the trace of the run (with --seed).
    #[arg(long)]
    trace: bool,
    /// Worker threads (default: available cores).
    #[arg(long)]
    jobs: Option<usize>,
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("bad seed range '{s}': write A..B or A..=B, e.g. 1..1000");
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let end = if inclusive { b + 1 } else { b };
    if end <= a {
        return Err(bad());
    }
    Ok(a..end)
}

/// The core's bugs, and whether the simulated client acknowledges on
/// acceptance.
fn parse_bugs(names: &[String]) -> Result<(Bugs, bool), String> {
    let mut b = Bugs::default();
    let mut ack_before_commit = false;
    for n in names {
        match n.as_str() {
            "append-without-prev-check" => b.append_without_prev_check = true,
            "commit-past-verified-entries" => b.commit_past_verified_entries = true,
            "rejoin-votes-freely" => b.rejoin_votes_freely = true,
            "rejoin-without-fence" => b.rejoin_without_fence = true,
            "read-index-without-quorum-check" => b.read_index_without_quorum_check = true,
            "ack-before-commit" => ack_before_commit = true,
            "vote-without-log-check" => b.vote_without_log_check = true,
            "commit-previous-term" => b.commit_previous_term_by_counting = true,
            "reply-before-persisting-vote" => b.reply_before_persisting_vote = true,
            "leader-ignores-higher-term" => b.leader_ignores_higher_term = true,
            "change-before-term-commit" => b.change_before_term_commit = true,
            "two-changes-at-once" => b.two_changes_at_once = true,
            other => return Err(format!("unknown bug '{other}'; see --help")),
        }
    }
    Ok((b, ack_before_commit))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = (|| -> Result<_, String> {
        let faults = Faults::parse(&cli.faults)?;
        let bugs = parse_bugs(&cli.bugs)?;
        if let Some(n) = cli.nodes {
            if n == 0 || n > 64 {
                return Err(format!("--nodes {n}: choose 1 to 64"));
            }
        }
        Ok((faults, bugs))
    })();
    let (faults, (bugs, ack_before_commit)) = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synod-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let make = |seed: u64| {
        let mut c = SimConfig::new(seed, cli.nodes.unwrap_or_else(|| nodes_for_seed(seed)));
        c.faults = faults;
        c.bugs = bugs;
        c.ack_before_commit = ack_before_commit;
        c.wipe_weight = cli.wipe_weight;
        c.chaos_ticks = cli.chaos_ticks;
        c.skip_validate = cli.skip_validate;
        c.snapshots = !cli.no_snapshots;
        c
    };

    if let Some(seed) = cli.seed {
        let mut c = make(seed);
        c.trace = cli.trace;
        let o = run(c);
        for line in &o.trace {
            println!("{line}");
        }
        let v = u64::from(o.violation.is_some());
        if let Some(viol) = &o.violation {
            println!("violation: seed {seed} nodes {}: {viol}", o.nodes);
        }
        println!(
            "seeds: 1, violations: {v}, nodes: {}, elections: {}, leader_terms: {}, committed: {}, \
             acked: {}, messages: {}, dropped: {}, lost: {}, duplicated: {}, reordered: {}, \
             delayed: {}, partitions: {}, crashes: {}, wipes: {}, rejoined: {}, \
             snapshots_installed: {}, transfers: {}, transfers_completed: {}, conf_changes: {}, \
             conf_changes_committed: {}, reads: {}, reads_checked: {}, lease_reads: {}, \
             quiesced: {}, heal_ticks: {}",
            o.nodes,
            o.elections,
            o.leader_terms,
            o.committed,
            o.acked,
            o.messages,
            o.dropped,
            o.lost,
            o.duplicated,
            o.reordered,
            o.delayed,
            o.partitions,
            o.crashes,
            o.wipes,
            o.rejoined,
            o.snapshots_installed,
            o.transfers,
            o.transfers_completed,
            o.conf_changes,
            o.conf_changes_committed,
            o.reads,
            o.reads_checked,
            o.lease_reads,
            o.quiesced,
            o.heal_ticks_used
        );
        return if v > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }

    let range = match parse_range(cli.seeds.as_deref().unwrap_or("1..100")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("synod-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let jobs = cli
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let start = Instant::now();
    let s = run_many(range, jobs, &make);
    // Everything but the seed that shapes a run, so the replay is exact.
    let mut replay_args: String = cli.bugs.iter().map(|b| format!(" --bug {b}")).collect();
    if cli.faults != "all" {
        replay_args += &format!(" --faults {}", cli.faults);
    }
    if cli.wipe_weight != 1 {
        replay_args += &format!(" --wipe-weight {}", cli.wipe_weight);
    }
    if let Some(n) = cli.nodes {
        replay_args += &format!(" --nodes {n}");
    }
    if cli.chaos_ticks != 1500 {
        replay_args += &format!(" --chaos-ticks {}", cli.chaos_ticks);
    }
    if cli.skip_validate {
        replay_args += " --skip-validate";
    }
    if cli.no_snapshots {
        replay_args += " --no-snapshots";
    }
    for o in s.failures.iter().take(20) {
        if let Some(v) = &o.violation {
            println!(
                "violation: seed {} nodes {}: {v}\n  replay: cargo run --release -p synod-sim \
                 --bin synod-sim -- --seed {} --trace{}",
                o.seed, o.nodes, o.seed, replay_args
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "seeds: {}, violations: {}, elections: {}, leader_terms: {}, committed: {}, acked: {}, \
         messages: {}, lost: {}, duplicated: {}, reordered: {}, delayed: {}, partitions: {}, \
         crashes: {}, wipes: {}, rejoined: {}, snapshots_installed: {}, transfers: {}, \
         transfers_completed: {}, conf_changes: {}, conf_changes_committed: {}, \
         reads_checked: {}, lease_reads: {}, quiesced: {}, max_heal_ticks: {}, \
         min_committed: {}, \
         min_acked: {}, seconds: {secs:.1}",
        s.seeds,
        s.failures.len(),
        s.elections,
        s.leader_terms,
        s.committed,
        s.acked,
        s.messages,
        s.lost,
        s.duplicated,
        s.reordered,
        s.delayed,
        s.partitions,
        s.crashes,
        s.wipes,
        s.rejoined,
        s.snapshots_installed,
        s.transfers,
        s.transfers_completed,
        s.conf_changes,
        s.conf_changes_committed,
        s.reads_checked,
        s.lease_reads,
        s.quiesced,
        s.max_heal_ticks,
        s.min_committed,
        s.min_acked
    );
    // A batch that did no real work proves nothing; with a bug on, the
    // violations are the point and runs stop early.
    let unproven = if cli.bugs.is_empty() {
        s.unproven(faults, cli.min_committed, cli.min_acked)
    } else {
        Vec::new()
    };
    for why in &unproven {
        println!("unproven: {why}");
    }
    if s.failures.is_empty() && unproven.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
