//! The database-backed work queue: for the few tasks that must be ordered across nodes.
//!
//! Jobs are rows. A node claims the oldest pending job of a queue only when no job of that queue
//! runs elsewhere under a live lease, so one job per queue runs at a time, zone-wide, in order.
//! The runner renews its lease while the job runs; if the node dies, the lease runs out and
//! another node takes the job again (so a job must be safe to run twice after a crash).
//! Slow by design (a database round trip per step): use it only where the ring cannot serialise.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{JobRow, Store, StoreError};

/// How often an idle runner looks for work.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a claim lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct DbQueue {
    store: Store,
    node: Uuid,
    lease: Duration,
}

impl DbQueue {
    pub fn new(store: Store, node: Uuid) -> DbQueue {
        DbQueue { store, node, lease: LEASE }
    }

    /// The same queue with another lease (tests use a short one).
    pub fn with_lease(mut self, lease: Duration) -> DbQueue {
        self.lease = lease;
        self
    }

    /// Adds a job at the tail of `queue`; returns its id.
    pub async fn enqueue(&self, queue: &str, payload: &str) -> Result<i64, StoreError> {
        self.store.job_enqueue(queue, payload).await
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        self.store.job_get(id).await
    }

    /// Runs the jobs of `queue` on this node until `stop`: each job's future resolves to its
    /// result (`Ok` marks it done, `Err` failed, with the text stored either way).
    pub async fn run<F, Fut>(&self, queue: &str, stop: CancellationToken, handler: F)
    where
        F: Fn(JobRow) -> Fut,
        Fut: Future<Output = Result<String, String>>,
    {
        let lease_ms = self.lease.as_millis() as i64;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let job = match self.store.job_claim(queue, self.node, lease_ms).await {
                Ok(job) => job,
                Err(error) => {
                    tracing::warn!(queue, %error, "claiming a job failed");
                    None
                }
            };
            let Some(job) = job else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL_INTERVAL) => continue,
                }
            };
            let id = job.id;
            tracing::debug!(queue, job = id, "running job");
            let work = handler(job);
            tokio::pin!(work);
            let mut renew = tokio::time::interval(self.lease / 3);
            renew.tick().await;
            let outcome = loop {
                tokio::select! {
                    outcome = &mut work => break Some(outcome),
                    _ = stop.cancelled() => break None,
                    _ = renew.tick() => {
                        match self.store.job_renew(id, self.node, lease_ms).await {
                            Ok(true) => {}
                            // Lost the lease (this node stalled past it): another node may run the
                            // job now, so this one must stop.
                            Ok(false) => { tracing::warn!(queue, job = id, "lost the job's lease; abandoning it"); break None }
                            Err(error) => tracing::warn!(queue, job = id, %error, "renewing the job's lease failed"),
                        }
                    }
                }
            };
            if let Some(outcome) = outcome {
                let (ok, text) = match outcome {
                    Ok(text) => (true, text),
                    Err(text) => (false, text),
                };
                if let Err(error) = self.store.job_finish(id, self.node, ok, &text).await {
                    tracing::warn!(queue, job = id, %error, "recording the job's result failed; its lease will expire and it will run again");
                }
            }
        }
    }
}
