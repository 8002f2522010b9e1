//! Static configuration of one replica of one group.

use std::collections::BTreeSet;

use crate::error::ConfigError;
use crate::types::NodeId;

/// How a replica behaves. Times are in ticks: the caller decides how long
/// a tick is (the runtime uses 10-100 ms; the simulation uses abstract
/// time). All fields have defaults through [`Config::new`].
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's id; never 0.
    pub id: NodeId,
    /// Group id, only used to give panics and logs context.
    pub group: u64,
    /// The group's initial voters (its configuration until a
    /// configuration entry or a snapshot in this replica's state says
    /// otherwise). A replica outside them starts as a non-member: it
    /// never campaigns until a configuration makes it a voter.
    pub voters: BTreeSet<NodeId>,
    /// Minimum election timeout in ticks. A follower that hears nothing
    /// from a leader for a random time in `[election_ticks,
    /// 2 * election_ticks)` starts an election (§5.2).
    pub election_ticks: u32,
    /// A leader sends heartbeats every `heartbeat_ticks`; must be smaller
    /// than `election_ticks` (§5.6: broadcastTime << electionTimeout).
    pub heartbeat_ticks: u32,
    /// Ask "would you vote for me?" before disrupting the group with a
    /// higher term (thesis §9.6). Default on.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election
    /// timeout steps down; followers in contact with a leader refuse votes
    /// (thesis §6.2 and §9.6). Default on.
    pub check_quorum: bool,
    /// Most entries in one AppendEntries message.
    pub max_entries_per_msg: usize,
    /// Most payload bytes in one AppendEntries message (at least one entry
    /// is always sent, so a large entry still makes progress).
    pub max_bytes_per_msg: usize,
    /// Most AppendEntries messages in flight to one follower in the
    /// replicate state: the pipeline window.
    pub max_inflight_msgs: usize,
    /// Most entries proposed but not yet committed. Beyond it proposals
    /// fail with [`crate::ProposeError::Busy`], so a flood of writes turns
    /// into back-pressure instead of unbounded memory.
    pub max_uncommitted_entries: usize,
    /// Seed of the replica's random generator (election timeouts). Give
    /// every replica a different seed.
    pub seed: u64,
    /// Allow lease reads ([`crate::Raft::read_lease`]). Every replica of
    /// the group must agree: with it on, a replica also refuses votes for
    /// an election timeout after it (re)starts, because before it went
    /// down it may have confirmed a leader's lease that is still running.
    /// Default off.
    pub lease_reads: bool,
    /// Ticks a lease read's lease is shorter than the election timeout,
    /// for clock drift between replicas (see [`crate::Raft::read_lease`]):
    /// the lease lasts `election_ticks - lease_margin_ticks` from when the
    /// heartbeat round a quorum confirmed was sent. Default 2 (a fifth of
    /// the default election timeout). At `election_ticks` or more, lease
    /// reads always take the round.
    pub lease_margin_ticks: u32,
    /// This replica starts without the durable state it may once have had
    /// (its node booted on an empty data directory that was not initialized
    /// as a new node: a wiped or replaced disk). Raft assumes a replica's
    /// term, vote and log survive; one that lost them could vote a second
    /// time in a term it already voted in, or help elect a leader lacking
    /// entries it had acknowledged. It grants no (pre-)vote, does not
    /// campaign and confirms no leader's heartbeat round until it holds,
    /// durably and committed, a *rejoin index*: it asks the leader of its
    /// term for one ([`crate::MessageBody::ReadIndex`] with `rejoin`); the
    /// leader first fences every acknowledgement of the replica's previous
    /// incarnation still in flight (see [`crate::Progress::epoch`]), then
    /// answers with its commit index once it has committed an entry of its
    /// own term and a quorum *without the requester* confirmed its
    /// leadership (so a stale leader cannot answer, and every commit that
    /// counted the lost state is below the answer). There is no time limit and no exception for empty-log
    /// candidates (a follower that lagged from the start has an empty log
    /// too): a group that needs this replica's vote and has no leader to
    /// catch it up stays unavailable until another replica comes back or
    /// an operator vouches for it. A brand-new cluster must therefore mark
    /// its nodes new (the runtime's `synod init`). Default off.
    pub rejoining: bool,
    /// Let an idle group quiesce: a leader with nothing in flight whose
    /// members all hold its whole log tells them so
    /// ([`crate::MessageBody::Quiesce`]) and stops heartbeating; quiesced
    /// replicas neither heartbeat nor count down their election timer
    /// until a message, a proposal, a read or the runtime
    /// ([`crate::Raft::wake`], when the leader's node stops answering)
    /// wakes them. The runtime then need not tick quiesced groups at all
    /// ([`crate::Raft::quiesced`], [`crate::Raft::elapse`]). Default off.
    pub quiesce: bool,
    /// Deliberate protocol bugs, only so the simulation can prove that it
    /// catches them. Never set this outside tests.
    #[cfg(feature = "fault-injection")]
    pub bugs: Bugs,
}

/// Classic Raft bugs that can be switched on to check that the simulation
/// notices them. Every field defaults to `false`.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Grant votes without checking that the candidate's log is at least
    /// as up-to-date (§5.4.1 restriction dropped).
    pub vote_without_log_check: bool,
    /// Commit an entry of an earlier term by counting replicas (§5.4.2,
    /// Figure 8).
    pub commit_previous_term_by_counting: bool,
    /// Send a vote response before the vote is durable (Figure 2:
    /// "respond to RPCs" only after persisting).
    pub reply_before_persisting_vote: bool,
    /// A leader that sees a higher term adopts it but keeps leading (§5.1:
    /// "it immediately reverts to follower state").
    pub leader_ignores_higher_term: bool,
    /// A follower accepts AppendEntries without checking that its entry at
    /// `prev_log_index` has `prev_log_term` (§5.3 consistency check
    /// dropped): new entries land after a prefix that differs from the
    /// leader's.
    pub append_without_prev_check: bool,
    /// A follower advances its commit index to the leader's even past the
    /// entries the append verified (Figure 2 says `min(leaderCommit, index
    /// of last new entry)`), and a leader's heartbeat carries its whole
    /// commit index rather than `min(commit, match)`: a follower commits
    /// and applies its own stale tail.
    pub commit_past_verified_entries: bool,
    /// A replica restarted without its durable state ignores
    /// [`Config::rejoining`] and votes as if it never voted.
    pub rejoin_votes_freely: bool,
    /// A leader answers a read index at once with its commit index,
    /// without confirming with a quorum round that it still leads
    /// (thesis §6.4 step 3 dropped): a deposed leader serves stale reads.
    pub read_index_without_quorum_check: bool,
    /// A rejoining replica is trusted as if it had kept its state, except
    /// for votes: the leader does not fence the acknowledgements of its
    /// previous incarnation and counts the requester in the confirming
    /// round, and the replica counts toward commits, confirms heartbeat
    /// rounds and commits from heartbeats before any leader confirmed its
    /// rejoin index. An acknowledgement of the lost state still in flight,
    /// or one given to a stale leader of a term it forgot, commits entries
    /// that a quorum does not hold.
    pub rejoin_without_fence: bool,
    /// A leader proposes a configuration change before it has committed
    /// an entry of its own term (the 2015 single-server bug): its change
    /// and an uncommitted one of an earlier leader can have disjoint
    /// majorities.
    pub change_before_term_commit: bool,
    /// A leader proposes a configuration change while its previous one
    /// is still uncommitted: two single-server steps at once can leave
    /// two majorities that do not overlap.
    pub two_changes_at_once: bool,
}

impl Config {
    /// A configuration for replica `id` of a group whose voters are
    /// `voters`, with defaults suitable for a 100 ms tick.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Self {
        Config {
            id,
            group: 0,
            voters: voters.into_iter().collect(),
            election_ticks: 10,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            max_entries_per_msg: 1024,
            max_bytes_per_msg: 1 << 20,
            max_inflight_msgs: 64,
            max_uncommitted_entries: 100_000,
            seed: id,
            lease_reads: false,
            lease_margin_ticks: 2,
            rejoining: false,
            quiesce: false,
            #[cfg(feature = "fault-injection")]
            bugs: Bugs::default(),
        }
    }

    /// Checks the configuration and says what to change when it is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.voters.contains(&0) {
            return Err(ConfigError::ZeroVoter);
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks {
            return Err(ConfigError::Timing {
                heartbeat_ticks: self.heartbeat_ticks,
                election_ticks: self.election_ticks,
            });
        }
        if self.max_entries_per_msg == 0 || self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if self.max_uncommitted_entries == 0 || self.max_bytes_per_msg == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn bugs(&self) -> Bugs {
        self.bugs
    }

    #[cfg(not(feature = "fault-injection"))]
    pub(crate) fn bugs(&self) -> Bugs {
        Bugs::default()
    }
}

/// Without the `fault-injection` feature every bug is off, fixed at
/// compile time.
#[cfg(not(feature = "fault-injection"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bugs {
    pub vote_without_log_check: bool,
    pub commit_previous_term_by_counting: bool,
    pub reply_before_persisting_vote: bool,
    pub leader_ignores_higher_term: bool,
    pub append_without_prev_check: bool,
    pub commit_past_verified_entries: bool,
    pub rejoin_votes_freely: bool,
    pub read_index_without_quorum_check: bool,
    pub rejoin_without_fence: bool,
    pub change_before_term_commit: bool,
    pub two_changes_at_once: bool,
}
