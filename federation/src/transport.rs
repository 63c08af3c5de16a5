//! How a gateway talks to its children: [`ChildTransport`], implemented over the public REST API
//! by [`RestTransport`]. Another transport (AMQP between zones, as the Nova design kept open) fits
//! behind the same trait; nothing else in the gateway knows which one it uses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use api::federation::{INSTANCE_ID_HEADER, ZONE_PATH_HEADER};
use api::{
    Answer, ClientError, Conditional, ErrorCode, HostList, Instance, InstanceAction, InstanceCreate, LowestZone,
    Placement, PlacementRequest, RawInstanceList, Role, SubtreeView, ZoneInfo, ZoneWatch,
};

use crate::error::FedError;
use crate::identity::Principal;
use crate::path::ZonePath;
use crate::registry::{Child, Credentials};

/// What a forwarded request carries: the path it crossed (this zone included), the caller it acts
/// for, the name of the zone the caller entered through, and how long it may take.
#[derive(Debug, Clone)]
pub struct Hop<'a> {
    pub path: &'a ZonePath,
    pub caller: &'a Principal,
    pub origin: &'a str,
    pub timeout: Duration,
}

/// A page request for instance and host lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    pub client_id: Option<String>,
    pub limit: usize,
    pub marker: Option<String>,
}

impl ListQuery {
    /// The URL query string (`client_id=…&limit=…&marker=…`).
    pub fn to_query(&self) -> String {
        let mut parts = vec![format!("limit={}", self.limit)];
        if let Some(c) = &self.client_id {
            parts.push(format!("client_id={c}"));
        }
        if let Some(m) = &self.marker {
            parts.push(format!("marker={m}"));
        }
        parts.join("&")
    }
}

/// Everything a gateway asks of a child. Each call either answers or fails with a [`FedError`]
/// that says whether the child was reached.
#[async_trait::async_trait]
pub trait ChildTransport: Send + Sync + 'static {
    /// `GET /v1/zone`, with the subtree when asked (polls: cached; zone-add checks: live).
    async fn zone_info(&self, child: &Child, hop: &Hop<'_>, subtree: Option<SubtreeView>)
        -> Result<ZoneInfo, FedError>;
    /// A poll: `GET /v1/zone?subtree=true` with `If-None-Match: etag` when given, so a child
    /// whose answer has not changed says so in a few bytes. The default asks unconditionally.
    async fn zone_if_changed(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        etag: Option<&str>,
    ) -> Result<Conditional<ZoneInfo>, FedError> {
        let _ = etag;
        Ok(Conditional::Modified { value: self.zone_info(child, hop, Some(SubtreeView::Cached)).await?, etag: None })
    }
    /// `GET /v1/zone/watch`: waits (up to `wait`, bounded by the child) for the child's generation
    /// to pass `since`. `hop.timeout` must be longer than `wait`. The default has no watch: it
    /// fails at once, and the caller falls back to polling.
    async fn watch(&self, child: &Child, hop: &Hop<'_>, since: i64, wait: Duration) -> Result<ZoneWatch, FedError> {
        let _ = (hop, since, wait);
        Err(FedError::Unavailable { zone: child.name.clone(), reason: "this transport has no watch".into() })
    }
    async fn placement(&self, child: &Child, hop: &Hop<'_>, req: &PlacementRequest) -> Result<Placement, FedError>;
    /// A create of the instance `id` (chosen by the zone the request entered).
    async fn create(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        id: &str,
        req: &InstanceCreate,
    ) -> Result<Answer<Instance>, FedError>;
    /// A multi-create (`req.count` above 1) of the batch `batch_id`, whole, at one child.
    async fn create_batch(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        batch_id: &str,
        req: &InstanceCreate,
    ) -> Result<Answer<Vec<Instance>>, FedError>;
    /// `None` when the child does not have it (or does not show it to the caller).
    async fn instance(&self, child: &Child, hop: &Hop<'_>, id: &str) -> Result<Option<Instance>, FedError>;
    async fn action(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        id: &str,
        action: &InstanceAction,
    ) -> Result<Answer<Instance>, FedError>;
    async fn delete(&self, child: &Child, hop: &Hop<'_>, id: &str) -> Result<Answer<()>, FedError>;
    /// A page of the child's instances, each kept as JSON text ([`api::RawInstance`]).
    async fn instances(&self, child: &Child, hop: &Hop<'_>, query: &ListQuery) -> Result<RawInstanceList, FedError>;
    async fn hosts(&self, child: &Child, hop: &Hop<'_>, query: &ListQuery) -> Result<HostList, FedError>;
    /// The child's lowest zone for a client (`None`: it manages none of the client's instances).
    async fn lowest_zone(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        client_id: &str,
    ) -> Result<Answer<Option<LowestZone>>, FedError>;
    /// zone-add: logs in to a zone that is not registered yet and reads it with its live subtree.
    /// Errors are `zone_unreachable` or `zone_auth_failed`, naming what to fix.
    async fn inspect(&self, api_url: &str, credentials: &Credentials, hop: &Hop<'_>) -> Result<ZoneInfo, FedError>;
}

/// A child's login: the token and what it was issued for.
struct Login {
    api_url: String,
    credentials: Credentials,
    token: String,
}

/// [`ChildTransport`] over the children's public REST API, with the credentials given at
/// zone-add. One connection pool for all children; one login per child, renewed when the child
/// says the token is no longer valid.
pub struct RestTransport {
    root: api::Client,
    logins: Mutex<HashMap<String, Login>>,
}

impl Default for RestTransport {
    fn default() -> Self {
        RestTransport::new()
    }
}

impl RestTransport {
    pub fn new() -> RestTransport {
        RestTransport { root: api::Client::new("http://unused"), logins: Mutex::new(HashMap::new()) }
    }

    fn token_of(&self, child: &Child) -> Option<String> {
        let logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins
            .get(&child.id)
            .filter(|l| l.api_url == child.api_url && l.credentials == child.credentials)
            .map(|l| l.token.clone())
    }

    async fn login(&self, child: &Child, timeout: Duration) -> Result<String, FedError> {
        let client = self.root.for_url(&child.api_url).with_timeout(timeout);
        let (_, tok) = client
            .login(&child.credentials.username, child.credentials.password())
            .await
            .map_err(|e| FedError::from_child(&child.name, e, timeout.as_millis() as u64))?;
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.insert(
            child.id.clone(),
            Login { api_url: child.api_url.clone(), credentials: child.credentials.clone(), token: tok.token.clone() },
        );
        Ok(tok.token)
    }

    /// A client for `child` carrying the hop's headers and a valid token.
    async fn client(&self, child: &Child, hop: &Hop<'_>, fresh: bool) -> Result<api::Client, FedError> {
        let token = match self.token_of(child) {
            Some(t) if !fresh => t,
            _ => self.login(child, hop.timeout).await?,
        };
        let mut headers = hop.caller.headers(hop.origin);
        headers.push((ZONE_PATH_HEADER.to_owned(), hop.path.header_value()));
        Ok(self.root.for_url(&child.api_url).with_token(token).with_headers(headers).with_timeout(hop.timeout))
    }

    /// Runs `call` with a client for `child`, logging in again once when the child no longer
    /// takes the token (it expired, or the child's database was reset). A 401 means the child did
    /// nothing, so the retry cannot do anything twice.
    async fn with_child<T, F, Fut>(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        op: &'static str,
        call: F,
    ) -> Result<T, FedError>
    where
        F: Fn(api::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        metrics::counter!("federation_child_requests_total", "op" => op).increment(1);
        let timeout_ms = hop.timeout.as_millis() as u64;
        let first = call(self.client(child, hop, false).await?).await;
        let result = match first {
            Err(ClientError::Api { status: 401, code: ErrorCode::InvalidToken | ErrorCode::TokenExpired, .. }) => {
                call(self.client(child, hop, true).await?).await
            }
            other => other,
        };
        result.map_err(|e| FedError::from_child(&child.name, e, timeout_ms))
    }
}

#[async_trait::async_trait]
impl ChildTransport for RestTransport {
    async fn zone_info(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        subtree: Option<SubtreeView>,
    ) -> Result<ZoneInfo, FedError> {
        self.with_child(child, hop, "zone", |c| async move {
            match subtree {
                Some(view) => c.zone_with(view).await,
                None => c.zone().await,
            }
        })
        .await
    }

    async fn zone_if_changed(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        etag: Option<&str>,
    ) -> Result<Conditional<ZoneInfo>, FedError> {
        self.with_child(child, hop, "zone_conditional", |c| async move {
            c.zone_if_changed(SubtreeView::Cached, etag).await
        })
        .await
    }

    async fn watch(&self, child: &Child, hop: &Hop<'_>, since: i64, wait: Duration) -> Result<ZoneWatch, FedError> {
        let wait_ms = wait.as_millis() as u64;
        self.with_child(child, hop, "watch", |c| async move { c.zone_watch(since, wait_ms).await }).await
    }

    async fn placement(&self, child: &Child, hop: &Hop<'_>, req: &PlacementRequest) -> Result<Placement, FedError> {
        self.with_child(child, hop, "placement", |c| async move { c.placement(req).await }).await
    }

    async fn create(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        id: &str,
        req: &InstanceCreate,
    ) -> Result<Answer<Instance>, FedError> {
        self.with_child(child, hop, "create", |c| async move {
            c.with_headers([(INSTANCE_ID_HEADER.to_owned(), id.to_owned())]).instance_create_answer(req).await
        })
        .await
    }

    async fn create_batch(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        batch_id: &str,
        req: &InstanceCreate,
    ) -> Result<Answer<Vec<Instance>>, FedError> {
        let answer = self
            .with_child(child, hop, "create_batch", |c| async move {
                c.with_headers([(INSTANCE_ID_HEADER.to_owned(), batch_id.to_owned())])
                    .instance_create_batch_answer(req)
                    .await
            })
            .await?;
        Ok(Answer { value: answer.value.instances, generation: answer.generation, lowest: answer.lowest })
    }

    async fn instance(&self, child: &Child, hop: &Hop<'_>, id: &str) -> Result<Option<Instance>, FedError> {
        self.with_child(child, hop, "show", |c| async move { c.instance_opt(id).await }).await
    }

    async fn action(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        id: &str,
        action: &InstanceAction,
    ) -> Result<Answer<Instance>, FedError> {
        self.with_child(child, hop, "action", |c| async move { c.instance_action_answer(id, action).await }).await
    }

    async fn delete(&self, child: &Child, hop: &Hop<'_>, id: &str) -> Result<Answer<()>, FedError> {
        self.with_child(child, hop, "delete", |c| async move { c.instance_delete_answer(id).await }).await
    }

    async fn instances(&self, child: &Child, hop: &Hop<'_>, query: &ListQuery) -> Result<RawInstanceList, FedError> {
        let q = query.to_query();
        self.with_child(child, hop, "list_instances", |c| {
            let q = q.clone();
            async move { c.instances_raw(&q).await }
        })
        .await
    }

    async fn hosts(&self, child: &Child, hop: &Hop<'_>, query: &ListQuery) -> Result<HostList, FedError> {
        let q = query.to_query();
        self.with_child(child, hop, "list_hosts", |c| {
            let q = q.clone();
            async move { c.hosts_page(&q).await }
        })
        .await
    }

    async fn lowest_zone(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        client_id: &str,
    ) -> Result<Answer<Option<LowestZone>>, FedError> {
        self.with_child(child, hop, "lowest_zone", |c| async move { c.lowest_zone_answer(client_id).await }).await
    }

    async fn inspect(&self, api_url: &str, credentials: &Credentials, hop: &Hop<'_>) -> Result<ZoneInfo, FedError> {
        let client = self.root.for_url(api_url).with_timeout(hop.timeout);
        // One text for every way of not answering as a zone (refused, closed, timed out, another
        // service): a text per cause would make zone-add a port scanner for whoever holds an admin
        // account. The cause goes to the log.
        let unreachable = |why: String| {
            tracing::warn!(api_url, reason = %why, "zone-add/zone-update: no zone API answered");
            FedError::api(
                ErrorCode::ZoneUnreachable,
                format!(
                    "cannot use the zone API at {api_url}: no zone API answered there (the node's log has the cause); check the URL and that the zone runs"
                ),
            )
        };
        let (client, tok) = match client.login(&credentials.username, credentials.password()).await {
            Ok(ok) => ok,
            Err(ClientError::Api { status: 401, .. }) => {
                return Err(FedError::api(
                    ErrorCode::ZoneAuthFailed,
                    format!(
                        "the zone at {api_url} refused username {:?} with that password; give an admin or parent account of that zone",
                        credentials.username
                    ),
                ))
            }
            Err(e @ ClientError::Transport { .. }) => {
                let reason = match FedError::from_child(api_url, e, hop.timeout.as_millis() as u64) {
                    FedError::Unavailable { reason, .. } => reason,
                    other => other.to_string(),
                };
                return Err(unreachable(reason));
            }
            Err(ClientError::Api { status, code, message, .. }) => {
                return Err(unreachable(format!("logging in answered {status} {code}: {message}")))
            }
            Err(ClientError::Decode { status, .. }) => {
                return Err(unreachable(format!("logging in answered {status} with something that is not the zone API")))
            }
        };
        // An admin account, or a parent account limited to some clients (the child decides what
        // its parent may see; members cannot act for anyone else).
        if !tok.roles.iter().any(|r| matches!(r, Role::Admin | Role::Parent)) {
            return Err(FedError::api(
                ErrorCode::ZoneAuthFailed,
                format!(
                    "{:?} is neither an admin nor a parent account of the zone at {api_url}: a parent needs one to act for its callers there",
                    credentials.username
                ),
            ));
        }
        let mut headers = hop.caller.headers(hop.origin);
        headers.push((ZONE_PATH_HEADER.to_owned(), hop.path.header_value()));
        client.with_headers(headers).zone_with(SubtreeView::Live).await.map_err(|e| match e {
            ClientError::Api { code: ErrorCode::ZoneLoop, message, .. } => FedError::api(ErrorCode::ZoneLoop, message),
            other => unreachable(other.to_string()),
        })
    }
}
