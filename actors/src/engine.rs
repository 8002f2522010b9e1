//! The engine: everything one node runs, assembled.
//!
//! ```text
//!  main thread (actix System)          net thread (tokio)         log-writer thread
//!  ┌──────────────────────────┐        ┌───────────────────┐      ┌──────────────────┐
//!  │ NodeActor (supervisor)   │        │ QUIC endpoint     │      │ WAL: append all, │
//!  │ per group: RaftGroup,    │◄──────►│ per-peer senders, │      │ one fdatasync,   │
//!  │ FsmCaller, Snapshot-     │ Addr / │ stream readers,   │      │ answer all       │
//!  │ Executor, Replicators    │ queues │ request handler   │      │                  │
//!  └──────────────────────────┘        └───────────────────┘      └──────────────────┘
//! ```
//!
//! Production ([`Placement::Threads`]) puts the transport and the log
//! writer on threads of their own, so QUIC crypto and framing use the
//! second core and fsyncs never stall the actors. The simulation
//! ([`Placement::Local`]) runs the very same code on the current runtime
//! with an in-memory log store and a simulated socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use slog::{info, Logger};
use synod_core::{Index, NodeId};
use synod_net::{
    frame, BoxFuture, Handler, NetConfig, Peer, SnapshotStream, TlsMaterial, Transport,
};
use synod_storage::{GroupId, SnapshotStore, StorageError, Wal, WalOptions};
use tokio::sync::oneshot;

use crate::faults::{DiskFaults, FaultyStore};
use crate::group::{GetStatus, Inbound, InjectPanic, Propose, TransferLeader};
use crate::identity::{has_files, Identity, IdentityError};
use crate::log_writer::{LogWriter, SharedMemLog};
use crate::node::{CreateGroup, Hosting, NodeActor, Routes, Status, StopAll};
use crate::proto::{
    ChangeBatch, GroupStatus, MembershipInfo, NodeStats, RaftItem, Request, RequestError, Response,
    SnapshotHeader,
};
use crate::shared::{Counters, GroupConfig, NetFailure, NodeShared};
use crate::snapshot_exec::Receive;
use crate::state_machine::StateMachineFactory;

/// Longest a node lets a watch wait for a change ([`Request::Watch`]'s
/// `wait_ms` is capped here), in milliseconds.
pub const MAX_WATCH_WAIT_MS: u64 = 30_000;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The data directory's log could not be opened.
    #[error("cannot open the write-ahead log in {dir}: {source}")]
    Wal {
        /// The WAL directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The snapshot directory could not be opened.
    #[error("cannot open the snapshot store in {dir}: {source}")]
    Snapshots {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The transport could not start.
    #[error("cannot start the transport: {0}")]
    Net(String),
    /// A thread could not be spawned.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// A group could not be created.
    #[error("cannot start group {group}: {reason}")]
    Group {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The node is shutting down.
    #[error("the node is stopped")]
    Stopped,
    /// The data directory cannot be used (another node's, damaged).
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// What a node is.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Every other node, with its address.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The cluster CA and this node's certificate.
    pub tls: TlsMaterial,
    /// Snapshots go to `data_dir/snapshots` (and the WAL to
    /// `data_dir/wal` with [`Placement::Threads`]).
    pub data_dir: PathBuf,
    /// How groups behave.
    pub group: GroupConfig,
    /// Seed of the groups' election timers (vary it per node and boot).
    pub seed: u64,
    /// Largest frame on the wire.
    pub max_frame_bytes: usize,
    /// The node's logger.
    pub logger: Logger,
    /// Fault injection for tests and the simulation: the log store is
    /// wrapped in a [`FaultyStore`] controlled by this handle. `None` in
    /// production.
    pub disk_faults: Option<DiskFaults>,
}

/// Where the engine's parts run.
pub enum Placement {
    /// Production: the WAL in `data_dir/wal` behind a log-writer thread,
    /// the transport on a thread of its own, listening on `listen`.
    Threads {
        /// Where to listen.
        listen: Listen,
        /// WAL options.
        wal: WalOptions,
        /// Run the QUIC transport on a thread of its own instead of the
        /// actors' thread. Off by default in the runtime: measured on a
        /// 2-core machine running three nodes, sharing the thread saves the
        /// cross-thread wakeups of every message and is faster at every
        /// load (docs/BENCHMARKS.md).
        net_thread: bool,
    },
    /// Simulation: everything on the current runtime, an in-memory store.
    Local {
        /// The log store (shared with the simulation, to survive crashes).
        store: SharedMemLog,
        /// The (simulated) UDP socket.
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        /// Seed for QUIC's random choices.
        seed: u64,
    },
}

/// Where the transport listens.
#[derive(Debug)]
pub enum Listen {
    /// Bind this UDP address.
    Addr(SocketAddr),
    /// Use this bound socket (tests pick free ports without races).
    Socket(std::net::UdpSocket),
}

/// Where a fault is injected (tests of supervision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// The group's RaftGroup panics.
    RaftGroup,
    /// The group's FsmCaller panics.
    FsmCaller,
}

struct Inner {
    shared: Arc<NodeShared>,
    routes: Arc<Routes>,
    node: Addr<NodeActor>,
    transport: Transport<RaftItem>,
    /// Stops the transport's thread (production placement).
    net_stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn membership_answer(r: Result<MembershipInfo, RequestError>) -> Response {
    match r {
        Ok(info) => Response::Membership(info),
        Err(e) => Response::Err(e),
    }
}

/// Who asked for a proposal, which decides whether it is forwarded to the
/// leader and how long this node holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// [`Engine::command`] on this node: forwarded, and held (retried)
    /// until a leader can take it or the propose timeout passes, since the
    /// caller cannot go to the leader itself.
    Local,
    /// A client: forwarded once. When no leader is known or the leader
    /// cannot be reached, the client is answered at once (`NotLeader`
    /// with a hint, nothing proposed) so that it tries another node
    /// instead of waiting out its deadline here.
    Client,
    /// Another node forwarding: never forwarded again (no loops).
    Node,
}

/// A proposal's result and the leader that committed it.
struct Committed {
    result: Bytes,
    leader: NodeId,
}

/// The transport's view of the node: where inbound traffic goes.
struct NodeHandler {
    routes: Arc<Routes>,
    /// Every peer heard counts for node-level liveness (`crate::clock`).
    liveness: Arc<crate::clock::Liveness>,
    engine: OnceLock<Weak<Inner>>,
    node_id: NodeId,
    /// Largest answer the transport sends (`EngineConfig::max_frame_bytes`).
    max_frame_bytes: usize,
}

impl Handler<RaftItem> for NodeHandler {
    fn raft(&self, from: u64, batch: Vec<RaftItem>) -> BoxFuture<()> {
        self.liveness.heard_from(from);
        let mut per_group: BTreeMap<GroupId, Vec<synod_core::Message>> = BTreeMap::new();
        for item in batch {
            if item.group == crate::clock::NODE_BEAT {
                if let synod_core::MessageBody::Heartbeat { commit: nonce, .. } = item.msg.body {
                    self.liveness.beat_from(from, nonce);
                }
            } else if item.msg.to == self.node_id {
                per_group.entry(item.group).or_default().push(item.msg);
            }
        }
        let routes = Arc::clone(&self.routes);
        Box::pin(async move {
            // Handed to every group at once, then awaited together: awaiting
            // each group's handler in turn cost one round trip to the actor
            // thread per group and frame, and with thousands of groups in
            // a frame (an election storm after a node died) the next frame
            // waited for seconds, past every election timeout. Awaiting
            // full mailboxes is still the back-pressure.
            let sends = per_group.into_iter().filter_map(|(group, msgs)| {
                routes
                    .get(group)
                    .map(|r| async move { r.raft.send(Inbound(msgs)).await })
            });
            futures_util::future::join_all(sends).await;
        })
    }

    fn request(&self, peer: Peer, request: Bytes) -> BoxFuture<Bytes> {
        let engine = self
            .engine
            .get()
            .and_then(Weak::upgrade)
            .map(|inner| Engine { inner });
        let max_frame = self.max_frame_bytes;
        Box::pin(async move {
            let request = frame::decode::<Request>(&request);
            let group = request.as_ref().ok().and_then(Request::group);
            let response = match (engine, request) {
                (None, _) => {
                    Response::Err(RequestError::Unavailable("the node is starting".into()))
                }
                (_, Err(e)) => {
                    Response::Err(RequestError::Application(format!("bad request: {e}")))
                }
                (Some(engine), Ok(req)) => {
                    // Clients get their command forwarded to the leader;
                    // nodes already did that (no forwarding loops).
                    let origin = match peer {
                        Peer::Client => Origin::Client,
                        Peer::Node(_) => Origin::Node,
                    };
                    engine.serve(req, origin).await
                }
            };
            encode_answer(group, &response, max_frame)
        })
    }

    fn snapshot(
        &self,
        from: u64,
        header: Bytes,
        data: SnapshotStream,
    ) -> BoxFuture<Result<(), String>> {
        let routes = Arc::clone(&self.routes);
        Box::pin(async move {
            let header: SnapshotHeader = frame::decode(&header).map_err(|e| e.to_string())?;
            let group = header.group;
            let route = routes
                .get(group)
                .ok_or_else(|| format!("no group {group} here"))?;
            route
                .snapshot
                .send(Receive { from, header, data })
                .await
                .map_err(|e| e.to_string())?
        })
    }
}

impl Engine {
    /// Starts a node. Call inside an actix `System` (production) or on a
    /// `LocalSet` (simulation); groups are created afterwards with
    /// [`Engine::create_group`].
    pub async fn start(cfg: EngineConfig, placement: Placement) -> Result<Engine, EngineError> {
        let snap_dir = cfg.data_dir.join("snapshots");
        let has_state = match &placement {
            Placement::Threads { .. } => has_files(&cfg.data_dir.join("wal")),
            Placement::Local { store, .. } => !synod_storage::LogStore::groups(store).is_empty(),
        } || has_files(&snap_dir);
        let identity = Identity::open(&cfg.data_dir, cfg.node_id, has_state)?;
        let catalog = crate::catalog::Catalog::open(&cfg.data_dir)?;
        if identity.rejoining {
            slog::warn!(cfg.logger, "booting on an empty data directory that was not initialized \
                                     as a new node (`synod init`): treated as a lost disk, this \
                                     node votes for nobody until a leader caught it up";
                                     "node" => cfg.node_id);
        }
        let snapshots =
            open_snapshot_store(&snap_dir).map_err(|source| EngineError::Snapshots {
                dir: snap_dir.clone(),
                source,
            })?;
        let routes = Arc::new(Routes::default());
        let liveness = Arc::new(crate::clock::Liveness::default());
        let handler = Arc::new(NodeHandler {
            routes: Arc::clone(&routes),
            liveness: Arc::clone(&liveness),
            engine: OnceLock::new(),
            node_id: cfg.node_id,
            max_frame_bytes: cfg.max_frame_bytes,
        });
        let mut net_cfg = NetConfig::new(cfg.node_id, cfg.peers.clone(), cfg.tls.clone());
        net_cfg.max_frame_bytes = cfg.max_frame_bytes;
        net_cfg.logger = cfg.logger.clone();
        let local = matches!(placement, Placement::Local { .. });
        let (log_writer, transport, net_stop) = match placement {
            Placement::Threads {
                listen,
                wal,
                net_thread,
            } => {
                let wal_dir = cfg.data_dir.join("wal");
                let wal = Wal::open(&wal_dir, wal).map_err(|source| EngineError::Wal {
                    dir: wal_dir.clone(),
                    source,
                })?;
                let log_writer = match cfg.disk_faults.clone() {
                    Some(faults) => LogWriter::spawn_thread(FaultyStore::new(wal, faults)),
                    None => LogWriter::spawn_thread(wal),
                }
                .map_err(EngineError::Thread)?;
                let socket = match listen {
                    Listen::Socket(s) => s,
                    Listen::Addr(addr) => std::net::UdpSocket::bind(addr)
                        .map_err(|source| EngineError::Bind { addr, source })?,
                };
                if !net_thread {
                    let socket = synod_net::transport::wrap_udp(socket)
                        .map_err(|e| EngineError::Net(e.to_string()))?;
                    let transport = start_net_here(net_cfg, socket, handler.clone())?;
                    (log_writer, transport, None)
                } else {
                    let (transport, stop) = start_net_thread(net_cfg, socket, handler.clone())?;
                    (log_writer, transport, Some(stop))
                }
            }
            Placement::Local {
                store,
                socket,
                seed,
            } => {
                let log_writer = match cfg.disk_faults.clone() {
                    Some(faults) => LogWriter::spawn_local(FaultyStore::new(store, faults)),
                    None => LogWriter::spawn_local(store),
                };
                net_cfg.seed = Some(seed);
                let transport = start_net_here(net_cfg, socket, handler.clone())?;
                (log_writer, transport, None)
            }
        };
        // The log exists now: a directory vouched new is an ordinary one
        // from here on (a later boot without a log is a lost disk).
        identity.started()?;
        let mut voters: Vec<NodeId> = cfg.peers.keys().copied().collect();
        voters.push(cfg.node_id);
        voters.sort_unstable();
        let shared = Arc::new(NodeShared {
            node_id: cfg.node_id,
            voters,
            log_writer,
            net: Arc::new(transport.clone()),
            snapshots,
            cfg: cfg.group.clone(),
            log: cfg.logger.new(slog::o!("node" => cfg.node_id)),
            counters: Counters::default(),
            // A rejoining replica names its rejoin requests from this
            // seed, and an answer meant for an earlier incarnation must not
            // match: mix in the data directory's (random) incarnation. Not
            // otherwise, so that a seeded simulation replays exactly.
            seed: if identity.rejoining {
                cfg.seed ^ identity.incarnation.rotate_left(17)
            } else {
                cfg.seed
            },
            transport: Some(transport.clone()),
            offload_io: !local,
            rejoining: identity.rejoining.into(),
            liveness,
            ticking: crate::clock::Ticking::default(),
            leaderships: Default::default(),
        });
        crate::clock::NodeClock::new(Arc::clone(&shared), Arc::clone(&routes)).start();
        let node =
            NodeActor::new(Arc::clone(&shared), Arc::clone(&routes), identity, catalog).start();
        let inner = Arc::new(Inner {
            shared,
            routes,
            node,
            transport,
            net_stop: std::sync::Mutex::new(net_stop),
        });
        let _ = handler.engine.set(Arc::downgrade(&inner));
        tokio::task::spawn_local(balance::run(
            Arc::downgrade(&inner),
            cfg.group.balance_interval,
            cfg.seed ^ cfg.node_id.rotate_left(29),
            cfg.group.balance_leaders,
        ));
        info!(inner.shared.log, "node started"; "peers" => ?cfg.peers);
        Ok(Engine { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.shared.node_id
    }

    /// Why this node stopped serving, once a write to its log failed. A
    /// failed write is fatal: every group stops (no acknowledgement, vote
    /// or answer comes from this node any more) and the process must be
    /// restarted, which recovers from what is on disk.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.log_writer.failure()
    }

    /// Waits until this node's log fails (see [`Engine::failure`]) and says
    /// why. A process hosting a node should exit non-zero when this
    /// returns (`synod node` does).
    pub async fn failed(&self) -> String {
        self.inner.shared.log_writer.failed().await
    }

    /// The error of a request to a node whose log failed.
    fn node_failed(&self) -> Option<RequestError> {
        self.failure().map(|reason| RequestError::NodeFailed {
            node: self.node_id(),
            reason,
        })
    }

    /// Starts `group` on this node. Every node of the cluster must start it
    /// (with the same kind of state machine) for the group to have its
    /// replicas; a group whose state is on disk resumes from it.
    pub async fn create_group(
        &self,
        group: GroupId,
        factory: StateMachineFactory,
    ) -> Result<(), EngineError> {
        self.create_group_on(group, factory, None).await.map(|_| ())
    }

    /// Creates `group` with the configuration `members` (`None`: every
    /// node of the cluster votes): call it on every node with the same
    /// arguments. A member starts (or resumes) its replica; a node that is
    /// not a member neither stores nor ticks the group, but keeps the
    /// factory so that it can host a replica if it is added as a learner
    /// later. Once the group exists on this node (see
    /// [`crate::catalog`]), the configuration it started from is kept
    /// whatever `members` says: later changes live in its log.
    pub async fn create_group_on(
        &self,
        group: GroupId,
        factory: StateMachineFactory,
        members: Option<synod_core::Membership>,
    ) -> Result<Hosting, EngineError> {
        self.inner
            .node
            .send(CreateGroup {
                group,
                factory,
                members,
            })
            .await
            .map_err(|_| EngineError::Stopped)?
            .map_err(|reason| EngineError::Group { group, reason })
    }

    /// Commits `command` in `group` and returns the state machine's result.
    /// Works on any node: a follower forwards to the leader. Retries while
    /// no leader is known or the group is busy, until the propose timeout.
    pub async fn command(&self, group: GroupId, command: Bytes) -> Result<Bytes, RequestError> {
        self.propose(group, command, Origin::Local)
            .await
            .map(|c| c.result)
    }

    /// Runs `query` in `group` linearizably, without a log entry
    /// (ReadIndex, Raft thesis §6.4): the result reflects every write
    /// acknowledged before the call. On the leader, one heartbeat round
    /// per batch of reads confirms it still leads; on a follower, the
    /// leader's confirmed commit index comes back and the query runs here
    /// once this replica applied that far (a follower read). Retries while
    /// no leader is known, until the propose timeout.
    pub async fn read(&self, group: GroupId, query: Bytes) -> Result<Bytes, RequestError> {
        self.linearizable_read(group, query, false, Origin::Local)
            .await
    }

    /// Like [`Engine::read`], but a leader within its lease answers
    /// without a heartbeat round (Raft thesis §6.4.1). Needs
    /// `GroupConfig::lease_reads` on every node (else it is
    /// [`Engine::read`]); linearizable only while no node's clock runs
    /// faster than the leader's by more than the lease margin (a fifth of
    /// the election timeout) over an election timeout.
    pub async fn read_lease(&self, group: GroupId, query: Bytes) -> Result<Bytes, RequestError> {
        self.linearizable_read(group, query, true, Origin::Local)
            .await
    }

    async fn linearizable_read(
        &self,
        group: GroupId,
        query: Bytes,
        lease: bool,
        origin: Origin,
    ) -> Result<Bytes, RequestError> {
        let deadline = tokio::time::Instant::now() + self.inner.shared.cfg.propose_timeout;
        let mut backoff = Backoff::new();
        loop {
            let result = self.read_once(group, query.clone(), lease, deadline).await;
            let retry = match &result {
                // No leader known here: a client tries another node at
                // once (this one may be cut off); a local caller waits.
                Err(RequestError::NotLeader { leader: None, .. }) => origin != Origin::Client,
                // The leader changed while the read waited: read again.
                Err(RequestError::NotLeader {
                    leader: Some(_), ..
                })
                | Err(RequestError::Restarting(_)) => true,
                _ => false,
            };
            if !retry || !backoff.wait(deadline).await {
                return result;
            }
        }
    }

    async fn read_once(
        &self,
        group: GroupId,
        query: Bytes,
        lease: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, RequestError> {
        self.ask_group(group, deadline, |reply| crate::group::Read {
            query,
            lease,
            reply,
        })
        .await
    }

    /// Sends `group`'s RaftGroup the message `make` builds around a reply
    /// channel and waits for the answer, until `deadline`.
    async fn ask_group<M>(
        &self,
        group: GroupId,
        deadline: tokio::time::Instant,
        make: impl FnOnce(crate::fsm::Reply) -> M,
    ) -> Result<Bytes, RequestError>
    where
        M: actix::Message<Result = ()> + Send + 'static,
        crate::group::RaftGroup: actix::Handler<M>,
    {
        let route = self.route(group)?;
        let (tx, rx) = oneshot::channel();
        let sent = tokio::time::timeout_at(deadline, route.raft.send(make(tx))).await;
        match sent {
            Err(_) => return Err(RequestError::Timeout(group)),
            Ok(Err(_)) => return Err(RequestError::Stopped(group)),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(RequestError::Timeout(group)),
            Ok(Err(_)) => Err(RequestError::Stopped(group)),
            Ok(Ok(r)) => r,
        }
    }

    /// The actors of `group` on this node, or why a request cannot reach
    /// them (the node failed, the group restarts, is poisoned or is not
    /// hosted here).
    fn route(&self, group: GroupId) -> Result<Arc<crate::node::GroupRoute>, RequestError> {
        if let Some(e) = self.node_failed() {
            return Err(e);
        }
        self.inner.routes.running(group)
    }

    async fn serve(&self, req: Request, origin: Origin) -> Response {
        let lease_read = matches!(req, Request::ReadLease { .. });
        let result = match req {
            Request::Command { group, payload } => self.propose(group, payload, origin).await,
            Request::Read { group, payload } | Request::ReadLease { group, payload } => {
                // Served here, leader or follower: no hint about the
                // leader (this node may be a follower).
                return match self
                    .linearizable_read(group, payload, lease_read, origin)
                    .await
                {
                    // A lease read names the leader: only there does a
                    // lease save the round trip, so the client goes there
                    // next (a plain read stays where it is: follower reads
                    // spread the load).
                    Ok(result) => Response::Ok {
                        result,
                        leader: if lease_read {
                            self.inner
                                .routes
                                .get(group)
                                .map(|r| r.leader_hint.load(std::sync::atomic::Ordering::Relaxed))
                                .filter(|&l| l != 0)
                        } else {
                            None
                        },
                    },
                    Err(e) => Response::Err(e),
                };
            }
            Request::LocalRead { group, payload } => {
                return match self.local_read(group, payload).await {
                    Ok(result) => Response::Ok {
                        result,
                        leader: None,
                    },
                    Err(e) => Response::Err(e),
                }
            }
            Request::Status => return Response::Status(self.status().await),
            Request::Stats => return Response::Stats(self.stats()),
            Request::Leaders => return Response::Leaders(self.leaders()),
            Request::Membership { group } => {
                return membership_answer(self.membership_from(group, origin).await)
            }
            Request::AddLearner { group, node } => {
                return membership_answer(self.add_learner_from(group, node, origin).await)
            }
            Request::Promote { group, node } => {
                return membership_answer(self.promote_from(group, node, origin).await)
            }
            Request::RemoveMember { group, node } => {
                return membership_answer(self.remove_member_from(group, node, origin).await)
            }
            Request::ChangeMembership { group, change } => {
                return membership_answer(self.change_membership(group, change, origin).await)
            }
            Request::ForceVoters { group, voters } => {
                return membership_answer(self.unsafe_force_voters(group, &voters).await)
            }
            req @ (Request::HostGroup { .. } | Request::DropGroup { .. }) => {
                return self.serve_hosting(req).await
            }
            Request::CreateGroup { group, voters } => {
                let r = self.create_service_group_from(group, &voters, origin).await;
                return groups::done_answer(r);
            }
            Request::DeleteGroup { group } => {
                return groups::done_answer(self.delete_group_from(group, origin).await)
            }
            Request::Watch {
                group,
                from,
                max_bytes,
                wait_ms,
            } => {
                let wait = Duration::from_millis(u64::from(wait_ms).min(MAX_WATCH_WAIT_MS));
                // Well below the frame limit, whatever the client asked.
                let max_bytes = (max_bytes as usize).min(frame::DEFAULT_MAX_FRAME / 4);
                return match self.watch(group, from, max_bytes, wait).await {
                    Ok(batch) => Response::Changes(batch),
                    Err(e) => Response::Err(e),
                };
            }
            Request::TransferLeader { group, to } => {
                return match self.transfer(group, to, origin).await {
                    Ok(()) => Response::Ok {
                        result: Bytes::new(),
                        leader: Some(to),
                    },
                    Err(e) => Response::Err(e),
                }
            }
        };
        match result {
            Ok(c) => Response::Ok {
                result: c.result,
                leader: Some(c.leader),
            },
            Err(e) => Response::Err(e),
        }
    }

    async fn propose(
        &self,
        group: GroupId,
        payload: Bytes,
        origin: Origin,
    ) -> Result<Committed, RequestError> {
        let timeout = self.inner.shared.cfg.propose_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = Backoff::new();
        loop {
            let result = self
                .propose_once(group, payload.clone(), deadline)
                .await
                .map(|result| Committed {
                    result,
                    leader: self.node_id(),
                });
            let retry = match &result {
                Err(RequestError::NotLeader {
                    leader: Some(l), ..
                }) if origin != Origin::Node && *l != self.node_id() => {
                    match self.forward(*l, group, payload.clone(), deadline).await {
                        // The leader could not be reached and nothing was
                        // sent: a client goes there itself (or elsewhere)
                        // at once; a local caller waits for a new leader.
                        Err(RequestError::NotLeader { leader: None, .. }) => {
                            if origin == Origin::Client {
                                return Err(RequestError::NotLeader {
                                    group,
                                    leader: Some(*l),
                                });
                            }
                            true
                        }
                        // The hint was stale (the leader is handing over to
                        // a node not yet elected, or lost an election):
                        // nothing was proposed; a local caller waits for
                        // the new leader.
                        Err(RequestError::NotLeader { .. }) if origin == Origin::Local => true,
                        other => return other,
                    }
                }
                // No leader known: a client tries another node at once
                // (this one may be cut off from the rest); others wait.
                Err(RequestError::NotLeader { leader: None, .. }) => origin != Origin::Client,
                // Too busy, or restarting: nothing was appended.
                Err(RequestError::Busy(_)) | Err(RequestError::Restarting(_)) => true,
                _ => false,
            };
            if !retry || !backoff.wait(deadline).await {
                return result;
            }
        }
    }

    async fn propose_once(
        &self,
        group: GroupId,
        payload: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, RequestError> {
        self.ask_group(group, deadline, |reply| Propose { payload, reply })
            .await
    }

    async fn forward(
        &self,
        leader: NodeId,
        group: GroupId,
        payload: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<Committed, RequestError> {
        let req = Request::Command { group, payload };
        let bytes = frame::encode(&req, frame::DEFAULT_MAX_FRAME)
            .map_err(|e| RequestError::Application(e.to_string()))?;
        // This replica's view of the leadership: when it names another
        // leader while the command is on its way, and `leader`'s node has
        // gone silent (killed, stopped, cut off), its connection would only
        // fail after the transport's idle timeout. Answer then: the outcome
        // is unknown either way (it may have appended the command, which
        // the new leader may commit), and the client retries at the new
        // leader without that wait. No leader known (an election under
        // way, or this replica restarting) is no reason, nor is a node
        // still heard from: it answers for itself (`NotLeader` when it
        // appended nothing, better than an unknown outcome).
        let mut view = self.inner.shared.leadership(group);
        view.borrow_and_update();
        let liveness = Arc::clone(&self.inner.shared.liveness);
        let cfg = &self.inner.shared.cfg;
        let (tick, quiet) = (cfg.tick, u64::from(cfg.election_ticks / 2).max(1));
        let moved = async move {
            let (new, term) = loop {
                if view.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                let now = *view.borrow_and_update();
                if let Some(new) = now.leader.filter(|&l| l != leader) {
                    break (new, now.term);
                }
            };
            while liveness.silent(leader).is_some_and(|ticks| ticks < quiet) {
                tokio::time::sleep(tick).await;
            }
            (new, term)
        };
        let call = self.inner.shared.net.request(leader, bytes);
        let answer = tokio::select! {
            answer = tokio::time::timeout_at(deadline, call) => answer,
            (new, term) = moved => {
                return Err(RequestError::OutcomeUnknown {
                    group,
                    reason: format!(
                        "leader {leader} was replaced by node {new} (term {term}) while the \
                         command was forwarded to it"
                    ),
                })
            }
        };
        let response = match answer {
            Err(_) => return Err(RequestError::Timeout(group)),
            // Never sent: as if no leader were known (the caller retries).
            Ok(Err(NetFailure::NotSent(_))) => {
                return Err(RequestError::NotLeader {
                    group,
                    leader: None,
                })
            }
            // Sent, then the connection broke: the outcome is unknown.
            Ok(Err(NetFailure::Lost(reason))) => {
                return Err(RequestError::OutcomeUnknown {
                    group,
                    reason: format!("the connection to leader {leader} broke: {reason}"),
                })
            }
            Ok(Ok(r)) => r,
        };
        read_forwarded(group, leader, &response)
    }

    /// Hands the leadership of `group` to voter `to` (Raft thesis §3.10)
    /// and returns once `to` leads it, as this node sees it. Works on any
    /// node (a follower forwards to the leader). The leader catches `to`
    /// up, refuses proposals meanwhile (they get `NotLeader` naming `to`,
    /// safe to retry) and tells `to` to campaign; a transfer the leader
    /// gives up (after one election timeout) is started again until the
    /// propose timeout, then fails with [`RequestError::TransferFailed`].
    /// If `to` already leads, returns at once.
    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<(), RequestError> {
        self.transfer(group, to, Origin::Local).await
    }

    async fn transfer(
        &self,
        group: GroupId,
        to: NodeId,
        origin: Origin,
    ) -> Result<(), RequestError> {
        let deadline = tokio::time::Instant::now() + self.inner.shared.cfg.propose_timeout;
        let tick = self.inner.shared.cfg.tick;
        let mut leader = None;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(RequestError::TransferFailed { group, to, leader });
            }
            let Some(status) = self.group_status(group, deadline).await? else {
                return Err(RequestError::TransferFailed { group, to, leader });
            };
            leader = status.leader;
            let here = self.node_id();
            let leading = status.leader == Some(here);
            if status.leader == Some(to) && (to != here || leading) {
                return Ok(());
            }
            if leading && status.transfer_to != Some(to) {
                // Start it (again, if the previous attempt was given up).
                self.ask_transfer(group, to, deadline).await?;
            } else if let (Some(l), false) = (status.leader, leading) {
                if origin == Origin::Node {
                    // Forwarded here, but this node does not lead (any
                    // more): the forwarder decides what to do next.
                    return Err(RequestError::NotLeader {
                        group,
                        leader: Some(l),
                    });
                }
                match self.forward_transfer(l, group, to, deadline).await {
                    Ok(()) => return Ok(()),
                    // Not sent, or the leader moved on: look again.
                    Err(RequestError::NotLeader { .. }) => {}
                    Err(e) => return Err(e),
                }
            } else if status.leader.is_none() && origin == Origin::Client {
                // No leader known here: the client tries another node.
                return Err(RequestError::NotLeader {
                    group,
                    leader: None,
                });
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// `group`'s status on this node (`None` if it did not answer by
    /// `deadline`), or why there is none.
    async fn group_status(
        &self,
        group: GroupId,
        deadline: tokio::time::Instant,
    ) -> Result<Option<GroupStatus>, RequestError> {
        let route = self.route(group)?;
        match tokio::time::timeout_at(deadline, route.raft.send(GetStatus)).await {
            Err(_) => Ok(None),
            Ok(Err(_)) => Err(RequestError::Restarting(group)),
            Ok(Ok(status)) => Ok(Some(status)),
        }
    }

    /// Asks this node's replica of `group`, the leader, to start a transfer.
    async fn ask_transfer(
        &self,
        group: GroupId,
        to: NodeId,
        deadline: tokio::time::Instant,
    ) -> Result<(), RequestError> {
        let Some(route) = self.inner.routes.get(group) else {
            return Err(RequestError::Restarting(group));
        };
        match tokio::time::timeout_at(deadline, route.raft.send(TransferLeader { to })).await {
            Err(_) => Err(RequestError::TransferFailed {
                group,
                to,
                leader: Some(self.node_id()),
            }),
            Ok(Err(_)) => Err(RequestError::Restarting(group)),
            // Lost the leadership meanwhile, or a transfer to another
            // node is under way: look again at the next tick.
            Ok(Ok(Err(RequestError::NotLeader { .. })))
            | Ok(Ok(Err(RequestError::TransferInProgress { .. }))) => Ok(()),
            Ok(Ok(r)) => r,
        }
    }

    /// Forwards a transfer request to the leader and reads its answer.
    async fn forward_transfer(
        &self,
        leader: NodeId,
        group: GroupId,
        to: NodeId,
        deadline: tokio::time::Instant,
    ) -> Result<(), RequestError> {
        let req = Request::TransferLeader { group, to };
        let bytes = frame::encode(&req, frame::DEFAULT_MAX_FRAME)
            .map_err(|e| RequestError::Application(e.to_string()))?;
        let call = self.inner.shared.net.request(leader, bytes);
        let response = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => {
                return Err(RequestError::TransferFailed {
                    group,
                    to,
                    leader: Some(leader),
                })
            }
            // Not sent, or sent and the connection broke: a transfer
            // changes no state, so looking again is safe either way.
            Ok(Err(_)) => {
                return Err(RequestError::NotLeader {
                    group,
                    leader: None,
                })
            }
            Ok(Ok(r)) => r,
        };
        match frame::decode::<Response>(&response) {
            Ok(Response::Ok { .. }) => Ok(()),
            Ok(Response::Err(e)) => Err(e),
            Ok(other) => Err(RequestError::Application(format!(
                "leader {leader} sent an unexpected answer to a transfer: {other:?}"
            ))),
            Err(e) => Err(RequestError::Application(format!(
                "leader {leader}'s answer to a transfer did not decode: {e}"
            ))),
        }
    }

    /// Runs `query` on this node's own replica of `group`, without going
    /// through the log: fast, possibly stale (a follower may lag).
    pub async fn local_read(&self, group: GroupId, query: Bytes) -> Result<Bytes, RequestError> {
        let route = self.route(group)?;
        route
            .fsm
            .send(crate::fsm::LocalQuery(query))
            .await
            .map_err(|_| RequestError::Stopped(group))?
    }

    /// The commands this node's replica of `group` applied from log index
    /// `from` on (`None`: from its next apply), with their results, about
    /// `max_bytes` of them (at least one): a watch. When none was applied
    /// there yet, waits up to `wait` for one and answers an empty batch if
    /// none came (a long poll: ask again from `next`). Any replica serves
    /// it (a follower sees a change when it applied it). Each replica keeps
    /// the last `GroupConfig::watch_history` commands; from an index older
    /// than that, or inside a snapshot it restored, the answer is
    /// `RequestError::Compacted`. Nothing is buffered per watcher: a slow
    /// one falls behind the history and gets `Compacted`, it cannot make
    /// the node hold more.
    pub async fn watch(
        &self,
        group: GroupId,
        from: Option<Index>,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<ChangeBatch, RequestError> {
        let route = self.route(group)?;
        let ticket = route
            .fsm
            .send(crate::fsm::Watch {
                from,
                max_bytes,
                park: !wait.is_zero(),
            })
            .await
            .map_err(|_| RequestError::Restarting(group))??;
        match ticket {
            crate::fsm::WatchTicket::Ready(batch) => Ok(batch),
            crate::fsm::WatchTicket::Waiting { from, rx } => {
                match tokio::time::timeout(wait, rx).await {
                    Ok(Ok(answer)) => answer,
                    // The group stopped (it restarts, or is deleted): a
                    // watch changes nothing, so asking again is safe.
                    Ok(Err(_)) => Err(RequestError::Restarting(group)),
                    Err(_) => Ok(ChangeBatch {
                        changes: Vec::new(),
                        next: from,
                        applied: from - 1,
                    }),
                }
            }
        }
    }

    /// Who leads `group` as this node's replica sees it, and every change
    /// of it (a `tokio::sync::watch` receiver: `borrow()` for now,
    /// `changed().await` for the next). Valid before the group starts and
    /// across its restarts here.
    pub fn leadership(
        &self,
        group: GroupId,
    ) -> tokio::sync::watch::Receiver<crate::shared::Leadership> {
        self.inner.shared.leadership(group)
    }

    /// The state of every group on this node.
    pub async fn status(&self) -> Vec<GroupStatus> {
        self.inner.node.send(Status).await.unwrap_or_default()
    }

    /// `(group, leader)` for every group running here, as its replica
    /// here believes (0: none known); asks no group.
    pub fn leaders(&self) -> Vec<(GroupId, NodeId)> {
        self.inner.routes.leaders()
    }

    /// This node's counters.
    pub fn stats(&self) -> NodeStats {
        self.inner.shared.stats()
    }

    /// Whether the transport has a live connection to `peer`.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.inner.transport.is_connected(peer)
    }

    /// Test hook: make one of `group`'s actors panic, to exercise the
    /// supervisor. Returns once the target's handler ran (it acknowledges,
    /// then panics); an actor that was already gone, or whose mailbox is
    /// closed or full, is an error, so a test cannot believe it injected a
    /// fault that never fired.
    pub async fn inject_panic(
        &self,
        group: GroupId,
        target: FaultTarget,
    ) -> Result<(), RequestError> {
        let route = self
            .inner
            .routes
            .get(group)
            .ok_or(RequestError::NoSuchGroup(group))?;
        let (delivered, ran) = tokio::sync::oneshot::channel();
        // `try_send` (not `do_send`, which drops a message silently): it
        // fails at once if the mailbox is closed or full. The acknowledgement
        // says the handler ran; a dropped sender, that it never will.
        let sent = match target {
            FaultTarget::RaftGroup => route
                .raft
                .try_send(InjectPanic { delivered })
                .map_err(|e| e.to_string()),
            FaultTarget::FsmCaller => route
                .fsm
                .try_send(crate::fsm::InjectPanic { delivered })
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = sent {
            return Err(RequestError::Application(format!(
                "the fault for {target:?} of group {group} was not delivered: {e}"
            )));
        }
        ran.await.map_err(|_| {
            RequestError::Application(format!(
                "the {target:?} of group {group} stopped before its injected fault ran"
            ))
        })
    }

    /// Stops every group and the transport.
    pub async fn shutdown(&self) {
        let _ = self.inner.node.send(StopAll).await;
        self.inner.transport.shutdown().await;
        let stop = self.inner.net_stop.lock().ok().and_then(|mut s| s.take());
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}

/// The pause between retries of a request: 5 ms, doubling up to 100 ms.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(5))
    }

    /// Sleeps before the next try; `false` (without sleeping) when the
    /// pause would end past `deadline`.
    async fn wait(&mut self, deadline: tokio::time::Instant) -> bool {
        if tokio::time::Instant::now() + self.0 > deadline {
            return false;
        }
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(100));
        true
    }
}

/// Opens a node's snapshot store. It deletes nothing on its own: a
/// snapshot written (or received) later must never delete the one the
/// group's core is compacted to, which a lagging follower will be sent.
/// Each RaftGroup prunes its own files (see `RaftGroup::prune_snapshots`).
pub(crate) fn open_snapshot_store(dir: &std::path::Path) -> Result<SnapshotStore, StorageError> {
    SnapshotStore::open(dir, SnapshotStore::KEEP_ALL)
}

/// Encodes the answer to a request about `group`, within `max` bytes. An
/// answer too large to send is replaced by an error that says the request
/// ran (for a command: it was applied), so nobody retries it believing
/// nothing changed.
fn encode_answer(group: Option<GroupId>, response: &Response, max: usize) -> Bytes {
    let error = match frame::encode(response, max) {
        Ok(answer) => return answer,
        Err(frame::FrameError::TooLarge { size, limit }) => match (group, response) {
            (Some(group), Response::Ok { .. }) => {
                RequestError::ResultTooLarge { group, size, limit }
            }
            // An error too long to send: which one it was is lost.
            (Some(group), _) => RequestError::OutcomeUnknown {
                group,
                reason: format!("the answer of {size} bytes exceeds the frame limit of {limit}"),
            },
            // Status and stats change nothing.
            (None, _) => RequestError::Application(format!(
                "the node's answer of {size} bytes exceeds the frame limit of {limit}"
            )),
        },
        Err(e) => match group {
            Some(group) => RequestError::OutcomeUnknown {
                group,
                reason: format!("the answer could not be encoded: {e}"),
            },
            None => RequestError::Application(format!("the answer could not be encoded: {e}")),
        },
    };
    // A short error always fits a frame; an empty answer (which the
    // receiver cannot decode: an unknown outcome) is the last resort.
    frame::encode(&Response::Err(error), max).unwrap_or_default()
}

/// What the leader's answer to a forwarded request means. The leader
/// answers after it handled the request, so an answer this node cannot
/// read (a newer node's error variant, a garbled frame) says nothing about
/// whether the command was applied: an unknown outcome, never
/// `Unavailable` (which would invite a retry and a double apply).
fn read_forwarded(group: GroupId, to: NodeId, response: &[u8]) -> Result<Committed, RequestError> {
    match frame::decode::<Response>(response) {
        Ok(Response::Ok { result, leader }) => Ok(Committed {
            result,
            leader: leader.unwrap_or(to),
        }),
        Ok(Response::Err(e)) => Err(e),
        Ok(other) => Err(RequestError::OutcomeUnknown {
            group,
            reason: format!("the leader sent an unexpected answer: {other:?}"),
        }),
        Err(e) => Err(RequestError::OutcomeUnknown {
            group,
            reason: format!("the leader's answer did not decode: {e}"),
        }),
    }
}

/// Starts the transport on the current runtime (the actors' thread, or a
/// simulated host).
fn start_net_here(
    cfg: NetConfig,
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    handler: Arc<NodeHandler>,
) -> Result<Transport<RaftItem>, EngineError> {
    Transport::start(cfg, socket, handler as Arc<dyn Handler<RaftItem>>)
        .map_err(|e| EngineError::Net(e.to_string()))
}

/// Starts the transport on a thread with its own tokio runtime; returns
/// the handle and a sender that stops the thread.
fn start_net_thread(
    cfg: NetConfig,
    socket: std::net::UdpSocket,
    handler: Arc<NodeHandler>,
) -> Result<(Transport<RaftItem>, oneshot::Sender<()>), EngineError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("synod-net".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let started = rt.block_on(async {
                let socket = synod_net::transport::wrap_udp(socket).map_err(|e| e.to_string())?;
                Transport::start(cfg, socket, handler as Arc<dyn Handler<RaftItem>>)
                    .map_err(|e| e.to_string())
            });
            let ok = started.is_ok();
            let _ = ready_tx.send(started);
            if ok {
                // Serve until told to stop (or the engine is dropped).
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            }
        })
        .map_err(EngineError::Thread)?;
    let transport = ready_rx
        .recv()
        .map_err(|_| EngineError::Net("the transport thread died".into()))?
        .map_err(EngineError::Net)?;
    Ok((transport, stop_tx))
}

pub mod balance;
mod groups;
mod membership;

#[cfg(test)]
mod tests {
    use super::*;
    use synod_storage::SnapshotMeta;

    fn write(store: &SnapshotStore, index: u64) {
        let meta = SnapshotMeta {
            group: 1,
            index,
            term: 1,
            voters: vec![1, 2, 3],
            learners: Vec::new(),
        };
        let mut w = store.writer(meta).unwrap();
        w.write_chunk(&index.to_le_bytes()).unwrap();
        w.finish().unwrap();
    }

    /// Issue 8, finding 2: the store kept the 2 newest files, so two
    /// snapshots streamed here that the core did not adopt deleted the
    /// one its log is compacted to, and this node could no longer send it
    /// to a lagging follower once it led.
    #[test]
    fn snapshots_received_later_never_delete_the_one_the_core_relies_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_snapshot_store(dir.path()).unwrap();
        write(&store, 10); // the core is compacted to 10
        write(&store, 20); // streamed by a leader, not adopted
        write(&store, 30); // again
        let data = store.open_snapshot(1, 10).and_then(|r| r.read_all());
        assert_eq!(data.unwrap(), 10u64.to_le_bytes());
        // The group prunes what is older than its compaction point.
        assert_eq!(store.delete_below(1, 20).unwrap(), 1);
        let left: Vec<u64> = store.list(1).unwrap().iter().map(|m| m.index).collect();
        assert_eq!(left, vec![20, 30]);
    }

    /// Issue 8, finding 4: a result too large for a frame is reported as
    /// what it is (the command ran), never as a refusal ("nothing
    /// changed").
    #[test]
    fn a_result_too_large_to_send_says_the_command_ran() {
        let limit = 1 << 10;
        let big = Response::Ok {
            result: Bytes::from(vec![7u8; 4 * limit]),
            leader: Some(1),
        };
        let answer = encode_answer(Some(5), &big, limit);
        assert!(answer.len() <= limit);
        match frame::decode::<Response>(&answer).unwrap() {
            Response::Err(e @ RequestError::ResultTooLarge { group: 5, .. }) => {
                assert!(!e.is_safe_to_retry());
            }
            other => panic!("{other:?}"),
        }
        // An error too long to send: which error it was is lost, so the
        // outcome is unknown.
        let long_error = Response::Err(RequestError::Application("x".repeat(4 * limit)));
        let answer = encode_answer(Some(5), &long_error, limit);
        match frame::decode::<Response>(&answer).unwrap() {
            Response::Err(RequestError::OutcomeUnknown { group: 5, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// Issue 8, finding 3: the leader answered, so it handled the command;
    /// an answer this node cannot read (a newer node's error variant, a
    /// garbled frame) is an unknown outcome, never a retry-safe
    /// `Unavailable`.
    #[test]
    fn an_unreadable_answer_from_the_leader_is_an_unknown_outcome() {
        let garbage = Bytes::from_static(&[frame::VERSION, 0xc1, 0xff, 0x00]);
        let wrong_kind = frame::encode(&Response::Stats(NodeStats::default()), 1 << 10).unwrap();
        for answer in [garbage, wrong_kind, Bytes::new()] {
            let e = read_forwarded(7, 2, &answer).err().unwrap();
            assert!(
                matches!(e, RequestError::OutcomeUnknown { group: 7, .. }),
                "{e:?}"
            );
            assert!(!e.is_safe_to_retry());
        }
    }
}
