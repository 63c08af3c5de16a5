//! What a zone above the huddles (global, a region, a DC) is besides its real [`Gateway`]: no hosts
//! of its own ([`Hub`], its `LocalZone`), a generation its parents' watches wait on, and the
//! recording of its polls ([`Sink`], in place of zone-node's `child_zones` rows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use api::PlacementRequest;
use api::{Aggregate, ErrorCode, HostList, Instance, InstanceAction, InstanceCreate, InstanceList, Placement};
use federation::poll::PollSink;
use federation::{Changed, Child, FedError, Gateway, ListQuery, LocalZone, PollOutcome, Principal, Route};
use tokio::sync::watch;

/// A zone with no hosts of its own: every instance below it is in a child.
pub struct Hub {
    generation: watch::Sender<i64>,
    // A std mutex: one map operation at a time, never across an await.
    routes: Mutex<HashMap<String, Route>>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub { generation: watch::channel(0).0, routes: Mutex::new(HashMap::new()) }
    }
}

impl Hub {
    pub fn generation(&self) -> i64 {
        *self.generation.borrow()
    }

    /// What a watch on this zone waits on (zone-node's `Generation` channel).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.generation.subscribe()
    }

    /// Moves the generation: what zone-node's store does in the transaction that records a child's
    /// new generation or status, or a change that passed through.
    pub fn bump(&self) -> i64 {
        let mut g = 0;
        self.generation.send_modify(|gen| {
            *gen += 1;
            g = *gen;
        });
        g
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn no_hosts() -> FedError {
    FedError::api(ErrorCode::NoValidHost, "this zone has no hosts of its own")
}

#[async_trait::async_trait]
impl LocalZone for Hub {
    async fn aggregate(&self) -> Result<Aggregate, FedError> {
        Ok(Aggregate::new())
    }
    async fn placement(&self, _caller: &Principal, _req: &PlacementRequest) -> Result<Placement, FedError> {
        Err(no_hosts())
    }
    async fn create(&self, _c: &Principal, _id: &str, _req: &InstanceCreate) -> Result<Changed<Instance>, FedError> {
        Err(no_hosts())
    }
    async fn create_batch(
        &self,
        _caller: &Principal,
        _batch_id: &str,
        _req: &InstanceCreate,
    ) -> Result<Changed<Vec<Instance>>, FedError> {
        Err(no_hosts())
    }
    async fn instance(&self, _caller: &Principal, _id: &str) -> Result<Option<Instance>, FedError> {
        Ok(None)
    }
    async fn action(&self, _c: &Principal, id: &str, _a: &InstanceAction) -> Result<Changed<Instance>, FedError> {
        Err(FedError::not_found(format!("instance {id}")))
    }
    async fn delete(&self, _caller: &Principal, id: &str) -> Result<Changed<String>, FedError> {
        Err(FedError::not_found(format!("instance {id}")))
    }
    async fn instances(&self, _caller: &Principal, _query: &ListQuery) -> Result<InstanceList, FedError> {
        Ok(InstanceList { instances: Vec::new(), unreachable_zones: Vec::new(), next_marker: None })
    }
    async fn hosts(&self, _caller: &Principal, _query: &ListQuery) -> Result<HostList, FedError> {
        Ok(HostList { hosts: Vec::new(), unreachable_zones: Vec::new(), next_marker: None })
    }
    async fn has_client(&self, _client_id: &str) -> Result<bool, FedError> {
        Ok(false)
    }
    async fn bump_generation(&self) -> Result<i64, FedError> {
        Ok(self.bump())
    }
    async fn route_get(&self, instance_id: &str) -> Result<Option<Route>, FedError> {
        Ok(self.routes().get(instance_id).cloned())
    }
    async fn route_put(&self, instance_id: &str, route: &Route) -> Result<(), FedError> {
        self.routes().insert(instance_id.to_owned(), route.clone());
        Ok(())
    }
    async fn route_delete(&self, instance_id: &str) -> Result<(), FedError> {
        self.routes().remove(instance_id);
        Ok(())
    }
}

/// Records polls the way zone-node's `gateway::sync::Sink` and its store do, with the gateway's
/// registry as the only copy of the children (no database): a good answer updates the child;
/// `failure_threshold` failures in a row take it offline; a new generation or status moves this
/// zone's generation (which answers its parents' watches); and whatever changed replaces the
/// registry (zone-node: the refresh after the write).
///
/// One difference in order: zone-node commits the generation before its refresh replaces the
/// registry, so a parent's watch can re-read this zone in between; here the registry is
/// replaced first, so a parent always reads the new children with the new generation.
pub struct Sink {
    gateway: Arc<Gateway>,
    hub: Arc<Hub>,
    failure_threshold: u32,
    /// Failed polls in a row, per child. A std mutex, held for the whole read-modify-replace of
    /// the registry (no await inside), so two polls recorded at once cannot lose one another.
    failures: Mutex<HashMap<String, u32>>,
}

impl Sink {
    pub fn new(gateway: Arc<Gateway>, hub: Arc<Hub>, failure_threshold: u32) -> Sink {
        Sink { gateway, hub, failure_threshold, failures: Mutex::new(HashMap::new()) }
    }
}

#[async_trait::async_trait]
impl PollSink for Sink {
    fn owns(&self, _child_id: &str) -> bool {
        true
    }

    async fn record(&self, child: &Child, outcome: PollOutcome) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<Child> = self.gateway.registry().children().iter().map(|c| (**c).clone()).collect();
        let Some(row) = rows.iter_mut().find(|c| c.id == child.id) else { return false };
        let (status_changed, generation_changed, learnt) = match outcome {
            PollOutcome::Unchanged => return true,
            PollOutcome::Answered(info) => {
                failures.remove(&child.id);
                let subtree = info.subtree.unwrap_or_default();
                let learnt = info.capabilities != row.capabilities
                    || info.own_capabilities != row.own_capabilities
                    || subtree != row.subtree;
                let changed = (!row.online, info.generation != row.generation, learnt);
                row.online = true;
                row.capabilities = info.capabilities;
                row.own_capabilities = info.own_capabilities;
                row.generation = info.generation;
                row.subtree = subtree;
                changed
            }
            PollOutcome::Failed(_) => {
                let n = failures.entry(child.id.clone()).or_default();
                *n += 1;
                let offline = row.online && *n >= self.failure_threshold;
                row.online &= !offline;
                (offline, false, false)
            }
        };
        if !(status_changed || generation_changed || learnt) {
            return true;
        }
        self.gateway.set_children(rows);
        if status_changed || generation_changed {
            let g = self.hub.bump();
            self.gateway.observe_own_generation(g);
        }
        true
    }
}
