//! The REST API every node serves (axum).
//!
//! One `router()` per resource module, merged here. Every `/v1` route but token issue sits
//! behind [`auth::require_token`]; admin-only handlers take the [`auth::Admin`] extractor.
//! Errors leave through `IntoResponse for crate::error::Error` ([`error`]), the one place an
//! error becomes a status and a body.
//!
//! - [`error`]: errors as answers, and the JSON body extractor that turns bad input into error codes
//! - [`auth`]: token issue and the bearer-token middleware; the [`auth::Caller`] it yields
//! - [`accounts`], [`zone`], [`hosts`], [`instances`], [`health`]: the routes
//! - [`zones`]: the child-zone registry; [`clients`]: the lowest-zone lookup
//! - [`federated`]: gateway errors and the answer headers forwarding parents read
//! - [`callbacks`]: agents' task results (authenticated by a one-time token, not a bearer token)
//! - [`input`]: request parts checked at the edge (requirements, resources, ids, page sizes)
//! - [`openapi`]: the OpenAPI document served at `/openapi.json`
//! - `state`: [`AppState`], what every handler shares
//! - [`with_next_marker`]: a list page's `next_marker` in a header too

pub mod accounts;
pub mod auth;
pub mod callbacks;
pub mod clients;
pub mod error;
pub mod federated;
pub mod health;
pub mod hosts;
pub mod input;
pub mod instances;
pub mod login_limit;
pub mod openapi;
pub mod server;
mod state;
pub mod zone;
pub mod zones;

pub use state::{AppState, Shared};

use axum::extract::DefaultBodyLimit;
use axum::Router;

/// The whole API.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .merge(zone::router())
        .merge(accounts::router())
        .merge(hosts::router())
        .merge(instances::router())
        .merge(zones::router())
        .merge(clients::router())
        .merge(auth::protected_router())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(hosts::enroll_router())
        .merge(callbacks::router())
        .merge(protected)
        .fallback(error::no_such_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.http.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), server::edge))
        .with_state(state)
}

/// The requests answered before the router ([`server::serve`]), from memory and without an
/// await: a cached lowest-zone lookup ([`clients::answer_rendered`]), the hottest read of a
/// federation. Counted in the request metrics like any other.
pub fn before_router<B>(state: &AppState, req: &axum::http::Request<B>) -> Option<axum::response::Response> {
    let started = std::time::Instant::now();
    let answer = clients::answer_rendered(state, req)?;
    health::record_request("GET", Some(clients::ROUTE), answer.status(), started);
    Some(answer)
}

/// Names a list page's `next_marker` in [`api::NEXT_MARKER_HEADER`] too, so a client can ask for
/// the next page before it has read this one (`api::Pages`).
pub(crate) fn with_next_marker(
    mut resp: axum::response::Response,
    next_marker: Option<&str>,
) -> axum::response::Response {
    // A resource id, checked to be a UUID where it was read; a value that is not a header value
    // is left to the body alone.
    if let Some(value) = next_marker.and_then(|m| axum::http::HeaderValue::from_str(m).ok()) {
        resp.headers_mut().insert(api::NEXT_MARKER_HEADER, value);
    }
    resp
}
