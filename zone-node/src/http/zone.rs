//! This zone: `GET /v1/zone` (conditional: `ETag` / `If-None-Match`), the watch parents hold on
//! it (`GET /v1/zone/watch`), and the admin diagnostics of its ring (`POST /v1/zone/owners`,
//! `POST /v1/zone/probe/{resource_id}`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use api::federation::{WATCH_DEFAULT_TIMEOUT_MS, WATCH_MAX_TIMEOUT_MS};
use api::{
    Aggregate, ChildSummary, ErrorCode, NodeInfo, OwnersRequest, OwnersResponse, ProbeRequest, ProbeResponse,
    SubtreeEntry, ZoneInfo, ZoneWatch,
};

use crate::cluster::call_owner;
use crate::error::Error;
use crate::http::auth::{Admin, AdminOrParent, Caller};
use crate::http::error::{ApiResult, Json};
use crate::http::AppState;
use crate::services::probe::MAX_HOLD_MS;

/// The most resource ids one owners request may ask about.
const MAX_OWNER_QUERIES: usize = 100_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zone", get(get_zone))
        .route("/v1/zone/watch", get(watch_zone))
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

/// What a parent reads of this zone, and so what its `ETag` covers: everything a poll records
/// (generation, aggregates, children, subtree), not the nodes' heartbeats, which move every
/// second without changing anything a parent keeps.
struct ParentView {
    generation: i64,
    own: Aggregate,
    capabilities: Aggregate,
    children: Vec<ChildSummary>,
    subtree: Option<Vec<SubtreeEntry>>,
}

impl ParentView {
    async fn read(state: &AppState, caller: &Caller, view: Option<api::SubtreeView>) -> ApiResult<ParentView> {
        // The generation first: an answer is never newer than the generation it reports.
        let generation = state.store.generation().await?;
        let (own, capabilities) = state.gateway.with_children(state.store.aggregate_at(generation).await?);
        let subtree = match view {
            None => None,
            Some(api::SubtreeView::Cached) => Some(state.gateway.subtree()),
            Some(api::SubtreeView::Live) => Some(state.gateway.live_subtree(&caller.context()).await),
        };
        Ok(ParentView { generation, own, capabilities, children: state.gateway.children_summary(), subtree })
    }

    /// The weak `ETag` of this view ([`federation::etag::weak`]).
    fn etag(&self, zone_id: &str, view: Option<api::SubtreeView>) -> String {
        federation::etag::weak(&federation::etag::ViewParts {
            zone_id,
            view,
            generation: self.generation,
            own: &self.own,
            capabilities: &self.capabilities,
            children: &self.children,
            subtree: self.subtree.as_deref(),
        })
    }
}

/// True when `If-None-Match` names `etag` (or is `*`).
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    let Some(value) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else { return false };
    // Weak comparison (RFC 9110 §8.8.3.2): W/ prefixes do not count.
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    value.split(',').any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

/// This zone: identity, management nodes, aggregate, children and generation. Answers an
/// `ETag` over what a parent records of it; with `If-None-Match` naming it, `304` and no body
/// (what parents' polls send, so an unchanged child costs a few bytes and no database write).
#[utoipa::path(get, path = "/v1/zone", tag = "zone", params(("subtree" = Option<String>, Query, pattern = "^(true|cached|live)$", description = "true (as polled) or live"),
        ("If-None-Match" = Option<String>, Header, description = "an ETag of an earlier answer: 304 when it still holds")),
    responses((status = 200, body = ZoneInfo, headers(("ETag" = String))), (status = 304, description = "unchanged since the ETag given"),
        (status = 403, body = api::ErrorBody, description = "subtree=live by a member")),
    security(("bearer" = [])))]
pub async fn get_zone(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    params: Result<axum::extract::Query<ZoneParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let axum::extract::Query(params) = params.map_err(|e| Error::api(ErrorCode::InvalidField, e.body_text()))?;
    // A live subtree asks every zone below this one: not something any member may set off. A
    // parent zone asks it once, when it adds this zone.
    if params.subtree == Some(api::SubtreeView::Live) && caller.role == api::Role::Member {
        return Err(Error::api(
            ErrorCode::Forbidden,
            "subtree=live needs the admin or parent role; subtree=true answers from the last polls",
        ));
    }
    let zone_id = state.zone.id.to_string();
    let view = ParentView::read(&state, &caller, params.subtree).await?;
    let etag = view.etag(&zone_id, params.subtree);
    let etag_header = HeaderValue::from_str(&etag).map_err(|e| Error::internal(format!("etag header: {e}")))?;
    if matches_etag(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    let membership = state.store.membership().await?;
    // The management nodes and their URLs are the operators' business: a member uses the zone's
    // API URL (or the lowest zone's, which login names) and gets no list of internal addresses.
    let nodes = membership
        .nodes
        .into_iter()
        .filter(|_| caller.role == api::Role::Admin)
        .map(|n| NodeInfo {
            id: n.id.to_string(),
            state: n.state,
            api_url: n.api_url,
            last_heartbeat: crate::time::rfc3339_ms(n.heartbeat_ms),
            joined_at: crate::time::rfc3339_ms(n.joined_at_ms),
        })
        .collect();
    let info = ZoneInfo {
        id: zone_id,
        name: state.zone.name.clone(),
        api_url: state.config.api_url().to_owned(),
        node_id: state.cluster.me().to_string(),
        nodes,
        capabilities: view.capabilities,
        own_capabilities: Some(view.own),
        children: view.children,
        generation: view.generation,
        ring_epoch: membership.epoch,
        subtree: view.subtree,
    };
    Ok(([(header::ETAG, etag_header)], axum::Json(info)).into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchParams {
    /// The generation the caller knows: the watch answers once the zone's is above it.
    since: i64,
    /// How long to wait for a change, in milliseconds (default 25 000, at most 30 000).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Waits for this zone's next change (admin or parent; what parents hold on each child): answers as soon
/// as the generation is above `since`, else after `timeout_ms` with `changed: false`. Waiting
/// reads nothing: it wakes on this node's own changes and on its peers' `zone.generation_changed`
/// events. Cost: two reads of the generation and, on answering, one of the aggregates.
#[utoipa::path(get, path = "/v1/zone/watch", tag = "zone",
    params(("since" = i64, Query, description = "the generation the caller knows"),
        ("timeout_ms" = Option<u64>, Query, minimum = 0, description = "how long to wait; default 25000, at most 30000 (more waits 30000)")),
    responses((status = 200, body = ZoneWatch), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn watch_zone(
    State(state): State<AppState>,
    AdminOrParent(caller): AdminOrParent,
    params: Result<axum::extract::Query<WatchParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<ZoneWatch>> {
    let axum::extract::Query(params) = params.map_err(|e| Error::api(ErrorCode::InvalidField, e.body_text()))?;
    // Answered before the node's request timeout cuts it off (a 504 would read as a failure).
    let wait = Duration::from_millis(
        params
            .timeout_ms
            .unwrap_or(WATCH_DEFAULT_TIMEOUT_MS)
            .min(WATCH_MAX_TIMEOUT_MS)
            .min(state.config.http.request_timeout_ms.saturating_sub(1000)),
    );
    let generation = &state.sync.generation;
    // Subscribe before reading, so a change committed in between still wakes this watch.
    let mut moves = generation.subscribe();
    generation.saw(state.store.generation().await?);
    if *moves.borrow_and_update() <= params.since {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = generation.closed() => break,
                changed = moves.changed() => {
                    if changed.is_err() || *moves.borrow_and_update() > params.since {
                        break;
                    }
                }
            }
        }
    }
    if *moves.borrow() > params.since {
        // The generation moves in the transaction that records a child's poll, and this node's
        // registry (what the aggregate below is merged from) follows on an event a moment later:
        // read the rows now, or the parent would record the new generation with the old
        // aggregate and learn the rest only at its next poll.
        if let Err(e) = state.sync.refresh().await {
            tracing::warn!(error = %e, "cannot refresh the child zones for a watch");
        }
    }
    let view = ParentView::read(&state, &caller, Some(api::SubtreeView::Cached)).await?;
    let zone_id = state.zone.id.to_string();
    let digest = view.etag(&zone_id, Some(api::SubtreeView::Cached));
    Ok(axum::Json(ZoneWatch {
        id: zone_id,
        generation: view.generation,
        changed: view.generation > params.since,
        digest,
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
    params(("resource_id" = String, Path, min_length = 1, max_length = 128)),
    responses((status = 200, body = ProbeResponse), (status = 503, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn probe(
    State(state): State<AppState>,
    _: Admin,
    Path(resource_id): Path<String>,
    Json(req): Json<ProbeRequest>,
) -> ApiResult<axum::Json<ProbeResponse>> {
    if resource_id.is_empty() || resource_id.chars().count() > 128 {
        return Err(Error::api(ErrorCode::InvalidField, "resource_id: 1 to 128 characters"));
    }
    if req.hold_ms > MAX_HOLD_MS {
        return Err(Error::api(ErrorCode::InvalidField, format!("hold_ms: at most {MAX_HOLD_MS}")));
    }
    let timeout = state.config.call_timeout().max(Duration::from_millis(req.hold_ms) + Duration::from_secs(5));
    let response = call_owner(&state.cluster, &state.bus, &resource_id, &req, timeout).await?;
    Ok(axum::Json(response))
}
