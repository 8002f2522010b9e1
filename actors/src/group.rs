//! RaftGroup: one per group per node. It owns the group's pure Raft core,
//! drives its clock, feeds it inbound messages and proposals, and carries
//! out every Ready in the order the core's contract demands:
//!
//! ```text
//!  Tick / Inbound / Propose ──► core ──► Ready
//!     1. messages ──────────────────────► Replicators (leader) / transport
//!     0. snapshot to adopt ──────────────► FsmCaller: Restore (queued after earlier Applies)
//!     2. hard state + entries ───────────► LogWriter (group commit with every other group)
//!     3. when durable (Persisted, in order): core.on_persisted, then the Ready's
//!        persisted messages (votes, acknowledgements) ──► transport
//!     4. committed entries ──────────────► FsmCaller: Apply ──► Applied ──► core.on_applied
//!     5. read states (ReadIndex) ────────► FsmCaller: ReadAt, served once applied that far
//! ```
//!
//! Up to `max_inflight_writes` Readies may have writes in flight; their
//! completions arrive in order (one log writer per node). Readies are
//! taken after the mailbox drained (a scheduled `ProcessReady`), so all the
//! proposals and messages that arrived meanwhile share one append, one
//! message per follower and one disk write.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};
use slog::{crit, info, warn, Logger};
use synod_core::{
    ConfChange, ConfChangeError, HardState, Index, Message, MessageBody, NodeId, ProposeError,
    Raft, ReadError, Ready, Role, SoftState, Term, TransferError,
};
use synod_storage::{GroupId, StorageError, WriteBatch};

use crate::fsm::{Apply, FsmCaller, ReadAt, Register, Reply, Restore};
use crate::node::{CaughtUp, ForcedRetired};
use crate::proto::{GroupStatus, MemberProgress, MembershipInfo, RaftItem, RequestError};
use crate::replicator::{Outbound, Replicator, StopReplicator};
use crate::shared::{DeathGuard, NodeShared};
use crate::state_machine::ENTRY_COMMAND;

/// Logical time passes (sent by the node clock, `crate::clock`, to the
/// groups that are awake), with the peer nodes that are down now.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Tick {
    /// Peer nodes silent for an election timeout (sorted).
    pub(crate) down: Arc<[NodeId]>,
}

/// The node clock found the node of this group's leader silent for
/// `silent` ticks: wake a quiesced follower so that it elects a leader.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake {
    /// The silent node (this node itself: a peer came back, so the groups
    /// led here heartbeat it once).
    pub(crate) peer: NodeId,
    pub(crate) silent: u64,
}

/// Carry out what the core has ready (scheduled after the mailbox drains).
#[derive(Message)]
#[rtype(result = "()")]
struct ProcessReady;

/// Raft messages for this group from a peer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound(pub Vec<Message>);

/// Propose a command; the answer goes to `reply` once applied. (Reads
/// no longer go through the log: see [`Read`].)
#[derive(Message)]
#[rtype(result = "()")]
pub struct Propose {
    /// The encoded command.
    pub payload: Bytes,
    /// Where the result goes.
    pub reply: Reply,
}

/// A linearizable read without a log entry (ReadIndex, thesis §6.4): at
/// the leader, one heartbeat round confirms the leadership for every read
/// of a Ready; at a follower, the leader's confirmed index comes back and
/// the query runs here (a follower read). The answer goes to `reply` once
/// the state machine has applied up to the read index.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Read {
    /// The encoded query.
    pub query: Bytes,
    /// Under the leader's lease when it runs (`Raft::read_lease`).
    pub lease: bool,
    /// Where the result goes.
    pub reply: Reply,
}

/// A write of this group became durable (or failed).
#[derive(Message)]
#[rtype(result = "()")]
struct Persisted {
    seq: u64,
    result: Result<(), StorageError>,
}

/// The FsmCaller applied up to this index.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Applied(pub Index);

/// A snapshot at `index` is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotSaved {
    /// Its index.
    pub index: Index,
}

/// Step a leader's InstallSnapshot message whose data is now stored here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StepSnapshot(pub Message);

/// How a snapshot transfer to follower `to` went.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportSnapshot {
    /// The follower.
    pub to: NodeId,
    /// The snapshot's index.
    pub index: Index,
    /// Whether the follower stored it.
    pub ok: bool,
}

/// The group's state as this node sees it.
#[derive(Message)]
#[rtype(result = "GroupStatus")]
pub struct GetStatus;

/// Start handing this replica's leadership to voter `to` (Raft thesis
/// §3.10). Answers once the core accepted or refused; the transfer itself
/// finishes (or is given up) within an election timeout: watch
/// [`GroupStatus::leader`] and [`GroupStatus::transfer_to`].
#[derive(Message)]
#[rtype(result = "Result<(), RequestError>")]
pub struct TransferLeader {
    /// The voter that should lead.
    pub to: NodeId,
}

/// Propose a configuration change (the core's single-server rule); the
/// answer goes to `reply` once the change's entry is applied here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChangeMembership {
    /// The change.
    pub change: ConfChange,
    /// Where the outcome goes (an empty result once applied).
    pub reply: Reply,
}

/// The group's configuration as this replica sees it.
#[derive(Message)]
#[rtype(result = "MembershipInfo")]
pub struct GetMembership;

/// Unsafe recovery: force `voters` on this replica (`Raft::force_voters`).
/// Answers the override (to record in the catalog).
#[derive(Message)]
#[rtype(result = "Result<synod_core::ForcedVoters, RequestError>")]
pub struct ForceVoters(pub std::collections::BTreeSet<NodeId>);

/// Test hook: make this actor panic. The handler first sends on
/// `delivered`, so the injector knows the panic is about to happen in this
/// very actor (a dropped sender means it never ran: the actor was gone).
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic {
    /// Acknowledges that the handler ran, just before it panics.
    pub delivered: tokio::sync::oneshot::Sender<()>,
}

/// Late wiring: the FsmCaller exists only once this actor's address does.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetFsm(pub Addr<FsmCaller>);

/// A Ready's write on its way to disk, with what waits for it.
struct InflightWrite {
    seq: u64,
    up_to: Option<(Index, Term)>,
    messages: Vec<Message>,
}

/// What a RaftGroup tells the rest of the node: its supervisor (caught
/// up after a lost disk; a forced configuration retired) and the engine
/// (the leader it believes in).
pub(crate) struct Links {
    pub(crate) caught_up: Recipient<CaughtUp>,
    pub(crate) retired: Recipient<ForcedRetired>,
    pub(crate) leader_hint: Arc<std::sync::atomic::AtomicU64>,
}

/// The RaftGroup actor.
pub struct RaftGroup {
    group: GroupId,
    raft: Raft,
    shared: Arc<NodeShared>,
    fsm: Option<Addr<FsmCaller>>,
    replicators: BTreeMap<NodeId, Addr<Replicator>>,
    /// Whether the core led at the last Ready.
    leading: bool,
    inflight: VecDeque<InflightWrite>,
    next_seq: u64,
    ready_scheduled: bool,
    /// Snapshots saved, newest last: the log is compacted to the older.
    snapshots: VecDeque<Index>,
    /// The hard state last handed to the log writer.
    durable_hs: HardState,
    /// A newer hard state differing only in commit, written with the next
    /// write.
    lazy_hs: Option<HardState>,
    restarts: u32,
    failed: bool,
    /// The supervisor, told once the core leaves its rejoining mode.
    caught_up: Option<Recipient<CaughtUp>>,
    /// The supervisor, told once the core retired a forced configuration.
    retired: Recipient<ForcedRetired>,
    /// A forced configuration is in effect (unsafe recovery).
    forced_outstanding: bool,
    /// The leader this replica believes in (0: none), for the engine.
    leader_hint: Arc<std::sync::atomic::AtomicU64>,
    /// Leader: followers found to have lost their state, as last logged.
    lost_logged: u64,
    /// Snapshot files older than this were deleted (see
    /// [`RaftGroup::prune_snapshots`]).
    pruned_below: Index,
    /// Reads waiting for the core's read index, by request id.
    reads: BTreeMap<u64, (Bytes, Reply)>,
    next_read: u64,
    /// This incarnation's id in the node clock's set of awake groups.
    tick_id: u64,
    /// Whether the node clock ticks this group (it is not quiesced).
    ticking: bool,
    /// The node clock when it last stopped ticking this group (or when
    /// its core last learned of the time missed since).
    slept_at: u64,
    log: Logger,
    _guard: DeathGuard,
}

impl RaftGroup {
    pub(crate) fn new(
        group: GroupId,
        raft: Raft,
        shared: Arc<NodeShared>,
        latest_snapshot: Option<Index>,
        restarts: u32,
        guard: DeathGuard,
        links: Links,
    ) -> Self {
        let Links {
            caught_up,
            retired,
            leader_hint,
        } = links;
        let log = shared.log.new(slog::o!("group" => group));
        if raft.rejoining() {
            warn!(
                log,
                "this node booted on an empty data directory (a lost disk?): until a leader \
                 caught this group up, it votes for nobody"
            );
        }
        let caught_up = raft.rejoining().then_some(caught_up);
        let forced_outstanding = raft.forced_voters().is_some();
        let durable_hs = raft.hard_state();
        RaftGroup {
            group,
            raft,
            shared,
            fsm: None,
            replicators: BTreeMap::new(),
            leading: false,
            inflight: VecDeque::new(),
            next_seq: 0,
            ready_scheduled: false,
            snapshots: latest_snapshot.into_iter().collect(),
            durable_hs,
            lazy_hs: None,
            restarts,
            failed: false,
            pruned_below: 0,
            reads: BTreeMap::new(),
            next_read: 0,
            caught_up,
            retired,
            forced_outstanding,
            leader_hint,
            lost_logged: 0,
            tick_id: 0,
            ticking: false,
            slept_at: 0,
            log,
            _guard: guard,
        }
    }

    /// Whether this group must do nothing more: true once the node's log
    /// failed (checked before every step, send and acknowledgement). A
    /// failed write is fatal for the whole node: what memory holds may not
    /// be on disk, so nothing may be acknowledged, voted or answered from
    /// it; the group stops and the supervisor does not rebuild it.
    fn halted(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.failed {
            return true;
        }
        if let Some(reason) = self.shared.log_writer.failure() {
            crit!(self.log, "the node's log failed; the group stops and answers nothing more";
                  "error" => reason);
            self.halt(ctx);
            return true;
        }
        false
    }

    /// Stops the group for good (`stopped` stops its Replicators).
    fn halt(&mut self, ctx: &mut Context<Self>) {
        self.failed = true;
        ctx.stop();
    }

    /// Deletes the snapshot files this group can no longer need: those
    /// older than both the snapshot its core's log is compacted to (the one
    /// a lagging follower is sent) and what its state machine applied (a
    /// queued Restore still reads its file). Newer files stay: the newest
    /// own snapshot (the next compaction point) and snapshots streamed here
    /// that the core has not stepped yet. A transfer that already opened
    /// its file keeps reading it after the unlink (POSIX semantics).
    fn prune_snapshots(&mut self) {
        let log = self.raft.log();
        let below = log.snapshot().index.min(log.applied());
        if below <= self.pruned_below {
            return;
        }
        self.pruned_below = below;
        if let Err(e) = self.shared.snapshots.delete_below(self.group, below) {
            warn!(self.log, "deleting old snapshots failed (only disk space is at stake)";
                        "below" => below, "error" => %e);
        }
    }

    /// A quiesced core is not ticked: before it gets any input, it learns
    /// the ticks it missed and how long ago its leader's node was last
    /// heard (see `crate::clock`).
    fn catch_up_clock(&mut self) {
        if self.ticking || !self.raft.quiesced() {
            return;
        }
        let now = self.shared.liveness.now();
        let leader = self.raft.leader_id().filter(|&l| l != self.shared.node_id);
        let silent = leader.and_then(|l| self.shared.liveness.silent(l));
        self.raft.elapse(now.saturating_sub(self.slept_at), silent);
        self.slept_at = now;
    }

    /// This replica's turn to campaign among the group's voters (but
    /// `gone`), counting from 0: the order is rotated by group id, so the
    /// first campaigners, and so the leaders, spread evenly over the
    /// nodes. `None` for a non-voter.
    fn campaign_turn(&self, gone: Option<NodeId>) -> Option<u32> {
        let me = self.shared.node_id;
        let voters: Vec<NodeId> = self
            .raft
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|&v| Some(v) != gone)
            .collect();
        let pos = voters.iter().position(|&v| v == me)?;
        u32::try_from((pos + self.group as usize) % voters.len()).ok()
    }

    /// Keeps the node clock ticking exactly the awake groups.
    fn sync_ticking(&mut self, ctx: &mut Context<Self>) {
        let quiesced = self.raft.quiesced() && !self.failed;
        if quiesced && self.ticking {
            self.shared.ticking.remove(self.group, self.tick_id);
            self.ticking = false;
            self.slept_at = self.shared.liveness.now();
            // A Quiesce that arrived after the clock found the leader's
            // node silent (and sent its Wake) must not put this follower
            // to sleep for good.
            let me = self.shared.node_id;
            if let Some(leader) = self.raft.leader_id().filter(|&l| l != me) {
                let silent = self.shared.liveness.silent(leader).unwrap_or(0);
                if silent >= u64::from(self.shared.cfg.election_ticks) {
                    ctx.notify(Wake {
                        peer: leader,
                        silent,
                    });
                }
            }
        } else if !quiesced && !self.ticking && !self.failed {
            self.catch_up_clock();
            self.shared
                .ticking
                .insert(self.group, self.tick_id, ctx.address());
            self.ticking = true;
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        self.sync_ticking(ctx);
        if !self.ready_scheduled {
            self.ready_scheduled = true;
            ctx.notify(ProcessReady);
        }
    }

    fn process_ready(&mut self, ctx: &mut Context<Self>) {
        self.ready_scheduled = false;
        if self.halted(ctx) || self.fsm.is_none() {
            // Not wired yet: committed entries must not go nowhere.
            return;
        }
        while self.inflight.len() < self.shared.cfg.max_inflight_writes && self.raft.has_ready() {
            let rd = self.raft.ready();
            self.carry_out(rd, ctx);
        }
        self.sync_ticking(ctx);
        self.report_to_supervisor();
    }

    /// Tells the supervisor what it tracks (a forced configuration the
    /// core retired; this replica caught up after a boot on an empty
    /// directory), and says loudly when (leading) a follower lost entries
    /// it had acknowledged.
    fn report_to_supervisor(&mut self) {
        if self.forced_outstanding && self.raft.forced_voters().is_none() {
            self.forced_outstanding = false;
            self.retired.do_send(ForcedRetired(self.group));
        }
        if !self.raft.rejoining() {
            if let Some(supervisor) = self.caught_up.take() {
                info!(
                    self.log,
                    "caught up from the leader after booting on an empty data \
                                 directory; votes normally again"
                );
                supervisor.do_send(CaughtUp(self.group));
            }
        }
        let lost = self.raft.stats().followers_lost_state;
        if lost > self.lost_logged {
            self.lost_logged = lost;
            warn!(self.log, "a follower no longer holds entries it acknowledged (a wiped or \
                             replaced disk?): repairing it from the log or a snapshot";
                  "times" => lost);
        }
    }

    fn carry_out(&mut self, mut rd: Ready, ctx: &mut Context<Self>) {
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss);
        }
        self.sync_replicators(ctx);
        // A hard state that differs from the durable one only in its commit
        // index needs no write of its own: losing a commit index is safe
        // (it is learned again from the leader), so it rides along with the
        // next write instead of costing an fsync per commit.
        if let Some(hs) = rd.hard_state {
            if (hs.term, hs.vote) == (self.durable_hs.term, self.durable_hs.vote) {
                self.lazy_hs = Some(hs);
                rd.hard_state = None;
            }
        }
        let must_persist = rd.must_persist();
        let up_to = rd.persist_up_to();
        self.send(rd.messages);
        if let (Some(snap), Some(fsm)) = (rd.snapshot, &self.fsm) {
            // Queued behind every earlier Apply: the contract's step 0.
            fsm.do_send(Restore {
                index: snap.index,
                term: snap.term,
                membership: self.raft.snapshot_membership().clone(),
            });
        }
        if must_persist {
            let mut batch = WriteBatch::new();
            if let Some(snap) = rd.snapshot {
                batch.purge(self.group, snap.index + 1);
                batch.truncate(self.group, snap.index + 1);
            }
            if let Some(hs) = rd.hard_state.or(self.lazy_hs.take()) {
                batch.set_hard_state(self.group, hs);
                self.durable_hs = hs;
                self.lazy_hs = None;
            }
            batch.append(self.group, rd.entries);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.inflight.push_back(InflightWrite {
                seq,
                up_to,
                messages: rd.persisted_messages,
            });
            let me = ctx.address().recipient();
            self.shared.log_writer.write(
                batch,
                Box::new(move |result| me.do_send(Persisted { seq, result })),
            );
        } else if let Some(last) = self.inflight.back_mut() {
            // Nothing to write, but these may depend on writes in flight.
            last.messages.extend(rd.persisted_messages);
        } else {
            self.send(rd.persisted_messages);
        }
        if !rd.committed_entries.is_empty() {
            if let Some(fsm) = &self.fsm {
                fsm.do_send(Apply(rd.committed_entries));
            }
        }
        for state in rd.read_states {
            let Some((query, reply)) = self.reads.remove(&state.id) else {
                continue; // its caller gave up (see Tick)
            };
            match (state.result, &self.fsm) {
                (Ok(index), Some(fsm)) => fsm.do_send(ReadAt {
                    index,
                    query,
                    reply,
                }),
                (Ok(_), None) => {
                    let _ = reply.send(Err(RequestError::Stopped(self.group)));
                }
                (Err(ReadError::NotLeader { .. }), _) => {
                    let _ = reply.send(Err(self.not_leader()));
                }
            }
        }
    }

    fn on_soft_state(&mut self, ss: SoftState) {
        if ss.role != Role::Leader {
            // A read a follower sent to the previous leader may never be
            // answered: fail it now (a read changes nothing; retry).
            for (_, (_, reply)) in std::mem::take(&mut self.reads) {
                let _ = reply.send(Err(self.not_leader()));
            }
        }
        let leading = ss.role == Role::Leader;
        if leading && !self.leading {
            self.shared
                .counters
                .leader_changes
                .fetch_add(1, Ordering::Relaxed);
            info!(self.log, "became leader"; "term" => self.raft.term());
        } else if !leading && self.leading {
            info!(self.log, "stepped down"; "term" => self.raft.term(), "leader" => ?ss.leader_id);
            for (_, r) in std::mem::take(&mut self.replicators) {
                r.do_send(StopReplicator);
            }
        }
        self.leading = leading;
        self.leader_hint
            .store(ss.leader_id.unwrap_or(0), Ordering::Relaxed);
        self.shared.publish_leadership(
            self.group,
            crate::shared::Leadership {
                leader: ss.leader_id,
                is_leader: leading,
                term: self.raft.term(),
            },
        );
    }

    /// Leader: one Replicator per other member of the configuration in
    /// the log (members come and go with configuration entries).
    fn sync_replicators(&mut self, ctx: &mut Context<Self>) {
        if !self.leading {
            return;
        }
        let me = self.shared.node_id;
        let members = self.raft.membership();
        if self.replicators.len() == members.members().filter(|&n| n != me).count()
            && self.replicators.keys().all(|&n| members.contains(n))
        {
            return;
        }
        let gone: Vec<NodeId> = self
            .replicators
            .keys()
            .copied()
            .filter(|&n| !members.contains(n))
            .collect();
        let new: Vec<NodeId> = members
            .members()
            .filter(|&n| n != me && !self.replicators.contains_key(&n))
            .collect();
        for n in gone {
            if let Some(r) = self.replicators.remove(&n) {
                r.do_send(StopReplicator);
            }
        }
        for peer in new {
            let r = Replicator::new(self.group, peer, Arc::clone(&self.shared), ctx.address());
            self.replicators.insert(peer, r.start());
        }
    }

    /// Sends messages: through the follower's Replicator when leading,
    /// straight to the transport otherwise.
    fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let mut per_peer: BTreeMap<NodeId, Vec<Message>> = BTreeMap::new();
        for m in msgs {
            per_peer.entry(m.to).or_default().push(m);
        }
        for (to, msgs) in per_peer {
            match self.replicators.get(&to) {
                Some(r) => r.do_send(Outbound(msgs)),
                None => {
                    for msg in msgs {
                        if matches!(msg.body, MessageBody::Snapshot { .. }) {
                            continue; // only a leader sends snapshots
                        }
                        self.shared.net.send(
                            to,
                            RaftItem {
                                group: self.group,
                                msg,
                            },
                        );
                    }
                }
            }
        }
    }

    /// The error for a request this halted node cannot serve: safe to
    /// retry on another node.
    fn node_failed(&self) -> RequestError {
        let reason = self.shared.log_writer.failure().unwrap_or_default();
        RequestError::NodeFailed {
            node: self.shared.node_id,
            reason,
        }
    }

    fn not_leader(&self) -> RequestError {
        RequestError::NotLeader {
            group: self.group,
            leader: self.raft.leader_id(),
        }
    }
}

/// Entry payload: the command kind byte, then the encoded command.
fn entry_payload(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + payload.len());
    b.put_u8(ENTRY_COMMAND);
    b.extend_from_slice(payload);
    b.freeze()
}

impl Actor for RaftGroup {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.shared.cfg.mailbox);
        self.tick_id = self.shared.ticking.new_id();
        self.slept_at = self.shared.liveness.now();
        // The first election: the voters take turns too (one election
        // timeout per turn: the nodes start their thousands of groups
        // over seconds, a few hundred milliseconds apart), the first
        // rotated by group id. With random timers alone, the groups of a cold start
        // were led by whichever node's timer fired first (4,418 / 3,021 /
        // 2,561 of 10,000), and the balancer then moved about a thousand
        // leaderships under the first writes.
        if let Some(turn) = self.campaign_turn(None) {
            let e = self.shared.cfg.election_ticks;
            self.raft.campaign_within(e + turn * e);
        }
        self.sync_ticking(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.shared.ticking.remove(self.group, self.tick_id);
        // Stopped (removed, restarting, the node shutting down): it leads
        // nothing here any more.
        self.shared.publish_leadership(
            self.group,
            crate::shared::Leadership {
                leader: None,
                is_leader: false,
                term: self.raft.term(),
            },
        );
        for (_, r) in std::mem::take(&mut self.replicators) {
            r.do_send(StopReplicator);
        }
    }
}

impl Handler<SetFsm> for RaftGroup {
    type Result = ();

    fn handle(&mut self, m: SetFsm, ctx: &mut Context<Self>) {
        self.fsm = Some(m.0);
        self.schedule(ctx);
    }
}

impl Handler<Tick> for RaftGroup {
    type Result = ();

    fn handle(&mut self, Tick { down }: Tick, ctx: &mut Context<Self>) {
        if self.halted(ctx) {
            return;
        }
        self.raft.set_down(&down);
        self.raft.tick();
        // Callers that gave up (their deadline passed) free their slot.
        self.reads.retain(|_, (_, reply)| !reply.is_closed());
        if self.raft.has_ready() {
            self.schedule(ctx);
        } else {
            self.sync_ticking(ctx);
        }
    }
}

impl Handler<Wake> for RaftGroup {
    type Result = ();

    fn handle(&mut self, Wake { peer, silent }: Wake, ctx: &mut Context<Self>) {
        if self.halted(ctx) {
            return;
        }
        self.catch_up_clock();
        self.raft.wake(Some(silent));
        let me = self.shared.node_id;
        if peer != me && self.raft.leader_id() == Some(peer) {
            // The leader's node is gone. Thousands of groups lost their
            // leader at once: with random timeouts alone, the survivors of
            // many of them campaign together and split their votes. The
            // voters left take turns instead (the order rotated by group,
            // so the new leaderships spread): the first campaigns in 3
            // ticks, the next half an election timeout later if still
            // needed. Not at once: the other voters' clocks notice the
            // silence up to a tick or two later, and until then they count
            // the leader as live and refuse the (pre-)vote, which would
            // cost the group a whole election timeout.
            if let Some(turn) = self.campaign_turn(Some(peer)) {
                let step = (self.shared.cfg.election_ticks / 2).max(1);
                self.raft.campaign_within(3 + turn * step);
            }
        }
        self.schedule(ctx);
    }
}

impl Handler<ProcessReady> for RaftGroup {
    type Result = ();

    fn handle(&mut self, _: ProcessReady, ctx: &mut Context<Self>) {
        self.process_ready(ctx);
    }
}

impl Handler<Inbound> for RaftGroup {
    type Result = ();

    fn handle(&mut self, Inbound(msgs): Inbound, ctx: &mut Context<Self>) {
        self.catch_up_clock();
        if self.halted(ctx) {
            return;
        }
        for m in msgs {
            self.raft.step(m);
        }
        self.schedule(ctx);
    }
}

impl Handler<Propose> for RaftGroup {
    type Result = ();

    fn handle(&mut self, m: Propose, ctx: &mut Context<Self>) {
        self.catch_up_clock();
        if self.halted(ctx) {
            // Not proposed: safe to retry elsewhere.
            let _ = m.reply.send(Err(self.node_failed()));
            return;
        }
        match self.raft.propose(vec![entry_payload(&m.payload)]) {
            Ok(p) => {
                if let Some(fsm) = &self.fsm {
                    // Queued before the entry's Apply can be: FIFO.
                    fsm.do_send(Register {
                        index: p.first_index,
                        term: p.term,
                        reply: m.reply,
                    });
                }
                self.schedule(ctx);
            }
            Err(ProposeError::NotLeader { .. }) => {
                let _ = m.reply.send(Err(self.not_leader()));
            }
            Err(ProposeError::Busy { .. }) => {
                let _ = m.reply.send(Err(RequestError::Busy(self.group)));
            }
            Err(ProposeError::Empty) => {
                let _ = m
                    .reply
                    .send(Err(RequestError::Application("empty proposal".into())));
            }
        }
    }
}

impl Handler<Read> for RaftGroup {
    type Result = ();

    fn handle(&mut self, m: Read, ctx: &mut Context<Self>) {
        self.catch_up_clock();
        if self.halted(ctx) {
            let _ = m.reply.send(Err(self.node_failed()));
            return;
        }
        let id = self.next_read;
        self.next_read += 1;
        let asked = if m.lease {
            self.raft.read_lease(id)
        } else {
            self.raft.read_index(id)
        };
        match asked {
            Ok(()) => {
                self.reads.insert(id, (m.query, m.reply));
                self.schedule(ctx);
            }
            Err(ReadError::NotLeader { .. }) => {
                let _ = m.reply.send(Err(self.not_leader()));
            }
        }
    }
}

impl Handler<Persisted> for RaftGroup {
    type Result = ();

    fn handle(&mut self, m: Persisted, ctx: &mut Context<Self>) {
        if self.halted(ctx) {
            // Even a write that did become durable acknowledges nothing
            // now: the node is going down.
            return;
        }
        if let Err(e) = m.result {
            // Not a disk failure (that halted above) but a refused batch:
            // memory and the log disagree, a bug. Stop; the supervisor
            // rebuilds the group from the log, which is intact.
            crit!(self.log, "write refused; the group stops"; "error" => %e);
            self.halt(ctx);
            return;
        }
        let Some(w) = self.inflight.pop_front() else {
            return;
        };
        assert_eq!(
            w.seq, m.seq,
            "group {}: writes complete in order",
            self.group
        );
        if let Some((index, term)) = w.up_to {
            self.raft.on_persisted(index, term);
        }
        self.send(w.messages);
        self.schedule(ctx);
    }
}

impl Handler<Applied> for RaftGroup {
    type Result = ();

    fn handle(&mut self, Applied(index): Applied, ctx: &mut Context<Self>) {
        if index > self.raft.log().applied() && index <= self.raft.log().applying() {
            self.raft.on_applied(index);
        }
        self.prune_snapshots();
        if self.raft.has_ready() {
            self.schedule(ctx);
        }
    }
}

impl Handler<SnapshotSaved> for RaftGroup {
    type Result = ();

    fn handle(&mut self, m: SnapshotSaved, _: &mut Context<Self>) {
        self.snapshots.push_back(m.index);
        while self.snapshots.len() > 2 {
            self.snapshots.pop_front();
        }
        // Compact to the older of the two snapshots kept: followers a little
        // behind still get entries, farther ones get that snapshot.
        let Some(&older) = self.snapshots.front() else {
            return;
        };
        if self.snapshots.len() == 2 && self.raft.compact(older).is_ok() {
            let mut batch = WriteBatch::new();
            batch.purge(self.group, older + 1);
            let log = self.log.clone();
            self.shared.log_writer.write(
                batch,
                Box::new(move |r| {
                    if let Err(e) = r {
                        slog::warn!(log, "purging the log after a snapshot failed"; "error" => %e);
                    }
                }),
            );
        }
        self.prune_snapshots();
    }
}

impl Handler<StepSnapshot> for RaftGroup {
    type Result = ();

    fn handle(&mut self, StepSnapshot(m): StepSnapshot, ctx: &mut Context<Self>) {
        self.catch_up_clock();
        if self.halted(ctx) {
            return;
        }
        self.raft.step(m);
        self.schedule(ctx);
    }
}

impl Handler<ReportSnapshot> for RaftGroup {
    type Result = ();

    fn handle(&mut self, m: ReportSnapshot, ctx: &mut Context<Self>) {
        self.catch_up_clock();
        if self.halted(ctx) {
            return;
        }
        self.raft.report_snapshot(m.to, m.index, m.ok);
        self.schedule(ctx);
    }
}

impl Handler<GetStatus> for RaftGroup {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let log = self.raft.log();
        MessageResult(GroupStatus {
            group: self.group,
            role: format!("{:?}", self.raft.role()),
            term: self.raft.term(),
            leader: self.raft.leader_id(),
            last_index: log.last_index(),
            commit: log.committed(),
            applied: log.applied(),
            restarts: self.restarts,
            rejoining: self.raft.rejoining(),
            followers_lost_state: self.raft.stats().followers_lost_state,
            poison: None,
            transfer_to: self.raft.lead_transferee(),
            voters: self.raft.membership().voters.iter().copied().collect(),
            learners: self.raft.membership().learners.iter().copied().collect(),
            progress: if self.raft.role() == Role::Leader {
                self.raft
                    .membership()
                    .members()
                    .filter(|&n| n != self.shared.node_id)
                    .map(|node| MemberProgress {
                        node,
                        matched: self.raft.progress(node).map_or(0, |p| p.match_index),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
    }
}

impl Handler<TransferLeader> for RaftGroup {
    type Result = Result<(), RequestError>;

    fn handle(
        &mut self,
        TransferLeader { to }: TransferLeader,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.catch_up_clock();
        if self.halted(ctx) {
            return Err(self.node_failed());
        }
        let group = self.group;
        let result = match self.raft.transfer_leader(to) {
            Ok(()) => Ok(()),
            Err(TransferError::NotLeader { leader_hint }) => Err(RequestError::NotLeader {
                group,
                leader: leader_hint,
            }),
            // Already the leader: nothing to do.
            Err(TransferError::ToSelf { .. }) => Ok(()),
            Err(TransferError::NotAVoter { to, voters }) => Err(RequestError::NotAVoter {
                group,
                node: to,
                voters,
            }),
            Err(TransferError::InProgress { pending }) => {
                Err(RequestError::TransferInProgress { group, pending })
            }
        };
        if result.is_ok() {
            info!(self.log, "leader transfer"; "to" => to);
        }
        self.schedule(ctx);
        result
    }
}

impl Handler<InjectPanic> for RaftGroup {
    type Result = ();

    fn handle(&mut self, m: InjectPanic, _: &mut Context<Self>) {
        let _ = m.delivered.send(());
        panic!("group {}: fault injected into the RaftGroup", self.group);
    }
}

impl Handler<ChangeMembership> for RaftGroup {
    type Result = ();

    fn handle(&mut self, m: ChangeMembership, ctx: &mut Context<Self>) {
        self.catch_up_clock();
        if self.halted(ctx) {
            let _ = m.reply.send(Err(self.node_failed()));
            return;
        }
        let group = self.group;
        let busy = |reason: String| RequestError::ChangeInProgress { group, reason };
        let bad = |reason: String| RequestError::BadChange { group, reason };
        match self.raft.propose_conf_change(m.change) {
            Ok(p) => {
                info!(self.log, "membership change proposed"; "change" => ?m.change,
                      "index" => p.first_index);
                if let Some(fsm) = &self.fsm {
                    fsm.do_send(Register {
                        index: p.first_index,
                        term: p.term,
                        reply: m.reply,
                    });
                }
                self.schedule(ctx);
            }
            Err(e) => {
                let err = match e {
                    ConfChangeError::NotLeader { .. } => self.not_leader(),
                    ConfChangeError::TransferPending { to } => {
                        busy(format!("a leader transfer to node {to} is pending"))
                    }
                    ConfChangeError::TermNotCommitted => {
                        busy("a new leader has not committed an entry of its term yet".into())
                    }
                    ConfChangeError::ChangePending { index } => {
                        busy(format!("the change at index {index} is not committed yet"))
                    }
                    ConfChangeError::LearnerBehind { id, matched, last } => {
                        RequestError::LearnerBehind {
                            group,
                            node: id,
                            matched,
                            last,
                        }
                    }
                    ConfChangeError::LastVoter { id } => {
                        RequestError::NoQuorumLeft { group, node: id }
                    }
                    other => bad(other.to_string()),
                };
                let _ = m.reply.send(Err(err));
            }
        }
    }
}

impl Handler<GetMembership> for RaftGroup {
    type Result = MessageResult<GetMembership>;

    fn handle(&mut self, _: GetMembership, _: &mut Context<Self>) -> Self::Result {
        let m = self.raft.membership();
        let index = self.raft.conf_index().unwrap_or(0);
        MessageResult(MembershipInfo {
            group: self.group,
            voters: m.voters.iter().copied().collect(),
            learners: m.learners.iter().copied().collect(),
            leader: self.raft.leader_id(),
            index,
            committed: index <= self.raft.log().committed(),
            answered_by: self.shared.node_id,
        })
    }
}

impl Handler<ForceVoters> for RaftGroup {
    type Result = Result<synod_core::ForcedVoters, RequestError>;

    fn handle(
        &mut self,
        ForceVoters(voters): ForceVoters,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.catch_up_clock();
        if self.halted(ctx) {
            return Err(self.node_failed());
        }
        let group = self.group;
        let f = self
            .raft
            .force_voters(voters)
            .map_err(|e| RequestError::BadChange {
                group,
                reason: e.to_string(),
            })?;
        warn!(self.log, "UNSAFE: voters forced by an operator";
              "voters" => ?f.membership.voters, "at" => f.at, "term" => f.term);
        self.forced_outstanding = true;
        self.schedule(ctx);
        Ok(f)
    }
}
