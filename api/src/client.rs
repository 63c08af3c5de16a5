//! Typed HTTP client for a zone's REST API.
//!
//! Used by the operator commands, the end-to-end tests and (later) parent zones. Every method maps
//! a non-2xx answer to [`ClientError::Api`] with the server's error code, so callers can match on
//! codes rather than parse text.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ErrorBody, ErrorCode};
use crate::federation::{
    ChildZone, LowestZone, ZoneCreate, ZoneList, ZoneUpdate, GENERATION_HEADER, LOWEST_ZONE_HEADER,
};
use crate::types::*;

/// How long [`Client::login`] keeps retrying logins a busy node answered 429.
pub const LOGIN_RETRY_FOR: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The zone answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        /// The zone said the request may or may not have been carried out
        /// ([`crate::federation::OUTCOME_HEADER`]).
        outcome_unknown: bool,
    },
    /// The zone could not be reached or the connection failed.
    #[error("cannot reach {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    /// The zone answered something that is not the expected JSON.
    #[error("unexpected answer from {url} (status {status}): {detail}")]
    Decode { url: String, status: u16, detail: String },
}

impl ClientError {
    /// The API error code, when the zone answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            ClientError::Transport { .. } => None,
        }
    }
}

/// A client for one zone's API. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// Sent with every request (a forwarding parent's path and caller headers).
    headers: Vec<(String, String)>,
    /// Overrides the connection pool's default timeout for every request of this client.
    timeout: Option<Duration>,
    /// The largest answer body read; a larger one is an error, not a memory spike.
    max_answer_bytes: usize,
}

/// The largest answer a [`Client`] reads by default: far above any page or subtree the API
/// answers (a subtree of the Nova design's 5,000 zones is a few MiB), far below what would hurt a
/// node. A child or agent that answers more gets an error instead of the node's memory.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The most of an error answer's body read (error bodies are a few hundred bytes).
const MAX_ERROR_BYTES: usize = 64 << 10;

impl std::fmt::Debug for Client {
    // Never the token or the headers: they may be credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

/// What a change answered, with the answering zone's federation headers (see
/// [`crate::federation::GENERATION_HEADER`] and [`crate::federation::LOWEST_ZONE_HEADER`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub value: T,
    /// The zone's generation after the change, when it said.
    pub generation: Option<i64>,
    /// The zone's lowest zone for the client after the change: `None` when it did not say,
    /// `Some(None)` when it no longer manages the client.
    pub lowest: Option<Option<LowestZone>>,
}

/// The answer to a conditional request (`If-None-Match`).
#[derive(Debug, Clone, PartialEq)]
pub enum Conditional<T> {
    /// 304: unchanged since the `ETag` sent.
    NotModified,
    /// The new answer, with its `ETag` when the zone gave one.
    Modified { value: T, etag: Option<String> },
}

/// The connection pool behind [`Client::new`]: 30 s per request unless a client says otherwise.
pub fn default_http() -> reqwest::Client {
    crate::http::client_builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("the reqwest client builder only fails on a broken TLS backend")
}

impl Client {
    /// `base_url` is the zone's API root, such as `http://127.0.0.1:8080`.
    pub fn new(base_url: &str) -> Client {
        Client::with_http(base_url, default_http())
    }

    /// A client sharing the connection pool `http` (a gateway talks to all of its children
    /// through one pool).
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Client {
        Client {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            token: None,
            headers: Vec::new(),
            timeout: None,
            max_answer_bytes: MAX_ANSWER_BYTES,
        }
    }

    /// The same client, reading answers of at most `bytes` (default [`MAX_ANSWER_BYTES`]).
    pub fn with_max_answer_bytes(&self, bytes: usize) -> Client {
        Client { max_answer_bytes: bytes, ..self.clone() }
    }

    /// A client for another zone, sharing this client's connection pool (no token, no headers).
    pub fn for_url(&self, base_url: &str) -> Client {
        Client::with_http(base_url, self.http.clone())
    }

    /// The same client, sending `token` as its bearer token.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client { token: Some(token.into()), ..self.clone() }
    }

    /// The same client, sending `headers` (name, value) with every request as well.
    pub fn with_headers(&self, headers: impl IntoIterator<Item = (String, String)>) -> Client {
        let mut c = self.clone();
        c.headers.extend(headers);
        c
    }

    /// The same client, giving every request at most `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client { timeout: Some(timeout), ..self.clone() }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Logs in and returns a client that carries the new token, with the token response.
    ///
    /// A node checks only a few passwords at once and answers the rest 429 `too_many_requests`;
    /// those are retried with growing pauses for about [`LOGIN_RETRY_FOR`] before the 429 is
    /// returned (it is also what a node answers after too many failed logins, which waiting a few
    /// seconds does not cure).
    pub async fn login(&self, username: &str, password: &str) -> Result<(Client, TokenResponse), ClientError> {
        let req = TokenRequest { username: username.to_owned(), password: password.to_owned() };
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(25);
        let tok: TokenResponse = loop {
            match self.post("/v1/auth/tokens", &req).await {
                Err(e) if e.code() == Some(ErrorCode::TooManyRequests) && started.elapsed() < LOGIN_RETRY_FOR => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(400));
                }
                answer => break answer?,
            }
        };
        Ok((self.with_token(tok.token.clone()), tok))
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get("/healthz").await
    }

    pub async fn readiness(&self) -> Result<Readiness, ClientError> {
        self.get("/readyz").await
    }

    pub async fn zone(&self) -> Result<ZoneInfo, ClientError> {
        self.get("/v1/zone").await
    }

    /// `GET /v1/zone?subtree=true`: the zone with every zone below it, as last polled.
    pub async fn zone_with_subtree(&self) -> Result<ZoneInfo, ClientError> {
        self.zone_with(crate::federation::SubtreeView::Cached).await
    }

    /// `GET /v1/zone?subtree=true|live`.
    pub async fn zone_with(&self, view: crate::federation::SubtreeView) -> Result<ZoneInfo, ClientError> {
        self.get(&format!("/v1/zone?subtree={}", view.as_str())).await
    }

    /// `GET /v1/zone?subtree=…` with `If-None-Match: etag` when given: [`Conditional::NotModified`]
    /// when the zone's answer is still the one `etag` names (a 304 without a body), else the zone
    /// and its new `ETag`.
    pub async fn zone_if_changed(
        &self,
        view: crate::federation::SubtreeView,
        etag: Option<&str>,
    ) -> Result<Conditional<ZoneInfo>, ClientError> {
        let url = format!("{}/v1/zone?subtree={}", self.base, view.as_str());
        let mut req = self.http.get(&url);
        if let Some(tag) = etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let resp = self.send(req, &url).await?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Conditional::NotModified);
        }
        let etag = resp.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let value = self.decode(resp, &url).await?;
        Ok(Conditional::Modified { value, etag })
    }

    /// `GET /v1/zone/watch?since=…&timeout_ms=…`: waits up to `timeout_ms` (the zone caps it at
    /// [`crate::federation::WATCH_MAX_TIMEOUT_MS`]) for the zone's generation to pass `since`.
    /// Give this client a timeout longer than `timeout_ms`.
    pub async fn zone_watch(&self, since: i64, timeout_ms: u64) -> Result<crate::federation::ZoneWatch, ClientError> {
        self.get(&format!("/v1/zone/watch?since={since}&timeout_ms={timeout_ms}")).await
    }

    // --- child zones (admin) ---

    pub async fn zone_create(&self, req: &ZoneCreate) -> Result<ChildZone, ClientError> {
        self.post("/v1/zones", req).await
    }

    /// `GET /v1/zones`, or `/v1/zones/detail` with capabilities.
    pub async fn zones(&self, detail: bool) -> Result<ZoneList, ClientError> {
        self.get(if detail { "/v1/zones/detail" } else { "/v1/zones" }).await
    }

    pub async fn zone_get(&self, id: &str, detail: bool) -> Result<ChildZone, ClientError> {
        let suffix = if detail { "/detail" } else { "" };
        self.get(&format!("/v1/zones/{id}{suffix}")).await
    }

    pub async fn zone_update(&self, id: &str, req: &ZoneUpdate) -> Result<ChildZone, ClientError> {
        self.put(&format!("/v1/zones/{id}"), req).await
    }

    pub async fn zone_delete(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/zones/{id}")).await
    }

    // --- clients ---

    /// The lowest zone managing all of `client_id`'s instances; `None` when no zone below this
    /// one holds any (`404`).
    pub async fn lowest_zone(&self, client_id: &str) -> Result<Option<LowestZone>, ClientError> {
        Ok(self.lowest_zone_answer(client_id).await?.value)
    }

    /// [`Client::lowest_zone`] with the zone's generation at the time of the answer.
    pub async fn lowest_zone_answer(&self, client_id: &str) -> Result<Answer<Option<LowestZone>>, ClientError> {
        let url = format!("{}/v1/clients/{client_id}/zone", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        let generation = header_i64(&resp, GENERATION_HEADER);
        match self.decode(resp, &url).await {
            Ok(value) => Ok(Answer { value: Some(value), generation, lowest: None }),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(Answer { value: None, generation, lowest: None }),
            Err(e) => Err(e),
        }
    }

    pub async fn owners(&self, resources: Vec<String>) -> Result<OwnersResponse, ClientError> {
        self.post("/v1/zone/owners", &OwnersRequest { resources }).await
    }

    pub async fn probe(&self, resource_id: &str, hold_ms: u64) -> Result<ProbeResponse, ClientError> {
        self.post(&format!("/v1/zone/probe/{resource_id}"), &ProbeRequest { hold_ms }).await
    }

    pub async fn account_create(&self, req: &AccountCreate) -> Result<Account, ClientError> {
        self.post("/v1/accounts", req).await
    }

    pub async fn accounts(&self) -> Result<AccountList, ClientError> {
        self.get("/v1/accounts").await
    }

    pub async fn account_delete(&self, username: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/accounts/{username}")).await
    }

    // --- hosts ---

    pub async fn host_register(&self, req: &HostRegister) -> Result<Host, ClientError> {
        self.post("/v1/hosts", req).await
    }

    /// Makes an enrollment token (admin).
    pub async fn enrollment_token_create(&self, req: &EnrollmentTokenCreate) -> Result<EnrollmentToken, ClientError> {
        self.post("/v1/hosts/enrollment-tokens", req).await
    }

    /// Registers a host with an enrollment token (no bearer token needed): the host and its
    /// agent's credential.
    pub async fn host_enroll(&self, req: &HostEnroll) -> Result<HostEnrolled, ClientError> {
        self.post("/v1/hosts/enroll", req).await
    }

    pub async fn hosts(&self) -> Result<HostList, ClientError> {
        self.get("/v1/hosts").await
    }

    /// Every page of the hosts `query` selects (`limit=…`, no `marker`), in id order, each
    /// page's successor asked for while the page is read ([`crate::pages`]).
    pub fn host_pages(&self, query: &str) -> crate::pages::HostPages {
        crate::pages::Pages::new(self.clone(), query)
    }

    /// Every host this zone and the zones below it hold, all pages read ([`Client::host_pages`]);
    /// the zones that did not answer for any page, each named once.
    pub async fn all_hosts(&self) -> Result<HostList, ClientError> {
        self.host_pages("limit=1000").all().await
    }

    /// One page of hosts; `query` is the raw query string (`limit=…&marker=…`).
    pub async fn hosts_page(&self, query: &str) -> Result<HostList, ClientError> {
        if query.is_empty() {
            self.get("/v1/hosts").await
        } else {
            self.get(&format!("/v1/hosts?{query}")).await
        }
    }

    pub async fn host(&self, id: &str) -> Result<Host, ClientError> {
        self.get(&format!("/v1/hosts/{id}")).await
    }

    pub async fn host_update(&self, id: &str, req: &HostUpdate) -> Result<Host, ClientError> {
        self.put(&format!("/v1/hosts/{id}"), req).await
    }

    pub async fn host_delete(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/hosts/{id}")).await
    }

    /// A host's periodic presence report (`204`).
    pub async fn host_report(&self, id: &str, report: &crate::agent::HostReport) -> Result<(), ClientError> {
        let url = format!("{}/v1/hosts/{id}/report", self.base);
        let resp = self.send(self.http.post(&url).json(report), &url).await?;
        Self::check(resp, &url).await.map(|_| ())
    }

    /// This zone's aggregate of capabilities.
    pub async fn capabilities(&self) -> Result<Aggregate, ClientError> {
        self.get("/v1/capabilities").await
    }

    pub async fn placement(&self, req: &PlacementRequest) -> Result<Placement, ClientError> {
        self.post("/v1/placements", req).await
    }

    // --- instances ---

    pub async fn instance_create(&self, req: &InstanceCreate) -> Result<Instance, ClientError> {
        self.post("/v1/instances", req).await
    }

    /// A multi-create (`req.count` above 1): every instance, in name order, or none
    /// (`409 no_valid_host` when they do not all fit).
    pub async fn instance_create_batch(&self, req: &InstanceCreate) -> Result<InstanceBatch, ClientError> {
        self.post("/v1/instances", req).await
    }

    /// One page of instances; `query` is the raw query string (`client_id=…&limit=…&marker=…`).
    pub async fn instances(&self, query: &str) -> Result<InstanceList, ClientError> {
        if query.is_empty() {
            self.get("/v1/instances").await
        } else {
            self.get(&format!("/v1/instances?{query}")).await
        }
    }

    /// Every page of the instances `query` selects (`client_id=…&limit=…`, no `marker`), in id
    /// order, each page's successor asked for while the page is read ([`crate::pages`]).
    pub fn instance_pages(&self, query: &str) -> crate::pages::InstancePages {
        crate::pages::Pages::new(self.clone(), query)
    }

    /// Every instance `query` selects, all pages read ([`Client::instance_pages`]); the zones
    /// that did not answer for any page, each named once.
    pub async fn all_instances(&self, query: &str) -> Result<InstanceList, ClientError> {
        self.instance_pages(query).all().await
    }

    /// [`Client::instances`] with each instance kept as JSON text (what a gateway merges).
    pub async fn instances_raw(&self, query: &str) -> Result<crate::RawInstanceList, ClientError> {
        if query.is_empty() {
            self.get("/v1/instances").await
        } else {
            self.get(&format!("/v1/instances?{query}")).await
        }
    }

    pub async fn instance(&self, id: &str) -> Result<Instance, ClientError> {
        self.get(&format!("/v1/instances/{id}")).await
    }

    /// [`Client::instance`], with `None` for `404 not_found`.
    pub async fn instance_opt(&self, id: &str) -> Result<Option<Instance>, ClientError> {
        match self.instance(id).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn instance_action(&self, id: &str, action: &InstanceAction) -> Result<Instance, ClientError> {
        self.post(&format!("/v1/instances/{id}/action"), action).await
    }

    pub async fn instance_delete(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/instances/{id}")).await
    }

    /// [`Client::instance_create`] with the zone's federation headers.
    pub async fn instance_create_answer(&self, req: &InstanceCreate) -> Result<Answer<Instance>, ClientError> {
        let url = format!("{}/v1/instances", self.base);
        self.answer(self.http.post(&url).json(req), &url).await
    }

    /// [`Client::instance_create_batch`] with the zone's federation headers.
    pub async fn instance_create_batch_answer(
        &self,
        req: &InstanceCreate,
    ) -> Result<Answer<InstanceBatch>, ClientError> {
        let url = format!("{}/v1/instances", self.base);
        self.answer(self.http.post(&url).json(req), &url).await
    }

    /// [`Client::instance_action`] with the zone's federation headers.
    pub async fn instance_action_answer(
        &self,
        id: &str,
        action: &InstanceAction,
    ) -> Result<Answer<Instance>, ClientError> {
        let url = format!("{}/v1/instances/{id}/action", self.base);
        self.answer(self.http.post(&url).json(action), &url).await
    }

    /// [`Client::instance_delete`] with the zone's federation headers.
    pub async fn instance_delete_answer(&self, id: &str) -> Result<Answer<()>, ClientError> {
        let url = format!("{}/v1/instances/{id}", self.base);
        let resp = self.send(self.http.delete(&url), &url).await?;
        let resp = Self::check(resp, &url).await?;
        Ok(Answer { value: (), generation: header_i64(&resp, GENERATION_HEADER), lowest: lowest_header(&resp) })
    }

    // --- generic helpers ---

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.put(&url).json(body), &url).await?;
        self.decode(resp, &url).await
    }

    /// `DELETE`, expecting an empty success (`204`).
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.delete(&url), &url).await?;
        Self::check(resp, &url).await.map(|_| ())
    }

    /// The full URL of `path` at this zone.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`, the answer's headers read and its body not yet.
    pub(crate) async fn get_response(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let url = self.url(path);
        self.send(self.http.get(&url), &url).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        self.decode(resp, &url).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.post(&url).json(body), &url).await?;
        self.decode(resp, &url).await
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Answer<T>, ClientError> {
        let resp = self.send(req, url).await?;
        let generation = header_i64(&resp, GENERATION_HEADER);
        let lowest = lowest_header(&resp);
        let value = self.decode(resp, url).await?;
        Ok(Answer { value, generation, lowest })
    }

    async fn send(&self, mut req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, ClientError> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in &self.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some(t) = self.timeout {
            req = req.timeout(t);
        }
        req.send().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })
    }

    pub(crate) async fn check(resp: reqwest::Response, url: &str) -> Result<reqwest::Response, ClientError> {
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let outcome_unknown = resp
            .headers()
            .get(crate::federation::OUTCOME_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"unknown"));
        let bytes = read_body(resp, url, MAX_ERROR_BYTES).await?;
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => {
                Err(ClientError::Api { status, code: body.error.code, message: body.error.message, outcome_unknown })
            }
            Err(_) => Err(ClientError::Decode {
                url: url.to_owned(),
                status,
                detail: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            }),
        }
    }

    pub(crate) async fn decode<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        url: &str,
    ) -> Result<T, ClientError> {
        let resp = Self::check(resp, url).await?;
        let status = resp.status().as_u16();
        let bytes = read_body(resp, url, self.max_answer_bytes).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.to_owned(),
            status,
            detail: e.to_string(),
        })
    }
}

/// The body of `resp`, refused once it passes `limit` bytes (by its `Content-Length` before
/// reading anything, or while reading a body of unannounced length).
async fn read_body(mut resp: reqwest::Response, url: &str, limit: usize) -> Result<Vec<u8>, ClientError> {
    let status = resp.status().as_u16();
    let too_large = || ClientError::Decode {
        url: url.to_owned(),
        status,
        detail: format!("the answer is larger than {limit} bytes; not read"),
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) =
        resp.chunk().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn header_i64(resp: &reqwest::Response, name: &str) -> Option<i64> {
    resp.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The [`LOWEST_ZONE_HEADER`] of an answer; a header that does not parse counts as absent.
fn lowest_header(resp: &reqwest::Response) -> Option<Option<LowestZone>> {
    let text = resp.headers().get(LOWEST_ZONE_HEADER)?.to_str().ok()?;
    if text == "none" {
        return Some(None);
    }
    serde_json::from_str(text).ok().map(Some)
}

impl ClientError {
    /// True when the zone was not reached at all or did not answer in time: the request may or
    /// may not have been carried out.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    /// True when the zone was not even connected to (nothing can have been carried out).
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Transport { source, .. } if source.is_connect())
    }

    /// True when the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Transport { source, .. } if source.is_timeout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one HTTP answer, `head` then `body`, to every connection, and counts them.
    async fn serve_raw(head: String, body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free loopback port");
        let url = format!("http://{}", listener.local_addr().expect("the listener's address"));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (head, body) = (head.clone(), body.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        url
    }

    fn too_large(err: &ClientError) -> bool {
        matches!(err, ClientError::Decode { detail, .. } if detail.contains("larger than"))
    }

    #[tokio::test]
    async fn an_answer_past_the_limit_is_refused_by_its_length_or_while_read() {
        let body = format!("[{}]", vec!["1"; 5000].join(","));
        let announced =
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
        let url = serve_raw(announced, body.clone().into_bytes()).await;
        let client = Client::new(&url).with_max_answer_bytes(1000);
        let err = client.get::<Vec<u32>>("/x").await.unwrap_err();
        assert!(too_large(&err), "{err}");
        let fits: Vec<u32> = Client::new(&url).get("/x").await.expect("within the default limit");
        assert_eq!(fits.len(), 5000);

        // Chunked, no length announced: refused once the chunks pass the limit.
        let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        let url = serve_raw(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".into(),
            chunked.into_bytes(),
        )
        .await;
        let err = Client::new(&url).with_max_answer_bytes(1000).get::<Vec<u32>>("/x").await.unwrap_err();
        assert!(too_large(&err), "{err}");
    }

    #[tokio::test]
    async fn a_redirect_is_an_answer_and_is_not_followed() {
        let target = TcpListener::bind("127.0.0.1:0").await.expect("a free loopback port");
        let location = format!("http://{}/v1/auth/tokens", target.local_addr().expect("the listener's address"));
        let url = serve_raw(
            format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"),
            Vec::new(),
        )
        .await;
        let err = Client::new(&url).login("admin", "the-child-password").await.unwrap_err();
        assert_eq!(err.status(), Some(307), "{err}");
        let followed = tokio::time::timeout(Duration::from_millis(300), target.accept()).await;
        assert!(followed.is_err(), "the login (and its password) followed the redirect");
    }
}
