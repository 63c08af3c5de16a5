//! Validation of requirements, resources and host registrations.
//!
//! Everything a client sends is checked here before it reaches SQL, so the query builder can
//! assume well-typed filters and the database never sees absurd numbers. An unknown op is already
//! refused by serde (the [`api::Op`] enum); what serde cannot know (which value types an op
//! accepts, key syntax, bounds) is checked here.

use std::collections::BTreeMap;

pub use api::validate::{valid_key, validate_agent_token, validate_agent_url};
use api::{CapabilityValue, HostRegister, Op, Requirement, Resources};

use crate::store::{Filter, NewHost, Test};

/// At most this many requirements per request: each is one `EXISTS` subquery.
pub const MAX_REQUIREMENTS: usize = 64;
/// At most this many values in an `in` list (each is one bind parameter).
pub const MAX_IN_VALUES: usize = 256;
/// Longest string value (requirement or capability), in bytes.
pub const MAX_STRING_LEN: usize = 1024;
/// At most this many capabilities per host.
pub const MAX_CAPABILITIES: usize = 256;
/// Upper bounds of one resource figure: far above any real host, low enough that sums of many
/// hosts stay far from `i64` overflow.
pub const MAX_VCPUS: i64 = 1 << 20;
pub const MAX_MEMORY_MB: i64 = 1 << 40;
pub const MAX_DISK_GB: i64 = 1 << 40;

/// What is wrong with a request, precise enough for the client to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("requirements[{index}] (key {key:?}): {reason}")]
    Requirement { index: usize, key: String, reason: String },
    #[error("too many requirements: {0}, at most {MAX_REQUIREMENTS}")]
    TooManyRequirements(usize),
    #[error("resources.{field}: {reason}")]
    Resources { field: &'static str, reason: String },
    #[error("capabilities[{key:?}]: {reason}")]
    Capability { key: String, reason: String },
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

impl api::CodedError for ValidationError {
    fn code(&self) -> api::ErrorCode {
        match self {
            ValidationError::Requirement { .. } | ValidationError::TooManyRequirements(_) => {
                api::ErrorCode::InvalidRequirements
            }
            ValidationError::Resources { .. } => api::ErrorCode::InvalidResources,
            ValidationError::Capability { .. } | ValidationError::Field { .. } => api::ErrorCode::InvalidField,
        }
    }

    /// Always the caller's to fix: the message names the field and what is wrong.
    fn public_message(&self) -> String {
        self.to_string()
    }
}

/// The agent URL and token rules are the API's ([`api::validate`]); their error is a field error.
impl From<api::validate::FieldError> for ValidationError {
    fn from(e: api::validate::FieldError) -> Self {
        ValidationError::Field { field: e.field, reason: e.reason }
    }
}

/// A JSON scalar as a capability value, or why it is not one.
fn scalar(value: &serde_json::Value) -> Result<CapabilityValue, String> {
    match value {
        serde_json::Value::Bool(b) => Ok(CapabilityValue::Bool(*b)),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(CapabilityValue::Float(f)),
            _ => Err(format!("number {n} is out of range")),
        },
        // Characters, as the document's maxLength counts them.
        serde_json::Value::String(s) if s.chars().count() > MAX_STRING_LEN => {
            Err(format!("string value is {} characters long, at most {MAX_STRING_LEN}", s.chars().count()))
        }
        serde_json::Value::String(s) => Ok(CapabilityValue::String(s.clone())),
        serde_json::Value::Null => Err("value is null".into()),
        serde_json::Value::Array(_) => Err("value is an array, expected a scalar".into()),
        serde_json::Value::Object(_) => Err("value is an object, expected a scalar".into()),
    }
}

/// Checks one requirement against its op and returns its filter.
fn requirement(r: &Requirement) -> Result<Filter, String> {
    if !valid_key(&r.key) {
        return Err("key must match [A-Za-z0-9_.:-]{1,64}".into());
    }
    if r.key.starts_with(federation::matching::RESERVED_PREFIX) {
        return Err(format!(
            "keys starting with {:?} are the zone's free capacity; ask for it with resources",
            federation::matching::RESERVED_PREFIX
        ));
    }
    let value = r.value.as_ref().filter(|v| !v.is_null());
    let op = r.op.as_str();
    let need = |what: &str| format!("op {op} needs {what}");
    let test = match r.op {
        Op::Exists => match value {
            None => Test::Exists,
            Some(_) => return Err("op exists takes no value".into()),
        },
        Op::Eq | Op::Ne => {
            let v = scalar(value.ok_or_else(|| need("a value (number, boolean or string)"))?)
                .map_err(|e| format!("op {op}: {e}"))?;
            if r.op == Op::Eq {
                Test::Eq(v)
            } else {
                Test::Ne(v)
            }
        }
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let x = match value.map(scalar) {
                Some(Ok(CapabilityValue::Float(x))) => x,
                Some(Err(e)) => return Err(format!("op {op}: {e}")),
                _ => return Err(need("a number")),
            };
            match r.op {
                Op::Lt => Test::Lt(x),
                Op::Le => Test::Le(x),
                Op::Gt => Test::Gt(x),
                _ => Test::Ge(x),
            }
        }
        Op::In => {
            let Some(serde_json::Value::Array(items)) = value else {
                return Err(need("a non-empty array of values of one type"));
            };
            if items.is_empty() {
                return Err(need("a non-empty array of values of one type"));
            }
            if items.len() > MAX_IN_VALUES {
                return Err(format!("op in: {} values, at most {MAX_IN_VALUES}", items.len()));
            }
            let mut values = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let v = scalar(item).map_err(|e| format!("op in: value[{i}]: {e}"))?;
                if let Some(first) = values.first() {
                    if CapabilityValue::kind(first) != v.kind() {
                        return Err(format!(
                            "op in: value[{i}] is a {}, the first value is a {}; values must be of one type",
                            v.kind().as_str(),
                            CapabilityValue::kind(first).as_str()
                        ));
                    }
                }
                values.push(v);
            }
            Test::In(values)
        }
    };
    Ok(Filter { key: r.key.clone(), test })
}

/// Validates a request's requirements; the error names the first bad requirement's index.
pub fn validate_requirements(reqs: &[Requirement]) -> Result<Vec<Filter>, ValidationError> {
    if reqs.len() > MAX_REQUIREMENTS {
        return Err(ValidationError::TooManyRequirements(reqs.len()));
    }
    reqs.iter()
        .enumerate()
        .map(|(index, r)| {
            requirement(r).map_err(|reason| ValidationError::Requirement { index, key: r.key.clone(), reason })
        })
        .collect()
}

/// Validates resources: each figure between 0 and its bound.
pub fn validate_resources(r: &Resources) -> Result<(), ValidationError> {
    for (field, value, max) in
        [("vcpus", r.vcpus, MAX_VCPUS), ("memory_mb", r.memory_mb, MAX_MEMORY_MB), ("disk_gb", r.disk_gb, MAX_DISK_GB)]
    {
        if value < 0 {
            return Err(ValidationError::Resources { field, reason: format!("{value} is negative") });
        }
        if value > max {
            return Err(ValidationError::Resources { field, reason: format!("{value} is more than {max}") });
        }
    }
    Ok(())
}

/// Turns registration capabilities (JSON values) into typed values: a number is a float, a
/// boolean a bool, a string a string; anything else is refused.
pub fn parse_capabilities(
    caps: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, CapabilityValue>, ValidationError> {
    if caps.len() > MAX_CAPABILITIES {
        return Err(ValidationError::Field {
            field: "capabilities",
            reason: format!("{} capabilities, at most {MAX_CAPABILITIES}", caps.len()),
        });
    }
    caps.iter()
        .map(|(key, value)| {
            if !valid_key(key) {
                return Err(ValidationError::Capability {
                    key: key.clone(),
                    reason: "key must match [A-Za-z0-9_.:-]{1,64}".into(),
                });
            }
            if key.starts_with(federation::matching::RESERVED_PREFIX) {
                return Err(ValidationError::Capability {
                    key: key.clone(),
                    reason: format!(
                        "keys starting with {:?} are the zone's own (free capacity); give resources instead",
                        federation::matching::RESERVED_PREFIX
                    ),
                });
            }
            let v = scalar(value).map_err(|reason| ValidationError::Capability { key: key.clone(), reason })?;
            Ok((key.clone(), v))
        })
        .collect()
}

/// Validates a host registration and returns what the store inserts.
pub fn validate_host(reg: &HostRegister) -> Result<NewHost, ValidationError> {
    if !valid_key(&reg.name) {
        return Err(ValidationError::Field { field: "name", reason: "must match [A-Za-z0-9_.:-]{1,64}".into() });
    }
    validate_agent_url(&reg.agent_url)?;
    validate_resources(&reg.resources)?;
    if let Some(token) = &reg.agent_token {
        validate_agent_token(token)?;
    }
    Ok(NewHost {
        id: uuid::Uuid::new_v4(),
        name: reg.name.clone(),
        agent_url: reg.agent_url.clone(),
        capabilities: parse_capabilities(&reg.capabilities)?,
        resources: reg.resources,
        agent_token: reg.agent_token.clone(),
        credential_hash: None,
    })
}

#[cfg(test)]
mod tests {
    use api::CodedError;

    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> Result<Vec<Filter>, ValidationError> {
        let reqs: Vec<Requirement> =
            serde_json::from_value(v).map_err(|e| ValidationError::Field { field: "serde", reason: e.to_string() })?;
        validate_requirements(&reqs)
    }

    #[test]
    fn good_requirements() {
        let f = req(json!([
            {"key": "free-disk", "op": "ge", "value": 100},
            {"key": "hypervisor", "op": "in", "value": ["kvm", "xen"]},
            {"key": "can-run-windows", "op": "eq", "value": true},
            {"key": "gpu", "op": "exists"},
            {"key": "gpu", "op": "exists", "value": null},
        ]))
        .unwrap();
        assert_eq!(f[0].test, Test::Ge(100.0));
        assert_eq!(f[3].test, Test::Exists);
        assert_eq!(f[4].test, Test::Exists);
    }

    #[test]
    fn bad_requirements_name_the_index() {
        for (body, needle) in [
            (json!([{"key": "a", "op": "like", "value": 1}]), "unknown variant"),
            (json!([{"key": "a", "op": "eq", "value": 1}, {"key": "b", "op": "lt", "value": "x"}]), "requirements[1]"),
            (json!([{"key": "a", "op": "in", "value": []}]), "non-empty"),
            (json!([{"key": "a", "op": "in", "value": [1, "x"]}]), "one type"),
            (json!([{"key": "a", "op": "in", "value": 3}]), "non-empty array"),
            (json!([{"key": "a", "op": "exists", "value": 3}]), "no value"),
            (json!([{"key": "a b", "op": "exists"}]), "key must match"),
            (json!([{"key": "a", "op": "eq"}]), "needs a value"),
            (json!([{"key": "a", "op": "eq", "value": [1]}]), "array"),
        ] {
            let err = req(body.clone()).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn resources_bounds() {
        assert!(validate_resources(&Resources { vcpus: 1, memory_mb: 1, disk_gb: 0 }).is_ok());
        let e = validate_resources(&Resources { vcpus: -1, memory_mb: 1, disk_gb: 0 }).unwrap_err();
        assert_eq!(e.code(), api::ErrorCode::InvalidResources);
        assert!(e.to_string().contains("vcpus"));
        assert!(validate_resources(&Resources { vcpus: 1, memory_mb: i64::MAX, disk_gb: 0 }).is_err());
    }
}
