//! What a configuration file holds: one struct per `[section]`, each field documented, unknown
//! keys refused. The environment variable that overrides a field, and the check its value must
//! pass, are in [`super::settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// The whole configuration of a node, as validated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[zone]`: this zone's name, this node's address, its data directory.
    pub zone: ZoneConfig,
    /// `[database]`: the database every node of the zone shares.
    pub database: DatabaseConfig,
    /// `[bus]`: the message bus every node of the zone shares.
    pub bus: BusConfig,
    /// `[admin]`: the bootstrap admin account.
    pub admin: AdminConfig,
    /// `[cluster]`: heartbeats, eviction and the ring.
    pub cluster: ClusterConfig,
    /// `[http]`: limits of the REST API.
    pub http: HttpConfig,
    /// `[hosts]`: host reports and agent tasks.
    pub hosts: HostsConfig,
    /// `[federation]`: child zones.
    pub federation: FederationConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneConfig {
    /// This zone's name: 1-63 characters of `[A-Za-z0-9_-]`.
    pub name: String,
    /// Address the API binds.
    pub listen: String,
    /// Public URL of this zone's API; default `http://` + listen.
    pub api_url: Option<String>,
    /// Where embedded state lives.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; default a SQLite file in the data directory.
    pub url: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `memory://` or `amqp://...`.
    pub url: Secret,
    /// Prefix of every queue and exchange of this zone; default the zone name.
    pub prefix: Option<String>,
    /// How long a bus call waits for its reply unless the caller says otherwise.
    pub call_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The bootstrap admin, created on first start if absent.
    pub username: String,
    /// Its password; when unset, one is generated and printed once.
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How often a node stamps its heartbeat and reconciles its ring.
    pub heartbeat_interval_ms: u64,
    /// A node whose heartbeat is older than this is evicted by its peers.
    pub dead_after_ms: u64,
    /// Virtual nodes per management node on the ring.
    pub virtual_nodes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Lifetime of a bearer token.
    pub token_ttl_secs: u64,
    /// A connection must send a request's whole head within this, else it is closed: a client
    /// that sends half a request cannot hold a connection forever.
    pub header_read_timeout_ms: u64,
    /// A request that has not been answered within this gets 504 `timeout`; above the forward
    /// timeout, so a forwarded request ends by its own deadline first (watches wait less).
    pub request_timeout_ms: u64,
    /// Open connections at most; further clients wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// With `tls_key_file`, the node serves HTTPS with this certificate chain (PEM).
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// More root certificates (PEM) trusted for outgoing HTTPS (children, agents), beside the
    /// system's: a private CA.
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostsConfig {
    /// How often hosts are expected to report; agents should report at this interval.
    pub report_interval_ms: u64,
    /// A host that misses this many reports in a row is marked down.
    pub max_missed_reports: u64,
    /// How long the zone waits for an agent's callback before the task fails.
    pub agent_timeout_ms: u64,
}

/// Child zones: polling, forwarding, scatter-gather, the owner-lookup cache, and the key that
/// seals child credentials (see [`crate::secrets`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// How often each child is polled.
    pub poll_interval_ms: u64,
    /// How long one poll may take before it counts as a failure.
    pub poll_timeout_ms: u64,
    /// Failed polls in a row after which a child is offline and left out of routing; it is
    /// online again at its next good answer.
    pub failure_threshold: u32,
    /// Up to this much random delay is added to each poll, so children are not all polled in the
    /// same instant; less than the poll interval.
    pub poll_jitter_ms: u64,
    /// Polls in flight at once, over all children.
    pub max_concurrent_polls: usize,
    /// How long a child is asked to hold this zone's watch (`GET /v1/zone/watch`) before
    /// answering that nothing changed; the child caps it at 30 s.
    pub watch_wait_ms: u64,
    /// How long to wait before watching a child again after a watch failed.
    pub watch_retry_ms: u64,
    /// Zones a forwarded request may cross; a request that would cross more is refused with
    /// `hop_limit_exceeded`.
    pub hop_limit: usize,
    /// How long a request forwarded to a child may take: a forwarded create waits for the child's
    /// agents.
    pub forward_timeout_ms: u64,
    /// How long a list across the subtree waits for children; those that have not answered by
    /// then are named in `unreachable_zones`.
    pub scatter_deadline_ms: u64,
    /// Entries of the owner-lookup cache ("which lowest zone manages client X").
    pub lookup_cache_capacity: u64,
    /// A file holding the key that seals child-zone credentials: 64 hex digits or the base64 of
    /// 32 bytes. Every node of a zone needs the same key. Default: `<data_dir>/secret.key`,
    /// generated at first start.
    pub secret_key_file: Option<PathBuf>,
    /// The key itself, from `ZONE_SECRET_KEY` only: never read from the file, which is often
    /// shared more widely than a node's environment.
    #[serde(skip)]
    pub secret_key: Option<Secret>,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig { name: "default".into(), listen: "127.0.0.1:8080".into(), api_url: None, data_dir: "./data".into() }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig { url: Secret::new("memory://"), prefix: None, call_timeout_ms: 30_000 }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { username: "admin".into(), password: None }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { heartbeat_interval_ms: 1000, dead_after_ms: 5000, virtual_nodes: 128 }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit_bytes: 1024 * 1024,
            token_ttl_secs: 3600,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 120_000,
            max_connections: 4096,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
        }
    }
}

impl Default for HostsConfig {
    fn default() -> Self {
        HostsConfig { report_interval_ms: 1000, max_missed_reports: 3, agent_timeout_ms: 30_000 }
    }
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            poll_interval_ms: 5000,
            poll_timeout_ms: 1000,
            failure_threshold: 3,
            poll_jitter_ms: 100,
            max_concurrent_polls: 32,
            watch_wait_ms: api::federation::WATCH_DEFAULT_TIMEOUT_MS,
            watch_retry_ms: 1000,
            hop_limit: api::federation::DEFAULT_HOP_LIMIT,
            forward_timeout_ms: 60_000,
            scatter_deadline_ms: 5000,
            lookup_cache_capacity: 1_000_000,
            secret_key_file: None,
            secret_key: None,
        }
    }
}

// --- accessors for validated values ---

impl Config {
    pub fn api_url(&self) -> &str {
        self.zone.api_url.as_deref().unwrap_or_default()
    }
    pub fn database_url(&self) -> &str {
        self.database.url.as_ref().map(Secret::expose).unwrap_or_default()
    }
    pub fn bus_prefix(&self) -> &str {
        self.bus.prefix.as_deref().unwrap_or_default()
    }
    pub fn listen_addr(&self) -> SocketAddr {
        self.zone.listen.parse().expect("validated in Config::load")
    }
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.cluster.heartbeat_interval_ms)
    }
    pub fn dead_after(&self) -> Duration {
        Duration::from_millis(self.cluster.dead_after_ms)
    }
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.bus.call_timeout_ms)
    }
    pub fn host_report_interval(&self) -> Duration {
        Duration::from_millis(self.hosts.report_interval_ms)
    }
    pub fn agent_timeout(&self) -> Duration {
        Duration::from_millis(self.hosts.agent_timeout_ms)
    }
}

impl FederationConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn poll_timeout(&self) -> Duration {
        Duration::from_millis(self.poll_timeout_ms)
    }
    pub fn poll_jitter(&self) -> Duration {
        Duration::from_millis(self.poll_jitter_ms)
    }
    pub fn watch_wait(&self) -> Duration {
        Duration::from_millis(self.watch_wait_ms)
    }
    pub fn watch_retry(&self) -> Duration {
        Duration::from_millis(self.watch_retry_ms)
    }
    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }
    pub fn scatter_deadline(&self) -> Duration {
        Duration::from_millis(self.scatter_deadline_ms)
    }
}
