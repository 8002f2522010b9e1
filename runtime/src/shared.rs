//! `SharedState`: a local copy of a replicated state, kept in step through
//! a revisioned stream of updates, with optimistic concurrency (the
//! semantics of Pravega's `StateSynchronizer`).
//!
//! Each process holds its own copy of a state `T` and the *revision* of
//! the stream that copy reflects. Reads ([`SharedState::state`]) are local
//! and never touch the network, so they may be stale: a process sees what
//! others wrote only when it calls [`SharedState::fetch_updates`] or
//! updates. A change is a list of updates `U` (each knows how to apply
//! itself to a `T`, [`Update::apply_to`]) computed against the local copy
//! and appended to the stream *only if the stream is still at the
//! revision the copy reflects*; if someone else wrote first, the copy is
//! brought up to date and the change computed again
//! ([`SharedState::update_state`]). Every process therefore applies the
//! same updates in the same order and holds the same state at the same
//! revision.
//!
//! The stream lives in a group of the built-in service actor
//! ([`KvStore`], which every `synod node` hosts), under a name: one group
//! holds any number of shared states. [`SharedState::compact`] replaces
//! the updates up to the local revision by the state at that revision, so
//! the stream does not grow without bound.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use synod::shared::{SharedState, Update};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct Counter(i64);
//! #[derive(Serialize, Deserialize)]
//! struct Add(i64);
//! impl Update<Counter> for Add {
//!     fn apply_to(&self, state: &mut Counter) {
//!         state.0 += self.0;
//!     }
//! }
//!
//! # async fn run(client: synod::Client) -> Result<(), synod::shared::SharedStateError> {
//! let mut counter: SharedState<Counter, Add> = SharedState::with_client(client, 1, "hits");
//! counter.initialize(Counter(0)).await?; // only the first one counts
//! // Read the value, add one, append only if nobody wrote meanwhile
//! // (else fetch what they wrote and run the closure again).
//! let before = counter
//!     .update_state(|c, updates| {
//!         updates.push(Add(1));
//!         c.0
//!     })
//!     .await?;
//! assert!(counter.state().map_or(0, |c| c.0) > before);
//! # Ok(())
//! # }
//! ```
//!
//! ## Outcomes
//!
//! An append is conditional on the revision, so a retry of one that
//! already applied fails as stale and the closure runs again on a state
//! that includes it: for a change that is not idempotent (an increment)
//! that would apply it twice. So `update_state` retries only refusals
//! that say *nothing was written*; a [`SynodError`] whose outcome is
//! unknown (`Timeout`, `ConnectionLost`, `Stopped`) is returned to the
//! caller, and [`SharedState::fetch_updates`] then shows whether the
//! change is in.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::actor::{ApplyContext, Handler, Message, Query, QueryHandler};
use crate::kv::KvStore;
use crate::node::ReplicatedAddr;
use crate::{Client, SynodError};
use synod_storage::GroupId;

/// A position in a shared state's stream: 0 before it is initialized,
/// the initial state is revision 1, and each update adds one.
pub type Revision = u64;

/// An update of a shared state `T`: applied in stream order by every copy.
/// It must be deterministic (see the determinism rules in
/// [`crate::actor`]): the same update on the same state gives the same
/// state everywhere.
pub trait Update<T>: Serialize + DeserializeOwned {
    /// Applies this update to `state`.
    fn apply_to(&self, state: &mut T);
}

/// What went wrong with a shared state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharedStateError {
    /// The stream has no initial state yet: call
    /// [`SharedState::initialize`] first.
    #[error("shared state {name:?} of group {group} is not initialized; call initialize() first")]
    NotInitialized {
        /// The group.
        group: GroupId,
        /// The shared state's name.
        name: String,
    },
    /// An initial state, update or answer does not encode or decode as
    /// the types given (a different `T` or `U` than the writers used?).
    #[error("shared state {name:?}: {reason}")]
    Codec {
        /// The shared state's name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// The request failed; see [`SynodError`] for whether it may have
    /// been applied and whether to retry.
    #[error(transparent)]
    Synod(#[from] SynodError),
}

/// The stream of one shared state, as the group stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stream {
    /// Revision of `initial` (raised by compaction).
    base: Revision,
    /// The state at `base` (encoded by the writers).
    initial: ByteBuf,
    /// The updates after `base`: revision `base + 1 + i` is `updates[i]`.
    updates: VecDeque<ByteBuf>,
    /// Bytes of initial state and updates written since the last
    /// compaction (or the initialization).
    bytes_since_compaction: u64,
}

impl Stream {
    fn revision(&self) -> Revision {
        self.base + self.updates.len() as u64
    }
}

/// Largest answer to a fetch, in bytes of updates (the reader asks again
/// for the rest).
const MAX_FETCH_BYTES: usize = 1 << 20;

/// Creates stream `name` with `initial` as revision 1, unless it exists:
/// `Ok(1)`, or `Err(its revision)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamInit {
    /// The shared state's name.
    pub name: String,
    /// The encoded initial state.
    pub initial: ByteBuf,
}

impl Message for StreamInit {
    type Result = Result<Revision, Revision>;
    const NAME: &'static str = "synod.stream.init";
}

/// Appends `updates` to stream `name`, if it is at revision `expected`
/// (`None`: whatever its revision). The new revision, or why not.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamAppend {
    /// The shared state's name.
    pub name: String,
    /// The revision the writer computed the updates against.
    pub expected: Option<Revision>,
    /// The encoded updates, in order.
    pub updates: Vec<ByteBuf>,
}

/// Why a [`StreamAppend`] or [`StreamCompact`] wrote nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamRefusal {
    /// The stream has no initial state.
    NotInitialized,
    /// The stream is at `latest`, not at the revision expected.
    Stale {
        /// The stream's revision.
        latest: Revision,
    },
}

impl Message for StreamAppend {
    type Result = Result<Revision, StreamRefusal>;
    const NAME: &'static str = "synod.stream.append";
}

/// Replaces the initial state and the updates up to `revision` by `state`
/// (the state at `revision`). A compaction at or below the current base
/// changes nothing (a newer one happened).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamCompact {
    /// The shared state's name.
    pub name: String,
    /// The revision `state` reflects.
    pub revision: Revision,
    /// The encoded state at `revision`.
    pub state: ByteBuf,
}

impl Message for StreamCompact {
    type Result = Result<(), StreamRefusal>;
    const NAME: &'static str = "synod.stream.compact";
}

/// What comes after revision `from` in stream `name` (`None`: no stream).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamFetch {
    /// The shared state's name.
    pub name: String,
    /// The reader's revision.
    pub from: Revision,
}

/// The answer to a [`StreamFetch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamUpdates {
    /// When `from` is older than the stream's compacted base (or 0): the
    /// base revision and the state at it, to start over from.
    pub initial: Option<(Revision, ByteBuf)>,
    /// Updates in order, the first at revision `first`; maybe not all of
    /// them (at most about a MiB): ask again from the last one.
    pub updates: Vec<ByteBuf>,
    /// The revision of `updates[0]`.
    pub first: Revision,
    /// The stream's revision.
    pub revision: Revision,
    /// Bytes written since the last compaction.
    pub bytes_since_compaction: u64,
}

impl Query for StreamFetch {
    type Result = Option<StreamUpdates>;
    const NAME: &'static str = "synod.stream.fetch";
}

impl Handler<StreamInit> for KvStore {
    fn handle(&mut self, m: StreamInit, _: &ApplyContext) -> Result<Revision, Revision> {
        let streams = self.streams_mut();
        if let Some(s) = streams.get(&m.name) {
            return Err(s.revision());
        }
        let bytes = m.initial.len() as u64;
        streams.insert(
            m.name,
            Stream {
                base: 1,
                initial: m.initial,
                updates: VecDeque::new(),
                bytes_since_compaction: bytes,
            },
        );
        Ok(1)
    }
}

impl Handler<StreamAppend> for KvStore {
    fn handle(&mut self, m: StreamAppend, _: &ApplyContext) -> Result<Revision, StreamRefusal> {
        let Some(s) = self.streams_mut().get_mut(&m.name) else {
            return Err(StreamRefusal::NotInitialized);
        };
        let latest = s.revision();
        if m.expected.is_some_and(|e| e != latest) {
            return Err(StreamRefusal::Stale { latest });
        }
        for u in m.updates {
            s.bytes_since_compaction += u.len() as u64;
            s.updates.push_back(u);
        }
        Ok(s.revision())
    }
}

impl Handler<StreamCompact> for KvStore {
    fn handle(&mut self, m: StreamCompact, _: &ApplyContext) -> Result<(), StreamRefusal> {
        let Some(s) = self.streams_mut().get_mut(&m.name) else {
            return Err(StreamRefusal::NotInitialized);
        };
        let latest = s.revision();
        if m.revision > latest {
            return Err(StreamRefusal::Stale { latest });
        }
        if m.revision <= s.base {
            return Ok(());
        }
        let drop = (m.revision - s.base) as usize;
        s.updates.drain(..drop);
        s.base = m.revision;
        s.bytes_since_compaction =
            m.state.len() as u64 + s.updates.iter().map(|u| u.len() as u64).sum::<u64>();
        s.initial = m.state;
        Ok(())
    }
}

impl QueryHandler<StreamFetch> for KvStore {
    fn query(&self, q: StreamFetch) -> Option<StreamUpdates> {
        let s = self.streams().get(&q.name)?;
        let (initial, skip) = if q.from < s.base {
            (Some((s.base, s.initial.clone())), 0)
        } else {
            (None, (q.from - s.base) as usize)
        };
        let mut bytes = 0;
        let updates = s
            .updates
            .iter()
            .skip(skip)
            .take_while(|u| {
                let first = bytes == 0;
                bytes += u.len().max(1);
                first || bytes <= MAX_FETCH_BYTES
            })
            .cloned()
            .collect();
        Some(StreamUpdates {
            initial,
            updates,
            first: s.base.saturating_add(1).saturating_add(skip as u64),
            revision: s.revision(),
            bytes_since_compaction: s.bytes_since_compaction,
        })
    }
}

/// Where a shared state's stream is: through a client, or a replicated
/// address on a node of the cluster.
enum Target {
    Remote { client: Client, group: GroupId },
    Local(ReplicatedAddr<KvStore>),
}

impl Target {
    fn group(&self) -> GroupId {
        match self {
            Target::Remote { group, .. } => *group,
            Target::Local(a) => a.group(),
        }
    }

    async fn send<M: Message>(&self, msg: M) -> Result<M::Result, SynodError>
    where
        KvStore: Handler<M> + crate::Registered<M>,
    {
        match self {
            Target::Remote { client, group } => client.send(*group, msg).await,
            Target::Local(a) => a.send(msg).await,
        }
    }

    async fn watch(&self) -> Result<crate::watch::Watch, SynodError> {
        match self {
            Target::Remote { client, group } => client.watch(*group, None).await,
            Target::Local(a) => a.subscribe(None).await,
        }
    }

    async fn read<Q: Query>(&self, query: Q) -> Result<Q::Result, SynodError>
    where
        KvStore: QueryHandler<Q> + crate::Registered<Q>,
    {
        match self {
            Target::Remote { client, group } => client.read(*group, query).await,
            Target::Local(a) => a.read(query).await,
        }
    }
}

/// Counters of a [`SharedState`], for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Appends refused because another writer was first (each made the
    /// closure of [`SharedState::update_state`] run again).
    pub conflicts: u64,
    /// Fetches of updates from the group.
    pub fetches: u64,
    /// Updates this copy applied (its own and others').
    pub applied: u64,
}

/// A local copy of the shared state `T`, updated by `U`s. See the module
/// documentation.
pub struct SharedState<T, U> {
    target: Target,
    name: String,
    state: Option<T>,
    revision: Revision,
    stats: SharedStats,
    _updates: PhantomData<fn() -> U>,
}

impl<T, U> SharedState<T, U>
where
    T: Serialize + DeserializeOwned,
    U: Update<T>,
{
    /// The shared state `name` in `group`, reached through `client`. No
    /// request is made: the copy is empty (revision 0) until
    /// [`SharedState::fetch_updates`] or [`SharedState::initialize`].
    pub fn with_client(client: Client, group: GroupId, name: impl Into<String>) -> Self {
        Self::new(Target::Remote { client, group }, name.into())
    }

    /// The shared state `name` in the group of `addr` (a [`KvStore`]
    /// group spawned on this node).
    pub fn with_addr(addr: ReplicatedAddr<KvStore>, name: impl Into<String>) -> Self {
        Self::new(Target::Local(addr), name.into())
    }

    fn new(target: Target, name: String) -> Self {
        SharedState {
            target,
            name,
            state: None,
            revision: 0,
            stats: SharedStats::default(),
            _updates: PhantomData,
        }
    }

    /// The local copy (`None` until one was fetched or initialized). No
    /// request is made: it may be stale.
    pub fn state(&self) -> Option<&T> {
        self.state.as_ref()
    }

    /// The revision the local copy reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The shared state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counters of conflicts, fetches and updates applied.
    pub fn stats(&self) -> SharedStats {
        self.stats
    }

    fn codec(&self, reason: String) -> SharedStateError {
        SharedStateError::Codec {
            name: self.name.clone(),
            reason,
        }
    }

    fn not_initialized(&self) -> SharedStateError {
        SharedStateError::NotInitialized {
            group: self.target.group(),
            name: self.name.clone(),
        }
    }

    fn encode<V: Serialize>(&self, v: &V) -> Result<ByteBuf, SharedStateError> {
        rmp_serde::to_vec_named(v)
            .map(ByteBuf::from)
            .map_err(|e| self.codec(format!("cannot encode: {e}")))
    }

    fn decode<V: DeserializeOwned>(&self, b: &[u8], what: &str) -> Result<V, SharedStateError> {
        rmp_serde::from_slice(b).map_err(|e| self.codec(format!("cannot decode {what}: {e}")))
    }

    /// Brings the local copy up to date with the stream (a linearizable
    /// read of the group: it sees every update acknowledged before it).
    /// Returns the revision reached.
    pub async fn fetch_updates(&mut self) -> Result<Revision, SharedStateError> {
        loop {
            self.stats.fetches += 1;
            let fetch = StreamFetch {
                name: self.name.clone(),
                from: self.revision,
            };
            let Some(got) = self.target.read(fetch).await? else {
                return Ok(self.revision);
            };
            if let Some((base, initial)) = &got.initial {
                self.state = Some(self.decode(initial, "the initial state")?);
                self.revision = *base;
            }
            if got.first != self.revision + 1 && !got.updates.is_empty() {
                return Err(self.codec(format!(
                    "fetched updates from revision {} for a copy at {}",
                    got.first, self.revision
                )));
            }
            let n = got.updates.len() as u64;
            for u in &got.updates {
                let update: U = self.decode(u, "an update")?;
                let Some(state) = self.state.as_mut() else {
                    return Err(self.not_initialized());
                };
                update.apply_to(state);
            }
            self.revision += n;
            self.stats.applied += n;
            if self.revision >= got.revision || n == 0 {
                return Ok(self.revision);
            }
        }
    }

    /// Brings the local copy up to date like [`SharedState::fetch_updates`]
    /// and, if nobody wrote since the copy's revision, waits up to
    /// `within` until someone does (a watch of the group: no polling),
    /// then fetches that. Returns the revision reached (unchanged if
    /// nothing was written in time): a reader loop
    /// `loop { s.wait_for_updates(d).await?; use(s.state()) }` sees every
    /// change without asking in vain.
    pub async fn wait_for_updates(
        &mut self,
        within: Duration,
    ) -> Result<Revision, SharedStateError> {
        let deadline = tokio::time::Instant::now() + within;
        // Watch first, then read: whatever is written after the read is
        // applied on the watched replica after the watch began.
        let mut watch = self.target.watch().await?;
        let before = self.revision;
        let reached = self.fetch_updates().await?;
        if reached != before {
            return Ok(reached);
        }
        loop {
            let change = match tokio::time::timeout_at(deadline, watch.next()).await {
                Err(_) => return Ok(self.revision),
                Ok(None) => return Ok(self.revision),
                Ok(Some(Err(SynodError::Compacted { .. }))) => return self.fetch_updates().await,
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(c))) => c,
            };
            let ours = match change.name() {
                n if n == StreamAppend::NAME => change
                    .message::<StreamAppend>()
                    .and_then(Result::ok)
                    .is_some_and(|m| m.name == self.name),
                n if n == StreamInit::NAME => change
                    .message::<StreamInit>()
                    .and_then(Result::ok)
                    .is_some_and(|m| m.name == self.name),
                _ => false,
            };
            if ours {
                let reached = self.fetch_updates().await?;
                if reached != before {
                    return Ok(reached);
                }
            }
        }
    }

    /// Sets the initial state if the stream has none; returns whether this
    /// call did. Either way the local copy is up to date afterwards.
    pub async fn initialize(&mut self, initial: T) -> Result<bool, SharedStateError> {
        let init = StreamInit {
            name: self.name.clone(),
            initial: self.encode(&initial)?,
        };
        match self.target.send(init).await? {
            Ok(revision) => {
                // Nobody could write between the initialization and its
                // answer only if nothing was there; updates appended since
                // are fetched below.
                self.state = Some(initial);
                self.revision = revision;
                self.fetch_updates().await?;
                Ok(true)
            }
            Err(_) => {
                self.fetch_updates().await?;
                Ok(false)
            }
        }
    }

    /// Computes updates against the local copy with `generate` (which
    /// pushes them onto the list it is given and returns a value) and
    /// appends them only if the stream is still at the copy's revision;
    /// otherwise fetches what others wrote and calls `generate` again, as
    /// often as it takes. `generate` must not have side effects beyond its
    /// result: it may run several times. Pushing nothing writes nothing.
    /// On success the local copy includes the updates.
    pub async fn update_state<R>(
        &mut self,
        mut generate: impl FnMut(&T, &mut Vec<U>) -> R,
    ) -> Result<R, SharedStateError> {
        if self.state.is_none() {
            self.fetch_updates().await?;
        }
        loop {
            let Some(state) = self.state.as_ref() else {
                return Err(self.not_initialized());
            };
            let mut updates = Vec::new();
            let result = generate(state, &mut updates);
            if updates.is_empty() {
                return Ok(result);
            }
            let encoded = updates
                .iter()
                .map(|u| self.encode(u))
                .collect::<Result<Vec<_>, _>>()?;
            let append = StreamAppend {
                name: self.name.clone(),
                expected: Some(self.revision),
                updates: encoded,
            };
            match self.target.send(append).await? {
                Ok(revision) => {
                    self.apply_own(updates, revision);
                    return Ok(result);
                }
                Err(StreamRefusal::Stale { .. }) => {
                    self.stats.conflicts += 1;
                    self.fetch_updates().await?;
                }
                Err(StreamRefusal::NotInitialized) => return Err(self.not_initialized()),
            }
        }
    }

    fn apply_own(&mut self, updates: Vec<U>, revision: Revision) {
        if let Some(state) = self.state.as_mut() {
            for u in &updates {
                u.apply_to(state);
            }
        }
        self.stats.applied += updates.len() as u64;
        self.revision = revision;
    }

    /// Appends `updates` whatever the stream's revision (no retry, no
    /// closure). The local copy includes them if nobody else wrote in
    /// between; otherwise it stays as it was until the next fetch.
    pub async fn update_unconditionally(
        &mut self,
        updates: Vec<U>,
    ) -> Result<Revision, SharedStateError> {
        let encoded = updates
            .iter()
            .map(|u| self.encode(u))
            .collect::<Result<Vec<_>, _>>()?;
        let n = updates.len() as u64;
        let append = StreamAppend {
            name: self.name.clone(),
            expected: None,
            updates: encoded,
        };
        match self.target.send(append).await? {
            Ok(revision) => {
                if revision == self.revision + n && self.state.is_some() {
                    self.apply_own(updates, revision);
                }
                Ok(revision)
            }
            Err(_) => Err(self.not_initialized()),
        }
    }

    /// Replaces the stream's history up to the local revision by a new
    /// initial state, `compactor(local state)`, so that the updates before
    /// it can be dropped (a reader older than that starts over from it).
    /// `compactor` must return the state the local copy is, in whatever
    /// form the readers decode as `T`.
    pub async fn compact(
        &mut self,
        compactor: impl FnOnce(&T) -> T,
    ) -> Result<(), SharedStateError> {
        let Some(state) = self.state.as_ref() else {
            return Err(self.not_initialized());
        };
        let compact = StreamCompact {
            name: self.name.clone(),
            revision: self.revision,
            state: self.encode(&compactor(state))?,
        };
        match self.target.send(compact).await? {
            Ok(()) => Ok(()),
            Err(StreamRefusal::NotInitialized) => Err(self.not_initialized()),
            Err(StreamRefusal::Stale { latest }) => Err(self.codec(format!(
                "the copy's revision {} is ahead of the stream's {latest}: a different stream?",
                self.revision
            ))),
        }
    }

    /// Bytes of initial state and updates written since the last
    /// compaction (a linearizable read; a hint for when to compact).
    pub async fn bytes_written_since_compaction(&self) -> Result<u64, SharedStateError> {
        let fetch = StreamFetch {
            name: self.name.clone(),
            from: u64::MAX,
        };
        Ok(self
            .target
            .read(fetch)
            .await?
            .map_or(0, |u| u.bytes_since_compaction))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ApplyContext {
        ApplyContext {
            group: 1,
            index: 1,
            term: 1,
        }
    }

    fn b(s: &str) -> ByteBuf {
        ByteBuf::from(s.as_bytes().to_vec())
    }

    fn append(
        kv: &mut KvStore,
        expected: Option<Revision>,
        u: &[&str],
    ) -> Result<Revision, StreamRefusal> {
        kv.handle(
            StreamAppend {
                name: "s".into(),
                expected,
                updates: u.iter().map(|s| b(s)).collect(),
            },
            &ctx(),
        )
    }

    fn fetch(kv: &KvStore, from: Revision) -> Option<StreamUpdates> {
        kv.query(StreamFetch {
            name: "s".into(),
            from,
        })
    }

    #[test]
    fn a_stream_is_initialized_once_and_appends_only_at_the_expected_revision() {
        let mut kv = KvStore::default();
        assert_eq!(
            append(&mut kv, None, &["x"]),
            Err(StreamRefusal::NotInitialized)
        );
        assert_eq!(fetch(&kv, 0), None);
        let init = |v: &str| StreamInit {
            name: "s".into(),
            initial: b(v),
        };
        assert_eq!(kv.handle(init("zero"), &ctx()), Ok(1));
        assert_eq!(kv.handle(init("again"), &ctx()), Err(1));
        assert_eq!(append(&mut kv, Some(1), &["a", "b"]), Ok(3));
        assert_eq!(
            append(&mut kv, Some(1), &["late"]),
            Err(StreamRefusal::Stale { latest: 3 })
        );
        assert_eq!(append(&mut kv, None, &["c"]), Ok(4));
        let all = fetch(&kv, 0).unwrap();
        assert_eq!(all.initial, Some((1, b("zero"))));
        assert_eq!((all.first, all.revision), (2, 4));
        assert_eq!(all.updates, vec![b("a"), b("b"), b("c")]);
        assert_eq!(all.bytes_since_compaction, 4 + 3);
        let tail = fetch(&kv, 3).unwrap();
        assert_eq!(
            (tail.initial, tail.first, tail.updates),
            (None, 4, vec![b("c")])
        );
        assert!(fetch(&kv, 4).unwrap().updates.is_empty());
        assert!(fetch(&kv, u64::MAX).unwrap().updates.is_empty());
    }

    #[test]
    fn compaction_drops_the_updates_it_covers_and_old_readers_start_over() {
        let mut kv = KvStore::default();
        let _ = kv.handle(
            StreamInit {
                name: "s".into(),
                initial: b("0"),
            },
            &ctx(),
        );
        assert_eq!(append(&mut kv, Some(1), &["+1", "+1", "+1"]), Ok(4));
        let compact = |revision, state: &str| StreamCompact {
            name: "s".into(),
            revision,
            state: b(state),
        };
        assert_eq!(
            kv.handle(compact(9, "?"), &ctx()),
            Err(StreamRefusal::Stale { latest: 4 })
        );
        assert_eq!(kv.handle(compact(3, "2"), &ctx()), Ok(()));
        // An older compaction afterwards changes nothing.
        assert_eq!(kv.handle(compact(2, "1"), &ctx()), Ok(()));
        let from_scratch = fetch(&kv, 1).unwrap();
        assert_eq!(from_scratch.initial, Some((3, b("2"))));
        assert_eq!((from_scratch.first, from_scratch.updates.len()), (4, 1));
        assert_eq!(from_scratch.bytes_since_compaction, 1 + 2);
        let current = fetch(&kv, 3).unwrap();
        assert_eq!((current.initial, current.first), (None, 4));
        // Revisions go on from where they were.
        assert_eq!(append(&mut kv, Some(4), &["+1"]), Ok(5));
    }

    #[test]
    fn a_fetch_answers_about_a_mebibyte_and_the_rest_on_asking_again() {
        let mut kv = KvStore::default();
        let _ = kv.handle(
            StreamInit {
                name: "s".into(),
                initial: b(""),
            },
            &ctx(),
        );
        let big = "x".repeat(300 << 10);
        for _ in 0..10 {
            let _ = append(&mut kv, None, &[big.as_str()]);
        }
        let first = fetch(&kv, 1).unwrap();
        assert_eq!((first.updates.len(), first.revision), (3, 11));
        let rest = fetch(&kv, 4).unwrap();
        assert_eq!((rest.first, rest.updates.len()), (5, 3));
    }
}
