//! Diagnostic counters: how many workers, across all nodes, are inside one resource at once.
//!
//! Tests and the demo use them to show that per-resource work is serialised zone-wide (a resource
//! whose `max_active` stays 1 never ran on two nodes at once). Each call is one upsert with
//! `RETURNING`, which both backends apply atomically: no read-modify-write across statements.

use super::{ProbeRow, Result, Store};

#[derive(sqlx::FromRow)]
struct RawProbe {
    resource_id: String,
    active: i64,
    max_active: i64,
    completed: i64,
}

impl Store {
    /// Increments `active` (and `max_active` if exceeded) of the resource; returns `active`.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn probe_enter(&self, resource_id: &str) -> Result<i64> {
        // In SET, `probe.active` is the row's value before this update on both backends.
        const SQL: &str = "INSERT INTO probe (resource_id, active, max_active, completed) \
             VALUES ($1, 1, 1, 0) \
             ON CONFLICT (resource_id) DO UPDATE SET active = probe.active + 1, \
             max_active = CASE WHEN probe.active + 1 > probe.max_active \
                 THEN probe.active + 1 ELSE probe.max_active END \
             RETURNING active";
        let active: i64 = with_pool!(self, |pool| { sqlx::query_scalar(SQL).bind(resource_id).fetch_one(pool).await })?;
        Ok(active)
    }

    /// Decrements `active`, increments `completed`; returns `completed`.
    ///
    /// An exit without an enter still counts (the row starts from zero), so the mistake shows as a
    /// negative `active` instead of vanishing.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn probe_exit(&self, resource_id: &str) -> Result<i64> {
        const SQL: &str = "INSERT INTO probe (resource_id, active, max_active, completed) \
             VALUES ($1, -1, 0, 1) \
             ON CONFLICT (resource_id) DO UPDATE SET active = probe.active - 1, \
             completed = probe.completed + 1 \
             RETURNING completed";
        let completed: i64 =
            with_pool!(self, |pool| { sqlx::query_scalar(SQL).bind(resource_id).fetch_one(pool).await })?;
        Ok(completed)
    }

    /// Every resource's counters, ordered by resource id.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn probe_stats(&self) -> Result<Vec<ProbeRow>> {
        const SQL: &str = "SELECT resource_id, active, max_active, completed FROM probe ORDER BY resource_id";
        let raw: Vec<RawProbe> = with_pool!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await)?;
        Ok(raw
            .into_iter()
            .map(|r| ProbeRow {
                resource_id: r.resource_id,
                active: r.active,
                max_active: r.max_active,
                completed: r.completed,
            })
            .collect())
    }
}
