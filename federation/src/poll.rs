//! Polling children: each child is polled by one node of the zone (the ring owner of its id,
//! decided by [`PollSink::owns`]), every interval plus a random jitter so a zone's polls do not
//! march in step, at most `max_concurrent` at once, each bounded by the poll timeout. What a poll
//! learns goes to the [`PollSink`] (the database, where every node of the zone reads it); a child
//! is offline after `failure_threshold` failed polls in a row and back online on the next good
//! one (counted by the sink, which sees every node's polls).
//!
//! The first polls run at once when the node starts, in the background: start-up never waits on
//! a child, and a child that does not answer costs one poll timeout, not a hung node.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::gateway::{Gateway, PollOutcome};
use crate::registry::Child;

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
    async fn record(&self, child: &Child, outcome: PollOutcome);
}

/// Polls this node's children until `stop`.
pub async fn run(gateway: Arc<Gateway>, sink: Arc<dyn PollSink>, settings: PollSettings, stop: CancellationToken) {
    let mut first = true;
    loop {
        if !first {
            let jitter_ms = settings.jitter.as_millis() as u64;
            let extra = if jitter_ms > 0 { rand::thread_rng().gen_range(0..=jitter_ms) } else { 0 };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(settings.interval + Duration::from_millis(extra)) => {}
            }
        }
        first = false;
        let mine: Vec<Arc<Child>> =
            gateway.registry().children().iter().filter(|c| sink.owns(&c.id)).cloned().collect();
        let round = futures::stream::iter(mine).for_each_concurrent(settings.max_concurrent.max(1), |child| {
            let (gateway, sink) = (&gateway, &sink);
            async move {
                let outcome = gateway.poll(&child, settings.timeout).await;
                if let PollOutcome::Failed(reason) = &outcome {
                    tracing::debug!(child = %child.name, %reason, "poll failed");
                }
                sink.record(&child, outcome).await;
            }
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = round => {}
        }
    }
}
