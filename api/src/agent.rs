//! The host-agent protocol: what a zone sends to a host's agent, what the agent posts back, and
//! what a host reports. docs/wire-format.md ("Host agents") is the prose version.
//!
//! The protocol is asynchronous HTTP (ZStack's "async HTTP call"): the zone posts a task to
//! `POST {agent_url}/v1/tasks` with a callback URL and a one-time callback token in headers; the
//! agent answers `202 Accepted` at once and, when the work is done, posts an [`AgentResult`] to the
//! callback URL with the token. The zone never holds a connection open while a host works, so one
//! node drives thousands of hosts with a few connections.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::types::Resources;

/// Header carrying the URL the agent must post its [`AgentResult`] to.
pub const CALLBACK_URL_HEADER: &str = "x-callback-url";
/// Header carrying the task's one-time secret; the agent echoes it on the callback.
pub const CALLBACK_TOKEN_HEADER: &str = "x-callback-token";
/// Header carrying the task's deadline, in milliseconds since the Unix epoch. An agent should not
/// start work whose deadline has passed; the zone gives up on the task at the deadline.
pub const DEADLINE_HEADER: &str = "x-deadline-ms";

/// What the zone asks an agent to do to one instance.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AgentAction {
    /// Create the instance on this host and start it.
    Create,
    Start,
    Stop,
    Reboot,
    /// Move the instance from this host to `target_agent_url` (the agent of the target host).
    Migrate,
    /// Destroy the instance on this host and free what it used.
    Delete,
}

impl AgentAction {
    /// The snake_case name, the same as serde's (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `POST {agent_url}/v1/tasks` body. Tasks are idempotent per (instance, action): a zone that
/// lost track of a task (its node died) sends the same action again with a new `task_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentTask {
    /// Unique per attempt; the callback names it.
    pub task_id: String,
    pub instance_id: String,
    pub action: AgentAction,
    /// What the instance uses (create, migrate).
    pub resources: Resources,
    /// Migrate only: the target host's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_agent_url: Option<String>,
}

/// The agent's `202 Accepted` answer to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentAccepted {
    pub task_id: String,
}

/// The agent's callback body: `POST {callback_url}` with the callback token header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentResult {
    pub task_id: String,
    /// True when the action was done.
    pub ok: bool,
    /// Why it failed (when `ok` is false): shown to operators as the instance's error reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/hosts/{id}/report`: a host's periodic presence, with its current capabilities when
/// they changed (free-ram, number-of-instances...). Absent capabilities leave the stored ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_capabilities)]
    pub capabilities: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_action_names_are_the_serde_names() {
        crate::types::assert_names_match_serde::<AgentAction>();
    }
}
