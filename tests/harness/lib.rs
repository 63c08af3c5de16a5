//! End-to-end test harness: real `zone-node` processes on real PostgreSQL and RabbitMQ.
//!
//! Every test gets its own PostgreSQL database ([`TestDb`]) and its own bus prefix
//! ([`unique_prefix`]) on the shared broker, so tests run side by side without seeing each other.
//! Nodes are the real binary started as child processes ([`NodeProcess`]); a [`Cluster`] is one zone
//! of several nodes; a [`SimProcess`] plays the zone's hosts. Nothing here skips a test: a missing
//! service is a loud failure that says how to get it (`scripts/ensure-services`).
//!
//! ```no_run
//! use std::time::Duration;
//! use e2e::{Cluster, ClusterOptions};
//!
//! # async fn example() {
//! let zone = Cluster::start(3, ClusterOptions::default()).await;
//! zone.node(0).kill9().await;
//! // The survivors evict node 0 and agree on who is alive.
//! zone.wait_converged(Duration::from_secs(15)).await;
//! zone.wait_until(Duration::from_secs(5), "node 1 lists two alive nodes", || async {
//!     zone.alive_count_seen_by(1).await == Some(2)
//! })
//! .await;
//! # }
//! ```
//!
//! # Layout
//! - from the shared `test-support` crate (re-exported, so `e2e::poll_until` and `e2e::db` work):
//!   [`services`] (where PostgreSQL and RabbitMQ are, loud failures without them), [`poll`]
//!   ([`poll_until`]), [`net`] ([`free_port`], [`unique_prefix`]) and [`db`] ([`TestDb`])
//! - [`node`]: [`NodeSpec`] and [`NodeProcess`], one real `zone-node` process
//! - [`cluster`]: [`Cluster`], one zone of several nodes on a shared database and bus
//! - [`rabbit`]: [`RabbitInstance`], an extra RabbitMQ node a test may stop and start, and
//!   [`RabbitCluster`], several joined into one cluster
//! - [`procfs`]: CPU time and resident memory of a process, for the benchmarks
//! - [`sim`]: [`SimSpec`] and [`SimProcess`], `zone-node agent-sim` playing a zone's hosts
//! - [`federation`]: zones linked into trees ([`federation::zone_add`]) with fast polling

pub mod cluster;
pub mod federation;
pub mod node;
pub mod procfs;
pub mod rabbit;
pub mod sim;

pub use test_support::{db, net, poll, services};

pub use cluster::{Cluster, ClusterOptions, ProbeStat};
pub use node::{NodeProcess, NodeSpec, RunOutput};
pub use rabbit::{RabbitCluster, RabbitInstance, RabbitNode};
pub use sim::{SimProcess, SimSpec};
pub use test_support::{
    amqp_url, free_port, pg_admin_url, poll_until, poll_until_detailed, require_postgres, require_rabbitmq,
    unique_prefix, Outcome, TestDb, TimedOut,
};

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("the tests crate lives inside the workspace").to_path_buf()
}
