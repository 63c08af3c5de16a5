//! The host service: a host's periodic reports, handled by the ring owner of the host's id, and
//! the sweep that marks silent hosts down.
//!
//! | type | body | reply |
//! |---|---|---|
//! | `host.report` | [`api::agent::HostReport`] (`x-resource-id` = host id) | `{}` |
//!
//! Hosts publish their presence through any node (`POST /v1/hosts/{id}/report`, or a bus client
//! sending `host.report` to `api.portal`); the message goes to the host's ring owner, so one node
//! at a time does a host's work and it moves with the ring when a node dies. Each node sweeps the
//! hosts it owns: an up host whose last report is `max_missed_reports` intervals old (by the
//! database clock) is marked down and `host.down` is published; its next report marks it up again
//! and publishes `host.up`. While a node that died still owned a host, reports for that host
//! could not be delivered (no fault of the host), so after every ring change the sweep waits one
//! full down-window (`max_missed_reports` intervals) before it marks anyone down.

use std::time::Duration;

use api::bus::{HostDown, HostRequest, HostUp};
use api::ErrorCode;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Bus, Message};
use crate::cluster::{Cluster, ResourceHandler};
use crate::error::{Error, Result};
use crate::scheduler::parse_capabilities;
use crate::services::events;
use crate::store::Store;

pub struct HostService {
    store: Store,
    bus: Bus,
}

impl HostService {
    pub fn new(store: Store, bus: Bus) -> HostService {
        HostService { store, bus }
    }
}

#[async_trait::async_trait]
impl ResourceHandler for HostService {
    async fn handle(&self, msg: &Message) -> Result<Vec<u8>> {
        let key = msg.resource_id.as_deref().unwrap_or_default();
        let id = Uuid::parse_str(key)
            .map_err(|_| Error::api(ErrorCode::InvalidField, format!("x-resource-id {key:?} is not a UUID")))?;
        let HostRequest::Report(report) = HostRequest::decode(&msg.kind, &msg.body)?;
        let caps = report.capabilities.as_ref().map(parse_capabilities).transpose()?;
        match self.store.host_report(id, caps.as_ref()).await? {
            None => Err(Error::api(ErrorCode::NotFound, format!("host {id} not found; register it again"))),
            Some(came_up) => {
                if came_up {
                    tracing::info!(host = %id, "host reported again: up");
                    events::publish(&self.bus, &HostUp { id }).await;
                }
                Ok(b"{}".to_vec())
            }
        }
    }
}

/// Marks down the silent hosts this node owns, every report interval.
pub async fn sweep_silent_hosts(
    store: Store,
    bus: Bus,
    cluster: Cluster,
    interval: Duration,
    max_missed: u64,
    stop: CancellationToken,
) {
    let interval_ms = interval.as_millis() as i64;
    // After a ring change (and at start) this node may own hosts whose reports just failed
    // because their previous owner was dead: wait one full down-window on the new ring before
    // judging anyone silent.
    let grace = interval.saturating_mul(u32::try_from(max_missed.max(1)).unwrap_or(u32::MAX));
    let mut epoch = cluster.view().epoch;
    let mut ring_since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if !cluster.is_serving() {
            continue;
        }
        let now_epoch = cluster.view().epoch;
        if now_epoch != epoch {
            epoch = now_epoch;
            ring_since = tokio::time::Instant::now();
        }
        if ring_since.elapsed() < grace {
            continue;
        }
        let stale = match store.hosts_stale(interval_ms, max_missed as i64).await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "cannot look for silent hosts");
                continue;
            }
        };
        for id in stale {
            if cluster.route_owner(&id.to_string()) != Some(cluster.me()) {
                continue;
            }
            match store.host_mark_down(id, interval_ms, max_missed as i64).await {
                Ok(true) => {
                    tracing::warn!(host = %id, missed = max_missed, "host stopped reporting: down");
                    events::publish(&bus, &HostDown { id, missed_reports: max_missed }).await;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(host = %id, %error, "cannot mark a host down"),
            }
        }
    }
}
