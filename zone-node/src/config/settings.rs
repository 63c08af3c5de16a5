//! Every setting once: its environment variable, its file key, how the variable's text becomes the
//! field's value, and the check the value must pass.
//!
//! [`Config::load`] applies the variables that are set (and not empty) in the order of
//! [`SETTINGS`], then runs every check in that order, so a check may rely on the settings above it
//! (the API URL defaults to the validated listen address, the bus prefix to the zone name). An
//! error names the row: `invalid setting ZONE_X (section.key) = "value": what is wrong`, with `-`
//! for a setting only the file (or only the environment) can set.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, ConfigError};
use crate::redact::redact_url;
use crate::secret::Secret;

/// One setting: a row of [`SETTINGS`].
pub(super) struct Setting {
    /// Its environment variable; `-` when only the file sets it.
    pub env: &'static str,
    /// Its key in the file; `-` when only the environment sets it.
    pub key: &'static str,
    /// Stores the variable's text in the configuration; `None` when it has no variable.
    apply: Option<Apply>,
    /// Checks the value once the file and the environment are in, and fills in a default that
    /// depends on other settings.
    check: Check,
}

/// Stores a variable's text in its field.
type Apply = fn(&mut Config, String) -> Result<(), Problem>;
/// Checks a setting's value, completing it where its default depends on other settings.
type Check = fn(&mut Config) -> Result<(), Problem>;

/// What is wrong with a value: the value as it may be shown (redacted for secrets), and why.
pub(super) struct Problem {
    value: String,
    problem: String,
}

fn problem(value: impl Into<String>, problem: impl Into<String>) -> Problem {
    Problem { value: value.into(), problem: problem.into() }
}

impl Setting {
    fn invalid(&self, Problem { value, problem }: Problem) -> ConfigError {
        ConfigError::Invalid { env: self.env, key: self.key, value, problem }
    }
}

/// A row for `section.field`, set by the variable `env`, or by the file only (`-`).
macro_rules! setting {
    (-, $section:ident . $field:ident, $check:expr) => {
        Setting { env: "-", key: concat!(stringify!($section), ".", stringify!($field)), apply: None, check: $check }
    };
    ($env:literal, $section:ident . $field:ident, $check:expr) => {
        Setting {
            env: $env,
            key: concat!(stringify!($section), ".", stringify!($field)),
            apply: Some(|config, text| {
                config.$section.$field = FromEnv::from_env(text)?;
                Ok(())
            }),
            check: $check,
        }
    };
}

/// Every setting, in the order of the file's sections.
pub(super) const SETTINGS: &[Setting] = &[
    setting!("ZONE_NAME", zone.name, |c| check_name(&c.zone.name)),
    setting!("ZONE_LISTEN", zone.listen, |c| check_listen(&c.zone.listen)),
    setting!("ZONE_API_URL", zone.api_url, check_api_url),
    setting!("ZONE_DATA_DIR", zone.data_dir, |_| Ok(())),
    setting!("ZONE_DATABASE_URL", database.url, check_database_url),
    setting!("ZONE_BUS_URL", bus.url, |c| check_bus_url(c.bus.url.expose())),
    setting!("ZONE_BUS_PREFIX", bus.prefix, check_bus_prefix),
    setting!(-, bus.call_timeout_ms, |c| match c.bus.call_timeout_ms {
        0 => Err(problem("0", "must be at least 1")),
        _ => Ok(()),
    }),
    setting!("ZONE_ADMIN_USERNAME", admin.username, |c| check_username(&c.admin.username)),
    setting!("ZONE_ADMIN_PASSWORD", admin.password, |c| match &c.admin.password {
        Some(pw) => api::validate::check_password_policy(pw.expose()).map_err(|p| problem("<redacted>", p)),
        None => Ok(()),
    }),
    setting!("ZONE_HEARTBEAT_INTERVAL_MS", cluster.heartbeat_interval_ms, |c| {
        between(c.cluster.heartbeat_interval_ms, 50, 60_000)
    }),
    setting!("ZONE_DEAD_AFTER_MS", cluster.dead_after_ms, |c| {
        let least = 3 * c.cluster.heartbeat_interval_ms;
        let ms = c.cluster.dead_after_ms;
        if ms < least {
            return Err(problem(ms.to_string(), format!("must be at least 3 heartbeat intervals ({least} ms)")));
        }
        Ok(())
    }),
    setting!(-, cluster.virtual_nodes, |c| between(c.cluster.virtual_nodes.into(), 1, 4096)),
    setting!("ZONE_BODY_LIMIT_BYTES", http.body_limit_bytes, |c| {
        between(c.http.body_limit_bytes as u64, 1024, 64 * 1024 * 1024)
    }),
    setting!("ZONE_TOKEN_TTL_SECS", http.token_ttl_secs, |c| {
        between(c.http.token_ttl_secs, 60, 86_400).map_err(|p| problem(p.value, p.problem + " (24 hours)"))
    }),
    setting!("ZONE_HEADER_READ_TIMEOUT_MS", http.header_read_timeout_ms, |c| {
        between(c.http.header_read_timeout_ms, 100, 60_000)
    }),
    setting!("ZONE_REQUEST_TIMEOUT_MS", http.request_timeout_ms, |c| {
        // Forwarded requests end by their own deadline, not by this one (and watches wait at
        // most this less 1 s, see `http::zone::watch_zone`).
        let least = (c.federation.forward_timeout_ms + 1000).max(2000);
        let ms = c.http.request_timeout_ms;
        if !(least..=3_600_000).contains(&ms) {
            return Err(problem(
                ms.to_string(),
                format!("must be between {least} (the forward timeout plus 1 s, at least 2000) and 3600000"),
            ));
        }
        Ok(())
    }),
    setting!("ZONE_MAX_CONNECTIONS", http.max_connections, |c| between(c.http.max_connections as u64, 16, 1_000_000)),
    setting!("ZONE_TLS_CERT_FILE", http.tls_cert_file, |c| match (&c.http.tls_cert_file, &c.http.tls_key_file) {
        (Some(cert), None) => Err(problem(cert.display().to_string(), "needs ZONE_TLS_KEY_FILE as well")),
        (Some(cert), _) => readable(cert),
        _ => Ok(()),
    }),
    setting!("ZONE_TLS_KEY_FILE", http.tls_key_file, |c| match (&c.http.tls_cert_file, &c.http.tls_key_file) {
        (None, Some(key)) => Err(problem(key.display().to_string(), "needs ZONE_TLS_CERT_FILE as well")),
        (_, Some(key)) => readable(key),
        _ => Ok(()),
    }),
    setting!("ZONE_TLS_CA_FILE", http.tls_ca_file, |c| match &c.http.tls_ca_file {
        Some(ca) => readable(ca),
        None => Ok(()),
    }),
    setting!("ZONE_HOST_REPORT_INTERVAL_MS", hosts.report_interval_ms, |c| {
        between(c.hosts.report_interval_ms, 50, 3_600_000)
    }),
    setting!("ZONE_HOST_MAX_MISSED_REPORTS", hosts.max_missed_reports, |c| between(
        c.hosts.max_missed_reports,
        1,
        1000
    )),
    setting!("ZONE_AGENT_TIMEOUT_MS", hosts.agent_timeout_ms, |c| between(c.hosts.agent_timeout_ms, 100, 3_600_000)),
    setting!("ZONE_POLL_INTERVAL_MS", federation.poll_interval_ms, |c| {
        between(c.federation.poll_interval_ms, 50, 3_600_000)
    }),
    setting!("ZONE_POLL_TIMEOUT_MS", federation.poll_timeout_ms, |c| between(
        c.federation.poll_timeout_ms,
        10,
        600_000
    )),
    setting!("ZONE_POLL_FAILURE_THRESHOLD", federation.failure_threshold, |c| {
        between(c.federation.failure_threshold.into(), 1, 1000)
    }),
    setting!(-, federation.poll_jitter_ms, |c| {
        let (jitter, interval) = (c.federation.poll_jitter_ms, c.federation.poll_interval_ms);
        if jitter >= interval {
            return Err(problem(jitter.to_string(), format!("must be less than the poll interval ({interval} ms)")));
        }
        Ok(())
    }),
    setting!(-, federation.max_concurrent_polls, |c| between(c.federation.max_concurrent_polls as u64, 1, 10_000)),
    setting!("ZONE_WATCH_WAIT_MS", federation.watch_wait_ms, |c| {
        between(c.federation.watch_wait_ms, 100, api::federation::WATCH_MAX_TIMEOUT_MS)
    }),
    setting!(-, federation.watch_retry_ms, |c| between(c.federation.watch_retry_ms, 10, 600_000)),
    setting!("ZONE_HOP_LIMIT", federation.hop_limit, |c| between(c.federation.hop_limit as u64, 1, 64)),
    setting!("ZONE_FORWARD_TIMEOUT_MS", federation.forward_timeout_ms, |c| {
        between(c.federation.forward_timeout_ms, 100, 3_600_000)
    }),
    setting!("ZONE_SCATTER_DEADLINE_MS", federation.scatter_deadline_ms, |c| {
        between(c.federation.scatter_deadline_ms, 50, 600_000)
    }),
    setting!(-, federation.lookup_cache_capacity, |c| between(c.federation.lookup_cache_capacity, 1, 1_000_000_000)),
    setting!("ZONE_SECRET_KEY_FILE", federation.secret_key_file, |c| match &c.federation.secret_key_file {
        Some(path) if path.as_os_str().is_empty() => Err(problem("", "must be a file path")),
        _ => Ok(()),
    }),
    // Environment only: `federation.secret_key` is not read from the file (see its doc).
    Setting {
        env: "ZONE_SECRET_KEY",
        key: "-",
        apply: Some(|config, text| {
            config.federation.secret_key = Some(Secret::new(text));
            Ok(())
        }),
        check: |c| match &c.federation.secret_key {
            Some(key) => crate::secrets::SecretKey::parse(key.expose()).map(drop).map_err(|p| problem("<redacted>", p)),
            None => Ok(()),
        },
    },
];

/// Applies the variables that are set and not empty, in table order.
pub(super) fn apply_env(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for setting in SETTINGS {
        let Some(apply) = setting.apply else { continue };
        if let Some(text) = env(setting.env).filter(|text| !text.is_empty()) {
            apply(config, text).map_err(|p| setting.invalid(p))?;
        }
    }
    Ok(())
}

/// Runs every check in table order; the first failure is the error.
pub(super) fn check(config: &mut Config) -> Result<(), ConfigError> {
    SETTINGS.iter().try_for_each(|setting| (setting.check)(config).map_err(|p| setting.invalid(p)))
}

/// How a variable's text becomes a field's value.
trait FromEnv: Sized {
    fn from_env(text: String) -> Result<Self, Problem>;
}

impl FromEnv for String {
    fn from_env(text: String) -> Result<Self, Problem> {
        Ok(text)
    }
}

impl FromEnv for PathBuf {
    fn from_env(text: String) -> Result<Self, Problem> {
        Ok(text.into())
    }
}

impl FromEnv for Secret {
    fn from_env(text: String) -> Result<Self, Problem> {
        Ok(Secret::new(text))
    }
}

impl FromEnv for u64 {
    fn from_env(text: String) -> Result<Self, Problem> {
        text.trim().parse().map_err(|_| problem(text, "must be a whole number"))
    }
}

impl FromEnv for u32 {
    fn from_env(text: String) -> Result<Self, Problem> {
        narrow(u64::from_env(text)?)
    }
}

impl FromEnv for usize {
    fn from_env(text: String) -> Result<Self, Problem> {
        narrow(u64::from_env(text)?)
    }
}

impl<T: FromEnv> FromEnv for Option<T> {
    fn from_env(text: String) -> Result<Self, Problem> {
        T::from_env(text).map(Some)
    }
}

fn narrow<T: TryFrom<u64>>(value: u64) -> Result<T, Problem> {
    T::try_from(value).map_err(|_| problem(value.to_string(), "is too large"))
}

// --- checks ---

fn between(value: u64, min: u64, max: u64) -> Result<(), Problem> {
    if !(min..=max).contains(&value) {
        return Err(problem(value.to_string(), format!("must be between {min} and {max}")));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), Problem> {
    let ok =
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(problem(name, "use 1 to 63 characters from A-Z, a-z, 0-9, '-' and '_'"));
    }
    Ok(())
}

fn check_listen(listen: &str) -> Result<(), Problem> {
    let addr: SocketAddr =
        listen.parse().map_err(|_| problem(listen, "must be an IP address and port, such as 127.0.0.1:8080"))?;
    match addr.port() {
        0 => Err(problem(listen, "port 0 is not allowed: parents and peers need a fixed port")),
        _ => Ok(()),
    }
}

/// A file the node can open (its contents are checked when the node starts).
fn readable(path: &std::path::Path) -> Result<(), Problem> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| problem(path.display().to_string(), format!("cannot be read: {e}")))
}

/// Trims a trailing `/`; defaults to `http://` (`https://` with a TLS certificate) + the listen
/// address (checked above).
fn check_api_url(c: &mut Config) -> Result<(), Problem> {
    let url = match &c.zone.api_url {
        Some(url) => {
            let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len();
            if !ok {
                return Err(problem(url, "must be an http:// or https:// URL"));
            }
            url.trim_end_matches('/').to_owned()
        }
        None if c.http.tls_cert_file.is_some() => format!("https://{}", c.listen_addr()),
        None => format!("http://{}", c.listen_addr()),
    };
    c.zone.api_url = Some(url);
    Ok(())
}

/// Defaults to a SQLite file in the data directory.
fn check_database_url(c: &mut Config) -> Result<(), Problem> {
    let url = match &c.database.url {
        Some(url) => url.expose().to_owned(),
        None => format!("sqlite://{}", c.zone.data_dir.join("zone.db").display()),
    };
    if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(problem(redact_url(&url), "must start with sqlite:, postgres:// or postgresql://"));
    }
    c.database.url = Some(Secret::new(url));
    Ok(())
}

fn check_bus_url(url: &str) -> Result<(), Problem> {
    if !(url.starts_with("memory://") || url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(problem(redact_url(url), "must start with memory://, amqp:// or amqps://"));
    }
    // Several RabbitMQ brokers: `amqp://u:p@h1:5672,u:p@h2:5672/vhost` or full URLs, comma-separated.
    if url.starts_with("amqp") {
        for one in crate::bus::amqp::brokers::split(url).map_err(|e| problem(redact_url(url), e))? {
            if !(one.starts_with("amqp://") || one.starts_with("amqps://")) {
                return Err(problem(redact_url(&one), "every broker must be an amqp:// or amqps:// URL"));
            }
        }
    }
    Ok(())
}

/// Defaults to the zone name (checked above).
fn check_bus_prefix(c: &mut Config) -> Result<(), Problem> {
    let prefix = c.bus.prefix.clone().unwrap_or_else(|| c.zone.name.clone());
    let ok = !prefix.is_empty()
        && prefix.len() <= 100
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(problem(prefix, "use 1 to 100 characters from A-Z, a-z, 0-9, '-', '_' and '.'"));
    }
    c.bus.prefix = Some(prefix);
    Ok(())
}

fn check_username(user: &str) -> Result<(), Problem> {
    if !api::validate::valid_username(user) {
        return Err(problem(user, "use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '@' and '-'"));
    }
    Ok(())
}
