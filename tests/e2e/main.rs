//! End-to-end tests: real `zone-node` processes on real PostgreSQL and RabbitMQ.
//!
//! One test binary (so the suite links once); each module is one area. Tests use the `e2e` harness
//! library (`tests/harness/`): `Cluster`, `NodeProcess`, `TestDb`, `RabbitInstance`, `poll_until`.
//! Run them with `scripts/test` (which starts the services and builds the node first).

mod broker_restart;
mod cluster;
mod demo;
mod embedded;
mod federation;
mod harness_smoke;
mod portal_client;
mod resources;
