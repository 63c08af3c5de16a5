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
//! - [`services`]: where PostgreSQL and RabbitMQ are, and the checks that fail loudly without them
//! - [`poll`]: [`poll_until`], the one way to wait for a condition (no fixed sleeps)
//! - [`net`]: [`free_port`] and [`unique_prefix`]
//! - [`db`]: [`TestDb`], a fresh PostgreSQL database per test
//! - [`node`]: [`NodeSpec`] and [`NodeProcess`], one real `zone-node` process
//! - [`cluster`]: [`Cluster`], one zone of several nodes on a shared database and bus
//! - [`rabbit`]: [`RabbitInstance`], an extra RabbitMQ node a test may stop and start
//! - [`sim`]: [`SimSpec`] and [`SimProcess`], `zone-node agent-sim` playing a zone's hosts
//! - [`federation`]: zones linked into trees ([`federation::zone_add`]) with fast polling

pub mod cluster;
pub mod db;
pub mod federation;
pub mod net;
pub mod node;
pub mod poll;
pub mod rabbit;
pub mod services;
pub mod sim;

pub use cluster::{Cluster, ClusterOptions, ProbeStat};
pub use db::TestDb;
pub use net::{free_port, unique_prefix};
pub use node::{NodeProcess, NodeSpec, RunOutput};
pub use poll::{poll_until, poll_until_detailed, Outcome, TimedOut};
pub use rabbit::{RabbitInstance, RabbitNode};
pub use services::{amqp_url, pg_admin_url, require_postgres, require_rabbitmq};
pub use sim::{SimProcess, SimSpec};

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("the tests crate lives inside the workspace").to_path_buf()
}
