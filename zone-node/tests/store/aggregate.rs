//! The maintained aggregate (kept by triggers as hosts change) against a full recomputation.

use std::collections::BTreeMap;

use api::{Aggregate, AggregateEntry, CapabilityValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;
use zone_node::Store;

use crate::{exec_raw, new_host, res, TestDb, HYPERVISORS};

store_test_suite!(maintained_aggregate_equals_recomputation_after_random_changes);

/// At most this many hosts at a time, so values repeat across hosts and keys come and go.
const MAX_HOSTS: usize = 40;
const CHANGES: usize = 10_000;

/// Random capabilities from small value sets (shared values, extremes held by several hosts),
/// with a key whose type differs between hosts.
fn random_caps(rng: &mut StdRng) -> serde_json::Value {
    let mut caps = serde_json::json!({
        "free-ram": rng.gen_range(0..20) as f64 * 512.0,
        "load": rng.gen_range(0..40) as f64 * 0.25,
        "hypervisor": HYPERVISORS[rng.gen_range(0..3)],
    });
    if rng.gen_bool(0.5) {
        caps["ssd"] = serde_json::json!(rng.gen_bool(0.5));
    }
    if rng.gen_bool(0.3) {
        caps["rack"] = serde_json::json!(format!("r{}", rng.gen_range(0..80)));
    }
    match rng.gen_range(0..3) {
        0 => caps["mixed"] = serde_json::json!(rng.gen_range(0..4) as f64),
        1 => caps["mixed"] = serde_json::json!("text"),
        _ => {}
    }
    caps
}

fn typed(caps: serde_json::Value) -> BTreeMap<String, CapabilityValue> {
    new_host("x", caps, res(1, 1, 1)).capabilities
}

/// Equal up to float rounding in sums.
fn assert_same(maintained: &Aggregate, recomputed: &Aggregate, after: usize) {
    assert_eq!(
        maintained.keys().collect::<Vec<_>>(),
        recomputed.keys().collect::<Vec<_>>(),
        "keys after {after} changes"
    );
    for (key, want) in recomputed {
        let got = &maintained[key];
        match (got, want) {
            (
                AggregateEntry::Float { min, max, sum, count },
                AggregateEntry::Float { min: m2, max: x2, sum: s2, count: c2 },
            ) => {
                assert_eq!((min, max, count), (m2, x2, c2), "{key} after {after} changes");
                assert!((sum - s2).abs() <= 1e-6 * s2.abs().max(1.0), "{key}: sum {sum} vs {s2} after {after} changes");
            }
            _ => assert_eq!(got, want, "{key} after {after} changes"),
        }
    }
}

/// The maintained aggregate equals the recomputed one (`after`: how many changes were made, for
/// the message). The batch tests check it too.
pub(crate) async fn check(store: &Store, after: usize) {
    let maintained = store.aggregate().await.unwrap();
    let recomputed = store.aggregate_recomputed().await.unwrap();
    assert_same(&maintained, &recomputed, after);
}

async fn maintained_aggregate_equals_recomputation_after_random_changes(db: &TestDb) {
    let store = db.connect().await;
    assert!(store.aggregate().await.unwrap().is_empty());
    let mut rng = StdRng::seed_from_u64(9);
    let mut hosts: Vec<Uuid> = Vec::new();
    let mut named = 0usize;
    for change in 1..=CHANGES {
        let pick = |rng: &mut StdRng, hosts: &[Uuid]| hosts[rng.gen_range(0..hosts.len())];
        match rng.gen_range(0..100) {
            // Registration.
            0..=9 if hosts.len() < MAX_HOSTS => {
                named += 1;
                let total = res(rng.gen_range(1..5) * 4, rng.gen_range(1..5) * 4096, 100);
                let h = store.host_create(&new_host(&format!("h{named}"), random_caps(&mut rng), total)).await.unwrap();
                hosts.push(h.id);
            }
            _ if hosts.is_empty() => continue,
            // Removal (of an up or a down host).
            0..=14 => {
                let id = hosts.swap_remove(rng.gen_range(0..hosts.len()));
                assert!(store.host_delete(id).await.unwrap());
            }
            // An operator replaces the capabilities.
            15..=29 => {
                let id = pick(&mut rng, &hosts);
                assert!(store.host_set_capabilities(id, &typed(random_caps(&mut rng))).await.unwrap());
            }
            // Reports, a few at a time, some with changed capabilities; a down host comes back.
            30..=54 => {
                let n = rng.gen_range(1..5);
                let caps: Vec<(Uuid, Option<BTreeMap<String, CapabilityValue>>)> = (0..n)
                    .map(|_| {
                        let id = pick(&mut rng, &hosts);
                        (id, rng.gen_bool(0.5).then(|| typed(random_caps(&mut rng))))
                    })
                    .collect();
                let reports: Vec<_> = caps.iter().map(|(id, c)| (*id, c.as_ref())).collect();
                store.hosts_report(&reports).await.unwrap();
            }
            // A host goes silent and is marked down (as the sweep does, by a plain UPDATE).
            55..=64 => {
                let id = pick(&mut rng, &hosts);
                exec_raw(db, &format!("UPDATE hosts SET state = 'down' WHERE id = '{id}'")).await;
            }
            // Placements reserve capacity, deletions give it back.
            65..=84 => {
                let id = pick(&mut rng, &hosts);
                store.reserve(id, &res(rng.gen_range(1..4), rng.gen_range(1..4) * 512, 1)).await.unwrap();
            }
            _ => {
                let id = pick(&mut rng, &hosts);
                store.release(id, &res(rng.gen_range(1..4), rng.gen_range(1..4) * 512, 1)).await.unwrap();
            }
        }
        if change % 500 == 0 {
            check(&store, change).await;
        }
    }
    check(&store, CHANGES).await;
    // Everything removed: nothing left counted.
    for id in hosts {
        assert!(store.host_delete(id).await.unwrap());
    }
    assert!(store.aggregate().await.unwrap().is_empty());
    assert!(store.aggregate_recomputed().await.unwrap().is_empty());
}
