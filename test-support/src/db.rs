//! A fresh PostgreSQL database per test.
//!
//! [`TestDb::create`] makes a database named `zt_<random>` on the server at
//! [`pg_admin_url`](crate::pg_admin_url) and hands out its URL; the database is dropped with
//! `DROP DATABASE ... WITH (FORCE)` (which also ends the connections of nodes still holding it) by
//! [`TestDb::drop_db`] or, best effort, when the value is dropped. A test that is killed before either
//! leaves a `zt_` database behind; they are harmless and can be listed with
//! `psql -h 127.0.0.1 -U postgres -l | grep zt_`.

use std::time::Duration;

use sqlx::Executor;

use crate::services::{self, connect_pg, missing_service, PG_URL_ENV};

/// How long dropping a test database may take before it is given up (it is best effort).
const DROP_TIMEOUT: Duration = Duration::from_secs(20);

/// A PostgreSQL database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    dropped: bool,
}

impl TestDb {
    /// Creates a fresh, empty database. Panics with a clear message when PostgreSQL is unreachable.
    pub async fn create() -> TestDb {
        let admin_url = services::pg_admin_url();
        let mut conn = connect_pg(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{}", missing_service("PostgreSQL", &admin_url, PG_URL_ENV, &e)));
        let name = format!("zt_{}", crate::net::short_id());
        // The name is ours (hex digits), so formatting it into the statement is safe.
        conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name} on {}: {e}", services::redact(&admin_url)));
        let _ = sqlx::Connection::close(conn).await;
        let url = database_url(&admin_url, &name);
        TestDb { name, url, admin_url, dropped: false }
    }

    /// The database's name, `zt_<12 hex digits>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the database, as a node's `ZONE_DATABASE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a connection pool on the database, for tests that look at the store directly.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(services::SERVICE_CHECK_TIMEOUT)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database {}: {e}", self.name))
    }

    /// Whether a database of this name exists on the server (used to check that dropping works).
    pub async fn exists(&self) -> bool {
        database_exists_at(&self.admin_url, &self.name).await
    }

    /// Drops the database now, ending the connections still open on it. Panics when that fails.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await.unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop cannot await, and may run inside a runtime (where blocking on it would panic), so the
        // drop runs on its own thread with its own small runtime. It is joined: the test process could
        // otherwise exit before the statement is sent.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let worker = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match rt {
                Ok(rt) => rt.block_on(drop_database(&admin_url, &name)),
                Err(e) => Err(format!("cannot drop test database {name}: no runtime: {e}")),
            }
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: {e}"),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let work = async {
        let mut conn = connect_pg(admin_url).await?;
        conn.execute(sqlx::AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)))
            .await
            .map_err(|e| e.to_string())?;
        let _ = sqlx::Connection::close(conn).await;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(DROP_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot drop test database {name}: {e}")),
        Err(_) => Err(format!("cannot drop test database {name}: no answer within {DROP_TIMEOUT:?}")),
    }
}

/// Whether a database named `name` exists on the server at [`pg_admin_url`](crate::pg_admin_url).
pub async fn database_exists(name: &str) -> bool {
    database_exists_at(&services::pg_admin_url(), name).await
}

async fn database_exists_at(admin_url: &str, name: &str) -> bool {
    let mut conn = connect_pg(admin_url).await.unwrap_or_else(|e| panic!("cannot reach PostgreSQL: {e}"));
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot list databases: {e}"));
    found.is_some()
}

/// `admin_url` with its database replaced by `name` (user, host, port and query kept).
fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url)
        .unwrap_or_else(|e| panic!("${PG_URL_ENV} is not a valid URL ({}): {e}", services::redact(admin_url)));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "zt_1"),
            "postgres://postgres@127.0.0.1:5432/zt_1"
        );
        assert_eq!(
            database_url("postgres://u:p@db:6543/x?sslmode=disable", "zt_2"),
            "postgres://u:p@db:6543/zt_2?sslmode=disable"
        );
        assert_eq!(database_url("postgres://postgres@127.0.0.1", "zt_3"), "postgres://postgres@127.0.0.1/zt_3");
    }
}
