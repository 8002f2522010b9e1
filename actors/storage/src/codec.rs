//! The on-disk format of WAL records, hand-written little-endian so that it
//! is compact, fast and never changes behind our back.
//!
//! ```text
//! record   := body_len u32 | crc u32 | body | zero padding to 8 bytes
//!             crc = crc32c(segment_seq u64 | body_len u32 | body)
//!             body_len == 0 marks the end of data (segments are pre-zeroed)
//! body     := HEADER     magic "SYNODWAL" | version u32 | segment_seq u64
//!           | CHECKPOINT lsn u64 | n u32 | n × (group, first, last, term, vote, commit: u64)
//!           | BATCH      lsn u64 | op* (ops run to the end of the body)
//! op       := APPEND     group u64 | first_index u64 | n u32 | n × entry
//!           | HARDSTATE  group u64 | term u64 | vote u64 (0 = none) | commit u64
//!           | TRUNCATE   group u64 | from u64
//!           | PURGE      group u64 | first_index u64
//!           | REMOVE     group u64
//! entry    := term u64 | kind u8 | len u32 | crc32c(index, term, kind, data) u32 | data
//! ```
//!
//! Seeding the record CRC with the segment's sequence number means a record
//! copied from another segment (or left over in a reused file) never
//! validates. The per-entry CRC lets a single entry be checked when it is
//! read back from disk without reading its whole record.

use bytes::{BufMut, Bytes};
use synod_core::{Entry, EntryKind, HardState, Index};

use crate::batch::Op;
use crate::GroupId;

/// Bytes before a record's body.
pub(crate) const RECORD_HEADER: usize = 8;
/// Records start at multiples of this.
pub(crate) const ALIGN: usize = 8;
/// Bytes of an entry before its data.
pub(crate) const ENTRY_HEADER: usize = 8 + 1 + 4 + 4;
/// Bytes of one group's line in a checkpoint.
const CHECKPOINT_GROUP: usize = 6 * 8;
/// Format version written in every segment header.
pub(crate) const VERSION: u32 = 1;
pub(crate) const MAGIC: &[u8; 8] = b"SYNODWAL";

pub(crate) const T_HEADER: u8 = 1;
pub(crate) const T_CHECKPOINT: u8 = 2;
pub(crate) const T_BATCH: u8 = 3;

const OP_APPEND: u8 = 1;
const OP_HARD_STATE: u8 = 2;
const OP_TRUNCATE: u8 = 3;
const OP_PURGE: u8 = 4;
const OP_REMOVE: u8 = 5;

const KIND_NOOP: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_CONF: u8 = 2;

/// A little-endian u32 from the first 4 bytes of `b` (callers slice after
/// checking the length: a shorter slice is a bug, and panics).
pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// A little-endian u64 from the first 8 bytes of `b` (see [`le_u32`]).
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Rounds `n` up to the record alignment.
pub(crate) fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// The CRC of a record.
pub(crate) fn record_crc(segment_seq: u64, body: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&segment_seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &(body.len() as u32).to_le_bytes());
    crc32c::crc32c_append(crc, body)
}

/// Appends a framed record holding `body` to `out`, padded to alignment.
pub(crate) fn frame(out: &mut Vec<u8>, segment_seq: u64, body: &[u8]) {
    debug_assert_eq!(out.len() % ALIGN, 0, "records start aligned");
    out.put_u32_le(body.len() as u32);
    out.put_u32_le(record_crc(segment_seq, body));
    out.extend_from_slice(body);
    out.resize(align_up(out.len()), 0);
}

/// The CRC of one entry, covering its index so a misplaced read is caught.
pub(crate) fn entry_crc(index: Index, term: u64, kind: u8, data: &[u8]) -> u32 {
    let mut head = [0u8; 17];
    head[..8].copy_from_slice(&index.to_le_bytes());
    head[8..16].copy_from_slice(&term.to_le_bytes());
    head[16] = kind;
    crc32c::crc32c_append(crc32c::crc32c(&head), data)
}

fn kind_parts(kind: &EntryKind) -> (u8, std::borrow::Cow<'_, [u8]>) {
    match kind {
        EntryKind::Noop => (KIND_NOOP, std::borrow::Cow::Borrowed(&[])),
        EntryKind::Normal(d) => (KIND_NORMAL, std::borrow::Cow::Borrowed(d)),
        EntryKind::ConfChange(m) => (KIND_CONF, std::borrow::Cow::Owned(m.encode())),
    }
}

/// Where an appended entry landed inside an encoded batch body.
pub(crate) struct EncodedEntry {
    pub group: GroupId,
    pub index: Index,
    pub term: u64,
    /// Offset of the entry header within the body.
    pub body_offset: usize,
    /// Bytes of header + data.
    pub len: usize,
}

/// Bytes of a batch body before its first op.
pub(crate) const BATCH_PREFIX: usize = 9;

/// Starts a batch body (`T_BATCH`); ops follow with [`encode_ops`].
pub(crate) fn begin_batch(lsn: u64, out: &mut Vec<u8>) {
    out.put_u8(T_BATCH);
    out.put_u64_le(lsn);
}

/// Encodes ops at the end of `out` and reports where each entry sits
/// (offsets relative to the start of `out`).
pub(crate) fn encode_ops(ops: &[Op], out: &mut Vec<u8>) -> Vec<EncodedEntry> {
    let mut placed = Vec::new();
    for op in ops {
        match op {
            Op::Append { group, entries } => {
                out.put_u8(OP_APPEND);
                out.put_u64_le(*group);
                out.put_u64_le(entries[0].index);
                out.put_u32_le(entries.len() as u32);
                for e in entries {
                    let (kind, data) = kind_parts(&e.kind);
                    let data: &[u8] = &data;
                    let body_offset = out.len();
                    out.put_u64_le(e.term);
                    out.put_u8(kind);
                    out.put_u32_le(data.len() as u32);
                    out.put_u32_le(entry_crc(e.index, e.term, kind, data));
                    out.extend_from_slice(data);
                    placed.push(EncodedEntry {
                        group: *group,
                        index: e.index,
                        term: e.term,
                        body_offset,
                        len: ENTRY_HEADER + data.len(),
                    });
                }
            }
            Op::HardState { group, hard_state } => {
                out.put_u8(OP_HARD_STATE);
                out.put_u64_le(*group);
                put_hard_state(out, hard_state);
            }
            Op::Truncate { group, from } => {
                out.put_u8(OP_TRUNCATE);
                out.put_u64_le(*group);
                out.put_u64_le(*from);
            }
            Op::Purge { group, first_index } => {
                out.put_u8(OP_PURGE);
                out.put_u64_le(*group);
                out.put_u64_le(*first_index);
            }
            Op::RemoveGroup { group } => {
                out.put_u8(OP_REMOVE);
                out.put_u64_le(*group);
            }
        }
    }
    placed
}

fn put_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    out.put_u64_le(hs.term);
    out.put_u64_le(hs.vote.unwrap_or(0));
    out.put_u64_le(hs.commit);
}

/// Encodes a segment header body.
pub(crate) fn encode_header(segment_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    out.put_u8(T_HEADER);
    out.extend_from_slice(MAGIC);
    out.put_u32_le(VERSION);
    out.put_u64_le(segment_seq);
    out
}

/// One group's line in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CheckpointGroup {
    pub group: GroupId,
    pub first_index: Index,
    pub last_index: Index,
    pub hard_state: HardState,
}

/// Encodes a checkpoint body.
pub(crate) fn encode_checkpoint(lsn: u64, groups: &[CheckpointGroup]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + groups.len() * 48);
    out.put_u8(T_CHECKPOINT);
    out.put_u64_le(lsn);
    out.put_u32_le(groups.len() as u32);
    for g in groups {
        out.put_u64_le(g.group);
        out.put_u64_le(g.first_index);
        out.put_u64_le(g.last_index);
        put_hard_state(&mut out, &g.hard_state);
    }
    out
}

/// A decoded record body.
pub(crate) enum Record {
    Header {
        segment_seq: u64,
    },
    Checkpoint {
        lsn: u64,
        groups: Vec<CheckpointGroup>,
    },
    Batch {
        lsn: u64,
        ops: Vec<DecodedOp>,
    },
}

/// Where an entry of a replayed record sits, without its data (recovery
/// only needs locations; the record's CRC already covered the bytes).
pub(crate) struct EntryRef {
    pub term: u64,
    /// Offset of the entry header within the body.
    pub offset: usize,
    /// Bytes of header + data.
    pub len: usize,
}

/// An operation read back; appended entries keep their offset in the body
/// so the index can point at them.
pub(crate) enum DecodedOp {
    Append {
        group: GroupId,
        first_index: Index,
        entries: Vec<EntryRef>,
    },
    Other(Op),
}

/// A bounds-checked little-endian reader; every error says what was short.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!(
                "{what}: needs {n} bytes at body offset {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Bytes not read yet: what bounds the items a count field can claim.
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(le_u32(b))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        Ok(le_u64(b))
    }
    fn hard_state(&mut self) -> Result<HardState, String> {
        let term = self.u64("hard state term")?;
        let vote = self.u64("hard state vote")?;
        let commit = self.u64("hard state commit")?;
        Ok(HardState {
            term,
            vote: (vote != 0).then_some(vote),
            commit,
        })
    }
}

/// Decodes one entry at the reader's position (index known from context).
fn decode_entry(r: &mut Reader<'_>, index: Index, body: &Bytes) -> Result<Entry, String> {
    let term = r.u64("entry term")?;
    let kind = r.u8("entry kind")?;
    let len = r.u32("entry length")? as usize;
    let crc = r.u32("entry crc")?;
    let start = r.pos;
    let data = r.take(len, "entry data")?;
    if entry_crc(index, term, kind, data) != crc {
        return Err(format!("entry {index}: checksum mismatch"));
    }
    let kind = match kind {
        KIND_NOOP => EntryKind::Noop,
        KIND_NORMAL => EntryKind::Normal(body.slice(start..start + len)),
        KIND_CONF => match synod_core::Membership::decode(data) {
            Some(m) => EntryKind::ConfChange(m),
            None => return Err(format!("entry {index}: undecodable configuration")),
        },
        k => return Err(format!("entry {index}: unknown kind {k}")),
    };
    Ok(Entry { term, index, kind })
}

/// Decodes one entry stored on its own (a read of one entry from disk).
pub(crate) fn decode_single_entry(index: Index, raw: Bytes) -> Result<Entry, String> {
    let mut r = Reader { buf: &raw, pos: 0 };
    let e = decode_entry(&mut r, index, &raw)?;
    if r.pos != raw.len() {
        return Err(format!(
            "entry {index}: {} trailing bytes",
            raw.len() - r.pos
        ));
    }
    Ok(e)
}

/// Decodes a record body whose CRC already matched.
pub(crate) fn decode_body(body: Bytes) -> Result<Record, String> {
    let mut r = Reader { buf: &body, pos: 0 };
    match r.u8("record type")? {
        T_HEADER => {
            if r.take(8, "magic")? != MAGIC {
                return Err("bad magic: not a Synod WAL segment".into());
            }
            let version = r.u32("version")?;
            if version != VERSION {
                return Err(format!(
                    "format version {version}, this build reads {VERSION}"
                ));
            }
            let segment_seq = r.u64("segment sequence")?;
            Ok(Record::Header { segment_seq })
        }
        T_CHECKPOINT => {
            let lsn = r.u64("lsn")?;
            let n = r.u32("group count")? as usize;
            // The count is only a claim: reserve no more than the body
            // can hold (48 bytes a group), whatever it says.
            let mut groups = Vec::with_capacity(n.min(r.remaining() / CHECKPOINT_GROUP));
            for _ in 0..n {
                let group = r.u64("group")?;
                let first_index = r.u64("first index")?;
                let last_index = r.u64("last index")?;
                let hard_state = r.hard_state()?;
                groups.push(CheckpointGroup {
                    group,
                    first_index,
                    last_index,
                    hard_state,
                });
            }
            Ok(Record::Checkpoint { lsn, groups })
        }
        T_BATCH => {
            let lsn = r.u64("lsn")?;
            let mut ops = Vec::new();
            while r.pos < body.len() {
                ops.push(decode_op(&mut r)?);
            }
            Ok(Record::Batch { lsn, ops })
        }
        t => Err(format!("unknown record type {t}")),
    }
}

fn decode_op(r: &mut Reader<'_>) -> Result<DecodedOp, String> {
    let tag = r.u8("op tag")?;
    let group = r.u64("group")?;
    Ok(match tag {
        OP_APPEND => {
            let first = r.u64("first index")?;
            let n = r.u32("entry count")? as usize;
            if n == 0 {
                return Err("append of zero entries".into());
            }
            // As for checkpoints: at most what the body can hold.
            let mut entries = Vec::with_capacity(n.min(r.remaining() / ENTRY_HEADER));
            let mut prev_term = 0;
            for k in 0..n {
                let offset = r.pos;
                let term = r.u64("entry term")?;
                let kind = r.u8("entry kind")?;
                let len = r.u32("entry length")? as usize;
                r.u32("entry crc")?;
                r.take(len, "entry data")?;
                if kind != KIND_NOOP && kind != KIND_NORMAL && kind != KIND_CONF {
                    return Err(format!(
                        "entry {}: unknown kind {kind}",
                        first.saturating_add(k as Index)
                    ));
                }
                if term < prev_term {
                    return Err(format!(
                        "term decreases at entry {}",
                        first.saturating_add(k as Index)
                    ));
                }
                prev_term = term;
                entries.push(EntryRef {
                    term,
                    offset,
                    len: r.pos - offset,
                });
            }
            DecodedOp::Append {
                group,
                first_index: first,
                entries,
            }
        }
        OP_HARD_STATE => DecodedOp::Other(Op::HardState {
            group,
            hard_state: r.hard_state()?,
        }),
        OP_TRUNCATE => DecodedOp::Other(Op::Truncate {
            group,
            from: r.u64("truncate index")?,
        }),
        OP_PURGE => DecodedOp::Other(Op::Purge {
            group,
            first_index: r.u64("purge index")?,
        }),
        OP_REMOVE => DecodedOp::Other(Op::RemoveGroup { group }),
        t => return Err(format!("unknown op tag {t}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips() {
        let ops = [
            Op::Append {
                group: 7,
                entries: vec![
                    Entry {
                        term: 2,
                        index: 5,
                        kind: EntryKind::Normal(Bytes::from_static(b"abc")),
                    },
                    Entry {
                        term: 3,
                        index: 6,
                        kind: EntryKind::Noop,
                    },
                ],
            },
            Op::HardState {
                group: 7,
                hard_state: HardState {
                    term: 3,
                    vote: Some(2),
                    commit: 4,
                },
            },
            Op::Purge {
                group: 8,
                first_index: 9,
            },
        ];
        let mut body = Vec::new();
        begin_batch(42, &mut body);
        let placed = encode_ops(&ops, &mut body);
        assert_eq!(placed.len(), 2);
        let body = Bytes::from(body);
        let single = body.slice(placed[0].body_offset..placed[0].body_offset + placed[0].len);
        let e = decode_single_entry(5, single.clone()).unwrap();
        assert_eq!(e.data().unwrap(), "abc");
        assert!(
            decode_single_entry(6, single).is_err(),
            "index is in the crc"
        );
        let Record::Batch { lsn, ops: decoded } = decode_body(body).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(lsn, 42);
        assert_eq!(decoded.len(), 3);
        match &decoded[1] {
            DecodedOp::Other(op) => assert_eq!(op, &ops[1]),
            _ => panic!("expected hard state"),
        }
    }

    fn membership(voters: &[u64], learners: &[u64]) -> synod_core::Membership {
        synod_core::Membership {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
        }
    }

    /// Encodes `entries` as one append of group 1 and returns the body and
    /// each entry's bytes on their own (as a read from disk sees them).
    fn encode_entries(entries: &[Entry]) -> (Bytes, Vec<Bytes>) {
        let mut body = Vec::new();
        begin_batch(1, &mut body);
        let placed = encode_ops(
            &[Op::Append {
                group: 1,
                entries: entries.to_vec(),
            }],
            &mut body,
        );
        let body = Bytes::from(body);
        let singles = placed
            .iter()
            .map(|p| body.slice(p.body_offset..p.body_offset + p.len))
            .collect();
        (body, singles)
    }

    #[test]
    fn conf_change_entries_round_trip() {
        let entries: Vec<Entry> = [
            membership(&[1, 2, 3], &[]),
            membership(&[1, 2, 3], &[4]),
            membership(&[2], &[5, 6, 7]),
            membership(&[1, u64::MAX], &[u64::MAX - 1]),
            membership(&[], &[]),
        ]
        .into_iter()
        .enumerate()
        .map(|(k, m)| Entry {
            term: 1 + k as u64 / 2,
            index: 10 + k as u64,
            kind: EntryKind::ConfChange(m),
        })
        .collect();
        let (body, singles) = encode_entries(&entries);
        for (e, raw) in entries.iter().zip(singles) {
            assert_eq!(raw[8], KIND_CONF, "entry {}", e.index);
            assert_eq!(&decode_single_entry(e.index, raw).unwrap(), e);
        }
        let Record::Batch { ops, .. } = decode_body(body).unwrap() else {
            panic!("not a batch")
        };
        let [DecodedOp::Append {
            group: 1,
            first_index: 10,
            entries: refs,
        }] = &ops[..]
        else {
            panic!("expected one append of group 1 at 10")
        };
        assert_eq!(refs.len(), entries.len());
    }

    #[test]
    fn unknown_or_undecodable_kinds_are_errors_not_panics() {
        let e = Entry {
            term: 2,
            index: 7,
            kind: EntryKind::ConfChange(membership(&[1, 2, 3], &[4])),
        };
        let (body, singles) = encode_entries(std::slice::from_ref(&e));
        let raw = singles[0].to_vec();
        let data_at = ENTRY_HEADER;
        // Rewrites kind and data with a matching entry checksum, so only
        // the kind and configuration checks can object.
        let forge = |kind: u8, data: &[u8]| {
            let mut out = raw[..8].to_vec();
            out.push(kind);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&entry_crc(7, 2, kind, data).to_le_bytes());
            out.extend_from_slice(data);
            Bytes::from(out)
        };
        let data = &raw[data_at..];
        for kind in [3u8, 9, 0xff] {
            let err = decode_single_entry(7, forge(kind, data)).unwrap_err();
            assert!(err.contains(&format!("unknown kind {kind}")), "{err}");
            // Recovery's scan of a batch refuses it too.
            let mut b = body.to_vec();
            let at = body.len() - raw.len() + 8;
            b[at] = kind;
            let err = decode_body(Bytes::from(b)).err().expect("accepted");
            assert!(err.contains(&format!("unknown kind {kind}")), "{err}");
        }
        // Kind 2 over bytes that are no configuration: short, a count past
        // the data, trailing bytes.
        let mut long = data.to_vec();
        long.extend_from_slice(&[0; 8]);
        let mut huge = data.to_vec();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        for bad in [&data[..data.len() - 1], &data[..4], &[][..], &huge, &long] {
            let err = decode_single_entry(7, forge(KIND_CONF, bad)).unwrap_err();
            assert!(err.contains("undecodable configuration"), "{err}");
        }
        // A kind changed without fixing the entry checksum.
        let mut flipped = raw.clone();
        flipped[8] = KIND_NORMAL;
        assert!(decode_single_entry(7, Bytes::from(flipped)).is_err());
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        let op = Op::Append {
            group: 1,
            entries: vec![Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal(Bytes::from_static(b"hello")),
            }],
        };
        let mut body = Vec::new();
        begin_batch(1, &mut body);
        encode_ops(&[op], &mut body);
        for cut in BATCH_PREFIX + 1..body.len() {
            assert!(decode_body(Bytes::copy_from_slice(&body[..cut])).is_err());
        }
    }
}
