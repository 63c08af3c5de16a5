//! Reconciling creates cut off at children once they are back ([`Gateway::reconcile_cut_offs`]),
//! without waiting for someone to read them: a task that wakes when the view of the children is
//! replaced (a poll brought a child back online, ...) and, while any cut-off create waits, every
//! few seconds (an entry waits `settle` before its child is asked about it). Idle, it waits on the
//! view only: no timer.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;

/// How often waiting cut-off creates are tried again while some wait.
const RETRY: Duration = Duration::from_secs(5);

pub async fn run(gateway: Arc<Gateway>, settle: Duration, stop: CancellationToken) {
    let mut replaced = gateway.registry().replacements();
    loop {
        let retry = async {
            if gateway.has_cut_offs() {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = replaced.changed() => {
                if changed.is_err() {
                    return; // the registry is gone: the gateway is shutting down
                }
            }
            _ = retry => {}
        }
        if gateway.has_cut_offs() {
            let settled = gateway.reconcile_cut_offs(settle).await;
            if settled > 0 {
                tracing::info!(settled, "reconciled creates cut off at child zones");
            }
        }
    }
}
