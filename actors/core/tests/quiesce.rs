//! Quiescence (`Config::quiesce`): an idle group whose members all hold
//! the leader's whole log stops heartbeating and stops its election
//! timers; a proposal, a read or a message wakes it; a follower whose
//! leader's node went silent is woken by the runtime and elects a new
//! leader.

mod common;

use common::cluster::Cluster;
use common::persist;
use synod_core::{MessageBody, Role};

/// Three voters with quiescence on, node 1 leading, `n` entries committed
/// everywhere, and the whole group quiesced.
fn quiesced_group(n: usize) -> Cluster {
    let mut c = Cluster::with(3, 3, |c| c.quiesce = true);
    c.elect(1);
    for _ in 0..n {
        c.propose(1, "x");
    }
    // The leader quiesces on its next tick (everyone holds its log).
    c.node(1).tick();
    c.settle();
    for id in 1..=3 {
        assert!(c.node(id).quiesced(), "node {id} did not quiesce");
    }
    c
}

/// Ticks every replica `n` times, settling after each round.
fn tick_all(c: &mut Cluster, n: usize) -> usize {
    let mut sent = 0;
    for _ in 0..n {
        for id in 1..=c.nodes.len() as u64 {
            c.node(id).tick();
            let mut outbox = Vec::new();
            while c.node(id).has_ready() {
                let rd = persist(c.node(id));
                outbox.extend(rd.messages);
                outbox.extend(rd.persisted_messages);
            }
            sent += outbox.len();
            for m in outbox {
                if !c.cut.contains(&(m.from, m.to)) {
                    let to = m.to;
                    c.node(to).step(m);
                }
            }
        }
        c.settle();
    }
    sent
}

#[test]
fn an_idle_group_quiesces_and_then_costs_no_message_and_no_election() {
    let mut c = quiesced_group(2);
    let commit = c.node(1).log().committed();
    for id in 2..=3 {
        assert_eq!(
            c.node(id).log().committed(),
            commit,
            "the quiesce carries the commit"
        );
    }
    // Ten election timeouts of silence: nothing is sent, nobody campaigns.
    assert_eq!(tick_all(&mut c, 200), 0);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).term(), 1);
    for id in 1..=3 {
        assert!(c.node(id).quiesced());
    }
}

#[test]
fn a_busy_group_does_not_quiesce() {
    let mut c = Cluster::with(3, 3, |c| c.quiesce = true);
    c.elect(1);
    // A follower that does not hold the whole log keeps the group awake.
    c.isolate(3);
    c.propose(1, "x");
    c.node(1).tick();
    c.settle();
    assert!(!c.node(1).quiesced());
    // Off by default.
    let mut off = Cluster::new(3, 3);
    off.elect(1);
    off.propose(1, "x");
    tick_all(&mut off, 5);
    assert!(!off.node(1).quiesced());
}

#[test]
fn a_quiesced_group_wakes_on_a_proposal_and_quiesces_again() {
    let mut c = quiesced_group(1);
    tick_all(&mut c, 50);
    let p = c.node(1).propose(vec!["after a nap".into()]).unwrap();
    assert!(
        !c.node(1).quiesced(),
        "the proposal did not wake the leader"
    );
    let sent = c.settle_logged();
    for id in 1..=3 {
        assert_eq!(c.node(id).log().committed(), p.last_index, "node {id}");
        assert!(c.node(id).quiesced(), "node {id} did not quiesce again");
    }
    // One append round, and the Quiesce carries the commit at once: no
    // empty append for the commit, no answer to it, no tick awake.
    let kinds: Vec<&str> = sent
        .iter()
        .map(|m| match m.body {
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "answer",
            MessageBody::Quiesce { .. } => "quiesce",
            _ => "other",
        })
        .collect();
    let count = |k: &str| kinds.iter().filter(|&&x| x == k).count();
    assert_eq!(
        (
            count("append"),
            count("answer"),
            count("quiesce"),
            kinds.len()
        ),
        (2, 2, 2, 6),
        "{kinds:?}"
    );
    // With lease reads the group stays awake until its next tick instead
    // (quiescing drops the lease).
    let mut l = Cluster::with(3, 3, |c| {
        c.quiesce = true;
        c.lease_reads = true;
    });
    while l.leaders().is_empty() {
        tick_all(&mut l, 1);
    }
    let leader = l.leaders()[0];
    l.propose(leader, "x");
    assert!(!l.node(leader).quiesced());
    l.node(leader).tick();
    l.settle();
    assert!(l.node(leader).quiesced());
}

#[test]
fn a_read_wakes_the_leader_and_a_lease_is_not_carried_through_quiescence() {
    let mut c = Cluster::with(3, 3, |c| {
        c.quiesce = true;
        c.lease_reads = true;
    });
    // With lease reads, replicas grant no vote for an election timeout
    // after they start: let all three run until one leads.
    while c.leaders().is_empty() {
        tick_all(&mut c, 1);
    }
    let l = c.leaders()[0];
    c.propose(l, "x");
    // A lease read works before the nap (once a round confirmed it)...
    c.node(l).read_index(5).unwrap();
    c.settle();
    c.node(l).read_lease(6).unwrap();
    let rd = persist(c.node(l));
    assert_eq!(rd.read_states.len(), 1, "no lease before the nap");
    c.node(l).tick();
    c.settle();
    assert!(c.node(l).quiesced());
    c.node(l).read_lease(7).unwrap();
    assert!(!c.node(l).quiesced());
    let rd = persist(c.node(l));
    assert!(
        rd.read_states.is_empty(),
        "a lease from before the nap must not answer"
    );
    assert!(rd
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })));
}

#[test]
fn a_quiesced_follower_of_a_dead_leader_is_woken_and_elects_a_new_leader() {
    let mut c = quiesced_group(1);
    // The leader's node dies.
    c.isolate(1);
    // Quiesced followers do not notice by themselves...
    assert_eq!(tick_all(&mut c, 100), 0);
    assert_eq!(c.node(2).role(), Role::Follower);
    // ...the runtime's node-level liveness does, an election timeout
    // after the node's last beat, and wakes them.
    let silent = 10;
    c.node(2).wake(Some(silent));
    c.node(3).wake(Some(silent));
    let mut ticks = 0;
    while !matches!(c.leaders().as_slice(), [1, _]) {
        ticks += 1;
        assert!(ticks < 40, "no new leader within two election timeouts");
        for id in 2..=3 {
            c.node(id).tick();
        }
        c.settle();
    }
    let new = c.leaders()[1];
    assert!(c.node(new).term() > 1);
    // It writes.
    let index = c.propose(new, "y");
    let other = 5 - new;
    assert_eq!(c.node(other).log().committed(), index);
}

#[test]
fn a_quiesced_follower_refuses_a_candidate_while_the_leaders_node_is_alive() {
    let mut c = quiesced_group(1);
    // Much later, node 3 wakes without its leader's liveness (as one whose
    // replica restarted would be) and campaigns.
    for id in 1..=3 {
        for _ in 0..100 {
            c.node(id).tick();
        }
    }
    c.node(3).wake(None);
    // Node 2's runtime last heard node 1's node a tick ago: it says so
    // before it feeds node 2 anything, so node 2 counts its leader as live.
    c.node(2).elapse(0, Some(1));
    for _ in 0..40 {
        c.node(1).tick();
        c.node(3).tick();
        c.settle();
        c.node(2).elapse(0, Some(1));
    }
    // The leader, woken by the pre-vote, heartbeats again and node 3
    // follows it: no new term.
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(3).term(), 1);
    assert_eq!(c.node(3).leader_id(), Some(1));
}

#[test]
fn a_silent_member_keeps_the_group_awake_until_the_runtime_says_its_node_is_down() {
    let mut c = Cluster::with(3, 3, |c| c.quiesce = true);
    c.elect(1);
    c.isolate(3);
    c.propose(1, "x");
    // Many check-quorum windows without an answer from node 3 (a learner
    // still starting, or a replica busy with a snapshot, answers late):
    // as long as its node is not known to be down, the leader must not
    // leave it behind by quiescing.
    for _ in 0..200 {
        c.node(1).tick();
        c.node(2).tick();
        c.settle();
    }
    assert!(!c.node(1).quiesced(), "quiesced without a live member");
    assert_eq!(c.leaders(), vec![1]);
    // The runtime finds node 3's node silent for an election timeout: the
    // group quiesces without it.
    c.node(1).set_down(&[3]);
    c.node(1).tick();
    c.settle();
    assert!(c.node(1).quiesced());
    assert!(c.node(2).quiesced());
    // Node 3 is back: the runtime says so and wakes the group led here,
    // which stays awake until node 3 holds the whole log, then quiesces.
    c.reconnect(3);
    c.node(1).set_down(&[]);
    c.node(1).wake(None);
    for _ in 0..20 {
        for id in 1..=3 {
            c.node(id).tick();
        }
        c.settle();
    }
    let commit = c.node(1).log().committed();
    assert_eq!(c.node(3).log().committed(), commit);
    for id in 1..=3 {
        assert!(c.node(id).quiesced(), "node {id} did not quiesce again");
    }
    assert_eq!(c.leaders(), vec![1]);
}

#[test]
fn after_the_leaders_node_dies_the_survivors_campaign_in_the_runtimes_order() {
    // Whatever each follower's random timeout, the voter told to go first
    // wins and the one told to wait does not race it (with thousands of
    // groups, such races split votes and cost whole election timeouts).
    for seed in 0..50 {
        let mut c = Cluster::with(3, 3, |c| c.seed = seed * 7 + c.id);
        c.elect(1);
        c.isolate(1);
        let e = synod_core::Config::new(1, 1..=3).election_ticks;
        // The runtime finds node 1's node silent one tick short of an
        // election timeout here (its clock and the groups' differ by a
        // tick): node 2 goes first, node 3 half an election timeout later.
        for _ in 0..e - 1 {
            c.node(2).tick();
            c.node(3).tick();
        }
        c.settle();
        c.node(2).campaign_within(3);
        c.node(3).campaign_within(3 + e / 2);
        for _ in 0..e {
            c.node(2).tick();
            c.node(3).tick();
            c.settle();
        }
        assert_eq!(c.node(2).role(), Role::Leader, "seed {seed}");
        assert_eq!(c.node(2).term(), 2, "seed {seed}: one election");
        assert_eq!(c.node(3).leader_id(), Some(2), "seed {seed}");
    }
}

/// Drains `id`'s Readies; the messages they send.
fn drain(c: &mut Cluster, id: u64) -> Vec<synod_core::Message> {
    let mut out = Vec::new();
    while c.node(id).has_ready() {
        let rd = persist(c.node(id));
        out.extend(rd.messages);
        out.extend(rd.persisted_messages);
    }
    out
}

#[test]
fn the_commit_waits_for_the_last_answer_and_rides_on_the_quiesce() {
    let mut c = quiesced_group(1);
    let p = c.node(1).propose(vec!["x".into()]).unwrap();
    let appends = drain(&mut c, 1);
    assert_eq!(appends.len(), 2);
    // Both followers store the entry; their answers come back one by one.
    let mut answers = Vec::new();
    for m in appends {
        let to = m.to;
        c.node(to).step(m);
        answers.extend(drain(&mut c, to));
    }
    assert_eq!(answers.len(), 2);
    let late = answers.pop().unwrap();
    c.node(1).step(answers.pop().unwrap());
    assert_eq!(c.node(1).log().committed(), p.last_index, "a quorum has it");
    // The commit would be the only news of an append: it waits.
    assert_eq!(drain(&mut c, 1), Vec::new());
    // The last answer quiesces the group, and the Quiesce carries it.
    c.node(1).step(late);
    let out = drain(&mut c, 1);
    assert!(c.node(1).quiesced());
    assert_eq!(out.len(), 2, "{out:?}");
    for m in out {
        assert!(
            matches!(m.body, MessageBody::Quiesce { commit } if commit == p.last_index),
            "{m:?}"
        );
        let to = m.to;
        c.node(to).step(m);
        assert!(c.node(to).quiesced());
        assert_eq!(c.node(to).log().committed(), p.last_index);
    }
}

#[test]
fn when_the_last_answer_never_comes_the_next_heartbeat_carries_the_commit() {
    let mut c = quiesced_group(1);
    let p = c.node(1).propose(vec!["x".into()]).unwrap();
    let appends = drain(&mut c, 1);
    // Node 3's append is lost: it never answers.
    for m in appends.into_iter().filter(|m| m.to == 2) {
        c.node(2).step(m);
        for a in drain(&mut c, 2) {
            c.node(1).step(a);
        }
    }
    assert_eq!(c.node(1).log().committed(), p.last_index);
    assert_eq!(drain(&mut c, 1), Vec::new());
    assert!(c.node(2).log().committed() < p.last_index);
    // Within a heartbeat interval, node 2 learns the commit.
    let mut learned = false;
    for _ in 0..synod_core::Config::new(1, 1..=3).heartbeat_ticks {
        c.node(1).tick();
        for m in drain(&mut c, 1).into_iter().filter(|m| m.to == 2) {
            c.node(2).step(m);
        }
        learned |= c.node(2).log().committed() == p.last_index;
    }
    assert!(learned, "node 2 never learned the commit");
    assert!(!c.node(1).quiesced(), "node 3 lags: the group stays awake");
}

#[test]
fn a_member_thought_down_that_answers_late_gets_the_commit_from_the_quiesced_leader() {
    let mut c = quiesced_group(1);
    // The runtime says node 3's node is down; it is only slow.
    c.node(1).set_down(&[3]);
    let p = c.node(1).propose(vec!["x".into()]).unwrap();
    let appends = drain(&mut c, 1);
    let mut late = Vec::new();
    for m in appends {
        let to = m.to;
        c.node(to).step(m);
        let answers = drain(&mut c, to);
        if to == 3 {
            late = answers;
        } else {
            for a in answers {
                c.node(1).step(a);
            }
        }
    }
    // Committed with node 2, and quiesced without waiting for node 3.
    let quiesce = drain(&mut c, 1);
    assert!(c.node(1).quiesced());
    assert_eq!(quiesce.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2]);
    for m in quiesce {
        c.node(2).step(m);
    }
    // Node 3's answer arrives: the leader stays asleep and sends it the
    // commit it missed.
    assert_eq!(late.len(), 1);
    c.node(1).step(late.pop().unwrap());
    let out = drain(&mut c, 1);
    assert!(c.node(1).quiesced());
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(out[0].body, MessageBody::Quiesce { commit } if commit == p.last_index));
    c.node(3).step(out[0].clone());
    assert_eq!(c.node(3).log().committed(), p.last_index);
    assert!(c.node(3).quiesced());
}
