//! The `failover` workload: three node processes at the product's
//! defaults (50 ms ticks, election timeout 500-1,000 ms), closed-loop
//! writers on one group through one `Client`, and `--kills` SIGKILLs of
//! that group's leader, each followed by a restart of the killed node
//! once the group carries on, and a wait until it caught up. For each kill:
//! the time from the SIGKILL until a write succeeds again (the first
//! acknowledged write among those sent after the kill: what a user of
//! the client sees). One summary line: p50, p99 and max over the kills.
//! Everything is at the defaults but the leader balancer, which is off so
//! that each kill hits the leader the client writes to.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use synod::kv::Put;
use synod::local::LocalCluster;

/// Options of the `failover` workload.
#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// Leader kills (each followed by a restart and catch-up).
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Closed-loop writers (one write in flight each).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Directory for the cluster (default: under the current one).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// The writers' client's `ClientConfig::idle_timeout`, in ms (default:
    /// the product's, 1,000; 400 gives sub-second failover, see
    /// docs/BENCHMARKS.md).
    #[arg(long)]
    pub client_idle_ms: Option<u64>,
    /// Print each kill's failover time.
    #[arg(long)]
    pub verbose: bool,
}

/// Runs the workload and prints its summary line.
pub fn run(a: &FailoverArgs) -> Result<(), String> {
    if a.kills == 0 || a.clients == 0 {
        return Err("--kills and --clients must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    rt.block_on(local.run_until(run_async(a)))
}

const GROUP: u64 = 1;

/// Shared between the writers and the kill loop.
#[derive(Default)]
struct Progress {
    /// When the current kill happened (None between kills).
    killed_at: Cell<Option<Instant>>,
    /// The first write acknowledged after `killed_at`.
    recovered_at: Cell<Option<Instant>>,
    acked: Cell<u64>,
    failed: Cell<u64>,
    stop: Cell<bool>,
}

async fn run_async(a: &FailoverArgs) -> Result<(), String> {
    let (_dir, mut opts) = crate::cluster_options("failover", a.dir.as_deref())?;
    opts.kv_groups = 1;
    opts.log_level = synod::LogLevel::Warn;
    // The balancer would hand the group back to each restarted node,
    // and a kill could then hit a node the leadership is leaving.
    opts.balance_leaders = false;
    let (tick, election) = (opts.tick_ms, opts.election_ticks as u64);
    let mut cluster = LocalCluster::start(opts)?;
    let mut cfg = cluster.client_config().map_err(|e| e.to_string())?;
    if let Some(ms) = a.client_idle_ms {
        cfg.idle_timeout = Duration::from_millis(ms);
    }
    let client_idle_ms = cfg.idle_timeout.as_millis();
    let client = synod::Client::new(cfg).map_err(|e| e.to_string())?;
    let admin = cluster.client().map_err(|e| e.to_string())?;
    let progress = Rc::new(Progress::default());
    for c in 0..a.clients {
        let client = client.clone();
        let p = Rc::clone(&progress);
        tokio::task::spawn_local(async move {
            let mut n = 0u64;
            while !p.stop.get() {
                let put = Put {
                    key: format!("w{c}-{n}"),
                    value: vec![b'x'; 100],
                };
                let started = Instant::now();
                match client.send(GROUP, put).await {
                    Ok(_) => {
                        n += 1;
                        p.acked.set(p.acked.get() + 1);
                        // Only a write sent after the kill counts: an
                        // answer the leader sent just before it died can
                        // still arrive after.
                        let after_kill = p.killed_at.get().is_some_and(|k| started >= k);
                        if after_kill && p.recovered_at.get().is_none() {
                            p.recovered_at.set(Some(Instant::now()));
                        }
                    }
                    // Retried (a put of the same value is idempotent).
                    Err(_) => p.failed.set(p.failed.get() + 1),
                }
            }
        });
    }
    let mut failovers = Vec::with_capacity(a.kills);
    let mut changes = 0u64;
    for k in 1..=a.kills {
        // Writes flow, and the node the writers' client sends them to is
        // the leader the group reports (not one the balancer is moving
        // the leadership away from).
        let leader = wait_for(
            Duration::from_secs(30),
            "a settled leader of group 1",
            || async {
                let acked = progress.acked.get();
                tokio::time::sleep(Duration::from_millis(50)).await;
                let cached = client.cached_leader(GROUP)?;
                let found = admin.find_leader(GROUP).await?;
                (progress.acked.get() >= acked + 20 && cached == found).then_some(found)
            },
        )
        .await?;
        let before = leader_changes(&admin, leader).await?;
        progress.recovered_at.set(None);
        let t0 = Instant::now();
        cluster.kill(leader);
        progress.killed_at.set(Some(t0));
        let recovered = wait_for(
            Duration::from_secs(30),
            "a write after the kill",
            || async { progress.recovered_at.get() },
        )
        .await?;
        progress.killed_at.set(None);
        let took = recovered - t0;
        failovers.push(took);
        changes += leader_changes(&admin, leader).await?.saturating_sub(before);
        if a.verbose {
            eprintln!(
                "kill {k}: node {leader}, writes again after {} ms",
                took.as_millis()
            );
        }
        cluster.restart(leader)?;
        let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
        wait_for(
            Duration::from_secs(60),
            "the restarted node to catch up",
            || async {
                synod::local::caught_up(&admin, leader, &others, 1)
                    .await
                    .ok()
            },
        )
        .await?;
    }
    progress.stop.set(true);
    failovers.sort();
    let ms = |q: f64| {
        let i = ((failovers.len() as f64 * q).ceil() as usize).clamp(1, failovers.len()) - 1;
        failovers[i].as_millis()
    };
    println!(
        "kills: {}, failover_ms p50: {}, p99: {}, max: {}, min: {}, election_timeout_ms: {}-{}, \
         elections_by_survivors: {}, writes_acked: {}, writes_failed: {}, client_idle_ms: {}",
        failovers.len(),
        ms(0.5),
        ms(0.99),
        ms(1.0),
        failovers[0].as_millis(),
        tick * election,
        2 * tick * election,
        changes,
        progress.acked.get(),
        progress.failed.get(),
        client_idle_ms,
    );
    client.close().await;
    admin.close().await;
    Ok(())
}

/// Leader changes counted by the nodes other than `killed` (the elections
/// that replaced it).
async fn leader_changes(admin: &synod::Client, killed: u64) -> Result<u64, String> {
    let mut sum = 0;
    for n in (1..=3).filter(|&n| n != killed) {
        sum += admin
            .stats(n)
            .await
            .map_err(|e| format!("stats of node {n}: {e}"))?
            .leader_changes;
    }
    Ok(sum)
}

/// Polls `probe` every 5 ms until it gives a value, for at most `within`.
async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("no {what} within {} s", within.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
