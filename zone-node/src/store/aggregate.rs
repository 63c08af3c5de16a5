//! The zone's aggregate of its up hosts' capabilities and free capacity: what `GET
//! /v1/capabilities` answers and what parents route on.
//!
//! It is **maintained, not recomputed**: triggers (migration `0006_aggregate`) keep
//! `aggregate_keys` (count and float sum per key and kind) and `aggregate_values` (how many up
//! hosts hold each value) in step with every write to `hosts` and `host_capabilities`, in the
//! statement that makes the change, on whichever node makes it. On PostgreSQL the rows are split
//! into 32 shards by host id (migration `0009_aggregate_shards`), so concurrent registrations and
//! creates do not queue on one row per key; readers sum over the shards. Reading costs O(keys): one row per
//! key, min and max from the value index (so they stay right when the host holding the extreme
//! leaves), and for string keys the first [`AGGREGATE_MAX_VALUES`] values from the primary key.
//!
//! [`Store::aggregate_recomputed`] computes the same answer from the hosts in O(hosts); the store
//! suite checks the two agree after random sequences of changes.

use std::collections::BTreeMap;

use api::{Aggregate, AggregateEntry, AGGREGATE_MAX_VALUES};
use federation::matching::{FREE_DISK_GB, FREE_MEMORY_MB, FREE_VCPUS};

use super::{assembled, Result, Store, StoreError};

/// The kind under which the triggers count free capacity, apart from host capabilities of the
/// same key name.
const CAPACITY: &str = "capacity";

impl Store {
    /// [`Store::aggregate`] for a caller that has just read `generation`: the aggregate kept from
    /// the last call with the same generation, else a fresh read (then kept).
    ///
    /// Sound because every change to the aggregate bumps the generation in its own transaction
    /// (hosts registered, deleted, up or down or with new capabilities; capacity taken or given
    /// back), and the aggregate is read *after* the generation, so what is kept is never older
    /// than the generation it is kept under. What parents' polls ask every second: at rest this
    /// makes a poll answered `304` one read (the generation) instead of two or three.
    pub async fn aggregate_at(&self, generation: i64) -> Result<Aggregate> {
        if let Some((g, aggregate)) = self.aggregate_at.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if *g == generation {
                return Ok(aggregate.clone());
            }
        }
        let aggregate = self.aggregate().await?;
        *self.aggregate_at.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, aggregate.clone()));
        Ok(aggregate)
    }

    /// The zone's aggregate over its up hosts: capabilities (floats as min/max/sum/count, bools as
    /// any/all/count, strings as their sorted distinct values, at most [`AGGREGATE_MAX_VALUES`],
    /// and count) plus free capacity under the reserved `capacity.*` keys. Down hosts are left out:
    /// a parent routes on this, and a down host can take nothing. A key stored with different types
    /// on different hosts keeps the type most hosts use ([`AggregateEntry::merge`]).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn aggregate(&self) -> Result<Aggregate> {
        // Count and sum per key summed over its shards (PostgreSQL keeps up to 32 rows per key,
        // SQLite one). Min and max from the (key, kind, float_value) index: two index probes per
        // key, whichever shard holds the extreme (every row standing has hosts > 0).
        const KEYS: &str = "SELECT k.key, k.kind, CAST(SUM(k.hosts) AS BIGINT), SUM(k.sum), \
             (SELECT v.float_value FROM aggregate_values v WHERE v.key = k.key AND v.kind = k.kind \
              ORDER BY v.float_value ASC LIMIT 1), \
             (SELECT v.float_value FROM aggregate_values v WHERE v.key = k.key AND v.kind = k.kind \
              ORDER BY v.float_value DESC LIMIT 1) \
             FROM aggregate_keys k GROUP BY k.key, k.kind";
        type Key = (String, String, i64, f64, Option<f64>, Option<f64>);
        let mut keys: Vec<Key> = with_pool!(self, |pool| sqlx::query_as(KEYS).fetch_all(pool).await)?;
        // A key of two types merges floats, then bools, then strings, as the recomputation does,
        // so a tie between types resolves the same way.
        let rank = |kind: &str| ["float", "bool", "string"].iter().position(|k| *k == kind).unwrap_or(3);
        keys.sort_by(|a, b| rank(&a.1).cmp(&rank(&b.1)).then_with(|| a.0.cmp(&b.0)));

        // String values: one bounded range of the primary key per string key, in one statement.
        let string_keys: Vec<&str> = keys.iter().filter(|k| k.1 == "string").map(|k| k.0.as_str()).collect();
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if !string_keys.is_empty() {
            let sql = string_values_sql(string_keys.len());
            let rows: Vec<(String, String)> = with_pool!(self, |pool| {
                let mut q = sqlx::query_as(assembled(&sql));
                for key in &string_keys {
                    q = q.bind(*key);
                }
                q.fetch_all(pool).await
            })?;
            for (key, value) in rows {
                values.entry(key).or_default().push(value);
            }
        }

        let mut aggregate = Aggregate::new();
        let mut capacity = Aggregate::new();
        for (key, kind, count, sum, min, max) in keys {
            let entry = match kind.as_str() {
                "float" | CAPACITY => {
                    AggregateEntry::Float { min: min.unwrap_or(0.0), max: max.unwrap_or(0.0), sum, count }
                }
                // A bool's float value is 0 or 1, so the sum is the number of true values.
                "bool" => AggregateEntry::Bool { any: sum > 0.0, all: sum >= count as f64, count },
                "string" => {
                    let mut values = values.remove(&key).unwrap_or_default();
                    // Sorted here too: PostgreSQL's "C" collation and Rust agree, this makes sure.
                    values.sort();
                    let truncated = values.len() > AGGREGATE_MAX_VALUES;
                    values.truncate(AGGREGATE_MAX_VALUES);
                    AggregateEntry::String { values, count, truncated }
                }
                other => return Err(StoreError::Other(format!("aggregate key {key:?} has unknown kind {other:?}"))),
            };
            if kind == CAPACITY {
                capacity.insert(key, entry);
            } else {
                merge_into(&mut aggregate, key, entry);
            }
        }
        // The reserved capacity keys win over a host capability of the same name.
        aggregate.extend(capacity);
        Ok(aggregate)
    }

    /// [`Store::aggregate`] computed from every up host, in O(hosts): the reference the maintained
    /// aggregate is checked against (the store suite does, after random sequences of changes).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn aggregate_recomputed(&self) -> Result<Aggregate> {
        const FLOATS: &str = "SELECT c.key, MIN(c.float_value), MAX(c.float_value), \
             SUM(c.float_value), COUNT(*) FROM host_capabilities c JOIN hosts h ON h.id = c.host_id \
             WHERE h.state = 'up' AND c.kind = 'float' GROUP BY c.key";
        const BOOLS: &str = "SELECT c.key, MAX(c.float_value), MIN(c.float_value), COUNT(*) \
             FROM host_capabilities c JOIN hosts h ON h.id = c.host_id \
             WHERE h.state = 'up' AND c.kind = 'bool' GROUP BY c.key";
        const STRINGS: &str = "SELECT c.key, c.str_value, COUNT(*) \
             FROM host_capabilities c JOIN hosts h ON h.id = c.host_id \
             WHERE h.state = 'up' AND c.kind = 'string' GROUP BY c.key, c.str_value";
        // SUM of BIGINT is NUMERIC on PostgreSQL: cast back so both backends give integers.
        const CAPACITY_SQL: &str = "SELECT COUNT(*), \
             MIN(vcpus_total - vcpus_used), MAX(vcpus_total - vcpus_used), CAST(SUM(vcpus_total - vcpus_used) AS BIGINT), \
             MIN(memory_mb_total - memory_mb_used), MAX(memory_mb_total - memory_mb_used), \
             CAST(SUM(memory_mb_total - memory_mb_used) AS BIGINT), \
             MIN(disk_gb_total - disk_gb_used), MAX(disk_gb_total - disk_gb_used), CAST(SUM(disk_gb_total - disk_gb_used) AS BIGINT) \
             FROM hosts WHERE state = 'up'";
        type Floats = Vec<(String, f64, f64, f64, i64)>;
        type Bools = Vec<(String, f64, f64, i64)>;
        type Strings = Vec<(String, Option<String>, i64)>;
        type Capacity = (
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let (floats, bools, strings, capacity): (Floats, Bools, Strings, Capacity) = with_pool!(self, |pool| async {
            let floats: Floats = sqlx::query_as(FLOATS).fetch_all(pool).await?;
            let bools: Bools = sqlx::query_as(BOOLS).fetch_all(pool).await?;
            let strings: Strings = sqlx::query_as(STRINGS).fetch_all(pool).await?;
            let capacity: Capacity = sqlx::query_as(CAPACITY_SQL).fetch_one(pool).await?;
            Ok::<_, sqlx::Error>((floats, bools, strings, capacity))
        }
        .await)?;

        let mut aggregate = Aggregate::new();
        for (key, min, max, sum, count) in floats {
            merge_into(&mut aggregate, key, AggregateEntry::Float { min, max, sum, count });
        }
        for (key, max, min, count) in bools {
            merge_into(&mut aggregate, key, AggregateEntry::Bool { any: max != 0.0, all: min != 0.0, count });
        }
        let mut string_sets: BTreeMap<String, (Vec<String>, i64)> = BTreeMap::new();
        for (key, value, count) in strings {
            let entry = string_sets.entry(key).or_default();
            if let Some(v) = value {
                entry.0.push(v);
            }
            entry.1 += count;
        }
        for (key, (mut values, count)) in string_sets {
            values.sort();
            let truncated = values.len() > AGGREGATE_MAX_VALUES;
            values.truncate(AGGREGATE_MAX_VALUES);
            merge_into(&mut aggregate, key, AggregateEntry::String { values, count, truncated });
        }
        let (count, v0, v1, v2, m0, m1, m2, d0, d1, d2) = capacity;
        if count > 0 {
            let entry = |min: Option<i64>, max: Option<i64>, sum: Option<i64>| AggregateEntry::Float {
                min: min.unwrap_or(0) as f64,
                max: max.unwrap_or(0) as f64,
                sum: sum.unwrap_or(0) as f64,
                count,
            };
            aggregate.insert(FREE_VCPUS.into(), entry(v0, v1, v2));
            aggregate.insert(FREE_MEMORY_MB.into(), entry(m0, m1, m2));
            aggregate.insert(FREE_DISK_GB.into(), entry(d0, d1, d2));
        }
        Ok(aggregate)
    }
}

/// Adds `entry` under `key`, merging with an entry of another type already there.
fn merge_into(aggregate: &mut Aggregate, key: String, entry: AggregateEntry) {
    match aggregate.get_mut(&key) {
        Some(mine) => mine.merge(&entry),
        None => {
            aggregate.insert(key, entry);
        }
    }
}

/// The first `AGGREGATE_MAX_VALUES + 1` distinct values (one more, to tell whether there are
/// more) of each of `n` string keys (`$1..$n`), each a bounded range of the primary key (a value
/// held in several shards is one value).
fn string_values_sql(n: usize) -> String {
    let limit = AGGREGATE_MAX_VALUES + 1;
    let parts: Vec<String> = (1..=n)
        .map(|i| {
            format!(
                "SELECT * FROM (SELECT DISTINCT key, value FROM aggregate_values \
                 WHERE key = ${i} AND kind = 'string' ORDER BY value LIMIT {limit}) s{i}"
            )
        })
        .collect();
    parts.join(" UNION ALL ")
}
