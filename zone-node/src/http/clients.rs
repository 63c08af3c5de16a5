//! `GET /v1/clients/{client_id}/zone`: the lowest zone that manages all of a client's instances
//! (the seed's rule, answered from the gateway's cache when it can), so a client can go straight
//! to that zone's API. Members may ask about their own client only; any other is `404`, exactly
//! like a client no zone manages.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use api::{ErrorCode, LowestZone};

use crate::error::Error;
use crate::http::auth::Caller;
use crate::http::error::ApiResult;
use crate::http::federated::answer_headers;
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/clients/{client_id}/zone", get(lowest_zone))
}

/// The lowest zone managing all of the client's instances.
#[utoipa::path(get, path = "/v1/clients/{client_id}/zone", tag = "clients", params(("client_id" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$")),
    responses((status = 200, body = LowestZone), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn lowest_zone(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(client_id): Path<String>,
) -> ApiResult<Response> {
    if !api::validate::valid_client_id(&client_id) {
        return Err(Error::api(
            ErrorCode::InvalidField,
            "client_id: use 1 to 128 characters from A-Z, a-z, 0-9, '_', '.', ':' and '-'",
        ));
    }
    // The generation before the lookup, as this node knows it (never newer than it is): a parent
    // that caches the answer must not take it for newer than it is. Read from memory, so a
    // cached lookup touches no database.
    let generation = state.gateway.own_generation();
    let lookup = state.gateway.lowest_zone(&caller.context(), &client_id).await?;
    let headers = answer_headers(generation, None);
    let message = match lookup.answer {
        Some(zone) => return Ok((headers, axum::Json(zone)).into_response()),
        None if lookup.unreachable.is_empty() => {
            format!("client {client_id} is not managed here: no instance of it in zone {} or below", state.zone.name)
        }
        None => format!(
            "client {client_id} is not managed by zone {} or the zones below it that answered; {} did not",
            state.zone.name,
            lookup.unreachable.join(", ")
        ),
    };
    // A 404 with the generation too: "not managed" is an answer a parent caches.
    let body = api::ErrorBody::new(ErrorCode::NotFound, message);
    Ok((StatusCode::NOT_FOUND, headers, axum::Json(body)).into_response())
}
