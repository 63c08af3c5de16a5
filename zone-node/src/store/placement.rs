//! Placement in SQL: the validated filters ([`Filter`], made by `crate::scheduler` from a
//! request's requirements) and resources as one candidate query.
//!
//! Each filter becomes
//! `(SELECT COUNT(*) FROM host_capabilities c WHERE c.host_id = h.id AND c.key = $n AND <test>) > 0`,
//! a probe of the `(host_id, key)` primary key for each host the sample walks. Every client value is a
//! bind parameter; the only text spliced into the SQL is fixed by this module (column names, the
//! type literals `'float'`/`'bool'`/`'string'` and `$n` placeholders), so no request can change the
//! statement's shape. The same text runs on SQLite and PostgreSQL.
//!
//! # Reservations
//! Capacity is reserved with one conditional `UPDATE` per reservation ([`Store::reserve`]): the
//! row lock PostgreSQL takes for the update (and SQLite's single writer) make the "is there
//! room?" check and the increment one atomic step, so concurrent placements from any node never
//! overcommit a host, with no lock held across a round trip. A batch (`super::batch`) reserves
//! k instances on one host with the same statement, k times the resources: all k or none.
//!
//! # Weighing
//! Candidates are ordered by free memory fraction + free vcpu fraction (each 0..1, a host with no
//! capacity of a kind counts 0 for it), highest first, then by absolute free memory, then id (a
//! stable order, so tests and operators can predict it). Fractions rather than absolute figures
//! make large and small hosts comparable and spread load: an empty small host beats a half-full
//! big one. Disk is left out of the weight on purpose: it is rarely the scarce resource and would
//! dilute the two that are; it is still a hard filter.
//!
//! # Best of a bounded sample
//! A placement weighs at most 2 × [`SAMPLE`] fitting hosts, not every host of the zone: the
//! candidate query walks the hosts' primary key from a random id and stops after [`SAMPLE`]
//! matches (and as many from the start, to wrap around). Its cost is O(SAMPLE / f) rows, with f
//! the share of hosts that fit; it grows with the zone only when few hosts fit (a rare
//! requirement or a nearly full zone), where it tends to a scan. The random start also spreads
//! concurrent placements: they sample different ranges instead of racing for one best host.

use std::collections::BTreeMap;

use api::{CapabilityValue, Resources};
use uuid::Uuid;

use super::{assembled, parse_uuid, Result, Store};

/// A validated requirement: a capability key and the test its value must pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub key: String,
    pub test: Test,
}

/// The test of a [`Filter`]. Range tests only match `float` capabilities; equality matches a
/// capability of the same type and value.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Eq(CapabilityValue),
    /// The capability exists and differs (a host without the key does not match).
    Ne(CapabilityValue),
    Lt(f64),
    Le(f64),
    Gt(f64),
    Ge(f64),
    /// Non-empty, all of one type.
    In(Vec<CapabilityValue>),
    Exists,
}

impl Filter {
    /// The reference semantics of the filter, evaluated in Rust over a host's capabilities. The
    /// SQL of [`candidates_query`] must agree with it (the store suite checks that it does).
    pub fn matches(&self, caps: &BTreeMap<String, CapabilityValue>) -> bool {
        let Some(have) = caps.get(&self.key) else {
            return false;
        };
        let float = match have {
            CapabilityValue::Float(f) => Some(*f),
            _ => None,
        };
        match &self.test {
            Test::Eq(v) => have == v,
            Test::Ne(v) => have != v,
            Test::Lt(x) => float.is_some_and(|f| f < *x),
            Test::Le(x) => float.is_some_and(|f| f <= *x),
            Test::Gt(x) => float.is_some_and(|f| f > *x),
            Test::Ge(x) => float.is_some_and(|f| f >= *x),
            Test::In(vs) => vs.contains(have),
            Test::Exists => true,
        }
    }
}

/// How many candidates a placement tries before re-reading: a few, so a placement that loses
/// races on the best host moves on without another query, and the query stays cheap.
pub const DEFAULT_CANDIDATES: i64 = 8;

/// A bind parameter of the candidate query.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Float(f64),
    Int(i64),
}

/// SQL text with `$n` placeholders and the values to bind, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateQuery {
    pub sql: String,
    pub binds: Vec<Bind>,
}

struct Builder {
    sql: String,
    binds: Vec<Bind>,
}

impl Builder {
    /// Adds a bind parameter and returns its placeholder.
    fn param(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }

    /// The SQL condition "capability c equals v" (same type, same value).
    fn equals(&mut self, v: &CapabilityValue) -> String {
        match v {
            CapabilityValue::Float(f) => {
                let p = self.param(Bind::Float(*f));
                format!("(c.kind = 'float' AND c.float_value = {p})")
            }
            CapabilityValue::Bool(b) => {
                let p = self.param(Bind::Float(if *b { 1.0 } else { 0.0 }));
                format!("(c.kind = 'bool' AND c.float_value = {p})")
            }
            CapabilityValue::String(s) => {
                let p = self.param(Bind::Text(s.clone()));
                format!("(c.kind = 'string' AND c.str_value = {p})")
            }
        }
    }

    fn test(&mut self, test: &Test) -> String {
        let range = |b: &mut Builder, op: &str, x: f64| {
            let p = b.param(Bind::Float(x));
            format!("(c.kind = 'float' AND c.float_value {op} {p})")
        };
        match test {
            Test::Eq(v) => self.equals(v),
            Test::Ne(v) => format!("NOT {}", self.equals(v)),
            Test::Lt(x) => range(self, "<", *x),
            Test::Le(x) => range(self, "<=", *x),
            Test::Gt(x) => range(self, ">", *x),
            Test::Ge(x) => range(self, ">=", *x),
            Test::In(values) => {
                // Validation guarantees a non-empty list of one type.
                let (kind, column) = match values.first() {
                    Some(CapabilityValue::Float(_)) => ("float", "float_value"),
                    Some(CapabilityValue::Bool(_)) => ("bool", "float_value"),
                    Some(CapabilityValue::String(_)) | None => ("string", "str_value"),
                };
                if values.is_empty() {
                    return "1 = 0".into();
                }
                let list: Vec<String> = values
                    .iter()
                    .map(|v| {
                        let bind = match v {
                            CapabilityValue::Float(f) => Bind::Float(*f),
                            CapabilityValue::Bool(b) => Bind::Float(if *b { 1.0 } else { 0.0 }),
                            CapabilityValue::String(s) => Bind::Text(s.clone()),
                        };
                        self.param(bind)
                    })
                    .collect();
                format!("(c.kind = '{kind}' AND c.{column} IN ({}))", list.join(", "))
            }
            Test::Exists => "1 = 1".into(),
        }
    }
}

/// How many fitting hosts a placement looks at, at most, before choosing the best: the sample
/// of "best of k". Enough that the chosen host is among the best few percent of a large zone
/// (kube-scheduler scores a bounded share of feasible nodes for the same reason); small enough
/// that the query's cost does not grow with the zone.
pub const SAMPLE: i64 = 32;

/// The query returning the ids of up to `limit` up hosts that pass every filter and have at least
/// `resources` free, best first (see the module docs for the weighing), chosen among a bounded
/// sample: the first [`SAMPLE`] fitting hosts in id order from `start`, and the first [`SAMPLE`]
/// from the lowest id (so the sample wraps around and covers every fitting host of a zone with
/// fewer than [`SAMPLE`] of them: small zones still get the exact best). Both halves walk the
/// primary key and stop after [`SAMPLE`] matches. A random `start` per placement spreads
/// concurrent placements over near-equal hosts instead of sending them all to one.
pub fn candidates_query(filters: &[Filter], resources: &Resources, start: &str, limit: i64) -> CandidateQuery {
    sample_query(filters, resources, start, limit, "id")
}

/// [`candidates_query`] answering, for each host, its id and its free vcpus, memory and disk
/// (`id, free_vcpus, free_memory, free_disk`): what a batch needs to know how many instances fit
/// on each ([`Store::candidates_with_room`]). The same sample, filters and order.
pub fn room_query(filters: &[Filter], resources: &Resources, start: &str, limit: i64) -> CandidateQuery {
    sample_query(filters, resources, start, limit, "id, free_vcpus, free_memory, free_disk")
}

/// The sampled candidate query of [`candidates_query`] and [`room_query`], answering `columns`
/// (fixed by those two functions, never by a request) of the sampled hosts.
fn sample_query(filters: &[Filter], resources: &Resources, start: &str, limit: i64, columns: &str) -> CandidateQuery {
    let mut b = Builder { sql: String::new(), binds: Vec::new() };
    let vcpus = b.param(Bind::Int(resources.vcpus));
    let memory = b.param(Bind::Int(resources.memory_mb));
    let disk = b.param(Bind::Int(resources.disk_gb));
    let mut fits = format!(
        "h.state = 'up' \
         AND h.vcpus_total - h.vcpus_used >= {vcpus} \
         AND h.memory_mb_total - h.memory_mb_used >= {memory} \
         AND h.disk_gb_total - h.disk_gb_used >= {disk}"
    );
    for f in filters {
        let key = b.param(Bind::Text(f.key.clone()));
        let test = b.test(&f.test);
        // A counting subquery, not EXISTS: PostgreSQL turns EXISTS into a join that scans every
        // host's row of the key, while this stays a probe of the (host_id, key) primary key per
        // sampled host, on both backends.
        fits.push_str(&format!(
            " AND (SELECT COUNT(*) FROM host_capabilities c WHERE c.host_id = h.id AND c.key = {key} AND {test}) > 0"
        ));
    }
    let start = b.param(Bind::Text(start.to_owned()));
    let sample = b.param(Bind::Int(SAMPLE));
    let limit = b.param(Bind::Int(limit.max(1)));
    // Numbered placeholders may repeat: both halves bind the same filter values.
    let half = |range: &str| {
        format!(
            "SELECT * FROM (SELECT h.id, \
             COALESCE((h.memory_mb_total - h.memory_mb_used) * 1.0 / NULLIF(h.memory_mb_total, 0), 0) \
             + COALESCE((h.vcpus_total - h.vcpus_used) * 1.0 / NULLIF(h.vcpus_total, 0), 0) AS weight, \
             h.memory_mb_total - h.memory_mb_used AS free_memory, \
             h.vcpus_total - h.vcpus_used AS free_vcpus, \
             h.disk_gb_total - h.disk_gb_used AS free_disk \
             FROM hosts h WHERE {fits} AND {range} ORDER BY h.id LIMIT {sample}) AS s"
        )
    };
    b.sql = format!(
        "SELECT {columns} FROM ({} UNION ALL {}) AS sampled \
         ORDER BY weight DESC, free_memory DESC, id LIMIT {limit}",
        half(&format!("h.id >= {start}")),
        half(&format!("h.id < {start}")),
    );
    CandidateQuery { sql: b.sql, binds: b.binds }
}

/// The conditional reservation of [`Store::reserve`]: `$1` the host, `$2..$4` vcpus, memory, disk.
pub(super) const RESERVE: &str = "UPDATE hosts SET vcpus_used = vcpus_used + $2, \
     memory_mb_used = memory_mb_used + $3, disk_gb_used = disk_gb_used + $4, \
     version = version + 1 \
     WHERE id = $1 AND state = 'up' \
     AND vcpus_total - vcpus_used >= $2 \
     AND memory_mb_total - memory_mb_used >= $3 \
     AND disk_gb_total - disk_gb_used >= $4";

/// How many times [`Store::place`] re-reads candidates after losing every one of them to
/// concurrent placements. Capacity only shrinks while we race, so each lost round means real
/// progress by someone else; the bound only guards against a pathological storm.
pub(super) const PLACE_ROUNDS: usize = 32;

/// Binds a built query's parameters in order, whatever kind of query it is (`query_scalar`,
/// `query_as`): a macro because the two have different types on each backend.
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut q = $query;
        for b in $binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::Float(f) => q.bind(*f),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

impl Store {
    /// Up to `limit` up hosts that pass every filter and have `resources` free, best first among a
    /// bounded sample (see
    /// [`super::placement`] for the weighing). Takes validated filters, not raw requirements,
    /// so an unchecked request cannot reach SQL.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn candidates(&self, filters: &[Filter], resources: &Resources, limit: i64) -> Result<Vec<Uuid>> {
        let start = Uuid::new_v4().to_string();
        let query = candidates_query(filters, resources, &start, limit);
        let ids: Vec<String> = with_pool!(self, |pool| {
            let q = bind_all!(sqlx::query_scalar::<_, String>(assembled(&query.sql)), &query.binds);
            q.fetch_all(pool).await
        })?;
        ids.iter().map(|s| parse_uuid("host", s)).collect()
    }

    /// [`Store::candidates`] with each host's free capacity (vcpus, memory, disk) as read: the
    /// same bounded sample, filters and order ([`room_query`]). What a batch divides itself by;
    /// the figures may be stale by the time a reservation is tried, which the conditional
    /// `UPDATE` of [`Store::reserve`] settles.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn candidates_with_room(
        &self,
        filters: &[Filter],
        resources: &Resources,
        limit: i64,
    ) -> Result<Vec<(Uuid, Resources)>> {
        let start = Uuid::new_v4().to_string();
        let query = room_query(filters, resources, &start, limit);
        let rows: Vec<(String, i64, i64, i64)> = with_pool!(self, |pool| {
            let q = bind_all!(sqlx::query_as::<_, (String, i64, i64, i64)>(assembled(&query.sql)), &query.binds);
            q.fetch_all(pool).await
        })?;
        rows.into_iter()
            .map(|(id, vcpus, memory_mb, disk_gb)| {
                Ok((parse_uuid("host", &id)?, Resources { vcpus, memory_mb, disk_gb }))
            })
            .collect()
    }

    /// Reserves `resources` on an up host, only if they are free: ONE conditional `UPDATE`, so two
    /// concurrent reservations can never both take the last room (PostgreSQL re-checks the WHERE
    /// clause on the latest row version after taking the row lock; SQLite has one writer). False
    /// when the host is down, full or unknown.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn reserve(&self, host: Uuid, resources: &Resources) -> Result<bool> {
        self.adjust_capacity(RESERVE, host, resources).await
    }

    /// [`Store::reserve`] of each `(host, resources)` in turn, each its own conditional `UPDATE`
    /// (all of a host's share or none of it). Answers, for the updates that were committed, whether
    /// each reserved, and the error that stopped the rest: the caller owns what was reserved
    /// either way. What a batch round runs: the statements go to one pooled connection, so the
    /// round waits for the pool once, not once per host behind the builds of other batches.
    ///
    /// On SQLite they are one transaction: the writer lock is waited for once and committed once,
    /// instead of once per host behind every other writer of the zone (the transaction's first
    /// statement is a write, so it honours the busy timeout), for the few milliseconds the updates
    /// take; an error rolls all of them back. On PostgreSQL each commits on its own: holding host
    /// rows across the round would deadlock with single placements, which lock a host row and then
    /// the aggregate's capacity rows. Either way the same triggers keep the aggregate, per statement.
    pub(super) async fn reserve_each(&self, shares: &[(Uuid, Resources)]) -> (Vec<bool>, Result<()>) {
        let mut done = Vec::with_capacity(shares.len());
        if shares.is_empty() {
            return (done, Ok(()));
        }
        macro_rules! run {
            ($conn:expr, $into:expr) => {
                for (host, r) in shares {
                    let changed = sqlx::query(RESERVE)
                        .bind(host.to_string())
                        .bind(r.vcpus)
                        .bind(r.memory_mb)
                        .bind(r.disk_gb)
                        .execute(&mut *$conn)
                        .await?
                        .rows_affected();
                    $into.push(changed > 0);
                }
            };
        }
        let outcome: std::result::Result<(), sqlx::Error> = match &self.backend {
            super::Backend::Sqlite(pool) => {
                async {
                    let mut tx = pool.begin().await?;
                    let mut pending = Vec::with_capacity(shares.len());
                    run!(tx, pending);
                    tx.commit().await?;
                    done = pending;
                    Ok(())
                }
                .await
            }
            super::Backend::Postgres(pool) => {
                async {
                    let mut conn = pool.acquire().await?;
                    run!(conn, done);
                    Ok(())
                }
                .await
            }
        };
        (done, outcome.map_err(Into::into))
    }

    /// Gives back a reservation (instance deleted, placement abandoned, migrated away). Works on
    /// down hosts too. False when the host is unknown or holds less than `resources`: a release
    /// never drives `used` negative.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn release(&self, host: Uuid, resources: &Resources) -> Result<bool> {
        const SQL: &str = "UPDATE hosts SET vcpus_used = vcpus_used - $2, \
             memory_mb_used = memory_mb_used - $3, disk_gb_used = disk_gb_used - $4, \
             version = version + 1 \
             WHERE id = $1 AND vcpus_used >= $2 AND memory_mb_used >= $3 AND disk_gb_used >= $4";
        self.adjust_capacity(SQL, host, resources).await
    }

    /// Runs one of the capacity updates of [`Store::reserve`] and [`Store::release`] (`$1` the
    /// host, `$2..$4` vcpus, memory, disk); true when it changed the host's row.
    async fn adjust_capacity(&self, sql: &'static str, host: Uuid, resources: &Resources) -> Result<bool> {
        let id = host.to_string();
        let done = with_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(&id)
                .bind(resources.vcpus)
                .bind(resources.memory_mb)
                .bind(resources.disk_gb)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// Chooses a host for `filters` and `resources` and reserves the capacity on it: tries the
    /// best candidates in order until a reservation succeeds, re-reading the candidates when
    /// concurrent placements took all of them. `None` when no host fits. The caller owns the
    /// reservation and must [`Store::release`] it if the instance is not created.
    pub async fn place(&self, filters: &[Filter], resources: &Resources) -> Result<Option<Uuid>> {
        self.place_except(filters, resources, None).await
    }

    /// Places a new instance and inserts it: for each candidate host in turn, ONE transaction that
    /// reserves the capacity and inserts the row (and bumps the generation), so a reservation
    /// exists exactly when its instance does. With [`Store::place`] and then
    /// [`Store::instance_insert`], a node killed between the two leaked the reservation (the
    /// chaos test found it). `new.host_id` is ignored. `None` when no host fits.
    #[tracing::instrument(skip(self, new), fields(id = %new.id))]
    pub async fn instance_place_and_insert(
        &self,
        filters: &[Filter],
        new: &super::NewInstance,
    ) -> Result<Option<super::InstanceRow>> {
        for _ in 0..PLACE_ROUNDS {
            let candidates = self.candidates(filters, &new.resources, DEFAULT_CANDIDATES + 1).await?;
            if candidates.is_empty() {
                return Ok(None);
            }
            for host in candidates {
                let one = super::NewInstance { host_id: host, ..new.clone() };
                if let Some(mut rows) = self.insert_all(std::slice::from_ref(&one), true).await? {
                    return Ok(rows.pop());
                }
            }
        }
        tracing::warn!(rounds = PLACE_ROUNDS, "placement lost every candidate to concurrent placements");
        Ok(None)
    }

    /// [`Store::place`], never choosing `except` (a migration's source host).
    #[tracing::instrument(skip(self))]
    pub async fn place_except(
        &self,
        filters: &[Filter],
        resources: &Resources,
        except: Option<Uuid>,
    ) -> Result<Option<Uuid>> {
        for _ in 0..PLACE_ROUNDS {
            let mut candidates = self.candidates(filters, resources, DEFAULT_CANDIDATES + 1).await?;
            candidates.retain(|h| Some(*h) != except);
            if candidates.is_empty() {
                return Ok(None);
            }
            for host in candidates {
                if self.reserve(host, resources).await? {
                    return Ok(Some(host));
                }
            }
        }
        tracing::warn!(rounds = PLACE_ROUNDS, "placement lost every candidate to concurrent placements");
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_spliced() {
        let evil = "x'; DROP TABLE hosts; --".to_string();
        let filters = vec![
            Filter { key: "os".into(), test: Test::Eq(CapabilityValue::String(evil.clone())) },
            Filter { key: "free-disk".into(), test: Test::Ge(100.0) },
            Filter {
                key: "hv".into(),
                test: Test::In(vec![CapabilityValue::String("kvm".into()), CapabilityValue::String("xen".into())]),
            },
        ];
        let q = candidates_query(&filters, &Resources { vcpus: 1, memory_mb: 2, disk_gb: 3 }, "8", 5);
        assert!(!q.sql.contains("DROP"));
        // Two halves of the sample, each with every filter.
        assert_eq!(q.sql.matches("SELECT COUNT(*) FROM host_capabilities").count(), 6);
        assert_eq!(q.binds.len(), 3 + 2 + 2 + 3 + 3);
        assert!(q.binds.contains(&Bind::Text(evil)));
        assert!(q.sql.contains(&format!("${}", q.binds.len())));
        // The batch's sibling: the same sample, filters and binds, more columns.
        let room = room_query(&filters, &Resources { vcpus: 1, memory_mb: 2, disk_gb: 3 }, "8", 5);
        assert_eq!(room.binds, q.binds);
        assert!(room.sql.starts_with("SELECT id, free_vcpus, free_memory, free_disk FROM"));
        assert_eq!(room.sql.replacen("id, free_vcpus, free_memory, free_disk", "id", 1), q.sql);
    }
}
