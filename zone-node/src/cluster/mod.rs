//! A zone's management nodes as one cluster: who is in it, who owns what, where messages go.
//!
//! - [`ring`]: the consistent-hashing ring over node ids
//! - [`membership`]: heartbeats in the database, eviction, fencing, the ring epoch, and the
//!   handoff protocol that keeps one resource's work on one node at a time
//! - [`router`]: resource services: every message about a resource goes through the ring owner's
//!   serial work queue, re-routed when it reaches a node that no longer owns the resource
//! - `answered`: the replies of resource tasks by message id, so a message delivered twice runs once
//!
//! docs/ARCHITECTURE.md ("Ring changes") explains the handoff protocol in prose.

mod answered;
pub mod membership;
pub mod ring;
pub mod router;

pub use membership::{Cluster, ClusterSettings};
pub use router::{call_owner, destination, into_reply, ResourceHandler, ResourceService};
