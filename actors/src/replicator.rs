//! Replicator: on the leader, one per follower per group. It carries out
//! what the core decided for that follower: pipelined AppendEntries and
//! heartbeats go to the transport (batched with every other group's
//! traffic to that node), and an InstallSnapshot becomes a snapshot stream
//! on a QUIC stream of its own, so a large transfer never holds up Raft
//! traffic. The pipeline window and probing live in the core's `Progress`
//! (so the simulation covers them); this actor only executes, and tells
//! the core how each snapshot transfer went.

use std::sync::Arc;

use actix::prelude::*;
use slog::{info, warn, Logger};
use synod_core::{Message, MessageBody, NodeId};
use synod_storage::GroupId;

use crate::group::{RaftGroup, ReportSnapshot};
use crate::proto::{RaftItem, SnapshotHeader};
use crate::shared::NodeShared;

/// Messages the core addressed to this replicator's follower.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outbound(pub Vec<Message>);

/// The Replicator for one follower of one group.
pub struct Replicator {
    group: GroupId,
    to: NodeId,
    shared: Arc<NodeShared>,
    raft: Addr<RaftGroup>,
    /// A snapshot stream is in progress (the core sends no second one
    /// before it hears how this one went).
    streaming: bool,
    log: Logger,
}

impl Replicator {
    pub(crate) fn new(
        group: GroupId,
        to: NodeId,
        shared: Arc<NodeShared>,
        raft: Addr<RaftGroup>,
    ) -> Self {
        let log = shared
            .log
            .new(slog::o!("group" => group, "actor" => "replicator", "to" => to));
        Replicator {
            group,
            to,
            shared,
            raft,
            streaming: false,
            log,
        }
    }

    fn stream_snapshot(&mut self, msg: Message, ctx: &mut Context<Self>) {
        let MessageBody::Snapshot { snapshot, .. } = msg.body else {
            return;
        };
        let index = snapshot.index;
        if self.streaming {
            return;
        }
        let reader = match self.shared.snapshots.open_snapshot(self.group, index) {
            Ok(r) => r,
            Err(e) => {
                warn!(self.log, "no snapshot to send"; "index" => index, "error" => %e);
                self.raft.do_send(ReportSnapshot {
                    to: self.to,
                    index,
                    ok: false,
                });
                return;
            }
        };
        let header = SnapshotHeader {
            group: self.group,
            voters: reader.meta().voters.clone(),
            msg,
        };
        let header = match synod_net::frame::encode(&header, synod_net::frame::DEFAULT_MAX_FRAME) {
            Ok(h) => h,
            Err(e) => {
                warn!(self.log, "cannot encode a snapshot header"; "error" => %e);
                return;
            }
        };
        self.streaming = true;
        info!(self.log, "sending snapshot"; "index" => index, "bytes" => reader.data_len());
        let fut = self
            .shared
            .net
            .send_snapshot(self.to, header, Box::new(reader));
        ctx.spawn(fut.into_actor(self).map(move |result, act, _| {
            act.streaming = false;
            if let Err(e) = &result {
                warn!(act.log, "snapshot transfer failed"; "index" => index, "error" => e);
            }
            act.raft.do_send(ReportSnapshot {
                to: act.to,
                index,
                ok: result.is_ok(),
            });
        }));
    }
}

impl Actor for Replicator {
    type Context = Context<Self>;
}

impl Handler<Outbound> for Replicator {
    type Result = ();

    fn handle(&mut self, Outbound(msgs): Outbound, ctx: &mut Context<Self>) {
        for msg in msgs {
            if matches!(msg.body, MessageBody::Snapshot { .. }) {
                self.stream_snapshot(msg, ctx);
            } else {
                self.shared.net.send(
                    self.to,
                    RaftItem {
                        group: self.group,
                        msg,
                    },
                );
            }
        }
    }
}

/// Stops the replicator (its group's leadership ended).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopReplicator;

impl Handler<StopReplicator> for Replicator {
    type Result = ();

    fn handle(&mut self, _: StopReplicator, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
