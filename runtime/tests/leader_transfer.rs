//! Leader transfer (Raft thesis §3.10) through the whole runtime: a client
//! moves a group's leadership to a chosen node and back while another
//! client writes. Every transfer must end with the chosen node leading,
//! the writer may only ever see typed errors that are safe to retry, and
//! every acknowledged write must be read back at the end.
//!
//! Whole-runtime turmoil simulation (real engine, quinn, actix) with a
//! fixed seed, so the run is the same every time.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use synod::kv::{Get, Put};
use synod::{Client, SynodError};
use synod_net::tls::dev;

const PORT: u16 = 7000;
const NODES: u64 = 3;
const GROUP: u64 = 1;
const SEED: u64 = 5;

async fn client(tls: &synod_net::TlsMaterial, port: u16) -> Client {
    support::sim_client(tls, NODES, PORT, port, SEED, Duration::from_secs(10)).await
}

/// The leader every node agrees on, awaited until `deadline`.
async fn agreed_leader(c: &Client, deadline: tokio::time::Instant) -> u64 {
    loop {
        let mut seen = Vec::new();
        for id in 1..=NODES {
            if let Ok(status) = c.status(id).await {
                seen.extend(status.iter().filter(|s| s.group == GROUP).map(|s| s.leader));
            }
        }
        if let [Some(l), ..] = seen[..] {
            if seen.len() == NODES as usize && seen.iter().all(|s| *s == Some(l)) {
                return l;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the writer saw.
#[derive(Default)]
struct Writes {
    acked: Vec<String>,
    /// When each acknowledged write was acknowledged.
    acked_at: Vec<tokio::time::Instant>,
    /// Errors safe to retry (the write was retried).
    retried: Vec<SynodError>,
    /// Anything else: a failure of the test.
    problems: Vec<String>,
}

/// Writes keys until `stop` is set (and at least `min` of them), each
/// retried while its error is safe to retry.
async fn write_until(c: &Client, stop: Rc<RefCell<bool>>, min: usize) -> Writes {
    let mut w = Writes::default();
    let mut i = 0;
    while !*stop.borrow() || w.acked.len() < min {
        let key = format!("k{i}");
        let put = Put {
            key: key.clone(),
            value: key.clone().into_bytes(),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            match c.send(GROUP, put.clone()).await {
                Ok(_) => {
                    w.acked.push(key);
                    w.acked_at.push(tokio::time::Instant::now());
                    break;
                }
                Err(e) if e.is_safe_to_retry() && attempts < 20 => w.retried.push(e),
                Err(e) => {
                    w.problems.push(format!("write {key}: {e:?}"));
                    break;
                }
            }
        }
        i += 1;
    }
    w
}

#[test]
fn leadership_moves_to_a_chosen_node_and_back_while_writes_run() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), "sim-ca", &[1, 2, 3], &["sim"]).unwrap();
    let mut sim = support::simulation(SEED, Duration::from_secs(120));
    let _dirs = support::host_kv_cluster(&mut sim, &certs, NODES, GROUP, SEED, PORT);

    let problems: Rc<RefCell<Option<Vec<String>>>> = Rc::default();
    let out = Rc::clone(&problems);
    let tls = certs.client("sim").unwrap();
    sim.client("client", async move {
        let admin = client(&tls, 9000).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let first = agreed_leader(&admin, deadline).await;
        let target = 1 + first % NODES;
        let mut problems = Vec::new();

        // Refusals that change nothing.
        match admin.transfer_leader(GROUP, 9).await {
            Err(SynodError::NotAVoter { node: 9, .. }) => {}
            other => problems.push(format!("transfer to non-member 9: {other:?}")),
        }
        if let Err(e) = admin.transfer_leader(GROUP, first).await {
            problems.push(format!("transfer to the current leader {first}: {e:?}"));
        }

        let writer = client(&tls, 9001).await;
        let stop = Rc::new(RefCell::new(false));
        let writes = write_until(&writer, Rc::clone(&stop), 50);
        let transfers = async {
            let mut seen = Vec::new();
            // There and back, each from a fresh client (whose first node
            // may be a follower, which forwards to the leader).
            for (port, to) in [(9002, target), (9003, first)] {
                // Let some writes run under the current leader first.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let c = client(&tls, port).await;
                let start = tokio::time::Instant::now();
                let result = c.transfer_leader(GROUP, to).await;
                let end = tokio::time::Instant::now();
                let deadline = end + Duration::from_secs(10);
                seen.push((to, result, agreed_leader(&c, deadline).await, start, end));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            *stop.borrow_mut() = true;
            seen
        };
        let (writes, transfers) = tokio::join!(writes, transfers);
        let mut windows = Vec::new();
        for (to, result, leader, start, end) in transfers {
            if result.is_err() || leader != to {
                problems.push(format!(
                    "transfer to {to}: {result:?}, then every node names {leader} the leader"
                ));
            }
            let during = writes
                .acked_at
                .iter()
                .filter(|&&t| t >= start && t <= end)
                .count();
            let after = writes.acked_at.iter().filter(|&&t| t > end).count();
            if after == 0 {
                problems.push(format!(
                    "no write was acknowledged after the transfer to {to}"
                ));
            }
            windows.push(format!(
                "to {to} in {:?}: {during} writes acked meanwhile",
                end - start
            ));
        }
        eprintln!(
            "leader {first} -> {target} -> {first}: {windows:?}; {} writes acknowledged, {} \
             retried after {:?}",
            writes.acked.len(),
            writes.retried.len(),
            writes.retried
        );
        problems.extend(writes.problems);

        // Every acknowledged write is there.
        let reader = client(&tls, 9004).await;
        for key in &writes.acked {
            match reader.read(GROUP, Get { key: key.clone() }).await {
                Ok(Some(v)) if v == key.as_bytes() => {}
                other => problems.push(format!("acknowledged {key} reads back as {other:?}")),
            }
        }
        *out.borrow_mut() = Some(problems);
        Ok(())
    });
    sim.run().unwrap();
    let problems = problems
        .borrow_mut()
        .take()
        .expect("the client never finished");
    assert!(problems.is_empty(), "{problems:#?}");
}
