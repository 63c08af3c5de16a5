//! The CloudBus: how the services of a zone's nodes talk to each other.
//!
//! Two transports sit behind one [`Bus`] type: RabbitMQ through lapin (`amqp://...`, needed for a
//! zone of several nodes) and in-process channels (`memory://`, the embedded default). The wire
//! names are fixed by DESIGN.md §3 and documented in docs/wire-format.md:
//!
//! - service queue of one node: `<prefix>.message.<service>.<node-uuid>`
//! - shared API queue, consumed by every node: `<prefix>.message.api.portal`
//! - canonical events: topic exchange `<prefix>.event`, routing key = event kind
//!
//! What the bus promises:
//! - [`Bus::call`] always ends: in the reply, or in a clear [`BusError`] (timeout at the deadline,
//!   `Unroutable` at once when no queue takes the message, `NodeUnavailable` at once when the
//!   target node is known to have left, or when [`Bus::fail_calls_to`] is told it has, and
//!   `Unavailable` at once while the broker is unreachable).
//! - After the broker comes back, the bus reconnects by itself and re-declares its queues and
//!   consumers; nothing above it has to restart.
//!
//! # Layout
//! - [`envelope`]: [`Message`], [`Event`], the headers, and how a reply carries success or error
//! - `memory`: the in-process transport
//! - `amqp`: the RabbitMQ transport, with reconnection

pub mod envelope;

pub use envelope::{Delivery, Event, Message, ReplySink};

use std::sync::Arc;
use std::time::Duration;

use api::ErrorCode;
use uuid::Uuid;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The service queue of one node: `<prefix>.message.<service>.<node>`.
    Node { service: String, node: Uuid },
    /// The shared API queue `<prefix>.message.api.portal`: any one node takes it.
    Portal,
}

/// The name of the shared API service.
pub const PORTAL: &str = "api.portal";

/// Receives the deliveries of one service queue (or of the portal).
///
/// The handler answers with [`Delivery::reply`] or hands the delivery on with [`Bus::forward`];
/// a delivery dropped without either gets no reply (its caller times out), so handlers must not
/// do that for calls.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, delivery: Delivery);
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("node {0} is not available (it left the zone or was evicted)")]
    NodeUnavailable(Uuid),
    #[error("no queue takes messages for {0}")]
    Unroutable(String),
    #[error("the message bus is unavailable: {0}")]
    Unavailable(String),
    /// The handler at the other end answered with an error.
    #[error("{code}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("invalid bus url: {0}")]
    InvalidUrl(String),
}

impl BusError {
    /// The API error code this failure is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            BusError::Timeout(_) => ErrorCode::Timeout,
            BusError::NodeUnavailable(_) => ErrorCode::NodeUnavailable,
            BusError::Unroutable(_) => ErrorCode::Unroutable,
            BusError::Unavailable(_) => ErrorCode::BusUnavailable,
            BusError::Remote { code, .. } => *code,
            BusError::InvalidUrl(_) => ErrorCode::Internal,
        }
    }
}

/// A handle on the bus of one node. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<dyn Transport>,
}

/// What a transport does; [`Bus`] is the only caller. Implemented by the in-process and the
/// RabbitMQ transports.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    fn node_id(&self) -> Uuid;
    fn prefix(&self) -> &str;
    async fn serve(&self, service: &str, handler: Arc<dyn Handler>) -> Result<(), BusError>;
    async fn serve_portal(&self, handler: Arc<dyn Handler>) -> Result<(), BusError>;
    async fn send(&self, to: Destination, msg: Message) -> Result<(), BusError>;
    async fn call(&self, to: Destination, msg: Message, timeout: Duration) -> Result<Vec<u8>, BusError>;
    async fn forward(&self, to: Destination, delivery: Delivery) -> Result<(), BusError>;
    async fn publish(&self, event: Event) -> Result<(), BusError>;
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event>;
    fn fail_calls_to(&self, node: Uuid);
    fn is_connected(&self) -> bool;
    async fn close(&self);
}

impl Bus {
    /// Connects to `url` (`memory://`, `memory://<name>`, or `amqp://...`) as node `node`, with
    /// every queue and exchange name starting with `prefix`.
    pub async fn connect(url: &str, prefix: &str, node: Uuid) -> Result<Bus, BusError> {
        let _ = (url, prefix, node);
        todo!("implemented by the bus transports")
    }

    pub fn from_transport(inner: Arc<dyn Transport>) -> Bus {
        Bus { inner }
    }

    pub fn node_id(&self) -> Uuid {
        self.inner.node_id()
    }

    pub fn prefix(&self) -> &str {
        self.inner.prefix()
    }

    /// Declares this node's queue for `service` and delivers its messages to `handler`.
    pub async fn serve(&self, service: &str, handler: Arc<dyn Handler>) -> Result<(), BusError> {
        self.inner.serve(service, handler).await
    }

    /// Joins the shared `api.portal` queue.
    pub async fn serve_portal(&self, handler: Arc<dyn Handler>) -> Result<(), BusError> {
        self.inner.serve_portal(handler).await
    }

    /// Fire and forget: fails only when the message cannot be handed to the broker or routed.
    pub async fn send(&self, to: Destination, msg: Message) -> Result<(), BusError> {
        self.inner.send(to, msg).await
    }

    /// Sends and waits for the reply body, at most `timeout`.
    pub async fn call(&self, to: Destination, msg: Message, timeout: Duration) -> Result<Vec<u8>, BusError> {
        self.inner.call(to, msg, timeout).await
    }

    /// Hands a delivery to another destination; its reply still goes to the original caller.
    pub async fn forward(&self, to: Destination, delivery: Delivery) -> Result<(), BusError> {
        self.inner.forward(to, delivery).await
    }

    /// Publishes a canonical event on `<prefix>.event` with the event's kind as routing key.
    pub async fn publish(&self, event: Event) -> Result<(), BusError> {
        self.inner.publish(event).await
    }

    /// Every event published on this zone's prefix from now on, this node's own included.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.subscribe()
    }

    /// Fails at once, with `NodeUnavailable`, every pending call addressed to `node`, and every
    /// later call to it until it is seen again. Membership calls this when a node leaves or is
    /// evicted.
    pub fn fail_calls_to(&self, node: Uuid) {
        self.inner.fail_calls_to(node)
    }

    /// Whether the transport is connected now (always true in-process).
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    pub async fn close(&self) {
        self.inner.close().await
    }
}
