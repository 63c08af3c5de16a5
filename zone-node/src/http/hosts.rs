//! Hosts, their enrollment and reports, this zone's aggregate and placement dry runs.
//!
//! - `POST /v1/hosts`, `GET /v1/hosts` (this zone and its subtree), `GET/DELETE /v1/hosts/{id}`
//!   (this zone's own; admin)
//! - `POST /v1/hosts/enrollment-tokens` (admin) and `POST /v1/hosts/enroll` (no bearer token: the
//!   enrollment token is the credential): agents register without an operator account and get a
//!   credential of their own host
//! - `PUT /v1/hosts/{id}` and `POST /v1/hosts/{id}/report` (admin, or that host's credential; what
//!   agents call): a report goes over the bus to the host's owner
//! - `GET /v1/capabilities`: this zone's aggregate, merged with its children's (any caller)
//! - `POST /v1/placements`: where requirements would land in this zone's subtree, creating nothing

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};

use api::agent::HostReport;
use api::{
    Aggregate, EnrollmentToken, EnrollmentTokenCreate, ErrorCode, Host, HostEnroll, HostEnrolled, HostList,
    HostRegister, HostUpdate, Placement,
};

use crate::cluster::call_owner;
use crate::cluster::membership::Admission;
use crate::error::Error;
use crate::http::auth::{Admin, Caller};
use crate::http::error::{ApiResult, Json};
use crate::http::input;
use crate::http::AppState;
use crate::scheduler::{parse_capabilities, validate_agent_token, validate_agent_url, validate_host};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/hosts", get(list_hosts).post(register_host))
        .route("/v1/hosts/enrollment-tokens", post(create_enrollment_token))
        .route("/v1/hosts/{id}", get(show_host).put(update_host).delete(delete_host))
        .route("/v1/hosts/{id}/report", post(report))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/placements", post(placement))
}

/// The route without a bearer token: an agent registers its host with an enrollment token.
pub fn enroll_router() -> Router<AppState> {
    Router::new().route("/v1/hosts/enroll", post(enroll))
}

/// Make an enrollment token (admin): agents register their hosts with it (`POST
/// /v1/hosts/enroll`) and each gets a credential of its own host, so no agent holds an operator
/// account. The token is shown this once.
#[utoipa::path(post, path = "/v1/hosts/enrollment-tokens", tag = "hosts", request_body = EnrollmentTokenCreate,
    responses((status = 201, body = EnrollmentToken), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_enrollment_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Json(req): Json<EnrollmentTokenCreate>,
) -> ApiResult<(StatusCode, axum::Json<EnrollmentToken>)> {
    let secs = req.expires_in_secs.unwrap_or(3600);
    if !(60..=30 * 86_400).contains(&secs) {
        return Err(Error::api(ErrorCode::InvalidField, "expires_in_secs: between 60 and 2592000 (30 days)"));
    }
    let max_uses = req.max_uses.unwrap_or(1);
    if !(1..=1_000_000).contains(&max_uses) {
        return Err(Error::api(ErrorCode::InvalidField, "max_uses: between 1 and 1000000"));
    }
    let id = uuid::Uuid::new_v4();
    let token = crate::auth::new_token();
    let hash = crate::auth::token_hash(&token);
    let expires_at_ms =
        state.store.enrollment_token_create(id, &hash, max_uses, (secs * 1000) as i64, &caller.account).await?;
    tracing::info!(id = %id, max_uses, expires_in_secs = secs, account = %caller.account, caller = %caller.username,
        "enrollment token made");
    let body =
        EnrollmentToken { id: id.to_string(), token, expires_at: crate::time::rfc3339_ms(expires_at_ms), max_uses };
    Ok((StatusCode::CREATED, axum::Json(body)))
}

/// Register a host with an enrollment token (no bearer token): the answer holds the host and its
/// agent's credential, which from then on allows that host's report and update and nothing else.
#[utoipa::path(post, path = "/v1/hosts/enroll", tag = "hosts", request_body = HostEnroll,
    responses((status = 201, body = HostEnrolled), (status = 400, body = api::ErrorBody), (status = 401, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)))]
pub async fn enroll(
    State(state): State<AppState>,
    Json(req): Json<HostEnroll>,
) -> ApiResult<(StatusCode, axum::Json<HostEnrolled>)> {
    let refused = || {
        Error::api(
            ErrorCode::InvalidToken,
            "the enrollment token is not valid here (unknown, expired or used up); ask the zone's operator for a new one",
        )
    };
    if req.enrollment_token.is_empty() || req.enrollment_token.len() > 256 {
        return Err(refused());
    }
    // Checked before a use of the token is taken: bad input costs the operator nothing.
    let mut new = validate_host(&req.registration())?;
    seal_agent_token(&state, &mut new)?;
    let credential = crate::auth::new_token();
    new.credential_hash = Some(crate::auth::token_hash(&credential));
    let Some(token_id) = state.store.enrollment_token_take(&crate::auth::token_hash(&req.enrollment_token)).await?
    else {
        return Err(refused());
    };
    match state.store.host_create(&new).await {
        Ok(row) => {
            tracing::info!(host = %row.id, name = %row.name, enrollment_token = %token_id, "host enrolled");
            Ok((StatusCode::CREATED, axum::Json(HostEnrolled { host: row.to_api(), credential })))
        }
        Err(e) => {
            // Nothing was registered: the use goes back.
            if let Err(back) = state.store.enrollment_token_give_back(token_id).await {
                tracing::warn!(enrollment_token = %token_id, error = %back, "cannot give an enrollment token's use back");
            }
            Err(e.into())
        }
    }
}

/// Replaces a new host's agent token by its sealed form (`agent::token`).
fn seal_agent_token(state: &AppState, new: &mut crate::store::NewHost) -> ApiResult<()> {
    if let Some(token) = new.agent_token.take() {
        let sealed = crate::agent::token::seal(&state.secrets, state.store.backend(), new.id, &token)
            .map_err(|e| Error::Internal(format!("cannot seal an agent token: {e}")))?;
        new.agent_token = Some(sealed);
    }
    Ok(())
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
    let mut new = validate_host(&req)?;
    seal_agent_token(&state, &mut new)?;
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
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000), ("marker" = Option<String>, Query, format = Uuid)),
    responses((status = 200, body = HostList,
        headers(("x-next-marker" = String, description = "the body's next_marker, before the body; absent on the last page")))),
    security(("bearer" = [])))]
pub async fn list_hosts(
    State(state): State<AppState>,
    Admin(caller): Admin,
    query: Result<axum::extract::Query<HostListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::response::Response> {
    let axum::extract::Query(q) = query.map_err(|e| Error::api(ErrorCode::InvalidField, e.body_text()))?;
    let limit = match q.limit {
        None => HOST_PAGE_DEFAULT,
        Some(_) => input::limit(q.limit)? as usize,
    };
    let query = federation::ListQuery { client_id: None, limit, marker: input::marker(q.marker)? };
    let list = state.gateway.hosts(&caller.context(), &query).await?;
    let next_marker = list.next_marker.clone();
    Ok(super::with_next_marker(axum::response::IntoResponse::into_response(axum::Json(list)), next_marker.as_deref()))
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
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<HostUpdate>,
) -> ApiResult<axum::Json<Host>> {
    let uuid = input::uuid("host", &id)?;
    caller.may_act_for_host(uuid)?;
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
    let agent_token = req
        .agent_token
        .as_deref()
        .map(|t| crate::agent::token::seal(&state.secrets, state.store.backend(), uuid, t))
        .transpose()
        .map_err(|e| Error::Internal(format!("cannot seal an agent token: {e}")))?;
    if (req.agent_url.is_some() || agent_token.is_some())
        && !state.store.host_set_agent(uuid, req.agent_url.as_deref(), agent_token.as_deref()).await?
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
    // Its agent's credential (if enrolled) stops working here at once.
    state.host_credentials.invalidate_all();
    tracing::info!(host = %id, account = %caller.account, caller = %caller.username, "host deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A host's periodic presence report, with its capabilities when they changed (admin: agents
/// report with operator credentials). Handled by the host's ring owner.
#[utoipa::path(post, path = "/v1/hosts/{id}/report", tag = "hosts", params(("id" = String, Path)), request_body = HostReport,
    responses((status = 204), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<HostReport>,
) -> ApiResult<StatusCode> {
    let uuid = input::uuid("host", &id)?;
    caller.may_act_for_host(uuid)?;
    if let Some(caps) = &req.capabilities {
        parse_capabilities(caps)?;
    }
    let key = uuid.to_string();
    // A steady report that reaches its owner within the hold is only noted (`Presence`): answer
    // it here, without the bus hop to the host service, which would do just the same.
    if req.capabilities.is_none() && state.cluster.admit(&key) == Admission::Run && state.presence.hold_back(uuid) {
        return Ok(StatusCode::NO_CONTENT);
    }
    call_owner(&state.cluster, &state.bus, &key, &req, state.config.call_timeout()).await?;
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
