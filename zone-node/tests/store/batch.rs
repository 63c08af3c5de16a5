//! Multi-creates: room for a whole batch or none, placed as a set and spread over the hosts with
//! room, under concurrency, with the maintained aggregate exact; a batch's rows in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api::Resources;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;
use zone_node::{BatchPlacement, NewInstance, Store, StoreError};

use crate::{exec_raw, filters, new_host, res, TestDb, HYPERVISORS};

store_test_suite!(
    a_batch_gets_room_for_all_or_none_and_leaves_nothing_reserved,
    a_batch_spreads_over_the_hosts_with_room_that_pass_its_filters,
    a_batch_that_exactly_fills_the_zone_fits_and_one_more_fits_nowhere,
    concurrent_batches_never_overcommit_and_are_never_half_placed,
    the_maintained_aggregate_stays_exact_through_batches_and_releases,
    a_batch_of_rows_is_inserted_in_one_transaction,
);

/// How many instances of a batch went to each host.
fn per_host(hosts: &[Uuid]) -> BTreeMap<Uuid, usize> {
    let mut n = BTreeMap::new();
    for h in hosts {
        *n.entry(*h).or_default() += 1;
    }
    n
}

/// Every host's reservations, by name.
async fn used(store: &Store) -> BTreeMap<String, Resources> {
    store.hosts().await.unwrap().into_iter().map(|h| (h.name, h.used)).collect()
}

async fn a_batch_gets_room_for_all_or_none_and_leaves_nothing_reserved(db: &TestDb) {
    let store = db.connect().await;
    // Room for two instances of 4 vcpus on each kvm host; the xen host never matches.
    for (name, hv) in [("a", "kvm"), ("b", "kvm"), ("x", "xen")] {
        store.host_create(&new_host(name, serde_json::json!({"hypervisor": hv}), res(8, 8192, 100))).await.unwrap();
    }
    let kvm = filters(serde_json::json!([{"key": "hypervisor", "op": "eq", "value": "kvm"}]));
    let r = res(4, 1024, 10);
    let empty = used(&store).await;

    // Five do not fit (four do): refused, and what the first four took is given back.
    assert_eq!(store.place_all(&kvm, &r, 5).await.unwrap(), BatchPlacement::Short { fitted: 4 });
    assert_eq!(used(&store).await, empty, "a refused batch leaves nothing reserved");

    // Four fit, spread two and two (the emptier host first), each reserved.
    let BatchPlacement::All(hosts) = store.place_all(&kvm, &r, 4).await.unwrap() else {
        panic!("four instances fit on a and b");
    };
    assert_eq!(hosts.len(), 4);
    let now = used(&store).await;
    assert_eq!((now["a"], now["b"], now["x"]), (res(8, 2048, 20), res(8, 2048, 20), res(0, 0, 0)));
    // Full now: even one more is refused, and changes nothing.
    assert_eq!(store.place_all(&kvm, &r, 1).await.unwrap(), BatchPlacement::Short { fitted: 0 });
    assert_eq!(used(&store).await, now);

    // The owner of the reservations gives them back.
    store.release_all(&hosts, &r).await;
    assert_eq!(used(&store).await, empty);
}

async fn a_batch_spreads_over_the_hosts_with_room_that_pass_its_filters(db: &TestDb) {
    let store = db.connect().await;
    // Six kvm hosts with room for 16 instances each, two xen hosts the filter leaves out.
    let mut kvm_hosts = BTreeSet::new();
    for i in 0..8 {
        let hv = if i < 6 { "kvm" } else { "xen" };
        let h = store
            .host_create(&new_host(&format!("h{i}"), serde_json::json!({"hypervisor": hv}), res(16, 16384, 1000)))
            .await
            .unwrap();
        if hv == "kvm" {
            kvm_hosts.insert(h.id);
        }
    }
    let kvm = filters(serde_json::json!([{"key": "hypervisor", "op": "eq", "value": "kvm"}]));
    let r = res(1, 512, 10);

    // 30 would fit on two hosts; they go five to each of the six, none to a xen host.
    let BatchPlacement::All(first) = store.place_all(&kvm, &r, 30).await.unwrap() else {
        panic!("30 instances fit on the kvm hosts");
    };
    assert_eq!(first.len(), 30);
    let spread = per_host(&first);
    assert_eq!(spread.keys().copied().collect::<BTreeSet<_>>(), kvm_hosts, "every kvm host, and only those");
    assert!(spread.values().all(|n| *n == 5), "equal shares: {spread:?}");
    assert_eq!(
        first[..6].iter().collect::<BTreeSet<_>>().len(),
        6,
        "consecutive instances are on different hosts: {first:?}"
    );
    for h in store.hosts().await.unwrap() {
        let want = if kvm_hosts.contains(&h.id) { res(5, 2560, 50) } else { res(0, 0, 0) };
        assert_eq!(h.used, want, "{}: the database holds what the answer says", h.name);
    }

    // Seven more on six equal hosts: at most two on any one (ceil(7 / 6)), so at least four hosts.
    let BatchPlacement::All(second) = store.place_all(&kvm, &r, 7).await.unwrap() else {
        panic!("7 more fit");
    };
    let spread = per_host(&second);
    assert!(spread.values().all(|n| *n <= 2) && spread.len() >= 4, "{spread:?}");
    assert!(spread.keys().all(|h| kvm_hosts.contains(h)), "{spread:?}");

    // One host much emptier than the rest (the others filled to 13 of 16): a batch of 3 still goes
    // to three hosts, the emptiest first.
    store.release_all(&first, &r).await;
    store.release_all(&second, &r).await;
    let emptiest = *kvm_hosts.iter().next().unwrap();
    for h in &kvm_hosts {
        if *h != emptiest {
            assert!(store.reserve(*h, &res(13, 13 * 512, 130)).await.unwrap());
        }
    }
    let BatchPlacement::All(third) = store.place_all(&kvm, &r, 3).await.unwrap() else {
        panic!("3 fit");
    };
    assert_eq!(third[0], emptiest, "the best weighted host comes first");
    assert_eq!(per_host(&third).len(), 3, "{third:?}");
}

async fn a_batch_that_exactly_fills_the_zone_fits_and_one_more_fits_nowhere(db: &TestDb) {
    let store = db.connect().await;
    let r = res(1, 1024, 10);
    // Each host is limited by another resource: 3 by vcpus, 5 by memory, 7 by disk. So 15 fit
    // (the first round gives 3 + 5 + 5, the next the last 2), and a down host with room takes none.
    for (name, total) in [
        ("v", res(3, 65536, 1000)),
        ("m", res(64, 5 * 1024, 1000)),
        ("d", res(64, 65536, 70)),
        ("off", res(64, 65536, 1000)),
    ] {
        store.host_create(&new_host(name, serde_json::json!({}), total)).await.unwrap();
    }
    exec_raw(db, "UPDATE hosts SET state = 'down' WHERE name = 'off'").await;
    let empty = used(&store).await;

    assert_eq!(store.place_all(&[], &r, 16).await.unwrap(), BatchPlacement::Short { fitted: 15 });
    assert_eq!(used(&store).await, empty, "a refused batch leaves nothing reserved");

    let BatchPlacement::All(hosts) = store.place_all(&[], &r, 15).await.unwrap() else {
        panic!("exactly 15 fit");
    };
    assert_eq!(hosts.len(), 15);
    let full = used(&store).await;
    assert_eq!(
        (full["v"], full["m"], full["d"], full["off"]),
        (res(3, 3072, 30), res(5, 5120, 50), res(7, 7168, 70), res(0, 0, 0)),
        "every up host filled to its limiting resource"
    );
    assert_eq!(store.place_all(&[], &r, 2).await.unwrap(), BatchPlacement::Short { fitted: 0 });
    assert_eq!(used(&store).await, full);

    // Given back, in one update per host, the zone is whole again and takes the batch again.
    store.release_all(&hosts, &r).await;
    assert_eq!(used(&store).await, empty);
    assert!(matches!(store.place_all(&[], &r, 15).await.unwrap(), BatchPlacement::All(h) if h.len() == 15));
}

async fn concurrent_batches_never_overcommit_and_are_never_half_placed(db: &TestDb) {
    const HOSTS: usize = 20;
    const BATCHES: usize = 60;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xba7c);
    let setup = db.connect().await;
    for i in 0..HOSTS {
        let total = res(rng.gen_range(8..33), rng.gen_range(16..65) * 1024, 1000);
        setup.host_create(&new_host(&format!("host-{i:02}"), serde_json::json!({}), total)).await.unwrap();
    }
    let batches: Vec<(Resources, usize)> =
        (0..BATCHES).map(|_| (res(rng.gen_range(1..5), rng.gen_range(1..9) * 512, 10), rng.gen_range(2..20))).collect();
    // Four "nodes", each with its own pool, all at once.
    let stores = db.connect_nodes(4).await;
    let tasks: Vec<_> = batches
        .iter()
        .copied()
        .enumerate()
        .map(|(i, (r, n))| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(async move { store.place_all(&[], &r, n).await })
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(180), futures::future::try_join_all(tasks))
        .await
        .expect("the batches did not finish within 180 s")
        .expect("a batch task panicked");

    let mut reserved: BTreeMap<Uuid, Resources> = BTreeMap::new();
    let (mut whole, mut refused) = (0, 0);
    for ((r, n), result) in batches.iter().zip(results) {
        match result.expect("a batch failed with a store error") {
            BatchPlacement::All(hosts) => {
                assert_eq!(hosts.len(), *n, "a batch placed is placed whole");
                whole += 1;
                for h in hosts {
                    let sum = reserved.entry(h).or_default();
                    (sum.vcpus, sum.memory_mb, sum.disk_gb) =
                        (sum.vcpus + r.vcpus, sum.memory_mb + r.memory_mb, sum.disk_gb + r.disk_gb);
                }
            }
            BatchPlacement::Short { fitted } => {
                assert!(fitted < *n);
                refused += 1;
            }
        }
    }
    eprintln!("{}: {whole} batches placed whole, {refused} refused", db.backend);
    assert!(whole > 5, "only {whole} of {BATCHES} batches placed");
    assert!(refused > 0, "the hosts were meant to run out");
    for h in setup.hosts().await.unwrap() {
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
            "{}: reserved is not the sum of the whole batches on it (a refused batch left something)",
            h.name
        );
    }
    crate::aggregate::check(&setup, BATCHES).await;
}

async fn the_maintained_aggregate_stays_exact_through_batches_and_releases(db: &TestDb) {
    const STEPS: usize = 12;
    let mut rng = StdRng::seed_from_u64(0xa66);
    let setup = db.connect().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let total = res(rng.gen_range(8..33), rng.gen_range(8..65) * 1024, 500);
        let caps = serde_json::json!({"hypervisor": HYPERVISORS[i % 3], "rack": format!("r{}", i % 4)});
        ids.push(setup.host_create(&new_host(&format!("h{i:02}"), caps, total)).await.unwrap().id);
    }
    let stores = db.connect_nodes(3).await;
    let mut held: Vec<(Vec<Uuid>, Resources)> = Vec::new();
    let (mut whole, mut refused) = (0, 0);
    for step in 1..=STEPS {
        // Three batches at once, one per node, half of them with a filter.
        let tasks: Vec<_> = stores
            .iter()
            .map(|store| {
                let r = res(rng.gen_range(1..4), rng.gen_range(1..5) * 512, rng.gen_range(0..3) * 10);
                let n = rng.gen_range(2..40);
                let f = if rng.gen_bool(0.5) {
                    filters(serde_json::json!([{"key": "hypervisor", "op": "ne", "value": HYPERVISORS[rng.gen_range(0..3)]}]))
                } else {
                    Vec::new()
                };
                let store = store.clone();
                tokio::spawn(async move { (store.place_all(&f, &r, n).await, r) })
            })
            .collect();
        for task in tasks {
            match task.await.expect("a batch task panicked") {
                (Ok(BatchPlacement::All(hosts)), r) => {
                    whole += 1;
                    held.push((hosts, r));
                }
                (Ok(BatchPlacement::Short { .. }), _) => refused += 1,
                (Err(e), _) => panic!("a batch failed: {e}"),
            }
        }
        crate::aggregate::check(&setup, step).await;
        // Some batches are deleted again; halfway, a host with reservations goes down (its
        // capacity leaves the aggregate, and a release on it must not bring it back).
        while !held.is_empty() && rng.gen_bool(0.5) {
            let (hosts, r) = held.swap_remove(rng.gen_range(0..held.len()));
            setup.release_all(&hosts, &r).await;
        }
        if step == STEPS / 2 {
            exec_raw(db, &format!("UPDATE hosts SET state = 'down' WHERE id = '{}'", ids[0])).await;
        }
        crate::aggregate::check(&setup, step).await;
    }
    eprintln!("{}: {whole} batches placed whole, {refused} refused", db.backend);
    assert!(whole > 3 && refused > 0, "{whole} whole, {refused} refused: the test meant both to happen");
    for (hosts, r) in held {
        setup.release_all(&hosts, &r).await;
    }
    crate::aggregate::check(&setup, STEPS + 1).await;
    for h in setup.hosts().await.unwrap() {
        assert_eq!(h.used, res(0, 0, 0), "{}: everything was given back", h.name);
    }
}

async fn a_batch_of_rows_is_inserted_in_one_transaction(db: &TestDb) {
    let store = db.connect().await;
    let host = store.host_create(&new_host("a", serde_json::json!({}), res(64, 65536, 1000))).await.unwrap();
    let node = Uuid::new_v4();
    let row = |name: &str| NewInstance {
        id: Uuid::new_v4(),
        name: name.into(),
        client_id: "acme".into(),
        host_id: host.id,
        resources: res(1, 512, 10),
        requirements: vec![],
        task_node: node,
    };
    let g0 = store.generation().await.unwrap();
    let batch: Vec<NewInstance> = (1..=3).map(|k| row(&api::batch_member_name("web", k))).collect();
    let rows = store.instances_insert_batch(&batch).await.unwrap();
    assert_eq!(rows.len(), 3);
    for (new, got) in batch.iter().zip(&rows) {
        let read = store.instance_get(new.id).await.unwrap().expect("inserted");
        assert_eq!(&read, got, "the answer is the row as stored");
        assert_eq!(
            (read.name.as_str(), read.state.as_str(), read.task.as_deref(), read.task_node),
            (new.name.as_str(), "building", Some("create"), Some(node))
        );
    }
    assert_eq!(store.generation().await.unwrap(), g0 + 1, "one bump for the whole batch");

    // One id that exists already: nothing of the batch is inserted.
    let mut clash: Vec<NewInstance> = (4..=6).map(|k| row(&api::batch_member_name("web", k))).collect();
    clash[2].id = batch[0].id;
    let e = store.instances_insert_batch(&clash).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    for new in &clash[..2] {
        assert!(store.instance_get(new.id).await.unwrap().is_none(), "{} was inserted", new.name);
    }
    assert_eq!(store.instances_page(None, None, None, 100).await.unwrap().len(), 3);
    assert_eq!(store.generation().await.unwrap(), g0 + 1, "nor was the generation bumped");
}
