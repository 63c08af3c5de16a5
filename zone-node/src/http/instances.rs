//! Instances: `POST/GET /v1/instances`, `GET/DELETE /v1/instances/{id}`,
//! `POST /v1/instances/{id}/action`.
//!
//! Reads come straight from the database. Every change goes over the bus to the instance
//! service on the ring owner of the instance's id ([`crate::services::instance`]), whose serial
//! queue orders all work on one instance; this handler waits for the outcome. The id of a new
//! instance is chosen here, before routing, so the create already runs on its owner.
//!
//! Scoping: a member sees and acts on its own client's instances only; another client's
//! instance is `404`, exactly like one that does not exist, so ids reveal nothing.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use uuid::Uuid;

use api::{ErrorCode, Instance, InstanceAction, InstanceList, Role};

use crate::app::AppState;
use crate::bus::Message;
use crate::cluster::{destination, Route};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiResult, Json};
use crate::http::input;
use crate::scheduler::valid_key;
use crate::services::instance::{to_api, CreateTask};
use crate::store::InstanceRow;

/// Extra time an instance call may take beyond the agent's own deadline: queueing behind earlier
/// work on the same instance, placement, database writes.
const CALL_MARGIN: Duration = Duration::from_secs(15);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/instances", get(list_instances).post(create_instance))
        .route("/v1/instances/{id}", get(show_instance).delete(delete_instance))
        .route("/v1/instances/{id}/action", post(instance_action))
}

/// The fields of a create besides requirements and resources (parsed apart, see [`input`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRest {
    name: String,
    #[serde(default)]
    client_id: Option<String>,
}

/// The client a create or list acts for: a member's own (naming another is forbidden), or the
/// one an admin names.
fn client_for(caller: &Caller, asked: Option<String>, admin_must_name: bool) -> ApiResult<Option<String>> {
    if let Some(c) = &asked {
        if !api::validate::valid_client_id(c) {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "client_id: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', ':' and '-'",
            ));
        }
    }
    match caller.role {
        Role::Member => {
            let own = caller
                .client_id
                .clone()
                .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "this member account has no client"))?;
            match asked {
                Some(c) if c != own => {
                    Err(ApiError::new(ErrorCode::Forbidden, "members act for their own client only"))
                }
                _ => Ok(Some(own)),
            }
        }
        Role::Admin => {
            if admin_must_name && asked.is_none() {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    "client_id: required (the client that will own the instance)",
                ));
            }
            Ok(asked)
        }
    }
}

/// The instance if the caller may see it; `404` otherwise.
async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<InstanceRow> {
    let uuid = input::uuid("instance", id)?;
    let row = state.store.instance_get(uuid).await?;
    match row {
        Some(row) if caller.role == Role::Admin || caller.client_id.as_deref() == Some(row.client_id.as_str()) => {
            Ok(row)
        }
        _ => Err(crate::error::Error::not_found(format!("instance {id}")).into()),
    }
}

/// Sends `kind` about instance `id` to its owner's instance service and waits for the reply.
async fn call_owner(state: &AppState, kind: &str, id: Uuid, body: Vec<u8>) -> ApiResult<Vec<u8>> {
    let key = id.to_string();
    let to = destination(&state.cluster, crate::services::INSTANCE, Route::Resource(&key))
        .map_err(|e| ApiError::new(e.error.code, e.error.message))?;
    let timeout = state.config.agent_timeout() + CALL_MARGIN;
    let mut msg = Message::new(kind, body).with_resource(key);
    msg.deadline_ms = Some(crate::time::local_now_ms() + timeout.as_millis() as i64);
    Ok(state.bus.call(to, msg, timeout).await?)
}

fn decode_instance(bytes: &[u8]) -> ApiResult<Instance> {
    serde_json::from_slice(bytes).map_err(|e| crate::error::Error::Internal(format!("instance reply: {e}")).into())
}

/// Create an instance: the scheduler picks a host that meets the requirements, the host's agent
/// builds it. Answers when it is running (201) or failed.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", request_body = api::InstanceCreate,
    responses((status = 201, body = Instance), (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 502, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_instance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<(StatusCode, axum::Json<Instance>)> {
    let mut body = input::object(body)?;
    let (requirements, _) = input::requirements(&mut body)?;
    let resources = input::resources(&mut body)?;
    let rest: CreateRest = input::rest(body)?;
    if !valid_key(&rest.name) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "name: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', ':' and '-'",
        ));
    }
    let client_id =
        client_for(&caller, rest.client_id, true)?.expect("required above for admins, own client for members");
    let task = CreateTask { name: rest.name, client_id, requirements, resources };
    let id = Uuid::new_v4();
    let body = serde_json::to_vec(&task).map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    let reply = call_owner(&state, "instance.create", id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(decode_instance(&reply)?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    client_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

/// List instances by id, a page at a time (`limit`, `marker`); members see their client's only.
#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    params(("client_id" = Option<String>, Query), ("limit" = Option<i64>, Query), ("marker" = Option<String>, Query)),
    responses((status = 200, body = InstanceList), (status = 400, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn list_instances(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<InstanceList>> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::InvalidField, e.body_text()))?;
    let client = client_for(&caller, query.client_id, false)?;
    let limit = input::limit(query.limit)?;
    // One more than asked, to know whether there is a next page.
    let mut rows = state.store.instances_page(client.as_deref(), query.marker.as_deref(), limit + 1).await?;
    let next_marker = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let instances = rows.iter().map(|r| to_api(r, &state.zone)).collect();
    Ok(axum::Json(InstanceList { instances, unreachable_zones: Vec::new(), next_marker }))
}

/// Show an instance.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", params(("id" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn show_instance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Instance>> {
    let row = visible(&state, &caller, &id).await?;
    Ok(axum::Json(to_api(&row, &state.zone)))
}

/// Start, stop, reboot or migrate an instance. `409` with the current state when the action is
/// not allowed now.
#[utoipa::path(post, path = "/v1/instances/{id}/action", tag = "instances", params(("id" = String, Path)),
    request_body = InstanceAction,
    responses((status = 200, body = Instance), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 502, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn instance_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(action): Json<InstanceAction>,
) -> ApiResult<axum::Json<Instance>> {
    let row = visible(&state, &caller, &id).await?;
    if action.host_id.is_some() && action.action != api::InstanceActionKind::Migrate {
        return Err(ApiError::new(ErrorCode::InvalidField, "host_id: only a migrate action takes a host"));
    }
    if action.host_id.is_some() && caller.role != Role::Admin {
        return Err(ApiError::new(ErrorCode::Forbidden, "host_id: only admins choose a migration's target host"));
    }
    let body = serde_json::to_vec(&action).map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    let reply = call_owner(&state, "instance.action", row.id, body).await?;
    Ok(axum::Json(decode_instance(&reply)?))
}

/// Delete an instance (its host's agent destroys it; its capacity is given back).
#[utoipa::path(delete, path = "/v1/instances/{id}", tag = "instances", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 502, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_instance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let row = visible(&state, &caller, &id).await?;
    call_owner(&state, "instance.delete", row.id, b"{}".to_vec()).await?;
    Ok(StatusCode::NO_CONTENT)
}
