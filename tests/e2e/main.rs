//! End-to-end tests: real `zone-node` processes on real PostgreSQL and RabbitMQ.
//!
//! One test binary (so the suite links once); each module is one area. Tests use the `e2e` harness
//! library (`tests/harness/`, on the shared `test-support` crate): `Cluster`, `NodeProcess`, `TestDb`,
//! `RabbitInstance`, `poll_until`. HTTP tests that need no process live in `zone-node/tests/http/`.
//! Run them with `scripts/test` (which starts the services and builds the node first).

mod broker_cluster;
mod broker_restart;
mod chaos;
mod cluster;
mod db_outage;
mod demo;
mod embedded;
mod federation;
mod harness_smoke;
mod portal_client;
mod resources;
mod watch;
