//! `POST /v1/agent/callbacks/{task_id}`: where agents post the results of their tasks.
//!
//! Outside bearer authentication (agents hold no account): the credential is the task's one-time
//! callback token in the `x-callback-token` header, checked by [`crate::agent::client::Agents`].

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use api::agent::{AgentResult, CALLBACK_TOKEN_HEADER};
use api::ErrorCode;

use crate::agent::client::CallbackRefused;
use crate::error::Error;
use crate::http::error::{ApiResult, Json};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/agent/callbacks/{task_id}", post(callback))
}

/// An agent's task result.
#[utoipa::path(post, path = "/v1/agent/callbacks/{task_id}", tag = "hosts", params(("task_id" = String, Path)),
    request_body = AgentResult,
    responses((status = 204), (status = 401, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub async fn callback(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    Json(result): Json<AgentResult>,
) -> ApiResult<StatusCode> {
    let token = headers.get(CALLBACK_TOKEN_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        Error::api(ErrorCode::MissingToken, format!("the {CALLBACK_TOKEN_HEADER} header is required"))
    })?;
    if result.task_id != task_id {
        return Err(Error::api(ErrorCode::InvalidField, "task_id: differs from the task in the URL"));
    }
    match state.agents.complete(&task_id, token, result) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(CallbackRefused::UnknownTask) => Err(Error::api(
            ErrorCode::NotFound,
            format!("task {task_id} is not waiting here (finished, timed out or unknown)"),
        )),
        Err(CallbackRefused::BadToken) => Err(Error::api(ErrorCode::InvalidToken, "wrong callback token")),
    }
}
