//! Federation: the child zones this zone polls and routes to, and the gateway's instance mapping
//! (which child holds an instance this zone routed).
//!
//! A child's row holds two kinds of state. Its **configuration** (name, URL, credentials, weights,
//! `disabled`) changes only through [`Store::child_zone_insert`] and [`Store::child_zone_update`],
//! and `version` counts those changes, so a node that caches the registry can tell what to
//! reload. Its **polled state** (status, failures, last seen, the child's aggregate, generation and
//! subtree) changes through [`Store::child_zone_record_poll`] and leaves `version` alone.
//!
//! The child's password arrives here already sealed ([`crate::secrets`]); the store never sees the
//! plaintext or the key.
//!
//! # The zone generation
//! A parent caches "who manages client X" keyed on its children's generations, so this zone's own
//! generation (`zone_generation`, see [`Store::generation`]) must change whenever instance
//! ownership anywhere below it may have changed. Here that is: a child added or deleted, a child
//! enabled or disabled, a child whose polled generation changed, a child that went online or
//! offline. Each bump happens in the same transaction as the change that causes it. The
//! federation layer bumps it itself ([`Store::bump_generation`]) when a create or delete passes
//! through to a child.
//!
//! # Two nodes recording the same poll
//! Every node of the zone may record a poll of the same child. Each transition is detected by a
//! conditional `UPDATE` (`… WHERE status <> 'online'`, `… WHERE generation <> $2`) whose row count
//! says whether *this* call made the change, and the zone generation is bumped only when one did.
//! PostgreSQL makes a second writer wait for the first one's row lock and then re-checks the
//! `WHERE` clause against the committed row, so of two transactions applying the same change
//! exactly one matches; SQLite has a single writer, and every transaction here starts with a
//! write so that it waits its turn (see the module docs of [`crate::store`]).

use api::{Aggregate, ChildZone, SubtreeEntry, ZoneStatus};
use uuid::Uuid;

use super::{assembled, is_unique_violation, parse_uuid, Result, Store, StoreError, BUMP_GENERATION};

/// What a child answered to a poll (or to the check at zone-add).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChildSnapshot {
    /// The child's aggregate, over its whole subtree.
    pub capabilities: Aggregate,
    /// The aggregate of the child's own hosts (without its children), when it reports it: what a
    /// parent merges per zone id, so a zone reached by two paths counts once.
    pub own_capabilities: Option<Aggregate>,
    /// The child's own zone generation.
    pub generation: i64,
    /// The zones below the child, as it reported them.
    pub subtree: Vec<SubtreeEntry>,
}

/// A child zone to register, validated and with its password sealed.
#[derive(Clone, PartialEq)]
pub struct NewChildZone {
    /// The child's own zone id, as its `GET /v1/zone` reports it.
    pub id: Uuid,
    pub name: String,
    pub api_url: String,
    pub username: String,
    /// The password sealed with [`crate::secrets::SecretKey::seal`] for this id.
    pub password_sealed: String,
    pub weight_offset: f64,
    pub weight_scale: f64,
    pub disabled: bool,
    /// What the child answered when zone-add checked it: with it the child starts online (last
    /// seen now), without it offline until its first good poll.
    pub first_answer: Option<ChildSnapshot>,
}

// By hand, so the sealed password stays out of log lines.
impl std::fmt::Debug for NewChildZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewChildZone")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("api_url", &self.api_url)
            .field("username", &self.username)
            .field("password_sealed", &"<sealed>")
            .field("weight_offset", &self.weight_offset)
            .field("weight_scale", &self.weight_scale)
            .field("disabled", &self.disabled)
            .field("first_answer", &self.first_answer.is_some())
            .finish()
    }
}

/// A change to a child's configuration: absent fields stay as they are.
#[derive(Clone, Default, PartialEq)]
pub struct ChildZoneEdit {
    pub name: Option<String>,
    pub api_url: Option<String>,
    pub username: Option<String>,
    /// Sealed, as in [`NewChildZone::password_sealed`].
    pub password_sealed: Option<String>,
    pub weight_offset: Option<f64>,
    pub weight_scale: Option<f64>,
    pub disabled: Option<bool>,
}

impl std::fmt::Debug for ChildZoneEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildZoneEdit")
            .field("name", &self.name)
            .field("api_url", &self.api_url)
            .field("username", &self.username)
            .field("password_sealed", &self.password_sealed.as_ref().map(|_| "<sealed>"))
            .field("weight_offset", &self.weight_offset)
            .field("weight_scale", &self.weight_scale)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// How a poll of a child went.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    Answered(ChildSnapshot),
    /// Why it failed (timeout, refused, bad answer), for `last_error`.
    Failed(String),
}

/// One poll of a child, as [`Store::child_zone_record_poll`] records it.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRecord {
    pub outcome: PollOutcome,
    /// Failures in a row at which an online child becomes offline (the configured
    /// `federation.failure_threshold`; at least 1).
    pub failure_threshold: u32,
}

/// What [`Store::child_zone_record_poll`] changed. Both flags say what *this* call changed: a
/// second call with the same record reports no change. The zone generation was bumped (once)
/// exactly when one of them is true.
#[derive(Debug, Clone, PartialEq)]
pub struct PollApplied {
    /// The child went online or offline.
    pub status_changed: bool,
    /// The child answered with a generation other than the stored one.
    pub generation_changed: bool,
    /// The child's row after the poll.
    pub row: ChildZoneRow,
}

impl PollApplied {
    /// True when this call bumped this zone's generation.
    pub fn bumped_generation(&self) -> bool {
        self.status_changed || self.generation_changed
    }
}

/// A child zone's row.
#[derive(Clone, PartialEq)]
pub struct ChildZoneRow {
    pub id: Uuid,
    pub name: String,
    pub api_url: String,
    pub username: String,
    /// Open it with [`crate::secrets::SecretKey::open`]; never shown by [`ChildZoneRow::to_api`].
    pub password_sealed: String,
    pub weight_offset: f64,
    pub weight_scale: f64,
    pub disabled: bool,
    /// What polling saw: [`ZoneStatus::Online`] or [`ZoneStatus::Offline`], never `Disabled`
    /// (see [`ChildZoneRow::effective_status`]).
    pub status: ZoneStatus,
    pub consecutive_failures: u32,
    /// When the child last answered a poll, by the database clock.
    pub last_seen_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The child's state at its last good poll.
    pub capabilities: Aggregate,
    /// Its own hosts' aggregate (see [`ChildSnapshot::own_capabilities`]).
    pub own_capabilities: Option<Aggregate>,
    pub generation: i64,
    pub subtree: Vec<SubtreeEntry>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Counts configuration changes, not polls.
    pub version: i64,
}

// By hand: no sealed password in logs, and a subtree of thousands of zones as its length.
impl std::fmt::Debug for ChildZoneRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildZoneRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("api_url", &self.api_url)
            .field("username", &self.username)
            .field("password_sealed", &"<sealed>")
            .field("weight_offset", &self.weight_offset)
            .field("weight_scale", &self.weight_scale)
            .field("disabled", &self.disabled)
            .field("status", &self.status)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("last_seen_ms", &self.last_seen_ms)
            .field("last_error", &self.last_error)
            .field("capabilities", &self.capabilities.len())
            .field("generation", &self.generation)
            .field("subtree", &self.subtree.len())
            .field("created_at_ms", &self.created_at_ms)
            .field("updated_at_ms", &self.updated_at_ms)
            .field("version", &self.version)
            .finish()
    }
}

impl ChildZoneRow {
    /// `Disabled` when an operator disabled the child, else what polling saw.
    pub fn effective_status(&self) -> ZoneStatus {
        if self.disabled {
            ZoneStatus::Disabled
        } else {
            self.status
        }
    }

    /// True when new placements may go to this child: enabled and online.
    pub fn routable(&self) -> bool {
        !self.disabled && self.status == ZoneStatus::Online
    }

    /// The API's view: capabilities only when `detail`, never the credentials.
    pub fn to_api(&self, detail: bool) -> ChildZone {
        ChildZone {
            id: self.id.to_string(),
            name: self.name.clone(),
            api_url: self.api_url.clone(),
            status: self.effective_status(),
            disabled: self.disabled,
            last_seen: self.last_seen_ms.map(crate::time::rfc3339_ms),
            last_error: self.last_error.clone(),
            weight_offset: self.weight_offset,
            weight_scale: self.weight_scale,
            capabilities: detail.then(|| self.capabilities.clone()),
            generation: self.generation,
            consecutive_failures: self.consecutive_failures,
            insecure_http: api::federation::insecure_http(&self.api_url),
        }
    }
}

const COLUMNS: &str = "id, name, api_url, username, password_sealed, weight_offset, weight_scale, disabled, \
     status, consecutive_failures, last_seen_ms, last_error, capabilities, generation, subtree, created_at_ms, \
     updated_at_ms, version, own_capabilities";

#[derive(sqlx::FromRow)]
struct RawChildZone {
    id: String,
    name: String,
    api_url: String,
    username: String,
    password_sealed: String,
    weight_offset: f64,
    weight_scale: f64,
    disabled: i32,
    status: String,
    consecutive_failures: i64,
    last_seen_ms: Option<i64>,
    last_error: Option<String>,
    capabilities: String,
    generation: i64,
    subtree: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    version: i64,
    own_capabilities: Option<String>,
}

impl RawChildZone {
    fn into_row(self) -> Result<ChildZoneRow> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Other(format!("child zone {} ({}): bad {what} in database: {e}", self.name, self.id))
        };
        let status = match self.status.as_str() {
            "online" => ZoneStatus::Online,
            "offline" => ZoneStatus::Offline,
            other => return Err(bad("status", &format!("{other:?}"))),
        };
        let capabilities: Aggregate =
            serde_json::from_str(&self.capabilities).map_err(|e| bad("capabilities JSON", &e))?;
        let subtree: Vec<SubtreeEntry> = serde_json::from_str(&self.subtree).map_err(|e| bad("subtree JSON", &e))?;
        let own_capabilities: Option<Aggregate> = match &self.own_capabilities {
            Some(text) => Some(serde_json::from_str(text).map_err(|e| bad("own capabilities JSON", &e))?),
            None => None,
        };
        Ok(ChildZoneRow {
            own_capabilities,
            id: parse_uuid("child zone", &self.id)?,
            consecutive_failures: u32::try_from(self.consecutive_failures.max(0)).unwrap_or(u32::MAX),
            name: self.name,
            api_url: self.api_url,
            username: self.username,
            password_sealed: self.password_sealed,
            weight_offset: self.weight_offset,
            weight_scale: self.weight_scale,
            disabled: self.disabled != 0,
            status,
            last_seen_ms: self.last_seen_ms,
            last_error: self.last_error,
            capabilities,
            generation: self.generation,
            subtree,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            version: self.version,
        })
    }
}

/// The JSON text of a snapshot's capabilities, subtree and own capabilities, as stored.
fn snapshot_json(s: &ChildSnapshot) -> Result<(String, String, Option<String>)> {
    let encode = |what: &str, e: serde_json::Error| StoreError::Other(format!("cannot encode child {what}: {e}"));
    let caps = serde_json::to_string(&s.capabilities).map_err(|e| encode("capabilities", e))?;
    let subtree = serde_json::to_string(&s.subtree).map_err(|e| encode("subtree", e))?;
    let own = s
        .own_capabilities
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| encode("own capabilities", e))?;
    Ok((caps, subtree, own))
}

/// The conflict error for a unique violation on insert or rename: which of id and name is taken.
/// `existing_name` is the name of the row holding `id`, if one does.
fn conflict(id: Uuid, name: &str, existing_name: Option<String>) -> StoreError {
    match existing_name {
        // `StoreError::Conflict` reads "… already exists".
        Some(existing) => StoreError::Conflict(format!("child zone {id} (registered as {existing})")),
        None => StoreError::Conflict(format!("a child zone named {name}")),
    }
}

impl Store {
    /// Registers a child zone and bumps the zone generation (the subtree grew), in one
    /// transaction. [`StoreError::Conflict`] when the id is already a child (under any name) or
    /// the name is taken.
    #[tracing::instrument(skip(self, new), fields(id = %new.id, name = %new.name))]
    pub async fn child_zone_insert(&self, new: &NewChildZone) -> Result<ChildZoneRow> {
        let sql = format!(
            "INSERT INTO child_zones (id, name, api_url, username, password_sealed, weight_offset, weight_scale, \
             disabled, status, last_seen_ms, capabilities, generation, subtree, created_at_ms, updated_at_ms, \
             own_capabilities) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             CASE WHEN $9 = 'online' THEN (SELECT now_ms FROM db_clock) END, $10, $11, $12, \
             (SELECT now_ms FROM db_clock), (SELECT now_ms FROM db_clock), $13) RETURNING {COLUMNS}"
        );
        const NAME_OF: &str = "SELECT name FROM child_zones WHERE id = $1";
        let empty = ChildSnapshot::default();
        let (status, snapshot) = match &new.first_answer {
            Some(s) => ("online", s),
            None => ("offline", &empty),
        };
        let (caps, subtree, own) = snapshot_json(snapshot)?;
        let id = new.id.to_string();
        let inserted: Result<RawChildZone, sqlx::Error> = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let raw: RawChildZone = sqlx::query_as(assembled(&sql))
                .bind(&id)
                .bind(&new.name)
                .bind(&new.api_url)
                .bind(&new.username)
                .bind(&new.password_sealed)
                .bind(new.weight_offset)
                .bind(new.weight_scale)
                .bind(i32::from(new.disabled))
                .bind(status)
                .bind(&caps)
                .bind(snapshot.generation)
                .bind(&subtree)
                .bind(&own)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(raw)
        }
        .await);
        match inserted {
            Ok(raw) => {
                self.generation_moved();
                raw.into_row()
            }
            Err(e) if is_unique_violation(&e) => {
                let existing: Option<String> =
                    with_pool!(self, |pool| sqlx::query_scalar(NAME_OF).bind(&id).fetch_optional(pool).await)?;
                Err(conflict(new.id, &new.name, existing))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The child zone with this id.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn child_zone_get(&self, id: Uuid) -> Result<Option<ChildZoneRow>> {
        let sql = format!("SELECT {COLUMNS} FROM child_zones WHERE id = $1");
        let id = id.to_string();
        let raw: Option<RawChildZone> =
            with_pool!(self, |pool| sqlx::query_as(assembled(&sql)).bind(&id).fetch_optional(pool).await)?;
        raw.map(RawChildZone::into_row).transpose()
    }

    /// Every child zone, by name.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn child_zones(&self) -> Result<Vec<ChildZoneRow>> {
        let sql = format!("SELECT {COLUMNS} FROM child_zones ORDER BY name");
        let raws: Vec<RawChildZone> = with_pool!(self, |pool| sqlx::query_as(assembled(&sql)).fetch_all(pool).await)?;
        raws.into_iter().map(RawChildZone::into_row).collect()
    }

    /// Changes a child's configuration (absent fields stay) and bumps its version; bumps the zone
    /// generation too when `disabled` changes (routing below this zone changed), in one
    /// transaction. `None` when there is no such child; [`StoreError::Conflict`] when the new
    /// name is another child's.
    #[tracing::instrument(skip(self, edit), fields(name = ?edit.name, disabled = ?edit.disabled))]
    pub async fn child_zone_update(&self, id: Uuid, edit: &ChildZoneEdit) -> Result<Option<ChildZoneRow>> {
        // Conditional, so its row count says whether this call flipped the flag (module docs).
        const FLIP: &str = "UPDATE child_zones SET disabled = $2 WHERE id = $1 AND disabled <> $2";
        let update = format!(
            "UPDATE child_zones SET name = COALESCE($2, name), api_url = COALESCE($3, api_url), \
             username = COALESCE($4, username), password_sealed = COALESCE($5, password_sealed), \
             weight_offset = COALESCE($6, weight_offset), weight_scale = COALESCE($7, weight_scale), \
             version = version + 1, updated_at_ms = (SELECT now_ms FROM db_clock) \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let id_text = id.to_string();
        let updated: Result<Option<RawChildZone>, sqlx::Error> = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let flipped = match edit.disabled {
                Some(d) => {
                    sqlx::query(FLIP).bind(&id_text).bind(i32::from(d)).execute(&mut *tx).await?.rows_affected() > 0
                }
                None => false,
            };
            let raw: Option<RawChildZone> = sqlx::query_as(assembled(&update))
                .bind(&id_text)
                .bind(&edit.name)
                .bind(&edit.api_url)
                .bind(&edit.username)
                .bind(&edit.password_sealed)
                .bind(edit.weight_offset)
                .bind(edit.weight_scale)
                .fetch_optional(&mut *tx)
                .await?;
            if raw.is_none() {
                tx.rollback().await?;
                return Ok(None);
            }
            if flipped {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(raw)
        }
        .await);
        match updated {
            Ok(raw) => {
                // Perhaps bumped (a flip of `disabled`): a tick only makes watchers read again.
                self.generation_moved();
                raw.map(RawChildZone::into_row).transpose()
            }
            // Only the name is unique besides the id, which an update does not change.
            Err(e) if is_unique_violation(&e) => Err(conflict(id, edit.name.as_deref().unwrap_or_default(), None)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a child zone and, through the foreign key, its instance routes; bumps the zone
    /// generation (the subtree shrank), in one transaction. False when there is no such child.
    #[tracing::instrument(skip(self))]
    pub async fn child_zone_delete(&self, id: Uuid) -> Result<bool> {
        const DELETE: &str = "DELETE FROM child_zones WHERE id = $1";
        let id = id.to_string();
        let deleted = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(DELETE).bind(&id).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            }
            sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        }
        .await)?;
        if deleted {
            self.generation_moved();
        }
        Ok(deleted)
    }

    /// Records one poll of a child, in one transaction, and says what changed; `None` when there
    /// is no such child (deleted while it was being polled).
    ///
    /// An answer makes the child online with no failures and no error, stamps `last_seen_ms` with
    /// the database clock, and stores its capabilities, generation and subtree. A failure counts
    /// one more failure in a row and stores the error; an online child becomes offline once the
    /// count reaches `failure_threshold`. This zone's generation is bumped, once, exactly when
    /// the child's status or generation changed, and recording the same poll again (from this
    /// node or another, even at the same moment) changes neither, so bumps nothing (module docs).
    ///
    /// Failures are counted per recorded failure: when every node of the zone polls the same
    /// child and records its failures, the child goes offline after fewer polls per node.
    #[tracing::instrument(skip(self, record), fields(answered = matches!(record.outcome, PollOutcome::Answered(_))))]
    pub async fn child_zone_record_poll(&self, id: Uuid, record: &PollRecord) -> Result<Option<PollApplied>> {
        let id_text = id.to_string();
        let applied = match &record.outcome {
            PollOutcome::Answered(snapshot) => self.record_answer(&id_text, snapshot).await?,
            PollOutcome::Failed(error) => {
                self.record_failure(&id_text, error, i64::from(record.failure_threshold.max(1))).await?
            }
        };
        let Some((status_changed, generation_changed, raw)) = applied else {
            return Ok(None);
        };
        if status_changed || generation_changed {
            self.generation_moved();
        }
        let row = raw.into_row()?;
        if status_changed {
            tracing::info!(child = %row.name, status = row.status.as_str(), "child zone status changed");
        }
        Ok(Some(PollApplied { status_changed, generation_changed, row }))
    }

    /// A good poll: (status changed, generation changed, the row), or `None` without the child.
    async fn record_answer(&self, id: &str, snapshot: &ChildSnapshot) -> Result<Option<(bool, bool, RawChildZone)>> {
        // Conditional: each one's row count is "this call made that change" (module docs).
        const ONLINE: &str = "UPDATE child_zones SET status = 'online' WHERE id = $1 AND status <> 'online'";
        const GENERATION: &str = "UPDATE child_zones SET generation = $2 WHERE id = $1 AND generation <> $2";
        let rest = format!(
            "UPDATE child_zones SET consecutive_failures = 0, last_seen_ms = (SELECT now_ms FROM db_clock), \
             last_error = NULL, capabilities = $2, subtree = $3, own_capabilities = $4, \
             updated_at_ms = (SELECT now_ms FROM db_clock) WHERE id = $1 RETURNING {COLUMNS}"
        );
        let (caps, subtree, own) = snapshot_json(snapshot)?;
        let outcome = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let online = sqlx::query(ONLINE).bind(id).execute(&mut *tx).await?.rows_affected() > 0;
            let generation =
                sqlx::query(GENERATION).bind(id).bind(snapshot.generation).execute(&mut *tx).await?.rows_affected() > 0;
            let raw: Option<RawChildZone> = sqlx::query_as(assembled(&rest))
                .bind(id)
                .bind(&caps)
                .bind(&subtree)
                .bind(&own)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(raw) = raw else {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(None);
            };
            if online || generation {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Some((online, generation, raw)))
        }
        .await)?;
        Ok(outcome)
    }

    /// A failed poll: (status changed, false, the row), or `None` without the child.
    async fn record_failure(
        &self,
        id: &str,
        error: &str,
        threshold: i64,
    ) -> Result<Option<(bool, bool, RawChildZone)>> {
        const COUNT: &str = "UPDATE child_zones SET consecutive_failures = consecutive_failures + 1, \
             last_error = $2, updated_at_ms = (SELECT now_ms FROM db_clock) WHERE id = $1";
        // Conditional (module docs): only the call that crosses the threshold changes the status.
        const OFFLINE: &str = "UPDATE child_zones SET status = 'offline' \
             WHERE id = $1 AND status = 'online' AND consecutive_failures >= $2";
        let select = format!("SELECT {COLUMNS} FROM child_zones WHERE id = $1");
        let outcome = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            if sqlx::query(COUNT).bind(id).bind(error).execute(&mut *tx).await?.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(None);
            }
            let offline = sqlx::query(OFFLINE).bind(id).bind(threshold).execute(&mut *tx).await?.rows_affected() > 0;
            if offline {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            let raw: RawChildZone = sqlx::query_as(assembled(&select)).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some((offline, false, raw)))
        }
        .await)?;
        Ok(outcome)
    }

    // --- the instance mapping ---

    /// Records that `child_id` holds `instance_id` (of `client_id`), replacing any earlier route
    /// of that instance. False when there is no such child (deleted meanwhile).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn instance_route_put(&self, instance_id: Uuid, child_id: Uuid, client_id: &str) -> Result<bool> {
        const SQL: &str = "INSERT INTO instance_routes (instance_id, child_id, client_id, created_at_ms) \
             VALUES ($1, $2, $3, (SELECT now_ms FROM db_clock)) \
             ON CONFLICT (instance_id) DO UPDATE SET child_id = excluded.child_id, \
             client_id = excluded.client_id, created_at_ms = excluded.created_at_ms";
        let (instance_id, child_id) = (instance_id.to_string(), child_id.to_string());
        let done = with_pool!(self, |pool| {
            sqlx::query(SQL).bind(&instance_id).bind(&child_id).bind(client_id).execute(pool).await.map(|_| ())
        });
        match done {
            Ok(_) => Ok(true),
            Err(e) if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Store::instance_route_put`] for every instance of a multi-create, in one transaction:
    /// O(n) statements, one commit. False (and nothing recorded) when there is no such child.
    #[tracing::instrument(level = "debug", skip(self, instance_ids), fields(count = instance_ids.len()))]
    pub async fn instance_routes_put(&self, instance_ids: &[Uuid], child_id: Uuid, client_id: &str) -> Result<bool> {
        const SQL: &str = "INSERT INTO instance_routes (instance_id, child_id, client_id, created_at_ms) \
             VALUES ($1, $2, $3, (SELECT now_ms FROM db_clock)) \
             ON CONFLICT (instance_id) DO UPDATE SET child_id = excluded.child_id, \
             client_id = excluded.client_id, created_at_ms = excluded.created_at_ms";
        let child_id = child_id.to_string();
        let done = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            for id in instance_ids {
                sqlx::query(SQL).bind(id.to_string()).bind(&child_id).bind(client_id).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await);
        match done {
            Ok(()) => Ok(true),
            Err(e) if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The child holding `instance_id` and the instance's client, if this zone routed it.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn instance_route_get(&self, instance_id: Uuid) -> Result<Option<(Uuid, String)>> {
        const SQL: &str = "SELECT child_id, client_id FROM instance_routes WHERE instance_id = $1";
        let instance_id = instance_id.to_string();
        let row: Option<(String, String)> =
            with_pool!(self, |pool| sqlx::query_as(SQL).bind(&instance_id).fetch_optional(pool).await)?;
        row.map(|(child, client)| Ok((parse_uuid("child zone", &child)?, client))).transpose()
    }

    /// Forgets an instance's route. False when there was none.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn instance_route_delete(&self, instance_id: Uuid) -> Result<bool> {
        const SQL: &str = "DELETE FROM instance_routes WHERE instance_id = $1";
        let instance_id = instance_id.to_string();
        let n = with_pool!(self, |pool| {
            sqlx::query(SQL).bind(&instance_id).execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }

    /// The children that hold instances of `client_id` by the routes this zone knows, by id: the
    /// ones a client's list asks.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn instance_route_children_of_client(&self, client_id: &str) -> Result<Vec<Uuid>> {
        const SQL: &str = "SELECT DISTINCT child_id FROM instance_routes WHERE client_id = $1 ORDER BY child_id";
        let ids: Vec<String> = with_pool!(self, |pool| sqlx::query_scalar(SQL).bind(client_id).fetch_all(pool).await)?;
        ids.iter().map(|s| parse_uuid("child zone", s)).collect()
    }
}
