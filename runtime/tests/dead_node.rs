//! Issue 8, finding 6: a node whose QUIC handshake never completes (dead,
//! or a wrong address) cannot have received anything. The client must say
//! so (a retry-safe `Unavailable`, not an unknown-outcome `Timeout`) and
//! move on to the other nodes within its deadline.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use synod::kv::{Get, Put};
use synod::local::{ClusterOptions, LocalCluster};
use synod::{Client, ClientConfig, SynodError};
use synod_net::tls::dev;

/// An address where a UDP socket is bound but nothing ever answers: a
/// QUIC handshake to it never completes. Keep the socket alive while the
/// address is in use.
fn silent_addr() -> (UdpSocket, std::net::SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

#[tokio::test]
async fn a_node_that_never_completes_the_handshake_is_unavailable_not_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), "ca", &[1], &["c"]).unwrap();
    let (_silent, addr) = silent_addr();
    let mut cfg = ClientConfig::new([(1, addr)].into(), certs.client("c").unwrap());
    cfg.timeout = Duration::from_millis(1500);
    let client = Client::new(cfg).unwrap();
    let start = Instant::now();
    let err = client
        .send(
            1,
            Put {
                key: "k".into(),
                value: b"v".to_vec(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SynodError::Unavailable(_)) && err.is_safe_to_retry(),
        "nothing can have been sent, yet: {err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_client_moves_on_from_a_dead_node_to_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ClusterOptions::new(
        dir.path(),
        env!("CARGO_BIN_EXE_synod").into(),
        vec!["node".into()],
    );
    opts.tick_ms = 20;
    let cluster = LocalCluster::start(opts).unwrap();
    // The cluster serves (awaited with a deadline).
    let healthy = cluster.client().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while healthy.read(1, Get { key: "k".into() }).await.is_err() {
        assert!(Instant::now() < deadline, "the cluster never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A client whose address for node 2 (where it sends group 1 first)
    // leads nowhere, with a tight deadline.
    let (_silent, addr) = silent_addr();
    let mut cfg = cluster.client_config().unwrap();
    cfg.nodes.insert(2, addr);
    cfg.timeout = Duration::from_millis(1000);
    // Leaves most of the deadline to the live nodes on a loaded machine.
    cfg.connect_timeout = Duration::from_millis(250);
    let client = Client::new(cfg).unwrap();
    let start = Instant::now();
    let put = Put {
        key: "k".into(),
        value: b"v".to_vec(),
    };
    let result = client.send(1, put).await;
    assert!(result.is_ok(), "{result:?} after {:?}", start.elapsed());
}
