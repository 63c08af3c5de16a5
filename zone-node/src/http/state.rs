//! The state every request handler shares: one `Arc` of the node's handles, built by
//! [`crate::app::Application::build`] and passed to the router with `Router::with_state`. It lives
//! here, below both, so `app` and `http` do not import each other.

use std::sync::Arc;

use moka::future::Cache;

use crate::agent::client::Agents;
use crate::bus::Bus;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::store::{Store, TokenRow, ZoneRow};
use crate::workqueue::WorkQueues;

/// Everything a request handler needs. One `Arc`: axum clones the state for every extractor of
/// every request, so a clone must not copy the zone's strings or bump a dozen reference counts.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Store,
    pub bus: Bus,
    pub cluster: Cluster,
    pub work: WorkQueues,
    pub zone: ZoneRow,
    /// Verified tokens by SHA-256, for [`crate::http::auth::TOKEN_CACHE_TTL`].
    /// A sync cache: read on every request, and a read of moka's future cache costs more.
    pub tokens: moka::sync::Cache<String, TokenRow>,
    /// Enrolled hosts' credentials (SHA-256) → their host, for
    /// [`crate::http::auth::HOST_CREDENTIAL_CACHE_TTL`]: a host reports every few seconds to
    /// minutes, and each report would otherwise read the database first.
    pub host_credentials: Cache<String, uuid::Uuid>,
    /// Agent tasks waiting for their callbacks.
    pub agents: Agents,
    /// Where requests go in this zone's subtree (its own hosts or its children).
    pub gateway: Arc<federation::Gateway>,
    /// Keeps the gateway's view of the children current.
    pub sync: crate::gateway::RegistrySync,
    /// Seals child zones' passwords at rest.
    pub secrets: Arc<crate::secrets::SecretKey>,
    /// Bounds on password checks (in flight, and failures per username and address).
    pub logins: crate::http::login_limit::LoginLimits,
    /// Steady host reports answered from memory, for the sweep.
    pub presence: Arc<crate::services::host::Presence>,
    /// Lowest-zone answers as sent, by client ([`crate::http::clients::Rendered`]).
    pub lookup_answers: moka::sync::Cache<String, Arc<crate::http::clients::Rendered>>,
}
