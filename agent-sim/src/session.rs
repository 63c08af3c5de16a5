//! The simulator's session with the zone: an API client logged in with operator credentials, that
//! logs in again when the zone stops accepting its token (tokens expire after
//! `http.token_ttl_secs`, and a simulator runs for days) and moves to another node of the zone
//! when its node stops answering.
//!
//! Every node of a zone serves the same API and accepts the same tokens (they live in the shared
//! database), so an agent pinned to one node's URL would go silent, and its hosts down, whenever
//! that one node dies. The session learns the zone's nodes from `GET /v1/zone` and, when a call
//! cannot reach its node (or the node is fenced), tries the others in turn.

use std::future::Future;
use std::sync::RwLock;

use api::{Client, ClientError, ErrorCode};
use secrecy::{ExposeSecret, SecretString};

/// How the simulator authenticates to the zone. Neither form is ever printed (`SecretString`).
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Operator username and password (`ZONE_USERNAME`, `ZONE_PASSWORD`): renewed by itself.
    Password { username: String, password: SecretString },
    /// A bearer token (`ZONE_TOKEN`): used until it expires, then every call fails.
    Token(SecretString),
    /// An enrollment token (`ZONE_ENROLLMENT_TOKEN`): each host registers itself with it and
    /// then acts with a credential of its own host; no operator account is used at all.
    Enrollment(SecretString),
}

#[derive(Clone)]
struct Current {
    /// Counts logins, so concurrent callers that all saw a 401 log in once.
    generation: u64,
    token: SecretString,
    client: Client,
}

/// A logged-in client, shared by every host of the simulator.
pub struct ZoneSession {
    zone_url: String,
    /// The one connection pool of every client the session makes (whatever node it talks to).
    http: reqwest::Client,
    credentials: Credentials,
    /// std locks: held only to clone or replace a value, never across an await.
    current: RwLock<Current>,
    /// The API URLs of the zone's nodes, as last listed (the configured URL first).
    nodes: RwLock<Vec<String>>,
    relogin: tokio::sync::Mutex<()>,
}

impl ZoneSession {
    /// Logs in (or takes the token), checks that the zone accepts it and lists the zone's nodes.
    pub async fn open(zone_url: &str, credentials: Credentials) -> Result<ZoneSession, ClientError> {
        ZoneSession::open_with(api::client::default_http(), zone_url, credentials).await
    }

    /// [`ZoneSession::open`] over the connection pool `http`.
    pub async fn open_with(
        http: reqwest::Client,
        zone_url: &str,
        credentials: Credentials,
    ) -> Result<ZoneSession, ClientError> {
        let zone_url = zone_url.trim_end_matches('/').to_owned();
        let token = login(&http, &zone_url, &credentials).await?;
        let client = authorized(Client::with_http(&zone_url, http.clone()), &token);
        let enrolling = matches!(credentials, Credentials::Enrollment(_));
        let session = ZoneSession {
            http,
            nodes: RwLock::new(vec![zone_url.clone()]),
            zone_url,
            credentials,
            current: RwLock::new(Current { generation: 0, token, client: client.clone() }),
            relogin: tokio::sync::Mutex::new(()),
        };
        // Listing the zone's nodes needs an account; enrolled hosts use the configured URL.
        if !enrolling {
            session.learn_nodes(&client).await?;
        }
        Ok(session)
    }

    /// The enrollment token hosts register with, when the session has one.
    pub fn enrollment_token(&self) -> Option<&SecretString> {
        match &self.credentials {
            Credentials::Enrollment(token) => Some(token),
            _ => None,
        }
    }

    pub fn zone_url(&self) -> &str {
        &self.zone_url
    }

    fn current(&self) -> Current {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers the nodes `client`'s node lists as serving.
    async fn learn_nodes(&self, client: &Client) -> Result<(), ClientError> {
        let zone = client.zone().await?;
        let mut urls = vec![self.zone_url.clone()];
        for node in zone.nodes.iter().filter(|n| n.state == "alive") {
            let url = node.api_url.trim_end_matches('/').to_owned();
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) = urls;
        Ok(())
    }

    /// Runs `call` with the session's client. When the zone answers 401 and the session has a
    /// password, logs in again and runs it once more; when the node cannot be reached, runs it on
    /// the zone's other nodes until one answers (and keeps using that one).
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let current = self.current();
        let first = match call(current.client.clone()).await {
            Err(e) if e.status() == Some(401) && matches!(self.credentials, Credentials::Password { .. }) => {
                self.refresh(current.generation).await?;
                call(self.current().client).await
            }
            other => other,
        };
        match first {
            Err(e) if node_gone(&e) => self.fail_over(current.client.base_url(), &call, e).await,
            other => other,
        }
    }

    /// Tries `call` on every other known node; the first that answers becomes the session's node.
    async fn fail_over<T, F, Fut>(&self, failed: &str, call: &F, error: ClientError) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let candidates: Vec<String> = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|u| u.as_str() != failed)
            .cloned()
            .collect();
        for url in candidates {
            let Current { generation, token, .. } = self.current();
            let client = authorized(Client::with_http(&url, self.http.clone()), &token);
            match call(client.clone()).await {
                Err(e) if node_gone(&e) => continue,
                outcome => {
                    let moved = {
                        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                        // Someone else may have moved (or logged in) meanwhile: keep theirs.
                        let still = current.generation == generation && current.client.base_url() == failed;
                        if still {
                            current.client = client.clone();
                        }
                        still
                    };
                    if moved {
                        tracing::warn!(from = %failed, to = %url, "a zone node stopped answering; using another");
                        if let Err(e) = self.learn_nodes(&client).await {
                            tracing::debug!(error = %e, "cannot list the zone's nodes");
                        }
                    }
                    return outcome;
                }
            }
        }
        Err(error)
    }

    /// Logs in again unless someone else did since `generation`.
    async fn refresh(&self, generation: u64) -> Result<(), ClientError> {
        let _one_at_a_time = self.relogin.lock().await;
        let current = self.current();
        if current.generation != generation {
            return Ok(());
        }
        let base = current.client.base_url().to_owned();
        let token = login(&self.http, &base, &self.credentials).await?;
        let client = Client::with_http(&base, self.http.clone()).with_token(token.expose_secret());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Current { generation: generation + 1, token, client };
        tracing::info!(zone = %base, "logged in to the zone again");
        Ok(())
    }
}

/// `client` with `token` as its bearer token; without one when it is empty (an enrolling session,
/// whose hosts each carry their own credential).
fn authorized(client: Client, token: &SecretString) -> Client {
    if token.expose_secret().is_empty() {
        client
    } else {
        client.with_token(token.expose_secret())
    }
}

/// True when the error says the node, not the request, is the problem: another node may answer.
fn node_gone(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport { .. }) || e.code() == Some(ErrorCode::NodeFenced)
}

/// A bearer token for the credentials, checked against the zone at `url`.
async fn login(http: &reqwest::Client, url: &str, credentials: &Credentials) -> Result<SecretString, ClientError> {
    let anonymous = Client::with_http(url, http.clone());
    match credentials {
        Credentials::Password { username, password } => {
            let (_, token) = anonymous.login(username, password.expose_secret()).await?;
            Ok(SecretString::from(token.token))
        }
        Credentials::Token(token) => {
            // Fail at start, not at the first report, when the token is not accepted.
            anonymous.with_token(token.expose_secret()).zone().await?;
            Ok(token.clone())
        }
        // Checked by the first registration; the session itself holds no token.
        Credentials::Enrollment(_) => Ok(SecretString::from(String::new())),
    }
}
