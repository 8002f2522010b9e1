//! The transport over real QUIC on loopback: batching, requests, snapshot
//! streams, mutual TLS refusals, bad frames and false identities closing
//! only their stream, and reconnection after a peer restarts.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use synod_net::tls::dev;
use synod_net::transport::wrap_udp;
use synod_net::{frame, BoxFuture, Connector, Handler, NetConfig, Peer, SnapshotStream, Transport};
use tokio::sync::mpsc;

/// Snapshots received: (from, header, data).
type Received = Arc<Mutex<Vec<(u64, Bytes, Vec<u8>)>>>;

/// Collects Raft batches and answers requests with "echo:" + request.
struct Recorder {
    raft: mpsc::UnboundedSender<(u64, Vec<String>)>,
    snapshots: Received,
}

impl Handler<String> for Recorder {
    fn raft(&self, from: u64, batch: Vec<String>) -> BoxFuture<()> {
        let _ = self.raft.send((from, batch));
        Box::pin(async {})
    }
    fn request(&self, peer: Peer, request: Bytes) -> BoxFuture<Bytes> {
        Box::pin(async move {
            let mut out = format!("echo {peer:?}:").into_bytes();
            out.extend_from_slice(&request);
            Bytes::from(out)
        })
    }
    fn snapshot(
        &self,
        from: u64,
        header: Bytes,
        mut data: SnapshotStream,
    ) -> BoxFuture<Result<(), String>> {
        let store = Arc::clone(&self.snapshots);
        Box::pin(async move {
            let mut all = Vec::new();
            while let Some(chunk) = data.next_chunk().await {
                all.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
            }
            if header.as_ref() == b"refuse" {
                return Err("refused on purpose".into());
            }
            store.lock().unwrap().push((from, header, all));
            Ok(())
        })
    }
}

struct Node {
    transport: Transport<String>,
    raft: mpsc::UnboundedReceiver<(u64, Vec<String>)>,
    snapshots: Received,
}

fn start(
    id: u64,
    socket: UdpSocket,
    peers: BTreeMap<u64, SocketAddr>,
    certs: &dev::DevCerts,
) -> Node {
    let (tx, rx) = mpsc::unbounded_channel();
    let snapshots = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(Recorder {
        raft: tx,
        snapshots: Arc::clone(&snapshots),
    });
    let cfg = NetConfig::new(id, peers, certs.node(id).unwrap());
    let transport = Transport::start(cfg, wrap_udp(socket).unwrap(), handler).unwrap();
    Node {
        transport,
        raft: rx,
        snapshots,
    }
}

fn bind() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn pair(certs: &dev::DevCerts) -> (Node, Node, SocketAddr, SocketAddr) {
    let (s1, a1) = bind();
    let (s2, a2) = bind();
    let n1 = start(1, s1, BTreeMap::from([(2, a2)]), certs);
    let n2 = start(2, s2, BTreeMap::from([(1, a1)]), certs);
    until("connection", || {
        n1.transport.is_connected(2) && n2.transport.is_connected(1)
    })
    .await;
    (n1, n2, a1, a2)
}

async fn receive(node: &mut Node, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let (_, batch) = tokio::time::timeout(Duration::from_secs(10), node.raft.recv())
            .await
            .expect("items arrive")
            .expect("channel open");
        got.extend(batch);
    }
    got
}

#[tokio::test]
async fn raft_items_arrive_in_order_and_batched() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), "ca", &[1, 2], &["app"]).unwrap();
    let (n1, mut n2, _, _) = pair(&certs).await;
    for i in 0..10_000 {
        n1.transport.send_raft(2, format!("m{i}"), 8);
    }
    let got = receive(&mut n2, 10_000).await;
    let expected: Vec<String> = (0..10_000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    let s = n1.transport.stats();
    assert_eq!(s.items_sent, 10_000);
    assert!(s.frames_sent < 10_000 / 4, "not batched: {s:?}");
    // And the other direction, on the same connection.
    n2.transport.send_raft(1, "back".into(), 4);
    let mut n1 = n1;
    assert_eq!(receive(&mut n1, 1).await, vec!["back".to_string()]);
}

#[tokio::test]
async fn requests_between_nodes_and_from_clients() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), "ca", &[1, 2], &["app"]).unwrap();
    let (n1, _n2, _, a2) = pair(&certs).await;
    let resp = n1
        .transport
        .request(2, Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(resp, Bytes::from_static(b"echo Node(1):hi"));
    let (s, _) = bind();
    let client = Connector::new(
        &certs.client("app").unwrap(),
        wrap_udp(s).unwrap(),
        Duration::from_secs(3),
        None,
    )
    .unwrap();
    let conn = client.connect(2, a2).await.unwrap();
    let resp = client.call(&conn, Bytes::from_static(b"yo")).await.unwrap();
    assert_eq!(resp, Bytes::from_static(b"echo Client:yo"));
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(&dir.path().join("a"), "ca", &[1, 2], &["app"]).unwrap();
    let other = dev::generate(&dir.path().join("b"), "other-ca", &[1, 2], &["app"]).unwrap();
    let (_n1, _n2, _, a2) = pair(&certs).await;
    // A client of another CA: node 2 refuses it during the handshake.
    let (s, _) = bind();
    let client = Connector::new(
        &other.client("app").unwrap(),
        wrap_udp(s).unwrap(),
        Duration::from_secs(3),
        None,
    )
    .unwrap();
    let refused = match client.connect(2, a2).await {
        Err(_) => true,
        // TLS 1.3 may finish the client side before the server's verdict
        // arrives: the first request must fail then.
        Ok(conn) => client.call(&conn, Bytes::from_static(b"x")).await.is_err(),
    };
    assert!(refused, "a foreign certificate got through");
    // A node of another CA cannot join either.
    let (s, _) = bind();
    let rogue = Connector::new(
        &other.node(1).unwrap(),
        wrap_udp(s).unwrap(),
        Duration::from_secs(3),
        None,
    )
    .unwrap();
    let refused = match rogue.connect(2, a2).await {
        Err(_) => true,
        Ok(conn) => rogue.call(&conn, Bytes::from_static(b"x")).await.is_err(),
    };
    assert!(refused);
}

/// Opens a raw uni stream and writes `frames` (already framed payloads).
async fn raw_uni(conn: &quinn::Connection, frames: Vec<Bytes>) {
    let send = conn.open_uni().await.unwrap();
    let mut w = tokio_util::codec::FramedWrite::new(send, frame::codec(64 << 20));
    for f in frames {
        if w.send(f).await.is_err() {
            return;
        }
    }
    let _ = w.get_mut().finish();
}

#[tokio::test]
async fn bad_frames_and_false_identities_close_only_their_stream() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), "ca", &[1, 2, 3], &["app"]).unwrap();
    let (s3, a3) = bind();
    let (s1, a1) = bind();
    let mut n3 = start(3, s3, BTreeMap::from([(1, a1)]), &certs);
    let n1 = start(1, s1, BTreeMap::from([(3, a3)]), &certs);
    until("connection", || n1.transport.is_connected(3)).await;
    let header = |from: u64| {
        #[derive(serde::Serialize)]
        enum StreamHeader {
            Raft { from: u64 },
        }
        frame::encode(&StreamHeader::Raft { from }, 1024).unwrap()
    };
    // A client claiming to be node 1.
    let (s, _) = bind();
    let client = Connector::new(
        &certs.client("app").unwrap(),
        wrap_udp(s).unwrap(),
        Duration::from_secs(3),
        None,
    )
    .unwrap();
    let conn = client.connect(3, a3).await.unwrap();
    raw_uni(
        &conn,
        vec![
            header(1),
            frame::encode(&vec!["evil".to_string()], 1024).unwrap(),
        ],
    )
    .await;
    // Node 2 (a real certificate, but not a configured peer of node 3: a
    // client to it) likewise.
    let (s, _) = bind();
    let stranger = Connector::new(
        &certs.node(2).unwrap(),
        wrap_udp(s).unwrap(),
        Duration::from_secs(3),
        None,
    )
    .unwrap();
    let sconn = stranger.connect(3, a3).await.unwrap();
    raw_uni(&sconn, vec![header(2)]).await;
    // Node 1's certificate: an unknown version, garbage, an oversized
    // frame, each on a stream of its own.
    let (s, _) = bind();
    let impostor = Connector::new(
        &certs.node(1).unwrap(),
        wrap_udp(s).unwrap(),
        Duration::from_secs(3),
        None,
    )
    .unwrap();
    let iconn = impostor.connect(3, a3).await.unwrap();
    let mut bad_version = frame::encode(&vec!["x".to_string()], 1024)
        .unwrap()
        .to_vec();
    bad_version[0] = 99;
    raw_uni(&iconn, vec![header(1), Bytes::from(bad_version)]).await;
    raw_uni(
        &iconn,
        vec![header(1), Bytes::from_static(&[1, 0xc1, 0xc1, 0xc1])],
    )
    .await;
    raw_uni(&iconn, vec![header(1), Bytes::from(vec![1u8; 17 << 20])]).await;
    until("five bad streams", || n3.transport.stats().bad_streams >= 5).await;
    // Node 3 still serves: the real node 1's traffic gets through, and
    // nothing of the above was handed up.
    n1.transport.send_raft(3, "good".into(), 4);
    assert_eq!(receive(&mut n3, 1).await, vec!["good".to_string()]);
    assert!(
        n3.raft.try_recv().is_err(),
        "a bad stream's items were delivered"
    );
    let resp = client
        .call(&conn, Bytes::from_static(b"still"))
        .await
        .unwrap();
    assert_eq!(resp, Bytes::from_static(b"echo Client:still"));
    // Request streams: an oversized length, a header that does not
    // decode, a request cut short; each fails its stream alone.
    let bad = n3.transport.stats().bad_streams;
    let raw_bi = |bytes: Vec<u8>| {
        let conn = conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let _ = send.write_all(&bytes).await;
            let _ = send.finish();
            let _ = recv.read_to_end(1024).await;
        }
    };
    raw_bi((17u32 << 20).to_be_bytes().to_vec()).await;
    raw_bi(vec![0, 0, 0, 3, 1, 0xc1, 0xc1]).await;
    let mut cut = frame::encode(&vec!["x".to_string()], 1024)
        .unwrap()
        .to_vec();
    cut.insert(0, 0);
    raw_bi(cut).await;
    until("three more bad streams", || {
        n3.transport.stats().bad_streams >= bad + 3
    })
    .await;
    let resp = client
        .call(&conn, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(resp, Bytes::from_static(b"echo Client:after"));
}

#[tokio::test]
async fn snapshots_stream_in_chunks_and_refusals_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), "ca", &[1, 2], &[]).unwrap();
    let (n1, n2, _, _) = pair(&certs).await;
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    n1.transport
        .send_snapshot(
            2,
            Bytes::from_static(b"meta"),
            Box::new(std::io::Cursor::new(data.clone())),
        )
        .await
        .unwrap();
    {
        let got = n2.snapshots.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.as_ref()), (1, &b"meta"[..]));
        assert!(got[0].2 == data, "snapshot data differs");
    }
    let err = n1
        .transport
        .send_snapshot(
            2,
            Bytes::from_static(b"refuse"),
            Box::new(std::io::Cursor::new(vec![1u8; 10])),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused on purpose"), "{err}");
}

#[tokio::test]
async fn a_restarted_peer_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev::generate(dir.path(), "ca", &[1, 2], &[]).unwrap();
    let (n1, n2, a1, a2) = pair(&certs).await;
    n2.transport.shutdown().await;
    drop(n2);
    // The endpoint's driver lets go of the socket once its aborted tasks
    // have been dropped by the runtime.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let s2 = loop {
        match UdpSocket::bind(a2) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "port never released: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut n2 = start(2, s2, BTreeMap::from([(1, a1)]), &certs);
    until("reconnection", || n1.transport.is_connected(2)).await;
    // Items may be dropped until the new stream is up: keep sending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        n1.transport.send_raft(2, "again".into(), 5);
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), n2.raft.recv()).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no traffic after restart"
        );
    }
}
