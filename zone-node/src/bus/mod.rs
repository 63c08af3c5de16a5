//! The CloudBus: how the services of a zone's nodes talk to each other.
//!
//! Two transports sit behind one [`Bus`] type: RabbitMQ through lapin (`amqp://...`, needed for a
//! zone of several nodes) and in-process channels (`memory://`, the embedded default). The wire
//! names are fixed (other programs depend on them) and documented in docs/wire-format.md:
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
//! - `envelope`: [`Message`], [`Event`], the headers, and how a reply carries success or error;
//!   below the transports (they use it, it names none of them)
//! - `memory`: the in-process transport
//! - `amqp/`: the RabbitMQ transport, with reconnection (link, confirms, consume, codec)
//! - `pending`: what both transports share about calls waiting for a reply
//!
//! # Concurrency
//! Every delivery runs in its own tokio task, so a slow handler never blocks the consumer loop,
//! with at most [`MAX_IN_FLIGHT`] handlers running per queue and node. For the RabbitMQ portal
//! that bound is the consumer prefetch (a message is acknowledged when its handler returns, so
//! the broker gives the portal's next message to a less busy node); for a node's own service
//! queues (consumed without acknowledgements) and in-process it is a semaphore per queue.

pub(crate) mod amqp;
mod envelope;
mod memory;
mod pending;
mod typed;

pub use envelope::{Delivery, Event, Message, ReplySink};
pub use typed::decode_reply;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use api::{ErrorBody, ErrorCode};
use futures::FutureExt;
use uuid::Uuid;

/// How many handlers of one queue may run at once on one node (AMQP prefetch per consumer).
pub const MAX_IN_FLIGHT: u16 = 256;

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

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Node { service, node } => write!(f, "{service}@{node}"),
            Destination::Portal => f.write_str(PORTAL),
        }
    }
}

impl Destination {
    /// The node this destination names, if it names one.
    pub fn node(&self) -> Option<Uuid> {
        match self {
            Destination::Node { node, .. } => Some(*node),
            Destination::Portal => None,
        }
    }

    /// The queue name on the wire (docs/wire-format.md).
    pub fn queue_name(&self, prefix: &str) -> String {
        match self {
            Destination::Node { service, node } => service_queue(prefix, service, *node),
            Destination::Portal => portal_queue(prefix),
        }
    }
}

/// `<prefix>.message.<service>.<node-uuid>`
pub fn service_queue(prefix: &str, service: &str, node: Uuid) -> String {
    format!("{prefix}.message.{service}.{node}")
}

/// `<prefix>.message.api.portal`
pub fn portal_queue(prefix: &str) -> String {
    format!("{prefix}.message.{PORTAL}")
}

/// `<prefix>.event`
pub fn event_exchange(prefix: &str) -> String {
    format!("{prefix}.event")
}

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
    /// A call pending on the node was failed: it left or was evicted, so the message may or may
    /// not have been handled.
    #[error("node {0} is not available (it left the zone or was evicted)")]
    NodeUnavailable(Uuid),
    /// The node was known to be gone before the message was sent, so nothing was sent: safe to
    /// send again to the owner of a newer view.
    #[error("node {0} is not available (it left the zone or was evicted); nothing was sent")]
    NodeGone(Uuid),
    #[error("no queue takes messages for {0}")]
    Unroutable(String),
    #[error("the message bus is unavailable: {0}")]
    Unavailable(String),
    /// The handler at the other end answered with an error.
    #[error("{code}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("invalid bus url: {0}")]
    InvalidUrl(String),
    /// A reply that does not decode as its request's reply type (a bug, or a newer peer).
    #[error("unreadable reply: {0}")]
    BadReply(String),
}

impl api::CodedError for BusError {
    fn code(&self) -> ErrorCode {
        match self {
            BusError::Timeout(_) => ErrorCode::Timeout,
            BusError::NodeUnavailable(_) | BusError::NodeGone(_) => ErrorCode::NodeUnavailable,
            BusError::Unroutable(_) => ErrorCode::Unroutable,
            BusError::Unavailable(_) => ErrorCode::BusUnavailable,
            BusError::Remote { code, .. } => *code,
            BusError::InvalidUrl(_) | BusError::BadReply(_) => ErrorCode::Internal,
        }
    }

    /// A remote error keeps the message its handler chose; the outcomes a caller can act on
    /// (timeout, node gone, unroutable) say so; a broker failure stays generic.
    fn public_message(&self) -> String {
        match self {
            BusError::Remote { message, .. } => message.clone(),
            BusError::Timeout(_) | BusError::NodeUnavailable(_) | BusError::NodeGone(_) | BusError::Unroutable(_) => {
                self.to_string()
            }
            BusError::Unavailable(_) => "the zone's message bus is unavailable; try again".into(),
            BusError::InvalidUrl(_) | BusError::BadReply(_) => "internal error; the node's log has the details".into(),
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
    /// Fails every later call to `node` at once, leaving the pending ones to their answers.
    fn refuse_calls_to(&self, node: Uuid);
    /// Undoes [`Transport::fail_calls_to`] for `node` (it was seen again).
    fn node_available(&self, node: Uuid) {
        let _ = node;
    }
    fn is_connected(&self) -> bool;
    /// True when no other node can reach this one: an in-process broker of its own (`memory://`).
    fn is_private(&self) -> bool {
        false
    }
    async fn close(&self);
}

impl Bus {
    /// Connects to `url` (`memory://`, `memory://<name>`, or `amqp://...`) as node `node`, with
    /// every queue and exchange name starting with `prefix`.
    ///
    /// `memory://` is a broker private to this `Bus`; `memory://<name>` a broker shared by every
    /// `Bus` of this process connected with the same name (several nodes in one test). An
    /// `amqp://` connection that fails at once (broker down, bad credentials) is an error here;
    /// once connected, the bus reconnects by itself for as long as it lives.
    pub async fn connect(url: &str, prefix: &str, node: Uuid) -> Result<Bus, BusError> {
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            return Err(BusError::InvalidUrl(format!("invalid bus prefix {prefix:?}")));
        }
        if let Some(name) = url.strip_prefix("memory://") {
            let transport = memory::MemoryTransport::new(name, prefix, node);
            return Ok(Bus::from_transport(Arc::new(transport)));
        }
        if url.starts_with("amqp://") || url.starts_with("amqps://") {
            let transport = amqp::AmqpTransport::connect(url, prefix, node).await?;
            return Ok(Bus::from_transport(Arc::new(transport)));
        }
        Err(BusError::InvalidUrl(crate::redact::redact_url(url)))
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
    #[tracing::instrument(name = "bus.send", skip_all, fields(to = %to, kind = %msg.kind, id = %msg.id))]
    pub async fn send(&self, to: Destination, msg: Message) -> Result<(), BusError> {
        self.inner.send(to, msg).await
    }

    /// Sends and waits for the reply body, at most `timeout`.
    #[tracing::instrument(name = "bus.call", skip_all, fields(to = %to, kind = %msg.kind, id = %msg.id))]
    pub async fn call(&self, to: Destination, msg: Message, timeout: Duration) -> Result<Vec<u8>, BusError> {
        self.inner.call(to, msg, timeout).await
    }

    /// Hands a delivery to another destination; its reply still goes to the original caller.
    ///
    /// When the delivery cannot be handed on (unroutable, node unavailable, bus down), the bus
    /// answers the original caller with that error itself, then returns it here too.
    #[tracing::instrument(name = "bus.forward", skip_all, fields(to = %to, kind = %delivery.msg.kind, id = %delivery.msg.id, hops = delivery.msg.hops))]
    pub async fn forward(&self, to: Destination, delivery: Delivery) -> Result<(), BusError> {
        self.inner.forward(to, delivery).await
    }

    /// Publishes a canonical event on `<prefix>.event` with the event's kind as routing key.
    #[tracing::instrument(name = "bus.publish", skip_all, fields(kind = %event.kind))]
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

    /// Fails every later call to `node` at once with `NodeUnavailable`, as [`Bus::fail_calls_to`]
    /// does, but lets the calls pending on it wait for their answers: membership calls this for a
    /// node that left on its own, which forwards what it still receives to the new owners.
    pub fn refuse_calls_to(&self, node: Uuid) {
        self.inner.refuse_calls_to(node)
    }

    /// Lets calls to `node` through again after [`Bus::fail_calls_to`] (membership calls this
    /// when the node is seen again).
    pub fn node_available(&self, node: Uuid) {
        self.inner.node_available(node)
    }

    /// Whether the transport is connected now (always true in-process).
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Whether this bus reaches no other node (`memory://`, the embedded default): the node is
    /// alone in its zone by construction.
    pub fn is_private(&self) -> bool {
        self.inner.is_private()
    }

    pub async fn close(&self) {
        self.inner.close().await
    }
}

/// Runs one delivery through its handler, in the caller's task: answers `timeout` at once when the
/// deadline passed before the message got here (nobody waits for it any more; see
/// docs/wire-format.md), and contains a handler's panic to the one delivery.
pub(crate) async fn dispatch(handler: Arc<dyn Handler>, delivery: Delivery) {
    if delivery.msg.expired_at(envelope::now_ms()) {
        tracing::debug!(kind = %delivery.msg.kind, id = %delivery.msg.id, "message arrived after its deadline");
        let err = ErrorBody::new(ErrorCode::Timeout, "the deadline passed before the message was handled");
        delivery.reply(Err(err)).await;
        return;
    }
    let kind = delivery.msg.kind.clone();
    let id = delivery.msg.id;
    if std::panic::AssertUnwindSafe(handler.handle(delivery)).catch_unwind().await.is_err() {
        tracing::error!(%kind, %id, "bus handler panicked; the caller gets no reply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        let node = Uuid::nil();
        let to = Destination::Node { service: "probe".into(), node };
        assert_eq!(to.queue_name("z1"), format!("z1.message.probe.{node}"));
        assert_eq!(Destination::Portal.queue_name("z1"), "z1.message.api.portal");
        assert_eq!(event_exchange("z1"), "z1.event");
    }
}
