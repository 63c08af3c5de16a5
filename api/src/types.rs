//! Request and response bodies of the REST API, grouped by resource.
//!
//! Request bodies reject unknown fields (`deny_unknown_fields`), so a typo in a field name is an
//! error instead of a silently ignored setting. Times are RFC 3339 strings in UTC.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

// ---------------------------------------------------------------------------------------------
// health

/// `GET /healthz`: the process is up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// `GET /readyz`: the node can serve (database and bus reachable, not fenced).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    pub database: CheckResult,
    pub bus: CheckResult,
    pub membership: CheckResult,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckResult {
    pub ok: bool,
    /// Why the check failed; absent when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// auth

/// `POST /v1/auth/tokens`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Opaque bearer token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: String,
    pub roles: Vec<Role>,
    pub client_id: Option<String>,
    /// The API the caller should use: the lowest zone that manages all of the caller's instances.
    pub api_url: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the zone: accounts, zones, hosts, every client's resources.
    Admin,
    /// A tenant: sees and acts on its own client's resources only.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// accounts

/// `POST /v1/accounts`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountCreate {
    /// 1 to 64 characters from `[A-Za-z0-9_.@-]`.
    pub username: String,
    /// At least 8 characters, at most 1024.
    pub password: String,
    pub role: Role,
    /// The client (tenant) whose resources a member sees. Required for members.
    #[serde(default)]
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Account {
    pub username: String,
    pub role: Role,
    pub client_id: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<Account>,
}

// ---------------------------------------------------------------------------------------------
// zone

/// `GET /v1/zone`: this zone and its management nodes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ZoneInfo {
    pub id: String,
    pub name: String,
    pub api_url: String,
    /// The management node that answered.
    pub node_id: String,
    pub nodes: Vec<NodeInfo>,
    /// Aggregated capabilities (filled in by zone resources and federation).
    #[schema(value_type = Object)]
    pub capabilities: serde_json::Value,
    /// Child zones (filled in by federation).
    #[schema(value_type = Vec<Object>)]
    pub children: Vec<serde_json::Value>,
    /// Changes whenever instance ownership in the zone changes.
    pub generation: i64,
    /// Changes whenever the set of management nodes changes.
    pub ring_epoch: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    /// `joining`, `alive`, `leaving`, `left` or `dead`.
    pub state: String,
    pub api_url: String,
    pub last_heartbeat: String,
    pub joined_at: String,
}

/// `POST /v1/zone/owners` (admin, diagnostic): which node owns each resource id on this node's ring.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnersRequest {
    /// Up to 100,000 resource ids.
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OwnersResponse {
    /// The node answering.
    pub node_id: String,
    pub ring_epoch: i64,
    /// Owner node id for each requested resource, in request order.
    pub owners: Vec<String>,
}

/// `POST /v1/zone/probe/{resource_id}` (admin, diagnostic): runs a probe task on the ring owner of
/// the resource, through the bus and the resource's serial work queue. Used to check that no
/// resource is ever worked on by two nodes at once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// How long the task holds the resource, 0 to 10,000 ms.
    #[serde(default)]
    pub hold_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProbeResponse {
    pub resource_id: String,
    /// The node that ran the task.
    pub node_id: String,
    /// Handlers active on this resource, across the zone, when this one started (1 when serial).
    pub active: i64,
    /// Tasks completed on this resource, this one included.
    pub completed: i64,
}
