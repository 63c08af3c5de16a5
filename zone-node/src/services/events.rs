//! Canonical events on `<prefix>.event` (docs/wire-format.md, "Canonical events"); their kinds and
//! bodies are [`api::bus`] types.
//!
//! Events tell watchers what happened; nothing in the zone depends on receiving them (state lives
//! in the database), so a failed publish is logged and dropped rather than failing the work.

use api::bus::BusEvent;

use crate::bus::{Bus, Event};

/// Publishes `event` from this node.
pub async fn publish<E: BusEvent>(bus: &Bus, event: &E) {
    if let Err(error) = bus.publish(Event::of(bus.node_id(), event)).await {
        tracing::warn!(kind = E::KIND, %error, "could not publish an event");
    }
}
