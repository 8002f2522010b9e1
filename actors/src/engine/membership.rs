//! Membership operations on a running group: read the configuration, add a
//! learner, promote it, remove a member. Each is one single-server change
//! of the core (one at a time, after the leader committed an entry of its
//! term), carried out from whichever node is asked:
//!
//! * the change goes to the group's leader (forwarded once when this node
//!   does not lead) and returns once the change's entry is applied there;
//! * refusals that only mean "not now" (another change or a transfer under
//!   way, a new leader's first commit, a learner still catching up) are
//!   retried until the deadline;
//! * `add_learner` first makes the new node host an empty replica (it then
//!   catches up by snapshot and log), `remove_member` afterwards deletes the
//!   removed node's replica (its log and snapshots).
//!
//! Every call is idempotent: adding a node that already is a learner,
//! promoting a voter or removing a non-member succeeds without a change,
//! so a caller that lost an answer simply calls again.

use bytes::Bytes;
use synod_core::{ConfChange, NodeId};
use synod_net::frame;
use synod_storage::GroupId;

use super::{Engine, Origin};

/// How long a removal keeps trying to reach the removed node to delete its
/// replica (it may be down, or just back and not connected yet).
const DROP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
use crate::group::{ChangeMembership, GetMembership};
use crate::node::{DropGroup, ForceVoters, HostGroup};
use crate::proto::{MembershipInfo, Request, RequestError, Response};

impl Engine {
    /// The configuration of `group`: from its leader when this node knows
    /// one it can reach, else as this node's replica sees it.
    pub async fn membership(&self, group: GroupId) -> Result<MembershipInfo, RequestError> {
        self.membership_from(group, Origin::Local).await
    }

    pub(super) async fn membership_from(
        &self,
        group: GroupId,
        origin: Origin,
    ) -> Result<MembershipInfo, RequestError> {
        let local = self.local_membership(group).await?;
        let here = self.node_id();
        match local.leader {
            Some(l) if l != here && origin != Origin::Node => {
                let deadline = self.deadline();
                match self
                    .ask_node(l, &Request::Membership { group }, deadline)
                    .await
                {
                    Ok(Response::Membership(info)) => Ok(info),
                    _ => Ok(local),
                }
            }
            _ => Ok(local),
        }
    }

    async fn local_membership(&self, group: GroupId) -> Result<MembershipInfo, RequestError> {
        self.route(group)?
            .raft
            .send(GetMembership)
            .await
            .map_err(|_| RequestError::Restarting(group))
    }

    /// Adds `node` to `group` as a learner: it receives the log (and a
    /// snapshot when it is far behind) but neither votes nor counts toward
    /// any quorum. `node` must be a configured node of the cluster and
    /// know the group (the application created it there, as a non-member;
    /// the KV service does for its groups): it then hosts an empty replica
    /// that catches up from the leader. Returns the new configuration once
    /// the change is applied by the leader. Already a learner: no change.
    pub async fn add_learner(
        &self,
        group: GroupId,
        node: NodeId,
    ) -> Result<MembershipInfo, RequestError> {
        self.add_learner_from(group, node, Origin::Local).await
    }

    pub(super) async fn add_learner_from(
        &self,
        group: GroupId,
        node: NodeId,
        origin: Origin,
    ) -> Result<MembershipInfo, RequestError> {
        self.check_node(group, node)?;
        let info = self.membership_from(group, origin).await?;
        if info.voters.contains(&node) {
            return Err(RequestError::BadChange {
                group,
                reason: format!("node {node} already is a voter"),
            });
        }
        // Always (it is idempotent): a learner whose replica is gone (its
        // disk wiped) gets an empty one again.
        self.host_on(group, node).await?;
        let is_learner = |m: &MembershipInfo| m.learners.contains(&node);
        self.change_once(
            group,
            ConfChange::AddLearner(node),
            origin,
            info,
            is_learner,
        )
        .await
    }

    /// Carries out `change` unless `done` already holds for `info` (the
    /// configuration now) and is committed. A refusal as a bad change, or
    /// a timeout, is no error if the configuration read again shows `done`
    /// committed: an earlier attempt, whose answer was lost, made it (or
    /// a leader that removed itself lost its leadership before it could
    /// see its change commit). So every operation is idempotent.
    async fn change_once(
        &self,
        group: GroupId,
        change: ConfChange,
        origin: Origin,
        info: MembershipInfo,
        done: impl Fn(&MembershipInfo) -> bool,
    ) -> Result<MembershipInfo, RequestError> {
        if done(&info) && info.committed {
            return Ok(info);
        }
        match self.change_membership(group, change, origin).await {
            Err(e @ (RequestError::BadChange { .. } | RequestError::Timeout(_))) => {
                let info = self.membership_from(group, origin).await?;
                if done(&info) && info.committed {
                    Ok(info)
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }

    /// Makes learner `node` a voter of `group`, once its log is close to
    /// the leader's (the call waits for that until its deadline, then
    /// fails with [`RequestError::LearnerBehind`], safe to retry). Already
    /// a voter: no change.
    pub async fn promote(
        &self,
        group: GroupId,
        node: NodeId,
    ) -> Result<MembershipInfo, RequestError> {
        self.promote_from(group, node, Origin::Local).await
    }

    pub(super) async fn promote_from(
        &self,
        group: GroupId,
        node: NodeId,
        origin: Origin,
    ) -> Result<MembershipInfo, RequestError> {
        self.check_node(group, node)?;
        let info = self.membership_from(group, origin).await?;
        let is_voter = |m: &MembershipInfo| m.voters.contains(&node);
        self.change_once(
            group,
            ConfChange::PromoteLearner(node),
            origin,
            info,
            is_voter,
        )
        .await
    }

    /// Removes voter or learner `node` from `group`, the leader included
    /// (it hands over by stepping down once the change commits), then
    /// deletes `node`'s replica (its log and snapshots; the node must be
    /// up for that). Refused with [`RequestError::NoQuorumLeft`] for the
    /// last voter. Not a member: no change, and the replica is still
    /// deleted if the node has one (call again when a node was down).
    pub async fn remove_member(
        &self,
        group: GroupId,
        node: NodeId,
    ) -> Result<MembershipInfo, RequestError> {
        self.remove_member_from(group, node, Origin::Local).await
    }

    pub(super) async fn remove_member_from(
        &self,
        group: GroupId,
        node: NodeId,
        origin: Origin,
    ) -> Result<MembershipInfo, RequestError> {
        self.check_node(group, node)?;
        let gone = |m: &MembershipInfo| !m.voters.contains(&node) && !m.learners.contains(&node);
        let info = self.membership_from(group, origin).await?;
        // Deleting a replica is for good: only after this call's own change
        // was applied at the leader, or on the leader's word that the node
        // is out of a committed configuration (a stale replica may not know
        // it was added back since).
        let confirmed = if gone(&info) && info.committed {
            self.leader_confirms(group, origin, &gone).await?
        } else {
            match self
                .change_membership(group, ConfChange::RemoveMember(node), origin)
                .await
            {
                Ok(info) => info,
                // Removed meanwhile (an earlier attempt whose answer was
                // lost), or a leader that removed itself lost its
                // leadership before it saw the change commit.
                Err(RequestError::BadChange { .. } | RequestError::Timeout(_)) => {
                    self.leader_confirms(group, origin, &gone).await?
                }
                Err(e) => return Err(e),
            }
        };
        self.drop_on(group, node).await?;
        Ok(confirmed)
    }

    /// **Unsafe recovery** for a group that lost a majority of its voters
    /// for good: forces `voters` as the group's voters on *this node's*
    /// replica, without agreement (`Raft::force_voters`). Run it on every
    /// survivor with the same `voters`; they elect a leader among
    /// themselves, which writes the configuration into the log. What it
    /// risks: entries only the lost voters held are lost, acknowledged or
    /// not; survivors forced differently, or lost voters coming back with
    /// their old data, can elect two leaders. Wipe the lost nodes before
    /// they return, and re-add them as learners. Recorded in the node's
    /// catalog, so it holds across a restart.
    pub async fn unsafe_force_voters(
        &self,
        group: GroupId,
        voters: &[NodeId],
    ) -> Result<MembershipInfo, RequestError> {
        for &v in voters {
            self.check_node(group, v)?;
        }
        let voters = voters.iter().copied().collect();
        self.inner
            .node
            .send(ForceVoters { group, voters })
            .await
            .map_err(|_| RequestError::Restarting(group))??;
        self.local_membership(group).await
    }

    /// The configuration, once the leader itself answers that `holds` is
    /// true of its committed configuration; retried until the deadline,
    /// then `NotLeader` (nothing done, safe to retry).
    async fn leader_confirms(
        &self,
        group: GroupId,
        origin: Origin,
        holds: impl Fn(&MembershipInfo) -> bool,
    ) -> Result<MembershipInfo, RequestError> {
        let deadline = self.deadline();
        loop {
            let info = self.membership_from(group, origin).await?;
            let from_leader = info.leader == Some(info.answered_by);
            if from_leader && info.committed && holds(&info) {
                return Ok(info);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RequestError::NotLeader {
                    group,
                    leader: info.leader,
                });
            }
            tokio::time::sleep(self.inner.shared.cfg.tick).await;
        }
    }

    pub(super) fn check_node(&self, group: GroupId, node: NodeId) -> Result<(), RequestError> {
        if node == 0 {
            return Err(RequestError::BadChange {
                group,
                reason: "node id 0 is reserved".into(),
            });
        }
        if !self.inner.shared.voters.contains(&node) {
            return Err(RequestError::UnknownNode { node });
        }
        Ok(())
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.inner.shared.cfg.propose_timeout
    }

    /// Proposes `change` at the leader (here, or forwarded once), retrying
    /// "not now" refusals until the deadline; the configuration after it.
    pub(super) async fn change_membership(
        &self,
        group: GroupId,
        change: ConfChange,
        origin: Origin,
    ) -> Result<MembershipInfo, RequestError> {
        let deadline = self.deadline();
        let tick = self.inner.shared.cfg.tick;
        let here = self.node_id();
        let mut last = RequestError::NotLeader {
            group,
            leader: None,
        };
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            let local = self.local_membership(group).await?;
            let outcome = match local.leader {
                Some(l) if l == here => self
                    .ask_group(group, deadline, |reply| ChangeMembership { change, reply })
                    .await
                    .map(|_: Bytes| ()),
                Some(l) if origin != Origin::Node => {
                    match self
                        .ask_node(l, &Request::ChangeMembership { group, change }, deadline)
                        .await
                    {
                        Ok(Response::Membership(info)) => return Ok(info),
                        Ok(Response::Err(e)) => Err(e),
                        Ok(other) => {
                            return Err(RequestError::Application(format!(
                                "leader {l} sent an unexpected answer to a membership change: \
                                 {other:?}"
                            )))
                        }
                        Err(e) => Err(e),
                    }
                }
                leader => Err(RequestError::NotLeader { group, leader }),
            };
            match outcome {
                Ok(()) => return self.local_membership(group).await,
                Err(RequestError::NotLeader { .. }) if origin == Origin::Node => {
                    return Err(RequestError::NotLeader {
                        group,
                        leader: local.leader.filter(|&l| l != here),
                    })
                }
                Err(e) if e.is_safe_to_retry() => last = e,
                Err(e) => return Err(e),
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// Makes `node` host an (empty) replica of `group`.
    async fn host_on(&self, group: GroupId, node: NodeId) -> Result<(), RequestError> {
        let deadline = self.deadline();
        loop {
            let answer = self.hosting(node, Request::HostGroup { group }).await;
            match answer {
                Err(e) if e.is_safe_to_retry() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.inner.shared.cfg.tick).await;
                }
                Err(RequestError::Timeout(_)) => {
                    return Err(RequestError::CannotHost {
                        group,
                        node,
                        reason: "it did not answer in time; is it up?".into(),
                    })
                }
                r => return r,
            }
        }
    }

    /// Deletes `node`'s replica of `group` (which no longer has it).
    async fn drop_on(&self, group: GroupId, node: NodeId) -> Result<(), RequestError> {
        // A node that just came back may not be connected yet, or be busy
        // with the group: try for a few seconds before reporting that its
        // replica is still there.
        let give_up = tokio::time::Instant::now() + DROP_PATIENCE;
        loop {
            match self.hosting(node, Request::DropGroup { group }).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_safe_to_retry() && tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(self.inner.shared.cfg.tick).await;
                }
                Err(e) => {
                    return Err(RequestError::CannotHost {
                        group,
                        node,
                        reason: format!(
                            "the node was removed from the group but its replica was not \
                             deleted: {e}; call remove-member again once it is up"
                        ),
                    })
                }
            }
        }
    }

    /// One hosting request (`HostGroup` or `DropGroup`) to `node`: here
    /// through the node actor, elsewhere over the network.
    async fn hosting(&self, node: NodeId, req: Request) -> Result<(), RequestError> {
        if node == self.node_id() {
            return self.serve_local_hosting(req).await;
        }
        match self.ask_node(node, &req, self.deadline()).await? {
            Response::Ok { .. } => Ok(()),
            Response::Err(e) => Err(e),
            other => Err(RequestError::Application(format!(
                "node {node} sent an unexpected answer to {req:?}: {other:?}"
            ))),
        }
    }

    async fn serve_local_hosting(&self, req: Request) -> Result<(), RequestError> {
        let stopping = |group| RequestError::Restarting(group);
        match req {
            Request::HostGroup { group } => self
                .inner
                .node
                .send(HostGroup(group))
                .await
                .map_err(|_| stopping(group))?,
            Request::DropGroup { group } => self
                .inner
                .node
                .send(DropGroup(group))
                .await
                .map_err(|_| stopping(group))?,
            other => Err(RequestError::Application(format!(
                "not a hosting request: {other:?}"
            ))),
        }
    }

    /// Serves a node-level hosting request from another node.
    pub(super) async fn serve_hosting(&self, req: Request) -> Response {
        match self.serve_local_hosting(req).await {
            Ok(()) => Response::Ok {
                result: Bytes::new(),
                leader: None,
            },
            Err(e) => Response::Err(e),
        }
    }

    /// Sends `req` to node `to` and decodes its answer. `Err` only when no
    /// answer came: not sent, lost, or past `deadline`.
    pub(super) async fn ask_node(
        &self,
        to: NodeId,
        req: &Request,
        deadline: tokio::time::Instant,
    ) -> Result<Response, RequestError> {
        let bytes = frame::encode(req, frame::DEFAULT_MAX_FRAME)
            .map_err(|e| RequestError::Application(e.to_string()))?;
        let call = self.inner.shared.net.request(to, bytes);
        let group = req.group().unwrap_or(0);
        let answer = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => return Err(RequestError::Timeout(group)),
            Ok(Err(e)) => return Err(RequestError::Unavailable(format!("node {to}: {e:?}"))),
            Ok(Ok(a)) => a,
        };
        frame::decode::<Response>(&answer).map_err(|e| {
            RequestError::Application(format!("node {to}'s answer did not decode: {e}"))
        })
    }
}
