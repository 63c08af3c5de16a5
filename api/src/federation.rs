//! The federation contract: child-zone registry bodies, the lowest-zone answer, and the headers a
//! parent zone puts on requests it forwards to a child.
//!
//! A zone registers its children with `POST /v1/zones` (admin), polls them over their public API,
//! and forwards requests to them with the credentials given at zone-add. Forwarded requests carry
//! the path of zones they crossed ([`ZONE_PATH_HEADER`]) and the identity of the original caller
//! ([`CALLER_ROLE_HEADER`] and friends), which a child honours only from an admin account it
//! verified itself, and only to narrow what that account may do (docs/ARCHITECTURE.md, "Trust
//! between zones").

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::types::Aggregate;

// ---------------------------------------------------------------------------------------------
// headers of forwarded requests and of their answers

/// Zone ids the request has crossed, comma-separated, the first zone it entered first. A zone that
/// finds its own id here refuses the request (`zone_loop`); one that would exceed the hop limit
/// refuses it (`hop_limit_exceeded`).
pub const ZONE_PATH_HEADER: &str = "x-zone-path";
/// The original caller's role (`admin`, `member` or `parent`), set by a forwarding parent.
pub const CALLER_ROLE_HEADER: &str = "x-zone-caller-role";
/// With role `parent`: the client-id patterns the caller is limited to, comma-separated (see
/// [`crate::ClientScope`]). A zone that reached this one through a limited account states its
/// scope here, so the limit holds at every zone below it.
pub const CALLER_CLIENTS_HEADER: &str = "x-zone-caller-clients";
/// On an error answer: `unknown` when the request may or may not have been carried out (a
/// child stopped answering while it had it). A zone above must not try it elsewhere, whatever the
/// code says: `503 zone_unavailable` alone means nothing was done.
pub const OUTCOME_HEADER: &str = "x-zone-outcome";
/// The original caller's client id (members), set by a forwarding parent.
pub const CALLER_CLIENT_HEADER: &str = "x-zone-caller-client";
/// Who the original caller is, for logs and audit: `username@zone-name`.
pub const CALLER_USER_HEADER: &str = "x-zone-caller-user";
/// The id a forwarded create must give the new instance (chosen by the zone the request entered,
/// so every gateway on the way records the same id). For a multi-create (`count` above 1) it
/// names the batch: the zone that makes the instances derives their ids from it, so the same
/// batch forwarded twice cannot make its instances twice.
pub const INSTANCE_ID_HEADER: &str = "x-zone-instance-id";
/// Response header: the answering zone's generation after the request (see [`crate::ZoneInfo`]),
/// so a parent can tell whether a change it forwarded was the only one.
pub const GENERATION_HEADER: &str = "x-zone-generation";

/// Response header on instance creates, actions and deletes: the answering zone's lowest zone for
/// the instance's client after the change, as the JSON of a [`LowestZone`], or `none` when the
/// zone no longer manages the client. Absent when the zone could not tell without asking its
/// children; the parent then forgets what it knew instead of guessing.
pub const LOWEST_ZONE_HEADER: &str = "x-zone-lowest";

/// Hops a request may make down a tree unless the zone's configuration says otherwise.
pub const DEFAULT_HOP_LIMIT: usize = 8;

// ---------------------------------------------------------------------------------------------
// the child-zone registry

/// `POST /v1/zones` (admin): register a child zone. The parent logs in to the child with these
/// credentials at once (so a wrong URL or password is refused before anything is written) and on
/// every forwarded request; they are stored encrypted and never returned.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneCreate {
    /// Unique among this zone's children; 1 to 63 of `[A-Za-z0-9_-]`. Default: the child's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_zone_name)]
    pub name: Option<String>,
    /// The child's public API root, `http://` or `https://`.
    #[schema(schema_with = crate::contract::zone_url)]
    pub api_url: String,
    /// An admin account of the child zone.
    #[schema(schema_with = crate::contract::username)]
    pub username: String,
    #[schema(schema_with = crate::contract::zone_password)]
    pub password: String,
    /// Routing rank of the child: `weight_offset + weight_scale × score` (default 0).
    #[serde(default)]
    pub weight_offset: f64,
    /// Default 1. Must be at least 0.
    #[serde(default = "one")]
    #[schema(minimum = 0)]
    pub weight_scale: f64,
    /// A disabled child is polled and listed, but new placements skip it.
    #[serde(default)]
    pub disabled: bool,
    /// Allow a plain `http://` `api_url` on an address other than loopback: the child's password
    /// and every forwarded request then cross the network in clear. Refused without it.
    #[serde(default)]
    pub insecure_http: bool,
}

fn one() -> f64 {
    1.0
}

/// `PUT /v1/zones/{id}` (admin): absent fields stay as they are. A new `api_url`, `username` or
/// `password` is checked against the child (login) before it is written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_zone_name)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_zone_url)]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_username)]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::contract::optional_zone_password)]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_offset: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub weight_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// As in [`ZoneCreate::insecure_http`], for a new `api_url`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
}

/// Whether a child at `api_url` is reached over plain HTTP on an address other than loopback
/// (`localhost`, 127.0.0.0/8, `::1`): what zone-add refuses unless told `insecure_http`. A URL
/// that does not parse counts as insecure (it is refused elsewhere anyway).
pub fn insecure_http(api_url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(api_url) else { return true };
    if url.scheme() != "http" {
        return false;
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    !loopback
}

/// How a parent sees a child zone.
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
pub enum ZoneStatus {
    /// Answered its last poll.
    Online,
    /// Missed the configured number of polls in a row (or answers as a zone that would make a
    /// loop): excluded from routing and aggregation until it answers again.
    Offline,
    /// Disabled by an operator: still polled and listed, skipped by new placements.
    Disabled,
}

impl ZoneStatus {
    /// The snake_case name, the same as serde's (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A child zone as `GET /v1/zones[/detail]` and `GET /v1/zones/{id}[/detail]` show it. Its
/// credentials are never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChildZone {
    /// The child's own zone id (as its `GET /v1/zone` reports it).
    pub id: String,
    pub name: String,
    pub api_url: String,
    pub status: ZoneStatus,
    pub disabled: bool,
    /// When the child last answered a poll (RFC 3339), absent if never.
    pub last_seen: Option<String>,
    /// Why the last poll or forwarded request failed, absent after a good poll.
    pub last_error: Option<String>,
    pub weight_offset: f64,
    pub weight_scale: f64,
    /// The child's aggregated capabilities (its whole subtree), in the detail views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<Aggregate>,
    /// The child's generation at its last poll.
    pub generation: i64,
    /// Polls failed in a row.
    pub consecutive_failures: u32,
    /// Reached over plain HTTP on an address other than loopback ([`insecure_http`]): its
    /// password and the requests forwarded to it cross the network in clear.
    #[serde(default)]
    pub insecure_http: bool,
}

/// `{"zones":[…]}`, sorted by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ZoneList {
    pub zones: Vec<ChildZone>,
}

/// One child in `GET /v1/zone`'s `children`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChildSummary {
    pub id: String,
    pub name: String,
    pub status: ZoneStatus,
}

/// One zone below the answering zone in `GET /v1/zone?subtree=true`: parents use it to refuse a
/// child whose subtree contains them, and to merge aggregates per zone id (a diamond counts once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubtreeEntry {
    pub id: String,
    pub name: String,
    /// Zone names from the answering zone's child down to this zone.
    pub path: Vec<String>,
    /// The aggregate of this zone's own hosts (without the zones below it), as its parent last
    /// polled it; absent when the path to it is offline or disabled (so it does not count
    /// through this path). Parents merge these per zone id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<Aggregate>,
    /// The API URL this zone's parent registered for it (zone-add): the only URL a zone above
    /// hands to clients for it (a child's lowest-zone answer names a zone; the URL comes from
    /// here). Absent from nodes that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Which subtree `GET /v1/zone?subtree=…` reports.
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
pub enum SubtreeView {
    /// As last polled (`subtree=true`): cheap, what parents poll; up to a poll interval behind
    /// per level.
    #[serde(alias = "true")]
    #[strum(serialize = "true")]
    Cached,
    /// Asked afresh of every reachable zone below (`subtree=live`): what zone-add checks loops
    /// against, so a registration made a moment ago is seen.
    Live,
}

impl SubtreeView {
    /// The value of the `subtree` query parameter: `true` or `live` (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How many subtree entries a zone reports at most (a tree of the seed's million hosts has about
/// 5,000 huddles; the bound keeps a runaway topology from shipping unbounded lists upwards).
pub const SUBTREE_MAX_ENTRIES: usize = 100_000;

// ---------------------------------------------------------------------------------------------
// the watch of a zone's changes

/// The longest a `GET /v1/zone/watch` waits (`timeout_ms` is capped to it).
pub const WATCH_MAX_TIMEOUT_MS: u64 = 30_000;
/// How long a `GET /v1/zone/watch` waits when `timeout_ms` is not given.
pub const WATCH_DEFAULT_TIMEOUT_MS: u64 = 25_000;

/// `GET /v1/zone/watch?since=<generation>[&timeout_ms=…]` (admin; what parents hold on each
/// child): answers as soon as the zone's generation is above `since`, or after the timeout with
/// the generation unchanged (`changed: false`). A parent that sees a new generation re-reads the
/// zone (`GET /v1/zone?subtree=true`, whose `ETag` is `digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ZoneWatch {
    /// The answering zone's id.
    pub id: String,
    /// The zone's generation now.
    pub generation: i64,
    /// True when `generation` is above the `since` asked with.
    pub changed: bool,
    /// The digest of the zone's state as a parent reads it (generation, aggregate, own
    /// aggregate, children, subtree): the `ETag` that `GET /v1/zone?subtree=true` answers now.
    pub digest: String,
}

// ---------------------------------------------------------------------------------------------
// the lowest-zone lookup

/// `GET /v1/clients/{client_id}/zone`: the lowest zone that manages all of the client's
/// instances. `404 not_found` when no zone below the answering one holds any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LowestZone {
    pub client_id: String,
    pub zone_id: String,
    pub zone_name: String,
    pub api_url: String,
    /// Zone names from the answering zone down to `zone_name`.
    pub path: Vec<String>,
    /// Children that could not be asked and whose answer was not known: the answer may be higher
    /// in the tree than it would be with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_zones: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use strum::IntoEnumIterator as _;

    #[test]
    fn plain_http_is_insecure_off_loopback_only() {
        for url in ["http://dc1.example.net:8080", "http://10.0.0.5", "http://[2001:db8::1]:80", "not a url"] {
            assert!(insecure_http(url), "{url}");
        }
        for url in [
            "https://dc1.example.net",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://localhost:1",
            "http://[::1]:8080",
        ] {
            assert!(!insecure_http(url), "{url}");
        }
    }

    #[test]
    fn zone_status_names_are_the_serde_names() {
        crate::types::assert_names_match_serde::<ZoneStatus>();
    }

    #[test]
    fn subtree_views_read_back_from_their_query_values() {
        // `Cached` is `subtree=true` in a query but `cached` in JSON (where serde's alias reads
        // `true` too): every query value must read back through serde, as the handler reads it.
        for view in SubtreeView::iter() {
            assert_eq!(serde_json::from_value::<SubtreeView>(json!(view.as_str())).unwrap(), view);
            assert_eq!(view.as_str().parse::<SubtreeView>().unwrap(), view);
        }
        assert_eq!((SubtreeView::Cached.as_str(), SubtreeView::Live.as_str()), ("true", "live"));
        assert_eq!(serde_json::to_value(SubtreeView::Live).unwrap(), json!("live"));
    }

    #[test]
    fn zone_create_defaults_and_refuses_unknown_fields() {
        let c: ZoneCreate =
            serde_json::from_value(json!({"api_url": "http://dc1:8080", "username": "admin", "password": "pw"}))
                .unwrap();
        assert_eq!((c.weight_offset, c.weight_scale, c.disabled, c.name.as_deref()), (0.0, 1.0, false, None));
        assert!(serde_json::from_value::<ZoneCreate>(
            json!({"api_url": "http://x", "username": "a", "password": "b", "wieght_scale": 2})
        )
        .is_err());
    }

    #[test]
    fn child_zone_has_the_design_fields_and_no_credentials() {
        let z = ChildZone {
            id: "id".into(),
            name: "dc1".into(),
            api_url: "http://dc1".into(),
            status: ZoneStatus::Online,
            disabled: false,
            last_seen: None,
            last_error: None,
            weight_offset: 0.0,
            weight_scale: 1.0,
            capabilities: None,
            generation: 3,
            consecutive_failures: 0,
            insecure_http: false,
        };
        let v = serde_json::to_value(&z).unwrap();
        for field in
            ["id", "name", "api_url", "status", "disabled", "last_seen", "last_error", "weight_offset", "weight_scale"]
        {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
        assert_eq!(v["status"], json!("online"));
        assert!(v.get("password").is_none() && v.get("username").is_none());
    }
}
