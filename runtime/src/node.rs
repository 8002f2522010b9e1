//! [`Node`]: one member of a cluster, hosting replicas of many groups, and
//! [`ReplicatedAddr`], the typed handle to a replicated actor.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use synod_actors::{
    Engine, EngineConfig, GroupStatus, Listen, Membership, MembershipInfo, NodeStats, Placement,
    StateMachine,
};
use synod_core::NodeId;
use synod_storage::GroupId;

use crate::actor::{
    envelope, Handler, Handlers, Message, Query, QueryHandler, ReplicatedActor, Typed,
};
use crate::config::NodeConfig;
use crate::error::{StartError, SynodError};

/// A running node.
#[derive(Clone)]
pub struct Node {
    engine: Engine,
    id: NodeId,
}

impl Node {
    /// Starts a node from a validated config: opens its WAL and snapshot
    /// store, binds its QUIC endpoint, connects to its peers. Call it
    /// inside an actix `System` (e.g. `#[actix::main]`). Groups are then
    /// spawned with [`Node::spawn_replicated`].
    pub async fn start(config: NodeConfig, logger: slog::Logger) -> Result<Node, StartError> {
        config.validate()?;
        let tls = config.load_tls()?;
        let engine_cfg = EngineConfig {
            node_id: config.id,
            peers: config.peers.iter().map(|p| (p.id, p.addr)).collect(),
            tls,
            data_dir: config.data_dir.clone(),
            group: config.group_config(),
            seed: boot_seed(config.id),
            max_frame_bytes: synod_net::frame::DEFAULT_MAX_FRAME,
            logger,
            disk_faults: None,
        };
        let placement = Placement::Threads {
            listen: Listen::Addr(config.listen),
            wal: config.wal_options(),
            net_thread: config.net.own_thread,
        };
        let engine = Engine::start(engine_cfg, placement).await?;
        Ok(Node {
            engine,
            id: config.id,
        })
    }

    /// Marks the data directory of `config` as a NEW node's, before its
    /// first start (what `synod init` does). A node started on an empty
    /// directory without it is treated as one that lost its disk: it votes
    /// for nobody until a leader caught it up, so a brand-new cluster whose
    /// nodes were not initialized elects no leader. Refuses a directory
    /// that already holds state.
    pub fn init_new(config: &NodeConfig) -> Result<(), StartError> {
        synod_actors::identity::Identity::init_new(&config.data_dir, config.id)
            .map_err(|e| StartError::Engine(e.into()))
    }

    /// Wraps a started engine (the simulation builds engines itself).
    /// Test harness only: feature `testing`.
    #[cfg(feature = "testing")]
    pub fn from_engine(engine: Engine) -> Node {
        let id = engine.node_id();
        Node { engine, id }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The engine underneath (fault injection, internals). Test harness
    /// only: feature `testing`; [`Node::status`] and [`Node::stats`] are
    /// the public view.
    #[cfg(feature = "testing")]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Hosts this node's replica of `group`, a replicated `A` starting as
    /// `initial`. Call it on every node of the cluster with the same group
    /// id and actor type. If the group has state on disk (a restart), the
    /// replica resumes from it and `initial` is only the starting point
    /// before the latest snapshot and the log are replayed.
    pub async fn spawn_replicated<A>(
        &self,
        group: GroupId,
        initial: A,
    ) -> Result<ReplicatedAddr<A>, StartError>
    where
        A: ReplicatedActor + Clone + Sync,
    {
        self.spawn_replicated_with(group, move || initial.clone())
            .await
    }

    /// Like [`Node::spawn_replicated`], for a group whose voters are
    /// `voters` (say 3 of 5 nodes) rather than every node. Call it on every
    /// node with the same arguments: the voters host the group; the other
    /// nodes neither store nor tick it, but can host it once added as a
    /// learner ([`ReplicatedAddr::add_learner`]). The configuration a group
    /// started from is recorded on each node; later changes live in its
    /// log, so `voters` need not follow them (pass the original set).
    pub async fn spawn_replicated_on<A>(
        &self,
        group: GroupId,
        voters: &[NodeId],
        initial: A,
    ) -> Result<ReplicatedAddr<A>, StartError>
    where
        A: ReplicatedActor + Clone + Sync,
    {
        let members = Some(Membership::with_voters(voters.iter().copied()));
        self.spawn_inner(group, members, move || initial.clone())
            .await
    }

    /// Like [`Node::spawn_replicated`], with a function making the initial
    /// state (for actors that are not `Clone`).
    pub async fn spawn_replicated_with<A, F>(
        &self,
        group: GroupId,
        initial: F,
    ) -> Result<ReplicatedAddr<A>, StartError>
    where
        A: ReplicatedActor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.spawn_inner(group, None, initial).await
    }

    async fn spawn_inner<A, F>(
        &self,
        group: GroupId,
        members: Option<Membership>,
        initial: F,
    ) -> Result<ReplicatedAddr<A>, StartError>
    where
        A: ReplicatedActor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        let factory = factory_of(initial)?;
        self.engine.create_group_on(group, factory, members).await?;
        Ok(self.replicated(group))
    }

    /// Makes `A` (starting as `initial`) this node's *service*: the actor
    /// type of the groups created at run time ([`Node::create_group`],
    /// [`crate::Client::create_group`], `synod group create`) that list
    /// this node among their voters, and of a replica this node is added to
    /// (as a learner) whose group the application did not spawn here.
    /// `synod node` serves [`crate::kv::KvStore`].
    ///
    /// It also starts again the groups created at run time that this node
    /// hosts (its catalog, `data_dir/GROUPS`, records them durably, so a
    /// restarted node brings back exactly those) and returns their ids;
    /// each serves once it has started. Call it once per start, **after**
    /// spawning the application's own groups (their ids and the run-time
    /// ones are one name space). A node without a service answers a
    /// create that names it with [`SynodError::NoGroupService`].
    pub async fn serve_groups_of<A>(&self, initial: A) -> Result<Vec<GroupId>, StartError>
    where
        A: ReplicatedActor + Clone + Sync,
    {
        let factory = factory_of(move || initial.clone())?;
        Ok(self.engine.serve_groups(factory).await)
    }

    /// Creates `group` at run time, cluster-wide, with the bootstrap voters
    /// `voters` (say `&[1, 2, 3]` of five nodes; this node need not be one
    /// of them): every voter hosts a replica of its service type (see
    /// [`Node::serve_groups_of`]) and they elect a leader; the other nodes
    /// neither store nor tick the group. Returns once every voter hosts its
    /// replica; then send to it with [`Node::replicated`] or a
    /// [`crate::Client`].
    ///
    /// Idempotent: creating a group that exists with the same voters
    /// succeeds. Errors: [`SynodError::GroupExists`] (other voters),
    /// [`SynodError::GroupRemoved`] (the id was deleted: ids are not
    /// reused), [`SynodError::NoGroupService`], [`SynodError::UnknownNode`],
    /// [`SynodError::BadChange`] (no voters, node 0),
    /// [`SynodError::CannotHost`] (a voter initialized with `synod init
    /// --join`, or a disk error), [`SynodError::MemberUnreachable`] (a voter
    /// was down: the others host the group; call again once it is up).
    pub async fn create_group(&self, group: GroupId, voters: &[NodeId]) -> Result<(), SynodError> {
        Ok(self.engine.create_service_group(group, voters).await?)
    }

    /// Deletes `group` cluster-wide: every node that hosts a replica stops
    /// it and deletes its log entries and snapshots, and records the group
    /// as removed, so no restart brings it back; requests for it then fail
    /// with [`SynodError::GroupRemoved`], and so does creating the id again
    /// (ids are not reused). Works for any group (a spawned one too: the
    /// application's `spawn` at the next boot then starts nothing).
    ///
    /// Idempotent: deleting a group that does not exist (any more)
    /// succeeds. [`SynodError::MemberUnreachable`] names a node that may
    /// hold a replica and was down: call again once it is up.
    pub async fn delete_group(&self, group: GroupId) -> Result<(), SynodError> {
        Ok(self.engine.delete_group(group).await?)
    }

    /// The typed address of `group` on this node, an `A` (a group created
    /// at run time, say). Nothing is checked here: a request for a group
    /// this node does not host is forwarded nowhere and fails with
    /// [`SynodError::NoSuchGroup`] (use a [`crate::Client`] to reach a
    /// group wherever it is).
    pub fn replicated<A: ReplicatedActor>(&self, group: GroupId) -> ReplicatedAddr<A> {
        ReplicatedAddr {
            engine: self.engine.clone(),
            group,
            timeout: None,
            _actor: PhantomData,
        }
    }

    /// Every group hosted here, as this node sees it.
    pub async fn status(&self) -> Vec<GroupStatus> {
        self.engine.status().await
    }

    /// This node's counters.
    pub fn stats(&self) -> NodeStats {
        self.engine.stats()
    }

    /// Hands the leadership of `group` to node `to` (Raft thesis §3.10),
    /// for instance before taking the current leader down for
    /// maintenance, and returns once `to` leads. See
    /// [`ReplicatedAddr::transfer_leader`].
    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<(), SynodError> {
        Ok(self.engine.transfer_leader(group, to).await?)
    }

    /// Why this node stopped serving, once a write to its log failed (see
    /// [`Engine::failure`]).
    pub fn failure(&self) -> Option<String> {
        self.engine.failure()
    }

    /// Waits until a write to this node's log fails and says why. The node
    /// then serves nothing more; exit the process (non-zero) and restart it
    /// after checking the disk: it recovers from what is on disk.
    pub async fn failed(&self) -> String {
        self.engine.failed().await
    }

    /// Stops every group and closes the connections.
    pub async fn shutdown(&self) {
        self.engine.shutdown().await;
    }
}

/// The state machine factory of actor `A`, each starting as `initial()`.
fn factory_of<A, F>(initial: F) -> Result<synod_actors::StateMachineFactory, StartError>
where
    A: ReplicatedActor,
    F: Fn() -> A + Send + Sync + 'static,
{
    let handlers = Arc::new(Handlers::<A>::collect());
    if let Some(name) = handlers.duplicates().first() {
        return Err(StartError::DuplicateMessage {
            actor: std::any::type_name::<A>(),
            name,
        });
    }
    if let Some(name) = handlers.reserved() {
        return Err(StartError::ReservedMessage {
            actor: std::any::type_name::<A>(),
            name,
        });
    }
    Ok(Arc::new(move || {
        Box::new(Typed::new(initial(), Arc::clone(&handlers))) as Box<dyn StateMachine>
    }))
}

/// A seed for the election timers that differs per node and per boot.
fn boot_seed(id: NodeId) -> u64 {
    synod_actors::identity::boot_random(id)
}

/// The typed address of a replicated actor, valid on the node that spawned
/// it. Messages sent through it are committed by the group (forwarded to
/// the leader when this node is not), then handled on every replica; the
/// caller gets the handler's result from the replica that proposed it.
pub struct ReplicatedAddr<A> {
    engine: Engine,
    group: GroupId,
    /// Per-handle deadline of `send`, `read` and `read_lease` (see
    /// [`ReplicatedAddr::with_timeout`]); `None`: the node's own.
    timeout: Option<Duration>,
    _actor: PhantomData<fn() -> A>,
}

impl<A> Clone for ReplicatedAddr<A> {
    fn clone(&self) -> Self {
        ReplicatedAddr {
            engine: self.engine.clone(),
            group: self.group,
            timeout: self.timeout,
            _actor: PhantomData,
        }
    }
}

impl<A: ReplicatedActor> ReplicatedAddr<A> {
    /// The group this actor is replicated by.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The same address, whose `send`, `read` and `read_lease` give up
    /// after `timeout` with [`SynodError::Timeout`] (for `send`: the
    /// command may still be applied). Without it they wait up to the
    /// node's `propose_timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> ReplicatedAddr<A> {
        ReplicatedAddr {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// Who leads the group as this node's replica sees it, and every
    /// change of it: the leadership hook. `borrow()` is the current view;
    /// `changed().await` waits for the next (becoming leader, stepping
    /// down, a new leader elsewhere). Start work that only the leader
    /// should do (timers, pushing to other systems) when `is_leader`
    /// turns true, stop it when it turns false: a replica may believe it
    /// leads a little after a newer leader was elected elsewhere, so such
    /// work must tolerate overlap (or go through the group: a command is
    /// refused by a deposed leader).
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<crate::Leadership> {
        self.engine.leadership(self.group)
    }

    /// Runs `call` within this handle's deadline, if it has one, and
    /// decodes its answer.
    async fn timed<R: serde::de::DeserializeOwned>(
        &self,
        call: impl std::future::Future<Output = Result<Bytes, synod_actors::RequestError>>,
    ) -> Result<R, SynodError> {
        let out = match self.timeout {
            None => call.await?,
            Some(t) => tokio::time::timeout(t, call)
                .await
                .map_err(|_| SynodError::Timeout { group: self.group })??,
        };
        rmp_serde::from_slice(&out).map_err(|e| SynodError::Codec(e.to_string()))
    }

    /// Sends a command and returns the handler's result once the command is
    /// committed and applied. On `Timeout` or `Stopped` the command may or
    /// may not have been applied.
    pub async fn send<M: Message>(&self, msg: M) -> Result<M::Result, SynodError>
    where
        A: Handler<M> + crate::Registered<M>,
    {
        let payload = envelope(M::NAME, &msg).map_err(SynodError::Codec)?;
        self.timed(self.engine.command(self.group, Bytes::from(payload)))
            .await
    }

    /// The changes this node's replica applies from revision `from` on
    /// (`None`: after what it has applied now), in order, with their
    /// results: see [`crate::watch`]. The replica here serves it, leader or
    /// follower; decode each with [`crate::Change::message`].
    pub async fn subscribe(&self, from: Option<u64>) -> Result<crate::watch::Watch, SynodError> {
        crate::watch::Watch::local(self.engine.clone(), self.group, from).await
    }

    /// Runs a query on this node's own replica, without going through the
    /// log: fast, but possibly stale (a follower may lag the leader).
    pub async fn read_local<Q: Query>(&self, query: Q) -> Result<Q::Result, SynodError>
    where
        A: QueryHandler<Q> + crate::Registered<Q>,
    {
        let payload = envelope(Q::NAME, &query).map_err(SynodError::Codec)?;
        let out = self
            .engine
            .local_read(self.group, Bytes::from(payload))
            .await?;
        rmp_serde::from_slice(&out).map_err(|e| SynodError::Codec(e.to_string()))
    }

    /// Runs a query linearizably, without a log entry (ReadIndex, Raft
    /// thesis §6.4): it sees every command acknowledged before it was
    /// sent. On the leader, one heartbeat round (shared by the reads that
    /// arrive together) confirms it still leads; on a follower, the leader
    /// confirms its commit index and the query runs here once this replica
    /// applied that far (a follower read). A read changes nothing: any
    /// error is safe to retry.
    pub async fn read<Q: Query>(&self, query: Q) -> Result<Q::Result, SynodError>
    where
        A: QueryHandler<Q> + crate::Registered<Q>,
    {
        let payload = envelope(Q::NAME, &query).map_err(SynodError::Codec)?;
        self.timed(self.engine.read(self.group, Bytes::from(payload)))
            .await
    }

    /// Like [`ReplicatedAddr::read`], but a leader whose leadership a
    /// quorum confirmed less than a lease ago (the election timeout less a
    /// fifth, from when it sent that round) answers without a round (Raft
    /// thesis §6.4.1). Needs `raft.lease_reads = true` on every node, else
    /// it is [`ReplicatedAddr::read`]. It assumes bounded clock drift: no
    /// node's clock may run faster than the leader's by more than a fifth
    /// over an election timeout, or a read can miss a newer leader's
    /// writes.
    pub async fn read_lease<Q: Query>(&self, query: Q) -> Result<Q::Result, SynodError>
    where
        A: QueryHandler<Q> + crate::Registered<Q>,
    {
        let payload = envelope(Q::NAME, &query).map_err(SynodError::Codec)?;
        self.timed(self.engine.read_lease(self.group, Bytes::from(payload)))
            .await
    }

    /// Hands the group's leadership to node `to` (Raft thesis §3.10) and
    /// returns once `to` leads, as this node sees it; at once if it
    /// already does. Any node may ask (a follower forwards to the leader).
    ///
    /// The leader first brings `to`'s log up to date, then tells it to
    /// start an election, which it wins in the next term. Meanwhile the
    /// leader refuses commands with `NotLeader` naming `to` (nothing was
    /// proposed, safe to retry; [`ReplicatedAddr::send`] waits for the new
    /// leader by itself). Errors: [`SynodError::NotAVoter`] (no such
    /// member: nothing changed), [`SynodError::TransferInProgress`]
    /// (another transfer runs: retry after an election timeout),
    /// [`SynodError::TransferFailed`] (`to` did not get elected before the
    /// propose timeout: it is down, cut off, rejoining or far behind; a
    /// leader gives a transfer up after one election timeout and this call
    /// starts it again until then), or the usual `Busy`/`NoSuchGroup`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), SynodError> {
        Ok(self.engine.transfer_leader(self.group, to).await?)
    }

    /// The group's configuration: voters, learners, leader, and the index
    /// of the configuration's entry (from the leader when this node knows
    /// it).
    pub async fn membership(&self) -> Result<MembershipInfo, SynodError> {
        Ok(self.engine.membership(self.group).await?)
    }

    /// Adds node `node` as a learner: it receives the log (a snapshot
    /// first when it is far behind) but does not vote. The node must be
    /// one of the cluster's configured nodes and must know the group (its
    /// application spawned it there too, e.g. with
    /// [`Node::spawn_replicated_on`] naming other voters); it then hosts an
    /// empty replica that catches up. Returns the new configuration once
    /// the leader applied the change. Idempotent. Errors:
    /// [`SynodError::UnknownNode`], [`SynodError::CannotHost`],
    /// [`SynodError::BadChange`] (already a voter), or
    /// [`SynodError::ChangeInProgress`] once the deadline passed while
    /// other changes kept the group busy (safe to retry).
    pub async fn add_learner(&self, node: NodeId) -> Result<MembershipInfo, SynodError> {
        Ok(self.engine.add_learner(self.group, node).await?)
    }

    /// Makes learner `node` a voter once its log is close to the leader's
    /// (waits for that until the propose timeout, then
    /// [`SynodError::LearnerBehind`], safe to retry). Idempotent.
    pub async fn promote(&self, node: NodeId) -> Result<MembershipInfo, SynodError> {
        Ok(self.engine.promote(self.group, node).await?)
    }

    /// Removes voter or learner `node` (the leader included: it steps down
    /// once the change commits) and deletes its replica on that node (log
    /// and snapshots). Refused for the last voter
    /// ([`SynodError::NoQuorumLeft`]). If the removed node could not be
    /// reached, the change stands and [`SynodError::CannotHost`] says its
    /// replica is still there: call again once it is up. Idempotent.
    pub async fn remove_member(&self, node: NodeId) -> Result<MembershipInfo, SynodError> {
        Ok(self.engine.remove_member(self.group, node).await?)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::actor::{ApplyContext, Handler, Handlers};

    #[derive(Default, Serialize, Deserialize)]
    struct Thief;

    #[derive(Serialize, Deserialize)]
    struct Fake;
    impl Message for Fake {
        type Result = ();
        const NAME: &'static str = "synod.session";
    }

    impl Handler<Fake> for Thief {
        fn handle(&mut self, _: Fake, _: &ApplyContext) {}
    }

    impl ReplicatedActor for Thief {
        fn register(h: &mut Handlers<Self>) {
            h.command::<Fake>();
        }
    }

    /// A message may not take a name of Synod's own entries: a client
    /// session's envelope would reach it, or it would read as one.
    #[test]
    fn an_actor_cannot_register_a_reserved_message_name() {
        match factory_of(|| Thief) {
            Err(StartError::ReservedMessage { name, .. }) => assert_eq!(name, "synod.session"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a reserved name was accepted"),
        }
    }
}
