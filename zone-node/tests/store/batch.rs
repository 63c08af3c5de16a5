//! Multi-creates: room for a whole batch or none, under concurrency; a batch's rows in one
//! transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use api::Resources;
use uuid::Uuid;
use zone_node::{BatchPlacement, NewInstance, Store, StoreError};

use crate::{filters, new_host, res, TestDb};

store_test_suite!(
    a_batch_gets_room_for_all_or_none_and_leaves_nothing_reserved,
    concurrent_batches_never_overcommit_and_are_never_half_placed,
    a_batch_of_rows_is_inserted_in_one_transaction,
);

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

async fn concurrent_batches_never_overcommit_and_are_never_half_placed(db: &TestDb) {
    use rand::{Rng, SeedableRng};
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
    assert_eq!(store.instances_page(None, None, 100).await.unwrap().len(), 3);
    assert_eq!(store.generation().await.unwrap(), g0 + 1, "nor was the generation bumped");
}
