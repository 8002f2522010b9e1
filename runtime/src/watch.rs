//! Watch: the ordered stream of the commands a group applied, with their
//! results ([`Client::watch`], [`crate::ReplicatedAddr::subscribe`]).
//!
//! A change's *revision* is the log index of its command: the same on
//! every replica, increasing, with gaps (entries that are not commands:
//! a new leader's no-op, configuration changes). A watch starts at a
//! revision, or after what the replica it first asks has applied (then it
//! may include changes made just before it was created, never miss one
//! made after), and can be resumed from [`Watch::revision`] on any node.
//!
//! ```no_run
//! # async fn f(client: synod::Client) -> Result<(), synod::SynodError> {
//! use synod::kv::Put;
//! let mut watch = client.watch(1, None).await?;
//! while let Some(change) = watch.next().await {
//!     let change = change?;
//!     if let Some(Ok(put)) = change.message::<Put>() {
//!         println!("{}: {} = {:?}", change.revision(), put.key, put.value);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! **Bounds.** Each replica keeps its last `GroupConfig::watch_history`
//! commands (default 1,000, at most 256 KiB); a watch from an older
//! revision fails with [`SynodError::Compacted`] (etcd's
//! `ErrCompacted`): read the state and watch again from the revision after
//! it (a `KvStore` revision is the index of its last change).
//! Nothing is buffered per watcher on the node: a watch fetches a batch
//! (about [`WatchOptions::max_bytes`]) only when its reader has taken the
//! previous one, so a reader that falls too far behind is dropped with
//! `Compacted`, and never makes the node or itself hold more.
//!
//! **Retries.** A node that cannot be reached, restarts the group or is
//! busy is retried (another node, with backoff) for up to
//! [`WatchOptions::give_up_after`] in a row; a watch changes nothing, so
//! retrying is always safe. After an error the watch ends (`next` returns
//! `None`).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use synod_actors::{AppliedChange, ChangeBatch, Engine};
use synod_core::NodeId;
use synod_storage::GroupId;

use crate::actor::{split_envelope, Message};
use crate::client::Client;
use crate::error::SynodError;

/// One command a group applied, and its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    revision: u64,
    command: Bytes,
    result: Result<Bytes, String>,
}

impl Change {
    /// The change `c` made: a session's command as the command itself;
    /// `None` for what changed nothing (a session opening, a command of an
    /// expired session).
    fn from_applied(c: AppliedChange) -> Option<Change> {
        let (command, result) = match crate::session::unwrap_applied(&c.command, &c.result) {
            None => (c.command, c.result),
            Some(Some(inner)) => inner,
            Some(None) => return None,
        };
        Some(Change {
            revision: c.index,
            command,
            result,
        })
    }

    /// The log index of the command (the same on every replica).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The command's [`Message::NAME`] ("" when the command is not an
    /// envelope of the typed API).
    pub fn name(&self) -> &str {
        split_envelope(&self.command)
            .map(|(name, _)| name)
            .unwrap_or("")
    }

    /// Whether the command is an `M`.
    pub fn is<M: Message>(&self) -> bool {
        self.name() == M::NAME
    }

    /// The command as an `M`, if it is one (`Some(Err)`: it is named `M`
    /// but does not decode as one).
    pub fn message<M: Message>(&self) -> Option<Result<M, SynodError>> {
        let (name, payload) = split_envelope(&self.command).ok()?;
        (name == M::NAME)
            .then(|| rmp_serde::from_slice(payload).map_err(|e| SynodError::Codec(e.to_string())))
    }

    /// What the handler returned, if the command is an `M`:
    /// `Some(Err(SynodError::Rejected))` when the state machine refused it
    /// (an unknown message, a payload that did not decode).
    pub fn result<M: Message>(&self) -> Option<Result<M::Result, SynodError>> {
        if !self.is::<M>() {
            return None;
        }
        Some(match &self.result {
            Ok(b) => rmp_serde::from_slice(b).map_err(|e| SynodError::Codec(e.to_string())),
            Err(e) => Err(SynodError::Rejected(e.clone())),
        })
    }

    /// The command and its result, encoded (for state machines outside the
    /// typed API).
    pub fn raw(&self) -> (&[u8], Result<&[u8], &str>) {
        (
            &self.command,
            self.result.as_deref().map_err(|e| e.as_str()),
        )
    }
}

/// How a watch fetches.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How long a node holds a fetch open waiting for a change (a long
    /// poll; the watch then asks again). Default 5 s.
    pub wait: Duration,
    /// About how many bytes of changes one fetch brings (at least one
    /// change). Default 1 MiB.
    pub max_bytes: usize,
    /// How long failures in a row (no node reachable, the group
    /// restarting) are retried before the watch ends with the last one.
    /// Default 30 s.
    pub give_up_after: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            wait: Duration::from_secs(5),
            max_bytes: 1 << 20,
            give_up_after: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
enum Source {
    Client(Client),
    Local(Engine),
}

/// An ordered stream of the changes of one group (see the module docs).
/// Read it with [`Watch::next`], or as a `futures` stream with
/// [`Watch::into_stream`].
pub struct Watch {
    source: Source,
    group: GroupId,
    next: Option<u64>,
    buffered: VecDeque<Change>,
    options: WatchOptions,
    /// Nodes that answered `Compacted` for the current `next`.
    compacted: BTreeSet<NodeId>,
    /// Where the client asks (rotates on failures).
    node: usize,
    /// Long polls in a row that brought nothing.
    empty: u32,
    ended: bool,
}

impl Watch {
    pub(crate) async fn by_client(
        client: Client,
        group: GroupId,
        from: Option<u64>,
    ) -> Result<Watch, SynodError> {
        Watch::new(Source::Client(client), group, from)
            .start()
            .await
    }

    pub(crate) async fn local(
        engine: Engine,
        group: GroupId,
        from: Option<u64>,
    ) -> Result<Watch, SynodError> {
        Watch::new(Source::Local(engine), group, from).start().await
    }

    /// Settles where the watch starts: "the next change" becomes the
    /// revision after what the replica asked applied now.
    async fn start(mut self) -> Result<Watch, SynodError> {
        if self.next.is_none() {
            self.poll_now_buffered().await?;
        }
        Ok(self)
    }

    fn new(source: Source, group: GroupId, from: Option<u64>) -> Watch {
        Watch {
            source,
            group,
            next: from,
            buffered: VecDeque::new(),
            options: WatchOptions::default(),
            compacted: BTreeSet::new(),
            node: group as usize,
            empty: 0,
            ended: false,
        }
    }

    /// The same watch with other fetch settings.
    pub fn with_options(mut self, options: WatchOptions) -> Watch {
        self.options = options;
        self
    }

    /// The revision the watch goes on from: one past the last change it
    /// delivered. A new watch from here resumes this one exactly.
    pub fn revision(&self) -> u64 {
        self.buffered
            .front()
            .map(|c| c.revision)
            .or(self.next)
            .unwrap_or(1)
    }

    /// The next change, in log order; waits until there is one. `None`
    /// only after an error ended the watch.
    pub async fn next(&mut self) -> Option<Result<Change, SynodError>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(c) = self.buffered.pop_front() {
                return Some(Ok(c));
            }
            match self.fetch().await {
                Ok(batch) => {
                    // A replica cut off from its leader answers nothing
                    // new, without an error: after two empty long polls
                    // in a row, ask another node (idle groups just move).
                    self.empty = if batch.changes.is_empty() {
                        self.empty + 1
                    } else {
                        0
                    };
                    if self.empty >= 2 {
                        self.empty = 0;
                        self.node += 1;
                    }
                    self.take(batch);
                }
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// The changes that are there now, without waiting (at most about
    /// [`WatchOptions::max_bytes`] per fetch; empty when the watch is
    /// caught up). The watch goes on after them.
    pub async fn poll_now(&mut self) -> Result<Vec<Change>, SynodError> {
        if self.ended {
            return Err(SynodError::Unavailable("the watch ended".into()));
        }
        if self.buffered.is_empty() {
            self.poll_now_buffered().await?;
        }
        Ok(self.buffered.drain(..).collect())
    }

    /// One fetch that does not wait, into the buffer.
    async fn poll_now_buffered(&mut self) -> Result<(), SynodError> {
        let wait = std::mem::replace(&mut self.options.wait, Duration::ZERO);
        let fetched = self.fetch().await;
        self.options.wait = wait;
        self.take(fetched?);
        Ok(())
    }

    /// Buffers a fetched batch's changes and goes on after them.
    fn take(&mut self, batch: ChangeBatch) {
        self.next = Some(batch.next);
        self.compacted.clear();
        self.buffered
            .extend(batch.changes.into_iter().filter_map(Change::from_applied));
    }

    /// The watch as a `futures` stream (it ends after an error).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Change, SynodError>> {
        futures_util::stream::unfold(self, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })
    }

    /// One fetch, retried while that is worth it.
    async fn fetch(&mut self) -> Result<ChangeBatch, SynodError> {
        let give_up = tokio::time::Instant::now() + self.options.give_up_after;
        let mut backoff = Duration::from_millis(10);
        loop {
            let (error, node) = match self.fetch_once().await {
                Ok(batch) => return Ok(batch),
                Err(x) => x,
            };
            let retry = match &error {
                SynodError::Compacted { .. } => match (&self.source, node) {
                    // Another node may still keep that far back.
                    (Source::Client(c), Some(n)) => {
                        self.compacted.insert(n);
                        self.compacted.len() < c.node_ids().len()
                    }
                    _ => false,
                },
                e => e.is_transient(),
            };
            if !retry || tokio::time::Instant::now() >= give_up {
                return Err(error);
            }
            self.node += 1;
            if !matches!(error, SynodError::Compacted { .. }) {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }

    /// One fetch from one place: the error, and the node that gave it.
    async fn fetch_once(&self) -> Result<ChangeBatch, (SynodError, Option<NodeId>)> {
        let o = &self.options;
        match &self.source {
            Source::Local(engine) => engine
                .watch(self.group, self.next, o.max_bytes, o.wait)
                .await
                .map_err(|e| (e.into(), None)),
            Source::Client(client) => {
                let ids = client.node_ids();
                let node = ids[self.node % ids.len()];
                let req = synod_actors::Request::Watch {
                    group: self.group,
                    from: self.next,
                    max_bytes: u32::try_from(o.max_bytes).unwrap_or(u32::MAX),
                    wait_ms: u32::try_from(o.wait.as_millis()).unwrap_or(u32::MAX),
                };
                client
                    .watch_once(node, &req, o.wait)
                    .await
                    .map_err(|e| (e, Some(node)))
            }
        }
    }
}
