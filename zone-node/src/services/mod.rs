//! The services a node runs on the bus.
//!
//! - [`portal`]: the `api.portal` handler every node runs: API messages from any client of the
//!   bus land here and are routed to the ring owner's service, or answered locally
//! - [`instance`]: every operation on an instance, on the instance's ring owner, one at a time
//!   per instance; [`lifecycle`] is its state machine
//! - [`batch`]: multi-creates, coordinated by the node that received them (all-or-nothing
//!   placement, one insert), each instance then built by its owner's instance service
//! - [`host`]: host reports on the host's ring owner, and the sweep that marks silent hosts down
//! - [`events`]: the canonical events published on `<prefix>.event`
//! - [`probe`]: a diagnostic resource service used to check that a resource is never worked on by
//!   two nodes at once (it counts concurrent handlers in the database)

pub mod batch;
pub mod events;
pub mod host;
pub mod instance;
pub mod lifecycle;
pub mod portal;
pub mod probe;
