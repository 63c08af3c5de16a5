//! How errors leave the API: a status, a code, a message, and nothing internal; and the JSON body
//! extractor that turns bad input into coded errors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use api::{CodedError, ErrorBody, ErrorCode};

use crate::error::Error;

/// The one way an error becomes an HTTP answer: its code's status, its code, its public message.
/// 5xx details go to the log, never to the client.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        if self.is_internal() {
            tracing::error!(error = %self, code = %code, "request failed");
        }
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A zone above must not try elsewhere what may have been done below.
        let unknown = matches!(
            &self,
            Error::Federation(
                federation::FedError::WentOffline { .. }
                    | federation::FedError::Timeout { .. }
                    | federation::FedError::OutcomeUnknown { .. }
            )
        );
        let mut response = (status, axum::Json(self.to_body())).into_response();
        if unknown {
            response
                .headers_mut()
                .insert(api::federation::OUTCOME_HEADER, axum::http::HeaderValue::from_static("unknown"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, Error>;

/// A JSON body whose every rejection is an API error with a code: invalid JSON, wrong shape
/// (unknown or missing field, wrong type), too large, not JSON at all.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<Object<T>>::from_request(req, state).await {
            Ok(axum::Json(Object(value))) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A body that must be a JSON object, as the document says every body is: serde's derived
/// structs would also take an array of their fields in order (`[null, null]`).
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for OnlyMaps<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(OnlyMaps(std::marker::PhantomData)).map(Object)
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => {
            Error::api(ErrorCode::InvalidJson, format!("the body is not valid JSON: {}", source_text(&e)))
        }
        JsonRejection::JsonDataError(e) => Error::api(
            ErrorCode::InvalidBody,
            format!("the body does not match the expected shape: {}", source_text(&e)),
        ),
        JsonRejection::MissingJsonContentType(_) => {
            Error::api(ErrorCode::UnsupportedMediaType, "send the body as JSON with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Error::api(ErrorCode::BodyTooLarge, "the body is larger than this zone accepts (http.body_limit_bytes)")
        }
        other => Error::api(ErrorCode::InvalidBody, format!("cannot read the body: {}", other.body_text())),
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

pub async fn no_such_route() -> Error {
    Error::api(ErrorCode::NoSuchRoute, "no such path; see /openapi.json")
}

pub async fn method_not_allowed() -> Response {
    let body = ErrorBody::new(ErrorCode::NoSuchRoute, "this path does not take that method; see /openapi.json");
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
