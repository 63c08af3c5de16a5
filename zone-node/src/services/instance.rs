//! The instance service: every operation on an instance, run by the ring owner of the instance's
//! id inside that instance's serial work queue (level 1), so two operations on one instance never
//! run at once anywhere in the zone.
//!
//! Its messages are [`api::bus::InstanceRequest`]: `instance.create` ([`CreateTask`], the id
//! is `x-resource-id`, chosen by the caller), `instance.action`, `instance.delete`, and
//! `instance.recover` (finishes a task whose node left the zone).
//!
//! Each task writes its transitional state (with the task and this node's id) before it calls the
//! agent, and its outcome after, both as version-checked updates ([`Store::instance_update`]); a
//! stale write is re-read and decided again, never dropped. If this node dies mid-task, the
//! instance's new ring owner finds the task under a node that is no longer live and finishes it
//! (`instance.recover`): agent tasks are idempotent per (instance, action), so it sends the same
//! action again and records the outcome. A task therefore ends done or failed with a reason, never
//! stuck.

use std::sync::Arc;
use std::time::Duration;

use api::agent::AgentAction;
use api::bus::{CreateTask, InstanceCreated, InstanceDeleted, InstanceRecover, InstanceRequest, InstanceStateChanged};
use api::{ErrorCode, InstanceAction, Resources};
use serde::Serialize;
use uuid::Uuid;

use crate::agent::client::{AgentCall, Agents};
use crate::bus::{Bus, Message};
use crate::cluster::{Cluster, ResourceHandler};
use crate::error::{Error, Result};
use crate::scheduler::{validate_requirements, validate_resources};
use crate::secrets::SecretKey;
use crate::services::events;
use crate::services::lifecycle::{begin, Stable, Task};
use crate::store::{InstanceChange, InstanceRow, NewInstance, Store, ZoneRow};

/// How often a version-checked write is re-read and retried before giving up (each retry means
/// someone else changed the row in between, which the serial queue makes rare).
const STALE_RETRIES: usize = 8;

pub struct InstanceService {
    store: Store,
    bus: Bus,
    cluster: Cluster,
    agents: Agents,
    zone: ZoneRow,
    agent_timeout: Duration,
    /// Opens the agent tokens sealed at rest.
    secrets: Arc<SecretKey>,
}

/// The API's view of an instance in this zone.
pub fn to_api(row: &InstanceRow, zone: &ZoneRow) -> api::Instance {
    // While the host is down nobody knows what the instance is doing: say so, and show the stored
    // state again once the host reports.
    let state = if row.host_state.as_deref() == Some("down") { "unknown".to_owned() } else { row.state.clone() };
    api::Instance {
        id: row.id.to_string(),
        name: row.name.clone(),
        client_id: row.client_id.clone(),
        state,
        host_id: row.host_id.map(|h| h.to_string()),
        zone_id: zone.id.to_string(),
        zone_path: vec![zone.name.clone()],
        resources: row.resources,
        requirements: row.requirements.clone(),
        error_reason: row.error_reason.clone(),
        version: row.version,
        created_at: crate::time::rfc3339_ms(row.created_at_ms),
        updated_at: crate::time::rfc3339_ms(row.updated_at_ms),
    }
}

fn not_found(id: Uuid) -> Error {
    Error::not_found(format!("instance {id}"))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

impl InstanceService {
    pub fn new(
        store: Store,
        bus: Bus,
        cluster: Cluster,
        agents: Agents,
        zone: ZoneRow,
        agent_timeout: Duration,
        secrets: Arc<SecretKey>,
    ) -> Self {
        InstanceService { store, bus, cluster, agents, zone, agent_timeout, secrets }
    }

    fn me(&self) -> Uuid {
        self.cluster.me()
    }

    async fn get(&self, id: Uuid) -> Result<InstanceRow> {
        self.store.instance_get(id).await?.ok_or_else(|| not_found(id))
    }

    async fn state_changed(&self, row: &InstanceRow, from: &str) {
        let event = InstanceStateChanged {
            id: row.id,
            client_id: row.client_id.clone(),
            from: from.to_owned(),
            to: row.state.clone(),
            host_id: row.host_id,
            error_reason: row.error_reason.clone(),
            version: row.version,
        };
        events::publish(&self.bus, &event).await;
    }

    /// Applies `decide` to the current row and writes its change if the row has not moved since
    /// the read; on a stale write re-reads and decides again.
    async fn modify(
        &self,
        id: Uuid,
        decide: impl FnMut(&InstanceRow) -> Result<InstanceChange>,
    ) -> Result<(InstanceRow, InstanceRow)> {
        let row = self.get(id).await?;
        self.modify_from(row, decide).await
    }

    /// [`Self::modify`] starting from `row`, a read this task just made (or wrote) itself, which
    /// saves a read per write. The write is still version-checked: if the row moved since, it is
    /// re-read and decided again.
    async fn modify_from(
        &self,
        mut before: InstanceRow,
        mut decide: impl FnMut(&InstanceRow) -> Result<InstanceChange>,
    ) -> Result<(InstanceRow, InstanceRow)> {
        let id = before.id;
        for _ in 0..STALE_RETRIES {
            let change = decide(&before)?;
            if let Some(after) = self.store.instance_update(id, before.version, &change).await? {
                return Ok((before, after));
            }
            tracing::debug!(instance = %id, version = before.version, "stale write; re-reading");
            before = self.get(id).await?;
        }
        Err(Error::api(ErrorCode::Conflict, format!("instance {id} kept changing; retry")))
    }

    async fn create(&self, id: Uuid, task: CreateTask) -> Result<Vec<u8>> {
        // A redelivered create (the bus may deliver twice) answers what the first one made.
        if let Some(row) = self.store.instance_get(id).await? {
            return encode(&to_api(&row, &self.zone));
        }
        let filters = validate_requirements(&task.requirements)?;
        validate_resources(&task.resources)?;
        let r = task.resources;
        let new = NewInstance {
            id,
            name: task.name,
            client_id: task.client_id,
            host_id: Uuid::nil(), // chosen by the placement
            resources: r,
            requirements: task.requirements,
            task_node: self.me(),
        };
        // The reservation and the row in one transaction: nothing stays reserved for an instance
        // that does not exist, even when this node dies in between.
        let row = self.store.instance_place_and_insert(&filters, &new).await?.ok_or_else(|| {
            Error::api(
                ErrorCode::NoValidHost,
                format!(
                    "no up host of zone {} meets the requirements with {} vcpus, {} MB memory and {} GB disk free",
                    self.zone.name, r.vcpus, r.memory_mb, r.disk_gb
                ),
            )
        })?;
        let event = InstanceCreated {
            id: row.id,
            client_id: row.client_id.clone(),
            host_id: row.host_id,
            state: row.state.clone(),
        };
        events::publish(&self.bus, &event).await;
        self.drive(row, Task::Create).await
    }

    async fn action(&self, id: Uuid, action: InstanceAction) -> Result<Vec<u8>> {
        let row = self.get(id).await?;
        check_host_up(&row)?;
        let task = begin(Some(action.action), &row.state).map_err(|r| Error::api(ErrorCode::InvalidState, r.0))?;
        let target = match task {
            Task::Migrate(_) => Some(self.reserve_target(&row, action.host_id.as_deref()).await?),
            _ => None,
        };
        match self.start_task(row.clone(), Some(action.action), target).await {
            Ok(row) => self.drive(row, task).await,
            Err(e) => {
                if let Some(t) = target {
                    self.release_quietly(t, &row.resources).await;
                }
                Err(e)
            }
        }
    }

    async fn delete(&self, id: Uuid) -> Result<Vec<u8>> {
        let row = self.get(id).await?;
        check_host_up(&row)?;
        begin(None, &row.state).map_err(|r| Error::api(ErrorCode::InvalidState, r.0))?;
        let row = self.start_task(row, None, None).await?;
        self.drive(row, Task::Delete).await
    }

    /// Writes the transitional state of the task `action` starts (delete when `None`) on `row`
    /// (just read), re-checking the transition on the row as it is when written.
    async fn start_task(
        &self,
        row: InstanceRow,
        action: Option<api::InstanceActionKind>,
        target: Option<Uuid>,
    ) -> Result<InstanceRow> {
        let me = self.me();
        let (before, after) = self
            .modify_from(row, |row| {
                check_host_up(row)?;
                let task = begin(action, &row.state).map_err(|r| Error::api(ErrorCode::InvalidState, r.0))?;
                Ok(InstanceChange {
                    state: task.transitional_state().into(),
                    error_reason: None,
                    task: Some(task.encode()),
                    task_node: Some(me),
                    task_target: target,
                    move_to: None,
                })
            })
            .await?;
        self.state_changed(&after, &before.state).await;
        Ok(after)
    }

    /// Chooses and reserves a migration target: the given host (which must meet the instance's
    /// requirements and have room) or the scheduler's best other host.
    async fn reserve_target(&self, row: &InstanceRow, wanted: Option<&str>) -> Result<Uuid> {
        let filters = validate_requirements(&row.requirements)?;
        let r = row.resources;
        if let Some(wanted) = wanted {
            let bad = |m: String| Error::api(ErrorCode::InvalidField, format!("host_id: {m}"));
            let host_id = Uuid::parse_str(wanted).map_err(|_| bad(format!("{wanted:?} is not a UUID")))?;
            if Some(host_id) == row.host_id {
                return Err(bad("the instance is already on that host".into()));
            }
            let host = self
                .store
                .host_get(host_id)
                .await?
                .ok_or_else(|| Error::api(ErrorCode::NotFound, format!("host {host_id} not found")))?;
            if let Some(f) = filters.iter().find(|f| !f.matches(&host.capabilities)) {
                return Err(Error::api(
                    ErrorCode::NoValidHost,
                    format!("host {} does not meet the instance's requirement on {:?}", host.name, f.key),
                ));
            }
            if !self.store.reserve(host_id, &r).await? {
                return Err(Error::api(
                    ErrorCode::NoValidHost,
                    format!("host {} is down or has not enough free capacity", host.name),
                ));
            }
            return Ok(host_id);
        }
        self.store.place_except(&filters, &r, row.host_id).await?.ok_or_else(|| {
            Error::api(ErrorCode::NoValidHost, "no other up host meets the instance's requirements with room for it")
        })
    }

    async fn release_quietly(&self, host: Uuid, r: &Resources) {
        if let Err(e) = self.store.release(host, r).await {
            tracing::error!(host = %host, error = %e, "could not release a reservation");
        }
    }

    /// Runs the agent side of `task` on `row` (already in its transitional state, owned by this
    /// node) and records the outcome.
    async fn drive(&self, row: InstanceRow, task: Task) -> Result<Vec<u8>> {
        let id = row.id;
        let outcome = self.call_agent(&row, task).await;
        match (outcome, task.final_state()) {
            (Ok(()), None) => {
                // Deleted on the host: remove the row, give the capacity back, bump the generation.
                let mut current = row.clone();
                for _ in 0..STALE_RETRIES {
                    if self.store.instance_remove(id, current.version).await? {
                        let event =
                            InstanceDeleted { id, client_id: current.client_id.clone(), host_id: current.host_id };
                        events::publish(&self.bus, &event).await;
                        return Ok(b"{}".to_vec());
                    }
                    // Changed since this task wrote it (or gone): re-read and try again.
                    current = self.get(id).await?;
                }
                Err(Error::api(ErrorCode::Conflict, format!("instance {id} kept changing; retry")))
            }
            (Ok(()), Some(done)) => {
                let move_to = match task {
                    Task::Migrate(_) => row.task_target,
                    _ => None,
                };
                let (before, after) = self
                    .modify_from(row.clone(), |_| {
                        Ok(InstanceChange { state: done.as_str().into(), move_to, ..InstanceChange::default() })
                    })
                    .await?;
                self.state_changed(&after, &before.state).await;
                encode(&to_api(&after, &self.zone))
            }
            (Err(failure), _) => {
                tracing::warn!(instance = %id, task = task.verb(), reason = %failure, "agent task failed");
                let (before, after) = self
                    .modify_from(row.clone(), |_| {
                        Ok(InstanceChange {
                            state: Stable::Error.as_str().into(),
                            error_reason: Some(failure.reason.clone()),
                            ..InstanceChange::default()
                        })
                    })
                    .await?;
                if let (Task::Migrate(_), Some(target)) = (task, row.task_target) {
                    self.release_quietly(target, &row.resources).await;
                }
                self.state_changed(&after, &before.state).await;
                Err(Error::api(
                    ErrorCode::AgentFailed,
                    format!("instance {id}: {}; the instance is now in state error", failure.reason),
                ))
            }
        }
    }

    async fn call_agent(&self, row: &InstanceRow, task: Task) -> Result<(), crate::agent::client::AgentFailure> {
        let fail = |reason: String| crate::agent::client::AgentFailure { reason };
        let host_id = row.host_id.ok_or_else(|| fail("the instance has no host".into()))?;
        let (agent_url, agent_token) = self
            .store
            .host_agent(host_id)
            .await
            .map_err(|e| fail(format!("cannot read host {host_id}: {e}")))?
            .ok_or_else(|| fail(format!("host {host_id} no longer exists")))?;
        let target_url = match (task.agent_action(), row.task_target) {
            (AgentAction::Migrate, Some(target)) => Some(
                self.store
                    .host_agent(target)
                    .await
                    .map_err(|e| fail(format!("cannot read target host {target}: {e}")))?
                    .ok_or_else(|| fail(format!("target host {target} no longer exists")))?
                    .0,
            ),
            _ => None,
        };
        // Sealed at rest (`agent::token`): opened only for the call.
        let agent_token = agent_token
            .map(|stored| crate::agent::token::open(&self.secrets, host_id, &stored))
            .transpose()
            .map_err(|e| fail(format!("cannot open the agent token of host {host_id}: {e}")))?;
        let call = AgentCall {
            agent_url: &agent_url,
            agent_token: agent_token.as_deref(),
            instance_id: row.id,
            action: task.agent_action(),
            resources: row.resources,
            target_agent_url: target_url.as_deref(),
        };
        self.agents.run(call, self.agent_timeout).await
    }

    /// Finishes a task whose node is no longer live, or one that node `from` hands over (a
    /// multi-create's coordinator, [`crate::services::batch`]): takes it over (version-checked,
    /// so only one node does) and sends the same agent action again (for a handed-over create,
    /// the first time). A task its node still holds and does not hand over is left alone, as is
    /// one this node took over already (a repeated hand-off answers the instance as it is).
    async fn recover(&self, id: Uuid, from: Option<Uuid>) -> Result<Vec<u8>> {
        let Some(row) = self.store.instance_get(id).await? else {
            return Ok(b"{}".to_vec());
        };
        let (Some(task_text), Some(node)) = (row.task.clone(), row.task_node) else {
            return encode(&to_api(&row, &self.zone));
        };
        let handed_over = from == Some(node);
        if !handed_over && (node == self.me() || self.is_live(node)) {
            return encode(&to_api(&row, &self.zone));
        }
        let Some(task) = Task::decode(&task_text) else {
            tracing::error!(instance = %id, task = task_text, "unknown task in the database; marking the instance failed");
            let (before, after) = self
                .modify(id, |_| {
                    Ok(InstanceChange {
                        state: Stable::Error.as_str().into(),
                        error_reason: Some(format!("unknown task {task_text:?} left by node {node}")),
                        ..InstanceChange::default()
                    })
                })
                .await?;
            self.state_changed(&after, &before.state).await;
            return encode(&to_api(&after, &self.zone));
        };
        let me = self.me();
        let (_, row) = self
            .modify(id, |r| {
                if r.task_node != Some(node) {
                    return Err(Error::api(ErrorCode::Conflict, "the task was taken over already"));
                }
                Ok(InstanceChange {
                    state: r.state.clone(),
                    error_reason: r.error_reason.clone(),
                    task: r.task.clone(),
                    task_node: Some(me),
                    task_target: r.task_target,
                    move_to: None,
                })
            })
            .await?;
        if handed_over {
            tracing::debug!(instance = %id, task = task.verb(), from = %node, "taking over a task its node hands over");
        } else {
            tracing::info!(instance = %id, task = task.verb(), from = %node, "taking over a task whose node left the zone");
        }
        self.drive(row, task).await
    }

    fn is_live(&self, node: Uuid) -> bool {
        self.cluster.view().state_of(node).is_some_and(|s| s.is_live())
    }
}

/// Refuses work on an instance whose host is down: its real state is unknown and its agent
/// unreachable.
fn check_host_up(row: &InstanceRow) -> Result<()> {
    if row.host_state.as_deref() == Some("down") {
        return Err(Error::api(
            ErrorCode::InvalidState,
            format!("instance {}: its host is down, so its state is unknown until the host reports again", row.id),
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl ResourceHandler for InstanceService {
    async fn handle(&self, msg: &Message) -> Result<Vec<u8>> {
        let key = msg.resource_id.as_deref().unwrap_or_default();
        let id = Uuid::parse_str(key)
            .map_err(|_| Error::api(ErrorCode::InvalidField, format!("x-resource-id {key:?} is not a UUID")))?;
        match InstanceRequest::decode(&msg.kind, &msg.body)? {
            InstanceRequest::Create(task) => self.create(id, task).await,
            InstanceRequest::Action(action) => self.action(id, action).await,
            InstanceRequest::Delete => self.delete(id).await,
            InstanceRequest::Recover(InstanceRecover { from }) => self.recover(id, from).await,
        }
    }
}

/// How many heartbeat intervals may pass between two scans for orphaned tasks while the view
/// stands still.
const ORPHAN_SCAN_FALLBACK: u32 = 5;

/// Finds tasks whose node is no longer live and asks this node's instance service to finish the
/// ones whose instance it owns. A task is orphaned by its node leaving the view, so every node
/// scans when its view changes or it starts serving again; and every [`ORPHAN_SCAN_FALLBACK`]
/// heartbeat intervals for the builds of a multi-create that nobody holds (their hand-out was
/// lost) and for a task written by a node after its peers had evicted it. Scanning every
/// interval was a read a second on every idle node.
pub async fn recover_orphans(
    store: Store,
    bus: Bus,
    cluster: Cluster,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    use std::collections::HashMap;
    // Recently asked, so a slow recovery is not queued again every tick.
    let mut asked: HashMap<Uuid, tokio::time::Instant> = HashMap::new();
    let resend_after = Duration::from_secs(60);
    let fallback = every.saturating_mul(ORPHAN_SCAN_FALLBACK);
    // The view epoch of the last scan, and when it ran.
    let mut scanned: Option<(i64, tokio::time::Instant)> = None;
    loop {
        // Between scans, sleep until the fallback or a view change (which may orphan tasks),
        // then scan on the next tick of the grid: an idle node wakes every `fallback`, not every
        // interval.
        if let Some((_, at)) = scanned {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(at + fallback) => {}
                _ = cluster.changed() => {}
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = federation::ticks::next(every) => {}
        }
        if !cluster.is_serving() {
            // Serving again is a reason to look: tasks may have been orphaned meanwhile.
            scanned = None;
            continue;
        }
        let epoch = cluster.view().epoch;
        if scanned.is_some_and(|(e, at)| e == epoch && at.elapsed() < fallback) {
            continue;
        }
        scanned = Some((epoch, tokio::time::Instant::now()));
        let tasks = match store.instances_in_task().await {
            Ok(t) => t,
            Err(error) => {
                tracing::warn!(%error, "cannot list instance tasks");
                continue;
            }
        };
        let view = cluster.view();
        let me = cluster.me();
        asked.retain(|_, at| at.elapsed() < resend_after);
        for (id, node) in tasks {
            let live = view.state_of(node).is_some_and(|s| s.is_live());
            if live || asked.contains_key(&id) || cluster.route_owner(&id.to_string()) != Some(me) {
                continue;
            }
            asked.insert(id, tokio::time::Instant::now());
            let msg = Message::rpc(&InstanceRecover::default()).with_resource(id.to_string());
            let to = crate::bus::Destination::Node { service: api::bus::service::INSTANCE.into(), node: me };
            if let Err(error) = bus.send(to, msg).await {
                tracing::warn!(instance = %id, %error, "cannot queue the recovery of a task");
                asked.remove(&id);
            }
        }
    }
}
