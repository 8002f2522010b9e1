//! What every group of a node shares: identity, the log writer, the
//! network, the snapshot store, configuration and counters.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use bytes::Bytes;
use slog::Logger;
use synod_core::NodeId;
use synod_net::{BoxFuture, Transport};
use synod_storage::{GroupId, SnapshotStore};

use crate::log_writer::LogWriter;
use crate::proto::{NodeStats, RaftItem};

/// How every group of a node behaves. Defaults suit a cluster on a LAN.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// One tick of the Raft core. Default 50 ms.
    pub tick: Duration,
    /// Election timeout in ticks (randomized in `[n, 2n)`). Default 10.
    pub election_ticks: u32,
    /// Heartbeat interval in ticks. Default 2.
    pub heartbeat_ticks: u32,
    /// Readies whose writes may be in flight at once per group (the leader
    /// keeps replicating while its previous batch is being synced).
    /// Default 4.
    pub max_inflight_writes: usize,
    /// Take a snapshot every this many applied entries. Default 100,000
    /// (as etcd): serializing the state runs on the group's apply path, so
    /// a large state pauses the group while it is written out.
    pub snapshot_every: u64,
    /// How long a proposal may wait for its result. Default 10 s.
    pub propose_timeout: Duration,
    /// Most entries proposed but not yet committed per group; more get
    /// `Busy`. Default 10,000.
    pub max_uncommitted: usize,
    /// Restarts allowed within `restart_window` before a group is marked
    /// failed. Default 5.
    pub max_restarts: u32,
    /// Default 60 s.
    pub restart_window: Duration,
    /// Mailbox capacity of each RaftGroup (back-pressure). Default 1024.
    pub mailbox: usize,
    /// Allow lease reads (`synod_core::Config::lease_reads`; see
    /// `Engine::read_lease`). Every node of the cluster must agree.
    /// Default off.
    pub lease_reads: bool,
    /// Run the node's leader balancer (see `engine::balance`): a node
    /// leading clearly more than its share of the groups it hosts hands
    /// some leaderships to the voters that lead the fewest. Default on.
    pub balance_leaders: bool,
    /// Let idle groups quiesce (`synod_core::Config::quiesce`): no
    /// heartbeats and no ticks until something happens; the node clock's
    /// per-peer beat stands in for their leaders' heartbeats. Default on.
    pub quiesce: bool,
    /// How often the leader balancer looks (each round is jittered by
    /// ±25% per node, so nodes do not act in lockstep). Default 3 s.
    pub balance_interval: Duration,
    /// How long after the node starts a run-time create that finds no
    /// service registered ([`crate::node::ServeGroups`]) is answered with
    /// a retryable `Restarting` rather than `NoGroupService`: the
    /// application may still be starting its own groups before it
    /// registers (`synod node` starts its configured key-value groups
    /// first, seconds for thousands). Default 30 s.
    pub service_grace: Duration,
    /// Most applied commands (with their results) each replica keeps for
    /// watches (`Engine::watch`): a watch may resume from any index still
    /// kept; older ones are `Compacted`. 0 keeps none (a watch then sees
    /// only what is applied while it waits). Default 1,000.
    pub watch_history: usize,
    /// Most bytes of that history per replica (commands and results).
    /// Default 256 KiB. Memory for watches is at most this times the
    /// groups a node hosts: lower it for many busy groups.
    pub watch_history_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_inflight_writes: 4,
            snapshot_every: 100_000,
            propose_timeout: Duration::from_secs(10),
            max_uncommitted: 10_000,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            mailbox: 1024,
            lease_reads: false,
            balance_leaders: true,
            quiesce: true,
            balance_interval: Duration::from_secs(3),
            service_grace: Duration::from_secs(30),
            watch_history: 1_000,
            watch_history_bytes: 256 << 10,
        }
    }
}

/// How Raft traffic leaves the node. Implemented by the QUIC transport; a
/// trait so that tests can put something else there.
pub trait RaftNet: Send + Sync + 'static {
    /// Queues a Raft message for node `to` (never blocks; may drop).
    fn send(&self, to: NodeId, item: RaftItem);
    /// Streams a snapshot to node `to`.
    fn send_snapshot(
        &self,
        to: NodeId,
        header: Bytes,
        data: Box<dyn Read + Send>,
    ) -> BoxFuture<Result<(), String>>;
    /// Sends a request to node `to` (forwarding) and returns the response.
    fn request(&self, to: NodeId, request: Bytes) -> BoxFuture<Result<Bytes, NetFailure>>;
}

/// Why a request to another node failed.
#[derive(Clone, Debug)]
pub enum NetFailure {
    /// It was certainly not sent (no connection, no stream).
    NotSent(String),
    /// It may have arrived: its outcome is unknown.
    Lost(String),
}

impl RaftNet for Transport<RaftItem> {
    fn send(&self, to: NodeId, item: RaftItem) {
        let size = item.size_hint();
        self.send_raft(to, item, size);
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        header: Bytes,
        data: Box<dyn Read + Send>,
    ) -> BoxFuture<Result<(), String>> {
        let t = self.clone();
        Box::pin(async move {
            t.send_snapshot(to, header, data)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn request(&self, to: NodeId, request: Bytes) -> BoxFuture<Result<Bytes, NetFailure>> {
        let t = self.clone();
        Box::pin(async move {
            t.request(to, request).await.map_err(|e| {
                if e.maybe_sent() {
                    NetFailure::Lost(e.to_string())
                } else {
                    NetFailure::NotSent(e.to_string())
                }
            })
        })
    }
}

/// Counters of a node (beside the log writer's and the transport's).
#[derive(Default, Debug)]
pub struct Counters {
    /// Commands applied.
    pub applied: AtomicU64,
    /// Proposals answered to their proposer.
    pub answered: AtomicU64,
    /// Leaderships won.
    pub leader_changes: AtomicU64,
    /// Group restarts.
    pub restarts: AtomicU64,
    /// Snapshots saved.
    pub snapshots_saved: AtomicU64,
    /// Snapshots installed.
    pub snapshots_installed: AtomicU64,
    /// Rounds of the leader balancer (counted when it is turned off too:
    /// a round then does nothing).
    pub balance_rounds: AtomicU64,
    /// Leaderships the leader balancer handed to another node.
    pub balance_transfers: AtomicU64,
}

/// A group's actor died: sent by a guard every group actor holds, so the
/// supervisor notices panics (actix drops an actor whose handler panicked).
#[derive(actix::Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct ActorDied {
    /// The group.
    pub group: GroupId,
    /// The incarnation of the group the actor belonged to.
    pub generation: u64,
    /// Which actor.
    pub kind: &'static str,
}

/// A group's state machine panicked applying an entry: the supervisor
/// stops the group on this node and does not restart it (the entry would
/// panic again). Sent once, by the group's `FsmCaller`.
#[derive(actix::Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct GroupPoisoned {
    /// The group.
    pub group: GroupId,
    /// The incarnation of the group.
    pub generation: u64,
    /// The entry and the panic.
    pub poison: crate::proto::Poison,
}

/// Tells the supervisor when the actor holding it is dropped.
pub(crate) struct DeathGuard {
    pub group: GroupId,
    pub generation: u64,
    pub kind: &'static str,
    pub supervisor: Recipient<ActorDied>,
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        self.supervisor.do_send(ActorDied {
            group: self.group,
            generation: self.generation,
            kind: self.kind,
        });
    }
}

/// Per-node context shared by every group.
pub struct NodeShared {
    /// This node.
    pub node_id: NodeId,
    /// All voting nodes (this one included).
    pub voters: Vec<NodeId>,
    /// The node's log writer.
    pub log_writer: LogWriter,
    /// The network.
    pub net: Arc<dyn RaftNet>,
    /// Snapshot files.
    pub snapshots: SnapshotStore,
    /// Group behaviour.
    pub cfg: GroupConfig,
    /// Root logger of the node.
    pub log: Logger,
    /// Counters.
    pub counters: Counters,
    /// Base of the seeds of the groups' election timers.
    pub seed: u64,
    /// The transport, when it is QUIC (for its counters).
    pub transport: Option<Transport<RaftItem>>,
    /// The node booted on an empty data directory (now or in an earlier
    /// boot) and has not caught up in every group since: groups start with
    /// `Config::rejoining` (see `crate::identity`).
    pub rejoining: std::sync::atomic::AtomicBool,
    /// The node clock's count and what each peer was last heard.
    pub liveness: Arc<crate::clock::Liveness>,
    /// The awake groups, which the node clock ticks.
    pub ticking: crate::clock::Ticking,
    /// Whether slow file I/O (snapshot saves) may go to threads of its own
    /// (production) or must stay inline (simulation: no OS threads).
    pub offload_io: bool,
    /// Who leads each group, as its replica here sees it, for
    /// [`NodeShared::leadership`] subscribers (kept across restarts of
    /// the group).
    pub leaderships:
        std::sync::Mutex<rustc_hash::FxHashMap<GroupId, tokio::sync::watch::Sender<Leadership>>>,
}

/// Who leads a group, as one replica sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The leader it believes in (`None`: an election is under way, or the
    /// replica just started).
    pub leader: Option<NodeId>,
    /// Whether this replica leads.
    pub is_leader: bool,
    /// The term it saw that in.
    pub term: u64,
}

impl NodeShared {
    /// Tells the subscribers of `group`'s leadership (a no-op without
    /// any, beyond keeping the latest value).
    pub fn publish_leadership(&self, group: GroupId, now: Leadership) {
        let Ok(mut map) = self.leaderships.lock() else {
            return;
        };
        match map.get(&group) {
            Some(tx) => {
                tx.send_if_modified(|seen| {
                    let changed = *seen != now;
                    *seen = now;
                    changed
                });
            }
            None => {
                map.insert(group, tokio::sync::watch::channel(now).0);
            }
        }
    }

    /// The leadership of `group` as this node's replica sees it, and its
    /// changes.
    pub fn leadership(&self, group: GroupId) -> tokio::sync::watch::Receiver<Leadership> {
        match self.leaderships.lock() {
            Ok(mut map) => map
                .entry(group)
                .or_insert_with(|| tokio::sync::watch::channel(Leadership::default()).0)
                .subscribe(),
            // A poisoned lock: a receiver that never changes.
            Err(_) => tokio::sync::watch::channel(Leadership::default()).1,
        }
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> NodeStats {
        let c = &self.counters;
        let lw = self.log_writer.stats();
        let net = self
            .transport
            .as_ref()
            .map(|t| t.stats())
            .unwrap_or_default();
        NodeStats {
            node: self.node_id,
            fsyncs: lw.fsyncs.load(Ordering::Relaxed),
            log_writes: lw.writes.load(Ordering::Relaxed),
            log_rounds: lw.rounds.load(Ordering::Relaxed),
            log_entries: lw.entries.load(Ordering::Relaxed),
            applied: c.applied.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            leader_changes: c.leader_changes.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
            snapshots_saved: c.snapshots_saved.load(Ordering::Relaxed),
            snapshots_installed: c.snapshots_installed.load(Ordering::Relaxed),
            balance_rounds: c.balance_rounds.load(Ordering::Relaxed),
            balance_transfers: c.balance_transfers.load(Ordering::Relaxed),
            awake_groups: self.ticking.len() as u64,
            frames_sent: net.frames_sent,
            items_sent: net.items_sent,
        }
    }
}
