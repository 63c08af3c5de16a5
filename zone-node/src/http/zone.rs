//! This zone: `GET /v1/zone`, and the admin diagnostics of its ring (`POST /v1/zone/owners`,
//! `POST /v1/zone/probe/{resource_id}`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Router};

use api::{ErrorCode, NodeInfo, OwnersRequest, OwnersResponse, ProbeRequest, ProbeResponse, ZoneInfo};

use crate::cluster::call_owner;
use crate::error::Error;
use crate::http::auth::{Admin, Caller};
use crate::http::error::{ApiResult, Json};
use crate::http::AppState;
use crate::services::probe::MAX_HOLD_MS;

/// The most resource ids one owners request may ask about.
const MAX_OWNER_QUERIES: usize = 100_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zone", get(get_zone))
        .route("/v1/zone/owners", post(owners))
        .route("/v1/zone/probe/{resource_id}", post(probe))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneParams {
    /// Also list every zone below this one: `true` as last polled (what parents poll), `live`
    /// asked afresh (what zone-add checks loops against).
    #[serde(default)]
    subtree: Option<api::SubtreeView>,
}

/// This zone: identity, management nodes, aggregate, children and generation.
#[utoipa::path(get, path = "/v1/zone", tag = "zone", params(("subtree" = Option<String>, Query, description = "true (as polled) or live")),
    responses((status = 200, body = ZoneInfo)), security(("bearer" = [])))]
pub async fn get_zone(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Result<axum::extract::Query<ZoneParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<ZoneInfo>> {
    let axum::extract::Query(params) = params.map_err(|e| Error::api(ErrorCode::InvalidField, e.body_text()))?;
    let membership = state.store.membership().await?;
    let nodes = membership
        .nodes
        .into_iter()
        .map(|n| NodeInfo {
            id: n.id.to_string(),
            state: n.state,
            api_url: n.api_url,
            last_heartbeat: crate::time::rfc3339_ms(n.heartbeat_ms),
            joined_at: crate::time::rfc3339_ms(n.joined_at_ms),
        })
        .collect();
    Ok(axum::Json(ZoneInfo {
        id: state.zone.id.to_string(),
        name: state.zone.name.clone(),
        api_url: state.config.api_url().to_owned(),
        node_id: state.cluster.me().to_string(),
        nodes,
        capabilities: state.gateway.aggregate().await?,
        children: state.gateway.children_summary(),
        generation: state.store.generation().await?,
        ring_epoch: membership.epoch,
        subtree: match params.subtree {
            None => None,
            Some(api::SubtreeView::Cached) => Some(state.gateway.subtree()),
            Some(api::SubtreeView::Live) => Some(state.gateway.live_subtree(&caller.context()).await),
        },
    }))
}

/// Which node owns each resource id, on this node's ring (admin).
#[utoipa::path(post, path = "/v1/zone/owners", tag = "zone", request_body = OwnersRequest,
    responses((status = 200, body = OwnersResponse), (status = 400, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn owners(
    State(state): State<AppState>,
    _: Admin,
    Json(req): Json<OwnersRequest>,
) -> ApiResult<axum::Json<OwnersResponse>> {
    if req.resources.len() > MAX_OWNER_QUERIES {
        return Err(Error::api(ErrorCode::InvalidField, format!("resources: at most {MAX_OWNER_QUERIES} per request")));
    }
    let view = state.cluster.view();
    let owners = req.resources.iter().map(|r| view.route.owner(r).map(|n| n.to_string()).unwrap_or_default()).collect();
    Ok(axum::Json(OwnersResponse { node_id: state.cluster.me().to_string(), ring_epoch: view.epoch, owners }))
}

/// Run a probe task on the resource's ring owner (admin, diagnostic).
#[utoipa::path(post, path = "/v1/zone/probe/{resource_id}", tag = "zone", request_body = ProbeRequest,
    params(("resource_id" = String, Path)),
    responses((status = 200, body = ProbeResponse), (status = 503, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn probe(
    State(state): State<AppState>,
    _: Admin,
    Path(resource_id): Path<String>,
    Json(req): Json<ProbeRequest>,
) -> ApiResult<axum::Json<ProbeResponse>> {
    if resource_id.is_empty() || resource_id.len() > 128 {
        return Err(Error::api(ErrorCode::InvalidField, "resource_id: 1 to 128 characters"));
    }
    if req.hold_ms > MAX_HOLD_MS {
        return Err(Error::api(ErrorCode::InvalidField, format!("hold_ms: at most {MAX_HOLD_MS}")));
    }
    let timeout = state.config.call_timeout().max(Duration::from_millis(req.hold_ms) + Duration::from_secs(5));
    let response = call_owner(&state.cluster, &state.bus, &resource_id, &req, timeout).await?;
    Ok(axum::Json(response))
}
