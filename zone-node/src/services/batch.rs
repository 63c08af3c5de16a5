//! Multi-create (`count` above 1, Nova's `min_count` = `max_count`), coordinated by the node that
//! received the request. A batch concerns no one resource, so no ring owner runs it; each of its
//! instances is still built by that instance's ring owner.
//!
//! 1. **Room for all.** [`Store::place_all`] reserves a host per instance, all or nothing, as a set
//!    (a sample of hosts with room, each chosen host's share in one conditional update). When
//!    they do not all fit the batch is refused (`409 no_valid_host`) with every reservation given
//!    back: no instance row was written and no agent called.
//! 2. **Rows for all.** One transaction inserts every instance, `building`, with its create task
//!    held by this node ([`Store::instances_insert_batch`]); if it fails, every reservation is given
//!    back. From here the batch is made: nothing fails it as a whole any more.
//! 3. **Builds.** Each instance's create task is handed to its ring owner (`instance.recover` with
//!    `from` = this node), at most [`BUILD_CONCURRENCY`] at once. The owner takes the task over in
//!    the instance's serial queue and drives the agent exactly as for a single create; a build that
//!    fails leaves its instance in `error` with the reason, as a single create does.
//! 4. **Nothing stuck.** A hand-off that fails (owner unreachable, timeout) lets go of the task if
//!    this node still holds it: its node becomes [`UNCLAIMED`], an id no node has, so the owner's
//!    recovery ([`super::instance::recover_orphans`], every heartbeat) finishes it. If this node
//!    dies before handing off, its tasks are recovered like those of any node that left.
//!
//! Why not one `instance.create` per instance: each would place on its own while the others were
//! already building, and all-or-nothing would then mean deleting built instances. Placing first
//! keeps a refused batch invisible. The run is a task of its own, so a client that hangs up cannot
//! stop it between reserving and inserting; only this process dying in those milliseconds leaves
//! reservations without instances (as for a single create between placing and inserting).
//!
//! Cost: one round of placement for a zone with room (one sampled candidate query and at most 64
//! conditional updates, whatever the count) and one transaction of count inserts on this node,
//! then count bus calls spread over the owners.

use std::time::Duration;

use api::bus::{InstanceCreated, InstanceRecover, Recovered};
use api::{batch_member_name, CodedError, ErrorCode, Requirement, Resources, MAX_CREATE_COUNT};
use futures::StreamExt;
use uuid::Uuid;

use crate::bus::Bus;
use crate::cluster::{call_owner, Cluster};
use crate::error::{Error, Result};
use crate::scheduler::{validate_requirements, validate_resources};
use crate::services::events;
use crate::services::instance::to_api;
use crate::store::{BatchPlacement, InstanceChange, InstanceRow, NewInstance, Store, ZoneRow};

/// How many builds of one batch wait on their owners at once: enough to keep simulated and real
/// agents busy, half of what one node's instance queue runs at once ([`crate::bus::MAX_IN_FLIGHT`]),
/// so a batch never starves the zone's other instance work on its node.
pub const BUILD_CONCURRENCY: usize = 128;

/// The task node of a create task nobody holds: a hand-off failed and the coordinator let go.
/// No node has the nil id, so recovery sees a task whose node left, and finishes it.
pub const UNCLAIMED: Uuid = Uuid::nil();

/// How often letting go of a task is tried again when the row moved in between.
const LET_GO_RETRIES: usize = 8;

/// A multi-create as the edge checked it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Names the batch; the instances' ids derive from it ([`member_id`]).
    pub id: Uuid,
    /// The instances are `<name>-0001`, `<name>-0002`, …
    pub name: String,
    pub client_id: String,
    pub requirements: Vec<Requirement>,
    pub resources: Resources,
    /// 2 to [`MAX_CREATE_COUNT`].
    pub count: u32,
}

/// The id of instance `index` (1-based) of batch `batch`: the first 16 bytes of
/// The id of instance `index` of batch `batch`: derived, the same at every zone
/// ([`api::batch_member_id`]).
pub fn member_id(batch: Uuid, index: u32) -> Uuid {
    api::batch_member_id(batch, index)
}

/// Runs multi-creates on this node. Cheap to clone.
#[derive(Clone)]
pub struct BatchCreator {
    store: Store,
    bus: Bus,
    cluster: Cluster,
    zone: ZoneRow,
    /// How long one hand-off may take: the agent's deadline plus queueing.
    call_timeout: Duration,
}

impl BatchCreator {
    pub fn new(store: Store, bus: Bus, cluster: Cluster, zone: ZoneRow, call_timeout: Duration) -> Self {
        BatchCreator { store, bus, cluster, zone, call_timeout }
    }

    /// Makes the batch and answers its instances in name order, each as its build left it
    /// (`running`; `error` with the reason; `building` when its owner finishes it later), or
    /// refuses it with nothing left behind. Runs in a task of its own (see the module docs).
    pub async fn create(&self, batch: Batch) -> Result<Vec<api::Instance>> {
        let me = self.clone();
        tokio::spawn(async move { me.run(batch).await })
            .await
            .map_err(|e| Error::internal(format!("the multi-create task ended abnormally: {e}")))?
    }

    #[tracing::instrument(skip(self, batch), fields(batch = %batch.id, count = batch.count))]
    async fn run(&self, batch: Batch) -> Result<Vec<api::Instance>> {
        if !(2..=MAX_CREATE_COUNT).contains(&batch.count) {
            return Err(Error::invalid_field("count", format!("a batch has 2 to {MAX_CREATE_COUNT} instances")));
        }
        let filters = validate_requirements(&batch.requirements)?;
        validate_resources(&batch.resources)?;
        let r = batch.resources;
        let count = batch.count as usize;
        let started = std::time::Instant::now();
        let hosts = match self.store.place_all(&filters, &r, count).await? {
            BatchPlacement::All(hosts) => hosts,
            BatchPlacement::Short { fitted } => {
                return Err(Error::api(
                    ErrorCode::NoValidHost,
                    format!(
                        "only {fitted} of the {count} instances fit on the up hosts of zone {} that meet the \
                         requirements with {} vcpus, {} MB memory and {} GB disk free each; a multi-create is all \
                         or nothing, so none was made",
                        self.zone.name, r.vcpus, r.memory_mb, r.disk_gb
                    ),
                ))
            }
        };
        // Placement alone, apart from the insert that follows (both are in `placed_ms`).
        let reserved_ms = started.elapsed().as_millis() as u64;
        let me = self.cluster.me();
        let new: Vec<NewInstance> = hosts
            .iter()
            .zip(1..)
            .map(|(host, k)| NewInstance {
                id: member_id(batch.id, k),
                name: batch_member_name(&batch.name, k),
                client_id: batch.client_id.clone(),
                host_id: *host,
                resources: r,
                requirements: batch.requirements.clone(),
                task_node: me,
            })
            .collect();
        let rows = match self.store.instances_insert_batch(&new).await {
            Ok(rows) => rows,
            Err(e) => {
                // No instance exists, so nothing may stay reserved for one.
                self.store.release_all(&hosts, &r).await;
                return Err(e.into());
            }
        };
        let placed_ms = started.elapsed().as_millis() as u64;
        for row in &rows {
            let event = InstanceCreated {
                id: row.id,
                client_id: row.client_id.clone(),
                host_id: row.host_id,
                state: row.state.clone(),
            };
            events::publish(&self.bus, &event).await;
        }
        let built: Vec<api::Instance> = futures::stream::iter(rows)
            .map(|row| self.build(row))
            .buffered(BUILD_CONCURRENCY)
            .filter_map(|i| async { i })
            .collect()
            .await;
        let running = built.iter().filter(|i| i.state == "running").count();
        tracing::info!(
            reserved_ms,
            placed_ms,
            total_ms = started.elapsed().as_millis() as u64,
            running,
            "multi-create done"
        );
        Ok(built)
    }

    /// Hands `row`'s create task to its owner and answers the instance as the build left it
    /// (`None` when it was deleted meanwhile).
    async fn build(&self, row: InstanceRow) -> Option<api::Instance> {
        let handoff = InstanceRecover { from: Some(self.cluster.me()) };
        match call_owner(&self.cluster, &self.bus, &row.id.to_string(), &handoff, self.call_timeout).await {
            Ok(Recovered::Instance(instance)) => return Some(*instance),
            Ok(Recovered::Gone(_)) => return None,
            // The owner ran the build; the instance is in `error` with the agent's reason.
            Err(e) if e.code() == ErrorCode::AgentFailed => {}
            Err(e) => {
                tracing::warn!(instance = %row.id, error = %e, "could not hand a build to its owner; leaving it to recovery");
                self.let_go(row.id).await;
            }
        }
        match self.store.instance_get(row.id).await {
            Ok(found) => found.map(|r| to_api(&r, &self.zone)),
            Err(e) => {
                tracing::warn!(instance = %row.id, error = %e, "cannot re-read a built instance; answering it as inserted");
                Some(to_api(&row, &self.zone))
            }
        }
    }

    /// Lets go of `id`'s create task if this node still holds it (see [`UNCLAIMED`]). The write is
    /// version-checked: if the owner took the task meanwhile, nothing changes.
    async fn let_go(&self, id: Uuid) {
        let me = self.cluster.me();
        for _ in 0..LET_GO_RETRIES {
            let row = match self.store.instance_get(id).await {
                Ok(Some(row)) if row.task_node == Some(me) => row,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(instance = %id, error = %e, "cannot let go of a create task; it is finished when this node leaves");
                    return;
                }
            };
            let change = InstanceChange {
                state: row.state,
                error_reason: row.error_reason,
                task: row.task,
                task_node: Some(UNCLAIMED),
                task_target: row.task_target,
                move_to: None,
            };
            match self.store.instance_update(id, row.version, &change).await {
                Ok(Some(_)) => return,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(instance = %id, error = %e, "cannot let go of a create task; it is finished when this node leaves");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_stable_distinct_and_custom() {
        let batch = Uuid::parse_str("6f1c1bd2-5d3e-4e0e-9a57-0d2f2b4b7a10").unwrap();
        let ids: Vec<Uuid> = (1..=MAX_CREATE_COUNT).map(|k| member_id(batch, k)).collect();
        assert_eq!(ids[0], member_id(batch, 1), "derived, so the same every time");
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(ids.iter().all(|id| id.get_version_num() == 8 && *id != batch));
        assert_ne!(member_id(Uuid::new_v4(), 1), ids[0], "another batch, other ids");
    }
}
