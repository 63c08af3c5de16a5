//! Membership rows and the ring epoch.
//!
//! Every change to the set of serving nodes (join, a state transition, an eviction) bumps
//! `cluster.epoch` in the same transaction, so a node that reads an epoch it has already applied
//! knows nothing changed. Those transactions all take the `cluster` row first, then node rows:
//! one lock order, so two of them can never deadlock on PostgreSQL, and on SQLite the first
//! statement is a write (see the module docs of [`crate::store`]).

use uuid::Uuid;

use super::{assembled, parse_uuid, Membership, NodeRow, Result, Store};

/// States in which a node serves and heartbeats.
const LIVE_STATES: &str = "('joining', 'alive', 'leaving')";

/// Bumps the ring epoch (and, on PostgreSQL, locks the `cluster` row until the transaction ends).
const BUMP_EPOCH: &str = "UPDATE cluster SET epoch = epoch + 1 WHERE one = 1 RETURNING epoch";

#[derive(sqlx::FromRow)]
struct RawMember {
    epoch: i64,
    now_ms: i64,
    id: Option<String>,
    api_url: Option<String>,
    state: Option<String>,
    joined_at_ms: Option<i64>,
    heartbeat_ms: Option<i64>,
    applied_epoch: Option<i64>,
}

impl Store {
    /// Inserts this node in state `joining` (or `alive` when `alive` is true), stamped with the
    /// database clock, and bumps the ring epoch. Returns the new epoch.
    ///
    /// A row already holding `id` is overwritten (a node id is fresh per boot, so this only
    /// happens when a node retries its own join).
    #[tracing::instrument(level = "debug", skip(self, id), fields(node = %id))]
    pub async fn node_join(&self, id: Uuid, api_url: &str, alive: bool) -> Result<i64> {
        // `WHERE 1 = 1`: SQLite needs it to tell `ON CONFLICT` from a join's `ON` after
        // `INSERT ... SELECT`.
        const SQL: &str = "INSERT INTO nodes (id, api_url, state, joined_at_ms, heartbeat_ms, applied_epoch) \
             SELECT $1, $2, $3, now_ms, now_ms, 0 FROM db_clock WHERE 1 = 1 \
             ON CONFLICT (id) DO UPDATE SET api_url = excluded.api_url, state = excluded.state, \
             joined_at_ms = excluded.joined_at_ms, heartbeat_ms = excluded.heartbeat_ms";
        let state = if alive { "alive" } else { "joining" };
        let id = id.to_string();
        let epoch: i64 = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            sqlx::query(SQL).bind(&id).bind(api_url).bind(state).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(epoch)
        }
        .await)?;
        tracing::debug!(epoch, state, "node joined");
        Ok(epoch)
    }

    /// Stamps the heartbeat with the database clock and returns the membership epoch, read in the
    /// same statement (so a node alone in its view can tell that nothing changed without reading
    /// the membership). `None` when the row is missing or in a state that means this node must
    /// stop (`dead`, `left`): it was evicted.
    #[tracing::instrument(level = "debug", skip(self, id), fields(node = %id))]
    pub async fn node_heartbeat(&self, id: Uuid) -> Result<Option<i64>> {
        let sql = format!(
            "UPDATE nodes SET heartbeat_ms = (SELECT now_ms FROM db_clock) \
             WHERE id = $1 AND state IN {LIVE_STATES} RETURNING (SELECT epoch FROM cluster WHERE one = 1)"
        );
        let id = id.to_string();
        let epoch: Option<i64> =
            with_pool!(self, |pool| sqlx::query_scalar(assembled(&sql)).bind(&id).fetch_optional(pool).await)?;
        Ok(epoch)
    }

    /// Moves the node from one of `from` to `to`, bumping the epoch. False if it was in none of them.
    #[tracing::instrument(level = "debug", skip(self, id), fields(node = %id))]
    pub async fn node_transition(&self, id: Uuid, from: &[&str], to: &str) -> Result<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!("UPDATE nodes SET state = $2 WHERE id = $1 AND state IN ({})", placeholders.join(", "));
        let id = id.to_string();
        let epoch: Option<i64> = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            // Bump first (lock order, and a write first for SQLite); undone by the rollback
            // below if the node was in none of the `from` states.
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            let mut q = sqlx::query(assembled(&sql)).bind(&id).bind(to);
            for state in from {
                q = q.bind(*state);
            }
            if q.execute(&mut *tx).await?.rows_affected() == 0 {
                tx.rollback().await?;
                Ok::<_, sqlx::Error>(None)
            } else {
                tx.commit().await?;
                Ok(Some(epoch))
            }
        }
        .await)?;
        if let Some(epoch) = epoch {
            tracing::debug!(epoch, to, "node state changed");
        }
        Ok(epoch.is_some())
    }

    /// Records that `id` has applied (and drained for) `epoch`; never lowers it.
    #[tracing::instrument(level = "debug", skip(self, id), fields(node = %id))]
    pub async fn node_ack_epoch(&self, id: Uuid, epoch: i64) -> Result<()> {
        const SQL: &str = "UPDATE nodes SET applied_epoch = $2 WHERE id = $1 AND applied_epoch < $2";
        let id = id.to_string();
        with_pool!(self, |pool| sqlx::query(SQL).bind(&id).bind(epoch).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Marks `dead` every `joining`/`alive`/`leaving` node whose heartbeat is older than
    /// `dead_after_ms` by the database clock, bumping the epoch once if any. Returns them.
    ///
    /// Every node runs this each tick, so a cheap read first skips the locking transaction when
    /// nobody is stale. On PostgreSQL a heartbeat that commits while the eviction waits is
    /// re-checked by the UPDATE's WHERE clause, so a node that just beat is not evicted.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn nodes_evict_stale(&self, dead_after_ms: i64) -> Result<Vec<Uuid>> {
        let stale = format!("state IN {LIVE_STATES} AND heartbeat_ms < (SELECT now_ms FROM db_clock) - $1");
        let probe = format!("SELECT id FROM nodes WHERE {stale} LIMIT 1");
        let evict = format!("UPDATE nodes SET state = 'dead' WHERE {stale} RETURNING id");
        let any: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar(assembled(&probe)).bind(dead_after_ms).fetch_optional(pool).await
        })?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let evicted: Vec<String> = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            let ids: Vec<String> =
                sqlx::query_scalar(assembled(&evict)).bind(dead_after_ms).fetch_all(&mut *tx).await?;
            if ids.is_empty() {
                // Another node evicted them (or they beat) in the meantime.
                tx.rollback().await?;
            } else {
                tx.commit().await?;
                tracing::info!(epoch, count = ids.len(), nodes = ?ids, "evicted stale nodes");
            }
            Ok::<_, sqlx::Error>(ids)
        }
        .await)?;
        evicted.iter().map(|s| parse_uuid("node", s)).collect()
    }

    /// All node rows, with the epoch and the database clock, read in one transaction.
    ///
    /// A single statement, which is one snapshot on both backends (a multi-statement read at
    /// PostgreSQL's default READ COMMITTED could see the epoch and the rows at different times).
    /// Rows are ordered by join time, then id.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn membership(&self) -> Result<Membership> {
        const SQL: &str = "SELECT c.epoch, (SELECT now_ms FROM db_clock) AS now_ms, \
             n.id, n.api_url, n.state, n.joined_at_ms, n.heartbeat_ms, n.applied_epoch \
             FROM cluster c LEFT JOIN nodes n ON 1 = 1 \
             WHERE c.one = 1 ORDER BY n.joined_at_ms, n.id";
        let raw: Vec<RawMember> = with_pool!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await)?;
        let (epoch, now_ms) = raw
            .first()
            .map(|r| (r.epoch, r.now_ms))
            .ok_or_else(|| super::StoreError::Other("cluster row missing".into()))?;
        let mut nodes = Vec::with_capacity(raw.len());
        for r in raw {
            // The LEFT JOIN yields one all-NULL node when there are no nodes.
            let Some(id) = r.id else { continue };
            nodes.push(NodeRow {
                id: parse_uuid("node", &id)?,
                api_url: r.api_url.unwrap_or_default(),
                state: r.state.unwrap_or_default(),
                joined_at_ms: r.joined_at_ms.unwrap_or_default(),
                heartbeat_ms: r.heartbeat_ms.unwrap_or_default(),
                applied_epoch: r.applied_epoch.unwrap_or_default(),
            });
        }
        Ok(Membership { epoch, now_ms, nodes })
    }

    /// Deletes `dead`/`left` rows whose heartbeat is older than `older_than_ms`.
    ///
    /// Does not bump the epoch: those nodes already left the ring when they died or left.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn nodes_purge(&self, older_than_ms: i64) -> Result<u64> {
        const SQL: &str = "DELETE FROM nodes WHERE state IN ('dead', 'left') \
             AND heartbeat_ms < (SELECT now_ms FROM db_clock) - $1";
        let done = with_pool!(self, |pool| sqlx::query(SQL)
            .bind(older_than_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done)
    }
}
