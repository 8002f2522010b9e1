//! [`Client`]: talks to a cluster from outside, over QUIC with a client
//! certificate from the cluster CA. It finds each group's leader (every
//! answer names the leader that committed it, and that is the node it
//! remembers), sends there (a node that is not the leader forwards, or
//! points the client to the leader when it cannot reach it), and retries,
//! but only when retrying cannot apply a command twice: exactly when
//! [`SynodError::is_safe_to_retry`] holds (`NotLeader`, `Busy`, a node
//! that could not be reached, so nothing was sent). An unknown outcome
//! (`Timeout`, `Stopped`, `ConnectionLost`, `OutcomeUnknown`) is returned
//! as is.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use synod_actors::{GroupStatus, MembershipInfo, NodeStats, Request, RequestError, Response};
use synod_core::NodeId;
use synod_net::{frame, Connector, TlsMaterial};
use synod_storage::GroupId;

use crate::actor::{envelope, Message, Query};
use crate::error::SynodError;

/// How to reach a cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The nodes: id and address.
    pub nodes: BTreeMap<NodeId, SocketAddr>,
    /// The cluster CA and the client's certificate.
    pub tls: TlsMaterial,
    /// Deadline of one call, retries included. Default 10 s.
    pub timeout: Duration,
    /// Longest wait for the QUIC handshake with one node. A node that does
    /// not complete it in time (down, or a wrong address) has received
    /// nothing: the call moves on to another node. Default 500 ms (a
    /// handshake takes about one round trip); raise it for distant nodes.
    pub connect_timeout: Duration,
    /// How long a connection to a node may stay silent before it counts
    /// as lost (QUIC's idle timeout; keep-alives go out at a fifth of
    /// it). Requests in flight on it then fail with `ConnectionLost` and
    /// the client moves on: this bounds how long a SIGKILLed leader holds
    /// the client's requests. Default 1 s. 400 ms brings failover under
    /// a second (`synod-bench failover`), but is not the default yet: one
    /// CI run with it could not complete a handshake with a loaded node
    /// for 60 s (docs/BENCHMARKS.md, "Failover").
    pub idle_timeout: Duration,
}

impl ClientConfig {
    /// Defaults for `nodes` with `tls`.
    pub fn new(nodes: BTreeMap<NodeId, SocketAddr>, tls: TlsMaterial) -> Self {
        ClientConfig {
            nodes,
            tls,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(1000),
        }
    }
}

struct Inner {
    connector: Connector,
    nodes: BTreeMap<NodeId, SocketAddr>,
    conns: Mutex<HashMap<NodeId, quinn::Connection>>,
    leaders: Mutex<HashMap<GroupId, NodeId>>,
    /// Nodes that failed recently, and until when to avoid them.
    down: Mutex<HashMap<NodeId, tokio::time::Instant>>,
    connect_timeout: Duration,
}

/// How long a node that failed is avoided.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// A client of a Synod cluster. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Deadline of one call, retries included (per handle: see
    /// [`Client::with_timeout`]).
    timeout: Duration,
}

impl Client {
    /// Creates the client's QUIC endpoint (inside a tokio runtime). Nodes
    /// are connected to lazily.
    pub fn new(cfg: ClientConfig) -> Result<Client, SynodError> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")
            .or_else(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
            .map_err(|e| SynodError::Unavailable(format!("cannot bind a UDP socket: {e}")))?;
        let socket = synod_net::transport::wrap_udp(socket)
            .map_err(|e| SynodError::Unavailable(e.to_string()))?;
        Client::with_socket(cfg, socket, None)
    }

    /// Like [`Client::new`], over a socket of the caller's (a simulated one),
    /// with QUIC's randomness seeded when `seed` is given.
    pub fn with_socket(
        cfg: ClientConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        seed: Option<u64>,
    ) -> Result<Client, SynodError> {
        if cfg.nodes.is_empty() {
            return Err(SynodError::Unavailable("no nodes configured".into()));
        }
        let connector = Connector::new(&cfg.tls, socket, cfg.idle_timeout, seed)
            .map_err(|e| SynodError::Unavailable(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                connector,
                nodes: cfg.nodes,
                conns: Mutex::new(HashMap::new()),
                leaders: Mutex::new(HashMap::new()),
                down: Mutex::new(HashMap::new()),
                connect_timeout: cfg.connect_timeout,
            }),
            timeout: cfg.timeout,
        })
    }

    /// The same client (connections, leader cache) whose calls made
    /// through the handle returned take at most `timeout` each, retries
    /// included: a per-call deadline, as in
    /// `client.with_timeout(Duration::from_millis(200)).send(1, m)`.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            timeout,
        }
    }

    /// The deadline of one call of this handle.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a command to `group` and returns the handler's result.
    pub async fn send<M: Message>(&self, group: GroupId, msg: M) -> Result<M::Result, SynodError> {
        let payload = envelope(M::NAME, &msg).map_err(SynodError::Codec)?;
        let out = self
            .call(
                group,
                Request::Command {
                    group,
                    payload: Bytes::from(payload),
                },
            )
            .await?;
        rmp_serde::from_slice(&out).map_err(|e| SynodError::Codec(e.to_string()))
    }

    /// Sends an encoded command envelope to `group` (a session's).
    pub(crate) async fn send_raw(
        &self,
        group: GroupId,
        payload: Vec<u8>,
    ) -> Result<Bytes, SynodError> {
        self.call(
            group,
            Request::Command {
                group,
                payload: Bytes::from(payload),
            },
        )
        .await
    }

    /// Runs a query on `group` under the leader's lease (see
    /// [`crate::ReplicatedAddr::read_lease`] for the clock assumption).
    pub async fn read_lease<Q: Query>(
        &self,
        group: GroupId,
        query: Q,
    ) -> Result<Q::Result, SynodError> {
        let payload = envelope(Q::NAME, &query).map_err(SynodError::Codec)?;
        let out = self
            .call(
                group,
                Request::ReadLease {
                    group,
                    payload: Bytes::from(payload),
                },
            )
            .await?;
        rmp_serde::from_slice(&out).map_err(|e| SynodError::Codec(e.to_string()))
    }

    /// Runs a query on `group`, linearizably, without a log entry (see
    /// [`crate::ReplicatedAddr::read`]). Sent to the node this client
    /// believes leads the group; a follower that gets it serves it as a
    /// follower read.
    pub async fn read<Q: Query>(&self, group: GroupId, query: Q) -> Result<Q::Result, SynodError> {
        let payload = envelope(Q::NAME, &query).map_err(SynodError::Codec)?;
        let out = self
            .call(
                group,
                Request::Read {
                    group,
                    payload: Bytes::from(payload),
                },
            )
            .await?;
        rmp_serde::from_slice(&out).map_err(|e| SynodError::Codec(e.to_string()))
    }

    /// Runs a query on `group` linearizably *at node `node`*, typically a
    /// follower (a follower read, Raft thesis §6.4): `node` asks the leader
    /// for its confirmed commit index, waits until its own replica applied
    /// that far, and runs the query there. The result reflects every
    /// write acknowledged before the call, and the load stays off the
    /// leader. No retries elsewhere: an error (`NotLeader` when `node`
    /// knows no leader, say) is safe to retry, here or on another node.
    pub async fn read_follower<Q: Query>(
        &self,
        node: NodeId,
        group: GroupId,
        query: Q,
    ) -> Result<Q::Result, SynodError> {
        self.ask_query(
            node,
            Request::Read {
                group,
                payload: Bytes::from(envelope(Q::NAME, &query).map_err(SynodError::Codec)?),
            },
        )
        .await
    }

    async fn ask_query<R: serde::de::DeserializeOwned>(
        &self,
        node: NodeId,
        req: Request,
    ) -> Result<R, SynodError> {
        match self.ask(node, &req).await? {
            Response::Ok { result: b, .. } => {
                rmp_serde::from_slice(&b).map_err(|e| SynodError::Codec(e.to_string()))
            }
            Response::Err(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Runs a query on node `node`'s own replica of `group`, without going
    /// through the log: possibly stale, no retries (to compare replicas).
    pub async fn read_local<Q: Query>(
        &self,
        node: NodeId,
        group: GroupId,
        query: Q,
    ) -> Result<Q::Result, SynodError> {
        let payload = envelope(Q::NAME, &query).map_err(SynodError::Codec)?;
        let req = Request::LocalRead {
            group,
            payload: Bytes::from(payload),
        };
        self.ask_query(node, req).await
    }

    /// Node `node`'s view of its groups.
    pub async fn status(&self, node: NodeId) -> Result<Vec<GroupStatus>, SynodError> {
        match self.ask(node, &Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// `(group, leader)` for every group running on node `node`, as its
    /// replica there believes (0: no leader known). Cheap: the node asks
    /// no group, so it suits watching thousands of groups.
    pub async fn leaders(&self, node: NodeId) -> Result<Vec<(GroupId, NodeId)>, SynodError> {
        match self.ask(node, &Request::Leaders).await? {
            Response::Leaders(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// Node `node`'s counters.
    pub async fn stats(&self, node: NodeId) -> Result<NodeStats, SynodError> {
        match self.ask(node, &Request::Stats).await? {
            Response::Stats(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Hands the leadership of `group` to node `to` (Raft thesis §3.10) and
    /// returns once `to` leads it. Sent to the leader this client knows
    /// (a follower forwards it); retried like a command, which is always
    /// safe since a transfer changes no state. See
    /// [`crate::ReplicatedAddr::transfer_leader`] for what happens and
    /// what the errors mean.
    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<(), SynodError> {
        self.call(group, Request::TransferLeader { group, to })
            .await
            .map(|_| ())
    }

    /// The leader of `group` as node `node` sees it (refreshing the cache).
    pub async fn find_leader(&self, group: GroupId) -> Option<NodeId> {
        for &node in self.inner.nodes.keys() {
            if let Ok(status) = self.status(node).await {
                if let Some(l) = status
                    .iter()
                    .find(|s| s.group == group)
                    .and_then(|s| s.leader)
                {
                    self.set_leader(group, l);
                    return Some(l);
                }
            }
        }
        None
    }

    /// The node this client believes leads `group` (where it sends that
    /// group's requests first). For tests.
    #[doc(hidden)]
    pub fn cached_leader(&self, group: GroupId) -> Option<NodeId> {
        self.leader(group)
    }

    fn set_leader(&self, group: GroupId, node: NodeId) {
        if let Ok(mut l) = self.inner.leaders.lock() {
            l.insert(group, node);
        }
    }

    fn forget_leader(&self, group: GroupId, node: NodeId) {
        if let Ok(mut l) = self.inner.leaders.lock() {
            if l.get(&group) == Some(&node) {
                l.remove(&group);
            }
        }
    }

    fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.inner
            .leaders
            .lock()
            .ok()
            .and_then(|l| l.get(&group).copied())
    }

    async fn connection(&self, node: NodeId) -> Result<quinn::Connection, SynodError> {
        let cached = self
            .inner
            .conns
            .lock()
            .ok()
            .and_then(|c| c.get(&node).cloned())
            .filter(|c| c.close_reason().is_none());
        if let Some(c) = cached {
            return Ok(c);
        }
        let addr = *self
            .inner
            .nodes
            .get(&node)
            .ok_or_else(|| SynodError::Unavailable(format!("node {node} is not configured")))?;
        let conn = self
            .inner
            .connector
            .connect(node, addr)
            .await
            .map_err(|e| SynodError::Unavailable(e.to_string()))?;
        if let Ok(mut c) = self.inner.conns.lock() {
            c.insert(node, conn.clone());
        }
        Ok(conn)
    }

    /// Node `node` failed: drop its connection, avoid it for a while, and
    /// stop believing it leads anything.
    fn forget(&self, node: NodeId) {
        if let Ok(mut c) = self.inner.conns.lock() {
            c.remove(&node);
        }
        if let Ok(mut d) = self.inner.down.lock() {
            d.insert(node, tokio::time::Instant::now() + DOWN_FOR);
        }
        if let Ok(mut l) = self.inner.leaders.lock() {
            l.retain(|_, n| *n != node);
        }
    }

    fn is_down(&self, node: NodeId) -> bool {
        self.inner
            .down
            .lock()
            .ok()
            .and_then(|d| d.get(&node).copied())
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// One request to one node, no retries.
    async fn ask(&self, node: NodeId, req: &Request) -> Result<Response, SynodError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.ask_until(node, req, deadline).await
    }

    /// One request to one node, answered by `deadline`. Connecting is
    /// bounded apart (by `connect_timeout`): a handshake that never
    /// completed means nothing was sent, which is `Unavailable` (safe to
    /// retry elsewhere), never an unknown outcome.
    async fn ask_until(
        &self,
        node: NodeId,
        req: &Request,
        deadline: tokio::time::Instant,
    ) -> Result<Response, SynodError> {
        let bytes = frame::encode(req, frame::DEFAULT_MAX_FRAME)
            .map_err(|e| SynodError::Codec(e.to_string()))?;
        let connect_by = deadline.min(tokio::time::Instant::now() + self.inner.connect_timeout);
        let conn = match tokio::time::timeout_at(connect_by, self.connection(node)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.forget(node);
                return Err(e);
            }
            Err(_) => {
                self.forget(node);
                return Err(SynodError::Unavailable(format!(
                    "node {node}: no QUIC handshake within {:?} (is it down, or its address wrong?)",
                    self.inner.connect_timeout
                )));
            }
        };
        let call = self.inner.connector.call(&conn, bytes);
        let resp = match tokio::time::timeout_at(deadline, call).await {
            // Sent, and no answer in time: the outcome is unknown.
            Err(_) => {
                return Err(match req.group() {
                    Some(group) => SynodError::Timeout { group },
                    None => SynodError::ConnectionLost { node },
                })
            }
            Ok(Err(e)) => {
                self.forget(node);
                return Err(if e.maybe_sent() {
                    SynodError::ConnectionLost { node }
                } else {
                    SynodError::Unavailable(format!("node {node}: {e}"))
                });
            }
            Ok(Ok(r)) => r,
        };
        read_answer(req, &resp)
    }

    /// A command or read for `group`, with leader finding and safe retries.
    async fn call(&self, group: GroupId, req: Request) -> Result<Bytes, SynodError> {
        match self.call_any(group, req).await? {
            Response::Ok { result, .. } => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    /// A membership request for `group`, retried like a command.
    async fn call_membership(
        &self,
        group: GroupId,
        req: Request,
    ) -> Result<MembershipInfo, SynodError> {
        match self.call_any(group, req).await? {
            Response::Membership(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// The configuration of `group` (from its leader when the node asked
    /// knows it).
    pub async fn membership(&self, group: GroupId) -> Result<MembershipInfo, SynodError> {
        self.call_membership(group, Request::Membership { group })
            .await
    }

    /// Adds `node` to `group` as a learner (see
    /// [`crate::ReplicatedAddr::add_learner`]). Idempotent.
    pub async fn add_learner(
        &self,
        group: GroupId,
        node: NodeId,
    ) -> Result<MembershipInfo, SynodError> {
        self.call_membership(group, Request::AddLearner { group, node })
            .await
    }

    /// Makes learner `node` a voter of `group` once it caught up (see
    /// [`crate::ReplicatedAddr::promote`]). Idempotent.
    pub async fn promote(
        &self,
        group: GroupId,
        node: NodeId,
    ) -> Result<MembershipInfo, SynodError> {
        self.call_membership(group, Request::Promote { group, node })
            .await
    }

    /// Removes `node` from `group` and deletes its replica there (see
    /// [`crate::ReplicatedAddr::remove_member`]). Idempotent.
    pub async fn remove_member(
        &self,
        group: GroupId,
        node: NodeId,
    ) -> Result<MembershipInfo, SynodError> {
        self.call_membership(group, Request::RemoveMember { group, node })
            .await
    }

    /// **Unsafe recovery**: forces `voters` on node `node`'s replica of
    /// `group` (no agreement, no forwarding). Run it on every surviving
    /// voter of a group that lost a majority for good; see
    /// docs/OPERATIONS.md for what it risks.
    pub async fn unsafe_force_voters(
        &self,
        node: NodeId,
        group: GroupId,
        voters: &[NodeId],
    ) -> Result<MembershipInfo, SynodError> {
        let req = Request::ForceVoters {
            group,
            voters: voters.to_vec(),
        };
        match self.ask(node, &req).await? {
            Response::Membership(info) => Ok(info),
            Response::Err(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Creates `group` at run time with the bootstrap voters `voters` (see
    /// [`crate::Node::create_group`]: every voter hosts a replica of its
    /// node's service type, `synod node`'s being the key-value store).
    /// Sent to one node, which asks every voter; another node is tried
    /// while none can be reached. Idempotent: a group that exists with the
    /// same voters is a success, so after [`SynodError::MemberUnreachable`]
    /// (a voter was down) or an unknown outcome, call it again.
    pub async fn create_group(&self, group: GroupId, voters: &[NodeId]) -> Result<(), SynodError> {
        let req = Request::CreateGroup {
            group,
            voters: voters.to_vec(),
        };
        self.call_node_op(group, &req).await
    }

    /// Deletes `group` cluster-wide (see [`crate::Node::delete_group`]):
    /// every replica stops, its log entries and snapshots are deleted, and
    /// requests for the group then fail with [`SynodError::GroupRemoved`].
    /// Idempotent: deleting a group that does not exist (any more) is a
    /// success; after [`SynodError::MemberUnreachable`], call it again once
    /// that node is up.
    pub async fn delete_group(&self, group: GroupId) -> Result<(), SynodError> {
        let r = self
            .call_node_op(group, &Request::DeleteGroup { group })
            .await;
        if let Ok(mut l) = self.inner.leaders.lock() {
            l.remove(&group);
        }
        r
    }

    /// A create or delete: any node can carry it out, so it goes to the
    /// first node that can be reached, and to the next while nothing was
    /// sent, the answer is safe to retry, or the connection broke (both
    /// are idempotent: doing one twice is harmless), until the deadline.
    async fn call_node_op(&self, group: GroupId, req: &Request) -> Result<(), SynodError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let ids: Vec<NodeId> = self.inner.nodes.keys().copied().collect();
        let mut last_error = SynodError::Unavailable("no node answered".into());
        let mut backoff = Duration::from_millis(5);
        let start = (group as usize) % ids.len();
        for attempt in 0.. {
            let node = ids[(start + attempt) % ids.len()];
            if tokio::time::Instant::now() >= deadline {
                return Err(last_error);
            }
            if self.is_down(node) && attempt < ids.len() {
                continue;
            }
            match self.ask_until(node, req, deadline).await {
                Ok(Response::Ok { .. }) => return Ok(()),
                Ok(Response::Err(e)) if e.is_safe_to_retry() => last_error = e.into(),
                Ok(Response::Err(e)) => return Err(e.into()),
                Ok(other) => return Err(unexpected(other)),
                Err(e)
                    if e.is_safe_to_retry() || matches!(e, SynodError::ConnectionLost { .. }) =>
                {
                    last_error = e
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
        Err(last_error)
    }

    /// Any request for `group`: leader finding and safe retries; the
    /// answer is `Response::Ok` or `Response::Membership`.
    async fn call_any(&self, group: GroupId, req: Request) -> Result<Response, SynodError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let ids: Vec<NodeId> = self.inner.nodes.keys().copied().collect();
        let mut next = (group as usize) % ids.len();
        for _ in 0..ids.len() {
            if !self.is_down(ids[next]) {
                break;
            }
            next = (next + 1) % ids.len();
        }
        let mut target = self
            .leader(group)
            .filter(|l| !self.is_down(*l))
            .unwrap_or(ids[next]);
        let mut backoff = Duration::from_millis(5);
        let mut last_error = SynodError::Unavailable("no node answered".into());
        // Nodes that said the group is not there (deleted, or never
        // hosted): once every node said so and one said it was deleted,
        // waiting longer cannot help.
        let mut not_there = std::collections::BTreeSet::new();
        let mut removed = None;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(last_error);
            }
            match self.ask_until(target, &req, deadline).await {
                Ok(Response::Ok { result, leader }) => {
                    // Remember the leader that committed it, not the node
                    // that merely forwarded it: the next request goes
                    // straight there, and does not depend on the forwarder
                    // reaching the leader.
                    let leader = leader
                        .filter(|l| self.inner.nodes.contains_key(l))
                        .unwrap_or(target);
                    self.set_leader(group, leader);
                    return Ok(Response::Ok {
                        result,
                        leader: Some(leader),
                    });
                }
                Ok(Response::Membership(info)) => {
                    if let Some(l) = info.leader.filter(|l| self.inner.nodes.contains_key(l)) {
                        self.set_leader(group, l);
                    }
                    return Ok(Response::Membership(info));
                }
                Ok(Response::Err(RequestError::NotLeader {
                    leader: Some(l), ..
                })) if l != target && self.inner.nodes.contains_key(&l) && !self.is_down(l) => {
                    self.set_leader(group, l);
                    target = l;
                    continue;
                }
                Ok(Response::Err(RequestError::NodeFailed { node, reason })) => {
                    // That node (the one asked, or the leader it forwarded
                    // to) is gone until restarted: go elsewhere.
                    self.forget(node);
                    last_error = SynodError::NodeFailed { node, reason };
                }
                Ok(Response::Err(e)) if try_elsewhere(&e) => {
                    if matches!(
                        e,
                        RequestError::NoSuchGroup(_) | RequestError::GroupRemoved { .. }
                    ) {
                        // Not hosted there (any more): it leads nothing of
                        // the group, whatever this client remembered.
                        self.forget_leader(group, target);
                        // The node that says so (the one asked may have
                        // forwarded to a stale leader that was removed).
                        match &e {
                            RequestError::GroupRemoved { node, .. } => {
                                not_there.insert(*node);
                                removed = Some(e.clone());
                            }
                            _ => {
                                not_there.insert(target);
                            }
                        }
                        if not_there.len() == ids.len() {
                            if let Some(r) = removed.take() {
                                return Err(r.into());
                            }
                        }
                    }
                    last_error = e.into();
                }
                Ok(Response::Err(e)) => return Err(e.into()),
                Ok(other) => return Err(unexpected(other)),
                Err(e) if e.is_safe_to_retry() => last_error = e,
                Err(e) => return Err(e),
            }
            // Try the next node (one not known to be down) after a pause.
            for _ in 0..ids.len() {
                next = (next + 1) % ids.len();
                if !self.is_down(ids[next]) {
                    break;
                }
            }
            target = self
                .leader(group)
                .filter(|l| !self.is_down(*l))
                .unwrap_or(ids[next]);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// The changes `group` applies from revision `from` on (`None`: after
    /// what the node asked first has applied), in order, with their
    /// results: see [`crate::watch`]. Served by any node (followers too);
    /// the watch moves to another node when one fails, and resumes where
    /// it stood. Fails like a fetch of the watch when no node answers.
    pub async fn watch(
        &self,
        group: GroupId,
        from: Option<u64>,
    ) -> Result<crate::watch::Watch, SynodError> {
        crate::watch::Watch::by_client(self.clone(), group, from).await
    }

    /// The configured nodes, in id order.
    pub(crate) fn node_ids(&self) -> Vec<NodeId> {
        self.inner.nodes.keys().copied().collect()
    }

    /// One watch fetch from `node`, answered within the node's `wait`
    /// plus the client's timeout.
    pub(crate) async fn watch_once(
        &self,
        node: NodeId,
        req: &Request,
        wait: Duration,
    ) -> Result<synod_actors::ChangeBatch, SynodError> {
        if self.is_down(node) {
            return Err(SynodError::Unavailable(format!(
                "node {node} failed recently"
            )));
        }
        let deadline = tokio::time::Instant::now() + wait + self.timeout;
        match self.ask_until(node, req, deadline).await? {
            Response::Changes(batch) => Ok(batch),
            Response::Err(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the client's connections.
    pub async fn close(&self) {
        self.inner.connector.close().await;
    }
}

/// Errors after which the call moves on to another node: those safe to
/// retry, `NoSuchGroup` (nothing was proposed, and another node may
/// already host a group this one has not created yet) and `GroupRemoved`
/// (the node asked was removed from a group that lives on elsewhere).
fn try_elsewhere(e: &RequestError) -> bool {
    e.is_safe_to_retry()
        || matches!(
            e,
            RequestError::NoSuchGroup(_) | RequestError::GroupRemoved { .. }
        )
}

/// Decodes a node's answer to `req`. The node answers after it handled
/// the request, so an answer to a command or read that does not decode is
/// an unknown outcome (the command may have been applied), not a codec
/// error of this side.
fn read_answer(req: &Request, answer: &[u8]) -> Result<Response, SynodError> {
    frame::decode::<Response>(answer).map_err(|e| match req {
        Request::Command { group, .. }
        | Request::Read { group, .. }
        | Request::ReadLease { group, .. } => SynodError::OutcomeUnknown {
            group: *group,
            reason: format!("the node's answer did not decode: {e}"),
        },
        _ => SynodError::Codec(format!("the node's answer did not decode: {e}")),
    })
}

fn unexpected(r: Response) -> SynodError {
    SynodError::Codec(format!("unexpected response {r:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8, finding 3 (client side): an answer to a command that does
    /// not decode is an unknown outcome, not retry-safe.
    #[test]
    fn an_unreadable_answer_to_a_command_is_an_unknown_outcome() {
        let req = Request::Command {
            group: 3,
            payload: Bytes::from_static(b"x"),
        };
        let garbage = [frame::VERSION, 0xc1, 0xff];
        let e = read_answer(&req, &garbage).unwrap_err();
        assert!(
            matches!(e, SynodError::OutcomeUnknown { group: 3, .. }),
            "{e:?}"
        );
        assert!(!e.is_safe_to_retry());
    }
}
