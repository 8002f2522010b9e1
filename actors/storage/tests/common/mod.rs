//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use synod_core::{Entry, EntryKind, Index};
use synod_storage::{GroupId, GroupState, LogStore, WalOptions};

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

/// Default WAL options with `segment_size`.
pub fn opts(segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        ..WalOptions::default()
    }
}

/// The segment files of a WAL directory, in order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// (start, end of body) of every record in a segment file.
pub fn record_extents(raw: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= raw.len() {
        let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push((pos, pos + 8 + len));
        pos = (pos + 8 + len).div_ceil(8) * 8;
    }
    out
}

/// Copies a WAL directory (without its lock file).
pub fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A scratch directory, on tmpfs when the machine has one: these tests
/// check recovery logic, not the disk, and make thousands of copies.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("synod-wal-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}
