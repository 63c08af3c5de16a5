//! Polling children: each child is polled by one node of the zone (the ring owner of its id,
//! decided by [`PollSink::owns`]), every interval plus a random jitter so a zone's polls do not
//! march in step, at most `max_concurrent` at once, each bounded by the poll timeout. What a poll
//! learns goes to the [`PollSink`] (the database, where every node of the zone reads it); a child
//! is offline after `failure_threshold` failed polls in a row and back online on the next good
//! one (counted by the sink, which sees every node's polls).
//!
//! Polls are the liveness check; changes travel faster through the watches ([`crate::watch`]).
//! So a poll is conditional: it sends the `ETag` of the child's answer this node last recorded,
//! and a child whose answer has not changed answers `304` without a body, which costs the sink
//! no write ([`PollOutcome::Unchanged`]). A tree at rest costs each parent one small request
//! per child per interval and no database write.
//!
//! Noticing a dead child does not wait for the interval. A child whose last poll failed, or that
//! is offline, is polled again every [`REPOLL_FAILING`] (alone, not with its siblings) until it
//! answers; and a watch that breaks (a dead child closes it at once) polls the child there and
//! then ([`crate::watch`]). So the interval (5 s by default) sets what a tree at rest costs and
//! how soon a child that hangs without closing its connections is first suspected, not how soon
//! a dead child is offline (about 2 s) or a child that answers again is back (about 1 s).
//!
//! The first polls run at once when the node starts, in the background: start-up never waits on
//! a child, and a child that does not answer costs one poll timeout, not a hung node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::gateway::{Gateway, PollOutcome};
use crate::registry::Child;

/// How soon a child whose last poll failed, or that is offline, is polled again: three failures
/// (the default threshold) take about two of these plus three poll timeouts.
pub const REPOLL_FAILING: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct PollSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Up to this much is added to each interval, at random.
    pub jitter: Duration,
    pub max_concurrent: usize,
}

/// Where poll results go, and which children this node polls.
#[async_trait::async_trait]
pub trait PollSink: Send + Sync + 'static {
    /// Whether this node polls `child_id` now.
    fn owns(&self, child_id: &str) -> bool;
    /// Records what a poll learnt; false when it could not be recorded. Never called with
    /// [`PollOutcome::Unchanged`]: there is nothing to record.
    async fn record(&self, child: &Child, outcome: PollOutcome) -> bool;
    /// Resolves when what [`PollSink::owns`] answers may have changed (a node of the zone came
    /// or went): the watches are re-divided then. By default never; they are also re-divided
    /// every 10 s.
    async fn ownership_changed(&self) {
        std::future::pending::<()>().await
    }
}

/// Polls children and records what changed: shared by the poll loop ([`run`]) and the watches
/// ([`crate::watch::run`]), so both send the `ETag` of the last answer recorded.
pub struct Poller {
    gateway: Arc<Gateway>,
    sink: Arc<dyn PollSink>,
    timeout: Duration,
    // A std mutex: held for one map operation, never across an await.
    etags: Mutex<HashMap<String, String>>,
    /// One lock per child, held for a whole poll (request and record): see [`Poller::poll`].
    polling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The children whose last poll by this node failed: polled again soon ([`REPOLL_FAILING`]).
    failing: Mutex<HashSet<String>>,
}

impl Poller {
    pub fn new(gateway: Arc<Gateway>, sink: Arc<dyn PollSink>, timeout: Duration) -> Poller {
        Poller {
            gateway,
            sink,
            timeout,
            etags: Mutex::new(HashMap::new()),
            polling: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashSet::new()),
        }
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn sink(&self) -> &Arc<dyn PollSink> {
        &self.sink
    }

    /// The poll timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Polls `child` once and records what changed. Conditional only while the child is online
    /// in the registry: an offline child's answer must be recorded to bring it back, and the
    /// `ETag` a node kept from before the child went offline (or before this node polled it)
    /// says nothing about what the database holds now.
    ///
    /// Polls of one child run one at a time. The poll loop and a watch can poll the same child at
    /// once; an answer from before a change, recorded after the answer from after it, would put
    /// the old generation and aggregate back until the next poll (a stale parent for up to a
    /// poll interval: the 200–530 ms outliers of the tree benchmark). Waiting, the second poll
    /// then asks with the `ETag` the first recorded, so it costs a `304` when nothing moved.
    pub async fn poll(&self, child: &Child) {
        let lock = self.polling().entry(child.id.clone()).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let etag = if child.online { self.etags().get(&child.id).cloned() } else { None };
        let (outcome, new_etag) = self.gateway.poll_if_changed(child, self.timeout, etag.as_deref()).await;
        {
            let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(outcome, PollOutcome::Failed(_)) {
                failing.insert(child.id.clone());
            } else {
                failing.remove(&child.id);
            }
        }
        match outcome {
            PollOutcome::Unchanged => {}
            PollOutcome::Failed(reason) => {
                tracing::debug!(child = %child.name, %reason, "poll failed");
                self.etags().remove(&child.id);
                self.sink.record(child, PollOutcome::Failed(reason)).await;
            }
            answered @ PollOutcome::Answered(_) => {
                let recorded = self.sink.record(child, answered).await;
                match new_etag {
                    Some(tag) if recorded => self.etags().insert(child.id.clone(), tag),
                    _ => self.etags().remove(&child.id),
                };
            }
        }
    }

    /// Whether this node's last poll of `child_id` failed.
    pub fn failing(&self, child_id: &str) -> bool {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).contains(child_id)
    }

    /// Forgets the `ETag`s of children this node no longer polls.
    fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.etags().retain(|id, _| keep(id));
        self.polling().retain(|id, _| keep(id));
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).retain(|id| keep(id));
    }

    fn polling(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.polling.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn etags(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.etags.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Polls this node's children until `stop`: all of them every interval (plus jitter), and in
/// between, every [`REPOLL_FAILING`], the ones in doubt (see [`in_doubt`]).
pub async fn run(poller: Arc<Poller>, settings: PollSettings, stop: CancellationToken) {
    // When the next round of every child is due; the first runs at once.
    let mut full_due = tokio::time::Instant::now();
    loop {
        let sink = poller.sink().clone();
        let mine: Vec<Arc<Child>> =
            poller.gateway().registry().children().iter().filter(|c| sink.owns(&c.id)).cloned().collect();
        poller.retain(&|id| mine.iter().any(|c| c.id == id));
        let full = tokio::time::Instant::now() >= full_due;
        if full {
            let jitter_ms = settings.jitter.as_millis() as u64;
            let extra = if jitter_ms > 0 { rand::thread_rng().gen_range(0..=jitter_ms) } else { 0 };
            full_due = tokio::time::Instant::now() + settings.interval + Duration::from_millis(extra);
        }
        let due: Vec<Arc<Child>> = mine.iter().filter(|c| full || in_doubt(&poller, c)).cloned().collect();
        let round = futures::stream::iter(due).for_each_concurrent(settings.max_concurrent.max(1), |child| {
            let poller = &poller;
            async move { poller.poll(&child).await }
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = round => {}
        }
        // The registry after the round: whether a child is offline now.
        let doubt = mine.iter().any(|c| poller.gateway().registry().get(&c.id).is_some_and(|c| in_doubt(&poller, &c)));
        let wake = if doubt { full_due.min(tokio::time::Instant::now() + REPOLL_FAILING) } else { full_due };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// A child polled again within [`REPOLL_FAILING`] rather than at the next interval: one whose
/// last poll failed (to reach the failure threshold in seconds), or one offline (to bring it back
/// within a second of answering again, as a watch does for a child that restarted; a child that
/// hung and resumes answers no watch until one ends).
fn in_doubt(poller: &Poller, child: &Child) -> bool {
    !child.online || poller.failing(&child.id)
}
