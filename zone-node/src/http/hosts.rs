//! Hosts (admin only), their reports, this zone's aggregate and placement dry runs.
//!
//! - `POST /v1/hosts`, `GET /v1/hosts` (this zone and its subtree), `GET/PUT/DELETE /v1/hosts/{id}`
//!   (this zone's own; admin)
//! - `POST /v1/hosts/{id}/report` (admin; what agents call): goes over the bus to the host's owner
//! - `GET /v1/capabilities`: this zone's aggregate, merged with its children's (any caller)
//! - `POST /v1/placements`: where requirements would land in this zone's subtree, creating nothing

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};

use api::agent::HostReport;
use api::{Aggregate, ErrorCode, Host, HostList, HostRegister, HostUpdate, Placement};

use crate::cluster::call_owner;
use crate::error::Error;
use crate::http::auth::{Admin, Caller};
use crate::http::error::{ApiResult, Json};
use crate::http::input;
use crate::http::AppState;
use crate::scheduler::{parse_capabilities, validate_agent_token, validate_agent_url, validate_host};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/hosts", get(list_hosts).post(register_host))
        .route("/v1/hosts/{id}", get(show_host).put(update_host).delete(delete_host))
        .route("/v1/hosts/{id}/report", post(report))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/placements", post(placement))
}

/// Register a host (admin).
#[utoipa::path(post, path = "/v1/hosts", tag = "hosts", request_body = HostRegister,
    responses((status = 201, body = Host), (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn register_host(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Json(req): Json<HostRegister>,
) -> ApiResult<(StatusCode, axum::Json<Host>)> {
    let new = validate_host(&req)?;
    let row = state.store.host_create(&new).await?;
    tracing::info!(host = %row.id, name = %row.name, account = %caller.account, caller = %caller.username, "host registered");
    Ok((StatusCode::CREATED, axum::Json(row.to_api())))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostListParams {
    limit: Option<i64>,
    marker: Option<String>,
}

/// List hosts by id, a page at a time, across this zone and every zone below it (admin).
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts",
    params(("limit" = Option<i64>, Query), ("marker" = Option<String>, Query)),
    responses((status = 200, body = HostList)), security(("bearer" = [])))]
pub async fn list_hosts(
    State(state): State<AppState>,
    Admin(caller): Admin,
    query: Result<axum::extract::Query<HostListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<HostList>> {
    let axum::extract::Query(q) = query.map_err(|e| Error::api(ErrorCode::InvalidField, e.body_text()))?;
    let limit = match q.limit {
        None => HOST_PAGE_DEFAULT,
        Some(_) => input::limit(q.limit)? as usize,
    };
    let query = federation::ListQuery { client_id: None, limit, marker: input::marker(q.marker)? };
    Ok(axum::Json(state.gateway.hosts(&caller.context(), &query).await?))
}

/// Hosts per page when the caller does not say: every host of a zone of the seed's size (a
/// huddle holds about 200), so a plain `GET /v1/hosts` lists a whole zone.
const HOST_PAGE_DEFAULT: usize = 1000;

/// Show a host (admin).
#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn show_host(State(state): State<AppState>, _: Admin, Path(id): Path<String>) -> ApiResult<axum::Json<Host>> {
    let uuid = input::uuid("host", &id)?;
    let row = state.store.host_get(uuid).await?.ok_or_else(|| crate::error::Error::not_found(format!("host {id}")))?;
    Ok(axum::Json(row.to_api()))
}

/// Change a host's agent URL, agent token or capabilities (admin).
#[utoipa::path(put, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path)), request_body = HostUpdate,
    responses((status = 200, body = Host), (status = 400, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_host(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(req): Json<HostUpdate>,
) -> ApiResult<axum::Json<Host>> {
    let uuid = input::uuid("host", &id)?;
    // Validate everything before writing anything.
    if let Some(url) = &req.agent_url {
        validate_agent_url(url)?;
    }
    if let Some(token) = &req.agent_token {
        validate_agent_token(token)?;
    }
    let caps = req.capabilities.as_ref().map(parse_capabilities).transpose()?;
    let missing = || crate::error::Error::not_found(format!("host {id}"));
    if let Some(caps) = &caps {
        if !state.store.host_set_capabilities(uuid, caps).await? {
            return Err(missing());
        }
    }
    if (req.agent_url.is_some() || req.agent_token.is_some())
        && !state.store.host_set_agent(uuid, req.agent_url.as_deref(), req.agent_token.as_deref()).await?
    {
        return Err(missing());
    }
    let row = state.store.host_get(uuid).await?.ok_or_else(missing)?;
    Ok(axum::Json(row.to_api()))
}

/// Delete a host without instances (admin).
#[utoipa::path(delete, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_host(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let uuid = input::uuid("host", &id)?;
    if !state.store.host_delete(uuid).await? {
        return Err(Error::not_found(format!("host {id}")));
    }
    tracing::info!(host = %id, account = %caller.account, caller = %caller.username, "host deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A host's periodic presence report, with its capabilities when they changed (admin: agents
/// report with operator credentials). Handled by the host's ring owner.
#[utoipa::path(post, path = "/v1/hosts/{id}/report", tag = "hosts", params(("id" = String, Path)), request_body = HostReport,
    responses((status = 204), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(req): Json<HostReport>,
) -> ApiResult<StatusCode> {
    let uuid = input::uuid("host", &id)?;
    if let Some(caps) = &req.capabilities {
        parse_capabilities(caps)?;
    }
    call_owner(&state.cluster, &state.bus, &uuid.to_string(), &req, state.config.call_timeout()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This zone's aggregate of its up hosts' capabilities.
#[utoipa::path(get, path = "/v1/capabilities", tag = "zone", responses((status = 200, body = Object)), security(("bearer" = [])))]
pub async fn capabilities(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
) -> ApiResult<axum::Json<Aggregate>> {
    Ok(axum::Json(state.gateway.aggregate().await?))
}

/// Where requirements would land (zone path and host), creating nothing.
#[utoipa::path(post, path = "/v1/placements", tag = "instances", request_body = api::PlacementRequest,
    responses((status = 200, body = Placement), (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn placement(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<axum::Json<Placement>> {
    let mut body = input::object(body)?;
    let (requirements, _) = input::requirements(&mut body)?;
    let resources = input::resources(&mut body)?;
    if let Some(field) = body.keys().next() {
        return Err(Error::api(
            ErrorCode::InvalidBody,
            format!("unknown field `{field}`, expected `requirements` or `resources`"),
        ));
    }
    let req = api::PlacementRequest { requirements, resources };
    Ok(axum::Json(state.gateway.placement(&caller.context(), &req).await?))
}
