//! Host agents: the zone's side of the async HTTP protocol ([`client`]). The simulator that plays
//! many hosts in one process (`zone-node agent-sim`) is the `agent-sim` crate.
//!
//! The protocol's types and header names live in [`api::agent`]; docs/wire-format.md ("Host
//! agents") describes it.

pub mod client;
pub mod token;
