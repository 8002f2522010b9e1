//! The Raft state machine of one replica of one group.
//!
//! Inputs: [`Raft::tick`], [`Raft::step`], [`Raft::propose`],
//! [`Raft::on_persisted`], [`Raft::on_applied`]. Output: [`Raft::ready`].
//! No input performs I/O or reads a clock; the same inputs in the same
//! order always produce the same Readies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::config::{Bugs, Config};
use crate::error::{
    CompactError, ConfChangeError, ProposeError, ReadError, RestoreError, TransferError,
};
use crate::log::RaftLog;
use crate::message::{AppendResponse, Message, MessageBody};
use crate::progress::{Progress, ProgressState};
use crate::ready::{ReadState, Ready, SoftState};
use crate::rng::SplitMix64;
use crate::types::{
    ConfChange, Entry, EntryKind, HardState, Index, Membership, NodeId, Role, SnapshotInfo, Term,
};

/// Most committed entries handed out in one Ready, so one Ready stays
/// bounded however far the commit index jumps.
const MAX_APPLY_PER_READY: usize = 4096;

/// How far (in entries) a learner's acknowledged log may lag the leader's
/// last index for [`ConfChange::PromoteLearner`] to be accepted.
pub const PROMOTE_MAX_LAG: Index = 16;

/// Where a proposal landed in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// The leader's term; the entries are committed with these indexes only
    /// if they still have this term when applied.
    pub term: Term,
    /// Index of the first command.
    pub first_index: Index,
    /// Index of the last command.
    pub last_index: Index,
}

/// A configuration an operator forced on a replica (unsafe recovery, see
/// [`Raft::force_voters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedVoters {
    /// The replica's last log index when it was forced.
    pub at: Index,
    /// The replica's term when it was forced.
    pub term: Term,
    /// The forced configuration.
    pub membership: Membership,
}

/// Counters for the simulation and metrics; they never affect behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Elections this replica started (real, not pre-vote).
    pub elections: u64,
    /// Times this replica became leader.
    pub became_leader: u64,
    /// Times a leader stepped down because it lost contact with a quorum.
    pub check_quorum_stepdowns: u64,
    /// Times a leader found a follower that lost its state (a lost disk)
    /// and started repairing it: a heartbeat answer said it lacks entries
    /// it had acknowledged, or its new incarnation asked for a rejoin
    /// index (it was fenced). One loss may count twice, once each way.
    pub followers_lost_state: u64,
    /// Leader transfers this replica started as leader (thesis §3.10).
    pub transfers_started: u64,
    /// Leader transfers this replica gave up after an election timeout
    /// without having stepped down.
    pub transfers_aborted: u64,
    /// Elections this replica started because its leader sent it
    /// `TimeoutNow` (counted in `elections` too).
    pub transfer_elections: u64,
    /// Reads a leader answered under its lease, without a round.
    pub lease_reads: u64,
    /// Configuration changes this replica proposed as leader.
    pub conf_changes: u64,
    /// Times a leader stepped down because the configuration that
    /// removed it committed.
    pub removed_stepdowns: u64,
    /// Times this replica quiesced (as leader or follower).
    pub quiesced: u64,
}

/// One replica's Raft state (Figure 2) plus what pre-vote, check-quorum
/// and pipelined replication need.
#[derive(Clone, Debug)]
pub struct Raft {
    config: Config,
    bugs: Bugs,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader_id: Option<NodeId>,
    log: RaftLog,
    /// The configuration in effect: that of the last configuration entry
    /// in the log, else `snapshot_membership` (thesis §4.1).
    membership: Membership,
    /// The configuration as of the log's snapshot index.
    snapshot_membership: Membership,
    /// The configuration entries in the log after the snapshot, ascending.
    confs: Vec<(Index, Membership)>,
    /// An operator's forced configuration ([`Raft::force_voters`]), until
    /// a configuration written after it is committed.
    forced: Option<ForcedVoters>,
    /// Leader only: one entry per other member (voters and learners).
    progress: BTreeMap<NodeId, Progress>,
    /// Candidate and pre-candidate only: answers received.
    votes: BTreeMap<NodeId, bool>,
    /// Ticks since the last election timeout reset (followers: since the
    /// leader was last heard; leader: since the last check-quorum round).
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    rng: SplitMix64,
    /// Leader only: appends must go out before the next Ready (set by
    /// proposals and commit advances so that many of them share one
    /// message per follower).
    needs_broadcast: bool,
    /// Leader only: the commit index advanced and was not announced,
    /// because the group is idle but for members whose append of the
    /// whole log is in flight (see [`Raft::commit_can_wait`]): when they
    /// answer, the Quiesce announces it; otherwise the next heartbeat or
    /// append does.
    commit_unannounced: bool,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    /// A snapshot installed in place of the log, for the next Ready.
    installed_snapshot: Option<SnapshotInfo>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
    stats: Stats,
    /// See [`Config::rejoining`]: votes are restricted until the log holds
    /// `rejoin_at`, the rejoin index a leader confirmed.
    rejoining: bool,
    rejoin_at: Option<Index>,
    /// Rejoining: a random id of this incarnation, the id of all its
    /// rejoin requests (0 until the first), and ticks since the last one.
    rejoin_nonce: u64,
    rejoin_request_elapsed: u32,
    /// Leader: heartbeat round of this term (see [`MessageBody::Heartbeat`]).
    round: u64,
    /// Leader: a read waits for a new heartbeat round.
    needs_round: bool,
    /// Leader: reads whose round is not confirmed by a quorum yet.
    pending_reads: Vec<PendingRead>,
    /// Leader: reads that arrived before it committed an entry of its term
    /// (until then its commit index may be behind the group's, §6.4 step 1).
    reads_awaiting_commit: Vec<ReadRequest>,
    /// Answers to local reads, for the next Ready.
    read_states: Vec<ReadState>,
    /// Ticks since this replica started (a logical clock for the lease).
    ticks: u64,
    /// Leader: the tick each heartbeat round of this term was sent at, for
    /// the rounds not yet known confirmed (oldest first).
    round_sent: VecDeque<(u64, u64)>,
    /// Leader: the tick the newest quorum-confirmed round was sent at.
    lease_from: Option<u64>,
    /// Leader: a leader transfer was started in this term: its target
    /// may be elected despite the followers' lease, so no lease read is
    /// served for the rest of the term.
    lease_void: bool,
    /// Leader only: the voter leadership is being handed to (thesis
    /// §3.10). While set, proposals are refused with this node as the
    /// hint; cleared when this replica steps down or gives up.
    lead_transferee: Option<NodeId>,
    /// Leader only: ticks since the pending transfer began; it is given up
    /// after one election timeout.
    transfer_elapsed: u32,
    /// Quiesced (see [`Config::quiesce`]): ticks only advance the clock.
    quiesced: bool,
    /// `ticks` when this replica quiesced (a follower: when it last heard
    /// its leader's group).
    quiesced_at: u64,
    /// Quiesced follower: ticks since the runtime last heard the leader's
    /// node, if it knows (see [`Raft::elapse`]).
    leader_silent: Option<u64>,
    /// The member nodes the runtime says are down (node-level liveness,
    /// see [`Raft::set_down`]): a quiescing leader does not wait for them.
    down: Vec<NodeId>,
}

/// Whether a member holds the leader's whole log (and is replicated to
/// normally, not rejoining).
fn caught_up(p: &Progress, last: Index) -> bool {
    // A member still rejoining (it lost its state) needs heartbeats to
    // finish: it only asks for its rejoin index when it hears the leader.
    p.match_index == last && p.state == crate::progress::ProgressState::Replicate && !p.rejoining
}

/// The configuration entries among `entries`, in log order.
fn conf_entries(entries: &[Entry]) -> Vec<(Index, Membership)> {
    entries
        .iter()
        .filter_map(|e| e.kind.conf().map(|m| (e.index, m.clone())))
        .collect()
}

/// Heartbeat rounds whose send tick a leader remembers (older ones only
/// matter for the lease, and a newer confirmed round supersedes them).
const MAX_ROUNDS_TRACKED: usize = 64;

/// A read index request the leader is serving.
#[derive(Clone, Copy, Debug)]
struct ReadRequest {
    id: u64,
    /// The follower that asked, or `None` for a local read.
    from: Option<NodeId>,
    /// A rejoining replica's request (see [`Config::rejoining`]).
    rejoin: bool,
}

/// A read registered at `index`, waiting for a quorum to answer `round`.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    req: ReadRequest,
    index: Index,
    round: u64,
}

impl Raft {
    /// A replica with an empty log and no durable state.
    pub fn new(config: Config) -> Result<Raft, RestoreError> {
        Raft::restore(config, HardState::default(), Vec::new(), 0)
    }

    /// A replica restarted from what it had made durable: its hard state,
    /// its log entries (contiguous from index 1) and how far its state
    /// machine had applied (0 if the state machine starts empty).
    pub fn restore(
        config: Config,
        hard_state: HardState,
        entries: Vec<Entry>,
        applied: Index,
    ) -> Result<Raft, RestoreError> {
        Raft::restore_from_snapshot(
            config,
            hard_state,
            SnapshotInfo::default(),
            entries,
            applied,
        )
    }

    /// A replica restarted from its latest snapshot and the stored log.
    ///
    /// `stored` is what the log store holds, which may overlap the
    /// snapshot (a purge that did not become durable before a crash): only
    /// entries after `snapshot.index` are kept, and only if they continue
    /// the snapshot (the stored entry at `snapshot.index` has the
    /// snapshot's term, or the stored log starts right after it);
    /// otherwise they were a divergent, uncommitted suffix and are
    /// dropped. `applied` is where the state machine stands (at least the
    /// snapshot's index once it restored the snapshot).
    pub fn restore_from_snapshot(
        config: Config,
        hard_state: HardState,
        snapshot: SnapshotInfo,
        stored: Vec<Entry>,
        applied: Index,
    ) -> Result<Raft, RestoreError> {
        Raft::restore_with_membership(config, hard_state, snapshot, None, stored, applied)
    }

    /// [`Raft::restore_from_snapshot`] with the group's configuration as
    /// of the snapshot's index (what [`Raft::snapshot_membership`] said
    /// when the snapshot was taken or installed). `None` means the
    /// initial configuration, [`Config::voters`]. Configuration entries in
    /// the restored log after the snapshot take effect over it.
    pub fn restore_with_membership(
        config: Config,
        mut hard_state: HardState,
        snapshot: SnapshotInfo,
        snapshot_membership: Option<Membership>,
        stored: Vec<Entry>,
        applied: Index,
    ) -> Result<Raft, RestoreError> {
        config.validate()?;
        let continues = match stored.first() {
            None => false,
            Some(first) if first.index == snapshot.index + 1 => true,
            Some(first) if first.index > snapshot.index + 1 => {
                return Err(RestoreError::SnapshotGap {
                    first: first.index,
                    snapshot_index: snapshot.index,
                })
            }
            Some(first) => stored
                .get((snapshot.index - first.index) as usize)
                .is_some_and(|e| e.index == snapshot.index && e.term == snapshot.term),
        };
        let entries: Vec<Entry> = if continues {
            stored
                .into_iter()
                .filter(|e| e.index > snapshot.index)
                .collect()
        } else {
            Vec::new()
        };
        if snapshot.term > hard_state.term {
            // The snapshot was stored but the term that came with it was not
            // yet durable: adopting a higher term (without a vote) is what
            // receiving any message of that term does.
            hard_state.term = snapshot.term;
            hard_state.vote = None;
        }
        let mut prev_term = snapshot.term;
        for (i, e) in entries.iter().enumerate() {
            let expected = snapshot.index + 1 + i as Index;
            if e.index != expected {
                return Err(RestoreError::Gap {
                    index: e.index,
                    expected,
                });
            }
            if e.term < prev_term || e.term > hard_state.term {
                return Err(RestoreError::BadTerm {
                    index: e.index,
                    entry_term: e.term,
                    term: hard_state.term,
                });
            }
            prev_term = e.term;
        }
        let rng = SplitMix64::new(config.seed);
        let snapshot_membership =
            snapshot_membership.unwrap_or_else(|| Membership::with_voters(config.voters.clone()));
        let confs = conf_entries(&entries);
        let membership = confs
            .last()
            .map_or_else(|| snapshot_membership.clone(), |(_, m)| m.clone());
        let log = RaftLog::restored(
            snapshot.index,
            snapshot.term,
            entries,
            hard_state.commit,
            applied,
        );
        let last_soft_state = SoftState {
            role: Role::Follower,
            leader_id: None,
        };
        let mut raft = Raft {
            bugs: config.bugs(),
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader_id: None,
            log,
            membership,
            snapshot_membership,
            confs,
            forced: None,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            rng,
            needs_broadcast: false,
            commit_unannounced: false,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            installed_snapshot: None,
            last_hard_state: hard_state,
            last_soft_state,
            stats: Stats::default(),
            rejoining: false,
            rejoin_at: None,
            rejoin_nonce: 0,
            rejoin_request_elapsed: 0,
            round: 0,
            needs_round: false,
            pending_reads: Vec::new(),
            reads_awaiting_commit: Vec::new(),
            read_states: Vec::new(),
            ticks: 0,
            round_sent: VecDeque::new(),
            lease_from: None,
            lease_void: false,
            lead_transferee: None,
            transfer_elapsed: 0,
            quiesced: false,
            quiesced_at: 0,
            leader_silent: None,
            down: Vec::new(),
        };
        raft.rejoining = raft.config.rejoining;
        raft.last_hard_state = raft.hard_state();
        raft.reset_election_timer();
        raft.debug_validate();
        Ok(raft)
    }

    // ----------------------------------------------------------------
    // Observers
    // ----------------------------------------------------------------

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this replica believes in.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// The log (entries and cursors).
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Term, vote and commit as they would be persisted now.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    /// The voting members of the configuration in effect.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.membership.voters
    }

    /// The configuration in effect: the latest in this replica's log,
    /// committed or not (thesis §4.1).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The configuration as of the log's snapshot index: store it with
    /// the snapshot (after [`Raft::compact`] or an installed snapshot) and
    /// pass it to [`Raft::restore_with_membership`].
    pub fn snapshot_membership(&self) -> &Membership {
        &self.snapshot_membership
    }

    /// The configuration as of `index`, for a snapshot taken there: that
    /// of the last configuration entry at or before it, else the
    /// snapshot's. Meaningful for indexes from the snapshot's on.
    pub fn membership_at(&self, index: Index) -> Membership {
        self.confs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(|| self.snapshot_membership.clone(), |(_, m)| m.clone())
    }

    /// The index of the latest configuration entry in the log, if the log
    /// (after its snapshot) holds one.
    pub fn conf_index(&self) -> Option<Index> {
        self.confs.last().map(|(i, _)| *i)
    }

    /// Leader only: replication progress of follower `id`.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// Counters (elections, leaderships, step-downs).
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether this replica lost its state and has not caught up yet, so
    /// it restricts its votes (see [`Config::rejoining`]).
    pub fn rejoining(&self) -> bool {
        self.rejoining
    }

    fn quorum(&self) -> usize {
        self.membership.voters.len() / 2 + 1
    }

    fn is_voter(&self, id: NodeId) -> bool {
        self.membership.voters.contains(&id)
    }

    // ----------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------

    /// Advances logical time by one tick: elections time out, leaders send
    /// heartbeats and check that a quorum is still in contact.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.quiesced {
            // Nothing times out while quiesced: time only passes.
            return;
        }
        match self.role {
            Role::Leader => {
                self.tick_transfer();
                self.tick_leader();
            }
            _ => self.tick_election(),
        }
        self.debug_validate();
    }

    /// Whether this replica is quiesced ([`Config::quiesce`]): it needs no
    /// [`Raft::tick`] until something wakes it; the runtime may stop
    /// ticking it and report the ticks it skipped with [`Raft::elapse`]
    /// before it next feeds the replica anything.
    pub fn quiesced(&self) -> bool {
        self.quiesced
    }

    /// A quiesced replica was not ticked for `ticks` ticks (the runtime's
    /// clock went on). `leader_silent` is how many ticks ago the runtime
    /// last heard from the leader's node at all (its node-level liveness),
    /// if it knows: a quiesced follower that wakes counts its leader as
    /// heard that recently, so a replica that campaigns while the leader's
    /// node is alive does not get its vote (the quiesced form of
    /// check-quorum's vote refusal). It never counts the leader as heard
    /// later than the group's own last message from it, so the promise
    /// behind lease reads holds. No effect unless quiesced.
    pub fn elapse(&mut self, ticks: u64, leader_silent: Option<u64>) {
        if !self.quiesced {
            return;
        }
        self.ticks += ticks;
        self.leader_silent = leader_silent;
    }

    /// Wakes a quiesced replica, as any message, proposal or read does by
    /// itself; the runtime calls it when the leader's node stopped
    /// answering (with how long ago it was last heard). A woken follower's
    /// election timer runs again from the time its leader was last heard
    /// (so one whose leader's node is dead campaigns within an election
    /// timeout); a woken leader heartbeats again (or, quiescing again at
    /// once, tells every caught-up member so: a member that lost its log
    /// answers that as a heartbeat, which keeps the group awake until it
    /// is repaired). No effect on an awake replica.
    pub fn wake(&mut self, leader_silent: Option<u64>) {
        if self.quiesced {
            self.leader_silent = leader_silent.or(self.leader_silent);
            self.unquiesce();
        }
    }

    /// A proposal, read or transfer reached a quiesced leader (at a
    /// follower it changes nothing here: what it sends the leader wakes
    /// that, and the answer wakes this replica).
    fn wake_leader(&mut self) {
        if self.role == Role::Leader {
            self.unquiesce();
        }
    }

    /// Makes this follower's election timer fire in `delay` ticks, no
    /// sooner and no later (the runtime's stagger after its leader's node
    /// died: one surviving voter goes first and the others wait their
    /// turn, so thousands of groups do not all split their votes at once;
    /// a random timer that fired earlier would race the voter whose turn
    /// it is). Never sooner than an election timeout after the leader was
    /// last heard, so no lease a leader may still hold is cut short; no
    /// effect on a leader, a quiesced replica or a non-voter.
    pub fn campaign_within(&mut self, delay: u32) {
        if self.role == Role::Leader || self.quiesced || !self.is_voter(self.config.id) {
            return;
        }
        // Fire in `wait` ticks: at least `delay`, and not before a whole
        // election timeout since the leader was last heard.
        let lease_left = self
            .config
            .election_ticks
            .saturating_sub(self.election_elapsed);
        let wait = delay.max(1).max(lease_left);
        // The timeout moves, not the time since the leader was heard:
        // that one is what this replica's refusal of other candidates
        // rests on, and lowering it would refuse the voter whose turn it
        // is. It holds until the timeout is drawn again (a new term, this
        // replica's own campaign), so through a whole term of following
        // a leader (bounded: at most `delay` or an election timeout).
        self.randomized_election_timeout = self.election_elapsed.saturating_add(wait);
    }

    fn unquiesce(&mut self) {
        if !self.quiesced {
            return;
        }
        self.quiesced = false;
        match self.role {
            Role::Leader => {
                // A fresh check-quorum window: nobody was expected to
                // answer while quiesced.
                self.election_elapsed = 0;
                self.heartbeat_elapsed = 0;
                for p in self.progress.values_mut() {
                    p.recent_active = true;
                }
            }
            _ => {
                let since = self.ticks.saturating_sub(self.quiesced_at);
                let heard = self.leader_silent.map_or(since, |s| s.min(since));
                self.election_elapsed = u32::try_from(heard).unwrap_or(u32::MAX);
            }
        }
        self.leader_silent = None;
    }

    /// A leader with nothing of its own to do: no transfer, its whole log
    /// committed and of its term, no read waiting, no round due.
    fn idle_leader(&self) -> bool {
        let last = self.log.last_index();
        self.role == Role::Leader
            && self.lead_transferee.is_none()
            && self.log.committed() == last
            && self.log.term(last) == Some(self.term)
            && self.pending_reads.is_empty()
            && self.reads_awaiting_commit.is_empty()
            && !self.needs_round
    }

    /// Leader: the group is idle and every member holds the whole log, so
    /// nothing needs a heartbeat until something happens.
    fn quiescable(&self) -> bool {
        let last = self.log.last_index();
        self.idle_leader()
            && !self.needs_broadcast
            && self
                .progress
                .iter()
                .all(|(id, p)| caught_up(p, last) || self.down.contains(id))
    }

    /// Leader, at a Ready with a commit to announce: quiesce at once
    /// instead of broadcasting it? Only when the group is idle anyway
    /// (see [`Raft::quiescable`]) and lease reads are off: quiescing drops
    /// the lease, and a busy group whose pipeline drains between batches
    /// would then pay a heartbeat round for nearly every lease read.
    fn quiesce_on_commit(&self) -> bool {
        self.config.quiesce && !self.config.lease_reads && !self.quiesced && self.quiescable()
    }

    /// Leader, at a Ready with a commit to announce and the group not
    /// quiescable yet: may the announcement wait? Only if quiescing on
    /// commit is allowed, nothing but the commit index would go out, and
    /// every member that does not hold the whole log yet is down or has
    /// its append of the whole log in flight (so its answer quiesces the
    /// group, announcing the commit). If that answer never comes, the
    /// leader stays awake and its next heartbeat (or append) carries the
    /// commit: a follower learns it at most a heartbeat interval later.
    fn commit_can_wait(&self) -> bool {
        let last = self.log.last_index();
        self.config.quiesce
            && !self.config.lease_reads
            && !self.quiesced
            && self.idle_leader()
            && self.progress.iter().all(|(id, p)| {
                caught_up(p, last)
                    || self.down.contains(id)
                    || (p.state == crate::progress::ProgressState::Replicate
                        && p.next_index > last
                        && !p.rejoining)
            })
    }

    /// Runtime input, node-level liveness: the nodes that are down now
    /// (silent for an election timeout, as the node's per-peer beat
    /// says), in any order. A leader quiesces without waiting for a member
    /// whose node is down to catch up (when that node is back, the
    /// runtime wakes the group, which repairs it); every other member
    /// must hold the whole log first, however long it takes to answer. A
    /// core told nothing waits for every member.
    pub fn set_down(&mut self, down: &[NodeId]) {
        if self.down != down {
            self.down = down.to_vec();
        }
    }

    /// Leader: tells every member that holds the whole log to quiesce and
    /// stops heartbeating. A member whose node is down (see
    /// [`Raft::set_down`]) does not keep the group awake: it is told
    /// nothing, and when it is back it campaigns or its node's return
    /// wakes the group, which repairs it.
    fn quiesce(&mut self) {
        let commit = self.log.committed();
        let last = self.log.last_index();
        let peers: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, p)| caught_up(p, last))
            .map(|(&id, _)| id)
            .collect();
        for to in peers {
            self.send(to, MessageBody::Quiesce { commit });
        }
        self.commit_unannounced = false;
        self.quiesced = true;
        self.quiesced_at = self.ticks;
        self.stats.quiesced += 1;
        // The lease is not carried through quiescence: the first lease
        // read after waking takes a heartbeat round.
        self.lease_from = None;
        self.round_sent.clear();
    }

    /// Follower: the leader says the group is idle.
    fn handle_quiesce(&mut self, leader: NodeId, commit: Index) {
        // The leader quiesces holding `commit` as its last entry, of its
        // term. A follower whose log ends elsewhere lags (or the message is
        // an old one, overtaken by later appends): it stays awake.
        let last = self.log.last_index();
        if !self.config.quiesce
            || commit != last
            || self.log.term(last) != Some(self.term)
            || self.rejoining
            || !self.term_trusted()
        {
            // Answer as a heartbeat: the leader learns what it must repair
            // (or that this replica stays awake) and wakes.
            self.handle_heartbeat(leader, commit, 0);
            return;
        }
        self.log.commit_to(commit);
        self.quiesced = true;
        self.quiesced_at = self.ticks;
        self.leader_silent = None;
        self.stats.quiesced += 1;
    }

    /// Proposes commands. They become one contiguous run of entries in one
    /// append (and, with other proposals of the same Ready, one message per
    /// follower). Only the leader accepts proposals.
    pub fn propose(&mut self, commands: Vec<Bytes>) -> Result<Proposed, ProposeError> {
        self.wake_leader();
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if let Some(target) = self.lead_transferee {
            // §3.10: new entries would only delay the transfer; the client
            // retries at the target, the leader to be.
            return Err(ProposeError::NotLeader {
                leader_hint: Some(target),
            });
        }
        if commands.is_empty() {
            return Err(ProposeError::Empty);
        }
        let uncommitted = (self.log.last_index() - self.log.committed()) as usize;
        let limit = self.config.max_uncommitted_entries;
        if uncommitted + commands.len() > limit {
            return Err(ProposeError::Busy { uncommitted, limit });
        }
        let first_index = self.log.last_index() + 1;
        let term = self.term;
        let entries = commands.into_iter().enumerate().map(|(i, data)| Entry {
            term,
            index: first_index + i as Index,
            kind: EntryKind::Normal(data),
        });
        self.log.append(entries);
        self.needs_broadcast = true;
        let proposed = Proposed {
            term,
            first_index,
            last_index: self.log.last_index(),
        };
        self.debug_validate();
        Ok(proposed)
    }

    /// Proposes a configuration change (single-server, thesis §4.2 with
    /// the 2015 fix): the leader appends the group's new configuration as
    /// an entry, and every replica uses it from the moment the entry is in
    /// its log. Refused unless this replica leads, has committed an entry
    /// of its own term, has no other change uncommitted and no leader
    /// transfer pending. A learner is promoted only once its log is within
    /// [`PROMOTE_MAX_LAG`] entries of the leader's. A leader that removes
    /// itself keeps leading (without counting itself) until the change
    /// commits, then steps down.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Proposed, ConfChangeError> {
        self.wake_leader();
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if let Some(to) = self.lead_transferee {
            return Err(ConfChangeError::TransferPending { to });
        }
        if !self.committed_in_term() && !self.bugs.change_before_term_commit {
            return Err(ConfChangeError::TermNotCommitted);
        }
        if let Some(index) = self.conf_index() {
            if index > self.log.committed() && !self.bugs.two_changes_at_once {
                return Err(ConfChangeError::ChangePending { index });
            }
        }
        let mut next = self.membership.clone();
        match change {
            ConfChange::AddLearner(0)
            | ConfChange::PromoteLearner(0)
            | ConfChange::RemoveMember(0) => return Err(ConfChangeError::ZeroId),
            ConfChange::AddLearner(id) => {
                if next.contains(id) {
                    return Err(ConfChangeError::AlreadyMember { id });
                }
                next.learners.insert(id);
            }
            ConfChange::PromoteLearner(id) => {
                if !next.learners.contains(&id) {
                    return Err(ConfChangeError::NotALearner { id });
                }
                let last = self.log.last_index();
                // A learner still rejoining (it lost its disk) may be
                // promoted: like any voter in that state it votes and
                // counts toward commits only once it rejoined.
                let matched = self.progress.get(&id).map_or(0, |p| p.match_index);
                if matched + PROMOTE_MAX_LAG < last {
                    return Err(ConfChangeError::LearnerBehind { id, matched, last });
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            ConfChange::RemoveMember(id) => {
                if next.voters.contains(&id) {
                    if next.voters.len() == 1 {
                        return Err(ConfChangeError::LastVoter { id });
                    }
                    next.voters.remove(&id);
                } else if !next.learners.remove(&id) {
                    return Err(ConfChangeError::NotAMember { id });
                }
            }
        }
        let index = self.log.last_index() + 1;
        let term = self.term;
        self.log.append([Entry {
            term,
            index,
            kind: EntryKind::ConfChange(next.clone()),
        }]);
        self.confs.push((index, next));
        self.refresh_membership();
        self.stats.conf_changes += 1;
        self.needs_broadcast = true;
        // A single voter that removed a learner commits at once.
        self.maybe_commit();
        self.debug_validate();
        Ok(Proposed {
            term,
            first_index: index,
            last_index: index,
        })
    }

    /// Recomputes the configuration in effect from the log; a leader
    /// starts or stops replicating to the members added or removed.
    fn refresh_membership(&mut self) {
        self.membership = self
            .confs
            .last()
            .map_or_else(|| self.snapshot_membership.clone(), |(_, m)| m.clone());
        if let Some(m) = self.forced_in_effect() {
            self.membership = m.clone();
        }
        if self.role != Role::Leader {
            return;
        }
        let me = self.config.id;
        let members: BTreeSet<NodeId> = self.membership.members().filter(|&v| v != me).collect();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index() + 1;
        let capacity = self.config.max_inflight_msgs;
        for id in members {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next, capacity));
        }
        if self.lead_transferee.is_some_and(|t| !self.is_voter(t)) {
            self.lead_transferee = None;
        }
    }

    /// Asks for a linearizable read index (ReadIndex, thesis §6.4). The
    /// answer arrives in a later [`Ready::read_states`] under `id` (choose
    /// ids unique among the reads in flight): serve the read from the state
    /// machine once it has applied up to the index, and the read reflects
    /// every write acknowledged before this call.
    ///
    /// At the leader: once it has committed an entry of its own term, it
    /// records its commit index and confirms with one heartbeat round that
    /// a quorum still follows it; all reads of one Ready share one round.
    /// At a follower (a follower read): the request goes to the leader
    /// and the leader's confirmed index comes back. A follower that knows
    /// no leader, or a candidate, refuses at once. A leader that steps
    /// down before answering fails its pending local reads with
    /// [`ReadError::NotLeader`]; a follower's request lost on the way is
    /// never answered, so callers bound the wait.
    pub fn read_index(&mut self, id: u64) -> Result<(), ReadError> {
        self.wake_leader();
        match (self.role, self.leader_id) {
            (Role::Leader, _) => {
                self.leader_read(ReadRequest {
                    id,
                    from: None,
                    rejoin: false,
                });
                self.debug_validate();
                Ok(())
            }
            (Role::Follower, Some(leader)) => {
                self.send(leader, MessageBody::ReadIndex { id, rejoin: false });
                Ok(())
            }
            _ => Err(ReadError::NotLeader {
                leader_hint: self.leader_id,
            }),
        }
    }

    /// Asks for a read index under the leader's lease (thesis §6.4.1): a
    /// leader whose leadership a quorum confirmed less than a lease ago
    /// answers at once with its commit index, without a heartbeat round;
    /// otherwise (and at a follower) this is [`Raft::read_index`].
    ///
    /// The lease is `election_ticks - lease_margin_ticks` from the tick the
    /// confirmed heartbeat round was *sent*: each follower that answered it
    /// refuses votes for an election timeout after it received it (check
    /// quorum). Sound only if no replica's clock runs faster than the
    /// leader's by more than the margin over an election timeout, and only
    /// with [`Config::lease_reads`] and [`Config::check_quorum`] on (else
    /// there is no lease and every read takes the round). A leader that started a leader transfer in its term
    /// serves no lease read for the rest of it (the target's election
    /// passes the followers' lease).
    pub fn read_lease(&mut self, id: u64) -> Result<(), ReadError> {
        self.wake_leader();
        if self.role == Role::Leader && self.lease_valid() {
            self.read_states.push(ReadState {
                id,
                result: Ok(self.log.committed()),
            });
            self.stats.lease_reads += 1;
            return Ok(());
        }
        self.read_index(id)
    }

    /// Whether this leader's lease covers the present tick.
    fn lease_valid(&self) -> bool {
        let lease = u64::from(
            self.config
                .election_ticks
                .saturating_sub(self.config.lease_margin_ticks),
        );
        self.config.lease_reads
            && self.config.check_quorum
            && !self.lease_void
            && lease > 0
            && self.committed_in_term()
            && self
                .lease_from
                .is_some_and(|from| self.ticks < from + lease)
    }

    /// Feeds one message from another replica of this group. Messages
    /// addressed elsewhere are ignored.
    pub fn step(&mut self, m: Message) {
        if m.to != self.config.id || m.from == self.config.id {
            return;
        }
        if self.quiesced {
            let answer = matches!(
                m.body,
                MessageBody::HeartbeatResponse { .. } | MessageBody::AppendResponse(_)
            );
            let quiesce = matches!(m.body, MessageBody::Quiesce { .. });
            // A leader stays quiesced through late answers that change
            // nothing (checked below); anything else wakes the replica.
            if !(quiesce || (answer && self.role == Role::Leader)) {
                self.unquiesce();
            }
        }
        self.step_inner(m);
        if self.quiesced && self.role == Role::Leader && !self.quiescable() {
            self.unquiesce();
        }
        self.maybe_end_rejoin();
        self.debug_validate();
    }

    fn step_inner(&mut self, m: Message) {
        if !self.step_term(&m) {
            return;
        }
        match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => self.handle_pre_vote(&m, last_log_index, last_log_term),
            MessageBody::Vote {
                last_log_index,
                last_log_term,
            } => self.handle_vote(&m, last_log_index, last_log_term),
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate && m.term == self.term + 1 {
                    self.poll(m.from, granted);
                }
            }
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate && m.term == self.term {
                    self.poll(m.from, granted);
                }
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                ref entries,
                leader_commit,
                epoch,
            } => {
                self.follow(m.from);
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    epoch,
                );
            }
            MessageBody::Heartbeat { commit, round } => {
                self.follow(m.from);
                self.handle_heartbeat(m.from, commit, round);
            }
            MessageBody::Quiesce { commit } => {
                self.follow(m.from);
                self.handle_quiesce(m.from, commit);
            }
            MessageBody::Snapshot {
                snapshot,
                membership,
                epoch,
            } => {
                self.follow(m.from);
                self.handle_snapshot(m.from, snapshot, membership, epoch);
            }
            MessageBody::ReadIndex { id, rejoin } => {
                if self.role == Role::Leader && self.progress.contains_key(&m.from) {
                    self.leader_read(ReadRequest {
                        id,
                        from: Some(m.from),
                        rejoin,
                    });
                } else {
                    self.send(m.from, MessageBody::ReadIndexResponse { id, index: None });
                }
            }
            MessageBody::ReadIndexResponse { id, index } => {
                self.handle_read_index_response(id, index);
            }
            MessageBody::AppendResponse(resp) => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, resp);
                    self.maybe_send_timeout_now(m.from);
                }
            }
            MessageBody::HeartbeatResponse { lacking, round } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(m.from, lacking, round);
                }
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(),
            MessageBody::TransferVote {
                last_log_index,
                last_log_term,
            } => self.handle_vote(&m, last_log_index, last_log_term),
        }
    }

    /// Reports that the entries up to `index` (whose entry has `term`), and
    /// the hard state of the same Ready, are durable. Pass
    /// [`Ready::persist_up_to`].
    pub fn on_persisted(&mut self, index: Index, term: Term) {
        if self.log.persisted_to(index, term) && self.role == Role::Leader {
            // The leader counts itself only for what its own disk holds.
            self.maybe_commit();
        }
        self.maybe_end_rejoin();
        self.debug_validate();
    }

    /// Reports that the state machine applied everything up to `index`.
    pub fn on_applied(&mut self, index: Index) {
        self.log.applied_to(index);
        self.debug_validate();
    }

    /// Reports that a snapshot of the state machine at `index` (applied)
    /// is durable: entries up to it are dropped from memory (§7). Purge
    /// them from the log store too. A follower that later needs them gets
    /// this snapshot instead (see [`MessageBody::Snapshot`]), so keep the
    /// snapshot at the compaction point until a later one replaces it.
    pub fn compact(&mut self, index: Index) -> Result<(), CompactError> {
        let offset = self.log.snapshot().index;
        if index <= offset {
            return Err(CompactError::AlreadyCompacted { index, offset });
        }
        if index > self.log.applied() {
            return Err(CompactError::NotApplied {
                index,
                applied: self.log.applied(),
            });
        }
        self.log.compact(index);
        if let Some((_, m)) = self.confs.iter().rev().find(|(i, _)| *i <= index) {
            self.snapshot_membership = m.clone();
        }
        self.confs.retain(|(i, _)| *i > index);
        self.debug_validate();
        Ok(())
    }

    /// Leader: reports how sending the snapshot to `to` went. Either way
    /// the follower goes back to probing, paused until its next heartbeat
    /// answer; after a success the probe finds it past the snapshot, after
    /// a failure the probe sends the snapshot again.
    ///
    /// `index` names the transfer (the snapshot's index, from the
    /// message): a late report of an earlier transfer is ignored.
    pub fn report_snapshot(&mut self, to: NodeId, index: Index, delivered: bool) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if let ProgressState::Snapshot { pending } = pr.state {
                if pending != index {
                    return;
                }
                let next = if delivered {
                    pending + 1
                } else {
                    pr.match_index + 1
                };
                pr.become_probe(next);
                pr.probe_sent = true;
            }
        }
        self.debug_validate();
        if self.quiesced && !self.quiescable() {
            self.unquiesce();
        }
    }

    /// Whether [`Raft::ready`] has anything to do.
    pub fn has_ready(&self) -> bool {
        self.needs_broadcast
            || (self.commit_unannounced && self.role == Role::Leader && self.quiesce_on_commit())
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || self.log.has_unstable()
            || self.log.has_next_committed()
            || self.installed_snapshot.is_some()
            || self.needs_round
            || !self.read_states.is_empty()
            || self.hard_state() != self.last_hard_state
            || self.soft_state() != self.last_soft_state
    }

    /// Takes the work accumulated since the previous Ready. See [`Ready`]
    /// for the order in which to carry it out.
    pub fn ready(&mut self) -> Ready {
        self.retire_forced();
        if std::mem::take(&mut self.needs_broadcast) && self.role == Role::Leader {
            if self.quiesce_on_commit() {
                // Every member already holds the whole log, now committed:
                // the Quiesce carries the commit index, and unlike an
                // empty append it needs no answer. A group woken by one
                // write costs one append round and one Quiesce, not a
                // second round for the commit and a Quiesce a tick later.
                self.quiesce();
            } else if self.commit_can_wait() {
                // The append would carry nothing but the commit index, and
                // the last answers are on their way: the Quiesce that
                // follows them will carry it.
                self.commit_unannounced = true;
            } else {
                self.broadcast_append();
            }
        } else if self.commit_unannounced && self.role == Role::Leader && self.quiesce_on_commit() {
            self.quiesce();
        }
        if self.needs_round && self.role == Role::Leader {
            // One round for every read registered since the last Ready.
            self.broadcast_heartbeat();
        }
        self.needs_round = false;
        let mut rd = Ready::default();
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            rd.soft_state = Some(soft);
            self.last_soft_state = soft;
        }
        let hard = self.hard_state();
        if hard != self.last_hard_state {
            rd.hard_state = Some(hard);
            self.last_hard_state = hard;
        }
        rd.entries = self.log.take_unstable();
        rd.messages = std::mem::take(&mut self.messages);
        rd.persisted_messages = std::mem::take(&mut self.persisted_messages);
        rd.committed_entries = self.log.take_committed(MAX_APPLY_PER_READY);
        rd.snapshot = self.installed_snapshot.take();
        rd.read_states = std::mem::take(&mut self.read_states);
        self.debug_validate();
        rd
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader_id: self.leader_id,
        }
    }

    // ----------------------------------------------------------------
    // Terms and roles (§5.1, §5.2)
    // ----------------------------------------------------------------

    /// Applies the term rules common to every message. Returns whether the
    /// message should be processed further.
    fn step_term(&mut self, m: &Message) -> bool {
        if m.term > self.term {
            let transfer = matches!(m.body, MessageBody::TransferVote { .. });
            if m.is_vote_request() && self.in_lease() && !transfer {
                // Thesis §9.6 / §4.2.3: a replica that heard from a live
                // leader within the minimum election timeout neither grants
                // the vote nor adopts the term, so a partitioned node that
                // comes back cannot depose a healthy leader.
                return false;
            }
            match m.body {
                // Pre-votes never change the receiver's term.
                MessageBody::PreVote { .. } => return true,
                MessageBody::PreVoteResponse { granted: true } => return true,
                _ => {}
            }
            if self.role == Role::Leader && self.bugs.leader_ignores_higher_term {
                self.term = m.term;
                self.vote = None;
                return true;
            }
            let leader = match m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Quiesce { .. }
                | MessageBody::Snapshot { .. } => Some(m.from),
                _ => None,
            };
            self.become_follower(m.term, leader);
            true
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Quiesce { .. }
                | MessageBody::Snapshot { .. } => {
                    // A stale leader: answer with our term so that it steps
                    // down (§5.1). With check-quorum and pre-vote this is
                    // the only way it learns of the new term.
                    self.send(
                        m.from,
                        MessageBody::HeartbeatResponse {
                            lacking: None,
                            round: 0,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { granted: false });
                }
                MessageBody::Vote { .. } => {
                    // §5.1: the refusal carries our term, so the candidate
                    // adopts it. Without it a candidate that hears from no
                    // one else campaigns in terms everyone ignores, and a
                    // group whose other voters cannot win (a shorter log)
                    // or may not campaign (rejoining after a wipe) never
                    // elects anyone (simulation seed 2263).
                    self.send(m.from, MessageBody::VoteResponse { granted: false });
                }
                _ => {}
            }
            false
        } else {
            true
        }
    }

    /// Whether this replica heard from a live leader within the minimum
    /// election timeout (for the leader: whether its lease round is live).
    fn in_lease(&self) -> bool {
        // With lease reads on, a replica that just (re)started may have
        // answered a leader's heartbeat round before it went down: it
        // honours that lease too, for an election timeout after it starts.
        let booting = self.config.lease_reads && self.ticks < u64::from(self.config.election_ticks);
        self.config.check_quorum
            && (self.leader_id.is_some() || booting)
            && self.election_elapsed < self.config.election_ticks
    }

    fn reset_election_timer(&mut self) {
        self.commit_unannounced = false;
        self.quiesced = false;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let min = u64::from(self.config.election_ticks);
        self.randomized_election_timeout = self.rng.range(min, 2 * min) as u32;
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.abort_reads(leader);
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.lead_transferee = None;
        self.progress.clear();
        self.votes.clear();
        self.needs_broadcast = false;
        self.reset_election_timer();
    }

    /// Called on Append/Heartbeat of the current term: there is a leader.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower {
            // A candidate or pre-candidate learns that a leader of its term
            // exists (§5.2: "it recognizes the leader as legitimate").
            self.become_follower(self.term, Some(leader));
        }
        self.leader_id = Some(leader);
        self.election_elapsed = 0;
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        self.rejoin_request_elapsed = self.rejoin_request_elapsed.saturating_add(1);
        if self.election_elapsed >= self.randomized_election_timeout {
            self.campaign(self.config.pre_vote);
        }
    }

    fn tick_leader(&mut self) {
        if self.config.quiesce && self.quiescable() {
            self.quiesce();
            return;
        }
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                let active = usize::from(self.is_voter(self.config.id))
                    + self
                        .progress
                        .iter()
                        .filter(|&(id, p)| p.recent_active && self.is_voter(*id))
                        .count();
                if active < self.quorum() {
                    // Thesis §6.2: a leader that cannot reach a majority
                    // steps down so clients can find the real leader.
                    self.stats.check_quorum_stepdowns += 1;
                    self.become_follower(self.term, None);
                    return;
                }
                for p in self.progress.values_mut() {
                    p.recent_active = false;
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Starts a pre-vote round (`pre == true`) or a real election.
    fn campaign(&mut self, pre: bool) {
        if !self.membership.voters.contains(&self.config.id) {
            return;
        }
        if !self.may_vote() {
            // A replica that lost its state does not campaign (its
            // self-vote could be a second vote in that term, and its log
            // may lack what it acknowledged): it waits for a leader.
            self.reset_election_timer();
            return;
        }
        let (role, term) = if pre {
            (Role::PreCandidate, self.term + 1)
        } else {
            self.term += 1;
            self.vote = Some(self.config.id);
            self.stats.elections += 1;
            (Role::Candidate, self.term)
        };
        self.role = role;
        self.leader_id = None;
        self.votes.clear();
        self.progress.clear();
        self.reset_election_timer();
        self.votes.insert(self.config.id, true);
        if self.tally() == Some(true) {
            self.won();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let peers: Vec<NodeId> = self
            .membership
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.config.id)
            .collect();
        for to in peers {
            let msg = Message {
                from: self.config.id,
                to,
                term,
                body: if pre {
                    MessageBody::PreVote {
                        last_log_index,
                        last_log_term,
                    }
                } else {
                    MessageBody::Vote {
                        last_log_index,
                        last_log_term,
                    }
                },
            };
            if pre {
                self.messages.push(msg);
            } else {
                // The candidate's new term and self-vote must be durable
                // before anyone can count on them.
                self.persisted_messages.push(msg);
            }
        }
    }

    fn handle_pre_vote(&mut self, m: &Message, last_log_index: Index, last_log_term: Term) {
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        let granted = m.term > self.term && up_to_date && self.may_vote();
        let term = if granted { m.term } else { self.term };
        self.messages.push(Message {
            from: self.config.id,
            to: m.from,
            term,
            body: MessageBody::PreVoteResponse { granted },
        });
    }

    fn handle_vote(&mut self, m: &Message, last_log_index: Index, last_log_term: Term) {
        // §5.2: at most one vote per term, first come first served, and
        // never for a term that already has a known leader.
        let can_vote =
            self.vote == Some(m.from) || (self.vote.is_none() && self.leader_id.is_none());
        // §5.4.1: only for a candidate whose log is at least as up-to-date.
        let up_to_date = self.bugs.vote_without_log_check
            || self.log.is_up_to_date(last_log_index, last_log_term);
        let granted = can_vote && up_to_date && self.may_vote();
        let reply = Message {
            from: self.config.id,
            to: m.from,
            term: self.term,
            body: MessageBody::VoteResponse { granted },
        };
        if granted {
            self.vote = Some(m.from);
            self.election_elapsed = 0;
            if self.bugs.reply_before_persisting_vote {
                self.messages.push(reply);
            } else {
                // Figure 2: the vote is durable before the reply leaves.
                self.persisted_messages.push(reply);
            }
        } else {
            self.messages.push(reply);
        }
    }

    /// Counts an answer; wins or loses when a quorum agrees.
    fn poll(&mut self, from: NodeId, granted: bool) {
        if !self.membership.voters.contains(&from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        match self.tally() {
            Some(true) => self.won(),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    /// `Some(true)` when a quorum granted, `Some(false)` when a quorum
    /// refused, `None` while undecided.
    fn tally(&self) -> Option<bool> {
        let counted = self.votes.iter().filter(|(id, _)| self.is_voter(**id));
        let (granted, refused) = counted.fold(
            (0, 0),
            |(g, r), (_, &v)| {
                if v {
                    (g + 1, r)
                } else {
                    (g, r + 1)
                }
            },
        );
        if granted >= self.quorum() {
            Some(true)
        } else if refused >= self.quorum() {
            Some(false)
        } else {
            None
        }
    }

    fn won(&mut self) {
        match self.role {
            Role::PreCandidate => self.campaign(false),
            Role::Candidate => self.become_leader(),
            _ => {}
        }
    }

    fn become_leader(&mut self) {
        // Elected by a majority: this log now defines the group, there is
        // nothing left to catch up with.
        self.rejoining = false;
        self.rejoin_at = None;
        self.role = Role::Leader;
        self.leader_id = Some(self.config.id);
        self.votes.clear();
        self.reset_election_timer();
        self.stats.became_leader += 1;
        self.round = 0;
        self.round_sent.clear();
        self.lease_from = None;
        self.lease_void = false;
        let next = self.log.last_index() + 1;
        let capacity = self.config.max_inflight_msgs;
        let me = self.config.id;
        self.progress = self
            .membership
            .members()
            .filter(|&v| v != me)
            .map(|v| (v, Progress::new(next, capacity)))
            .collect();
        let mut next = next;
        if let Some(m) = self.forced_in_effect().cloned() {
            // Elected under a forced configuration: the first entry of the
            // term writes it into the log, so it replicates like any
            // configuration, and whatever covers an entry of this term
            // (a snapshot included) covers it.
            self.log.append([Entry {
                term: self.term,
                index: next,
                kind: EntryKind::ConfChange(m.clone()),
            }]);
            self.confs.push((next, m));
            self.refresh_membership();
            next += 1;
        }
        // §5.4.2 / §8: a no-op of the new term lets the leader commit
        // everything before it and learn the commit index.
        self.log.append([Entry {
            term: self.term,
            index: next,
            kind: EntryKind::Noop,
        }]);
        self.needs_broadcast = true;
    }

    /// Whether a configuration entry at `index` was written after the
    /// override `f`: past the log's end at the time, or in a later term
    /// (by a leader elected since, even if it truncated this log).
    fn supersedes(&self, f: &ForcedVoters, index: Index) -> bool {
        index > f.at || self.log.term(index).is_some_and(|t| t > f.term)
    }

    /// The forced configuration, while no configuration written after it
    /// is in the log.
    fn forced_in_effect(&self) -> Option<&Membership> {
        let f = self.forced.as_ref()?;
        let superseded = self.confs.iter().any(|&(i, _)| self.supersedes(f, i));
        (!superseded).then_some(&f.membership)
    }

    /// Drops the override for good once a configuration written after it
    /// is committed, or a snapshot covers an entry of a later term (the
    /// first entry of a leader elected under the override is that
    /// configuration).
    fn retire_forced(&mut self) {
        let Some(f) = self.forced.as_ref() else {
            return;
        };
        let committed = self.log.committed();
        let snap = self.log.snapshot();
        let done = self
            .confs
            .iter()
            .any(|&(i, _)| i <= committed && self.supersedes(f, i))
            || (snap.index > f.at && snap.term > f.term);
        if done {
            self.forced = None;
            self.refresh_membership();
        }
    }

    /// **Unsafe recovery** (like etcd's `--force-new-cluster` or TiKV's
    /// unsafe recovery, for one group): makes `voters` this replica's
    /// voters at once, without a log entry and without asking anyone. For
    /// a group that lost a majority of its voters for good: force the same
    /// set of survivors on each of them; they elect a leader among
    /// themselves, whose first entry in its term is the forced
    /// configuration, and from then on it is an ordinary configuration.
    ///
    /// What it risks: entries the lost voters held and no survivor did
    /// are gone, acknowledged or not; survivors that disagree on `voters`,
    /// or lost voters that come back with their old data, can elect two
    /// leaders. Learners stay learners unless listed. The replica steps
    /// down if it led. The override holds until a configuration written
    /// after it (later in the log, or in a later term) is committed, or a
    /// snapshot covers an entry of a later term; [`Raft::forced_voters`]
    /// says whether it still holds: persist it while it does and give it
    /// back with [`Raft::restore_forced_voters`] after a restart.
    pub fn force_voters(
        &mut self,
        voters: BTreeSet<NodeId>,
    ) -> Result<ForcedVoters, ConfChangeError> {
        self.unquiesce();
        if voters.is_empty() {
            return Err(ConfChangeError::LastVoter { id: self.config.id });
        }
        if voters.contains(&0) {
            return Err(ConfChangeError::ZeroId);
        }
        let learners = self
            .membership
            .learners
            .iter()
            .copied()
            .filter(|id| !voters.contains(id))
            .collect();
        let forced = ForcedVoters {
            at: self.log.last_index(),
            term: self.term,
            membership: Membership { voters, learners },
        };
        self.restore_forced_voters(forced.clone());
        if self.role != Role::Follower {
            self.become_follower(self.term, None);
        }
        Ok(forced)
    }

    /// Gives a restarted replica back the override it had (what
    /// [`Raft::forced_voters`] said before the restart). No effect if what
    /// the log or snapshot holds already retired it.
    pub fn restore_forced_voters(&mut self, forced: ForcedVoters) {
        self.forced = Some(forced);
        self.refresh_membership();
        self.retire_forced();
    }

    /// The override an operator forced, while it holds (see
    /// [`Raft::force_voters`]).
    pub fn forced_voters(&self) -> Option<&ForcedVoters> {
        self.forced.as_ref()
    }

    // ----------------------------------------------------------------
    // Replication (§5.3)
    // ----------------------------------------------------------------

    fn handle_append(
        &mut self,
        leader: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
        leader_commit: Index,
        epoch: u32,
    ) {
        if prev_log_index < self.log.committed() {
            // A stale or duplicated message: everything up to our commit
            // already matches the leader.
            let match_index = self.log.committed();
            self.acknowledge(leader, match_index, epoch);
            return;
        }
        let prev_log_term = match self.log.term(prev_log_index) {
            // The deliberate bug: pretend our entry at prev_log_index matches.
            // (Only where terms still rise along the log, which the log
            // itself asserts.)
            Some(ours)
                if self.bugs.append_without_prev_check
                    && entries.first().is_none_or(|e| e.term >= ours) =>
            {
                ours
            }
            _ => prev_log_term,
        };
        let appended = self
            .log
            .maybe_append(prev_log_index, prev_log_term, entries);
        if appended.is_some() {
            // A configuration entry appended, or one truncated away, changes
            // the configuration in effect (thesis §4.1).
            // Only entries after prev_log_index can have changed.
            let has_conf = entries.iter().any(|e| e.kind.conf().is_some());
            let maybe_truncated = self.confs.last().is_some_and(|(i, _)| *i > prev_log_index);
            if has_conf || maybe_truncated {
                self.confs = conf_entries(self.log.entries());
                self.refresh_membership();
            }
        }
        match appended {
            Some(last_new) => {
                let verified = if self.bugs.commit_past_verified_entries {
                    self.log.last_index()
                } else {
                    last_new
                };
                self.log.commit_to(leader_commit.min(verified));
                self.acknowledge(leader, last_new, epoch);
            }
            None => {
                let (conflict_term, conflict_index) = match self.log.term(prev_log_index) {
                    Some(t) => (Some(t), self.log.first_index_of_term_at(prev_log_index)),
                    None => (None, self.log.last_index() + 1),
                };
                let body = MessageBody::AppendResponse(AppendResponse::Rejected {
                    rejected_index: prev_log_index,
                    conflict_term,
                    conflict_index,
                });
                self.send(leader, body);
            }
        }
    }

    fn handle_heartbeat(&mut self, leader: NodeId, commit: Index, round: u64) {
        // The leader sends min(commit, our match), so this prefix matches;
        // unless we lost our state and the match is our previous
        // incarnation's (a leader that has not fenced us yet): then only
        // appends, which check the prefix, advance our commit.
        let last = self.log.last_index();
        if self.term_trusted() {
            self.log.commit_to(commit.min(last));
        }
        // A commit beyond our log is one we acknowledged and no longer
        // hold: say so, or an idle leader never repairs us.
        let lacking = (commit > last).then_some(last);
        // A replica that lost its state lost its term too: it confirms no
        // leadership (a stale leader of a term it forgot could otherwise
        // count it and serve a stale read).
        let round = if self.term_trusted() || self.bugs.rejoin_votes_freely {
            round
        } else {
            0
        };
        self.send(leader, MessageBody::HeartbeatResponse { lacking, round });
        self.maybe_request_rejoin(leader);
    }

    /// Whether this replica's term can be trusted: it did not lose its
    /// state, or a leader confirmed by a quorum without it answered its
    /// rejoin request in this term, so no leader of a later term was
    /// elected before this incarnation started. Until then it neither
    /// confirms a heartbeat round nor counts toward a commit: the leader
    /// it answers may be a stale one that a newer leader, elected with
    /// the vote this replica forgot, has replaced.
    fn term_trusted(&self) -> bool {
        !self.rejoining || self.rejoin_at.is_some() || self.bugs.rejoin_without_fence
    }

    /// Whether this replica may vote (for itself too): not while it is
    /// rejoining (see
    /// [`Config::rejoining`]). An empty-log candidate is no exception: a
    /// follower that lagged from the start has an empty log too, and with
    /// a wiped replica's vote it could lead without entries committed on
    /// the replica's old state (the black-box tests and the simulation's
    /// wipes both found exactly that, with two leaders in one term).
    fn may_vote(&self) -> bool {
        !self.rejoining || self.bugs.rejoin_votes_freely
    }

    /// A rejoining replica that knows no rejoin index yet asks the leader
    /// of its term for one, at most once per election timeout.
    fn maybe_request_rejoin(&mut self, leader: NodeId) {
        if !self.rejoining || self.rejoin_at.is_some() {
            return;
        }
        if self.rejoin_nonce != 0 && self.rejoin_request_elapsed < self.config.election_ticks {
            return;
        }
        if self.rejoin_nonce == 0 {
            // Random: an answer meant for an earlier incarnation (which
            // may have been rejoining too) must not match ours, and the
            // leader fences once per incarnation, not once per request.
            self.rejoin_nonce = self.rng.next_u64().max(1);
        }
        self.rejoin_request_elapsed = 0;
        let id = self.rejoin_nonce;
        self.send(leader, MessageBody::ReadIndex { id, rejoin: true });
    }

    /// A rejoining replica is caught up once its log holds, durably and
    /// committed (so matching the leader's), the rejoin index.
    fn maybe_end_rejoin(&mut self) {
        if let Some(at) = self.rejoin_at {
            if self.rejoining && self.log.persisted() >= at && self.log.committed() >= at {
                self.rejoining = false;
                self.rejoin_at = None;
            }
        }
    }

    /// InstallSnapshot at the follower (§7). The runtime stepped this
    /// message only after the snapshot's data was stored here.
    fn handle_snapshot(
        &mut self,
        leader: NodeId,
        snap: SnapshotInfo,
        membership: Membership,
        epoch: u32,
    ) {
        let committed = self.log.committed();
        if snap.index <= committed {
            // Stale: we already hold (and may have applied) more.
            let match_index = committed;
            self.acknowledge(leader, match_index, epoch);
            return;
        }
        if self.log.match_term(snap.index, snap.term) {
            // We hold the snapshot's last entry, so everything up to it
            // matches the leader: keep the log, commit through it (§7: "If
            // existing log entry has same index and term as snapshot's last
            // included entry, retain log entries following it").
            self.log.commit_to(snap.index);
        } else {
            // "Discard the entire log" and adopt the snapshot.
            self.log.install_snapshot(snap);
            self.installed_snapshot = Some(snap);
            self.snapshot_membership = membership;
            self.confs.clear();
            self.refresh_membership();
        }
        let match_index = snap.index;
        self.acknowledge(leader, match_index, epoch);
    }

    fn handle_append_response(&mut self, from: NodeId, resp: AppendResponse) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match resp {
            AppendResponse::Accepted { epoch, .. }
                if epoch != pr.epoch && !self.bugs.rejoin_without_fence =>
            {
                // Sent before the follower said it lost its state, maybe by
                // its previous incarnation: it no longer vouches for it.
            }
            AppendResponse::Accepted {
                match_index,
                rejoining,
                ..
            } => {
                pr.rejoining = rejoining && !self.bugs.rejoin_without_fence;
                let match_index = match_index.min(last_index);
                let advanced = pr.update_match(match_index);
                match pr.state {
                    ProgressState::Probe if advanced => pr.become_replicate(),
                    ProgressState::Snapshot { pending } if pr.match_index >= pending => {
                        pr.become_replicate()
                    }
                    _ => {}
                }
                if advanced && self.maybe_commit() {
                    return; // maybe_commit scheduled a broadcast
                }
                let last = self.log.last_index();
                if advanced
                    && self.quiesced
                    && self.progress.get(&from).is_some_and(|p| caught_up(p, last))
                {
                    // A quiesced leader (which went quiet without this
                    // member: its node was reported down) hears it catch
                    // up: the Quiesce carries the commit it missed.
                    let commit = self.log.committed();
                    self.send(from, MessageBody::Quiesce { commit });
                    return;
                }
                self.send_append(from, false);
            }
            AppendResponse::Rejected {
                rejected_index,
                conflict_term,
                conflict_index,
            } => {
                let stale = match pr.state {
                    ProgressState::Replicate => rejected_index <= pr.match_index,
                    ProgressState::Probe => rejected_index + 1 != pr.next_index,
                    ProgressState::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                let hint = match conflict_term {
                    Some(t) => self
                        .log
                        .last_index_of_term(t, rejected_index)
                        .map_or(conflict_index, |i| i + 1),
                    None => conflict_index,
                };
                let pr = self.progress.get_mut(&from).expect("checked above");
                if hint <= pr.match_index {
                    // The follower no longer holds what it acknowledged (it
                    // adopted a snapshot whose install was lost in a crash):
                    // believe the rejection, or the same probe goes out
                    // forever. Lowering a match only ever delays commits.
                    pr.match_index = hint - 1;
                }
                pr.become_probe(hint.min(rejected_index));
                self.send_append(from, false);
            }
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, lacking: Option<Index>, round: u64) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.on_heartbeat_response();
        let confirmed = round > pr.acked_round;
        pr.acked_round = pr.acked_round.max(round);
        let snapshotting = matches!(pr.state, ProgressState::Snapshot { .. });
        if let Some(follower_last) = lacking.filter(|&l| l < pr.match_index && !snapshotting) {
            // The follower lost entries it acknowledged (a wiped disk):
            // believe it and repair it now. Lowering a match only ever
            // delays commits; a stale answer costs one probe.
            pr.match_index = follower_last;
            pr.become_probe(follower_last + 1);
            self.stats.followers_lost_state += 1;
        }
        if pr.match_index < last_index {
            // The follower lags. In the replicate state `next_index` may
            // already be past the end (everything was sent, maybe lost):
            // an empty append at `next_index - 1` is then either accepted
            // or rejected, and a rejection drops us back to probing.
            self.send_append(from, true);
        }
        if confirmed {
            self.advance_lease();
            self.advance_reads();
        }
    }

    /// Leader: advances the commit index to the highest index stored on a
    /// quorum, if that entry is of the current term (§5.4.2). Schedules a
    /// broadcast so followers learn it. Returns whether it advanced.
    fn maybe_commit(&mut self) -> bool {
        let mut matches: Vec<Index> = self
            .membership
            .voters
            .iter()
            .map(|v| {
                if *v == self.config.id {
                    self.log.persisted()
                } else {
                    // A rejoining follower's entries count for nothing yet.
                    self.progress
                        .get(v)
                        .map_or(0, |p| if p.rejoining { 0 } else { p.match_index })
                }
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[self.quorum() - 1];
        if candidate <= self.log.committed() {
            return false;
        }
        let of_current_term = self.log.term(candidate) == Some(self.term);
        if !of_current_term && !self.bugs.commit_previous_term_by_counting {
            return false;
        }
        self.log.commit_to(candidate);
        self.needs_broadcast = true;
        if of_current_term && !self.reads_awaiting_commit.is_empty() {
            for req in std::mem::take(&mut self.reads_awaiting_commit) {
                self.leader_read(req);
            }
        }
        self.maybe_step_down_removed();
        true
    }

    /// Leader: once the configuration that removed it (or made it a
    /// learner) is committed, tell the followers the commit index and
    /// step down; until then it led without counting itself.
    fn maybe_step_down_removed(&mut self) {
        if self.role != Role::Leader || self.is_voter(self.config.id) {
            return;
        }
        let committed = self.conf_index().is_none_or(|i| i <= self.log.committed());
        if committed {
            self.broadcast_append();
            self.needs_broadcast = false;
            self.stats.removed_stepdowns += 1;
            self.become_follower(self.term, None);
        }
    }

    fn broadcast_append(&mut self) {
        self.commit_unannounced = false;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_append(to, true);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        self.commit_unannounced = false;
        self.round += 1;
        let round = self.round;
        if self.round_sent.len() >= MAX_ROUNDS_TRACKED {
            self.round_sent.pop_front();
        }
        self.round_sent.push_back((round, self.ticks));
        let commit = self.log.committed();
        let unverified = self.bugs.commit_past_verified_entries;
        let peers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .map(|(&id, p)| {
                if unverified {
                    (id, commit)
                } else {
                    (id, p.match_index.min(commit))
                }
            })
            .collect();
        for (to, commit) in peers {
            self.send(to, MessageBody::Heartbeat { commit, round });
        }
    }

    /// Sends AppendEntries to `to` while its window allows and entries
    /// remain; with `allow_empty`, sends at least one (possibly empty)
    /// message to carry the commit index.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) {
        let mut allow_empty = allow_empty;
        loop {
            let last_index = self.log.last_index();
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            if pr.is_paused() {
                return;
            }
            if pr.next_index > last_index && !allow_empty {
                return;
            }
            allow_empty = false;
            let prev_log_index = pr.next_index - 1;
            let Some(prev_log_term) = self.log.term(prev_log_index) else {
                // The entries this follower needs were compacted into a
                // snapshot: send that instead (§7).
                self.send_snapshot(to);
                return;
            };
            let entries = self.log.slice(
                pr.next_index,
                last_index + 1,
                self.config.max_entries_per_msg,
                self.config.max_bytes_per_msg,
            );
            let last_sent = entries.last().map(|e| e.index);
            let body = MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: self.log.committed(),
                epoch: pr.epoch,
            };
            self.send(to, body);
            let pr = self.progress.get_mut(&to).expect("checked above");
            pr.sent(last_sent);
            if pr.state == ProgressState::Probe || last_sent.is_none() {
                return;
            }
        }
    }

    fn send_snapshot(&mut self, to: NodeId) {
        let snapshot = self.log.snapshot();
        assert!(
            snapshot.index > 0,
            "group {} term {}: follower {to} needs entries before the first one",
            self.config.group,
            self.term
        );
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        pr.become_snapshot(snapshot.index);
        let epoch = pr.epoch;
        let membership = self.snapshot_membership.clone();
        self.send(
            to,
            MessageBody::Snapshot {
                snapshot,
                membership,
                epoch,
            },
        );
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.messages.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Follower: acknowledges that its log matches the leader's up to
    /// `match_index`, echoing the `epoch` of the message answered, once
    /// durable. A replica whose term is not trusted yet says so: its
    /// acknowledgement counts toward no commit.
    fn acknowledge(&mut self, leader: NodeId, match_index: Index, epoch: u32) {
        let rejoining = !self.term_trusted();
        self.send_after_persist(
            leader,
            AppendResponse::Accepted {
                match_index,
                epoch,
                rejoining,
            },
        );
    }

    fn send_after_persist(&mut self, to: NodeId, resp: AppendResponse) {
        self.persisted_messages.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body: MessageBody::AppendResponse(resp),
        });
    }

    // ----------------------------------------------------------------
    // ReadIndex (thesis §6.4) and the rejoin index
    // ----------------------------------------------------------------

    /// Whether this leader has committed an entry of its own term, so its
    /// commit index is at least the group's (§6.4 step 1).
    fn committed_in_term(&self) -> bool {
        self.log.term(self.log.committed()) == Some(self.term)
    }

    /// Leader: registers a read, local or for a follower.
    fn leader_read(&mut self, req: ReadRequest) {
        if req.rejoin && !self.bugs.rejoin_without_fence {
            if let Some(from) = req.from {
                self.fence(from, req.id);
            }
        }
        if !self.committed_in_term() {
            self.reads_awaiting_commit.push(req);
            return;
        }
        let index = self.log.committed();
        if self.bugs.read_index_without_quorum_check && !req.rejoin {
            self.answer_read(req, Ok(index));
            return;
        }
        self.pending_reads.push(PendingRead {
            req,
            index,
            round: self.round + 1,
        });
        self.needs_round = true;
        self.advance_reads();
    }

    /// Leader: `follower` lost its state and rejoins as incarnation
    /// `nonce`. Nothing it (or its previous incarnation) acknowledged
    /// before counts any more: raise its epoch so that acknowledgements
    /// still in flight are ignored, and find its log anew. Once per
    /// incarnation: fencing on every request would restart its catch-up
    /// each time, and a leader that needs its acknowledgements to commit
    /// would never answer.
    fn fence(&mut self, follower: NodeId, nonce: u64) {
        let next = self.log.last_index() + 1;
        if let Some(pr) = self.progress.get_mut(&follower) {
            if pr.fenced_for == nonce {
                return;
            }
            pr.fenced_for = nonce;
            pr.epoch = pr.epoch.wrapping_add(1);
            self.stats.followers_lost_state += 1;
            pr.match_index = 0;
            pr.become_probe(next);
        }
    }

    /// Leader: the newest round a quorum (the leader included) answered
    /// starts the lease at the tick it was sent.
    fn advance_lease(&mut self) {
        let mut acked: Vec<u64> = self
            .progress
            .iter()
            .filter(|(id, _)| self.is_voter(**id))
            .map(|(_, p)| p.acked_round)
            .collect();
        if self.is_voter(self.config.id) {
            acked.push(self.round);
        }
        if acked.len() < self.quorum() {
            return;
        }
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acked[self.quorum() - 1];
        while let Some(&(round, sent)) = self.round_sent.front() {
            if round > confirmed {
                break;
            }
            self.round_sent.pop_front();
            if round == confirmed {
                self.lease_from = Some(self.lease_from.map_or(sent, |f| f.max(sent)));
            }
        }
    }

    /// Leader: answers every pending read whose round a quorum confirmed.
    /// A rejoining replica's own answer does not count toward its request
    /// (its term is not to be trusted).
    fn advance_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let quorum = self.quorum();
        let mut waiting = Vec::new();
        for read in std::mem::take(&mut self.pending_reads) {
            let exclude = match read.req {
                ReadRequest {
                    rejoin: true,
                    from: Some(from),
                    ..
                } if !self.bugs.rejoin_without_fence => Some(from),
                _ => None,
            };
            let acks = usize::from(self.is_voter(self.config.id))
                + self
                    .progress
                    .iter()
                    .filter(|&(&id, p)| {
                        Some(id) != exclude && p.acked_round >= read.round && self.is_voter(id)
                    })
                    .count();
            if acks >= quorum {
                self.answer_read(read.req, Ok(read.index));
            } else {
                waiting.push(read);
            }
        }
        self.pending_reads = waiting;
    }

    fn answer_read(&mut self, req: ReadRequest, result: Result<Index, ReadError>) {
        match req.from {
            None => self.read_states.push(ReadState { id: req.id, result }),
            Some(to) => self.send(
                to,
                MessageBody::ReadIndexResponse {
                    id: req.id,
                    index: result.ok(),
                },
            ),
        }
    }

    /// A leader stepping down fails the reads it has not answered, before
    /// its term changes (a follower's answer carries the term it asked in).
    fn abort_reads(&mut self, leader_hint: Option<NodeId>) {
        let pending = std::mem::take(&mut self.pending_reads)
            .into_iter()
            .map(|r| r.req)
            .chain(std::mem::take(&mut self.reads_awaiting_commit));
        let pending: Vec<ReadRequest> = pending.collect();
        for req in pending {
            self.answer_read(req, Err(ReadError::NotLeader { leader_hint }));
        }
        self.needs_round = false;
    }

    /// Follower: the leader answered a follower read or a rejoin request.
    fn handle_read_index_response(&mut self, id: u64, index: Option<Index>) {
        if id == self.rejoin_nonce && id != 0 {
            if let Some(index) = index {
                if self.rejoining && self.rejoin_at.is_none() {
                    self.rejoin_at = Some(index);
                }
            }
            return;
        }
        let result = index.ok_or(ReadError::NotLeader {
            leader_hint: self.leader_id,
        });
        self.read_states.push(ReadState { id, result });
    }

    // ----------------------------------------------------------------
    // Leader transfer (thesis §3.10)
    // ----------------------------------------------------------------
    //
    //  leader: transfer_leader(to) ──► appends until match(to) == last index
    //          (proposals refused: NotLeader { hint: to })
    //            │ match(to) == last                  │ one election timeout
    //            ▼                                    ▼
    //          TimeoutNow ──► to: campaigns at once   give up, accept
    //                         (no pre-vote; its        proposals again
    //                         TransferVote passes
    //                         the voters' lease check)

    /// Hands leadership to voter `to` (thesis §3.10). The leader stops
    /// accepting proposals (they fail with [`ProposeError::NotLeader`]
    /// naming `to`), brings `to`'s log up to date, then sends it
    /// [`MessageBody::TimeoutNow`], upon which `to` starts an election at
    /// once that it normally wins, being as up to date as the leader. If
    /// this replica is still leading one election timeout later it gives
    /// up and accepts proposals again. Asking again for the same target
    /// while its transfer is pending changes nothing.
    ///
    /// A target that is rejoining (it lost its disk, see
    /// [`crate::Config::rejoining`]) ignores `TimeoutNow`, as it never
    /// campaigns, so a transfer to it times out.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        self.wake_leader();
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if to == self.config.id {
            return Err(TransferError::ToSelf { to });
        }
        if !self.membership.voters.contains(&to) {
            return Err(TransferError::NotAVoter {
                to,
                voters: self.membership.voters.iter().copied().collect(),
            });
        }
        match self.lead_transferee {
            Some(pending) if pending == to => return Ok(()),
            Some(pending) => return Err(TransferError::InProgress { pending }),
            None => {}
        }
        self.lead_transferee = Some(to);
        self.transfer_elapsed = 0;
        self.lease_void = true;
        self.stats.transfers_started += 1;
        if !self.maybe_send_timeout_now(to) {
            self.send_append(to, true);
        }
        self.debug_validate();
        Ok(())
    }

    /// Leader only: the voter a pending leader transfer goes to.
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }

    /// Leader: sends `TimeoutNow` if `from` is the pending transfer's
    /// target and holds the whole log. Returns whether it sent it.
    fn maybe_send_timeout_now(&mut self, from: NodeId) -> bool {
        if self.role != Role::Leader || self.lead_transferee != Some(from) {
            return false;
        }
        let caught_up = self
            .progress
            .get(&from)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(from, MessageBody::TimeoutNow);
        }
        caught_up
    }

    /// Leader: gives the pending transfer up after one election timeout.
    fn tick_transfer(&mut self) {
        if self.lead_transferee.is_none() {
            return;
        }
        self.transfer_elapsed += 1;
        if self.transfer_elapsed >= self.config.election_ticks {
            self.lead_transferee = None;
            self.transfer_elapsed = 0;
            self.stats.transfers_aborted += 1;
        }
    }

    /// The leader of this term asks this replica to campaign now. Only a
    /// follower acts (a candidate's term is already past the sender's), and
    /// not while rejoining (it may not vote, for itself either).
    fn handle_timeout_now(&mut self) {
        if self.role != Role::Follower
            || !self.may_vote()
            || !self.membership.voters.contains(&self.config.id)
        {
            return;
        }
        self.stats.transfer_elections += 1;
        // A real election (no pre-vote: the leader asked for it), whose
        // requests are marked so that voters still in the old leader's
        // lease grant them.
        let before = self.persisted_messages.len();
        self.campaign(false);
        for m in &mut self.persisted_messages[before..] {
            if let MessageBody::Vote {
                last_log_index,
                last_log_term,
            } = m.body
            {
                m.body = MessageBody::TransferVote {
                    last_log_index,
                    last_log_term,
                };
            }
        }
    }

    fn validate_transfer(&self) -> Result<(), String> {
        let Some(to) = self.lead_transferee else {
            return Ok(());
        };
        if self.role != Role::Leader {
            return Err(format!("{:?} with a pending transfer to {to}", self.role));
        }
        if to == self.config.id || !self.membership.voters.contains(&to) {
            return Err(format!("transfer pending to {to}, not another voter"));
        }
        if self.transfer_elapsed >= self.config.election_ticks {
            return Err(format!(
                "transfer to {to} pending for {} ticks, past the election timeout",
                self.transfer_elapsed
            ));
        }
        Ok(())
    }

    // ----------------------------------------------------------------
    // Invariants
    // ----------------------------------------------------------------

    /// Checks the replica's own invariants and describes the first one
    /// broken. The simulation calls it after every input; debug builds
    /// panic on a violation after every input too.
    pub fn validate(&self) -> Result<(), String> {
        self.log.validate()?;
        if self.quiesced && !matches!(self.role, Role::Leader | Role::Follower) {
            return Err(format!("quiesced as {:?}", self.role));
        }
        if self.quiesced && self.role == Role::Leader && !self.quiescable() {
            return Err("quiesced leader with work to do".into());
        }
        if let Some(last) = self.log.entries().last() {
            if last.term > self.term {
                return Err(format!(
                    "last entry term {} > current term {}",
                    last.term, self.term
                ));
            }
        }
        match self.role {
            Role::Leader => {
                if self.vote != Some(self.config.id) || self.leader_id != Some(self.config.id) {
                    return Err(format!(
                        "leader with vote {:?} and leader_id {:?}",
                        self.vote, self.leader_id
                    ));
                }
                let me = self.config.id;
                let members: Vec<NodeId> = self.membership.members().filter(|&v| v != me).collect();
                let mut members = members;
                members.sort_unstable();
                if !self.progress.keys().copied().eq(members.iter().copied()) {
                    return Err(format!(
                        "leader progress for {:?}, members {:?}",
                        self.progress.keys().collect::<Vec<_>>(),
                        members
                    ));
                }
                for (id, p) in &self.progress {
                    if p.match_index > self.log.last_index() || p.next_index <= p.match_index {
                        return Err(format!(
                            "progress of {id}: match {} next {} last {}",
                            p.match_index,
                            p.next_index,
                            self.log.last_index()
                        ));
                    }
                }
            }
            Role::Candidate => {
                if self.vote != Some(self.config.id) {
                    return Err(format!("candidate voted for {:?}", self.vote));
                }
            }
            Role::Follower | Role::PreCandidate => {
                if !self.progress.is_empty() {
                    return Err("non-leader holds progress".into());
                }
            }
        }
        if self.role != Role::Leader && self.leader_id == Some(self.config.id) {
            return Err("non-leader names itself leader".into());
        }
        self.validate_transfer()
    }

    #[inline]
    fn debug_validate(&self) {
        // With a bug injected on purpose the simulation wants to see what
        // its checkers make of it, so the replica does not panic itself.
        if cfg!(debug_assertions) && self.bugs == Bugs::default() {
            if let Err(e) = self.validate() {
                panic!(
                    "group {} node {} term {}: invariant broken: {e}",
                    self.config.group, self.config.id, self.term
                );
            }
        }
    }
}
