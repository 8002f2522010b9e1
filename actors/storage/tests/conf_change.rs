//! Configuration entries (`EntryKind::ConfChange`, kind byte 2 in
//! `codec.rs`) through the real WAL: written, synced, the log reopened and
//! read back from disk equal, voters and learners in their places. And the
//! kind byte and the configuration bytes damaged behind valid checksums:
//! recovery or the read reports `StorageError::Corrupt`, never a panic and
//! never a wrong configuration.

mod common;

use std::fs;
use std::path::Path;

use common::{dump, entry, opts, record_extents, segment_files};
use synod_core::{Entry, EntryKind, HardState, Membership};
use synod_storage::{LogStore, StorageError, Wal, WriteBatch};

const GROUP: u64 = 3;

fn conf(index: u64, term: u64, voters: &[u64], learners: &[u64]) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::ConfChange(Membership {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
        }),
    }
}

/// A log mixing no-ops, commands and configurations: each configuration
/// differs from the others, and voters and learners differ in size, so a
/// swap or a mix-up of the two sets cannot read back equal.
fn mixed_log() -> Vec<Entry> {
    vec![
        Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Noop,
        },
        conf(2, 1, &[1, 2, 3], &[]),
        entry(GROUP, 3, 1, 10),
        conf(4, 1, &[1, 2, 3], &[4]),
        conf(5, 2, &[1, 2, 3, 4], &[]),
        entry(GROUP, 6, 2, 3),
        conf(7, 2, &[2, 3, 4], &[9, 11]),
        // Ids at the ends of the range, and the empty configuration.
        conf(8, 3, &[1, u64::MAX], &[u64::MAX - 1]),
        conf(9, 3, &[], &[]),
        conf(10, 3, &[5], &[1, 2, 3, 4, 6, 7, 8]),
    ]
}

/// Writes `entries` in batches of `per_batch` (one record each), with a
/// hard state, and returns the hard state written last.
fn write(dir: &Path, segment_size: u64, entries: &[Entry], per_batch: usize) -> HardState {
    let mut wal = Wal::open(dir, opts(segment_size)).unwrap();
    let mut hs = HardState::default();
    for chunk in entries.chunks(per_batch) {
        let last = chunk.last().unwrap();
        hs = HardState {
            term: last.term,
            vote: Some(1),
            commit: chunk[0].index,
        };
        let mut b = WriteBatch::new();
        b.append(GROUP, chunk.to_vec()).set_hard_state(GROUP, hs);
        wal.append(&b).unwrap();
        wal.sync().unwrap();
    }
    hs
}

#[test]
fn conf_change_entries_read_back_equal_after_a_reopen() {
    let log = mixed_log();
    // One record for the whole log, then one per entry over the smallest
    // segments (so records and checkpoints spread over several files).
    for (segment_size, per_batch) in [(1 << 20, log.len()), (4096, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let hs = write(dir.path(), segment_size, &log, per_batch);
        let mut wal = Wal::open(dir.path(), opts(segment_size)).unwrap();
        let state = wal.group(GROUP).expect("the group survives the reopen");
        assert_eq!((state.first_index, state.last_index), (1, 10));
        assert_eq!(state.hard_state, hs);
        let read = wal.entries(GROUP, 1, 11, None).unwrap();
        assert_eq!(
            read, log,
            "segment size {segment_size}, {per_batch} a batch"
        );
        // The entries came from the files, not from a cache that never
        // saw the encoding.
        assert!(
            wal.stats().disk_reads >= log.len() as u64,
            "{:?}",
            wal.stats()
        );
        // One at a time too (the single-entry decode path).
        for e in &log {
            let one = wal.entries(GROUP, e.index, e.index + 1, None).unwrap();
            assert_eq!(one, vec![e.clone()]);
        }
        // And a second reopen sees the same (recovery wrote nothing wrong).
        drop(wal);
        let mut wal = Wal::open(dir.path(), opts(segment_size)).unwrap();
        assert_eq!(dump(&mut wal)[&GROUP].1, log);
    }
}

#[test]
fn conf_change_entries_survive_truncation_and_overwrite() {
    // A configuration overwritten by a new leader's different one at the
    // same index: the reopened log holds the new one.
    let dir = tempfile::tempdir().unwrap();
    let first = [conf(1, 1, &[1, 2, 3], &[]), conf(2, 1, &[1, 2, 3], &[4])];
    write(dir.path(), 4096, &first, 1);
    let mut wal = Wal::open(dir.path(), opts(4096)).unwrap();
    let overwrite = conf(2, 2, &[1, 2], &[5, 6]);
    let mut b = WriteBatch::new();
    b.append(GROUP, vec![overwrite.clone()]);
    wal.append(&b).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let mut wal = Wal::open(dir.path(), opts(4096)).unwrap();
    assert_eq!(
        wal.entries(GROUP, 1, 3, None).unwrap(),
        vec![first[0].clone(), overwrite]
    );
}

/// Offset, within a batch record's body, of the first entry's kind byte
/// when the batch starts with an append (`codec.rs`: type u8 | lsn u64 |
/// op u8 | group u64 | first u64 | n u32 | term u64 | kind u8).
const KIND_AT: usize = 1 + 8 + 1 + 8 + 8 + 4 + 8;
/// Offset of the first entry's data (after kind u8 | len u32 | crc u32).
const DATA_AT: usize = KIND_AT + 1 + 4 + 4;

/// Replaces a record's body (same length) and recomputes its checksum, as
/// `codec.rs` computes it: crc32c(segment seq | body length | body).
fn forge(raw: &mut [u8], seq: u64, (start, end): (usize, usize), body: &[u8]) {
    assert_eq!(end - start - 8, body.len(), "same length only");
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &(body.len() as u32).to_le_bytes());
    crc = crc32c::crc32c_append(crc, body);
    raw[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    raw[start + 8..end].copy_from_slice(body);
}

/// The entry checksum of `codec.rs`: crc32c(index | term | kind | data).
fn entry_crc(index: u64, term: u64, kind: u8, data: &[u8]) -> u32 {
    let mut head = Vec::with_capacity(17);
    head.extend_from_slice(&index.to_le_bytes());
    head.extend_from_slice(&term.to_le_bytes());
    head.push(kind);
    crc32c::crc32c_append(crc32c::crc32c(&head), data)
}

/// A one-segment WAL of two records, the first holding a configuration
/// entry at index 1 (term 1) with voters {1, 2, 3} and learner 4, the
/// second a command (so damage to the first cannot pass for a torn tail).
/// Returns the segment's path, its bytes and the first record's extent.
fn two_records(dir: &Path) -> (std::path::PathBuf, Vec<u8>, (usize, usize)) {
    write(
        dir,
        1 << 20,
        &[conf(1, 1, &[1, 2, 3], &[4]), entry(GROUP, 2, 1, 5)],
        1,
    );
    let segs = segment_files(dir);
    assert_eq!(segs.len(), 1);
    let raw = fs::read(&segs[0]).unwrap();
    // Header, checkpoint, then the two batches.
    let records = record_extents(&raw);
    assert_eq!(records.len(), 4, "{records:?}");
    let first = records[2];
    let body = &raw[first.0 + 8..first.1];
    assert_eq!(
        (body[0], body[9]),
        (3, 1),
        "a batch starting with an append"
    );
    assert_eq!(body[KIND_AT], 2, "the configuration entry's kind byte");
    (segs[0].clone(), raw, first)
}

fn seq_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

#[test]
fn an_unknown_entry_kind_is_corrupt_not_a_panic() {
    for kind in [3u8, 9, 0x80, 0xff] {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut raw, rec) = two_records(dir.path());
        let mut body = raw[rec.0 + 8..rec.1].to_vec();
        body[KIND_AT] = kind;
        // Both checksums made to match, so only the kind check can object.
        let len = u32::from_le_bytes(body[KIND_AT + 1..KIND_AT + 5].try_into().unwrap()) as usize;
        let crc = entry_crc(1, 1, kind, &body[DATA_AT..DATA_AT + len]);
        body[KIND_AT + 5..KIND_AT + 9].copy_from_slice(&crc.to_le_bytes());
        forge(&mut raw, seq_of(&path), rec, &body);
        fs::write(&path, &raw).unwrap();
        match Wal::open(dir.path(), opts(1 << 20)) {
            Err(StorageError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, rec.0 as u64, "kind {kind}: {reason}");
                assert!(
                    reason.contains(&format!("unknown kind {kind}")),
                    "kind {kind}: {reason}"
                );
            }
            Err(e) => panic!("kind {kind}: not reported as corruption: {e}"),
            Ok(_) => panic!("kind {kind}: an entry of unknown kind was accepted"),
        }
    }
}

#[test]
fn undecodable_configuration_bytes_are_corrupt_not_a_panic() {
    // Same length, checksums fixed: recovery only indexes the entry, and
    // the read that decodes the configuration must refuse it.
    let damage = [
        ("voter count past the data", u64::MAX),
        ("voter count one too many", 4),
        // Three voters read as two: the third id is taken for the learner
        // count (3), which claims more ids than the data holds.
        ("voter count one too few", 2),
    ];
    for (what, voters) in damage {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut raw, rec) = two_records(dir.path());
        let mut body = raw[rec.0 + 8..rec.1].to_vec();
        let len = u32::from_le_bytes(body[KIND_AT + 1..KIND_AT + 5].try_into().unwrap()) as usize;
        assert_eq!(len, 8 + 3 * 8 + 8 + 8, "voters {{1, 2, 3}}, learner 4");
        body[DATA_AT..DATA_AT + 8].copy_from_slice(&voters.to_le_bytes());
        let crc = entry_crc(1, 1, 2, &body[DATA_AT..DATA_AT + len]);
        body[KIND_AT + 5..KIND_AT + 9].copy_from_slice(&crc.to_le_bytes());
        forge(&mut raw, seq_of(&path), rec, &body);
        fs::write(&path, &raw).unwrap();
        let mut wal = Wal::open(dir.path(), opts(1 << 20)).expect("recovery indexes the entry");
        match wal.entries(GROUP, 1, 2, None) {
            Err(StorageError::Corrupt { reason, .. }) => {
                assert!(reason.contains("configuration"), "{what}: {reason}")
            }
            Err(e) => panic!("{what}: not reported as corruption: {e}"),
            Ok(e) => panic!("{what}: read back as {e:?}"),
        }
        // The entry after it is intact.
        assert_eq!(
            wal.entries(GROUP, 2, 3, None).unwrap(),
            vec![entry(GROUP, 2, 1, 5)]
        );
    }
}
