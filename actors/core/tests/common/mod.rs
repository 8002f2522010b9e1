//! Helpers shared by the core's tests.
#![allow(dead_code)]

use synod_core::{Config, Message, MessageBody, Raft, Ready};

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
