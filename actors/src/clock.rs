//! The node clock: one timer per node drives every group, and node-level
//! liveness stands in for the heartbeats of quiesced groups.
//!
//! ```text
//!   NodeClock (one interval timer per node, every `GroupConfig::tick`)
//!     ├─ Tick ──────────► every RaftGroup in `Ticking` (the awake ones)
//!     ├─ beat ──────────► every peer node: one item per peer per tick,
//!     │                   beside the groups' own Raft traffic
//!     └─ a peer silent for an election timeout:
//!          Wake ────────► every group here whose leader is on that node
//!
//!   RaftGroup
//!     quiesces (core: Raft::quiesced) ──► leaves `Ticking`, notes the clock
//!     any input while quiesced ─────────► Raft::elapse(ticks missed, how
//!                                          long ago the leader's node was
//!                                          heard), then the input
//!     awake again ──────────────────────► back in `Ticking`
//! ```
//!
//! A quiesced group costs nothing per tick: it is not in `Ticking`, sends
//! no heartbeat and counts down no election timer. Every message from a
//! peer (a beat or Raft traffic of any group) counts as hearing that node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use synod_core::{Message, MessageBody, NodeId};
use synod_storage::GroupId;

use crate::group::{RaftGroup, Tick, Wake};
use crate::node::Routes;
use crate::proto::RaftItem;
use crate::shared::NodeShared;

/// The group id of node-level beats on the Raft channel: never a real
/// group (creating group 0 is refused).
pub const NODE_BEAT: GroupId = 0;

/// The node clock's count and what it heard from each peer. Shared with
/// the transport's thread, which records every peer it hears from.
#[derive(Default)]
pub struct Liveness {
    now: AtomicU64,
    heard: Mutex<HashMap<NodeId, u64>>,
    /// Each peer's boot nonce, from its beats.
    boots: Mutex<HashMap<NodeId, u64>>,
    /// Peers whose boot nonce changed since the clock last looked.
    restarted: Mutex<HashSet<NodeId>>,
}

impl Liveness {
    /// Ticks since the node started.
    pub fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    fn advance(&self) -> u64 {
        self.now.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Node `peer` was heard from just now.
    pub fn heard_from(&self, peer: NodeId) {
        let now = self.now();
        if let Ok(mut h) = self.heard.lock() {
            h.insert(peer, now);
        }
    }

    /// A beat from node `peer`, which booted with `nonce`.
    pub fn beat_from(&self, peer: NodeId, nonce: u64) {
        self.heard_from(peer);
        let changed = self
            .boots
            .lock()
            .is_ok_and(|mut b| b.insert(peer, nonce) != Some(nonce));
        if changed {
            if let Ok(mut r) = self.restarted.lock() {
                r.insert(peer);
            }
        }
    }

    fn take_restarted(&self) -> HashSet<NodeId> {
        self.restarted
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Ticks since node `peer` was last heard from (`None`: never).
    pub fn silent(&self, peer: NodeId) -> Option<u64> {
        let now = self.now();
        let heard = self.heard.lock().ok()?.get(&peer).copied()?;
        Some(now.saturating_sub(heard))
    }
}

/// The awake groups of a node: those the clock ticks.
#[derive(Default)]
pub struct Ticking {
    /// Ordered, so that a seeded simulation ticks groups in the same
    /// order every run.
    groups: Mutex<BTreeMap<GroupId, (u64, Addr<RaftGroup>)>>,
    next_id: AtomicU64,
}

impl Ticking {
    /// A fresh id for one RaftGroup incarnation (a restarted group must
    /// not be unregistered by its dying predecessor).
    pub(crate) fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn insert(&self, group: GroupId, id: u64, addr: Addr<RaftGroup>) {
        if let Ok(mut g) = self.groups.lock() {
            g.insert(group, (id, addr));
        }
    }

    pub(crate) fn remove(&self, group: GroupId, id: u64) {
        if let Ok(mut g) = self.groups.lock() {
            if g.get(&group).is_some_and(|(i, _)| *i == id) {
                g.remove(&group);
            }
        }
    }

    /// How many groups are awake.
    pub fn len(&self) -> usize {
        self.groups.lock().map_or(0, |g| g.len())
    }

    /// Whether no group is awake.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn tick_all(&self, down: &Arc<[NodeId]>) {
        if let Ok(g) = self.groups.lock() {
            for (_, addr) in g.values() {
                addr.do_send(Tick {
                    down: Arc::clone(down),
                });
            }
        }
    }
}

/// The node's one timer (see the module docs).
pub(crate) struct NodeClock {
    shared: Arc<NodeShared>,
    routes: Arc<Routes>,
    /// Peers found silent for an election timeout (their groups' quiesced
    /// followers here were woken), until heard again.
    dead: HashSet<NodeId>,
}

impl NodeClock {
    pub(crate) fn new(shared: Arc<NodeShared>, routes: Arc<Routes>) -> Self {
        NodeClock {
            shared,
            routes,
            dead: HashSet::new(),
        }
    }

    fn tick(&mut self) {
        let now = self.shared.liveness.advance();
        let me = self.shared.node_id;
        // A node whose log failed hosts no working group (each halts and
        // answers nothing): it stops beating too, so its peers find it
        // down and their leaders quiesce without it rather than
        // heartbeating its silent replicas forever.
        let alive = self.shared.log_writer.failure().is_none();
        for &peer in &self.shared.voters {
            if peer != me && alive {
                self.shared.net.send(
                    peer,
                    RaftItem {
                        group: NODE_BEAT,
                        msg: Message {
                            from: me,
                            to: peer,
                            term: 0,
                            // The boot nonce rides in `commit`.
                            body: MessageBody::Heartbeat {
                                commit: self.shared.seed,
                                round: 0,
                            },
                        },
                    },
                );
            }
        }
        let timeout = u64::from(self.shared.cfg.election_ticks);
        // A peer that restarted, or is heard again after a silence, may
        // have lost what it held (a wiped disk) or missed a Quiesce: the
        // groups led here wake and heartbeat it once (and quiesce again).
        let mut back = self.shared.liveness.take_restarted();
        for &peer in &self.shared.voters {
            if peer == me {
                continue;
            }
            let silent = self.shared.liveness.silent(peer).unwrap_or(now);
            if silent < timeout {
                if self.dead.remove(&peer) {
                    back.insert(peer);
                }
            } else if self.dead.insert(peer) {
                let woken = self.routes.wake_led_by(peer, silent);
                if woken > 0 {
                    slog::info!(self.shared.log, "a peer node is silent: waking the groups it led here";
                                "peer" => peer, "silent_ticks" => silent, "groups" => woken);
                }
            }
        }
        // Each group learns which member nodes are down with its tick: a
        // leader quiesces without waiting for those (and only those).
        let mut down: Vec<NodeId> = self.dead.iter().copied().collect();
        down.sort_unstable();
        self.shared.ticking.tick_all(&down.into());
        if !back.is_empty() {
            let woken = self.routes.wake_led_by(me, 0);
            slog::debug!(self.shared.log, "peer nodes (re)appeared: waking the groups led here";
                         "peers" => ?back, "groups" => woken);
        }
    }
}

impl Actor for NodeClock {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.shared.cfg.tick, |clock, _| clock.tick());
    }
}

impl Routes {
    /// Wakes every group running here whose leader is `peer` (silent for
    /// `silent` ticks); returns how many.
    pub(crate) fn wake_led_by(&self, peer: NodeId, silent: u64) -> usize {
        let routes = self.led_by(peer);
        for r in &routes {
            r.do_send(Wake { peer, silent });
        }
        routes.len()
    }
}
