//! Instances: `POST/GET /v1/instances`, `GET/DELETE /v1/instances/{id}`,
//! `POST /v1/instances/{id}/action`.
//!
//! Input is checked here, at the edge; then the zone's gateway ([`federation::Gateway`]) decides
//! where each call runs: this zone's own hosts (every change over the bus to the instance service
//! on the ring owner of the instance's id, whose serial queue orders all work on one instance), a
//! child zone that holds or can take the instance, or the whole subtree for lists. A zone without
//! children takes the short way to its own hosts.
//!
//! Scoping: a member sees and acts on its own client's instances only, at every zone; another
//! client's instance is `404`, exactly like one that does not exist, so ids reveal nothing.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use uuid::Uuid;

use api::federation::INSTANCE_ID_HEADER;
use api::{
    Creation, ErrorCode, Instance, InstanceAction, InstanceBatch, InstanceCreate, InstanceList, Role, MAX_CREATE_COUNT,
};
use federation::ListQuery;

use crate::error::Error;
use crate::http::auth::Caller;
use crate::http::error::{ApiResult, Json};
use crate::http::federated::answer_headers;
use crate::http::input;
use crate::http::AppState;
use crate::scheduler::valid_key;

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
            return Err(Error::api(
                ErrorCode::InvalidField,
                "client_id: use 1 to 128 characters from A-Z, a-z, 0-9, '_', '.', ':' and '-'",
            ));
        }
    }
    match caller.role {
        Role::Member => {
            let own = caller
                .client_id
                .clone()
                .ok_or_else(|| Error::api(ErrorCode::Forbidden, "this member account has no client"))?;
            match asked {
                Some(c) if c != own => Err(Error::api(ErrorCode::Forbidden, "members act for their own client only")),
                _ => Ok(Some(own)),
            }
        }
        Role::Parent => {
            let scope = caller.clients.clone().unwrap_or_default();
            match asked {
                Some(c) if !scope.matches(&c) => Err(Error::api(
                    ErrorCode::Forbidden,
                    format!("client {c:?} is not one of the clients this zone's parent account is limited to"),
                )),
                None if admin_must_name => Err(Error::api(
                    ErrorCode::InvalidField,
                    "client_id: required (the client that will own the instance)",
                )),
                asked => Ok(asked),
            }
        }
        Role::Admin => {
            if admin_must_name && asked.is_none() {
                return Err(Error::api(
                    ErrorCode::InvalidField,
                    "client_id: required (the client that will own the instance)",
                ));
            }
            Ok(asked)
        }
    }
}

/// The id of a new instance: the one a forwarding parent chose (so every zone on the way knows
/// it), or a new one. Only an admin account (as parents register with) may choose it.
fn new_instance_id(caller: &Caller, headers: &HeaderMap) -> ApiResult<String> {
    let Some(value) = headers.get(INSTANCE_ID_HEADER) else {
        return Ok(Uuid::new_v4().to_string());
    };
    if !caller.account_forwards {
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!("{INSTANCE_ID_HEADER}: only admin and parent accounts choose ids"),
        ));
    }
    let id = value
        .to_str()
        .ok()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .ok_or_else(|| Error::api(ErrorCode::InvalidField, format!("{INSTANCE_ID_HEADER}: not a UUID")))?;
    Ok(id.to_string())
}

fn valid_id(id: &str) -> ApiResult<()> {
    input::uuid("instance", id).map(|_| ())
}

/// `count` as the body gives it: a whole number from 1 to [`MAX_CREATE_COUNT`], 1 when absent.
fn create_count(body: &mut serde_json::Map<String, serde_json::Value>) -> ApiResult<u32> {
    let bad = |what: String| {
        Error::invalid_field("count", format!("use a whole number from 1 to {MAX_CREATE_COUNT}, not {what}"))
    };
    match body.remove("count") {
        None | Some(serde_json::Value::Null) => Ok(1),
        // `165.0` is the integer 165 to JSON Schema, as the document's `integer` says.
        Some(serde_json::Value::Number(n)) => {
            match n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as u64)) {
                Some(c) if (1..=u64::from(MAX_CREATE_COUNT)).contains(&c) => Ok(c as u32),
                _ => Err(bad(n.to_string())),
            }
        }
        Some(other) => Err(bad(other.to_string())),
    }
}

/// Create an instance: the scheduler picks a host (in this zone or below it) that meets the
/// requirements, the host's agent builds it. Answers when it is running (201) or failed.
///
/// With `count` above 1 (at most 1,000), a multi-create: the instances are named
/// `<name>-0001`, `<name>-0002`, …, placed all or nothing in one zone (`409 no_valid_host` and
/// nothing made when they do not all fit), built in parallel, and the answer is
/// `{"instances":[…]}` in name order, each as its build left it.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", request_body = api::InstanceCreate,
    responses((status = 201, body = api::Creation,
            description = "the instance, or with `count` above 1 `{\"instances\":[…]}`"),
        (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 502, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_instance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<(StatusCode, HeaderMap, axum::Json<Creation>)> {
    let mut body = input::object(body)?;
    let (requirements, _) = input::requirements(&mut body)?;
    let resources = input::resources(&mut body)?;
    let count = create_count(&mut body)?;
    let rest: CreateRest = input::rest(body)?;
    if !valid_key(&rest.name) {
        return Err(Error::api(
            ErrorCode::InvalidField,
            "name: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', ':' and '-'",
        ));
    }
    if count > 1 && !valid_key(&api::batch_member_name(&rest.name, count)) {
        return Err(Error::invalid_field(
            "name",
            format!(
                "at most 59 characters with count above 1: the instances are named {}-0001 to {}",
                rest.name,
                api::batch_member_name(&rest.name, count)
            ),
        ));
    }
    let client_id = client_for(&caller, rest.client_id, true)?;
    // One instance's id, or the batch's (from which the instances' ids derive).
    let id = new_instance_id(&caller, &headers)?;
    // A count of 1 is a single create, sent on without `count` exactly as before.
    let req =
        InstanceCreate { name: rest.name, client_id, requirements, resources, count: (count > 1).then_some(count) };
    let ctx = caller.context();
    let (value, generation, lowest) = if req.is_batch() {
        let routed = state.gateway.create_batch(&ctx, &id, &req).await?;
        (Creation::Batch(InstanceBatch { instances: routed.value }), routed.generation, routed.lowest)
    } else {
        let routed = state.gateway.create(&ctx, &id, &req).await?;
        (Creation::One(Box::new(routed.value)), routed.generation, routed.lowest)
    };
    let headers = answer_headers(generation, lowest.as_ref());
    Ok((StatusCode::CREATED, headers, axum::Json(value)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    client_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

/// List instances by id, a page at a time (`limit`, `marker`), across this zone and every zone
/// below it; members see their client's only.
#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    params(("client_id" = Option<String>, Query, pattern = "^[A-Za-z0-9_.:-]{1,128}$"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000),
        ("marker" = Option<String>, Query, format = Uuid)),
    responses((status = 200, body = InstanceList,
        headers(("x-next-marker" = String, description = "the body's next_marker, before the body; absent on the last page"))),
        (status = 400, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn list_instances(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| Error::api(ErrorCode::InvalidField, e.body_text()))?;
    let client_id = client_for(&caller, query.client_id, false)?;
    let limit = input::limit(query.limit)? as usize;
    let marker = input::marker(query.marker)?;
    let query = ListQuery { client_id, limit, marker };
    if state.gateway.registry().is_empty() {
        // A zone without children lists its own rows: as JSON written by the database, the
        // same objects the gateway would give (see `store::instance_json`), a parent's most
        // frequent question answered without decoding and encoding every row.
        return own_instances_json(&state, &caller.principal(), &query).await;
    }
    // Written by hand: each instance's text is copied as its child sent it, with this zone's
    // name put in front of its `zone_path` on the way (`api::RawInstanceList::to_json`).
    let list = state.gateway.instances(&caller.context(), &query).await?;
    Ok(page_answer(list.to_json(), list.next_marker.as_deref()))
}

/// A page of instances: its JSON body, its `next_marker` in a header too.
fn page_answer(body: String, next_marker: Option<&str>) -> Response {
    super::with_next_marker(
        ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        next_marker,
    )
}

/// This zone's own page of instances, as the body of an [`InstanceList`].
async fn own_instances_json(
    state: &AppState,
    caller: &federation::Principal,
    query: &ListQuery,
) -> ApiResult<Response> {
    let (client, scope) = crate::gateway::local::visible_clients(caller, query);
    let zone_id = state.zone.id.to_string();
    let zone = crate::store::PageZone { id: &zone_id, name: &state.zone.name };
    let page = state
        .store
        .instances_page_json(client, scope, query.marker.as_deref(), query.limit.max(1) as i64, &zone)
        .await?;
    let mut body = String::with_capacity(page.instances.len() + 80);
    body.push_str("{\"instances\":");
    body.push_str(&page.instances);
    body.push_str(",\"unreachable_zones\":[]");
    if let Some(marker) = &page.next_marker {
        // An instance id: a UUID, nothing to escape.
        body.push_str(&format!(",\"next_marker\":\"{marker}\""));
    }
    body.push('}');
    Ok(page_answer(body, page.next_marker.as_deref()))
}

/// Show an instance, wherever it is below this zone.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", params(("id" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn show_instance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Instance>> {
    valid_id(&id)?;
    Ok(axum::Json(state.gateway.instance(&caller.context(), &id).await?))
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
) -> ApiResult<(HeaderMap, axum::Json<Instance>)> {
    valid_id(&id)?;
    if action.host_id.is_some() && action.action != api::InstanceActionKind::Migrate {
        return Err(Error::api(ErrorCode::InvalidField, "host_id: only a migrate action takes a host"));
    }
    if action.host_id.is_some() && caller.role != Role::Admin {
        return Err(Error::api(ErrorCode::Forbidden, "host_id: only admins choose a migration's target host"));
    }
    let routed = state.gateway.action(&caller.context(), &id, &action).await?;
    Ok((answer_headers(routed.generation, routed.lowest.as_ref()), axum::Json(routed.value)))
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
) -> ApiResult<(StatusCode, HeaderMap)> {
    valid_id(&id)?;
    let routed = state.gateway.delete(&caller.context(), &id).await?;
    Ok((StatusCode::NO_CONTENT, answer_headers(routed.generation, routed.lowest.as_ref())))
}
