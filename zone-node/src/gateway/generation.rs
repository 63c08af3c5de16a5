//! This zone's generation as the parents' watches (`GET /v1/zone/watch`) wait on it.
//!
//! A waiting watch must not read the database in a loop. So every node keeps the generation in a
//! [`tokio::sync::watch`] channel ([`Generation`]) that moves when:
//! - this node commits a change that bumps it: the store ticks ([`Store::generation_moves`]), the
//!   node reads the generation once and announces it to its peers on the bus
//!   ([`GenerationChanged`]);
//! - a peer announces one (a multi-node zone: the parent's watch may be held by any node).
//!
//! A lost event leaves a watch to its timeout and the parent to its next poll: slower, never
//! wrong. Cost: one read of one row per local change, nothing at rest.

use api::bus::{BusEvent, GenerationChanged};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Event};
use crate::store::Store;

/// The zone generation as this node last knew it. Cheap to clone.
#[derive(Clone)]
pub struct Generation {
    tx: std::sync::Arc<watch::Sender<i64>>,
    /// Cancelled when the node stops serving: waiting watches answer at once, so they do not
    /// hold up the HTTP drain for their whole timeout.
    closing: CancellationToken,
}

impl Generation {
    pub fn new(initial: i64) -> Generation {
        Generation { tx: std::sync::Arc::new(watch::channel(initial).0), closing: CancellationToken::new() }
    }

    /// Ends every waiting watch (the node is stopping).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Resolves when the node is stopping.
    pub async fn closed(&self) {
        self.closing.cancelled().await
    }

    pub fn current(&self) -> i64 {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.tx.subscribe()
    }

    /// Takes `generation` if it is newer than what is known (events may arrive out of order).
    pub fn saw(&self, generation: i64) {
        self.tx.send_if_modified(|g| {
            let newer = generation > *g;
            if newer {
                *g = generation;
            }
            newer
        });
    }
}

/// Keeps `generation` current until `stop` (see the module docs).
pub async fn run(store: Store, bus: Bus, generation: Generation, stop: CancellationToken) {
    let mut moves = store.generation_moves();
    let mut events = bus.subscribe();
    let me = bus.node_id();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            moved = moves.changed() => {
                if moved.is_err() {
                    return;
                }
                match store.generation().await {
                    Ok(g) => {
                        if g > generation.current() {
                            generation.saw(g);
                            crate::services::events::publish(&bus, &GenerationChanged { generation: g }).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the zone generation"),
                }
            }
            event = events.recv() => match event {
                Ok(Event { kind, source, body }) if kind == GenerationChanged::KIND && source != me => {
                    match serde_json::from_slice::<GenerationChanged>(&body) {
                        Ok(e) => generation.saw(e.generation),
                        Err(e) => tracing::warn!(error = %e, "undecodable zone.generation_changed event"),
                    }
                }
                Ok(_) => {}
                // Missed events: read the generation instead.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if let Ok(g) = store.generation().await {
                        generation.saw(g);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
