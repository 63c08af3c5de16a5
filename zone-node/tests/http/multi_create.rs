//! Multi-create (`count` above 1): named instances, all or nothing, checked at the edge, and
//! through a parent to one child. Real nodes in this process with real simulated agents
//! (the `agent-sim` crate), no process started.

use std::collections::BTreeMap;
use std::time::Duration;

use agent_sim::profile::Profile;
use api::federation::INSTANCE_ID_HEADER;
use api::{Client, ClientError, ErrorCode, Instance, InstanceCreate, Resources, ZoneCreate};
use serde_json::{json, Value};

use crate::app::{zone, Zone};

fn batch(name: &str, count: u32, vcpus: i64) -> InstanceCreate {
    InstanceCreate {
        name: name.into(),
        client_id: Some("acme".into()),
        requirements: vec![],
        resources: Resources { vcpus, memory_mb: 1024, disk_gb: 10 },
        count: Some(count),
    }
}

/// Every host's reservations, by name.
async fn used(admin: &Client) -> BTreeMap<String, Resources> {
    admin.hosts().await.expect("hosts").hosts.into_iter().map(|h| (h.name, h.used)).collect()
}

async fn all_instances(admin: &Client) -> Vec<Instance> {
    admin.instances("limit=1000").await.expect("list").instances
}

fn api_error(e: ClientError) -> (u16, ErrorCode, String) {
    match e {
        ClientError::Api { status, code, message, .. } => (status, code, message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_three_is_made_named_in_order_and_answered_whole() {
    let z = zone(2, Profile::Uniform).await;
    let made = z.admin.instance_create_batch(&batch("web", 3, 2)).await.expect("a batch of three").instances;
    let names: Vec<&str> = made.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["web-0001", "web-0002", "web-0003"]);
    for i in &made {
        assert_eq!((i.state.as_str(), i.client_id.as_str()), ("running", "acme"), "{}", i.name);
        assert_eq!(z.admin.instance(&i.id).await.expect("shown by id"), *i);
    }
    let mut listed: Vec<String> = all_instances(&z.admin).await.into_iter().map(|i| i.id).collect();
    let mut ids: Vec<String> = made.iter().map(|i| i.id.clone()).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "three distinct instances, and nothing else");
    let vcpus: i64 = used(&z.admin).await.values().map(|r| r.vcpus).sum();
    assert_eq!(vcpus, 6, "each holds its reservation");

    // Absent or 1: one instance object, exactly as before.
    for body in [json!({"name": "one", "client_id": "acme"}), json!({"name": "uno", "client_id": "acme", "count": 1})] {
        let answer: Value = z.admin.post("/v1/instances", &body).await.expect("a single create");
        assert_eq!(answer["name"], body["name"], "{answer}");
        assert!(answer.get("instances").is_none(), "{answer}");
    }
    z.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_does_not_all_fit_leaves_nothing_behind() {
    // Two hosts of 32 vcpus: one instance of 24 vcpus each.
    let z = zone(2, Profile::Uniform).await;
    let before = used(&z.admin).await;
    let e = z.admin.instance_create_batch(&batch("big", 3, 24)).await.unwrap_err();
    let (status, code, message) = api_error(e);
    assert_eq!((status, code), (409, ErrorCode::NoValidHost), "{message}");
    assert!(message.contains("only 2 of the 3"), "{message}");
    assert!(all_instances(&z.admin).await.is_empty(), "no instance row left behind");
    assert_eq!(used(&z.admin).await, before, "no capacity left reserved");

    // Two fit.
    let made = z.admin.instance_create_batch(&batch("big", 2, 24)).await.expect("two fit").instances;
    assert_eq!(made.len(), 2);

    // The same batch id twice (as a forwarding parent would send it): the second makes the same
    // instance ids, conflicts, and gives back what it reserved. Room for it first.
    for i in &made {
        z.admin.instance_delete(&i.id).await.expect("delete");
    }
    let batch_id = uuid::Uuid::new_v4().to_string();
    let parent = z.admin.with_headers([(INSTANCE_ID_HEADER.to_owned(), batch_id)]);
    let first = parent.instance_create_batch(&batch("dup", 2, 8)).await.expect("first").instances;
    let after_first = used(&z.admin).await;
    let e = parent.instance_create_batch(&batch("dup", 2, 8)).await.unwrap_err();
    let (status, code, message) = api_error(e);
    assert_eq!((status, code), (409, ErrorCode::Conflict), "{message}");
    assert_eq!(used(&z.admin).await, after_first, "the second batch's reservations were given back");
    assert_eq!(all_instances(&z.admin).await.len(), first.len());
    z.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_and_the_suffixed_name_are_checked_at_the_edge() {
    let z = zone(0, Profile::Uniform).await;
    let name59 = "n".repeat(59);
    let name60 = "n".repeat(60);
    let refused = [
        json!({"name": "web", "client_id": "acme", "count": 0}),
        json!({"name": "web", "client_id": "acme", "count": 1001}),
        json!({"name": "web", "client_id": "acme", "count": 2.5}),
        json!({"name": "web", "client_id": "acme", "count": -3}),
        json!({"name": "web", "client_id": "acme", "count": "3"}),
        json!({"name": "web", "client_id": "acme", "count": true}),
    ];
    for body in refused {
        let e = z.admin.post::<_, Value>("/v1/instances", &body).await.unwrap_err();
        let (status, code, message) = api_error(e);
        assert_eq!((status, code), (400, ErrorCode::InvalidField), "{body}: {message}");
        assert!(message.starts_with("count:") && message.contains("1 to 1000"), "{body}: {message}");
    }
    // With the suffix a name must stay within 64 characters.
    let e = z.admin.post::<_, Value>("/v1/instances", &json!({"name": name60, "client_id": "acme", "count": 2})).await;
    let (status, code, message) = api_error(e.unwrap_err());
    assert_eq!((status, code), (400, ErrorCode::InvalidField), "{message}");
    assert!(message.starts_with("name:") && message.contains("59"), "{message}");
    // Past the edge (this zone has no host, so placement refuses): 59 with a count, 60 without.
    for body in [
        json!({"name": name59, "client_id": "acme", "count": 1000}),
        json!({"name": name60, "client_id": "acme", "count": 1}),
    ] {
        let (status, code, message) = api_error(z.admin.post::<_, Value>("/v1/instances", &body).await.unwrap_err());
        assert_eq!((status, code), (409, ErrorCode::NoValidHost), "{body}: {message}");
    }
    assert!(all_instances(&z.admin).await.is_empty());
    z.stop().await;
}

/// Adds `child` under `parent` with `weight_offset`; answers the child's name.
async fn zone_add(parent: &Zone, child: &Zone, weight_offset: f64) -> String {
    let name = child.admin.zone().await.expect("the child's zone").name;
    let req = ZoneCreate { weight_offset, ..child.app.as_child() };
    parent.admin.zone_create(&req).await.unwrap_or_else(|e| panic!("zone-add {name}: {e}"));
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_parent_a_batch_lands_whole_in_one_child_and_a_refusing_child_keeps_nothing() {
    // dc-a: two hosts of 32 vcpus, preferred (weight offset); dc-b: one host of 256 vcpus.
    let (parent, a, b) =
        (zone(0, Profile::Uniform).await, zone(2, Profile::Uniform).await, zone(1, Profile::Big).await);
    let dc_a = zone_add(&parent, &a, 10.0).await;
    let dc_b = zone_add(&parent, &b, 0.0).await;
    let seen = test_support::poll_until(Duration::from_secs(30), Duration::from_millis(100), || async {
        let agg = parent.admin.capabilities().await.ok()?;
        (agg.get(federation::matching::FREE_VCPUS)?.count() == 3).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the parent never saw the three hosts of its children");

    // Three of 2 vcpus: dc-a (preferred) takes all three.
    let made = parent.admin.instance_create_batch(&batch("web", 3, 2)).await.expect("a batch of three").instances;
    for i in &made {
        assert_eq!(i.zone_path.last().map(String::as_str), Some(dc_a.as_str()), "{}: {:?}", i.name, i.zone_path);
        assert_eq!(parent.admin.instance(&i.id).await.expect("shown by id through the parent").id, i.id);
    }
    assert_eq!(all_instances(&a.admin).await.len(), 3);
    assert!(all_instances(&b.admin).await.is_empty(), "the batch was not split");

    // Three of 19 vcpus: dc-a's 58 free vcpus may hold 57 in sum, but each of its hosts has room
    // for one only: it refuses and keeps nothing; dc-b takes all three.
    let a_used = used(&a.admin).await;
    // Only dc-a's hosts have free-disk at most 5000: it is asked alone, and its refusal is the answer.
    let only_a = InstanceCreate {
        requirements: vec![api::Requirement { key: "free-disk".into(), op: api::Op::Le, value: Some(json!(5000)) }],
        ..batch("db", 3, 19)
    };
    let e = parent.admin.instance_create_batch(&only_a).await.unwrap_err();
    let (status, code, message) = api_error(e);
    assert_eq!((status, code), (409, ErrorCode::NoValidHost), "{message}");
    assert!(message.contains(&dc_a) && message.contains("only 2 of the 3"), "{message}");
    assert_eq!(used(&a.admin).await, a_used, "the refusing child reserved nothing");
    let made = parent.admin.instance_create_batch(&batch("db", 3, 19)).await.expect("dc-b takes it").instances;
    let names: Vec<&str> = made.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["db-0001", "db-0002", "db-0003"]);
    for i in &made {
        assert_eq!(i.zone_path.last().map(String::as_str), Some(dc_b.as_str()), "{}: {:?}", i.name, i.zone_path);
        assert_eq!(i.state, "running");
    }
    assert_eq!(all_instances(&a.admin).await.len(), 3, "dc-a made none of the refused batch");
    assert_eq!(used(&a.admin).await, a_used, "and reserved nothing");

    // More than any child holds: refused, nothing made anywhere.
    let e = parent.admin.instance_create_batch(&batch("huge", 20, 16)).await.unwrap_err();
    let (status, code, message) = api_error(e);
    assert_eq!((status, code), (409, ErrorCode::NoValidHost), "{message}");
    assert_eq!(all_instances(&parent.admin).await.len(), 6);
    parent.stop().await;
}

/// The fallback of a hand-off that failed: a create task let go of (its node the nil id, which no
/// node has) is finished by the instance's owner on its own, by recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_nobody_holds_is_finished_by_its_owners_recovery() {
    let z = zone(1, Profile::Uniform).await;
    let store = zone_node::Store::connect(&z.app.database_url).await.expect("the node's database");
    let r = Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 };
    let host = store.place(&[], &r).await.unwrap().expect("room on the host");
    let new = zone_node::NewInstance {
        id: uuid::Uuid::new_v4(),
        name: "orphan-0001".into(),
        client_id: "acme".into(),
        host_id: host,
        resources: r,
        requirements: vec![],
        task_node: uuid::Uuid::nil(),
    };
    store.instances_insert_batch(std::slice::from_ref(&new)).await.expect("insert");
    let id = new.id.to_string();
    let done = test_support::poll_until(Duration::from_secs(30), Duration::from_millis(100), || async {
        let i = z.admin.instance(&id).await.ok()?;
        (i.state == "running").then_some(i)
    })
    .await;
    let done = done.expect("the unclaimed build was never finished");
    assert_eq!(done.host_id, Some(host.to_string()));
    z.stop().await;
}

/// A zone of two nodes (one database, one bus): the node that takes the batch hands the builds
/// of the instances the other node owns to it, and every build ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_zone_of_two_nodes_each_owner_builds_its_share_of_a_batch() {
    let z = zone(2, Profile::Uniform).await;
    let peer = z.app.spawn_peer().await;
    let both = test_support::poll_until(Duration::from_secs(30), Duration::from_millis(100), || async {
        let info = z.admin.zone().await.ok()?;
        (info.nodes.iter().filter(|n| n.state == "alive").count() == 2).then_some(())
    })
    .await;
    assert!(both.is_some(), "the second node never became alive");

    let made = z.admin.instance_create_batch(&batch("pair", 20, 1)).await.expect("a batch of twenty").instances;
    assert_eq!(made.len(), 20);
    assert!(made.iter().all(|i| i.state == "running"), "{made:?}");
    let owners = z.admin.owners(made.iter().map(|i| i.id.clone()).collect()).await.expect("owners").owners;
    let distinct: std::collections::BTreeSet<&String> = owners.iter().collect();
    assert_eq!(distinct.len(), 2, "both nodes own some of the batch (20 ids): {owners:?}");
    let vcpus: i64 = used(&z.admin).await.values().map(|r| r.vcpus).sum();
    assert_eq!(vcpus, 20);
    peer.stop().await;
    z.stop().await;
}
