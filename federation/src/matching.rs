//! Whether a zone's aggregate can satisfy a request, and how much room it has.
//!
//! An aggregate summarises many hosts, so the answer is a necessary condition: a zone whose
//! aggregate fails a requirement certainly has no host that meets it, and is never asked; a zone
//! whose aggregate passes may still find no single host that meets all requirements at once, and
//! then refuses (`no_valid_host`), and the next candidate is tried. The semantics follow the
//! scheduler's per-host filters (`zone-node/src/scheduler/validate.rs`): equality needs the same
//! type and value, `ne` needs the key present with another value, ranges only match floats.
//!
//! Free capacity is part of every zone's aggregate under the reserved keys of
//! [`CAPACITY_KEYS`] (per up host: capacity minus reservations), so resources are checked the same
//! way: some host must have at least the requested amount of each resource free.

use api::{Aggregate, AggregateEntry, CapabilityValue, Op, Requirement, Resources};

/// Reserved aggregate keys: free vCPUs, memory (MB) and disk (GB) of each up host.
pub const FREE_VCPUS: &str = "capacity.free-vcpus";
pub const FREE_MEMORY_MB: &str = "capacity.free-memory-mb";
pub const FREE_DISK_GB: &str = "capacity.free-disk-gb";
pub const CAPACITY_KEYS: [&str; 3] = [FREE_VCPUS, FREE_MEMORY_MB, FREE_DISK_GB];
/// Capability keys hosts may not report and requirements may not name: they are the zone's own.
pub const RESERVED_PREFIX: &str = "capacity.";

/// Whether some hosts summarised by `agg` may meet every requirement and have `resources` free.
/// A zone with no up host (no capacity entries) satisfies nothing.
pub fn may_satisfy(agg: &Aggregate, requirements: &[Requirement], resources: &Resources) -> bool {
    has_hosts(agg) && fits(agg, resources) && requirements.iter().all(|r| may_meet(agg, r))
}

/// Whether the aggregate covers at least one up host.
pub fn has_hosts(agg: &Aggregate) -> bool {
    agg.get(FREE_VCPUS).is_some_and(|e| e.count() > 0)
}

/// Whether some host has at least each requested resource free (each resource on its own: the
/// zone below makes the exact decision).
pub fn fits(agg: &Aggregate, r: &Resources) -> bool {
    let room = |key: &str, need: i64| {
        need <= 0 || matches!(agg.get(key), Some(AggregateEntry::Float { max, .. }) if *max >= need as f64)
    };
    room(FREE_VCPUS, r.vcpus) && room(FREE_MEMORY_MB, r.memory_mb) && room(FREE_DISK_GB, r.disk_gb)
}

/// Whether the zone's free capacity may hold `count` instances of `r` at once (a multi-create,
/// which goes to one zone whole): some host has room for one, and the free capacity summed over
/// its up hosts covers all of them, resource by resource. Like [`fits`], a necessary condition:
/// the zone below places each instance and refuses the batch when they do not all fit.
pub fn may_hold(agg: &Aggregate, r: &Resources, count: u32) -> bool {
    let total = |key: &str, need: i64| {
        need <= 0
            || matches!(agg.get(key), Some(AggregateEntry::Float { sum, .. }) if *sum >= need as f64 * f64::from(count))
    };
    fits(agg, r) && total(FREE_VCPUS, r.vcpus) && total(FREE_MEMORY_MB, r.memory_mb) && total(FREE_DISK_GB, r.disk_gb)
}

/// Free memory summed over the zone's up hosts: what routing ranks zones by.
pub fn free_memory_mb(agg: &Aggregate) -> f64 {
    match agg.get(FREE_MEMORY_MB) {
        Some(AggregateEntry::Float { sum, .. }) => sum.max(0.0),
        _ => 0.0,
    }
}

/// Whether some host summarised by `agg` may meet one (validated) requirement.
pub fn may_meet(agg: &Aggregate, r: &Requirement) -> bool {
    let Some(entry) = agg.get(&r.key) else { return false };
    if entry.count() <= 0 {
        return false;
    }
    let value = r.value.as_ref().and_then(|v| serde_json::from_value::<CapabilityValue>(v.clone()).ok());
    match r.op {
        Op::Exists => true,
        Op::Eq => value.is_some_and(|v| may_equal(entry, &v)),
        Op::Ne => value.is_some_and(|v| may_differ(entry, &v)),
        Op::In => r.value.as_ref().and_then(|v| v.as_array()).is_some_and(|items| {
            items
                .iter()
                .any(|item| serde_json::from_value::<CapabilityValue>(item.clone()).is_ok_and(|v| may_equal(entry, &v)))
        }),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let (Some(CapabilityValue::Float(x)), AggregateEntry::Float { min, max, .. }) = (value, entry) else {
                return false;
            };
            match r.op {
                Op::Lt => *min < x,
                Op::Le => *min <= x,
                Op::Gt => *max > x,
                _ => *max >= x,
            }
        }
    }
}

fn may_equal(entry: &AggregateEntry, v: &CapabilityValue) -> bool {
    match (entry, v) {
        (AggregateEntry::Float { min, max, .. }, CapabilityValue::Float(x)) => *min <= *x && *x <= *max,
        (AggregateEntry::Bool { any, all, .. }, CapabilityValue::Bool(b)) => {
            if *b {
                *any
            } else {
                !*all
            }
        }
        (AggregateEntry::String { values, truncated, .. }, CapabilityValue::String(s)) => {
            *truncated || values.iter().any(|v| v == s)
        }
        _ => false,
    }
}

/// Some host has the key with a value other than `v` (of another type counts as other).
fn may_differ(entry: &AggregateEntry, v: &CapabilityValue) -> bool {
    match (entry, v) {
        (AggregateEntry::Float { min, max, .. }, CapabilityValue::Float(x)) => !(*min == *x && *max == *x),
        (AggregateEntry::Bool { any, all, .. }, CapabilityValue::Bool(b)) => {
            if *b {
                !*all
            } else {
                *any
            }
        }
        (AggregateEntry::String { values, truncated, .. }, CapabilityValue::String(s)) => {
            *truncated || values.iter().any(|v| v != s)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agg() -> Aggregate {
        serde_json::from_value(json!({
            "free-disk": {"type": "float", "min": 100.0, "max": 500.0, "sum": 600.0, "count": 2},
            "can-run-windows": {"type": "bool", "any": true, "all": false, "count": 2},
            "ssd": {"type": "bool", "any": true, "all": true, "count": 2},
            "hypervisor": {"type": "string", "values": ["kvm", "xen"], "count": 2},
            "os": {"type": "string", "values": ["linux"], "count": 2},
            FREE_VCPUS: {"type": "float", "min": 2.0, "max": 8.0, "sum": 10.0, "count": 2},
            FREE_MEMORY_MB: {"type": "float", "min": 1024.0, "max": 4096.0, "sum": 5120.0, "count": 2},
            FREE_DISK_GB: {"type": "float", "min": 10.0, "max": 100.0, "sum": 110.0, "count": 2}
        }))
        .unwrap()
    }

    fn req(key: &str, op: Op, value: serde_json::Value) -> Requirement {
        Requirement { key: key.into(), op, value: (!value.is_null()).then_some(value) }
    }

    #[test]
    fn floats_by_range() {
        let a = agg();
        assert!(may_meet(&a, &req("free-disk", Op::Ge, json!(500))));
        assert!(!may_meet(&a, &req("free-disk", Op::Gt, json!(500))));
        assert!(may_meet(&a, &req("free-disk", Op::Le, json!(100))));
        assert!(!may_meet(&a, &req("free-disk", Op::Lt, json!(100))));
        assert!(may_meet(&a, &req("free-disk", Op::Eq, json!(300))), "inside [min, max]: maybe");
        assert!(!may_meet(&a, &req("free-disk", Op::Eq, json!(50))));
        assert!(may_meet(&a, &req("free-disk", Op::Ne, json!(100))));
        assert!(!may_meet(&a, &req("free-disk", Op::Eq, json!("300"))), "a string never equals a float");
        assert!(!may_meet(&a, &req("hypervisor", Op::Ge, json!(1))), "ranges only match floats");
    }

    #[test]
    fn bools_strings_and_in() {
        let a = agg();
        assert!(may_meet(&a, &req("can-run-windows", Op::Eq, json!(false))));
        assert!(!may_meet(&a, &req("ssd", Op::Eq, json!(false))), "every host has an ssd");
        assert!(!may_meet(&a, &req("ssd", Op::Ne, json!(true))));
        assert!(may_meet(&a, &req("hypervisor", Op::Eq, json!("xen"))));
        assert!(!may_meet(&a, &req("hypervisor", Op::Eq, json!("hyperv"))));
        assert!(!may_meet(&a, &req("os", Op::Ne, json!("linux"))), "every host runs linux");
        assert!(may_meet(&a, &req("hypervisor", Op::In, json!(["hyperv", "kvm"]))));
        assert!(!may_meet(&a, &req("hypervisor", Op::In, json!(["hyperv", "vmware"]))));
        assert!(may_meet(&a, &req("os", Op::Exists, json!(null))));
        assert!(!may_meet(&a, &req("gpu", Op::Exists, json!(null))));
        // A truncated value set may hold anything.
        let mut t = agg();
        t.insert("os".into(), AggregateEntry::String { values: vec!["a".into()], count: 100, truncated: true });
        assert!(may_meet(&t, &req("os", Op::Eq, json!("zz"))));
    }

    #[test]
    fn resources_need_one_host_with_room() {
        let a = agg();
        assert!(fits(&a, &Resources { vcpus: 8, memory_mb: 4096, disk_gb: 100 }));
        assert!(!fits(&a, &Resources { vcpus: 9, memory_mb: 1, disk_gb: 1 }));
        assert!(may_satisfy(&a, &[], &Resources::default()));
        assert!(!may_satisfy(&Aggregate::new(), &[], &Resources::default()), "no host, nothing to place on");
        assert_eq!(free_memory_mb(&a), 5120.0);
    }

    #[test]
    fn a_batch_needs_room_for_all_of_it_summed_over_hosts() {
        let a = agg();
        // Two hosts with 2 and 8 vcpus free (10 in all), 1024 and 4096 MB.
        let one = Resources { vcpus: 2, memory_mb: 1024, disk_gb: 10 };
        assert!(may_hold(&a, &one, 1));
        assert!(may_hold(&a, &one, 5), "10 vcpus and 5120 MB hold five");
        assert!(!may_hold(&a, &one, 6), "not six: 12 vcpus needed");
        assert!(!may_hold(&a, &Resources { vcpus: 9, memory_mb: 0, disk_gb: 0 }, 1), "no host holds even one");
        assert!(may_hold(&a, &Resources::default(), 1000), "nothing asked, nothing short");
    }
}
