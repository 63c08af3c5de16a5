//! The zone's generation: a counter that changes whenever instance ownership or the capability
//! aggregate in the zone or below it may have changed, so parents and lookup caches know when
//! their answers may be stale, and parents' watches wake for both.

use super::{Result, Store};

impl Store {
    /// The zone's generation: changes whenever instance ownership or the aggregate in the zone or
    /// below it may have changed (local instances here and in [`crate::store::instances`]; hosts
    /// registered, deleted, gone up or down or with new capabilities in [`crate::store::hosts`];
    /// child zones added, removed, enabled, disabled, gone on- or offline or reporting a new
    /// generation in [`crate::store::zones`]). Capacity taken or given back moves it through the
    /// create, delete or migrate that does so.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn generation(&self) -> Result<i64> {
        const SQL: &str = "SELECT generation FROM zone_generation WHERE one = 1";
        let g: i64 = with_pool!(self, |pool| sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        Ok(g)
    }

    /// Bumps the generation and returns the new value. Call it in the same breath as an instance
    /// create, delete or migrate, so caches keyed on the generation learn that owners moved.
    #[tracing::instrument(skip(self))]
    pub async fn bump_generation(&self) -> Result<i64> {
        const SQL: &str = "UPDATE zone_generation SET generation = generation + 1 WHERE one = 1 RETURNING generation";
        let g: i64 = with_pool!(self, |pool| sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        self.generation_moved();
        Ok(g)
    }
}
