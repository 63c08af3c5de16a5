//! [`federation::LocalZone`] for this zone: what the gateway asks of the zone's own hosts and
//! instances, done the way the zone's REST API always did it (reads from the store, every change
//! over the bus to the instance service on the ring owner of the instance's id).

use std::time::Duration;

use api::{
    ClientScope, CodedError, ErrorCode, Host, HostList, Instance, InstanceAction, InstanceActionKind, InstanceCreate,
    InstanceList, Placement, PlacementRequest,
};
use federation::{Changed, FedError, ListQuery, LocalZone, Principal, Route};
use uuid::Uuid;

use api::bus::{CreateTask, InstanceDelete, Rpc};

use crate::bus::Bus;
use crate::cluster::{call_owner, Cluster};
use crate::scheduler::validate_requirements;
use crate::services::batch::{Batch, BatchCreator};
use crate::services::instance::to_api;
use crate::store::{InstanceRow, Store, ZoneRow};

/// Extra time an instance call may take beyond the agent's own deadline: queueing behind earlier
/// work on the same instance, placement, database writes.
const CALL_MARGIN: Duration = Duration::from_secs(15);

/// This zone's own hosts and instances.
pub struct NodeZone {
    pub store: Store,
    pub bus: Bus,
    pub cluster: Cluster,
    pub zone: ZoneRow,
    pub agent_timeout: Duration,
}

/// A zone-node error as the gateway reports it: its code, and the message a client may see
/// (internal details go to the log here, as the HTTP layer would).
pub fn fed(e: impl Into<crate::error::Error>) -> FedError {
    let e = e.into();
    if e.is_internal() {
        tracing::error!(error = %e, "local zone call failed");
    }
    FedError::api(e.code(), e.public_message())
}

/// The clients a list of `caller`'s may show: a member's own (the HTTP edge has already scoped
/// its query to it), the one an admin or parent names, and a parent's patterns.
pub fn visible_clients<'a>(caller: &'a Principal, query: &'a ListQuery) -> (Option<&'a str>, Option<&'a ClientScope>) {
    let client =
        if caller.role == api::Role::Member { caller.client_id.as_deref() } else { query.client_id.as_deref() };
    (client, caller.clients.as_ref().filter(|_| caller.role == api::Role::Parent))
}

impl NodeZone {
    /// The instance if the caller may see it.
    async fn visible(&self, caller: &Principal, id: &str) -> Result<Option<InstanceRow>, FedError> {
        let Ok(uuid) = Uuid::parse_str(id) else { return Ok(None) };
        let row = self.store.instance_get(uuid).await.map_err(fed)?;
        Ok(row.filter(|r| caller.may_see(&r.client_id)))
    }

    async fn must_see(&self, caller: &Principal, id: &str) -> Result<InstanceRow, FedError> {
        self.visible(caller, id).await?.ok_or_else(|| FedError::not_found(format!("instance {id}")))
    }

    /// Sends `request` about instance `id` to its owner's instance service and waits for the
    /// reply (the agent's deadline plus [`CALL_MARGIN`]).
    async fn call_owner<R: Rpc>(&self, id: Uuid, request: &R) -> Result<R::Reply, FedError> {
        let timeout = self.agent_timeout + CALL_MARGIN;
        call_owner(&self.cluster, &self.bus, &id.to_string(), request, timeout).await.map_err(fed)
    }

    async fn generation(&self) -> Option<i64> {
        match self.store.generation().await {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the zone's generation");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl LocalZone for NodeZone {
    async fn aggregate(&self) -> Result<api::Aggregate, FedError> {
        self.store.aggregate().await.map_err(fed)
    }

    async fn placement(&self, _caller: &Principal, req: &PlacementRequest) -> Result<Placement, FedError> {
        let filters = validate_requirements(&req.requirements).map_err(fed)?;
        let best = self.store.candidates(&filters, &req.resources, 1).await.map_err(fed)?;
        let host = best.first().ok_or_else(|| {
            FedError::api(
                ErrorCode::NoValidHost,
                format!("no up host of zone {} meets the requirements with the resources free", self.zone.name),
            )
        })?;
        Ok(Placement { zone_path: vec![self.zone.name.clone()], host_id: host.to_string() })
    }

    async fn create(&self, caller: &Principal, id: &str, req: &InstanceCreate) -> Result<Changed<Instance>, FedError> {
        let uuid =
            Uuid::parse_str(id).map_err(|_| FedError::api(ErrorCode::InvalidField, format!("{id:?} is not a UUID")))?;
        let client_id = req.client_id.clone().ok_or_else(|| FedError::internal("create without a client"))?;
        if !caller.may_see(&client_id) {
            return Err(FedError::api(ErrorCode::Forbidden, "members act for their own client only"));
        }
        let task = CreateTask {
            name: req.name.clone(),
            client_id,
            requirements: req.requirements.clone(),
            resources: req.resources,
        };
        let instance = self.call_owner(uuid, &task).await?;
        Ok(Changed { value: instance, generation: self.generation().await })
    }

    async fn create_batch(
        &self,
        caller: &Principal,
        batch_id: &str,
        req: &InstanceCreate,
    ) -> Result<Changed<Vec<Instance>>, FedError> {
        let id = Uuid::parse_str(batch_id)
            .map_err(|_| FedError::api(ErrorCode::InvalidField, format!("{batch_id:?} is not a UUID")))?;
        let client_id = req.client_id.clone().ok_or_else(|| FedError::internal("create without a client"))?;
        if !caller.may_see(&client_id) {
            return Err(FedError::api(ErrorCode::Forbidden, "members act for their own client only"));
        }
        let batch = Batch {
            id,
            name: req.name.clone(),
            client_id,
            requirements: req.requirements.clone(),
            resources: req.resources,
            count: req.count(),
        };
        let creator = BatchCreator::new(
            self.store.clone(),
            self.bus.clone(),
            self.cluster.clone(),
            self.zone.clone(),
            self.agent_timeout + CALL_MARGIN,
        );
        let instances = creator.create(batch).await.map_err(fed)?;
        Ok(Changed { value: instances, generation: self.generation().await })
    }

    async fn instance(&self, caller: &Principal, id: &str) -> Result<Option<Instance>, FedError> {
        Ok(self.visible(caller, id).await?.map(|r| to_api(&r, &self.zone)))
    }

    async fn action(
        &self,
        caller: &Principal,
        id: &str,
        action: &InstanceAction,
    ) -> Result<Changed<Instance>, FedError> {
        let row = self.must_see(caller, id).await?;
        let instance = self.call_owner(row.id, action).await?;
        let generation = if action.action == InstanceActionKind::Migrate { self.generation().await } else { None };
        Ok(Changed { value: instance, generation })
    }

    async fn delete(&self, caller: &Principal, id: &str) -> Result<Changed<String>, FedError> {
        let row = self.must_see(caller, id).await?;
        self.call_owner(row.id, &InstanceDelete {}).await?;
        Ok(Changed { value: row.client_id, generation: self.generation().await })
    }

    async fn instances(&self, caller: &Principal, query: &ListQuery) -> Result<InstanceList, FedError> {
        let (client, scope) = visible_clients(caller, query);
        let limit = query.limit.max(1) as i64;
        let mut rows =
            self.store.instances_page(client, scope, query.marker.as_deref(), limit + 1).await.map_err(fed)?;
        let next_marker = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.id.to_string())
        } else {
            None
        };
        let instances = rows.iter().map(|r| to_api(r, &self.zone)).collect();
        Ok(InstanceList { instances, unreachable_zones: Vec::new(), next_marker })
    }

    async fn hosts(&self, _caller: &Principal, query: &ListQuery) -> Result<HostList, FedError> {
        let limit = query.limit.max(1);
        let mut hosts: Vec<Host> = self
            .store
            .hosts_page(query.marker.as_deref(), limit as i64 + 1)
            .await
            .map_err(fed)?
            .iter()
            .map(|h| Host { zone_path: vec![self.zone.name.clone()], ..h.to_api() })
            .collect();
        let next_marker = if hosts.len() > limit {
            hosts.truncate(limit);
            hosts.last().map(|h| h.id.clone())
        } else {
            None
        };
        Ok(HostList { hosts, unreachable_zones: Vec::new(), next_marker })
    }

    async fn has_client(&self, client_id: &str) -> Result<bool, FedError> {
        self.store.client_has_instances(client_id).await.map_err(fed)
    }

    async fn bump_generation(&self) -> Result<i64, FedError> {
        self.store.bump_generation().await.map_err(fed)
    }

    async fn route_get(&self, instance_id: &str) -> Result<Option<Route>, FedError> {
        let Ok(id) = Uuid::parse_str(instance_id) else { return Ok(None) };
        let found = self.store.instance_route_get(id).await.map_err(fed)?;
        Ok(found.map(|(child_id, client_id)| Route { child_id: child_id.to_string(), client_id }))
    }

    async fn route_put(&self, instance_id: &str, route: &Route) -> Result<(), FedError> {
        let bad = |what: &str| FedError::internal(format!("{what} is not a UUID"));
        let id = Uuid::parse_str(instance_id).map_err(|_| bad("instance id"))?;
        let child = Uuid::parse_str(&route.child_id).map_err(|_| bad("child zone id"))?;
        if !self.store.instance_route_put(id, child, &route.client_id).await.map_err(fed)? {
            return Err(FedError::internal(format!("child zone {child} is no longer registered")));
        }
        Ok(())
    }

    async fn routes_put(&self, instance_ids: &[String], route: &Route) -> Result<(), FedError> {
        let bad = |what: &str| FedError::internal(format!("{what} is not a UUID"));
        let ids = instance_ids
            .iter()
            .map(|id| Uuid::parse_str(id).map_err(|_| bad("instance id")))
            .collect::<Result<Vec<Uuid>, FedError>>()?;
        let child = Uuid::parse_str(&route.child_id).map_err(|_| bad("child zone id"))?;
        if !self.store.instance_routes_put(&ids, child, &route.client_id).await.map_err(fed)? {
            return Err(FedError::internal(format!("child zone {child} is no longer registered")));
        }
        Ok(())
    }

    async fn route_delete(&self, instance_id: &str) -> Result<(), FedError> {
        let Ok(id) = Uuid::parse_str(instance_id) else { return Ok(()) };
        self.store.instance_route_delete(id).await.map(|_| ()).map_err(fed)
    }
}
