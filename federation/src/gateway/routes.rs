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
use std::time::Instant;

use api::{ErrorCode, Instance};

use super::{Gateway, RequestContext, Route};
use crate::error::FedError;
use crate::identity::Principal;
use crate::path::ZonePath;
use crate::registry::Child;
use crate::scatter::gather;

/// At most this many cut-off creates wait to be reconciled at once (each holds up to a batch's
/// ids); beyond it a create is reconciled at its next read only.
const MAX_CUT_OFFS: usize = 10_000;

/// A create cut off at a child: the ids it may have made there, and when.
pub(super) struct CutOff {
    child_id: String,
    ids: Vec<String>,
    at: Instant,
}

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
    /// of its id, or of every instance of a batch, whose ids derive from the batch's. And notes it
    /// to be reconciled once the child is back ([`Gateway::reconcile_cut_offs`]).
    pub(super) async fn remember_cut_off(&self, id: &str, req: &api::InstanceCreate, route: &Route) {
        let ids = if !req.is_batch() {
            self.remember_route(id, route).await;
            vec![id.to_owned()]
        } else {
            match api::batch_member_ids(id, req.count()) {
                Some(ids) => {
                    self.remember_routes(&ids, route).await;
                    ids
                }
                None => {
                    tracing::warn!(batch = id, "a batch id that is not a UUID: its instances cannot be found again");
                    return;
                }
            }
        };
        let mut cut_offs = self.cut_offs.lock().unwrap_or_else(|e| e.into_inner());
        if cut_offs.len() < MAX_CUT_OFFS {
            cut_offs.push(CutOff { child_id: route.child_id.clone(), ids, at: Instant::now() });
        } else {
            // Far more creates cut off than ever reconcile at once: the routes stay, and a read
            // of each reconciles it as before.
            tracing::warn!(instance = id, "too many cut-off creates waiting; this one is reconciled at its next read");
        }
    }

    /// Whether creates cut off at a child wait to be reconciled.
    pub fn has_cut_offs(&self) -> bool {
        !self.cut_offs.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Reconciles the creates cut off at children that are online again, without waiting for a
    /// read: each such child is asked for each id, on this zone's own account. Made there: the
    /// kept route stays, and the instance is known, once. Not made (the child does not have it):
    /// the route goes, and the instance is nowhere. A child still offline, or that does not
    /// answer now, keeps its entries for the next call. Answers how many ids were settled.
    ///
    /// Only entries older than `settle` are asked about: a child that was frozen mid-create
    /// finishes that create when it resumes, so "not there" is believed only once it had time to.
    pub async fn reconcile_cut_offs(&self, settle: std::time::Duration) -> usize {
        let ready: Vec<CutOff> = {
            let mut cut_offs = self.cut_offs.lock().unwrap_or_else(|e| e.into_inner());
            let online = |c: &CutOff| self.registry.get(&c.child_id).is_some_and(|child| child.online);
            let (ready, waiting) = cut_offs.drain(..).partition(|c| online(c) && c.at.elapsed() >= settle);
            *cut_offs = waiting;
            ready
        };
        let caller = Principal::admin(format!("zone:{}", self.me.name));
        let path = ZonePath::empty().through(&self.me.id);
        let mut settled = 0;
        for mut cut in ready {
            let Some(child) = self.registry.get(&cut.child_id) else {
                continue; // the child was deleted: its routes went with it
            };
            let mut unsettled = Vec::new();
            for id in cut.ids.drain(..) {
                let hop = self.hop(&caller, &path, self.settings.scatter_deadline);
                match self.transport.instance(&child, &hop, &id).await {
                    Ok(Some(_)) => {
                        tracing::info!(instance = %id, child = %child.name, "a create cut off at a child was made there");
                        settled += 1;
                    }
                    Ok(None) => {
                        tracing::info!(instance = %id, child = %child.name, "a create cut off at a child was not made there");
                        self.forget_route(&id).await;
                        settled += 1;
                    }
                    Err(e) => {
                        tracing::debug!(instance = %id, child = %child.name, error = %e, "cannot reconcile a cut-off create yet");
                        unsettled.push(id);
                    }
                }
            }
            if !unsettled.is_empty() {
                cut.ids = unsettled;
                self.cut_offs.lock().unwrap_or_else(|e| e.into_inner()).push(cut);
            }
        }
        settled
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
