//! The `cluster` workload: a three-node cluster of separate processes on
//! loopback (this binary re-executed as nodes), driven by closed-loop
//! clients writing 100-byte values (`--op write`), reading them back
//! linearizably (`--op read`: ReadIndex, no log entry), or both (`--op
//! mixed`: 90% reads). CPU is summed over the node processes
//! (from /proc), fsyncs are counted by each node's log writer and averaged
//! over the nodes; both are taken over the measured window only.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use synod::kv::{Get, Put};
use synod::local::LocalCluster;

/// Options of the `cluster` workload.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Closed-loop clients (one write in flight each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Raft groups the writes are spread over.
    #[arg(long, default_value_t = 1)]
    pub groups: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// `storage.fsync` of the nodes: always, never, or an interval.
    #[arg(long, default_value = "always")]
    pub fsync: synod::Fsync,
    /// Directory for the cluster (default: under the current one).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Client endpoints to spread the clients over.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// What the clients do: `write` (a Put each), `read` (a linearizable
    /// Get of a key the client wrote before the warm-up), `read-lease`
    /// (the same under the leader's lease; turns `raft.lease_reads` on),
    /// `mixed` (90% reads, 10% writes).
    #[arg(long, value_enum, default_value_t = Op::Write)]
    pub op: Op,
}

/// The operation mix of the `cluster` workload.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Every operation is a write.
    Write,
    /// Every operation is a linearizable read (ReadIndex).
    Read,
    /// Every operation is a lease read.
    ReadLease,
    /// Nine reads in ten, one write.
    Mixed,
}

#[derive(Default)]
struct Tally {
    measuring: bool,
    writes: u64,
    reads: u64,
    errors: u64,
    hist: Option<Histogram<u64>>,
}

/// Runs the workload and prints its summary line.
pub fn run(a: &ClusterArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(a))
}

async fn run_async(a: &ClusterArgs) -> Result<(), String> {
    let (_dir, mut opts) = crate::cluster_options("cluster", a.dir.as_deref())?;
    opts.kv_groups = a.groups;
    opts.fsync = a.fsync;
    opts.log_level = synod::LogLevel::Warn;
    opts.lease_reads = a.op == Op::ReadLease;
    let cluster = LocalCluster::start(opts)?;
    let clients: Vec<synod::Client> = (0..a.connections.max(1))
        .map(|_| cluster.client().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for g in 1..=a.groups {
        while clients[0].find_leader(g).await.is_none() {
            if Instant::now() > deadline {
                return Err(format!("group {g} elected no leader"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let tally = Rc::new(RefCell::new(Tally {
        hist: Some(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
        ..Tally::default()
    }));
    let stop = Rc::new(RefCell::new(false));
    let local = tokio::task::LocalSet::new();
    let value = vec![b'x'; a.value_size];
    if a.op != Op::Write {
        // Every client reads a key of its own that exists.
        for c in 0..a.clients {
            let client = &clients[c % clients.len()];
            let put = Put {
                key: format!("k{c}-read"),
                value: value.clone(),
            };
            client
                .send(1 + (c as u64) % a.groups, put)
                .await
                .map_err(|e| format!("preloading key k{c}-read: {e}"))?;
        }
    }
    let op = a.op;
    for c in 0..a.clients {
        let client = clients[c % clients.len()].clone();
        let tally = Rc::clone(&tally);
        let stop = Rc::clone(&stop);
        let value = value.clone();
        let group = 1 + (c as u64) % a.groups;
        local.spawn_local(async move {
            let mut n = 0u64;
            while !*stop.borrow() {
                let read = match op {
                    Op::Write => false,
                    Op::Read | Op::ReadLease => true,
                    Op::Mixed => !n.is_multiple_of(10),
                };
                let t = Instant::now();
                let r = if read {
                    let get = Get {
                        key: format!("k{c}-read"),
                    };
                    let r = if op == Op::ReadLease {
                        client.read_lease(group, get).await
                    } else {
                        client.read(group, get).await
                    };
                    match r {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err(()), // the key was written: a lost write
                        Err(_) => Err(()),
                    }
                } else {
                    let put = Put {
                        key: format!("k{c}-{n}"),
                        value: value.clone(),
                    };
                    client.send(group, put).await.map(|_| ()).map_err(|_| ())
                };
                n += 1;
                let mut t2 = tally.borrow_mut();
                if !t2.measuring {
                    continue;
                }
                match r {
                    Ok(()) => {
                        if read {
                            t2.reads += 1;
                        } else {
                            t2.writes += 1;
                        }
                        if let Some(h) = t2.hist.as_mut() {
                            h.saturating_record(t.elapsed().as_micros() as u64);
                        }
                    }
                    Err(_) => t2.errors += 1,
                }
            }
        });
    }
    let nodes: Vec<u64> = (1..=3).collect();
    let measured = local
        .run_until(async {
            tokio::time::sleep(Duration::from_secs(a.warmup)).await;
            let cpu0: Vec<Duration> = nodes
                .iter()
                .map(|&n| cluster.cpu_time(n).unwrap_or_default())
                .collect();
            let mut fs0 = Vec::new();
            for &n in &nodes {
                fs0.push(clients[0].stats(n).await.map_err(|e| e.to_string())?);
            }
            tally.borrow_mut().measuring = true;
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(a.seconds)).await;
            tally.borrow_mut().measuring = false;
            let elapsed = t0.elapsed();
            let cpu1: Vec<Duration> = nodes
                .iter()
                .map(|&n| cluster.cpu_time(n).unwrap_or_default())
                .collect();
            let mut fs1 = Vec::new();
            for &n in &nodes {
                fs1.push(clients[0].stats(n).await.map_err(|e| e.to_string())?);
            }
            *stop.borrow_mut() = true;
            Ok::<_, String>((elapsed, cpu0, cpu1, fs0, fs1))
        })
        .await?;
    let (elapsed, cpu0, cpu1, fs0, fs1) = measured;
    let t = std::mem::take(&mut *tally.borrow_mut());
    let ops = (t.writes + t.reads).max(1) as f64;
    let cpu: f64 = cpu1
        .iter()
        .zip(&cpu0)
        .map(|(b, a)| (*b - *a).as_secs_f64())
        .sum();
    let fsyncs: f64 = fs1
        .iter()
        .zip(&fs0)
        .map(|(b, a)| (b.fsyncs - a.fsyncs) as f64)
        .sum::<f64>()
        / 3.0;
    let rounds: f64 = fs1
        .iter()
        .zip(&fs0)
        .map(|(b, a)| (b.log_rounds - a.log_rounds) as f64)
        .sum::<f64>()
        / 3.0;
    let frames: f64 = fs1
        .iter()
        .zip(&fs0)
        .map(|(b, a)| (b.frames_sent - a.frames_sent) as f64)
        .sum();
    let items: f64 = fs1
        .iter()
        .zip(&fs0)
        .map(|(b, a)| (b.items_sent - a.items_sent) as f64)
        .sum();
    // Leaderships taken during the measured window: elections, and the
    // balancer's transfers (counted apart). An election here is a false
    // one: no node failed.
    let delta = |f: fn(&synod::NodeStats) -> u64| -> u64 {
        fs1.iter()
            .zip(&fs0)
            .map(|(b, a)| f(b).saturating_sub(f(a)))
            .sum()
    };
    let transfers = delta(|s| s.balance_transfers);
    let elections = delta(|s| s.leader_changes).saturating_sub(transfers);
    let h = t.hist.as_ref().ok_or("no histogram")?;
    println!(
        "op: {:?}, clients: {}, groups: {}, value_bytes: {}, fsync: {}, seconds: {:.1}, errors: {}, log_rounds/s: {:.0}, raft_items/frame: {:.1}, elections: {elections}, leader_transfers: {transfers}",
        a.op,
        a.clients,
        a.groups,
        a.value_size,
        a.fsync,
        elapsed.as_secs_f64(),
        t.errors,
        rounds / elapsed.as_secs_f64(),
        items / frames.max(1.0),
    );
    let secs = elapsed.as_secs_f64();
    match a.op {
        // The line etcd-bench prints too.
        Op::Write => println!(
            "writes/s: {:.0}, p50_us: {}, p99_us: {}, p999_us: {}, cpu_us/write: {:.0}, fsyncs/write: {:.4}",
            t.writes as f64 / secs,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            cpu * 1e6 / ops,
            fsyncs / ops,
        ),
        Op::Read | Op::ReadLease | Op::Mixed => println!(
            "ops/s: {:.0}, reads/s: {:.0}, writes/s: {:.0}, p50_us: {}, p99_us: {}, p999_us: {}, cpu_us/op: {:.0}, fsyncs/op: {:.4}",
            (t.writes + t.reads) as f64 / secs,
            t.reads as f64 / secs,
            t.writes as f64 / secs,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            cpu * 1e6 / ops,
            fsyncs / ops,
        ),
    }
    for c in &clients {
        c.close().await;
    }
    drop(cluster);
    Ok(())
}
