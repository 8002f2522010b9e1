//! Watch against real node processes (`synod node`): changes arrive in log
//! order with the revisions their writes returned, a watch resumes exactly
//! where it stood, survives the node it reads from being killed, and a
//! revision older than the kept history (or a reader that falls that far
//! behind) gets `Compacted` instead of a silent gap.

use std::path::Path;
use std::time::{Duration, Instant};

use synod::kv::{self, KeyFilter, KvEvent, Put};
use synod::local::{ClusterOptions, LocalCluster};
use synod::{Client, SynodError};

fn options(dir: &Path) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, env!("CARGO_BIN_EXE_synod").into(), vec!["node".into()]);
    o.kv_groups = 1;
    o.tick_ms = 20;
    o
}

/// Puts `key = value` and returns its revision, retrying while the
/// cluster elects a leader or moves to a new one (a retried put of the
/// same value is harmless here: the tests compare with what was
/// acknowledged last).
async fn put(client: &Client, key: &str, value: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        };
        match client.send(1, p).await {
            Ok(rev) => return rev,
            Err(e) if Instant::now() < deadline => {
                eprintln!("put {key}: {e}; again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

/// The next event of `w`, within 20 s.
async fn next(w: &mut kv::KvWatch) -> KvEvent {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("an event within 20 s")
        .expect("the watch goes on")
        .expect("no error")
}

#[tokio::test]
async fn a_watch_delivers_changes_in_order_resumes_and_survives_a_node_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(options(dir.path())).unwrap();
    let client = cluster.client().unwrap();
    let first = put(&client, "app/0", "v0").await;

    // From the first put's revision: it and everything after, in order,
    // filtered by prefix (the `other` key is not reported).
    let mut w = kv::watch(&client, 1, KeyFilter::Prefix("app/".into()), Some(first))
        .await
        .unwrap();
    let mut revisions = vec![first];
    for i in 1..10 {
        if i % 3 == 0 {
            put(&client, "other", "x").await;
        }
        revisions.push(put(&client, &format!("app/{i}"), &format!("v{i}")).await);
    }
    for (i, &rev) in revisions.iter().enumerate() {
        assert_eq!(
            next(&mut w).await,
            KvEvent::Put {
                revision: rev,
                key: format!("app/{i}"),
                value: format!("v{i}").into_bytes(),
            }
        );
    }
    // A new watch from an older revision resumes exactly there.
    let mut again = kv::watch(
        &client,
        1,
        KeyFilter::Key("app/5".into()),
        Some(revisions[3]),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut again).await.revision(), revisions[5]);

    // A delete is an event; a delete of an absent key (the second) is not.
    for _ in 0..2 {
        let del = kv::Delete {
            key: "app/1".into(),
        };
        client.send(1, del).await.unwrap();
    }
    let deleted = next(&mut w).await;
    assert!(
        matches!(&deleted, KvEvent::Delete { key, .. } if key == "app/1"),
        "{deleted:?}"
    );

    // Kill the node the watch reads from (the client starts at node
    // `group % 3 + 1`... whichever it is, kill each in turn but one):
    // the watch moves on and loses nothing.
    let mut expected = Vec::new();
    for victim in [2u64, 3] {
        cluster.kill(victim);
        for i in 0..5 {
            let key = format!("app/k{victim}-{i}");
            let rev = put(&client, &key, "x").await;
            expected.push((rev, key));
        }
        // Every acknowledged put arrives, in log order; a put retried after
        // an unknown outcome (the leader was killed) may show up twice.
        let mut previous = 0;
        let mut missing: Vec<u64> = expected.iter().map(|(r, _)| *r).collect();
        while !missing.is_empty() {
            let e = next(&mut w).await;
            assert!(e.revision() > previous, "out of order: {e:?}");
            previous = e.revision();
            assert!(
                expected.iter().any(|(_, k)| k == e.key()),
                "unexpected {e:?}"
            );
            missing.retain(|&r| r != e.revision());
        }
        expected.clear();
        cluster.restart(victim).unwrap();
    }
}

#[tokio::test]
async fn old_revisions_and_readers_that_fall_behind_get_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.watch_history = 5;
    let cluster = LocalCluster::start(o).unwrap();
    let client = cluster.client().unwrap();
    let first = put(&client, "k", "0").await;
    // A reader that takes one change and then stalls.
    let mut slow = client.watch(1, Some(first)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), slow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.revision(), first);
    let mut last = first;
    for i in 1..=20 {
        last = put(&client, "k", &i.to_string()).await;
    }
    // Once every node applied them, each keeps only the last 5 commands:
    // revision `first` is gone everywhere.
    applied_everywhere(&client, last).await;
    match client.watch(1, Some(first)).await.unwrap().next().await {
        Some(Err(SynodError::Compacted {
            requested, oldest, ..
        })) => {
            assert_eq!(requested, first);
            assert!(oldest > first && oldest <= last, "{oldest}");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The command line says so with exit code 4.
    let out = cluster
        .client_command(env!("CARGO_BIN_EXE_synod").as_ref())
        .args(["kv", "watch", "k", "--rev", &first.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(synod::cli::EXIT_COMPACTED),
        "{out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("compacted"));
    // The stalled reader: whatever it gets is gap-free, then Compacted.
    let mut previous = first;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), slow.next())
            .await
            .unwrap()
        {
            Some(Ok(c)) => {
                let put = c.message::<Put>().unwrap().unwrap();
                assert_eq!(c.result::<Put>().unwrap().unwrap(), c.revision());
                assert_eq!(put.key, "k");
                assert!(c.revision() > previous);
                previous = c.revision();
            }
            Some(Err(SynodError::Compacted { requested, .. })) => {
                assert!(requested > first, "it stood after {first}: {requested}");
                break;
            }
            other => panic!("expected changes then Compacted, got {other:?}"),
        }
    }
    assert_eq!(previous, first, "nothing after the gap was delivered");
    assert!(slow.next().await.is_none(), "the watch ended");
    // A watch from the latest revision works.
    let mut recent = client.watch(1, Some(last)).await.unwrap();
    let change = recent.next().await.expect("the watch goes on");
    assert_eq!(change.expect("a change").revision(), last);
}

/// Waits (up to 20 s) until every node's replica of group 1 applied `index`.
async fn applied_everywhere(client: &Client, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in 1..=3 {
        loop {
            let applied = client
                .status(node)
                .await
                .ok()
                .and_then(|s| s.into_iter().find(|g| g.group == 1))
                .map_or(0, |g| g.applied);
            if applied >= index {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} applied only {applied} of {index}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Three nodes in this process, each hosting a KvStore replica of group 1.
async fn in_process_cluster(
    dir: &Path,
) -> (Vec<synod::Node>, Vec<synod::ReplicatedAddr<kv::KvStore>>) {
    use synod::{Node, NodeConfig};
    let certs = synod_net::tls::dev::generate(&dir.join("certs"), "ca", &[1, 2, 3], &[]).unwrap();
    let sockets: Vec<_> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    drop(sockets);
    let mut stores = Vec::new();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let (_, files) = &certs.nodes[id as usize - 1];
        let mut toml = format!(
            "id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\n",
            addrs[id as usize - 1],
            dir.join(format!("node-{id}")).display()
        );
        for peer in (1..=3u64).filter(|&p| p != id) {
            toml += &format!(
                "[[peers]]\nid = {peer}\naddr = \"{}\"\n",
                addrs[peer as usize - 1]
            );
        }
        toml += &format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            certs.ca.display(),
            files.cert.display(),
            files.key.display()
        );
        let config = NodeConfig::from_toml(&toml).unwrap();
        Node::init_new(&config).unwrap();
        let node = Node::start(config, synod::logging::discard())
            .await
            .unwrap();
        stores.push(
            node.spawn_replicated(1, kv::KvStore::default())
                .await
                .unwrap(),
        );
        nodes.push(node);
    }
    (nodes, stores)
}

/// `ReplicatedAddr::subscribe`: each node's replica streams what it applied,
/// the same commands at the same revisions on every node.
#[actix_rt::test]
async fn subscribe_streams_the_commands_each_replica_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, stores) = in_process_cluster(dir.path()).await;
    let mut watches = Vec::new();
    for s in &stores {
        watches.push(s.subscribe(None).await.unwrap());
    }
    let mut revisions = Vec::new();
    for i in 0..5 {
        let put = Put {
            key: format!("k{i}"),
            value: vec![i],
        };
        // Through node 1, which forwards to the leader.
        let rev = tokio::time::timeout(Duration::from_secs(30), stores[0].send(put))
            .await
            .expect("a put within 30 s")
            .expect("the put succeeds");
        revisions.push(rev);
    }
    for w in &mut watches {
        for (i, &rev) in revisions.iter().enumerate() {
            let c = tokio::time::timeout(Duration::from_secs(20), w.next())
                .await
                .expect("a change within 20 s")
                .expect("the watch goes on")
                .expect("no error");
            assert_eq!(c.revision(), rev);
            assert_eq!(c.message::<Put>().unwrap().unwrap().key, format!("k{i}"));
            assert_eq!(c.result::<Put>().unwrap().unwrap(), rev);
        }
        assert!(w.revision() > revisions[4]);
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

/// The leadership hook: every replica's view, and its changes when the
/// leadership moves.
#[actix_rt::test]
async fn leadership_views_follow_elections_and_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, stores) = in_process_cluster(dir.path()).await;
    let mut views: Vec<_> = stores.iter().map(|s| s.leadership()).collect();
    // Wait until every replica agrees on one leader, which says it leads.
    let agreed = |views: &[tokio::sync::watch::Receiver<synod::Leadership>]| {
        let now: Vec<synod::Leadership> = views.iter().map(|v| *v.borrow()).collect();
        let leader = now[0].leader?;
        let consistent = now
            .iter()
            .enumerate()
            .all(|(i, l)| l.leader == Some(leader) && l.is_leader == (i as u64 + 1 == leader));
        consistent.then_some(leader)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(l) = agreed(&views) {
            break l;
        }
        // Wake on any replica's change.
        let changes = views.iter_mut().map(|v| Box::pin(v.changed()));
        let next = futures_util::future::select_all(changes);
        tokio::time::timeout_at(deadline, next)
            .await
            .expect("one leader within 30 s")
            .0
            .unwrap();
    };
    // Hand it over: the new leader's view turns to leading, the old one's
    // away from it, and everyone follows the new one (or, if the machine
    // is so loaded that an election moved it on again, whoever won that
    // later term: the views follow that too).
    let before = views[first as usize - 1].borrow().term;
    let to = first % 3 + 1;
    tokio::time::timeout(Duration::from_secs(30), stores[0].transfer_leader(to))
        .await
        .expect("the transfer within 30 s")
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let later = views.iter().all(|v| v.borrow().term >= before + 2);
        match agreed(&views) {
            Some(l) if l == to || later => break,
            _ => {}
        }
        let changes = views.iter_mut().map(|v| Box::pin(v.changed()));
        let woke = tokio::time::timeout_at(deadline, futures_util::future::select_all(changes))
            .await
            .map(|(changed, _, _)| changed.is_ok());
        if woke != Ok(true) {
            let now: Vec<_> = views.iter().map(|v| *v.borrow()).collect();
            panic!("the views never agreed on the new leader {to}: {now:?}");
        }
    }
    let now = agreed(&views).unwrap();
    assert!(views[now as usize - 1].borrow().is_leader);
    for n in &nodes {
        n.shutdown().await;
    }
}
