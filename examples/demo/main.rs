//! `synod-demo`: a three-node cluster on this machine (separate processes,
//! real QUIC with mutual TLS, real WALs with fsync), several groups of the
//! built-in key-value actor, a closed-loop write workload, the node leading
//! the most groups killed with SIGKILL mid-run, the cluster carrying on,
//! the node restarted and catching up, every acknowledged write read back,
//! and a summary.
//!
//! `cargo run --release --bin synod-demo [-- --seconds 6 --clients 64 --groups 8]`

/// mimalloc, as the `synod` binary (docs/BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use synod::cli::{run_node, NodeArgs};
use synod::kv::{Get, Put};
use synod::local::{ClusterOptions, LocalCluster};
use synod::SynodError;

/// The demo's options.
#[derive(Parser, Debug)]
#[command(
    name = "synod-demo",
    about = "Synod's multi-group demo: a 3-node cluster, a workload, a leader killed"
)]
struct Cli {
    #[command(subcommand)]
    node: Option<Sub>,
    /// Seconds of workload before the kill, and again after it.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Concurrent clients (closed loop: one write in flight each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Raft groups (key-value actors), spread over the three nodes.
    #[arg(long, default_value_t = 8)]
    groups: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// (internal) Run one node of the demo cluster.
    #[command(hide = true)]
    Node(NodeArgs),
}

/// An acknowledged write: (group, key) and the value.
type Acked = ((u64, String), Vec<u8>);

/// What the workload saw.
#[derive(Default)]
struct Record {
    latency: Option<Histogram<u64>>,
    /// (completion time since start, group) of every acknowledged write.
    successes: Vec<(Duration, u64)>,
    /// key -> last acknowledged value, per group.
    acked: BTreeMap<(u64, String), Vec<u8>>,
    unknown_outcome: u64,
    retried: u64,
}

fn main() {
    let cli = Cli::parse();
    if let Some(Sub::Node(args)) = &cli.node {
        if let Err(e) = run_node(args) {
            eprintln!("synod-demo node: {e}");
            std::process::exit(1);
        }
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod-demo: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(demo(&cli)) {
        eprintln!("synod-demo: {e}");
        std::process::exit(1);
    }
}

async fn demo(cli: &Cli) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("synod-demo-")
        .tempdir_in(std::env::current_dir().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut opts = ClusterOptions::new(dir.path(), exe, vec!["node".into()]);
    opts.kv_groups = cli.groups;
    opts.log_level = synod::LogLevel::Warn;
    let election = Duration::from_millis(opts.tick_ms * opts.election_ticks as u64);
    println!(
        "synod-demo: starting 3 nodes, {} groups, election timeout {}-{} ms, fsync always, data in {}",
        cli.groups,
        election.as_millis(),
        2 * election.as_millis(),
        dir.path().display()
    );
    let mut cluster = LocalCluster::start(opts)?;
    let client = cluster.client().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    for g in 1..=cli.groups {
        wait_for(
            &format!("a leader for group {g}"),
            Duration::from_secs(30),
            || async {
                client
                    .find_leader(g)
                    .await
                    .ok_or_else(|| "none yet".to_string())
            },
        )
        .await?;
    }
    println!(
        "all groups have leaders after {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    let record = Rc::new(RefCell::new(Record {
        latency: Some(Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())?),
        ..Record::default()
    }));
    let start = Instant::now();
    let stop_at = Rc::new(RefCell::new(start + Duration::from_secs(cli.seconds * 3)));
    let local = tokio::task::LocalSet::new();
    let value = vec![b'v'; cli.value_size];

    // The workload: closed-loop clients writing fresh keys.
    let mut tasks = Vec::new();
    for c in 0..cli.clients {
        let client = client.clone();
        let record = Rc::clone(&record);
        let stop_at = Rc::clone(&stop_at);
        let value = value.clone();
        let groups = cli.groups;
        tasks.push(local.spawn_local(async move {
            let mut seq = 0u64;
            while Instant::now() < *stop_at.borrow() {
                let group = 1 + (c as u64 + seq) % groups;
                let key = format!("c{c}-{seq}");
                seq += 1;
                let mut v = value.clone();
                v.extend_from_slice(key.as_bytes());
                let t = Instant::now();
                loop {
                    match client
                        .send(
                            group,
                            Put {
                                key: key.clone(),
                                value: v.clone(),
                            },
                        )
                        .await
                    {
                        Ok(_) => {
                            let mut r = record.borrow_mut();
                            if let Some(h) = r.latency.as_mut() {
                                h.saturating_record(t.elapsed().as_micros() as u64);
                            }
                            r.successes.push((start.elapsed(), group));
                            r.acked.insert((group, key.clone()), v.clone());
                            break;
                        }
                        // Put is idempotent: retrying an unknown outcome
                        // with the same value is safe.
                        Err(SynodError::Timeout { .. })
                        | Err(SynodError::Stopped { .. })
                        | Err(SynodError::ConnectionLost { .. })
                        | Err(SynodError::OutcomeUnknown { .. }) => {
                            record.borrow_mut().unknown_outcome += 1;
                        }
                        Err(_) => {
                            record.borrow_mut().retried += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    if Instant::now() >= *stop_at.borrow() + Duration::from_secs(20) {
                        break;
                    }
                }
            }
        }));
    }

    let close: Rc<RefCell<Option<Duration>>> = Rc::default();
    let kill_report = local
        .run_until(async {
            tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
            // Kill the node that leads the most groups.
            let mut leads: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for g in 1..=cli.groups {
                if let Some(l) = client.find_leader(g).await {
                    leads.entry(l).or_default().push(g);
                }
            }
            let (victim, victim_groups) = leads
                .iter()
                .max_by_key(|(_, gs)| gs.len())
                .map(|(n, gs)| (*n, gs.clone()))
                .ok_or("no leaders before the kill")?;
            let killed_at = start.elapsed();
            cluster.kill(victim);
            println!(
                "t={:.1}s: SIGKILL node {victim}, leader of groups {victim_groups:?}",
                killed_at.as_secs_f64()
            );
            tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
            let restarted_at = start.elapsed();
            cluster.restart(victim)?;
            println!(
                "t={:.1}s: node {victim} restarted",
                restarted_at.as_secs_f64()
            );
            // While the workload runs on, poll until the restarted node is
            // within 200 entries of the others in every group.
            let phase_end = start + Duration::from_secs(cli.seconds * 3);
            let mut close_after = None;
            while Instant::now() < phase_end {
                let others: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();
                if close_after.is_none()
                    && synod::local::lag(&client, victim, &others, cli.groups)
                        .await
                        .is_ok_and(|l| l < 200)
                {
                    close_after = Some(start.elapsed() - restarted_at);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            *close.borrow_mut() = close_after;
            for t in tasks {
                let _ = t.await;
            }
            Ok::<_, String>((victim, victim_groups, killed_at, restarted_at))
        })
        .await?;
    let (victim, victim_groups, killed_at, restarted_at) = kill_report;
    let end = start.elapsed();

    // The restarted node catches up.
    let others: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();
    wait_for(
        "the restarted node to catch up",
        Duration::from_secs(60),
        || async { synod::local::caught_up(&client, victim, &others, cli.groups).await },
    )
    .await?;
    let caught_up_after = start.elapsed() - restarted_at;

    // Every acknowledged write is there: read back with 64 readers.
    let acked: Vec<Acked> = record.borrow().acked.clone().into_iter().collect();
    let checked = acked.len();
    let chunks: Vec<Vec<Acked>> = acked
        .chunks(acked.len().div_ceil(64).max(1))
        .map(|c| c.to_vec())
        .collect();
    let verify = tokio::task::LocalSet::new();
    let mut readers = Vec::new();
    for chunk in chunks {
        let client = client.clone();
        readers.push(verify.spawn_local(async move {
            for ((group, key), v) in chunk {
                let got = wait_for(
                    &format!("reading {key}"),
                    Duration::from_secs(30),
                    || async {
                        client
                            .read(group, Get { key: key.clone() })
                            .await
                            .map_err(|e| e.to_string())
                    },
                )
                .await?;
                if got.as_ref() != Some(&v) {
                    return Err(format!(
                        "group {group} key {key}: acknowledged value lost (read {got:?})"
                    ));
                }
            }
            Ok::<_, String>(())
        }));
    }
    verify
        .run_until(async {
            for r in readers {
                r.await.map_err(|e| e.to_string())??;
            }
            Ok::<_, String>(())
        })
        .await?;
    // Everything below only reads the record; take it out of the RefCell.
    let r = std::mem::take(&mut *record.borrow_mut());

    // Failover: per affected group, the gap between the kill and its first
    // acknowledged write afterwards.
    let mut failovers = Vec::new();
    for g in &victim_groups {
        if let Some((t, _)) = r
            .successes
            .iter()
            .find(|(t, grp)| grp == g && *t > killed_at)
        {
            failovers.push(*t - killed_at);
        }
    }
    failovers.sort();
    let phase = |a: Duration, b: Duration| {
        let n = r
            .successes
            .iter()
            .filter(|(t, _)| *t >= a && *t < b)
            .count();
        n as f64 / (b - a).as_secs_f64()
    };
    let h = r.latency.as_ref().ok_or("no histogram")?;
    println!();
    println!("== synod-demo summary ==");
    println!(
        "cluster:     3 nodes (separate processes), {} groups, QUIC + mutual TLS, fsync always",
        cli.groups
    );
    println!(
        "workload:    {} closed-loop clients, {}-byte puts, {:.1} s",
        cli.clients,
        cli.value_size,
        end.as_secs_f64()
    );
    println!(
        "writes:      {} acknowledged, {:.0}/s overall; {:.0}/s before the kill, {:.0}/s with node {victim} down, {:.0}/s after its restart",
        r.successes.len(),
        r.successes.len() as f64 / end.as_secs_f64(),
        phase(Duration::ZERO, killed_at),
        phase(killed_at, restarted_at),
        phase(restarted_at, end),
    );
    println!(
        "latency:     p50 {} us, p99 {} us, p999 {} us, max {} us",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    match (failovers.first(), failovers.last()) {
        (Some(min), Some(max)) => println!(
            "failover:    node {victim} (leader of {} groups) killed; writes to those groups resumed after {:.0}-{:.0} ms (election timeout {}-{} ms)",
            victim_groups.len(),
            min.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0,
            election.as_millis(),
            2 * election.as_millis()
        ),
        _ => println!("failover:    no write reached the affected groups after the kill"),
    }
    match *close.borrow() {
        Some(t) => println!(
            "recovery:    node {victim} restarted and was within 200 entries of the others in every group {:.1} s later (under load)",
            t.as_secs_f64()
        ),
        None => println!(
            "recovery:    node {victim} restarted; it caught up after the workload ended ({:.1} s after its restart)",
            caught_up_after.as_secs_f64()
        ),
    }
    println!(
        "safety:      all {checked} acknowledged writes read back (linearizable reads); {} unknown outcomes retried (Put is idempotent), {} safe retries",
        r.unknown_outcome, r.retried
    );
    client.close().await;
    cluster.stop_all();
    Ok(())
}

async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(format!("waiting for {what}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
