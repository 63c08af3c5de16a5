//! Token issue (`POST /v1/auth/tokens`) and the bearer-token middleware in front of every other
//! `/v1` route.
//!
//! Tokens are opaque random strings; the database keeps only their SHA-256, so a database dump
//! gives no usable token. Verified tokens are cached for a couple of seconds per node (a deleted
//! account's token stops working on every node within that time; at once on the node that
//! deleted it).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Extension, Router};

use api::{ErrorCode, Role, TokenRequest, TokenResponse};

use crate::error::Error;
use crate::http::error::{ApiResult, Json};
use crate::http::login_limit::Refused;
use crate::http::AppState;
use crate::store::TokenRow;

/// How long a verified token is trusted without asking the database again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

/// How long an enrolled host's credential is known without asking the database again. Deleting
/// the host forgets it at once on the node that deleted it; on the others a deleted host's
/// reports are refused as reports of an unknown host.
pub const HOST_CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(300);

/// The authenticated caller of a request, put in the request's extensions by [`require_token`].
///
/// For a request forwarded by a parent zone this is the caller the parent states, narrowed from
/// the parent's own (admin or parent) account ([`federation::identity::effective`]); `path` holds the zones
/// the request crossed before this one.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who the request acts for: the verified account, or the caller a parent states.
    pub username: String,
    /// The account whose token the request carried, verified here. Audit logs name it beside
    /// `username`, and guards about "yourself" use it: a stated caller is only a claim.
    pub account: String,
    pub role: Role,
    pub client_id: Option<String>,
    /// A parent's clients (role [`Role::Parent`]).
    pub clients: Option<api::ClientScope>,
    /// The verified account may forward for others: an admin or a parent account. Such a request
    /// may choose the id of the instance it creates (the forwarding zone chose it).
    pub account_forwards: bool,
    pub path: federation::ZonePath,
    /// Set when the request carries an enrolled host's credential instead of an account's token:
    /// it may report and update that host and nothing else ([`host_routes_only`]).
    pub host: Option<uuid::Uuid>,
}

/// An admin caller: the extractor of every admin-only handler, so the check is in the handler's
/// signature rather than a line each handler must remember. A member gets 403 `forbidden`.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Admin, Error> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Error::internal("an admin route without the token middleware"))?;
        match caller.role {
            Role::Admin => Ok(Admin(caller)),
            Role::Member | Role::Parent => Err(Error::api(ErrorCode::Forbidden, "this needs the admin role")),
        }
    }
}

/// An admin or a (limited) parent zone: the extractor of what a parent needs of its child beyond
/// client resources, such as the watch on the zone's changes. A member gets 403 `forbidden`.
#[derive(Debug, Clone)]
pub struct AdminOrParent(pub Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AdminOrParent {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<AdminOrParent, Error> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Error::internal("a parent route without the token middleware"))?;
        match caller.role {
            Role::Admin | Role::Parent => Ok(AdminOrParent(caller)),
            Role::Member => Err(Error::api(ErrorCode::Forbidden, "this needs the admin or parent role")),
        }
    }
}

impl Caller {
    /// Whether the caller may report and update host `id`: an admin, or that host's own agent.
    pub fn may_act_for_host(&self, id: uuid::Uuid) -> ApiResult<()> {
        if self.role == Role::Admin || self.host == Some(id) {
            Ok(())
        } else {
            Err(Error::api(ErrorCode::Forbidden, "this needs the admin role or that host's own credential"))
        }
    }

    /// Whether the caller may see and act on `client_id`'s resources ([`federation::Principal::may_see`]).
    pub fn may_see(&self, client_id: &str) -> bool {
        federation::identity::sees(self.role, self.client_id.as_deref(), self.clients.as_ref(), client_id)
    }

    /// Who the request acts for, as the gateway sees it.
    pub fn principal(&self) -> federation::Principal {
        federation::Principal {
            username: self.username.clone(),
            role: self.role,
            client_id: self.client_id.clone(),
            clients: self.clients.clone(),
        }
    }

    /// The request as the gateway serves it.
    pub fn context(&self) -> federation::RequestContext {
        federation::RequestContext { caller: self.principal(), path: self.path.clone() }
    }
}

/// The federation headers of a request, read before the body is touched.
struct Forwarded {
    path: Option<String>,
    role: Option<String>,
    client: Option<String>,
    user: Option<String>,
}

impl Forwarded {
    /// A request sent by its caller itself: no path crossed, nobody stated.
    fn none() -> Forwarded {
        Forwarded { path: None, role: None, client: None, user: None }
    }

    fn of(headers: &axum::http::HeaderMap) -> ApiResult<Forwarded> {
        let get = |name: &str| -> ApiResult<Option<String>> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.to_owned()))
                    .map_err(|_| Error::api(ErrorCode::InvalidField, format!("{name}: not visible ASCII"))),
            }
        };
        use api::federation::{CALLER_CLIENT_HEADER, CALLER_ROLE_HEADER, CALLER_USER_HEADER, ZONE_PATH_HEADER};
        Ok(Forwarded {
            path: get(ZONE_PATH_HEADER)?,
            role: get(CALLER_ROLE_HEADER)?,
            client: get(CALLER_CLIENT_HEADER)?,
            user: get(CALLER_USER_HEADER)?,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        use api::federation::{CALLER_CLIENT_HEADER, CALLER_ROLE_HEADER, CALLER_USER_HEADER};
        match name {
            CALLER_ROLE_HEADER => self.role.as_deref(),
            CALLER_CLIENT_HEADER => self.client.as_deref(),
            CALLER_USER_HEADER => self.user.as_deref(),
            _ => None,
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/auth/tokens", post(issue_token))
}

/// The routes that need a token of their own: `DELETE /v1/auth/tokens` (log out).
pub fn protected_router() -> Router<AppState> {
    Router::new().route("/v1/auth/tokens", delete(revoke_token))
}

/// Revoke the presented token (log out). Every node of the zone refuses it from then on: this
/// node at once, the others on the `auth.tokens_revoked` event (or, should it be lost, when their
/// 2 s token cache expires).
#[utoipa::path(delete, path = "/v1/auth/tokens", tag = "auth",
    responses((status = 204, description = "the token is revoked"), (status = 401, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> ApiResult<StatusCode> {
    // The middleware accepted this header, so it holds a bearer token.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or_else(|| Error::api(ErrorCode::InvalidToken, "the Authorization header must be 'Bearer <token>'"))?;
    let hash = crate::auth::token_hash(token);
    state.store.token_delete(&hash).await?;
    state.tokens.invalidate(&hash);
    crate::services::events::publish(&state.bus, &api::bus::TokensRevoked {}).await;
    tracing::info!(account = %caller.account, "revoked a token (logged out)");
    Ok(StatusCode::NO_CONTENT)
}

/// The token of an `Authorization` header's value, `Bearer <token>`.
fn bearer(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
}

/// A hash to verify against when the username does not exist, so a wrong username takes as long
/// as a wrong password and does not reveal which accounts exist.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| crate::auth::hash_password("no such account, constant work"))
}

/// Issue a bearer token.
#[utoipa::path(post, path = "/v1/auth/tokens", tag = "auth", request_body = TokenRequest,
    responses((status = 201, body = TokenResponse), (status = 401, body = api::ErrorBody), (status = 400, body = api::ErrorBody),
        (status = 429, body = api::ErrorBody, description = "too many logins at once, or too many failed logins for the username or from the address; see Retry-After")))]
pub async fn issue_token(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(req): Json<TokenRequest>,
) -> ApiResult<Response> {
    let invalid = || Error::api(ErrorCode::InvalidCredentials, "wrong username or password");
    let address = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    if !api::validate::valid_username(&req.username) || req.password.len() > 1024 {
        return Err(invalid());
    }
    // Bounded before anything else is done for the request: see `login_limit`.
    let permit = match state.logins.admit(&req.username, address) {
        Ok(permit) => permit,
        Err(refused) => return Ok(too_many_logins(refused)),
    };
    let account = state.store.account_get(&req.username).await?;
    let phc = account.as_ref().map(|a| a.password_hash.clone()).unwrap_or_else(|| dummy_hash().to_owned());
    let password = req.password;
    // argon2 is deliberately slow: keep it off the async workers. The permit lives as long as
    // the check, even if the caller goes away.
    let ok = tokio::task::spawn_blocking(move || {
        let ok = crate::auth::verify_password(&password, &phc);
        drop(permit);
        ok
    })
    .await
    .map_err(|e| crate::error::Error::Internal(format!("password check panicked: {e}")))?;
    let Some(account) = account.filter(|_| ok) else {
        state.logins.failed(&req.username, address);
        return Err(invalid());
    };
    state.logins.succeeded(&account.username);
    let role = Role::parse(&account.role)
        .ok_or_else(|| crate::error::Error::Internal(format!("account has unknown role {:?}", account.role)))?;
    let token = crate::auth::new_token();
    let ttl_ms = (state.config.http.token_ttl_secs * 1000) as i64;
    let expires_at_ms = state.store.token_insert(&crate::auth::token_hash(&token), &account.username, ttl_ms).await?;
    tracing::info!(username = %account.username, role = role.as_str(), "issued token");
    let api_url = lowest_api_url(&state, &account.username, role, account.client_id.as_deref()).await;
    let body = TokenResponse {
        token,
        expires_at: crate::time::rfc3339_ms(expires_at_ms),
        roles: vec![role],
        client_id: account.client_id,
        client_ids: account.client_ids.as_ref().map(api::ClientScope::to_strings),
        api_url,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// 429 `too_many_requests` with `Retry-After`, for a login refused before its password check.
fn too_many_logins(refused: Refused) -> Response {
    let message = match refused {
        Refused::Busy { .. } => "too many logins at once on this node; retry after the Retry-After seconds",
        Refused::TooManyFailures { .. } => {
            "too many failed logins for this username or from this address; retry after the Retry-After seconds"
        }
    };
    let body = api::ErrorBody::new(ErrorCode::TooManyRequests, message);
    (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, refused.retry_after_secs().to_string())], axum::Json(body))
        .into_response()
}

/// Rejects the request unless it carries a valid, unexpired bearer token; passes the
/// [`Caller`] on to the handler.
pub async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Only the headers cross the await: a request body is not `Sync`.
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
    let forwarded = match Forwarded::of(req.headers()) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let route = (req.method().clone(), req.uri().path().to_owned());
    let caller = authenticate(&state, header)
        .await
        .and_then(|account| host_routes_only(account, &route.0, &route.1))
        .and_then(|account| narrow(&state, account, &forwarded));
    match caller {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// An enrolled host's credential opens two routes: its host's report and its host's update
/// (the handlers check that the host is its own). Everything else is 403.
fn host_routes_only(caller: Caller, method: &axum::http::Method, path: &str) -> ApiResult<Caller> {
    if caller.host.is_none() {
        return Ok(caller);
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let allowed = match parts.as_slice() {
        ["v1", "hosts", _, "report"] => method == axum::http::Method::POST,
        ["v1", "hosts", id] => method == axum::http::Method::PUT && *id != "enrollment-tokens",
        _ => false,
    };
    if allowed {
        Ok(caller)
    } else {
        Err(Error::api(ErrorCode::Forbidden, "a host credential may only report and update its own host"))
    }
}

/// The caller a request acts for: the verified account, narrowed to the caller a parent states,
/// after checking the path of zones the request crossed (loops, hop limit).
fn narrow(state: &AppState, account: Caller, forwarded: &Forwarded) -> ApiResult<Caller> {
    let path = federation::ZonePath::parse(forwarded.path.as_deref())?;
    state.gateway.admit(&path)?;
    let stated = federation::Stated::from_headers(|name| forwarded.get(name))?;
    let account_forwards = matches!(account.role, Role::Admin | Role::Parent);
    let (verified, host) = (account.account.clone(), account.host);
    if host.is_some() && stated.is_some() {
        return Err(Error::api(ErrorCode::Forbidden, "a host credential cannot state another caller"));
    }
    let p = federation::identity::effective(account.principal(), stated)?;
    Ok(Caller {
        username: p.username,
        account: verified,
        role: p.role,
        client_id: p.client_id,
        clients: p.clients,
        account_forwards,
        path,
        host,
    })
}

async fn authenticate(state: &AppState, header: Option<String>) -> ApiResult<Caller> {
    let Some(value) = header else {
        return Err(Error::api(
            ErrorCode::MissingToken,
            "send Authorization: Bearer <token>; get one from POST /v1/auth/tokens",
        ));
    };
    let token = bearer(&value)
        .ok_or_else(|| Error::api(ErrorCode::InvalidToken, "the Authorization header must be 'Bearer <token>'"))?;
    let hash = crate::auth::token_hash(token);
    let row: TokenRow = match state.tokens.get(&hash) {
        Some(row) => row,
        None => match state.store.token_lookup(&hash).await? {
            Some(row) => {
                state.tokens.insert(hash, row.clone());
                row
            }
            None => return host_credential(state, hash).await,
        },
    };
    account_caller(row)
}

/// The caller of a verified token's row, unless the token has expired.
fn account_caller(row: TokenRow) -> ApiResult<Caller> {
    if row.expired || row.expires_at_ms <= crate::time::local_now_ms() {
        return Err(Error::api(ErrorCode::TokenExpired, "the token has expired; log in again"));
    }
    let role = Role::parse(&row.role)
        .ok_or_else(|| crate::error::Error::Internal(format!("token of unknown role {:?}", row.role)))?;
    Ok(Caller {
        account: row.username.clone(),
        username: row.username,
        role,
        client_id: row.client_id,
        // A parent account without its clients (a row written by hand) sees nothing.
        clients: (role == Role::Parent).then(|| row.client_ids.unwrap_or_default()),
        account_forwards: matches!(role, Role::Admin | Role::Parent),
        path: federation::ZonePath::empty(),
        host: None,
    })
}

/// What [`require_token`] makes of a request whose token this node has verified before (the
/// token cache) and which states no other caller and crossed no zone: the same [`Caller`],
/// without an await or a database. `None` for anything else (no token, one not in the cache, a
/// host's credential, an expired token, a forwarded request): the router's middleware then
/// answers it, errors included.
pub fn cached_caller(state: &AppState, headers: &axum::http::HeaderMap) -> Option<Caller> {
    use api::federation::{CALLER_CLIENT_HEADER, CALLER_ROLE_HEADER, CALLER_USER_HEADER, ZONE_PATH_HEADER};
    if [ZONE_PATH_HEADER, CALLER_ROLE_HEADER, CALLER_CLIENT_HEADER, CALLER_USER_HEADER]
        .iter()
        .any(|name| headers.contains_key(*name))
    {
        return None;
    }
    let token = bearer(headers.get(header::AUTHORIZATION)?.to_str().ok()?)?;
    let row = state.tokens.get(&crate::auth::token_hash(token))?;
    let caller = account_caller(row).ok()?;
    narrow(state, caller, &Forwarded::none()).ok()
}

/// The caller of a token that is no account's: an enrolled host's agent, or nobody.
async fn host_credential(state: &AppState, hash: String) -> ApiResult<Caller> {
    let host = match state.host_credentials.get(&hash).await {
        Some(host) => host,
        None => {
            let host = state
                .store
                .host_by_credential(&hash)
                .await?
                .ok_or_else(|| Error::api(ErrorCode::InvalidToken, "the token is not valid here; log in again"))?;
            state.host_credentials.insert(hash, host).await;
            host
        }
    };
    let name = format!("host:{host}");
    Ok(Caller {
        username: name.clone(),
        account: name,
        role: Role::Member,
        client_id: None,
        clients: None,
        account_forwards: false,
        path: federation::ZonePath::empty(),
        host: Some(host),
    })
}

/// The API a new token's holder should use: for a member, the lowest zone that manages all of
/// its client's instances (this zone when none does yet, or when the lookup fails: logging in
/// never fails because a child is down).
async fn lowest_api_url(state: &AppState, username: &str, role: Role, client_id: Option<&str>) -> String {
    let own = state.config.api_url().to_owned();
    let (Role::Member, Some(client)) = (role, client_id) else { return own };
    let ctx = federation::RequestContext {
        caller: federation::Principal::member(username, client),
        path: federation::ZonePath::empty(),
    };
    match state.gateway.lowest_zone(&ctx, client).await {
        Ok(lookup) => lookup.answer.map(|z| z.api_url).unwrap_or(own),
        Err(e) => {
            tracing::warn!(client, error = %e, "cannot look up the lowest zone for a new token");
            own
        }
    }
}
