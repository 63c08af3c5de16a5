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
//! and publishes `host.up`. A steady report (no capabilities, the host up) that comes within
//! `max_missed_reports - 1` intervals of the host's last recorded one is only noted in the
//! owner's memory ([`Presence`]), and the sweep consults that note before it marks a host down:
//! at the defaults every other report reaches the database. The owner records the others in
//! batches (one transaction for every report that arrived while the previous batch was written),
//! and the sweep reads silent hosts
//! from an index, so an idle zone's cost follows its report rate, not its size. While a node that died still owned a host, reports for that host
//! could not be delivered (no fault of the host), so after every ring change the sweep waits one
//! full down-window (`max_missed_reports` intervals) before it marks anyone down.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
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
    presence: Arc<Presence>,
}

impl HostService {
    /// Spawns the task that records reports in batches (see [`ReportBatcher`]).
    pub fn new(store: Store, bus: Bus, presence: Arc<Presence>) -> HostService {
        HostService { bus, reports: ReportBatcher::spawn(store), presence }
    }
}

/// The steady reports a host's owner answered from memory instead of writing them: per host,
/// when its last report was recorded (and found it up) and when it last reported at all.
///
/// Holding a report back for less than the down-window minus one interval keeps every host that
/// reports on time out of [`Store::hosts_stale`] (its recorded report is never a whole window
/// old), so the sweep reads no more than before; the sweep asks [`Presence::last_heard`] about
/// the few it does find (a report that came late to the database). A new owner after a ring
/// change knows nothing yet, so it records the first report it gets. One thing is seen later: a
/// report for a host deleted since its last recorded one is answered 204, not 404, until the
/// next recorded report (at most `max_missed_reports - 1` intervals).
#[derive(Debug, Default)]
pub struct Presence {
    hold: Duration,
    hosts: Mutex<HashMap<Uuid, Heard>>,
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    recorded: tokio::time::Instant,
    last: tokio::time::Instant,
}

impl Presence {
    /// Reports of hosts reporting every `interval` and down after `max_missed` silent ones.
    pub fn new(interval: Duration, max_missed: u64) -> Presence {
        let hold = interval.saturating_mul(u32::try_from(max_missed.saturating_sub(1)).unwrap_or(u32::MAX));
        Presence { hold, hosts: Mutex::default() }
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Heard>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a steady report of `id` and says true when it need not be recorded: the host's last
    /// recorded report, which found it up, is younger than the hold.
    pub fn hold_back(&self, id: Uuid) -> bool {
        let now = tokio::time::Instant::now();
        match self.hosts().get_mut(&id) {
            Some(heard) if now.duration_since(heard.recorded) < self.hold => {
                heard.last = now;
                true
            }
            _ => false,
        }
    }

    /// A report of `id`, up, was recorded just now.
    fn recorded(&self, id: Uuid) {
        let now = tokio::time::Instant::now();
        self.hosts().insert(id, Heard { recorded: now, last: now });
    }

    /// `id` is down or gone: its next report must be recorded.
    fn forget(&self, id: Uuid) {
        self.hosts().remove(&id);
    }

    /// When `id` last reported to this node, recorded or not.
    pub fn last_heard(&self, id: Uuid) -> Option<tokio::time::Instant> {
        self.hosts().get(&id).map(|heard| heard.last)
    }

    /// Drops what was heard before `older_than` ago: hosts deleted, or owned by another node now.
    fn prune(&self, older_than: Duration) {
        self.hosts().retain(|_, heard| heard.last.elapsed() < older_than);
    }
}

/// The most reports one batch records.
const MAX_BATCH: usize = 2_000;
/// How long a batch gathers reports after its first one: what a report's answer may wait, and
/// what makes 1,000 reports a second some 40 transactions instead of 1,000.
const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// A batch gathers only when the previous one began less than this ago: reports are coming
/// often. A report that finds the writer idle after a quiet spell (a zone with few hosts) is
/// written at once, without waiting out the window on a timer.
const GATHER_WHEN_BUSY: Duration = Duration::from_millis(100);

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
            let mut last_began: Option<tokio::time::Instant> = None;
            // Ends when the service (the only sender) is dropped.
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // Gather for one window after the first report: evenly spread reports (1,000 a
                // second arrive 1 ms apart) would otherwise each find the writer idle and make a
                // transaction of their own.
                let began = tokio::time::Instant::now();
                let busy = last_began.is_some_and(|last| began.duration_since(last) < GATHER_WHEN_BUSY);
                last_began = Some(began);
                let window_ends = began + BATCH_WINDOW;
                while busy && batch.len() < MAX_BATCH {
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
        if report.capabilities.is_none() && self.presence.hold_back(id) {
            return Ok(b"{}".to_vec());
        }
        let caps = report.capabilities.as_ref().map(parse_capabilities).transpose()?;
        match self.reports.report(id, caps).await? {
            None => {
                self.presence.forget(id);
                Err(Error::api(ErrorCode::NotFound, format!("host {id} not found; register it again")))
            }
            Some(came_up) => {
                self.presence.recorded(id);
                if came_up {
                    tracing::info!(host = %id, "host reported again: up");
                    events::publish(&self.bus, &HostUp { id }).await;
                }
                Ok(b"{}".to_vec())
            }
        }
    }
}

/// At most this many report intervals pass between two looks for silent hosts, whatever the last
/// look said: the safety net for a host that came up where this node could not see it (on another
/// node, just before a ring change).
const LOOK_AT_LEAST_EVERY: u32 = 10;

/// Marks down the silent hosts this node owns. It looks on the report-interval grid, but only
/// when a host may have fallen silent since the last look: when the oldest report among the up
/// hosts ages into the down-window (the last look says when), when the zone's generation moved
/// (a host that comes up moves it), after a view change, and every [`LOOK_AT_LEAST_EVERY`]
/// intervals. In between it sleeps: a zone with no host up, or with hosts that report on time,
/// neither wakes nor reads every second (a look a second was a database round trip and a
/// wake-up a second on every idle zone).
pub async fn sweep_silent_hosts(
    store: Store,
    bus: Bus,
    cluster: Cluster,
    presence: Arc<Presence>,
    interval: Duration,
    max_missed: u64,
    stop: CancellationToken,
) {
    let interval_ms = interval.as_millis() as i64;
    // After a ring change (and at start) this node may own hosts whose reports just failed
    // because their previous owner was dead: wait one full down-window on the new ring before
    // judging anyone silent.
    let grace = interval.saturating_mul(u32::try_from(max_missed.max(1)).unwrap_or(u32::MAX));
    let at_least = interval.saturating_mul(LOOK_AT_LEAST_EVERY);
    let mut epoch = cluster.view().epoch;
    let mut ring_since = tokio::time::Instant::now();
    let mut moves = store.generation_moves();
    let mut next_look = tokio::time::Instant::now();
    loop {
        // Sleep until the next look is due, or something may have made one due sooner: a host
        // that came up (the generation moved) or a view change. Then look on the next tick of
        // the grid, so a busy zone (its generation moving all the time) still looks once an
        // interval at most.
        let due = next_look.max(tokio::time::Instant::now());
        let mut changed = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(federation::ticks::next_after(due, interval)) => false,
            _ = moves.changed() => true,
            _ = cluster.changed() => true,
        };
        if changed {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = federation::ticks::next(interval) => {}
            }
        }
        if !cluster.is_serving() {
            next_look = tokio::time::Instant::now();
            continue;
        }
        let now_epoch = cluster.view().epoch;
        if now_epoch != epoch {
            epoch = now_epoch;
            ring_since = tokio::time::Instant::now();
            next_look = ring_since;
        }
        if ring_since.elapsed() < grace {
            next_look = tokio::time::Instant::now();
            continue;
        }
        changed |= moves.has_changed().unwrap_or(true);
        if !changed && tokio::time::Instant::now() < next_look {
            continue;
        }
        moves.mark_unchanged();
        let stale = match store.hosts_stale(interval_ms, max_missed as i64).await {
            Ok(stale) => stale,
            Err(error) => {
                tracing::warn!(%error, "cannot look for silent hosts");
                continue;
            }
        };
        let now = tokio::time::Instant::now();
        next_look = now + stale.next_in.map_or(at_least, |due| due.min(at_least));
        presence.prune(at_least.max(grace).saturating_mul(2));
        for id in stale.ids {
            if cluster.route_owner(&id.to_string()) != Some(cluster.me()) {
                continue;
            }
            // Reported here since, without the report being recorded: silent only a whole
            // window after that.
            if let Some(heard) = presence.last_heard(id).filter(|heard| now.duration_since(*heard) < grace) {
                next_look = next_look.min(heard + grace);
                continue;
            }
            match store.host_mark_down(id, interval_ms, max_missed as i64).await {
                Ok(true) => {
                    presence.forget(id);
                    tracing::warn!(host = %id, missed = max_missed, "host stopped reporting: down");
                    events::publish(&bus, &HostDown { id, missed_reports: max_missed }).await;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(host = %id, %error, "cannot mark a host down");
                    next_look = tokio::time::Instant::now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_steady_report_is_held_back_only_within_the_hold_after_a_recorded_one() {
        let second = Duration::from_secs(1);
        // Reports every second, down after 3 missed: held back for under 2 s.
        let presence = Presence::new(second, 3);
        let host = Uuid::new_v4();
        assert!(!presence.hold_back(host), "nothing recorded yet: record it");
        assert_eq!(presence.last_heard(host), None);

        presence.recorded(host);
        tokio::time::advance(second).await;
        assert!(presence.hold_back(host), "1 s after a recorded report");
        assert_eq!(presence.last_heard(host), Some(tokio::time::Instant::now()), "heard, though not recorded");
        tokio::time::advance(second).await;
        assert!(!presence.hold_back(host), "2 s after: record it, so the database never lags a whole window");

        presence.recorded(host);
        presence.forget(host);
        assert!(!presence.hold_back(host), "a host marked down or gone is recorded at its next report");

        // Down after one missed report: nothing is ever held back.
        let strict = Presence::new(second, 1);
        strict.recorded(host);
        assert!(!strict.hold_back(host));
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_heard_long_ago_is_pruned() {
        let presence = Presence::new(Duration::from_secs(1), 3);
        let (old, recent) = (Uuid::new_v4(), Uuid::new_v4());
        presence.recorded(old);
        tokio::time::advance(Duration::from_secs(30)).await;
        presence.recorded(recent);
        presence.prune(Duration::from_secs(20));
        assert_eq!(presence.last_heard(old), None);
        assert!(presence.last_heard(recent).is_some());
    }
}
