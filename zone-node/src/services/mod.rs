//! The services a node runs on the bus.
//!
//! - [`portal`]: the `api.portal` handler every node runs: API messages from any client of the
//!   bus land here and are routed to the ring owner's service, or answered locally
//! - [`probe`]: a diagnostic resource service used to check that a resource is never worked on by
//!   two nodes at once (it counts concurrent handlers in the database)

pub mod portal;
pub mod probe;

/// Service names (the `<service>` part of `<prefix>.message.<service>.<node>`).
pub const PROBE: &str = "probe";
