//! Replicas joined by an instant network, for scenario tests.

use std::collections::BTreeSet;

use synod_core::{ConfChange, Config, Message, Raft, Role};

use super::persist;

/// Replicas joined by an instant network; links in `cut` drop messages.
/// Nodes `1..=voters` start as the group; the others start outside it.
pub struct Cluster {
    /// The replicas, node `id` at `id - 1`.
    pub nodes: Vec<Raft>,
    /// Links (from, to) that drop every message.
    pub cut: BTreeSet<(u64, u64)>,
}

impl Cluster {
    /// `total` replicas of which `1..=voters` form the group.
    pub fn new(voters: u64, total: u64) -> Cluster {
        Cluster::with(voters, total, |_| {})
    }

    /// Like [`Cluster::new`], each replica's config adjusted by `tweak`.
    pub fn with(voters: u64, total: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let nodes = (1..=total)
            .map(|id| {
                let mut c = Config::new(id, 1..=voters);
                tweak(&mut c);
                Raft::new(c).unwrap()
            })
            .collect();
        Cluster {
            nodes,
            cut: BTreeSet::new(),
        }
    }

    /// Node `id`.
    pub fn node(&mut self, id: u64) -> &mut Raft {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Cuts (both ways) every link of node `id`.
    pub fn isolate(&mut self, id: u64) {
        for other in 1..=self.nodes.len() as u64 {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    /// Restores every link of node `id`.
    pub fn reconnect(&mut self, id: u64) {
        self.cut.retain(|&(a, b)| a != id && b != id);
    }

    /// Carries out every Ready (persisting at once) and delivers every
    /// message until nothing is left to do.
    pub fn settle(&mut self) {
        self.settle_logged();
    }

    /// [`Cluster::settle`], returning every message it delivered.
    #[allow(dead_code)]
    pub fn settle_logged(&mut self) -> Vec<Message> {
        let mut log = Vec::new();
        for _ in 0..1000 {
            let mut outbox: Vec<Message> = Vec::new();
            for r in &mut self.nodes {
                while r.has_ready() {
                    let rd = persist(r);
                    outbox.extend(rd.messages);
                    outbox.extend(rd.persisted_messages);
                }
            }
            if outbox.is_empty() {
                return log;
            }
            for m in outbox {
                if !self.cut.contains(&(m.from, m.to)) {
                    let to = m.to;
                    log.push(m.clone());
                    self.node(to).step(m);
                }
            }
        }
        panic!("the cluster never settled");
    }

    /// Ticks node `id` until it leads (the others' timers stand still).
    pub fn elect(&mut self, id: u64) {
        for _ in 0..100 {
            self.node(id).tick();
            self.settle();
            if self.node(id).role() == Role::Leader {
                return;
            }
        }
        panic!("node {id} was never elected");
    }

    /// Proposes `v` at `leader` and settles; the entry's index.
    pub fn propose(&mut self, leader: u64, v: &'static str) -> u64 {
        let p = self.node(leader).propose(vec![v.into()]).unwrap();
        self.settle();
        p.last_index
    }

    /// Proposes `change` at `leader` and settles; the entry's index.
    pub fn change(&mut self, leader: u64, change: ConfChange) -> u64 {
        let p = self.node(leader).propose_conf_change(change).unwrap();
        self.settle();
        p.last_index
    }

    /// The nodes that believe they lead.
    pub fn leaders(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|r| r.role() == Role::Leader)
            .map(|r| r.id())
            .collect()
    }
}
