//! Canonical events on `<prefix>.event` (docs/wire-format.md, "Canonical events").
//!
//! Events tell watchers what happened; nothing in the zone depends on receiving them (state lives
//! in the database), so a failed publish is logged and dropped rather than failing the work.

use serde_json::Value;

use crate::bus::{Bus, Event};

pub const INSTANCE_CREATED: &str = "instance.created";
pub const INSTANCE_STATE_CHANGED: &str = "instance.state_changed";
pub const INSTANCE_DELETED: &str = "instance.deleted";
pub const HOST_UP: &str = "host.up";
pub const HOST_DOWN: &str = "host.down";

/// Publishes `body` as event `kind` from this node.
pub async fn publish(bus: &Bus, kind: &str, body: Value) {
    let event = Event::new(kind, bus.node_id(), body.to_string().into_bytes());
    if let Err(error) = bus.publish(event).await {
        tracing::warn!(kind, %error, "could not publish an event");
    }
}
