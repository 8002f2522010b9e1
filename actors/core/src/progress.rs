//! What the leader knows about each follower (Figure 2, "Volatile state on
//! leaders", extended with the probe/replicate states of etcd and braft).

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader currently sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's match point is unknown: send one AppendEntries at a
    /// time and wait for its answer (or a heartbeat answer) before the next.
    Probe,
    /// The follower is known to match: stream AppendEntries optimistically,
    /// up to a window of messages in flight (the pipeline).
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot ending
    /// at `pending` is on its way. Nothing else is sent until the follower
    /// acknowledges it or the runtime reports how the transfer went.
    Snapshot {
        /// The snapshot's last index.
        pending: Index,
    },
}

/// Replication progress of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated (and durable) on the follower.
    pub match_index: Index,
    /// Index of the next entry to send.
    pub next_index: Index,
    /// Probe or replicate.
    pub state: ProgressState,
    /// In probe state: a message was sent and no answer came yet.
    pub probe_sent: bool,
    /// Last index of each AppendEntries in flight (replicate state),
    /// bounded by `capacity`.
    inflight: VecDeque<Index>,
    capacity: usize,
    /// Whether the follower answered since the last check-quorum round.
    pub recent_active: bool,
    /// Fences acknowledgements: raised when the follower says it lost its
    /// state and starts rejoining. Appends and snapshots carry it, and an
    /// acknowledgement counts only if it echoes the current value, so one
    /// sent by the replica's previous incarnation (still in flight when
    /// its disk was replaced) can never again raise `match_index`.
    pub epoch: u32,
    /// The rejoining incarnation the epoch was last raised for.
    pub fenced_for: u64,
    /// The follower's latest counted acknowledgement said it is rejoining
    /// (see [`crate::Config::rejoining`]): its match does not count toward
    /// commits.
    pub rejoining: bool,
    /// Highest heartbeat round the follower answered in this term.
    pub acked_round: u64,
}

impl Progress {
    /// Progress for a follower whose log is unknown: probe from the
    /// leader's next index (§5.3, "initialized to leader last log index + 1").
    pub fn new(next_index: Index, capacity: usize) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            recent_active: false,
            epoch: 0,
            fenced_for: 0,
            rejoining: false,
            acked_round: 0,
        }
    }

    /// Whether the leader must not send now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= self.capacity,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Switches to sending a snapshot that ends at `index`.
    pub fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot { pending: index };
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Number of AppendEntries in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Switches to probing from `next_index`.
    pub fn become_probe(&mut self, next_index: Index) {
        self.state = ProgressState::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to streaming after the follower's match became known.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Records an acknowledged match; returns whether it moved forward.
    pub fn update_match(&mut self, index: Index) -> bool {
        self.probe_sent = false;
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        advanced
    }

    /// Records that an AppendEntries ending at `last` was sent.
    pub fn sent(&mut self, last: Option<Index>) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// A heartbeat answer proves the follower is alive: let one more
    /// message go so a lost AppendEntries cannot stall replication.
    pub fn on_heartbeat_response(&mut self) {
        self.recent_active = true;
        if matches!(self.state, ProgressState::Snapshot { .. }) {
            // Only the transfer's outcome or the follower's answer ends it.
            return;
        }
        self.probe_sent = false;
        if self.inflight.len() >= self.capacity {
            self.inflight.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_window_pauses_and_frees() {
        let mut p = Progress::new(1, 2);
        p.update_match(0);
        p.become_replicate();
        p.sent(Some(3));
        assert!(!p.is_paused());
        p.sent(Some(5));
        assert!(p.is_paused(), "window of 2 is full");
        assert_eq!(p.next_index, 6);
        p.update_match(3);
        assert!(!p.is_paused());
        assert_eq!(p.inflight(), 1);
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(10, 4);
        assert!(!p.is_paused());
        p.sent(Some(12));
        assert!(p.is_paused());
        assert_eq!(p.next_index, 10, "probe does not advance optimistically");
        p.on_heartbeat_response();
        assert!(!p.is_paused());
    }
}
