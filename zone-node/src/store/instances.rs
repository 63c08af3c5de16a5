//! Instances: rows, optimistic updates and the capacity bookkeeping that goes with them.
//!
//! Every update is conditional on the row's `version` (`UPDATE … WHERE id = $1 AND version = $2`)
//! and bumps it, so a write based on a stale read changes nothing and says so (`None`); the
//! instance service re-reads and re-applies it ([`crate::services::instance`]). Work on one
//! instance is already serialised by its ring owner's queue, so a stale write means something
//! outside that queue got in (an operator's delete racing a recovery, a node taking over a task):
//! detected, retried, never silently lost.
//!
//! Changes of ownership (insert, remove, move to another host) bump the zone generation in the
//! same transaction, and removing or moving an instance gives its capacity back in that
//! transaction too, so a crash can never leave a reservation without its instance.

use api::{ClientPattern, ClientScope, Requirement, Resources};
use uuid::Uuid;

use super::{assembled, parse_uuid, Result, Store, StoreError, BUMP_GENERATION};

/// An instance to insert: its host reserved by [`Store::place`] (or, for a single create, in
/// the same transaction by [`Store::instance_place_and_insert`]).
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub id: Uuid,
    pub name: String,
    pub client_id: String,
    pub host_id: Uuid,
    pub resources: Resources,
    pub requirements: Vec<Requirement>,
    /// The node that runs the create task.
    pub task_node: Uuid,
}

/// An instance's row, with the state of its host.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub id: Uuid,
    pub name: String,
    pub client_id: String,
    pub state: String,
    pub host_id: Option<Uuid>,
    /// `up` or `down` (`None` without a host).
    pub host_state: Option<String>,
    pub resources: Resources,
    pub requirements: Vec<Requirement>,
    pub error_reason: Option<String>,
    pub version: i64,
    /// The task in progress, the node running it, and a migration's target host.
    pub task: Option<String>,
    pub task_node: Option<Uuid>,
    pub task_target: Option<Uuid>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What an update writes. The task fields and the error reason are always written (`None`
/// clears them); `move_to` moves the instance to another host (a finished migration).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceChange {
    pub state: String,
    pub error_reason: Option<String>,
    pub task: Option<String>,
    pub task_node: Option<Uuid>,
    pub task_target: Option<Uuid>,
    /// Move to this host: its capacity must already be reserved (it was, as `task_target`); the
    /// old host's capacity is given back in the same transaction.
    pub move_to: Option<Uuid>,
}

/// The times also as text (`created_at`, `updated_at`: migration 0012) for the page as JSON
/// ([`super::instance_json`]); typed rows read the milliseconds.
const COLUMNS: &str = "i.id, i.name, i.client_id, i.state, i.host_id, h.state AS host_state, i.vcpus, i.memory_mb, \
     i.disk_gb, i.requirements, i.error_reason, i.version, i.task, i.task_node, i.task_target, i.created_at_ms, \
     i.updated_at_ms, i.created_at, i.updated_at";
const FROM: &str = "FROM instances i LEFT JOIN hosts h ON h.id = i.host_id";
/// See [`Store::instances_in_task`].
const IN_TASK: &str = "SELECT id, task_node FROM instances WHERE task_node IS NOT NULL ORDER BY id";
/// See [`Store::client_has_instances`].
const CLIENT_HAS: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM instances WHERE client_id = $1 LIMIT 1) AS one";

#[derive(sqlx::FromRow)]
struct RawInstance {
    id: String,
    name: String,
    client_id: String,
    state: String,
    host_id: Option<String>,
    host_state: Option<String>,
    vcpus: i64,
    memory_mb: i64,
    disk_gb: i64,
    requirements: String,
    error_reason: Option<String>,
    version: i64,
    task: Option<String>,
    task_node: Option<String>,
    task_target: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl RawInstance {
    fn into_row(self) -> Result<InstanceRow> {
        let opt_uuid = |what: &str, s: Option<String>| s.map(|s| parse_uuid(what, &s)).transpose();
        let requirements = serde_json::from_str(&self.requirements)
            .map_err(|e| StoreError::Other(format!("instance {}: bad requirements in database: {e}", self.id)))?;
        Ok(InstanceRow {
            id: parse_uuid("instance", &self.id)?,
            name: self.name,
            client_id: self.client_id,
            state: self.state,
            host_id: opt_uuid("host", self.host_id)?,
            host_state: self.host_state,
            resources: Resources { vcpus: self.vcpus, memory_mb: self.memory_mb, disk_gb: self.disk_gb },
            requirements,
            error_reason: self.error_reason,
            version: self.version,
            task: self.task,
            task_node: opt_uuid("node", self.task_node)?,
            task_target: opt_uuid("host", self.task_target)?,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

/// What removing an instance returns: its host, its migration target, vcpus, memory and disk.
type Removed = (Option<String>, Option<String>, i64, i64, i64);

/// Gives back `$2..$4` on host `$1`, never below zero.
const RELEASE: &str = "UPDATE hosts SET vcpus_used = vcpus_used - $2, memory_mb_used = memory_mb_used - $3, \
     disk_gb_used = disk_gb_used - $4, version = version + 1 \
     WHERE id = $1 AND vcpus_used >= $2 AND memory_mb_used >= $3 AND disk_gb_used >= $4";

/// Releases `$res` on host `$host` inside transaction `$tx`, logging (not failing) when the host
/// holds less than that: the instance must go either way.
macro_rules! release_in {
    ($tx:ident, $host:expr, $res:expr) => {{
        let released = sqlx::query(RELEASE)
            .bind($host)
            .bind($res.vcpus)
            .bind($res.memory_mb)
            .bind($res.disk_gb)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        if released == 0 {
            tracing::warn!(host = %$host, "host held less than the instance's reservation; nothing released");
        }
    }};
}

/// What a page of instances is filtered by: a client, a parent's patterns, a marker.
pub(super) struct PageFilter<'a> {
    client: Option<&'a str>,
    patterns: &'a [ClientPattern],
    marker: Option<&'a str>,
}

impl<'a> PageFilter<'a> {
    /// `None` when no instance can match (an empty scope, or a named client outside the scope).
    pub(super) fn new(
        client: Option<&'a str>,
        scope: Option<&'a ClientScope>,
        marker: Option<&'a str>,
    ) -> Option<PageFilter<'a>> {
        if scope.is_some_and(ClientScope::is_empty) || client.is_some_and(|c| scope.is_some_and(|s| !s.matches(c))) {
            return None;
        }
        // A named client already in the scope needs no pattern filter.
        let patterns = if client.is_some() { &[][..] } else { scope.map(ClientScope::patterns).unwrap_or_default() };
        Some(PageFilter { client, patterns, marker })
    }

    /// The page's statement ([`page_sql`]); its parameters are [`PageFilter::args`], then the limit.
    pub(super) fn sql(&self) -> String {
        page_sql(self.client.is_some(), self.patterns, self.marker.is_some())
    }

    /// The statement's leading parameters, in order: client, one per pattern, marker.
    pub(super) fn args(&self) -> Vec<&'a str> {
        let patterns = self.patterns.iter().map(|p| match p {
            ClientPattern::Exact(id) => id.as_str(),
            ClientPattern::Prefix(prefix) => prefix.as_str(),
        });
        self.client.into_iter().chain(patterns).chain(self.marker).collect()
    }
}

/// The statement of one page of [`Store::instances_page`]: with or without a client, with or
/// without a parent's client patterns, with or without a marker, its parameters in that order
/// (client, one per pattern, marker, limit).
///
/// One statement per shape, never `($1 IS NULL OR client_id = $1) AND ($2 IS NULL OR id > $2)`:
/// such a statement has one plan for every value, which can use no index for either filter, so
/// PostgreSQL's cached generic plan walked the whole primary key (2 s for a late page of
/// 1,000,000 instances) and SQLite always did. Each shape below is a range of one index walked in
/// id order (the primary key, or `instances_client_id_id`, migration 0007) and stopped after
/// `limit` rows. Patterns are a filter on that walk (a limited parent's list without a client:
/// O(rows skipped) when few instances match; `substr`, not `LIKE`, which SQLite folds to any case
/// and which would read `_` in a client id as a wildcard).
fn page_sql(client: bool, patterns: &[ClientPattern], marker: bool) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let mut filters = Vec::new();
    if client {
        filters.push(format!("i.client_id = ${}", next()));
    }
    if !patterns.is_empty() {
        let any: Vec<String> = patterns
            .iter()
            .map(|p| match p {
                ClientPattern::Exact(_) => format!("i.client_id = ${}", next()),
                ClientPattern::Prefix(_) => {
                    let k = next();
                    format!("substr(i.client_id, 1, length(${k})) = ${k}")
                }
            })
            .collect();
        filters.push(format!("({})", any.join(" OR ")));
    }
    if marker {
        filters.push(format!("i.id > ${}", next()));
    }
    let filter = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
    format!("SELECT {COLUMNS} {FROM} {filter} ORDER BY i.id LIMIT ${}", next())
}

impl Store {
    /// Inserts an instance in state `building` with its create task, and bumps the generation,
    /// in one transaction.
    #[tracing::instrument(skip(self, new), fields(id = %new.id))]
    pub async fn instance_insert(&self, new: &NewInstance) -> Result<InstanceRow> {
        let mut rows = self.insert_all(std::slice::from_ref(new), false).await?.unwrap_or_default();
        rows.pop().ok_or_else(|| StoreError::Other("an insert returned no row".into()))
    }

    /// Inserts every instance of a multi-create, each as [`Store::instance_insert`] would, in ONE
    /// transaction that bumps the generation once: all rows or none (an id that exists already
    /// is a [`StoreError::Conflict`] and inserts nothing). O(n) statements in one round of
    /// commits.
    #[tracing::instrument(skip(self, new), fields(count = new.len()))]
    pub async fn instances_insert_batch(&self, new: &[NewInstance]) -> Result<Vec<InstanceRow>> {
        Ok(self.insert_all(new, false).await?.unwrap_or_default())
    }

    /// Inserts `new` in one transaction. With `reserve`, each row's resources are first reserved
    /// on its host in the same transaction (`None`, nothing written, when a host has no room):
    /// a reservation then exists exactly when its instance row does, whatever happens to the
    /// node in between.
    pub(super) async fn insert_all(&self, new: &[NewInstance], reserve: bool) -> Result<Option<Vec<InstanceRow>>> {
        // The times as milliseconds and as text, all four from one reading of the clock.
        const INSERT: &str = "INSERT INTO instances (id, name, client_id, state, host_id, vcpus, memory_mb, \
             disk_gb, requirements, task, task_node, created_at_ms, updated_at_ms, created_at, updated_at) \
             SELECT $1, $2, $3, 'building', $4, $5, $6, $7, $8, 'create', $9, \
             clock.now_ms, clock.now_ms, clock.now_text, clock.now_text FROM db_clock_text AS clock \
             RETURNING version, created_at_ms, updated_at_ms";
        if new.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let requirements = new
            .iter()
            .map(|n| serde_json::to_string(&n.requirements))
            .collect::<std::result::Result<Vec<String>, _>>()
            .map_err(|e| StoreError::Other(format!("requirements: {e}")))?;
        let mut conflict = None;
        let outcome = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let mut stamped = Vec::with_capacity(new.len());
            for (n, reqs) in new.iter().zip(&requirements) {
                let id = n.id.to_string();
                conflict = Some(id.clone());
                if reserve {
                    let reserved = sqlx::query(super::placement::RESERVE)
                        .bind(n.host_id.to_string())
                        .bind(n.resources.vcpus)
                        .bind(n.resources.memory_mb)
                        .bind(n.resources.disk_gb)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if reserved == 0 {
                        // Dropping the transaction rolls back what it did.
                        return Ok(None);
                    }
                }
                // Both stamps as stored.
                let stamps: (i64, i64, i64) = sqlx::query_as(INSERT)
                    .bind(&id)
                    .bind(&n.name)
                    .bind(&n.client_id)
                    .bind(n.host_id.to_string())
                    .bind(n.resources.vcpus)
                    .bind(n.resources.memory_mb)
                    .bind(n.resources.disk_gb)
                    .bind(reqs)
                    .bind(n.task_node.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
                stamped.push(stamps);
            }
            sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(stamped))
        }
        .await);
        let stamped = outcome.map_err(|e: sqlx::Error| {
            if super::is_unique_violation(&e) {
                StoreError::Conflict(format!("instance {}", conflict.unwrap_or_default()))
            } else {
                e.into()
            }
        })?;
        let Some(stamped) = stamped else { return Ok(None) };
        self.generation_moved();
        // The rows as inserted, without reading them back: their hosts were up when their
        // capacity was reserved a moment ago (what a later read joins in as `host_state`).
        Ok(Some(
            new.iter()
                .zip(stamped)
                .map(|(n, (version, created_at_ms, updated_at_ms))| InstanceRow {
                    id: n.id,
                    name: n.name.clone(),
                    client_id: n.client_id.clone(),
                    state: "building".into(),
                    host_id: Some(n.host_id),
                    host_state: Some("up".into()),
                    resources: n.resources,
                    requirements: n.requirements.clone(),
                    error_reason: None,
                    version,
                    task: Some("create".into()),
                    task_node: Some(n.task_node),
                    task_target: None,
                    created_at_ms,
                    updated_at_ms,
                })
                .collect(),
        ))
    }

    /// The instance with this id. Cost: two primary-key probes (the instance, its host).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn instance_get(&self, id: Uuid) -> Result<Option<InstanceRow>> {
        let sql = format!("SELECT {COLUMNS} {FROM} WHERE i.id = $1");
        let id = id.to_string();
        let raw: Option<RawInstance> =
            with_pool!(self, |pool| sqlx::query_as(assembled(&sql)).bind(&id).fetch_optional(pool).await)?;
        raw.map(RawInstance::into_row).transpose()
    }

    /// One page of instances by id: those after `marker`, of `client_id` when given, and of the
    /// clients `scope` matches when given (a limited parent's view; an empty scope sees nothing).
    ///
    /// Cost: O(limit) at any depth (an index range walked in order, then stopped), whatever the
    /// zone holds; see [`page_sql`].
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn instances_page(
        &self,
        client_id: Option<&str>,
        scope: Option<&ClientScope>,
        marker: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InstanceRow>> {
        let Some(filter) = PageFilter::new(client_id, scope, marker) else { return Ok(Vec::new()) };
        let sql = filter.sql();
        let raws: Vec<RawInstance> = with_pool!(self, |pool| {
            let mut q = sqlx::query_as(assembled(&sql));
            for arg in filter.args() {
                q = q.bind(arg);
            }
            q.bind(limit.max(0)).fetch_all(pool).await
        })?;
        raws.into_iter().map(RawInstance::into_row).collect()
    }

    /// Whether any instance of `client_id` is in this zone (the zone's own answer to "do you
    /// manage client X?"). Cost: one index probe (`instances_client_id_id`).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn client_has_instances(&self, client_id: &str) -> Result<bool> {
        let n: i64 = with_pool!(self, |pool| sqlx::query_scalar(CLIENT_HAS).bind(client_id).fetch_one(pool).await)?;
        Ok(n > 0)
    }

    /// Instances with a task in progress, as (instance, node running it). Every node asks this
    /// each heartbeat; cost O(instances in a task), read from the partial index
    /// `instances_in_task` (migration 0007), not O(instances).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn instances_in_task(&self) -> Result<Vec<(Uuid, Uuid)>> {
        let rows: Vec<(String, String)> = with_pool!(self, |pool| sqlx::query_as(IN_TASK).fetch_all(pool).await)?;
        rows.iter().map(|(i, n)| Ok((parse_uuid("instance", i)?, parse_uuid("node", n)?))).collect()
    }

    /// Writes `change` if the row still has `version`. `None` when it does not (a stale write:
    /// re-read and decide again) or the instance is gone. A `move_to` also moves the capacity:
    /// the old host's is released and the generation bumped, in the same transaction.
    #[tracing::instrument(skip(self, change), fields(state = %change.state))]
    pub async fn instance_update(
        &self,
        id: Uuid,
        version: i64,
        change: &InstanceChange,
    ) -> Result<Option<InstanceRow>> {
        const UPDATE: &str = "UPDATE instances SET state = $3, error_reason = $4, task = $5, task_node = $6, \
             task_target = $7, host_id = COALESCE($8, host_id), version = version + 1, \
             updated_at_ms = clock.now_ms, updated_at = clock.now_text FROM db_clock_text AS clock \
             WHERE id = $1 AND version = $2";
        const OLD: &str = "SELECT host_id, vcpus, memory_mb, disk_gb FROM instances WHERE id = $1 AND version = $2";
        let id_text = id.to_string();
        if change.move_to.is_none() {
            // One statement, so no transaction: one round trip instead of three.
            let n = with_pool!(self, |pool| {
                sqlx::query(UPDATE)
                    .bind(&id_text)
                    .bind(version)
                    .bind(&change.state)
                    .bind(&change.error_reason)
                    .bind(&change.task)
                    .bind(change.task_node.map(|u| u.to_string()))
                    .bind(change.task_target.map(|u| u.to_string()))
                    .bind(None::<String>)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            return if n == 0 { Ok(None) } else { self.instance_get(id).await };
        }
        let updated = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            // Read the old host to give its capacity back; SQLite would not wait on a read-first
            // transaction, so take the write lock first with a no-op touch.
            sqlx::query("UPDATE instances SET version = version WHERE id = $1")
                .bind(&id_text)
                .execute(&mut *tx)
                .await?;
            let old: Option<(Option<String>, i64, i64, i64)> =
                sqlx::query_as(OLD).bind(&id_text).bind(version).fetch_optional(&mut *tx).await?;
            let n = sqlx::query(UPDATE)
                .bind(&id_text)
                .bind(version)
                .bind(&change.state)
                .bind(&change.error_reason)
                .bind(&change.task)
                .bind(change.task_node.map(|u| u.to_string()))
                .bind(change.task_target.map(|u| u.to_string()))
                .bind(change.move_to.map(|u| u.to_string()))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            }
            if let (Some(_), Some((Some(old_host), vcpus, memory_mb, disk_gb))) = (change.move_to, old) {
                let res = Resources { vcpus, memory_mb, disk_gb };
                release_in!(tx, &old_host, res);
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        }
        .await)?;
        if !updated {
            return Ok(None);
        }
        if change.move_to.is_some() {
            self.generation_moved();
        }
        self.instance_get(id).await
    }

    /// Deletes the instance if it still has `version`, giving back its host's capacity (and a
    /// migration target's, if one was reserved) and bumping the generation, in one transaction.
    /// False when the row changed or is gone.
    #[tracing::instrument(skip(self))]
    pub async fn instance_remove(&self, id: Uuid, version: i64) -> Result<bool> {
        const DELETE: &str = "DELETE FROM instances WHERE id = $1 AND version = $2 \
             RETURNING host_id, task_target, vcpus, memory_mb, disk_gb";
        let id_text = id.to_string();
        let removed = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let row: Option<Removed> =
                sqlx::query_as(DELETE).bind(&id_text).bind(version).fetch_optional(&mut *tx).await?;
            let Some((host, target, vcpus, memory_mb, disk_gb)) = row else {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            };
            let res = Resources { vcpus, memory_mb, disk_gb };
            for h in host.iter().chain(target.iter()) {
                release_in!(tx, h, res);
            }
            sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        }
        .await)?;
        if removed {
            self.generation_moved();
        }
        Ok(removed)
    }

    /// How many instances the zone holds, and of them how many per state (for metrics).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn instance_counts(&self) -> Result<Vec<(String, i64)>> {
        const SQL: &str = "SELECT state, COUNT(*) FROM instances GROUP BY state ORDER BY state";
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await)?;
        Ok(rows)
    }
}

/// A sample argument of a statement [`Store::instance_read_plans`] explains.
#[derive(Clone, Copy)]
enum Sample {
    Text(&'static str),
    Int(i64),
}

impl Sample {
    /// As a literal in PostgreSQL's `EXECUTE`: constants of this file, never input.
    fn literal(self) -> String {
        match self {
            Sample::Text(t) => format!("'{t}'"),
            Sample::Int(n) => n.to_string(),
        }
    }
}

/// The reads of instances that must cost the same at 1,000,000 instances as at 10 (issue 9), by
/// name, with sample arguments.
fn hot_reads() -> Vec<(&'static str, String, Vec<Sample>)> {
    const ID: Sample = Sample::Text("00000000-0000-4000-8000-000000000000");
    const CLIENT: Sample = Sample::Text("client-1");
    const LIMIT: Sample = Sample::Int(101);
    vec![
        ("get", format!("SELECT {COLUMNS} {FROM} WHERE i.id = $1"), vec![ID]),
        ("first_page", page_sql(false, &[], false), vec![LIMIT]),
        ("later_page", page_sql(false, &[], true), vec![ID, LIMIT]),
        ("client_first_page", page_sql(true, &[], false), vec![CLIENT, LIMIT]),
        ("client_later_page", page_sql(true, &[], true), vec![CLIENT, ID, LIMIT]),
        ("client_has", CLIENT_HAS.to_owned(), vec![CLIENT]),
        ("in_task", IN_TASK.to_owned(), vec![]),
    ]
}

impl Store {
    /// How the database runs each hot read of instances, as (name, plan text): SQLite's
    /// `EXPLAIN QUERY PLAN`, or PostgreSQL's `EXPLAIN` of the generic plan (the one a pooled
    /// connection settles on after a few runs, planned for any value) with sequential scans
    /// disabled, so the plan shows whether an index can serve the statement at all, whatever
    /// the table's size now. For the store suite, and for an operator who wonders.
    #[doc(hidden)]
    pub async fn instance_read_plans(&self) -> Result<Vec<(String, String)>> {
        let mut plans = Vec::new();
        match &self.backend {
            super::Backend::Sqlite(pool) => {
                for (name, sql, args) in hot_reads() {
                    let explain = format!("EXPLAIN QUERY PLAN {sql}");
                    let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(assembled(&explain));
                    for a in args {
                        q = match a {
                            Sample::Text(t) => q.bind(t),
                            Sample::Int(n) => q.bind(n),
                        };
                    }
                    let rows = q.fetch_all(pool).await?;
                    let lines: Vec<String> = rows.into_iter().map(|r| r.3).collect();
                    plans.push((name.to_owned(), lines.join("\n")));
                }
            }
            super::Backend::Postgres(pool) => {
                use sqlx::{Connection, Row};
                // A connection of its own, closed afterwards: the settings below must not reach
                // the pool.
                let mut conn = pool.acquire().await?.detach();
                sqlx::raw_sql("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
                    .execute(&mut conn)
                    .await?;
                for (name, sql, args) in hot_reads() {
                    let args: Vec<String> = args.into_iter().map(Sample::literal).collect();
                    let execute = if args.is_empty() {
                        "EXECUTE zone_plan".to_owned()
                    } else {
                        format!("EXECUTE zone_plan({})", args.join(", "))
                    };
                    sqlx::raw_sql(assembled(&format!("PREPARE zone_plan AS {sql}"))).execute(&mut conn).await?;
                    let rows = sqlx::raw_sql(assembled(&format!("EXPLAIN {execute}"))).fetch_all(&mut conn).await?;
                    sqlx::raw_sql("DEALLOCATE zone_plan").execute(&mut conn).await?;
                    let lines = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<Vec<_>, _>>()?;
                    plans.push((name.to_owned(), lines.join("\n")));
                }
                conn.close().await?;
            }
        }
        Ok(plans)
    }
}
