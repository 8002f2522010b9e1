//! Black-box tests of real node processes (`synod node`) on loopback ports
//! chosen at run time: SIGKILL of a leader, restarts that catch up from the
//! WAL and from the leader (by snapshot when the log was compacted), a
//! whole-cluster crash, SIGSTOP/SIGCONT, and configuration errors. Every
//! acknowledged write must survive all of it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use synod::kv::{Get, Put};
use synod::local::{ClusterOptions, LocalCluster};
use synod::{Client, SynodError};

fn options(dir: &Path, groups: u64) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, env!("CARGO_BIN_EXE_synod").into(), vec!["node".into()]);
    o.kv_groups = groups;
    // Short timeouts keep the tests fast: elections after 200-400 ms.
    o.tick_ms = 20;
    o
}

/// Retries `f` until it succeeds or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{what}: still failing after {secs} s: {e}"),
        }
    }
}

/// The acknowledged value of every key written, per group.
type Acked = BTreeMap<(u64, String), Vec<u8>>;

/// Writes `count` keys to `group`, retrying only what is safe to retry.
/// An acknowledged write is recorded; a write whose outcome is unknown
/// (timeout) is retried with the same value, which is idempotent for Put.
async fn write_keys(client: &Client, group: u64, prefix: &str, count: usize, acked: &mut Acked) {
    for i in 0..count {
        let key = format!("{prefix}-{i}");
        let value = format!("v-{group}-{key}").into_bytes();
        let put = || Put {
            key: key.clone(),
            value: value.clone(),
        };
        eventually(&format!("put {key}"), 30, || async {
            client.send(group, put()).await.map_err(|e| e.to_string())
        })
        .await;
        acked.insert((group, key), value);
    }
}

async fn check_all(client: &Client, acked: &Acked) {
    for ((group, key), value) in acked {
        let got = eventually(&format!("read {key}"), 30, || async {
            client
                .read(*group, Get { key: key.clone() })
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        assert_eq!(got.as_ref(), Some(value), "group {group} key {key}");
    }
}

async fn leader_of(client: &Client, group: u64) -> u64 {
    eventually("a leader", 30, || async {
        client
            .find_leader(group)
            .await
            .ok_or_else(|| "no leader".to_string())
    })
    .await
}

/// Waits until node `id` applied as far as every other live node, for
/// every group.
async fn caught_up(client: &Client, id: u64, others: &[u64], groups: u64) {
    eventually(&format!("node {id} catching up"), 60, || async {
        synod::local::caught_up(client, id, others, groups).await
    })
    .await
}

#[tokio::test]
async fn leader_killed_writes_continue_and_the_node_catches_up_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path(), 2)).unwrap();
    let client = cluster.client().unwrap();
    let mut acked = Acked::new();
    for g in 1..=2 {
        write_keys(&client, g, "before", 50, &mut acked).await;
    }
    let leader = leader_of(&client, 1).await;
    cluster.kill(leader);
    let killed_at = Instant::now();
    // Writes succeed again, for both groups.
    for g in 1..=2 {
        write_keys(&client, g, "after-kill", 20, &mut acked).await;
    }
    let recovery = killed_at.elapsed();
    let new_leader = leader_of(&client, 1).await;
    assert_ne!(new_leader, leader);
    assert!(recovery < Duration::from_secs(20), "{recovery:?}");
    // The killed node comes back and catches up from its WAL and the leader.
    cluster.restart(leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    write_keys(&client, 1, "after-restart", 10, &mut acked).await;
    caught_up(&client, leader, &others, 2).await;
    check_all(&client, &acked).await;
    client.close().await;
}

#[tokio::test]
async fn a_node_far_behind_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), 1);
    o.snapshot_every = 40;
    let mut cluster = LocalCluster::start(o).unwrap();
    let client = cluster.client().unwrap();
    let mut acked = Acked::new();
    write_keys(&client, 1, "warm", 10, &mut acked).await;
    let leader = leader_of(&client, 1).await;
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    cluster.kill(follower);
    // Enough entries for two snapshots: the leader compacts past what the
    // follower holds.
    write_keys(&client, 1, "while-down", 150, &mut acked).await;
    cluster.restart(follower).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&n| n != follower).collect();
    caught_up(&client, follower, &others, 1).await;
    let stats = eventually("stats", 10, || async {
        client.stats(follower).await.map_err(|e| e.to_string())
    })
    .await;
    assert!(
        stats.snapshots_installed >= 1,
        "the follower caught up without a snapshot: {stats:?}"
    );
    check_all(&client, &acked).await;
    client.close().await;
}

/// Issue 8, finding 8: a follower restarted on an empty data directory
/// (a replaced disk) used to rejoin silently as a healthy follower with
/// nothing applied, and stayed that way while the group was idle (the
/// leader believed its old match index and sent nothing). Now the leader
/// repairs it at its next heartbeat, without any new write, and the node
/// says it booted empty (REJOINING) until it caught up.
#[tokio::test]
async fn a_node_restarted_on_an_empty_data_directory_is_repaired_without_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path(), 1)).unwrap();
    let client = cluster.client().unwrap();
    let mut acked = Acked::new();
    write_keys(&client, 1, "k", 100, &mut acked).await;
    let leader = leader_of(&client, 1).await;
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&n| n != follower).collect();
    caught_up(&client, follower, &others, 1).await;
    // The disk is replaced: the node comes back with nothing.
    cluster.kill(follower);
    assert!(!cluster.is_running(follower), "the kill did not happen");
    let data = dir.path().join(format!("node-{follower}"));
    std::fs::remove_dir_all(&data).unwrap();
    cluster.restart(follower).unwrap();
    // No further writes: the leader alone must notice and repair it.
    caught_up(&client, follower, &others, 1).await;
    let status = eventually("status", 10, || async {
        client.status(follower).await.map_err(|e| e.to_string())
    })
    .await;
    let group = &status[0];
    assert!(group.applied >= 101, "{group:?}");
    // It caught up, so it votes normally again and the marker is gone.
    eventually("the rejoining flag clears", 20, || async {
        let s = client.status(follower).await.map_err(|e| e.to_string())?;
        match s[0].rejoining {
            false => Ok(()),
            true => Err("still rejoining".to_string()),
        }
    })
    .await;
    assert!(!data.join("REJOINING").exists());
    assert!(data.join("IDENTITY").exists());
    // The leader says it repaired a follower that lost its state.
    let leader_status = client.status(leader).await.unwrap();
    assert!(
        leader_status[0].followers_lost_state >= 1,
        "{leader_status:?}"
    );
    assert!(cluster
        .log_tail(follower, 200)
        .contains("booting on an empty data directory"));
    // Every replica holds every acknowledged key, read locally.
    for node in 1..=3 {
        for ((g, key), value) in &acked {
            let got = client
                .read_local(node, *g, Get { key: key.clone() })
                .await
                .unwrap();
            assert_eq!(got.as_ref(), Some(value), "node {node} key {key}");
        }
    }
    client.close().await;
}

#[tokio::test]
async fn a_whole_cluster_crash_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path(), 2)).unwrap();
    let client = cluster.client().unwrap();
    let mut acked = Acked::new();
    for g in 1..=2 {
        write_keys(&client, g, "k", 60, &mut acked).await;
    }
    for id in 1..=3 {
        cluster.kill(id); // SIGKILL: no clean shutdown
    }
    cluster.start_all().unwrap();
    check_all(&client, &acked).await;
    // And the cluster accepts writes again.
    write_keys(&client, 1, "again", 5, &mut acked).await;
    check_all(&client, &acked).await;
    client.close().await;
}

#[tokio::test]
async fn a_paused_leader_is_replaced_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path(), 1)).unwrap();
    let client = cluster.client().unwrap();
    let mut acked = Acked::new();
    write_keys(&client, 1, "a", 20, &mut acked).await;
    let leader = leader_of(&client, 1).await;
    cluster.pause(leader).unwrap();
    write_keys(&client, 1, "b", 20, &mut acked).await;
    cluster.resume(leader).unwrap();
    write_keys(&client, 1, "c", 20, &mut acked).await;
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    caught_up(&client, leader, &others, 1).await;
    check_all(&client, &acked).await;
    client.close().await;
}

#[tokio::test]
async fn unknown_groups_and_bad_messages_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path(), 1)).unwrap();
    let client = cluster.client().unwrap();
    let mut acked = Acked::new();
    write_keys(&client, 1, "x", 1, &mut acked).await;
    match client
        .send(
            99,
            Put {
                key: "k".into(),
                value: vec![],
            },
        )
        .await
    {
        Err(SynodError::NoSuchGroup { group: 99 }) | Err(SynodError::Unavailable(_)) => {}
        other => panic!("expected NoSuchGroup, got {other:?}"),
    }
    drop(cluster);
}

fn synod(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configurations_fail_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, err) = synod(&[
        "certs",
        "--out",
        &d.join("certs").to_string_lossy(),
        "--nodes",
        "1,2",
    ]);
    assert!(ok, "{err}");
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap();
    let write = |name: &str, body: String| {
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_string_lossy().into_owned()
    };
    let base = |id: u64, listen: &str, peers: &str, cert: &str| {
        format!(
            "id = {id}\nlisten = \"{listen}\"\ndata_dir = \"data-{id}\"\n{peers}\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{cert}.pem\"\nkey = \"certs/{cert}.key\"\n"
        )
    };
    let peer2 = "[[peers]]\nid = 2\naddr = \"127.0.0.1:1\"\n";
    // Duplicate id: a peer with this node's own id.
    let f = write(
        "dup.toml",
        base(
            1,
            "127.0.0.1:0",
            "[[peers]]\nid = 1\naddr = \"127.0.0.1:1\"\n",
            "node-1",
        ),
    );
    let (ok, err) = synod(&["node", "--config", &f]);
    assert!(!ok && err.contains("own id"), "{err}");
    // Unreadable certificate.
    let f = write("nocert.toml", base(1, "127.0.0.1:0", peer2, "missing"));
    let (ok, err) = synod(&["node", "--config", &f]);
    assert!(!ok && err.contains("missing.pem"), "{err}");
    // Another node's certificate.
    let f = write("wrongcert.toml", base(1, "127.0.0.1:0", peer2, "node-2"));
    let (ok, err) = synod(&["node", "--config", &f]);
    assert!(
        !ok && err.contains("not a certificate for node-1.synod"),
        "{err}"
    );
    // Port in use.
    let f = write("busy.toml", base(1, &busy.to_string(), peer2, "node-1"));
    let (ok, err) = synod(&["node", "--config", &f]);
    assert!(!ok && err.contains("cannot listen"), "{err}");
    // Unknown key (a typo).
    let f = write(
        "typo.toml",
        base(1, "127.0.0.1:0", peer2, "node-1") + "\n[raft]\ntik_ms = 5\n",
    );
    let (ok, err) = synod(&["node", "--config", &f]);
    assert!(!ok && err.contains("tik_ms"), "{err}");
    // A bad override.
    let f = write("good.toml", base(1, "127.0.0.1:0", peer2, "node-1"));
    let (ok, err) = synod(&["node", "--config", &f, "--peer", "1=127.0.0.1:9"]);
    assert!(!ok && err.contains("own id"), "{err}");
    drop(held);
}
