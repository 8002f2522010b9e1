//! Groups created and deleted at run time, cluster-wide, from whichever
//! node is asked:
//!
//! * **create** `(group, voters)`: every voter hosts a replica that starts
//!   from the bootstrap configuration `voters` (the node actor's
//!   `HostServiceGroup`, with the factory of the node's service); the other
//!   nodes are not involved, and neither store nor tick the group;
//! * **delete** `group`: every node drops its replica, if it has one (the
//!   node actor's `DropGroup`: the catalog marks it removed, its actors
//!   stop, its log and snapshots are deleted).
//!
//! The node asked sends the request on to the others (node-to-node
//! requests are served locally, never forwarded again: no loops). Both are
//! idempotent, so an answer that names a node that could not be reached
//! (`MemberUnreachable`) means: run the same call again once it is up.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use synod_core::NodeId;
use synod_storage::GroupId;

use super::{Engine, Origin};
use crate::node::{DropGroup, HostServiceGroup, ServeGroups};
use crate::proto::{Request, RequestError, Response};
use crate::state_machine::StateMachineFactory;

/// How long a create or delete keeps trying to reach one node (it may be
/// down, or just back and not connected yet) before it reports it.
const REACH_PATIENCE: Duration = Duration::from_secs(3);

/// How long a delete waits for another node's view of the group's members.
const MEMBERS_PATIENCE: Duration = Duration::from_secs(1);

impl Engine {
    /// Registers this node's *service*: `factory` makes the state machine
    /// of every group created at run time ([`Engine::create_service_group`])
    /// and of a replica this node is added to whose group the application
    /// did not create here. Then starts again the groups of the service this
    /// node hosts (as its catalog says: a restarted node brings back exactly
    /// those), and answers their ids; they serve once started. Call it once,
    /// after the application created its own groups. Without it, creating a
    /// group with this node as a voter fails with
    /// [`RequestError::NoGroupService`].
    pub async fn serve_groups(&self, factory: StateMachineFactory) -> Vec<GroupId> {
        self.inner
            .node
            .send(ServeGroups(factory))
            .await
            .unwrap_or_default()
    }

    /// Creates `group` at run time with the bootstrap voters `voters`
    /// (configured nodes of the cluster, this one or not): each of them
    /// hosts a replica of the node's service type, which elect a leader;
    /// the other nodes neither store nor tick it. Returns once every voter
    /// hosts its replica (a replica may still be electing a leader).
    ///
    /// Idempotent: a group that exists with the same voters is a success.
    /// Errors: [`RequestError::GroupExists`] (other voters: nothing
    /// changed), [`RequestError::GroupRemoved`] (the id was deleted; ids are
    /// not reused), [`RequestError::NoGroupService`] (a voter's application
    /// registered no service), [`RequestError::UnknownNode`],
    /// [`RequestError::BadChange`] (no voter, node id 0),
    /// [`RequestError::CannotHost`] (a voter initialized as a joining node,
    /// or a disk error), [`RequestError::MemberUnreachable`] (a voter did
    /// not answer: the others host the group; call again once it is up).
    pub async fn create_service_group(
        &self,
        group: GroupId,
        voters: &[NodeId],
    ) -> Result<(), RequestError> {
        self.create_service_group_from(group, voters, Origin::Local)
            .await
    }

    pub(super) async fn create_service_group_from(
        &self,
        group: GroupId,
        voters: &[NodeId],
        origin: Origin,
    ) -> Result<(), RequestError> {
        if voters.is_empty() {
            return Err(RequestError::BadChange {
                group,
                reason: "a group needs at least one voter".into(),
            });
        }
        for &v in voters {
            self.check_node(group, v)?;
        }
        let voters: BTreeSet<NodeId> = voters.iter().copied().collect();
        if origin == Origin::Node {
            return self.host_service_here(group, voters).await;
        }
        let req = Request::CreateGroup {
            group,
            voters: voters.iter().copied().collect(),
        };
        let answers = join_all(voters.iter().map(|&n| self.on_node(n, group, &req))).await;
        first_error(answers.into_iter().map(|(_, r)| r))
    }

    /// Deletes `group` at run time: every node that hosts a replica stops
    /// it and deletes its log and snapshots; its catalog marks the group
    /// removed, so no restart brings it back and the id cannot be created
    /// again ([`RequestError::GroupRemoved`]; requests for it get that
    /// too). Works for any group, the application's own included.
    ///
    /// Idempotent: deleting a group that does not exist (any more) is a
    /// success. [`RequestError::MemberUnreachable`] names a node that may
    /// hold a replica and could not be reached: the others dropped theirs;
    /// call again once it is up.
    pub async fn delete_group(&self, group: GroupId) -> Result<(), RequestError> {
        self.delete_group_from(group, Origin::Local).await
    }

    pub(super) async fn delete_group_from(
        &self,
        group: GroupId,
        origin: Origin,
    ) -> Result<(), RequestError> {
        if origin == Origin::Node {
            return self.drop_here(group).await;
        }
        // Who may hold a replica: the group's members as some replica sees
        // them (a node that is down and not a member does not matter).
        let members = self.members_anywhere(group).await;
        let req = Request::DeleteGroup { group };
        let nodes = self.inner.shared.voters.clone();
        let answers = join_all(nodes.iter().map(|&n| self.on_node(n, group, &req))).await;
        first_error(answers.into_iter().filter_map(|(n, r)| match r {
            Err(RequestError::MemberUnreachable { .. })
                if members.as_ref().is_some_and(|m| !m.contains(&n)) =>
            {
                None
            }
            r => Some(r),
        }))
    }

    /// The members (voters and learners) of `group` as a replica sees it:
    /// this node's, else the first other node's that answers. `None` when
    /// no node that answered hosts it.
    async fn members_anywhere(&self, group: GroupId) -> Option<BTreeSet<NodeId>> {
        let members = |m: crate::proto::MembershipInfo| {
            m.voters
                .into_iter()
                .chain(m.learners)
                .collect::<BTreeSet<_>>()
        };
        if let Ok(m) = self.membership_from(group, Origin::Node).await {
            return Some(members(m));
        }
        let deadline = tokio::time::Instant::now() + MEMBERS_PATIENCE;
        let req = Request::Membership { group };
        let here = self.node_id();
        let others = self.inner.shared.voters.iter().filter(|&&n| n != here);
        let answers = join_all(others.map(|&n| self.ask_node(n, &req, deadline))).await;
        answers.into_iter().find_map(|a| match a {
            Ok(Response::Membership(m)) => Some(members(m)),
            _ => None,
        })
    }

    /// Node `node`'s part of a create or delete (`req`): here through the
    /// node actor, elsewhere as a node-to-node request. Retries what is
    /// safe to retry (not connected yet, the group busy) for a while, then
    /// reports the node as unreachable.
    async fn on_node(
        &self,
        node: NodeId,
        group: GroupId,
        req: &Request,
    ) -> (NodeId, Result<(), RequestError>) {
        let give_up = tokio::time::Instant::now() + REACH_PATIENCE;
        let unreachable = |reason: String| RequestError::MemberUnreachable {
            group,
            node,
            reason,
        };
        loop {
            let answer = if node == self.node_id() {
                match req {
                    Request::CreateGroup { voters, .. } => {
                        self.host_service_here(group, voters.iter().copied().collect())
                            .await
                    }
                    _ => self.drop_here(group).await,
                }
            } else {
                match self.ask_node(node, req, give_up).await {
                    Ok(Response::Ok { .. }) => Ok(()),
                    Ok(Response::Err(e)) => Err(e),
                    Ok(other) => Err(RequestError::Application(format!(
                        "node {node} sent an unexpected answer to {req:?}: {other:?}"
                    ))),
                    Err(RequestError::Timeout(_)) => {
                        return (
                            node,
                            Err(unreachable(format!("no answer within {REACH_PATIENCE:?}"))),
                        )
                    }
                    Err(e) => Err(e),
                }
            };
            match answer {
                Err(e) if e.is_safe_to_retry() => {
                    if tokio::time::Instant::now() >= give_up {
                        return (node, Err(unreachable(e.to_string())));
                    }
                    tokio::time::sleep(self.inner.shared.cfg.tick).await;
                }
                r => return (node, r),
            }
        }
    }

    async fn host_service_here(
        &self,
        group: GroupId,
        voters: BTreeSet<NodeId>,
    ) -> Result<(), RequestError> {
        if let Some(e) = self.node_failed() {
            return Err(e);
        }
        self.inner
            .node
            .send(HostServiceGroup { group, voters })
            .await
            .map_err(|_| RequestError::Restarting(group))?
    }

    async fn drop_here(&self, group: GroupId) -> Result<(), RequestError> {
        if let Some(e) = self.node_failed() {
            return Err(e);
        }
        self.inner
            .node
            .send(DropGroup(group))
            .await
            .map_err(|_| RequestError::Restarting(group))?
    }
}

/// The answer of a create or delete from its nodes' answers: success when
/// every node did its part; else the first refusal (it says what to change),
/// or the first node that could not be reached.
fn first_error(
    answers: impl Iterator<Item = Result<(), RequestError>>,
) -> Result<(), RequestError> {
    let mut unreachable = None;
    for a in answers {
        match a {
            Ok(()) => {}
            Err(e @ RequestError::MemberUnreachable { .. }) => {
                unreachable.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    unreachable.map_or(Ok(()), Err)
}

/// The answer to a create or delete request.
pub(super) fn done_answer(r: Result<(), RequestError>) -> Response {
    match r {
        Ok(()) => Response::Ok {
            result: Bytes::new(),
            leader: None,
        },
        Err(e) => Response::Err(e),
    }
}
