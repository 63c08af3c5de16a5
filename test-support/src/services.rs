//! Where the shared services are, and checks that fail loudly when one is missing.
//!
//! The tests need a PostgreSQL server and a RabbitMQ broker. Their addresses come from the
//! environment so a developer can point the tests elsewhere; the defaults are what
//! `scripts/ensure-services` sets up on 127.0.0.1. A test never skips because a service is missing:
//! a skipped test is a passing test nobody ran.

use std::time::Duration;

/// How long a service check waits for a connection before declaring the service missing.
pub const SERVICE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable overriding [`pg_admin_url`].
pub const PG_URL_ENV: &str = "ZONE_TEST_PG_URL";
/// Environment variable overriding [`amqp_url`].
pub const AMQP_URL_ENV: &str = "ZONE_TEST_AMQP_URL";

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A PostgreSQL URL of a user that may create and drop databases (`$ZONE_TEST_PG_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/postgres`).
pub fn pg_admin_url() -> String {
    env_or(PG_URL_ENV, DEFAULT_PG_URL)
}

/// The shared RabbitMQ broker (`$ZONE_TEST_AMQP_URL`, by default
/// `amqp://guest:guest@127.0.0.1:5672/%2f`). Tests share it and keep apart through
/// [`unique_prefix`](crate::unique_prefix).
pub fn amqp_url() -> String {
    env_or(AMQP_URL_ENV, DEFAULT_AMQP_URL)
}

fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default.to_owned(),
    }
}

/// Panics with a clear message unless PostgreSQL at [`pg_admin_url`] accepts a connection.
pub async fn require_postgres() {
    let url = pg_admin_url();
    if let Err(e) = connect_pg(&url).await {
        panic!("{}", missing_service("PostgreSQL", &url, PG_URL_ENV, &e));
    }
}

/// Panics with a clear message unless RabbitMQ at [`amqp_url`] accepts an AMQP login.
pub async fn require_rabbitmq() {
    let url = amqp_url();
    if let Err(e) = check_amqp(&url).await {
        panic!("{}", missing_service("RabbitMQ", &url, AMQP_URL_ENV, &e));
    }
}

/// Opens one admin connection to PostgreSQL, with a timeout.
pub async fn connect_pg(url: &str) -> Result<sqlx::PgConnection, String> {
    use sqlx::Connection;
    match tokio::time::timeout(SERVICE_CHECK_TIMEOUT, sqlx::PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {SERVICE_CHECK_TIMEOUT:?}")),
    }
}

/// Connects and logs in to an AMQP broker, then closes the connection.
pub async fn check_amqp(url: &str) -> Result<(), String> {
    let connect = lapin::Connection::connect(url, lapin::ConnectionProperties::default());
    match tokio::time::timeout(SERVICE_CHECK_TIMEOUT, connect).await {
        Ok(Ok(conn)) => {
            // Closing is courtesy; the check already passed.
            let _ = conn.close(200, "e2e service check".into()).await;
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no AMQP login within {SERVICE_CHECK_TIMEOUT:?}")),
    }
}

pub fn missing_service(service: &str, url: &str, env: &str, error: &str) -> String {
    format!(
        "{service} is required by the tests but {} is not usable: {error}\n\
         Start it with `scripts/ensure-services` (or point ${env} at a running {service}). \
         Tests never skip when a service is missing.",
        redact(url)
    )
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
    }
}
