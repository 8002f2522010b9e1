//! FsmCaller: applies a group's committed entries to its state machine, in
//! order and in batches, and answers the proposers waiting on them.
//!
//! ```text
//!   RaftGroup ── Register{index, term, reply} ──► waiters (on the proposing node)
//!   RaftGroup ── Apply(entries) ───────────────► state machine ─► reply to the waiter at that index
//!   RaftGroup ── Restore{snapshot} ────────────► state machine restored (after earlier applies: FIFO)
//!         ◄──── Applied(index) ─────────────────┘       every `snapshot_every` entries:
//!                                                       SnapshotExecutor ◄── Save{index, term, data}
//! ```
//!
//! A waiter is answered with the result only if the entry applied at its
//! index has the term its proposal got; otherwise the proposal lost to a
//! newer leader and the waiter learns that its command was not applied
//! there (`NotLeader`).
//!
//! A panic in the state machine's `apply` is caught here, at the boundary
//! of one entry. It may have left the state half-modified, and a
//! deterministic handler panics on that entry on every replica and after
//! every restart, so the group is *poisoned* on this node: nothing more is
//! applied, every waiting and later request is answered with
//! `RequestError::Poisoned` (group, index, message type, panic message),
//! and the supervisor is told ([`GroupPoisoned`]) to stop the group without
//! restarting it. The apply is attempted once per replica and process; the
//! way out is a fixed handler and a node restart, which applies the entry
//! again from the log. A panic in `query` (`&self`: nothing changed) is
//! only the asker's error. Any other panic here (a restore that fails)
//! kills this actor and the supervisor restarts the group.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use slog::{crit, error, Logger};
use synod_core::{Entry, EntryKind, Index, Membership, Term};
use synod_storage::GroupId;
use tokio::sync::oneshot;

use crate::group::{Applied, RaftGroup};
use crate::proto::{AppliedChange, ChangeBatch, Poison, RequestError};
use crate::shared::{DeathGuard, GroupPoisoned, NodeShared};
use crate::snapshot_exec::{Save, SnapshotExecutor};
use crate::state_machine::{ApplyContext, StateMachine, ENTRY_COMMAND, ENTRY_READ};

/// Where a proposer waits for its answer.
pub type Reply = oneshot::Sender<Result<Bytes, RequestError>>;

/// Registers a proposer waiting for the entry at `index` (of `term`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Index the proposal got.
    pub index: Index,
    /// Term the proposal got.
    pub term: Term,
    /// Where to answer.
    pub reply: Reply,
}

/// Committed entries to apply, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply(pub Vec<Entry>);

/// Restore the state machine from the snapshot the replica adopted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore {
    /// The snapshot's index.
    pub index: Index,
    /// Its term.
    pub term: Term,
    /// The group's configuration as of the snapshot.
    pub membership: Membership,
}

/// The snapshot executor finished saving (or failed to save) a snapshot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotFinished {
    /// Its index.
    pub index: Index,
    /// Whether it is durable.
    pub ok: bool,
}

/// A read-only query on this replica's current state (a stale read).
#[derive(Message)]
#[rtype(result = "Result<Bytes, RequestError>")]
pub struct LocalQuery(pub Bytes);

impl Handler<LocalQuery> for FsmCaller {
    type Result = Result<Bytes, RequestError>;

    fn handle(&mut self, LocalQuery(q): LocalQuery, _: &mut Context<Self>) -> Self::Result {
        if let Some(p) = &self.poison {
            // The state may be half-modified: nothing is read from it.
            return Err(p.error(self.group));
        }
        self.query_guarded(&q)
            .map(Bytes::from)
            .map_err(RequestError::Application)
    }
}

/// A linearizable read: run `query` once this replica has applied up to
/// `index`, the read index the leader confirmed (see
/// `synod_core::Raft::read_index`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadAt {
    /// Serve once applied up to here.
    pub index: Index,
    /// The encoded query.
    pub query: Bytes,
    /// Where the result goes.
    pub reply: Reply,
}

impl Handler<ReadAt> for FsmCaller {
    type Result = ();

    fn handle(&mut self, m: ReadAt, _: &mut Context<Self>) {
        if let Some(p) = &self.poison {
            let _ = m.reply.send(Err(p.error(self.group)));
            return;
        }
        if m.index <= self.applied {
            self.answer_read(&m.query, m.reply);
        } else {
            self.reads
                .entry(m.index)
                .or_default()
                .push((m.query, m.reply));
        }
    }
}

/// Where a parked watch gets its answer.
pub type WatchReply = oneshot::Sender<Result<ChangeBatch, RequestError>>;

/// The commands applied from index `from` on (`None`: from the next one
/// applied), with their results: a watch (see `Engine::watch`).
#[derive(Message)]
#[rtype(result = "Result<WatchTicket, RequestError>")]
pub struct Watch {
    /// The first log index wanted.
    pub from: Option<Index>,
    /// Stop after the change that reaches this many bytes.
    pub max_bytes: usize,
    /// Whether to wait (on the ticket) when nothing was applied there yet.
    pub park: bool,
}

/// The answer to [`Watch`]: changes now, or a promise of them.
#[derive(Debug)]
pub enum WatchTicket {
    /// What is there now (empty when nothing was applied there yet and the
    /// watch does not wait).
    Ready(ChangeBatch),
    /// Nothing applied from `from` on yet: the answer comes on `rx` once
    /// something is. Dropping `rx` gives the place up.
    Waiting {
        /// Where the watch stands (the index its answer starts at).
        from: Index,
        /// The answer.
        rx: oneshot::Receiver<Result<ChangeBatch, RequestError>>,
    },
}

/// Most watches parked on one replica at once; more get `Busy`.
pub const MAX_PARKED_WATCHES: usize = 1024;

/// A watch parked until its index is applied.
struct Parked {
    from: Index,
    max_bytes: usize,
    reply: WatchReply,
}

/// Test hook: make the state machine's actor panic, acknowledging on
/// `delivered` just before (see `group::InjectPanic`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic {
    /// Acknowledges that the handler ran, just before it panics.
    pub delivered: tokio::sync::oneshot::Sender<()>,
}

/// The FsmCaller of one group.
pub struct FsmCaller {
    group: GroupId,
    sm: Box<dyn StateMachine>,
    applied: Index,
    applied_term: Term,
    /// The configuration as of `applied` (saved with each snapshot).
    membership: Membership,
    waiters: BTreeMap<Index, (Term, Reply)>,
    /// Reads waiting for the state machine to reach their read index.
    reads: BTreeMap<Index, Vec<(Bytes, Reply)>>,
    /// The commands applied lately, with their results, for watches:
    /// every command applied above `history_floor` is here, in order.
    history: VecDeque<AppliedChange>,
    /// Bytes in `history` (by `AppliedChange::size`).
    history_bytes: usize,
    /// See `history`.
    history_floor: Index,
    /// Watches waiting for their index to be applied.
    watchers: Vec<Parked>,
    raft: Addr<RaftGroup>,
    snapshotter: Addr<SnapshotExecutor>,
    shared: Arc<NodeShared>,
    last_snapshot: Index,
    snapshot_in_progress: bool,
    /// Set once `apply` panicked: nothing more is applied or read here.
    poison: Option<Poison>,
    /// Told once when the group is poisoned, so that it stops the group
    /// instead of restarting it.
    supervisor: Recipient<GroupPoisoned>,
    log: Logger,
    /// Reports this actor's death to the supervisor (carries the
    /// generation the poison report names too).
    guard: DeathGuard,
}

/// Longest panic message (and entry description) kept in an error, so the
/// error always fits a frame.
const MAX_PANIC_TEXT: usize = 1024;

/// The text of a caught panic, at most [`MAX_PANIC_TEXT`] bytes.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    truncate(text)
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_PANIC_TEXT {
        let mut end = MAX_PANIC_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl FsmCaller {
    /// A caller whose state machine stands at `applied` (index and term),
    /// supervised through `guard` (its death) and `supervisor` (a poison).
    pub(crate) fn new(
        group: GroupId,
        sm: Box<dyn StateMachine>,
        (applied, applied_term, membership): (Index, Term, Membership),
        raft: Addr<RaftGroup>,
        snapshotter: Addr<SnapshotExecutor>,
        shared: Arc<NodeShared>,
        (guard, supervisor): (DeathGuard, Recipient<GroupPoisoned>),
    ) -> Self {
        let log = shared.log.new(slog::o!("group" => group, "actor" => "fsm"));
        FsmCaller {
            group,
            sm,
            applied,
            applied_term,
            membership,
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            history: VecDeque::new(),
            history_bytes: 0,
            history_floor: applied,
            watchers: Vec::new(),
            raft,
            snapshotter,
            shared,
            last_snapshot: applied,
            snapshot_in_progress: false,
            poison: None,
            supervisor,
            log,
            guard,
        }
    }

    fn answer_read(&self, query: &[u8], reply: Reply) {
        let result = self
            .query_guarded(query)
            .map(Bytes::from)
            .map_err(RequestError::Application);
        let _ = reply.send(result);
    }

    /// Serves every read whose index is applied now.
    fn serve_reads(&mut self) {
        let later = self.reads.split_off(&(self.applied + 1));
        for (_, reads) in std::mem::replace(&mut self.reads, later) {
            for (query, reply) in reads {
                self.answer_read(&query, reply);
            }
        }
    }

    /// Answers and removes every waiter at or below `index` whose entry
    /// was not the one applied (they lost to another leader).
    fn fail_waiters_up_to(&mut self, index: Index, err: impl Fn() -> RequestError) {
        let rest = self.waiters.split_off(&(index + 1));
        for (_, (_, reply)) in std::mem::replace(&mut self.waiters, rest) {
            let _ = reply.send(Err(err()));
        }
    }

    /// Applies one entry and answers its waiter. `Err` when the state
    /// machine panicked on it (the waiter got the poison error).
    fn apply_entry(&mut self, e: &Entry) -> Result<(), Poison> {
        let ctx = ApplyContext {
            group: self.group,
            index: e.index,
            term: e.term,
        };
        let waiter = match self.waiters.first_key_value() {
            Some((&i, _)) if i == e.index => self.waiters.pop_first().map(|(_, w)| w),
            _ => None,
        };
        let waiter = match waiter {
            Some((term, reply)) if term == e.term => Some(reply),
            Some((_, reply)) => {
                let _ = reply.send(Err(self.lost()));
                None
            }
            None => None,
        };
        let data = match &e.kind {
            EntryKind::Normal(data) => data,
            EntryKind::ConfChange(m) => {
                self.membership = m.clone();
                if let Some(reply) = waiter {
                    let _ = reply.send(Ok(Bytes::new()));
                }
                return Ok(());
            }
            EntryKind::Noop => return Ok(()), // a leader's no-op
        };
        let result = match data.split_first() {
            Some((&ENTRY_COMMAND, cmd)) => match self.apply_guarded(cmd, &ctx) {
                Ok(result) => {
                    self.shared.counters.applied.fetch_add(1, Ordering::Relaxed);
                    let result = result.map(Bytes::from);
                    if !self.sm.changed_nothing() {
                        self.record(AppliedChange {
                            index: e.index,
                            term: e.term,
                            // A copy: `data` may be a slice of a large buffer
                            // (a WAL read) that the history must not pin.
                            command: Bytes::copy_from_slice(cmd),
                            result: result.clone(),
                        });
                    }
                    if let Some(reply) = waiter {
                        self.shared
                            .counters
                            .answered
                            .fetch_add(1, Ordering::Relaxed);
                        let _ = reply.send(result.map_err(RequestError::Application));
                    }
                    return Ok(());
                }
                Err(panic_message) => {
                    let poison = Poison {
                        index: e.index,
                        message_type: self.describe(cmd),
                        panic_message,
                    };
                    if let Some(reply) = waiter {
                        let _ = reply.send(Err(poison.error(self.group)));
                    }
                    return Err(poison);
                }
            },
            // A read through the log: only the proposer needs its answer.
            Some((&ENTRY_READ, q)) if waiter.is_some() => self.query_guarded(q),
            Some((&ENTRY_READ, _)) => return Ok(()),
            _ => Err(format!("entry {} has an unknown payload kind", e.index)),
        };
        if let Some(reply) = waiter {
            self.shared
                .counters
                .answered
                .fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(result.map(Bytes::from).map_err(RequestError::Application));
        }
        Ok(())
    }

    /// The state machine's `apply`, with a panic caught and returned as
    /// its message (`Err`). The state machine may be half-modified then:
    /// the caller must not use it again.
    fn apply_guarded(
        &mut self,
        cmd: &[u8],
        ctx: &ApplyContext,
    ) -> Result<Result<Vec<u8>, String>, String> {
        let sm = &mut self.sm;
        catch_unwind(AssertUnwindSafe(|| sm.apply(cmd, ctx))).map_err(|p| panic_text(&*p))
    }

    /// The state machine's `query`; a panic becomes the asker's error
    /// (`query` takes `&self`, so the state did not change).
    fn query_guarded(&self, q: &[u8]) -> Result<Vec<u8>, String> {
        let sm = &self.sm;
        catch_unwind(AssertUnwindSafe(|| sm.query(q))).unwrap_or_else(|p| {
            Err(format!(
                "the query handler panicked (nothing changed): {}",
                panic_text(&*p)
            ))
        })
    }

    /// What `cmd` is, as the state machine says, or `"unknown"`.
    fn describe(&self, cmd: &[u8]) -> String {
        let sm = &self.sm;
        match catch_unwind(AssertUnwindSafe(|| sm.describe(cmd))) {
            Ok(Some(name)) => truncate(name),
            _ => "unknown".to_string(),
        }
    }

    /// Stops applying for good: answers every waiter with the poison
    /// error and tells the supervisor, once.
    fn poisoned(&mut self, poison: Poison) {
        crit!(self.log, "the state machine panicked applying an entry; the group stops on this \
              node and is not restarted: fix the handler so it does not panic on this entry, \
              then restart the node (the entry is applied again from the log)";
              "index" => poison.index, "message_type" => &poison.message_type,
              "panic" => &poison.panic_message);
        for (_, (_, reply)) in std::mem::take(&mut self.waiters) {
            let _ = reply.send(Err(poison.error(self.group)));
        }
        for (_, reads) in std::mem::take(&mut self.reads) {
            for (_, reply) in reads {
                let _ = reply.send(Err(poison.error(self.group)));
            }
        }
        for w in std::mem::take(&mut self.watchers) {
            let _ = w.reply.send(Err(poison.error(self.group)));
        }
        self.supervisor.do_send(GroupPoisoned {
            group: self.group,
            generation: self.guard.generation,
            poison: poison.clone(),
        });
        self.poison = Some(poison);
    }

    /// Keeps an applied command for watches (trimmed to the bounds after
    /// each batch, once the parked watches have seen it).
    fn record(&mut self, change: AppliedChange) {
        self.history_bytes += change.size();
        self.history.push_back(change);
    }

    /// Drops the oldest changes beyond the history's bounds.
    fn trim_history(&mut self) {
        let (max, max_bytes) = (
            self.shared.cfg.watch_history,
            self.shared.cfg.watch_history_bytes,
        );
        while self.history.len() > max || self.history_bytes > max_bytes {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= old.size();
            self.history_floor = old.index;
        }
    }

    /// The changes kept from `from` on, about `max_bytes` of them (at
    /// least one), or `Compacted` when some from `from` on are gone.
    fn changes_from(&self, from: Index, max_bytes: usize) -> Result<ChangeBatch, RequestError> {
        if from <= self.history_floor {
            return Err(RequestError::Compacted {
                group: self.group,
                requested: from,
                oldest: self.history_floor + 1,
            });
        }
        let start = self.history.partition_point(|c| c.index < from);
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut complete = true;
        for c in self.history.range(start..) {
            if !changes.is_empty() && bytes + c.size() > max_bytes {
                complete = false;
                break;
            }
            bytes += c.size();
            changes.push(c.clone());
        }
        let next = match changes.last() {
            Some(c) if !complete => c.index + 1,
            _ => from.max(self.applied + 1),
        };
        Ok(ChangeBatch {
            changes,
            next,
            applied: self.applied,
        })
    }

    /// Answers the parked watches whose index is applied now (or that can
    /// no longer be served); a watch that found only entries that were not
    /// commands stays parked, further on.
    fn serve_watchers(&mut self) {
        if self.watchers.is_empty() {
            return;
        }
        for w in std::mem::take(&mut self.watchers) {
            if w.reply.is_closed() {
                continue;
            }
            if w.from > self.applied {
                self.watchers.push(w);
                continue;
            }
            match self.changes_from(w.from, w.max_bytes) {
                Ok(batch) if batch.changes.is_empty() => self.watchers.push(Parked {
                    from: batch.next,
                    ..w
                }),
                answer => {
                    let _ = w.reply.send(answer);
                }
            }
        }
    }

    fn lost(&self) -> RequestError {
        RequestError::NotLeader {
            group: self.group,
            leader: None,
        }
    }

    fn maybe_snapshot(&mut self) {
        let every = self.shared.cfg.snapshot_every;
        if every == 0
            || self.poison.is_some()
            || self.snapshot_in_progress
            || self.applied < self.last_snapshot + every
        {
            return;
        }
        match self.sm.snapshot() {
            Ok(data) => {
                self.snapshot_in_progress = true;
                self.snapshotter.do_send(Save {
                    index: self.applied,
                    term: self.applied_term,
                    membership: self.membership.clone(),
                    data,
                });
            }
            Err(e) => error!(self.log, "the state machine could not snapshot"; "error" => e),
        }
    }
}

impl Actor for FsmCaller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.shared.cfg.mailbox);
    }
}

impl Handler<Register> for FsmCaller {
    type Result = ();

    fn handle(&mut self, m: Register, _: &mut Context<Self>) {
        if let Some(p) = &self.poison {
            let _ = m.reply.send(Err(p.error(self.group)));
            return;
        }
        if m.index <= self.applied {
            // Cannot happen in order (registration precedes the entry's
            // apply), but a restore may have jumped past it.
            let _ = m.reply.send(Err(RequestError::Stopped(self.group)));
            return;
        }
        self.waiters.insert(m.index, (m.term, m.reply));
    }
}

impl Handler<Apply> for FsmCaller {
    type Result = ();

    fn handle(&mut self, Apply(entries): Apply, _: &mut Context<Self>) {
        if self.poison.is_some() {
            return; // nothing is applied after a panic; waiters were answered
        }
        let mut last = None;
        for e in entries {
            if e.index <= self.applied {
                continue; // covered by a snapshot restored meanwhile
            }
            // Waiters below this index were for entries never applied here.
            let err = self.lost();
            self.fail_waiters_up_to(e.index - 1, || err.clone());
            if let Err(poison) = self.apply_entry(&e) {
                self.poisoned(poison);
                break;
            }
            self.applied = e.index;
            self.applied_term = e.term;
            last = Some(e.index);
        }
        if let Some(index) = last {
            self.raft.do_send(Applied(index));
            self.serve_reads();
            self.serve_watchers();
            self.maybe_snapshot();
        }
        self.trim_history();
    }
}

impl Handler<Watch> for FsmCaller {
    type Result = Result<WatchTicket, RequestError>;

    fn handle(&mut self, m: Watch, _: &mut Context<Self>) -> Self::Result {
        if let Some(p) = &self.poison {
            return Err(p.error(self.group));
        }
        let from = m.from.unwrap_or(self.applied + 1).max(1);
        let batch = if from <= self.applied {
            self.changes_from(from, m.max_bytes)?
        } else {
            ChangeBatch {
                changes: Vec::new(),
                next: from,
                applied: self.applied,
            }
        };
        if !batch.changes.is_empty() || !m.park {
            return Ok(WatchTicket::Ready(batch));
        }
        if self.watchers.len() >= MAX_PARKED_WATCHES {
            self.watchers.retain(|w| !w.reply.is_closed());
            if self.watchers.len() >= MAX_PARKED_WATCHES {
                return Err(RequestError::Busy(self.group));
            }
        }
        let (reply, rx) = oneshot::channel();
        self.watchers.push(Parked {
            from: batch.next,
            max_bytes: m.max_bytes,
            reply,
        });
        Ok(WatchTicket::Waiting {
            from: batch.next,
            rx,
        })
    }
}

impl Handler<Restore> for FsmCaller {
    type Result = ();

    fn handle(&mut self, m: Restore, _: &mut Context<Self>) {
        if self.poison.is_some() {
            return; // the group is being stopped
        }
        let data = self
            .shared
            .snapshots
            .open_snapshot(self.group, m.index)
            .and_then(|r| r.read_all());
        let restored = data
            .map_err(|e| e.to_string())
            .and_then(|d| self.sm.restore(&d));
        if let Err(e) = restored {
            // The snapshot was stored and checked before the replica adopted
            // it; failing now means the disk or the application broke.
            // Dying lets the supervisor restart the group from scratch.
            panic!(
                "group {}: cannot restore snapshot {}: {e}",
                self.group, m.index
            );
        }
        self.applied = m.index;
        self.applied_term = m.term;
        self.membership = m.membership;
        self.last_snapshot = m.index;
        let group = self.group;
        self.fail_waiters_up_to(m.index, || RequestError::Stopped(group));
        // The commands inside the snapshot were never applied here one by
        // one: the history starts over after it.
        self.history.clear();
        self.history_bytes = 0;
        self.history_floor = m.index;
        self.serve_reads();
        self.serve_watchers();
        self.shared
            .counters
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Handler<SnapshotFinished> for FsmCaller {
    type Result = ();

    fn handle(&mut self, m: SnapshotFinished, _: &mut Context<Self>) {
        self.snapshot_in_progress = false;
        if m.ok {
            self.last_snapshot = self.last_snapshot.max(m.index);
        }
    }
}

impl Handler<InjectPanic> for FsmCaller {
    type Result = ();

    fn handle(&mut self, m: InjectPanic, _: &mut Context<Self>) {
        let _ = m.delivered.send(());
        panic!("group {}: fault injected into the FsmCaller", self.group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic's message goes into an error that must fit a frame: it is
    /// cut at a character boundary, whatever the payload type.
    #[test]
    fn panic_texts_are_read_from_any_payload_and_bounded() {
        let payload = catch_unwind(|| panic!("at index {}", 7)).unwrap_err();
        assert_eq!(panic_text(&*payload), "at index 7");
        let payload = catch_unwind(|| std::panic::panic_any(42u8)).unwrap_err();
        assert_eq!(panic_text(&*payload), "a panic without a message");
        let long = "é".repeat(MAX_PANIC_TEXT); // 2 bytes each
        let cut = truncate(long);
        assert!(cut.len() <= MAX_PANIC_TEXT + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
