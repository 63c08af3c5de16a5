//! The consume loops of one connection: replies on direct reply-to, requests of a service queue
//! or the portal, and events.
//!
//! Every loop ends when its consumer stream ends or fails, and then marks the connection dead, so
//! the supervisor reconnects and starts them again.

use std::sync::{Arc, PoisonError};

use api::{ErrorBody, ErrorCode};
use futures::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use tokio::sync::Semaphore;
use tracing::{debug, warn};
use uuid::Uuid;

use super::codec::{self, decode_request};
use super::link::{HandlerSlot, Link};
use super::reply::AmqpReplyTo;
use super::Shared;
use crate::bus::envelope::{parse_error_body, BUS_VERSION};
use crate::bus::pending::lock;
use crate::bus::{dispatch, BusError, Delivery, Event, ReplySink};

/// Hands each reply on the direct reply-to pseudo-queue to its waiting call.
pub(super) async fn reply_loop(shared: Arc<Shared>, link: Arc<Link>, mut replies: lapin::Consumer) {
    while let Some(item) = replies.next().await {
        let delivery = match item {
            Ok(delivery) => delivery,
            Err(err) => {
                debug!(error = %err, "reply consumer failed");
                break;
            }
        };
        let props = &delivery.properties;
        let Some(id) = props.correlation_id().as_ref().and_then(|c| u64::from_str_radix(c.as_str(), 16).ok()) else {
            debug!("reply without a known correlation id dropped");
            continue;
        };
        let Some(call) = lock(&shared.pending).remove(&id) else {
            debug!(correlation_id = %format!("{id:x}"), "late reply dropped (the call already ended)");
            continue;
        };
        let version = codec::version(props);
        let result = if version != BUS_VERSION {
            Err(BusError::Remote {
                code: ErrorCode::Internal,
                message: format!("reply with unsupported x-bus-version {version}"),
            })
        } else if codec::is_error_reply(props) {
            let (code, message) = parse_error_body(&delivery.data);
            Err(BusError::Remote { code, message })
        } else {
            Ok(delivery.data)
        };
        let _ = call.tx.send(result);
    }
    if !shared.shutdown.is_cancelled() && link.alive() {
        warn!("reply consumer stopped; reconnecting");
    }
    link.dead.cancel();
}

/// Receives the requests of one queue; each runs in its own task. With `limit` (a queue consumed
/// without acknowledgements) at most that many run at once; without it, a message is
/// acknowledged when its handler returns and the consumer prefetch bounds how many run at once
/// (so the broker hands the portal's next message to a less busy node).
pub(super) async fn request_loop(
    shared: Arc<Shared>,
    link: Arc<Link>,
    queue: String,
    mut consumer: lapin::Consumer,
    slot: HandlerSlot,
    limit: Option<Arc<Semaphore>>,
) {
    while let Some(item) = consumer.next().await {
        let raw = match item {
            Ok(raw) => raw,
            Err(err) => {
                debug!(%queue, error = %err, "consumer failed");
                break;
            }
        };
        let permit = match &limit {
            // Never closed while this loop holds it.
            Some(limit) => match limit.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => break,
            },
            None => None,
        };
        let acker = (permit.is_none()).then(|| raw.acker.clone());
        match decode(&shared, &link, raw) {
            Ok(delivery) => {
                let handler = slot.read().unwrap_or_else(PoisonError::into_inner).clone();
                tokio::spawn(async move {
                    dispatch(handler, delivery).await;
                    drop(permit);
                    if let Some(acker) = acker {
                        if let Err(err) = acker.ack(BasicAckOptions::default()).await {
                            debug!(error = %err, "ack failed (connection lost?)");
                        }
                    }
                });
            }
            Err((reason, sink)) => {
                warn!(%queue, %reason, "malformed message rejected");
                tokio::spawn(async move {
                    sink.send(Err(ErrorBody::new(ErrorCode::InvalidBody, reason))).await;
                    drop(permit);
                    if let Some(acker) = acker {
                        let _ = acker.reject(BasicRejectOptions { requeue: false }).await;
                    }
                });
            }
        }
    }
    if !shared.shutdown.is_cancelled() && link.alive() {
        warn!(%queue, "consumer stopped; reconnecting");
    }
    link.dead.cancel();
}

/// Feeds events from this node's event queue to the subscribers.
pub(super) async fn event_loop(shared: Arc<Shared>, link: Arc<Link>, mut consumer: lapin::Consumer) {
    while let Some(item) = consumer.next().await {
        let raw = match item {
            Ok(raw) => raw,
            Err(err) => {
                debug!(error = %err, "event consumer failed");
                break;
            }
        };
        let version = codec::version(&raw.properties);
        if version != BUS_VERSION {
            warn!(version, kind = %raw.routing_key, "event with an unsupported bus version dropped");
            continue;
        }
        let source = codec::event_source(&raw.properties).unwrap_or_else(|| {
            debug!(kind = %raw.routing_key, "event without a valid x-source");
            Uuid::nil()
        });
        let event = Event { kind: raw.routing_key.as_str().to_owned(), source, body: raw.data };
        // No subscriber is fine: nobody listens yet.
        let _ = shared.events.send(event);
    }
    if !shared.shutdown.is_cancelled() && link.alive() {
        warn!("event consumer stopped; reconnecting");
    }
    link.dead.cancel();
}

/// Turns a broker delivery into a [`Delivery`], or says why it is malformed and where to say so.
fn decode(shared: &Arc<Shared>, link: &Arc<Link>, raw: AmqpDelivery) -> Result<Delivery, (String, ReplySink)> {
    let props = &raw.properties;
    let message_id = codec::prop(props.message_id()).unwrap_or_default();
    let sink = match codec::prop(props.reply_to()).filter(|r| !r.is_empty()) {
        Some(reply_to) => ReplySink::remote(Box::new(AmqpReplyTo {
            shared: shared.clone(),
            link: link.clone(),
            reply_to,
            correlation_id: codec::prop(props.correlation_id()),
            message_id: message_id.clone(),
        })),
        None => ReplySink::none(),
    };
    match decode_request(props, &message_id, raw.data) {
        Ok(msg) => Ok(Delivery { msg, reply: sink }),
        Err(reason) => Err((reason, sink)),
    }
}
