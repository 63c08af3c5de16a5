//! The scheduler: turns a request's requirements and resources into a host of this zone.
//!
//! Requirements are capability filters (`{key, op, value}`, op in eq, ne, lt, le, gt, ge, in,
//! exists) plus the resources an instance needs. Placement runs in three steps:
//!
//! 1. [`validate`]: every requirement is checked against its op (a number for range ops, a
//!    non-empty one-typed list for `in`, nothing for `exists`) and turned into a typed [`Filter`];
//!    errors name the requirement's index and what is wrong, so a client can fix its request.
//! 2. `store::placement`: the filters become ONE query over `hosts` with one `EXISTS` subquery on
//!    `host_capabilities` per filter, every value a bind parameter. The database does the
//!    filtering on the seed's (string value, float value, type) tuple, so range filters use the
//!    `(key, float_value)` index instead of loading hosts into the node. The query also requires
//!    `state = 'up'` and enough free capacity, and orders by the weigher (most free capacity).
//! 3. The store's `place` tries the few best candidates in order with a conditional `UPDATE` that
//!    reserves the capacity only if it is still free, so concurrent placements (on any node of
//!    the zone) never overcommit a host; a candidate lost to a concurrent placement just moves us
//!    to the next one.
//!
//! The final host decision is taken as late as possible, at the lowest zone, as the seed asks:
//! this module only ever chooses among the zone's own hosts.

pub mod validate;

pub use crate::store::Filter;
pub use validate::{
    parse_capabilities, valid_key, validate_agent_token, validate_agent_url, validate_host, validate_requirements,
    validate_resources, ValidationError,
};
