//! Federation: child zones, poll records, the instance mapping, sealed passwords.

use api::AggregateEntry;
use api::{SubtreeEntry, ZoneStatus};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;
use zone_node::SecretKey;
use zone_node::StoreError;
use zone_node::{ChildSnapshot, ChildZoneEdit, ChildZoneRow, NewChildZone, PollOutcome, PollRecord};

use crate::{exec_raw, TestDb};

store_test_suite!(
    child_zones_crud_conflicts_and_generation,
    record_poll_transitions,
    record_poll_bumps_the_generation_once_under_concurrency,
    instance_routes_put_get_delete_and_cascade,
    child_passwords_are_stored_sealed,
    generation_moves_tick_after_every_bump_and_not_on_a_poll_that_changed_nothing,
);

/// A child's answer: one float capability, a generation, a subtree of one zone below it.
fn snapshot(generation: i64, free_disk: f64) -> ChildSnapshot {
    let mut capabilities = api::Aggregate::new();
    capabilities
        .insert("free-disk".into(), AggregateEntry::Float { min: free_disk, max: free_disk, sum: free_disk, count: 1 });
    capabilities
        .insert("hypervisor".into(), AggregateEntry::String { values: vec!["kvm".into()], count: 1, truncated: false });
    // The child's own hosts hold the free disk; the huddle below it the hypervisor.
    let own: api::Aggregate =
        capabilities.iter().filter(|(k, _)| *k == "free-disk").map(|(k, v)| (k.clone(), v.clone())).collect();
    let huddle: api::Aggregate =
        capabilities.iter().filter(|(k, _)| *k == "hypervisor").map(|(k, v)| (k.clone(), v.clone())).collect();
    let subtree = vec![SubtreeEntry {
        id: Uuid::new_v4().to_string(),
        name: "huddle-1".into(),
        path: vec!["huddle-1".into()],
        capabilities: Some(huddle),
        api_url: Some("http://127.0.0.1:9/".into()),
    }];
    ChildSnapshot { capabilities, own_capabilities: Some(own), generation, subtree }
}

fn new_child(key: &SecretKey, name: &str, first_answer: Option<ChildSnapshot>) -> NewChildZone {
    let id = Uuid::new_v4();
    NewChildZone {
        id,
        name: name.into(),
        api_url: format!("http://{name}.example:8080"),
        username: "admin".into(),
        password_sealed: key.seal(id, &format!("pw-of-{name}")).unwrap(),
        weight_offset: 0.5,
        weight_scale: 2.0,
        disabled: false,
        first_answer,
    }
}

fn answered(s: ChildSnapshot) -> PollRecord {
    PollRecord { outcome: PollOutcome::Answered(s), failure_threshold: 3 }
}

fn failed(error: &str, failure_threshold: u32) -> PollRecord {
    PollRecord { outcome: PollOutcome::Failed(error.into()), failure_threshold }
}

/// Reads one text value outside the store (what is really in a column).
async fn fetch_raw_text(db: &TestDb, sql: &str) -> String {
    if db.backend == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
        let _ = conn.close().await;
        v
    } else {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
        let _ = conn.close().await;
        v
    }
}

async fn child_zones_crud_conflicts_and_generation(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let before = store.now_ms().await.unwrap();
    let g0 = store.generation().await.unwrap();

    // dc2 first, so that listing by name is not just insertion order.
    let first = snapshot(7, 500.0);
    let dc2 = store.child_zone_insert(&new_child(&key, "dc2", Some(first.clone()))).await.unwrap();
    assert_eq!(store.generation().await.unwrap(), g0 + 1, "adding a child changes the subtree");
    assert_eq!((dc2.status, dc2.disabled, dc2.consecutive_failures), (ZoneStatus::Online, false, 0));
    assert!(dc2.last_seen_ms.is_some_and(|t| t >= before), "answered at zone-add: seen now");
    assert_eq!((dc2.generation, &dc2.capabilities, &dc2.subtree), (7, &first.capabilities, &first.subtree));
    assert_eq!(dc2.own_capabilities, first.own_capabilities, "the child's own aggregate is kept beside the whole");
    assert_eq!((dc2.weight_offset, dc2.weight_scale, dc2.version), (0.5, 2.0, 0));
    assert!(dc2.created_at_ms >= before && dc2.updated_at_ms >= dc2.created_at_ms);
    let dc1 = store.child_zone_insert(&new_child(&key, "dc1", None)).await.unwrap();
    assert_eq!((dc1.status, dc1.last_seen_ms, dc1.generation), (ZoneStatus::Offline, None, 0));
    assert!(dc1.capabilities.is_empty() && dc1.subtree.is_empty());
    assert_eq!(store.generation().await.unwrap(), g0 + 2);

    // The API view: capabilities only in detail, never the credentials.
    let brief = dc2.to_api(false);
    assert_eq!((brief.status, brief.capabilities.as_ref(), brief.generation), (ZoneStatus::Online, None, 7));
    assert!(brief.last_seen.as_deref().is_some_and(|t| t.ends_with('Z')), "{:?}", brief.last_seen);
    assert_eq!(dc2.to_api(true).capabilities.as_ref(), Some(&first.capabilities));
    let json = serde_json::to_string(&dc2.to_api(true)).unwrap();
    assert!(!json.contains(&dc2.password_sealed) && !json.contains("username"), "{json}");

    // A taken name, or a zone that is already a child: conflicts that say which, and no bump.
    let mut same_name = new_child(&key, "dc1", None);
    let err = store.child_zone_insert(&same_name).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("named dc1")), "{err}");
    same_name.name = "dc9".into();
    same_name.id = dc2.id;
    let err = store.child_zone_insert(&same_name).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Conflict(_)), "{msg}");
    assert!(msg.contains(&dc2.id.to_string()) && msg.contains("dc2"), "{msg}");
    assert_eq!(store.generation().await.unwrap(), g0 + 2, "a refused insert bumps nothing");

    let all = store.child_zones().await.unwrap();
    assert_eq!(all.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(), ["dc1", "dc2"]);
    assert_eq!(store.child_zone_get(dc2.id).await.unwrap().as_ref(), Some(&dc2));
    assert!(store.child_zone_get(Uuid::new_v4()).await.unwrap().is_none());

    // Update: absent fields stay, version grows, no bump without a change of `disabled`.
    let edit = ChildZoneEdit { name: Some("dc1-east".into()), weight_scale: Some(3.0), ..Default::default() };
    let dc1e = store.child_zone_update(dc1.id, &edit).await.unwrap().expect("dc1 exists");
    assert_eq!((dc1e.name.as_str(), dc1e.weight_scale, dc1e.weight_offset), ("dc1-east", 3.0, 0.5));
    assert_eq!(
        (&dc1e.api_url, &dc1e.username, &dc1e.password_sealed),
        (&dc1.api_url, &dc1.username, &dc1.password_sealed)
    );
    assert_eq!(dc1e.version, dc1.version + 1);
    assert_eq!(store.generation().await.unwrap(), g0 + 2);
    let resealed = key.seal(dc1.id, "new-pw").unwrap();
    let edit = ChildZoneEdit { password_sealed: Some(resealed.clone()), ..Default::default() };
    let dc1e = store.child_zone_update(dc1.id, &edit).await.unwrap().unwrap();
    assert_eq!(key.open(dc1.id, &dc1e.name, &dc1e.password_sealed).unwrap().expose(), "new-pw");
    assert_eq!(dc1e.version, dc1.version + 2);

    // Renaming onto another child's name is a conflict naming it, and changes nothing.
    let rename = ChildZoneEdit { name: Some("dc2".into()), ..Default::default() };
    let err = store.child_zone_update(dc1.id, &rename).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("named dc2")), "{err}");
    assert_eq!(store.child_zone_get(dc1.id).await.unwrap().unwrap(), dc1e);

    // Disabling and enabling bump the generation; disabling a disabled child does not.
    let disable = ChildZoneEdit { disabled: Some(true), ..Default::default() };
    let off = store.child_zone_update(dc2.id, &disable).await.unwrap().unwrap();
    assert!(off.disabled && !off.routable());
    assert_eq!(
        (off.status, off.effective_status(), off.to_api(false).status),
        (ZoneStatus::Online, ZoneStatus::Disabled, ZoneStatus::Disabled)
    );
    assert_eq!(store.generation().await.unwrap(), g0 + 3);
    let again = store.child_zone_update(dc2.id, &disable).await.unwrap().unwrap();
    assert_eq!(again.version, off.version + 1);
    assert_eq!(store.generation().await.unwrap(), g0 + 3, "no change of disabled, no bump");
    let enable = ChildZoneEdit { disabled: Some(false), ..Default::default() };
    let on = store.child_zone_update(dc2.id, &enable).await.unwrap().unwrap();
    assert!(!on.disabled && on.routable() && on.to_api(false).status == ZoneStatus::Online);
    assert_eq!(store.generation().await.unwrap(), g0 + 4);
    assert!(store.child_zone_update(Uuid::new_v4(), &disable).await.unwrap().is_none());
    assert_eq!(store.generation().await.unwrap(), g0 + 4, "an unknown child bumps nothing");

    // Delete: once, with a bump.
    assert!(store.child_zone_delete(dc1.id).await.unwrap());
    assert_eq!(store.generation().await.unwrap(), g0 + 5);
    assert!(store.child_zone_get(dc1.id).await.unwrap().is_none());
    assert!(!store.child_zone_delete(dc1.id).await.unwrap());
    assert_eq!(store.generation().await.unwrap(), g0 + 5);
    assert_eq!(store.child_zones().await.unwrap().len(), 1);
    // The name is free again.
    store.child_zone_insert(&new_child(&key, "dc1", None)).await.unwrap();
}

async fn record_poll_transitions(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let child = store.child_zone_insert(&new_child(&key, "dc1", Some(snapshot(1, 100.0)))).await.unwrap();
    let g = store.generation().await.unwrap();

    // Below the threshold an online child stays online; the error is kept; nothing bumps.
    for n in 1..=2u32 {
        let a = store.child_zone_record_poll(child.id, &failed("timed out after 1000 ms", 3)).await.unwrap().unwrap();
        assert!(!a.status_changed && !a.generation_changed && !a.bumped_generation());
        assert_eq!((a.row.status, a.row.consecutive_failures), (ZoneStatus::Online, n));
        assert_eq!(a.row.last_error.as_deref(), Some("timed out after 1000 ms"));
        assert_eq!(a.row.last_seen_ms, child.last_seen_ms, "a failure is not a sighting");
        assert_eq!(a.row.version, child.version, "polls are not configuration changes");
    }
    assert_eq!(store.generation().await.unwrap(), g);
    // At the threshold it goes offline, once.
    let a = store.child_zone_record_poll(child.id, &failed("connection refused", 3)).await.unwrap().unwrap();
    assert!(a.status_changed && !a.generation_changed);
    assert_eq!((a.row.status, a.row.consecutive_failures), (ZoneStatus::Offline, 3));
    assert_eq!(a.row.last_error.as_deref(), Some("connection refused"));
    assert_eq!(a.row.capabilities, child.capabilities, "the last good answer is kept");
    assert_eq!(store.generation().await.unwrap(), g + 1);
    let a = store.child_zone_record_poll(child.id, &failed("connection refused", 3)).await.unwrap().unwrap();
    assert!(!a.status_changed);
    assert_eq!((a.row.status, a.row.consecutive_failures), (ZoneStatus::Offline, 4));
    assert_eq!(store.generation().await.unwrap(), g + 1);

    // A good answer brings it back at once and clears the error; same generation: one bump for
    // the status alone.
    let now = store.now_ms().await.unwrap();
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(1, 80.0))).await.unwrap().unwrap();
    assert!(a.status_changed && !a.generation_changed);
    assert_eq!((a.row.status, a.row.consecutive_failures, a.row.last_error.as_deref()), (ZoneStatus::Online, 0, None));
    assert!(a.row.last_seen_ms.is_some_and(|t| t >= now), "last seen by the database clock");
    assert_eq!(a.row.capabilities, snapshot(1, 80.0).capabilities, "the new aggregate is stored");
    assert_eq!(a.row.own_capabilities, snapshot(1, 80.0).own_capabilities, "and the new own aggregate");
    assert_eq!(store.generation().await.unwrap(), g + 2);

    // A new generation from the child: detected, one bump; the same answer again: nothing.
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(2, 80.0))).await.unwrap().unwrap();
    assert!(!a.status_changed && a.generation_changed && a.bumped_generation());
    assert_eq!(a.row.generation, 2);
    assert_eq!(store.generation().await.unwrap(), g + 3);
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(2, 80.0))).await.unwrap().unwrap();
    assert!(!a.status_changed && !a.generation_changed);
    assert_eq!(store.generation().await.unwrap(), g + 3);
    // A lower generation (a child restored from a backup) differs too.
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(1, 80.0))).await.unwrap().unwrap();
    assert!(a.generation_changed);
    assert_eq!(store.generation().await.unwrap(), g + 4);

    // Back online with a new generation at once: both flags, one bump.
    for _ in 0..3 {
        store.child_zone_record_poll(child.id, &failed("down", 3)).await.unwrap().unwrap();
    }
    assert_eq!(store.generation().await.unwrap(), g + 5);
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(9, 80.0))).await.unwrap().unwrap();
    assert!(a.status_changed && a.generation_changed);
    assert_eq!(store.generation().await.unwrap(), g + 6, "two changes in one poll, one bump");

    // Threshold 1: the first failure is enough. A child never seen stays offline, silently.
    let a = store.child_zone_record_poll(child.id, &failed("down", 1)).await.unwrap().unwrap();
    assert!(a.status_changed && a.row.status == ZoneStatus::Offline);
    let never = store.child_zone_insert(&new_child(&key, "dc2", None)).await.unwrap();
    let g = store.generation().await.unwrap();
    let a = store.child_zone_record_poll(never.id, &failed("down", 1)).await.unwrap().unwrap();
    assert!(!a.status_changed && a.row.status == ZoneStatus::Offline && a.row.consecutive_failures == 1);
    assert_eq!(store.generation().await.unwrap(), g);
    // A disabled child is still polled and recorded.
    store.child_zone_update(never.id, &ChildZoneEdit { disabled: Some(true), ..Default::default() }).await.unwrap();
    let a = store.child_zone_record_poll(never.id, &answered(snapshot(4, 1.0))).await.unwrap().unwrap();
    assert!(a.status_changed && a.row.status == ZoneStatus::Online && a.row.effective_status() == ZoneStatus::Disabled);

    // An unknown (or deleted) child: None, nothing written.
    let g = store.generation().await.unwrap();
    assert!(store.child_zone_record_poll(Uuid::new_v4(), &answered(snapshot(1, 1.0))).await.unwrap().is_none());
    assert!(store.child_zone_record_poll(Uuid::new_v4(), &failed("x", 1)).await.unwrap().is_none());
    assert_eq!(store.generation().await.unwrap(), g);
}

async fn record_poll_bumps_the_generation_once_under_concurrency(db: &TestDb) {
    const ROUNDS: i64 = 8;
    const WRITERS: usize = 6;
    let key = SecretKey::generate().unwrap();
    // Two "nodes", each with its own pool, recording the same poll results at the same moment.
    let nodes = [db.connect().await, db.connect_small(4).await];
    let child = nodes[0].child_zone_insert(&new_child(&key, "dc1", None)).await.unwrap();
    let g0 = nodes[0].generation().await.unwrap();
    let mut expected = g0;
    for round in 1..=ROUNDS {
        // The same answer (a new generation; the first one also brings the child online) applied
        // WRITERS times at once: exactly one writer sees each change, and the zone generation
        // moves by exactly one.
        let record = answered(snapshot(round, 10.0));
        let applied =
            futures::future::try_join_all((0..WRITERS).map(|w| nodes[w % 2].child_zone_record_poll(child.id, &record)))
                .await
                .unwrap();
        let applied: Vec<_> = applied.into_iter().map(|a| a.expect("the child exists")).collect();
        let generation_changes = applied.iter().filter(|a| a.generation_changed).count();
        let status_changes = applied.iter().filter(|a| a.status_changed).count();
        assert_eq!(generation_changes, 1, "round {round}: {applied:?}");
        assert_eq!(status_changes, usize::from(round == 1), "round {round}: {applied:?}");
        assert_eq!(applied.iter().filter(|a| a.bumped_generation()).count(), 1);
        expected += 1;
        assert_eq!(nodes[1].generation().await.unwrap(), expected, "round {round}");
        let row = nodes[0].child_zone_get(child.id).await.unwrap().unwrap();
        assert_eq!((row.generation, row.status), (round, ZoneStatus::Online));
    }
    // Failures recorded at once: each is counted, and the one that crosses the threshold is the
    // only one that takes the child offline and bumps.
    let record = failed("timed out", 3);
    let applied =
        futures::future::try_join_all((0..WRITERS).map(|w| nodes[w % 2].child_zone_record_poll(child.id, &record)))
            .await
            .unwrap();
    let applied: Vec<_> = applied.into_iter().map(|a| a.unwrap()).collect();
    assert_eq!(applied.iter().filter(|a| a.status_changed).count(), 1, "{applied:?}");
    let row = nodes[0].child_zone_get(child.id).await.unwrap().unwrap();
    assert_eq!((row.status, row.consecutive_failures), (ZoneStatus::Offline, WRITERS as u32));
    assert_eq!(nodes[0].generation().await.unwrap(), expected + 1);
}

async fn instance_routes_put_get_delete_and_cascade(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let a = store.child_zone_insert(&new_child(&key, "a", None)).await.unwrap();
    let b = store.child_zone_insert(&new_child(&key, "b", None)).await.unwrap();
    let (i1, i2, i3, i4) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    assert!(store.instance_route_get(i1).await.unwrap().is_none());
    assert!(store.instance_route_put(i1, a.id, "c1").await.unwrap());
    assert_eq!(store.instance_route_get(i1).await.unwrap(), Some((a.id, "c1".into())));
    // Upsert: the instance moved to b.
    assert!(store.instance_route_put(i1, b.id, "c1").await.unwrap());
    assert_eq!(store.instance_route_get(i1).await.unwrap(), Some((b.id, "c1".into())));
    assert!(store.instance_route_put(i2, a.id, "c2").await.unwrap());
    assert!(store.instance_route_put(i4, a.id, "c1").await.unwrap());
    // A route to a child that does not exist is refused, and nothing is written.
    assert!(!store.instance_route_put(i3, Uuid::new_v4(), "c1").await.unwrap());
    assert!(store.instance_route_get(i3).await.unwrap().is_none());
    // A multi-create's routes in one go; to a child that does not exist, none of them.
    let batch: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    assert!(!store.instance_routes_put(&batch, Uuid::new_v4(), "c3").await.unwrap());
    assert!(store.instance_route_get(batch[0]).await.unwrap().is_none(), "nothing of a refused batch");
    assert!(store.instance_routes_put(&batch, b.id, "c3").await.unwrap());
    for id in &batch {
        assert_eq!(store.instance_route_get(*id).await.unwrap(), Some((b.id, "c3".into())));
    }

    let mut c1 = vec![a.id, b.id];
    c1.sort();
    assert_eq!(store.instance_route_children_of_client("c1").await.unwrap(), c1);
    assert_eq!(store.instance_route_children_of_client("c2").await.unwrap(), [a.id]);
    assert!(store.instance_route_children_of_client("nobody").await.unwrap().is_empty());

    assert!(store.instance_route_delete(i2).await.unwrap());
    assert!(!store.instance_route_delete(i2).await.unwrap());
    assert!(store.instance_route_get(i2).await.unwrap().is_none());

    // Deleting a child deletes its routes, and only its routes.
    assert!(store.child_zone_delete(a.id).await.unwrap());
    assert!(store.instance_route_get(i4).await.unwrap().is_none());
    assert_eq!(store.instance_route_get(i1).await.unwrap(), Some((b.id, "c1".into())));
    assert_eq!(store.instance_route_children_of_client("c1").await.unwrap(), [b.id]);
}

async fn child_passwords_are_stored_sealed(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let dc1 = store.child_zone_insert(&new_child(&key, "dc1", None)).await.unwrap();
    let dc2 = store.child_zone_insert(&new_child(&key, "dc2", None)).await.unwrap();

    // What is really in the column: the sealed form, not the password.
    let stored = fetch_raw_text(db, &format!("SELECT password_sealed FROM child_zones WHERE id = '{}'", dc1.id)).await;
    assert!(!stored.contains("pw-of-dc1"), "{stored}");
    assert!(stored.starts_with(&format!("v1:{}:", key.id())), "{stored}");
    assert_eq!(stored, dc1.password_sealed);
    assert_eq!(key.open(dc1.id, "dc1", &stored).unwrap().expose(), "pw-of-dc1");
    assert!(!format!("{dc1:?}").contains(&stored), "the sealed password reaches Debug output");

    // Copied into another child's row, it does not open there (the child id is bound to it).
    exec_raw(db, &format!("UPDATE child_zones SET password_sealed = '{stored}' WHERE id = '{}'", dc2.id)).await;
    let moved: ChildZoneRow = store.child_zone_get(dc2.id).await.unwrap().unwrap();
    assert!(key.open(moved.id, "dc2", &moved.password_sealed).is_err());
    // Another node with another key cannot open it, and says which keys.
    let other = SecretKey::generate().unwrap();
    let err = other.open(dc1.id, "dc1", &stored).unwrap_err().to_string();
    assert!(err.contains(key.id()) && err.contains(other.id()), "{err}");
}

async fn generation_moves_tick_after_every_bump_and_not_on_a_poll_that_changed_nothing(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let mut moves = store.generation_moves();
    moves.borrow_and_update();
    let child = store.child_zone_insert(&new_child(&key, "dc1", Some(snapshot(1, 10.0)))).await.unwrap();
    assert!(moves.has_changed().unwrap(), "zone-add bumped the generation: a tick");
    moves.borrow_and_update();
    store.child_zone_record_poll(child.id, &answered(snapshot(1, 10.0))).await.unwrap();
    assert!(!moves.has_changed().unwrap(), "the same answer again: no bump, no tick");
    store.child_zone_record_poll(child.id, &answered(snapshot(2, 10.0))).await.unwrap();
    assert!(moves.has_changed().unwrap(), "a new generation below: a tick");
    moves.borrow_and_update();
    store.bump_generation().await.unwrap();
    assert!(moves.has_changed().unwrap(), "a change passed through: a tick");
    moves.borrow_and_update();
    assert!(store.child_zone_delete(child.id).await.unwrap());
    assert!(moves.has_changed().unwrap(), "the subtree shrank: a tick");
}
