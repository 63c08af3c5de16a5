//! Accounts and bearer tokens.
//!
//! Only a token's SHA-256 reaches the database (see [`crate::auth::token_hash`]); a token dies with
//! its account through `ON DELETE CASCADE`. Expiry is decided by the database clock, so every node
//! of the zone agrees on whether a token is still valid. Neither password hashes nor token hashes
//! are recorded in spans or error messages.

use super::{assembled, is_unique_violation, AccountRow, Result, Store, StoreError, TokenRow};

const ACCOUNT_COLUMNS: &str = "username, password_hash, role, client_id, client_ids, created_at_ms";

#[derive(sqlx::FromRow)]
struct RawAccount {
    username: String,
    password_hash: String,
    role: String,
    client_id: Option<String>,
    client_ids: Option<String>,
    created_at_ms: i64,
}

/// A `client_ids` column as a scope. Only the API writes it, after parsing; a value that no
/// longer parses (written by hand) is the empty scope: the account sees nothing rather than
/// more than it should.
fn scope_of(column: Option<String>, username: &str) -> Option<api::ClientScope> {
    column.map(|text| {
        api::ClientScope::from_header(&text).unwrap_or_else(|e| {
            tracing::error!(username, error = %e, "an account's client_ids do not parse; it sees no client");
            api::ClientScope::default()
        })
    })
}

impl From<RawAccount> for AccountRow {
    fn from(r: RawAccount) -> Self {
        AccountRow {
            client_ids: scope_of(r.client_ids, &r.username),
            username: r.username,
            password_hash: r.password_hash,
            role: r.role,
            client_id: r.client_id,
            created_at_ms: r.created_at_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RawToken {
    username: String,
    role: String,
    client_id: Option<String>,
    client_ids: Option<String>,
    expires_at_ms: i64,
    expired: i64,
}

impl Store {
    /// Conflict when the username exists.
    ///
    /// `created_at_ms` of `row` is ignored: the database clock stamps it, and the stored row is
    /// returned.
    #[tracing::instrument(level = "debug", skip(self, row), fields(username = %row.username, role = %row.role))]
    pub async fn account_create(&self, row: &AccountRow) -> Result<AccountRow> {
        let sql = format!(
            "INSERT INTO accounts ({ACCOUNT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, (SELECT now_ms FROM db_clock)) RETURNING {ACCOUNT_COLUMNS}"
        );
        let res: Result<RawAccount, sqlx::Error> = with_pool!(self, |pool| {
            sqlx::query_as(assembled(&sql))
                .bind(&row.username)
                .bind(&row.password_hash)
                .bind(&row.role)
                .bind(&row.client_id)
                .bind(row.client_ids.as_ref().map(api::ClientScope::header_value))
                .fetch_one(pool)
                .await
        });
        match res {
            Ok(raw) => Ok(raw.into()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!("account {}", row.username))),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the account only if no account of that username exists; true if created.
    #[tracing::instrument(level = "debug", skip(self, row), fields(username = %row.username, role = %row.role))]
    pub async fn account_create_if_absent(&self, row: &AccountRow) -> Result<bool> {
        let sql = format!(
            "INSERT INTO accounts ({ACCOUNT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, (SELECT now_ms FROM db_clock)) ON CONFLICT (username) DO NOTHING"
        );
        let done = with_pool!(self, |pool| {
            sqlx::query(assembled(&sql))
                .bind(&row.username)
                .bind(&row.password_hash)
                .bind(&row.role)
                .bind(&row.client_id)
                .bind(row.client_ids.as_ref().map(api::ClientScope::header_value))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// The account named `username`, if any.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn account_get(&self, username: &str) -> Result<Option<AccountRow>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = $1");
        let raw: Option<RawAccount> =
            with_pool!(self, |pool| { sqlx::query_as(assembled(&sql)).bind(username).fetch_optional(pool).await })?;
        Ok(raw.map(Into::into))
    }

    /// Every account, ordered by username.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn accounts(&self) -> Result<Vec<AccountRow>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY username");
        let raw: Vec<RawAccount> = with_pool!(self, |pool| sqlx::query_as(assembled(&sql)).fetch_all(pool).await)?;
        Ok(raw.into_iter().map(Into::into).collect())
    }

    /// Deletes the account and its tokens; false if absent.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn account_delete(&self, username: &str) -> Result<bool> {
        // The tokens go by ON DELETE CASCADE (SQLite connections are opened with foreign keys on).
        const SQL: &str = "DELETE FROM accounts WHERE username = $1";
        let done =
            with_pool!(self, |pool| sqlx::query(SQL).bind(username).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    // --- tokens (only their SHA-256 is stored) ---

    /// Stores a token's hash for `username`, valid for `ttl_ms` from the database clock.
    /// Returns its expiry (epoch milliseconds). An unknown username is an error.
    #[tracing::instrument(level = "debug", skip(self, token_hash))]
    pub async fn token_insert(&self, token_hash: &str, username: &str, ttl_ms: i64) -> Result<i64> {
        const SQL: &str = "INSERT INTO tokens (hash, username, created_at_ms, expires_at_ms) \
             SELECT $1, $2, now_ms, now_ms + $3 FROM db_clock RETURNING expires_at_ms";
        let res: Result<i64, sqlx::Error> = with_pool!(self, |pool| {
            sqlx::query_scalar(SQL).bind(token_hash).bind(username).bind(ttl_ms).fetch_one(pool).await
        });
        match res {
            Ok(expires) => Ok(expires),
            Err(e) if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) => {
                Err(StoreError::Other(format!("no account {username} for a new token")))
            }
            // 32 random bytes do not collide; report it without the hash all the same.
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict("token".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The account a token hash belongs to, with its expiry judged by the database clock.
    /// Expired tokens are still returned (with `expired` set) until purged.
    #[tracing::instrument(level = "debug", skip(self, token_hash))]
    pub async fn token_lookup(&self, token_hash: &str) -> Result<Option<TokenRow>> {
        const SQL: &str = "SELECT a.username, a.role, a.client_id, a.client_ids, t.expires_at_ms, \
             CAST(CASE WHEN t.expires_at_ms <= (SELECT now_ms FROM db_clock) THEN 1 ELSE 0 END AS BIGINT) AS expired \
             FROM tokens t JOIN accounts a ON a.username = t.username WHERE t.hash = $1";
        let raw: Option<RawToken> =
            with_pool!(self, |pool| { sqlx::query_as(SQL).bind(token_hash).fetch_optional(pool).await })?;
        Ok(raw.map(|r| TokenRow {
            client_ids: scope_of(r.client_ids, &r.username),
            username: r.username,
            role: r.role,
            client_id: r.client_id,
            expires_at_ms: r.expires_at_ms,
            expired: r.expired != 0,
        }))
    }

    /// Deletes one token (its holder logs out); false if there was none.
    #[tracing::instrument(level = "debug", skip(self, token_hash))]
    pub async fn token_delete(&self, token_hash: &str) -> Result<bool> {
        const SQL: &str = "DELETE FROM tokens WHERE hash = $1";
        let done =
            with_pool!(self, |pool| sqlx::query(SQL).bind(token_hash).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Deletes every token expired by the database clock; returns how many.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn tokens_purge_expired(&self) -> Result<u64> {
        const SQL: &str = "DELETE FROM tokens WHERE expires_at_ms <= (SELECT now_ms FROM db_clock)";
        let done = with_pool!(self, |pool| sqlx::query(SQL).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done)
    }
}
