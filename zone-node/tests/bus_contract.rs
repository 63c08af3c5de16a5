//! The bus contract: what every transport promises (src/bus/mod.rs), one test body each, run on
//! the in-process transport (`memory://`) and on RabbitMQ (`amqp://`).
//!
//! `bus_contract_suite!` instantiates each test twice, in `mod memory` and `mod amqp`, as the store
//! suite does for SQLite and PostgreSQL. Every test gets a [`Zone`] of its own: a private named
//! in-process broker, or a queue prefix of its own on the broker at `ZONE_TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), so tests run in parallel. RabbitMQ is required: when it
//! is unreachable the `amqp` tests fail with a message saying so, they never skip.
//!
//! What only one transport does (broker restart, confirms under load, a foreign client, a refused
//! declaration; private in-process brokers) is tested in bus_amqp.rs and bus_memory.rs.
//!
//! Run with `cargo test -p zone-node --test bus_contract`.

mod bus_support;

use api::CodedError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ErrorCode;
use bus_support::*;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;
use zone_node::{Bus, BusError, Destination, Event, Message, MAX_IN_FLIGHT};

const LONG: Duration = Duration::from_secs(30);

/// One test's zone: where its nodes connect, and the prefix they share.
struct Zone {
    url: String,
    prefix: String,
}

impl Zone {
    fn memory() -> Zone {
        Zone { url: format!("memory://{}", prefix()), prefix: prefix() }
    }

    fn amqp() -> Zone {
        Zone { url: amqp_url(), prefix: prefix() }
    }

    /// A new node of this zone.
    async fn node(&self) -> Bus {
        connect(&self.url, &self.prefix).await
    }

    /// A node of another zone on the same broker.
    async fn node_of_another_zone(&self) -> Bus {
        connect(&self.url, &prefix()).await
    }
}

fn to(bus: &Bus, service: &str) -> Destination {
    Destination::Node { service: service.into(), node: bus.node_id() }
}

macro_rules! bus_contract_suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Zone::memory()).await;
                }
            )*
        }
        mod amqp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Zone::amqp()).await;
                }
            )*
        }
    };
}

bus_contract_suite!(
    call_reply_round_trip,
    send_reaches_the_handler_without_reply,
    events_reach_every_node_of_the_prefix,
    portal_is_shared_by_every_node,
    forward_keeps_the_reply_going_to_the_caller,
    remote_error_code_is_preserved,
    call_to_a_node_without_queue_is_unroutable_at_once,
    fail_calls_to_ends_a_pending_call_at_once,
    refuse_calls_to_lets_a_pending_call_finish,
    call_times_out_at_its_deadline,
    expired_message_is_answered_with_timeout,
    close_fails_pending_calls_and_later_calls,
    at_most_max_in_flight_handlers_per_queue,
    a_handler_panic_stays_within_its_delivery,
);

#[tokio::test]
async fn invalid_url_is_refused() {
    let err = Bus::connect("kafka://x", "p", Uuid::new_v4()).await.err().expect("refused");
    assert!(matches!(err, BusError::InvalidUrl(_)), "{err:?}");
    let err = Bus::connect("memory://", "has space", Uuid::new_v4()).await.err().expect("refused");
    assert!(matches!(err, BusError::InvalidUrl(_)), "{err:?}");
}

async fn call_reply_round_trip(zone: &Zone) {
    let server = zone.node().await;
    let client = zone.node().await;
    server.serve("echo", Arc::new(Echo)).await.unwrap();
    let body = br#"{"hello":"world"}"#.to_vec();
    let reply = client.call(to(&server, "echo"), Message::new("echo", body.clone()), LONG).await.unwrap();
    assert_eq!(reply, body);
    // Kind, resource, trace and the call's deadline reach the handler.
    server.serve("describe", Arc::new(Describe(server.node_id()))).await.unwrap();
    let msg = Message::new("vm.get", b"{}".to_vec())
        .with_resource("vm-7")
        .with_trace("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let reply = client.call(to(&server, "describe"), msg, LONG).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["kind"], "vm.get");
    assert_eq!(v["resource"], "vm-7");
    assert_eq!(v["hops"], 0);
    assert_eq!(v["has_deadline"], true);
    assert_eq!(v["trace"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    // Many calls at once all get their own reply.
    let calls = (0..200).map(|i| {
        let client = client.clone();
        let dest = to(&server, "echo");
        async move { (i, client.call(dest, Message::new("echo", format!("{i}").into_bytes()), LONG).await) }
    });
    for (i, result) in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap(), format!("{i}").into_bytes());
    }
    client.close().await;
    server.close().await;
}

async fn send_reaches_the_handler_without_reply(zone: &Zone) {
    let server = zone.node().await;
    let client = zone.node().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.serve("sink", Arc::new(Collect(tx))).await.unwrap();
    client.send(to(&server, "sink"), Message::new("note", br#""hi""#.to_vec())).await.unwrap();
    let (body, expects_reply) = tokio::time::timeout(LONG, rx.recv()).await.unwrap().unwrap();
    assert_eq!(body, br#""hi""#);
    assert!(!expects_reply);
    let ghost = Destination::Node { service: "sink".into(), node: Uuid::new_v4() };
    let err = client.send(ghost, Message::new("note", vec![])).await.unwrap_err();
    assert!(matches!(err, BusError::Unroutable(_)), "{err:?}");
    client.close().await;
    server.close().await;
}

async fn events_reach_every_node_of_the_prefix(zone: &Zone) {
    let a = zone.node().await;
    let b = zone.node().await;
    let other_zone = zone.node_of_another_zone().await;
    let (mut on_a, mut on_b, mut on_other) = (a.subscribe(), b.subscribe(), other_zone.subscribe());
    a.publish(Event::new("node.joined", a.node_id(), br#"{"n":1}"#.to_vec())).await.unwrap();
    for rx in [&mut on_a, &mut on_b] {
        let ev = tokio::time::timeout(LONG, rx.recv()).await.unwrap().unwrap();
        assert_eq!(ev.kind, "node.joined");
        assert_eq!(ev.source, a.node_id());
        assert_eq!(ev.body, br#"{"n":1}"#);
    }
    // Give a misrouted event time to show up where it must not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(on_other.try_recv().is_err());
    for bus in [a, b, other_zone] {
        bus.close().await;
    }
}

async fn portal_is_shared_by_every_node(zone: &Zone) {
    let n1 = zone.node().await;
    let n2 = zone.node().await;
    n1.serve_portal(Arc::new(Describe(n1.node_id()))).await.unwrap();
    n2.serve_portal(Arc::new(Describe(n2.node_id()))).await.unwrap();
    let client = zone.node().await;
    let mut seen = std::collections::HashMap::<String, u32>::new();
    for _ in 0..40 {
        let reply = client.call(Destination::Portal, Message::new("zone.get", b"{}".to_vec()), LONG).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        *seen.entry(v["node"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "both nodes serve the portal: {seen:?}");
    for bus in [client, n1, n2] {
        bus.close().await;
    }
}

async fn forward_keeps_the_reply_going_to_the_caller(zone: &Zone) {
    let front = zone.node().await;
    let back = zone.node().await;
    let client = zone.node().await;
    back.serve("work", Arc::new(Describe(back.node_id()))).await.unwrap();
    front.serve("work", Arc::new(Forward { bus: front.clone(), to: to(&back, "work") })).await.unwrap();
    let msg = Message::new("vm.start", b"{}".to_vec()).with_resource("vm-1");
    let reply = client.call(to(&front, "work"), msg, LONG).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["node"], back.node_id().to_string());
    assert_eq!(v["hops"], 1);
    assert_eq!(v["resource"], "vm-1");
    // A forward that cannot be routed answers the original caller with the error at once.
    front.serve("lost", Arc::new(Forward { bus: front.clone(), to: to(&back, "nothing") })).await.unwrap();
    let started = Instant::now();
    let err = client.call(to(&front, "lost"), Message::new("x", vec![]), LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Remote { code: ErrorCode::Unroutable, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    for bus in [client, front, back] {
        bus.close().await;
    }
}

async fn remote_error_code_is_preserved(zone: &Zone) {
    let server = zone.node().await;
    let client = zone.node().await;
    server.serve("f", Arc::new(Fails(ErrorCode::Conflict, "name taken"))).await.unwrap();
    let err = client.call(to(&server, "f"), Message::new("zone.add", vec![]), LONG).await.unwrap_err();
    match err {
        BusError::Remote { code, message } => {
            assert_eq!(code, ErrorCode::Conflict);
            assert_eq!(message, "name taken");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    // A node calling its own queue gets the same.
    server.serve("g", Arc::new(Fails(ErrorCode::NotFound, "no such vm"))).await.unwrap();
    let err = server.call(to(&server, "g"), Message::new("vm.get", vec![]), LONG).await.unwrap_err();
    assert!(
        matches!(&err, BusError::Remote { code: ErrorCode::NotFound, message } if message == "no such vm"),
        "{err:?}"
    );
    client.close().await;
    server.close().await;
}

async fn call_to_a_node_without_queue_is_unroutable_at_once(zone: &Zone) {
    let client = zone.node().await;
    for _ in 0..3 {
        let ghost = Destination::Node { service: "probe".into(), node: Uuid::new_v4() };
        let started = Instant::now();
        let err = client.call(ghost, Message::new("probe.run", b"{}".to_vec()), LONG).await.unwrap_err();
        assert!(matches!(err, BusError::Unroutable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
    // The portal of a zone where no node serves it is unroutable too.
    let err = client.call(Destination::Portal, Message::new("zone.get", vec![]), LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Unroutable(_)), "{err:?}");
    client.close().await;
}

/// What membership does for a node that left on its own: later calls to it fail at once (nothing
/// sent), while a call already with it still gets its answer.
async fn refuse_calls_to_lets_a_pending_call_finish(zone: &Zone) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let server = zone.node().await;
    let client = zone.node().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let handler = Gated { gate: gate.clone(), running: running.clone(), most: Arc::new(AtomicUsize::new(0)) };
    server.serve("gated", Arc::new(handler)).await.unwrap();
    let dest = to(&server, "gated");
    let pending = tokio::spawn({
        let (client, dest) = (client.clone(), dest.clone());
        async move { client.call(dest, Message::new("gated", vec![]), LONG).await }
    });
    let started = Instant::now();
    while running.load(SeqCst) == 0 {
        assert!(started.elapsed() < LONG, "the handler never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.refuse_calls_to(server.node_id());
    let later = client.call(dest.clone(), Message::new("gated", vec![]), LONG).await;
    assert!(matches!(later, Err(BusError::NodeGone(n)) if n == server.node_id()), "{later:?}");
    gate.add_permits(1);
    let answer = tokio::time::timeout(LONG, pending).await.expect("the pending call ended").unwrap();
    assert!(answer.is_ok(), "the pending call was failed: {answer:?}");
    client.close().await;
    server.close().await;
}

async fn fail_calls_to_ends_a_pending_call_at_once(zone: &Zone) {
    let server = zone.node().await;
    let client = zone.node().await;
    let handler_started = Arc::new(Notify::new());
    server.serve("slow", Arc::new(Slow(handler_started.clone()))).await.unwrap();
    let dest = to(&server, "slow");
    let pending = tokio::spawn({
        let (client, dest) = (client.clone(), dest.clone());
        async move {
            let started = Instant::now();
            (client.call(dest, Message::new("slow", vec![]), LONG).await, started.elapsed())
        }
    });
    tokio::time::timeout(LONG, handler_started.notified()).await.expect("handler started");
    client.fail_calls_to(server.node_id());
    let (result, took) = pending.await.unwrap();
    assert!(matches!(result, Err(BusError::NodeUnavailable(n)) if n == server.node_id()), "{result:?}");
    assert_eq!(result.unwrap_err().code(), ErrorCode::NodeUnavailable);
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Later calls and sends to it fail at once too, until it is seen again.
    let started = Instant::now();
    // (`NodeGone`: nothing was sent, so a caller may send again elsewhere.)
    let later = client.call(dest.clone(), Message::new("slow", vec![]), LONG).await;
    assert!(matches!(later, Err(BusError::NodeGone(_))), "{later:?}");
    assert_eq!(later.unwrap_err().code(), ErrorCode::NodeUnavailable);
    assert!(started.elapsed() < Duration::from_secs(1));
    let sent = client.send(dest.clone(), Message::new("slow", vec![])).await;
    assert!(matches!(sent, Err(BusError::NodeGone(_))), "{sent:?}");
    client.node_available(server.node_id());
    let err = client.call(dest, Message::new("slow", vec![]), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout(_)), "the call went through again: {err:?}");
    client.close().await;
    server.close().await;
}

async fn call_times_out_at_its_deadline(zone: &Zone) {
    let server = zone.node().await;
    let client = zone.node().await;
    server.serve("slow", Arc::new(Slow(Arc::new(Notify::new())))).await.unwrap();
    let started = Instant::now();
    let err =
        client.call(to(&server, "slow"), Message::new("slow", vec![]), Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Timeout);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(5), "{took:?}");
    client.close().await;
    server.close().await;
}

async fn expired_message_is_answered_with_timeout(zone: &Zone) {
    let server = zone.node().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.serve("sink", Arc::new(Collect(tx))).await.unwrap();
    // Past its deadline when sent (epoch + 1 ms): the caller times out, and, what the caller's
    // own timer cannot show, the receiver drops it without running the handler.
    let expired = Message::new("sink", br#""expired""#.to_vec()).with_deadline_ms(1);
    let started = Instant::now();
    let err = server.call(to(&server, "sink"), expired, LONG).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    server.send(to(&server, "sink"), Message::new("sink", br#""expired""#.to_vec()).with_deadline_ms(1)).await.unwrap();
    // A message within its deadline, sent after them, is handled; the expired ones never were.
    server.send(to(&server, "sink"), Message::new("sink", br#""live""#.to_vec())).await.unwrap();
    let (first, _) = tokio::time::timeout(LONG, rx.recv()).await.expect("the live message").expect("a delivery");
    assert_eq!(first, br#""live""#, "an expired message reached the handler");
    assert!(rx.try_recv().is_err(), "more deliveries than the live message");
    server.close().await;
}

/// A handler that panics costs its one delivery (the caller gets no reply and times out), not
/// the queue: the next message on it is handled as usual.
async fn a_handler_panic_stays_within_its_delivery(zone: &Zone) {
    let server = zone.node().await;
    let client = zone.node().await;
    server.serve("fragile", Arc::new(PanicsOnBoom)).await.unwrap();
    let dest = to(&server, "fragile");
    let err = client.call(dest.clone(), Message::new("x", br#""boom""#.to_vec()), Duration::from_millis(500)).await;
    assert!(matches!(err, Err(BusError::Timeout(_))), "{err:?}");
    for i in 0..3 {
        let body = format!("{i}").into_bytes();
        let reply =
            client.call(dest.clone(), Message::new("x", body.clone()), LONG).await.expect("handled after the panic");
        assert_eq!(reply, body);
    }
    client.close().await;
    server.close().await;
}

async fn close_fails_pending_calls_and_later_calls(zone: &Zone) {
    let server = zone.node().await;
    let client = zone.node().await;
    let started_handler = Arc::new(Notify::new());
    server.serve("slow", Arc::new(Slow(started_handler.clone()))).await.unwrap();
    client.serve("echo", Arc::new(Echo)).await.unwrap();
    let pending = tokio::spawn({
        let (client, dest) = (client.clone(), to(&server, "slow"));
        async move { client.call(dest, Message::new("slow", vec![]), LONG).await }
    });
    tokio::time::timeout(LONG, started_handler.notified()).await.expect("handler started");
    client.close().await;
    let result = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("ended at once").unwrap();
    assert!(matches!(result, Err(BusError::Unavailable(_))), "{result:?}");
    assert!(!client.is_connected());
    let err = client.call(to(&client, "echo"), Message::new("echo", vec![]), LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::BusUnavailable);
    server.close().await;
}

/// A node runs at most `MAX_IN_FLIGHT` handlers of one queue at once (on RabbitMQ the portal's
/// consumer prefetch); the rest wait their turn and are all answered.
async fn at_most_max_in_flight_handlers_per_queue(zone: &Zone) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let server = zone.node().await;
    let client = zone.node().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler = Gated { gate: gate.clone(), running: running.clone(), most: most.clone() };
    server.serve_portal(Arc::new(handler)).await.unwrap();
    let limit = usize::from(MAX_IN_FLIGHT);
    let calls: Vec<_> = (0..limit + 40)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(Destination::Portal, Message::new("zone.get", vec![]), LONG).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.load(SeqCst) < limit {
        assert!(Instant::now() < deadline, "only {} handlers started", running.load(SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give any handler beyond the limit time to start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(most.load(SeqCst), limit, "handlers running at once");
    gate.add_permits(limit + 40);
    for call in calls {
        call.await.unwrap().expect("answered once its turn came");
    }
    client.close().await;
    server.close().await;
}
