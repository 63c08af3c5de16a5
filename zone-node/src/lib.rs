//! The management node of one zone: one process of a zone's cluster, in the style of ZStack's
//! in-process microservices.
//!
//! Every node of a zone shares one database (`store`) and one message bus (`bus`). Nodes find each
//! other through heartbeat rows in the database (`cluster::membership`), agree on a
//! consistent-hashing ring of themselves (`cluster::ring`), and route each resource's messages to
//! the ring owner of the resource (`cluster::router`), where a per-resource work queue
//! (`workqueue`) serialises the work: no locks between nodes, no shared state but the database.
//!
//! Modules are private; what the binary and the tests use is re-exported below, so the crate's
//! surface is this page.
//!
//! # Layout, in reading order
//! - `config`: the node's configuration, from a file and `ZONE_*` variables, validated at start
//! - `error`: this crate's error type and its mapping to API error codes
//! - `store`: the database (SQLite or PostgreSQL) behind one type; migrations run at start
//! - `bus`: the CloudBus: send, call, reply and publish over RabbitMQ or in-process
//! - `cluster`: membership (heartbeats, eviction, fencing), the ring, and message routing
//! - `scheduler`: requirement validation (the candidate query is `store`'s)
//! - `workqueue`: per-resource in-memory queues
//! - `secret`: a credential that never prints; `redact`: URLs without their passwords
//! - `time`: this node's clock (deadlines) and timestamps as text
//! - `auth`: password hashing and bearer tokens
//! - `secrets`: child-zone credentials sealed at rest with this zone's secret key
//! - `services`: the services a node runs on the bus
//! - `agent`: host agents over async HTTP: the zone's client (the simulator is the `agent-sim`
//!   crate)
//! - `gateway`: the federation crate wired to this node (children, polling, routing)
//! - `http`: the REST API every node serves
//! - `app`: wires it all together: `Application::build`, `run_until_stopped`
//! - `cli`: the `zone-node` command line (serve, the operator commands, agent-sim)
//! - `demo`: `zone-node demo`, a small federation in one process

mod agent;
mod app;
mod auth;
mod bus;
mod cli;
mod cluster;
mod config;
mod demo;
mod error;
mod files;
mod gateway;
mod http;
mod redact;
mod scheduler;
mod secret;
mod secrets;
mod services;
mod store;
mod time;
mod workqueue;

pub use app::{shutdown_signal, Application, Stopped};
pub use bus::{Bus, BusError, Delivery, Destination, Event, Handler, Message, MAX_IN_FLIGHT};
pub use cli::{run_operator, Cli, Command};
pub use config::Config;
pub use error::{Error, Result};
pub use redact::redact_url;
pub use scheduler::{validate_host, validate_requirements, validate_resources, Filter, ValidationError};
pub use secrets::SecretKey;
pub use services::instance::to_api as instance_to_api;
pub use store::{
    AccountRow, BatchPlacement, ChildSnapshot, ChildZoneEdit, ChildZoneRow, HostRow, InstanceChange, InstanceRow,
    JsonPage, NewChildZone, NewHost, NewInstance, PageZone, PollOutcome, PollRecord, StaleHosts, Store, StoreError,
    TokenRow, ZoneRow,
};
pub use time::local_now_ms;
