//! Request parts checked at the edge, with the error codes the API promises for them.
//!
//! Requirements and resources are parsed out of the raw JSON here rather than by the body's
//! derived `Deserialize`, so that a bad requirement (unknown op, wrong value type) is answered
//! with `invalid_requirements` naming its index, and bad resources with `invalid_resources`,
//! instead of a generic `invalid_body`.

use api::{ErrorCode, Requirement, Resources};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::Error;
use crate::http::error::ApiResult;
use crate::scheduler::{validate_requirements, validate_resources, Filter};

/// Default and largest page size of a list.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// A JSON object body, or `invalid_body`.
pub fn object(body: Value) -> ApiResult<Map<String, Value>> {
    match body {
        Value::Object(map) => Ok(map),
        other => Err(Error::api(
            ErrorCode::InvalidBody,
            format!("the body must be a JSON object, not {}", json_kind(&other)),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Takes `requirements` out of `body` and validates them: the typed list and its SQL filters.
pub fn requirements(body: &mut Map<String, Value>) -> ApiResult<(Vec<Requirement>, Vec<Filter>)> {
    let bad = |m: String| Error::api(ErrorCode::InvalidRequirements, m);
    let reqs: Vec<Requirement> = match body.remove("requirements") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| serde_json::from_value(item).map_err(|e| bad(format!("requirements[{i}]: {e}"))))
            .collect::<ApiResult<_>>()?,
        Some(other) => return Err(bad(format!("requirements must be an array, not {}", json_kind(&other)))),
    };
    let filters = validate_requirements(&reqs)?;
    Ok((reqs, filters))
}

/// Takes `resources` out of `body` and validates them (absent means none).
pub fn resources(body: &mut Map<String, Value>) -> ApiResult<Resources> {
    let r: Resources = match body.remove("resources") {
        None | Some(Value::Null) => Resources::default(),
        Some(v) => {
            serde_json::from_value(v).map_err(|e| Error::api(ErrorCode::InvalidResources, format!("resources: {e}")))?
        }
    };
    validate_resources(&r)?;
    Ok(r)
}

/// The rest of `body` as `T` (whose unknown fields are refused), or `invalid_body`.
pub fn rest<T: DeserializeOwned>(body: Map<String, Value>) -> ApiResult<T> {
    serde_json::from_value(Value::Object(body)).map_err(|e| Error::api(ErrorCode::InvalidBody, e.to_string()))
}

/// A path id that must be a UUID; anything else names nothing, so it is `not_found`.
pub fn uuid(what: &str, text: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::api(ErrorCode::NotFound, format!("{what} {text} not found")))
}

/// A page marker: the id of the last item of the previous page.
pub fn marker(marker: Option<String>) -> ApiResult<Option<String>> {
    match marker {
        None => Ok(None),
        Some(m) => Uuid::parse_str(&m)
            .map(|u| Some(u.to_string()))
            .map_err(|_| Error::api(ErrorCode::InvalidField, "marker: pass the next_marker of the previous page")),
    }
}

/// A page size: `limit` between 1 and [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Error::api(ErrorCode::InvalidField, format!("limit: {n} is not between 1 and {MAX_LIMIT}"))),
    }
}
