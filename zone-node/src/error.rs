//! This crate's error type, and the one place it is mapped to API error codes.
//!
//! Every error below it (store, bus, validation, federation) implements [`api::CodedError`]; this
//! type wraps them and says its own code and public message by asking the one it holds. From here
//! an error leaves a node in exactly two ways: as an HTTP answer (`IntoResponse`, in
//! [`crate::http`]) and as a bus reply (`api::ErrorBody::from`, in the resource service). Caller
//! errors carry a message meant for the caller; everything else (database, bus, bugs) is logged in
//! full where it leaves and answered with its code and a generic message, so internal detail never
//! reaches a client.

use api::{CodedError, ErrorCode};

use crate::bus::BusError;
use crate::scheduler::ValidationError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's fault, or a state the caller can act on: message is shown as is.
    #[error("{message}")]
    Api { code: ErrorCode, message: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A bus message this node cannot take (unknown kind, body of the wrong shape).
    #[error(transparent)]
    Decode(#[from] api::bus::DecodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Federation(#[from] federation::FedError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn api(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Api { code, message: message.into() }
    }
    pub fn not_found(what: impl std::fmt::Display) -> Error {
        Error::api(ErrorCode::NotFound, format!("{what} not found"))
    }
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Error {
        Error::api(ErrorCode::InvalidField, format!("{field}: {problem}"))
    }
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::api(ErrorCode::Forbidden, message)
    }
    pub fn internal(what: impl std::fmt::Display) -> Error {
        Error::Internal(what.to_string())
    }
}

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::Api { code, .. } => *code,
            Error::Invalid(e) => e.code(),
            Error::Decode(e) => e.code(),
            Error::Store(e) => e.code(),
            Error::Bus(e) => e.code(),
            Error::Federation(e) => e.code(),
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    fn public_message(&self) -> String {
        match self {
            Error::Api { message, .. } => message.clone(),
            Error::Invalid(e) => e.public_message(),
            Error::Decode(e) => e.public_message(),
            Error::Store(e) => e.public_message(),
            Error::Bus(e) => e.public_message(),
            Error::Federation(e) => e.public_message(),
            Error::Internal(_) => "internal error; the node's log has the details".into(),
        }
    }
}

impl From<api::validate::FieldError> for Error {
    fn from(e: api::validate::FieldError) -> Error {
        Error::Invalid(e.into())
    }
}

impl From<serde_json::Error> for Error {
    /// Only for values this node encodes or decodes itself: a caller's bad JSON is refused at the
    /// edge with `invalid_json`/`invalid_body`, never through here.
    fn from(e: serde_json::Error) -> Error {
        Error::Internal(format!("json: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_never_reaches_the_public_message() {
        let errors = [
            Error::from(StoreError::Other("syntax error near SECRET".into())),
            Error::from(StoreError::Unavailable("password=SECRET".into())),
            Error::from(BusError::Unavailable("amqp://u:SECRET@h".into())),
            Error::internal("SECRET"),
        ];
        for e in errors {
            assert!(e.is_internal(), "{e:?}");
            assert!(!e.public_message().contains("SECRET"), "{e:?}: {}", e.public_message());
            assert!(!e.to_body().error.message.contains("SECRET"));
        }
    }

    #[test]
    fn caller_errors_keep_their_code_and_message() {
        let e = Error::from(ValidationError::Field { field: "name", reason: "empty".into() });
        assert_eq!(e.code(), ErrorCode::InvalidField);
        assert_eq!(e.public_message(), "name: empty");
        let e = Error::from(BusError::Remote { code: ErrorCode::NoValidHost, message: "full".into() });
        assert_eq!((e.code(), e.public_message().as_str()), (ErrorCode::NoValidHost, "full"));
        let e = Error::from(StoreError::Conflict("account alice".into()));
        assert_eq!((e.code(), e.public_message().as_str()), (ErrorCode::Conflict, "account alice already exists"));
        assert!(!e.is_internal());
    }
}
