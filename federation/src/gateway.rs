//! The gateway of one zone: everything a zone does with its children, on top of what it does
//! itself ([`LocalZone`], implemented by `zone-node`).
//!
//! Every REST call that may involve children goes through [`Gateway`], which decides where it
//! runs: this zone's own hosts, one child (forwarded with the caller's identity and the path of
//! zones crossed), or all of them (scatter-gather). A zone without children takes the short way
//! to its own hosts, so a leaf zone pays nothing for federation.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{
    Aggregate, ChildSummary, ErrorCode, HostList, Instance, InstanceAction, InstanceActionKind, InstanceCreate,
    InstanceList, LowestZone, Placement, PlacementRequest, SubtreeEntry, ZoneInfo,
};

use crate::error::FedError;
use crate::identity::Principal;
use crate::lookup::{compose, LookupCache, Me, Source};
use crate::path::ZonePath;
use crate::registry::{Child, Credentials, Registry};
use crate::route::{candidates, Target};
use crate::scatter::{gather, merge, per_source_limit, SourcePage};
use crate::transport::{ChildTransport, Hop, ListQuery};

/// How long this zone's own aggregate is reused when ranking candidates: ranking is a hint (the
/// zone that is chosen makes the exact decision), so it need not cost three queries per create.
const OWN_AGGREGATE_TTL: Duration = Duration::from_millis(500);

/// This zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub api_url: String,
}

/// Gateway settings (from the node's `[federation]` configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests that crossed this many zones are refused.
    pub hop_limit: usize,
    /// How long a forwarded change (create, action, delete) may take at a child.
    pub forward_timeout: Duration,
    /// How long a list or lookup waits for children.
    pub scatter_deadline: Duration,
    /// Lowest-zone answers kept (per source and client).
    pub lookup_cache_capacity: u64,
    /// Instance → child mappings kept in memory (the database keeps them all).
    pub route_cache_capacity: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            hop_limit: api::federation::DEFAULT_HOP_LIMIT,
            forward_timeout: Duration::from_secs(60),
            scatter_deadline: Duration::from_secs(5),
            lookup_cache_capacity: 1_000_000,
            route_cache_capacity: 1_000_000,
        }
    }
}

/// The request being served: who it acts for and the zones it crossed before this one.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub caller: Principal,
    pub path: ZonePath,
}

/// A change's result and what to tell the zone that forwarded it (response headers).
#[derive(Debug, Clone, PartialEq)]
pub struct Routed<T> {
    pub value: T,
    /// This zone's generation after the change, when the change moved it.
    pub generation: Option<i64>,
    /// This zone's lowest zone for the client after the change, when it can tell without asking.
    pub lowest: Option<Option<LowestZone>>,
}

/// A local change and this zone's generation after it (`None` when it did not move).
#[derive(Debug, Clone, PartialEq)]
pub struct Changed<T> {
    pub value: T,
    pub generation: Option<i64>,
}

/// Which child holds an instance this zone routed, and for which client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub child_id: String,
    pub client_id: String,
}

/// A lowest-zone answer and the children that could not be asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub answer: Option<LowestZone>,
    pub unreachable: Vec<String>,
}

/// What this zone does itself: its own hosts and instances, its generation, and the instance
/// mappings it keeps. Implemented by `zone-node` over its store and bus; every call applies the
/// caller's scoping as the zone's own REST API would.
#[async_trait::async_trait]
pub trait LocalZone: Send + Sync + 'static {
    /// The aggregate of this zone's own up hosts, with the capacity entries of
    /// [`crate::matching::CAPACITY_KEYS`].
    async fn aggregate(&self) -> Result<Aggregate, FedError>;
    async fn placement(&self, caller: &Principal, req: &PlacementRequest) -> Result<Placement, FedError>;
    /// Creates instance `id` on this zone's own hosts (`no_valid_host` when none can take it).
    async fn create(&self, caller: &Principal, id: &str, req: &InstanceCreate) -> Result<Changed<Instance>, FedError>;
    /// `None` when this zone has no such instance visible to the caller.
    async fn instance(&self, caller: &Principal, id: &str) -> Result<Option<Instance>, FedError>;
    async fn action(
        &self,
        caller: &Principal,
        id: &str,
        action: &InstanceAction,
    ) -> Result<Changed<Instance>, FedError>;
    /// Deletes an instance of this zone and returns its client.
    async fn delete(&self, caller: &Principal, id: &str) -> Result<Changed<String>, FedError>;
    /// A page of this zone's own instances.
    async fn instances(&self, caller: &Principal, query: &ListQuery) -> Result<InstanceList, FedError>;
    /// A page of this zone's own hosts.
    async fn hosts(&self, caller: &Principal, query: &ListQuery) -> Result<HostList, FedError>;
    /// Whether this zone's own hosts hold any instance of the client.
    async fn has_client(&self, client_id: &str) -> Result<bool, FedError>;
    /// Bumps and returns this zone's generation (a change in its subtree passed through it).
    async fn bump_generation(&self) -> Result<i64, FedError>;
    async fn route_get(&self, instance_id: &str) -> Result<Option<Route>, FedError>;
    async fn route_put(&self, instance_id: &str, route: &Route) -> Result<(), FedError>;
    async fn route_delete(&self, instance_id: &str) -> Result<(), FedError>;
}

/// Where an instance is.
enum Located {
    Local,
    Child(Arc<Child>, String),
}

/// Why a poll failed, or what it learnt.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    Answered(Box<ZoneInfo>),
    Failed(String),
}

pub struct Gateway {
    me: Identity,
    settings: Settings,
    registry: Registry,
    transport: Arc<dyn ChildTransport>,
    local: Arc<dyn LocalZone>,
    lookups: LookupCache,
    routes: moka::sync::Cache<String, Route>,
    // A std mutex: held to clone or swap, never across an await.
    own_aggregate: Mutex<Option<(Instant, Aggregate)>>,
}

impl Gateway {
    pub fn new(
        me: Identity,
        settings: Settings,
        transport: Arc<dyn ChildTransport>,
        local: Arc<dyn LocalZone>,
    ) -> Gateway {
        Gateway {
            lookups: LookupCache::new(settings.lookup_cache_capacity),
            routes: moka::sync::Cache::new(settings.route_cache_capacity),
            me,
            settings,
            registry: Registry::new(),
            transport,
            local,
            own_aggregate: Mutex::new(None),
        }
    }

    pub fn me(&self) -> &Identity {
        &self.me
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn me_ref(&self) -> Me<'_> {
        Me { id: &self.me.id, name: &self.me.name, api_url: &self.me.api_url }
    }

    /// This zone as the lowest zone of `client`.
    fn here(&self, client: &str) -> LowestZone {
        self.me_ref().here(client)
    }

    // --- keeping the view current --------------------------------------------------------

    /// Replaces the children (from the database, after a change or a poll), and drops cached
    /// answers of children whose generation moved or that are gone.
    pub fn set_children(&self, children: Vec<Child>) {
        let generations: Vec<(String, i64)> = children.iter().map(|c| (c.id.clone(), c.generation)).collect();
        for removed in self.registry.replace(children) {
            self.lookups.forget(&Source::Child(removed));
        }
        for (id, g) in generations {
            self.lookups.observe(&Source::Child(id), g);
        }
    }

    /// This zone's generation as stored (changes made by other nodes of the zone show here).
    pub fn observe_own_generation(&self, generation: i64) {
        self.lookups.observe(&Source::Local, generation);
    }

    /// This zone's generation as this node last knew it (from the database or its own changes):
    /// what a lookup answer is valid for. Never newer than the stored one.
    pub fn own_generation(&self) -> Option<i64> {
        self.lookups.accounted(&Source::Local)
    }

    /// Refuses a request that already crossed this zone or too many zones.
    pub fn admit(&self, path: &ZonePath) -> Result<(), FedError> {
        path.admit(&self.me.id, self.settings.hop_limit)
    }

    fn hop<'a>(&'a self, caller: &'a Principal, path: &'a ZonePath, timeout: Duration) -> Hop<'a> {
        Hop { path, caller, origin: &self.me.name, timeout }
    }

    /// `GET /v1/zone`'s children.
    pub fn children_summary(&self) -> Vec<ChildSummary> {
        self.registry
            .children()
            .iter()
            .map(|c| ChildSummary { id: c.id.clone(), name: c.name.clone(), status: c.status() })
            .collect()
    }

    /// Every zone below this one, as last polled.
    pub fn subtree(&self) -> Vec<SubtreeEntry> {
        self.registry.subtree()
    }

    /// Every zone below this one, asked afresh of each reachable child (which asks its own, and so
    /// on; the zone path stops a walk that loops). A child that does not answer contributes what
    /// it last reported. Used by zone-add, so a registration made a moment ago anywhere below is
    /// seen, where a poll would be up to an interval behind per level.
    pub async fn live_subtree(&self, ctx: &RequestContext) -> Vec<SubtreeEntry> {
        let children = self.registry.children();
        let path = ctx.path.through(&self.me.id);
        let answers = gather(&children, self.settings.scatter_deadline, |child| {
            let path = &path;
            async move {
                let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                let info = self.transport.zone_info(&child, &hop, Some(api::SubtreeView::Live)).await?;
                Ok(info.subtree.unwrap_or_default())
            }
        })
        .await;
        let mut out = Vec::new();
        for (child, answer) in answers {
            out.push(SubtreeEntry { id: child.id.clone(), name: child.name.clone(), path: vec![child.name.clone()] });
            let below = match answer {
                Ok(below) => below,
                Err(e) => {
                    tracing::debug!(child = %child.name, error = %e, "no live subtree; using the polled one");
                    child.subtree.clone()
                }
            };
            for e in below {
                let mut p = vec![child.name.clone()];
                p.extend(e.path);
                out.push(SubtreeEntry { id: e.id, name: e.name, path: p });
            }
        }
        out.truncate(api::federation::SUBTREE_MAX_ENTRIES);
        out
    }

    // --- capabilities and routing ---------------------------------------------------------

    /// This zone's aggregate: its own up hosts merged with its online, enabled children's.
    pub async fn aggregate(&self) -> Result<Aggregate, FedError> {
        let mut agg = self.local.aggregate().await?;
        for c in self.registry.children().iter().filter(|c| c.routable()) {
            api::merge_aggregates(&mut agg, &c.capabilities);
        }
        Ok(agg)
    }

    async fn own_aggregate(&self) -> Result<Aggregate, FedError> {
        {
            let memo = self.own_aggregate.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, agg)) = memo.as_ref() {
                if at.elapsed() < OWN_AGGREGATE_TTL {
                    return Ok(agg.clone());
                }
            }
        }
        let agg = self.local.aggregate().await?;
        *self.own_aggregate.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), agg.clone()));
        Ok(agg)
    }

    fn prefix(&self, path: &mut Vec<String>) {
        path.insert(0, self.me.name.clone());
    }

    fn nowhere(&self, refusals: &[String]) -> FedError {
        if refusals.is_empty() {
            FedError::api(
                ErrorCode::NoValidHost,
                format!(
                    "no host of zone {} or of its online, enabled child zones meets the requirements with the resources free",
                    self.me.name
                ),
            )
        } else {
            FedError::api(
                ErrorCode::NoValidHost,
                format!("no zone below {} could take it: {}", self.me.name, refusals.join("; ")),
            )
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
        let client =
            req.client_id.clone().ok_or_else(|| FedError::internal("a create reached the gateway without a client"))?;
        if self.registry.is_empty() {
            return self.create_here(ctx, id, req, &client).await;
        }
        let own = self.own_aggregate().await?;
        let children = self.registry.children();
        let ranked = candidates(&own, &children, &req.requirements, &req.resources);
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
            match self.transport.create(&child, &hop, id, req).await {
                Ok(answer) => {
                    let route = Route { child_id: child.id.clone(), client_id: client.clone() };
                    self.remember_route(id, &route).await;
                    let generation = self.bump_generation().await;
                    let source = Source::Child(child.id.clone());
                    self.lookups.changed(&source, &client, answer.generation, answer.lowest);
                    let mut instance = answer.value;
                    self.prefix(&mut instance.zone_path);
                    tracing::info!(instance = id, child = %child.name, "create routed to a child zone");
                    return Ok(Routed { value: instance, generation, lowest: self.answer_now(&client, None) });
                }
                Err(e) if e.is_refusal() => {
                    tracing::info!(child = %child.name, error = %e, "child zone refused a create; trying the next");
                    refusals.push(format!("{}: {e}", child.name));
                }
                Err(FedError::Timeout { zone, after_ms }) => {
                    return Err(FedError::api(
                        ErrorCode::Timeout,
                        format!(
                            "zone {zone} did not answer the create within {after_ms} ms; instance {id} may exist there \
                             (GET /v1/instances/{id} tells)"
                        ),
                    ))
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
    ) -> Result<Routed<Instance>, FedError> {
        let changed = self.local.create(&ctx.caller, id, req).await?;
        self.lookups.changed(&Source::Local, client, changed.generation, Some(Some(self.here(client))));
        Ok(Routed { value: changed.value, generation: changed.generation, lowest: self.answer_now(client, Some(true)) })
    }

    /// Where a create would land, creating nothing.
    pub async fn placement(&self, ctx: &RequestContext, req: &PlacementRequest) -> Result<Placement, FedError> {
        if self.registry.is_empty() {
            return self.local.placement(&ctx.caller, req).await;
        }
        let own = self.own_aggregate().await?;
        let children = self.registry.children();
        let path = ctx.path.through(&self.me.id);
        let mut refusals = Vec::new();
        for candidate in candidates(&own, &children, &req.requirements, &req.resources) {
            let answer = match &candidate.target {
                Target::Local => self.local.placement(&ctx.caller, req).await,
                Target::Child(child) => {
                    let hop = self.hop(&ctx.caller, &path, self.settings.scatter_deadline);
                    self.transport.placement(child, &hop, req).await.map(|mut p| {
                        self.prefix(&mut p.zone_path);
                        p
                    })
                }
            };
            match answer {
                Err(e) if e.is_refusal() || e.code() == ErrorCode::Timeout => {
                    refusals.push(format!("{}: {e}", candidate.name(&self.me.name)))
                }
                other => return other,
            }
        }
        Err(self.nowhere(&refusals))
    }

    async fn bump_generation(&self) -> Option<i64> {
        match self.local.bump_generation().await {
            Ok(g) => {
                self.lookups.own_bump(&Source::Local, g);
                Some(g)
            }
            Err(e) => {
                // The change is made; only this zone's parents learn of it one poll later.
                tracing::error!(error = %e, "cannot bump this zone's generation");
                None
            }
        }
    }

    // --- one instance -------------------------------------------------------------------------

    async fn remember_route(&self, id: &str, route: &Route) {
        self.routes.insert(id.to_owned(), route.clone());
        if let Err(e) = self.local.route_put(id, route).await {
            // The instance exists; without the mapping a later request finds it by asking the
            // children, and remembers it then.
            tracing::error!(instance = id, error = %e, "cannot record which child holds an instance");
        }
    }

    async fn forget_route(&self, id: &str) {
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
    async fn routed_child(&self, ctx: &RequestContext, id: &str) -> Result<Option<(Arc<Child>, String)>, FedError> {
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
    async fn search(&self, ctx: &RequestContext, id: &str) -> Result<Option<(Arc<Child>, Instance)>, FedError> {
        let children = self.registry.children();
        let (reachable, mut silent): (Vec<Arc<Child>>, Vec<Arc<Child>>) =
            children.iter().cloned().partition(|c| c.online);
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
                Ok(None) => {}
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
    async fn locate(&self, ctx: &RequestContext, id: &str) -> Result<Located, FedError> {
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
                let answer = match self.transport.action(&child, &hop, id, action).await {
                    Err(e) if e.code() == ErrorCode::NotFound => {
                        self.forget_route(id).await;
                        return Err(e);
                    }
                    other => other?,
                };
                let migrated = action.action == InstanceActionKind::Migrate;
                let generation = if migrated { self.bump_generation().await } else { None };
                if migrated || answer.generation.is_some() {
                    self.lookups.changed(&Source::Child(child.id.clone()), &client, answer.generation, answer.lowest);
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
                let answer = match self.transport.delete(&child, &hop, id).await {
                    Err(e) if e.code() == ErrorCode::NotFound => {
                        self.forget_route(id).await;
                        return Err(e);
                    }
                    other => other?,
                };
                self.forget_route(id).await;
                let generation = self.bump_generation().await;
                self.lookups.changed(&Source::Child(child.id.clone()), &client, answer.generation, answer.lowest);
                Ok(Routed { value: (), generation, lowest: self.answer_now(&client, None) })
            }
        }
    }

    // --- lists ----------------------------------------------------------------------------

    /// The children to ask about `client`'s resources: those whose answer for the client is a
    /// zone (asking the ones whose answer is not known), and the names of those that could not
    /// be asked.
    async fn child_answers(
        &self,
        ctx: &RequestContext,
        client: &str,
    ) -> (Vec<(Arc<Child>, Option<LowestZone>)>, Vec<String>) {
        let mut known = Vec::new();
        let mut ask = Vec::new();
        let mut unreachable = Vec::new();
        for c in self.registry.children().iter() {
            match self.lookups.get(&Source::Child(c.id.clone()), client) {
                Some(answer) => known.push((c.clone(), answer)),
                None if c.online => ask.push(c.clone()),
                None => unreachable.push(c.name.clone()),
            }
        }
        if !ask.is_empty() {
            let path = ctx.path.through(&self.me.id);
            let answers = gather(&ask, self.settings.scatter_deadline, |child| {
                let path = &path;
                async move {
                    let source = Source::Child(child.id.clone());
                    let ticket = self.lookups.ticket(&source);
                    let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                    let answer = self.transport.lowest_zone(&child, &hop, client).await?;
                    self.lookups.fetched(&source, client, ticket, answer.generation, answer.value.clone());
                    Ok(answer.value)
                }
            })
            .await;
            for (child, answer) in answers {
                match answer {
                    Ok(a) => known.push((child, a)),
                    Err(e) => {
                        tracing::warn!(child = %child.name, error = %e, "child zone did not answer a client lookup");
                        unreachable.push(child.name.clone());
                    }
                }
            }
        }
        (known, unreachable)
    }

    /// The children a list must ask: all reachable ones, or for one client only those that hold
    /// it; and the names of those it cannot ask.
    async fn list_sources(&self, ctx: &RequestContext, client: Option<&str>) -> (Vec<Arc<Child>>, Vec<String>) {
        match client {
            Some(client) => {
                let (answers, unreachable) = self.child_answers(ctx, client).await;
                (answers.into_iter().filter(|(_, a)| a.is_some()).map(|(c, _)| c).collect(), unreachable)
            }
            None => {
                let (online, offline): (Vec<Arc<Child>>, Vec<Arc<Child>>) =
                    self.registry.children().iter().cloned().partition(|c| c.online);
                (online, offline.into_iter().map(|c| c.name.clone()).collect())
            }
        }
    }

    /// A page of instances across this zone and its subtree, sorted by id.
    pub async fn instances(&self, ctx: &RequestContext, query: &ListQuery) -> Result<InstanceList, FedError> {
        if self.registry.is_empty() {
            return self.local.instances(&ctx.caller, query).await;
        }
        let (children, mut unreachable) = self.list_sources(ctx, query.client_id.as_deref()).await;
        let per = ListQuery { limit: per_source_limit(query.limit, children.len() + 1), ..query.clone() };
        let path = ctx.path.through(&self.me.id);
        let (own, answers) = tokio::join!(
            self.local.instances(&ctx.caller, &per),
            gather(&children, self.settings.scatter_deadline, |child| {
                let (path, per) = (&path, &per);
                async move {
                    let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                    self.transport.instances(&child, &hop, per).await
                }
            })
        );
        let own = own?;
        let mut pages = vec![SourcePage { more: own.next_marker.is_some(), items: own.instances }];
        for (child, answer) in answers {
            match answer {
                Ok(mut list) => {
                    for i in &mut list.instances {
                        self.prefix(&mut i.zone_path);
                    }
                    unreachable.extend(list.unreachable_zones.iter().map(|z| format!("{}/{z}", child.name)));
                    pages.push(SourcePage { more: list.next_marker.is_some(), items: list.instances });
                }
                Err(e) => {
                    tracing::warn!(child = %child.name, error = %e, "child zone did not answer a list");
                    unreachable.push(child.name.clone());
                }
            }
        }
        let (instances, next_marker) = merge(pages, query.limit, |i: &Instance| i.id.as_str());
        unreachable.sort();
        unreachable.dedup();
        Ok(InstanceList { instances, unreachable_zones: unreachable, next_marker })
    }

    /// A page of hosts across this zone and its subtree, sorted by id.
    pub async fn hosts(&self, ctx: &RequestContext, query: &ListQuery) -> Result<HostList, FedError> {
        if self.registry.is_empty() {
            return self.local.hosts(&ctx.caller, query).await;
        }
        let (children, mut unreachable) = self.list_sources(ctx, None).await;
        let per = ListQuery { limit: per_source_limit(query.limit, children.len() + 1), ..query.clone() };
        let path = ctx.path.through(&self.me.id);
        let (own, answers) = tokio::join!(
            self.local.hosts(&ctx.caller, &per),
            gather(&children, self.settings.scatter_deadline, |child| {
                let (path, per) = (&path, &per);
                async move {
                    let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                    self.transport.hosts(&child, &hop, per).await
                }
            })
        );
        let own = own?;
        let mut pages = vec![SourcePage { more: own.next_marker.is_some(), items: own.hosts }];
        for (child, answer) in answers {
            match answer {
                Ok(mut list) => {
                    for h in &mut list.hosts {
                        self.prefix(&mut h.zone_path);
                    }
                    unreachable.extend(list.unreachable_zones.iter().map(|z| format!("{}/{z}", child.name)));
                    pages.push(SourcePage { more: list.next_marker.is_some(), items: list.hosts });
                }
                Err(e) => {
                    tracing::warn!(child = %child.name, error = %e, "child zone did not answer a host list");
                    unreachable.push(child.name.clone());
                }
            }
        }
        let (hosts, next_marker) = merge(pages, query.limit, |h: &api::Host| h.id.as_str());
        unreachable.sort();
        unreachable.dedup();
        Ok(HostList { hosts, unreachable_zones: unreachable, next_marker })
    }

    // --- the lowest zone ------------------------------------------------------------------

    /// This zone's own answer for `client`, from the cache or the database.
    async fn local_answer(&self, client: &str) -> Result<bool, FedError> {
        if let Some(a) = self.lookups.get(&Source::Local, client) {
            return Ok(a.is_some());
        }
        let ticket = self.lookups.ticket(&Source::Local);
        let yes = self.local.has_client(client).await?;
        self.lookups.fetched(&Source::Local, client, ticket, None, yes.then(|| self.here(client)));
        Ok(yes)
    }

    /// The lowest zone managing all of `client`'s instances (the seed's rule), asking only
    /// children whose answer is not cached. A member may only ask about its own client.
    pub async fn lowest_zone(&self, ctx: &RequestContext, client: &str) -> Result<Lookup, FedError> {
        if !ctx.caller.may_see(client) {
            return Ok(Lookup { answer: None, unreachable: Vec::new() });
        }
        let local = self.local_answer(client).await?;
        let (answers, mut unreachable) = self.child_answers(ctx, client).await;
        let pairs: Vec<(&str, Option<&LowestZone>)> =
            answers.iter().map(|(c, a)| (c.name.as_str(), a.as_ref())).collect();
        let mut answer = compose(&self.me_ref(), client, local, &pairs);
        unreachable.sort();
        if let Some(a) = &mut answer {
            a.unreachable_zones.extend(unreachable.iter().cloned());
        }
        Ok(Lookup { answer, unreachable })
    }

    /// This zone's answer for `client` from cached answers alone (`None` when one is missing):
    /// what a change tells the zone that forwarded it.
    fn answer_now(&self, client: &str, local: Option<bool>) -> Option<Option<LowestZone>> {
        let local = match local {
            Some(b) => b,
            None => self.lookups.get(&Source::Local, client)?.is_some(),
        };
        let children = self.registry.children();
        let mut answers = Vec::with_capacity(children.len());
        for c in children.iter() {
            answers.push((c.name.as_str(), self.lookups.get(&Source::Child(c.id.clone()), client)?));
        }
        let pairs: Vec<(&str, Option<&LowestZone>)> = answers.iter().map(|(n, a)| (*n, a.as_ref())).collect();
        Some(compose(&self.me_ref(), client, local, &pairs))
    }

    // --- the registry: zone-add checks and polls -----------------------------------------

    /// zone-add and zone-update: logs in to the zone at `api_url` and reads it, refusing a zone
    /// that is this one, already a child, or whose subtree holds this zone (a loop).
    pub async fn inspect(
        &self,
        ctx: &RequestContext,
        api_url: &str,
        credentials: &Credentials,
        updating: Option<&str>,
    ) -> Result<ZoneInfo, FedError> {
        // No path: the checks below say what is wrong in words an operator can act on ("a zone
        // cannot be its own child") rather than the child refusing a looping request.
        let path = ZonePath::empty();
        let hop = self.hop(&ctx.caller, &path, self.settings.scatter_deadline);
        let info = self.transport.inspect(api_url, credentials, &hop).await?;
        if info.id == self.me.id {
            return Err(FedError::api(
                ErrorCode::ZoneLoop,
                format!("the zone at {api_url} is zone {} itself; a zone cannot be its own child", self.me.name),
            ));
        }
        if let Some(entry) = info.subtree.iter().flatten().find(|e| e.id == self.me.id) {
            let mut loop_path = vec![self.me.name.clone(), info.name.clone()];
            loop_path.extend(entry.path.iter().cloned());
            return Err(FedError::api(
                ErrorCode::ZoneLoop,
                format!(
                    "zone {} has this zone below it, so adding it would make a loop: {}",
                    info.name,
                    loop_path.join(" -> ")
                ),
            ));
        }
        match updating {
            Some(id) if id != info.id => {
                return Err(FedError::api(
                    ErrorCode::Conflict,
                    format!(
                    "the zone at {api_url} is zone {} ({}), not the child being updated ({id}); add it as a new child",
                    info.name, info.id
                ),
                ))
            }
            _ => {}
        }
        if updating.is_none() {
            if let Some(existing) = self.registry.get(&info.id) {
                return Err(FedError::api(
                    ErrorCode::Conflict,
                    format!("zone {} ({}) is already a child of this zone, as {}", info.name, info.id, existing.name),
                ));
            }
        }
        Ok(info)
    }

    /// Polls one child: its zone with its subtree, checked to be the registered zone and not
    /// to hold this zone below it.
    pub async fn poll(&self, child: &Child, timeout: Duration) -> PollOutcome {
        let caller = Principal { username: format!("zone:{}", self.me.name), role: api::Role::Admin, client_id: None };
        let path = ZonePath::empty().through(&self.me.id);
        let hop = self.hop(&caller, &path, timeout);
        let info = match self.transport.zone_info(child, &hop, Some(api::SubtreeView::Cached)).await {
            Ok(info) => info,
            Err(e) => return PollOutcome::Failed(e.to_string()),
        };
        if info.id != child.id {
            return PollOutcome::Failed(format!(
                "the zone at {} is now zone {} ({}), not {} ({}); delete this child and add that zone if it is meant",
                child.api_url, info.name, info.id, child.name, child.id
            ));
        }
        if let Some(entry) = info.subtree.iter().flatten().find(|e| e.id == self.me.id) {
            let mut loop_path = vec![self.me.name.clone(), child.name.clone()];
            loop_path.extend(entry.path.iter().cloned());
            return PollOutcome::Failed(format!(
                "loop: this zone is below its child {} ({}); remove one of those registrations",
                child.name,
                loop_path.join(" -> ")
            ));
        }
        PollOutcome::Answered(Box::new(info))
    }
}
