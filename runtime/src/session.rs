//! Client sessions: commands that apply exactly once, however often they
//! are retried (Raft thesis §6.3).
//!
//! A command whose outcome is unknown (`Timeout`, `ConnectionLost`,
//! `Stopped`, `OutcomeUnknown`: the leader died or the connection broke
//! after it was sent) may or may not have been applied, so the plain
//! [`Client::send`] returns it rather than risk applying it twice. A
//! [`Session`] retries it instead: every command it sends carries the
//! session's id and a sequence number, and the group keeps, in its
//! replicated state (and its snapshots), the result of every command of
//! the session the client has not yet seen answered. A retried command
//! that was already applied is answered with the original result and not
//! applied again.
//!
//! ```no_run
//! # async fn f(client: synod::Client) -> Result<(), synod::SynodError> {
//! use synod::kv::Put;
//! let session = client.session();
//! // Retried through leader crashes until it is answered: applied once.
//! let rev = session.send(1, Put { key: "a".into(), value: b"1".to_vec() }).await?;
//! # Ok(()) }
//! ```
//!
//! **How.** A session opens itself in a group with its first command
//! there (one `synod.session.open` entry; its id in the group is that
//! entry's log index, so an id is never reused). Each command then goes as
//! a `synod.session` envelope: (id, sequence number, the lowest sequence
//! number still waiting for its answer, the command). Applying it, every
//! replica drops the kept results the client has seen answered, answers a
//! sequence number it kept with the kept result, refuses one below the
//! acknowledged mark (answered already: it is a stale copy), and applies
//! anything else and keeps its result. All of it is a function of the log,
//! so every replica agrees.
//!
//! **Bounds and expiry.** A group keeps at most [`MAX_SESSIONS`] sessions
//! (4,096): opening one more expires the least recently used (by the log
//! index of its last command). A session keeps at most
//! [`MAX_OUTSTANDING`] unanswered results (1,024 commands in flight at
//! once); a command beyond that is refused unapplied. A command of an
//! expired session fails with [`SynodError::SessionExpired`]: its outcome
//! is unknown again (it may have been applied before the session
//! expired); open a new session, check the state, then go on.
//!
//! **Watches** see a session's command as the command itself (a retried
//! duplicate, answered from the kept result, is not a change and does not
//! appear).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use synod_storage::GroupId;

use crate::actor::{envelope, split_envelope, Message};
use crate::client::Client;
use crate::error::SynodError;

/// Wire name of the entry that opens a session in a group.
pub(crate) const OPEN: &str = "synod.session.open";
/// Wire name of a command sent within a session.
pub(crate) const COMMAND: &str = "synod.session";

/// Most sessions a group keeps; opening one more expires the least
/// recently used.
pub const MAX_SESSIONS: usize = 4096;
/// Most results one session keeps for commands its client has not seen
/// answered (its commands in flight at once).
pub const MAX_OUTSTANDING: usize = 1024;

/// A command within a session, as it travels and is logged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SessionCommand {
    /// The session's id in the group (the log index that opened it).
    pub session: u64,
    /// The command's sequence number in the session.
    pub seq: u64,
    /// Every sequence number below this one was answered to the client.
    pub acked_below: u64,
    /// The command's envelope.
    pub command: ByteBuf,
}

/// What a group answers a [`SessionCommand`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SessionOutcome {
    /// Applied now, or earlier (the kept result): the handler's result.
    Done(Result<ByteBuf, String>),
    /// The group does not know the session (it expired, or never opened).
    /// Not applied now; it may have been before the session expired.
    Expired,
    /// The sequence number was answered to the client already: a stale
    /// copy of a command. Not applied now.
    Answered,
    /// The session has [`MAX_OUTSTANDING`] unanswered results. Not applied.
    TooManyOutstanding,
}

/// One session's state in a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SessionState {
    /// Log index of its last command (for expiry, least recent first).
    last_used: u64,
    /// Every sequence number below this was answered to the client.
    acked_below: u64,
    /// The results of applied commands the client may not have seen.
    results: BTreeMap<u64, Result<ByteBuf, String>>,
}

/// The sessions of one group: part of its replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sessions {
    by_id: BTreeMap<u64, SessionState>,
    /// (last_used, id): the expiry order.
    lru: BTreeSet<(u64, u64)>,
}

impl Sessions {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Opens a session at log index `index` (its id); expires the least
    /// recently used beyond [`MAX_SESSIONS`].
    pub(crate) fn open(&mut self, index: u64) -> u64 {
        while self.by_id.len() >= MAX_SESSIONS {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
        }
        self.by_id.insert(
            index,
            SessionState {
                last_used: index,
                ..SessionState::default()
            },
        );
        self.lru.insert((index, index));
        index
    }

    /// Handles `cmd` logged at `index`: `apply` runs the command when it
    /// must be applied now. Returns the outcome and whether anything was
    /// applied.
    pub(crate) fn handle(
        &mut self,
        cmd: &SessionCommand,
        index: u64,
        apply: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
    ) -> (SessionOutcome, bool) {
        let Some(s) = self.by_id.get_mut(&cmd.session) else {
            return (SessionOutcome::Expired, false);
        };
        self.lru.remove(&(s.last_used, cmd.session));
        s.last_used = index;
        self.lru.insert((index, cmd.session));
        if cmd.acked_below > s.acked_below {
            s.acked_below = cmd.acked_below;
            let keep = s.results.split_off(&cmd.acked_below);
            s.results = keep;
        }
        if let Some(r) = s.results.get(&cmd.seq) {
            return (SessionOutcome::Done(r.clone()), false);
        }
        if cmd.seq < s.acked_below {
            return (SessionOutcome::Answered, false);
        }
        if s.results.len() >= MAX_OUTSTANDING {
            return (SessionOutcome::TooManyOutstanding, false);
        }
        let result = apply(&cmd.command).map(ByteBuf::from);
        s.results.insert(cmd.seq, result.clone());
        (SessionOutcome::Done(result), true)
    }
}

/// The command inside a session envelope, and the handler's result inside
/// its outcome, for watches: `None` when the entry is not a session
/// command; `Some(None)` when it applied nothing (a duplicate, an expired
/// session).
pub(crate) fn unwrap_applied(
    command: &[u8],
    result: &Result<Bytes, String>,
) -> Option<Option<(Bytes, Result<Bytes, String>)>> {
    let (name, payload) = split_envelope(command).ok()?;
    if name == OPEN {
        return Some(None);
    }
    if name != COMMAND {
        return None;
    }
    let cmd: SessionCommand = rmp_serde::from_slice(payload).ok()?;
    let outcome: SessionOutcome = match result {
        Ok(b) => rmp_serde::from_slice(b).ok()?,
        Err(_) => return Some(None),
    };
    Some(match outcome {
        SessionOutcome::Done(r) => Some((
            Bytes::from(cmd.command.into_vec()),
            r.map(|b| Bytes::from(b.into_vec())),
        )),
        _ => None,
    })
}

/// Opens a session in a group (an empty message: its id is its log index).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Open;

impl Message for Open {
    type Result = u64;
    const NAME: &'static str = OPEN;
}

struct Inner {
    client: Client,
    /// The session's id in each group it opened in.
    ids: Mutex<HashMap<GroupId, u64>>,
    /// Held while a group's session is being opened, so that concurrent
    /// first commands open one session, not one each.
    opening: tokio::sync::Mutex<()>,
    /// The next sequence number, and those sent and not answered yet
    /// (taken and recorded under one lock: a number taken but not yet
    /// recorded could be counted as answered by a concurrent command).
    seqs: Mutex<(u64, BTreeSet<u64>)>,
    retry_for: Duration,
    /// Retries after an error whose outcome was unknown.
    retries: AtomicU64,
}

/// Counters of a [`Session`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Commands sent again after an error that left their outcome unknown
    /// (the group answered the copy, applying it at most once).
    pub retries: u64,
}

/// A client session: commands sent through it are retried until answered
/// and applied exactly once (see the module docs). Cheap to clone (the
/// clones share the session); many commands may be in flight at once.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl Client {
    /// A new session of this client (see [`crate::session`]) that retries
    /// a command for up to 60 s. Opening it costs one command per group,
    /// with its first command there.
    pub fn session(&self) -> Session {
        self.session_retrying_for(Duration::from_secs(60))
    }

    /// A new session that retries a command for up to `retry_for` before
    /// returning its last error.
    pub fn session_retrying_for(&self, retry_for: Duration) -> Session {
        Session {
            inner: Arc::new(Inner {
                client: self.clone(),
                ids: Mutex::new(HashMap::new()),
                opening: tokio::sync::Mutex::new(()),
                seqs: Mutex::new((1, BTreeSet::new())),
                retry_for,
                retries: AtomicU64::new(0),
            }),
        }
    }
}

/// Errors after which a session retries the same command (same sequence
/// number): the transient ones, and an unknown outcome too (the group
/// answers a copy of an applied command with the kept result).
fn retry_in_session(e: &SynodError) -> bool {
    e.is_transient() || matches!(e, SynodError::OutcomeUnknown { .. })
}

impl Session {
    /// Sends a command to `group` within the session and returns the
    /// handler's result. Retried (same sequence number) on every error
    /// after which it may or may not have been applied, and on those safe
    /// to retry, for up to the session's retry time: the group applies it
    /// once. Errors: the last one after that time; the actor's own refusal
    /// (`Rejected`, as [`Client::send`]); [`SynodError::SessionExpired`].
    pub async fn send<M: Message>(&self, group: GroupId, msg: M) -> Result<M::Result, SynodError> {
        let command = envelope(M::NAME, &msg).map_err(SynodError::Codec)?;
        let deadline = tokio::time::Instant::now() + self.inner.retry_for;
        let id = self.open(group, deadline).await?;
        let seq = Outstanding::take(&self.inner)?;
        let bytes = self.send_seq(group, id, seq.seq, command, deadline).await?;
        rmp_serde::from_slice(&bytes).map_err(|e| SynodError::Codec(e.to_string()))
    }

    async fn send_seq(
        &self,
        group: GroupId,
        session: u64,
        seq: u64,
        command: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<ByteBuf, SynodError> {
        let mut backoff = Duration::from_millis(10);
        // Whether an attempt may have been applied: then no later error
        // may say "nothing was applied".
        let mut uncertain = false;
        let unknown = |e: SynodError| SynodError::OutcomeUnknown {
            group,
            reason: format!(
                "an earlier attempt's outcome was unknown and the retries did not settle it: {e}"
            ),
        };
        loop {
            let acked_below = self
                .inner
                .seqs
                .lock()
                .ok()
                .and_then(|s| s.1.first().copied())
                .unwrap_or(seq);
            let cmd = SessionCommand {
                session,
                seq,
                acked_below,
                command: ByteBuf::from(command.clone()),
            };
            let outcome = self
                .inner
                .client
                .send_raw(group, envelope(COMMAND, &cmd).map_err(SynodError::Codec)?)
                .await
                .and_then(|b| {
                    rmp_serde::from_slice::<SessionOutcome>(&b)
                        .map_err(|e| SynodError::Codec(e.to_string()))
                });
            match outcome {
                Ok(SessionOutcome::Done(Ok(result))) => return Ok(result),
                Ok(SessionOutcome::Done(Err(e))) => return Err(SynodError::Rejected(e)),
                Ok(SessionOutcome::Expired) | Ok(SessionOutcome::Answered) => {
                    if let Ok(mut ids) = self.inner.ids.lock() {
                        if ids.get(&group) == Some(&session) {
                            ids.remove(&group);
                        }
                    }
                    return Err(SynodError::SessionExpired { group, session });
                }
                Ok(SessionOutcome::TooManyOutstanding) if uncertain => {
                    return Err(unknown(SynodError::Busy { group }));
                }
                Ok(SessionOutcome::TooManyOutstanding) => {
                    return Err(SynodError::Busy { group });
                }
                Err(e) if retry_in_session(&e) && tokio::time::Instant::now() < deadline => {
                    if !e.is_safe_to_retry() {
                        uncertain = true;
                        self.inner.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) if uncertain && e.is_safe_to_retry() => return Err(unknown(e)),
                Err(e) => return Err(e),
            }
        }
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            retries: self.inner.retries.load(Ordering::Relaxed),
        }
    }

    /// The session's id in `group`, opening it there first if needed. An
    /// open whose outcome is unknown is retried: at worst the group holds
    /// an unused session until it expires.
    async fn open(
        &self,
        group: GroupId,
        deadline: tokio::time::Instant,
    ) -> Result<u64, SynodError> {
        let known = || {
            self.inner
                .ids
                .lock()
                .ok()
                .and_then(|m| m.get(&group).copied())
        };
        if let Some(id) = known() {
            return Ok(id);
        }
        let _opening = self.inner.opening.lock().await;
        if let Some(id) = known() {
            return Ok(id); // opened by a concurrent command meanwhile
        }
        let mut backoff = Duration::from_millis(10);
        let id = loop {
            match self.inner.client.send(group, Open).await {
                Ok(id) => break id,
                Err(e) if retry_in_session(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        };
        if let Ok(mut m) = self.inner.ids.lock() {
            Ok(*m.entry(group).or_insert(id))
        } else {
            Ok(id)
        }
    }
}

/// A sequence number taken and recorded as unanswered; dropping it (the
/// answer came, or the caller gave up on the call) records it answered.
struct Outstanding {
    inner: Arc<Inner>,
    seq: u64,
}

impl Outstanding {
    fn take(inner: &Arc<Inner>) -> Result<Outstanding, SynodError> {
        let mut s = inner
            .seqs
            .lock()
            .map_err(|_| SynodError::Unavailable("the session's lock is poisoned".into()))?;
        let seq = s.0;
        s.0 += 1;
        s.1.insert(seq);
        Ok(Outstanding {
            inner: Arc::clone(inner),
            seq,
        })
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if let Ok(mut s) = self.inner.seqs.lock() {
            s.1.remove(&self.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(session: u64, seq: u64, acked_below: u64) -> SessionCommand {
        SessionCommand {
            session,
            seq,
            acked_below,
            command: ByteBuf::from(vec![seq as u8]),
        }
    }

    /// A duplicate gets the kept result without applying again; an
    /// acknowledged one is refused; an unknown session is expired.
    #[test]
    fn a_retried_command_is_answered_from_the_kept_result() {
        let mut s = Sessions::default();
        let id = s.open(5);
        let mut applied = 0;
        let mut apply = |_: &[u8]| {
            applied += 1;
            Ok(vec![applied as u8])
        };
        let (first, did) = s.handle(&cmd(id, 1, 1), 6, &mut apply);
        assert!(did);
        let (again, did) = s.handle(&cmd(id, 1, 1), 7, &mut apply);
        assert!(!did);
        assert_eq!(first, again);
        assert_eq!(first, SessionOutcome::Done(Ok(ByteBuf::from(vec![1]))));
        // The client saw seq 1 answered: its result is dropped, and a
        // stale copy of it is refused, not applied.
        let (_, did) = s.handle(&cmd(id, 2, 2), 8, &mut apply);
        assert!(did);
        assert_eq!(
            s.handle(&cmd(id, 1, 2), 9, &mut apply).0,
            SessionOutcome::Answered
        );
        assert_eq!(
            s.handle(&cmd(99, 1, 1), 10, &mut apply).0,
            SessionOutcome::Expired
        );
        assert_eq!(applied, 2);
    }

    /// Beyond MAX_SESSIONS the least recently used session expires.
    #[test]
    fn the_least_recently_used_session_expires() {
        let mut s = Sessions::default();
        for i in 0..MAX_SESSIONS as u64 {
            s.open(i + 1);
        }
        // Session 1 is used, so session 2 is now the least recent.
        let ok = |_: &[u8]| Ok(vec![]);
        s.handle(&cmd(1, 1, 1), 10_000, ok);
        s.open(10_001);
        assert_eq!(
            s.handle(&cmd(2, 1, 1), 10_002, ok).0,
            SessionOutcome::Expired
        );
        assert!(matches!(
            s.handle(&cmd(1, 2, 1), 10_003, ok).0,
            SessionOutcome::Done(_)
        ));
    }

    /// A session holds at most MAX_OUTSTANDING unanswered results.
    #[test]
    fn outstanding_results_are_bounded() {
        let mut s = Sessions::default();
        let id = s.open(1);
        let ok = |_: &[u8]| Ok(vec![]);
        for seq in 1..=MAX_OUTSTANDING as u64 {
            assert!(s.handle(&cmd(id, seq, 1), seq + 1, ok).1);
        }
        let next = MAX_OUTSTANDING as u64 + 1;
        assert_eq!(
            s.handle(&cmd(id, next, 1), next + 1, ok).0,
            SessionOutcome::TooManyOutstanding
        );
        // Acknowledging frees room.
        assert!(s.handle(&cmd(id, next, 2), next + 2, ok).1);
    }

    /// A sequence number is recorded as unanswered while its call runs,
    /// and no longer once the call ends or is dropped (a caller that gave
    /// up must not hold the acknowledged mark back for good); numbers are
    /// never handed out twice.
    #[tokio::test]
    async fn a_dropped_call_releases_its_sequence_number() {
        let tls =
            synod_net::tls::dev::generate(tempfile::tempdir().unwrap().path(), "ca", &[1], &["t"])
                .unwrap()
                .client("t")
                .unwrap();
        let nodes = [(1, "127.0.0.1:9".parse().unwrap())].into();
        let client = Client::new(crate::ClientConfig::new(nodes, tls)).unwrap();
        let session = client.session();
        let a = Outstanding::take(&session.inner).unwrap();
        let b = Outstanding::take(&session.inner).unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        let lowest = |s: &Session| s.inner.seqs.lock().unwrap().1.first().copied();
        assert_eq!(lowest(&session), Some(1));
        drop(a);
        assert_eq!(lowest(&session), Some(2));
        drop(b);
        assert_eq!(lowest(&session), None);
        assert_eq!(Outstanding::take(&session.inner).unwrap().seq, 3);
    }
}
