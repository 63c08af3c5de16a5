//! Typed HTTP client for a zone's REST API.
//!
//! Used by the operator commands, the end-to-end tests and (later) parent zones. Every method maps
//! a non-2xx answer to [`ClientError::Api`] with the server's error code, so callers can match on
//! codes rather than parse text.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ErrorBody, ErrorCode};
use crate::types::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The zone answered with an error body.
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: ErrorCode, message: String },
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
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// `base_url` is the zone's API root, such as `http://127.0.0.1:8080`.
    pub fn new(base_url: &str) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()
            .expect("the reqwest client builder only fails on a broken TLS backend");
        Client { base: base_url.trim_end_matches('/').to_owned(), http, token: None }
    }

    /// The same client, sending `token` as its bearer token.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client { token: Some(token.into()), ..self.clone() }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Logs in and returns a client that carries the new token, with the token response.
    pub async fn login(&self, username: &str, password: &str) -> Result<(Client, TokenResponse), ClientError> {
        let req = TokenRequest { username: username.to_owned(), password: password.to_owned() };
        let tok: TokenResponse = self.post("/v1/auth/tokens", &req).await?;
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

    pub async fn hosts(&self) -> Result<HostList, ClientError> {
        self.get("/v1/hosts").await
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

    /// One page of instances; `query` is the raw query string (`client_id=…&limit=…&marker=…`).
    pub async fn instances(&self, query: &str) -> Result<InstanceList, ClientError> {
        if query.is_empty() {
            self.get("/v1/instances").await
        } else {
            self.get(&format!("/v1/instances?{query}")).await
        }
    }

    pub async fn instance(&self, id: &str) -> Result<Instance, ClientError> {
        self.get(&format!("/v1/instances/{id}")).await
    }

    pub async fn instance_action(&self, id: &str, action: &InstanceAction) -> Result<Instance, ClientError> {
        self.post(&format!("/v1/instances/{id}/action"), action).await
    }

    pub async fn instance_delete(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/instances/{id}")).await
    }

    // --- generic helpers ---

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.put(&url).json(body), &url).await?;
        Self::decode(resp, &url).await
    }

    /// `DELETE`, expecting an empty success (`204`).
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.delete(&url), &url).await?;
        Self::check(resp, &url).await.map(|_| ())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        Self::decode(resp, &url).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.post(&url).json(body), &url).await?;
        Self::decode(resp, &url).await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, ClientError> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req.send().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })
    }

    async fn check(resp: reqwest::Response, url: &str) -> Result<reqwest::Response, ClientError> {
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })?;
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api { status, code: body.error.code, message: body.error.message }),
            Err(_) => Err(ClientError::Decode {
                url: url.to_owned(),
                status,
                detail: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            }),
        }
    }

    async fn decode<T: DeserializeOwned>(resp: reqwest::Response, url: &str) -> Result<T, ClientError> {
        let resp = Self::check(resp, url).await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.to_owned(),
            status,
            detail: e.to_string(),
        })
    }
}
