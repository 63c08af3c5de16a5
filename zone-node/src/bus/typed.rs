//! Typed messages and events: [`api::bus::Rpc`] and [`api::bus::BusEvent`] types as the bus's
//! [`Message`] and [`Event`], so no caller writes a kind's text or encodes a body by hand.

use api::bus::{BusEvent, Rpc};
use uuid::Uuid;

use super::{BusError, Event, Message};

impl Message {
    /// `body` as a message of kind `R::KIND`.
    pub fn rpc<R: Rpc>(body: &R) -> Message {
        // Serializing these plain data types cannot fail (no maps with non-string keys).
        Message::new(R::KIND, serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()))
    }
}

impl Event {
    /// `body` as event `E::KIND` from node `source`.
    pub fn of<E: BusEvent>(source: Uuid, body: &E) -> Event {
        Event::new(E::KIND, source, serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()))
    }
}

/// Decodes a successful reply to an `R`. A reply that does not decode is the other node's bug
/// (or a newer version's), reported as an internal error.
pub fn decode_reply<R: Rpc>(bytes: &[u8]) -> Result<R::Reply, BusError> {
    serde_json::from_slice(bytes).map_err(|e| BusError::BadReply(format!("{}: {e}", R::KIND)))
}
