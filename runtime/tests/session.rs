//! Exactly-once client sessions against real node processes: increments
//! retried through leader kills (unknown outcomes and all) add up to the
//! number issued, exactly; the kept results survive a snapshot.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use synod::kv::{Get, Increment};
use synod::local::{ClusterOptions, LocalCluster};
use synod::Client;

fn options(dir: &Path) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, env!("CARGO_BIN_EXE_synod").into(), vec!["node".into()]);
    o.kv_groups = 1;
    o.tick_ms = 20;
    // Snapshots (and log compaction) during the run: the sessions' kept
    // results must travel in them.
    o.snapshot_every = 50;
    o
}

/// The node that leads group 1, as any node reports it.
async fn leader(client: &Client) -> Option<u64> {
    for node in 1..=3 {
        if let Ok(status) = client.status(node).await {
            if let Some(l) = status.iter().find(|s| s.group == 1).and_then(|s| s.leader) {
                return Some(l);
            }
        }
    }
    None
}

#[tokio::test]
async fn increments_retried_through_leader_kills_apply_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path())).unwrap();
    let client = cluster.client().unwrap();
    let session = client.session();
    let issued = Rc::new(Cell::new(0u64));
    let done = Rc::new(Cell::new(false));
    let local = tokio::task::LocalSet::new();
    let worker = {
        let (session, issued, done) = (session.clone(), Rc::clone(&issued), Rc::clone(&done));
        local.spawn_local(async move {
            while !done.get() {
                let add = Increment {
                    key: "hits".into(),
                    by: 1,
                };
                match session.send(1, add).await {
                    Ok(_) => issued.set(issued.get() + 1),
                    Err(e) => panic!("increment {} failed: {e}", issued.get() + 1),
                }
            }
        })
    };
    local
        .run_until(async {
            // Kill the leader four times, each time once the workload got
            // going again, and bring it back.
            let deadline = Instant::now() + Duration::from_secs(120);
            for kill in 0..4 {
                let floor = issued.get() + 20;
                while issued.get() < floor {
                    assert!(Instant::now() < deadline, "no progress after kill {kill}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let Some(victim) = leader(&client).await else {
                    continue;
                };
                cluster.kill(victim);
                let floor = issued.get() + 20;
                while issued.get() < floor {
                    assert!(Instant::now() < deadline, "no progress with {victim} down");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                cluster.restart(victim).unwrap();
            }
            done.set(true);
        })
        .await;
    local.await;
    worker.await.unwrap();
    let stats = session.stats();
    eprintln!(
        "{} increments issued, {} retries after an unknown outcome",
        issued.get(),
        stats.retries
    );
    let value = client.read(1, Get { key: "hits".into() }).await.unwrap();
    let value: u64 = String::from_utf8(value.unwrap()).unwrap().parse().unwrap();
    assert_eq!(value, issued.get(), "{stats:?}");
    assert!(
        stats.retries > 0,
        "no increment had an unknown outcome: the kills did not exercise the retries"
    );
}
