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
//! and publishes `host.up`. The owner records reports in batches (one transaction for every
//! report that arrived while the previous batch was written), and the sweep reads silent hosts
//! from an index, so an idle zone's cost follows its report rate, not its size. While a node that died still owned a host, reports for that host
//! could not be delivered (no fault of the host), so after every ring change the sweep waits one
//! full down-window (`max_missed_reports` intervals) before it marks anyone down.

use std::collections::BTreeMap;
use std::time::Duration;

use api::bus::{HostDown, HostRequest, HostUp};
use api::{CapabilityValue, ErrorCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Bus, Message};
use crate::cluster::{Cluster, ResourceHandler};
use crate::error::{Error, Result};
use crate::scheduler::parse_capabilities;
use crate::services::events;
use crate::store::{Store, StoreError};

pub struct HostService {
    bus: Bus,
    reports: ReportBatcher,
}

impl HostService {
    /// Spawns the task that records reports in batches (see [`ReportBatcher`]).
    pub fn new(store: Store, bus: Bus) -> HostService {
        HostService { bus, reports: ReportBatcher::spawn(store) }
    }
}

/// The most reports one batch records.
const MAX_BATCH: usize = 2_000;
/// How long a batch gathers reports after its first one: what a report's answer may wait, and
/// what makes 1,000 reports a second some 40 transactions instead of 1,000.
const BATCH_WINDOW: Duration = Duration::from_millis(25);

/// A report waiting for its batch, and where its outcome goes.
struct PendingReport {
    id: Uuid,
    capabilities: Option<BTreeMap<String, CapabilityValue>>,
    outcome: oneshot::Sender<Result<Option<bool>, StoreError>>,
}

/// Records host reports in batches ("group commit"): one task writes every report that arrived
/// within [`BATCH_WINDOW`] of a batch's first (or while it wrote the previous batch) in one
/// transaction ([`Store::hosts_report`]). A report waits for its own batch, so its reply still
/// says whether the host exists; the node's database work stays a few dozen statements a second
/// whatever the report rate, instead of one transaction per report.
struct ReportBatcher {
    queue: mpsc::UnboundedSender<PendingReport>,
}

impl ReportBatcher {
    fn spawn(store: Store) -> ReportBatcher {
        let (queue, mut rx) = mpsc::unbounded_channel::<PendingReport>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            // Ends when the service (the only sender) is dropped.
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // Gather for one window after the first report: evenly spread reports (1,000 a
                // second arrive 1 ms apart) would otherwise each find the writer idle and make a
                // transaction of their own.
                let window_ends = tokio::time::Instant::now() + BATCH_WINDOW;
                while batch.len() < MAX_BATCH {
                    let room = MAX_BATCH - batch.len();
                    match tokio::time::timeout_at(window_ends, rx.recv_many(&mut batch, room)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                let reports: Vec<_> = batch.iter().map(|p| (p.id, p.capabilities.as_ref())).collect();
                let mut outcome = store.hosts_report(&reports).await;
                if let Err(error) = &outcome {
                    // PostgreSQL may pick this batch as a deadlock victim against another node's
                    // (both count capabilities into the same aggregate rows); once more then.
                    tracing::warn!(%error, count = reports.len(), "cannot record a batch of host reports; retrying once");
                    outcome = store.hosts_report(&reports).await;
                }
                metrics::histogram!("zone_host_report_batch_size").record(batch.len() as f64);
                for (i, pending) in batch.drain(..).enumerate() {
                    let result = match &outcome {
                        Ok(each) => Ok(each.get(i).copied().flatten()),
                        Err(e) => Err(e.clone()),
                    };
                    // The caller may have given up (its bus call timed out): nothing to tell.
                    let _ = pending.outcome.send(result);
                }
            }
        });
        ReportBatcher { queue }
    }

    /// Records one report with the next batch; see [`Store::host_report`] for the outcome.
    async fn report(&self, id: Uuid, capabilities: Option<BTreeMap<String, CapabilityValue>>) -> Result<Option<bool>> {
        let (outcome, rx) = oneshot::channel();
        self.queue
            .send(PendingReport { id, capabilities, outcome })
            .map_err(|_| Error::Internal("the report batcher has stopped".into()))?;
        let result = rx.await.map_err(|_| Error::Internal("the report batcher dropped a report".into()))?;
        Ok(result?)
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
        match self.reports.report(id, caps).await? {
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
            _ = federation::ticks::next(interval) => {}
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
