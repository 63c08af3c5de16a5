//! `GET /v1/clients/{client_id}/zone`: the lowest zone that manages all of a client's instances
//! (the seed's rule, answered from the gateway's cache when it can), so a client can go straight
//! to that zone's API. Members may ask about their own client only; any other is `404`, exactly
//! like a client no zone manages.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use api::{ErrorCode, LowestZone};

use crate::error::Error;
use crate::http::auth::Caller;
use crate::http::error::ApiResult;
use crate::http::federated::answer_headers;
use crate::http::AppState;

/// The route, as the router and the request metrics name it.
pub const ROUTE: &str = "/v1/clients/{client_id}/zone";

pub fn router() -> Router<AppState> {
    Router::new().route(ROUTE, get(lowest_zone))
}

/// How many clients' rendered answers a node keeps ([`Rendered`]): the hot set. A client beyond
/// it is answered from the gateway's cache of each source's answer, composed per request.
pub const RENDERED_ANSWERS: u64 = 100_000;

/// A lowest-zone answer as sent (status and JSON body), for as long as the gateway's
/// [`federation::Gateway::lookup_version`] it was composed at is current. A cached lookup is
/// then one map read instead of one cache read per source, the composition and the JSON
/// (docs/benchmarks.md, "A cached lookup sent as rendered").
pub struct Rendered {
    version: u64,
    status: StatusCode,
    body: Bytes,
}

impl Rendered {
    fn response(&self, generation: Option<i64>) -> Response {
        let json = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        (self.status, answer_headers(generation, None), json, self.body.clone()).into_response()
    }
}

/// Answers a lookup from its rendered answer before the router sees the request
/// (`http::server`), when nothing about it needs more: `GET` of this route for a valid client id,
/// a bearer token this node has verified before and no forwarded caller
/// ([`crate::http::auth::cached_caller`]), a caller who may see the client, a current rendered
/// answer and a node that reaches its database. It is the same answer [`lowest_zone`] sends;
/// skipping the router's layers, the token middleware's allocations and the handler's extractors
/// is what makes the cached lookup cheap (docs/benchmarks.md, "The cached lookup before the
/// router"). `None` sends the request through the router as usual.
pub fn answer_rendered<B>(state: &AppState, req: &axum::http::Request<B>) -> Option<Response> {
    if req.method() != axum::http::Method::GET {
        return None;
    }
    // A raw id that is valid needs no percent-decoding: '%' is not among its characters.
    let client_id = req.uri().path().strip_prefix("/v1/clients/")?.strip_suffix("/zone")?;
    if !api::validate::valid_client_id(client_id) || state.cluster.database_lost() {
        return None;
    }
    let caller = crate::http::auth::cached_caller(state, req.headers())?;
    // As in `lowest_zone`: the generation first, then the version, then the answer.
    let generation = state.gateway.own_generation();
    if !caller.may_see(client_id) {
        return None;
    }
    let version = state.gateway.lookup_version();
    let rendered = state.lookup_answers.get(client_id).filter(|r| r.version == version)?;
    Some(rendered.response(generation))
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
    // A caller who may not see the client gets "not managed" from the gateway, never a rendered
    // answer; the version is read before anything the answer is made of.
    let shared = caller.may_see(&client_id);
    let version = state.gateway.lookup_version();
    if shared {
        if let Some(r) = state.lookup_answers.get(&client_id).filter(|r| r.version == version) {
            return Ok(r.response(generation));
        }
    }
    let lookup = state.gateway.lowest_zone(&caller.context(), &client_id).await?;
    let (status, body) = match &lookup.answer {
        Some(zone) => (StatusCode::OK, serde_json::to_vec(zone)),
        None => {
            let message = if lookup.unreachable.is_empty() {
                format!(
                    "client {client_id} is not managed here: no instance of it in zone {} or below",
                    state.zone.name
                )
            } else {
                format!(
                    "client {client_id} is not managed by zone {} or the zones below it that answered; {} did not",
                    state.zone.name,
                    lookup.unreachable.join(", ")
                )
            };
            // A 404 with the generation too: "not managed" is an answer a parent caches.
            (StatusCode::NOT_FOUND, serde_json::to_vec(&api::ErrorBody::new(ErrorCode::NotFound, message)))
        }
    };
    let body = body.map_err(|e| Error::internal(format!("cannot encode a lowest-zone answer: {e}")))?;
    let rendered = Rendered { version, status, body: Bytes::from(body) };
    let response = rendered.response(generation);
    // An answer missing a child that could not be asked is not this zone's whole answer.
    if shared && lookup.unreachable.is_empty() {
        state.lookup_answers.insert(client_id, Arc::new(rendered));
    }
    Ok(response)
}
