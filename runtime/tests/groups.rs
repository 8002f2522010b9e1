//! Black-box tests of groups created and deleted at run time (issue 10,
//! "Groups at run time") on real node processes (`synod node`, whose
//! service is the key-value store): create a group on chosen nodes with
//! the client, use it, restart a node and see it bring the group back from
//! its catalog, delete it (its log and snapshots go), and the typed errors
//! and idempotence of both; then the same through the `synod` command
//! line, and a voter that is down while the group is created or deleted.

mod common;

use common::eventually;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use synod::kv::{Get, Put};
use synod::local::{ClusterOptions, LocalCluster};
use synod::{Client, SynodError};
use synod_storage::LogStore;

fn options(dir: &Path) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, env!("CARGO_BIN_EXE_synod").into(), vec!["node".into()]);
    o.kv_groups = 1;
    o.tick_ms = 20;
    // Snapshots every 20 entries: a deleted group has some to delete.
    o.snapshot_every = 20;
    o
}

/// Whether node `node` hosts `group` (its status lists it).
async fn hosts(client: &Client, node: u64, group: u64) -> Result<bool, String> {
    let status = client.status(node).await.map_err(|e| e.to_string())?;
    Ok(status.iter().any(|s| s.group == group))
}

/// Waits until node `node` answers and says it hosts `group` or not.
async fn await_hosting(client: &Client, node: u64, group: u64, hosted: bool) {
    eventually(
        &format!("node {node} hosting group {group}: {hosted}"),
        30,
        || async {
            match hosts(client, node, group).await? {
                h if h == hosted => Ok(()),
                h => Err(format!("hosts: {h}")),
            }
        },
    )
    .await
}

async fn put(client: &Client, group: u64, key: &str, value: &str) {
    eventually(&format!("put {key} in group {group}"), 30, || async {
        let p = Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        };
        client.send(group, p).await.map_err(|e| e.to_string())
    })
    .await;
}

/// Node `node`'s own replica of `group` holds `key = value`.
async fn await_local(client: &Client, node: u64, group: u64, key: &str, value: &str) {
    eventually(
        &format!("node {node} has {key} in group {group}"),
        30,
        || async {
            let got = client
                .read_local(node, group, Get { key: key.into() })
                .await
                .map_err(|e| e.to_string())?;
            if got.as_deref() == Some(value.as_bytes()) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await
}

/// A create or delete, retried while its answer is an unknown outcome
/// or a voter is still starting (both are idempotent).
async fn admin<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), SynodError>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(()) => return,
            Err(e)
                if (e.is_safe_to_retry()
                    || matches!(
                        e,
                        SynodError::Timeout { .. }
                            | SynodError::ConnectionLost { .. }
                            | SynodError::MemberUnreachable { .. }
                    ))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn node_dir(dir: &Path, node: u64) -> std::path::PathBuf {
    dir.join(format!("node-{node}"))
}

#[tokio::test]
async fn create_use_restart_and_delete_a_group_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path())).unwrap();
    let client = cluster.client().unwrap();

    // Group 42 on every node, group 43 on nodes 1 and 2 only.
    admin("create 42", || client.create_group(42, &[1, 2, 3])).await;
    admin("create 43", || client.create_group(43, &[1, 2])).await;
    for i in 0..50 {
        put(&client, 42, &format!("k{i}"), &format!("v{i}")).await;
    }
    put(&client, 43, "a", "on two nodes").await;
    let got = client.read(42, Get { key: "k7".into() }).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"v7"[..]));
    for n in 1..=3 {
        await_hosting(&client, n, 42, true).await;
        await_local(&client, n, 42, "k49", "v49").await;
    }
    // Node 3 is no member of group 43: it neither stores nor ticks it,
    // and keeps serving the others.
    await_hosting(&client, 3, 43, false).await;
    await_hosting(&client, 3, 1, true).await;
    put(&client, 1, "boot-group", "still here").await;
    let catalog = std::fs::read_to_string(node_dir(dir.path(), 1).join("GROUPS")).unwrap();
    assert!(catalog.contains("group 42 service"), "{catalog}");

    // Idempotent: the same create again succeeds; other voters are refused.
    client.create_group(42, &[1, 2, 3]).await.unwrap();
    match client.create_group(42, &[1, 2]).await {
        Err(SynodError::GroupExists {
            group: 42, voters, ..
        }) => assert_eq!(voters, vec![1, 2, 3]),
        other => panic!("expected GroupExists, got {other:?}"),
    }
    match client.create_group(45, &[1, 9]).await {
        Err(SynodError::UnknownNode { node: 9 }) => {}
        other => panic!("expected UnknownNode, got {other:?}"),
    }

    // A restarted node brings the group back from its catalog (no one
    // creates it again), with its data.
    cluster.restart(3).unwrap();
    await_hosting(&client, 3, 42, true).await;
    await_hosting(&client, 3, 43, false).await;
    await_local(&client, 3, 42, "k49", "v49").await;
    put(&client, 42, "after-restart", "yes").await;
    await_local(&client, 3, 42, "after-restart", "yes").await;

    // Snapshots were taken (every 20 entries).
    let snaps = |n: u64| node_dir(dir.path(), n).join("snapshots/42");
    assert!(snaps(1).exists(), "{} missing", snaps(1).display());

    // Delete: every replica goes, with its log and snapshots.
    admin("delete 42", || client.delete_group(42)).await;
    for n in 1..=3 {
        await_hosting(&client, n, 42, false).await;
        assert!(!snaps(n).exists(), "{} is still there", snaps(n).display());
        let catalog = std::fs::read_to_string(node_dir(dir.path(), n).join("GROUPS")).unwrap();
        assert!(catalog.contains("group 42 removed"), "node {n}: {catalog}");
    }
    // Writes and reads fail with a typed error, at once (every node says
    // the group was deleted).
    let started = Instant::now();
    let p = Put {
        key: "x".into(),
        value: b"y".to_vec(),
    };
    match client.send(42, p).await {
        Err(SynodError::GroupRemoved { group: 42, .. }) => {}
        other => panic!("expected GroupRemoved, got {other:?}"),
    }
    match client.read(42, Get { key: "k1".into() }).await {
        Err(SynodError::GroupRemoved { group: 42, .. }) => {}
        other => panic!("expected GroupRemoved, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Idempotent: deleting it again, or a group that never existed.
    client.delete_group(42).await.unwrap();
    client.delete_group(999).await.unwrap();
    // The id is not reused.
    match client.create_group(42, &[1, 2, 3]).await {
        Err(SynodError::GroupRemoved { group: 42, .. }) => {}
        other => panic!("expected GroupRemoved, got {other:?}"),
    }
    // Its log entries are gone from the WAL (read with the node stopped),
    // and a restart does not bring the group back.
    cluster.kill(2);
    {
        let wal = synod_storage::Wal::open(
            node_dir(dir.path(), 2).join("wal"),
            synod_storage::WalOptions::default(),
        )
        .unwrap();
        let groups = wal.groups();
        assert!(
            !groups.contains(&42),
            "the WAL still has group 42: {groups:?}"
        );
        assert!(groups.contains(&43), "{groups:?}");
    }
    cluster.restart(2).unwrap();
    await_hosting(&client, 2, 43, true).await;
    await_hosting(&client, 2, 42, false).await;
    let got = client.read(43, Get { key: "a".into() }).await;
    let got = match got {
        Ok(v) => v,
        Err(_) => {
            eventually("read 43", 30, || async {
                client
                    .read(43, Get { key: "a".into() })
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        }
    };
    assert_eq!(got.as_deref(), Some(&b"on two nodes"[..]));

    // The same through the command line.
    let addrs = cluster.addrs();
    let certs = dir.path().join("certs");
    let mut flags: Vec<String> = vec![
        "--ca".into(),
        certs.join("ca.pem").display().to_string(),
        "--cert".into(),
        certs.join("client-local.pem").display().to_string(),
        "--key".into(),
        certs.join("client-local.key").display().to_string(),
    ];
    for (id, a) in &addrs {
        flags.push("--node".into());
        flags.push(format!("{id}={a}"));
    }
    let synod = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_synod"))
            .arg("group")
            .args(args)
            .args(&flags)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = synod(&["create", "--id", "50", "--nodes", "1,2,3"]);
    assert!(ok, "{err}");
    assert!(out.contains("group 50: hosted by nodes 1,2,3"), "{out}");
    let (ok, _, err) = synod(&["create", "--id", "50", "--nodes", "1,2,3"]);
    assert!(ok, "create is idempotent: {err}");
    let (ok, _, err) = synod(&["create", "--id", "50", "--nodes", "1,2"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    put(&client, 50, "cli", "made").await;
    let (ok, out, err) = synod(&["delete", "--id", "50"]);
    assert!(ok && out.contains("group 50: deleted"), "{out} {err}");
    let (ok, _, err) = synod(&["delete", "--id", "50"]);
    assert!(ok, "delete is idempotent: {err}");
    let (ok, _, err) = synod(&["create", "--id", "50", "--nodes", "1,2,3"]);
    assert!(!ok && err.contains("not reused"), "{err}");
    client.close().await;
}

#[tokio::test]
async fn a_voter_that_is_down_is_named_and_a_retry_completes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path())).unwrap();
    let client = cluster.client().unwrap();
    // Every node is up and serving before node 3 goes down.
    for n in 1..=3 {
        await_hosting(&client, n, 1, true).await;
    }
    cluster.kill(3);
    match client.create_group(44, &[1, 2, 3]).await {
        Err(SynodError::MemberUnreachable {
            group: 44, node: 3, ..
        }) => {}
        other => panic!("expected MemberUnreachable naming node 3, got {other:?}"),
    }
    // Nodes 1 and 2 host it already, and they are a majority.
    put(&client, 44, "early", "two of three").await;
    cluster.restart(3).unwrap();
    await_hosting(&client, 3, 1, true).await;
    admin("create 44 again", || client.create_group(44, &[1, 2, 3])).await;
    await_hosting(&client, 3, 44, true).await;
    await_local(&client, 3, 44, "early", "two of three").await;

    // Deleting with node 3 down: the others drop theirs, node 3 is named.
    cluster.kill(3);
    match client.delete_group(44).await {
        Err(SynodError::MemberUnreachable {
            group: 44, node: 3, ..
        }) => {}
        other => panic!("expected MemberUnreachable naming node 3, got {other:?}"),
    }
    for n in 1..=2 {
        await_hosting(&client, n, 44, false).await;
    }
    cluster.restart(3).unwrap();
    admin("delete 44 again", || client.delete_group(44)).await;
    await_hosting(&client, 3, 44, false).await;
    let snaps = node_dir(dir.path(), 3).join("snapshots/44");
    assert!(!snaps.exists(), "{} is still there", snaps.display());
    client.close().await;
}
