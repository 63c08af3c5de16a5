//! How errors leave the API: a status, a code, a message, and nothing internal.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use api::{ErrorBody, ErrorCode};

use crate::error::Error;

/// Any failure of a handler. 5xx details go to the log, never to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(Error::api(code, message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        if self.0.is_internal() {
            tracing::error!(error = %self.0, code = %code, "request failed");
        }
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(ErrorBody::new(code, self.0.public_message()))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose every rejection is an API error with a code: invalid JSON, wrong shape
/// (unknown or missing field, wrong type), too large, not JSON at all.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {}", source_text(&e)))
        }
        JsonRejection::JsonDataError(e) => ApiError::new(
            ErrorCode::InvalidBody,
            format!("the body does not match the expected shape: {}", source_text(&e)),
        ),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "send the body as JSON with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::BodyTooLarge, "the body is larger than this zone accepts (http.body_limit_bytes)")
        }
        other => ApiError::new(ErrorCode::InvalidBody, format!("cannot read the body: {}", other.body_text())),
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

pub async fn no_such_route() -> ApiError {
    ApiError::new(ErrorCode::NoSuchRoute, "no such path; see /openapi.json")
}

pub async fn method_not_allowed() -> Response {
    let body = ErrorBody::new(ErrorCode::NoSuchRoute, "this path does not take that method; see /openapi.json");
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
