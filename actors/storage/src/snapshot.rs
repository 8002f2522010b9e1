//! The snapshot store: per group, complete snapshots of the state machine
//! as files, written as a stream of chunks and published atomically.
//!
//! ```text
//! dir/<group>/<index:020>-<term:020>.snap
//!   "SYNODSNP" | version u32 | meta_len u32 | meta | meta_crc u32
//!   data ...
//!   footer: data_len u64 | data_crc u32 | "SNAPEND\0"
//! ```
//!
//! A [`SnapshotWriter`] writes into `<name>.tmp`; [`SnapshotWriter::finish`]
//! appends the footer, fsyncs the file, renames it into place and fsyncs
//! the directory, so a crash leaves either the old set of snapshots or the
//! new one, never a half-written snapshot under a real name. A
//! [`SnapshotReader`] checks the data's CRC when it reaches the end.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::BufMut;
use synod_core::{Index, NodeId, Term};

use crate::error::{Result, StorageError};
use crate::GroupId;

const MAGIC: &[u8; 8] = b"SYNODSNP";
const END_MAGIC: &[u8; 8] = b"SNAPEND\0";
const VERSION: u32 = 1;
const FOOTER: u64 = 8 + 4 + 8;
/// Largest metadata a reader accepts: 1 MiB, room for some 130 000 members.
const MAX_META: u64 = 1 << 20;

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The group.
    pub group: GroupId,
    /// Index of the last entry the snapshot includes.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
    /// Voting members as of `index`.
    pub voters: Vec<NodeId>,
    /// Non-voting members as of `index`.
    pub learners: Vec<NodeId>,
}

impl SnapshotMeta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u64_le(self.group);
        out.put_u64_le(self.index);
        out.put_u64_le(self.term);
        for set in [&self.voters, &self.learners] {
            out.put_u32_le(set.len() as u32);
            for id in set {
                out.put_u64_le(*id);
            }
        }
        out
    }

    fn decode(b: &[u8]) -> std::result::Result<SnapshotMeta, String> {
        let mut pos = 0usize;
        let mut u64_at = |what: &str| -> std::result::Result<u64, String> {
            let s = b
                .get(pos..pos + 8)
                .ok_or_else(|| format!("metadata too short for {what}"))?;
            pos += 8;
            Ok(crate::codec::le_u64(s))
        };
        let group = u64_at("group")?;
        let index = u64_at("index")?;
        let term = u64_at("term")?;
        let mut sets = Vec::new();
        for what in ["voters", "learners"] {
            let n = b
                .get(pos..pos + 4)
                .ok_or_else(|| format!("metadata too short for {what}"))?;
            let n = crate::codec::le_u32(n) as usize;
            pos += 4;
            let mut set = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let s = b
                    .get(pos..pos + 8)
                    .ok_or_else(|| format!("metadata too short for {what}"))?;
                pos += 8;
                set.push(crate::codec::le_u64(s));
            }
            sets.push(set);
        }
        let learners = sets.pop().unwrap_or_default();
        let voters = sets.pop().unwrap_or_default();
        Ok(SnapshotMeta {
            group,
            index,
            term,
            voters,
            learners,
        })
    }
}

/// Snapshots of every group of a node, under one directory.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep: usize,
}

impl SnapshotStore {
    /// A `keep` that never deletes anything on its own: retention is left
    /// to the caller ([`SnapshotStore::delete_below`]).
    pub const KEEP_ALL: usize = usize::MAX;

    /// Opens the store in `dir`, keeping the newest `keep` (>= 1) snapshots
    /// per group. Leftover temporary files of interrupted writes are
    /// removed.
    pub fn open(dir: impl AsRef<Path>, keep: usize) -> Result<SnapshotStore> {
        let dir = dir.as_ref().to_path_buf();
        if keep == 0 {
            return Err(StorageError::InvalidArgument {
                reason: "keep at least one snapshot per group".into(),
            });
        }
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let store = SnapshotStore { dir, keep };
        for group in store.group_dirs()? {
            let gdir = store.group_dir(group);
            for entry in fs::read_dir(&gdir).map_err(|e| StorageError::io(&gdir, e))? {
                let entry = entry.map_err(|e| StorageError::io(&gdir, e))?;
                if entry.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(store)
    }

    fn group_dir(&self, group: GroupId) -> PathBuf {
        self.dir.join(group.to_string())
    }

    fn group_dirs(&self) -> Result<Vec<GroupId>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(&self.dir, e))?;
            if let Ok(g) = entry.file_name().to_string_lossy().parse::<GroupId>() {
                out.push(g);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn path_of(&self, group: GroupId, index: Index, term: Term) -> PathBuf {
        self.group_dir(group)
            .join(format!("{index:020}-{term:020}.snap"))
    }

    /// Starts writing a snapshot described by `meta`.
    pub fn writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        let m = meta.encode();
        if m.len() as u64 > MAX_META {
            return Err(StorageError::InvalidArgument {
                reason: format!(
                    "snapshot metadata of {} bytes exceeds the limit of {MAX_META}",
                    m.len()
                ),
            });
        }
        let gdir = self.group_dir(meta.group);
        if !gdir.exists() {
            fs::create_dir_all(&gdir).map_err(|e| StorageError::io(&gdir, e))?;
            // The group's directory entry must survive a power loss too.
            sync_dir(&self.dir)?;
        }
        let path = self.path_of(meta.group, meta.index, meta.term);
        let tmp = path.with_extension("snap.tmp");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| StorageError::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut head = Vec::with_capacity(20 + m.len());
        head.extend_from_slice(MAGIC);
        head.put_u32_le(VERSION);
        head.put_u32_le(m.len() as u32);
        head.extend_from_slice(&m);
        head.put_u32_le(crc32c::crc32c(&m));
        out.write_all(&head)
            .map_err(|e| StorageError::io(&tmp, e))?;
        Ok(SnapshotWriter {
            store: self.clone(),
            meta,
            out: Some(out),
            tmp,
            path,
            crc: 0,
            len: 0,
        })
    }

    /// The (index, term) of every snapshot file of `group`, oldest first,
    /// from file names alone (so one damaged file hides nothing else).
    fn names(&self, group: GroupId) -> Result<Vec<(Index, Term)>> {
        let gdir = self.group_dir(group);
        if !gdir.exists() {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(&gdir).map_err(|e| StorageError::io(&gdir, e))? {
            let entry = entry.map_err(|e| StorageError::io(&gdir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".snap") else {
                continue;
            };
            let parsed = stem
                .split_once('-')
                .and_then(|(i, t)| Some((i.parse::<Index>().ok()?, t.parse::<Term>().ok()?)));
            if let Some((index, term)) = parsed {
                found.push((index, term));
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Snapshots of `group` whose header checks out, oldest first. A
    /// damaged file is left out (and reported when opened directly).
    pub fn list(&self, group: GroupId) -> Result<Vec<SnapshotMeta>> {
        Ok(self
            .names(group)?
            .into_iter()
            .filter_map(|(index, term)| self.open_at(group, index, term).ok())
            .map(|r| r.meta)
            .collect())
    }

    /// The newest snapshot of `group` whose header checks out, if any.
    pub fn latest(&self, group: GroupId) -> Result<Option<SnapshotMeta>> {
        for (index, term) in self.names(group)?.into_iter().rev() {
            if let Ok(r) = self.open_at(group, index, term) {
                return Ok(Some(r.meta));
            }
        }
        Ok(None)
    }

    /// Opens the snapshot of `group` at `index`.
    pub fn open_snapshot(&self, group: GroupId, index: Index) -> Result<SnapshotReader> {
        let (index, term) = self
            .names(group)?
            .into_iter()
            .rev()
            .find(|(i, _)| *i == index)
            .ok_or(StorageError::SnapshotNotFound { group, index })?;
        self.open_at(group, index, term)
    }

    fn open_at(&self, group: GroupId, index: Index, term: Term) -> Result<SnapshotReader> {
        let path = self.path_of(group, index, term);
        let mut file = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
        let total = file
            .metadata()
            .map_err(|e| StorageError::io(&path, e))?
            .len();
        let mut head = [0u8; 16];
        file.read_exact(&mut head)
            .map_err(|_| StorageError::corrupt(&path, 0, "snapshot header truncated"))?;
        if &head[..8] != MAGIC {
            return Err(StorageError::corrupt(&path, 0, "not a Synod snapshot"));
        }
        let version = crate::codec::le_u32(&head[8..12]);
        if version != VERSION {
            return Err(StorageError::corrupt(
                &path,
                8,
                format!("snapshot format {version}, this build reads {VERSION}"),
            ));
        }
        let meta_len = crate::codec::le_u32(&head[12..16]) as u64;
        // The length is read before its checksum can be: bound it by what
        // metadata can need, not only by the file, so a damaged length in
        // a large snapshot does not allocate a large buffer.
        if meta_len > MAX_META || 16 + meta_len + 4 + FOOTER > total {
            return Err(StorageError::corrupt(
                &path,
                12,
                "metadata length too large",
            ));
        }
        let mut m = vec![0u8; meta_len as usize + 4];
        file.read_exact(&mut m)
            .map_err(|e| StorageError::io(&path, e))?;
        let crc = crate::codec::le_u32(&m[meta_len as usize..]);
        m.truncate(meta_len as usize);
        if crc32c::crc32c(&m) != crc {
            return Err(StorageError::corrupt(
                &path,
                16,
                "metadata checksum mismatch",
            ));
        }
        let meta = SnapshotMeta::decode(&m).map_err(|r| StorageError::corrupt(&path, 16, r))?;
        if meta.group != group || meta.index != index || meta.term != term {
            return Err(StorageError::corrupt(
                &path,
                16,
                "metadata does not match the file name",
            ));
        }
        let data_start = 16 + meta_len + 4;
        let mut footer = [0u8; FOOTER as usize];
        file.seek(SeekFrom::Start(total - FOOTER))
            .and_then(|_| file.read_exact(&mut footer))
            .map_err(|e| StorageError::io(&path, e))?;
        let data_len = crate::codec::le_u64(&footer[..8]);
        let data_crc = crate::codec::le_u32(&footer[8..12]);
        // `data_len` is read from the file: checked arithmetic, so a huge
        // one is damage, not an overflow.
        let consistent = data_start
            .checked_add(data_len)
            .and_then(|n| n.checked_add(FOOTER))
            == Some(total);
        if &footer[12..] != END_MAGIC || !consistent {
            return Err(StorageError::corrupt(
                &path,
                total - FOOTER,
                "snapshot footer missing or inconsistent",
            ));
        }
        file.seek(SeekFrom::Start(data_start))
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(SnapshotReader {
            meta,
            path,
            inner: BufReader::with_capacity(1 << 20, file).take(data_len),
            expected_crc: data_crc,
            crc: 0,
            len: data_len,
        })
    }

    /// Deletes the snapshot of `group` at `index` (damaged or not).
    pub fn delete(&self, group: GroupId, index: Index) -> Result<()> {
        for (i, term) in self.names(group)? {
            if i == index {
                let p = self.path_of(group, i, term);
                fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
            }
        }
        sync_dir(&self.group_dir(group))
    }

    /// Deletes every snapshot file of `group` older than `index` (damaged
    /// ones too) and returns how many went. For a store opened with
    /// [`SnapshotStore::KEEP_ALL`], this is the only retention: the caller
    /// knows what its Raft core and its transfers still rely on.
    pub fn delete_below(&self, group: GroupId, index: Index) -> Result<usize> {
        let mut deleted = 0;
        for (i, term) in self.names(group)? {
            if i < index {
                let p = self.path_of(group, i, term);
                fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            sync_dir(&self.group_dir(group))?;
        }
        Ok(deleted)
    }

    /// Deletes every snapshot of `group` (the group was removed).
    pub fn remove_group(&self, group: GroupId) -> Result<()> {
        let gdir = self.group_dir(group);
        if gdir.exists() {
            fs::remove_dir_all(&gdir).map_err(|e| StorageError::io(&gdir, e))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Keeps the newest `keep` snapshot files of `group` (by name: a
    /// damaged old file goes too). Best effort: the new snapshot is
    /// already published, so a failure here only costs disk space.
    fn retain(&self, group: GroupId) {
        let Ok(names) = self.names(group) else {
            return;
        };
        if names.len() > self.keep {
            for (index, term) in &names[..names.len() - self.keep] {
                let _ = fs::remove_file(self.path_of(group, *index, *term));
            }
            let _ = sync_dir(&self.group_dir(group));
        }
    }
}

/// Writes one snapshot; nothing is visible until [`SnapshotWriter::finish`].
/// Dropping it unfinished removes the temporary file.
pub struct SnapshotWriter {
    store: SnapshotStore,
    meta: SnapshotMeta,
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    crc: u32,
    len: u64,
}

impl SnapshotWriter {
    /// Appends a chunk of snapshot data.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| StorageError::InvalidArgument {
                reason: "snapshot writer already finished".into(),
            })?;
        out.write_all(chunk)
            .map_err(|e| StorageError::io(&self.tmp, e))?;
        self.crc = crc32c::crc32c_append(self.crc, chunk);
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Bytes of data written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no data was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Seals the snapshot: footer, fsync, atomic rename, directory fsync,
    /// then removes snapshots beyond the store's `keep`.
    pub fn finish(mut self) -> Result<SnapshotMeta> {
        let mut out = self
            .out
            .take()
            .ok_or_else(|| StorageError::InvalidArgument {
                reason: "snapshot writer already finished".into(),
            })?;
        let mut footer = Vec::with_capacity(FOOTER as usize);
        footer.put_u64_le(self.len);
        footer.put_u32_le(self.crc);
        footer.extend_from_slice(END_MAGIC);
        let tmp = self.tmp.clone();
        out.write_all(&footer)
            .and_then(|_| out.flush())
            .map_err(|e| StorageError::io(&tmp, e))?;
        let file = out
            .into_inner()
            .map_err(|e| StorageError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| StorageError::io(&tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| StorageError::io(&self.path, e))?;
        sync_dir(&self.store.group_dir(self.meta.group))?;
        self.store.retain(self.meta.group);
        Ok(self.meta.clone())
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_chunk(buf)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Reads one snapshot's data; the CRC is checked when the end is reached
/// (a mismatch is an `InvalidData` error from `read`).
pub struct SnapshotReader {
    meta: SnapshotMeta,
    path: PathBuf,
    inner: io::Take<BufReader<File>>,
    expected_crc: u32,
    crc: u32,
    len: u64,
}

impl SnapshotReader {
    /// What the snapshot covers.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Bytes of data.
    pub fn data_len(&self) -> u64 {
        self.len
    }

    /// Reads the whole data and checks it.
    pub fn read_all(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len.min(1 << 30) as usize);
        self.read_to_end(&mut out).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                StorageError::corrupt(&self.path, 0, e.to_string())
            } else {
                StorageError::io(&self.path, e)
            }
        })?;
        Ok(out)
    }
}

impl Read for SnapshotReader {
    /// Reads data; the read that delivers the last byte checks the CRC
    /// first, so a reader that stops exactly at the end (`read_exact`)
    /// never sees damaged data as good.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        if n == 0 && !buf.is_empty() && self.inner.limit() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "snapshot data truncated",
            ));
        }
        if self.inner.limit() == 0 && self.crc != self.expected_crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data checksum mismatch",
            ));
        }
        Ok(n)
    }
}

/// fsyncs a directory, so entries created or removed in it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: Index) -> SnapshotMeta {
        SnapshotMeta {
            group: 3,
            index,
            term: 2,
            voters: vec![1, 2, 3],
            learners: vec![4],
        }
    }

    #[test]
    fn write_list_read_and_keep_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), 2).unwrap();
        for index in [10, 20, 30] {
            let mut w = store.writer(meta(index)).unwrap();
            w.write_chunk(b"hello ").unwrap();
            w.write_chunk(format!("{index}").as_bytes()).unwrap();
            w.finish().unwrap();
        }
        let list = store.list(3).unwrap();
        assert_eq!(
            list.iter().map(|m| m.index).collect::<Vec<_>>(),
            vec![20, 30]
        );
        assert_eq!(list[1], meta(30));
        let r = store.open_snapshot(3, 30).unwrap();
        assert_eq!(r.read_all().unwrap(), b"hello 30");
        assert!(matches!(
            store.open_snapshot(3, 10),
            Err(StorageError::SnapshotNotFound { .. })
        ));
    }

    #[test]
    fn unfinished_snapshots_are_invisible() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), 2).unwrap();
        let mut w = store.writer(meta(5)).unwrap();
        w.write_chunk(b"partial").unwrap();
        drop(w);
        assert!(store.list(3).unwrap().is_empty());
    }

    #[test]
    fn flipped_bit_in_data_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), 2).unwrap();
        let mut w = store.writer(meta(5)).unwrap();
        w.write_chunk(&[7u8; 1000]).unwrap();
        w.finish().unwrap();
        let path = store.path_of(3, 5, 2);
        let mut raw = fs::read(&path).unwrap();
        let at = raw.len() - FOOTER as usize - 10;
        raw[at] ^= 0x10;
        fs::write(&path, raw).unwrap();
        let r = store.open_snapshot(3, 5).unwrap();
        assert!(matches!(r.read_all(), Err(StorageError::Corrupt { .. })));
        // A reader that stops exactly at the end is told too.
        let mut r = store.open_snapshot(3, 5).unwrap();
        let mut buf = vec![0u8; r.data_len() as usize];
        assert!(r.read_exact(&mut buf).is_err());
    }
}
