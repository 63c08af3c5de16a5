//! What travels on the bus: messages, replies and events, and the AMQP properties and headers that
//! carry them (docs/wire-format.md is the reference for other languages).

use uuid::Uuid;

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
        Message { id: Uuid::new_v4(), kind: kind.into(), resource_id: None, deadline_ms: None, trace: None, hops: 0, body }
    }

    pub fn with_resource(mut self, resource_id: impl Into<String>) -> Message {
        self.resource_id = Some(resource_id.into());
        self
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

/// A message received from a queue, with where its reply goes.
pub struct Delivery {
    pub msg: Message,
    pub reply: ReplySink,
}

impl Delivery {
    /// Sends the reply to the caller, if the caller waits for one; a no-op for a `send`.
    pub async fn reply(self, result: Result<Vec<u8>, api::ErrorBody>) {
        let _ = result;
        todo!("implemented by the bus transports")
    }
}

/// Where the reply of a delivery goes. Opaque outside the bus.
pub struct ReplySink {
    _private: (),
}
