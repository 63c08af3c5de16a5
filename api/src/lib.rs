//! The public contract of a zone: request and response types, error codes and a typed HTTP client.
//!
//! Everything another program depends on lives here, and only here: the JSON shapes of the REST API
//! (`/v1/...`), the error body and its codes, and [`client::Client`], the typed HTTP client that
//! operators' commands, tests and parent zones use. This crate does no I/O beyond that client.
//!
//! # Layout
//! - [`error`]: the error body and the one list of error codes used by HTTP and the bus
//! - [`types`]: request and response bodies, grouped by resource
//! - [`client`]: the typed HTTP client
//! - [`http`]: where every HTTP client is built (the TLS provider is installed there)
//! - [`bus`]: the bus protocol: every message and event kind with its body and reply types
//! - [`agent`]: the host-agent protocol (zone → agent tasks, agent → zone callbacks and reports)
//! - [`raw`]: instances passed through gateways as JSON text
//! - [`scope`]: the client-id patterns that limit a `parent` account
//! - [`federation`]: child zones, the lowest-zone answer, and the headers of forwarded requests

pub mod agent;
pub mod bus;
pub mod client;
pub mod contract;
pub mod error;
pub mod federation;
pub mod http;
pub mod integer;
pub mod pages;
pub mod raw;
pub mod scope;
pub mod types;
pub mod validate;

pub use client::{Answer, Client, ClientError, Conditional};
pub use error::{CodedError, ErrorBody, ErrorCode, ErrorDetail};
pub use federation::{
    ChildSummary, ChildZone, LowestZone, SubtreeEntry, SubtreeView, ZoneCreate, ZoneList, ZoneStatus, ZoneUpdate,
    ZoneWatch,
};
pub use pages::{HostPages, InstancePages, Page, Pages, NEXT_MARKER_HEADER};
pub use raw::{RawInstance, RawInstanceList};
pub use scope::{ClientPattern, ClientScope};
pub use types::*;
