//! The RabbitMQ bus against a real broker: `ZONE_TEST_AMQP_URL`, by default the local one
//! (`amqp://guest:guest@127.0.0.1:5672/%2f`). These tests fail, not skip, when it is missing.
//! Every test uses its own prefix, so they run in parallel on one broker. The reconnection test
//! starts a broker of its own with scripts/rabbitmq-node.

mod bus_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ErrorCode;
use bus_support::*;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;
use zone_node::bus::{Bus, BusError, Destination, Event, Message};

const LONG: Duration = Duration::from_secs(30);

fn amqp_url() -> String {
    std::env::var("ZONE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

async fn node_at(url: &str, prefix: &str) -> Bus {
    match Bus::connect(url, prefix, Uuid::new_v4()).await {
        Ok(bus) => bus,
        Err(err) => {
            panic!("these tests need RabbitMQ at {} (set ZONE_TEST_AMQP_URL): {err}", zone_node::bus::redact_url(url))
        }
    }
}

async fn node(prefix: &str) -> Bus {
    node_at(&amqp_url(), prefix).await
}

fn to(bus: &Bus, service: &str) -> Destination {
    Destination::Node { service: service.into(), node: bus.node_id() }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reply_round_trip() {
    let p = prefix();
    let server = node(&p).await;
    let client = node(&p).await;
    server.serve("echo", Arc::new(Echo)).await.unwrap();
    let body = br#"{"hello":"world"}"#.to_vec();
    let reply = client.call(to(&server, "echo"), Message::new("echo", body.clone()), LONG).await.unwrap();
    assert_eq!(reply, body);
    // Headers survive the trip.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_the_handler_without_reply() {
    let p = prefix();
    let server = node(&p).await;
    let client = node(&p).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_node_of_the_prefix() {
    let p = prefix();
    let a = node(&p).await;
    let b = node(&p).await;
    let other_zone = node(&prefix()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_is_load_balanced_over_two_nodes() {
    let p = prefix();
    let n1 = node(&p).await;
    let n2 = node(&p).await;
    n1.serve_portal(Arc::new(Describe(n1.node_id()))).await.unwrap();
    n2.serve_portal(Arc::new(Describe(n2.node_id()))).await.unwrap();
    let client = node(&p).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_keeps_the_reply_going_to_the_caller() {
    let p = prefix();
    let front = node(&p).await;
    let back = node(&p).await;
    let client = node(&p).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_error_code_is_preserved() {
    let p = prefix();
    let server = node(&p).await;
    let client = node(&p).await;
    server.serve("f", Arc::new(Fails(ErrorCode::Conflict, "name taken"))).await.unwrap();
    let err = client.call(to(&server, "f"), Message::new("zone.add", vec![]), LONG).await.unwrap_err();
    match err {
        BusError::Remote { code, message } => {
            assert_eq!(code, ErrorCode::Conflict);
            assert_eq!(message, "name taken");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_a_node_without_queue_is_unroutable_at_once() {
    let p = prefix();
    let client = node(&p).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_calls_to_ends_a_pending_call_at_once() {
    let p = prefix();
    let server = node(&p).await;
    let client = node(&p).await;
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
    assert!(took < Duration::from_secs(2), "{took:?}");
    let started = Instant::now();
    let later = client.call(dest.clone(), Message::new("slow", vec![]), LONG).await;
    assert!(matches!(later, Err(BusError::NodeUnavailable(_))), "{later:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let sent = client.send(dest, Message::new("slow", vec![])).await;
    assert!(matches!(sent, Err(BusError::NodeUnavailable(_))), "{sent:?}");
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_times_out_at_its_deadline() {
    let p = prefix();
    let server = node(&p).await;
    let client = node(&p).await;
    server.serve("slow", Arc::new(Slow(Arc::new(Notify::new())))).await.unwrap();
    let started = Instant::now();
    let err =
        client.call(to(&server, "slow"), Message::new("slow", vec![]), Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(450));
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_pending_calls_and_later_calls() {
    let p = prefix();
    let server = node(&p).await;
    let client = node(&p).await;
    let started_handler = Arc::new(Notify::new());
    server.serve("slow", Arc::new(Slow(started_handler.clone()))).await.unwrap();
    let pending = tokio::spawn({
        let (client, dest) = (client.clone(), to(&server, "slow"));
        async move { client.call(dest, Message::new("slow", vec![]), LONG).await }
    });
    started_handler.notified().await;
    client.close().await;
    let result = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("ended at once").unwrap();
    assert!(matches!(result, Err(BusError::Unavailable(_))), "{result:?}");
    assert!(!client.is_connected());
    server.close().await;
}

/// An extra broker of this test's own, stopped when dropped.
struct ExtraBroker {
    name: String,
    port: u16,
}

impl ExtraBroker {
    fn script() -> PathBuf {
        repo_root().join("scripts/rabbitmq-node")
    }

    async fn start(&self) {
        let out = tokio::process::Command::new(Self::script())
            .args(["start", &self.name, &self.port.to_string()])
            .output()
            .await
            .expect("run scripts/rabbitmq-node");
        assert!(
            out.status.success(),
            "rabbitmq-node start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn stop(&self) {
        let out = tokio::process::Command::new(Self::script())
            .args(["stop", &self.name])
            .output()
            .await
            .expect("run scripts/rabbitmq-node");
        assert!(out.status.success(), "rabbitmq-node stop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for ExtraBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script()).args(["stop", &self.name]).output();
    }
}

/// A port that is free, with its distribution port (+20000) free too.
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let port = 20_000 + (rand_u16() % 20_000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 20_000) {
            return port;
        }
    }
    panic!("no free port pair found");
}

fn rand_u16() -> u16 {
    let bytes = Uuid::new_v4().into_bytes();
    u16::from_le_bytes([bytes[0], bytes[1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_broker_restarts() {
    init_logs();
    let broker =
        ExtraBroker { name: format!("zt-{}", &Uuid::new_v4().simple().to_string()[..10]), port: free_port_pair() };
    broker.start().await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.port);
    let p = prefix();
    let server = node_at(&url, &p).await;
    let client = node_at(&url, &p).await;
    server.serve("echo", Arc::new(Echo)).await.unwrap();
    server.serve_portal(Arc::new(Echo)).await.unwrap();
    let dest = to(&server, "echo");
    assert_eq!(client.call(dest.clone(), Message::new("echo", b"1".to_vec()), LONG).await.unwrap(), b"1");

    // A call pending when the broker goes away ends with Unavailable, not at its timeout.
    let slow_started = Arc::new(Notify::new());
    server.serve("slow", Arc::new(Slow(slow_started.clone()))).await.unwrap();
    let pending = tokio::spawn({
        let (client, dest) = (client.clone(), to(&server, "slow"));
        async move { client.call(dest, Message::new("slow", vec![]), LONG).await }
    });
    slow_started.notified().await;
    broker.stop().await;
    let result =
        tokio::time::timeout(Duration::from_secs(10), pending).await.expect("pending call ended promptly").unwrap();
    assert!(matches!(result, Err(BusError::Unavailable(_))), "{result:?}");

    let started = Instant::now();
    let err = client.call(dest.clone(), Message::new("echo", b"2".to_vec()), LONG).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(!client.is_connected());

    broker.start().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.call(dest.clone(), Message::new("echo", b"3".to_vec()), Duration::from_secs(2)).await {
            Ok(reply) => {
                assert_eq!(reply, b"3");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "no working call 60 s after the broker restarted: {err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(client.is_connected() && server.is_connected());
    // The portal consumer came back too.
    assert_eq!(client.call(Destination::Portal, Message::new("echo", b"4".to_vec()), LONG).await.unwrap(), b"4");
    client.close().await;
    server.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_portal_client_written_from_the_docs() {
    let p = prefix();
    let server = node(&p).await;
    server.serve_portal(Arc::new(Describe(server.node_id()))).await.unwrap();

    let (out, stdout) = portal_client(&p, &["--body", r#"{"hello":"portal"}"#, "--resource", "r-1"]).await;
    assert!(
        out.status.success(),
        "portal_client.py failed (is pika installed? python3 -m pip install pika)\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = reply_json(&stdout);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["body"]["node"], server.node_id().to_string());
    assert_eq!(v["body"]["kind"], "zone.get");
    assert_eq!(v["body"]["resource"], "r-1");

    // A request the node cannot read is answered with an error, not dropped.
    let v = reply_json(&portal_client(&p, &["--body", "{not json"]).await.1);
    assert_eq!(v["status"], "error");
    assert_eq!(v["body"]["error"]["code"], "invalid_body");

    // So is a request of an envelope version this node does not speak.
    let v = reply_json(&portal_client(&p, &["--bus-version", "2"]).await.1);
    assert_eq!(v["status"], "error");
    assert_eq!(v["body"]["error"]["code"], "invalid_body");
    assert!(v["body"]["error"]["message"].as_str().unwrap_or("").contains("x-bus-version"), "{v}");

    // With no node serving the portal, the request is unroutable at once.
    server.close().await;
    let (out, stdout) = portal_client(&p, &[]).await;
    assert_eq!(out.status.code(), Some(3), "expected unroutable: {stdout}");
}

/// Runs tests/clients/portal_client.py with a `zone.get` request on prefix `p` plus `extra`
/// arguments; returns its output and its standard output as text.
async fn portal_client(p: &str, extra: &[&str]) -> (std::process::Output, String) {
    let script = repo_root().join("tests/clients/portal_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--url", &amqp_url(), "--prefix", p, "--kind", "zone.get"])
        .args(extra)
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

fn reply_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {stdout}"))
}

/// Returned messages are matched to their own publish even when many publishes share one
/// confirmation batch: every routable message succeeds, every unroutable one fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_is_reported_to_the_right_caller_under_load() {
    let p = prefix();
    let server = node(&p).await;
    let client = node(&p).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    server.serve("echo", Arc::new(Echo)).await.unwrap();
    server.serve("sink", Arc::new(Collect(tx))).await.unwrap();
    let started = Instant::now();
    let calls = (0..400).map(|i| {
        let client = client.clone();
        let routable = i % 2 == 0;
        let node = if routable { server.node_id() } else { Uuid::new_v4() };
        async move {
            let body = format!("{i}").into_bytes();
            if i % 4 < 2 {
                let dest = Destination::Node { service: "echo".into(), node };
                let result = client.call(dest, Message::new("echo", body.clone()), LONG).await;
                match (routable, result) {
                    (true, Ok(reply)) => assert_eq!(reply, body),
                    (false, Err(BusError::Unroutable(_))) => {}
                    (routable, other) => panic!("call {i} (routable: {routable}): {other:?}"),
                }
            } else {
                let dest = Destination::Node { service: "sink".into(), node };
                let result = client.send(dest, Message::new("note", body)).await;
                match (routable, result) {
                    (true, Ok(())) | (false, Err(BusError::Unroutable(_))) => {}
                    (routable, other) => panic!("send {i} (routable: {routable}): {other:?}"),
                }
            }
        }
    });
    futures::future::join_all(calls).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    client.close().await;
    server.close().await;
}

/// A queue the broker refuses to declare (same name, other arguments) fails `serve` with an
/// error and leaves the rest of the bus working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_declaration_fails_serve_only() {
    use lapin::options::QueueDeclareOptions;
    let p = prefix();
    let raw =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.expect("raw connection");
    let channel = raw.create_channel().await.unwrap();
    let portal = format!("{p}.message.api.portal");
    // Durable and not auto-delete: not what the bus declares.
    channel
        .queue_declare(&portal, QueueDeclareOptions { durable: true, ..Default::default() }, Default::default())
        .await
        .unwrap();
    let bus = node(&p).await;
    let err = bus.serve_portal(Arc::new(Echo)).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert!(bus.is_connected());
    bus.serve("echo", Arc::new(Echo)).await.unwrap();
    let reply = bus.call(to(&bus, "echo"), Message::new("echo", b"7".to_vec()), LONG).await.unwrap();
    assert_eq!(reply, b"7");
    channel.queue_delete(&portal, Default::default()).await.unwrap();
    let _ = raw.close(200, "done").await;
    bus.close().await;
}
