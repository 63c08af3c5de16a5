//! Placement in SQL: the validated filters ([`Filter`], made by `crate::scheduler` from a
//! request's requirements) and resources as one candidate query.
//!
//! Each filter becomes
//! `EXISTS (SELECT 1 FROM host_capabilities c WHERE c.host_id = h.id AND c.key = $n AND <test>)`,
//! which the `(key, float_value)` and `(key, str_value)` indexes serve. Every client value is a
//! bind parameter; the only text spliced into the SQL is fixed by this module (column names, the
//! type literals `'float'`/`'bool'`/`'string'` and `$n` placeholders), so no request can change the
//! statement's shape. The same text runs on SQLite and PostgreSQL.
//!
//! # Weighing
//! Candidates are ordered by free memory fraction + free vcpu fraction (each 0..1, a host with no
//! capacity of a kind counts 0 for it), highest first, then by absolute free memory, then id (a
//! stable order, so tests and operators can predict it). Fractions rather than absolute figures
//! make large and small hosts comparable and spread load: an empty small host beats a half-full
//! big one. Disk is left out of the weight on purpose: it is rarely the scarce resource and would
//! dilute the two that are; it is still a hard filter.

use std::collections::BTreeMap;

use api::{CapabilityValue, Resources};

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

/// The query returning the ids of up to `limit` up hosts that pass every filter and have at least
/// `resources` free, best first (see the module docs for the weighing).
pub fn candidates_query(filters: &[Filter], resources: &Resources, limit: i64) -> CandidateQuery {
    let mut b = Builder { sql: String::new(), binds: Vec::new() };
    let vcpus = b.param(Bind::Int(resources.vcpus));
    let memory = b.param(Bind::Int(resources.memory_mb));
    let disk = b.param(Bind::Int(resources.disk_gb));
    b.sql = format!(
        "SELECT h.id FROM hosts h WHERE h.state = 'up' \
         AND h.vcpus_total - h.vcpus_used >= {vcpus} \
         AND h.memory_mb_total - h.memory_mb_used >= {memory} \
         AND h.disk_gb_total - h.disk_gb_used >= {disk}"
    );
    for f in filters {
        let key = b.param(Bind::Text(f.key.clone()));
        let test = b.test(&f.test);
        b.sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM host_capabilities c WHERE c.host_id = h.id AND c.key = {key} AND {test})"
        ));
    }
    let limit = b.param(Bind::Int(limit.max(1)));
    b.sql.push_str(&format!(
        " ORDER BY \
         COALESCE((h.memory_mb_total - h.memory_mb_used) * 1.0 / NULLIF(h.memory_mb_total, 0), 0) \
         + COALESCE((h.vcpus_total - h.vcpus_used) * 1.0 / NULLIF(h.vcpus_total, 0), 0) DESC, \
         h.memory_mb_total - h.memory_mb_used DESC, h.id \
         LIMIT {limit}"
    ));
    CandidateQuery { sql: b.sql, binds: b.binds }
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
        let q = candidates_query(&filters, &Resources { vcpus: 1, memory_mb: 2, disk_gb: 3 }, 5);
        assert!(!q.sql.contains("DROP"));
        assert_eq!(q.sql.matches("EXISTS").count(), 3);
        assert_eq!(q.binds.len(), 3 + 2 + 2 + 3 + 1);
        assert!(q.binds.contains(&Bind::Text(evil)));
        assert!(q.sql.contains(&format!("${}", q.binds.len())));
    }
}
