//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use synod_core::{Entry, EntryKind, Index};
use synod_storage::{GroupId, GroupState, LogStore};

/// Everything a store holds, in a comparable form.
pub type Dump = BTreeMap<GroupId, (GroupState, Vec<Entry>)>;

/// Reads every group and all its entries.
pub fn dump(store: &mut impl LogStore) -> Dump {
    let mut out = BTreeMap::new();
    for g in store.groups() {
        let s = store.group(g).expect("listed group exists");
        let entries = if s.is_empty() {
            Vec::new()
        } else {
            store
                .entries(g, s.first_index, s.last_index + 1, None)
                .expect("entries of a listed range")
        };
        out.insert(g, (s, entries));
    }
    out
}

/// An entry whose payload encodes where it belongs, so a misplaced or
/// invented entry is visible.
pub fn entry(group: GroupId, index: Index, term: u64, size: usize) -> Entry {
    let mut data = format!("g{group}-i{index}-t{term}-").into_bytes();
    data.resize(data.len() + size, b'x');
    Entry {
        term,
        index,
        kind: EntryKind::Normal(data.into()),
    }
}
