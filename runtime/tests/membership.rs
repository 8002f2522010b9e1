//! Black-box membership tests of real node processes (`synod node`) on
//! loopback ports chosen at run time, under a steady write load: grow a
//! group from 3 to 5 nodes (learners, then voters), remove the node that
//! leads, move leadership back and forth, and replace a node whose disk was
//! wiped. Every acknowledged write is read back at the end.

mod common;

use common::eventually;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use synod::kv::{Get, Put};
use synod::local::{ClusterOptions, LocalCluster};
use synod::{Client, MembershipInfo, SynodError};

const GROUP: u64 = 1;

fn options(dir: &Path, nodes: u64, spare: u64) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, env!("CARGO_BIN_EXE_synod").into(), vec!["node".into()]);
    o.nodes = nodes;
    o.spare = spare;
    o.kv_voters = (1..=nodes - spare).collect();
    o.tick_ms = 20;
    // Snapshots every 100 entries: a new member catches up by snapshot.
    o.snapshot_every = 100;
    o
}

/// What the background writer saw.
#[derive(Default)]
struct Writes {
    acked: BTreeMap<String, Vec<u8>>,
    /// Errors that are not safe to retry (the outcome was unknown; the
    /// writer retried the same idempotent put), with the test's phase
    /// when they happened.
    unknown: Vec<(u8, String)>,
    /// Errors that are safe to retry.
    retried: usize,
}

/// Writes keys `w-0`, `w-1`, ... to the group until `stop`, each retried
/// until acknowledged (a put of the same value is idempotent, so retrying
/// after an unknown outcome is safe).
fn start_writer(
    client: Client,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
) -> tokio::task::JoinHandle<Writes> {
    tokio::spawn(async move {
        let mut w = Writes::default();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("w-{i}");
            let value = format!("value-{i}").into_bytes();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let put = Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                match client.send(GROUP, put).await {
                    Ok(_) => {
                        w.acked.insert(key.clone(), value.clone());
                        break;
                    }
                    Err(e) if Instant::now() > deadline => panic!("put {key}: {e}"),
                    Err(e) if e.is_safe_to_retry() => w.retried += 1,
                    Err(e) => w
                        .unknown
                        .push((phase.load(Ordering::Relaxed), e.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            i += 1;
        }
        w
    })
}

async fn check_all(client: &Client, acked: &BTreeMap<String, Vec<u8>>) {
    assert!(!acked.is_empty());
    for (key, value) in acked {
        let got = eventually(&format!("read {key}"), 30, || async {
            client
                .read(GROUP, Get { key: key.clone() })
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        assert_eq!(got.as_ref(), Some(value), "key {key}");
    }
}

async fn membership(client: &Client) -> MembershipInfo {
    eventually("the membership", 30, || async {
        client.membership(GROUP).await.map_err(|e| e.to_string())
    })
    .await
}

async fn leader(client: &Client) -> u64 {
    eventually("a leader", 30, || async {
        let m = client.membership(GROUP).await.map_err(|e| e.to_string())?;
        m.leader.ok_or_else(|| "no leader".to_string())
    })
    .await
}

/// Runs a membership call, retrying the errors that are safe to retry and
/// the unknown outcomes too: every membership call is idempotent (a loaded
/// machine running four clusters at once does time out now and then).
async fn change<F, Fut>(what: &str, mut f: F) -> MembershipInfo
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<MembershipInfo, SynodError>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(m) => return m,
            Err(e)
                if (e.is_safe_to_retry()
                    || matches!(
                        e,
                        SynodError::Timeout { .. }
                            | SynodError::ConnectionLost { .. }
                            | SynodError::Stopped { .. }
                    ))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Whether node `node` hosts the group (its status lists it).
async fn hosts(client: &Client, node: u64) -> Result<bool, String> {
    let status = client.status(node).await.map_err(|e| e.to_string())?;
    Ok(status.iter().any(|s| s.group == GROUP))
}

#[tokio::test]
async fn grow_from_three_to_five_remove_the_leader_and_move_leadership_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path(), 5, 2)).unwrap();
    let client = cluster.client().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let writer = start_writer(client.clone(), Arc::clone(&stop), Arc::clone(&phase));

    let m = membership(&client).await;
    assert_eq!(m.voters, vec![1, 2, 3]);
    assert!(m.learners.is_empty());
    // Let the log grow past a snapshot, so the new nodes need one.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Two new machines: their processes start; they host nothing yet.
    cluster.restart(4).unwrap();
    cluster.restart(5).unwrap();
    for n in [4, 5] {
        let hosted = eventually(&format!("node {n} answers"), 30, || hosts(&client, n)).await;
        assert!(!hosted, "node {n} hosts the group before it was added");
    }
    for n in [4, 5] {
        let m = change(&format!("add learner {n}"), || client.add_learner(GROUP, n)).await;
        assert!(m.learners.contains(&n), "{m:?}");
        // Idempotent: adding it again changes nothing.
        let again = change("add again", || client.add_learner(GROUP, n)).await;
        assert_eq!(again.learners, m.learners);
    }
    for n in [4, 5] {
        let m = change(&format!("promote {n}"), || client.promote(GROUP, n)).await;
        assert!(m.voters.contains(&n), "{m:?}");
    }
    let m = membership(&client).await;
    assert_eq!(m.voters, vec![1, 2, 3, 4, 5]);
    assert!(m.learners.is_empty());
    assert!(m.committed);
    // They caught up by snapshot first (the log was compacted).
    for n in [4, 5] {
        let log = cluster.log_tail(n, 100_000);
        assert!(log.contains("snapshot received"), "node {n}:\n{log}");
    }
    // Follower reads on every member, new ones included, see a write
    // acknowledged just before.
    let put = Put {
        key: "fr".into(),
        value: b"follower-read".to_vec(),
    };
    client.send(GROUP, put).await.unwrap();
    for n in 1..=5 {
        let got = eventually(&format!("a follower read on node {n}"), 30, || async {
            client
                .read_follower(n, GROUP, Get { key: "fr".into() })
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        assert_eq!(got.as_deref(), Some(&b"follower-read"[..]), "node {n}");
    }
    // A new member that restarts resumes its replica from its own disk
    // (the catalog and the configuration in its log and snapshots).
    cluster.restart(4).unwrap();
    let hosted = eventually("node 4 back", 30, || hosts(&client, 4)).await;
    assert!(hosted, "node 4 forgot the group it joined");

    // Remove the node that leads: it steps down, and its replica is deleted.
    let old = leader(&client).await;
    let m = change("remove the leader", || client.remove_member(GROUP, old)).await;
    assert!(!m.voters.contains(&old), "{m:?}");
    assert_eq!(m.voters.len(), 4);
    let hosted = eventually("the removed node answers", 30, || hosts(&client, old)).await;
    assert!(
        !hosted,
        "node {old} still hosts the group after its removal"
    );
    let catalog = std::fs::read_to_string(dir.path().join(format!("node-{old}/GROUPS"))).unwrap();
    assert!(catalog.contains("group 1 removed"), "{catalog}");
    // Its snapshots are deleted (just after the node stops listing the
    // group: the deletion waits for the group's actors to stop), and a
    // restart does not bring the group back (its configuration file
    // still lists it among `kv_voters`).
    let snaps = dir.path().join(format!("node-{old}/snapshots/1"));
    eventually("the removed replica's snapshots deleted", 10, || async {
        if snaps.exists() {
            Err(format!("{} is still there", snaps.display()))
        } else {
            Ok(())
        }
    })
    .await;
    cluster.restart(old).unwrap();
    let hosted = eventually("the removed node back", 30, || hosts(&client, old)).await;
    assert!(!hosted, "node {old} hosts the group again after a restart");
    let new = eventually("a new leader", 30, || async {
        let m = client.membership(GROUP).await.map_err(|e| e.to_string())?;
        m.leader
            .filter(|&l| l != old)
            .ok_or_else(|| format!("leader {:?}", m.leader))
    })
    .await;

    // Leadership back and forth among the remaining voters: writers see
    // no error that is not safe to retry (phase 1).
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.store(1, Ordering::Relaxed);
    let targets: Vec<u64> = m.voters.iter().copied().filter(|&v| v != new).collect();
    for &to in targets.iter().take(2).chain(std::iter::once(&new)) {
        eventually(&format!("transfer to {to}"), 30, || async {
            client
                .transfer_leader(GROUP, to)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.store(2, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let w = writer.await.unwrap();
    let during_transfers: Vec<&String> = w
        .unknown
        .iter()
        .filter(|(p, _)| *p == 1)
        .map(|(_, e)| e)
        .collect();
    assert!(
        during_transfers.is_empty(),
        "errors not safe to retry while leadership moved: {during_transfers:?}"
    );
    eprintln!(
        "acked {} writes; {} retried safely; unknown outcomes (retried): {:?}",
        w.acked.len(),
        w.retried,
        w.unknown
    );
    check_all(&client, &w.acked).await;
    client.close().await;
}

#[tokio::test]
async fn a_node_whose_disk_was_wiped_is_removed_re_added_and_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path(), 3, 0)).unwrap();
    let client = cluster.client().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let writer = start_writer(client.clone(), Arc::clone(&stop), Arc::clone(&phase));
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Node 3 (a follower, so writes go on) loses its disk.
    let l = leader(&client).await;
    let victim = (1..=3).rev().find(|&n| n != l).unwrap();
    cluster.wipe(victim).unwrap();

    // Removing it while it is down: the change stands, but its replica
    // could not be deleted, and the error says so.
    // (Under a loaded machine the answer may get lost: an unknown outcome,
    // after which the membership tells.)
    match client.remove_member(GROUP, victim).await {
        Err(SynodError::CannotHost { node, .. }) => assert_eq!(node, victim),
        Err(e @ (SynodError::ConnectionLost { .. } | SynodError::Timeout { .. })) => {
            eprintln!("the removal's answer was lost ({e}); checking the membership")
        }
        other => panic!("expected CannotHost for the down node, got {other:?}"),
    }
    let m = membership(&client).await;
    assert!(!m.voters.contains(&victim), "{m:?}");

    // The machine comes back on its new, empty disk: it hosts nothing.
    cluster.restart(victim).unwrap();
    let hosted = eventually("the wiped node answers", 30, || hosts(&client, victim)).await;
    assert!(!hosted);
    // Removing it again is a no-op for the membership that deletes what
    // the node holds of the group (nothing here) and succeeds.
    eventually("remove again", 30, || async {
        client
            .remove_member(GROUP, victim)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    // Re-add it as a learner, then promote it once it caught up.
    change("re-add", || client.add_learner(GROUP, victim)).await;
    let m = change("promote", || client.promote(GROUP, victim)).await;
    assert_eq!(m.voters, vec![1, 2, 3]);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let w = writer.await.unwrap();
    check_all(&client, &w.acked).await;
    // The replaced node holds every acknowledged write (read locally).
    for (key, value) in &w.acked {
        let got = eventually(&format!("node {victim} has {key}"), 30, || async {
            let v = client
                .read_local(victim, GROUP, Get { key: key.clone() })
                .await
                .map_err(|e| e.to_string())?;
            if v.as_ref() == Some(value) {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        })
        .await;
        assert_eq!(got.as_ref(), Some(value));
    }
    client.close().await;
}

#[tokio::test]
async fn membership_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path(), 3, 0)).unwrap();
    let client = cluster.client().unwrap();
    membership(&client).await;
    match client.add_learner(GROUP, 9).await {
        Err(SynodError::UnknownNode { node: 9 }) => {}
        other => panic!("expected UnknownNode, got {other:?}"),
    }
    match client.add_learner(GROUP, 2).await {
        Err(SynodError::BadChange { .. }) => {}
        other => panic!("expected BadChange for a voter, got {other:?}"),
    }
    match client.promote(GROUP, 0).await {
        Err(SynodError::BadChange { .. }) => {}
        other => panic!("expected BadChange for node 0, got {other:?}"),
    }
    // Down to one voter, then that one cannot go.
    change("remove 3", || client.remove_member(GROUP, 3)).await;
    change("remove 2", || client.remove_member(GROUP, 2)).await;
    match client.remove_member(GROUP, 1).await {
        Err(SynodError::NoQuorumLeft { node: 1, .. }) => {}
        other => panic!("expected NoQuorumLeft, got {other:?}"),
    }
    client.close().await;
}

#[tokio::test]
async fn unsafe_recovery_brings_back_a_group_that_lost_its_majority() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path(), 3, 0)).unwrap();
    let client = cluster.client().unwrap();
    membership(&client).await;
    // Node 1 leads, so it holds every write acknowledged below.
    eventually("node 1 leads", 30, || async {
        client
            .transfer_leader(GROUP, 1)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let mut acked = BTreeMap::new();
    for i in 0..50 {
        let (key, value) = (format!("k-{i}"), format!("v-{i}").into_bytes());
        let put = Put {
            key: key.clone(),
            value: value.clone(),
        };
        client.send(GROUP, put).await.unwrap();
        acked.insert(key, value);
    }
    // Nodes 2 and 3 are lost for good.
    cluster.kill(2);
    cluster.kill(3);
    // A typo is refused before anything happens.
    match client.unsafe_force_voters(1, GROUP, &[1, 9]).await {
        Err(SynodError::UnknownNode { node: 9 }) => {}
        other => panic!("expected UnknownNode, got {other:?}"),
    }
    let m = client.unsafe_force_voters(1, GROUP, &[1]).await.unwrap();
    assert_eq!(m.voters, vec![1]);
    for i in 50..60 {
        let (key, value) = (format!("k-{i}"), format!("v-{i}").into_bytes());
        let put = Put {
            key: key.clone(),
            value: value.clone(),
        };
        eventually(&format!("put {key}"), 30, || async {
            client
                .send(GROUP, put.clone())
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        acked.insert(key, value);
    }
    // The forced configuration is in the log now, and survives a restart.
    cluster.restart(1).unwrap();
    let m = eventually("voters after a restart", 30, || async {
        let m = client.membership(GROUP).await.map_err(|e| e.to_string())?;
        if m.leader == Some(1) && m.committed {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await;
    assert_eq!(m.voters, vec![1]);
    check_all(&client, &acked).await;
    client.close().await;
}
