//! The simulated agents' error answer: the API's error body (`{"error": {"code", "message"}}`)
//! with the code's status, and a JSON body extractor whose every rejection is such an answer.
//!
//! A small copy of the node's own (`zone-node/src/http/error.rs`): this crate depends on `api`
//! only, and an agent answers in the same shape as a zone so the zone's client reads both alike.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use api::{CodedError, ErrorCode};

/// Why a request to a simulated agent failed. Every message is for the caller: the simulator has
/// no internal detail to hide.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SimError {
    pub code: ErrorCode,
    pub message: String,
}

impl SimError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> SimError {
        SimError { code, message: message.into() }
    }
}

impl CodedError for SimError {
    fn code(&self) -> ErrorCode {
        self.code
    }

    fn public_message(&self) -> String {
        self.message.clone()
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.to_body())).into_response()
    }
}

pub type SimResult<T> = Result<T, SimError>;

/// A JSON body whose every rejection is a [`SimError`] with a code: invalid JSON, wrong shape
/// (unknown or missing field, wrong type), too large, not JSON at all.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = SimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> SimError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => {
            SimError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {}", source_text(&e)))
        }
        JsonRejection::JsonDataError(e) => SimError::new(
            ErrorCode::InvalidBody,
            format!("the body does not match the expected shape: {}", source_text(&e)),
        ),
        JsonRejection::MissingJsonContentType(_) => {
            SimError::new(ErrorCode::UnsupportedMediaType, "send the body as JSON with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            SimError::new(ErrorCode::BodyTooLarge, "the body is larger than the agent accepts")
        }
        other => SimError::new(ErrorCode::InvalidBody, format!("cannot read the body: {}", other.body_text())),
    }
}

/// The innermost error text: serde's message with its line and column, without axum's prefix.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// The answer to a path the agents do not serve.
pub async fn no_such_route() -> SimError {
    SimError::new(
        ErrorCode::NoSuchRoute,
        "no such path; the agents serve /healthz and /hosts/{name}/v1/{tasks,control,stats}",
    )
}
