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
    /// A `parent` account's client-id patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ids: Option<Vec<String>>,
    /// The API the caller should use: the lowest zone that manages all of the caller's instances.
    pub api_url: String,
}

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
pub enum Role {
    /// Manages the zone: accounts, zones, hosts, every client's resources.
    Admin,
    /// A tenant: sees and acts on its own client's resources only.
    Member,
    /// A parent zone limited to some clients (the account's `client_ids` patterns): it sees and
    /// acts on those clients' instances, and reads the zone's aggregate and subtree as a parent
    /// needs to; it manages nothing (no accounts, zones or hosts).
    Parent,
}

impl Role {
    /// The snake_case name, the same as serde's (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Role> {
        text.parse().ok()
    }
}

// ---------------------------------------------------------------------------------------------
// accounts

/// `POST /v1/accounts`. Its schema in the document is [`crate::contract::account_create`].
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The clients a `parent` account is limited to: 1 to 64 patterns, each a client id or a
    /// client-id prefix ending in `*` (`acme-*`). Required for `parent`, refused for the others.
    #[serde(default)]
    pub client_ids: Option<Vec<String>>,
}

impl utoipa::PartialSchema for AccountCreate {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::contract::account_create()
    }
}

impl utoipa::ToSchema for AccountCreate {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Account {
    pub username: String,
    pub role: Role,
    pub client_id: Option<String>,
    /// A `parent` account's client-id patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ids: Option<Vec<String>>,
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
    /// This zone's aggregate: its own up hosts merged with its online, enabled children's.
    #[schema(value_type = Object)]
    pub capabilities: Aggregate,
    /// The aggregate of this zone's own up hosts alone, without its children: what a parent
    /// merges per zone id (with the subtree's `capabilities`), so a zone it reaches by two paths
    /// counts once in its sums and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub own_capabilities: Option<Aggregate>,
    /// This zone's child zones.
    pub children: Vec<crate::federation::ChildSummary>,
    /// Changes whenever instance ownership anywhere in the zone's subtree changes (and when a
    /// child is added, removed, or goes offline or online), so a parent's cached answers about
    /// this zone can be checked with one number.
    pub generation: i64,
    /// Changes whenever the set of management nodes changes.
    pub ring_epoch: i64,
    /// Every zone below this one, with `?subtree=true` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Vec<crate::federation::SubtreeEntry>>,
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
    #[serde(default, deserialize_with = "crate::integer::exact")]
    #[schema(minimum = 0, maximum = 10000)]
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

// ---------------------------------------------------------------------------------------------
// zone resources: hosts, capabilities, requirements, placements, aggregates

/// A capability's value as JSON carries it: a number is a `float` capability, a boolean a `bool`,
/// a string a `string`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CapabilityValue {
    Bool(bool),
    Float(f64),
    String(String),
}

impl CapabilityValue {
    /// The capability type this value has.
    pub fn kind(&self) -> CapabilityKind {
        match self {
            CapabilityValue::Bool(_) => CapabilityKind::Bool,
            CapabilityValue::Float(_) => CapabilityKind::Float,
            CapabilityValue::String(_) => CapabilityKind::String,
        }
    }
}

/// The three capability types of the seed's (string value, float value, type) tuple.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
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
pub enum CapabilityKind {
    Float,
    Bool,
    String,
}

impl CapabilityKind {
    /// The snake_case name, the same as serde's (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<CapabilityKind> {
        text.parse().ok()
    }
}

/// A host's capability in responses: `{"type":"float","value":500}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: CapabilityKind,
    pub value: CapabilityValue,
}

impl From<CapabilityValue> for Capability {
    fn from(value: CapabilityValue) -> Self {
        Capability { kind: value.kind(), value }
    }
}

/// Compute resources: a host's capacity, its reserved part, or what an instance needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(deserialize_with = "crate::integer::exact")]
    #[schema(minimum = 0, maximum = 1048576)]
    pub vcpus: i64,
    #[serde(deserialize_with = "crate::integer::exact")]
    #[schema(minimum = 0, maximum = 1099511627776_i64)]
    pub memory_mb: i64,
    #[serde(deserialize_with = "crate::integer::exact")]
    #[schema(minimum = 0, maximum = 1099511627776_i64)]
    pub disk_gb: i64,
}

/// `POST /v1/hosts`: a host registers (through the API or its agent announcing itself).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRegister {
    /// Unique in the zone; same rules as capability keys.
    #[schema(schema_with = crate::contract::key)]
    pub name: String,
    /// Where the zone reaches the host's agent.
    #[schema(schema_with = crate::contract::agent_url)]
    pub agent_url: String,
    /// Key → JSON number, boolean or string. Keys match `[A-Za-z0-9_.:-]{1,64}`.
    #[serde(default)]
    #[schema(schema_with = crate::contract::capabilities)]
    pub capabilities: std::collections::BTreeMap<String, serde_json::Value>,
    /// The host's capacity. Absent means none: such a host is never chosen for placements.
    #[serde(default)]
    pub resources: Resources,
    /// The bearer token the zone presents to the agent. Stored, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_agent_token)]
    pub agent_token: Option<String>,
}

/// `POST /v1/hosts/enrollment-tokens` (admin): a token agents register their hosts with, instead
/// of an operator account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTokenCreate {
    /// How long the token may be used: 60 s to 30 days, default 1 hour.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::integer::optional")]
    #[schema(minimum = 60, maximum = 2592000)]
    pub expires_in_secs: Option<u64>,
    /// How many hosts may register with it: 1 to 1,000,000, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::integer::optional")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_uses: Option<i64>,
}

/// The answer to `POST /v1/hosts/enrollment-tokens`: the token is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentToken {
    pub id: String,
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
    pub max_uses: i64,
}

/// `POST /v1/hosts/enroll` (no bearer token): an agent registers its host with an enrollment
/// token. The other fields are those of [`HostRegister`], repeated rather than
/// `#[serde(flatten)]`ed: serde does not support `deny_unknown_fields` with `flatten`, and an
/// unknown field must stay a 400 here as on `POST /v1/hosts`. [`HostEnroll::registration`] is the
/// one place the two meet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostEnroll {
    pub enrollment_token: String,
    #[schema(schema_with = crate::contract::key)]
    pub name: String,
    #[schema(schema_with = crate::contract::agent_url)]
    pub agent_url: String,
    #[serde(default)]
    #[schema(schema_with = crate::contract::capabilities)]
    pub capabilities: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_agent_token)]
    pub agent_token: Option<String>,
}

impl HostEnroll {
    /// The registration it carries, to validate and store as an operator's would be.
    pub fn registration(&self) -> HostRegister {
        HostRegister {
            name: self.name.clone(),
            agent_url: self.agent_url.clone(),
            capabilities: self.capabilities.clone(),
            resources: self.resources,
            agent_token: self.agent_token.clone(),
        }
    }
}

/// The answer to `POST /v1/hosts/enroll`: the host, and the credential its agent presents as its
/// bearer token from now on. The credential allows only this host's report and update; it is
/// shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostEnrolled {
    pub host: Host,
    pub credential: String,
}

/// `PUT /v1/hosts/{id}`: change what an agent announced. Absent fields stay as they are;
/// `capabilities` replaces the whole set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_agent_url)]
    pub agent_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_agent_token)]
    pub agent_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_capabilities)]
    pub capabilities: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// A host as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub agent_url: String,
    /// `up` or `down`.
    pub state: String,
    pub capabilities: std::collections::BTreeMap<String, Capability>,
    /// Capacity.
    pub resources: Resources,
    /// Reserved by placements.
    pub used: Resources,
    /// Zone names from the answering zone down to the host's zone.
    #[serde(default)]
    pub zone_path: Vec<String>,
}

/// `{"hosts":[…],"unreachable_zones":[…],"next_marker":…}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub hosts: Vec<Host>,
    /// Child zones that did not answer in time (their hosts are missing from the list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_zones: Vec<String>,
    /// Pass as `marker` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// A requirement's comparison.
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
pub enum Op {
    /// Equal, for any type.
    Eq,
    /// The capability exists and differs.
    Ne,
    /// Numeric comparisons (float capabilities).
    Lt,
    Le,
    Gt,
    Ge,
    /// One of a non-empty list of values of one type.
    In,
    /// The capability exists, whatever its value (no value, or null).
    Exists,
}

impl Op {
    /// The snake_case name, the same as serde's (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A capability filter: `{"key":"free-disk","op":"ge","value":100}`. Its schema in the document
/// is [`crate::contract::requirement`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    /// Checked against `op` by the zone: a number for lt/le/gt/ge, a non-empty array of scalars of
    /// one type for `in`, nothing (or null) for `exists`, a scalar otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

impl utoipa::PartialSchema for Requirement {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::contract::requirement()
    }
}

impl utoipa::ToSchema for Requirement {}

/// `POST /v1/placements`: where would these requirements land (a dry run).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    /// At most 64; null or absent: none.
    #[serde(default)]
    #[schema(nullable, max_items = 64)]
    pub requirements: Vec<Requirement>,
    /// Null or absent: none.
    #[serde(default)]
    #[schema(nullable)]
    pub resources: Resources,
}

/// Where a request lands: the zones it goes through (from the answering zone down) and the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    pub zone_path: Vec<String>,
    pub host_id: String,
}

/// How many distinct values a string aggregate keeps: enough for routing on `hypervisor` or `os`,
/// small enough that a tree of zones never ships unbounded sets upwards.
pub const AGGREGATE_MAX_VALUES: usize = 64;

/// One key of an aggregate, merged over hosts (and child zones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AggregateEntry {
    Float {
        min: f64,
        max: f64,
        sum: f64,
        count: i64,
    },
    Bool {
        any: bool,
        all: bool,
        count: i64,
    },
    String {
        /// Sorted, at most [`AGGREGATE_MAX_VALUES`].
        values: Vec<String>,
        count: i64,
        /// True when values were dropped to respect the bound.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
}

impl AggregateEntry {
    /// The aggregate of one capability value.
    pub fn of(value: &CapabilityValue) -> AggregateEntry {
        match value {
            CapabilityValue::Float(f) => AggregateEntry::Float { min: *f, max: *f, sum: *f, count: 1 },
            CapabilityValue::Bool(b) => AggregateEntry::Bool { any: *b, all: *b, count: 1 },
            CapabilityValue::String(s) => {
                AggregateEntry::String { values: vec![s.clone()], count: 1, truncated: false }
            }
        }
    }

    /// Merges `other` into `self`. Entries of different types do not merge: the one with the
    /// larger count wins (a key whose type differs between hosts is an operator error, and
    /// routing on the majority type is the least surprising answer).
    pub fn merge(&mut self, other: &AggregateEntry) {
        use AggregateEntry as A;
        match (&mut *self, other) {
            (A::Float { min, max, sum, count }, A::Float { min: m2, max: x2, sum: s2, count: c2 }) => {
                *min = min.min(*m2);
                *max = max.max(*x2);
                *sum += s2;
                *count += c2;
            }
            (A::Bool { any, all, count }, A::Bool { any: a2, all: l2, count: c2 }) => {
                *any |= a2;
                *all &= l2;
                *count += c2;
            }
            (A::String { values, count, truncated }, A::String { values: v2, count: c2, truncated: t2 }) => {
                let mut set: std::collections::BTreeSet<String> = values.drain(..).collect();
                set.extend(v2.iter().cloned());
                *truncated |= *t2 || set.len() > AGGREGATE_MAX_VALUES;
                values.extend(set.into_iter().take(AGGREGATE_MAX_VALUES));
                *count += c2;
            }
            (mine, theirs) => {
                if theirs.count() > mine.count() {
                    *mine = theirs.clone();
                }
            }
        }
    }

    /// How many hosts contributed.
    pub fn count(&self) -> i64 {
        match self {
            AggregateEntry::Float { count, .. }
            | AggregateEntry::Bool { count, .. }
            | AggregateEntry::String { count, .. } => *count,
        }
    }
}

/// A zone's aggregate: capability key → merged entry. `GET /v1/capabilities`.
pub type Aggregate = std::collections::BTreeMap<String, AggregateEntry>;

/// Merges aggregate `other` into `into`, key by key.
pub fn merge_aggregates(into: &mut Aggregate, other: &Aggregate) {
    for (key, entry) in other {
        match into.get_mut(key) {
            Some(mine) => mine.merge(entry),
            None => {
                into.insert(key.clone(), entry.clone());
            }
        }
    }
}

/// For each variant of `T`: its derived name (`as_str`, `Display`) is its serde name, and parses
/// back to it.
#[cfg(test)]
pub(crate) fn assert_names_match_serde<T>()
where
    T: strum::IntoEnumIterator
        + Into<&'static str>
        + std::str::FromStr
        + std::fmt::Display
        + Serialize
        + Copy
        + PartialEq
        + std::fmt::Debug,
{
    let mut variants = 0;
    for variant in T::iter() {
        let name: &'static str = variant.into();
        assert_eq!(serde_json::to_value(variant).unwrap(), serde_json::Value::from(name), "{variant:?}");
        assert_eq!(variant.to_string(), name);
        assert!(name.parse::<T>().is_ok_and(|back| back == variant), "{name} does not parse back to {variant:?}");
        variants += 1;
    }
    assert!(variants > 1, "no variants iterated");
}

#[cfg(test)]
mod resource_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn role_names_are_the_serde_names() {
        assert_names_match_serde::<Role>();
        assert_eq!((Role::parse("admin"), Role::parse("Admin")), (Some(Role::Admin), None));
    }

    #[test]
    fn capability_kind_names_are_the_serde_names() {
        assert_names_match_serde::<CapabilityKind>();
        assert_eq!(CapabilityKind::parse("float"), Some(CapabilityKind::Float));
    }

    #[test]
    fn op_names_are_the_serde_names() {
        assert_names_match_serde::<Op>();
    }

    #[test]
    fn instance_action_names_are_the_serde_names() {
        assert_names_match_serde::<InstanceActionKind>();
    }

    #[test]
    fn capability_values_keep_their_json_type() {
        let reg: HostRegister = serde_json::from_value(json!({
            "name": "h1", "agent_url": "http://a",
            "capabilities": {"free-disk": 500, "can-run-windows": true, "hypervisor": "kvm"},
            "resources": {"vcpus": 8, "memory_mb": 1024, "disk_gb": 10}
        }))
        .unwrap();
        assert_eq!(reg.resources.vcpus, 8);
        let v: CapabilityValue = serde_json::from_value(json!(500)).unwrap();
        assert_eq!(v, CapabilityValue::Float(500.0));
        assert_eq!(serde_json::from_value::<CapabilityValue>(json!(true)).unwrap(), CapabilityValue::Bool(true));
        assert_eq!(serde_json::from_value::<CapabilityValue>(json!("1")).unwrap(), CapabilityValue::String("1".into()));
        let cap = Capability::from(CapabilityValue::Bool(false));
        assert_eq!(serde_json::to_value(&cap).unwrap(), json!({"type": "bool", "value": false}));
        // Unknown fields are refused.
        assert!(
            serde_json::from_value::<HostRegister>(json!({"name": "h", "agent_url": "u", "capabilites": {}})).is_err()
        );
    }

    #[test]
    fn requirements_parse_and_unknown_ops_fail() {
        let r: Vec<Requirement> = serde_json::from_value(json!([
            {"key": "free-disk", "op": "ge", "value": 100},
            {"key": "gpu", "op": "exists"}
        ]))
        .unwrap();
        assert_eq!(r[0].op, Op::Ge);
        assert_eq!(r[1].value, None);
        let err = serde_json::from_value::<Requirement>(json!({"key": "k", "op": "like", "value": 1})).unwrap_err();
        assert!(err.to_string().contains("unknown variant"));
        let p: PlacementRequest = serde_json::from_value(
            json!({"requirements": [], "resources": {"vcpus": 1, "memory_mb": 2, "disk_gb": 3}}),
        )
        .unwrap();
        assert_eq!(p.resources.disk_gb, 3);
    }

    #[test]
    fn a_create_answers_one_instance_or_a_batch_as_is() {
        let req: InstanceCreate = serde_json::from_value(json!({"name": "web", "client_id": "c"})).unwrap();
        assert_eq!((req.count(), req.is_batch()), (1, false));
        assert!(!serde_json::to_value(&req).unwrap().as_object().unwrap().contains_key("count"), "absent stays absent");
        let req: InstanceCreate = serde_json::from_value(json!({"name": "web", "count": 3})).unwrap();
        assert_eq!((req.count(), req.is_batch()), (3, true));
        assert_eq!(batch_member_name("web", 1), "web-0001");
        assert_eq!(batch_member_name("web", MAX_CREATE_COUNT), "web-1000");
        let one = Instance {
            id: "i".into(),
            name: "web".into(),
            client_id: "c".into(),
            state: "running".into(),
            host_id: None,
            zone_id: "z".into(),
            zone_path: vec![],
            resources: Resources::default(),
            requirements: vec![],
            error_reason: None,
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        };
        let single = serde_json::to_value(Creation::One(Box::new(one.clone()))).unwrap();
        assert_eq!(single, serde_json::to_value(&one).unwrap(), "one instance, exactly as before");
        let batch = Creation::Batch(InstanceBatch { instances: vec![one.clone(), one] });
        let body = serde_json::to_value(&batch).unwrap();
        assert_eq!(body["instances"].as_array().map(Vec::len), Some(2));
        assert_eq!(serde_json::from_value::<Creation>(body).unwrap(), batch);
        assert_eq!(serde_json::from_value::<Creation>(single).unwrap().instances().len(), 1);
    }

    #[test]
    fn aggregates_have_the_design_shape_and_merge() {
        let mut a = Aggregate::new();
        a.insert("free-disk".into(), AggregateEntry::of(&CapabilityValue::Float(100.0)));
        a.insert("win".into(), AggregateEntry::of(&CapabilityValue::Bool(true)));
        a.insert("hv".into(), AggregateEntry::of(&CapabilityValue::String("kvm".into())));
        let mut b = Aggregate::new();
        b.insert("free-disk".into(), AggregateEntry::of(&CapabilityValue::Float(50.0)));
        b.insert("win".into(), AggregateEntry::of(&CapabilityValue::Bool(false)));
        b.insert("hv".into(), AggregateEntry::of(&CapabilityValue::String("xen".into())));
        merge_aggregates(&mut a, &b);
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({
                "free-disk": {"type": "float", "min": 50.0, "max": 100.0, "sum": 150.0, "count": 2},
                "win": {"type": "bool", "any": true, "all": false, "count": 2},
                "hv": {"type": "string", "values": ["kvm", "xen"], "count": 2}
            })
        );
        // String sets stay bounded.
        let mut big = AggregateEntry::of(&CapabilityValue::String("v000".into()));
        for i in 1..100 {
            big.merge(&AggregateEntry::of(&CapabilityValue::String(format!("v{i:03}"))));
        }
        match big {
            AggregateEntry::String { values, count, truncated } => {
                assert_eq!((values.len(), count, truncated), (AGGREGATE_MAX_VALUES, 100, true));
            }
            other => panic!("{other:?}"),
        }
        let back: Aggregate = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}

// ---------------------------------------------------------------------------------------------
// instances

/// `POST /v1/instances`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceCreate {
    /// 1 to 64 characters of `[A-Za-z0-9_.:-]`; need not be unique.
    #[schema(schema_with = crate::contract::key)]
    pub name: String,
    /// The client that owns the instance. Members may leave it out (their own client is used) and
    /// may not name another; admins must give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_client_id)]
    pub client_id: Option<String>,
    /// At most 64; null or absent: none.
    #[serde(default)]
    #[schema(nullable, max_items = 64)]
    pub requirements: Vec<Requirement>,
    /// Null or absent: none.
    #[serde(default)]
    #[schema(nullable)]
    pub resources: Resources,
    /// How many instances to create, 1 to [`MAX_CREATE_COUNT`] (absent: 1), as Nova's
    /// `min_count`/`max_count` with both equal. More than one: they are named `<name>-0001`,
    /// `<name>-0002`, … ([`batch_member_name`]), placed all or nothing in one zone, and the answer
    /// is an [`InstanceBatch`].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::integer::optional")]
    #[schema(minimum = 1, maximum = 1000)]
    pub count: Option<u32>,
}

/// The largest `count` of one create.
pub const MAX_CREATE_COUNT: u32 = 1000;

impl InstanceCreate {
    /// How many instances this create makes (`count`, 1 when absent).
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }

    /// True for a multi-create (`count` above 1), answered with an [`InstanceBatch`].
    pub fn is_batch(&self) -> bool {
        self.count() > 1
    }
}

/// The name of instance `index` (1-based) of a multi-create named `name`: `web-0001`. Four digits
/// hold [`MAX_CREATE_COUNT`], so the suffix is always five characters and names sort in order.
pub fn batch_member_name(name: &str, index: u32) -> String {
    format!("{name}-{index:04}")
}

/// The id of instance `index` (1-based) of the multi-create `batch`: SHA-256(the batch id's 16
/// bytes, the index as 4 big-endian bytes) as a version 8 (custom) UUID. Derived, not random, and
/// part of the contract: a batch sent twice with the same id (a forwarding parent's
/// `x-zone-instance-id`) makes the same ids, so the second insert conflicts instead of making the
/// batch twice; and the zone that sent a batch knows its instances' ids without an answer, so it
/// can find them after a child stopped answering mid-create.
pub fn batch_member_id(batch: uuid::Uuid, index: u32) -> uuid::Uuid {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(batch.as_bytes());
    hash.update(index.to_be_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The ids of the `count` instances of the batch `batch_id` ([`batch_member_id`]), in order;
/// `None` when `batch_id` is not a UUID.
pub fn batch_member_ids(batch_id: &str, count: u32) -> Option<Vec<String>> {
    let batch = uuid::Uuid::parse_str(batch_id).ok()?;
    Some((1..=count).map(|k| batch_member_id(batch, k).to_string()).collect())
}

/// `POST /v1/instances` with `count` above 1: every instance made, in name order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceBatch {
    pub instances: Vec<Instance>,
}

/// What `POST /v1/instances` answers: one instance, or with `count` above 1 an
/// [`InstanceBatch`]. Untagged: the JSON is the instance or `{"instances":[…]}` as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Creation {
    One(Box<Instance>),
    Batch(InstanceBatch),
}

impl Creation {
    /// The instances made, one or many.
    pub fn instances(&self) -> &[Instance] {
        match self {
            Creation::One(i) => std::slice::from_ref(i),
            Creation::Batch(b) => &b.instances,
        }
    }

    pub fn instances_mut(&mut self) -> &mut [Instance] {
        match self {
            Creation::One(i) => std::slice::from_mut(i),
            Creation::Batch(b) => &mut b.instances,
        }
    }
}

/// An instance as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub client_id: String,
    /// `building`, `running`, `stopping`, `stopped`, `starting`, `rebooting`, `migrating`,
    /// `deleting`, `error`; `unknown` while its host is down (the stored state shows again when
    /// the host reports).
    pub state: String,
    pub host_id: Option<String>,
    /// The zone that holds the instance.
    pub zone_id: String,
    /// Zone names from the answering zone down to `zone_id`.
    pub zone_path: Vec<String>,
    pub resources: Resources,
    pub requirements: Vec<Requirement>,
    /// Why the last action failed, while the state is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Grows on every change.
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// `{"instances":[…],"unreachable_zones":[…],"next_marker":…}`, sorted by id.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct InstanceList {
    pub instances: Vec<Instance>,
    /// Child zones that did not answer in time (their instances are missing from the list).
    #[serde(default)]
    pub unreachable_zones: Vec<String>,
    /// Pass as `marker` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// What `POST /v1/instances/{id}/action` does.
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
pub enum InstanceActionKind {
    Start,
    Stop,
    Reboot,
    Migrate,
}

impl InstanceActionKind {
    /// The snake_case name, the same as serde's (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `POST /v1/instances/{id}/action`: `{"action":"stop"}`, or `{"action":"migrate","host_id":…}`
/// (without `host_id` the scheduler picks another host that meets the instance's requirements).
/// Its schema in the document is [`crate::contract::instance_action`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceAction {
    pub action: InstanceActionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
}

impl utoipa::PartialSchema for InstanceAction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::contract::instance_action()
    }
}

impl utoipa::ToSchema for InstanceAction {}
