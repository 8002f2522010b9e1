//! The segmented write-ahead log shared by every group of a node.
//!
//! ## Files
//!
//! `dir/00000000000000000001.wal`, `...02.wal`, ...: segments, each
//! pre-allocated with zeros to `segment_size` (overwriting zeroed blocks
//! makes `fdatasync` about twice as fast as appending, STACK.md) and filled
//! with records (format in `codec.rs`). Every segment starts with a header
//! and a **checkpoint**: the first/last index and hard state of every group
//! at the moment the segment was opened. `dir/LOCK` keeps a second process
//! out.
//!
//! ## Writing
//!
//! [`Wal::append`] validates a batch, encodes it onto the end of the
//! *pending record* and updates the in-memory index at once (reads see the
//! entries). [`Wal::sync`] frames the pending record, writes it with one
//! `pwrite` and makes it durable with one `fdatasync`: however many batches
//! and groups were appended since the last sync, they cost one write and
//! one sync, and a crash recovers all of them or none (one CRC covers the
//! record). A record that would not fit the segment closes it: the pending
//! record is written and synced, and the next segment (prepared by a
//! background thread) is renamed into place and opened with a checkpoint.
//!
//! ## Purging and deleting segments
//!
//! Each segment counts its *live* entries (not yet truncated, purged or
//! removed). A segment with none left, other than the active one, is
//! deleted after the next sync, because everything else it held (hard
//! states, purges, removals) is repeated by the checkpoint of every later
//! segment. So disk use drops after snapshots even when some idle group
//! keeps an old segment alive: only segments holding live entries stay.
//!
//! ## Recovery
//!
//! [`Wal::open`] replays segments in order: records must parse, match their
//! CRC and continue the LSN sequence. In the last segment, a bad record
//! with no valid record after it is a torn write: it and everything after
//! it are zeroed, with a warning. Anywhere else, damage is
//! [`StorageError::Corrupt`] naming the file and offset; nothing is skipped
//! silently. Each checkpoint is checked against the replayed state, so a
//! missing segment is detected too.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slog::{info, o, warn, Logger};
use synod_core::{Entry, HardState, Index};

use crate::batch::{validate_op, Op, WriteBatch, MAX_INDEX};
use crate::codec::{
    self, CheckpointGroup, DecodedOp, EntryRef, Record, ALIGN, BATCH_PREFIX, ENTRY_HEADER,
    RECORD_HEADER,
};
use crate::error::{Result, StorageError};
use crate::{GroupId, GroupState, LogStore};

/// When [`Wal::sync`] calls `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every sync is an `fdatasync`: an acknowledged write survives power
    /// loss. The default, and the only policy under which Raft's
    /// guarantees hold across a machine crash.
    Always,
    /// `fdatasync` at most once per interval (a write is still handed to
    /// the OS at every sync, so it survives a *process* crash). Risks: a
    /// power loss or kernel crash loses up to one interval of writes the
    /// node already acknowledged, which can break Raft's safety (a vote or
    /// an acknowledged entry forgotten). Call [`Wal::sync_if_due`] from a
    /// timer so the interval holds when writes stop.
    Every(Duration),
    /// Never `fdatasync` (the OS flushes when it likes). Survives a process
    /// crash only. For tests and benchmarks of everything but the disk.
    Never,
}

/// How a [`Wal`] behaves.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size each segment is pre-allocated to. A record larger than a
    /// segment still fits (the segment grows). Default 64 MiB; at most
    /// 2 GiB.
    pub segment_size: u64,
    /// When to `fdatasync`. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// Bytes of recent entries kept in memory for reads. Default 64 MiB.
    pub cache_bytes: usize,
    /// A pending record larger than this is written out by `append`
    /// itself, bounding memory when nobody syncs. Default 16 MiB.
    pub max_record_bytes: usize,
    /// Where warnings (torn tails) and notices go. Default: discarded.
    pub logger: Logger,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            sync: SyncPolicy::Always,
            cache_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            logger: Logger::root(slog::Discard, o!()),
        }
    }
}

/// Counters since the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// `fdatasync` calls on segments (not counting directory syncs).
    pub fsyncs: u64,
    /// Batch records written.
    pub records: u64,
    /// Batches appended (many per record under group commit).
    pub batches: u64,
    /// Entries appended.
    pub entries: u64,
    /// Bytes written to segments.
    pub bytes_written: u64,
    /// Segments opened for writing.
    pub segments_created: u64,
    /// Segments deleted because nothing live was left in them.
    pub segments_deleted: u64,
    /// `fsyncs` as it stood when the first segment was deleted since the
    /// log was opened (`None`: nothing deleted yet). Lets a test observe
    /// that the records a deletion relies on were synced before it.
    pub fsyncs_at_first_delete: Option<u64>,
    /// Entries read back from disk (cache misses).
    pub disk_reads: u64,
}

/// Where an entry lives: 24 bytes per entry in memory.
#[derive(Clone, Copy, Debug)]
struct Loc {
    term: u64,
    /// Segment sequence number.
    segment: u32,
    /// Offset of the entry header in the segment file.
    offset: u32,
    /// Bytes of entry header + data.
    len: u32,
}

impl Loc {
    /// A placeholder during recovery (segment numbers start at 1).
    const MISSING: Loc = Loc {
        term: 0,
        segment: 0,
        offset: 0,
        len: 0,
    };
}

/// One group's part of the index.
#[derive(Clone, Debug)]
struct GroupIndex {
    first_index: Index,
    locs: VecDeque<Loc>,
    hard_state: HardState,
}

impl GroupIndex {
    fn new() -> Self {
        GroupIndex {
            first_index: 1,
            locs: VecDeque::new(),
            hard_state: HardState::default(),
        }
    }

    fn last_index(&self) -> Index {
        self.first_index + self.locs.len() as Index - 1
    }

    fn state(&self) -> GroupState {
        GroupState {
            first_index: self.first_index,
            last_index: self.last_index(),
            hard_state: self.hard_state,
        }
    }

    fn loc(&self, index: Index) -> Option<&Loc> {
        if index < self.first_index {
            return None;
        }
        self.locs.get((index - self.first_index) as usize)
    }
}

struct Segment {
    path: PathBuf,
    file: File,
    /// Entries in this segment that are still part of some group's log.
    live: u64,
}

/// A bounded FIFO cache of recently appended entries.
#[derive(Default)]
struct Cache {
    map: BTreeMap<(GroupId, Index), Entry>,
    order: VecDeque<(GroupId, Index, u64)>,
    bytes: usize,
    budget: usize,
}

impl Cache {
    fn cost(e: &Entry) -> usize {
        e.payload_len() + 64
    }

    fn insert(&mut self, group: GroupId, e: &Entry) {
        if self.budget == 0 {
            return;
        }
        self.bytes += Cache::cost(e);
        if let Some(old) = self.map.insert((group, e.index), e.clone()) {
            self.bytes -= Cache::cost(&old);
        }
        self.order.push_back((group, e.index, e.term));
        while self.bytes > self.budget {
            let Some((g, i, t)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&(g, i)).is_some_and(|e| e.term == t) {
                if let Some(old) = self.map.remove(&(g, i)) {
                    self.bytes -= Cache::cost(&old);
                }
            }
        }
        if self.order.len() > 4 * self.map.len() + 1024 {
            // Stale order slots (overwritten or removed entries) pile up
            // only under heavy truncation; drop them.
            let map = &self.map;
            self.order
                .retain(|(g, i, t)| map.get(&(*g, *i)).is_some_and(|e| e.term == *t));
        }
    }

    fn get(&self, group: GroupId, index: Index, term: u64) -> Option<Entry> {
        self.map
            .get(&(group, index))
            .filter(|e| e.term == term)
            .cloned()
    }

    /// Drops the entries of `group` in `[low, high)`.
    fn remove_range(&mut self, group: GroupId, low: Index, high: Index) {
        if low >= high {
            return;
        }
        let keys: Vec<(GroupId, Index)> = self
            .map
            .range((group, low)..(group, high))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(old) = self.map.remove(&k) {
                self.bytes -= Cache::cost(&old);
            }
        }
    }
}

/// The write-ahead log of one node. Single-threaded: share it across
/// threads with [`crate::SharedWal`] or drive it from one thread.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    log: Logger,
    _lock: File,
    segments: BTreeMap<u64, Segment>,
    /// Sequence number of the segment being written.
    active: u64,
    /// File offset in the active segment where the next record goes.
    write_pos: u64,
    /// Offset just after the active segment's header and checkpoint: a
    /// segment holding nothing more is never rotated away.
    data_start_of_active: u64,
    /// Body of the record being staged (empty when nothing is staged).
    pending: Vec<u8>,
    /// LSN of the next record.
    next_lsn: u64,
    groups: BTreeMap<GroupId, GroupIndex>,
    cache: Cache,
    /// The next segment, being zero-filled by a background thread.
    spare: Option<JoinHandle<io::Result<PathBuf>>>,
    failed: Option<String>,
    /// Some entries died since the last look for dead segments.
    maybe_dead: bool,
    /// During recovery: how many more entries checkpoints may count
    /// without recovery having seen them (placeholders). Each must be
    /// found in a segment of this directory later, and an entry takes at
    /// least `ENTRY_HEADER` bytes there, so the segments' total size
    /// bounds it; a claim beyond that is damage, refused before anything
    /// is reserved for it.
    unseen_budget: u64,
    /// Written records not yet covered by an fdatasync.
    unsynced: bool,
    last_fsync: Instant,
    stats: WalStats,
}

/// Largest LSN recovery accepts. LSNs count records from 1, so a larger
/// one is damage (a billion records a second would take a century to get
/// here), and the bound keeps `lsn + 1` and the scan window from
/// overflowing.
const MAX_LSN: u64 = 1 << 62;

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn spare_path(dir: &Path) -> PathBuf {
    dir.join("next-segment.tmp")
}

/// Creates a zero-filled segment file at `path` of `size` bytes, durably.
fn preallocate(path: &Path, size: u64) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        io::Write::write_all(&mut f, &zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

impl Wal {
    /// Opens (or creates) the log in `dir` and recovers every group from
    /// what is on disk. Errors if another process holds the directory, or
    /// if damage is found anywhere but a torn tail.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        if opts.segment_size < 4096 || opts.segment_size > (2 << 30) {
            return Err(StorageError::InvalidArgument {
                reason: format!(
                    "segment_size {} must be between 4 KiB and 2 GiB",
                    opts.segment_size
                ),
            });
        }
        fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(StorageError::Locked { path: dir });
        }
        let log = opts.logger.new(o!("wal" => dir.display().to_string()));
        let mut wal = Wal {
            cache: Cache {
                budget: opts.cache_bytes,
                ..Cache::default()
            },
            dir,
            opts,
            log,
            _lock: lock,
            segments: BTreeMap::new(),
            active: 0,
            write_pos: 0,
            data_start_of_active: 0,
            pending: Vec::new(),
            next_lsn: 1,
            groups: BTreeMap::new(),
            spare: None,
            failed: None,
            maybe_dead: false,
            unseen_budget: 0,
            unsynced: false,
            last_fsync: Instant::now(),
            stats: WalStats::default(),
        };
        wal.recover()?;
        Ok(wal)
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Whether a batch is staged but not yet written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Under [`SyncPolicy::Every`], syncs if written data has waited for an
    /// fdatasync longer than the interval. A no-op under other policies.
    pub fn sync_if_due(&mut self) -> Result<()> {
        self.check_failed()?;
        if let SyncPolicy::Every(d) = self.opts.sync {
            if (self.unsynced || self.has_pending()) && self.last_fsync.elapsed() >= d {
                self.write_pending()?;
                self.fdatasync()?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Recovery
    // ------------------------------------------------------------------

    fn recover(&mut self) -> Result<()> {
        let mut seqs = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A spare segment or snapshot in the making: never holds data.
                let _ = fs::remove_file(entry.path());
            } else if let Some(stem) = name.strip_suffix(".wal") {
                match stem.parse::<u64>() {
                    Ok(seq) if seq > 0 && seq <= u32::MAX as u64 => seqs.push(seq),
                    _ => {
                        return Err(StorageError::corrupt(
                            entry.path(),
                            0,
                            "unexpected file name in the WAL directory",
                        ))
                    }
                }
            }
        }
        seqs.sort_unstable();
        let mut total = 0u64;
        for &seq in &seqs {
            let path = segment_path(&self.dir, seq);
            total += fs::metadata(&path)
                .map_err(|e| StorageError::io(&path, e))?
                .len();
        }
        self.unseen_budget = total / ENTRY_HEADER as u64;
        let last = seqs.last().copied();
        let mut prev_lsn = 0;
        for &seq in &seqs {
            let end = self.replay_segment(seq, Some(seq) == last, &mut prev_lsn)?;
            if Some(seq) == last {
                self.active = seq;
                self.write_pos = end;
            }
        }
        self.next_lsn = prev_lsn + 1;
        self.check_no_holes()?;
        if self.segments.is_empty() {
            self.open_segment(1)?;
        } else if self.write_pos == 0 {
            // The last segment's header or checkpoint was torn: start it again.
            self.start_segment(self.active)?;
        } else {
            // What was replayed may exist only in the page cache (the
            // process died between a pwrite and its fdatasync). Make it
            // durable before trusting it: before deleting segments on its
            // strength, and before the node acknowledges anything it holds.
            self.unsynced = true;
            self.fdatasync()?;
        }
        let groups = self.groups.len();
        let segments = self.segments.len();
        info!(self.log, "recovered"; "groups" => groups, "segments" => segments,
              "lsn" => prev_lsn);
        self.maybe_dead = true;
        self.delete_dead_segments()?;
        self.prepare_spare();
        Ok(())
    }

    /// Replays one segment; returns the offset where valid data ends.
    fn replay_segment(&mut self, seq: u64, is_last: bool, prev_lsn: &mut u64) -> Result<u64> {
        let path = segment_path(&self.dir, seq);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let size = file
            .metadata()
            .map_err(|e| StorageError::io(&path, e))?
            .len();
        let mut raw = Vec::with_capacity(size as usize);
        file.read_to_end(&mut raw)
            .map_err(|e| StorageError::io(&path, e))?;
        let raw = Bytes::from(raw);
        self.segments.insert(
            seq,
            Segment {
                path: path.clone(),
                file,
                live: 0,
            },
        );
        let mut pos = 0usize;
        let mut expect_lsn: Option<u64> = None;
        let mut data_start = 0usize;
        loop {
            match self.next_record(&raw, pos, seq, expect_lsn) {
                Ok(None) => {
                    // A zero header is the end of data, unless records
                    // follow it: then it is a lost write or a zeroed sector.
                    if let Some(at) =
                        expect_lsn.and_then(|lsn| self.find_valid_record_after(&raw, pos, seq, lsn))
                    {
                        return Err(StorageError::corrupt(
                            &path,
                            pos as u64,
                            format!(
                                "record header reads as zeros, yet a valid record follows at \
                                 offset {at}: a write was lost or a sector zeroed"
                            ),
                        ));
                    }
                    if !is_last && expect_lsn.is_none() {
                        return Err(StorageError::corrupt(
                            &path,
                            pos as u64,
                            "an older segment ends before its checkpoint",
                        ));
                    }
                    break;
                }
                Ok(Some((record, next))) => {
                    if pos == 0 && !matches!(record, Record::Header { .. }) {
                        return Err(StorageError::corrupt(&path, 0, "segment lacks its header"));
                    }
                    if matches!(record, Record::Checkpoint { .. }) {
                        data_start = next;
                    }
                    if let Some(lsn) = self.apply_record(record, seq, pos, &path)? {
                        if lsn > MAX_LSN {
                            return Err(StorageError::corrupt(
                                &path,
                                pos as u64,
                                format!("LSN {lsn} is beyond any log's lifetime ({MAX_LSN})"),
                            ));
                        }
                        if lsn <= *prev_lsn {
                            return Err(StorageError::corrupt(
                                &path,
                                pos as u64,
                                format!("LSN {lsn} does not follow {prev_lsn}"),
                            ));
                        }
                        *prev_lsn = lsn;
                        expect_lsn = Some(lsn + 1);
                    }
                    pos = next;
                }
                Err(reason) => {
                    if !is_last {
                        return Err(StorageError::corrupt(&path, pos as u64, reason));
                    }
                    let follows = expect_lsn
                        .and_then(|lsn| self.find_valid_record_after(&raw, pos, seq, lsn));
                    if let Some(at) = follows {
                        return Err(StorageError::corrupt(
                            &path,
                            pos as u64,
                            format!(
                                "{reason}, yet a valid record follows at offset {at}: this is \
                                 damage, not a torn write"
                            ),
                        ));
                    }
                    warn!(self.log, "torn tail in the last segment: truncated";
                          "file" => path.display().to_string(), "offset" => pos,
                          "reason" => reason);
                    break;
                }
            }
        }
        if is_last {
            self.zero_tail(seq, &raw, pos)?;
            if pos > 0 && expect_lsn.is_none() {
                // Header only, checkpoint torn: rewrite both.
                pos = 0;
            }
            self.data_start_of_active = data_start as u64;
        }
        Ok(pos as u64)
    }

    /// Parses the record at `pos`: `Ok(None)` at the end of data.
    fn next_record(
        &self,
        raw: &Bytes,
        pos: usize,
        seq: u64,
        expect_lsn: Option<u64>,
    ) -> std::result::Result<Option<(Record, usize)>, String> {
        if pos + RECORD_HEADER > raw.len() {
            return Ok(None);
        }
        let len = codec::le_u32(&raw[pos..pos + 4]) as usize;
        if len == 0 {
            let crc = &raw[pos + 4..pos + 8];
            if crc != [0, 0, 0, 0] {
                return Err("zero length with a nonzero checksum".into());
            }
            return Ok(None);
        }
        let start = pos + RECORD_HEADER;
        if len > raw.len() - start {
            return Err(format!(
                "record length {len} runs past the end of the file ({} bytes)",
                raw.len()
            ));
        }
        let crc = codec::le_u32(&raw[pos + 4..pos + 8]);
        let body = raw.slice(start..start + len);
        if codec::record_crc(seq, &body) != crc {
            return Err("record checksum mismatch".into());
        }
        let record = codec::decode_body(body)?;
        match (&record, expect_lsn) {
            (Record::Header { segment_seq }, _) if *segment_seq != seq || pos != 0 => {
                return Err(format!(
                    "header of segment {segment_seq} inside segment {seq}"
                ));
            }
            (Record::Checkpoint { lsn, .. } | Record::Batch { lsn, .. }, Some(want))
                if *lsn != want =>
            {
                return Err(format!("record LSN {lsn}, expected {want}"));
            }
            (Record::Batch { .. }, None) => {
                return Err("batch before the segment's checkpoint".into());
            }
            _ => {}
        }
        Ok(Some((record, codec::align_up(start + len))))
    }

    /// Offset of a record after `pos` that would have followed the damaged
    /// one: a batch whose LSN is at or shortly after the expected one (the
    /// damaged record may have been the expected one), with a matching CRC. Used
    /// to tell a torn tail (nothing follows) from damage (something does).
    /// Only candidates whose type and LSN fields match are checksummed, so
    /// garbage cannot make this scan slow, and bytes inside entry payloads
    /// would have to forge the exact LSN to be mistaken for a record.
    fn find_valid_record_after(
        &self,
        raw: &Bytes,
        pos: usize,
        seq: u64,
        expect_lsn: u64,
    ) -> Option<usize> {
        let prefix = RECORD_HEADER + codec::BATCH_PREFIX;
        let mut at = codec::align_up(pos + 1);
        while at + prefix <= raw.len() {
            let len = codec::le_u32(&raw[at..at + 4]) as usize;
            let body_at = at + RECORD_HEADER;
            if len >= codec::BATCH_PREFIX
                && len <= raw.len() - body_at
                && raw[body_at] == codec::T_BATCH
            {
                let lsn = codec::le_u64(&raw[body_at + 1..body_at + 9]);
                // Several damaged records in a row must not pass for a torn
                // tail either: accept any of the next many LSNs.
                if lsn >= expect_lsn && lsn < expect_lsn + 1024 {
                    let crc = codec::le_u32(&raw[at + 4..at + 8]);
                    if codec::record_crc(seq, &raw[body_at..body_at + len]) == crc {
                        return Some(at);
                    }
                }
            }
            at += ALIGN;
        }
        None
    }

    /// Overwrites with zeros whatever lies after the valid data of the last
    /// segment, so that later appends never sit in front of stale bytes.
    fn zero_tail(&mut self, seq: u64, raw: &[u8], end: usize) -> Result<()> {
        let Some(last_nonzero) = raw[end.min(raw.len())..].iter().rposition(|&b| b != 0) else {
            return Ok(());
        };
        let seg = &self.segments[&seq];
        let zeros = vec![0u8; last_nonzero + 1];
        seg.file
            .write_all_at(&zeros, end as u64)
            .and_then(|_| seg.file.sync_data())
            .map_err(|e| StorageError::io(&seg.path, e))?;
        Ok(())
    }

    /// Applies a replayed record; returns its LSN, if it has one.
    fn apply_record(
        &mut self,
        record: Record,
        seq: u64,
        pos: usize,
        path: &Path,
    ) -> Result<Option<u64>> {
        match record {
            Record::Header { .. } => Ok(None),
            Record::Checkpoint { lsn, groups } => {
                // Only entries of deleted segments can be counted by a
                // checkpoint yet be unknown here: with the previous
                // segment replayed (or none ever written), every entry it
                // counts must already be indexed.
                let may_count_unseen = seq > 1 && !self.segments.contains_key(&(seq - 1));
                self.apply_checkpoint(&groups, may_count_unseen)
                    .map_err(|reason| StorageError::corrupt(path, pos as u64, reason))?;
                Ok(Some(lsn))
            }
            Record::Batch { lsn, ops } => {
                let body_at = (pos + RECORD_HEADER) as u64;
                for op in ops {
                    let op = match op {
                        DecodedOp::Append {
                            group,
                            first_index,
                            entries,
                        } => {
                            self.replay_append(group, first_index, &entries, seq, body_at)
                                .map_err(|reason| {
                                    StorageError::corrupt(path, pos as u64, reason)
                                })?;
                            continue;
                        }
                        DecodedOp::Other(op) => op,
                    };
                    validate_op(&op, self.group(op.group()))
                        .map_err(|e| StorageError::corrupt(path, pos as u64, e.to_string()))?;
                    self.apply_meta(&op);
                }
                Ok(Some(lsn))
            }
        }
    }

    /// Indexes a replayed append after checking it continues the group's
    /// log as a live append would have had to.
    fn replay_append(
        &mut self,
        group: GroupId,
        first: Index,
        entries: &[EntryRef],
        seq: u64,
        body_at: u64,
    ) -> std::result::Result<(), String> {
        let s = self.group(group).unwrap_or(GroupState {
            first_index: 1,
            last_index: 0,
            hard_state: HardState::default(),
        });
        if first < s.first_index || first > s.last_index + 1 {
            return Err(format!(
                "append of group {group} at {first} does not fit its log [{}, {}]",
                s.first_index, s.last_index
            ));
        }
        let locs = entries
            .iter()
            .map(|e| Loc {
                term: e.term,
                segment: seq as u32,
                offset: (body_at + e.offset as u64) as u32,
                len: e.len as u32,
            })
            .collect();
        self.index_append(group, first, locs);
        Ok(())
    }

    /// Makes the index agree with a checkpoint: the groups it lists, with
    /// exactly the ranges and hard states it gives.
    ///
    /// An entry the checkpoint counts may be missing: it was live when the
    /// checkpoint was written, died later (overwritten, truncated, purged
    /// or removed by a record replayed after this one) and its segment was
    /// deleted. It gets a placeholder that later replay must replace or
    /// drop; [`Wal::check_no_holes`] turns a survivor into an error. Unless
    /// `may_count_unseen` (a segment before this one was deleted), such an
    /// entry is damage at once: a checkpoint's ranges are claims, and
    /// placeholders for them would cost memory in proportion to the claim.
    fn apply_checkpoint(
        &mut self,
        groups: &[CheckpointGroup],
        may_count_unseen: bool,
    ) -> std::result::Result<(), String> {
        let listed: BTreeMap<GroupId, &CheckpointGroup> =
            groups.iter().map(|g| (g.group, g)).collect();
        let gone: Vec<GroupId> = self
            .groups
            .keys()
            .filter(|g| !listed.contains_key(g))
            .copied()
            .collect();
        for g in gone {
            self.apply_meta(&Op::RemoveGroup { group: g });
        }
        for cp in groups {
            // Indexes beyond MAX_INDEX were never written (batches refuse
            // them), and bounding them keeps `last_index + 1` from
            // overflowing.
            if cp.first_index == 0
                || cp.first_index > MAX_INDEX + 1
                || cp.last_index > MAX_INDEX
                || cp.last_index + 1 < cp.first_index
            {
                return Err(format!(
                    "checkpoint gives group {} the impossible range [{}, {}]",
                    cp.group, cp.first_index, cp.last_index
                ));
            }
            let old = self
                .groups
                .remove(&cp.group)
                .unwrap_or_else(GroupIndex::new);
            let counts_unseen = cp.last_index >= cp.first_index
                && (cp.first_index < old.first_index || cp.last_index > old.last_index());
            if counts_unseen && !may_count_unseen {
                return Err(format!(
                    "checkpoint gives group {} the range [{}, {}], but the segments before it \
                     hold [{}, {}]",
                    cp.group,
                    cp.first_index,
                    cp.last_index,
                    old.first_index,
                    old.last_index()
                ));
            }
            // The range is a claim of the checkpoint: the entries it counts
            // that recovery has not seen must fit in this directory's
            // segments, and the reservation is fallible, so a claim of
            // more entries than that (or than this machine can index) is
            // reported as damage instead of reserving memory in proportion
            // to it or aborting the process.
            let count = cp.last_index + 1 - cp.first_index;
            let seen = if old.locs.is_empty() {
                0
            } else {
                let lo = cp.first_index.max(old.first_index);
                let hi = cp.last_index.min(old.last_index());
                if hi >= lo {
                    hi - lo + 1
                } else {
                    0
                }
            };
            let unseen = count - seen;
            if unseen > self.unseen_budget {
                return Err(format!(
                    "checkpoint counts {unseen} entries of group {} that no segment replayed so                      far holds, more than the segments of this directory can hold ({} more)",
                    cp.group, self.unseen_budget
                ));
            }
            self.unseen_budget -= unseen;
            let mut locs = VecDeque::new();
            locs.try_reserve_exact(count as usize).map_err(|_| {
                format!(
                    "checkpoint counts {count} entries of group {}: more than this node can index",
                    cp.group
                )
            })?;
            for i in cp.first_index..=cp.last_index {
                locs.push_back(old.loc(i).copied().unwrap_or(Loc::MISSING));
            }
            for (k, loc) in old.locs.iter().enumerate() {
                let i = old.first_index + k as Index;
                if i < cp.first_index || i > cp.last_index {
                    self.kill(*loc);
                }
            }
            self.cache
                .remove_range(cp.group, old.first_index, old.last_index() + 1);
            self.groups.insert(
                cp.group,
                GroupIndex {
                    first_index: cp.first_index,
                    locs,
                    hard_state: cp.hard_state,
                },
            );
        }
        Ok(())
    }

    /// After replay: every entry of every group must have been found.
    fn check_no_holes(&self) -> Result<()> {
        for (&group, g) in &self.groups {
            if let Some(k) = g.locs.iter().position(|l| l.segment == 0) {
                return Err(StorageError::corrupt(
                    &self.dir,
                    0,
                    format!(
                        "group {group} entry {} is counted by a checkpoint but found in no \
                         segment of this directory: a segment file is missing or was replaced",
                        g.first_index + k as Index
                    ),
                ));
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // The index
    // ------------------------------------------------------------------

    /// An entry left its group's log: its segment has one live entry less.
    fn kill(&mut self, loc: Loc) {
        if let Some(seg) = self.segments.get_mut(&(loc.segment as u64)) {
            seg.live -= 1;
            if seg.live == 0 {
                self.maybe_dead = true;
            }
        }
    }

    fn index_truncate(&mut self, group: GroupId, from: Index) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if from > g.last_index() {
            return;
        }
        let keep = from.saturating_sub(g.first_index) as usize;
        let last = g.last_index();
        let removed: Vec<Loc> = g.locs.drain(keep..).collect();
        for loc in removed {
            self.kill(loc);
        }
        self.cache.remove_range(group, from, last + 1);
    }

    fn index_append(&mut self, group: GroupId, first: Index, locs: Vec<Loc>) {
        self.groups.entry(group).or_insert_with(GroupIndex::new);
        self.index_truncate(group, first);
        // Runs of entries share a segment: one lookup per run.
        let mut k = 0;
        while k < locs.len() {
            let segment = locs[k].segment;
            let run = locs[k..]
                .iter()
                .take_while(|l| l.segment == segment)
                .count();
            if let Some(seg) = self.segments.get_mut(&(segment as u64)) {
                seg.live += run as u64;
            }
            k += run;
        }
        let g = self.groups.get_mut(&group).expect("inserted above");
        debug_assert_eq!(g.last_index() + 1, first, "validated before indexing");
        g.locs.extend(locs);
    }

    /// Applies a non-append op to the index (already validated).
    fn apply_meta(&mut self, op: &Op) {
        match *op {
            Op::Append { .. } => unreachable!("appends carry locations"),
            Op::HardState { group, hard_state } => {
                self.groups
                    .entry(group)
                    .or_insert_with(GroupIndex::new)
                    .hard_state = hard_state;
            }
            Op::Truncate { group, from } => {
                self.groups.entry(group).or_insert_with(GroupIndex::new);
                self.index_truncate(group, from);
            }
            Op::Purge { group, first_index } => {
                let g = self.groups.entry(group).or_insert_with(GroupIndex::new);
                if first_index <= g.first_index {
                    return;
                }
                let drop = ((first_index - g.first_index) as usize).min(g.locs.len());
                let old_first = g.first_index;
                let removed: Vec<Loc> = g.locs.drain(..drop).collect();
                g.first_index = first_index;
                for loc in removed {
                    self.kill(loc);
                }
                self.cache.remove_range(group, old_first, first_index);
            }
            Op::RemoveGroup { group } => {
                let Some(g) = self.groups.remove(&group) else {
                    return;
                };
                let last = g.last_index();
                for loc in g.locs {
                    self.kill(loc);
                }
                self.cache.remove_range(group, g.first_index, last + 1);
            }
        }
    }

    // ------------------------------------------------------------------
    // Writing
    // ------------------------------------------------------------------

    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(StorageError::Failed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a fatal error: the log refuses writes from now on.
    fn fail(&mut self, e: StorageError) -> StorageError {
        if self.failed.is_none() {
            self.failed = Some(e.to_string());
        }
        e
    }

    fn stage(&mut self, batch: &WriteBatch) -> Result<()> {
        self.check_failed()?;
        batch.validate(|g| self.group(g))?;
        let mut ops_bytes = Vec::new();
        let placed = codec::encode_ops(batch.ops(), &mut ops_bytes);
        let body_len = if self.pending.is_empty() {
            BATCH_PREFIX
        } else {
            self.pending.len()
        } + ops_bytes.len();
        if !self.pending.is_empty() && body_len > self.opts.max_record_bytes {
            self.write_pending()?;
            self.sync_by_policy()?;
        }
        let record_len = codec::align_up(RECORD_HEADER + BATCH_PREFIX + ops_bytes.len()) as u64;
        let pending_len = if self.pending.is_empty() {
            0
        } else {
            codec::align_up(RECORD_HEADER + self.pending.len()) as u64
        };
        let past_start = self.write_pos > self.data_start_of_active;
        if past_start && self.write_pos + pending_len + record_len > self.opts.segment_size {
            self.write_pending()?;
            self.fdatasync()?;
            self.rotate()?;
        }
        if self.write_pos + codec::align_up(RECORD_HEADER + body_len) as u64 > u32::MAX as u64 {
            return Err(StorageError::InvalidArgument {
                reason: format!(
                    "a batch of {} bytes does not fit a segment (max 4 GiB)",
                    ops_bytes.len()
                ),
            });
        }
        if self.pending.is_empty() {
            codec::begin_batch(self.next_lsn, &mut self.pending);
        }
        let base = self.write_pos + RECORD_HEADER as u64 + self.pending.len() as u64;
        self.pending.extend_from_slice(&ops_bytes);
        self.stats.batches += 1;
        // Index every op in order, with the entries' final file offsets.
        let mut placed = placed.into_iter().peekable();
        for op in batch.ops() {
            match op {
                Op::Append { group, entries } => {
                    let mut locs = Vec::with_capacity(entries.len());
                    for e in entries {
                        let p = placed.next().expect("one placement per entry");
                        debug_assert_eq!((p.group, p.index, p.term), (*group, e.index, e.term));
                        locs.push(Loc {
                            term: p.term,
                            segment: self.active as u32,
                            offset: (base + p.body_offset as u64) as u32,
                            len: p.len as u32,
                        });
                    }
                    self.index_append(*group, entries[0].index, locs);
                    for e in entries {
                        self.cache.insert(*group, e);
                    }
                    self.stats.entries += entries.len() as u64;
                }
                other => self.apply_meta(other),
            }
        }
        Ok(())
    }

    /// Writes the pending record (one pwrite), without syncing.
    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.check_failed()?;
        let mut rec = Vec::with_capacity(codec::align_up(RECORD_HEADER + self.pending.len()));
        codec::frame(&mut rec, self.active, &self.pending);
        let seg = &self.segments[&self.active];
        if let Err(e) = seg.file.write_all_at(&rec, self.write_pos) {
            let e = StorageError::io(&seg.path, e);
            return Err(self.fail(e));
        }
        self.write_pos += rec.len() as u64;
        self.pending.clear();
        self.next_lsn += 1;
        self.unsynced = true;
        self.stats.records += 1;
        self.stats.bytes_written += rec.len() as u64;
        Ok(())
    }

    fn fdatasync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        let seg = &self.segments[&self.active];
        if let Err(e) = seg.file.sync_data() {
            // An fsync that failed cannot be retried safely (the kernel may
            // have dropped the dirty pages): stop accepting writes.
            let e = StorageError::io(&seg.path, e);
            return Err(self.fail(e));
        }
        self.unsynced = false;
        self.last_fsync = Instant::now();
        self.stats.fsyncs += 1;
        Ok(())
    }

    /// Writes the pending record and syncs as the policy says; then deletes
    /// segments left without live entries.
    fn sync_inner(&mut self) -> Result<()> {
        self.check_failed()?;
        self.write_pending()?;
        self.sync_by_policy()?;
        self.delete_dead_segments()
    }

    fn sync_by_policy(&mut self) -> Result<()> {
        match self.opts.sync {
            SyncPolicy::Always => self.fdatasync(),
            SyncPolicy::Every(d) if self.last_fsync.elapsed() >= d => self.fdatasync(),
            SyncPolicy::Every(_) | SyncPolicy::Never => Ok(()),
        }
    }

    fn delete_dead_segments(&mut self) -> Result<()> {
        if !self.maybe_dead {
            return Ok(());
        }
        self.maybe_dead = false;
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(&seq, s)| seq != self.active && s.live == 0)
            .map(|(&seq, _)| seq)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        // The ops that killed these entries must be durable before the
        // entries disappear from disk.
        self.fdatasync()?;
        for seq in dead {
            let Some(seg) = self.segments.remove(&seq) else {
                continue;
            };
            if let Err(e) = fs::remove_file(&seg.path) {
                // The batches are durable; only disk space is at stake.
                // Keep the segment and try again later.
                warn!(self.log, "cannot delete a dead segment; will retry";
                      "file" => seg.path.display().to_string(), "error" => e.to_string());
                self.segments.insert(seq, seg);
                self.maybe_dead = true;
                continue;
            }
            self.stats.segments_deleted += 1;
            let fsyncs = self.stats.fsyncs;
            self.stats.fsyncs_at_first_delete.get_or_insert(fsyncs);
        }
        if let Err(e) = sync_dir(&self.dir) {
            warn!(self.log, "directory sync after deleting segments failed";
                  "error" => e.to_string());
        }
        Ok(())
    }

    /// Starts zero-filling the next segment in the background.
    fn prepare_spare(&mut self) {
        if self.spare.is_some() {
            return;
        }
        let path = spare_path(&self.dir);
        let size = self.opts.segment_size;
        self.spare = Some(std::thread::spawn(move || {
            preallocate(&path, size)?;
            Ok(path)
        }));
    }

    /// Closes the active segment (already written and synced) and opens the
    /// next one.
    fn rotate(&mut self) -> Result<()> {
        let next = self.active + 1;
        if let Err(e) = self.open_segment(next) {
            // The next segment may exist half-made: writing on into the old
            // one would leave a torn record in what is no longer the last
            // segment. Stop; a restart recovers from what is durable.
            return Err(self.fail(e));
        }
        // The segment just closed may already have no live entry (or
        // never had one: hard-state-only traffic).
        self.maybe_dead = true;
        self.prepare_spare();
        Ok(())
    }

    /// Puts segment `seq` in place (from the spare when ready) and starts it.
    fn open_segment(&mut self, seq: u64) -> Result<()> {
        let path = segment_path(&self.dir, seq);
        let spare = self.spare.take().map(|h| h.join());
        let ready = match spare {
            Some(Ok(Ok(p))) => Some(p),
            Some(Ok(Err(e))) => {
                warn!(self.log, "preparing a spare segment failed; creating one inline";
                      "error" => e.to_string());
                None
            }
            Some(Err(_)) => None,
            None => None,
        };
        let result = match ready {
            Some(p) => fs::rename(&p, &path),
            None => preallocate(&path, self.opts.segment_size),
        };
        result.map_err(|e| StorageError::io(&path, e))?;
        sync_dir(&self.dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        self.segments.insert(
            seq,
            Segment {
                path,
                file,
                live: 0,
            },
        );
        self.active = seq;
        self.stats.segments_created += 1;
        self.start_segment(seq)
    }

    /// Writes header and checkpoint at the start of segment `seq` (the
    /// active one) and syncs them.
    fn start_segment(&mut self, seq: u64) -> Result<()> {
        let checkpoint: Vec<CheckpointGroup> = self
            .groups
            .iter()
            .map(|(&group, g)| CheckpointGroup {
                group,
                first_index: g.first_index,
                last_index: g.last_index(),
                hard_state: g.hard_state,
            })
            .collect();
        let mut rec = Vec::new();
        codec::frame(&mut rec, seq, &codec::encode_header(seq));
        codec::frame(
            &mut rec,
            seq,
            &codec::encode_checkpoint(self.next_lsn, &checkpoint),
        );
        self.next_lsn += 1;
        let seg = &self.segments[&seq];
        let written = seg
            .file
            .write_all_at(&rec, 0)
            .and_then(|_| seg.file.sync_data());
        if let Err(e) = written {
            let e = StorageError::io(&seg.path, e);
            return Err(self.fail(e));
        }
        self.stats.fsyncs += 1;
        self.stats.bytes_written += rec.len() as u64;
        self.write_pos = rec.len() as u64;
        self.data_start_of_active = self.write_pos;
        Ok(())
    }

    // ------------------------------------------------------------------
    // Reading
    // ------------------------------------------------------------------

    fn read_entry(&mut self, group: GroupId, index: Index, loc: Loc) -> Result<Entry> {
        if let Some(e) = self.cache.get(group, index, loc.term) {
            return Ok(e);
        }
        let seq = loc.segment as u64;
        let offset = loc.offset as u64;
        let raw = if seq == self.active && offset >= self.write_pos {
            // Staged, not written yet: it is in the pending record.
            let at = (offset - self.write_pos) as usize - RECORD_HEADER;
            Bytes::copy_from_slice(&self.pending[at..at + loc.len as usize])
        } else {
            let seg = self.segments.get(&seq).ok_or_else(|| {
                StorageError::corrupt(
                    segment_path(&self.dir, seq),
                    offset,
                    format!("group {group} entry {index} points into a deleted segment"),
                )
            })?;
            let mut buf = vec![0u8; loc.len as usize];
            seg.file
                .read_exact_at(&mut buf, offset)
                .map_err(|e| StorageError::io(&seg.path, e))?;
            self.stats.disk_reads += 1;
            Bytes::from(buf)
        };
        codec::decode_single_entry(index, raw)
            .map_err(|reason| StorageError::corrupt(segment_path(&self.dir, seq), offset, reason))
    }
}

impl LogStore for Wal {
    fn append(&mut self, batch: &WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.stage(batch)
    }

    fn sync(&mut self) -> Result<()> {
        self.sync_inner()
    }

    fn entries(
        &mut self,
        group: GroupId,
        low: Index,
        high: Index,
        max_bytes: Option<usize>,
    ) -> Result<Vec<Entry>> {
        // After a failed write the index may name records that never
        // reached the disk: serve nothing (fsyncgate).
        self.check_failed()?;
        GroupState::check_range(self.group(group), group, low, high)?;
        let g = &self.groups[&group];
        let locs: Vec<Loc> = (low..high)
            .map(|i| *g.loc(i).expect("range checked above"))
            .collect();
        let mut out = Vec::with_capacity(locs.len());
        let mut bytes = 0usize;
        for (k, loc) in locs.into_iter().enumerate() {
            let e = self.read_entry(group, low + k as Index, loc)?;
            bytes += e.payload_len();
            if let Some(max) = max_bytes {
                if !out.is_empty() && bytes > max {
                    break;
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    fn group(&self, group: GroupId) -> Option<GroupState> {
        self.groups.get(&group).map(GroupIndex::state)
    }

    fn groups(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
    }

    fn term(&mut self, group: GroupId, index: Index) -> Result<u64> {
        let g = self.groups.get(&group).ok_or(StorageError::Unavailable {
            group,
            index,
            last_index: 0,
        })?;
        match g.loc(index) {
            Some(loc) => Ok(loc.term),
            None if index < g.first_index => Err(StorageError::Compacted {
                group,
                index,
                first_index: g.first_index,
            }),
            None => Err(StorageError::Unavailable {
                group,
                index,
                last_index: g.last_index(),
            }),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some(h) = self.spare.take() {
            let _ = h.join();
        }
    }
}
