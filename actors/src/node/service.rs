//! Groups created at run time: the node's *service* (the factory of their
//! state machine, [`ServeGroups`]) and the hosting of a replica of a group
//! created at run time ([`HostServiceGroup`]). The cluster-wide side (which
//! nodes are asked) is `crate::engine::groups`.

use std::sync::Arc;

use actix::prelude::*;
use slog::{crit, info, warn};
use synod_core::Membership;
use synod_storage::GroupId;

use super::{HostServiceGroup, NodeActor, ServeGroups};
use crate::catalog::Record;
use crate::proto::RequestError;

impl Handler<ServeGroups> for NodeActor {
    type Result = Vec<GroupId>;

    fn handle(
        &mut self,
        ServeGroups(factory): ServeGroups,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.service = Some(Arc::clone(&factory));
        let ours: Vec<(GroupId, Record)> = self
            .catalog
            .records()
            .iter()
            .filter(|(g, _)| self.catalog.is_service(**g))
            .map(|(g, r)| (*g, r.clone()))
            .collect();
        let mut started = Vec::new();
        for (group, record) in ours {
            if self.groups.contains_key(&group) || self.deleting.contains(&group) {
                continue;
            }
            match record {
                Record::Hosted(bootstrap) => {
                    let fut = self.host(group, Arc::clone(&factory), bootstrap, ctx);
                    ctx.spawn(fut.map(move |r, act, _| {
                        if let Err(e) = r {
                            crit!(act.log, "a group created at run time cannot start again";
                                  "group" => group, "error" => e);
                        }
                    }));
                    started.push(group);
                }
                Record::Removed => {
                    // The node may have stopped between the mark and the
                    // deletion: finish it (deleting nothing is cheap).
                    self.deleting.insert(group);
                    let shared = Arc::clone(&self.shared);
                    ctx.spawn(NodeActor::delete_data(shared, group).into_actor(self).map(
                        move |r, act, _| {
                            act.deleting.remove(&group);
                            if let Err(e) = r {
                                warn!(act.log, "cannot finish deleting a removed group"; "group" => group, "error" => e);
                            }
                        },
                    ));
                }
            }
        }
        if !started.is_empty() {
            info!(self.log, "starting the groups created at run time"; "groups" => started.len());
        }
        started
    }
}

impl Handler<HostServiceGroup> for NodeActor {
    type Result = ResponseActFuture<Self, Result<(), RequestError>>;

    fn handle(&mut self, m: HostServiceGroup, ctx: &mut Context<Self>) -> Self::Result {
        let group = m.group;
        let node = self.shared.node_id;
        if self.deleting.contains(&group) {
            return self.busy(group);
        }
        if !m.voters.contains(&node) {
            // Not a member: nothing to host here.
            return self.answer_now(Ok(()));
        }
        let exists = |voters: &std::collections::BTreeSet<u64>| RequestError::GroupExists {
            group,
            node,
            voters: voters.iter().copied().collect(),
        };
        let bootstrap = match self.catalog.get(group).cloned() {
            Some(Record::Removed) => {
                return self.answer_now(Err(RequestError::GroupRemoved { group, node }))
            }
            Some(Record::Hosted(b)) => {
                if b.voters != m.voters || !b.learners.is_empty() {
                    return self.answer_now(Err(exists(&b.voters)));
                }
                // Same voters: it exists. Running, or the application's own
                // group (it starts it itself): nothing to do.
                if self.groups.contains_key(&group) || !self.catalog.is_service(group) {
                    return self.answer_now(Ok(()));
                }
                b
            }
            None => {
                if self.dormant.contains_key(&group) {
                    // The application created a group of that id here, on
                    // other nodes: ids are one name space.
                    return self.answer_now(Err(exists(&Default::default())));
                }
                if self.catalog.joining() {
                    let reason = "it was initialized with `synod init --join`, so it starts no \
                                  group as one of its first voters (it may have voted in it \
                                  before its disk was replaced); create the group without it, \
                                  then add it with `synod group add-learner` and `promote`"
                        .to_string();
                    return self.cannot_host(group, reason);
                }
                Membership::with_voters(m.voters.iter().copied())
            }
        };
        let Some(factory) = self.service.clone() else {
            if self.started.elapsed() < self.shared.cfg.service_grace {
                // Still starting, maybe: the creator retries this.
                return self.answer_now(Err(RequestError::Restarting(group)));
            }
            return self.answer_now(Err(RequestError::NoGroupService { node }));
        };
        if let Err(e) = self.catalog.mark_service(group) {
            let reason = format!("cannot record it in the catalog: {e}");
            return self.cannot_host(group, reason);
        }
        Box::pin(
            self.host(group, factory, bootstrap, ctx)
                .map(move |r, _, _| {
                    r.map(|_| ()).map_err(|reason| RequestError::CannotHost {
                        group,
                        node,
                        reason,
                    })
                }),
        )
    }
}
