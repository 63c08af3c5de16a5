//! Host agents: the zone's side of the async HTTP protocol ([`client`]) and the simulator that
//! plays many hosts in one process ([`sim`], `zone-node agent-sim`).
//!
//! The protocol's types and header names live in [`api::agent`]; docs/wire-format.md ("Host
//! agents") describes it.

pub mod client;
pub mod sim;
