//! A page of instances as the API's JSON, written by the database.
//!
//! A list is the one read whose cost grows with what it returns, and a parent reads every child's
//! lists page by page. Decoding each row into Rust values and encoding them again cost the child
//! more than the query itself: measured while a parent listed 10 × 10,000 instances, the
//! children's SQLite threads (a copy of every column of every row, handed over one row at a time)
//! and their workers (row decoding, `api::Instance`, serde) held about seven tenths of the CPU.
//! Here the database builds the page's JSON array in one value (`json_group_array` /
//! `json_agg`), so a page is one row whatever its length.
//!
//! The objects are those of [`crate::services::instance::to_api`]: the same fields, `unknown` for
//! the state while the host is down, no `error_reason` when there is none, times in RFC 3339 with
//! milliseconds (stored so by every write, migration 0012). The store suite checks that both backends' pages parse to exactly what
//! `to_api` gives for the same rows.

use api::ClientScope;

use super::instances::PageFilter;
use super::{assembled, Result, Store};

/// One page: its instances as a JSON array, and the marker of the next page (`None` on the last).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPage {
    pub instances: String,
    pub next_marker: Option<String>,
}

/// The zone every instance of the page is in (its `zone_id` and one-name `zone_path`).
pub struct PageZone<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// What differs between the two backends' JSON.
struct Dialect {
    object: &'static str,
    array_of: &'static str,
    aggregate: &'static str,
    empty: &'static str,
    /// A text column holding JSON, as JSON.
    json: fn(&str) -> String,
    /// What orders the aggregate (after its argument).
    order: &'static str,
}

const SQLITE: Dialect = Dialect {
    object: "json_object",
    array_of: "json_array",
    aggregate: "json_group_array",
    empty: "'[]'",
    json: |c| format!("json({c})"),
    // None: SQLite sorts an aggregate's ORDER BY in a temporary b-tree, a copy of every object
    // of the page (measured while a parent listed 10 × 10,000: 15 % of the zones' CPU).
    // The page's rows already come in id order from the `LIMIT`ed subquery, which SQLite runs as
    // a co-routine the aggregate steps through in that order. SQL leaves that order unspecified;
    // the store suite's `json_pages_are_the_typed_pages` holds SQLite to it for every query
    // shape, and the SQLite version is the one pinned in Cargo.lock.
    order: "",
};

const POSTGRES: Dialect = Dialect {
    object: "json_build_object",
    array_of: "json_build_array",
    aggregate: "json_agg",
    empty: "'[]'::json",
    json: |c| format!("CAST({c} AS json)"),
    order: " ORDER BY id",
};

/// The statement: the first `limit` rows of [`PageFilter::sql`] as one JSON array, how many there
/// were, and the last id. Its parameters are the filter's and its limit, then the zone id and the
/// zone name.
///
/// One scan, nothing kept: the rows stream through the aggregate. The form before read one row
/// more than the page (to know whether another follows) into a common table expression, and the
/// page from it into a second one; SQLite copied both into temporary tables. Measured on SQLite
/// with 10,000 instances: 8.8 ms for a page of 1,000 then, 4.4 ms now. Whether another page
/// follows is asked apart, and only of a full page ([`Store::instances_page_json`]: 0.03 ms).
/// The times are copied as stored (as text since migration 0012): formatting two per row was a
/// third of the statement (4.9 ms a page against 3.6 ms without).
fn json_page_sql(d: &Dialect, filter: &PageFilter<'_>) -> String {
    let rows = filter.sql();
    let n = 1 + filter.args().len();
    let (zone_id, zone_name) = (n + 1, n + 2);
    let object = |with_error: bool| {
        let error = if with_error { "'error_reason', error_reason, " } else { "" };
        format!(
            "{obj}('id', id, 'name', name, 'client_id', client_id, \
             'state', CASE WHEN host_state = 'down' THEN 'unknown' ELSE state END, 'host_id', host_id, \
             'zone_id', CAST(${zone_id} AS TEXT), 'zone_path', {arr}(CAST(${zone_name} AS TEXT)), \
             'resources', {obj}('vcpus', vcpus, 'memory_mb', memory_mb, 'disk_gb', disk_gb), \
             'requirements', {requirements}, {error}'version', version, \
             'created_at', created_at, 'updated_at', updated_at)",
            obj = d.object,
            arr = d.array_of,
            requirements = (d.json)("requirements"),
        )
    };
    format!(
        "SELECT CAST(COALESCE({agg}(CASE WHEN error_reason IS NULL THEN {plain} ELSE {with_error} END\
         {order}), {empty}) AS TEXT) AS instances, COUNT(*) AS fetched, MAX(id) AS last_id \
         FROM ({rows}) AS page",
        agg = d.aggregate,
        order = d.order,
        plain = object(false),
        with_error = object(true),
        empty = d.empty,
    )
}

impl Store {
    /// [`Store::instances_page`] as the API's JSON: the instances after `marker`, of `client_id`
    /// and of `scope`'s clients when given, at most `limit`, as objects of the instance list.
    ///
    /// Cost: the query of [`Store::instances_page`] and one row back, whatever the page's length.
    #[tracing::instrument(level = "debug", skip(self, zone))]
    pub async fn instances_page_json(
        &self,
        client_id: Option<&str>,
        scope: Option<&ClientScope>,
        marker: Option<&str>,
        limit: i64,
        zone: &PageZone<'_>,
    ) -> Result<JsonPage> {
        let limit = limit.max(1);
        let Some(filter) = PageFilter::new(client_id, scope, marker) else {
            return Ok(JsonPage { instances: "[]".to_owned(), next_marker: None });
        };
        let dialect = match &self.backend {
            super::Backend::Sqlite(_) => &SQLITE,
            super::Backend::Postgres(_) => &POSTGRES,
        };
        let sql = json_page_sql(dialect, &filter);
        let (instances, fetched, last_id): (String, i64, Option<String>) = with_pool!(self, |pool| {
            let mut q = sqlx::query_as(assembled(&sql));
            for arg in filter.args() {
                q = q.bind(arg);
            }
            q.bind(limit).bind(zone.id).bind(zone.name).fetch_one(pool).await
        })?;
        // A full page: another follows when a row comes after its last (one index step).
        let next_marker = match last_id {
            Some(last)
                if fetched >= limit && !self.instances_page(client_id, scope, Some(&last), 1).await?.is_empty() =>
            {
                Some(last)
            }
            _ => None,
        };
        Ok(JsonPage { instances, next_marker })
    }
}
