//! Accounts (admin only): `POST /v1/accounts`, `GET /v1/accounts`, `DELETE /v1/accounts/{username}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;

use api::{Account, AccountCreate, AccountList, ErrorCode, Role};

use crate::error::Error;
use crate::http::auth::Admin;
use crate::http::error::{ApiResult, Json};
use crate::http::AppState;
use crate::store::AccountRow;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", get(list_accounts).post(create_account))
        .route("/v1/accounts/{username}", delete(delete_account))
}

fn to_api(row: AccountRow) -> ApiResult<Account> {
    let role = Role::parse(&row.role)
        .ok_or_else(|| crate::error::Error::Internal(format!("account has unknown role {:?}", row.role)))?;
    Ok(Account {
        username: row.username,
        role,
        client_id: row.client_id,
        client_ids: row.client_ids.as_ref().map(api::ClientScope::to_strings),
        created_at: crate::time::rfc3339_ms(row.created_at_ms),
    })
}

/// Create an account.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = AccountCreate,
    responses((status = 201, body = Account), (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_account(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Json(req): Json<AccountCreate>,
) -> ApiResult<Response> {
    if !api::validate::valid_username(&req.username) {
        return Err(Error::api(
            ErrorCode::InvalidField,
            "username: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '@' and '-'",
        ));
    }
    if let Err(problem) = api::validate::check_password_policy(&req.password) {
        return Err(Error::api(ErrorCode::InvalidField, format!("password: {problem}")));
    }
    match (&req.role, &req.client_id) {
        (Role::Member, None) => return Err(Error::api(ErrorCode::InvalidField, "client_id: required for a member")),
        (Role::Admin | Role::Parent, Some(_)) => {
            return Err(Error::api(
                ErrorCode::InvalidField,
                "client_id: only for a member (a parent account is limited by client_ids)",
            ))
        }
        (_, Some(id)) if !api::validate::valid_client_id(id) => {
            return Err(Error::api(
                ErrorCode::InvalidField,
                "client_id: use 1 to 128 characters from A-Z, a-z, 0-9, '_', '.', ':' and '-'",
            ))
        }
        _ => {}
    }
    let client_ids = match (&req.role, &req.client_ids) {
        (Role::Parent, Some(patterns)) => Some(
            api::ClientScope::parse(patterns)
                .map_err(|problem| Error::api(ErrorCode::InvalidField, format!("client_ids: {problem}")))?,
        ),
        (Role::Parent, None) => {
            return Err(Error::api(
                ErrorCode::InvalidField,
                "client_ids: required for a parent account (client ids, or prefixes ending in '*')",
            ))
        }
        (_, Some(_)) => return Err(Error::api(ErrorCode::InvalidField, "client_ids: only for a parent account")),
        (_, None) => None,
    };
    let password = req.password;
    let password_hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await
        .map_err(|e| crate::error::Error::Internal(format!("password hashing panicked: {e}")))?;
    let row = AccountRow {
        username: req.username,
        password_hash,
        role: req.role.as_str().to_owned(),
        client_id: req.client_id,
        client_ids,
        created_at_ms: 0,
    };
    let created = state.store.account_create(&row).await?;
    tracing::info!(username = %created.username, role = %created.role, account = %caller.account, caller = %caller.username, "created account");
    Ok((StatusCode::CREATED, axum::Json(to_api(created)?)).into_response())
}

/// List accounts.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", responses((status = 200, body = AccountList)), security(("bearer" = [])))]
pub async fn list_accounts(State(state): State<AppState>, _: Admin) -> ApiResult<axum::Json<AccountList>> {
    let accounts = state.store.accounts().await?.into_iter().map(to_api).collect::<ApiResult<Vec<_>>>()?;
    Ok(axum::Json(AccountList { accounts }))
}

/// Delete an account and revoke its tokens.
#[utoipa::path(delete, path = "/v1/accounts/{username}", tag = "accounts",
    params(("username" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn delete_account(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(username): Path<String>,
) -> ApiResult<StatusCode> {
    // The verified account, not a caller a parent states: the guard keeps the zone's operator
    // from locking themselves out, and a stated name is only a claim.
    if username == caller.account {
        return Err(Error::api(ErrorCode::InvalidState, "you cannot delete the account you are logged in as"));
    }
    if !state.store.account_delete(&username).await? {
        return Err(Error::api(ErrorCode::NotFound, format!("account {username:?} not found")));
    }
    // Its tokens went with it: every node forgets the tokens it verified (see `TokensRevoked`).
    state.tokens.invalidate_all();
    crate::services::events::publish(&state.bus, &api::bus::TokensRevoked {}).await;
    tracing::info!(username = %username, account = %caller.account, caller = %caller.username, "deleted account");
    Ok(StatusCode::NO_CONTENT)
}
