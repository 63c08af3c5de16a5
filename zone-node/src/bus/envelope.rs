//! What travels on the bus: messages, replies and events, and the header names that carry them
//! (docs/wire-format.md is the reference for other languages).
//!
//! A [`Delivery`] is a received [`Message`] plus its [`ReplySink`], the one-shot handle that knows
//! where the answer goes: an address on the broker (a [`RemoteReply`], such as an AMQP `reply_to`
//! with the caller's `correlation_id`), an in-process channel back to the caller, or nowhere (a
//! `send`). The sink is consumed by [`Delivery::reply`], or moved on by
//! [`crate::bus::Bus::forward`], so a delivery is answered at most once and the answer of a
//! forwarded message still reaches the original caller.
//!
//! This module sits below the transports: they use it, it names none of them.

use std::any::Any;
use std::fmt;

use api::{ErrorBody, ErrorCode};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The envelope format version this node writes in header [`headers::VERSION`] and understands.
/// It changes only on incompatible changes; new optional headers do not bump it.
pub const BUS_VERSION: i64 = 1;

/// AMQP `type` of a reply.
pub const REPLY_KIND: &str = "reply";

/// Header names of the envelope (docs/wire-format.md).
pub mod headers {
    /// The resource a message is about (string).
    pub const RESOURCE_ID: &str = "x-resource-id";
    /// Unix milliseconds after which nobody waits for the answer (integer).
    pub const DEADLINE: &str = "x-deadline";
    /// W3C trace context (string).
    pub const TRACEPARENT: &str = "traceparent";
    /// How many times the message was forwarded (integer).
    pub const HOPS: &str = "x-hops";
    /// The node that published an event (UUID string).
    pub const SOURCE: &str = "x-source";
    /// `ok` or `error`, on replies.
    pub const STATUS: &str = "x-status";
    /// Envelope format version (integer, see [`super::BUS_VERSION`]).
    pub const VERSION: &str = "x-bus-version";
}

/// The current time in Unix milliseconds (the unit of `x-deadline`): this node's clock, the one
/// place it is read ([`crate::time::local_now_ms`]).
pub use crate::time::local_now_ms as now_ms;

/// A request to a service.
#[derive(Debug, Clone)]
pub struct Message {
    /// AMQP `message_id`: unique per message, kept across forwards.
    pub id: Uuid,
    /// AMQP `type`: what the message asks for, such as `probe.run` or `zone.get`.
    pub kind: String,
    /// Header `x-resource-id`: the resource the message is about, if any (routes by the ring).
    pub resource_id: Option<String>,
    /// Header `x-deadline`: Unix milliseconds after which nobody waits for the answer.
    pub deadline_ms: Option<i64>,
    /// Header `traceparent` (W3C trace context).
    pub trace: Option<String>,
    /// Header `x-hops`: how many times a node has forwarded this message.
    pub hops: u32,
    /// JSON body.
    pub body: Vec<u8>,
}

impl Message {
    pub fn new(kind: impl Into<String>, body: Vec<u8>) -> Message {
        Message {
            id: Uuid::new_v4(),
            kind: kind.into(),
            resource_id: None,
            deadline_ms: None,
            trace: None,
            hops: 0,
            body,
        }
    }

    pub fn with_resource(mut self, resource_id: impl Into<String>) -> Message {
        self.resource_id = Some(resource_id.into());
        self
    }

    /// Sets the W3C `traceparent` carried to the handler.
    pub fn with_trace(mut self, traceparent: impl Into<String>) -> Message {
        self.trace = Some(traceparent.into());
        self
    }

    /// Sets an absolute deadline (Unix ms). [`crate::bus::Bus::call`] also sets one from its
    /// timeout, keeping the earlier of the two.
    pub fn with_deadline_ms(mut self, deadline_ms: i64) -> Message {
        self.deadline_ms = Some(deadline_ms);
        self
    }

    /// Whether the deadline has passed at `now_ms` (never, without a deadline).
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.deadline_ms.is_some_and(|d| d <= now_ms)
    }
}

/// A canonical event, published on the topic exchange `<prefix>.event`.
#[derive(Debug, Clone)]
pub struct Event {
    /// The routing key, such as `node.joined`.
    pub kind: String,
    /// The node that published it.
    pub source: Uuid,
    /// JSON body.
    pub body: Vec<u8>,
}

impl Event {
    pub fn new(kind: impl Into<String>, source: Uuid, body: Vec<u8>) -> Event {
        Event { kind: kind.into(), source, body }
    }
}

/// A message received from a queue, with where its reply goes.
pub struct Delivery {
    pub msg: Message,
    pub reply: ReplySink,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery").field("msg", &self.msg).field("reply", &self.reply).finish()
    }
}

impl Delivery {
    /// Sends the reply to the caller, if the caller waits for one; a no-op for a `send`.
    ///
    /// Never fails: a reply that cannot be delivered (the caller is gone, the broker connection
    /// dropped) is logged and dropped, as the caller then ends in its own timeout or
    /// `Unavailable` error anyway.
    pub async fn reply(self, result: Result<Vec<u8>, ErrorBody>) {
        self.reply.send(result).await
    }

    /// Whether a caller waits for the reply (false for a `send`).
    pub fn expects_reply(&self) -> bool {
        self.reply.expects_reply()
    }

    /// A delivery with an in-process reply channel, not attached to any bus: lets a handler be
    /// tested alone (`handler.handle(delivery)`, then read the receiver).
    pub fn local(msg: Message) -> (Delivery, oneshot::Receiver<Result<Vec<u8>, ErrorBody>>) {
        let (tx, rx) = oneshot::channel();
        (Delivery { msg, reply: ReplySink::local(tx) }, rx)
    }
}

/// Where the reply of a delivery goes. Opaque outside the bus.
pub struct ReplySink {
    pub(crate) inner: SinkInner,
}

/// The three places a reply can go.
pub(crate) enum SinkInner {
    /// A `send`: nobody waits.
    None,
    /// An in-process caller waits on this channel.
    Local(oneshot::Sender<Result<Vec<u8>, ErrorBody>>),
    /// A caller on the broker waits at an address the receiving transport knows.
    Remote(Box<dyn RemoteReply>),
}

/// A reply address on a broker, implemented by the transport that received the message, so that
/// this module needs none of them.
#[async_trait::async_trait]
pub(crate) trait RemoteReply: fmt::Debug + Send + 'static {
    /// Publishes the reply; never fails (see [`Delivery::reply`]).
    async fn send(self: Box<Self>, result: Result<Vec<u8>, ErrorBody>);
    /// The concrete address, for the transport that made it (`forward` keeps it on the wire).
    fn as_any(&self) -> &dyn Any;
}

impl fmt::Debug for ReplySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            SinkInner::None => f.write_str("ReplySink::None"),
            SinkInner::Local(_) => f.write_str("ReplySink::Local"),
            SinkInner::Remote(to) => write!(f, "ReplySink::Remote({to:?})"),
        }
    }
}

impl ReplySink {
    /// A sink that drops the reply (the delivery of a `send`).
    pub fn none() -> ReplySink {
        ReplySink { inner: SinkInner::None }
    }

    pub(crate) fn local(tx: oneshot::Sender<Result<Vec<u8>, ErrorBody>>) -> ReplySink {
        ReplySink { inner: SinkInner::Local(tx) }
    }

    pub(crate) fn remote(to: Box<dyn RemoteReply>) -> ReplySink {
        ReplySink { inner: SinkInner::Remote(to) }
    }

    /// Whether a caller waits for the reply.
    pub fn expects_reply(&self) -> bool {
        match &self.inner {
            SinkInner::None => false,
            SinkInner::Local(tx) => !tx.is_closed(),
            SinkInner::Remote(_) => true,
        }
    }

    /// Delivers the reply (see [`Delivery::reply`]).
    pub async fn send(self, result: Result<Vec<u8>, ErrorBody>) {
        match self.inner {
            SinkInner::None => {}
            SinkInner::Local(tx) => {
                if tx.send(result).is_err() {
                    tracing::debug!("reply dropped: the caller stopped waiting");
                }
            }
            SinkInner::Remote(to) => to.send(result).await,
        }
    }
}

/// The body of an error reply: the API's error body, serialised.
pub(crate) fn error_body_json(err: &ErrorBody) -> Vec<u8> {
    // Serialising this plain struct cannot fail; fall back to a fixed body rather than panic.
    serde_json::to_vec(err)
        .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"unserialisable error"}}"#.to_vec())
}

/// Reads an error reply body back into a [`crate::bus::BusError::Remote`]'s parts. A body that is
/// not an `ErrorBody`, or names a code this build does not know, becomes `internal` with the raw
/// text kept in the message, so nothing from the wire is lost or panics.
pub(crate) fn parse_error_body(body: &[u8]) -> (ErrorCode, String) {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return (parsed.error.code, parsed.error.message);
    }
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let code = value.as_ref().and_then(|v| v.pointer("/error/code")).and_then(|c| c.as_str());
    let message = value.as_ref().and_then(|v| v.pointer("/error/message")).and_then(|m| m.as_str());
    match (code, message) {
        (Some(code), message) => (ErrorCode::Internal, format!("{code}: {}", message.unwrap_or(""))),
        _ => {
            let raw = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            (ErrorCode::Internal, format!("malformed error reply: {raw}"))
        }
    }
}

/// Whether `body` is acceptable as a message body: JSON, or empty (read as `null`).
pub(crate) fn is_json(body: &[u8]) -> bool {
    body.is_empty() || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_round_trip() {
        let body = error_body_json(&ErrorBody::new(ErrorCode::NotFound, "no such zone"));
        assert_eq!(parse_error_body(&body), (ErrorCode::NotFound, "no such zone".to_owned()));
    }

    #[test]
    fn unknown_error_code_is_kept_in_message() {
        let (code, message) = parse_error_body(br#"{"error":{"code":"disk_on_fire","message":"hot"}}"#);
        assert_eq!(code, ErrorCode::Internal);
        assert_eq!(message, "disk_on_fire: hot");
        let (code, _) = parse_error_body(b"\xff not json");
        assert_eq!(code, ErrorCode::Internal);
    }

    #[test]
    fn json_check() {
        assert!(is_json(b""));
        assert!(is_json(br#"{"a":1}"#));
        assert!(!is_json(b"{"));
    }
}
