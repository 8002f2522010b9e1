//! Black-box tests of real node processes (`synod node`) on loopback ports
//! chosen at run time: SIGKILL of a leader, restarts that catch up from the
//! WAL and from the leader (by snapshot when the log was compacted), a
//! whole-cluster crash, SIGSTOP/SIGCONT, and configuration errors. Every
//! acknowledged write must survive all of it.

mod common;

use common::eventually;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use synod::kv::{Get, Len, Put};
use synod::local::{ClusterOptions, LocalCluster};
use synod::{Client, SynodError};

fn options(dir: &Path, groups: u64) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, env!("CARGO_BIN_EXE_synod").into(), vec!["node".into()]);
    o.kv_groups = groups;
    // Short timeouts keep the tests fast: elections after 200-400 ms.
    o.tick_ms = 20;
    o
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

/// Compares the replicas entry by entry, each node's own (read locally,
/// not through the leader): every node holds every acknowledged key of
/// `1..=groups` with its value, and all agree on the number of keys (which
/// is the number acknowledged: every key written was) and the revision.
async fn check_replicas(client: &Client, acked: &Acked, groups: u64) {
    for g in 1..=groups {
        let keys = acked.keys().filter(|(group, _)| *group == g).count();
        // A follower applies a little after the leader: wait until they agree.
        eventually(&format!("the replicas of group {g} agree"), 30, || async {
            let mut lens = Vec::new();
            for node in 1..=3 {
                let len = client.read_local(node, g, Len).await;
                lens.push(len.map_err(|e| format!("node {node}: {e}"))?);
            }
            if lens.iter().all(|l| *l == lens[0]) && lens[0].0 == keys {
                Ok(())
            } else {
                Err(format!(
                    "(keys, revision) per node {lens:?}; {keys} keys acknowledged"
                ))
            }
        })
        .await;
    }
    for node in 1..=3 {
        for ((g, key), value) in acked {
            let got = client
                .read_local(node, *g, Get { key: key.clone() })
                .await
                .unwrap();
            assert_eq!(got.as_ref(), Some(value), "node {node} group {g} key {key}");
        }
    }
}

/// SIGKILLs node `id` and proves it happened: the process ran, was reaped
/// having died of SIGKILL (not of anything else, nor exited before), and
/// runs no more.
fn kill_confirmed(cluster: &mut LocalCluster, id: u64) {
    assert!(
        cluster.is_running(id),
        "node {id} was not running before the kill"
    );
    let status = cluster.kill(id).expect("a process to kill");
    assert_eq!(
        status.signal(),
        Some(9),
        "node {id} did not die of SIGKILL: {status:?}"
    );
    assert!(!cluster.is_running(id) && cluster.pid(id).is_none());
}

/// Node `node`'s view of group `group`.
async fn group_status(
    client: &Client,
    node: u64,
    group: u64,
) -> Result<synod::GroupStatus, String> {
    let status = client.status(node).await.map_err(|e| e.to_string())?;
    status
        .into_iter()
        .find(|s| s.group == group)
        .ok_or(format!("node {node} does not host group {group}"))
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
    kill_confirmed(&mut cluster, leader);
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
    check_replicas(&client, &acked, 2).await;
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
    kill_confirmed(&mut cluster, follower);
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
    check_replicas(&client, &acked, 1).await;
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
    kill_confirmed(&mut cluster, follower);
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
        kill_confirmed(&mut cluster, id); // SIGKILL: no clean shutdown
    }
    // The whole cluster is down: nobody answers.
    assert!((1..=3).all(|id| !cluster.is_running(id)));
    for id in 1..=3 {
        assert!(
            client.status(id).await.is_err(),
            "node {id} answered while down"
        );
    }
    cluster.start_all().unwrap();
    check_all(&client, &acked).await;
    // And the cluster accepts writes again, in both groups.
    for g in 1..=2 {
        write_keys(&client, g, "again", 5, &mut acked).await;
    }
    check_all(&client, &acked).await;
    check_replicas(&client, &acked, 2).await;
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
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    let old_term = eventually("the leader's status", 10, || async {
        group_status(&client, leader, 1).await
    })
    .await
    .term;
    cluster.pause(leader).unwrap();
    // The pause happened: the process is stopped...
    eventually("the paused process stops", 10, || async {
        match cluster.process_state(leader) {
            Some('T') => Ok(()),
            state => Err(format!("node {leader} is in state {state:?}")),
        }
    })
    .await;
    // ...and had an effect: another node leads in a later term.
    let new_leader = eventually("another leader while paused", 30, || async {
        for &n in &others {
            let s = group_status(&client, n, 1).await;
            if s.is_ok_and(|s| s.role == "Leader" && s.term > old_term) {
                return Ok(n);
            }
        }
        Err(format!("neither of {others:?} leads after term {old_term}"))
    })
    .await;
    write_keys(&client, 1, "b", 20, &mut acked).await;
    // Those writes were made without it: it was stopped all along.
    assert_eq!(cluster.process_state(leader), Some('T'));
    cluster.resume(leader).unwrap();
    eventually("the resumed process runs", 10, || async {
        match cluster.process_state(leader) {
            Some('T') | None => Err(format!("node {leader} is still stopped")),
            Some(_) => Ok(()),
        }
    })
    .await;
    write_keys(&client, 1, "c", 20, &mut acked).await;
    caught_up(&client, leader, &others, 1).await;
    check_all(&client, &acked).await;
    check_replicas(&client, &acked, 1).await;
    // The old leader rejoined as a follower of the new term.
    let rejoined = group_status(&client, leader, 1).await.unwrap();
    assert!(
        rejoined.term > old_term,
        "{rejoined:?} (new leader {new_leader})"
    );
    client.close().await;
}

/// A follower forwards a command to the leader, which is then stopped
/// (SIGSTOP: its connections stay open, nothing answers). The follower
/// answers as soon as its replica sees another leader elected (elections
/// here take 200-400 ms), with an unknown outcome, instead of
/// holding the command until its connection to the stopped leader times
/// out (1 s of silence). Seen failing without the change: the answer was
/// "the connection to leader N broke" after the idle timeout.
#[tokio::test]
async fn a_command_forwarded_to_a_stopped_leader_is_answered_when_the_leadership_moves() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path(), 1)).unwrap();
    let client = cluster.client().unwrap();
    let mut acked = Acked::new();
    write_keys(&client, 1, "a", 5, &mut acked).await;
    let leader = leader_of(&client, 1).await;
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    // A client that knows only the follower: every command goes through it.
    let mut cfg = cluster.client_config().unwrap();
    cfg.nodes.retain(|&id, _| id == follower);
    cfg.timeout = Duration::from_secs(20);
    let via_follower = Client::new(cfg).unwrap();
    via_follower
        .send(
            1,
            Put {
                key: "via".into(),
                value: b"1".to_vec(),
            },
        )
        .await
        .expect("a forwarded write while the leader runs");
    cluster.pause(leader).unwrap();
    let answer = via_follower
        .send(
            1,
            Put {
                key: "via".into(),
                value: b"2".to_vec(),
            },
        )
        .await;
    cluster.resume(leader).unwrap();
    match answer {
        // Forwarded before the follower noticed: unknown outcome, said
        // because another leader was elected.
        Err(SynodError::OutcomeUnknown { reason, .. }) => {
            assert!(reason.contains("was replaced by node"), "{reason}");
        }
        // Or the follower already saw the election and the write went to
        // the new leader.
        Ok(_) => {}
        Err(e) => panic!("expected an unknown outcome or a success, got {e}"),
    }
    via_follower.close().await;
    client.close().await;
}

/// A command the KvStore has no handler for.
#[derive(Serialize, Deserialize)]
struct Frobnicate {
    n: u64,
}
synod::message!(Frobnicate => u64);

/// A query the KvStore has no handler for.
#[derive(Serialize, Deserialize)]
struct Census;
synod::query!(Census => u64);

mod malformed {
    use serde::{Deserialize, Serialize};

    /// Named like the KvStore's `Put` (the wire name is the type's name),
    /// shaped otherwise: it cannot decode as one.
    #[derive(Serialize, Deserialize)]
    pub struct Put(pub u8);
    synod::message!(Put => u64);
}

#[tokio::test]
async fn unknown_groups_and_bad_messages_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path(), 1)).unwrap();
    let client = cluster.client().unwrap();
    let mut acked = Acked::new();
    write_keys(&client, 1, "x", 1, &mut acked).await;
    let before = client.read(1, Len).await.unwrap();
    // A command of a type nobody handles.
    match client.send(1, Frobnicate { n: 1 }).await {
        Err(SynodError::Rejected(r)) => {
            assert!(r.contains("no message named \"Frobnicate\""), "{r}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A known name whose body does not decode as that message.
    match client.send(1, malformed::Put(7)).await {
        Err(SynodError::Rejected(r)) => assert!(r.contains("cannot decode Put"), "{r}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A query of a type nobody answers, through the log and locally.
    match client.read(1, Census).await {
        Err(SynodError::Rejected(r)) => assert!(r.contains("no query named \"Census\""), "{r}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    match client.read_local(1, 1, Census).await {
        Err(SynodError::Rejected(r)) => assert!(r.contains("no query named \"Census\""), "{r}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    // Refused means nothing changed, and the group still works.
    assert_eq!(client.read(1, Len).await.unwrap(), before);
    write_keys(&client, 1, "y", 1, &mut acked).await;
    check_all(&client, &acked).await;
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
        Err(SynodError::NoSuchGroup { group: 99 }) => {}
        other => panic!("expected NoSuchGroup, got {other:?}"),
    }
    client.close().await;
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
