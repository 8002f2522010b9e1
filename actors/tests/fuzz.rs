//! The decoders facing the network under mutation: frames carrying every
//! Raft message kind, every client request and response, and snapshot
//! stream headers, plus the length-prefixed stream they arrive in.
//!
//! From valid encodings, the mutator makes truncations, bit flips, huge
//! length fields (including msgpack headers claiming 4 GiB), splices,
//! concatenations and random bytes. Each input is decoded as every wire
//! type: the result must be a value or a typed `FrameError`, never a panic,
//! never an allocation much larger than the input (serde's cautious
//! preallocation is capped at 1 MiB); a decoded value must survive a
//! re-encode unchanged.
//!
//! The `#[test]`s run a short fixed-seed batch; the `#[ignore]`d ones run
//! `SYNOD_FUZZ_CASES` cases (docs/STORAGE.md, "Decoders under mutation").

use std::fmt::Debug;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use synod_actors::proto::{Poison, RaftItem, SnapshotHeader};
use synod_actors::{
    GroupStatus, MemberProgress, MembershipInfo, NodeStats, Request, RequestError, Response,
};
use synod_core::{AppendResponse, Entry, EntryKind, Message, MessageBody, SnapshotInfo};
use synod_net::frame::{self, FrameError};
use synod_net::transport::{SnapshotAck, StreamHeader};
use synod_storage::testkit::{self, Mutator, PeakAlloc, Tally};
use tokio_util::codec::Decoder;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The largest single allocation decoding `len` bytes may make: serde's
/// cautious preallocation (at most 1 MiB per sequence) plus what scales
/// with the input.
fn frame_limit(len: usize) -> usize {
    (1 << 20) + 4 * len + (64 << 10)
}

fn msg(body: MessageBody) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 7,
        body,
    }
}

/// One message of every kind (and both shapes of the ones with options).
fn every_message() -> Vec<Message> {
    let entries = vec![
        Entry {
            term: 6,
            index: 41,
            kind: EntryKind::Noop,
        },
        Entry {
            term: 7,
            index: 42,
            kind: EntryKind::Normal(Bytes::from_static(b"set x = 1")),
        },
    ];
    vec![
        msg(MessageBody::PreVote {
            last_log_index: 40,
            last_log_term: 6,
        }),
        msg(MessageBody::PreVoteResponse { granted: true }),
        msg(MessageBody::Vote {
            last_log_index: 40,
            last_log_term: 6,
        }),
        msg(MessageBody::VoteResponse { granted: false }),
        msg(MessageBody::Append {
            prev_log_index: 40,
            prev_log_term: 6,
            entries,
            leader_commit: 39,
            epoch: 0,
        }),
        msg(MessageBody::Append {
            prev_log_index: 42,
            prev_log_term: 7,
            entries: Vec::new(),
            leader_commit: 42,
            epoch: 0,
        }),
        msg(MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index: 42,
            epoch: 3,
            rejoining: true,
        })),
        msg(MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index: 40,
            conflict_term: Some(5),
            conflict_index: 33,
        })),
        msg(MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index: 40,
            conflict_term: None,
            conflict_index: 12,
        })),
        msg(MessageBody::Heartbeat {
            commit: 42,
            round: 9,
        }),
        msg(MessageBody::HeartbeatResponse {
            lacking: None,
            round: 9,
        }),
        msg(MessageBody::HeartbeatResponse {
            lacking: Some(7),
            round: 0,
        }),
        msg(MessageBody::ReadIndex {
            id: u64::MAX,
            rejoin: true,
        }),
        msg(MessageBody::ReadIndexResponse {
            id: 17,
            index: Some(42),
        }),
        msg(MessageBody::ReadIndexResponse {
            id: 18,
            index: None,
        }),
        msg(MessageBody::Snapshot {
            snapshot: SnapshotInfo {
                index: 1000,
                term: 6,
            },
            membership: synod_core::Membership::with_voters([1, 2, 3]),
            epoch: 1,
        }),
        msg(MessageBody::TimeoutNow),
        msg(MessageBody::TransferVote {
            last_log_index: 12,
            last_log_term: 5,
        }),
    ]
}

fn every_request() -> Vec<Request> {
    let payload = Bytes::from_static(b"\x92\xa3get\xa1x");
    vec![
        Request::Command {
            group: 3,
            payload: payload.clone(),
        },
        Request::Read {
            group: 3,
            payload: payload.clone(),
        },
        Request::LocalRead { group: 3, payload },
        Request::Status,
        Request::Stats,
        Request::TransferLeader { group: 3, to: 2 },
        Request::Membership { group: 3 },
        Request::AddLearner { group: 3, node: 4 },
        Request::Promote { group: 3, node: 4 },
        Request::RemoveMember { group: 3, node: 1 },
        Request::ChangeMembership {
            group: 3,
            change: synod_core::ConfChange::PromoteLearner(4),
        },
        Request::HostGroup { group: 3 },
        Request::DropGroup { group: 3 },
        Request::ForceVoters {
            group: 3,
            voters: vec![1, 2],
        },
    ]
}

fn every_response() -> Vec<Response> {
    let errors = [
        RequestError::NotLeader {
            group: 3,
            leader: Some(2),
        },
        RequestError::NotLeader {
            group: 3,
            leader: None,
        },
        RequestError::NoSuchGroup(3),
        RequestError::NotAVoter {
            group: 3,
            node: 9,
            voters: vec![1, 2, 3],
        },
        RequestError::TransferInProgress {
            group: 3,
            pending: 2,
        },
        RequestError::TransferFailed {
            group: 3,
            to: 2,
            leader: Some(1),
        },
        RequestError::Restarting(3),
        RequestError::Busy(3),
        RequestError::Timeout(3),
        RequestError::Stopped(3),
        RequestError::Application("unknown message".into()),
        RequestError::Unavailable("connection lost".into()),
        RequestError::NodeFailed {
            node: 2,
            reason: "I/O error: EIO".into(),
        },
        RequestError::OutcomeUnknown {
            group: 3,
            reason: "the leader's answer did not decode".into(),
        },
        RequestError::ResultTooLarge {
            group: 3,
            size: 1 << 30,
            limit: 16 << 20,
        },
        RequestError::Poisoned {
            group: 3,
            index: 17,
            message_type: "Boom".into(),
            panic_message: "boom".into(),
        },
        RequestError::ChangeInProgress {
            group: 3,
            reason: "the change at index 9 is not committed yet".into(),
        },
        RequestError::LearnerBehind {
            group: 3,
            node: 4,
            matched: 10,
            last: 900,
        },
        RequestError::BadChange {
            group: 3,
            reason: "node 4 already is a voter".into(),
        },
        RequestError::NoQuorumLeft { group: 3, node: 1 },
        RequestError::UnknownNode { node: 9 },
        RequestError::CannotHost {
            group: 3,
            node: 4,
            reason: "does not know the group".into(),
        },
    ];
    let status = GroupStatus {
        group: 3,
        role: "Leader".into(),
        term: 7,
        leader: Some(1),
        last_index: 42,
        commit: 42,
        applied: 41,
        restarts: 0,
        rejoining: true,
        followers_lost_state: 1,
        poison: Some(Poison {
            index: 17,
            message_type: "Boom".into(),
            panic_message: "boom".into(),
        }),
        transfer_to: Some(2),
        voters: vec![1, 2, 3],
        learners: vec![4],
        progress: vec![MemberProgress {
            node: 2,
            matched: 40,
        }],
    };
    let stats = NodeStats {
        node: 1,
        fsyncs: 10,
        log_writes: 11,
        log_rounds: 12,
        log_entries: 13,
        applied: 14,
        answered: 15,
        leader_changes: 1,
        restarts: 0,
        snapshots_saved: 2,
        snapshots_installed: 3,
        frames_sent: 100,
        items_sent: 300,
        balance_rounds: 7,
        balance_transfers: 2,
        awake_groups: 12,
    };
    let mut out = vec![
        Response::Ok {
            result: Bytes::from_static(b"\x01"),
            leader: Some(1),
        },
        Response::Ok {
            result: Bytes::new(),
            leader: None,
        },
        Response::Status(vec![
            status.clone(),
            GroupStatus {
                leader: None,
                ..status
            },
        ]),
        Response::Stats(stats),
        Response::Membership(MembershipInfo {
            group: 3,
            voters: vec![1, 2, 3],
            learners: vec![4],
            leader: Some(1),
            index: 9,
            committed: false,
            answered_by: 2,
        }),
    ];
    out.extend(errors.into_iter().map(Response::Err));
    out
}

fn snapshot_header() -> SnapshotHeader {
    SnapshotHeader {
        group: 3,
        msg: msg(MessageBody::Snapshot {
            snapshot: SnapshotInfo {
                index: 1000,
                term: 6,
            },
            membership: synod_core::Membership::with_voters([1, 2, 3]),
            epoch: 1,
        }),
        voters: vec![1, 2, 3],
    }
}

/// Every kind of the transport's first frame of a stream.
fn stream_headers() -> Vec<StreamHeader> {
    vec![
        StreamHeader::Raft { from: 3 },
        StreamHeader::Request,
        StreamHeader::Snapshot {
            from: 2,
            header: Bytes::from(encode(&snapshot_header())),
        },
    ]
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    frame::encode(value, frame::DEFAULT_MAX_FRAME)
        .expect("valid values encode")
        .to_vec()
}

/// Valid frame payloads: a batch of every Raft message (and each message
/// alone), every request, every response, a snapshot header.
fn samples() -> Vec<Vec<u8>> {
    let items: Vec<RaftItem> = every_message()
        .into_iter()
        .enumerate()
        .map(|(k, msg)| RaftItem {
            group: k as u64 + 1,
            msg,
        })
        .collect();
    let mut out = vec![encode(&items)];
    out.extend(items.iter().map(|i| encode(&vec![i.clone()])));
    out.extend(every_request().iter().map(encode));
    out.extend(every_response().iter().map(encode));
    out.push(encode(&snapshot_header()));
    out.extend(stream_headers().iter().map(encode));
    out.push(encode(&SnapshotAck { error: None }));
    out.push(encode(&SnapshotAck {
        error: Some("the snapshot's checksum does not match".into()),
    }));
    out
}

/// Decodes `input` as `T`; a value must re-encode and decode to itself.
fn decode_as<T>(input: &[u8]) -> Result<(), FrameError>
where
    T: Serialize + DeserializeOwned + Debug,
{
    let value: T = frame::decode(input)?;
    let again: T = frame::decode(&encode(&value)).expect("a decoded value re-encodes");
    assert_eq!(
        format!("{value:?}"),
        format!("{again:?}"),
        "a decoded value changed across a re-encode"
    );
    Ok(())
}

/// Decodes `input` as every wire type, each under its own check.
fn decode_every_way(seed: u64, input: &[u8], tally: &mut Tally) {
    let limit = frame_limit(input.len());
    testkit::check("Raft batch frame", seed, input, limit, tally, || {
        decode_as::<Vec<RaftItem>>(input)
    });
    testkit::check("request frame", seed, input, limit, tally, || {
        decode_as::<Request>(input)
    });
    testkit::check("response frame", seed, input, limit, tally, || {
        decode_as::<Response>(input)
    });
    testkit::check("snapshot header frame", seed, input, limit, tally, || {
        decode_as::<SnapshotHeader>(input)
    });
    testkit::check("stream header frame", seed, input, limit, tally, || {
        decode_as::<StreamHeader>(input)
    });
    testkit::check("snapshot ack frame", seed, input, limit, tally, || {
        decode_as::<SnapshotAck>(input)
    });
}

fn run_frames(cases: u64, seed0: u64) -> Tally {
    let samples = samples();
    let mut tally = Tally::default();
    // Every truncation of every valid frame first.
    for s in &samples {
        for cut in 0..s.len() {
            decode_every_way(cut as u64, &s[..cut], &mut tally);
        }
    }
    for i in 0..cases {
        let seed = seed0 + i;
        let mut m = Mutator::new(seed);
        let a = m.pick(&samples).clone();
        let b = m.pick(&samples).clone();
        let input = m.mutate(&a, &b);
        decode_every_way(seed, &input, &mut tally);
    }
    tally
}

/// Frame size limit of the stream tests: small, so that "no allocation
/// beyond the limit" is visible.
const STREAM_MAX: usize = 64 << 10;

/// A stream of length-prefixed frames (the transport's wire format).
fn stream_of(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        out.put_u32(f.len() as u32);
        out.extend_from_slice(f);
    }
    out.to_vec()
}

/// Reads frames from `input` as the transport does (4-byte length,
/// `STREAM_MAX` limit), decoding each as a Raft batch, until the stream
/// ends or errs.
fn read_stream(input: &[u8]) -> Result<(), String> {
    let mut codec = frame::codec(STREAM_MAX);
    let mut buf = BytesMut::from(input);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(f)) => {
                frame::decode::<Vec<RaftItem>>(&f).map_err(|e| e.to_string())?;
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn run_streams(cases: u64, seed0: u64) -> Tally {
    let samples = samples();
    let raft = &samples[..1 + every_message().len()];
    let mut tally = Tally::default();
    for i in 0..cases {
        let seed = seed0 + i;
        let mut m = Mutator::new(seed);
        let n = 1 + m.below(4);
        let frames: Vec<Vec<u8>> = (0..n).map(|_| m.pick(raft).clone()).collect();
        let valid = stream_of(&frames);
        let input = m.mutate(&valid, &valid);
        // The codec may reserve up to one whole frame ahead of its bytes.
        let limit = frame_limit(input.len()) + STREAM_MAX;
        testkit::check("frame stream", seed, &input, limit, &mut tally, || {
            read_stream(&input)
        });
    }
    tally
}

#[test]
fn frames_under_mutation_decode_or_fail_typed() {
    let t = run_frames(testkit::cases(20_000), 1);
    t.report("frames");
    assert!(t.ok > 0 && t.err > 0, "the batch should see both outcomes");
}

#[test]
fn frame_streams_under_mutation_decode_or_fail_typed() {
    let t = run_streams(testkit::cases(20_000), 1);
    t.report("frame streams");
    assert!(t.ok > 0 && t.err > 0);
}

/// A length claim of 4 GiB, at the stream level and inside a frame, is
/// refused without a matching allocation.
#[test]
fn huge_length_claims_allocate_nothing_like_them() {
    let mut tally = Tally::default();
    let mut stream = u32::MAX.to_be_bytes().to_vec();
    stream.extend_from_slice(&[frame::VERSION, 0x90]);
    testkit::check(
        "4 GiB frame length",
        0,
        &stream,
        1 << 16,
        &mut tally,
        || read_stream(&stream),
    );
    // A batch (array32) of u32::MAX items; an entry payload (bin32) of
    // u32::MAX bytes.
    for body in [
        vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x81],
        vec![
            0x91, 0x92, 0x01, 0x94, 0x01, 0x02, 0x07, 0xc6, 0xff, 0xff, 0xff, 0xff,
        ],
    ] {
        let mut input = vec![frame::VERSION];
        input.extend_from_slice(&body);
        decode_every_way(0, &input, &mut tally);
    }
    assert_eq!(tally.ok, 0);
}

/// The long runs: `SYNOD_FUZZ_CASES=1000000 cargo test --release -p
/// synod-actors --test fuzz -- --ignored --nocapture` (seeds disjoint from
/// the CI batch).
#[test]
#[ignore]
fn long_frames() {
    run_frames(testkit::cases(100_000), 1 << 32).report("frames (long)");
}

/// See [`long_frames`].
#[test]
#[ignore]
fn long_frame_streams() {
    run_streams(testkit::cases(100_000), 2 << 32).report("frame streams (long)");
}
