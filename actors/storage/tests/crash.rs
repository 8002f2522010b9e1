//! Crash and damage tests: cut the log at every byte offset of its last
//! records, flip bits, damage older segments, and check that recovery
//! returns a valid prefix of what was synced, never an invented or
//! corrupted entry, and names the file and offset of real damage.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::{copy_dir, dump, entry, opts, record_extents, scratch, segment_files, Dump};
use synod_core::HardState;
use synod_storage::{LogStore, SharedWal, StorageError, Wal, WriteBatch};

/// A one-segment log written as `batches` synced batches (one record
/// each) over three groups; returns the dump after each batch.
fn build_log(dir: &Path, batches: u64) -> Vec<Dump> {
    let mut wal = Wal::open(dir, opts(16 << 10)).unwrap();
    let mut states = vec![dump(&mut wal)];
    for k in 0..batches {
        let mut b = WriteBatch::new();
        for g in 1..=3u64 {
            let last = wal.group(g).map_or(0, |s| s.last_index);
            let n = 1 + (k + g) % 3;
            b.append(
                g,
                (last + 1..=last + n)
                    .map(|i| entry(g, i, 1 + k / 4, 20))
                    .collect(),
            );
            b.set_hard_state(
                g,
                HardState {
                    term: 1 + k / 4,
                    vote: Some(g),
                    commit: last,
                },
            );
        }
        if k == 5 {
            b.purge(2, 4);
        }
        wal.append(&b).unwrap();
        wal.sync().unwrap();
        states.push(dump(&mut wal));
    }
    states
}

#[test]
fn cut_at_every_byte_of_the_last_records_recovers_a_synced_prefix() {
    let src = tempfile::tempdir().unwrap();
    let states = build_log(src.path(), 8);
    let seg = segment_files(src.path()).pop().unwrap();
    let raw = fs::read(&seg).unwrap();
    let extents = record_extents(&raw);
    // header, checkpoint, then one record per batch
    assert_eq!(extents.len(), 2 + 8);
    let first_cut = extents[extents.len() - 3].0;
    let end = extents.last().unwrap().1;
    let mut checked = 0;
    for cut in first_cut..=end {
        for truncate_file in [false, true] {
            let dir = scratch();
            copy_dir(src.path(), dir.path());
            let path = dir.path().join(seg.file_name().unwrap());
            let mut damaged = raw.clone();
            if truncate_file {
                damaged.truncate(cut);
            } else {
                damaged[cut..].iter_mut().for_each(|b| *b = 0);
            }
            fs::write(&path, &damaged).unwrap();
            let mut wal = Wal::open(dir.path(), opts(16 << 10))
                .unwrap_or_else(|e| panic!("cut at {cut}: recovery failed: {e}"));
            // Records whose bytes survived the cut intact (zeroing bytes
            // that were zero already damages nothing).
            let whole = extents[2..]
                .iter()
                .take_while(|&&(s, e)| e <= damaged.len() && damaged[s..e] == raw[s..e])
                .count();
            assert_eq!(
                dump(&mut wal),
                states[whole],
                "cut at {cut} (truncate {truncate_file})"
            );
            checked += 1;
            if cut % 7 != 0 {
                continue;
            }
            // The log keeps working after the repair, and a second reopen
            // sees what was appended after it.
            let mut b = WriteBatch::new();
            let last = wal.group(1).map_or(0, |s| s.last_index);
            b.append(1, vec![entry(1, last + 1, 9, 5)]);
            wal.append(&b).unwrap();
            wal.sync().unwrap();
            let after = dump(&mut wal);
            drop(wal);
            let mut wal = Wal::open(dir.path(), opts(16 << 10)).unwrap();
            assert_eq!(dump(&mut wal), after, "cut at {cut}: append after repair");
        }
    }
    assert!(checked > 200, "only {checked} cuts checked");
}

#[test]
fn flipped_bits_never_yield_invented_entries() {
    let src = tempfile::tempdir().unwrap();
    let states = build_log(src.path(), 8);
    let seg = segment_files(src.path()).pop().unwrap();
    let raw = fs::read(&seg).unwrap();
    let extents = record_extents(&raw);
    let batch_records = &extents[2..];
    let mut rng = synod_core::rng::SplitMix64::new(7);
    let (mut corrupt, mut truncated) = (0, 0);
    for _ in 0..400 {
        // Flip one bit inside one of the last three records.
        let r = batch_records.len() - 1 - rng.range(0, 3) as usize;
        let (start, end) = batch_records[r];
        let at = rng.range(start as u64, end as u64) as usize;
        let bit = rng.range(0, 8);
        let dir = scratch();
        copy_dir(src.path(), dir.path());
        let mut damaged = raw.clone();
        damaged[at] ^= 1 << bit;
        fs::write(dir.path().join(seg.file_name().unwrap()), &damaged).unwrap();
        match Wal::open(dir.path(), opts(16 << 10)) {
            Ok(mut wal) => {
                // Only the last record may be dropped as a torn tail.
                assert_eq!(
                    r,
                    batch_records.len() - 1,
                    "damage before the tail accepted"
                );
                assert_eq!(dump(&mut wal), states[r], "flip at {at} bit {bit}");
                truncated += 1;
            }
            Err(StorageError::Corrupt { file, offset, .. }) => {
                assert!(
                    r < batch_records.len() - 1,
                    "flip in the tail record reported as damage"
                );
                assert_eq!(file.file_name(), seg.file_name());
                assert_eq!(offset as usize, start, "offset names the damaged record");
                corrupt += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(corrupt > 0 && truncated > 0);
}

#[test]
fn damage_in_an_older_segment_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(dir.path(), opts(4096)).unwrap();
        for i in 1..=60u64 {
            let mut b = WriteBatch::new();
            b.append(1, vec![entry(1, i, 1, 200)]);
            wal.append(&b).unwrap();
            wal.sync().unwrap();
        }
        assert!(wal.segment_count() >= 3);
    }
    let segs = segment_files(dir.path());
    let raw = fs::read(&segs[0]).unwrap();
    let extents = record_extents(&raw);
    let (start, end) = extents[3];
    let mut damaged = raw.clone();
    damaged[(start + end) / 2] ^= 0x40;
    fs::write(&segs[0], damaged).unwrap();
    match Wal::open(dir.path(), opts(4096)) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, segs[0]);
            assert_eq!(offset as usize, start);
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_missing_segment_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(dir.path(), opts(4096)).unwrap();
        for i in 1..=60u64 {
            let mut b = WriteBatch::new();
            b.append(1, vec![entry(1, i, 1, 200)]);
            wal.append(&b).unwrap();
            wal.sync().unwrap();
        }
    }
    let segs = segment_files(dir.path());
    fs::remove_file(&segs[1]).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), opts(4096)),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn purge_after_snapshot_deletes_segments_even_with_an_idle_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(4096)).unwrap();
    // An idle group with one entry in the first segment.
    let mut b = WriteBatch::new();
    b.append(9, vec![entry(9, 1, 1, 10)]);
    wal.append(&b).unwrap();
    for i in 1..=200u64 {
        let mut b = WriteBatch::new();
        b.append(1, vec![entry(1, i, 1, 200)]);
        wal.append(&b).unwrap();
        wal.sync().unwrap();
    }
    let before = wal.segment_count();
    assert!(before >= 10, "{before} segments");
    let mut b = WriteBatch::new();
    b.purge(1, 198);
    wal.append(&b).unwrap();
    wal.sync().unwrap();
    // Left: the idle group's segment, the one holding 198..200, the active.
    assert!(wal.segment_count() <= 3, "{} segments", wal.segment_count());
    assert_eq!(segment_files(dir.path()).len(), wal.segment_count());
    assert!(wal.stats().segments_deleted >= before as u64 - 3);
    let expected = dump(&mut wal);
    drop(wal);
    let mut wal = Wal::open(dir.path(), opts(4096)).unwrap();
    assert_eq!(dump(&mut wal), expected);
    // Purging the idle group too frees its segment.
    let mut b = WriteBatch::new();
    b.purge(9, 2);
    wal.append(&b).unwrap();
    wal.sync().unwrap();
    assert!(wal.segment_count() <= 2);
}

#[test]
fn a_crash_between_rotation_and_header_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let mut wal = Wal::open(dir.path(), opts(4096)).unwrap();
        for i in 1..=30u64 {
            let mut b = WriteBatch::new();
            b.append(1, vec![entry(1, i, 1, 200)]);
            wal.append(&b).unwrap();
            wal.sync().unwrap();
        }
        dump(&mut wal)
    };
    let last = segment_files(dir.path()).pop().unwrap();
    let seq: u64 = last.file_stem().unwrap().to_string_lossy().parse().unwrap();
    // The next segment was renamed into place but nothing written to it.
    fs::write(
        dir.path().join(format!("{:020}.wal", seq + 1)),
        vec![0u8; 4096],
    )
    .unwrap();
    let mut wal = Wal::open(dir.path(), opts(4096)).unwrap();
    assert_eq!(dump(&mut wal), expected);
    let mut b = WriteBatch::new();
    b.append(1, vec![entry(1, 31, 1, 10)]);
    wal.append(&b).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), opts(4096)).unwrap();
    assert_eq!(wal.group(1).unwrap().last_index, 31);
}

#[test]
fn group_commit_shares_fsyncs_between_threads() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(SharedWal::new(
        Wal::open(dir.path(), opts(16 << 10)).unwrap(),
    ));
    let threads: Vec<_> = (1..=8u64)
        .map(|g| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for i in 1..=100u64 {
                    let mut b = WriteBatch::new();
                    b.append(g, vec![entry(g, i, 1, 50)]);
                    shared.write(b).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = shared.with(|w| w.stats()).unwrap();
    assert_eq!(stats.batches, 800);
    assert!(stats.fsyncs < 800, "no batch shared an fsync: {stats:?}");
    let expected = shared.with(dump).unwrap();
    drop(Arc::into_inner(shared).unwrap().into_inner().unwrap());
    let mut wal = Wal::open(dir.path(), opts(16 << 10)).unwrap();
    assert_eq!(dump(&mut wal), expected);
    for g in 1..=8u64 {
        assert_eq!(wal.group(g).unwrap().last_index, 100);
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _wal = Wal::open(dir.path(), opts(4096)).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), opts(4096)),
        Err(StorageError::Locked { .. })
    ));
}
