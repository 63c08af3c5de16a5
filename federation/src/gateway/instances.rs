//! One instance wherever it is below this zone: create (ranked like a placement, tried in turn),
//! show, act on and delete (sent where the route cache says it is).
//!
//! Cost: a create ranks children in O(children × requirements) and forwards to one candidate at a
//! time; a multi-create of n instances likewise (the whole batch to one zone), plus n route
//! records at every zone on the way; show, action and delete are one forward when the route is
//! known (moka, then the database), else one search of every online child in parallel (see
//! [`super::routes`]).

use api::{
    Answer, CodedError, Creation, ErrorCode, Instance, InstanceAction, InstanceActionKind, InstanceBatch,
    InstanceCreate,
};

use super::lookup::vouched;
use super::routes::Located;
use super::{Gateway, RequestContext, Route, Routed};
use crate::error::FedError;
use crate::lookup::Source;
use crate::matching::may_hold;
use crate::route::{candidates, Target};

impl Gateway {
    /// `forward`, cut off with [`FedError::WentOffline`] (503 `zone_unavailable`) the moment
    /// `child` goes offline, instead of waiting out the forward timeout on a child that accepts
    /// connections and never answers (a frozen process). A child already offline when the
    /// request starts is still tried: offline is a judgement of polls, not a certainty.
    async fn unless_offline<T>(
        &self,
        child: &crate::registry::Child,
        forward: impl std::future::Future<Output = Result<T, FedError>>,
    ) -> Result<T, FedError> {
        if !child.online {
            return forward.await;
        }
        tokio::select! {
            answer = forward => answer,
            _ = self.registry.went_offline(&child.id) => {
                tracing::warn!(child = %child.name, "a child went offline with a request in flight; cut off");
                Err(FedError::WentOffline { zone: child.name.clone() })
            }
        }
    }

    /// Creates instance `id`: on this zone's own hosts or in the best child that may take it,
    /// trying the next candidate when one refuses. A child that does not answer in time is not
    /// retried elsewhere: the instance may exist there, and a second one must not be made.
    pub async fn create(
        &self,
        ctx: &RequestContext,
        id: &str,
        req: &InstanceCreate,
    ) -> Result<Routed<Instance>, FedError> {
        if req.is_batch() {
            return Err(FedError::internal("a multi-create reached the single create"));
        }
        let routed = self.create_any(ctx, id, req).await?;
        match routed.value {
            Creation::One(instance) => {
                Ok(Routed { value: *instance, generation: routed.generation, lowest: routed.lowest })
            }
            Creation::Batch(_) => Err(FedError::internal("a single create made a batch")),
        }
    }

    /// A multi-create (`req.count` above 1) of the batch `batch_id`: the whole batch goes to one
    /// zone (this one's own hosts or one child) whose free capacity may hold all of it, and that
    /// zone places it all or nothing; one that refuses passes it to the next candidate, as a
    /// single create. Every zone on the way records which child holds each instance.
    pub async fn create_batch(
        &self,
        ctx: &RequestContext,
        batch_id: &str,
        req: &InstanceCreate,
    ) -> Result<Routed<Vec<Instance>>, FedError> {
        if !req.is_batch() {
            return Err(FedError::internal("a single create reached the multi-create"));
        }
        let routed = self.create_any(ctx, batch_id, req).await?;
        match routed.value {
            Creation::Batch(batch) => {
                Ok(Routed { value: batch.instances, generation: routed.generation, lowest: routed.lowest })
            }
            Creation::One(_) => Err(FedError::internal("a multi-create made one instance")),
        }
    }

    /// Both creates: `id` is the instance's, or a batch's.
    async fn create_any(
        &self,
        ctx: &RequestContext,
        id: &str,
        req: &InstanceCreate,
    ) -> Result<Routed<Creation>, FedError> {
        let client =
            req.client_id.clone().ok_or_else(|| FedError::internal("a create reached the gateway without a client"))?;
        if self.registry.is_empty() {
            return self.create_here(ctx, id, req, &client).await;
        }
        let own = self.own_aggregate().await?;
        let children = self.registry.children();
        let mut ranked = candidates(&own, &children, &req.requirements, &req.resources);
        if req.is_batch() {
            // A batch is never split between zones: skip those that cannot hold all of it.
            ranked.retain(|c| {
                let agg = match &c.target {
                    Target::Local => &own,
                    Target::Child(child) => &child.capabilities,
                };
                may_hold(agg, &req.resources, req.count())
            });
        }
        let path = ctx.path.through(&self.me.id);
        let mut refusals = Vec::new();
        for candidate in ranked {
            let child = match candidate.target {
                Target::Local => match self.create_here(ctx, id, req, &client).await {
                    Err(e) if e.is_refusal() => {
                        refusals.push(format!("{}: {e}", self.me.name));
                        continue;
                    }
                    other => return other,
                },
                Target::Child(child) => child,
            };
            let hop = self.hop(&ctx.caller, &path, self.settings.forward_timeout);
            let sent = if req.is_batch() {
                self.unless_offline(&child, self.transport.create_batch(&child, &hop, id, req)).await.map(|a| Answer {
                    value: Creation::Batch(InstanceBatch { instances: a.value }),
                    generation: a.generation,
                    lowest: a.lowest,
                })
            } else {
                self.unless_offline(&child, self.transport.create(&child, &hop, id, req)).await.map(|a| Answer {
                    value: Creation::One(Box::new(a.value)),
                    generation: a.generation,
                    lowest: a.lowest,
                })
            };
            match sent {
                Ok(answer) => {
                    let route = Route { child_id: child.id.clone(), client_id: client.clone() };
                    match &answer.value {
                        Creation::One(instance) => self.remember_route(&instance.id, &route).await,
                        Creation::Batch(batch) => {
                            let ids: Vec<String> = batch.instances.iter().map(|i| i.id.clone()).collect();
                            self.remember_routes(&ids, &route).await;
                        }
                    }
                    let generation = self.bump_generation().await;
                    let source = Source::Child(child.id.clone());
                    self.lookups.changed(
                        &source,
                        &client,
                        answer.generation,
                        answer.lowest.map(|l| vouched(&child, l)),
                    );
                    let mut made = answer.value;
                    for instance in made.instances_mut() {
                        self.prefix(&mut instance.zone_path);
                    }
                    tracing::info!(id, child = %child.name, count = req.count(), "create routed to a child zone");
                    return Ok(Routed { value: made, generation, lowest: self.answer_now(&client, None) });
                }
                Err(e) if e.is_refusal() => {
                    tracing::info!(child = %child.name, error = %e, "child zone refused a create; trying the next");
                    refusals.push(format!("{}: {e}", child.name));
                }
                Err(FedError::WentOffline { zone }) => {
                    // Reconciliation: this zone chose the id, so it keeps the route. Once the
                    // child is back, GET /v1/instances/{id} here finds the instance there (it was
                    // made, once: the child refuses a second create of that id) or answers 404
                    // and forgets the route (it was not). Never twice, never unknown. A batch's
                    // instances have ids derived from the batch's (`api::batch_member_ids`): the
                    // same holds for each of them.
                    self.remember_cut_off(id, req, &Route { child_id: child.id.clone(), client_id: client.clone() })
                        .await;
                    return Err(FedError::WentOffline { zone });
                }
                Err(FedError::Timeout { zone, after_ms }) => {
                    self.remember_cut_off(id, req, &Route { child_id: child.id.clone(), client_id: client.clone() })
                        .await;
                    let what = if req.is_batch() {
                        format!(
                            "the {} instances of batch {id} (named {}-0001 and up) may exist there \
                             (GET /v1/instances/{{id}} of each tells; their ids derive from the batch's)",
                            req.count(),
                            req.name
                        )
                    } else {
                        format!("instance {id} may exist there (GET /v1/instances/{id} tells)")
                    };
                    return Err(FedError::api(
                        ErrorCode::Timeout,
                        format!("zone {zone} did not answer the create within {after_ms} ms; {what}"),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Err(self.nowhere(&refusals))
    }

    async fn create_here(
        &self,
        ctx: &RequestContext,
        id: &str,
        req: &InstanceCreate,
        client: &str,
    ) -> Result<Routed<Creation>, FedError> {
        let (value, generation) = if req.is_batch() {
            let changed = self.local.create_batch(&ctx.caller, id, req).await?;
            (Creation::Batch(InstanceBatch { instances: changed.value }), changed.generation)
        } else {
            let changed = self.local.create(&ctx.caller, id, req).await?;
            (Creation::One(Box::new(changed.value)), changed.generation)
        };
        self.lookups.changed(&Source::Local, client, generation, Some(Some(self.here(client))));
        Ok(Routed { value, generation, lowest: self.answer_now(client, Some(true)) })
    }

    /// Shows an instance wherever it is below this zone.
    pub async fn instance(&self, ctx: &RequestContext, id: &str) -> Result<Instance, FedError> {
        let not_found = || FedError::not_found(format!("instance {id}"));
        if self.registry.is_empty() {
            return self.local.instance(&ctx.caller, id).await?.ok_or_else(not_found);
        }
        let path = ctx.path.through(&self.me.id);
        if let Some((child, _)) = self.routed_child(ctx, id).await? {
            let hop = self.hop(&ctx.caller, &path, self.settings.scatter_deadline);
            return match self.transport.instance(&child, &hop, id).await? {
                Some(mut i) => {
                    self.prefix(&mut i.zone_path);
                    Ok(i)
                }
                None => {
                    self.forget_route(id).await;
                    Err(not_found())
                }
            };
        }
        if let Some(i) = self.local.instance(&ctx.caller, id).await? {
            return Ok(i);
        }
        match self.search(ctx, id).await? {
            Some((_, mut i)) => {
                self.prefix(&mut i.zone_path);
                Ok(i)
            }
            None => Err(not_found()),
        }
    }

    /// Starts, stops, reboots or migrates an instance wherever it is.
    pub async fn action(
        &self,
        ctx: &RequestContext,
        id: &str,
        action: &InstanceAction,
    ) -> Result<Routed<Instance>, FedError> {
        match self.locate(ctx, id).await? {
            Located::Local => {
                let changed = self.local.action(&ctx.caller, id, action).await?;
                if let Some(g) = changed.generation {
                    // A migration among this zone's hosts: what they hold per client is unchanged.
                    self.lookups.own_bump(&Source::Local, g);
                }
                Ok(Routed { value: changed.value, generation: changed.generation, lowest: None })
            }
            Located::Child(child, client) => {
                let path = ctx.path.through(&self.me.id);
                let hop = self.hop(&ctx.caller, &path, self.settings.forward_timeout);
                let answer = match self.unless_offline(&child, self.transport.action(&child, &hop, id, action)).await {
                    Err(e) if e.code() == ErrorCode::NotFound => {
                        self.forget_route(id).await;
                        return Err(e);
                    }
                    other => other?,
                };
                let migrated = action.action == InstanceActionKind::Migrate;
                let generation = if migrated { self.bump_generation().await } else { None };
                if migrated || answer.generation.is_some() {
                    self.lookups.changed(
                        &Source::Child(child.id.clone()),
                        &client,
                        answer.generation,
                        answer.lowest.map(|l| vouched(&child, l)),
                    );
                }
                let mut instance = answer.value;
                self.prefix(&mut instance.zone_path);
                let lowest = if migrated { self.answer_now(&client, None) } else { None };
                Ok(Routed { value: instance, generation, lowest })
            }
        }
    }

    /// Deletes an instance wherever it is.
    pub async fn delete(&self, ctx: &RequestContext, id: &str) -> Result<Routed<()>, FedError> {
        match self.locate(ctx, id).await? {
            Located::Local => {
                let changed = self.local.delete(&ctx.caller, id).await?;
                let client = changed.value;
                let still = self.local.has_client(&client).await?;
                let answer = still.then(|| self.here(&client));
                self.lookups.changed(&Source::Local, &client, changed.generation, Some(answer));
                Ok(Routed { value: (), generation: changed.generation, lowest: self.answer_now(&client, Some(still)) })
            }
            Located::Child(child, client) => {
                let path = ctx.path.through(&self.me.id);
                let hop = self.hop(&ctx.caller, &path, self.settings.forward_timeout);
                let answer = match self.unless_offline(&child, self.transport.delete(&child, &hop, id)).await {
                    Err(e) if e.code() == ErrorCode::NotFound => {
                        self.forget_route(id).await;
                        return Err(e);
                    }
                    other => other?,
                };
                self.forget_route(id).await;
                let generation = self.bump_generation().await;
                self.lookups.changed(
                    &Source::Child(child.id.clone()),
                    &client,
                    answer.generation,
                    answer.lowest.map(|l| vouched(&child, l)),
                );
                Ok(Routed { value: (), generation, lowest: self.answer_now(&client, None) })
            }
        }
    }
}
