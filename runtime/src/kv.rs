//! `KvStore`: a replicated key-value map, ready to use (the `synod node`
//! command hosts it; the demo and the benchmarks drive it). It is also a
//! reference for writing a [`ReplicatedActor`].
//!
//! ```
//! use synod::kv::{Get, KvStore, Put};
//! # use synod::{ApplyContext, Handler, QueryHandler};
//! let mut kv = KvStore::default();
//! let ctx = ApplyContext { group: 1, index: 1, term: 1 };
//! assert_eq!(kv.handle(Put { key: "a".into(), value: b"1".to_vec() }, &ctx), 1);
//! assert_eq!(kv.query(Get { key: "a".into() }), Some(b"1".to_vec()));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actor::{ApplyContext, Handler, Handlers, QueryHandler, ReplicatedActor};

/// A map from string keys to byte values, with a revision that counts the
/// changes (BTreeMap: deterministic order for scans and snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Sets `key` to `value`; returns the store's new revision.
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

impl ReplicatedActor for KvStore {
    fn register(h: &mut Handlers<Self>) {
        h.command::<Put>()
            .command::<Delete>()
            .command::<CompareAndSwap>()
            .query::<Get>()
            .query::<Len>()
            .query::<Scan>()
            .command::<crate::shared::StreamInit>()
            .command::<crate::shared::StreamAppend>()
            .command::<crate::shared::StreamCompact>()
            .query::<crate::shared::StreamFetch>();
    }
}

impl Handler<Put> for KvStore {
    fn handle(&mut self, m: Put, _: &ApplyContext) -> u64 {
        self.entries
            .insert(m.key, serde_bytes::ByteBuf::from(m.value));
        self.revision += 1;
        self.revision
    }
}

impl Handler<Delete> for KvStore {
    fn handle(&mut self, m: Delete, _: &ApplyContext) -> bool {
        let existed = self.entries.remove(&m.key).is_some();
        if existed {
            self.revision += 1;
        }
        existed
    }
}

impl Handler<CompareAndSwap> for KvStore {
    fn handle(
        &mut self,
        m: CompareAndSwap,
        _: &ApplyContext,
    ) -> Result<u64, Option<serde_bytes::ByteBuf>> {
        let current = self.entries.get(&m.key);
        if current != m.expected.as_ref() {
            return Err(current.cloned());
        }
        self.entries
            .insert(m.key, serde_bytes::ByteBuf::from(m.value));
        self.revision += 1;
        Ok(self.revision)
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
