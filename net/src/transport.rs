//! The node-to-node transport: one QUIC connection per peer node, mutual
//! TLS, Raft traffic of all groups batched into frames on one stream per
//! direction, requests and snapshots on streams of their own.
//!
//! ```text
//!  send_raft(to, m) ──► per-peer queue ──► sender task: drain queue into one frame ──► uni stream
//!                        (bounded in bytes)     (one frame per write: the busier,          │
//!                                                the bigger the batches)                    ▼
//!  Handler::raft(from, batch) ◄── reader task: frame -> Vec<M> ◄─────────────────── peer's uni stream
//!  Handler::request(peer, req) ◄── bidi stream per request (clients and forwarding nodes)
//!  Handler::snapshot(from, hdr, chunks) ◄── bidi stream per snapshot transfer
//! ```
//!
//! **Who dials**: the node with the lower id dials, with exponential backoff
//! between attempts; the other side accepts. Both use the one connection in
//! both directions (each opens its own Raft stream on it). A node whose
//! connection breaks drops what is queued for that peer: Raft retransmits,
//! and stale messages flooding a peer that just came back help nobody.
//!
//! **Who is who**: a connection's peer is a node if its certificate is
//! valid for a configured peer's name (`node-<id>.synod`), otherwise a
//! client; clients may only send requests. A stream whose first frame
//! claims another identity is closed.
//!
//! **Bad input**: an oversized, malformed or unknown-version frame closes
//! the stream it came on, with a logged reason; the connection and the
//! node keep serving.
//!
//! **Where it runs**: [`Transport::start`] must be called inside a tokio
//! runtime, which then runs every task of the transport. The runtime puts
//! it on a thread of its own (so QUIC crypto and framing use the second
//! core); the simulation runs it on the simulated host's runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use slog::{debug, info, o, warn, Logger};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::frame::{self, FrameError};
use crate::tls::{self, TlsMaterial};

/// A boxed, sendable future: what [`Handler`] methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who is at the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A configured peer node (authenticated by its certificate).
    Node(u64),
    /// Anyone else with a certificate from the cluster CA.
    Client,
}

/// What the transport hands to the layer above. Futures are awaited before
/// the next frame of the same stream is read, which is how back-pressure
/// reaches the sender (QUIC flow control does the rest).
pub trait Handler<M>: Send + Sync + 'static {
    /// A batch of Raft items from node `from`.
    fn raft(&self, from: u64, batch: Vec<M>) -> BoxFuture<()>;
    /// A request; the returned bytes are the response.
    fn request(&self, peer: Peer, request: Bytes) -> BoxFuture<Bytes>;
    /// A snapshot stream from node `from`: `header` as given to
    /// [`Transport::send_snapshot`], then the data in chunks. The result is
    /// reported back to the sender.
    fn snapshot(
        &self,
        from: u64,
        header: Bytes,
        data: SnapshotStream,
    ) -> BoxFuture<Result<(), String>>;
}

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The peer id is not configured.
    #[error("node {0} is not a configured peer")]
    UnknownPeer(u64),
    /// No live connection to the peer right now.
    #[error("no connection to node {0} (it may be down or unreachable); retry later")]
    NotConnected(u64),
    /// A stream could not be opened: nothing was sent.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// Who.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A QUIC connection could not be made or broke.
    #[error("connection to {peer}: {reason}")]
    Connection {
        /// Who.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A frame was malformed or too large.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended early.
    #[error("stream closed before the {0} arrived")]
    Closed(&'static str),
    /// Reading snapshot data to send failed.
    #[error("reading snapshot data: {0}")]
    Source(String),
    /// The receiver refused the snapshot.
    #[error("the receiver refused the snapshot: {0}")]
    Refused(String),
    /// Could not create the endpoint.
    #[error("cannot create the QUIC endpoint: {0}")]
    Endpoint(String),
}

/// How the transport behaves.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// This node's id.
    pub node_id: u64,
    /// Peer nodes and their addresses (this node excluded).
    pub peers: BTreeMap<u64, SocketAddr>,
    /// The cluster CA and this node's certificate.
    pub tls: TlsMaterial,
    /// Largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// Most bytes queued for one peer; beyond, Raft items are dropped
    /// (Raft retransmits) and counted.
    pub max_queue_bytes: usize,
    /// First wait before redialing a peer; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest wait between dial attempts.
    pub backoff_max: Duration,
    /// A connection silent for this long is dead.
    pub idle_timeout: Duration,
    /// Keep-alive interval (must be below `idle_timeout`).
    pub keep_alive: Duration,
    /// Seed for QUIC's random choices (simulation); `None` in production.
    pub seed: Option<u64>,
    /// Where connection events and stream errors go.
    pub logger: Logger,
}

impl NetConfig {
    /// Defaults for node `node_id`.
    pub fn new(node_id: u64, peers: BTreeMap<u64, SocketAddr>, tls: TlsMaterial) -> Self {
        NetConfig {
            node_id,
            peers,
            tls,
            max_frame_bytes: frame::DEFAULT_MAX_FRAME,
            max_queue_bytes: 64 << 20,
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            // A dead peer must be noticed quickly: requests forwarded to a
            // leader that was killed hang until then.
            idle_timeout: Duration::from_millis(1000),
            keep_alive: Duration::from_millis(200),
            seed: None,
            logger: Logger::root(slog::Discard, o!()),
        }
    }
}

impl NetError {
    /// Whether the request may have reached the peer (so its outcome is
    /// unknown); `false` when it certainly was not sent.
    pub fn maybe_sent(&self) -> bool {
        !matches!(
            self,
            NetError::NotConnected(_)
                | NetError::UnknownPeer(_)
                | NetError::Unreachable { .. }
                | NetError::Endpoint(_)
                | NetError::Tls(_)
        )
    }
}

/// Counters of the transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Raft frames written.
    pub frames_sent: u64,
    /// Raft items written.
    pub items_sent: u64,
    /// Raft frames read.
    pub frames_received: u64,
    /// Raft items read.
    pub items_received: u64,
    /// Items dropped because the peer's queue was full.
    pub dropped_full: u64,
    /// Items dropped because there was no connection.
    pub dropped_disconnected: u64,
    /// Streams closed because of a bad frame or a false identity.
    pub bad_streams: u64,
    /// Connections established (dialed or accepted).
    pub connections: u64,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    items_sent: AtomicU64,
    frames_received: AtomicU64,
    items_received: AtomicU64,
    dropped_full: AtomicU64,
    dropped_disconnected: AtomicU64,
    bad_streams: AtomicU64,
    connections: AtomicU64,
}

/// The first frame of every stream (public for the decoders' mutation
/// tests; applications never build one).
#[derive(Serialize, Deserialize, Debug)]
pub enum StreamHeader {
    /// A stream of Raft batches from node `from`.
    Raft {
        /// The sending node.
        from: u64,
    },
    /// A request and its answer.
    Request,
    /// A snapshot from node `from`; `header` is the application's.
    Snapshot {
        /// The sending node.
        from: u64,
        /// The application's snapshot header.
        header: Bytes,
    },
}

/// The receiver's answer at the end of a snapshot stream (public for the
/// decoders' mutation tests).
#[derive(Serialize, Deserialize, Debug)]
pub struct SnapshotAck {
    /// Why the receiver refused the snapshot, if it did.
    pub error: Option<String>,
}

/// Error codes for closing streams.
const CODE_BAD_FRAME: u32 = 1;
const CODE_IDENTITY: u32 = 2;

struct PeerLink<M> {
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<(M, usize)>,
    queued: Arc<AtomicUsize>,
    conn: watch::Sender<Option<quinn::Connection>>,
}

struct Shared<M> {
    cfg: NetConfig,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    peers: BTreeMap<u64, PeerLink<M>>,
    handler: Arc<dyn Handler<M>>,
    stats: Counters,
    /// Set by `shutdown`: dial loops stop.
    closing: std::sync::atomic::AtomicBool,
    /// The long-lived tasks, aborted by `shutdown` (they hold this struct,
    /// and with it the endpoint and its socket).
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    log: Logger,
}

/// Handle to a running transport. Cheap to clone; every method may be
/// called from any thread.
pub struct Transport<M> {
    shared: Arc<Shared<M>>,
    rt: tokio::runtime::Handle,
}

impl<M> Clone for Transport<M> {
    fn clone(&self) -> Self {
        Transport {
            shared: Arc::clone(&self.shared),
            rt: self.rt.clone(),
        }
    }
}

fn seed32(seed: u64, what: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&seed.to_le_bytes());
    ctx.update(what.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Builds an endpoint over `socket` (a real UDP socket wrapped by
/// `quinn::TokioRuntime`, or a simulated one).
fn make_endpoint(
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    server: Option<quinn::ServerConfig>,
    reset_key: ring::hmac::Key,
    seed: Option<u64>,
) -> Result<quinn::Endpoint, NetError> {
    let mut cfg = quinn::EndpointConfig::new(Arc::new(reset_key));
    if let Some(seed) = seed {
        cfg.rng_seed(Some(seed32(seed, "endpoint")));
    }
    quinn::Endpoint::new_with_abstract_socket(cfg, server, socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| NetError::Endpoint(e.to_string()))
}

/// Wraps a bound std UDP socket for quinn (inside a tokio runtime).
pub fn wrap_udp(socket: std::net::UdpSocket) -> Result<Arc<dyn quinn::AsyncUdpSocket>, NetError> {
    use quinn::Runtime;
    quinn::TokioRuntime
        .wrap_udp_socket(socket)
        .map_err(|e| NetError::Endpoint(e.to_string()))
}

impl<M> Transport<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Starts the transport on `socket`: accepts connections, dials the
    /// peers with a higher id, and serves streams with `handler`. Call it
    /// inside the tokio runtime that should run the transport.
    pub fn start(
        cfg: NetConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        handler: Arc<dyn Handler<M>>,
    ) -> Result<Transport<M>, NetError> {
        let server = cfg.tls.server_config(cfg.idle_timeout, cfg.keep_alive)?;
        let client_config = cfg.tls.client_config(cfg.idle_timeout, cfg.keep_alive)?;
        let endpoint = make_endpoint(socket, Some(server), cfg.tls.reset_key(), cfg.seed)?;
        let log = cfg.logger.new(o!("node" => cfg.node_id));
        let mut peers = BTreeMap::new();
        let mut receivers = Vec::new();
        for (&id, &addr) in &cfg.peers {
            let (tx, rx) = mpsc::unbounded_channel();
            let (conn_tx, conn_rx) = watch::channel(None);
            let queued = Arc::new(AtomicUsize::new(0));
            peers.insert(
                id,
                PeerLink {
                    addr,
                    queue: tx,
                    queued: Arc::clone(&queued),
                    conn: conn_tx,
                },
            );
            receivers.push((id, rx, conn_rx, queued));
        }
        let shared = Arc::new(Shared {
            cfg,
            endpoint,
            client_config,
            peers,
            handler,
            stats: Counters::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            tasks: std::sync::Mutex::new(Vec::new()),
            log,
        });
        let rt = tokio::runtime::Handle::current();
        let mut tasks = vec![rt.spawn(accept_loop(Arc::clone(&shared))).abort_handle()];
        for (id, rx, conn_rx, queued) in receivers {
            let t = rt.spawn(peer_sender(Arc::clone(&shared), id, rx, conn_rx, queued));
            tasks.push(t.abort_handle());
            if shared.cfg.node_id < id {
                tasks.push(rt.spawn(dial_loop(Arc::clone(&shared), id)).abort_handle());
            }
        }
        if let Ok(mut t) = shared.tasks.lock() {
            *t = tasks;
        }
        Ok(Transport { shared, rt })
    }

    /// Queues a Raft item for node `to`; `size` estimates its bytes for the
    /// queue bound. Never blocks: when the queue is full or the peer is
    /// disconnected the item is dropped and counted (Raft retransmits).
    pub fn send_raft(&self, to: u64, item: M, size: usize) {
        let Some(link) = self.shared.peers.get(&to) else {
            return;
        };
        let queued = link.queued.load(Ordering::Relaxed);
        if queued + size > self.shared.cfg.max_queue_bytes {
            self.shared
                .stats
                .dropped_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        link.queued.fetch_add(size, Ordering::Relaxed);
        if link.queue.send((item, size)).is_err() {
            link.queued.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Whether a live connection to `peer` exists.
    pub fn is_connected(&self, peer: u64) -> bool {
        self.shared
            .peers
            .get(&peer)
            .and_then(|l| l.conn.borrow().clone())
            .is_some_and(|c| c.close_reason().is_none())
    }

    /// Sends a request to node `to` and waits for the response.
    pub async fn request(&self, to: u64, request: Bytes) -> Result<Bytes, NetError> {
        let conn = self.connection(to)?;
        let max = self.shared.cfg.max_frame_bytes;
        self.on_runtime(to, async move { call(&conn, request, max).await })
            .await
    }

    /// Streams a snapshot to node `to`: `header` (for the receiver's
    /// handler), then everything `data` yields, in chunks. Returns once the
    /// receiver has stored it (or refused it).
    pub async fn send_snapshot(
        &self,
        to: u64,
        header: Bytes,
        data: Box<dyn Read + Send>,
    ) -> Result<(), NetError> {
        let conn = self.connection(to)?;
        let from = self.shared.cfg.node_id;
        let max = self.shared.cfg.max_frame_bytes;
        self.on_runtime(to, async move {
            push_snapshot(&conn, from, header, data, max).await
        })
        .await
    }

    /// Runs a stream operation with node `to` on the transport's runtime
    /// (the caller may be on another thread's runtime).
    async fn on_runtime<T: Send + 'static>(
        &self,
        to: u64,
        op: impl Future<Output = Result<T, NetError>> + Send + 'static,
    ) -> Result<T, NetError> {
        self.rt.spawn(op).await.map_err(|e| NetError::Connection {
            peer: format!("node {to}"),
            reason: e.to_string(),
        })?
    }

    fn connection(&self, to: u64) -> Result<quinn::Connection, NetError> {
        let link = self
            .shared
            .peers
            .get(&to)
            .ok_or(NetError::UnknownPeer(to))?;
        link.conn
            .borrow()
            .clone()
            .filter(|c| c.close_reason().is_none())
            .ok_or(NetError::NotConnected(to))
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        let s = &self.shared.stats;
        NetStats {
            frames_sent: s.frames_sent.load(Ordering::Relaxed),
            items_sent: s.items_sent.load(Ordering::Relaxed),
            frames_received: s.frames_received.load(Ordering::Relaxed),
            items_received: s.items_received.load(Ordering::Relaxed),
            dropped_full: s.dropped_full.load(Ordering::Relaxed),
            dropped_disconnected: s.dropped_disconnected.load(Ordering::Relaxed),
            bad_streams: s.bad_streams.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
        }
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.endpoint.local_addr().ok()
    }

    /// Closes every connection and waits until the peers were told.
    /// Closes every connection, waits until the peers were told, and
    /// stops the transport's tasks (releasing its socket).
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        let ep = self.shared.endpoint.clone();
        let _ = self
            .rt
            .spawn(async move {
                ep.close(0u32.into(), b"shutdown");
                ep.wait_idle().await;
            })
            .await;
        let tasks = self
            .shared
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        for link in self.shared.peers.values() {
            link.conn.send_replace(None);
        }
    }
}

/// Who a connection's certificate says the peer is.
fn identify<M>(shared: &Shared<M>, conn: &quinn::Connection) -> Peer {
    let certs = conn.peer_identity().and_then(|id| {
        id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
        return Peer::Client;
    };
    for &id in shared.peers.keys() {
        if tls::cert_is_for(leaf, &tls::node_name(id)) {
            return Peer::Node(id);
        }
    }
    Peer::Client
}

/// Publishes a live connection to node `id` and serves its streams.
async fn adopt<M>(shared: Arc<Shared<M>>, id: u64, conn: quinn::Connection)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    if let Some(link) = shared.peers.get(&id) {
        link.conn.send_replace(Some(conn.clone()));
    }
    serve_connection(shared, conn, Peer::Node(id)).await;
}

async fn accept_loop<M>(shared: Arc<Shared<M>>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    // Includes clients without a certificate from our CA.
                    warn!(shared.log, "refused a connection"; "from" => %remote, "reason" => %e);
                    return;
                }
            };
            match identify(&shared, &conn) {
                Peer::Node(id) => {
                    info!(shared.log, "accepted node"; "peer" => id, "from" => %remote);
                    adopt(shared, id, conn).await;
                }
                Peer::Client => {
                    debug!(shared.log, "accepted client"; "from" => %remote);
                    serve_connection(shared, conn, Peer::Client).await;
                }
            }
        });
    }
}

async fn dial_loop<M>(shared: Arc<Shared<M>>, id: u64)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let Some(addr) = shared.peers.get(&id).map(|l| l.addr) else {
        return;
    };
    let name = tls::node_name(id);
    let mut backoff = shared.cfg.backoff_min;
    loop {
        let attempt = shared
            .endpoint
            .connect_with(shared.client_config.clone(), addr, &name);
        let result = match attempt {
            Ok(connecting) => connecting.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(conn) => {
                info!(shared.log, "connected"; "peer" => id, "addr" => %addr);
                backoff = shared.cfg.backoff_min;
                adopt(Arc::clone(&shared), id, conn).await;
                debug!(shared.log, "connection lost"; "peer" => id);
            }
            Err(e) => {
                debug!(shared.log, "dial failed"; "peer" => id, "error" => e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(shared.cfg.backoff_max);
            }
        }
        if shared.closing.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Accepts the streams a connection's peer opens until it closes.
async fn serve_connection<M>(shared: Arc<Shared<M>>, conn: quinn::Connection, peer: Peer)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    loop {
        tokio::select! {
            biased;
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    tokio::spawn(read_raft(Arc::clone(&shared), recv, peer));
                }
                Err(_) => return,
            },
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    tokio::spawn(serve_bi(Arc::clone(&shared), send, recv, peer));
                }
                Err(_) => return,
            },
        }
    }
}

fn bad_stream<M>(
    shared: &Shared<M>,
    recv: &mut quinn::RecvStream,
    peer: Peer,
    code: u32,
    why: String,
) {
    shared.stats.bad_streams.fetch_add(1, Ordering::Relaxed);
    warn!(shared.log, "closing a stream"; "peer" => ?peer, "reason" => why);
    let _ = recv.stop(code.into());
}

async fn next_frame(
    framed: &mut FramedRead<quinn::RecvStream, LengthDelimitedCodec>,
) -> Option<Result<Bytes, String>> {
    framed
        .next()
        .await
        .map(|r| r.map(|b| b.freeze()).map_err(|e| e.to_string()))
}

/// Reads and decodes the first frame of a stream (`None`: it ended first).
async fn read_header(
    framed: &mut FramedRead<quinn::RecvStream, LengthDelimitedCodec>,
) -> Option<Result<StreamHeader, String>> {
    next_frame(framed)
        .await
        .map(|f| f.and_then(|f| frame::decode(&f).map_err(|e| e.to_string())))
}

/// Reads a peer's Raft stream: frames of item batches, handed upward.
async fn read_raft<M>(shared: Arc<Shared<M>>, recv: quinn::RecvStream, peer: Peer)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let mut framed = FramedRead::new(recv, frame::codec(shared.cfg.max_frame_bytes));
    let from = match read_header(&mut framed).await {
        Some(Ok(StreamHeader::Raft { from })) if peer == Peer::Node(from) => from,
        Some(Ok(h)) => {
            let why = format!("stream header {h:?} does not fit peer {peer:?}");
            return bad_stream(&shared, framed.get_mut(), peer, CODE_IDENTITY, why);
        }
        Some(Err(e)) => return bad_stream(&shared, framed.get_mut(), peer, CODE_BAD_FRAME, e),
        None => return,
    };
    while let Some(f) = next_frame(&mut framed).await {
        let decoded = f.and_then(|f| frame::decode::<Vec<M>>(&f).map_err(|e| e.to_string()));
        let batch = match decoded {
            Ok(b) => b,
            Err(e) => return bad_stream(&shared, framed.get_mut(), peer, CODE_BAD_FRAME, e),
        };
        shared.stats.frames_received.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .items_received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        shared.handler.raft(from, batch).await;
    }
}

/// Serves one bidirectional stream: a request or a snapshot transfer.
async fn serve_bi<M>(
    shared: Arc<Shared<M>>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    peer: Peer,
) where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let max = shared.cfg.max_frame_bytes;
    let mut send = send;
    let mut recv = recv;
    // A request stream carries two frames (header, request) and ends; a
    // snapshot stream carries its header, then chunks. Frames of a
    // request are read in place: no codec buffers (16 KiB a stream, which
    // at thousands of requests a second cost a node about a tenth of its
    // cycles in allocation and page faults).
    let header = match read_frame(&mut recv, max).await {
        Ok(Some(f)) => frame::decode::<StreamHeader>(&f).map_err(|e| e.to_string()),
        Ok(None) => return,
        Err(e) => Err(e),
    };
    match header {
        Ok(StreamHeader::Request) => {
            let request = match read_frame(&mut recv, max).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => return bad_stream(&shared, &mut recv, peer, CODE_BAD_FRAME, e),
            };
            let response = shared.handler.request(peer, request).await;
            if write_frames(&mut send, [response]).await.is_ok() {
                let _ = send.finish();
            }
        }
        Ok(StreamHeader::Snapshot { from, header }) if peer == Peer::Node(from) => {
            let stream = SnapshotStream {
                framed: FramedRead::new(recv, frame::codec(max)),
            };
            let result = shared.handler.snapshot(from, header, stream).await;
            let ack = SnapshotAck {
                error: result.err(),
            };
            if let Ok(f) = frame::encode(&ack, max) {
                if write_frames(&mut send, [f]).await.is_ok() {
                    let _ = send.finish();
                }
            }
        }
        Ok(h) => {
            let why = format!("stream header {h:?} does not fit peer {peer:?}");
            bad_stream(&shared, &mut recv, peer, CODE_IDENTITY, why);
        }
        Err(e) => bad_stream(&shared, &mut recv, peer, CODE_BAD_FRAME, e),
    }
}

/// Reads one frame in the length-prefix codec's format (a 4-byte
/// big-endian length, then that many bytes, at most `max`) into a buffer
/// of its size; `None` if the stream ended before it began. In order, as
/// every read of these streams (quinn's `read_to_end` reads out of order,
/// and mixed with ordered reads it lost requests under load).
async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<Option<Bytes>, String> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(format!("frame of {n} bytes exceeds the limit of {max}"));
    }
    let mut buf = vec![0u8; n];
    recv.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(Some(Bytes::from(buf)))
}

/// Writes `frames` in the length-prefix codec's format, in one call.
async fn write_frames<const N: usize>(
    send: &mut quinn::SendStream,
    frames: [Bytes; N],
) -> Result<(), quinn::WriteError> {
    let mut chunks: Vec<Bytes> = Vec::with_capacity(2 * N);
    for f in frames {
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        chunks.push(Bytes::copy_from_slice(&len.to_be_bytes()));
        chunks.push(f);
    }
    send.write_all_chunks(&mut chunks).await
}

/// The data of an incoming snapshot, chunk by chunk.
pub struct SnapshotStream {
    framed: FramedRead<quinn::RecvStream, LengthDelimitedCodec>,
}

impl SnapshotStream {
    /// The next chunk; `None` at the end of the data.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, NetError>> {
        next_frame(&mut self.framed)
            .await
            .map(|r| r.map_err(|e| NetError::Frame(FrameError::Decode(e))))
    }
}

/// Sends one request on a new stream of `conn` and reads the response.
pub async fn call(conn: &quinn::Connection, request: Bytes, max: usize) -> Result<Bytes, NetError> {
    let peer = conn.remote_address().to_string();
    let conn_err = |e: &dyn std::fmt::Display| NetError::Connection {
        peer: peer.clone(),
        reason: e.to_string(),
    };
    let (send, recv) = conn.open_bi().await.map_err(|e| NetError::Unreachable {
        peer: peer.clone(),
        reason: e.to_string(),
    })?;
    let (mut send, mut recv) = (send, recv);
    if request.len() > max {
        return Err(FrameError::TooLarge {
            size: request.len(),
            limit: max,
        }
        .into());
    }
    let header = frame::encode(&StreamHeader::Request, max)?;
    write_frames(&mut send, [header, request])
        .await
        .map_err(|e| conn_err(&e))?;
    let _ = send.finish();
    match read_frame(&mut recv, max).await {
        Ok(Some(response)) => Ok(response),
        Ok(None) => Err(NetError::Closed("response")),
        Err(e) => Err(conn_err(&e)),
    }
}

/// Size of the chunks a snapshot is streamed in.
const SNAPSHOT_CHUNK: usize = 1 << 20;

async fn push_snapshot(
    conn: &quinn::Connection,
    from: u64,
    header: Bytes,
    mut data: Box<dyn Read + Send>,
    max: usize,
) -> Result<(), NetError> {
    let peer = conn.remote_address().to_string();
    let conn_err = |e: &dyn std::fmt::Display| NetError::Connection {
        peer: peer.clone(),
        reason: e.to_string(),
    };
    let (send, recv) = conn.open_bi().await.map_err(|e| conn_err(&e))?;
    let mut writer = FramedWrite::new(send, frame::codec(max));
    let head = frame::encode(&StreamHeader::Snapshot { from, header }, max)?;
    writer.send(head).await.map_err(|e| conn_err(&e))?;
    let chunk = SNAPSHOT_CHUNK.min(max);
    loop {
        let mut buf = vec![0u8; chunk];
        let mut filled = 0;
        while filled < chunk {
            match data.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(NetError::Source(e.to_string())),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        writer
            .send(Bytes::from(buf))
            .await
            .map_err(|e| conn_err(&e))?;
    }
    let _ = writer.get_mut().finish();
    let mut reader = FramedRead::new(recv, frame::codec(max));
    match next_frame(&mut reader).await {
        Some(Ok(f)) => match frame::decode::<SnapshotAck>(&f)?.error {
            None => Ok(()),
            Some(e) => Err(NetError::Refused(e)),
        },
        Some(Err(e)) => Err(conn_err(&e)),
        None => Err(NetError::Closed("snapshot acknowledgement")),
    }
}

/// Most items in one Raft frame.
const MAX_BATCH_ITEMS: usize = 4096;

/// Drains node `id`'s queue onto its connection, one frame per write.
async fn peer_sender<M>(
    shared: Arc<Shared<M>>,
    id: u64,
    mut rx: mpsc::UnboundedReceiver<(M, usize)>,
    mut conn_rx: watch::Receiver<Option<quinn::Connection>>,
    queued: Arc<AtomicUsize>,
) where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let max = shared.cfg.max_frame_bytes;
    let batch_bytes = max / 2;
    loop {
        // Wait for a live connection; what arrives meanwhile is dropped.
        let conn = loop {
            let current = conn_rx.borrow_and_update().clone();
            if let Some(c) = current.filter(|c| c.close_reason().is_none()) {
                break c;
            }
            tokio::select! {
                biased;
                changed = conn_rx.changed() => if changed.is_err() { return },
                item = rx.recv() => match item {
                    Some((_, size)) => {
                        queued.fetch_sub(size, Ordering::Relaxed);
                        shared.stats.dropped_disconnected.fetch_add(1, Ordering::Relaxed);
                    }
                    None => return,
                },
            }
        };
        debug!(shared.log, "raft stream opening"; "peer" => id);
        let Ok(send) = conn.open_uni().await else {
            // Closed under us: wait for the next one.
            let _ = conn_rx.changed().await;
            continue;
        };
        let mut writer = FramedWrite::new(send, frame::codec(max));
        let from = shared.cfg.node_id;
        let Ok(head) = frame::encode(&StreamHeader::Raft { from }, max) else {
            return;
        };
        if writer.send(head).await.is_err() {
            continue;
        }
        loop {
            tokio::select! {
                biased;
                changed = conn_rx.changed() => {
                    if changed.is_err() { return }
                    break; // a new connection replaced this one
                }
                item = rx.recv() => {
                    let Some((first, size)) = item else { return };
                    let mut batch = vec![first];
                    let mut bytes = size;
                    while batch.len() < MAX_BATCH_ITEMS && bytes < batch_bytes {
                        match rx.try_recv() {
                            Ok((m, s)) => {
                                batch.push(m);
                                bytes += s;
                            }
                            Err(_) => break,
                        }
                    }
                    queued.fetch_sub(bytes, Ordering::Relaxed);
                    if write_batch(&shared, &mut writer, batch).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// Writes a batch as one frame, splitting it if it exceeds the frame limit
/// (an item too large on its own is dropped with a warning).
async fn write_batch<M>(
    shared: &Shared<M>,
    writer: &mut FramedWrite<quinn::SendStream, LengthDelimitedCodec>,
    batch: Vec<M>,
) -> Result<(), ()>
where
    M: Serialize,
{
    let max = shared.cfg.max_frame_bytes;
    let mut pending = vec![batch];
    while let Some(b) = pending.pop() {
        match frame::encode(&b, max) {
            Ok(f) => {
                let n = b.len() as u64;
                writer.send(f).await.map_err(|_| ())?;
                shared.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                shared.stats.items_sent.fetch_add(n, Ordering::Relaxed);
            }
            Err(FrameError::TooLarge { .. }) if b.len() > 1 => {
                let mut first = b;
                let second = first.split_off(first.len() / 2);
                pending.push(second);
                pending.push(first);
            }
            Err(e) => {
                warn!(shared.log, "dropping an item that cannot be framed"; "error" => %e);
            }
        }
    }
    Ok(())
}

/// A client-side endpoint for talking to nodes (the `Client`'s transport).
pub struct Connector {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    max_frame_bytes: usize,
}

impl Connector {
    /// An endpoint on `socket` presenting `tls`'s certificate. Call inside
    /// a tokio runtime.
    pub fn new(
        tls: &TlsMaterial,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        idle_timeout: Duration,
        seed: Option<u64>,
    ) -> Result<Connector, NetError> {
        let client_config = tls.client_config(idle_timeout, idle_timeout / 5)?;
        let endpoint = make_endpoint(socket, None, tls.reset_key(), seed)?;
        Ok(Connector {
            endpoint,
            client_config,
            max_frame_bytes: frame::DEFAULT_MAX_FRAME,
        })
    }

    /// Connects to node `id` at `addr` (its certificate must be for
    /// `node-<id>.synod`).
    pub async fn connect(&self, id: u64, addr: SocketAddr) -> Result<quinn::Connection, NetError> {
        let peer = format!("node {id} at {addr}");
        self.endpoint
            .connect_with(self.client_config.clone(), addr, &tls::node_name(id))
            .map_err(|e| NetError::Unreachable {
                peer: peer.clone(),
                reason: e.to_string(),
            })?
            .await
            .map_err(|e| NetError::Unreachable {
                peer,
                reason: e.to_string(),
            })
    }

    /// Sends one request on a new stream of `conn`.
    pub async fn call(&self, conn: &quinn::Connection, request: Bytes) -> Result<Bytes, NetError> {
        call(conn, request, self.max_frame_bytes).await
    }

    /// Closes the endpoint.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}
