//! The child-zone registry (admin only): `POST /v1/zones` (zone-add), `GET /v1/zones[/detail]`
//! (zone-list), `GET /v1/zones/{id}[/detail]` (zone-details), `PUT /v1/zones/{id}`
//! (zone-update), `DELETE /v1/zones/{id}` (zone-delete).
//!
//! Zone-add logs in to the child with the given credentials and reads it before anything is
//! written, so a wrong URL, wrong credentials, a non-admin account or a child whose subtree holds
//! this zone (a loop) are refused with a 4xx that says which, and nothing is stored. The password
//! is stored sealed ([`crate::secrets`]) and never returned or logged. Every node of the zone
//! sees a change at once (it is announced on the bus) or within one poll interval.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use uuid::Uuid;

use api::{ChildZone, ErrorCode, ZoneCreate, ZoneList, ZoneUpdate};
use federation::Credentials;

use crate::error::Error;
use crate::http::auth::Admin;
use crate::http::error::{ApiResult, Json};
use crate::http::AppState;
use crate::store::{ChildSnapshot, ChildZoneEdit, ChildZoneRow, NewChildZone};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones", get(list_zones).post(add_zone))
        .route("/v1/zones/detail", get(list_zones_detail))
        .route("/v1/zones/{id}", get(show_zone).put(update_zone).delete(delete_zone))
        .route("/v1/zones/{id}/detail", get(show_zone_detail))
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> Error {
    Error::api(ErrorCode::InvalidField, format!("{field}: {problem}"))
}

/// Zone names: what `ZONE_NAME` allows.
fn check_name(name: &str) -> ApiResult<()> {
    let ok =
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid("name", "use 1 to 63 characters from A-Z, a-z, 0-9, '-' and '_'"))
    }
}

/// A child's API root: http(s), a host, no credentials, query or fragment. Returned without a
/// trailing slash.
fn check_url(text: &str) -> ApiResult<String> {
    let url = reqwest::Url::parse(text).map_err(|e| invalid("api_url", format!("{text:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("api_url", format!("must be an http:// or https:// URL, not {}://", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("api_url", "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("api_url", "must not hold credentials; give username and password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("api_url", "must not have a query or fragment"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// Refuses plain HTTP to a child off loopback unless the operator said `insecure_http`: the
/// child's password and every forwarded request would cross the network in clear.
fn check_transport(api_url: &str, insecure_http: bool) -> ApiResult<()> {
    if api::federation::insecure_http(api_url) && !insecure_http {
        return Err(invalid(
            "api_url",
            "plain http:// to an address other than loopback sends the child's password in clear; \
             use https:// (ZONE_TLS_CERT_FILE on the child, ZONE_TLS_CA_FILE here for a private CA), \
             or set insecure_http: true",
        ));
    }
    Ok(())
}

fn check_username(name: &str) -> ApiResult<()> {
    if api::validate::valid_username(name) {
        Ok(())
    } else {
        Err(invalid("username", "use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '@' and '-'"))
    }
}

fn check_password(password: &str) -> ApiResult<()> {
    if password.is_empty() || password.chars().count() > 1024 {
        return Err(invalid("password", "must be 1 to 1024 characters"));
    }
    Ok(())
}

fn check_weights(offset: Option<f64>, scale: Option<f64>) -> ApiResult<()> {
    if offset.is_some_and(|o| !o.is_finite()) {
        return Err(invalid("weight_offset", "must be a finite number"));
    }
    if scale.is_some_and(|s| !s.is_finite() || s < 0.0) {
        return Err(invalid("weight_scale", "must be a finite number of at least 0"));
    }
    Ok(())
}

fn child_id(text: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::api(ErrorCode::NotFound, format!("child zone {text} not found")))
}

async fn row(state: &AppState, id: &str) -> ApiResult<ChildZoneRow> {
    let uuid = child_id(id)?;
    state
        .store
        .child_zone_get(uuid)
        .await?
        .ok_or_else(|| Error::api(ErrorCode::NotFound, format!("child zone {id} not found")))
}

/// Refuses to seal credentials other nodes of the zone could not open: on a shared database
/// (PostgreSQL, a zone of several nodes) every node needs the same key, which only configuration
/// can give them; a key a node generated in its own data directory is that node's alone.
fn check_shared_key(state: &AppState) -> ApiResult<()> {
    use crate::secrets::KeySource;
    let per_node = matches!(state.secrets.source(), KeySource::DataDir(_) | KeySource::Generated(_));
    if state.store.backend() == "postgres" && per_node {
        return Err(Error::api(
            ErrorCode::InvalidState,
            "this zone's nodes share a PostgreSQL database, so they need one secret key to open child zones' \
             credentials: set ZONE_SECRET_KEY or ZONE_SECRET_KEY_FILE to the same key on every node \
             (docs/operations.md, \"Secret key\"), then add the zone again",
        ));
    }
    Ok(())
}

fn sealing_failed(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("cannot seal a child zone's password: {e}"))
}

/// Register a child zone (zone-add).
#[utoipa::path(post, path = "/v1/zones", tag = "zones", request_body = ZoneCreate,
    responses((status = 201, body = ChildZone), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 502, body = api::ErrorBody, description = "zone_unreachable: no zone API answered at api_url")),
    security(("bearer" = [])))]
pub async fn add_zone(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Json(req): Json<ZoneCreate>,
) -> ApiResult<(StatusCode, axum::Json<ChildZone>)> {
    check_shared_key(&state)?;
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    let api_url = check_url(&req.api_url)?;
    check_transport(&api_url, req.insecure_http)?;
    check_username(&req.username)?;
    check_password(&req.password)?;
    check_weights(Some(req.weight_offset), Some(req.weight_scale))?;
    let credentials = Credentials::new(req.username.clone(), req.password.clone());
    let info = state.gateway.inspect(&caller.context(), &api_url, &credentials, None).await?;
    let id = Uuid::parse_str(&info.id)
        .map_err(|_| Error::api(ErrorCode::ZoneUnreachable, format!("the zone at {api_url} has an invalid id")))?;
    let name = req.name.clone().unwrap_or_else(|| info.name.clone());
    check_name(&name)?;
    let sealed = state.secrets.seal(id, &req.password).map_err(sealing_failed)?;
    let new = NewChildZone {
        id,
        name,
        api_url,
        username: req.username,
        password_sealed: sealed,
        weight_offset: req.weight_offset,
        weight_scale: req.weight_scale,
        disabled: req.disabled,
        // What the child answered now: it starts online and routable, not at its first poll.
        first_answer: Some(ChildSnapshot {
            capabilities: info.capabilities,
            own_capabilities: info.own_capabilities,
            generation: info.generation,
            subtree: info.subtree.unwrap_or_default(),
        }),
    };
    let row = state.store.child_zone_insert(&new).await?;
    tracing::info!(child = %row.name, id = %row.id, api_url = %row.api_url, account = %caller.account, caller = %caller.username, "child zone added");
    state.sync.changed().await;
    Ok((StatusCode::CREATED, axum::Json(row.to_api(true))))
}

async fn list(state: &AppState, detail: bool) -> ApiResult<axum::Json<ZoneList>> {
    let zones = state.store.child_zones().await?.iter().map(|r| r.to_api(detail)).collect();
    Ok(axum::Json(ZoneList { zones }))
}

/// List child zones (zone-list).
#[utoipa::path(get, path = "/v1/zones", tag = "zones", responses((status = 200, body = ZoneList)), security(("bearer" = [])))]
pub async fn list_zones(State(state): State<AppState>, _: Admin) -> ApiResult<axum::Json<ZoneList>> {
    list(&state, false).await
}

/// List child zones with their capabilities.
#[utoipa::path(get, path = "/v1/zones/detail", tag = "zones", responses((status = 200, body = ZoneList)), security(("bearer" = [])))]
pub async fn list_zones_detail(State(state): State<AppState>, _: Admin) -> ApiResult<axum::Json<ZoneList>> {
    list(&state, true).await
}

/// Show a child zone (zone-details).
#[utoipa::path(get, path = "/v1/zones/{id}", tag = "zones", params(("id" = String, Path)),
    responses((status = 200, body = ChildZone), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn show_zone(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ChildZone>> {
    Ok(axum::Json(row(&state, &id).await?.to_api(false)))
}

/// Show a child zone with its capabilities.
#[utoipa::path(get, path = "/v1/zones/{id}/detail", tag = "zones", params(("id" = String, Path)),
    responses((status = 200, body = ChildZone), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn show_zone_detail(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ChildZone>> {
    Ok(axum::Json(row(&state, &id).await?.to_api(true)))
}

/// Change a child zone (zone-update). New connection details are checked against the child first;
/// a new `api_url` needs the child's `password` in the same request (the stored one is never sent
/// to a new URL).
#[utoipa::path(put, path = "/v1/zones/{id}", tag = "zones", params(("id" = String, Path)), request_body = ZoneUpdate,
    responses((status = 200, body = ChildZone), (status = 400, body = api::ErrorBody), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 502, body = api::ErrorBody, description = "zone_unreachable: no zone API answered at api_url")),
    security(("bearer" = [])))]
pub async fn update_zone(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Json(req): Json<ZoneUpdate>,
) -> ApiResult<axum::Json<ChildZone>> {
    let current = row(&state, &id).await?;
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    let api_url = req.api_url.as_deref().map(check_url).transpose()?;
    if let Some(url) = &api_url {
        check_transport(url, req.insecure_http)?;
    }
    // The stored password is only ever sent to the URL it was given for: a new URL could be
    // anyone's listener, and the admin asking need not know the child's password.
    if api_url.as_ref().is_some_and(|u| *u != current.api_url) && req.password.is_none() {
        return Err(invalid(
            "password",
            "required when api_url changes: the stored password is never sent to a new URL; give the child's password again",
        ));
    }
    if let Some(u) = &req.username {
        check_username(u)?;
    }
    if let Some(p) = &req.password {
        check_password(p)?;
    }
    check_weights(req.weight_offset, req.weight_scale)?;
    let key = current.id.to_string();
    let mut password_sealed = None;
    if req.password.is_some() {
        check_shared_key(&state)?;
    }
    if api_url.is_some() || req.username.is_some() || req.password.is_some() {
        let password = match &req.password {
            Some(p) => p.clone(),
            None => state
                .secrets
                .open(current.id, &current.name, &current.password_sealed)
                .map(|p| p.expose().to_owned())
                .map_err(|e| {
                    Error::api(
                        ErrorCode::InvalidState,
                        format!(
                            "the stored password of child zone {} cannot be opened ({e}); give the password again",
                            current.name
                        ),
                    )
                })?,
        };
        let credentials = Credentials::new(req.username.clone().unwrap_or_else(|| current.username.clone()), password);
        let url = api_url.clone().unwrap_or_else(|| current.api_url.clone());
        state.gateway.inspect(&caller.context(), &url, &credentials, Some(&key)).await?;
        if let Some(p) = &req.password {
            password_sealed = Some(state.secrets.seal(current.id, p).map_err(sealing_failed)?);
        }
    }
    let edit = ChildZoneEdit {
        name: req.name,
        api_url,
        username: req.username,
        password_sealed,
        weight_offset: req.weight_offset,
        weight_scale: req.weight_scale,
        disabled: req.disabled,
    };
    let updated = state
        .store
        .child_zone_update(current.id, &edit)
        .await?
        .ok_or_else(|| Error::api(ErrorCode::NotFound, format!("child zone {id} not found")))?;
    tracing::info!(child = %updated.name, id = %updated.id, account = %caller.account, caller = %caller.username, "child zone updated");
    state.sync.changed().await;
    Ok(axum::Json(updated.to_api(true)))
}

/// Remove a child zone (zone-delete). Its instances stay where they are; this zone stops routing
/// to it, listing it and counting it in its aggregate.
#[utoipa::path(delete, path = "/v1/zones/{id}", tag = "zones", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn delete_zone(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let uuid = child_id(&id)?;
    if !state.store.child_zone_delete(uuid).await? {
        return Err(Error::api(ErrorCode::NotFound, format!("child zone {id} not found")));
    }
    tracing::info!(id = %id, account = %caller.account, caller = %caller.username, "child zone deleted");
    state.sync.changed().await;
    Ok(StatusCode::NO_CONTENT)
}
