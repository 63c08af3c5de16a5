//! Placement: capability filters in SQL, refused requirements, no overcommit under concurrency.

use api::CodedError;
use std::collections::BTreeMap;
use std::time::Duration;

use api::{Requirement, Resources};
use uuid::Uuid;
use zone_node::HostRow;
use zone_node::{validate_host, validate_requirements, Filter};

use crate::{filters, new_host, res, TestDb, HYPERVISORS, OSES};

store_test_suite!(
    capability_filters_select_the_right_hosts,
    invalid_requirements_are_refused_and_change_nothing,
    concurrent_placements_never_overcommit,
    a_placed_instance_and_its_reservation_are_written_together,
);

fn random_requirement(rng: &mut impl rand::Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.gen_range(0..10) {
        0 => json!({"key": "hypervisor", "op": "eq", "value": HYPERVISORS[rng.gen_range(0..3)]}),
        1 => json!({"key": "hypervisor", "op": "ne", "value": HYPERVISORS[rng.gen_range(0..3)]}),
        2 => json!({"key": "os", "op": "in", "value": [OSES[rng.gen_range(0..2)]]}),
        3 => json!({"key": "can-run-windows", "op": "eq", "value": rng.gen_bool(0.5)}),
        4 => json!({"key": "free-disk", "op": "ge", "value": rng.gen_range(0..1000)}),
        5 => json!({"key": "free-disk", "op": "lt", "value": rng.gen_range(200..1200)}),
        6 => json!({"key": "average-load", "op": "le", "value": rng.gen_range(0..10) as f64 / 10.0}),
        7 => json!({"key": "average-load", "op": "gt", "value": rng.gen_range(0..10) as f64 / 10.0}),
        8 => json!({"key": "ssd", "op": "exists"}),
        _ => json!({"key": "rack", "op": "in", "value": [rng.gen_range(0..5), rng.gen_range(0..5)]}),
    }
}

async fn capability_filters_select_the_right_hosts(db: &TestDb) {
    let store = db.connect().await;
    let specs = [
        ("a", serde_json::json!({"speed": 2, "win": true, "hv": "kvm", "gpu": "t4"})),
        ("b", serde_json::json!({"speed": 3, "win": false, "hv": "xen"})),
        ("c", serde_json::json!({"speed": 4.5, "hv": "kvm"})),
        ("d", serde_json::json!({"speed": "fast", "win": true})),
        ("e", serde_json::json!({})),
    ];
    let mut names = BTreeMap::new();
    let mut rows: Vec<HostRow> = Vec::new();
    for (name, caps) in specs {
        let h = store.host_create(&new_host(name, caps, res(8, 8192, 100))).await.unwrap();
        names.insert(h.id, name);
        rows.push(h);
    }
    let cases: Vec<(serde_json::Value, &[&str])> = vec![
        // float
        (serde_json::json!({"key": "speed", "op": "eq", "value": 3}), &["b"]),
        (serde_json::json!({"key": "speed", "op": "ne", "value": 3}), &["a", "c", "d"]),
        (serde_json::json!({"key": "speed", "op": "lt", "value": 3}), &["a"]),
        (serde_json::json!({"key": "speed", "op": "le", "value": 3}), &["a", "b"]),
        (serde_json::json!({"key": "speed", "op": "gt", "value": 3}), &["c"]),
        (serde_json::json!({"key": "speed", "op": "ge", "value": 3}), &["b", "c"]),
        (serde_json::json!({"key": "speed", "op": "in", "value": [2, 4.5, 7]}), &["a", "c"]),
        (serde_json::json!({"key": "speed", "op": "exists"}), &["a", "b", "c", "d"]),
        // bool
        (serde_json::json!({"key": "win", "op": "eq", "value": true}), &["a", "d"]),
        (serde_json::json!({"key": "win", "op": "eq", "value": false}), &["b"]),
        (serde_json::json!({"key": "win", "op": "ne", "value": true}), &["b"]),
        (serde_json::json!({"key": "win", "op": "in", "value": [false]}), &["b"]),
        (serde_json::json!({"key": "win", "op": "exists", "value": null}), &["a", "b", "d"]),
        // a bool is not the number 1, and a range never matches a bool or a string
        (serde_json::json!({"key": "win", "op": "eq", "value": 1}), &[]),
        (serde_json::json!({"key": "win", "op": "ge", "value": 0}), &[]),
        // string
        (serde_json::json!({"key": "hv", "op": "eq", "value": "kvm"}), &["a", "c"]),
        (serde_json::json!({"key": "hv", "op": "ne", "value": "kvm"}), &["b"]),
        (serde_json::json!({"key": "hv", "op": "in", "value": ["xen", "esx"]}), &["b"]),
        (serde_json::json!({"key": "hv", "op": "exists"}), &["a", "b", "c"]),
        (serde_json::json!({"key": "speed", "op": "eq", "value": "fast"}), &["d"]),
        (serde_json::json!({"key": "gpu", "op": "lt", "value": 5}), &[]),
        (serde_json::json!({"key": "nothing", "op": "exists"}), &[]),
        // values are bound, never spliced into the SQL
        (serde_json::json!({"key": "hv", "op": "eq", "value": "kvm' OR '1'='1"}), &[]),
    ];
    for (req, expected) in cases {
        let f = filters(serde_json::json!([req.clone()]));
        let ids = store.candidates(&f, &res(0, 0, 0), 100).await.unwrap();
        let mut got: Vec<&str> = ids.iter().map(|id| names[id]).collect();
        got.sort();
        assert_eq!(got, expected, "{req}");
        // The Rust reference semantics agree with the SQL.
        let mut reference: Vec<&str> =
            rows.iter().filter(|h| f.iter().all(|f| f.matches(&h.capabilities))).map(|h| h.name.as_str()).collect();
        reference.sort();
        assert_eq!(reference, expected, "reference semantics of {req}");
        // A batch's sample ([`Store::candidates_with_room`]) passes the same hosts, in the same
        // order, each with its free capacity.
        let room = store.candidates_with_room(&f, &res(0, 0, 0), 100).await.unwrap();
        assert_eq!(room.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids, "batch sample of {req}");
        assert!(room.iter().all(|(_, free)| *free == res(8, 8192, 100)), "{room:?}");
    }
    // Several filters are a conjunction.
    let f = filters(serde_json::json!([
        {"key": "hv", "op": "eq", "value": "kvm"},
        {"key": "speed", "op": "ge", "value": 1},
        {"key": "win", "op": "exists"}
    ]));
    let ids = store.candidates(&f, &res(0, 0, 0), 100).await.unwrap();
    assert_eq!(ids.iter().map(|id| names[id]).collect::<Vec<_>>(), ["a"]);
    // No filter: every up host with room, and the limit holds.
    assert_eq!(store.candidates(&[], &res(0, 0, 0), 100).await.unwrap().len(), 5);
    assert_eq!(store.candidates(&[], &res(0, 0, 0), 2).await.unwrap().len(), 2);
    assert!(store.candidates(&[], &res(9, 0, 0), 100).await.unwrap().is_empty());

    // Weighing: the host with the most free capacity comes first.
    let a = rows[0].id;
    assert!(store.reserve(rows[1].id, &res(4, 4096, 0)).await.unwrap());
    assert!(store.reserve(rows[2].id, &res(2, 2048, 0)).await.unwrap());
    assert!(store.reserve(rows[3].id, &res(1, 1024, 0)).await.unwrap());
    assert!(store.reserve(rows[4].id, &res(1, 1024, 0)).await.unwrap());
    assert_eq!(store.candidates(&[], &res(0, 0, 0), 1).await.unwrap(), [a]);
    let room = store.candidates_with_room(&[], &res(0, 0, 0), 100).await.unwrap();
    assert_eq!(
        room.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        store.candidates(&[], &res(0, 0, 0), 100).await.unwrap()
    );
    assert_eq!(room[0], (a, res(8, 8192, 100)));
    assert_eq!(room.iter().find(|(id, _)| *id == rows[1].id).map(|(_, free)| *free), Some(res(4, 4096, 100)));
    assert!(store.candidates_with_room(&[], &res(5, 0, 0), 100).await.unwrap().iter().all(|(id, _)| *id != rows[1].id));
    assert_eq!(store.place(&[], &res(1, 1, 1)).await.unwrap(), Some(a));
}

async fn invalid_requirements_are_refused_and_change_nothing(db: &TestDb) {
    let store = db.connect().await;
    let h = store.host_create(&new_host("h", serde_json::json!({"speed": 3}), res(8, 8192, 100))).await.unwrap();
    // An unknown op is a serde error.
    let err =
        serde_json::from_value::<Vec<Requirement>>(serde_json::json!([{"key": "speed", "op": "between", "value": 1}]))
            .unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
    let cases = [
        (serde_json::json!([{"key": "speed", "op": "ge", "value": "3"}]), "requirements[0]", "a number"),
        (
            serde_json::json!([{"key": "speed", "op": "exists"}, {"key": "speed", "op": "lt", "value": true}]),
            "requirements[1]",
            "a number",
        ),
        (serde_json::json!([{"key": "speed", "op": "in", "value": []}]), "requirements[0]", "non-empty"),
        (serde_json::json!([{"key": "speed", "op": "in", "value": [1, "x"]}]), "requirements[0]", "one type"),
        (serde_json::json!([{"key": "speed", "op": "in", "value": [[1]]}]), "requirements[0]", "array"),
        (serde_json::json!([{"key": "speed", "op": "exists", "value": 1}]), "requirements[0]", "no value"),
        (serde_json::json!([{"key": "bad key!", "op": "exists"}]), "requirements[0]", "key must match"),
        (serde_json::json!([{"key": "", "op": "exists"}]), "requirements[0]", "key must match"),
        (serde_json::json!([{"key": "speed", "op": "eq"}]), "requirements[0]", "needs a value"),
    ];
    for (body, index, what) in cases {
        let reqs: Vec<Requirement> = serde_json::from_value(body.clone()).unwrap();
        let err = validate_requirements(&reqs).unwrap_err();
        assert_eq!(err.code(), api::ErrorCode::InvalidRequirements);
        let msg = err.to_string();
        assert!(msg.contains(index) && msg.contains(what), "{body}: {msg}");
    }
    for r in [res(-1, 1, 1), res(1, -1, 1), res(1, 1, -1), res(1 << 40, 1, 1), res(1, i64::MAX, 1)] {
        let err = zone_node::validate_resources(&r).unwrap_err();
        assert_eq!(err.code(), api::ErrorCode::InvalidResources, "{r:?}");
    }
    // A host registration with a non-scalar capability or a bad key is refused too.
    for (caps, key) in [
        (serde_json::json!({"x": [1]}), "x"),
        (serde_json::json!({"x": null}), "x"),
        (serde_json::json!({"a b": 1}), "a b"),
    ] {
        let reg = api::HostRegister {
            name: "x".into(),
            agent_url: "http://x".into(),
            capabilities: serde_json::from_value(caps.clone()).unwrap(),
            resources: res(1, 1, 1),
            agent_token: None,
        };
        // Refused for that capability, by name (what the 400 tells the agent to fix).
        match validate_host(&reg) {
            Err(zone_node::ValidationError::Capability { key: k, .. }) => assert_eq!(k, key, "{caps}"),
            other => panic!("{caps}: expected a capability error, got {other:?}"),
        }
    }
    // Nothing changed.
    assert_eq!(store.hosts().await.unwrap(), [h]);
}

async fn concurrent_placements_never_overcommit(db: &TestDb) {
    use rand::{Rng, SeedableRng};
    const HOSTS: usize = 50;
    const PLACEMENTS: usize = 1000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let setup = db.connect().await;
    for i in 0..HOSTS {
        let mut caps = serde_json::json!({
            "hypervisor": HYPERVISORS[i % 3],
            "os": OSES[i % 2],
            "can-run-windows": i % 2 == 1,
            "free-disk": rng.gen_range(100..1100),
            "average-load": rng.gen_range(0..10) as f64 / 10.0,
            "rack": (i % 5) as f64,
        });
        if i % 4 == 0 {
            caps["ssd"] = serde_json::json!(true);
        }
        let total = res(rng.gen_range(8..33), rng.gen_range(16..65) * 1024, rng.gen_range(200..1000));
        setup.host_create(&new_host(&format!("host-{i:02}"), caps, total)).await.unwrap();
    }
    let requests: Vec<(Vec<Filter>, Resources)> = (0..PLACEMENTS)
        .map(|_| {
            let n = rng.gen_range(0..3);
            let reqs = serde_json::Value::Array((0..n).map(|_| random_requirement(&mut rng)).collect());
            let want = res(rng.gen_range(1..5), rng.gen_range(1..9) * 512, rng.gen_range(5..60));
            (filters(reqs), want)
        })
        .collect();

    // Four "nodes", each with its own pool, placing all at once.
    let stores = db.connect_nodes(4).await;
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, (f, want))| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(async move { store.place(&f, &want).await })
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(180), futures::future::try_join_all(tasks))
        .await
        .expect("1,000 placements did not finish within 180 s")
        .expect("a placement task panicked");

    let hosts: BTreeMap<Uuid, HostRow> = setup.hosts().await.unwrap().into_iter().map(|h| (h.id, h)).collect();
    let mut reserved: BTreeMap<Uuid, Resources> = BTreeMap::new();
    let mut placed = 0;
    for ((f, want), result) in requests.iter().zip(results) {
        match result.expect("placement failed with a store error") {
            Some(id) => {
                placed += 1;
                let host = &hosts[&id];
                for filter in f {
                    assert!(
                        filter.matches(&host.capabilities),
                        "{} placed on {} which fails {filter:?}",
                        placed,
                        host.name
                    );
                }
                let r = reserved.entry(id).or_default();
                r.vcpus += want.vcpus;
                r.memory_mb += want.memory_mb;
                r.disk_gb += want.disk_gb;
            }
            None => {
                // Capacity only shrank during the run: a refusal must still be right at the end.
                let fits = hosts.values().any(|h| {
                    f.iter().all(|f| f.matches(&h.capabilities))
                        && h.total.vcpus - h.used.vcpus >= want.vcpus
                        && h.total.memory_mb - h.used.memory_mb >= want.memory_mb
                        && h.total.disk_gb - h.used.disk_gb >= want.disk_gb
                });
                assert!(!fits, "a placement was refused although a host fits: {f:?} {want:?}");
            }
        }
    }
    eprintln!("{}: {placed} of {PLACEMENTS} placements succeeded on {} hosts", db.backend, reserved.len());
    assert!(placed > 100, "only {placed} of {PLACEMENTS} placements succeeded");
    for h in hosts.values() {
        assert!(
            h.used.vcpus <= h.total.vcpus && h.used.memory_mb <= h.total.memory_mb && h.used.disk_gb <= h.total.disk_gb,
            "{} is over capacity: {:?} of {:?}",
            h.name,
            h.used,
            h.total
        );
        assert_eq!(
            h.used,
            reserved.get(&h.id).copied().unwrap_or_default(),
            "{}: used differs from the sum of its reservations",
            h.name
        );
    }
    for s in &stores {
        s.close().await;
    }
}

/// `instance_place_and_insert`: the host's reservation exists exactly when the instance row does.
/// A create that fails (the id is taken, or no host has room) leaves every host's `used` as it was.
async fn a_placed_instance_and_its_reservation_are_written_together(db: &TestDb) {
    let store = db.connect().await;
    let host = store.host_create(&new_host("only", serde_json::json!({}), res(4, 4096, 100))).await.unwrap();
    let new = |id: Uuid, vcpus: i64| zone_node::NewInstance {
        id,
        name: "vm".into(),
        client_id: "acme".into(),
        host_id: Uuid::nil(),
        resources: res(vcpus, 1024, 10),
        requirements: vec![],
        task_node: Uuid::new_v4(),
    };
    let used = || async { store.host_get(host.id).await.unwrap().expect("the host").used };

    let id = Uuid::new_v4();
    let row = store.instance_place_and_insert(&[], &new(id, 3)).await.unwrap().expect("room for 3 vcpus");
    assert_eq!((row.id, row.host_id), (id, Some(host.id)));
    assert_eq!(store.instance_get(id).await.unwrap().as_ref(), Some(&row));
    assert_eq!(used().await, res(3, 1024, 10));

    // The same id again: the insert fails, and its reservation goes with it.
    let again = store.instance_place_and_insert(&[], &new(id, 1)).await;
    assert!(matches!(again, Err(zone_node::StoreError::Conflict(_))), "{again:?}");
    assert_eq!(used().await, res(3, 1024, 10), "a failed insert left a reservation");

    // No room: nothing written.
    let full = store.instance_place_and_insert(&[], &new(Uuid::new_v4(), 2)).await.unwrap();
    assert!(full.is_none());
    assert_eq!(used().await, res(3, 1024, 10));
}
