//! NodeActor: the supervision root and router of a node. It starts every
//! group from durable state, publishes the group's addresses to the
//! routing table the transport reads, and restarts a group whose actor
//! died (a panic kills an actix actor for good; each group actor holds a
//! guard that reports its death).
//!
//! Restart: stop the group's surviving actors and wait until the RaftGroup
//! has stopped (so it can submit no more writes), then rebuild the group
//! from its latest snapshot and the WAL (reads go through the log writer,
//! behind every earlier write). Acknowledged writes are durable in the WAL,
//! so nothing acknowledged is lost. More than `max_restarts` within
//! `restart_window` marks the group failed: a bug that kills an actor
//! every time would otherwise loop forever.
//!
//! A state machine that panics applying an entry is not restarted at all:
//! its FsmCaller catches the panic and reports [`GroupPoisoned`], and the
//! group stops on this node in state `Poisoned` (requests get
//! `RequestError::Poisoned` at once, status shows the entry). Restarting
//! would apply the same entry, panic again and burn CPU until the limit.
//!
//! ```text
//!   Starting ──ok──► Running ──ActorDied──► Restarting ──► Running
//!      │                │  └─ActorDied (limit reached)──► Failed
//!      └──error──► Failed   └─GroupPoisoned──► Poisoned (until the node restarts)
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix::prelude::*;
use slog::{crit, info, warn, Logger};
use synod_core::{Config, ForcedVoters, Membership, Raft, SnapshotInfo};
use synod_storage::{GroupId, GroupState, WriteBatch};

use crate::catalog::{Catalog, Record};

use crate::fsm::FsmCaller;
use crate::group::{GetStatus, RaftGroup};
use crate::identity::Identity;
use crate::proto::{GroupStatus, Poison, RequestError};
use crate::shared::{ActorDied, DeathGuard, GroupPoisoned, NodeShared};
use crate::snapshot_exec::{SetFsm, SnapshotExecutor};
use crate::state_machine::StateMachineFactory;

mod service;

/// Where a group's actors are.
#[derive(Clone)]
pub struct GroupRoute {
    /// The RaftGroup.
    pub raft: Addr<RaftGroup>,
    /// The FsmCaller.
    pub fsm: Addr<FsmCaller>,
    /// The SnapshotExecutor.
    pub snapshot: Addr<SnapshotExecutor>,
    /// The leader the RaftGroup believes in (0: none), kept up to date by
    /// it: read without a message.
    pub leader_hint: Arc<std::sync::atomic::AtomicU64>,
}

/// The routing table: group id to actors. Read by the transport's thread,
/// written by the NodeActor.
#[derive(Default)]
pub struct Routes {
    // Fx: a lookup per inbound frame and request, over 10,000 keys; the
    // keys are group ids, not attacker-chosen insertions.
    map: RwLock<rustc_hash::FxHashMap<GroupId, Lookup>>,
}

/// What the routing table says about a group.
#[derive(Clone)]
pub enum Lookup {
    /// Running here (shared: a lookup per inbound frame and request clones
    /// one pointer, not three actor addresses).
    Running(Arc<GroupRoute>),
    /// Known, but starting or restarting.
    Restarting,
    /// Stopped here for good: its state machine panicked on an entry.
    Poisoned(Poison),
    /// Deleted from this node (or this node was removed from it); the
    /// catalog says so, and group ids are not reused.
    Removed {
        /// This node.
        node: synod_core::NodeId,
    },
    /// Not hosted here.
    Unknown,
}

impl Routes {
    /// The route of `group`, if it is running.
    pub fn get(&self, group: GroupId) -> Option<Arc<GroupRoute>> {
        match self.lookup(group) {
            Lookup::Running(r) => Some(r),
            _ => None,
        }
    }

    /// The route of `group` if it runs here, else the error a request for
    /// it gets (restarting, poisoned, not hosted).
    pub fn running(&self, group: GroupId) -> Result<Arc<GroupRoute>, RequestError> {
        match self.lookup(group) {
            Lookup::Running(r) => Ok(r),
            Lookup::Restarting => Err(RequestError::Restarting(group)),
            Lookup::Poisoned(p) => Err(p.error(group)),
            Lookup::Removed { node } => Err(RequestError::GroupRemoved { group, node }),
            Lookup::Unknown => Err(RequestError::NoSuchGroup(group)),
        }
    }

    /// What is known of `group`.
    pub fn lookup(&self, group: GroupId) -> Lookup {
        self.map
            .read()
            .ok()
            .as_ref()
            .and_then(|m| m.get(&group).cloned())
            .unwrap_or(Lookup::Unknown)
    }

    /// `Some(route)`: running; `None`: starting or restarting.
    fn set(&self, group: GroupId, route: Option<GroupRoute>) {
        self.put(
            group,
            route.map_or(Lookup::Restarting, |r| Lookup::Running(Arc::new(r))),
        );
    }

    fn put(&self, group: GroupId, lookup: Lookup) {
        if let Ok(mut m) = self.map.write() {
            m.insert(group, lookup);
        }
    }

    fn remove(&self, group: GroupId) {
        if let Ok(mut m) = self.map.write() {
            m.remove(&group);
        }
    }

    /// How many groups run here, and how many of them `node` leads (as
    /// their replicas here believe).
    pub(crate) fn led_count(&self, node: synod_core::NodeId) -> (usize, usize) {
        let Ok(m) = self.map.read() else {
            return (0, 0);
        };
        let mut running = 0;
        let mut led = 0;
        for l in m.values() {
            if let Lookup::Running(r) = l {
                running += 1;
                if r.leader_hint.load(std::sync::atomic::Ordering::Relaxed) == node {
                    led += 1;
                }
            }
        }
        (running, led)
    }

    /// `(group, leader hint)` of every group running here, by group.
    pub(crate) fn leaders(&self) -> Vec<(GroupId, synod_core::NodeId)> {
        let Ok(m) = self.map.read() else {
            return Vec::new();
        };
        let mut out: Vec<(GroupId, synod_core::NodeId)> = m
            .iter()
            .filter_map(|(&g, l)| match l {
                Lookup::Running(r) => {
                    Some((g, r.leader_hint.load(std::sync::atomic::Ordering::Relaxed)))
                }
                _ => None,
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The RaftGroups running here whose leader is `peer`.
    pub(crate) fn led_by(&self, peer: synod_core::NodeId) -> Vec<Addr<RaftGroup>> {
        let Ok(m) = self.map.read() else {
            return Vec::new();
        };
        let mut led: Vec<(GroupId, Addr<RaftGroup>)> = m
            .iter()
            .filter_map(|(&g, l)| match l {
                Lookup::Running(r)
                    if r.leader_hint.load(std::sync::atomic::Ordering::Relaxed) == peer =>
                {
                    Some((g, r.raft.clone()))
                }
                _ => None,
            })
            .collect();
        // In group order: a seeded simulation wakes them the same way
        // every run.
        led.sort_unstable_by_key(|(g, _)| *g);
        led.into_iter().map(|(_, a)| a).collect()
    }
}

/// Stops an actor (graceful: after the messages already queued).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopActor;

impl Handler<StopActor> for RaftGroup {
    type Result = ();
    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<StopActor> for FsmCaller {
    type Result = ();
    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<StopActor> for SnapshotExecutor {
    type Result = ();
    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Starts a group (on this node) with a fresh state machine from `factory`,
/// if this node is one of its members.
#[derive(Message)]
#[rtype(result = "Result<Hosting, String>")]
pub struct CreateGroup {
    /// The group.
    pub group: GroupId,
    /// Makes its state machine.
    pub factory: StateMachineFactory,
    /// The configuration a new group starts from; `None`: every node of
    /// the cluster votes. Ignored when the catalog already knows the group
    /// (the configuration it started from is kept; later changes are in
    /// its log and snapshots).
    pub members: Option<Membership>,
}

/// What [`CreateGroup`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hosting {
    /// The group runs here (new, or resumed from its state on disk).
    Started,
    /// This node is not one of the new group's members: it neither stores
    /// nor ticks it, but can host it later if it is added as a learner.
    NotAMember,
    /// The group removed this node (see [`crate::catalog`]); it is hosted
    /// again only if it is added again.
    Removed,
}

/// Host a replica of a running group that this node is about to join as a
/// learner: an empty replica that learns the configuration and the state
/// from the leader. Needs the group's state machine factory (the
/// application created the group here, as a non-member, with
/// [`CreateGroup`]). Idempotent.
#[derive(Message)]
#[rtype(result = "Result<(), RequestError>")]
pub struct HostGroup(pub GroupId);

/// Registers the node's *service*: the state machine factory of groups
/// created at run time ([`HostServiceGroup`], and [`HostGroup`] of a group
/// the application did not create here), then starts again every group of
/// the service the catalog says this node hosts (and finishes deleting
/// those removed while the node stopped). Answers the groups it starts;
/// they run once started (requests meanwhile get `Restarting`). Register
/// it after the application spawned its own groups.
#[derive(Message)]
#[rtype(result = "Vec<GroupId>")]
pub struct ServeGroups(pub StateMachineFactory);

/// Host this node's replica of a group created at run time with the
/// bootstrap voters `voters`, with the service's factory (see
/// [`ServeGroups`]). Idempotent: a group that exists here with the same
/// voters is a success (started if it is not running yet); with other
/// voters, `GroupExists`; a group deleted here, `GroupRemoved`; no service,
/// `NoGroupService`. A node that is not among `voters` does nothing.
#[derive(Message)]
#[rtype(result = "Result<(), RequestError>")]
pub struct HostServiceGroup {
    /// The group.
    pub group: GroupId,
    /// Its bootstrap voters.
    pub voters: BTreeSet<synod_core::NodeId>,
}

/// Unsafe recovery: force a voter set on this node's replica of a group
/// (see `Raft::force_voters`), recorded in the catalog so that it holds
/// across restarts until the group's log carries a configuration again.
#[derive(Message)]
#[rtype(result = "Result<Membership, RequestError>")]
pub struct ForceVoters {
    /// The group.
    pub group: GroupId,
    /// The voters to force.
    pub voters: std::collections::BTreeSet<synod_core::NodeId>,
}

/// Stop and delete this node's replica of a group that removed it: its
/// actors stop, the catalog marks it removed (so no boot brings it back),
/// its log and snapshots are deleted. Idempotent.
#[derive(Message)]
#[rtype(result = "Result<(), RequestError>")]
pub struct DropGroup(pub GroupId);

/// The core of a group retired the configuration an operator forced on
/// it (a configuration written after it is committed): the catalog
/// forgets it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ForcedRetired(pub GroupId);

/// A group that started rejoining caught up from a leader.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CaughtUp(pub GroupId);

/// Every group's status.
#[derive(Message)]
#[rtype(result = "Vec<GroupStatus>")]
pub struct Status;

/// Stops every group.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Starting,
    Running,
    Restarting,
    Failed,
    /// Stopped for good: the state machine panicked on an entry (the slot's
    /// `poison` says which). Never restarted by the supervisor.
    Poisoned,
}

struct Slot {
    factory: StateMachineFactory,
    /// The configuration the group started from (see [`crate::catalog`]).
    bootstrap: Membership,
    generation: u64,
    route: Option<GroupRoute>,
    recent_restarts: VecDeque<Instant>,
    total_restarts: u32,
    state: SlotState,
    /// Set with `SlotState::Poisoned`.
    poison: Option<Poison>,
}

/// The supervision root and router of a node.
pub struct NodeActor {
    shared: Arc<NodeShared>,
    routes: Arc<Routes>,
    groups: BTreeMap<GroupId, Slot>,
    /// Which groups this node hosts, durably.
    catalog: Catalog,
    /// Factories of groups the application created here that this node
    /// does not host (not a member, or removed): used if it joins them.
    dormant: BTreeMap<GroupId, StateMachineFactory>,
    /// Groups whose log and snapshots are being deleted: nothing else
    /// happens to them meanwhile.
    deleting: BTreeSet<GroupId>,
    /// The data directory's identity; its rejoining marker goes once every
    /// group caught up.
    identity: Identity,
    /// Groups started while rejoining that have not caught up yet.
    rejoining: BTreeSet<GroupId>,
    /// The factory of groups created at run time (see [`ServeGroups`]).
    service: Option<StateMachineFactory>,
    /// When this actor started: for a while
    /// ([`crate::GroupConfig::service_grace`]) the application may still
    /// be starting its own groups before it registers its service.
    started: std::time::Instant,
    log: Logger,
}

impl NodeActor {
    /// A node actor over `shared`, publishing routes into `routes`.
    pub fn new(
        shared: Arc<NodeShared>,
        routes: Arc<Routes>,
        identity: Identity,
        catalog: Catalog,
    ) -> Self {
        let log = shared.log.new(slog::o!("actor" => "node"));
        // Requests for a group removed from this node say so (not "no
        // such group") from the first moment on.
        for (&group, record) in catalog.records() {
            if *record == Record::Removed {
                routes.put(
                    group,
                    Lookup::Removed {
                        node: shared.node_id,
                    },
                );
            }
        }
        NodeActor {
            shared,
            routes,
            groups: BTreeMap::new(),
            catalog,
            dormant: BTreeMap::new(),
            deleting: BTreeSet::new(),
            identity,
            rejoining: BTreeSet::new(),
            service: None,
            started: std::time::Instant::now(),
            log,
        }
    }

    fn spawn_start(&mut self, group: GroupId, ctx: &mut Context<Self>) {
        let Some(slot) = self.groups.get(&group) else {
            return;
        };
        let fut = start_group(
            Arc::clone(&self.shared),
            group,
            Arc::clone(&slot.factory),
            (slot.bootstrap.clone(), self.catalog.forced(group).cloned()),
            slot.generation,
            slot.total_restarts,
            ctx.address(),
        );
        let generation = slot.generation;
        ctx.spawn(fut.into_actor(self).map(move |result, act, _| {
            let Some(slot) = act.groups.get_mut(&group) else {
                return;
            };
            if slot.generation != generation {
                return;
            }
            match result {
                Ok(route) => {
                    act.routes.set(group, Some(route.clone()));
                    slot.route = Some(route);
                    slot.state = SlotState::Running;
                }
                Err(e) => {
                    crit!(act.log, "group cannot start; marked failed"; "group" => group, "error" => e);
                    slot.state = SlotState::Failed;
                    act.routes.remove(group);
                }
            }
        }));
    }
}

/// Builds a group's actors from its latest snapshot and the WAL.
async fn start_group(
    shared: Arc<NodeShared>,
    group: GroupId,
    factory: StateMachineFactory,
    (bootstrap, forced): (Membership, Option<ForcedVoters>),
    generation: u64,
    restarts: u32,
    node: Addr<NodeActor>,
) -> Result<GroupRoute, String> {
    let supervisor: Recipient<ActorDied> = node.clone().recipient();
    let caught_up: Recipient<CaughtUp> = node.clone().recipient();
    let retired: Recipient<ForcedRetired> = node.clone().recipient();
    let stored = shared
        .log_writer
        .read_async(group)
        .await
        .map_err(|e| e.to_string())?;
    let mut sm = factory();
    let latest = shared.snapshots.latest(group).map_err(|e| e.to_string())?;
    let mut membership = None;
    let snapshot = match &latest {
        Some(meta) => {
            membership = Some(Membership {
                voters: meta.voters.iter().copied().collect(),
                learners: meta.learners.iter().copied().collect(),
            });
            let data = shared
                .snapshots
                .open_snapshot(group, meta.index)
                .and_then(|r| r.read_all())
                .map_err(|e| e.to_string())?;
            sm.restore(&data)?;
            SnapshotInfo {
                index: meta.index,
                term: meta.term,
            }
        }
        None => SnapshotInfo::default(),
    };
    let cfg = &shared.cfg;
    let mut config = Config::new(shared.node_id, bootstrap.voters.iter().copied());
    config.group = group;
    config.election_ticks = cfg.election_ticks;
    config.heartbeat_ticks = cfg.heartbeat_ticks;
    config.max_uncommitted_entries = cfg.max_uncommitted;
    config.lease_reads = cfg.lease_reads;
    config.quiesce = cfg.quiesce;
    // A node that booted on an empty data directory restricts its votes in
    // every group until that group caught up (see `crate::identity`).
    config.rejoining = shared.rejoining.load(Ordering::Relaxed);
    config.seed = shared
        .seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(group << 16)
        .wrapping_add(generation);
    let stored_first = stored.first_index;
    let stored_last = stored.entries.last().map_or(stored_first - 1, |e| e.index);
    // The configuration as of the snapshot (the bootstrap one without a
    // snapshot); later changes are in the log.
    let membership = membership.unwrap_or(bootstrap);
    let fsm_membership = membership.clone();
    let mut raft = Raft::restore_with_membership(
        config,
        stored.hard_state,
        snapshot,
        Some(membership),
        stored.entries,
        snapshot.index,
    )
    .map_err(|e| format!("group {group}: {e}"))?;
    if let Some(f) = forced {
        // Unsafe recovery forced this before a restart: it holds until the
        // core retires it (see `Raft::force_voters`).
        raft.restore_forced_voters(f);
    }
    let stored_state = GroupState {
        first_index: stored_first,
        last_index: stored_last,
        hard_state: stored.hard_state,
    };
    let align = WriteBatch::realign(
        group,
        Some(stored_state),
        snapshot.index,
        raft.log().last_index(),
    );
    if !align.is_empty() {
        shared
            .log_writer
            .write_async(align)
            .await
            .map_err(|e| e.to_string())?;
    }
    let guard = |kind| DeathGuard {
        group,
        generation,
        kind,
        supervisor: supervisor.clone(),
    };
    let raft_ctx = Context::<RaftGroup>::new();
    let raft_addr = raft_ctx.address();
    let snap_addr = SnapshotExecutor::new(
        group,
        Arc::clone(&shared),
        raft_addr.clone(),
        guard("snapshot"),
    )
    .start();
    let fsm_addr = FsmCaller::new(
        group,
        sm,
        (snapshot.index, snapshot.term, fsm_membership),
        raft_addr.clone(),
        snap_addr.clone(),
        Arc::clone(&shared),
        (guard("fsm"), node.recipient()),
    )
    .start();
    snap_addr.do_send(SetFsm(fsm_addr.clone()));
    let latest_index = latest.map(|m| m.index);
    let leader_hint = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let actor = RaftGroup::new(
        group,
        raft,
        Arc::clone(&shared),
        latest_index,
        restarts,
        guard("raft"),
        crate::group::Links {
            caught_up,
            retired,
            leader_hint: Arc::clone(&leader_hint),
        },
    );
    let raft_addr = raft_ctx.run(actor);
    raft_addr.do_send(crate::group::SetFsm(fsm_addr.clone()));
    Ok(GroupRoute {
        raft: raft_addr,
        fsm: fsm_addr,
        snapshot: snap_addr,
        leader_hint,
    })
}

impl Actor for NodeActor {
    type Context = Context<Self>;
}

impl NodeActor {
    /// Starts hosting `group` from `bootstrap` (recorded in the catalog
    /// first, so a crash right after leaves the node hosting it).
    fn host(
        &mut self,
        group: GroupId,
        factory: StateMachineFactory,
        bootstrap: Membership,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Hosting, String>> {
        if let Err(e) = self.catalog.set(group, Record::Hosted(bootstrap.clone())) {
            let e = format!("group {group}: cannot record it in the catalog: {e}");
            return Box::pin(async move { Err(e) }.into_actor(self));
        }
        self.dormant.remove(&group);
        self.routes.set(group, None);
        if self.identity.rejoining {
            self.rejoining.insert(group);
        }
        self.groups.insert(
            group,
            Slot {
                factory: Arc::clone(&factory),
                bootstrap: bootstrap.clone(),
                generation: 0,
                route: None,
                recent_restarts: VecDeque::new(),
                total_restarts: 0,
                state: SlotState::Starting,
                poison: None,
            },
        );
        let forced = self.catalog.forced(group).cloned();
        let fut = start_group(
            Arc::clone(&self.shared),
            group,
            factory,
            (bootstrap, forced),
            0,
            0,
            ctx.address(),
        );
        Box::pin(fut.into_actor(self).map(move |result, act, _| {
            let Some(slot) = act.groups.get_mut(&group) else {
                return Err(format!("group {group} was dropped while it started"));
            };
            match result {
                Ok(route) => {
                    act.routes.set(group, Some(route.clone()));
                    slot.route = Some(route);
                    slot.state = SlotState::Running;
                    info!(act.log, "group started"; "group" => group);
                    Ok(Hosting::Started)
                }
                Err(e) => {
                    act.groups.remove(&group);
                    act.routes.remove(group);
                    Err(e)
                }
            }
        }))
    }

    /// Deletes what a removed group left in the log and the snapshot store.
    async fn delete_data(shared: Arc<NodeShared>, group: GroupId) -> Result<(), String> {
        let mut batch = WriteBatch::new();
        batch.remove_group(group);
        shared
            .log_writer
            .write_async(batch)
            .await
            .map_err(|e| format!("group {group}: cannot delete its log: {e}"))?;
        shared
            .snapshots
            .remove_group(group)
            .map_err(|e| format!("group {group}: cannot delete its snapshots: {e}"))
    }
}

impl Handler<CreateGroup> for NodeActor {
    type Result = ResponseActFuture<Self, Result<Hosting, String>>;

    fn handle(&mut self, m: CreateGroup, ctx: &mut Context<Self>) -> Self::Result {
        let group = m.group;
        if group == crate::clock::NODE_BEAT {
            let e = format!("group id {group} is reserved (node-level beats); use another id");
            return Box::pin(async move { Err(e) }.into_actor(self));
        }
        if self.groups.contains_key(&group) || self.deleting.contains(&group) {
            let e = format!("group {group} already exists on this node");
            return Box::pin(async move { Err(e) }.into_actor(self));
        }
        let me = self.shared.node_id;
        let bootstrap = match self.catalog.get(group) {
            Some(Record::Hosted(b)) => b.clone(),
            Some(Record::Removed) => {
                // A crash may have come between the mark and the deletion.
                self.deleting.insert(group);
                let shared = Arc::clone(&self.shared);
                let factory = m.factory;
                return Box::pin(NodeActor::delete_data(shared, group).into_actor(self).map(
                    move |r, act, _| {
                        act.deleting.remove(&group);
                        act.dormant.insert(group, factory);
                        r.map(|()| Hosting::Removed)
                    },
                ));
            }
            None => {
                let members = m
                    .members
                    .unwrap_or_else(|| Membership::with_voters(self.shared.voters.iter().copied()));
                if members.voters.is_empty() {
                    let e = format!("group {group}: a new group needs at least one voter");
                    return Box::pin(async move { Err(e) }.into_actor(self));
                }
                if let Some(id) = members.members().find(|&id| id == 0) {
                    let e = format!("group {group}: node id {id} is reserved");
                    return Box::pin(async move { Err(e) }.into_actor(self));
                }
                // A node that joined a running cluster starts no group
                // from a bootstrap configuration: it would claim a vote it
                // never had (see `crate::catalog`).
                if !members.contains(me) || self.catalog.joining() {
                    self.dormant.insert(group, m.factory);
                    return Box::pin(async move { Ok(Hosting::NotAMember) }.into_actor(self));
                }
                members
            }
        };
        self.host(group, m.factory, bootstrap, ctx)
    }
}

impl NodeActor {
    /// The answer for a group whose data is being deleted (or that is
    /// starting): retry shortly.
    fn busy<T: 'static>(
        &mut self,
        group: GroupId,
    ) -> ResponseActFuture<Self, Result<T, RequestError>> {
        self.answer_now(Err(RequestError::Restarting(group)))
    }

    /// An answer known at once, as the future a handler returns.
    fn answer_now<T: 'static>(
        &mut self,
        r: Result<T, RequestError>,
    ) -> ResponseActFuture<Self, Result<T, RequestError>> {
        Box::pin(async move { r }.into_actor(self))
    }

    /// This node cannot host (or stop hosting) `group`, and why.
    fn cannot_host<T: 'static>(
        &mut self,
        group: GroupId,
        reason: String,
    ) -> ResponseActFuture<Self, Result<T, RequestError>> {
        let node = self.shared.node_id;
        self.answer_now(Err(RequestError::CannotHost {
            group,
            node,
            reason,
        }))
    }
}

impl Handler<HostGroup> for NodeActor {
    type Result = ResponseActFuture<Self, Result<(), RequestError>>;

    fn handle(&mut self, HostGroup(group): HostGroup, _: &mut Context<Self>) -> Self::Result {
        if self.deleting.contains(&group) {
            return self.busy(group);
        }
        if self.groups.contains_key(&group) {
            return Box::pin(async { Ok(()) }.into_actor(self));
        }
        let node = self.shared.node_id;
        // The application's factory for a group it created here; else the
        // service's (a group created at run time), recorded as such so
        // that the node brings the replica back at its next boot.
        let service = self
            .service
            .clone()
            .filter(|_| !self.dormant.contains_key(&group));
        if service.is_some() {
            if let Err(e) = self.catalog.mark_service(group) {
                let reason = format!("cannot record it in the catalog: {e}");
                return self.cannot_host(group, reason);
            }
        }
        let Some(factory) = self.dormant.get(&group).cloned().or(service) else {
            let reason = format!(
                "node {node} does not know group {group}: create it there first (the application \
                 spawns it on every node, members or not; the KV service does for its groups), \
                 or register a service for groups created at run time"
            );
            return self.cannot_host(group, reason);
        };
        // An empty replica: first delete whatever an earlier replica left
        // (a snapshot still being written when it was dropped, say).
        self.deleting.insert(group);
        let shared = Arc::clone(&self.shared);
        Box::pin(
            NodeActor::delete_data(shared, group)
                .into_actor(self)
                .then(
                    move |deleted, act, ctx| -> ResponseActFuture<Self, Result<Hosting, String>> {
                        act.deleting.remove(&group);
                        match deleted {
                            Ok(()) => act.host(group, factory, Membership::default(), ctx),
                            Err(e) => Box::pin(async move { Err(e) }.into_actor(act)),
                        }
                    },
                )
                .map(move |r, _, _| {
                    r.map(|_| ()).map_err(|reason| RequestError::CannotHost {
                        group,
                        node,
                        reason,
                    })
                }),
        )
    }
}

impl Handler<DropGroup> for NodeActor {
    type Result = ResponseActFuture<Self, Result<(), RequestError>>;

    fn handle(&mut self, DropGroup(group): DropGroup, _: &mut Context<Self>) -> Self::Result {
        if self.deleting.contains(&group) {
            return self.busy(group);
        }
        if self
            .groups
            .get(&group)
            .is_some_and(|s| matches!(s.state, SlotState::Starting | SlotState::Restarting))
        {
            // Deleting under a start would race with its reads and writes.
            return self.busy(group);
        }
        let slot = self.groups.remove(&group);
        if slot.is_none() && !matches!(self.catalog.get(group), Some(Record::Hosted(_))) {
            // Not hosted: removed already, or never a member here.
            return Box::pin(async { Ok(()) }.into_actor(self));
        }
        self.routes.remove(group);
        self.rejoining.remove(&group);
        let factory = slot.as_ref().map(|s| Arc::clone(&s.factory));
        let node = self.shared.node_id;
        if let Err(e) = self.catalog.set(group, Record::Removed) {
            let reason = format!("cannot mark it removed in the catalog: {e}");
            return self.cannot_host(group, reason);
        }
        self.routes.put(group, Lookup::Removed { node });
        info!(self.log, "group removed from this node; deleting its log and snapshots"; "group" => group);
        self.deleting.insert(group);
        let shared = Arc::clone(&self.shared);
        let route = slot.and_then(|s| s.route);
        Box::pin(
            async move {
                // Stop the actors, and wait for the RaftGroup: it writes
                // nothing more before the log is deleted.
                if let Some(r) = route {
                    r.fsm.do_send(StopActor);
                    r.snapshot.do_send(StopActor);
                    let _ = r.raft.send(StopActor).await;
                }
                NodeActor::delete_data(shared, group).await
            }
            .into_actor(self)
            .map(move |r, act, _| {
                act.deleting.remove(&group);
                if let Some(f) = factory {
                    act.dormant.insert(group, f);
                }
                r.map_err(|reason| RequestError::CannotHost {
                    group,
                    node,
                    reason,
                })
            }),
        )
    }
}

/// The slot of `group` if it runs incarnation `generation`.
fn running_slot(
    groups: &mut BTreeMap<GroupId, Slot>,
    group: GroupId,
    generation: u64,
) -> Option<&mut Slot> {
    groups
        .get_mut(&group)
        .filter(|s| s.generation == generation && s.state == SlotState::Running)
}

impl Handler<ActorDied> for NodeActor {
    type Result = ();

    fn handle(&mut self, m: ActorDied, ctx: &mut Context<Self>) {
        // Not for an earlier incarnation, nor one already being handled.
        let Some(slot) = running_slot(&mut self.groups, m.group, m.generation) else {
            return;
        };
        if let Some(reason) = self.shared.log_writer.failure() {
            // A failed write is fatal for the node: rebuilding a group
            // would trust a log whose memory may not match the disk.
            crit!(self.log, "the node's log failed: every group stops; restart the node after \
                  checking the disk (it recovers from what is on disk)"; "error" => reason);
            self.stop_all();
            return;
        }
        warn!(self.log, "group actor died; restarting the group from durable state";
              "group" => m.group, "actor" => m.kind, "generation" => m.generation);
        self.shared
            .counters
            .restarts
            .fetch_add(1, Ordering::Relaxed);
        slot.state = SlotState::Restarting;
        self.routes.set(m.group, None);
        let now = Instant::now();
        let window = self.shared.cfg.restart_window;
        while slot
            .recent_restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            slot.recent_restarts.pop_front();
        }
        let route = slot.route.take();
        if slot.recent_restarts.len() as u32 >= self.shared.cfg.max_restarts {
            crit!(self.log, "group keeps dying; marked failed (restart the node to retry)";
                  "group" => m.group, "restarts" => slot.recent_restarts.len());
            slot.state = SlotState::Failed;
            self.routes.remove(m.group);
            if let Some(r) = route {
                r.raft.do_send(StopActor);
                r.fsm.do_send(StopActor);
                r.snapshot.do_send(StopActor);
            }
            return;
        }
        slot.recent_restarts.push_back(now);
        slot.total_restarts += 1;
        slot.generation += 1;
        let group = m.group;
        // Stop the survivors; wait for the RaftGroup, so it can submit no
        // more writes before the new one reads the WAL.
        let stop = async move {
            if let Some(r) = route {
                r.fsm.do_send(StopActor);
                r.snapshot.do_send(StopActor);
                let _ = r.raft.send(StopActor).await;
            }
        };
        ctx.spawn(stop.into_actor(self).map(move |_, act, ctx| {
            act.spawn_start(group, ctx);
        }));
    }
}

impl Handler<CaughtUp> for NodeActor {
    type Result = ();

    fn handle(&mut self, CaughtUp(group): CaughtUp, _: &mut Context<Self>) {
        if !self.rejoining.remove(&group) || !self.rejoining.is_empty() {
            return;
        }
        self.shared.rejoining.store(false, Ordering::Relaxed);
        match self.identity.caught_up() {
            Ok(()) => info!(
                self.log,
                "caught up in every group after booting on an empty data \
                                       directory; votes normally again"
            ),
            Err(e) => warn!(self.log, "cannot remove the rejoining marker; the next boot will \
                                       be careful again"; "error" => %e),
        }
    }
}

impl Handler<GroupPoisoned> for NodeActor {
    type Result = ();

    fn handle(&mut self, m: GroupPoisoned, _: &mut Context<Self>) {
        // Not for an earlier incarnation, nor one already stopping.
        let Some(slot) = running_slot(&mut self.groups, m.group, m.generation) else {
            return;
        };
        // No restart: the entry is in the log and would panic again. The
        // actors' deaths that follow find the slot not Running and are
        // ignored.
        slot.state = SlotState::Poisoned;
        self.routes.put(m.group, Lookup::Poisoned(m.poison.clone()));
        slot.poison = Some(m.poison);
        if let Some(r) = slot.route.take() {
            r.raft.do_send(StopActor);
            r.fsm.do_send(StopActor);
            r.snapshot.do_send(StopActor);
        }
    }
}

impl Handler<Status> for NodeActor {
    type Result = ResponseFuture<Vec<GroupStatus>>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        type Row = (GroupId, Option<GroupRoute>, SlotState, u32, Option<Poison>);
        let routes: Vec<Row> = self
            .groups
            .iter()
            .map(|(g, s)| {
                let poison = s.poison.clone();
                (*g, s.route.clone(), s.state, s.total_restarts, poison)
            })
            .collect();
        Box::pin(async move {
            // Asked of every group at once: with thousands of groups, one
            // busy group must not hold up the answer for the others.
            let asked = futures_util::future::join_all(routes.iter().map(|row| {
                let route = row.1.clone();
                async move {
                    match route {
                        Some(r) => r.raft.send(GetStatus).await.ok(),
                        None => None,
                    }
                }
            }))
            .await;
            let mut out = Vec::with_capacity(routes.len());
            for ((group, _, state, restarts, poison), status) in routes.into_iter().zip(asked) {
                out.push(status.unwrap_or(GroupStatus {
                    group,
                    role: format!("{state:?}"),
                    term: 0,
                    leader: None,
                    last_index: 0,
                    commit: 0,
                    // Everything before the poisoned entry was applied.
                    applied: poison.as_ref().map_or(0, |p| p.index.saturating_sub(1)),
                    restarts,
                    rejoining: false,
                    followers_lost_state: 0,
                    poison,
                    transfer_to: None,
                    voters: Vec::new(),
                    learners: Vec::new(),
                    progress: Vec::new(),
                }));
            }
            out
        })
    }
}

impl Handler<StopAll> for NodeActor {
    type Result = ();

    fn handle(&mut self, _: StopAll, _: &mut Context<Self>) {
        self.stop_all();
    }
}

impl NodeActor {
    /// Stops every group for good (shutdown, or a failed log).
    fn stop_all(&mut self) {
        for (group, slot) in self.groups.iter_mut() {
            if slot.state == SlotState::Poisoned {
                continue; // already stopped; keeps saying why
            }
            slot.state = SlotState::Failed;
            self.routes.remove(*group);
            if let Some(r) = slot.route.take() {
                r.raft.do_send(StopActor);
                r.fsm.do_send(StopActor);
                r.snapshot.do_send(StopActor);
            }
        }
    }
}

impl Handler<ForceVoters> for NodeActor {
    type Result = ResponseActFuture<Self, Result<Membership, RequestError>>;

    fn handle(&mut self, m: ForceVoters, _: &mut Context<Self>) -> Self::Result {
        let group = m.group;
        let route = match self.routes.running(group) {
            Ok(r) => r,
            Err(e) => return Box::pin(async move { Err(e) }.into_actor(self)),
        };
        let node = self.shared.node_id;
        Box::pin(
            async move {
                route
                    .raft
                    .send(crate::group::ForceVoters(m.voters))
                    .await
                    .map_err(|_| RequestError::Restarting(group))?
            }
            .into_actor(self)
            .map(move |r, act, _| {
                let f = r?;
                let m = f.membership.clone();
                act.catalog
                    .set_forced(group, Some(f))
                    .map_err(|e| RequestError::CannotHost {
                        group,
                        node,
                        reason: format!(
                            "the voters were forced in memory but could not be recorded ({e}); \
                             run the command again before this node restarts"
                        ),
                    })?;
                Ok(m)
            }),
        )
    }
}

impl Handler<ForcedRetired> for NodeActor {
    type Result = ();

    fn handle(&mut self, ForcedRetired(group): ForcedRetired, _: &mut Context<Self>) {
        match self.catalog.set_forced(group, None) {
            Ok(()) => info!(self.log, "the forced configuration is in the group's log now; \
                                       the catalog forgets it"; "group" => group),
            Err(e) => warn!(self.log, "cannot update the catalog; the next start gives the core \
                                       the forced configuration again, which retires it at \
                                       once"; "group" => group, "error" => %e),
        }
    }
}
