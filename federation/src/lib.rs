//! Gateway logic of a zone: how a zone works with the zones below it.
//!
//! Zones nest into multi-root trees (global → region → data centre → huddle). Every zone is also
//! a gateway: it watches and polls its children over their public REST API, merges their capability
//! aggregates with its own, routes requests down to the child whose capabilities fit, lists
//! across its subtree, and answers "which lowest zone manages client X?" from a cache.
//!
//! This crate never opens a database or a bus: it talks to other zones only through the `api`
//! client ([`transport::RestTransport`]) and to its own zone only through
//! [`gateway::LocalZone`], which `zone-node` implements. So it can be tested alone, a whole tree
//! in one process (see `tests/tree.rs`).
//!
//! # Layout, in reading order
//! - [`error`]: [`FedError`], the crate's one error type, and its API error codes
//! - [`path`]: the path of zones a request crossed; loop and hop-limit checks
//! - [`identity`]: who a forwarded request acts for, and how a child narrows it
//! - [`registry`]: this zone's children as last polled, with their credentials
//! - [`matching`]: whether an aggregate may satisfy requirements and resources
//! - [`route`]: which of this zone and its children may take a request, ranked
//! - [`scatter`]: asking many children with one deadline; merging pages by id
//! - [`lookup`]: the lowest-zone rule and its generation-checked cache
//! - [`transport`]: [`transport::ChildTransport`] and its REST implementation
//! - [`gateway`]: [`Gateway`], which puts it all together for each REST call
//! - [`poll`]: the polling loop (conditional polls: the liveness check)
//! - [`watch`]: one watch per child, re-read at once when its generation moves
//! - [`reconcile`]: creates cut off at a child, settled once it is back
//! - [`ticks`]: one grid of ticks for a process's periodic loops, so they wake together

pub mod error;
pub mod etag;
pub mod gateway;
pub mod identity;
pub mod lookup;
pub mod matching;
pub mod path;
pub mod poll;
pub mod reconcile;
pub mod registry;
pub mod route;
pub mod scatter;
pub mod ticks;
pub mod transport;
pub mod watch;

pub use error::FedError;
pub use gateway::{
    Changed, Gateway, Identity, LocalZone, Lookup, PollOutcome, RequestContext, Route, Routed, Settings,
};
pub use identity::{Principal, Stated};
pub use path::ZonePath;
pub use registry::{Child, Credentials, Registry};
pub use transport::{ChildTransport, Hop, ListQuery, RestTransport};
