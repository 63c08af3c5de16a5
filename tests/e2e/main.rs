//! End-to-end tests: real `zone-node` processes, real PostgreSQL and RabbitMQ.

mod broker_restart;
mod cluster;
mod embedded;
mod harness_smoke;
mod http_input;
