//! This crate's error type, and the one place it is mapped to API error codes.
//!
//! Caller errors carry a message meant for the caller. Everything else (database, bus, bugs) is
//! logged in full by the HTTP layer and answered with its code and a generic message, so internal
//! detail never reaches a client.

use api::{CodedError, ErrorCode};
use federation::FedError;

use crate::bus::BusError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's fault, or a state the caller can act on: message is shown as is.
    #[error("{message}")]
    Api { code: ErrorCode, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
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

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Api { code, .. } => *code,
            Error::Store(StoreError::Conflict(_)) => ErrorCode::Conflict,
            Error::Store(StoreError::InUse(_)) => ErrorCode::InvalidState,
            Error::Store(StoreError::Unavailable(_)) => ErrorCode::StoreUnavailable,
            Error::Store(_) => ErrorCode::Internal,
            Error::Bus(e) => e.code(),
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The message a client sees: the real one for caller errors and for bus outcomes the caller
    /// can act on, a generic one for everything internal.
    pub fn public_message(&self) -> String {
        match self {
            Error::Api { message, .. } => message.clone(),
            Error::Store(StoreError::Conflict(what)) => format!("{what} already exists"),
            Error::Store(e @ StoreError::InUse(_)) => e.to_string(),
            Error::Store(StoreError::Unavailable(_)) => "the zone's database is unavailable; try again".into(),
            Error::Bus(BusError::Remote { message, .. }) => message.clone(),
            Error::Bus(e @ (BusError::Timeout(_) | BusError::NodeUnavailable(_) | BusError::Unroutable(_))) => {
                e.to_string()
            }
            Error::Bus(BusError::Unavailable(_)) => "the zone's message bus is unavailable; try again".into(),
            _ => "internal error; the node's log has the details".into(),
        }
    }

    /// True when the full error must be logged (the client sees only a generic message).
    pub fn is_internal(&self) -> bool {
        self.code().http_status() >= 500
    }
}

/// A gateway error as this node answers it: its code and the message the gateway made public; an
/// internal one keeps its full text for the log.
impl From<FedError> for Error {
    fn from(e: FedError) -> Error {
        match e.code() {
            ErrorCode::Internal => Error::Internal(e.to_string()),
            code => Error::api(code, e.public_message()),
        }
    }
}

impl From<Error> for api::ErrorBody {
    fn from(e: Error) -> api::ErrorBody {
        api::ErrorBody::new(e.code(), e.public_message())
    }
}
