//! Schemas the OpenAPI document states by hand, where a derived one would be looser than the
//! code: a field whose rule depends on another (an account's `client_id`/`client_ids` on its
//! role, a requirement's `value` on its `op`, a migrate's `host_id` on the action), and the
//! capability maps, whose keys follow a pattern. Each is written as the JSON Schema the document
//! carries; `zone-node`'s contract check (schemathesis, in `scripts/test`) holds the code to it.

use serde_json::{json, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

/// `[A-Za-z0-9_.:-]{1,64}`: host and instance names, capability and requirement keys.
pub const KEY: &str = "^[A-Za-z0-9_.:-]{1,64}$";
/// A capability or requirement key: [`KEY`], not in the zone's own `capacity.` space.
pub const CAPABILITY_KEY: &str = "^(?!capacity\\.)[A-Za-z0-9_.:-]{1,64}$";
/// Client ids: `[A-Za-z0-9_.:-]{1,128}`.
pub const CLIENT_ID: &str = "^[A-Za-z0-9_.:-]{1,128}$";
/// A client id, or a prefix of one ending in `*`.
pub const CLIENT_PATTERN: &str = "^([A-Za-z0-9_.:-]{1,128}|[A-Za-z0-9_.:-]{0,127}\\*)$";
/// Usernames: `[A-Za-z0-9_.@-]{1,64}`.
pub const USERNAME: &str = "^[A-Za-z0-9_.@-]{1,64}$";
/// Child zone names: `[A-Za-z0-9_-]{1,63}`.
pub const ZONE_NAME: &str = "^[A-Za-z0-9_-]{1,63}$";
/// Agent tokens: 16 to 256 printable ASCII characters.
pub const AGENT_TOKEN: &str = "^[!-~]{16,256}$";
/// An agent URL: http(s) with a host, no spaces.
pub const AGENT_URL: &str = "^https?://[^/\\s]\\S*$";
/// A child zone's API root: http(s), a host, no credentials, query or fragment.
pub const ZONE_URL: &str = "^https?://[^/\\s@?#]+(/[^\\s?#]*)?$";

fn schema(value: Value) -> RefOr<Schema> {
    // The literals below are valid schemas; a typo is caught by the unit test that builds them.
    RefOr::T(serde_json::from_value(value).expect("a hand-written schema in api::contract does not parse"))
}

/// A string field that follows `pattern` (`nullable`: or null, when absent or null means "not given").
fn string(pattern: &str, nullable: bool, extra: Value) -> RefOr<Schema> {
    let mut s = json!({"type": if nullable { json!(["string", "null"]) } else { json!("string") }, "pattern": pattern});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    schema(s)
}

/// The fields' schemas, for `#[schema(schema_with = …)]` (which takes a function, not a value).
macro_rules! string_fields {
    ($($(#[$doc:meta])* $name:ident, $optional:ident = $pattern:expr, $extra:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name() -> RefOr<Schema> {
            string($pattern, false, $extra)
        }
        $(#[$doc])*
        /// Null or absent: not given.
        pub fn $optional() -> RefOr<Schema> {
            string($pattern, true, $extra)
        }
    )*};
}

string_fields! {
    /// A name or key: [`KEY`].
    key, optional_key = KEY, json!({});
    /// A client id: [`CLIENT_ID`].
    client_id, optional_client_id = CLIENT_ID, json!({});
    /// A username: [`USERNAME`].
    username, optional_username = USERNAME, json!({});
    /// A child zone's name: [`ZONE_NAME`].
    zone_name, optional_zone_name = ZONE_NAME, json!({});
    /// An agent URL: [`AGENT_URL`], at most 2,048 characters.
    agent_url, optional_agent_url = AGENT_URL, json!({"maxLength": 2048});
    /// An agent token: [`AGENT_TOKEN`].
    agent_token, optional_agent_token = AGENT_TOKEN, json!({});
    /// A child zone's API root: [`ZONE_URL`], at most 2,048 characters.
    zone_url, optional_zone_url = ZONE_URL, json!({"maxLength": 2048});
    /// A child zone account's password: 1 to 1,024 characters.
    zone_password, optional_zone_password = "^[\\s\\S]{1,1024}$", json!({"minLength": 1, "maxLength": 1024});
}

/// A capability value: a finite number, a boolean, or a string of at most 1,024 characters.
fn capability_value() -> Value {
    json!({"oneOf": [
        {"type": "number"},
        {"type": "boolean"},
        {"type": "string", "maxLength": 1024},
    ]})
}

/// What a host announces: at most 256 capabilities, keys [`CAPABILITY_KEY`].
pub fn capabilities() -> RefOr<Schema> {
    schema(json!({
        "type": "object",
        "maxProperties": 256,
        "propertyNames": {"type": "string", "pattern": CAPABILITY_KEY},
        "additionalProperties": capability_value(),
    }))
}

/// [`capabilities`], or null/absent: left as they are.
pub fn optional_capabilities() -> RefOr<Schema> {
    schema(json!({
        "type": ["object", "null"],
        "maxProperties": 256,
        "propertyNames": {"type": "string", "pattern": CAPABILITY_KEY},
        "additionalProperties": capability_value(),
    }))
}

/// A requirement: the value's type follows the op.
pub fn requirement() -> RefOr<Schema> {
    let key = json!({"type": "string", "pattern": CAPABILITY_KEY});
    let scalar = capability_value();
    let list = |t: &str| {
        let item = if t == "string" { json!({"type": t, "maxLength": 1024}) } else { json!({"type": t}) };
        json!({"type": "array", "minItems": 1, "maxItems": 256, "items": item})
    };
    schema(json!({
        "description": "A capability filter: `{\"key\":\"free-disk\",\"op\":\"ge\",\"value\":100}`.",
        "oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["key", "op", "value"], "properties": {
                "key": key, "op": {"type": "string", "enum": ["lt", "le", "gt", "ge"]}, "value": {"type": "number"}}},
            {"type": "object", "additionalProperties": false, "required": ["key", "op", "value"], "properties": {
                "key": key, "op": {"type": "string", "enum": ["eq", "ne"]}, "value": scalar}},
            {"type": "object", "additionalProperties": false, "required": ["key", "op", "value"], "properties": {
                "key": key, "op": {"type": "string", "enum": ["in"]},
                "value": {"oneOf": [list("number"), list("boolean"), list("string")]}}},
            {"type": "object", "additionalProperties": false, "required": ["key", "op"], "properties": {
                "key": key, "op": {"type": "string", "enum": ["exists"]}, "value": {"type": "null"}}},
        ],
    }))
}

/// `POST /v1/accounts`: which of `client_id` and `client_ids` the role takes.
pub fn account_create() -> RefOr<Schema> {
    let username = json!({"type": "string", "pattern": USERNAME});
    let password = json!({"type": "string", "minLength": 8, "maxLength": 1024});
    let none = json!({"type": "null"});
    schema(json!({
        "description": "An admin, a member of one client (`client_id`), or a parent limited to \
                        some clients (`client_ids`: ids, or prefixes ending in `*`).",
        "oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["username", "password", "role"],
             "properties": {"username": username, "password": password, "role": {"type": "string", "enum": ["admin"]},
                            "client_id": none, "client_ids": none}},
            {"type": "object", "additionalProperties": false, "required": ["username", "password", "role", "client_id"],
             "properties": {"username": username, "password": password, "role": {"type": "string", "enum": ["member"]},
                            "client_id": {"type": "string", "pattern": CLIENT_ID}, "client_ids": none}},
            {"type": "object", "additionalProperties": false, "required": ["username", "password", "role", "client_ids"],
             "properties": {"username": username, "password": password, "role": {"type": "string", "enum": ["parent"]},
                            "client_id": none,
                            "client_ids": {"type": "array", "minItems": 1, "maxItems": 64,
                                           "items": {"type": "string", "pattern": CLIENT_PATTERN}}}},
        ],
    }))
}

/// A plain `http://` child off loopback needs `insecure_http: true` (`ZoneCreate`): the rule of
/// `api::federation::insecure_http`, joined to the derived schema as `allOf`. (A `ZoneUpdate`
/// without `api_url` is free of it, which needs `not`; the document's schema model has none, so
/// the update states the rule in words only.)
pub fn zone_transport() -> Value {
    json!({"anyOf": [
        {"type": "object", "required": ["insecure_http"], "properties": {"insecure_http": {"type": "boolean", "enum": [true]}}},
        {"type": "object", "properties": {"api_url": {"type": "string", "pattern": "^https://"}}},
        {"type": "object", "properties": {"api_url": {"type": "string", "pattern": LOOPBACK_HTTP}}},
    ]})
}

/// `http://` to localhost, 127.0.0.0/8 or [::1].
const LOOPBACK_HTTP: &str = "^http://([Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]|127(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}|\\[::1\\])(:[0-9]{1,5})?(/[^\\s?#]*)?$";

/// `POST /v1/instances/{id}/action`: only a migrate names a host.
pub fn instance_action() -> RefOr<Schema> {
    schema(json!({
        "description": "`{\"action\":\"stop\"}`, or `{\"action\":\"migrate\",\"host_id\":…}` (without \
                        `host_id` the scheduler picks another host that meets the instance's requirements).",
        "oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["action"], "properties": {
                "action": {"type": "string", "enum": ["start", "stop", "reboot"]}, "host_id": {"type": "null"}}},
            {"type": "object", "additionalProperties": false, "required": ["action"], "properties": {
                "action": {"type": "string", "enum": ["migrate"]},
                "host_id": {"type": ["string", "null"], "format": "uuid"}}},
        ],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hand_written_schema_parses() {
        for s in [capabilities(), optional_capabilities(), requirement(), account_create(), instance_action()] {
            assert!(matches!(s, RefOr::T(_)));
        }
        let joined = json!({"allOf": [{"type": "object"}, zone_transport()]});
        assert!(serde_json::from_value::<RefOr<Schema>>(joined).is_ok());
    }

    #[test]
    fn the_patterns_say_what_the_validators_check() {
        let re = |p: &str| regex_lite::Regex::new(p).expect("pattern");
        // regex-lite has no look-ahead; the key part of CAPABILITY_KEY is KEY.
        let key = re(KEY);
        for (k, ok) in [("free-disk", true), ("a.b:c_d-e", true), ("", false), ("a b", false), (&"k".repeat(65), false)]
        {
            assert_eq!(key.is_match(k), ok, "{k:?}");
            assert_eq!(crate::validate::valid_key(k), ok, "{k:?}");
        }
        let client = re(CLIENT_ID);
        for (k, ok) in [("acme", true), ("acme-1.eu:x", true), ("", false), ("a/b", false), (&"c".repeat(129), false)] {
            assert_eq!(client.is_match(k), ok, "{k:?}");
            assert_eq!(crate::validate::valid_client_id(k), ok, "{k:?}");
        }
        let user = re(USERNAME);
        for (k, ok) in [("alice@x.org", true), ("a:b", false), ("", false)] {
            assert_eq!(user.is_match(k), ok, "{k:?}");
            assert_eq!(crate::validate::valid_username(k), ok, "{k:?}");
        }
        let pattern = re(CLIENT_PATTERN);
        for (k, ok) in [("acme-*", true), ("*", true), ("bob", true), ("a*b", false), ("**", false)] {
            assert_eq!(pattern.is_match(k), ok, "{k:?}");
            assert_eq!(crate::ClientPattern::parse(k).is_ok(), ok, "{k:?}");
        }
        let token = re(AGENT_TOKEN);
        for (k, ok) in [("0123456789abcdef", true), ("short", false), ("0123456789 abcdef", false)] {
            assert_eq!(token.is_match(k), ok, "{k:?}");
            assert_eq!(crate::validate::validate_agent_token(k).is_ok(), ok, "{k:?}");
        }
        let url = re(AGENT_URL);
        for (k, ok) in [
            ("http://h:1/x", true),
            ("https://h", true),
            ("http:///x", false),
            ("ftp://h", false),
            ("http://h x", false),
        ] {
            assert_eq!(url.is_match(k), ok, "{k:?}");
            assert_eq!(crate::validate::validate_agent_url(k).is_ok(), ok, "{k:?}");
        }
    }
}
