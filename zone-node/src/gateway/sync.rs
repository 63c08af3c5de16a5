//! Keeping every node's view of the children current, and recording polls.
//!
//! The child-zone rows in the database are the truth: zone-add, zone-update and zone-delete
//! write them through any node, and the node that polls a child (the ring owner of the child's
//! id) writes what each poll learnt. Every node rebuilds its gateway's registry from the rows
//! at once when a node announces a change on the bus ([`ChildrenChanged`]), and every
//! [`FALLBACK_POLLS`] poll intervals in case an event was lost, so a new, changed or deleted child
//! takes effect on every node of the zone without a restart.

use std::sync::Arc;
use std::time::Duration;

use api::bus::{BusEvent, ChildrenChanged};
use federation::poll::PollSink;
use federation::{Child, Credentials, Gateway, PollOutcome};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Event};
use crate::cluster::Cluster;
use crate::secrets::SecretKey;
use crate::store::{ChildSnapshot, ChildZoneRow, PollRecord, Store};

/// What a node needs to rebuild its registry.
#[derive(Clone)]
pub struct RegistrySync {
    pub store: Store,
    pub bus: Bus,
    pub gateway: Arc<Gateway>,
    pub secrets: Arc<SecretKey>,
    /// This zone's generation as the parents' watches wait on it.
    pub generation: super::Generation,
}

impl RegistrySync {
    /// Rebuilds the registry from the database, and reads this zone's generation.
    pub async fn refresh(&self) -> crate::error::Result<()> {
        let rows = self.store.child_zones().await?;
        let children = rows.into_iter().map(|row| self.child(row)).collect();
        self.gateway.set_children(children);
        let generation = self.store.generation().await?;
        self.gateway.observe_own_generation(generation);
        // Also what keeps the watches right when a peer's event was lost: one fallback late.
        self.generation.saw(generation);
        Ok(())
    }

    /// A row as the gateway sees it. A password this node cannot open (another key) leaves the
    /// child offline with the reason in its row's error, rather than failing the whole refresh.
    fn child(&self, row: ChildZoneRow) -> Child {
        let (password, usable) = match self.secrets.open(row.id, &row.name, &row.password_sealed) {
            Ok(p) => (p.expose().to_owned(), true),
            Err(e) => {
                tracing::error!(child = %row.name, error = %e, "cannot open a child zone's credentials");
                (String::new(), false)
            }
        };
        Child {
            id: row.id.to_string(),
            name: row.name,
            api_url: row.api_url,
            credentials: Credentials::new(row.username, password),
            online: usable && row.status == api::ZoneStatus::Online,
            disabled: row.disabled,
            weight_offset: row.weight_offset,
            weight_scale: row.weight_scale,
            capabilities: row.capabilities,
            own_capabilities: row.own_capabilities,
            generation: row.generation,
            subtree: row.subtree,
        }
    }

    /// Tells the other nodes of the zone to refresh now.
    pub async fn announce(&self) {
        crate::services::events::publish(&self.bus, &ChildrenChanged {}).await;
    }

    /// Refreshes and announces, after this node changed a child row.
    pub async fn changed(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "cannot refresh the child zones");
        }
        self.announce().await;
    }
}

/// How many poll intervals pass between refreshes when no event asks for one. Events are the
/// fast path (every node that changes a child row announces it); the periodic refresh only
/// covers an event lost on the bus. Once a poll interval, it was two reads a second on every
/// node of every zone at rest, a good part of an idle zone's own work.
pub const FALLBACK_POLLS: u32 = 10;

/// Rebuilds the registry at once on [`ChildrenChanged`], and every [`FALLBACK_POLLS`] × `poll`.
pub async fn run_refresh(sync: RegistrySync, poll: Duration, stop: CancellationToken) {
    let every = poll.saturating_mul(FALLBACK_POLLS);
    let mut events = sync.bus.subscribe();
    loop {
        if let Err(e) = sync.refresh().await {
            tracing::warn!(error = %e, "cannot refresh the child zones");
        }
        let wake = async {
            loop {
                match events.recv().await {
                    Ok(Event { kind, .. }) if kind == ChildrenChanged::KIND => return,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = federation::ticks::next(every) => {}
            _ = wake => {}
        }
    }
}

/// Records polls in the database; polls the children whose id this node owns on the ring.
pub struct Sink {
    pub sync: RegistrySync,
    pub cluster: Cluster,
    pub failure_threshold: u32,
}

#[async_trait::async_trait]
impl PollSink for Sink {
    fn owns(&self, child_id: &str) -> bool {
        self.cluster.is_serving() && self.cluster.route_owner(child_id) == Some(self.cluster.me())
    }

    async fn ownership_changed(&self) {
        self.cluster.changed().await
    }

    async fn record(&self, child: &Child, outcome: PollOutcome) -> bool {
        let Ok(id) = uuid::Uuid::parse_str(&child.id) else { return false };
        // What routing and aggregation use changed: every node must see it soon.
        let learnt = match &outcome {
            PollOutcome::Answered(info) => {
                info.capabilities != child.capabilities
                    || info.own_capabilities != child.own_capabilities
                    || info.subtree.as_deref().unwrap_or_default() != child.subtree
            }
            PollOutcome::Unchanged | PollOutcome::Failed(_) => false,
        };
        let outcome = match outcome {
            // Nothing to write: the child answers what was recorded (a conditional poll's 304).
            PollOutcome::Unchanged => return true,
            PollOutcome::Answered(info) => crate::store::PollOutcome::Answered(ChildSnapshot {
                capabilities: info.capabilities,
                own_capabilities: info.own_capabilities,
                generation: info.generation,
                subtree: info.subtree.unwrap_or_default(),
            }),
            PollOutcome::Failed(reason) => crate::store::PollOutcome::Failed(reason),
        };
        let record = PollRecord { outcome, failure_threshold: self.failure_threshold };
        match self.sync.store.child_zone_record_poll(id, &record).await {
            Ok(Some(applied)) => {
                if applied.status_changed {
                    let status = applied.row.status.as_str();
                    tracing::warn!(child = %child.name, status, error = ?applied.row.last_error, "child zone changed status");
                }
                if applied.status_changed || applied.generation_changed || learnt {
                    self.sync.changed().await;
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(child = %child.name, error = %e, "cannot record a poll");
                false
            }
        }
    }
}
