//! Which child holds an instance this zone routed: the route cache (moka in front of the
//! database), and the search of the children when no route is known.
//!
//! Cost: a known route is O(1) (a cache hit, else one database read); a search asks every online
//! child at once, O(children) requests under the scatter deadline, and remembers the answer.
//!
//! Misses are remembered too, per child: a child that answered "no such instance" is not asked
//! about that id again while its generation is the one it had then (any create below it moves
//! the generation) and for at most 10 s, so repeating an unknown id (a typo, a deleted
//! instance, someone probing) costs no child request. The key includes who asked (admin or the
//! member's client), since a member is told "not found" for another client's instance.

use std::sync::Arc;

use api::{ErrorCode, Instance};

use super::{Gateway, RequestContext, Route};
use crate::error::FedError;
use crate::registry::Child;
use crate::scatter::gather;

/// Where an instance is.
pub(super) enum Located {
    Local,
    Child(Arc<Child>, String),
}

impl Gateway {
    pub(super) async fn remember_route(&self, id: &str, route: &Route) {
        self.routes.insert(id.to_owned(), route.clone());
        if let Err(e) = self.local.route_put(id, route).await {
            // The instance exists; without the mapping a later request finds it by asking the
            // children, and remembers it then.
            tracing::error!(instance = id, error = %e, "cannot record which child holds an instance");
        }
    }

    /// [`Gateway::remember_route`] for the instances of a multi-create.
    pub(super) async fn remember_routes(&self, ids: &[String], route: &Route) {
        for id in ids {
            self.routes.insert(id.clone(), route.clone());
        }
        if let Err(e) = self.local.routes_put(ids, route).await {
            tracing::error!(count = ids.len(), error = %e, "cannot record which child holds a batch of instances");
        }
    }

    /// Keeps the route of a create cut off at a child (it may or may not have been made there):
    /// of its id, or of every instance of a batch, whose ids derive from the batch's.
    pub(super) async fn remember_cut_off(&self, id: &str, req: &api::InstanceCreate, route: &Route) {
        if !req.is_batch() {
            return self.remember_route(id, route).await;
        }
        match api::batch_member_ids(id, req.count()) {
            Some(ids) => self.remember_routes(&ids, route).await,
            None => tracing::warn!(batch = id, "a batch id that is not a UUID: its instances cannot be found again"),
        }
    }

    pub(super) async fn forget_route(&self, id: &str) {
        self.routes.invalidate(id);
        if let Err(e) = self.local.route_delete(id).await {
            tracing::warn!(instance = id, error = %e, "cannot drop an instance mapping");
        }
    }

    async fn route(&self, id: &str) -> Result<Option<Route>, FedError> {
        if let Some(r) = self.routes.get(id) {
            return Ok(Some(r));
        }
        let found = self.local.route_get(id).await?;
        if let Some(r) = &found {
            self.routes.insert(id.to_owned(), r.clone());
        }
        Ok(found)
    }

    /// The child a route names, if the caller may see the instance and the child still exists.
    pub(super) async fn routed_child(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<Option<(Arc<Child>, String)>, FedError> {
        let Some(route) = self.route(id).await? else { return Ok(None) };
        if !ctx.caller.may_see(&route.client_id) {
            return Err(FedError::not_found(format!("instance {id}")));
        }
        match self.registry.get(&route.child_id) {
            Some(child) => Ok(Some((child, route.client_id))),
            None => {
                self.forget_route(id).await;
                Ok(None)
            }
        }
    }

    /// Asks the reachable children for an instance this zone has no mapping of, and remembers
    /// where it was found.
    pub(super) async fn search(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<Option<(Arc<Child>, Instance)>, FedError> {
        let children = self.registry.children();
        let (reachable, mut silent): (Vec<Arc<Child>>, Vec<Arc<Child>>) =
            children.iter().cloned().partition(|c| c.online);
        let asker = ctx.caller.visibility_key();
        let miss_key = |child: &Child| (child.id.clone(), id.to_owned(), asker.clone());
        // Children that answered "not there" at their current generation are not asked again.
        let reachable: Vec<Arc<Child>> =
            reachable.into_iter().filter(|c| self.misses.get(&miss_key(c)) != Some(c.generation)).collect();
        let path = ctx.path.through(&self.me.id);
        let answers = gather(&reachable, self.settings.scatter_deadline, |child| {
            let path = &path;
            async move {
                let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                self.transport.instance(&child, &hop, id).await
            }
        })
        .await;
        for (child, answer) in answers {
            match answer {
                Ok(Some(instance)) => {
                    let route = Route { child_id: child.id.clone(), client_id: instance.client_id.clone() };
                    self.remember_route(id, &route).await;
                    return Ok(Some((child, instance)));
                }
                Ok(None) => self.misses.insert(miss_key(&child), child.generation),
                Err(e) => {
                    tracing::warn!(child = %child.name, error = %e, "child zone did not answer an instance search");
                    silent.push(child);
                }
            }
        }
        if silent.is_empty() {
            Ok(None)
        } else {
            let names: Vec<&str> = silent.iter().map(|c| c.name.as_str()).collect();
            Err(FedError::api(
                ErrorCode::ZoneUnavailable,
                format!(
                    "instance {id} is not in zone {} or in the child zones that answered; {} did not answer",
                    self.me.name,
                    names.join(", ")
                ),
            ))
        }
    }

    /// Finds where an instance is without fetching it when a mapping says.
    pub(super) async fn locate(&self, ctx: &RequestContext, id: &str) -> Result<Located, FedError> {
        if self.registry.is_empty() {
            return Ok(Located::Local);
        }
        if let Some((child, client)) = self.routed_child(ctx, id).await? {
            return Ok(Located::Child(child, client));
        }
        if self.local.instance(&ctx.caller, id).await?.is_some() {
            return Ok(Located::Local);
        }
        match self.search(ctx, id).await? {
            Some((child, instance)) => Ok(Located::Child(child, instance.client_id)),
            None => Err(FedError::not_found(format!("instance {id}"))),
        }
    }
}
