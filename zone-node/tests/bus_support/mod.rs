//! What the bus integration tests share (bus_contract.rs, bus_memory.rs, bus_amqp.rs): connecting,
//! and the handlers they serve.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use api::{ErrorBody, ErrorCode};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;
use zone_node::{Bus, Delivery, Destination, Handler};

/// The broker of the RabbitMQ tests: `ZONE_TEST_AMQP_URL`, by default the local one.
pub fn amqp_url() -> String {
    std::env::var("ZONE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A new node on `url`; a broker that cannot be reached fails the test, saying what it needs.
pub async fn connect(url: &str, prefix: &str) -> Bus {
    match Bus::connect(url, prefix, Uuid::new_v4()).await {
        Ok(bus) => bus,
        Err(err) => {
            panic!("these tests need RabbitMQ at {} (set ZONE_TEST_AMQP_URL): {err}", zone_node::redact_url(url))
        }
    }
}

/// A prefix of its own for every test, so tests run in parallel on one broker.
pub fn prefix() -> String {
    format!("t{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Replies with the request body.
pub struct Echo;

#[async_trait::async_trait]
impl Handler for Echo {
    async fn handle(&self, d: Delivery) {
        let body = d.msg.body.clone();
        d.reply(Ok(body)).await;
    }
}

/// Replies with what it saw: node, kind, hops, resource and deadline.
pub struct Describe(pub Uuid);

#[async_trait::async_trait]
impl Handler for Describe {
    async fn handle(&self, d: Delivery) {
        let body = serde_json::json!({
            "node": self.0.to_string(),
            "kind": d.msg.kind,
            "hops": d.msg.hops,
            "resource": d.msg.resource_id,
            "has_deadline": d.msg.deadline_ms.is_some(),
            "trace": d.msg.trace,
        });
        d.reply(Ok(body.to_string().into_bytes())).await;
    }
}

/// Panics on the body `"boom"`, echoes anything else.
pub struct PanicsOnBoom;

#[async_trait::async_trait]
impl Handler for PanicsOnBoom {
    async fn handle(&self, d: Delivery) {
        if d.msg.body == br#""boom""# {
            panic!("a handler bug, on purpose");
        }
        let body = d.msg.body.clone();
        d.reply(Ok(body)).await;
    }
}

/// Replies with an error.
pub struct Fails(pub ErrorCode, pub &'static str);

#[async_trait::async_trait]
impl Handler for Fails {
    async fn handle(&self, d: Delivery) {
        d.reply(Err(ErrorBody::new(self.0, self.1))).await;
    }
}

/// Signals that it started, then never replies in time.
pub struct Slow(pub Arc<Notify>);

#[async_trait::async_trait]
impl Handler for Slow {
    async fn handle(&self, d: Delivery) {
        self.0.notify_one();
        tokio::time::sleep(Duration::from_secs(120)).await;
        d.reply(Ok(b"{}".to_vec())).await;
    }
}

/// Counts the handlers running at once (and the most ever), each waiting for a permit of `gate`
/// before it replies.
pub struct Gated {
    pub gate: Arc<tokio::sync::Semaphore>,
    pub running: Arc<std::sync::atomic::AtomicUsize>,
    pub most: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl Handler for Gated {
    async fn handle(&self, d: Delivery) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        let _permit = self.gate.acquire().await;
        self.running.fetch_sub(1, SeqCst);
        d.reply(Ok(b"{}".to_vec())).await;
    }
}

/// Passes every delivery (body and whether it expects a reply) to a channel.
pub struct Collect(pub mpsc::UnboundedSender<(Vec<u8>, bool)>);

#[async_trait::async_trait]
impl Handler for Collect {
    async fn handle(&self, d: Delivery) {
        let expects = d.expects_reply();
        let _ = self.0.send((d.msg.body.clone(), expects));
        d.reply(Ok(b"{}".to_vec())).await;
    }
}

/// Forwards every delivery to `to` on `bus`.
pub struct Forward {
    pub bus: Bus,
    pub to: Destination,
}

#[async_trait::async_trait]
impl Handler for Forward {
    async fn handle(&self, d: Delivery) {
        let _ = self.bus.forward(self.to.clone(), d).await;
    }
}

/// Shows the bus's logs in a failing test's output (`RUST_LOG` filters, default `info`).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,lapin=error".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}
