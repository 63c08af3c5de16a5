//! `GET /v1/zone/watch` and the conditional `GET /v1/zone`: what parents hold and poll.

use std::time::{Duration, Instant};

use api::{Conditional, ErrorCode, SubtreeView};

use crate::app::{spawn_app, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_answers_on_the_next_change_and_polls_are_conditional() {
    let parent = spawn_app().await;
    let child = spawn_app().await;
    let admin = parent.client().await;

    // Conditional reads: the ETag of an answer gets a 304 while nothing changed.
    let Conditional::Modified { value, etag: Some(etag) } =
        admin.zone_if_changed(SubtreeView::Cached, None).await.expect("zone")
    else {
        panic!("no ETag on GET /v1/zone")
    };
    let g = value.generation;
    assert!(value.own_capabilities.is_some(), "the zone's own aggregate is reported beside the whole");
    let again = admin.zone_if_changed(SubtreeView::Cached, Some(&etag)).await.expect("zone");
    assert!(matches!(again, Conditional::NotModified), "{again:?}");

    // Behind: at once. Not behind: after the timeout, unchanged.
    let w = admin.zone_watch(g - 1, 10_000).await.expect("watch");
    assert!(w.changed && w.generation == g && w.digest == etag, "{w:?}");
    let started = Instant::now();
    let w = admin.zone_watch(g, 200).await.expect("watch");
    assert!(!w.changed && w.generation == g && started.elapsed() >= Duration::from_millis(200), "{w:?}");

    // A waiting watch wakes on the next change (zone-add moves the generation), well before
    // its 20 s timeout would answer "nothing new".
    let started = Instant::now();
    let watching = tokio::spawn({
        let admin = admin.clone();
        async move { admin.zone_watch(g, 20_000).await }
    });
    // Gives the watch time to start waiting; if it has not, it answers at once all the same
    // (the generation it asks past has moved), so the assertions hold either way.
    tokio::time::sleep(Duration::from_millis(100)).await;
    add_child(&admin, &child).await;
    let w = watching.await.unwrap().expect("watch");
    assert!(w.changed && w.generation > g, "{w:?}");
    // A functional bound, not a performance one: woken by the change, not answered at the timeout.
    assert!(started.elapsed() < Duration::from_secs(15), "the watch was not woken: {:?}", started.elapsed());
    let moved = admin.zone_if_changed(SubtreeView::Cached, Some(&etag)).await.expect("zone");
    assert!(matches!(moved, Conditional::Modified { .. }), "a new child is a new answer");

    // Admin only, and `since` is required.
    admin
        .account_create(&api::AccountCreate {
            username: "m1".into(),
            password: "member-password".into(),
            role: api::Role::Member,
            client_id: Some("acme".into()),
            client_ids: None,
        })
        .await
        .expect("member");
    let (member, _) = api::Client::new(&parent.url).login("m1", "member-password").await.expect("member login");
    assert_eq!(member.zone_watch(0, 100).await.unwrap_err().code(), Some(ErrorCode::Forbidden));
    let e = admin.get::<api::ZoneWatch>("/v1/zone/watch?timeout_ms=100").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some(ErrorCode::InvalidField)), "{e}");
    parent.stop().await;
    child.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_held_by_one_node_wakes_on_a_change_made_by_another() {
    let node = spawn_app().await;
    let peer = node.spawn_peer().await;
    let child = spawn_app().await;
    let at_node = node.client().await;
    let (at_peer, _) =
        api::Client::new(&peer.url).login(&node.admin_username, &node.admin_password).await.expect("login at the peer");
    let g = at_peer.zone().await.expect("zone").generation;
    let started = Instant::now();
    let watching = tokio::spawn(async move { at_peer.zone_watch(g, 20_000).await });
    // As in the test above: the assertions hold whether or not the watch is waiting yet.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The change is made (and the generation bumped) by the other node: the peer hears of it on
    // the bus (zone.generation_changed; for a zone-add, zone.children_changed too), not by
    // reading the database in a loop.
    add_child(&at_node, &child).await;
    let w = watching.await.unwrap().expect("watch");
    assert!(w.changed && w.generation > g, "{w:?}");
    // A functional bound, not a performance one: woken by the change, not answered at the timeout.
    assert!(started.elapsed() < Duration::from_secs(15), "the watch was not woken: {:?}", started.elapsed());
    peer.stop().await;
    node.stop().await;
    child.stop().await;
}

/// Zone-add of `child` through `client`: the change both tests watch for.
async fn add_child(client: &api::Client, child: &TestApp) {
    client.zone_create(&child.as_child()).await.expect("zone-add");
}
