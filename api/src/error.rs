//! The error body every endpoint returns and the codes it may carry.
//!
//! One small enum serves both HTTP responses and bus replies, so a failure keeps its code when it
//! crosses from one to the other.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ErrorDetail {
    /// Stable, machine-readable code: one of [`ErrorCode`] in snake_case.
    pub code: ErrorCode,
    /// What went wrong and, where the caller can act, what to fix.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code, message: message.into() } }
    }
}

/// Every error code of the API and the bus. Adding a code is a compatible change; renaming or
/// removing one is not.
#[derive(
    Debug,
    Clone,
    Copy,
    Serialize,
    Deserialize,
    ToSchema,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    // --- caller errors (4xx) ---
    /// The body is not valid JSON.
    InvalidJson,
    /// The body is JSON but does not match the expected shape (unknown or missing field, wrong type).
    InvalidBody,
    /// A field has a value that is not allowed; the message names the field.
    InvalidField,
    /// The body is larger than the configured limit.
    BodyTooLarge,
    /// The request's content type is not `application/json`.
    UnsupportedMediaType,
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// The token is not one this zone issued (unknown, malformed or revoked).
    InvalidToken,
    /// The token was valid but has expired; ask for a new one.
    TokenExpired,
    /// Wrong username or password.
    InvalidCredentials,
    /// Too many requests of this kind right now (password checks in flight, or repeated failed
    /// logins for one username or from one address); retry after the `Retry-After` seconds.
    TooManyRequests,
    /// Authenticated, but the role does not allow this.
    Forbidden,
    /// No such resource (or not visible to the caller).
    NotFound,
    /// The resource already exists (duplicate name, username...).
    Conflict,
    /// The request is well formed but cannot be done in the resource's current state.
    InvalidState,
    /// The path or method does not exist.
    NoSuchRoute,
    /// A placement requirement is malformed (unknown op, value of the wrong type for its op,
    /// bad key); the message names the requirement by index.
    InvalidRequirements,
    /// Requested resources are out of range (negative, too large).
    InvalidResources,
    /// No host (or child zone) meets the requirements with the resources free.
    NoValidHost,
    /// A host's agent failed the task or did not answer in time; the message has its reason.
    AgentFailed,
    /// zone-add or zone-update could not reach the child zone's API at the given URL.
    ZoneUnreachable,
    /// The child zone refused the given credentials, or the account is not an admin there.
    ZoneAuthFailed,
    /// The request (or the zone-add) would make a loop: the zone is already on the path.
    ZoneLoop,
    /// The request crossed more zones than the hop limit allows.
    HopLimitExceeded,
    /// A child zone the request had to go to did not answer (offline, unreachable, or failing).
    ZoneUnavailable,

    // --- bus and cluster errors ---
    /// The call's deadline passed before a reply arrived.
    Timeout,
    /// The node the message was addressed to has left the zone or was evicted.
    NodeUnavailable,
    /// The broker could not route the message to any queue.
    Unroutable,
    /// The message bus is not reachable (broker down, reconnecting).
    BusUnavailable,
    /// No service of that name handles this message type.
    NoSuchService,
    /// The ring did not settle while the message was being routed; retry.
    RingUnstable,
    /// The database is not reachable.
    StoreUnavailable,
    /// This node has been fenced (evicted by its peers) and no longer serves.
    NodeFenced,
    /// A bug or an unexpected failure; details are in the node's log, not in the response.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is returned with.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidJson | InvalidBody | InvalidField | InvalidRequirements | InvalidResources => 400,
            MissingToken | InvalidToken | TokenExpired | InvalidCredentials => 401,
            Forbidden => 403,
            NotFound | NoSuchRoute | NoSuchService => 404,
            // The request was valid; the zone it names did not answer (a gateway error).
            ZoneUnreachable => 502,
            ZoneAuthFailed => 400,
            Conflict | InvalidState | NoValidHost | ZoneLoop | HopLimitExceeded => 409,
            BodyTooLarge => 413,
            TooManyRequests => 429,
            UnsupportedMediaType => 415,
            Timeout => 504,
            NodeUnavailable | Unroutable | BusUnavailable | RingUnstable | StoreUnavailable | NodeFenced
            | ZoneUnavailable => 503,
            Internal => 500,
            AgentFailed => 502,
        }
    }

    /// The snake_case text of the code, as it appears on the wire (derived, the same as serde's).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses the wire text of a code; unknown codes (from a newer peer) become `Internal`.
    pub fn parse(text: &str) -> ErrorCode {
        text.parse().unwrap_or(ErrorCode::Internal)
    }
}

/// An error that can leave a zone: every error type of the workspace says once which code it has
/// and what a caller may read of it; the HTTP answer and the bus reply are both made from that.
///
/// `public_message` must not carry internal detail (SQL, broker text, file paths): for 5xx codes
/// it is a generic sentence, and the full error goes to the node's log instead.
pub trait CodedError: std::error::Error {
    /// The stable code a caller matches on.
    fn code(&self) -> ErrorCode;

    /// What the caller reads: the real message for caller errors, a generic one for internal ones.
    fn public_message(&self) -> String;

    /// True when the caller sees only a generic message, so the full error must be logged.
    fn is_internal(&self) -> bool {
        self.code().http_status() >= 500
    }

    /// The error body of this error, as an HTTP answer or a bus reply carries it.
    fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.public_message())
    }
}

/// An error's body as a bus reply or an HTTP answer carries it: the one conversion, for every
/// error type of the workspace.
impl<E: CodedError> From<E> for ErrorBody {
    fn from(e: E) -> ErrorBody {
        e.to_body()
    }
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn derived_names_match_serde_for_every_code() {
        for code in ErrorCode::iter() {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().into()), "{code:?}");
            assert_eq!(code.to_string(), code.as_str());
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(ErrorCode::parse("from_the_future"), ErrorCode::Internal);
    }

    #[test]
    fn every_code_has_a_status_in_range() {
        for code in ErrorCode::iter() {
            assert!((400..600).contains(&code.http_status()), "{code:?}");
        }
    }
}
