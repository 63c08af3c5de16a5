//! Instances: inserts, optimistic updates, capacity given back on removal.

use api::Resources;
use uuid::Uuid;
use zone_node::Store;

use crate::{exec_raw, new_host, res, TestDb};

store_test_suite!(instances_insert_update_remove_keep_capacity_and_generation, stale_instance_writes_are_detected,);

/// Places and inserts an instance of `r` on one of the store's hosts.
async fn placed_instance(store: &Store, client: &str, r: Resources) -> zone_node::InstanceRow {
    let host = store.place(&[], &r).await.unwrap().expect("a host with room");
    let new = zone_node::NewInstance {
        id: Uuid::new_v4(),
        name: "vm".into(),
        client_id: client.into(),
        host_id: host,
        resources: r,
        requirements: vec![api::Requirement { key: "hypervisor".into(), op: api::Op::Exists, value: None }],
        task_node: Uuid::new_v4(),
    };
    store.instance_insert(&new).await.unwrap()
}

async fn instances_insert_update_remove_keep_capacity_and_generation(db: &TestDb) {
    use zone_node::InstanceChange;
    let store = db.connect().await;
    let a =
        store.host_create(&new_host("a", serde_json::json!({"hypervisor": "kvm"}), res(8, 8192, 100))).await.unwrap();
    let g0 = store.generation().await.unwrap();
    let r = res(2, 1024, 10);
    let i = placed_instance(&store, "c1", r).await;
    assert_eq!(i.state, "building");
    assert_eq!(i.task.as_deref(), Some("create"));
    assert_eq!(i.host_id, Some(a.id));
    assert_eq!(i.host_state.as_deref(), Some("up"));
    assert_eq!(i.requirements.len(), 1, "requirements round-trip");
    assert_eq!(store.generation().await.unwrap(), g0 + 1, "insert bumps the generation");
    assert_eq!(store.host_get(a.id).await.unwrap().unwrap().used, r);
    assert_eq!(store.instances_in_task().await.unwrap(), vec![(i.id, i.task_node.unwrap())]);

    // Running, then migrating to b (b reserved first), then moved: a released, b holds it.
    let running = InstanceChange { state: "running".into(), ..Default::default() };
    let i = store.instance_update(i.id, i.version, &running).await.unwrap().expect("fresh version");
    assert_eq!((i.state.as_str(), i.task.as_deref(), i.task_node), ("running", None, None));
    assert!(store.instances_in_task().await.unwrap().is_empty());
    let b =
        store.host_create(&new_host("b", serde_json::json!({"hypervisor": "kvm"}), res(8, 8192, 100))).await.unwrap();
    assert!(store.reserve(b.id, &r).await.unwrap());
    let g1 = store.generation().await.unwrap();
    let moved = InstanceChange { state: "running".into(), move_to: Some(b.id), ..Default::default() };
    let i = store.instance_update(i.id, i.version, &moved).await.unwrap().unwrap();
    assert_eq!(i.host_id, Some(b.id));
    assert_eq!(store.host_get(a.id).await.unwrap().unwrap().used, res(0, 0, 0), "source released");
    assert_eq!(store.host_get(b.id).await.unwrap().unwrap().used, r, "target keeps the reservation");
    assert_eq!(store.generation().await.unwrap(), g1 + 1, "a move bumps the generation");

    // Pages by id, filtered by client.
    let j = placed_instance(&store, "c2", r).await;
    let all = store.instances_page(None, None, 10).await.unwrap();
    let mut ids = vec![i.id, j.id];
    ids.sort();
    assert_eq!(all.iter().map(|x| x.id).collect::<Vec<_>>(), ids);
    let c2 = store.instances_page(Some("c2"), None, 10).await.unwrap();
    assert_eq!(c2.iter().map(|x| x.id).collect::<Vec<_>>(), vec![j.id]);
    let after_first = store.instances_page(None, Some(&ids[0].to_string()), 10).await.unwrap();
    assert_eq!(after_first.iter().map(|x| x.id).collect::<Vec<_>>(), vec![ids[1]]);

    // Remove gives everything back and bumps the generation; a stale remove does nothing.
    assert!(!store.instance_remove(i.id, i.version - 1).await.unwrap());
    let g2 = store.generation().await.unwrap();
    assert!(store.instance_remove(i.id, i.version).await.unwrap());
    assert!(store.instance_get(i.id).await.unwrap().is_none());
    assert_eq!(store.host_get(b.id).await.unwrap().unwrap().used, res(0, 0, 0));
    assert_eq!(store.generation().await.unwrap(), g2 + 1);
    // A down host shows through the join.
    exec_raw(db, &format!("UPDATE hosts SET state = 'down' WHERE id = '{}'", j.host_id.unwrap())).await;
    assert_eq!(store.instance_get(j.id).await.unwrap().unwrap().host_state.as_deref(), Some("down"));
}

async fn stale_instance_writes_are_detected(db: &TestDb) {
    use zone_node::InstanceChange;
    let store = db.connect().await;
    store.host_create(&new_host("a", serde_json::json!({"hypervisor": "kvm"}), res(8, 8192, 100))).await.unwrap();
    let i = placed_instance(&store, "c1", res(1, 1, 1)).await;
    // Two writers read the same version; only one write lands, the other is told it is stale.
    let other = db.connect_small(2).await;
    let w1 = InstanceChange { state: "running".into(), ..Default::default() };
    let w2 = InstanceChange { state: "error".into(), error_reason: Some("x".into()), ..Default::default() };
    let (r1, r2) =
        tokio::join!(store.instance_update(i.id, i.version, &w1), other.instance_update(i.id, i.version, &w2));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(r1.is_some() != r2.is_some(), "exactly one of two writes on one version lands: {r1:?} {r2:?}");
    let now = store.instance_get(i.id).await.unwrap().unwrap();
    assert_eq!(now.version, i.version + 1);
    // Re-applying the lost write on the fresh version succeeds: nothing is silently lost.
    let lost = if r1.is_none() { w1 } else { w2 };
    let after = store.instance_update(i.id, now.version, &lost).await.unwrap().expect("fresh version");
    assert_eq!(after.state, lost.state);
    assert_eq!(after.version, i.version + 2);
}
