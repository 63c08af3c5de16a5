//! HTTP tests that need no process: each test serves a real node inside the test process with
//! [`app::spawn_app`] (SQLite in a temporary directory, an in-process bus) and talks to it over HTTP.
//! Tests that need real processes, PostgreSQL or RabbitMQ (clusters, federation, restarts, the
//! simulator, settings that stop the node at start) stay in the `e2e` package.
//!
//! Run with `cargo test -p zone-node --test http`.
//!
//! # Layout
//! - [`app`]: [`spawn_app`](app::spawn_app) and its [`TestApp`](app::TestApp)
//! - `input`: bad input at the HTTP edge gets a coded 4xx and writes nothing
//! - `login`: password checks bounded (429 with `Retry-After`), failures limited per username
//!   and per address
//! - `server`: header-read timeout, connection cap, request timeout
//! - `enrollment`: enrollment tokens, per-host credentials, `agent-sim` on a token alone
//! - `tls`: HTTPS with a private CA between zones; plain HTTP off loopback needs `insecure_http`
//! - `identity`: a revoked token is refused on every node; guards use the verified account
//! - `agents`: an agent that takes a task and never calls back
//! - `embedded`: one node on the embedded defaults serves the API, the ring and the OpenAPI document
//! - `multi_create`: `count` above 1, with simulated hosts (the `agent-sim` crate), and through a
//!   parent zone
//! - `parent_role`: a child's `parent` account limited to some clients, used by a parent zone
//! - `zone_update`: a new `api_url` needs the child's password again; the stored one never goes
//!   to a new URL
//! - `lookup`: the lowest-zone lookup's rendered answers follow every change and stay with
//!   callers who may see the client
//! - `watch`: `GET /v1/zone/watch` and the conditional `GET /v1/zone` that parents hold and poll

mod agents;
mod app;
mod embedded;
mod enrollment;
mod identity;
mod input;
mod login;
mod lookup;
mod multi_create;
mod parent_role;
mod server;
mod tls;
mod watch;
mod zone_update;
