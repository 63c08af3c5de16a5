//! The one error type of the federation crate and its mapping to API error codes.

use api::{ClientError, CodedError, ErrorCode};

/// Why a federated operation failed. Its [`CodedError::code`] is the API error code it is answered
/// with; the message says what happened in terms an operator can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FedError {
    /// An API error, from this zone or passed through from a child with its code.
    #[error("{message}")]
    Api { code: ErrorCode, message: String },
    /// A child zone could not be reached, refused this zone's credentials, or answered garbage.
    /// Nothing was done there.
    #[error("zone {zone} is unavailable: {reason}")]
    Unavailable { zone: String, reason: String },
    /// A child zone did not answer in time: a change sent to it may or may not have been made.
    #[error("zone {zone} did not answer within {after_ms} ms")]
    Timeout { zone: String, after_ms: u64 },
    /// A child went offline (missed its polls) while a request was with it: the request is cut
    /// off at that moment instead of waiting out the forward timeout. Like a timeout, it may or
    /// may not have been carried out there, so it is not tried elsewhere.
    #[error(
        "zone {zone} stopped answering while the request was with it (it is offline now); it may or may not \
         have been carried out there: look the resource up again once the zone is back"
    )]
    WentOffline { zone: String },
    /// A child's error answer that says the request may or may not have been carried out below it
    /// (`x-zone-outcome: unknown`): passed on with its code, never tried elsewhere.
    #[error("{message}")]
    OutcomeUnknown { code: ErrorCode, message: String },
    /// The request would visit a zone twice.
    #[error("{0}")]
    Loop(String),
    /// The request crossed more zones than the hop limit.
    #[error("{0}")]
    HopLimit(String),
}

impl FedError {
    pub fn api(code: ErrorCode, message: impl Into<String>) -> FedError {
        FedError::Api { code, message: message.into() }
    }

    pub fn not_found(what: impl std::fmt::Display) -> FedError {
        FedError::api(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn internal(message: impl Into<String>) -> FedError {
        FedError::api(ErrorCode::Internal, message)
    }

    /// A child's answer to a forwarded request, as this zone reports it. API errors keep their
    /// code and message (a child's `no_valid_host` or `invalid_state` means the same here); a
    /// child that cannot be reached or answers something that is not the API is unavailable.
    pub fn from_child(zone: &str, error: ClientError, timeout_ms: u64) -> FedError {
        match error {
            ClientError::Api { outcome_unknown: true, code, message, .. } => FedError::OutcomeUnknown { code, message },
            ClientError::Api { status: 401, code, message, .. } => FedError::Unavailable {
                zone: zone.to_owned(),
                reason: format!("it refused this zone's credentials ({code}: {message}); update them with zone-update"),
            },
            ClientError::Api { code, message, .. } => FedError::Api { code, message },
            e @ ClientError::Transport { .. } if e.is_timeout() => {
                FedError::Timeout { zone: zone.to_owned(), after_ms: timeout_ms }
            }
            ClientError::Transport { source, .. } => {
                FedError::Unavailable { zone: zone.to_owned(), reason: transport_reason(&source) }
            }
            ClientError::Decode { status, detail, .. } => FedError::Unavailable {
                zone: zone.to_owned(),
                reason: format!("it answered something that is not the zone API (status {status}): {detail}"),
            },
        }
    }

    /// True when the target certainly did not carry the request out, so another target may be
    /// tried: it refused it, or it was never reached.
    pub fn is_refusal(&self) -> bool {
        match self {
            FedError::Api { code, .. } => matches!(
                code,
                ErrorCode::NoValidHost | ErrorCode::ZoneLoop | ErrorCode::HopLimitExceeded | ErrorCode::ZoneUnavailable
            ),
            FedError::Unavailable { .. } | FedError::Loop(_) | FedError::HopLimit(_) => true,
            FedError::Timeout { .. } | FedError::WentOffline { .. } | FedError::OutcomeUnknown { .. } => false,
        }
    }
}

impl CodedError for FedError {
    fn code(&self) -> ErrorCode {
        match self {
            FedError::Api { code, .. } => *code,
            FedError::Unavailable { .. } => ErrorCode::ZoneUnavailable,
            FedError::Timeout { .. } => ErrorCode::Timeout,
            FedError::WentOffline { .. } => ErrorCode::ZoneUnavailable,
            FedError::OutcomeUnknown { code, .. } => *code,
            FedError::Loop(_) => ErrorCode::ZoneLoop,
            FedError::HopLimit(_) => ErrorCode::HopLimitExceeded,
        }
    }

    /// The message as is, for every code but `internal`: a gateway's messages name zones, paths
    /// and codes the caller can act on (an unavailable child, a loop, a child's own refusal, whose
    /// message the child already made public). An `internal` one is a bug here and stays in the
    /// log.
    fn public_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => INTERNAL_MESSAGE.to_owned(),
            _ => self.to_string(),
        }
    }
}

/// What a caller reads of an internal error (the same sentence as a node's own).
const INTERNAL_MESSAGE: &str = "internal error; the node's log has the details";

/// The innermost cause of a transport error ("Connection refused (os error 111)"): the part an
/// operator can act on, without the request URL the caller already knows.
fn transport_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_refusals() {
        let no_host = FedError::api(ErrorCode::NoValidHost, "none");
        assert_eq!(no_host.code(), ErrorCode::NoValidHost);
        assert!(no_host.is_refusal());
        assert!(!FedError::api(ErrorCode::AgentFailed, "x").is_refusal(), "the instance exists in state error");
        let t = FedError::Timeout { zone: "dc1".into(), after_ms: 10 };
        assert_eq!(t.code(), ErrorCode::Timeout);
        assert!(!t.is_refusal(), "a timed-out create may have been made");
        assert_eq!(FedError::Loop("l".into()).code(), ErrorCode::ZoneLoop);
        assert!(FedError::Unavailable { zone: "z".into(), reason: "r".into() }.is_refusal());
        let cut = FedError::WentOffline { zone: "dc1".into() };
        assert_eq!(cut.code(), ErrorCode::ZoneUnavailable);
        assert!(!cut.is_refusal(), "a create cut off when its child went offline may have been made");
        // Across a hop: a child's 503 marked `x-zone-outcome: unknown` is not a refusal either.
        let marked = ClientError::Api {
            status: 503,
            code: ErrorCode::ZoneUnavailable,
            message: "cut".into(),
            outcome_unknown: true,
        };
        let passed = FedError::from_child("region1", marked, 1000);
        assert_eq!(passed.code(), ErrorCode::ZoneUnavailable);
        assert!(!passed.is_refusal(), "a zone above must not try it elsewhere");
    }

    #[test]
    fn public_messages_keep_what_the_caller_can_act_on_and_hide_internal_detail() {
        let unavailable = FedError::Unavailable { zone: "dc1".into(), reason: "connection refused".into() };
        assert_eq!(unavailable.public_message(), "zone dc1 is unavailable: connection refused");
        assert!(unavailable.is_internal(), "a 503: logged in full as well");
        let refused = FedError::api(ErrorCode::NoValidHost, "no host of zone dc1 fits");
        assert_eq!(refused.to_body(), api::ErrorBody::new(ErrorCode::NoValidHost, "no host of zone dc1 fits"));
        assert!(!refused.is_internal());
        let bug = FedError::internal("a create reached the gateway without a client");
        assert_eq!(bug.code(), ErrorCode::Internal);
        assert!(!bug.public_message().contains("client"), "{}", bug.public_message());
        assert!(bug.is_internal());
    }

    #[test]
    fn child_api_errors_pass_through_but_401_is_ours() {
        let e = FedError::from_child(
            "dc1",
            ClientError::Api {
                status: 409,
                code: ErrorCode::InvalidState,
                message: "busy".into(),
                outcome_unknown: false,
            },
            1,
        );
        assert_eq!(e, FedError::api(ErrorCode::InvalidState, "busy"));
        let e = FedError::from_child(
            "dc1",
            ClientError::Api {
                status: 401,
                code: ErrorCode::TokenExpired,
                message: "old".into(),
                outcome_unknown: false,
            },
            1,
        );
        assert_eq!(e.code(), ErrorCode::ZoneUnavailable, "the caller's token is fine; ours at the child is not");
        assert!(e.to_string().contains("dc1") && e.to_string().contains("zone-update"), "{e}");
    }
}
