//! The node's configuration: one TOML file per node (`--config FILE`), overridden by `ZONE_*`
//! environment variables, then validated once at start.
//!
//! A bad value stops the node before it touches the database or the bus, with a message that
//! names the setting both ways (`ZONE_DEAD_AFTER_MS` / `cluster.dead_after_ms`) and says what is
//! wrong. Secrets (the bootstrap admin password) never appear in `Debug` output or logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A value that must not be printed.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole configuration of a node, as validated.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub zone: ZoneConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub admin: AdminConfig,
    pub cluster: ClusterConfig,
    pub http: HttpConfig,
    pub hosts: HostsConfig,
    pub federation: FederationConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneConfig {
    /// This zone's name (`ZONE_NAME`): 1-63 characters of `[A-Za-z0-9_-]`.
    pub name: String,
    /// Address the API binds (`ZONE_LISTEN`).
    pub listen: String,
    /// Public URL of this zone's API (`ZONE_API_URL`); default `http://` + listen.
    pub api_url: Option<String>,
    /// Where embedded state lives (`ZONE_DATA_DIR`).
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...` (`ZONE_DATABASE_URL`); default a SQLite file in the
    /// data directory.
    pub url: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `memory://` or `amqp://...` (`ZONE_BUS_URL`).
    pub url: Secret,
    /// Prefix of every queue and exchange of this zone (`ZONE_BUS_PREFIX`); default the zone name.
    pub prefix: Option<String>,
    /// How long a bus call waits for its reply unless the caller says otherwise.
    pub call_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The bootstrap admin, created on first start if absent (`ZONE_ADMIN_USERNAME`).
    pub username: String,
    /// Its password (`ZONE_ADMIN_PASSWORD`); when unset, one is generated and printed once.
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How often a node stamps its heartbeat and reconciles its ring (`ZONE_HEARTBEAT_INTERVAL_MS`).
    pub heartbeat_interval_ms: u64,
    /// A node whose heartbeat is older than this is evicted by its peers (`ZONE_DEAD_AFTER_MS`).
    pub dead_after_ms: u64,
    /// Virtual nodes per management node on the ring.
    pub virtual_nodes: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted (`ZONE_BODY_LIMIT_BYTES`).
    pub body_limit_bytes: usize,
    /// Lifetime of a bearer token (`ZONE_TOKEN_TTL_SECS`).
    pub token_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostsConfig {
    /// How often hosts are expected to report (`ZONE_HOST_REPORT_INTERVAL_MS`); agents should
    /// report at this interval.
    pub report_interval_ms: u64,
    /// A host that misses this many reports in a row is marked down (`ZONE_HOST_MAX_MISSED_REPORTS`).
    pub max_missed_reports: u64,
    /// How long the zone waits for an agent's callback before the task fails (`ZONE_AGENT_TIMEOUT_MS`).
    pub agent_timeout_ms: u64,
}

/// Child zones: polling, forwarding, scatter-gather, the owner-lookup cache, and the key that
/// seals child credentials (see [`crate::secrets`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// How often each child is polled (`ZONE_POLL_INTERVAL_MS`).
    pub poll_interval_ms: u64,
    /// How long one poll may take before it counts as a failure (`ZONE_POLL_TIMEOUT_MS`).
    pub poll_timeout_ms: u64,
    /// Failed polls in a row after which a child is offline and left out of routing
    /// (`ZONE_POLL_FAILURE_THRESHOLD`); it is online again at its next good answer.
    pub failure_threshold: u32,
    /// Up to this much random delay is added to each poll, so children are not all polled in the
    /// same instant; less than the poll interval.
    pub poll_jitter_ms: u64,
    /// Polls in flight at once, over all children.
    pub max_concurrent_polls: usize,
    /// Zones a forwarded request may cross (`ZONE_HOP_LIMIT`); a request that would cross more is
    /// refused with `hop_limit_exceeded`.
    pub hop_limit: usize,
    /// How long a request forwarded to a child may take (`ZONE_FORWARD_TIMEOUT_MS`): a forwarded
    /// create waits for the child's agents.
    pub forward_timeout_ms: u64,
    /// How long a list across the subtree waits for children (`ZONE_SCATTER_DEADLINE_MS`); those
    /// that have not answered by then are named in `unreachable_zones`.
    pub scatter_deadline_ms: u64,
    /// Entries of the owner-lookup cache ("which lowest zone manages client X").
    pub lookup_cache_capacity: u64,
    /// A file holding the key that seals child-zone credentials (`ZONE_SECRET_KEY_FILE`): 64 hex
    /// digits or the base64 of 32 bytes. Every node of a zone needs the same key. Default:
    /// `<data_dir>/secret.key`, generated at first start.
    pub secret_key_file: Option<PathBuf>,
    /// The key itself, from `ZONE_SECRET_KEY` only: never read from the file, which is often
    /// shared more widely than a node's environment.
    #[serde(skip)]
    pub secret_key: Option<Secret>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            poll_interval_ms: 1000,
            poll_timeout_ms: 1000,
            failure_threshold: 3,
            poll_jitter_ms: 100,
            max_concurrent_polls: 32,
            hop_limit: api::federation::DEFAULT_HOP_LIMIT,
            forward_timeout_ms: 60_000,
            scatter_deadline_ms: 5000,
            lookup_cache_capacity: 1_000_000,
            secret_key_file: None,
            secret_key: None,
        }
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
    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }
    pub fn scatter_deadline(&self) -> Duration {
        Duration::from_millis(self.scatter_deadline_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let range = |env: &'static str, key: &'static str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(invalid(env, key, value.to_string(), format!("must be between {min} and {max}")))
            }
        };
        range("ZONE_POLL_INTERVAL_MS", "federation.poll_interval_ms", self.poll_interval_ms, 50, 3_600_000)?;
        range("ZONE_POLL_TIMEOUT_MS", "federation.poll_timeout_ms", self.poll_timeout_ms, 10, 600_000)?;
        range(
            "ZONE_POLL_FAILURE_THRESHOLD",
            "federation.failure_threshold",
            u64::from(self.failure_threshold),
            1,
            1000,
        )?;
        if self.poll_jitter_ms >= self.poll_interval_ms {
            return Err(invalid(
                "-",
                "federation.poll_jitter_ms",
                self.poll_jitter_ms.to_string(),
                format!("must be less than the poll interval ({} ms)", self.poll_interval_ms),
            ));
        }
        range("-", "federation.max_concurrent_polls", self.max_concurrent_polls as u64, 1, 10_000)?;
        range("ZONE_HOP_LIMIT", "federation.hop_limit", self.hop_limit as u64, 1, 64)?;
        range("ZONE_FORWARD_TIMEOUT_MS", "federation.forward_timeout_ms", self.forward_timeout_ms, 100, 3_600_000)?;
        range("ZONE_SCATTER_DEADLINE_MS", "federation.scatter_deadline_ms", self.scatter_deadline_ms, 50, 600_000)?;
        range("-", "federation.lookup_cache_capacity", self.lookup_cache_capacity, 1, 1_000_000_000)?;
        if let Some(path) = &self.secret_key_file {
            if path.as_os_str().is_empty() {
                return Err(invalid("ZONE_SECRET_KEY_FILE", "federation.secret_key_file", "", "must be a file path"));
            }
        }
        if let Some(key) = &self.secret_key {
            if let Err(problem) = crate::secrets::SecretKey::parse(key.expose()) {
                return Err(invalid("ZONE_SECRET_KEY", "-", "<redacted>", problem));
            }
        }
        Ok(())
    }
}

impl Default for HostsConfig {
    fn default() -> Self {
        HostsConfig { report_interval_ms: 1000, max_missed_reports: 3, agent_timeout_ms: 30_000 }
    }
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
        HttpConfig { body_limit_bytes: 1024 * 1024, token_ttl_secs: 3600 }
    }
}

/// A setting that is wrong, named both as its environment variable and its file key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {env} ({key}) = {value:?}: {problem}")]
    Invalid { env: &'static str, key: &'static str, value: String, problem: String },
}

fn invalid(env: &'static str, key: &'static str, value: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { env, key, value: value.into(), problem: problem.into() }
}

impl Config {
    /// Reads the file (if any), applies the environment, validates.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
                toml::from_str::<Config>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the process environment.
    pub fn load_from_process(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(file, &|name| std::env::var(name).ok())
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(v) = get("ZONE_NAME") {
            self.zone.name = v;
        }
        if let Some(v) = get("ZONE_LISTEN") {
            self.zone.listen = v;
        }
        if let Some(v) = get("ZONE_API_URL") {
            self.zone.api_url = Some(v);
        }
        if let Some(v) = get("ZONE_DATA_DIR") {
            self.zone.data_dir = v.into();
        }
        if let Some(v) = get("ZONE_DATABASE_URL") {
            self.database.url = Some(Secret::new(v));
        }
        if let Some(v) = get("ZONE_BUS_URL") {
            self.bus.url = Secret::new(v);
        }
        if let Some(v) = get("ZONE_BUS_PREFIX") {
            self.bus.prefix = Some(v);
        }
        if let Some(v) = get("ZONE_ADMIN_USERNAME") {
            self.admin.username = v;
        }
        if let Some(v) = get("ZONE_ADMIN_PASSWORD") {
            self.admin.password = Some(Secret::new(v));
        }
        let number = |env_name: &'static str, key: &'static str| -> Result<Option<u64>, ConfigError> {
            match get(env_name) {
                None => Ok(None),
                Some(v) => {
                    v.trim().parse::<u64>().map(Some).map_err(|_| invalid(env_name, key, v, "must be a whole number"))
                }
            }
        };
        if let Some(v) = number("ZONE_HEARTBEAT_INTERVAL_MS", "cluster.heartbeat_interval_ms")? {
            self.cluster.heartbeat_interval_ms = v;
        }
        if let Some(v) = number("ZONE_DEAD_AFTER_MS", "cluster.dead_after_ms")? {
            self.cluster.dead_after_ms = v;
        }
        if let Some(v) = number("ZONE_BODY_LIMIT_BYTES", "http.body_limit_bytes")? {
            self.http.body_limit_bytes = v as usize;
        }
        if let Some(v) = number("ZONE_TOKEN_TTL_SECS", "http.token_ttl_secs")? {
            self.http.token_ttl_secs = v;
        }
        if let Some(v) = number("ZONE_HOST_REPORT_INTERVAL_MS", "hosts.report_interval_ms")? {
            self.hosts.report_interval_ms = v;
        }
        if let Some(v) = number("ZONE_HOST_MAX_MISSED_REPORTS", "hosts.max_missed_reports")? {
            self.hosts.max_missed_reports = v;
        }
        if let Some(v) = number("ZONE_AGENT_TIMEOUT_MS", "hosts.agent_timeout_ms")? {
            self.hosts.agent_timeout_ms = v;
        }
        let f = &mut self.federation;
        if let Some(v) = number("ZONE_POLL_INTERVAL_MS", "federation.poll_interval_ms")? {
            f.poll_interval_ms = v;
        }
        if let Some(v) = number("ZONE_POLL_TIMEOUT_MS", "federation.poll_timeout_ms")? {
            f.poll_timeout_ms = v;
        }
        if let Some(v) = number("ZONE_POLL_FAILURE_THRESHOLD", "federation.failure_threshold")? {
            f.failure_threshold = u32::try_from(v).map_err(|_| {
                invalid("ZONE_POLL_FAILURE_THRESHOLD", "federation.failure_threshold", v.to_string(), "is too large")
            })?;
        }
        if let Some(v) = number("ZONE_HOP_LIMIT", "federation.hop_limit")? {
            f.hop_limit = usize::try_from(v)
                .map_err(|_| invalid("ZONE_HOP_LIMIT", "federation.hop_limit", v.to_string(), "is too large"))?;
        }
        if let Some(v) = number("ZONE_FORWARD_TIMEOUT_MS", "federation.forward_timeout_ms")? {
            f.forward_timeout_ms = v;
        }
        if let Some(v) = number("ZONE_SCATTER_DEADLINE_MS", "federation.scatter_deadline_ms")? {
            f.scatter_deadline_ms = v;
        }
        if let Some(v) = get("ZONE_SECRET_KEY_FILE") {
            f.secret_key_file = Some(v.into());
        }
        if let Some(v) = get("ZONE_SECRET_KEY") {
            f.secret_key = Some(Secret::new(v));
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let name = &self.zone.name;
        if name.is_empty()
            || name.len() > 63
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "ZONE_NAME",
                "zone.name",
                name,
                "use 1 to 63 characters from A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
        let listen: SocketAddr = self.zone.listen.parse().map_err(|_| {
            invalid(
                "ZONE_LISTEN",
                "zone.listen",
                &self.zone.listen,
                "must be an IP address and port, such as 127.0.0.1:8080",
            )
        })?;
        if listen.port() == 0 {
            return Err(invalid(
                "ZONE_LISTEN",
                "zone.listen",
                &self.zone.listen,
                "port 0 is not allowed: parents and peers need a fixed port",
            ));
        }
        match &self.zone.api_url {
            Some(url) => {
                let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len();
                if !ok {
                    return Err(invalid("ZONE_API_URL", "zone.api_url", url, "must be an http:// or https:// URL"));
                }
                self.zone.api_url = Some(url.trim_end_matches('/').to_owned());
            }
            None => self.zone.api_url = Some(format!("http://{listen}")),
        }
        let db = match &self.database.url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}", self.zone.data_dir.join("zone.db").display()),
        };
        let scheme_ok = db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://");
        if !scheme_ok {
            return Err(invalid(
                "ZONE_DATABASE_URL",
                "database.url",
                redact_url(&db),
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        self.database.url = Some(Secret::new(db));
        let bus = self.bus.url.expose();
        if !(bus.starts_with("memory://") || bus.starts_with("amqp://") || bus.starts_with("amqps://")) {
            return Err(invalid(
                "ZONE_BUS_URL",
                "bus.url",
                redact_url(bus),
                "must start with memory://, amqp:// or amqps://",
            ));
        }
        let prefix = self.bus.prefix.clone().unwrap_or_else(|| self.zone.name.clone());
        if prefix.is_empty()
            || prefix.len() > 100
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "ZONE_BUS_PREFIX",
                "bus.prefix",
                prefix,
                "use 1 to 100 characters from A-Z, a-z, 0-9, '-', '_' and '.'",
            ));
        }
        self.bus.prefix = Some(prefix);
        if self.bus.call_timeout_ms == 0 {
            return Err(invalid("-", "bus.call_timeout_ms", "0", "must be at least 1"));
        }
        let user = &self.admin.username;
        if !api::validate::valid_username(user) {
            return Err(invalid(
                "ZONE_ADMIN_USERNAME",
                "admin.username",
                user,
                "use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '@' and '-'",
            ));
        }
        if let Some(pw) = &self.admin.password {
            if let Err(problem) = api::validate::check_password_policy(pw.expose()) {
                return Err(invalid("ZONE_ADMIN_PASSWORD", "admin.password", "<redacted>", problem));
            }
        }
        let c = &self.cluster;
        if !(50..=60_000).contains(&c.heartbeat_interval_ms) {
            return Err(invalid(
                "ZONE_HEARTBEAT_INTERVAL_MS",
                "cluster.heartbeat_interval_ms",
                c.heartbeat_interval_ms.to_string(),
                "must be between 50 and 60000",
            ));
        }
        if c.dead_after_ms < 3 * c.heartbeat_interval_ms {
            return Err(invalid(
                "ZONE_DEAD_AFTER_MS",
                "cluster.dead_after_ms",
                c.dead_after_ms.to_string(),
                format!("must be at least 3 heartbeat intervals ({} ms)", 3 * c.heartbeat_interval_ms),
            ));
        }
        if !(1..=4096).contains(&c.virtual_nodes) {
            return Err(invalid(
                "-",
                "cluster.virtual_nodes",
                c.virtual_nodes.to_string(),
                "must be between 1 and 4096",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            return Err(invalid(
                "ZONE_BODY_LIMIT_BYTES",
                "http.body_limit_bytes",
                self.http.body_limit_bytes.to_string(),
                "must be between 1024 and 67108864",
            ));
        }
        if !(60..=30 * 86_400).contains(&self.http.token_ttl_secs) {
            return Err(invalid(
                "ZONE_TOKEN_TTL_SECS",
                "http.token_ttl_secs",
                self.http.token_ttl_secs.to_string(),
                "must be between 60 and 2592000 (30 days)",
            ));
        }
        let h = &self.hosts;
        if !(50..=3_600_000).contains(&h.report_interval_ms) {
            return Err(invalid(
                "ZONE_HOST_REPORT_INTERVAL_MS",
                "hosts.report_interval_ms",
                h.report_interval_ms.to_string(),
                "must be between 50 and 3600000",
            ));
        }
        if !(1..=1000).contains(&h.max_missed_reports) {
            return Err(invalid(
                "ZONE_HOST_MAX_MISSED_REPORTS",
                "hosts.max_missed_reports",
                h.max_missed_reports.to_string(),
                "must be between 1 and 1000",
            ));
        }
        if !(100..=3_600_000).contains(&h.agent_timeout_ms) {
            return Err(invalid(
                "ZONE_AGENT_TIMEOUT_MS",
                "hosts.agent_timeout_ms",
                h.agent_timeout_ms.to_string(),
                "must be between 100 and 3600000",
            ));
        }
        self.federation.validate()
    }

    // --- accessors for validated values ---

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
        self.zone.listen.parse().expect("validated in Config::validate")
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

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(None, &|name| map.get(name).cloned())
    }

    #[test]
    fn embedded_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.zone.name, "default");
        assert_eq!(c.api_url(), "http://127.0.0.1:8080");
        assert_eq!(c.database_url(), "sqlite://./data/zone.db");
        assert_eq!(c.bus.url.expose(), "memory://");
        assert_eq!(c.bus_prefix(), "default");
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(1));
        assert_eq!(c.dead_after(), Duration::from_secs(5));
        let f = &c.federation;
        assert_eq!((f.poll_interval(), f.poll_timeout(), f.failure_threshold), (ms(1000), ms(1000), 3));
        assert_eq!((f.poll_jitter(), f.max_concurrent_polls, f.hop_limit), (ms(100), 32, 8));
        assert_eq!((f.forward_timeout(), f.scatter_deadline()), (ms(60_000), ms(5000)));
        assert_eq!(f.lookup_cache_capacity, 1_000_000);
        assert_eq!((f.secret_key_file.as_deref(), f.secret_key.as_ref()), (None, None));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn federation_settings_from_the_environment() {
        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let c = load(&[
            ("ZONE_POLL_INTERVAL_MS", "500"),
            ("ZONE_POLL_TIMEOUT_MS", "400"),
            ("ZONE_POLL_FAILURE_THRESHOLD", "5"),
            ("ZONE_HOP_LIMIT", "4"),
            ("ZONE_FORWARD_TIMEOUT_MS", "1000"),
            ("ZONE_SCATTER_DEADLINE_MS", "250"),
            ("ZONE_SECRET_KEY_FILE", "/etc/zone/secret.key"),
            ("ZONE_SECRET_KEY", key),
        ])
        .unwrap();
        let f = &c.federation;
        assert_eq!((f.poll_interval(), f.poll_timeout(), f.failure_threshold, f.hop_limit), (ms(500), ms(400), 5, 4));
        assert_eq!((f.forward_timeout(), f.scatter_deadline()), (ms(1000), ms(250)));
        assert_eq!(f.secret_key_file.as_deref(), Some(Path::new("/etc/zone/secret.key")));
        assert_eq!(f.secret_key.as_ref().map(Secret::expose), Some(key));
        assert!(!format!("{c:?}").contains(key), "the key reaches Debug output");
    }

    #[test]
    fn the_secret_key_is_never_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.toml");
        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        std::fs::write(&path, format!("[federation]\nsecret_key = \"{key}\"\n")).unwrap();
        let err = Config::load(Some(&path), &|_| None).unwrap_err().to_string();
        assert!(err.contains("secret_key"), "{err}");
        std::fs::write(&path, "[federation]\npoll_interval_ms = 200\npoll_jitter_ms = 200\n").unwrap();
        let err = Config::load(Some(&path), &|_| None).unwrap_err().to_string();
        assert!(err.contains("federation.poll_jitter_ms"), "{err}");
    }

    #[test]
    fn environment_wins_and_prefix_follows_name() {
        let c =
            load(&[("ZONE_NAME", "eu-west"), ("ZONE_LISTEN", "0.0.0.0:9000"), ("ZONE_API_URL", "https://eu.example/")])
                .unwrap();
        assert_eq!(c.bus_prefix(), "eu-west");
        assert_eq!(c.api_url(), "https://eu.example");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("ZONE_LISTEN", "localhost")], "ZONE_LISTEN"),
            (&[("ZONE_LISTEN", "127.0.0.1:0")], "ZONE_LISTEN"),
            (&[("ZONE_DEAD_AFTER_MS", "1000")], "ZONE_DEAD_AFTER_MS"),
            (&[("ZONE_DEAD_AFTER_MS", "soon")], "ZONE_DEAD_AFTER_MS"),
            (&[("ZONE_BUS_URL", "redis://x")], "ZONE_BUS_URL"),
            (&[("ZONE_DATABASE_URL", "mysql://u:pw@h/db")], "ZONE_DATABASE_URL"),
            (&[("ZONE_NAME", "bad name")], "ZONE_NAME"),
            (&[("ZONE_API_URL", "ftp://x")], "ZONE_API_URL"),
            (&[("ZONE_ADMIN_PASSWORD", "short")], "ZONE_ADMIN_PASSWORD"),
            (&[("ZONE_POLL_INTERVAL_MS", "10")], "ZONE_POLL_INTERVAL_MS (federation.poll_interval_ms)"),
            (&[("ZONE_POLL_INTERVAL_MS", "often")], "ZONE_POLL_INTERVAL_MS"),
            (&[("ZONE_POLL_TIMEOUT_MS", "5")], "ZONE_POLL_TIMEOUT_MS (federation.poll_timeout_ms)"),
            (&[("ZONE_POLL_FAILURE_THRESHOLD", "0")], "ZONE_POLL_FAILURE_THRESHOLD (federation.failure_threshold)"),
            (&[("ZONE_POLL_FAILURE_THRESHOLD", "99999999999")], "ZONE_POLL_FAILURE_THRESHOLD"),
            (&[("ZONE_HOP_LIMIT", "0")], "ZONE_HOP_LIMIT (federation.hop_limit)"),
            (&[("ZONE_HOP_LIMIT", "65")], "ZONE_HOP_LIMIT"),
            (&[("ZONE_FORWARD_TIMEOUT_MS", "5")], "ZONE_FORWARD_TIMEOUT_MS (federation.forward_timeout_ms)"),
            (&[("ZONE_SCATTER_DEADLINE_MS", "0")], "ZONE_SCATTER_DEADLINE_MS (federation.scatter_deadline_ms)"),
            (&[("ZONE_SECRET_KEY", "hunter22hunter22")], "ZONE_SECRET_KEY"),
        ];
        for (vars, setting) in cases {
            let err = load(vars).unwrap_err().to_string();
            assert!(err.contains(setting), "{err} should name {setting}");
        }
        let err = load(&[("ZONE_DATABASE_URL", "mysql://u:hunter22@h/db")]).unwrap_err().to_string();
        assert!(!err.contains("hunter22"), "{err} leaks the password");
        let err = load(&[("ZONE_SECRET_KEY", "hunter22hunter22")]).unwrap_err().to_string();
        assert!(!err.contains("hunter22"), "{err} leaks the key");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.toml");
        std::fs::write(&path, "[zone]\nnmae = \"typo\"\n").unwrap();
        let err = Config::load(Some(&path), &|_| None).unwrap_err().to_string();
        assert!(err.contains("nmae"), "{err}");
    }

    #[test]
    fn shipped_config_files_parse() {
        for file in ["default.toml", "production.example.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(file);
            Config::load(Some(&path), &|_| None).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("postgres://root@h/db"), "postgres://root@h/db");
        assert_eq!(redact_url("memory://"), "memory://");
    }
}
