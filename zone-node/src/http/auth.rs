//! Token issue (`POST /v1/auth/tokens`) and the bearer-token middleware in front of every other
//! `/v1` route.
//!
//! Tokens are opaque random strings; the database keeps only their SHA-256, so a database dump
//! gives no usable token. Verified tokens are cached for a couple of seconds per node (a deleted
//! account's token stops working on every node within that time; at once on the node that
//! deleted it).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use api::{ErrorCode, Role, TokenRequest, TokenResponse};

use crate::app::AppState;
use crate::http::error::{ApiError, ApiResult, Json};
use crate::store::TokenRow;

/// How long a verified token is trusted without asking the database again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

/// The authenticated caller of a request, put in the request's extensions by [`require_token`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
    pub role: Role,
    pub client_id: Option<String>,
}

impl Caller {
    pub fn require_admin(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Member => Err(ApiError::new(ErrorCode::Forbidden, "this needs the admin role")),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/auth/tokens", post(issue_token))
}

/// A hash to verify against when the username does not exist, so a wrong username takes as long
/// as a wrong password and does not reveal which accounts exist.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| crate::auth::hash_password("no such account, constant work"))
}

/// Issue a bearer token.
#[utoipa::path(post, path = "/v1/auth/tokens", tag = "auth", request_body = TokenRequest,
    responses((status = 201, body = TokenResponse), (status = 401, body = api::ErrorBody), (status = 400, body = api::ErrorBody)))]
pub async fn issue_token(State(state): State<AppState>, Json(req): Json<TokenRequest>) -> ApiResult<Response> {
    let invalid = || ApiError::new(ErrorCode::InvalidCredentials, "wrong username or password");
    if !api::validate::valid_username(&req.username) || req.password.len() > 1024 {
        return Err(invalid());
    }
    let account = state.store.account_get(&req.username).await?;
    let phc = account.as_ref().map(|a| a.password_hash.clone()).unwrap_or_else(|| dummy_hash().to_owned());
    let password = req.password;
    // argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || crate::auth::verify_password(&password, &phc))
        .await
        .map_err(|e| crate::error::Error::Internal(format!("password check panicked: {e}")))?;
    let Some(account) = account.filter(|_| ok) else { return Err(invalid()) };
    let role = Role::parse(&account.role)
        .ok_or_else(|| crate::error::Error::Internal(format!("account has unknown role {:?}", account.role)))?;
    let token = crate::auth::new_token();
    let ttl_ms = (state.config.http.token_ttl_secs * 1000) as i64;
    let expires_at_ms = state.store.token_insert(&crate::auth::token_hash(&token), &account.username, ttl_ms).await?;
    tracing::info!(username = %account.username, role = role.as_str(), "issued token");
    let body = TokenResponse {
        token,
        expires_at: crate::time::rfc3339_ms(expires_at_ms),
        roles: vec![role],
        client_id: account.client_id,
        api_url: state.config.api_url().to_owned(),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Rejects the request unless it carries a valid, unexpired bearer token; passes the
/// [`Caller`] on to the handler.
pub async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Only the header crosses the await: a request body is not `Sync`.
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
    match authenticate(&state, header).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authenticate(state: &AppState, header: Option<String>) -> ApiResult<Caller> {
    let Some(value) = header else {
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "send Authorization: Bearer <token>; get one from POST /v1/auth/tokens",
        ));
    };
    let token = Some(value.as_str())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "the Authorization header must be 'Bearer <token>'"))?;
    let hash = crate::auth::token_hash(token);
    let row: TokenRow = match state.tokens.get(&hash).await {
        Some(row) => row,
        None => {
            let row =
                state.store.token_lookup(&hash).await?.ok_or_else(|| {
                    ApiError::new(ErrorCode::InvalidToken, "the token is not valid here; log in again")
                })?;
            state.tokens.insert(hash, row.clone()).await;
            row
        }
    };
    if row.expired || row.expires_at_ms <= crate::time::local_now_ms() {
        return Err(ApiError::new(ErrorCode::TokenExpired, "the token has expired; log in again"));
    }
    let role = Role::parse(&row.role)
        .ok_or_else(|| crate::error::Error::Internal(format!("token of unknown role {:?}", row.role)))?;
    Ok(Caller { username: row.username, role, client_id: row.client_id })
}
