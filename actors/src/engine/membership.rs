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
use crate::node::{DropGroup, ForceVoters, HostGroup, Lookup};
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
        if let Some(e) = self.node_failed() {
            return Err(e);
        }
        let route = match self.inner.routes.lookup(group) {
            Lookup::Running(r) => r,
            Lookup::Restarting => return Err(RequestError::Restarting(group)),
            Lookup::Poisoned(p) => return Err(p.error(group)),
            Lookup::Unknown => return Err(RequestError::NoSuchGroup(group)),
        };
        route
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
        if info.learners.contains(&node) {
            return Ok(info);
        }
        if info.voters.contains(&node) {
            return Err(RequestError::BadChange {
                group,
                reason: format!("node {node} already is a voter"),
            });
        }
        self.host_on(group, node).await?;
        match self
            .change_membership(group, ConfChange::AddLearner(node), origin)
            .await
        {
            // Added meanwhile (an earlier attempt whose answer was lost).
            Err(RequestError::BadChange { .. }) => {
                let info = self.membership_from(group, origin).await?;
                if info.learners.contains(&node) {
                    Ok(info)
                } else {
                    Err(RequestError::BadChange {
                        group,
                        reason: format!("node {node} is already a member"),
                    })
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
        if info.voters.contains(&node) {
            return Ok(info);
        }
        match self
            .change_membership(group, ConfChange::PromoteLearner(node), origin)
            .await
        {
            Err(RequestError::BadChange { reason, .. }) => {
                let info = self.membership_from(group, origin).await?;
                if info.voters.contains(&node) {
                    Ok(info)
                } else {
                    Err(RequestError::BadChange { group, reason })
                }
            }
            r => r,
        }
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
        let info = self.membership_from(group, origin).await?;
        let info = if info.voters.contains(&node) || info.learners.contains(&node) {
            match self
                .change_membership(group, ConfChange::RemoveMember(node), origin)
                .await
            {
                Err(RequestError::BadChange { reason, .. }) => {
                    let info = self.membership_from(group, origin).await?;
                    if info.voters.contains(&node) || info.learners.contains(&node) {
                        return Err(RequestError::BadChange { group, reason });
                    }
                    info
                }
                r => r?,
            }
        } else {
            info
        };
        self.drop_on(group, node).await?;
        Ok(info)
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

    fn check_node(&self, group: GroupId, node: NodeId) -> Result<(), RequestError> {
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
        let cannot = |reason: String| RequestError::CannotHost {
            group,
            node,
            reason,
        };
        if node == self.node_id() {
            return self
                .inner
                .node
                .send(HostGroup(group))
                .await
                .map_err(|_| cannot("the node is stopping".into()))?
                .map_err(cannot);
        }
        match self
            .ask_node(node, &Request::HostGroup { group }, self.deadline())
            .await
        {
            Ok(Response::Ok { .. }) => Ok(()),
            Ok(Response::Err(e)) => Err(e),
            Ok(other) => Err(cannot(format!("unexpected answer {other:?}"))),
            // Not reached (down, or not connected yet): nothing changed,
            // safe to retry.
            Err(e @ RequestError::Unavailable(_)) => Err(e),
            Err(e) => Err(cannot(format!("it did not answer ({e}); is it up?"))),
        }
    }

    /// Deletes `node`'s replica of `group` (which no longer has it).
    async fn drop_on(&self, group: GroupId, node: NodeId) -> Result<(), RequestError> {
        let failed = |reason: String| RequestError::CannotHost {
            group,
            node,
            reason: format!(
                "the node was removed from the group but its replica was not deleted: {reason}; \
                 call remove-member again once it is up"
            ),
        };
        if node == self.node_id() {
            return self
                .inner
                .node
                .send(DropGroup(group))
                .await
                .map_err(|_| failed("the node is stopping".into()))?
                .map_err(failed);
        }
        // A node that just came back may not be connected yet: try for a
        // few seconds before reporting that its replica is still there.
        let give_up = tokio::time::Instant::now() + DROP_PATIENCE;
        loop {
            match self
                .ask_node(node, &Request::DropGroup { group }, self.deadline())
                .await
            {
                Ok(Response::Ok { .. }) => return Ok(()),
                Ok(Response::Err(e)) => return Err(failed(e.to_string())),
                Ok(other) => return Err(failed(format!("unexpected answer {other:?}"))),
                Err(RequestError::Unavailable(_)) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(self.inner.shared.cfg.tick).await;
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        }
    }

    /// Serves a node-level hosting request from another node.
    pub(super) async fn serve_hosting(&self, req: Request) -> Response {
        let (group, result) = match req {
            Request::HostGroup { group } => (group, self.inner.node.send(HostGroup(group)).await),
            Request::DropGroup { group } => (group, self.inner.node.send(DropGroup(group)).await),
            other => {
                return Response::Err(RequestError::Application(format!(
                    "not a hosting request: {other:?}"
                )))
            }
        };
        let node = self.node_id();
        match result {
            Ok(Ok(())) => Response::Ok {
                result: Bytes::new(),
                leader: None,
            },
            Ok(Err(reason)) => Response::Err(RequestError::CannotHost {
                group,
                node,
                reason,
            }),
            Err(_) => Response::Err(RequestError::CannotHost {
                group,
                node,
                reason: "the node is stopping".into(),
            }),
        }
    }

    /// Sends `req` to node `to` and decodes its answer. `Err` only when no
    /// answer came: not sent, lost, or past `deadline`.
    async fn ask_node(
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
