//! Host enrollment: tokens an admin makes so agents can register their hosts without an account,
//! and the per-host credentials those registrations hand out.
//!
//! Only SHA-256 hashes reach the database (as for bearer tokens). A token's uses are counted in
//! the statement that checks it, so concurrent enrollments never use a token more than
//! `max_uses` times; expiry is judged by the database clock.

use uuid::Uuid;

use super::{parse_uuid, Result, Store};

impl Store {
    /// Stores a new enrollment token (its hash), valid `ttl_ms` from the database clock for at most
    /// `max_uses` registrations. Returns its expiry (epoch milliseconds).
    #[tracing::instrument(level = "debug", skip(self, token_hash))]
    pub async fn enrollment_token_create(
        &self,
        id: Uuid,
        token_hash: &str,
        max_uses: i64,
        ttl_ms: i64,
        created_by: &str,
    ) -> Result<i64> {
        const SQL: &str =
            "INSERT INTO enrollment_tokens (id, token_hash, max_uses, expires_at_ms, created_at_ms, created_by) \
             SELECT $1, $2, $3, now_ms + $4, now_ms, $5 FROM db_clock RETURNING expires_at_ms";
        let id = id.to_string();
        let expires: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(&id)
                .bind(token_hash)
                .bind(max_uses)
                .bind(ttl_ms)
                .bind(created_by)
                .fetch_one(pool)
                .await
        })?;
        Ok(expires)
    }

    /// Takes one use of the enrollment token with this hash: its id when it exists, has not
    /// expired and has uses left; `None` otherwise (which of these is not said).
    #[tracing::instrument(level = "debug", skip(self, token_hash))]
    pub async fn enrollment_token_take(&self, token_hash: &str) -> Result<Option<Uuid>> {
        const WHAT: &str = "enrollment token";
        const SQL: &str = "UPDATE enrollment_tokens SET uses = uses + 1 \
             WHERE token_hash = $1 AND uses < max_uses AND expires_at_ms > (SELECT now_ms FROM db_clock) RETURNING id";
        let id: Option<String> =
            with_pool!(self, |pool| sqlx::query_scalar(SQL).bind(token_hash).fetch_optional(pool).await)?;
        id.map(|id| parse_uuid(WHAT, &id)).transpose()
    }

    /// Gives back a use taken by [`Store::enrollment_token_take`] whose registration then failed.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn enrollment_token_give_back(&self, id: Uuid) -> Result<()> {
        const SQL: &str = "UPDATE enrollment_tokens SET uses = uses - 1 WHERE id = $1 AND uses > 0";
        let id = id.to_string();
        with_pool!(self, |pool| sqlx::query(SQL).bind(&id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The host whose agent holds the credential with this hash.
    #[tracing::instrument(level = "debug", skip(self, credential_hash))]
    pub async fn host_by_credential(&self, credential_hash: &str) -> Result<Option<Uuid>> {
        const WHAT: &str = "host";
        const SQL: &str = "SELECT id FROM hosts WHERE credential_hash = $1";
        let id: Option<String> =
            with_pool!(self, |pool| sqlx::query_scalar(SQL).bind(credential_hash).fetch_optional(pool).await)?;
        id.map(|id| parse_uuid(WHAT, &id)).transpose()
    }
}
