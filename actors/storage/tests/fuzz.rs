//! The decoders facing the disk under mutation: WAL segment files and
//! snapshot files, damaged by truncations, bit flips, huge length fields,
//! random bytes, splices and concatenations derived from valid files.
//!
//! Every case must end in `Ok` with exactly what was written (a synced
//! prefix of the log, the snapshot's own bytes) or in a typed
//! `StorageError`: never a panic, never an allocation much larger than the
//! file, never an invented entry. A second mode ("forged") re-computes the
//! record checksum after damaging a WAL record's body, so the record
//! decoder and the replay checks behind the checksum see the damage too;
//! there only "no panic, bounded allocation, typed error" is asserted (a
//! forger who fixes the CRC can of course move data between groups).
//!
//! The `#[test]`s run a short fixed-seed batch; the `#[ignore]`d ones run
//! `SYNOD_FUZZ_CASES` cases each (docs/STORAGE.md, "Decoders under
//! mutation").

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{copy_dir, dump, entry, opts, record_extents, scratch, segment_files, Dump};
use synod_core::{Entry, HardState};
use synod_storage::testkit::{self, Mutator, PeakAlloc, Tally};
use synod_storage::{
    GroupId, LogStore, SnapshotMeta, SnapshotStore, StorageError, Wal, WriteBatch,
};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Segment size of the fixture: the smallest allowed, so a few dozen
/// batches span several segments.
const SEGMENT: u64 = 4096;

/// The largest single allocation a case may make: the file itself (read
/// whole by recovery) twice over, plus the 1 MiB buffers the WAL zeroes
/// segments with and snapshot readers read through, plus slack.
fn disk_limit(file_len: usize) -> usize {
    2 * file_len + (1 << 20) + (64 << 10)
}

/// A WAL written batch by batch over several segments, with the dump after
/// every synced batch: a recovery must land on one of them.
struct WalFixture {
    dir: tempfile::TempDir,
    states: Vec<Dump>,
}

fn build_wal() -> WalFixture {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(SEGMENT)).unwrap();
    let mut states = vec![dump(&mut wal)];
    for k in 0..40u64 {
        let mut b = WriteBatch::new();
        for g in 1..=3u64 {
            let last = wal.group(g).map_or(0, |s| s.last_index);
            // Every seventh batch overwrites group g's last entry in a
            // higher term, so recovery has truncations to replay.
            let (from, term) = if k % 7 == 6 && last > 1 {
                (last, 2 + k / 7)
            } else {
                (last + 1, 1 + k / 7)
            };
            let n = 1 + (k + g) % 3;
            b.append(
                g,
                (from..from + n)
                    .map(|i| entry(g, i, term, 8 + (k as usize % 5) * 7))
                    .collect(),
            );
            b.set_hard_state(
                g,
                HardState {
                    term,
                    vote: Some(g),
                    commit: from - 1,
                },
            );
        }
        if k == 12 {
            b.purge(2, 6);
        }
        if k == 20 {
            b.append(9, vec![entry(9, 1, 1, 4)]);
        }
        if k == 25 {
            b.remove_group(9);
        }
        wal.append(&b).unwrap();
        wal.sync().unwrap();
        states.push(dump(&mut wal));
    }
    drop(wal);
    assert!(
        segment_files(dir.path()).len() >= 3,
        "the fixture should span several segments"
    );
    WalFixture { dir, states }
}

/// Every group's state and entries, or the first typed error a read gave.
fn try_dump(wal: &mut Wal) -> Result<Dump, StorageError> {
    let mut out = BTreeMap::new();
    for g in wal.groups() {
        let s = wal.group(g).expect("a listed group exists");
        let entries: Vec<Entry> = if s.is_empty() {
            Vec::new()
        } else {
            wal.entries(g, s.first_index, s.last_index + 1, None)?
        };
        out.insert(g, (s, entries));
    }
    Ok(out)
}

/// The segment files of the fixture with their bytes.
fn segments(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segment_files(dir)
        .into_iter()
        .map(|p| {
            let raw = fs::read(&p).unwrap();
            (p, raw)
        })
        .collect()
}

/// Replaces `record`'s body in `raw` by `body`, with a length and a
/// checksum that match (the record format of `codec.rs`: the CRC covers
/// the segment's sequence number, the body length and the body).
fn forge_record(raw: &[u8], seq: u64, (start, end): (usize, usize), body: &[u8]) -> Vec<u8> {
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &(body.len() as u32).to_le_bytes());
    crc = crc32c::crc32c_append(crc, body);
    let mut out = raw[..start].to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(8) * 8, 0);
    out.extend_from_slice(&raw[(end.div_ceil(8) * 8).min(raw.len())..]);
    out
}

fn seq_of(path: &Path) -> u64 {
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    stem.parse().unwrap()
}

/// One WAL case: damage one segment (the last one half of the time: that
/// is where torn writes are repaired), recover, and check the outcome.
fn wal_case(fx: &WalFixture, segs: &[(PathBuf, Vec<u8>)], seed: u64, forged: bool) -> Tally {
    let mut m = Mutator::new(seed);
    let k = if m.rng().chance(1, 2) {
        segs.len() - 1
    } else {
        m.below(segs.len())
    };
    let (path, raw) = &segs[k];
    let other = &segs[m.below(segs.len())].1;
    let damaged = if forged {
        let extents = record_extents(raw);
        let r = extents[m.below(extents.len())];
        let body = m.mutate(&raw[r.0 + 8..r.1], &other[8..]);
        forge_record(raw, seq_of(path), r, &body)
    } else {
        m.mutate(raw, other)
    };
    let dir = scratch();
    copy_dir(fx.dir.path(), dir.path());
    fs::write(dir.path().join(path.file_name().unwrap()), &damaged).unwrap();
    let mut tally = Tally::default();
    let what = if forged {
        "forged WAL record"
    } else {
        "WAL segment"
    };
    testkit::check(
        what,
        seed,
        &damaged,
        disk_limit(damaged.len().max(raw.len())),
        &mut tally,
        || {
            let mut wal = Wal::open(dir.path(), opts(SEGMENT))?;
            let got = try_dump(&mut wal)?;
            if !forged {
                assert!(
                    fx.states.contains(&got),
                    "segment {k} damaged: recovered a state that was never synced: {got:?}"
                );
            }
            Ok::<(), StorageError>(())
        },
    );
    tally
}

fn run_wal(cases: u64, seed0: u64, forged: bool) -> Tally {
    let fx = build_wal();
    let segs = segments(fx.dir.path());
    let mut total = Tally::default();
    for i in 0..cases {
        let t = wal_case(&fx, &segs, seed0 + i, forged);
        add(&mut total, t);
    }
    total
}

fn add(total: &mut Tally, t: Tally) {
    total.cases += t.cases;
    total.ok += t.ok;
    total.err += t.err;
    total.peak_alloc = total.peak_alloc.max(t.peak_alloc);
}

const SNAP_GROUP: GroupId = 3;
const SNAP_INDEX: u64 = 10;

fn snap_meta() -> SnapshotMeta {
    SnapshotMeta {
        group: SNAP_GROUP,
        index: SNAP_INDEX,
        term: 2,
        voters: vec![1, 2, 3],
        learners: vec![4],
    }
}

/// A store holding one snapshot; returns the store's directory, the
/// file's path relative to it, its bytes and the data.
fn build_snapshot() -> (tempfile::TempDir, PathBuf, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path(), 2).unwrap();
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let mut w = store.writer(snap_meta()).unwrap();
    w.write_chunk(&data[..1000]).unwrap();
    w.write_chunk(&data[1000..]).unwrap();
    w.finish().unwrap();
    let gdir = dir.path().join(SNAP_GROUP.to_string());
    let file = fs::read_dir(&gdir).unwrap().next().unwrap().unwrap().path();
    let rel = file.strip_prefix(dir.path()).unwrap().to_path_buf();
    let raw = fs::read(&file).unwrap();
    (dir, rel, raw, data)
}

/// Opens the damaged snapshot every way the store offers; whatever is
/// returned as good must be exactly what was written.
fn read_snapshot(dir: &Path, data: &[u8]) -> Result<(), StorageError> {
    let store = SnapshotStore::open(dir, 2)?;
    for meta in store.list(SNAP_GROUP)? {
        assert_eq!(meta, snap_meta(), "a damaged header was listed");
    }
    if let Some(meta) = store.latest(SNAP_GROUP)? {
        assert_eq!(meta, snap_meta(), "a damaged header was reported latest");
    }
    let reader = store.open_snapshot(SNAP_GROUP, SNAP_INDEX)?;
    assert_eq!(reader.meta(), &snap_meta());
    let got = reader.read_all()?;
    assert!(got == data, "damaged snapshot data read back as good");
    Ok(())
}

fn run_snapshot(cases: u64, seed0: u64) -> Tally {
    let (src, rel, raw, data) = build_snapshot();
    let mut tally = Tally::default();
    let one = |seed: u64, damaged: &[u8], tally: &mut Tally| {
        let dir = scratch();
        let gdir = dir.path().join(SNAP_GROUP.to_string());
        fs::create_dir_all(&gdir).unwrap();
        fs::write(dir.path().join(&rel), damaged).unwrap();
        testkit::check(
            "snapshot file",
            seed,
            damaged,
            disk_limit(damaged.len()),
            tally,
            || read_snapshot(dir.path(), &data),
        );
    };
    // Every truncation of the header and footer, then random damage.
    let edges = (0..120).chain(raw.len() - 40..raw.len());
    for cut in edges {
        one(cut as u64, &raw[..cut], &mut tally);
    }
    for i in 0..cases {
        let seed = seed0 + i;
        let damaged = Mutator::new(seed).mutate(&raw, &raw[..60]);
        one(seed, &damaged, &mut tally);
    }
    drop(src);
    tally
}

/// Regression (found by the forged batch): a checkpoint whose range for a
/// group was absurd made recovery panic on `last_index + 1` (u64::MAX) or
/// abort on `VecDeque::with_capacity` (an allocation of petabytes).
#[test]
fn forged_checkpoint_with_an_absurd_range_is_corrupt() {
    let fx = build_wal();
    let segs = segments(fx.dir.path());
    let (path, raw) = segs.last().unwrap();
    let checkpoint = record_extents(raw)[1];
    let body = &raw[checkpoint.0 + 8..checkpoint.1];
    assert_eq!(body[0], 2, "the second record is the checkpoint");
    // type u8 | lsn u64 | n u32 | n x (group, first, last, term, vote, commit)
    let last_of_first_group = 1 + 8 + 4 + 16;
    // With the earlier segments deleted, a checkpoint may count entries
    // recovery has not seen (placeholders), so the fallible reservation is
    // what must refuse the claim.
    // 1 << 20 and 1 << 24 are claims a machine can reserve: refused all
    // the same, before any reservation, because the directory's segments
    // are too small to hold that many entries.
    for (last, deleted) in [u64::MAX, 1 << 40, 1 << 62, 1 << 20, 1 << 24]
        .into_iter()
        .flat_map(|l| [(l, false), (l, true)])
    {
        let mut forged = body.to_vec();
        forged[last_of_first_group..last_of_first_group + 8].copy_from_slice(&last.to_le_bytes());
        let damaged = forge_record(raw, seq_of(path), checkpoint, &forged);
        let dir = scratch();
        copy_dir(fx.dir.path(), dir.path());
        if deleted {
            for (earlier, _) in &segs[..segs.len() - 1] {
                fs::remove_file(dir.path().join(earlier.file_name().unwrap())).unwrap();
            }
        }
        fs::write(dir.path().join(path.file_name().unwrap()), &damaged).unwrap();
        let mut tally = Tally::default();
        testkit::check(
            "absurd checkpoint",
            last,
            &damaged,
            disk_limit(damaged.len()),
            &mut tally,
            || match Wal::open(dir.path(), opts(SEGMENT)) {
                Err(StorageError::Corrupt { .. }) => Ok(()),
                Err(e) => Err(e),
                Ok(_) => panic!("a checkpoint counting {last} entries was accepted"),
            },
        );
        assert_eq!(
            tally.ok, 1,
            "last index {last} (earlier segments deleted: {deleted}): not reported as corruption"
        );
    }
}

/// Regression (found by the long forged-record run, seed 8590019767): a
/// checkpoint or batch whose LSN was u64::MAX overflowed `lsn + 1` in
/// recovery (a panic in debug builds; in release the next LSN wrapped).
#[test]
fn forged_lsn_at_the_end_of_the_range_is_corrupt() {
    let fx = build_wal();
    let segs = segments(fx.dir.path());
    let last = segs.len() - 1;
    // The checkpoint (record 1) is where a segment's LSNs start afresh.
    for (k, lsn) in [(last, u64::MAX), (last, u64::MAX - 1), (0, u64::MAX)] {
        let (path, raw) = &segs[k];
        let r = record_extents(raw)[1];
        let mut body = raw[r.0 + 8..r.1].to_vec();
        body[1..9].copy_from_slice(&lsn.to_le_bytes());
        let damaged = forge_record(raw, seq_of(path), r, &body);
        let dir = scratch();
        copy_dir(fx.dir.path(), dir.path());
        fs::write(dir.path().join(path.file_name().unwrap()), &damaged).unwrap();
        let mut tally = Tally::default();
        testkit::check(
            "LSN at the end of the range",
            lsn,
            &damaged,
            disk_limit(damaged.len()),
            &mut tally,
            || Wal::open(dir.path(), opts(SEGMENT)).map(|_| ()),
        );
        assert_eq!(tally.err, 1, "segment {k}: checkpoint LSN {lsn} accepted");
    }
}

/// Regression: an append op starting at index u64::MAX whose second entry
/// is bad overflowed `first + k` while formatting the error (a panic in
/// debug builds). Found by reading the decoder while fixing the above.
#[test]
fn forged_append_at_the_last_index_is_an_error() {
    let fx = build_wal();
    let segs = segments(fx.dir.path());
    let (path, raw) = segs.last().unwrap();
    let extents = record_extents(raw);
    let r = extents[extents.len() - 1];
    // T_BATCH | lsn (kept) | APPEND group 1, first u64::MAX, two entries:
    // a Noop, then one of an unknown kind (or a lower term).
    for (kind, term) in [(9u8, 5u64), (0, 1)] {
        let mut body = raw[r.0 + 8..r.0 + 8 + 9].to_vec();
        body.push(1);
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        for (k, t) in [(0u8, 5u64), (kind, term)] {
            body.extend_from_slice(&t.to_le_bytes());
            body.push(k);
            body.extend_from_slice(&0u32.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
        }
        let damaged = forge_record(raw, seq_of(path), r, &body);
        let dir = scratch();
        copy_dir(fx.dir.path(), dir.path());
        fs::write(dir.path().join(path.file_name().unwrap()), &damaged).unwrap();
        let mut tally = Tally::default();
        testkit::check(
            "append at u64::MAX",
            u64::from(kind),
            &damaged,
            disk_limit(damaged.len()),
            &mut tally,
            || Wal::open(dir.path(), opts(SEGMENT)).map(|_| ()),
        );
    }
}

/// Regression: a snapshot footer whose data length is near u64::MAX made
/// the consistency check `data_start + data_len + FOOTER` overflow (a
/// panic in debug builds).
#[test]
fn snapshot_footer_with_a_huge_data_length_is_corrupt() {
    let (_src, rel, raw, data) = build_snapshot();
    let at = raw.len() - 20;
    for len in [u64::MAX, u64::MAX - 100, 1 << 63] {
        let mut damaged = raw.clone();
        damaged[at..at + 8].copy_from_slice(&len.to_le_bytes());
        let dir = scratch();
        fs::create_dir_all(dir.path().join(SNAP_GROUP.to_string())).unwrap();
        fs::write(dir.path().join(&rel), &damaged).unwrap();
        let mut tally = Tally::default();
        testkit::check(
            "huge snapshot data length",
            len,
            &damaged,
            disk_limit(damaged.len()),
            &mut tally,
            || match read_snapshot(dir.path(), &data) {
                Err(StorageError::Corrupt { .. }) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        assert_eq!(tally.ok, 1, "data length {len}: not reported as corruption");
    }
}

/// Regression: the metadata length of a snapshot was bounded only by the
/// file's size, so a damaged one in a large snapshot allocated that much
/// before the metadata checksum could refuse it.
#[test]
fn snapshot_metadata_length_is_bounded() {
    let dir = scratch();
    let store = SnapshotStore::open(dir.path(), 2).unwrap();
    let mut w = store.writer(snap_meta()).unwrap();
    w.write_chunk(&vec![5u8; 3 << 20]).unwrap();
    w.finish().unwrap();
    let path = dir.path().join(SNAP_GROUP.to_string());
    let path = fs::read_dir(path).unwrap().next().unwrap().unwrap().path();
    let mut raw = fs::read(&path).unwrap();
    raw[12..16].copy_from_slice(&(2u32 << 20).to_le_bytes());
    fs::write(&path, &raw).unwrap();
    let mut tally = Tally::default();
    testkit::check(
        "snapshot metadata length",
        0,
        &raw[..64],
        (1 << 20) + (64 << 10),
        &mut tally,
        || store.open_snapshot(SNAP_GROUP, SNAP_INDEX).map(|_| ()),
    );
    assert_eq!(tally.err, 1);
}

#[test]
fn wal_segments_under_mutation_recover_a_synced_prefix_or_fail_typed() {
    let t = run_wal(testkit::cases(1500), 1, false);
    t.report("WAL segment");
    assert!(t.ok > 0 && t.err > 0, "the batch should see both outcomes");
}

#[test]
fn forged_wal_records_fail_typed() {
    let t = run_wal(testkit::cases(1500), 1_000_000, true);
    t.report("forged WAL record");
    assert!(t.err > 0);
}

#[test]
fn snapshot_files_under_mutation_read_exactly_or_fail_typed() {
    let t = run_snapshot(testkit::cases(2000), 1);
    t.report("snapshot file");
    // Every byte of a snapshot file is checked (magic, checksummed
    // metadata, checksummed data, footer), so nearly every case fails.
    assert!(t.err > 0);
}

/// The long runs: `SYNOD_FUZZ_CASES=200000 cargo test --release -p
/// synod-storage --test fuzz -- --ignored --nocapture` (seeds disjoint from
/// the CI batch).
#[test]
#[ignore]
fn long_wal_segments() {
    run_wal(testkit::cases(20_000), 1 << 32, false).report("WAL segment (long)");
}

/// See [`long_wal_segments`].
#[test]
#[ignore]
fn long_forged_wal_records() {
    run_wal(testkit::cases(20_000), 2 << 32, true).report("forged WAL record (long)");
}

/// See [`long_wal_segments`].
#[test]
#[ignore]
fn long_snapshot_files() {
    run_snapshot(testkit::cases(100_000), 3 << 32).report("snapshot file (long)");
}
