//! Hosts: registration, capabilities, the aggregate, missed reports and the zone generation.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use api::{AggregateEntry, CapabilityValue};
use uuid::Uuid;
use zone_node::{StaleHosts, StoreError};

use crate::{exec_raw, filters, new_host, res, wait_for_db_clock, TestDb, HYPERVISORS};

store_test_suite!(
    hosts_crud_and_capability_round_trip,
    host_delete_refused_while_instances_remain,
    aggregate_matches_a_merge_in_rust,
    hosts_marked_down_by_missed_reports,
    silent_hosts_and_when_to_look_again,
    generation_counts_up,
);

async fn hosts_crud_and_capability_round_trip(db: &TestDb) {
    let store = db.connect().await;
    let before = store.now_ms().await.unwrap();
    let spec = new_host(
        "h1",
        serde_json::json!({"free-disk": 500, "load": 0.25, "can-run-windows": true,
                           "accept-migrations": false, "hypervisor": "kvm", "os": "1.0"}),
        res(16, 65536, 1000),
    );
    let h1 = store.host_create(&spec).await.unwrap();
    assert_eq!(h1.state, "up");
    assert_eq!(h1.total, res(16, 65536, 1000));
    assert_eq!(h1.used, res(0, 0, 0));
    assert!(h1.created_at_ms >= before && h1.last_report_ms >= before);

    // Types are preserved through the (string, float, type) tuple: "1.0" stays a string,
    // 500 a float, false a bool.
    let got = store.host_get(h1.id).await.unwrap().unwrap();
    assert_eq!(got, h1);
    let caps = &got.capabilities;
    assert_eq!(caps["free-disk"], CapabilityValue::Float(500.0));
    assert_eq!(caps["load"], CapabilityValue::Float(0.25));
    assert_eq!(caps["can-run-windows"], CapabilityValue::Bool(true));
    assert_eq!(caps["accept-migrations"], CapabilityValue::Bool(false));
    assert_eq!(caps["hypervisor"], CapabilityValue::String("kvm".into()));
    assert_eq!(caps["os"], CapabilityValue::String("1.0".into()));
    let json = serde_json::to_value(got.to_api()).unwrap();
    assert_eq!(json["capabilities"]["free-disk"], serde_json::json!({"type": "float", "value": 500.0}));
    assert_eq!(json["capabilities"]["can-run-windows"], serde_json::json!({"type": "bool", "value": true}));
    assert_eq!(json["capabilities"]["os"], serde_json::json!({"type": "string", "value": "1.0"}));

    // Names are unique; the failed insert leaves nothing behind (one transaction).
    match store.host_create(&new_host("h1", serde_json::json!({"x": 1}), res(1, 1, 1))).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "host h1"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let h2 = store.host_create(&new_host("h2", serde_json::json!({}), res(4, 4096, 100))).await.unwrap();
    let all = store.hosts().await.unwrap();
    assert_eq!(all.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["h1", "h2"]);
    assert_eq!(all[0], h1);
    assert!(all[1].capabilities.is_empty());

    // Replacing the set removes what is absent and bumps the version.
    let mut new_caps = BTreeMap::new();
    new_caps.insert("hypervisor".to_string(), CapabilityValue::String("xen".into()));
    new_caps.insert("free-disk".to_string(), CapabilityValue::Float(12.5));
    assert!(store.host_set_capabilities(h1.id, &new_caps).await.unwrap());
    let got = store.host_get(h1.id).await.unwrap().unwrap();
    assert_eq!(got.capabilities, new_caps);
    assert!(got.version > h1.version);
    assert!(!store.host_set_capabilities(Uuid::new_v4(), &new_caps).await.unwrap());
    // Unchanged keys stay, a key may change type, and an empty set removes every capability.
    let mut retyped = new_caps.clone();
    retyped.insert("hypervisor".to_string(), CapabilityValue::Float(3.0));
    assert!(store.host_set_capabilities(h1.id, &retyped).await.unwrap());
    assert_eq!(store.host_get(h1.id).await.unwrap().unwrap().capabilities, retyped);
    assert!(store.host_set_capabilities(h1.id, &BTreeMap::new()).await.unwrap());
    assert!(store.host_get(h1.id).await.unwrap().unwrap().capabilities.is_empty());

    // A report with capabilities replaces them too.
    let mut reported = BTreeMap::new();
    reported.insert("free-ram".to_string(), CapabilityValue::Float(2048.0));
    assert_eq!(store.host_report(h2.id, Some(&reported)).await.unwrap(), Some(false));
    assert_eq!(store.host_get(h2.id).await.unwrap().unwrap().capabilities, reported);
    assert_eq!(store.host_report(Uuid::new_v4(), None).await.unwrap(), None);

    // Reservations and releases; a release never goes below zero.
    assert!(store.reserve(h2.id, &res(4, 1000, 10)).await.unwrap());
    assert!(!store.reserve(h2.id, &res(1, 0, 0)).await.unwrap(), "vcpus are full");
    assert!(!store.reserve(Uuid::new_v4(), &res(0, 0, 0)).await.unwrap());
    assert_eq!(store.host_get(h2.id).await.unwrap().unwrap().used, res(4, 1000, 10));
    assert!(!store.release(h2.id, &res(5, 0, 0)).await.unwrap());
    assert!(store.release(h2.id, &res(4, 1000, 10)).await.unwrap());
    assert_eq!(store.host_get(h2.id).await.unwrap().unwrap().used, res(0, 0, 0));

    // Delete cascades to the capabilities.
    assert!(store.host_delete(h1.id).await.unwrap());
    assert!(!store.host_delete(h1.id).await.unwrap());
    assert_eq!(store.host_get(h1.id).await.unwrap(), None);
    assert!(store
        .candidates(&filters(serde_json::json!([{"key": "hypervisor", "op": "exists"}])), &res(0, 0, 0), 10)
        .await
        .unwrap()
        .is_empty());
    // The name is free again.
    store.host_create(&spec).await.unwrap();
}

async fn host_delete_refused_while_instances_remain(db: &TestDb) {
    let store = db.connect().await;
    let h = store.host_create(&new_host("busy", serde_json::json!({}), res(4, 4096, 100))).await.unwrap();
    exec_raw(
        db,
        &format!(
            "INSERT INTO instances (id, name, client_id, state, host_id, vcpus, memory_mb, disk_gb, \
             created_at_ms, updated_at_ms) VALUES ('i-1', 'vm', 'c1', 'running', '{}', 1, 512, 10, 0, 0)",
            h.id
        ),
    )
    .await;
    match store.host_delete(h.id).await {
        Err(StoreError::InUse(msg)) => {
            assert!(msg.contains(&h.id.to_string()) && msg.contains("1 instance"), "{msg}")
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(store.host_get(h.id).await.unwrap().is_some());
    exec_raw(db, "DELETE FROM instances WHERE id = 'i-1'").await;
    assert!(store.host_delete(h.id).await.unwrap());
}

async fn aggregate_matches_a_merge_in_rust(db: &TestDb) {
    use rand::{Rng, SeedableRng};
    let store = db.connect().await;
    assert!(store.aggregate().await.unwrap().is_empty());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..30 {
        let mut caps = serde_json::json!({
            "free-disk": rng.gen_range(0..1000),
            "average-load": rng.gen_range(0..100) as f64 / 4.0,
            "can-run-windows": rng.gen_bool(0.3),
            "hypervisor": HYPERVISORS[rng.gen_range(0..3)],
        });
        if i % 3 == 0 {
            caps["accept-migrations"] = serde_json::json!(true);
        }
        // 100 distinct values: the string set is bounded.
        caps["serial"] = serde_json::json!(format!("s{:03}", i * 7 % 100 + 100 * (i % 4)));
        store.host_create(&new_host(&format!("h{i}"), caps, res(1, 1, 1))).await.unwrap();
    }
    // A down host is left out.
    let down = store
        .host_create(&new_host("down", serde_json::json!({"free-disk": 99999, "zzz": "only-here"}), res(1, 1, 1)))
        .await
        .unwrap();
    exec_raw(db, &format!("UPDATE hosts SET state = 'down' WHERE id = '{}'", down.id)).await;

    let mut aggregate = store.aggregate().await.unwrap();
    // Free capacity is there too, under its reserved keys (checked in `aggregate`).
    assert_eq!(aggregate["capacity.free-vcpus"].count(), 30);
    aggregate.retain(|key, _| !key.starts_with("capacity."));
    let mut expected = api::Aggregate::new();
    for h in store.hosts().await.unwrap().iter().filter(|h| h.state == "up") {
        for (key, value) in &h.capabilities {
            let one = AggregateEntry::of(value);
            match expected.get_mut(key) {
                Some(e) => e.merge(&one),
                None => {
                    expected.insert(key.clone(), one);
                }
            }
        }
    }
    assert_eq!(aggregate.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    assert!(!aggregate.contains_key("zzz"));
    for (key, want) in &expected {
        let got = &aggregate[key];
        match (got, want) {
            (
                AggregateEntry::Float { min, max, sum, count },
                AggregateEntry::Float { min: m2, max: x2, sum: s2, count: c2 },
            ) => {
                assert_eq!((min, max, count), (m2, x2, c2), "{key}");
                assert!((sum - s2).abs() < 1e-6, "{key}: sum {sum} vs {s2}");
            }
            _ => assert_eq!(got, want, "{key}"),
        }
    }
    match &aggregate["accept-migrations"] {
        AggregateEntry::Bool { any, all, count } => assert_eq!((*any, *all, *count), (true, true, 10)),
        other => panic!("{other:?}"),
    }
    match &aggregate["serial"] {
        AggregateEntry::String { values, count, truncated } => {
            assert_eq!(*count, 30);
            assert!(values.len() <= api::AGGREGATE_MAX_VALUES);
            assert!(values.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            assert!(!*truncated, "30 hosts give at most 30 values");
        }
        other => panic!("{other:?}"),
    }
    match &aggregate["free-disk"] {
        AggregateEntry::Float { max, count, .. } => {
            assert!(*max < 99999.0);
            assert_eq!(*count, 30);
        }
        other => panic!("{other:?}"),
    }
    // The JSON shape of the design.
    let json = serde_json::to_value(&aggregate).unwrap();
    assert_eq!(json["hypervisor"]["type"], "string");
    assert!(json["free-disk"]["min"].is_number() && json["free-disk"]["sum"].is_number());
    assert!(json["can-run-windows"]["any"].is_boolean());
}

async fn hosts_marked_down_by_missed_reports(db: &TestDb) {
    const INTERVAL_MS: i64 = 1_000;
    const MAX_MISSED: i64 = 2;
    let store = db.connect().await;
    let quiet =
        store.host_create(&new_host("quiet", serde_json::json!({"hv": "kvm"}), res(4, 4096, 100))).await.unwrap();
    let chatty =
        store.host_create(&new_host("chatty", serde_json::json!({"hv": "kvm"}), res(4, 4096, 100))).await.unwrap();
    // Nobody is late yet.
    assert!(store.hosts_mark_down(INTERVAL_MS, MAX_MISSED).await.unwrap().is_empty());

    // Let the database clock pass two intervals; only `chatty` reports meanwhile.
    wait_for_db_clock(&store, quiet.last_report_ms + INTERVAL_MS * MAX_MISSED + 100).await;
    assert_eq!(store.host_report(chatty.id, None).await.unwrap(), Some(false));
    let down = store.hosts_mark_down(INTERVAL_MS, MAX_MISSED).await.unwrap();
    assert_eq!(down, [quiet.id]);
    let q = store.host_get(quiet.id).await.unwrap().unwrap();
    assert_eq!(q.state, "down");
    assert!(q.missed_reports >= MAX_MISSED, "{}", q.missed_reports);
    let c = store.host_get(chatty.id).await.unwrap().unwrap();
    assert_eq!((c.state.as_str(), c.missed_reports), ("up", 0));
    // Marked once: the next sweep does not report it again.
    assert!(!store.hosts_mark_down(INTERVAL_MS, MAX_MISSED).await.unwrap().contains(&quiet.id));

    // A down host takes no placement.
    let f = filters(serde_json::json!([{"key": "hv", "op": "eq", "value": "kvm"}]));
    assert_eq!(store.candidates(&f, &res(1, 1, 1), 10).await.unwrap(), [chatty.id]);
    assert!(!store.reserve(quiet.id, &res(1, 1, 1)).await.unwrap());

    // Reporting brings it back up, and says so once.
    assert_eq!(store.host_report(quiet.id, None).await.unwrap(), Some(true));
    assert_eq!(store.host_report(quiet.id, None).await.unwrap(), Some(false));
    let q = store.host_get(quiet.id).await.unwrap().unwrap();
    assert_eq!((q.state.as_str(), q.missed_reports), ("up", 0));
    assert!(q.last_report_ms > quiet.last_report_ms);
    assert!(store.reserve(quiet.id, &res(1, 1, 1)).await.unwrap());
}

/// What the sweep reads: the silent up hosts, and how long until the next up host is silent (so
/// it need not look before then).
async fn silent_hosts_and_when_to_look_again(db: &TestDb) {
    const INTERVAL_MS: i64 = 500;
    const MAX_MISSED: i64 = 2;
    const WINDOW: Duration = Duration::from_millis((INTERVAL_MS * MAX_MISSED) as u64);
    let store = db.connect().await;
    // No host: nothing silent, nothing to wait for.
    assert_eq!(store.hosts_stale(INTERVAL_MS, MAX_MISSED).await.unwrap(), StaleHosts::default());

    let quiet =
        store.host_create(&new_host("quiet", serde_json::json!({"hv": "kvm"}), res(4, 4096, 100))).await.unwrap();
    let s = store.hosts_stale(INTERVAL_MS, MAX_MISSED).await.unwrap();
    assert!(s.ids.is_empty(), "{s:?}");
    assert!(s.next_in.is_some_and(|d| d <= WINDOW), "{s:?}");

    // `quiet` ages past the window; `chatty` has just reported.
    wait_for_db_clock(&store, quiet.last_report_ms + INTERVAL_MS * MAX_MISSED + 50).await;
    let chatty =
        store.host_create(&new_host("chatty", serde_json::json!({"hv": "kvm"}), res(4, 4096, 100))).await.unwrap();
    let s = store.hosts_stale(INTERVAL_MS, MAX_MISSED).await.unwrap();
    let after = store.now_ms().await.unwrap();
    assert_eq!(s.ids, [quiet.id]);
    // `chatty` falls silent one window after its report: no sooner than that, as of `after`.
    let soonest = Duration::from_millis((chatty.last_report_ms + INTERVAL_MS * MAX_MISSED - after).max(0) as u64);
    assert!(s.next_in.is_some_and(|d| d >= soonest && d <= WINDOW), "{s:?}, soonest {soonest:?}");

    // Once both are down, no host is up: nothing to wait for.
    wait_for_db_clock(&store, chatty.last_report_ms + INTERVAL_MS * MAX_MISSED + 50).await;
    let down: BTreeSet<Uuid> = store.hosts_mark_down(INTERVAL_MS, MAX_MISSED).await.unwrap().into_iter().collect();
    assert_eq!(down, BTreeSet::from([quiet.id, chatty.id]));
    assert_eq!(store.hosts_stale(INTERVAL_MS, MAX_MISSED).await.unwrap(), StaleHosts::default());
}

async fn generation_counts_up(db: &TestDb) {
    let store = db.connect().await;
    assert_eq!(store.generation().await.unwrap(), 0);
    // Concurrent bumps from two pools: none lost.
    let other = db.connect_small(2).await;
    let bumps = futures::future::try_join_all((0..20).map(|i| {
        if i % 2 == 0 {
            store.bump_generation()
        } else {
            other.bump_generation()
        }
    }))
    .await
    .unwrap();
    let distinct: BTreeSet<i64> = bumps.into_iter().collect();
    assert_eq!(distinct, (1..=20).collect());
    assert_eq!(store.generation().await.unwrap(), 20);
}
