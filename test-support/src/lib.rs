//! What the workspace's tests share: where PostgreSQL and RabbitMQ are (and loud failures when they
//! are missing), a fresh PostgreSQL database per test, ports and names that keep concurrent tests
//! apart, and [`poll_until`], the one way to wait for a condition.
//!
//! A dev-dependency of `zone-node` (its store and HTTP suites) and a dependency of the `e2e` package
//! (whose harness adds the real processes on top). It depends on no crate of the workspace, so
//! `zone-node` can use it without a cycle, and `zone-node`'s normal build never sees it.
//!
//! # Layout
//! - [`services`]: where PostgreSQL and RabbitMQ are, the checks that fail loudly without them, and
//!   [`redact`] for URLs in messages
//! - [`poll`]: [`poll_until`], the one way to wait for a condition (no fixed sleeps)
//! - [`net`]: [`free_port`] and [`unique_prefix`]
//! - [`db`]: [`TestDb`], a fresh PostgreSQL database per test

pub mod db;
pub mod net;
pub mod poll;
pub mod services;

pub use db::TestDb;
pub use net::{free_port, unique_prefix};
pub use poll::{poll_until, poll_until_detailed, Outcome, TimedOut};
pub use services::{amqp_url, pg_admin_url, redact, require_postgres, require_rabbitmq};
