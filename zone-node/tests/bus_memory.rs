//! The in-process bus (`memory://`): several nodes in one process on a named broker.

mod bus_support;

use api::CodedError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ErrorCode;
use bus_support::*;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;
use zone_node::bus::{Bus, BusError, Destination, Event, Message};

const LONG: Duration = Duration::from_secs(30);

async fn node(broker: &str, prefix: &str) -> Bus {
    Bus::connect(&format!("memory://{broker}"), prefix, Uuid::new_v4()).await.expect("memory bus")
}

fn to(bus: &Bus, service: &str) -> Destination {
    Destination::Node { service: service.into(), node: bus.node_id() }
}

#[tokio::test]
async fn invalid_url_is_refused() {
    let err = Bus::connect("kafka://x", "p", Uuid::new_v4()).await.err().expect("refused");
    assert!(matches!(err, BusError::InvalidUrl(_)), "{err:?}");
}

#[tokio::test]
async fn call_reply_round_trip() {
    let (b, p) = (prefix(), prefix());
    let server = node(&b, &p).await;
    let client = node(&b, &p).await;
    server.serve("echo", Arc::new(Echo)).await.unwrap();
    let reply = client.call(to(&server, "echo"), Message::new("echo", br#"{"a":1}"#.to_vec()), LONG).await.unwrap();
    assert_eq!(reply, br#"{"a":1}"#);
    // A private broker (`memory://`) does not see the named one.
    let private = Bus::connect("memory://", &p, Uuid::new_v4()).await.unwrap();
    let err = private.call(to(&server, "echo"), Message::new("echo", vec![]), LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Unroutable(_)), "{err:?}");
}

#[tokio::test]
async fn send_reaches_the_handler_without_reply() {
    let (b, p) = (prefix(), prefix());
    let server = node(&b, &p).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.serve("sink", Arc::new(Collect(tx))).await.unwrap();
    server.send(to(&server, "sink"), Message::new("note", br#""hi""#.to_vec())).await.unwrap();
    let (body, expects_reply) = tokio::time::timeout(LONG, rx.recv()).await.unwrap().unwrap();
    assert_eq!(body, br#""hi""#);
    assert!(!expects_reply);
}

#[tokio::test]
async fn events_reach_every_node_of_the_prefix() {
    let (b, p) = (prefix(), prefix());
    let a = node(&b, &p).await;
    let c = node(&b, &p).await;
    let other_zone = node(&b, &prefix()).await;
    let (mut on_a, mut on_c, mut on_other) = (a.subscribe(), c.subscribe(), other_zone.subscribe());
    a.publish(Event::new("node.joined", a.node_id(), b"{}".to_vec())).await.unwrap();
    for rx in [&mut on_a, &mut on_c] {
        let ev = tokio::time::timeout(LONG, rx.recv()).await.unwrap().unwrap();
        assert_eq!(ev.kind, "node.joined");
        assert_eq!(ev.source, a.node_id());
    }
    assert!(on_other.try_recv().is_err());
}

#[tokio::test]
async fn portal_is_shared_by_every_node() {
    let (b, p) = (prefix(), prefix());
    let n1 = node(&b, &p).await;
    let n2 = node(&b, &p).await;
    n1.serve_portal(Arc::new(Describe(n1.node_id()))).await.unwrap();
    n2.serve_portal(Arc::new(Describe(n2.node_id()))).await.unwrap();
    let client = node(&b, &p).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let reply = client.call(Destination::Portal, Message::new("zone.get", b"{}".to_vec()), LONG).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        seen.insert(v["node"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2, "both nodes serve the portal: {seen:?}");
}

#[tokio::test]
async fn forward_keeps_the_reply_going_to_the_caller() {
    let (b, p) = (prefix(), prefix());
    let front = node(&b, &p).await;
    let back = node(&b, &p).await;
    back.serve("work", Arc::new(Describe(back.node_id()))).await.unwrap();
    front.serve("work", Arc::new(Forward { bus: front.clone(), to: to(&back, "work") })).await.unwrap();
    let client = node(&b, &p).await;
    let msg = Message::new("vm.start", b"{}".to_vec()).with_resource("vm-1");
    let reply = client.call(to(&front, "work"), msg, LONG).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["node"], back.node_id().to_string());
    assert_eq!(v["hops"], 1);
    assert_eq!(v["resource"], "vm-1");
    // Forwarding to nowhere answers the caller with the error at once.
    front.serve("lost", Arc::new(Forward { bus: front.clone(), to: to(&back, "nothing") })).await.unwrap();
    let err = client.call(to(&front, "lost"), Message::new("x", vec![]), LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Remote { code: ErrorCode::Unroutable, .. }), "{err:?}");
}

#[tokio::test]
async fn remote_error_code_is_preserved() {
    let (b, p) = (prefix(), prefix());
    let server = node(&b, &p).await;
    server.serve("f", Arc::new(Fails(ErrorCode::NotFound, "no such vm"))).await.unwrap();
    let err = server.call(to(&server, "f"), Message::new("vm.get", vec![]), LONG).await.unwrap_err();
    match err {
        BusError::Remote { code, message } => {
            assert_eq!(code, ErrorCode::NotFound);
            assert_eq!(message, "no such vm");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn unroutable_and_unavailable_nodes_fail_at_once() {
    let (b, p) = (prefix(), prefix());
    let client = node(&b, &p).await;
    let ghost = Destination::Node { service: "x".into(), node: Uuid::new_v4() };
    let started = Instant::now();
    let err = client.call(ghost, Message::new("x", vec![]), LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Unroutable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let server = node(&b, &p).await;
    let started_handler = Arc::new(Notify::new());
    server.serve("slow", Arc::new(Slow(started_handler.clone()))).await.unwrap();
    let dest = to(&server, "slow");
    let caller = client.clone();
    let pending = tokio::spawn({
        let dest = dest.clone();
        async move {
            let started = Instant::now();
            (caller.call(dest, Message::new("slow", vec![]), LONG).await, started.elapsed())
        }
    });
    started_handler.notified().await;
    client.fail_calls_to(server.node_id());
    let (result, took) = pending.await.unwrap();
    assert!(matches!(result, Err(BusError::NodeUnavailable(n)) if n == server.node_id()), "{result:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let later = client.call(dest.clone(), Message::new("slow", vec![]), LONG).await;
    assert!(matches!(later, Err(BusError::NodeUnavailable(_))), "{later:?}");
    client.node_available(server.node_id());
    let err = client.call(dest, Message::new("slow", vec![]), Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn call_times_out_at_its_deadline() {
    let (b, p) = (prefix(), prefix());
    let server = node(&b, &p).await;
    server.serve("slow", Arc::new(Slow(Arc::new(Notify::new())))).await.unwrap();
    let err =
        server.call(to(&server, "slow"), Message::new("slow", vec![]), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Timeout);
}

#[tokio::test]
async fn expired_message_is_answered_with_timeout() {
    let (b, p) = (prefix(), prefix());
    let server = node(&b, &p).await;
    server.serve("echo", Arc::new(Echo)).await.unwrap();
    let msg = Message::new("echo", vec![]).with_deadline_ms(1);
    let err = server.call(to(&server, "echo"), msg, LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Remote { code: ErrorCode::Timeout, .. } | BusError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn closed_bus_is_unavailable() {
    let bus = node("", &prefix()).await;
    bus.serve("echo", Arc::new(Echo)).await.unwrap();
    bus.close().await;
    assert!(!bus.is_connected());
    let err = bus.call(to(&bus, "echo"), Message::new("echo", vec![]), LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
}
