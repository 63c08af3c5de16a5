//! zone-update never sends a child's stored password to a URL it was not given for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::{ErrorCode, ZoneCreate, ZoneUpdate};

use crate::app::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_api_url_without_the_password_is_refused_and_the_new_url_hears_nothing() {
    let parent = spawn_app().await;
    let child = spawn_app().await;
    let admin = parent.client().await;
    let added = admin.zone_create(&child.as_child()).await.expect("zone-add");

    // A listener standing in for someone else's server: it counts the connections it gets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let trap = format!("http://{}", listener.local_addr().expect("the listener's address"));
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let trap_task = tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });

    let err = admin
        .zone_update(&added.id, &ZoneUpdate { api_url: Some(trap.clone()), ..Default::default() })
        .await
        .expect_err("a new URL without the password");
    assert_eq!((err.status(), err.code()), (Some(400), Some(ErrorCode::InvalidField)), "{err}");
    assert!(err.to_string().contains("password"), "the message names the missing field: {err}");
    // Nothing was sent: no connection at all reached the new URL, and the child keeps its URL.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0, "the new URL was contacted");
    let detail = admin.zone_get(&added.id, false).await.expect("zone-show");
    assert_eq!(detail.api_url, child.url);

    // The same URL (and other fields) still need no password.
    let same = admin
        .zone_update(
            &added.id,
            &ZoneUpdate { api_url: Some(child.url.clone()), disabled: Some(true), ..Default::default() },
        )
        .await
        .expect("the same URL with the stored password");
    assert!(same.disabled);

    trap_task.abort();
    parent.stop().await;
    child.stop().await;
}

/// zone-add says the same for a closed port and for an open port where no zone answers, so it
/// cannot be used to scan ports; the cause is in the node's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_add_says_the_same_for_a_closed_port_and_an_open_one() {
    let parent = spawn_app().await;
    let admin = parent.client().await;
    // An open port whose server closes every connection at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let open = listener.local_addr().expect("the listener's address");
    let closer = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let closed = format!("127.0.0.1:{}", test_support::free_port());
    let mut texts = Vec::new();
    for addr in [closed, open.to_string()] {
        let url = format!("http://{addr}");
        let err = admin
            .zone_create(&ZoneCreate { api_url: url.clone(), password: "some-password-1".into(), ..parent.as_child() })
            .await
            .expect_err("no zone there");
        assert_eq!((err.status(), err.code()), (Some(502), Some(ErrorCode::ZoneUnreachable)), "{err}");
        texts.push(err.to_string().replace(&url, "URL"));
    }
    assert_eq!(texts[0], texts[1], "a closed and an open port are told apart");
    closer.abort();
    parent.stop().await;
}
