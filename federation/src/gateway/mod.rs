//! The gateway of one zone: everything a zone does with its children, on top of what it does
//! itself ([`LocalZone`], implemented by `zone-node`).
//!
//! Every REST call that may involve children goes through [`Gateway`], which decides where it
//! runs: this zone's own hosts, one child (forwarded with the caller's identity and the path of
//! zones crossed), or all of them (scatter-gather). A zone without children takes the short way
//! to its own hosts, so a leaf zone pays nothing for federation.
//!
//! This file holds the types the gateway shares with its users and the helpers every operation
//! uses; each operation lives in its own file, with how its cost grows:
//! - [`zone`]: this zone's answer (`GET /v1/zone`, its aggregate, its subtree)
//! - [`placement`]: where a request would land (`POST /v1/placements`), ranking children
//! - [`instances`]: create, show, act on and delete one instance wherever it is
//! - [`routes`]: which child holds an instance: the route cache and the search for it
//! - [`lists`]: instances and hosts across the subtree (scatter-gather)
//! - [`lookup`]: the lowest zone of a client
//! - [`children`]: the view of the children: zone-add checks, polls, generations

mod children;
mod instances;
mod lists;
mod lookup;
mod placement;
mod routes;
mod zone;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{
    Aggregate, HostList, Instance, InstanceAction, InstanceCreate, InstanceList, LowestZone, Placement,
    PlacementRequest, ZoneInfo,
};

use crate::error::FedError;
use crate::identity::Principal;
use crate::lookup::{LookupCache, Me, Source};
use crate::path::ZonePath;
use crate::registry::Registry;
use crate::transport::{ChildTransport, Hop, ListQuery};

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
    /// A multi-create (`req.count` above 1) on this zone's own hosts, all or nothing: every
    /// instance, in name order, or `no_valid_host` with nothing made or reserved. `batch_id`
    /// names the batch (the instances' ids derive from it).
    async fn create_batch(
        &self,
        caller: &Principal,
        batch_id: &str,
        req: &InstanceCreate,
    ) -> Result<Changed<Vec<Instance>>, FedError>;
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
    /// [`LocalZone::route_put`] for every instance of a multi-create (one child, one client). The
    /// default records them one by one; a zone with a database does it in one transaction.
    async fn routes_put(&self, instance_ids: &[String], route: &Route) -> Result<(), FedError> {
        for id in instance_ids {
            self.route_put(id, route).await?;
        }
        Ok(())
    }
    async fn route_delete(&self, instance_id: &str) -> Result<(), FedError>;
}

/// Why a poll failed, or what it learnt.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    Answered(Box<ZoneInfo>),
    /// The child's answer is the one last recorded (a conditional poll's 304): it is alive, and
    /// there is nothing to write.
    Unchanged,
    Failed(String),
}

/// How many instance-search misses are remembered, and for how long at most (a child's new
/// generation ends one sooner).
const MISS_CACHE_CAPACITY: u64 = 100_000;
/// Instances kept for the next pages of list walks (see [`Gateway::instances`]), across walks:
/// about 40 MB at most.
const READ_AHEAD_CAPACITY: u64 = 100_000;
/// How long a walk's next page may take to be asked for before its kept items are dropped.
const READ_AHEAD_TTL: std::time::Duration = std::time::Duration::from_secs(15);

/// Whose kept list items these are: the child, what the caller may see, the list's client
/// filter, and the marker of the page they follow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ReadAheadKey {
    pub child: String,
    pub visibility: String,
    pub client: Option<String>,
    pub marker: Option<String>,
}

/// A child's list items beyond the page they were read for, valid while the child's generation
/// is the one they were read at (any create, delete or move below it moves the generation, and
/// the parent hears of it within milliseconds through its watch).
#[derive(Debug)]
pub(crate) struct ReadAhead {
    pub generation: i64,
    pub page: crate::scatter::SourcePage<api::RawInstance>,
    /// The zones below the child that did not answer it then.
    pub unreachable: Vec<String>,
    /// The child's items after `page`, being read while the walk's client reads its pages.
    pub next: Option<Prefetch>,
}

/// A child's items after those a walk keeps, read in the background
/// ([`Gateway::instances`]): the page after `page` with the zone's name already in front of each
/// `zone_path` and the zones below that did not answer. Aborted when dropped unread (the walk was
/// left, or the child changed and its kept items were dropped).
#[derive(Debug)]
pub(crate) struct Prefetch(tokio::task::JoinHandle<Result<ChildPage, FedError>>);

/// A child's page of instances as a gateway keeps it: its items and whether more follow, and the
/// zones below it that did not answer (named from this zone: `child/zone`).
pub(crate) type ChildPage = (crate::scatter::SourcePage<api::RawInstance>, Vec<String>);

impl Prefetch {
    pub(crate) fn spawn(
        read: impl std::future::Future<Output = Result<ChildPage, FedError>> + Send + 'static,
    ) -> Prefetch {
        Prefetch(tokio::spawn(read))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ReadAhead {
    /// Whether these items may serve the next page of a child now at `generation`, whose share of
    /// a page is `share`: nothing changed below the child since they were read, and they fill the
    /// share (or are all the child has). Fewer would cut the page short at their last id.
    pub fn serves(&self, generation: i64, share: usize) -> bool {
        self.generation == generation && (self.page.items.len() >= share || !self.page.more)
    }

    /// These items for the next page of a child now at `generation`: with the child's next items
    /// appended (waiting for their read to end) when these fall short of `share`. `None` when
    /// they cannot serve it (the child changed, or the read of its next items failed): the child
    /// must be asked.
    pub async fn for_next_page(mut self, generation: i64, share: usize) -> Option<ReadAhead> {
        if self.generation != generation {
            return None;
        }
        if self.page.items.len() < share && self.page.more {
            let mut next = self.next.take()?;
            match (&mut next.0).await {
                Ok(Ok((page, unreachable))) => {
                    self.page.items.extend(page.items);
                    self.page.more = page.more;
                    self.unreachable.extend(unreachable);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "a child's next items could not be read ahead; asking it");
                    return None;
                }
                Err(_) => return None,
            }
        }
        self.serves(generation, share).then_some(self)
    }
}
const MISS_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The gateway of this zone: its children as last polled, the caches, and the way to them and
/// to this zone's own hosts. Shared by every request (`Arc<Gateway>`).
pub struct Gateway {
    me: Identity,
    settings: Settings,
    registry: Registry,
    transport: Arc<dyn ChildTransport>,
    local: Arc<dyn LocalZone>,
    lookups: LookupCache,
    routes: moka::sync::Cache<String, Route>,
    /// Instance searches a child answered "not there": (child, instance id, who asked) → the
    /// child's generation then. See [`routes`].
    misses: moka::sync::Cache<(String, String, String), i64>,
    /// Kept list items per child for the next page of a walk (see [`Gateway::instances`]). Taken
    /// out of the mutex when used, so a page of items changes hands without being copied.
    read_ahead: moka::sync::Cache<ReadAheadKey, Arc<Mutex<Option<ReadAhead>>>>,
    // A std mutex: held to clone or swap, never across an await.
    own_aggregate: Mutex<Option<(Instant, Aggregate)>>,
    /// Creates cut off at a child, to reconcile once it is back ([`Gateway::reconcile_cut_offs`]).
    // A std mutex: held to push or take, never across an await.
    cut_offs: Mutex<Vec<routes::CutOff>>,
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
            misses: moka::sync::Cache::builder().max_capacity(MISS_CACHE_CAPACITY).time_to_live(MISS_CACHE_TTL).build(),
            read_ahead: moka::sync::Cache::builder()
                .max_capacity(READ_AHEAD_CAPACITY)
                .weigher(|_, r: &Arc<Mutex<Option<ReadAhead>>>| {
                    let len = r.lock().map(|r| r.as_ref().map_or(0, |r| r.page.items.len())).unwrap_or(0);
                    len.max(1).try_into().unwrap_or(u32::MAX)
                })
                .time_to_live(READ_AHEAD_TTL)
                .build(),
            cut_offs: Mutex::new(Vec::new()),
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

    pub(super) fn me_ref(&self) -> Me<'_> {
        Me { id: &self.me.id, name: &self.me.name, api_url: &self.me.api_url }
    }

    /// This zone as the lowest zone of `client`.
    pub(super) fn here(&self, client: &str) -> LowestZone {
        self.me_ref().here(client)
    }

    /// Refuses a request that already crossed this zone or too many zones.
    pub fn admit(&self, path: &ZonePath) -> Result<(), FedError> {
        path.admit(&self.me.id, self.settings.hop_limit)
    }

    pub(super) fn hop<'a>(&'a self, caller: &'a Principal, path: &'a ZonePath, timeout: Duration) -> Hop<'a> {
        Hop { path, caller, origin: &self.me.name, timeout }
    }

    pub(super) fn prefix(&self, path: &mut Vec<String>) {
        path.insert(0, self.me.name.clone());
    }

    pub(super) async fn bump_generation(&self) -> Option<i64> {
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
}
