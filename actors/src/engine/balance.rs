//! The leader balancer: leaderships spread over the nodes.
//!
//! Elections put leaders wherever a timer fired first, and a node that
//! restarts comes back leading nothing (the others took its groups over).
//! Every node runs a balancer: every few seconds (jittered per node, so
//! the nodes do not act in lockstep) it counts the groups it leads (from
//! the leader hints, no message); if that is more than an even split of
//! the groups it hosts, it reads the status of every group it hosts,
//! counts who leads each one, and computes each node's *share*: the
//! sum, over the groups where the node is a voter, of `1 / voters`. A node
//! that leads clearly more than its share (more than `ceil(share) + slack`,
//! or more than `ceil(share)` while some node leads clearly less than its
//! share) hands some of its own leaderships over ([`Engine::transfer_leader`],
//! Raft thesis §3.10) to voters that lead fewer than their share, the most
//! under-loaded first.
//!
//! Only an over-loaded node acts, and only on groups it leads: the leader
//! is where a transfer starts anyway, and every node judging only itself
//! needs no coordination. A transfer goes only to a voter that is
//! connected and caught up, and only while it leaves the receiver at or
//! below `ceil(share)`, so the receiver never becomes over-loaded by it and
//! never hands it back (no ping-pong); the sender never goes below its own
//! `ceil(share)`. A round moves at most half the excess (at least one) and
//! at most [`MAX_MOVES_PER_ROUND`], with at most [`MAX_CONCURRENT`]
//! transfers at a time, so views that are a little stale (another node
//! moving leaderships to the same receiver meanwhile) cannot overshoot
//! much. A group whose leader is handing over already, or whose
//! membership is changing (a learner, an uncommitted configuration), is
//! left alone.
//!
//! `GroupConfig::balance_leaders = false` (`[raft] balance_leaders =
//! false`) turns it off: rounds are still counted, nothing is moved.
//!
//! The decision is [`plan`], a pure function of what the node sees; the
//! task around it (`run`, spawned by `Engine::start`) gathers the view
//! and carries the moves out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use slog::info;
use synod_core::rng::SplitMix64;
use synod_core::NodeId;
use synod_storage::GroupId;

use super::{Engine, Inner};
use crate::group::GetMembership;
use crate::proto::GroupStatus;

/// Most leaderships one round hands over.
pub const MAX_MOVES_PER_ROUND: usize = 256;

/// Most transfers under way at once.
pub const MAX_CONCURRENT: usize = 32;

/// A voter lagging the leader's log by more than this many entries is not
/// offered a leadership (the transfer would first have to catch it up,
/// refusing proposals meanwhile).
pub const MAX_LAG: u64 = 100;

/// What the balancer knows about one group, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// The group.
    pub group: GroupId,
    /// Who leads it, if known.
    pub leader: Option<NodeId>,
    /// Its voters.
    pub voters: Vec<NodeId>,
    /// Only for a group this node leads: the voters its leadership may go
    /// to now (connected, caught up). Empty when none may, or when the
    /// group must not be moved (a transfer or a membership change is under
    /// way).
    pub movable_to: Vec<NodeId>,
}

/// How eager the balancer is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Off: never move anything.
    pub enabled: bool,
    /// Tolerated distance from a node's share, as a fraction of the share
    /// (at least one leadership).
    pub slack_fraction: f64,
    /// Most moves in one round.
    pub max_moves: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            slack_fraction: 0.05,
            max_moves: MAX_MOVES_PER_ROUND,
        }
    }
}

/// One leadership to hand over: `group`, from this node to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Move {
    /// The group.
    pub group: GroupId,
    /// The voter that should lead it.
    pub to: NodeId,
}

/// Rounding of shares, robust to the float error of summing fractions
/// (24 groups of 3 voters must give a share of exactly 8).
const EPS: f64 = 1e-6;

fn ceil(x: f64) -> usize {
    (x - EPS).ceil().max(0.0) as usize
}

fn floor(x: f64) -> usize {
    (x + EPS).floor().max(0.0) as usize
}

/// Each node's share of the leaderships: over the groups where it votes,
/// the sum of `1 / voters`.
pub fn shares(groups: &[GroupView]) -> BTreeMap<NodeId, f64> {
    let mut share = BTreeMap::new();
    for g in groups {
        let voters: BTreeSet<NodeId> = g.voters.iter().copied().collect();
        if voters.is_empty() {
            continue;
        }
        let part = 1.0 / voters.len() as f64;
        for v in voters {
            *share.entry(v).or_insert(0.0) += part;
        }
    }
    share
}

/// What node `me` should hand over now, given what it sees of every group
/// it hosts. Pure: the same view gives the same moves (ties go to the
/// lower node id, then the lower group id).
pub fn plan(me: NodeId, groups: &[GroupView], policy: &Policy) -> Vec<Move> {
    if !policy.enabled || policy.max_moves == 0 {
        return Vec::new();
    }
    let share = shares(groups);
    let mut leads: BTreeMap<NodeId, usize> = share.keys().map(|&n| (n, 0)).collect();
    for g in groups {
        if let Some(l) = g.leader {
            *leads.entry(l).or_insert(0) += 1;
        }
    }
    let slack = |s: f64| ((s * policy.slack_fraction).round() as usize).max(1);
    let my_share = share.get(&me).copied().unwrap_or(0.0);
    let my_ceil = ceil(my_share);
    let mine = leads.get(&me).copied().unwrap_or(0);
    if mine <= my_ceil {
        return Vec::new();
    }
    let over = mine > my_ceil + slack(my_share);
    let someone_under = share.iter().any(|(&n, &s)| {
        let l = leads.get(&n).copied().unwrap_or(0);
        n != me && l + slack(s) < floor(s)
    });
    if !over && !someone_under {
        return Vec::new();
    }
    let excess = mine - my_ceil;
    let budget = excess.div_ceil(2).max(1).min(policy.max_moves);
    // For each possible receiver, the groups (ascending) that may go there.
    let mut offers: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
    for g in groups {
        if g.leader != Some(me) {
            continue;
        }
        for &to in g.movable_to.iter().collect::<BTreeSet<_>>() {
            if to != me && g.voters.contains(&to) {
                offers.entry(to).or_default().push(g.group);
            }
        }
    }
    for list in offers.values_mut() {
        list.sort_unstable();
        list.dedup();
        list.reverse(); // popped from the end: lowest group first
    }
    let mut moved: BTreeSet<GroupId> = BTreeSet::new();
    let mut moves = Vec::new();
    while moves.len() < budget {
        // The receiver furthest below its share that has room and a group
        // of ours to take.
        let mut best: Option<(f64, NodeId)> = None;
        for (&to, list) in offers.iter_mut() {
            while list.last().is_some_and(|g| moved.contains(g)) {
                list.pop();
            }
            if list.is_empty() {
                continue;
            }
            let s = share.get(&to).copied().unwrap_or(0.0);
            let l = leads.get(&to).copied().unwrap_or(0);
            if l + 1 > ceil(s) {
                continue;
            }
            let key = l as f64 - s;
            if best.is_none_or(|(k, _)| key < k - EPS) {
                best = Some((key, to));
            }
        }
        let Some((_, to)) = best else { break };
        let Some(group) = offers.get_mut(&to).and_then(Vec::pop) else {
            break;
        };
        moved.insert(group);
        *leads.entry(to).or_insert(0) += 1;
        moves.push(Move { group, to });
    }
    moves
}

/// This node's view of `statuses` for [`plan`]. A group this node leads
/// may go to a voter that the transport is connected to (`connected`)
/// and that holds the leader's log within [`MAX_LAG`] entries.
pub fn views(
    me: NodeId,
    statuses: &[GroupStatus],
    connected: impl Fn(NodeId) -> bool,
) -> Vec<GroupView> {
    statuses
        .iter()
        .filter(|s| s.poison.is_none() && !s.voters.is_empty())
        .map(|s| {
            let leading = s.leader == Some(me) && s.role == "Leader";
            let busy = s.transfer_to.is_some() || !s.learners.is_empty();
            let movable_to = if leading && !busy {
                s.progress
                    .iter()
                    .filter(|p| {
                        s.voters.contains(&p.node)
                            && p.matched.saturating_add(MAX_LAG) >= s.last_index
                            && connected(p.node)
                    })
                    .map(|p| p.node)
                    .collect()
            } else {
                Vec::new()
            };
            GroupView {
                group: s.group,
                leader: s.leader,
                voters: s.voters.clone(),
                movable_to,
            }
        })
        .collect()
}

/// The balancer of one node: runs until the engine is dropped.
pub(super) async fn run(engine: Weak<Inner>, interval: Duration, seed: u64, enabled: bool) {
    let mut rng = SplitMix64::new(seed);
    let policy = Policy {
        enabled,
        ..Policy::default()
    };
    loop {
        // ±25% per round, so the nodes drift apart.
        let base = interval.as_millis().max(4) as u64;
        let pause = rng.range(base - base / 4, base + base / 4 + 1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let engine = Engine { inner };
        engine.balance_round(&policy).await;
    }
}

impl Engine {
    /// One round of the balancer: look, decide, move.
    async fn balance_round(&self, policy: &Policy) {
        let shared = &self.inner.shared;
        shared
            .counters
            .balance_rounds
            .fetch_add(1, Ordering::Relaxed);
        if !policy.enabled || self.failure().is_some() {
            return;
        }
        let me = self.node_id();
        // A cheap look first: a node that leads no more than an even split
        // of the groups it hosts, rounded up, is not above `ceil(share)`
        // (every group has at most as many voters as the cluster has
        // nodes, so the share is at least that split), and only a node
        // above `ceil(share)` acts. The full status of thousands of groups
        // is read only when it may. (Not rounded up, a node leading 3,334
        // of 10,000 read them all every round, idle, for nothing.)
        let (hosted, led) = self.inner.routes.led_count(me);
        if led <= hosted.div_ceil(shared.voters.len().max(1)) {
            return;
        }
        let statuses = self.status().await;
        let view = views(me, &statuses, |n| self.is_connected(n));
        let moves = plan(me, &view, policy);
        if moves.is_empty() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = moves.into_iter();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        loop {
            while tasks.len() < MAX_CONCURRENT {
                let Some(m) = pending.next() else { break };
                let engine = self.clone();
                tasks.spawn_local(async move {
                    let r = engine.balance_move(m).await;
                    (m, r)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined {
                Ok((m, Ok(true))) => done.push(m),
                Ok((_, Ok(false))) => {}
                Ok((m, Err(e))) => failed.push((m, e)),
                Err(_) => {}
            }
        }
        shared
            .counters
            .balance_transfers
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        if !done.is_empty() {
            let moved: Vec<String> = done
                .iter()
                .map(|m| format!("{}->{}", m.group, m.to))
                .collect();
            info!(shared.log, "leader balance: handed leaderships over";
                  "count" => moved.len(), "group->node" => moved.join(" "));
        }
        if !failed.is_empty() {
            let failed: Vec<String> = failed
                .iter()
                .map(|(m, e)| format!("{}->{}: {e}", m.group, m.to))
                .collect();
            info!(shared.log, "leader balance: transfers that did not happen";
                  "count" => failed.len(), "why" => failed.join("; "));
        }
    }

    /// Hands `m.group` to `m.to` unless its membership is changing;
    /// `Ok(false)`: left alone.
    async fn balance_move(&self, m: Move) -> Result<bool, crate::proto::RequestError> {
        let route = self.route(m.group)?;
        match route.raft.send(GetMembership).await {
            Ok(info) if info.committed && info.learners.is_empty() => {}
            _ => return Ok(false),
        }
        self.transfer_leader(m.group, m.to).await.map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(group: GroupId, leader: NodeId, voters: &[NodeId], movable_to: &[NodeId]) -> GroupView {
        GroupView {
            group,
            leader: Some(leader),
            voters: voters.to_vec(),
            movable_to: movable_to.to_vec(),
        }
    }

    /// `n` groups on nodes 1-3 led as `led` says (group ids from 1), each
    /// movable to every other voter when this node leads it.
    fn cluster(me: NodeId, led: &[(NodeId, usize)]) -> Vec<GroupView> {
        let mut out = Vec::new();
        for &(leader, count) in led {
            for _ in 0..count {
                let id = out.len() as GroupId + 1;
                let others: Vec<NodeId> = [1, 2, 3]
                    .into_iter()
                    .filter(|&n| n != leader && leader == me)
                    .collect();
                out.push(g(id, leader, &[1, 2, 3], &others));
            }
        }
        out
    }

    fn to_counts(moves: &[Move]) -> BTreeMap<NodeId, usize> {
        let mut c = BTreeMap::new();
        for m in moves {
            *c.entry(m.to).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn shares_sum_one_over_voters() {
        let groups = vec![
            g(1, 1, &[1, 2, 3], &[]),
            g(2, 1, &[1, 2], &[]),
            g(3, 3, &[3], &[]),
        ];
        let s = shares(&groups);
        assert!((s[&1] - (1.0 / 3.0 + 0.5)).abs() < 1e-9);
        assert!((s[&2] - (1.0 / 3.0 + 0.5)).abs() < 1e-9);
        assert!((s[&3] - (1.0 / 3.0 + 1.0)).abs() < 1e-9);
        // 24 groups of three: exactly 8 each once rounded.
        let s = shares(&cluster(1, &[(1, 24)]));
        assert_eq!((ceil(s[&1]), floor(s[&1])), (8, 8));
    }

    #[test]
    fn a_balanced_cluster_moves_nothing() {
        for me in 1..=3 {
            let view = cluster(me, &[(1, 8), (2, 8), (3, 8)]);
            assert!(plan(me, &view, &Policy::default()).is_empty());
        }
        // Within the slack: one more than the share, one less elsewhere.
        for me in 1..=3 {
            let view = cluster(me, &[(1, 9), (2, 8), (3, 7)]);
            assert!(plan(me, &view, &Policy::default()).is_empty(), "{me}");
        }
    }

    #[test]
    fn an_overloaded_node_hands_half_its_excess_to_the_least_loaded() {
        // Node 3 rejoined: 1 and 2 lead 12 each.
        let view = cluster(1, &[(1, 12), (2, 12)]);
        let moves = plan(1, &view, &Policy::default());
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert_eq!(to_counts(&moves), BTreeMap::from([(3, 2)]));
        // Only groups node 1 leads, lowest first.
        assert_eq!(moves[0].group, 1);
        assert_eq!(moves[1].group, 2);
        // Nodes that do not lead too many do nothing.
        assert!(plan(3, &cluster(3, &[(1, 12), (2, 12)]), &Policy::default()).is_empty());
    }

    #[test]
    fn rounds_converge_to_the_share_and_stop() {
        // Play rounds with a consistent view, nodes 1 and 2 acting in turn.
        let mut leaders: Vec<NodeId> = [vec![1; 12], vec![2; 12]].concat();
        let mut rounds = 0;
        loop {
            let mut moved = false;
            for me in 1..=3 {
                let view: Vec<GroupView> = leaders
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| {
                        let others: Vec<NodeId> =
                            [1, 2, 3].into_iter().filter(|&n| n != l).collect();
                        g(i as GroupId + 1, l, &[1, 2, 3], &others)
                    })
                    .collect();
                for m in plan(me, &view, &Policy::default()) {
                    let i = m.group as usize - 1;
                    assert_eq!(leaders[i], me, "only its own groups");
                    leaders[i] = m.to;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
            rounds += 1;
            assert!(rounds < 10, "no convergence: {leaders:?}");
        }
        // Each within the slack (one) of its share of 8.
        for n in 1..=3 {
            let led = leaders.iter().filter(|&&l| l == n).count();
            assert!((7..=9).contains(&led), "{leaders:?}");
        }
        assert!(rounds <= 4, "{rounds}");
    }

    #[test]
    fn a_node_slightly_over_acts_when_another_is_clearly_under() {
        // 9, 9, 6 around a share of 8: node 3 is more than the slack under.
        let moves = plan(
            1,
            &cluster(1, &[(1, 9), (2, 9), (3, 6)]),
            &Policy::default(),
        );
        assert_eq!(moves, vec![Move { group: 1, to: 3 }]);
    }

    #[test]
    fn the_receiver_is_the_one_furthest_below_its_share_then_the_lowest_id() {
        // Four nodes, 24 groups on all four: share 6 each. Node 1 leads
        // 14, node 2 leads 6, nodes 3 and 4 lead 2 each: a tie, node 3 first,
        // then they alternate.
        let mut view = Vec::new();
        for (leader, count) in [(1, 14), (2, 6), (3, 2), (4, 2)] {
            for _ in 0..count {
                let id = view.len() as GroupId + 1;
                let others: Vec<NodeId> = if leader == 1 { vec![2, 3, 4] } else { vec![] };
                view.push(g(id, leader, &[1, 2, 3, 4], &others));
            }
        }
        let moves = plan(1, &view, &Policy::default());
        assert_eq!(moves.len(), 4);
        let order: Vec<NodeId> = moves.iter().map(|m| m.to).collect();
        assert_eq!(order, vec![3, 4, 3, 4]);
        // Node 2 is at its share: it gets nothing.
    }

    #[test]
    fn groups_on_subsets_of_the_nodes_count_only_where_they_vote() {
        // Node 1 and 2 share 10 groups, 2 and 3 share 10 groups, and 1
        // leads all of its 10: share of 1 is 5, of 2 is 10, of 3 is 5.
        let mut view = Vec::new();
        for i in 1..=10 {
            view.push(g(i, 1, &[1, 2], &[2]));
        }
        for i in 11..=20 {
            view.push(g(i, 3, &[2, 3], &[]));
        }
        // Node 2 leads nothing, under its share of 10: node 1 (10 > 5+1)
        // hands it half its excess.
        let moves = plan(1, &view, &Policy::default());
        assert_eq!(to_counts(&moves), BTreeMap::from([(2, 3)]));
        // Node 3 leads 10 > its share of 5: it gives to node 2 likewise.
        let moves = plan(3, &view, &Policy::default());
        assert!(moves.is_empty(), "not movable in this view: {moves:?}");
        for v in view.iter_mut().skip(10) {
            v.movable_to = vec![2];
        }
        assert_eq!(plan(3, &view, &Policy::default()).len(), 3);
        // A node that votes in no group of node 1 never receives from it.
        let mut view = vec![g(1, 1, &[1, 2], &[2]), g(2, 1, &[1, 2], &[2])];
        view.push(g(3, 3, &[3], &[]));
        view.push(g(4, 3, &[3], &[]));
        // Node 1 leads 2, share 1: within the slack of one.
        assert!(plan(1, &view, &Policy::default()).is_empty());
    }

    #[test]
    fn never_fills_a_receiver_past_its_share() {
        // Node 1 leads 12, node 2 leads 4 of share 8, node 3 leads 8 (full).
        let view = cluster(1, &[(1, 12), (2, 4), (3, 8)]);
        let moves = plan(1, &view, &Policy::default());
        assert_eq!(to_counts(&moves), BTreeMap::from([(2, 2)]));
        // Only full receivers (4 of the 24 groups have no leader now):
        // nothing to do.
        let mut view = cluster(1, &[(1, 12), (2, 8), (3, 8)]);
        view.truncate(24);
        for v in view.iter_mut().take(4) {
            v.leader = None;
            v.movable_to.clear();
        }
        assert!(plan(1, &view, &Policy::default()).is_empty());
    }

    #[test]
    fn groups_that_may_not_move_stay() {
        // Node 1 leads 12 but only groups 11 and 12 may move (the others
        // transfer already, change membership, or have no caught-up voter).
        let mut view = cluster(1, &[(1, 12), (2, 12)]);
        for v in view.iter_mut().take(10) {
            v.movable_to.clear();
        }
        let moves = plan(1, &view, &Policy::default());
        assert_eq!(
            moves,
            vec![Move { group: 11, to: 3 }, Move { group: 12, to: 3 }]
        );
        // Only to the voters named movable.
        let mut view = cluster(1, &[(1, 12), (2, 12)]);
        for v in view.iter_mut() {
            v.movable_to.retain(|&n| n == 2);
        }
        assert!(plan(1, &view, &Policy::default()).is_empty());
    }

    #[test]
    fn the_moves_per_round_are_bounded() {
        let view = cluster(1, &[(1, 300)]);
        let policy = Policy::default();
        // Share 100, excess 200: half of it.
        assert_eq!(plan(1, &view, &policy).len(), 100);
        let policy = Policy {
            max_moves: 7,
            ..policy
        };
        assert_eq!(plan(1, &view, &policy).len(), 7);
        // An excess of one still moves one.
        let view = cluster(1, &[(1, 10), (2, 8), (3, 6)]);
        assert_eq!(plan(1, &view, &Policy::default()).len(), 1);
    }

    #[test]
    fn turned_off_it_moves_nothing() {
        let policy = Policy {
            enabled: false,
            ..Policy::default()
        };
        for view in [
            cluster(1, &[(1, 12), (2, 12)]),
            cluster(1, &[(1, 24)]),
            cluster(1, &[(1, 300)]),
        ] {
            assert!(plan(1, &view, &policy).is_empty());
        }
    }

    #[test]
    fn groups_without_a_leader_count_for_the_share_only() {
        let mut view = cluster(1, &[(1, 12), (2, 6)]);
        for i in 0..6 {
            view.push(GroupView {
                group: 100 + i,
                leader: None,
                voters: vec![1, 2, 3],
                movable_to: Vec::new(),
            });
        }
        // Share 8: node 1 hands 2 of its 12 to node 3 (leading none).
        assert_eq!(
            to_counts(&plan(1, &view, &Policy::default())),
            BTreeMap::from([(3, 2)])
        );
    }

    #[test]
    fn the_view_offers_only_connected_caught_up_voters_of_groups_led_here() {
        let status = |group, leader, role: &str| GroupStatus {
            group,
            role: role.into(),
            term: 2,
            leader: Some(leader),
            last_index: 1_000,
            commit: 1_000,
            applied: 1_000,
            restarts: 0,
            rejoining: false,
            followers_lost_state: 0,
            poison: None,
            transfer_to: None,
            voters: vec![1, 2, 3, 4],
            learners: Vec::new(),
            progress: vec![
                crate::proto::MemberProgress {
                    node: 2,
                    matched: 1_000,
                },
                crate::proto::MemberProgress {
                    node: 3,
                    matched: 1_000 - MAX_LAG - 1,
                },
                crate::proto::MemberProgress {
                    node: 4,
                    matched: 999,
                },
            ],
        };
        let connected = |n: NodeId| n != 4;
        let v = views(1, &[status(1, 1, "Leader")], connected);
        assert_eq!(v[0].movable_to, vec![2]);
        let v = views(1, &[status(1, 2, "Follower")], connected);
        assert!(v[0].movable_to.is_empty());
        let mut s = status(1, 1, "Leader");
        s.transfer_to = Some(2);
        assert!(views(1, &[s], connected)[0].movable_to.is_empty());
        let mut s = status(1, 1, "Leader");
        s.learners = vec![5];
        assert!(views(1, &[s], connected)[0].movable_to.is_empty());
        let v = views(1, &[status(1, 1, "Leader")], |_| true);
        assert_eq!(v[0].movable_to, vec![2, 4]);
    }
}
