//! The `groups` workload (issue 10's yardstick): three node processes on
//! loopback hosting `--groups N` key-value groups. It reports, on one
//! summary line: seconds from the start of the processes until every group
//! has a leader; idle CPU per node (cores, over a window after the
//! elections) and RSS per node and per group; leaders per node; then
//! writes spread over all groups (closed loop, `--clients`), writes/s and
//! p99; then SIGKILL of the node that leads the most groups and seconds
//! until every one of its groups has a new leader, and whether a write to
//! each of them succeeds.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use synod::kv::Put;
use synod::local::LocalCluster;
use synod::Client;

/// Options of the `groups` workload.
#[derive(clap::Args, Debug)]
pub struct GroupsArgs {
    /// Groups hosted by every node.
    #[arg(long, default_value_t = 1000)]
    pub groups: u64,
    /// Closed-loop writers, spread over the groups.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Seconds of writes measured.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of the idle CPU window.
    #[arg(long, default_value_t = 5)]
    pub idle_seconds: u64,
    /// How long the elections (and the failover) may take, in seconds.
    #[arg(long, default_value_t = 300)]
    pub patience: u64,
    /// Directory for the cluster (default: under the current one).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Keep the cluster directory (node logs, data) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// The nodes' log level (their logs are in the cluster directory).
    #[arg(long, default_value = "warn")]
    pub log_level: synod::LogLevel,
}

/// Runs the workload and prints its summary line.
pub fn run(a: &GroupsArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(a))
}

/// Each group's leader as the nodes in `nodes` report it (a group counts
/// as led when some node says it leads it).
async fn leaders(client: &Client, nodes: &[u64]) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for &n in nodes {
        // The leader hints (asking no group): polling the full status of
        // ten thousand groups every 100 ms loaded the nodes it measured.
        if let Ok(led) = client.leaders(n).await {
            for (group, leader) in led {
                if leader == n {
                    out.insert(group, n);
                }
            }
        }
    }
    out
}

/// Waits until every group of `want` has a leader among `nodes`; the
/// leaders then.
async fn await_leaders(
    client: &Client,
    nodes: &[u64],
    want: &BTreeSet<u64>,
    patience: Duration,
) -> Result<BTreeMap<u64, u64>, String> {
    let deadline = Instant::now() + patience;
    loop {
        let led = leaders(client, nodes).await;
        let missing = want.iter().filter(|g| !led.contains_key(g)).count();
        if missing == 0 {
            return Ok(led);
        }
        if Instant::now() > deadline {
            let some: Vec<u64> = want
                .iter()
                .filter(|g| !led.contains_key(g))
                .take(5)
                .copied()
                .collect();
            return Err(format!(
                "{missing} groups still have no leader among nodes {nodes:?} after {patience:?} \
                 (for instance {some:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    synod::local::rss_kib_of(pid).unwrap_or(0)
}

async fn run_async(a: &GroupsArgs) -> Result<(), String> {
    let (dir, mut opts) = crate::cluster_options("groups", a.dir.as_deref())?;
    opts.kv_groups = a.groups;
    opts.log_level = a.log_level;
    let started = Instant::now();
    let mut cluster = LocalCluster::start(opts)?;
    let mut cfg = cluster.client_config().map_err(|e| e.to_string())?;
    cfg.timeout = Duration::from_secs(30);
    let client = Client::new(cfg).map_err(|e| e.to_string())?;
    let nodes = [1u64, 2, 3];
    let all: BTreeSet<u64> = (1..=a.groups).collect();
    let patience = Duration::from_secs(a.patience);
    let led = await_leaders(&client, &nodes, &all, patience).await?;
    let elected_s = started.elapsed().as_secs_f64();

    // Idle: nothing but the groups' own timers and heartbeats.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0: Vec<Duration> = nodes
        .iter()
        .map(|&n| cluster.cpu_time(n).unwrap_or_default())
        .collect();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.idle_seconds)).await;
    let idle: Vec<f64> = nodes
        .iter()
        .zip(&cpu0)
        .map(|(&n, c0)| {
            (cluster.cpu_time(n).unwrap_or_default() - *c0).as_secs_f64()
                / t0.elapsed().as_secs_f64()
        })
        .collect();
    // Groups still ticking after the window (the rest are quiesced), and
    // leaderships the balancer moved so far (it runs in the window too).
    let mut awake = Vec::new();
    let mut moved = 0;
    for &n in &nodes {
        let s = client.stats(n).await.unwrap_or_default();
        awake.push(s.awake_groups.to_string());
        moved += s.balance_transfers;
    }
    let awake = awake.join("/");
    let rss: Vec<u64> = nodes
        .iter()
        .map(|&n| cluster.pid(n).map_or(0, rss_kib))
        .collect();
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for n in led.values() {
        *per_node.entry(*n).or_default() += 1;
    }

    // Writes spread over every group.
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let counts = Rc::new(RefCell::new((0u64, 0u64)));
    let stop = Rc::new(RefCell::new(false));
    let local = tokio::task::LocalSet::new();
    for c in 0..a.clients {
        let (client, hist, counts, stop) = (
            client.clone(),
            Rc::clone(&hist),
            Rc::clone(&counts),
            Rc::clone(&stop),
        );
        let groups = a.groups;
        local.spawn_local(async move {
            let mut n = 0u64;
            while !*stop.borrow() {
                let group = 1 + (c as u64 + n * a_prime()) % groups;
                let put = Put {
                    key: format!("c{c}-{n}"),
                    value: vec![b'x'; 100],
                };
                let t = Instant::now();
                let ok = client.send(group, put).await.is_ok();
                n += 1;
                let mut k = counts.borrow_mut();
                if ok {
                    k.0 += 1;
                    hist.borrow_mut()
                        .saturating_record(t.elapsed().as_micros() as u64);
                } else {
                    k.1 += 1;
                }
            }
        });
    }
    let secs = a.seconds;
    let me = std::process::id();
    let (w0, w1) = local
        .run_until(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            *counts.borrow_mut() = (0, 0);
            hist.borrow_mut().reset();
            let w0 = WriteCosts::sample(&client, &cluster, &nodes, me).await;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let w1 = WriteCosts::sample(&client, &cluster, &nodes, me).await;
            *stop.borrow_mut() = true;
            (w0, w1)
        })
        .await;
    let (writes, errors) = *counts.borrow();
    let costs = w1.minus(&w0, writes.max(1) as f64);
    let p99 = hist.borrow().value_at_quantile(0.99);

    // Failover: kill the node that leads the most groups.
    let (&victim, &victim_leads) = per_node
        .iter()
        .max_by_key(|(_, &c)| c)
        .ok_or("no leaders")?;
    let orphans: BTreeSet<u64> = led
        .iter()
        .filter(|(_, &n)| n == victim)
        .map(|(&g, _)| g)
        .collect();
    let killed = Instant::now();
    cluster.kill(victim);
    let survivors: Vec<u64> = nodes.iter().copied().filter(|&n| n != victim).collect();
    await_leaders(&client, &survivors, &orphans, patience).await?;
    let failover_s = killed.elapsed().as_secs_f64();
    // A write to each of its groups; a put is idempotent, so an unknown
    // outcome (the first request to the dead node's connection) is retried.
    let mut failed_writes = 0;
    for &g in &orphans {
        let put = Put {
            key: format!("after-kill-{g}"),
            value: b"x".to_vec(),
        };
        let mut ok = false;
        for _ in 0..3 {
            if client.send(g, put.clone()).await.is_ok() {
                ok = true;
                break;
            }
        }
        if !ok {
            failed_writes += 1;
        }
    }
    println!(
        "groups: {}, elected_s: {elected_s:.1}, idle_cores: {:.3}/{:.3}/{:.3}, awake: {awake}, balancer_moves: {moved}, rss_mib: {:.0}/{:.0}/{:.0}, \
         rss_kib/group: {:.1}, leaders: {}, writes/s: {:.0}, p99_us: {p99}, errors: {errors}, {costs}, \
         killed: node {victim} ({victim_leads} leaders), failover_s: {failover_s:.1}, \
         writes_failed_after: {failed_writes}",
        a.groups,
        idle[0],
        idle[1],
        idle[2],
        rss[0] as f64 / 1024.0,
        rss[1] as f64 / 1024.0,
        rss[2] as f64 / 1024.0,
        rss.iter().sum::<u64>() as f64 / 3.0 / a.groups as f64,
        per_node
            .iter()
            .map(|(n, c)| format!("{n}={c}"))
            .collect::<Vec<_>>()
            .join("/"),
        writes as f64 / secs as f64,
    );
    client.close().await;
    drop(cluster);
    if a.keep {
        eprintln!("kept the cluster directory: {}", dir.keep().display());
    }
    Ok(())
}

/// Counters sampled at both ends of the write window.
#[derive(Default)]
struct WriteCosts {
    node_cpu: f64,
    client_cpu: f64,
    items: f64,
    frames: f64,
    rounds: f64,
    log_writes: f64,
}

impl WriteCosts {
    async fn sample(client: &Client, cluster: &LocalCluster, nodes: &[u64], me: u32) -> Self {
        let mut c = WriteCosts {
            client_cpu: synod::local::cpu_time_of(me)
                .unwrap_or_default()
                .as_secs_f64(),
            ..Default::default()
        };
        for &n in nodes {
            c.node_cpu += cluster.cpu_time(n).unwrap_or_default().as_secs_f64();
            let s = client.stats(n).await.unwrap_or_default();
            c.items += s.items_sent as f64;
            c.frames += s.frames_sent as f64;
            c.rounds += s.log_rounds as f64;
            c.log_writes += s.log_writes as f64;
        }
        c
    }

    /// The cost per write between `before` and `self`, as a summary field.
    fn minus(&self, before: &Self, writes: f64) -> String {
        format!(
            "node_cpu_us/write: {:.0}, client_cpu_us/write: {:.0}, raft_items/write: {:.1}, \
             raft_frames/write: {:.2}, log_writes/write: {:.2}, log_rounds/write: {:.3}",
            (self.node_cpu - before.node_cpu) * 1e6 / writes,
            (self.client_cpu - before.client_cpu) * 1e6 / writes,
            (self.items - before.items) / writes,
            (self.frames - before.frames) / writes,
            (self.log_writes - before.log_writes) / writes,
            (self.rounds - before.rounds) / writes,
        )
    }
}

/// A stride that walks every group (any number coprime to most group
/// counts would do).
fn a_prime() -> u64 {
    7919
}
