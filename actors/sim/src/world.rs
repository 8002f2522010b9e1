//! One simulated run: N replicas of one group, each with an in-memory disk
//! that can lose unsynced writes, a network that drops, duplicates, delays,
//! reorders and partitions messages, a nemesis that crashes and restarts
//! nodes, and clients proposing unique values. Time is a number; every
//! random choice comes from one generator seeded by the run's seed, so a
//! seed replays exactly.
//!
//! ```text
//!   event queue (time, seq) ──► Tick / Deliver / PersistDone / Client / Nemesis / Restart
//!        ▲                                   │
//!        │                                   ▼
//!   network + disks ◄── Ready ◄── Raft (synod-core) ──► checkers (invariants/*)
//! ```
//!
//! A run has two phases. Chaos: faults as configured. Heal: every node up,
//! a clean network, no new proposals; the cluster must converge (one
//! leader, every node applied everything committed) within a deadline, and
//! then every acknowledged value must be applied exactly once everywhere.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use bytes::Bytes;
use synod_core::rng::SplitMix64;
use synod_core::{
    Bugs, ConfChange, Config, Entry, EntryKind, Index, Membership, Message, MessageBody, NodeId,
    Raft, Ready, Role, SnapshotInfo, Term,
};
use synod_storage::{LogStore, MemLog, WriteBatch};

use crate::invariants::{
    ElectionSafety, LeaderCompleteness, LinearizableReads, Liveness, LogMatching,
    StateMachineSafety, Violation,
};

/// Time units per tick. Network and disk latencies are a few units, so
/// one tick is roughly one round trip.
const TICK: u64 = 10;
/// The group id the simulated replicas store their log under.
const GROUP: u64 = 1;
/// Election timeout in ticks given to every replica.
const ELECTION_TICKS: u32 = 10;

/// Which kinds of fault a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Drop a share of messages.
    pub loss: bool,
    /// Deliver some messages twice.
    pub duplicate: bool,
    /// Vary delivery delay so messages overtake each other.
    pub reorder: bool,
    /// Hold some messages for many ticks.
    pub delay: bool,
    /// Partitions: symmetric, one-way, majority/minority, bridge.
    pub partition: bool,
    /// Crash nodes (losing unsynced writes) and restart them.
    pub crash: bool,
    /// Wipe a node: crash it and restart it with an empty disk and
    /// [`Config::rejoining`] set (a replaced disk). Rare, one node at a
    /// time, only while every other node is up and caught up.
    pub wipe: bool,
    /// Ask the leader to hand its leadership to a random other voter
    /// (thesis §3.10).
    pub transfer: bool,
    /// Membership changes: remove a random voter (the leader included),
    /// add it back as a learner, promote it once caught up.
    pub members: bool,
}

impl Faults {
    /// Every fault kind, wipes included.
    pub fn all() -> Self {
        Faults {
            loss: true,
            duplicate: true,
            reorder: true,
            delay: true,
            partition: true,
            crash: true,
            wipe: true,
            transfer: true,
            members: true,
        }
    }

    /// No faults at all.
    pub fn none() -> Self {
        Faults {
            loss: false,
            duplicate: false,
            reorder: false,
            delay: false,
            partition: false,
            crash: false,
            wipe: false,
            transfer: false,
            members: false,
        }
    }

    /// Parses `all`, `none` or a comma list of
    /// `all,loss,duplicate,reorder,delay,partition,crash,wipe,transfer,members`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Faults::none());
        }
        let mut f = Faults::none();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => f = Faults::all(),
                "loss" => f.loss = true,
                "duplicate" | "dup" => f.duplicate = true,
                "reorder" => f.reorder = true,
                "delay" => f.delay = true,
                "partition" => f.partition = true,
                "crash" => f.crash = true,
                "wipe" => f.wipe = true,
                "transfer" => f.transfer = true,
                "members" => f.members = true,
                other => {
                    return Err(format!(
                        "unknown fault '{other}': use all, none, or a comma list of \
                         all,loss,duplicate,reorder,delay,partition,crash,wipe,transfer,members"
                    ))
                }
            }
        }
        Ok(f)
    }
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed; the same seed replays the same run.
    pub seed: u64,
    /// Replicas in the group.
    pub nodes: usize,
    /// Fault kinds injected during the chaos phase.
    pub faults: Faults,
    /// Deliberate bugs switched on in every replica.
    pub bugs: Bugs,
    /// Length of the chaos phase in ticks.
    pub chaos_ticks: u64,
    /// Deadline for convergence after the heal, in ticks.
    pub heal_ticks: u64,
    /// Record a readable trace of the run.
    pub trace: bool,
    /// Do not call each replica's own `validate()`, to show that the
    /// paper-level checkers alone catch a bug.
    pub skip_validate: bool,
    /// Let replicas take snapshots and compact (most seeds then do, at a
    /// seed-chosen interval). Off, a seed replays exactly as it did before
    /// snapshots existed, which keeps old regression seeds meaningful.
    pub snapshots: bool,
    /// A deliberate bug in the simulated client, so the simulation can
    /// prove the acknowledged-writes checker works: a value counts as
    /// acknowledged as soon as a leader accepts the proposal, before it
    /// commits.
    pub ack_before_commit: bool,
    /// Weight of the wipe action among the nemesis's actions (when
    /// [`Faults::wipe`] is on); 1 makes wipes rare.
    pub wipe_weight: usize,
}

impl SimConfig {
    /// Defaults for `seed` with `nodes` replicas and every fault.
    pub fn new(seed: u64, nodes: usize) -> Self {
        SimConfig {
            seed,
            nodes,
            faults: Faults::all(),
            bugs: Bugs::default(),
            chaos_ticks: 1500,
            heal_ticks: 600,
            trace: false,
            skip_validate: false,
            snapshots: true,
            ack_before_commit: false,
            wipe_weight: 1,
        }
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The run's seed.
    pub seed: u64,
    /// Replicas in the group.
    pub nodes: usize,
    /// The first violation, if any (the run stops there).
    pub violation: Option<Violation>,
    /// Elections started (real, not pre-vote), over all incarnations.
    pub elections: u64,
    /// Distinct terms that had a leader.
    pub leader_terms: usize,
    /// Highest index applied by any node.
    pub committed: Index,
    /// Messages handed to the network.
    pub messages: u64,
    /// Messages the network dropped (loss, partition, dead receiver).
    pub dropped: u64,
    /// Messages dropped by random loss alone.
    pub lost: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Messages scheduled to arrive before one sent earlier on the same
    /// link.
    pub reordered: u64,
    /// Messages held back for many ticks.
    pub delayed: u64,
    /// Partitions the nemesis put in place (each cuts at least one link).
    pub partitions: u64,
    /// Node crashes (wipes included).
    pub crashes: u64,
    /// Nodes restarted with an empty disk.
    pub wipes: u64,
    /// Wiped nodes that finished rejoining (their log reached the first
    /// commit index a leader sent them).
    pub rejoined: u64,
    /// Snapshots adopted by followers in place of their log.
    pub snapshots_installed: u64,
    /// Leader transfers the nemesis asked for and a leader accepted.
    pub transfers: u64,
    /// Transfers whose target was elected in the term right after the one
    /// it was asked in.
    pub transfers_completed: u64,
    /// Configuration changes a leader accepted.
    pub conf_changes: u64,
    /// Configuration entries committed (distinct indexes applied).
    pub conf_changes_committed: u64,
    /// Values acknowledged to clients.
    pub acked: usize,
    /// Linearizable reads started.
    pub reads: u64,
    /// Reads answered and checked.
    pub reads_checked: u64,
    /// Of the reads, those a leader answered under its lease.
    pub lease_reads: u64,
    /// Times a replica quiesced (`Config::quiesce`).
    pub quiesced: u64,
    /// Ticks the heal phase needed to converge.
    pub heal_ticks_used: u64,
    /// The readable trace, when asked for.
    pub trace: Vec<String>,
}

#[derive(Debug)]
enum Event {
    Tick(usize),
    Deliver(Message),
    /// An InstallSnapshot message with its data, which the runtime streams
    /// beside the Raft messages.
    DeliverSnapshot {
        msg: Message,
        data: SimSnapshot,
        sender_incarnation: u64,
    },
    /// The leader learns how a snapshot transfer went.
    SnapshotReport {
        leader: NodeId,
        incarnation: u64,
        to: NodeId,
        index: Index,
        ok: bool,
    },
    PersistDone {
        node: usize,
        incarnation: u64,
    },
    Client,
    /// A client's linearizable read (ReadIndex) at some node.
    Read,
    Nemesis,
    /// Ask the leader to transfer its leadership (its own schedule, so the
    /// nemesis's other faults keep their frequency).
    Transfer,
    /// Ask the leader for the next membership change (its own schedule).
    Members,
    Restart(usize),
    /// Crash a node at once (used for crashes in the middle of a write).
    Crash(usize),
    CheckConverged,
}

struct Scheduled {
    time: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed so that `BinaryHeap` pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// A Ready's disk write, waiting for its simulated fsync.
struct PendingWrite {
    up_to: Option<(Index, Term)>,
    /// Messages that may leave only once this write (and all before it)
    /// is durable.
    messages: Vec<Message>,
}

/// A snapshot: where it ends and the state machine at that point.
#[derive(Clone, Debug)]
struct SimSnapshot {
    term: Term,
    /// The group's configuration as of the snapshot's index.
    membership: Membership,
    state: Vec<(Index, Bytes)>,
}

struct Node {
    id: NodeId,
    raft: Option<Raft>,
    incarnation: u64,
    /// The node's disk: the same in-memory log store the runtime's tests
    /// use. A Ready's write is staged at once and made durable by its
    /// `PersistDone`; a crash forgets whatever was staged but not synced.
    disk: MemLog,
    /// Writes issued but not yet durable, in order.
    pending: VecDeque<PendingWrite>,
    /// When the disk finishes its current queue.
    disk_free_at: u64,
    /// The state machine: (index, command) of every command applied, in
    /// order. Reset by a crash, restored from the latest snapshot.
    applied: Vec<(Index, Bytes)>,
    /// Durable snapshots of the state machine, by last index (the newest
    /// two are kept; the log is compacted to the older one, so followers
    /// slightly behind still get entries). Written at once, survive crashes.
    snapshots: BTreeMap<Index, SimSnapshot>,
    /// Commit index last reported to the leader-completeness checker.
    seen_commit: Index,
    /// Term in which this node was last seen leading.
    led_term: Option<Term>,
    /// Elections of earlier incarnations.
    past_elections: u64,
    /// Times the replicas of earlier incarnations quiesced.
    past_quiesced: u64,
    /// The node lost its disk and has not yet caught up: every start
    /// (after the wipe or a later crash) sets [`Config::rejoining`]. The
    /// runtime keeps this as a marker on disk, so a crash while rejoining
    /// does not end it.
    rejoining: bool,
}

/// One simulated run.
pub struct World {
    cfg: SimConfig,
    rng: SplitMix64,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    /// Directed links that are cut: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Latest scheduled arrival on each directed link, to count messages
    /// that overtake an earlier one.
    link_latest: BTreeMap<(NodeId, NodeId), u64>,
    loss_percent: u64,
    dup_percent: u64,
    healing: bool,
    /// Per-run protocol knobs drawn from the seed.
    pre_vote: bool,
    check_quorum: bool,
    max_entries_per_msg: usize,
    max_inflight_msgs: usize,
    /// Whether the replicas allow lease reads (`Config::lease_reads`).
    lease_reads: bool,
    /// Whether idle groups quiesce (`Config::quiesce`).
    quiesce: bool,
    /// Node-level liveness, as the runtime's per-peer beat gives it: the
    /// last time node `a` heard from node `b` (`(a, b)` -> time), while
    /// `b` was up and the link from `b` to `a` was not cut.
    heard: BTreeMap<(NodeId, NodeId), u64>,
    /// The incarnation of node `b` that node `a` last heard.
    boots: BTreeMap<(NodeId, NodeId), u64>,
    /// `(a, b)`: node `a` found node `b` silent for an election timeout
    /// (and woke the groups `b` led), until it hears `b` again.
    dead: BTreeSet<(NodeId, NodeId)>,
    /// Draws the client's idle spells when quiescence is on.
    idle_rng: SplitMix64,
    /// Take a snapshot every this many applied entries (0: never).
    snapshot_every: u64,
    next_value: u64,
    /// Proposals awaiting their apply at the proposer: (node, incarnation,
    /// index) -> (term, value).
    proposals: BTreeMap<(usize, u64, Index), (Term, u64)>,
    election_safety: ElectionSafety,
    log_matching: LogMatching,
    leader_completeness: LeaderCompleteness,
    state_machine_safety: StateMachineSafety,
    liveness: Liveness,
    /// The leader transfer in progress, if any: (target, term in which
    /// the leader accepted it). Completed when the target leads the next
    /// term; dropped when anyone leads a later term.
    pending_transfer: Option<PendingTransfer>,
    /// The leader transfers' own random stream.
    transfer_rng: SplitMix64,
    /// The membership changes' own random stream.
    members_rng: SplitMix64,
    /// Indexes of configuration entries seen applied.
    conf_applied: BTreeSet<Index>,
    /// Linearizable reads: the checker, the reads' own random stream and
    /// the next read id.
    reads: LinearizableReads,
    read_rng: SplitMix64,
    next_read: u64,
    outcome: Outcome,
}

/// A leader transfer the nemesis asked for.
#[derive(Clone, Copy, Debug)]
struct PendingTransfer {
    to: NodeId,
    /// The term in which the leader accepted it.
    term: Term,
    /// Past this time, an election of `to` is no longer the transfer's
    /// (the leader gives up after one election timeout).
    until: u64,
}

impl World {
    /// A world for `cfg`, with no event run yet.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = SplitMix64::new(cfg.seed ^ 0x05EE_D0F5_140D);
        let pre_vote = !rng.chance(1, 5);
        let check_quorum = !rng.chance(1, 5);
        let max_entries_per_msg = [1, 2, 3, 8, 64][rng.range(0, 5) as usize];
        let max_inflight_msgs = [1, 2, 4, 16][rng.range(0, 4) as usize];
        // Lease reads on in half the seeds (their own stream, so the other
        // draws stay as they were).
        let lease_reads = SplitMix64::new(cfg.seed ^ 0x1EA5_E000).chance(1, 2);
        // Quiescence in half the seeds, from a stream of its own too.
        let quiesce = SplitMix64::new(cfg.seed ^ 0x9_1E5C_E000).chance(1, 2);
        let (loss_percent, dup_percent) = (
            if cfg.faults.loss { rng.range(1, 15) } else { 0 },
            if cfg.faults.duplicate {
                rng.range(1, 10)
            } else {
                0
            },
        );
        // Drawn from a stream of its own, so that with snapshots off a seed
        // replays exactly what it did before snapshots existed.
        let snapshot_every = if cfg.snapshots {
            let mut knobs = SplitMix64::new(cfg.seed ^ 0x5A4A_5407);
            [0, 3, 10, 40][knobs.range(0, 4) as usize]
        } else {
            0
        };
        let nodes = (1..=cfg.nodes as NodeId)
            .map(|id| Node {
                id,
                raft: None,
                incarnation: 0,
                disk: MemLog::new(),
                pending: VecDeque::new(),
                disk_free_at: 0,
                applied: Vec::new(),
                snapshots: BTreeMap::new(),
                seen_commit: 0,
                led_term: None,
                past_elections: 0,
                past_quiesced: 0,
                rejoining: false,
            })
            .collect();
        let cfg_seed = cfg.seed;
        let outcome = Outcome {
            seed: cfg.seed,
            nodes: cfg.nodes,
            ..Outcome::default()
        };
        let mut world = World {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            blocked: BTreeSet::new(),
            link_latest: BTreeMap::new(),
            loss_percent,
            dup_percent,
            healing: false,
            pre_vote,
            check_quorum,
            max_entries_per_msg,
            max_inflight_msgs,
            lease_reads,
            quiesce,
            heard: BTreeMap::new(),
            boots: BTreeMap::new(),
            dead: BTreeSet::new(),
            idle_rng: SplitMix64::new(cfg_seed ^ 0x1D1E_5EED),
            snapshot_every,
            next_value: 1,
            proposals: BTreeMap::new(),
            election_safety: ElectionSafety::default(),
            log_matching: LogMatching::default(),
            leader_completeness: LeaderCompleteness::default(),
            state_machine_safety: StateMachineSafety::default(),
            liveness: Liveness::default(),
            pending_transfer: None,
            transfer_rng: SplitMix64::new(cfg_seed ^ 0x7EA2_5FE2),
            members_rng: SplitMix64::new(cfg_seed ^ 0x3E3B_E125),
            conf_applied: BTreeSet::new(),
            reads: LinearizableReads::default(),
            read_rng: SplitMix64::new(cfg_seed ^ 0x5EAD_1DE7),
            next_read: 1,
            outcome,
        };
        let line = format!(
            "config: nodes {} pre_vote {pre_vote} check_quorum {check_quorum} \
                 max_entries_per_msg {max_entries_per_msg} max_inflight {max_inflight_msgs} \
                 lease_reads {lease_reads} quiesce {quiesce} \
                 snapshot_every {snapshot_every} \
                 loss {loss_percent}% dup {dup_percent}% faults {:?} bugs {:?}",
            world.cfg.nodes, world.cfg.faults, world.cfg.bugs
        );
        world.trace(|| line);
        world
    }

    /// Runs both phases and reports what happened.
    pub fn run(mut self) -> Outcome {
        for i in 0..self.nodes.len() {
            self.start_node(i);
            let phase = self.rng.range(0, TICK);
            self.schedule(phase, Event::Tick(i));
        }
        self.schedule(TICK, Event::Client);
        self.schedule(TICK * 3, Event::Read);
        self.schedule(TICK * 5, Event::Nemesis);
        if self.cfg.faults.transfer && self.nodes.len() >= 2 {
            self.schedule(TICK * 20, Event::Transfer);
        }
        if self.cfg.faults.members && self.nodes.len() >= 3 {
            self.schedule(TICK * 30, Event::Members);
        }
        let chaos_end = self.cfg.chaos_ticks * TICK;
        self.run_until(chaos_end);
        if self.outcome.violation.is_none() {
            self.heal();
            // A backlog drains at (entries per message x window) entries
            // per round trip (about two ticks): give it that long on top.
            let backlog = self
                .nodes
                .iter()
                .map(|n| n.disk.group(GROUP).map_or(0, |g| g.last_index))
                .max()
                .unwrap_or(0);
            let per_round_trip = (self.max_entries_per_msg * self.max_inflight_msgs) as u64;
            let heal_ticks = self.cfg.heal_ticks + 2 * backlog / per_round_trip;
            let deadline = self.now + heal_ticks * TICK;
            self.schedule(TICK, Event::CheckConverged);
            self.run_until(deadline);
            if self.outcome.violation.is_none() && self.outcome.heal_ticks_used == 0 {
                let detail = format!(
                    "no convergence {heal_ticks} ticks after heal: {}",
                    self.describe_nodes()
                );
                self.violate(Liveness::not_converged(detail));
            }
        }
        self.finish()
    }

    fn finish(mut self) -> Outcome {
        self.outcome.elections = self
            .nodes
            .iter()
            .map(|n| n.past_elections + n.raft.as_ref().map_or(0, |r| r.stats().elections))
            .sum();
        self.outcome.quiesced = self
            .nodes
            .iter()
            .map(|n| n.past_quiesced + n.raft.as_ref().map_or(0, |r| r.stats().quiesced))
            .sum();
        self.outcome.leader_terms = self.election_safety.leader_terms();
        self.outcome.committed = self.state_machine_safety.max_applied();
        self.outcome.acked = self.liveness.acked();
        self.outcome.reads_checked = self.reads.checked();
        self.outcome
    }

    fn run_until(&mut self, end: u64) {
        while let Some(top) = self.queue.peek() {
            if top.time > end || self.outcome.violation.is_some() {
                break;
            }
            if self.healing && self.outcome.heal_ticks_used > 0 {
                break;
            }
            let Some(ev) = self.queue.pop() else { break };
            self.now = ev.time;
            self.handle(ev.event);
        }
        self.now = self.now.max(end.min(self.now));
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            time: self.now + delay,
            seq: self.seq,
            event,
        });
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            let l = format!("t={:>6} {}", self.now, line());
            self.outcome.trace.push(l);
        }
    }

    fn violate(&mut self, v: Violation) {
        if self.outcome.violation.is_none() {
            self.trace(|| format!("VIOLATION {v}"));
            self.outcome.violation = Some(v);
        }
    }

    // ------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick(i) => {
                self.schedule(TICK, Event::Tick(i));
                if self.nodes[i].raft.is_some() {
                    self.beat(i);
                }
                let down = self.down_from(i);
                if let Some(raft) = self.nodes[i].raft.as_mut() {
                    raft.set_down(&down);
                    raft.tick();
                    self.process(i);
                }
            }
            Event::Deliver(m) => self.deliver(m),
            Event::DeliverSnapshot {
                msg,
                data,
                sender_incarnation,
            } => self.deliver_snapshot(msg, data, sender_incarnation),
            Event::SnapshotReport {
                leader,
                incarnation,
                to,
                index,
                ok,
            } => self.report_snapshot(leader, incarnation, to, index, ok),
            Event::PersistDone { node, incarnation } => self.persist_done(node, incarnation),
            Event::Client => self.client(),
            Event::Nemesis => self.nemesis(),
            Event::Transfer => self.transfer_random(),
            Event::Members => self.members_random(),
            Event::Read => self.read(),
            Event::Crash(i) => {
                if self.nodes[i].raft.is_some() {
                    self.crash(i);
                    let down = self.rng.range(TICK, 20 * TICK);
                    self.schedule(down, Event::Restart(i));
                }
            }
            Event::Restart(i) => {
                if self.nodes[i].raft.is_none() {
                    self.start_node(i);
                }
            }
            Event::CheckConverged => {
                if self.converged() {
                    self.outcome.heal_ticks_used =
                        (self.now - self.cfg.chaos_ticks * TICK) / TICK + 1;
                    self.check_after_heal();
                } else {
                    self.schedule(TICK, Event::CheckConverged);
                }
            }
        }
    }

    fn node_config(&mut self, i: usize) -> Config {
        let n = &self.nodes[i];
        let mut c = Config::new(n.id, 1..=self.cfg.nodes as NodeId);
        c.election_ticks = ELECTION_TICKS;
        c.heartbeat_ticks = 2;
        c.pre_vote = self.pre_vote;
        c.check_quorum = self.check_quorum;
        c.max_entries_per_msg = self.max_entries_per_msg;
        c.max_inflight_msgs = self.max_inflight_msgs;
        c.seed = self.cfg.seed.wrapping_mul(1_000_003) ^ (n.id << 32) ^ n.incarnation;
        c.lease_reads = self.lease_reads;
        c.quiesce = self.quiesce;
        c.bugs = self.cfg.bugs;
        c.rejoining = n.rejoining;
        c
    }

    /// Boots (or reboots) node `i` from its durable state.
    fn start_node(&mut self, i: usize) {
        let config = self.node_config(i);
        let n = &self.nodes[i];
        let hs = n
            .disk
            .group(GROUP)
            .map(|g| g.hard_state)
            .unwrap_or_default();
        let log = n.disk.all_entries(GROUP);
        let last = log.len();
        let (snapshot, state, membership) = match n.snapshots.iter().next_back() {
            Some((&index, s)) => (
                SnapshotInfo {
                    index,
                    term: s.term,
                },
                s.state.clone(),
                Some(s.membership.clone()),
            ),
            None => (SnapshotInfo::default(), Vec::new(), None),
        };
        match Raft::restore_with_membership(config, hs, snapshot, membership, log, snapshot.index) {
            Ok(raft) => {
                let commit = raft.log().committed();
                let id = n.id;
                // Align the disk with what the core kept (a snapshot's
                // install write may have been lost in the crash).
                let stored = self.nodes[i].disk.group(GROUP);
                let align =
                    WriteBatch::realign(GROUP, stored, snapshot.index, raft.log().last_index());
                let node = &mut self.nodes[i];
                node.seen_commit = commit;
                node.applied = state;
                node.raft = Some(raft);
                if !align.is_empty() {
                    self.stage_write(i, align, None, Vec::new());
                }
                self.trace(|| {
                    format!("node {id} starts: {hs:?}, {last} entries, snapshot {snapshot:?}")
                });
            }
            Err(e) => {
                let v = Violation::new("restore", format!("node {} cannot restart: {e}", n.id));
                self.violate(v);
            }
        }
    }

    /// Node-level liveness (the runtime's per-peer beat, modeled as
    /// instantaneous): node `i` hears every node that is up and whose link
    /// to it is not cut. A quiesced follower whose leader's node has been
    /// silent for an election timeout is woken, as the runtime does.
    fn beat(&mut self, i: usize) {
        let me = self.nodes[i].id;
        let mut back = false;
        for j in 0..self.nodes.len() {
            let peer = self.nodes[j].id;
            if j != i && self.nodes[j].raft.is_some() && !self.blocked.contains(&(peer, me)) {
                let at = self.heard.insert((me, peer), self.now).unwrap_or(0);
                back |= self.now.saturating_sub(at) / TICK >= u64::from(ELECTION_TICKS);
                // The runtime's beats carry a boot nonce: a restart is
                // noticed even when it was quicker than an election
                // timeout (a wiped replica says nothing by itself).
                let boot = self.nodes[j].incarnation;
                back |= self
                    .boots
                    .insert((me, peer), boot)
                    .is_some_and(|b| b != boot);
            }
        }
        if back {
            // A peer is heard again after a silence, or restarted: the
            // runtime wakes the groups led here, which then repair it if
            // it lags.
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                if raft.role() == Role::Leader {
                    raft.wake(None);
                    self.trace(|| format!("node {me} wakes: a peer is back"));
                    self.process(i);
                }
            }
        }
        let silent = self.leader_silent(i);
        let seed = self.outcome.seed;
        if let (Some(raft), Some(s)) = (self.nodes[i].raft.as_mut(), silent) {
            let leader = raft.leader_id().unwrap_or(0);
            let dead = s >= u64::from(ELECTION_TICKS);
            if !dead {
                self.dead.remove(&(me, leader));
            } else if self.dead.insert((me, leader)) {
                // The runtime's clock: the leader's node just turned
                // silent. Its followers here wake, and the surviving
                // voters take turns to campaign (the order rotated by
                // group; here by seed).
                raft.wake(Some(s));
                let voters: Vec<NodeId> = raft
                    .membership()
                    .voters
                    .iter()
                    .copied()
                    .filter(|&v| v != leader)
                    .collect();
                if let Some(pos) = voters.iter().position(|&v| v == me) {
                    let rank = (pos + seed as usize) % voters.len();
                    raft.campaign_within(3 + rank as u32 * (ELECTION_TICKS / 2));
                }
                self.trace(|| format!("node {me} finds its leader {leader}'s node silent"));
                self.process(i);
                return;
            }
        }
        let silent = self.leader_silent(i);
        if let (Some(raft), Some(s)) = (self.nodes[i].raft.as_mut(), silent) {
            if raft.quiesced() && s >= u64::from(ELECTION_TICKS) {
                let id = me;
                raft.wake(Some(s));
                self.trace(|| {
                    format!("node {id} wakes: its leader's node is silent for {s} ticks")
                });
                self.process(i);
            }
        }
    }

    /// The nodes node `i` has not heard (node-level) for an election
    /// timeout: the runtime's node clock tells each group so before it
    /// ticks it.
    fn down_from(&self, i: usize) -> Vec<NodeId> {
        let me = self.nodes[i].id;
        self.nodes
            .iter()
            .map(|n| n.id)
            .filter(|&peer| peer != me)
            .filter(|&peer| {
                let at = self.heard.get(&(me, peer)).copied().unwrap_or(0);
                self.now.saturating_sub(at) / TICK >= u64::from(ELECTION_TICKS)
            })
            .collect()
    }

    /// Ticks since node `i` last heard (node-level) from the leader its
    /// replica follows, if it follows one.
    fn leader_silent(&self, i: usize) -> Option<u64> {
        let raft = self.nodes[i].raft.as_ref()?;
        let leader = raft.leader_id().filter(|&l| l != raft.id())?;
        let at = self.heard.get(&(raft.id(), leader)).copied().unwrap_or(0);
        Some(self.now.saturating_sub(at) / TICK)
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(raft) = node.raft.take() else { return };
        node.past_elections += raft.stats().elections;
        node.past_quiesced += raft.stats().quiesced;
        node.incarnation += 1;
        let lost = node.pending.len();
        node.pending.clear();
        node.disk.crash();
        node.disk_free_at = 0;
        node.applied.clear();
        node.led_term = None;
        let id = node.id;
        self.outcome.crashes += 1;
        self.trace(|| format!("node {id} CRASHES, losing {lost} unsynced writes"));
    }

    fn deliver(&mut self, m: Message) {
        let i = (m.to - 1) as usize;
        if self.blocked.contains(&(m.from, m.to)) || self.nodes[i].raft.is_none() {
            self.outcome.dropped += 1;
            return;
        }
        self.trace(|| format!("{} -> {} t{} {:?}", m.from, m.to, m.term, m.body));
        let silent = self.leader_silent(i);
        if let Some(raft) = self.nodes[i].raft.as_mut() {
            // As the runtime does before it feeds a quiesced group.
            raft.elapse(0, silent);
            raft.step(m);
            self.process(i);
        }
    }

    /// The receiver stores the snapshot's data durably, then steps the
    /// message; the sender learns the transfer went through.
    fn deliver_snapshot(&mut self, m: Message, mut data: SimSnapshot, sender_incarnation: u64) {
        let i = (m.to - 1) as usize;
        let MessageBody::Snapshot {
            snapshot,
            ref membership,
            ..
        } = m.body
        else {
            unreachable!("only snapshots travel this way")
        };
        // The runtime stores the configuration the message names with
        // the snapshot's data.
        data.membership = membership.clone();
        if self.blocked.contains(&(m.from, m.to)) || self.nodes[i].raft.is_none() {
            self.outcome.dropped += 1;
            let report = Event::SnapshotReport {
                leader: m.from,
                incarnation: sender_incarnation,
                to: m.to,
                index: snapshot.index,
                ok: false,
            };
            self.schedule(TICK, report);
            return;
        }
        self.trace(|| format!("{} -> {} t{} {:?}", m.from, m.to, m.term, m.body));
        let (from, to) = (m.from, m.to);
        self.nodes[i].snapshots.insert(snapshot.index, data);
        if let Some(raft) = self.nodes[i].raft.as_mut() {
            raft.step(m);
            self.process(i);
        }
        let report = Event::SnapshotReport {
            leader: from,
            incarnation: sender_incarnation,
            to,
            index: snapshot.index,
            ok: true,
        };
        self.schedule(3, report);
    }

    fn report_snapshot(
        &mut self,
        leader: NodeId,
        incarnation: u64,
        to: NodeId,
        index: Index,
        ok: bool,
    ) {
        let l = (leader - 1) as usize;
        if self.nodes[l].incarnation != incarnation {
            return;
        }
        if let Some(raft) = self.nodes[l].raft.as_mut() {
            raft.report_snapshot(to, index, ok);
            self.process(l);
        }
    }

    fn persist_done(&mut self, i: usize, incarnation: u64) {
        let node = &mut self.nodes[i];
        if node.incarnation != incarnation || node.raft.is_none() {
            return; // the write died with an earlier incarnation
        }
        let Some(w) = node.pending.pop_front() else {
            return;
        };
        assert!(node.disk.sync_one(), "sim: a staged write must be pending");
        if let (Some((index, term)), Some(raft)) = (w.up_to, node.raft.as_mut()) {
            raft.on_persisted(index, term);
        }
        for m in w.messages {
            self.send(m);
        }
        self.process(i);
    }

    /// Starts a linearizable read at a node (mostly a leader, sometimes a
    /// follower: a follower read), every one to three ticks, from a random
    /// stream of its own. The checker binds it to every write acknowledged
    /// so far.
    fn read(&mut self) {
        if self.healing {
            return;
        }
        let next = self.read_rng.range(TICK, 3 * TICK);
        self.schedule(next, Event::Read);
        let target = self.read_rng.range(0, self.nodes.len() as u64) as usize;
        let id = self.next_read;
        let incarnation = self.nodes[target].incarnation;
        let Some(raft) = self.nodes[target].raft.as_mut() else {
            return;
        };
        // A third of the reads under the leader's lease (a follower, or
        // a leader without a live lease, takes the round anyway).
        let before = raft.stats().lease_reads;
        let started = if self.read_rng.chance(1, 3) {
            raft.read_lease(id)
        } else {
            raft.read_index(id)
        };
        self.outcome.lease_reads += raft.stats().lease_reads - before;
        if started.is_ok() {
            self.next_read += 1;
            self.outcome.reads += 1;
            self.reads.start((target, incarnation, id));
            self.process(target);
        }
    }

    fn client(&mut self) {
        if self.healing {
            return;
        }
        let mut next = self.rng.range(1, 2 * TICK);
        if self.quiesce && self.idle_rng.chance(1, 15) {
            // Idle spells, so the group quiesces and must wake up again
            // (on the next write, or when its leader's node goes).
            next += self.idle_rng.range(5 * TICK, 60 * TICK);
        }
        self.schedule(next, Event::Client);
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader)
            })
            .collect();
        let target = if !leaders.is_empty() && !self.rng.chance(1, 5) {
            leaders[self.rng.range(0, leaders.len() as u64) as usize]
        } else {
            self.rng.range(0, self.nodes.len() as u64) as usize
        };
        let count = self.rng.range(1, 4);
        let values: Vec<u64> = (0..count).map(|k| self.next_value + k).collect();
        let incarnation = self.nodes[target].incarnation;
        let Some(raft) = self.nodes[target].raft.as_mut() else {
            return;
        };
        let commands = values
            .iter()
            .map(|v| Bytes::copy_from_slice(&v.to_le_bytes()))
            .collect();
        if let Ok(p) = raft.propose(commands) {
            self.next_value += count;
            if self.cfg.ack_before_commit {
                // The deliberate client bug: acknowledged on acceptance.
                for v in &values {
                    self.liveness.observe_ack(*v);
                }
            }
            for (k, v) in values.iter().enumerate() {
                self.proposals.insert(
                    (target, incarnation, p.first_index + k as u64),
                    (p.term, *v),
                );
            }
            let id = self.nodes[target].id;
            self.trace(|| format!("client proposes {values:?} at node {id}: {p:?}"));
            self.process(target);
        }
    }

    // ------------------------------------------------------------------
    // Carrying out Readies
    // ------------------------------------------------------------------

    /// Drains node `i`'s Readies and checks every invariant it touches.
    fn process(&mut self, i: usize) {
        loop {
            let Some(raft) = self.nodes[i].raft.as_mut() else {
                return;
            };
            if !raft.has_ready() {
                break;
            }
            let rd = raft.ready();
            let prev_term = rd
                .entries
                .first()
                .and_then(|e| raft.log().term(e.index - 1))
                .unwrap_or(0);
            if let Err(v) = self.log_matching.observe(prev_term, &rd.entries) {
                self.violate(v);
            }
            self.carry_out(i, rd);
        }
        self.note_rejoined(i);
        self.observe(i);
    }

    fn carry_out(&mut self, i: usize, rd: Ready) {
        if let Some(snap) = rd.snapshot {
            self.install(i, snap);
        }
        if let Some(ss) = rd.soft_state {
            let id = self.nodes[i].id;
            self.trace(|| format!("node {id} is now {:?} (leader {:?})", ss.role, ss.leader_id));
        }
        let (id, incarnation) = (self.nodes[i].id, self.nodes[i].incarnation);
        for st in &rd.read_states {
            let key = (i, incarnation, st.id);
            match st.result {
                Ok(index) => {
                    self.trace(|| format!("node {id} answers read {} at index {index}", st.id));
                    if let Err(v) = self.reads.answer(key, id, index) {
                        self.violate(v);
                    }
                }
                Err(_) => self.reads.forget(key),
            }
        }
        let must_persist = rd.must_persist();
        for m in rd.messages {
            self.send(m);
        }
        if must_persist {
            let mut batch = WriteBatch::new();
            if let Some(snap) = rd.snapshot {
                // The log is replaced by the snapshot: drop all of it.
                batch.purge(GROUP, snap.index + 1);
                batch.truncate(GROUP, snap.index + 1);
            }
            if let Some(hs) = rd.hard_state {
                batch.set_hard_state(GROUP, hs);
            }
            let up_to = rd.entries.last().map(|e| (e.index, e.term));
            batch.append(GROUP, rd.entries);
            self.stage_write(i, batch, up_to, rd.persisted_messages);
        } else if let Some(w) = self.nodes[i].pending.back_mut() {
            // Nothing new to write, but these messages may depend on
            // earlier writes still in flight: they wait for them.
            w.messages.extend(rd.persisted_messages);
        } else {
            for m in rd.persisted_messages {
                self.send(m);
            }
        }
        self.apply(i, &rd.committed_entries);
    }

    /// Stages `batch` on node `i`'s disk; it becomes durable (and `up_to`
    /// is reported, `messages` sent) after a simulated fsync, in order.
    fn stage_write(
        &mut self,
        i: usize,
        batch: WriteBatch,
        up_to: Option<(Index, Term)>,
        messages: Vec<Message>,
    ) {
        // Mostly a fast fsync, sometimes a slow one (real disks have a
        // long tail): the window in which a crash loses a write.
        let latency = if self.cfg.faults.delay && self.rng.chance(1, 20) {
            self.rng.range(2 * TICK, 10 * TICK)
        } else {
            self.rng.range(1, 8)
        };
        let node = &mut self.nodes[i];
        let done = node.disk_free_at.max(self.now + latency);
        node.disk_free_at = done;
        // The core only hands out writes that continue its log, so the
        // store must accept them; a refusal is a bug in one of the two.
        if let Err(e) = node.disk.append(&batch) {
            panic!("sim: node {} disk refused a write: {e}", node.id);
        }
        node.pending.push_back(PendingWrite { up_to, messages });
        let incarnation = node.incarnation;
        // Sometimes crash while this write is in flight: its immediate
        // messages have left, the write and the messages that wait for
        // it are lost. This is where persist-before-send bugs show.
        if self.cfg.faults.crash && !self.healing && self.rng.chance(1, 400) {
            self.schedule(0, Event::Crash(i));
        }
        self.seq += 1;
        self.queue.push(Scheduled {
            time: done,
            seq: self.seq,
            event: Event::PersistDone {
                node: i,
                incarnation,
            },
        });
    }

    fn apply(&mut self, i: usize, entries: &[Entry]) {
        let id = self.nodes[i].id;
        let incarnation = self.nodes[i].incarnation;
        for e in entries {
            if let Err(v) = self.state_machine_safety.observe_apply(id, e) {
                self.violate(v);
            }
            if matches!(e.kind, EntryKind::ConfChange(_)) && self.conf_applied.insert(e.index) {
                self.outcome.conf_changes_committed += 1;
            }
            if let EntryKind::Normal(data) = &e.kind {
                let value = decode_value(data);
                self.nodes[i].applied.push((e.index, data.clone()));
                if let Some((term, v)) = self.proposals.remove(&(i, incarnation, e.index)) {
                    if term == e.term && v == value {
                        self.liveness.observe_ack(v);
                        self.reads.observe_ack(e.index);
                    }
                }
            }
        }
        if let (Some(last), Some(raft)) = (entries.last(), self.nodes[i].raft.as_mut()) {
            raft.on_applied(last.index);
        }
        self.maybe_snapshot(i);
    }

    /// The state machine restores a snapshot the replica adopted.
    fn install(&mut self, i: usize, snap: SnapshotInfo) {
        let id = self.nodes[i].id;
        let Some(data) = self.nodes[i].snapshots.get(&snap.index).cloned() else {
            panic!("sim: node {id} adopted snapshot {snap:?} it never received");
        };
        if let Err(v) = self
            .state_machine_safety
            .observe_snapshot(id, snap.index, &data.state)
        {
            self.violate(v);
        }
        self.nodes[i].applied = data.state;
        self.outcome.snapshots_installed += 1;
        self.trace(|| format!("node {id} installs snapshot {snap:?}"));
    }

    /// Every `snapshot_every` applied entries: save the state machine, keep
    /// the two newest snapshots, compact the log to the older one and purge
    /// it from the disk.
    fn maybe_snapshot(&mut self, i: usize) {
        if self.snapshot_every == 0 {
            return;
        }
        let node = &mut self.nodes[i];
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let applied = raft.log().applied();
        let newest = node.snapshots.keys().next_back().copied().unwrap_or(0);
        if applied < newest + self.snapshot_every {
            return;
        }
        let term = raft.log().term(applied).expect("applied entries are held");
        node.snapshots.insert(
            applied,
            SimSnapshot {
                term,
                membership: raft.membership_at(applied),
                state: node.applied.clone(),
            },
        );
        while node.snapshots.len() > 2 {
            node.snapshots.pop_first();
        }
        let older = *node.snapshots.keys().next().expect("two snapshots");
        if older < applied && raft.compact(older).is_ok() {
            let mut batch = WriteBatch::new();
            batch.purge(GROUP, older + 1);
            self.stage_write(i, batch, None, Vec::new());
        }
    }

    fn send(&mut self, m: Message) {
        self.outcome.messages += 1;
        let f = self.cfg.faults;
        let snapshot = self.snapshot_data(&m);
        let cut = self.blocked.contains(&(m.from, m.to));
        if cut || self.rng.chance(self.loss_percent, 100) {
            self.outcome.dropped += 1;
            if !cut {
                self.outcome.lost += 1;
            }
            if let (Some((_, incarnation)), MessageBody::Snapshot { snapshot, .. }) =
                (snapshot, &m.body)
            {
                // The transfer failed; the leader hears of it a bit later.
                let report = Event::SnapshotReport {
                    leader: m.from,
                    incarnation,
                    to: m.to,
                    index: snapshot.index,
                    ok: false,
                };
                self.schedule(TICK, report);
            }
            return;
        }
        let copies = if self.rng.chance(self.dup_percent, 100) {
            self.outcome.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            // After the heal every link delivers in order, like the
            // runtime's QUIC streams: "clean" includes no reordering.
            let mut delay = if f.reorder && !self.healing {
                self.rng.range(1, 16)
            } else {
                3
            };
            if f.delay && !self.healing && self.rng.chance(3, 100) {
                delay += self.rng.range(5 * TICK, 30 * TICK);
                self.outcome.delayed += 1;
            }
            let latest = self.link_latest.entry((m.from, m.to)).or_insert(0);
            if self.now + delay < *latest {
                self.outcome.reordered += 1;
            } else {
                *latest = self.now + delay;
            }
            let event = match &snapshot {
                Some((data, incarnation)) => Event::DeliverSnapshot {
                    msg: m.clone(),
                    data: data.clone(),
                    sender_incarnation: *incarnation,
                },
                None => Event::Deliver(m.clone()),
            };
            self.schedule(delay, event);
        }
    }

    /// For an InstallSnapshot message: the sender's snapshot data (which
    /// the runtime would stream) and the sender's incarnation.
    fn snapshot_data(&self, m: &Message) -> Option<(SimSnapshot, u64)> {
        let MessageBody::Snapshot { snapshot, .. } = m.body else {
            return None;
        };
        let sender = &self.nodes[(m.from - 1) as usize];
        let data = sender.snapshots.get(&snapshot.index).unwrap_or_else(|| {
            panic!(
                "sim: node {} sends snapshot {snapshot:?} it does not have",
                m.from
            )
        });
        Some((data.clone(), sender.incarnation))
    }

    /// Feeds the checkers with node `i`'s current state.
    fn observe(&mut self, i: usize) {
        let mut found = Vec::new();
        let mut new_leader = false;
        let mut recheck = Vec::new();
        {
            let node = &mut self.nodes[i];
            let Some(raft) = node.raft.as_ref() else {
                return;
            };
            let checked = if self.cfg.skip_validate {
                Ok(())
            } else {
                raft.validate()
            };
            if let Err(e) = checked {
                let detail = format!("node {} term {}: {e}", raft.id(), raft.term());
                self.violate(Violation::new("replica invariants (validate)", detail));
                return;
            }
            let (id, term, role) = (raft.id(), raft.term(), raft.role());
            if role == Role::Leader {
                let now = self.now;
                note_transfer(&mut self.pending_transfer, &mut self.outcome, id, term, now);
                if let Err(v) = self.election_safety.observe_leader(term, id) {
                    found.push(v);
                }
                if node.led_term != Some(term) {
                    node.led_term = Some(term);
                    if self.cfg.faults.members && !self.healing && self.members_rng.chance(1, 4) {
                        // Changes racing with elections: ask the new
                        // leader at once, before it committed anything.
                        new_leader = true;
                    }
                    let log = raft.log().entries();
                    let first = raft.log().first_index();
                    if let Err(v) = self
                        .leader_completeness
                        .check_leader(id, term, log, first, None)
                    {
                        found.push(v);
                    }
                }
            }
            let commit = raft.log().committed();
            if commit > node.seen_commit {
                let newly: Vec<Entry> = (node.seen_commit + 1..=commit)
                    .filter_map(|k| raft.log().entry(k).cloned())
                    .collect();
                node.seen_commit = commit;
                match self.leader_completeness.observe_commit(id, term, &newly) {
                    Ok(changed) => recheck = changed,
                    Err(v) => found.push(v),
                }
            }
        }
        for v in found {
            self.violate(v);
        }
        if !recheck.is_empty() {
            self.check_leaders(&recheck);
        }
        if new_leader {
            self.change_membership(i);
        }
    }

    fn check_leaders(&mut self, indexes: &[Index]) {
        for n in &self.nodes {
            let Some(r) = n.raft.as_ref() else { continue };
            if r.role() != Role::Leader {
                continue;
            }
            let log = r.log().entries();
            if let Err(v) = self.leader_completeness.check_leader(
                r.id(),
                r.term(),
                log,
                r.log().first_index(),
                Some(indexes),
            ) {
                self.outcome.violation.get_or_insert(v);
                return;
            }
        }
    }

    // ------------------------------------------------------------------
    // Nemesis
    // ------------------------------------------------------------------

    fn nemesis(&mut self) {
        if self.healing {
            return;
        }
        let next = self.rng.range(3 * TICK, 30 * TICK);
        self.schedule(next, Event::Nemesis);
        let f = self.cfg.faults;
        let n = self.nodes.len();
        let mut actions: Vec<u8> = vec![0]; // heal partitions
        if f.partition && n >= 2 {
            actions.extend([1, 2, 3, 4, 5]);
        }
        if f.crash {
            actions.extend([6, 6]);
        }
        if f.wipe {
            actions.extend(std::iter::repeat_n(7, self.cfg.wipe_weight));
        }
        let action = actions[self.rng.range(0, actions.len() as u64) as usize];
        match action {
            0 => {
                self.blocked.clear();
                self.trace(|| "nemesis: heal partitions".into());
            }
            1 => self.partition_split(None),
            2 => {
                let minority = self.rng.range(1, (n as u64 - 1) / 2 + 1) as usize;
                self.partition_split(Some(minority.max(1)));
            }
            3 => self.partition_one_way(),
            4 => self.partition_bridge(),
            5 => self.isolate_leader(),
            6 => self.crash_random(),
            _ => self.wipe_random(),
        }
    }

    fn shuffled_ids(&mut self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for k in (1..ids.len()).rev() {
            let j = self.rng.range(0, k as u64 + 1) as usize;
            ids.swap(k, j);
        }
        ids
    }

    fn cut(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// A symmetric split; with `Some(k)`, a minority of `k` nodes.
    fn partition_split(&mut self, minority: Option<usize>) {
        let ids = self.shuffled_ids();
        let n = ids.len();
        let k = minority.unwrap_or_else(|| self.rng.range(1, n as u64) as usize);
        let (a, b) = ids.split_at(k.min(n - 1).max(1));
        self.blocked.clear();
        self.cut(a, b);
        self.outcome.partitions += 1;
        let (a, b) = (a.to_vec(), b.to_vec());
        self.trace(|| format!("nemesis: partition {a:?} | {b:?}"));
    }

    fn partition_one_way(&mut self) {
        let count = self.rng.range(1, 4);
        for _ in 0..count {
            let ids = self.shuffled_ids();
            self.blocked.insert((ids[0], ids[1]));
            self.outcome.partitions += 1;
            let (x, y) = (ids[0], ids[1]);
            self.trace(|| format!("nemesis: one-way cut {x} -> {y}"));
        }
    }

    /// Two sides that only one bridge node connects.
    fn partition_bridge(&mut self) {
        let ids = self.shuffled_ids();
        if ids.len() < 3 {
            return self.partition_split(None);
        }
        let bridge = ids[0];
        let rest = &ids[1..];
        let k = self.rng.range(1, rest.len() as u64) as usize;
        let (a, b) = rest.split_at(k);
        self.blocked.clear();
        self.cut(a, b);
        self.outcome.partitions += 1;
        let (a, b) = (a.to_vec(), b.to_vec());
        self.trace(|| format!("nemesis: bridge {bridge} between {a:?} and {b:?}"));
    }

    fn isolate_leader(&mut self) {
        let leader = self
            .nodes
            .iter()
            .filter_map(|n| n.raft.as_ref())
            .find(|r| r.role() == Role::Leader)
            .map(|r| r.id());
        let Some(l) = leader else {
            return self.partition_split(Some(1));
        };
        let others: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&x| x != l)
            .collect();
        self.blocked.clear();
        self.cut(&[l], &others);
        self.outcome.partitions += 1;
        self.trace(|| format!("nemesis: isolate leader {l}"));
    }

    fn crash_random(&mut self) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].raft.is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        // Prefer the leader half of the time: that is where bugs hide.
        let leader = live.iter().copied().find(|&i| {
            self.nodes[i]
                .raft
                .as_ref()
                .is_some_and(|r| r.role() == Role::Leader)
        });
        let i = match leader {
            Some(l) if self.rng.chance(1, 2) => l,
            _ => live[self.rng.range(0, live.len() as u64) as usize],
        };
        self.crash(i);
        let down = self.rng.range(TICK, 40 * TICK);
        self.schedule(down, Event::Restart(i));
    }

    /// Wipes a node: it crashes and comes back with an empty disk, no
    /// snapshots and [`Config::rejoining`]. A wiped replica is a lost
    /// replica, so only one at a time and only while every other node is
    /// up and none is still rejoining: the group never loses more than one
    /// replica's durable state at once (a minority for 3 or more nodes).
    /// Prefers a node that voted in its current term half of the time: a
    /// replica that forgets its vote is where a rejoin bug shows.
    fn wipe_random(&mut self) {
        let all_up = self.nodes.iter().all(|n| n.raft.is_some() && !n.rejoining);
        // Nor while a configuration change is in flight: a wiped voter
        // counts toward nothing, and with a removed leader holding the
        // newest entries the group could be left without any quorum
        // (operators replace disks between changes, not during them).
        let changing = self.nodes.iter().any(|n| {
            n.raft
                .as_ref()
                .is_some_and(|r| r.conf_index().is_some_and(|c| c > r.log().committed()))
        });
        if !all_up || changing || self.nodes.len() < 3 {
            return;
        }
        let voted: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() != Role::Leader && r.vote().is_some())
            })
            .collect();
        let i = if !voted.is_empty() && self.rng.chance(1, 2) {
            voted[self.rng.range(0, voted.len() as u64) as usize]
        } else {
            self.rng.range(0, self.nodes.len() as u64) as usize
        };
        self.wipe(i);
        let down = self.rng.range(1, 10 * TICK);
        self.schedule(down, Event::Restart(i));
    }

    fn wipe(&mut self, i: usize) {
        self.crash(i);
        let node = &mut self.nodes[i];
        node.disk = MemLog::new();
        node.snapshots.clear();
        node.seen_commit = 0;
        node.rejoining = true;
        let id = node.id;
        self.outcome.wipes += 1;
        self.trace(|| format!("node {id} is WIPED: empty disk, rejoining"));
    }

    /// Asks the leader (if one is up) to hand its leadership to another
    /// voter chosen at random (thesis §3.10), every 20-200 ticks. The core
    /// may refuse (a transfer already pending to another node). Its
    /// choices come from a generator of their own: the other faults'
    /// schedule starts out as it was without transfers.
    fn transfer_random(&mut self) {
        if self.healing {
            return;
        }
        let next = self.transfer_rng.range(20 * TICK, 200 * TICK);
        self.schedule(next, Event::Transfer);
        let Some(l) = (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .raft
                .as_ref()
                .is_some_and(|r| r.role() == Role::Leader)
        }) else {
            return;
        };
        let others: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&id| id != self.nodes[l].id)
            .collect();
        let to = others[self.transfer_rng.range(0, others.len() as u64) as usize];
        let Some(raft) = self.nodes[l].raft.as_mut() else {
            return;
        };
        let (from, term) = (raft.id(), raft.term());
        match raft.transfer_leader(to) {
            Ok(()) => {
                self.outcome.transfers += 1;
                self.pending_transfer = Some(PendingTransfer {
                    to,
                    term,
                    until: self.now + 2 * u64::from(ELECTION_TICKS) * TICK,
                });
                self.trace(|| format!("nemesis: leader {from} transfers to {to} in term {term}"));
                self.process(l);
            }
            Err(e) => self.trace(|| format!("nemesis: leader {from} refuses a transfer: {e}")),
        }
    }

    /// Every 20-100 ticks (every 3 while healing), asks the leader for
    /// a membership change chosen at random among: add a node that is not
    /// a member as a learner, promote a learner (the core refuses until
    /// it caught up), and (not while healing, nor while a wiped node
    /// rejoins) remove a voter, the leader included, down to three voters
    /// (so 3-node groups never change). A third of the time a second
    /// change follows at once; a new leader is sometimes asked at once
    /// too (changes racing with elections). While healing, every node is
    /// added back and promoted. Its choices
    /// come from a generator of their own.
    fn members_random(&mut self) {
        let next = if self.healing {
            3 * TICK
        } else {
            self.members_rng.range(20 * TICK, 100 * TICK)
        };
        self.schedule(next, Event::Members);
        let Some(l) = (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .raft
                .as_ref()
                .is_some_and(|r| r.role() == Role::Leader)
        }) else {
            return;
        };
        self.change_membership(l);
        if !self.healing && self.members_rng.chance(1, 3) {
            // An impatient operator: a second change at once, which the
            // core refuses while the first is uncommitted.
            self.change_membership(l);
        }
    }

    /// Node `l` (if it leads) is asked for the next membership change.
    fn change_membership(&mut self, l: usize) {
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let healing = self.healing;
        // A wiped replica counts toward nothing until it rejoined: a
        // removal then could leave no quorum that can act.
        let rejoining = self.nodes.iter().any(|n| n.rejoining);
        // A removed replica that never hears of its removal times out and
        // campaigns; only pre-vote or check-quorum (both on in the runtime,
        // which also deletes removed replicas) keep it from deposing
        // leaders over and over (thesis §4.2.3). Without either, removals
        // would only measure that disruption.
        let may_remove = self.pre_vote || self.check_quorum;
        let Some(raft) = self.nodes[l].raft.as_ref() else {
            return;
        };
        if raft.role() != Role::Leader {
            return;
        }
        let m = raft.membership().clone();
        let missing: Vec<NodeId> = all.iter().copied().filter(|&id| !m.contains(id)).collect();
        let learners: Vec<NodeId> = m.learners.iter().copied().collect();
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        let mut options: Vec<ConfChange> = missing
            .iter()
            .map(|&id| ConfChange::AddLearner(id))
            .collect();
        options.extend(learners.iter().map(|&id| ConfChange::PromoteLearner(id)));
        if !healing && voters.len() > 3 && !rejoining && may_remove {
            options.extend(voters.iter().map(|&id| ConfChange::RemoveMember(id)));
        }
        if healing && !missing.is_empty() {
            // Healing: add everyone back before promoting anyone.
            options.retain(|c| matches!(c, ConfChange::AddLearner(_)));
        }
        if options.is_empty() {
            return;
        }
        let change = options[self.members_rng.range(0, options.len() as u64) as usize];
        let Some(raft) = self.nodes[l].raft.as_mut() else {
            return;
        };
        let (from, term) = (raft.id(), raft.term());
        match raft.propose_conf_change(change) {
            Ok(p) => {
                self.outcome.conf_changes += 1;
                self.trace(|| {
                    format!("nemesis: leader {from} term {term} proposes {change:?} at {p:?}")
                });
                self.process(l);
            }
            Err(e) => self.trace(|| format!("nemesis: leader {from} refuses {change:?}: {e}")),
        }
    }

    /// A wiped node whose core says it caught up is an ordinary node again.
    fn note_rejoined(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let caught_up = node.rejoining && node.raft.as_ref().is_some_and(|r| !r.rejoining());
        if caught_up {
            node.rejoining = false;
            self.outcome.rejoined += 1;
            let id = node.id;
            self.trace(|| format!("node {id} has rejoined"));
        }
    }

    // ------------------------------------------------------------------
    // Heal and the final checks
    // ------------------------------------------------------------------

    fn heal(&mut self) {
        self.healing = true;
        self.blocked.clear();
        self.loss_percent = 0;
        self.dup_percent = 0;
        self.trace(|| "HEAL: network clean, every node up, no new proposals".into());
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                self.start_node(i);
            }
        }
    }

    /// One leader whose whole log is committed, and every node holding and
    /// having applied exactly that log.
    fn converged(&self) -> bool {
        let rafts: Vec<&Raft> = self.nodes.iter().filter_map(|n| n.raft.as_ref()).collect();
        if rafts.len() != self.nodes.len() {
            return false;
        }
        let leaders: Vec<&&Raft> = rafts.iter().filter(|r| r.role() == Role::Leader).collect();
        let [leader] = leaders.as_slice() else {
            return false;
        };
        let last = leader.log().last_index();
        let everyone =
            leader.membership().learners.is_empty() && leader.voters().len() == self.nodes.len();
        everyone
            && leader.log().committed() == last
            && rafts.iter().all(|r| {
                r.log().last_index() == last
                    && r.log().applied() == last
                    && r.log().committed() == last
                    && r.term() == leader.term()
            })
    }

    fn check_after_heal(&mut self) {
        for n in &self.nodes {
            let values: Vec<u64> = n.applied.iter().map(|(_, d)| decode_value(d)).collect();
            if let Err(v) = self.liveness.check_node(n.id, &values) {
                self.outcome.violation.get_or_insert(v);
                return;
            }
        }
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (Some(ra), Some(rb)) = (&self.nodes[a].raft, &self.nodes[b].raft) else {
                    continue;
                };
                if let Err(v) = LogMatching::check_pair(ra.log().entries(), rb.log().entries()) {
                    self.outcome.violation.get_or_insert(v);
                    return;
                }
            }
        }
    }

    fn describe_nodes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| match &n.raft {
                None => format!("[{} down]", n.id),
                Some(r) => format!(
                    "[{} {:?} t{} last {} commit {} applied {}]",
                    n.id,
                    r.role(),
                    r.term(),
                    r.log().last_index(),
                    r.log().committed(),
                    r.log().applied()
                ),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Node `id` leads `term` at time `now`: the pending transfer completed
/// if `id` is its target, `term` the next one, and the leader had not
/// given up yet (an election that late is an ordinary one); any leader of
/// a later term ends it.
fn note_transfer(
    pending: &mut Option<PendingTransfer>,
    outcome: &mut Outcome,
    id: NodeId,
    term: Term,
    now: u64,
) {
    if let Some(t) = *pending {
        if term > t.term {
            if id == t.to && term == t.term + 1 && now <= t.until {
                outcome.transfers_completed += 1;
            }
            *pending = None;
        }
    }
}

/// The client's values are u64s in little-endian.
fn decode_value(data: &Bytes) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}
