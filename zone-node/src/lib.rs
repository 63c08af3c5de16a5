//! The management node of one zone: one process of a zone's cluster, in the style of ZStack's
//! in-process microservices.
//!
//! Every node of a zone shares one database ([`store`]) and one message bus ([`bus`]). Nodes find
//! each other through heartbeat rows in the database ([`cluster::membership`]), agree on a
//! consistent-hashing ring of themselves ([`cluster::ring`]), and route each resource's messages to
//! the ring owner of the resource ([`cluster::router`]), where a per-resource work queue
//! ([`workqueue`]) serialises the work: no locks between nodes, no shared state but the database.
//!
//! # Layout, in reading order
//! - [`config`]: the node's configuration, from a file and `ZONE_*` variables, validated at start
//! - [`error`]: this crate's error type and its mapping to API error codes
//! - [`store`]: the database (SQLite or PostgreSQL) behind one type; migrations run at start
//! - [`bus`]: the CloudBus: send, call, reply and publish over RabbitMQ or in-process
//! - [`cluster`]: membership (heartbeats, eviction, fencing), the ring, and message routing
//! - [`scheduler`]: requirement validation and the candidate query behind placements
//! - [`workqueue`]: per-resource in-memory queues and the database-backed queue
//! - [`secret`]: [`secret::Secret`], a credential that never prints; [`redact`]: URLs without
//!   their passwords, for logs and errors
//! - [`auth`]: password hashing and bearer tokens
//! - [`secrets`]: child-zone credentials sealed at rest with this zone's secret key
//! - [`services`]: the services a node runs on the bus
//! - [`agent`]: host agents over async HTTP: the zone's client and the `agent-sim` simulator
//! - [`gateway`]: the federation crate wired to this node (children, polling, routing)
//! - [`http`]: the REST API every node serves
//! - [`app`]: wires it all together: `Application::build`, `run_until_stopped`
//! - [`cli`]: the `zone-node` command line (serve, the operator commands, agent-sim)
//! - [`demo`]: `zone-node demo`, a small federation in one process

pub mod agent;
pub mod app;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod http;
pub mod redact;
pub mod scheduler;
pub mod secret;
pub mod secrets;
pub mod services;
pub mod store;
pub mod time;
pub mod workqueue;
