//! Hosts and their capabilities: registration, listing, reports and liveness. Placement and
//! reservations are in `placement`, the zone's aggregate in `aggregate` (kept up to date by
//! triggers on the tables written here).
//!
//! Capabilities live in `host_capabilities` as the seed's (string value, float value, type) tuple
//! so that the scheduler's filters (see [`crate::scheduler`]) run in SQL.
//!
//! Liveness uses the database clock: a report stamps `last_report_ms` from `db_clock`, and
//! [`Store::hosts_mark_down`] compares against the same clock, so node clock skew cannot mark a
//! healthy host down. Reports are recorded in batches ([`Store::hosts_report`]): one presence
//! statement for all the reports a node received meanwhile, so 100,000 hosts reporting cost a
//! few statements a second, not 1,700 transactions. The sweep finds silent hosts through the
//! `(state, last_report_ms)` index, without reading every host.

use std::collections::BTreeMap;
use std::time::Duration;

use api::{CapabilityKind, CapabilityValue, Resources};
use uuid::Uuid;

use super::{assembled, is_unique_violation, parse_uuid, Result, Store, StoreError, BUMP_GENERATION};

/// Stamps a report on the up hosts among `n` ids (`$1`…`$n`) and returns those it found.
fn stamp_up_hosts(n: usize) -> String {
    format!(
        "UPDATE hosts SET missed_reports = 0, last_report_ms = (SELECT now_ms FROM db_clock) \
         WHERE state = 'up' AND id IN ({}) RETURNING id",
        placeholders(1, n)
    )
}

/// What [`Store::hosts_stale`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaleHosts {
    /// Up hosts silent for the whole down-window, by id.
    pub ids: Vec<Uuid>,
    /// How long until the next up host will be (its oldest report ages into the window); `None`
    /// when no other host is up.
    pub next_in: Option<Duration>,
}

/// A host to insert, already validated (see [`crate::scheduler::validate_host`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewHost {
    /// Chosen before the row is written, so the agent token can be sealed to it.
    pub id: Uuid,
    pub name: String,
    pub agent_url: String,
    pub capabilities: BTreeMap<String, CapabilityValue>,
    /// Capacity.
    pub resources: Resources,
    /// What the zone presents to the agent as its bearer token.
    pub agent_token: Option<String>,
    /// The SHA-256 (hex) of the credential an enrolled host's agent presents; `None` for a host
    /// an operator account registered.
    pub credential_hash: Option<String>,
}

/// A host's row with its capabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub id: Uuid,
    pub name: String,
    pub agent_url: String,
    /// `up` or `down`.
    pub state: String,
    pub capabilities: BTreeMap<String, CapabilityValue>,
    pub total: Resources,
    pub used: Resources,
    /// Reports missed as of the last [`Store::hosts_mark_down`] sweep.
    pub missed_reports: i64,
    pub last_report_ms: i64,
    pub created_at_ms: i64,
    pub version: i64,
    /// Never shown by [`HostRow::to_api`].
    pub agent_token: Option<String>,
}

impl HostRow {
    /// The API's view of the host.
    pub fn to_api(&self) -> api::Host {
        api::Host {
            id: self.id.to_string(),
            name: self.name.clone(),
            agent_url: self.agent_url.clone(),
            state: self.state.clone(),
            capabilities: self
                .capabilities
                .iter()
                .map(|(k, v)| (k.clone(), api::Capability::from(v.clone())))
                .collect(),
            resources: self.total,
            used: self.used,
            zone_path: Vec::new(),
        }
    }
}

const HOST_COLUMNS: &str = "id, name, agent_url, state, vcpus_total, memory_mb_total, disk_gb_total, \
     vcpus_used, memory_mb_used, disk_gb_used, missed_reports, last_report_ms, created_at_ms, version, agent_token";

#[derive(sqlx::FromRow)]
struct RawHost {
    id: String,
    name: String,
    agent_url: String,
    state: String,
    vcpus_total: i64,
    memory_mb_total: i64,
    disk_gb_total: i64,
    vcpus_used: i64,
    memory_mb_used: i64,
    disk_gb_used: i64,
    missed_reports: i64,
    last_report_ms: i64,
    created_at_ms: i64,
    version: i64,
    agent_token: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RawCap {
    host_id: String,
    key: String,
    kind: String,
    str_value: Option<String>,
    float_value: Option<f64>,
}

impl RawHost {
    fn into_row(self, capabilities: BTreeMap<String, CapabilityValue>) -> Result<HostRow> {
        Ok(HostRow {
            id: parse_uuid("host", &self.id)?,
            name: self.name,
            agent_url: self.agent_url,
            state: self.state,
            capabilities,
            total: Resources { vcpus: self.vcpus_total, memory_mb: self.memory_mb_total, disk_gb: self.disk_gb_total },
            used: Resources { vcpus: self.vcpus_used, memory_mb: self.memory_mb_used, disk_gb: self.disk_gb_used },
            missed_reports: self.missed_reports,
            last_report_ms: self.last_report_ms,
            created_at_ms: self.created_at_ms,
            version: self.version,
            agent_token: self.agent_token,
        })
    }
}

/// Host rows with their capabilities, from the two queries that read them.
fn rows_with_capabilities(raws: Vec<RawHost>, caps: Vec<RawCap>) -> Result<Vec<HostRow>> {
    let mut by_host = group_caps(caps)?;
    raws.into_iter()
        .map(|raw| {
            let caps = by_host.remove(&raw.id).unwrap_or_default();
            raw.into_row(caps)
        })
        .collect()
}

/// A capability as its stored tuple: (kind, str_value, float_value). Bools keep both forms so an
/// operator reading the table, and `eq` filters, see them either way.
fn encode(v: &CapabilityValue) -> (&'static str, Option<String>, Option<f64>) {
    match v {
        CapabilityValue::Float(f) => ("float", Some(f.to_string()), Some(*f)),
        CapabilityValue::Bool(b) => ("bool", Some(b.to_string()), Some(if *b { 1.0 } else { 0.0 })),
        CapabilityValue::String(s) => ("string", Some(s.clone()), None),
    }
}

fn decode(c: &RawCap) -> Result<CapabilityValue> {
    let bad = || {
        StoreError::Other(format!(
            "capability {:?} of host {} has kind {:?} without its value",
            c.key, c.host_id, c.kind
        ))
    };
    match CapabilityKind::parse(&c.kind) {
        Some(CapabilityKind::Float) => Ok(CapabilityValue::Float(c.float_value.ok_or_else(bad)?)),
        Some(CapabilityKind::Bool) => Ok(CapabilityValue::Bool(c.float_value.ok_or_else(bad)? != 0.0)),
        Some(CapabilityKind::String) => Ok(CapabilityValue::String(c.str_value.clone().ok_or_else(bad)?)),
        None => Err(StoreError::Other(format!(
            "capability {:?} of host {} has unknown kind {:?}",
            c.key, c.host_id, c.kind
        ))),
    }
}

/// Groups capability rows by host id.
fn group_caps(caps: Vec<RawCap>) -> Result<BTreeMap<String, BTreeMap<String, CapabilityValue>>> {
    let mut by_host: BTreeMap<String, BTreeMap<String, CapabilityValue>> = BTreeMap::new();
    for c in caps {
        let v = decode(&c)?;
        by_host.entry(c.host_id).or_default().insert(c.key, v);
    }
    Ok(by_host)
}

/// How many hosts one presence statement of [`Store::hosts_report`] names: well under the
/// bind-parameter limits of both backends.
pub const REPORT_CHUNK: usize = 500;

/// `$from, $from+1, …` for `n` bind parameters.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The two statements that make a host's capability rows exactly a set of `n` capabilities
/// (`$1` the host, then key, kind, str_value, float_value per capability): a multi-row upsert that
/// rewrites only the rows whose value changed, and a delete of the keys no longer in the set. Two
/// round trips whatever the size of the set; a report whose `free-ram` changed rewrites one row,
/// not all of them. (`IS DISTINCT FROM` is understood by PostgreSQL and by SQLite since 3.39.)
fn replace_caps_sql(n: usize) -> (Option<String>, String) {
    if n == 0 {
        return (None, "DELETE FROM host_capabilities WHERE host_id = $1".to_owned());
    }
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let p = 2 + 4 * i;
            format!("($1, ${}, ${}, ${}, ${})", p, p + 1, p + 2, p + 3)
        })
        .collect();
    let upsert = format!(
        "INSERT INTO host_capabilities (host_id, key, kind, str_value, float_value) VALUES {} \
         ON CONFLICT (host_id, key) DO UPDATE SET kind = excluded.kind, str_value = excluded.str_value, \
         float_value = excluded.float_value \
         WHERE host_capabilities.kind IS DISTINCT FROM excluded.kind \
         OR host_capabilities.str_value IS DISTINCT FROM excluded.str_value \
         OR host_capabilities.float_value IS DISTINCT FROM excluded.float_value",
        rows.join(", ")
    );
    let keys: Vec<String> = (0..n).map(|i| format!("${}", 2 + i)).collect();
    let delete = format!("DELETE FROM host_capabilities WHERE host_id = $1 AND key NOT IN ({})", keys.join(", "));
    (Some(upsert), delete)
}

/// Makes a host's capabilities exactly `$caps` inside transaction `$tx` (a macro, like
/// `with_pool!`, so the same code is compiled for both drivers). See [`replace_caps_sql`].
macro_rules! replace_caps {
    ($tx:ident, $id:expr, $caps:expr) => {{
        let caps: &BTreeMap<String, CapabilityValue> = $caps;
        let (upsert, delete) = replace_caps_sql(caps.len());
        if let Some(upsert) = &upsert {
            let mut q = sqlx::query(assembled(upsert)).bind($id);
            for (key, value) in caps {
                let (kind, s, f) = encode(value);
                q = q.bind(key).bind(kind).bind(s).bind(f);
            }
            q.execute(&mut *$tx).await?;
        }
        let mut q = sqlx::query(assembled(&delete)).bind($id);
        for key in caps.keys() {
            q = q.bind(key);
        }
        q.execute(&mut *$tx).await?;
    }};
}

impl Store {
    /// Registers a host with its capabilities, in one transaction. Host names are unique in the
    /// zone: a second registration under the same name is [`StoreError::Conflict`].
    #[tracing::instrument(skip(self, host), fields(name = %host.name))]
    pub async fn host_create(&self, host: &NewHost) -> Result<HostRow> {
        let insert = format!(
            "INSERT INTO hosts (id, name, agent_url, state, vcpus_total, memory_mb_total, disk_gb_total, \
             last_report_ms, created_at_ms, agent_token, credential_hash) \
             VALUES ($1, $2, $3, 'up', $4, $5, $6, (SELECT now_ms FROM db_clock), (SELECT now_ms FROM db_clock), $7, $8) \
             RETURNING {HOST_COLUMNS}"
        );
        let id = host.id.to_string();
        let raw: RawHost = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let raw: RawHost = sqlx::query_as(assembled(&insert))
                .bind(&id)
                .bind(&host.name)
                .bind(&host.agent_url)
                .bind(host.resources.vcpus)
                .bind(host.resources.memory_mb)
                .bind(host.resources.disk_gb)
                .bind(&host.agent_token)
                .bind(&host.credential_hash)
                .fetch_one(&mut *tx)
                .await?;
            // All capabilities in one statement: one round trip (and, on PostgreSQL, one run of
            // the aggregate's statement trigger) per registration.
            if let (Some(upsert), _) = replace_caps_sql(host.capabilities.len()) {
                let mut q = sqlx::query(assembled(&upsert)).bind(&id);
                for (key, value) in &host.capabilities {
                    let (kind, s, f) = encode(value);
                    q = q.bind(key).bind(kind).bind(s).bind(f);
                }
                q.execute(&mut *tx).await?;
            }
            // A new up host changes the aggregate parents record.
            sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(raw)
        }
        .await)
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("host {}", host.name))
            } else {
                e.into()
            }
        })?;
        self.generation_moved();
        raw.into_row(host.capabilities.clone())
    }

    /// The host with this id, with its capabilities.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn host_get(&self, id: Uuid) -> Result<Option<HostRow>> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1");
        const CAPS: &str = "SELECT host_id, key, kind, str_value, float_value \
             FROM host_capabilities WHERE host_id = $1";
        let id = id.to_string();
        let (raw, caps): (Option<RawHost>, Vec<RawCap>) = with_pool!(self, |pool| async {
            let raw: Option<RawHost> = sqlx::query_as(assembled(&sql)).bind(&id).fetch_optional(pool).await?;
            let caps: Vec<RawCap> = match raw {
                Some(_) => sqlx::query_as(CAPS).bind(&id).fetch_all(pool).await?,
                None => Vec::new(),
            };
            Ok::<_, sqlx::Error>((raw, caps))
        }
        .await)?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let mut by_host = group_caps(caps)?;
        let caps = by_host.remove(&raw.id).unwrap_or_default();
        raw.into_row(caps).map(Some)
    }

    /// What calling a host's agent takes, its URL and token, in one query (no capabilities).
    /// `None` for an unknown host.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn host_agent(&self, id: Uuid) -> Result<Option<(String, Option<String>)>> {
        const SQL: &str = "SELECT agent_url, agent_token FROM hosts WHERE id = $1";
        let id = id.to_string();
        let row: Option<(String, Option<String>)> =
            with_pool!(self, |pool| sqlx::query_as(SQL).bind(&id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// Every host of the zone with its capabilities, by name.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn hosts(&self) -> Result<Vec<HostRow>> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name");
        const CAPS: &str = "SELECT host_id, key, kind, str_value, float_value FROM host_capabilities";
        let (raws, caps): (Vec<RawHost>, Vec<RawCap>) = with_pool!(self, |pool| async {
            let raws: Vec<RawHost> = sqlx::query_as(assembled(&sql)).fetch_all(pool).await?;
            let caps: Vec<RawCap> = sqlx::query_as(CAPS).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((raws, caps))
        }
        .await)?;
        // Two statements without a transaction: a host created in between has no capabilities
        // here, one deleted in between is simply absent. Both are fine for a listing.
        rows_with_capabilities(raws, caps)
    }

    /// One page of hosts by id: those after `marker`, at most `limit`.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn hosts_page(&self, marker: Option<&str>, limit: i64) -> Result<Vec<HostRow>> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2");
        const CAPS: &str = "SELECT host_id, key, kind, str_value, float_value FROM host_capabilities \
             WHERE host_id IN (SELECT id FROM hosts WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2)";
        let limit = limit.max(0);
        let (raws, caps): (Vec<RawHost>, Vec<RawCap>) = with_pool!(self, |pool| async {
            let raws: Vec<RawHost> = sqlx::query_as(assembled(&sql)).bind(marker).bind(limit).fetch_all(pool).await?;
            let caps: Vec<RawCap> = sqlx::query_as(CAPS).bind(marker).bind(limit).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((raws, caps))
        }
        .await)?;
        rows_with_capabilities(raws, caps)
    }

    /// Deletes a host and its capabilities. False when there is no such host;
    /// [`StoreError::InUse`] when instances are still on it (they must be moved or deleted first,
    /// or they would point at nothing).
    #[tracing::instrument(skip(self))]
    pub async fn host_delete(&self, id: Uuid) -> Result<bool> {
        const DELETE: &str = "DELETE FROM hosts WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM instances WHERE host_id = $1)";
        const COUNT: &str = "SELECT COUNT(*) FROM instances WHERE host_id = $1";
        const EXISTS: &str = "SELECT COUNT(*) FROM hosts WHERE id = $1";
        let id_text = id.to_string();
        let (deleted, instances, exists): (u64, i64, i64) = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query(DELETE).bind(&id_text).execute(&mut *tx).await?.rows_affected();
            if deleted > 0 {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok::<_, sqlx::Error>((deleted, 0, 0));
            }
            tx.rollback().await?;
            let exists: i64 = sqlx::query_scalar(EXISTS).bind(&id_text).fetch_one(pool).await?;
            let instances: i64 = sqlx::query_scalar(COUNT).bind(&id_text).fetch_one(pool).await?;
            Ok((0, instances, exists))
        }
        .await)?;
        if deleted > 0 {
            self.generation_moved();
            return Ok(true);
        }
        if exists > 0 && instances > 0 {
            return Err(StoreError::InUse(format!(
                "host {id} still has {instances} instance(s); move or delete them first"
            )));
        }
        Ok(false)
    }

    /// Replaces a host's capability set (what is not in `capabilities` is removed), in one
    /// transaction, and bumps its version. False when there is no such host.
    #[tracing::instrument(skip(self, capabilities), fields(count = capabilities.len()))]
    pub async fn host_set_capabilities(
        &self,
        id: Uuid,
        capabilities: &BTreeMap<String, CapabilityValue>,
    ) -> Result<bool> {
        const TOUCH: &str = "UPDATE hosts SET version = version + 1 WHERE id = $1";
        let id = id.to_string();
        let found = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            // A write first, so SQLite waits for other writers instead of failing (see mod docs).
            let touched = sqlx::query(TOUCH).bind(&id).execute(&mut *tx).await?.rows_affected();
            if touched == 0 {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            }
            replace_caps!(tx, &id, capabilities);
            sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        }
        .await)?;
        if found {
            self.generation_moved();
        }
        Ok(found)
    }

    /// Changes a host's agent URL and token (each when given). False when there is no such host.
    #[tracing::instrument(skip(self, agent_token))]
    pub async fn host_set_agent(&self, id: Uuid, agent_url: Option<&str>, agent_token: Option<&str>) -> Result<bool> {
        const SQL: &str = "UPDATE hosts SET agent_url = COALESCE($2, agent_url), \
             agent_token = COALESCE($3, agent_token), version = version + 1 WHERE id = $1";
        let id = id.to_string();
        let n = with_pool!(self, |pool| {
            sqlx::query(SQL).bind(&id).bind(agent_url).bind(agent_token).execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }

    /// Up hosts whose last report is at least `interval_ms * max_missed` old by the database
    /// clock (the candidates for [`Store::host_mark_down`]), and how soon the next up host will be,
    /// so the sweep need not ask again before then.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn hosts_stale(&self, interval_ms: i64, max_missed: i64) -> Result<StaleHosts> {
        // One statement for both: the second row (no id) is the oldest report among the up hosts
        // that are not stale yet, as milliseconds until it is; NULL when there is none.
        const SQL: &str = "SELECT id, 0 AS due_in_ms FROM hosts WHERE state = 'up' \
             AND last_report_ms <= (SELECT now_ms FROM db_clock) - $1 * $2 \
             UNION ALL \
             SELECT NULL, MIN(last_report_ms) - ((SELECT now_ms FROM db_clock) - $1 * $2) FROM hosts \
             WHERE state = 'up' AND last_report_ms > (SELECT now_ms FROM db_clock) - $1 * $2";
        let rows: Vec<(Option<String>, Option<i64>)> = with_pool!(self, |pool| {
            sqlx::query_as(SQL).bind(interval_ms.max(1)).bind(max_missed.max(1)).fetch_all(pool).await
        })?;
        let mut stale = StaleHosts::default();
        for (id, due_in_ms) in rows {
            match id {
                Some(id) => stale.ids.push(parse_uuid("host", &id)?),
                None => stale.next_in = due_in_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            }
        }
        stale.ids.sort();
        Ok(stale)
    }

    /// Marks one host down if it is still up and still stale (a report may have arrived since
    /// [`Store::hosts_stale`]). True when this call marked it down.
    #[tracing::instrument(skip(self))]
    pub async fn host_mark_down(&self, id: Uuid, interval_ms: i64, max_missed: i64) -> Result<bool> {
        const SQL: &str = "UPDATE hosts SET state = 'down', version = version + 1, \
             missed_reports = ((SELECT now_ms FROM db_clock) - last_report_ms) / $2 \
             WHERE id = $1 AND state = 'up' AND last_report_ms <= (SELECT now_ms FROM db_clock) - $2 * $3";
        let id = id.to_string();
        let n = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(SQL)
                .bind(&id)
                .bind(interval_ms.max(1))
                .bind(max_missed.max(1))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }
        .await)?;
        if n > 0 {
            self.generation_moved();
        }
        Ok(n > 0)
    }

    /// A host's periodic report: [`Store::hosts_report`] for one host.
    pub async fn host_report(
        &self,
        id: Uuid,
        capabilities: Option<&BTreeMap<String, CapabilityValue>>,
    ) -> Result<Option<bool>> {
        let mut outcome = self.hosts_report(&[(id, capabilities)]).await?;
        Ok(outcome.pop().flatten())
    }

    /// Hosts' periodic reports, many in one transaction: stamps `last_report_ms` with the
    /// database clock, clears `missed_reports` and marks the hosts up, in one statement per
    /// [`REPORT_CHUNK`] hosts whatever the number of reports; replaces a host's capabilities
    /// when its report carries them (agents send them only when they changed). Per report, in
    /// order: `None` when there is no such host, `Some(true)` when the host was down and is up
    /// again (worth an event), else `Some(false)`.
    #[tracing::instrument(skip(self, reports), fields(count = reports.len()))]
    pub async fn hosts_report(
        &self,
        reports: &[(Uuid, Option<&BTreeMap<String, CapabilityValue>>)],
    ) -> Result<Vec<Option<bool>>> {
        let ids: Vec<String> = reports.iter().map(|(id, _)| id.to_string()).collect();
        // The usual batch (no capabilities, every host up) is that one statement alone, without
        // a transaction: one round trip to the database instead of three. Anything else (a host
        // down or gone) takes the transaction below, which stamps the found ones again.
        if ids.len() <= REPORT_CHUNK && reports.iter().all(|(_, caps)| caps.is_none()) {
            let sql = stamp_up_hosts(ids.len());
            let found: Vec<String> = with_pool!(self, |pool| {
                let mut q = sqlx::query_scalar::<_, String>(assembled(&sql));
                for id in &ids {
                    q = q.bind(id);
                }
                q.fetch_all(pool).await
            })?;
            if found.len() == ids.len() {
                return Ok(vec![Some(false); ids.len()]);
            }
        }
        let (stayed, came_up, changed): (Vec<String>, Vec<String>, bool) = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let mut stayed: Vec<String> = Vec::new();
            let mut came_up: Vec<String> = Vec::new();
            for chunk in ids.chunks(REPORT_CHUNK) {
                // The common case first, and a write first (see the store's SQLite notes).
                let sql = stamp_up_hosts(chunk.len());
                let mut q = sqlx::query_scalar::<_, String>(assembled(&sql));
                for id in chunk {
                    q = q.bind(id);
                }
                let found: Vec<String> = q.fetch_all(&mut *tx).await?;
                // Usually every host was up: then there is nobody to bring back.
                let found_set: std::collections::HashSet<&String> = found.iter().collect();
                let rest: Vec<&String> = chunk.iter().filter(|id| !found_set.contains(id)).collect();
                stayed.extend(found);
                if rest.is_empty() {
                    continue;
                }
                let list = placeholders(1, rest.len());
                let sql = format!(
                    "UPDATE hosts SET state = 'up', missed_reports = 0, \
                     last_report_ms = (SELECT now_ms FROM db_clock), version = version + 1 \
                     WHERE state = 'down' AND id IN ({list}) RETURNING id"
                );
                let mut q = sqlx::query_scalar::<_, String>(assembled(&sql));
                for id in rest {
                    q = q.bind(id);
                }
                came_up.extend(q.fetch_all(&mut *tx).await?);
            }
            let mut changed = !came_up.is_empty();
            for ((_, caps), id) in reports.iter().zip(&ids) {
                if let Some(caps) = caps {
                    if stayed.contains(id) || came_up.contains(id) {
                        replace_caps!(tx, id, caps);
                        changed = true;
                    }
                }
            }
            // Only reports that change the aggregate move the generation: the common report
            // (nothing new) stays one statement per chunk.
            if changed {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>((stayed, came_up, changed))
        }
        .await)?;
        if changed {
            self.generation_moved();
        }
        let stayed: std::collections::HashSet<String> = stayed.into_iter().collect();
        let came_up: std::collections::HashSet<String> = came_up.into_iter().collect();
        Ok(ids
            .iter()
            .map(|id| {
                if came_up.contains(id) {
                    Some(true)
                } else if stayed.contains(id) {
                    Some(false)
                } else {
                    None
                }
            })
            .collect())
    }

    /// Marks down every up host whose last report is at least `interval_ms * max_missed` old by
    /// the database clock, and records for every up host how many reports it has missed. Returns
    /// the ids of the hosts it marked down (each worth a "host down" event), by id.
    ///
    /// Reservations on a down host stay: its instances are still there, in an unknown state, until
    /// it reports again. Placement skips down hosts.
    #[tracing::instrument(skip(self))]
    pub async fn hosts_mark_down(&self, interval_ms: i64, max_missed: i64) -> Result<Vec<Uuid>> {
        const DOWN: &str = "UPDATE hosts SET state = 'down', version = version + 1, \
             missed_reports = ((SELECT now_ms FROM db_clock) - last_report_ms) / $1 \
             WHERE state = 'up' AND last_report_ms <= (SELECT now_ms FROM db_clock) - $1 * $2 \
             RETURNING id";
        const MISSED: &str = "UPDATE hosts \
             SET missed_reports = ((SELECT now_ms FROM db_clock) - last_report_ms) / $1 \
             WHERE state = 'up' AND last_report_ms <= (SELECT now_ms FROM db_clock) - $1";
        let interval_ms = interval_ms.max(1);
        let max_missed = max_missed.max(1);
        let ids: Vec<String> = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let ids: Vec<String> =
                sqlx::query_scalar(DOWN).bind(interval_ms).bind(max_missed).fetch_all(&mut *tx).await?;
            sqlx::query(MISSED).bind(interval_ms).execute(&mut *tx).await?;
            if !ids.is_empty() {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(ids)
        }
        .await)?;
        if !ids.is_empty() {
            self.generation_moved();
        }
        let mut ids = ids.iter().map(|s| parse_uuid("host", s)).collect::<Result<Vec<_>>>()?;
        ids.sort();
        if !ids.is_empty() {
            tracing::info!(count = ids.len(), "hosts marked down after missed reports");
        }
        Ok(ids)
    }
}
