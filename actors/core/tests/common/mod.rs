//! Helpers shared by the core's tests.
#![allow(dead_code)]

pub mod cluster;

use synod_core::{AppendResponse, Config, Message, MessageBody, Raft, Ready, Role};

/// A replica config without pre-vote (the paper's plain elections).
pub fn config(id: u64, n: u64) -> Config {
    let mut c = Config::new(id, 1..=n);
    c.pre_vote = false;
    c
}

/// A message.
pub fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Takes a Ready and reports its write durable and its entries applied.
pub fn persist(r: &mut Raft) -> Ready {
    let rd = r.ready();
    if let Some((index, term)) = rd.persist_up_to() {
        r.on_persisted(index, term);
    }
    if let Some(last) = rd.committed_entries.last() {
        r.on_applied(last.index);
    }
    rd
}

/// Like [`persist`], for steps whose Ready the test does not inspect.
pub fn flush(r: &mut Raft) {
    let _ = persist(r);
}

/// Ticks `r` until it takes `role`.
pub fn tick_until(r: &mut Raft, role: Role) {
    for _ in 0..100 {
        r.tick();
        if r.role() == role {
            return;
        }
    }
    panic!("never became {role:?}");
}

/// Node `from`'s acknowledgement to node 1 (epoch 0, not rejoining).
pub fn accepted(from: u64, term: u64, match_index: u64) -> Message {
    msg(
        from,
        1,
        term,
        MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index,
            epoch: 0,
            rejoining: false,
        }),
    )
}

/// Node 1 leads a three-node group in term 1 with `n` commands committed
/// and acknowledged by node 2 and node 3.
pub fn leader_with_commands(n: u64) -> Raft {
    let mut r = Raft::new(config(1, 3)).unwrap();
    tick_until(&mut r, Role::Candidate);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    flush(&mut r);
    for i in 0..n {
        r.propose(vec![vec![i as u8].into()]).unwrap();
    }
    flush(&mut r);
    r.step(accepted(2, 1, n + 1));
    r.step(accepted(3, 1, n + 1));
    flush(&mut r);
    assert_eq!(r.log().committed(), n + 1);
    r
}

/// The heartbeat round `r` just sent to `to`, if it sent one.
pub fn heartbeat_round(rd: &Ready, to: u64) -> Option<u64> {
    rd.messages.iter().find_map(|m| match m.body {
        MessageBody::Heartbeat { round, .. } if m.to == to => Some(round),
        _ => None,
    })
}
