//! Where the reply of a message received from RabbitMQ goes: the caller's `reply_to` address and
//! `correlation_id`, published on the reply channel of the connection the message came on.
//!
//! That connection, not "the bus's current one": while a node reconnects, its consumers are
//! started queue by queue before the new connection becomes current, and a request taken in that
//! window must still get its answer (it was dropped, and its caller waited out its whole timeout).
//! Only when the delivering connection has died since is the current one used; a direct reply-to
//! address reaches its caller from any connection to the broker (or to its cluster).
//!
//! It is the broker's [`RemoteReply`], so the envelope carries it without naming this transport;
//! `forward` reads its address back to hand a message on with the original caller's.

use std::any::Any;
use std::sync::Arc;

use api::ErrorBody;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use tracing::debug;

use super::codec::reply_properties;
use super::link::Link;
use super::Shared;
use crate::bus::envelope::{error_body_json, RemoteReply};

pub(super) struct AmqpReplyTo {
    pub(super) shared: Arc<Shared>,
    /// The connection the request came on.
    pub(super) link: Arc<Link>,
    pub(super) reply_to: String,
    pub(super) correlation_id: Option<String>,
    /// The request's `message_id` as the caller wrote it (forward keeps it on the wire).
    pub(super) message_id: String,
}

impl std::fmt::Debug for AmqpReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpReplyTo")
            .field("reply_to", &self.reply_to)
            .field("correlation_id", &self.correlation_id)
            .finish()
    }
}

impl AmqpReplyTo {
    /// The connection to answer (or forward) on: the one the request came on while it lives,
    /// else the bus's current one.
    pub(super) fn link(&self) -> Result<Arc<Link>, crate::bus::BusError> {
        if self.link.alive() {
            Ok(self.link.clone())
        } else {
            self.shared.current()
        }
    }
}

#[async_trait::async_trait]
impl RemoteReply for AmqpReplyTo {
    async fn send(self: Box<Self>, result: Result<Vec<u8>, ErrorBody>) {
        let link = match self.link() {
            Ok(link) => link,
            Err(err) => {
                debug!(reply_to = %self.reply_to, error = %err, "reply dropped: bus disconnected");
                return;
            }
        };
        let (ok, body) = match result {
            Ok(body) => (true, body),
            Err(err) => (false, error_body_json(&err)),
        };
        let props = reply_properties(ok, self.correlation_id.as_deref());
        // Not mandatory and not confirmed: a reply to a caller that is gone is useless, and the
        // caller's own deadline covers a reply lost with a connection.
        let options = BasicPublishOptions::default();
        let to = ShortString::from(self.reply_to.as_str());
        if let Err(err) = link.reply.basic_publish(ShortString::from(""), to, options, &body, props).await {
            debug!(reply_to = %self.reply_to, error = %err, "reply not sent");
            if !link.reply.status().connected() {
                // The reply channel is gone (lapin 4 has no channel error callback): reconnect.
                link.dead.cancel();
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
