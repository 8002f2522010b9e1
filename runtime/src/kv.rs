//! `KvStore`: a replicated key-value map, ready to use (the `synod node`
//! command hosts it; the demo and the benchmarks drive it). It is also a
//! reference for writing a [`ReplicatedActor`](crate::ReplicatedActor).
//!
//! ```
//! use synod::kv::{Get, KvStore, Put};
//! # use synod::{ApplyContext, Handler, QueryHandler};
//! let mut kv = KvStore::default();
//! let ctx = ApplyContext { group: 1, index: 1, term: 1 };
//! assert_eq!(kv.handle(Put { key: "a".into(), value: b"1".to_vec() }, &ctx), 1);
//! assert_eq!(kv.query(Get { key: "a".into() }), Some(b"1".to_vec()));
//! ```

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use synod_storage::GroupId;

use crate::actor::{ApplyContext, Handler, QueryHandler};
use crate::watch::{Change, Watch};
use crate::{Client, SynodError};

/// A map from string keys to byte values, with a revision: the log index of
/// the last command that changed it, as in a [`Change::revision`] (so a
/// `Put`'s revision is where a [`watch`] resumes after it). BTreeMap:
/// deterministic order for scans and snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, crate::ReplicatedActor)]
#[synod(
    commands(
        Put,
        Delete,
        CompareAndSwap,
        Increment,
        crate::shared::StreamInit,
        crate::shared::StreamAppend,
        crate::shared::StreamCompact,
    ),
    queries(Get, Len, Scan, crate::shared::StreamFetch)
)]
pub struct KvStore {
    entries: BTreeMap<String, serde_bytes::ByteBuf>,
    revision: u64,
    /// The streams of shared states ([`crate::shared`]), by name (absent
    /// from snapshots taken before they existed).
    #[serde(default)]
    streams: BTreeMap<String, crate::shared::Stream>,
}

impl KvStore {
    pub(crate) fn streams(&self) -> &BTreeMap<String, crate::shared::Stream> {
        &self.streams
    }

    pub(crate) fn streams_mut(&mut self) -> &mut BTreeMap<String, crate::shared::Stream> {
        &mut self.streams
    }
}

/// Sets `key` to `value`; returns the store's new revision (the command's
/// log index).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Put {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}
crate::message!(Put => u64);

/// Removes `key`; returns whether it existed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delete {
    /// The key.
    pub key: String,
}
crate::message!(Delete => bool);

/// Sets `key` to `value` only if its current value is `expected` (`None`:
/// absent). Returns `Ok(revision)` or `Err(current value)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareAndSwap {
    /// The key.
    pub key: String,
    /// The value it must have now.
    pub expected: Option<serde_bytes::ByteBuf>,
    /// The new value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}
crate::message!(CompareAndSwap => Result<u64, Option<serde_bytes::ByteBuf>>);

/// Adds `by` to the integer stored at `key` (decimal text; absent counts
/// as 0) and returns the new value, or an error, changing nothing, when the
/// value there is not an integer or the sum overflows. Not idempotent:
/// retry it through a [`crate::Session`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Increment {
    /// The key.
    pub key: String,
    /// What to add (may be negative).
    pub by: i64,
}
crate::message!(Increment => Result<i64, String>);

/// The value of `key`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Get {
    /// The key.
    pub key: String,
}
crate::query!(Get => Option<Vec<u8>>);

/// Up to `limit` keys starting with `prefix` and their values, in key
/// order (an empty prefix: every key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scan {
    /// What the keys start with.
    pub prefix: String,
    /// The most pairs answered.
    pub limit: usize,
}
crate::query!(Scan => Vec<(String, serde_bytes::ByteBuf)>);

/// The number of keys and the revision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Len;
crate::query!(Len => (usize, u64));

impl KvStore {
    /// A change at `ctx`: the revision moves to its log index (always
    /// forward; a store from before revisions were indexes counted changes,
    /// never more than the indexes).
    fn changed(&mut self, ctx: &ApplyContext) -> u64 {
        self.revision = self.revision.max(ctx.index);
        self.revision
    }
}

impl Handler<Put> for KvStore {
    fn handle(&mut self, m: Put, ctx: &ApplyContext) -> u64 {
        self.entries
            .insert(m.key, serde_bytes::ByteBuf::from(m.value));
        self.changed(ctx)
    }
}

impl Handler<Delete> for KvStore {
    fn handle(&mut self, m: Delete, ctx: &ApplyContext) -> bool {
        let existed = self.entries.remove(&m.key).is_some();
        if existed {
            self.changed(ctx);
        }
        existed
    }
}

impl Handler<CompareAndSwap> for KvStore {
    fn handle(
        &mut self,
        m: CompareAndSwap,
        ctx: &ApplyContext,
    ) -> Result<u64, Option<serde_bytes::ByteBuf>> {
        let current = self.entries.get(&m.key);
        if current != m.expected.as_ref() {
            return Err(current.cloned());
        }
        self.entries
            .insert(m.key, serde_bytes::ByteBuf::from(m.value));
        Ok(self.changed(ctx))
    }
}

impl Handler<Increment> for KvStore {
    fn handle(&mut self, m: Increment, ctx: &ApplyContext) -> Result<i64, String> {
        let current = match self.entries.get(&m.key) {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| format!("the value of {:?} is not an integer", m.key))?,
        };
        let new = current
            .checked_add(m.by)
            .ok_or_else(|| format!("{current} + {} overflows", m.by))?;
        self.entries.insert(
            m.key,
            serde_bytes::ByteBuf::from(new.to_string().into_bytes()),
        );
        self.changed(ctx);
        Ok(new)
    }
}

impl QueryHandler<Get> for KvStore {
    fn query(&self, q: Get) -> Option<Vec<u8>> {
        self.entries.get(&q.key).map(|v| v.to_vec())
    }
}

impl QueryHandler<Scan> for KvStore {
    fn query(&self, q: Scan) -> Vec<(String, serde_bytes::ByteBuf)> {
        self.entries
            .range(q.prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&q.prefix))
            .take(q.limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl QueryHandler<Len> for KvStore {
    fn query(&self, _: Len) -> (usize, u64) {
        (self.entries.len(), self.revision)
    }
}

/// Which keys a [`KvWatch`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFilter {
    /// Exactly this key.
    Key(String),
    /// Every key starting with this (empty: every key).
    Prefix(String),
}

impl KeyFilter {
    fn matches(&self, key: &str) -> bool {
        match self {
            KeyFilter::Key(k) => k == key,
            KeyFilter::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// A change of one key of a [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvEvent {
    /// The key was set (by a `Put`, or a `CompareAndSwap` that swapped).
    Put {
        /// The revision of the change (its log index).
        revision: u64,
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
    },
    /// The key was removed (a `Delete` of a key that existed).
    Delete {
        /// The revision of the change (its log index).
        revision: u64,
        /// The key.
        key: String,
    },
}

impl KvEvent {
    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        match self {
            KvEvent::Put { revision, .. } | KvEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        match self {
            KvEvent::Put { key, .. } | KvEvent::Delete { key, .. } => key,
        }
    }

    /// The change a command made to the store, if it made one: a `Delete`
    /// of an absent key or a `CompareAndSwap` that did not swap changed
    /// nothing, and neither did a command the store refused.
    pub fn from_change(change: &Change) -> Option<KvEvent> {
        let revision = change.revision();
        if let Some(Ok(put)) = change.message::<Put>() {
            return matches!(change.result::<Put>(), Some(Ok(_))).then_some(KvEvent::Put {
                revision,
                key: put.key,
                value: put.value,
            });
        }
        if let Some(Ok(del)) = change.message::<Delete>() {
            return matches!(change.result::<Delete>(), Some(Ok(true))).then_some(
                KvEvent::Delete {
                    revision,
                    key: del.key,
                },
            );
        }
        if let Some(Ok(inc)) = change.message::<Increment>() {
            return match change.result::<Increment>() {
                Some(Ok(Ok(value))) => Some(KvEvent::Put {
                    revision,
                    key: inc.key,
                    value: value.to_string().into_bytes(),
                }),
                _ => None,
            };
        }
        if let Some(Ok(cas)) = change.message::<CompareAndSwap>() {
            return matches!(change.result::<CompareAndSwap>(), Some(Ok(Ok(_)))).then_some(
                KvEvent::Put {
                    revision,
                    key: cas.key,
                    value: cas.value,
                },
            );
        }
        None
    }
}

/// The changes to the keys of a [`KvStore`] group that match a filter, in
/// order: etcd's watch, on [`Client::watch`]. The filter runs in the
/// client: the node sends every command of the group (a prefix watch on a
/// busy group reads all its changes).
pub struct KvWatch {
    changes: Watch,
    filter: KeyFilter,
    ready: VecDeque<KvEvent>,
}

impl KvWatch {
    /// The next change of a matching key; waits until there is one.
    /// `None` only after an error ended the watch (see [`crate::watch`]).
    pub async fn next(&mut self) -> Option<Result<KvEvent, SynodError>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(Ok(e));
            }
            match self.changes.next().await? {
                Ok(change) => {
                    if let Some(e) = KvEvent::from_change(&change) {
                        if self.filter.matches(e.key()) {
                            self.ready.push_back(e);
                        }
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The revision to resume from: a new watch from here delivers exactly
    /// the events this one has not delivered yet.
    pub fn revision(&self) -> u64 {
        self.ready
            .front()
            .map(|e| e.revision())
            .unwrap_or_else(|| self.changes.revision())
    }
}

/// Watches the keys of `group` (a [`KvStore`]) that match `filter`, from
/// revision `from` on (`None`: from now). See [`KvWatch`] and
/// [`Client::watch`].
pub async fn watch(
    client: &Client,
    group: GroupId,
    filter: KeyFilter,
    from: Option<u64>,
) -> Result<KvWatch, SynodError> {
    Ok(KvWatch {
        changes: client.watch(group, from).await?,
        filter,
        ready: VecDeque::new(),
    })
}
