//! The RabbitMQ transport (`amqp://`), through lapin, with reconnection.
//!
//! # Connection layout
//! One connection per bus, with three long-lived channels:
//! - `publish`: in confirm mode; every request, forward and event goes out here with publisher
//!   confirms, and requests and forwards also with `mandatory`, so the broker tells us at once
//!   (basic.return then basic.ack) when no queue takes a message. The same channel consumes
//!   RabbitMQ's direct reply-to pseudo-queue `amq.rabbitmq.reply-to` (no queue to declare, no
//!   per-reply disk or queue work on the broker: the fastest reply path RabbitMQ has); a reply
//!   is matched to its call by `correlation_id` in the `pending` map.
//! - `reply`: no confirms, used by handlers to answer; a reply whose caller is gone is simply
//!   dropped by the broker (it is not published with `mandatory`).
//! - `consume`: the service, portal and event consumers. The portal is consumed with
//!   acknowledgements (prefetch [`MAX_IN_FLIGHT`], a request is acknowledged when its handler
//!   returns); a node's own service queues and event queue without (they die with the
//!   connection, so an acknowledgement could never give a message to anyone else).
//!
//! # Ordering of confirms
//! lapin numbers a publish (`delivery_tag`) before it queues its frames, so two tasks
//! publishing at once on one channel could queue their frames in the other order and have their
//! confirmations swapped; `publish` therefore runs that synchronous first step under a small
//! mutex, which also gives every publish a sequence number. lapin hands a returned message to
//! the next confirmation that completes, not necessarily the returned message's own (the broker
//! batches and may reorder acks), and that carrier may belong to a publish whose task has not yet
//! picked up its confirmation. The confirm tracker (one task per connection) therefore settles a
//! confirmed publish only when every carrier that could hold its returned message has been seen
//! (see `track_confirms`), and matches returned messages to their publish by (`message_id`,
//! `correlation_id`), so `Unroutable` always reaches the right caller.
//!
//! # Logging
//! lapin itself logs every returned (unroutable) message at WARN, body included, and every
//! connection loss at ERROR. Unroutable calls are a normal event here (a node left), and bodies
//! may hold secrets, so the node's log filter should include `lapin=error` (or at least
//! `lapin::returned_messages=error`); this module logs those events itself, without bodies.
//!
//! # Reconnection
//! A supervisor task owns the connection. When lapin reports a connection or channel error, or a
//! consumer stream ends, it marks the bus disconnected (new calls fail at once with
//! `Unavailable`), fails every pending call with `Unavailable`, and reconnects with backoff
//! (100 ms doubling to 2 s, forever), then re-declares the event exchange, every queue, binding
//! and consumer with the same handlers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use api::{CodedError, ErrorBody, ErrorCode};
use futures::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::envelope::{
    error_body_json, headers, is_json, now_ms, parse_error_body, SinkInner, BUS_VERSION, REPLY_KIND,
};
use super::pending::{lock, PendingGuard};
use super::{
    dispatch, event_exchange, portal_queue, redact_url, service_queue, BusError, Delivery, Destination, Event, Handler,
    Message, ReplySink, Transport, MAX_IN_FLIGHT,
};

/// RabbitMQ's direct reply-to pseudo-queue.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Heartbeat asked for when the URL does not say: a silently dead broker is noticed within
/// about two intervals.
const DEFAULT_HEARTBEAT_S: u16 = 10;
/// How long one connection attempt (TCP, handshake, declarations) may take.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Capacity of the local event channel; a subscriber that lags further loses the oldest.
const EVENT_CAPACITY: usize = 4096;

fn unavailable(err: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(err.to_string())
}

/// What the broker said about one confirmed publish.
#[derive(Debug)]
enum Outcome {
    /// Taken by at least one queue (or, for an event, by the exchange).
    Routed,
    /// Returned: no queue takes it.
    Returned,
    /// Refused by the broker (basic.nack) or the channel failed first.
    Failed(String),
}

/// Identifies a publish among returned messages: (`message_id`, `correlation_id`).
type ReturnKey = (String, String);

fn return_key(props: &BasicProperties) -> ReturnKey {
    let id = props.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
    let corr = props.correlation_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
    (id, corr)
}

/// What a publish hands to the confirm tracker: its confirmation, or (when it failed or was
/// abandoned before getting one) just its sequence number, so the tracker stops waiting for it.
enum Track {
    Confirm { seq: u64, key: ReturnKey, confirm: PublisherConfirm, done: oneshot::Sender<Outcome> },
    Skip { seq: u64 },
}

/// Tells the tracker about a sequence number however its publish ends (error, or the caller's
/// future dropped mid-publish), unless the publish handed over its confirmation.
struct SeqGuard<'a> {
    tracker: &'a mpsc::UnboundedSender<Track>,
    seq: Option<u64>,
}

impl Drop for SeqGuard<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq.take() {
            let _ = self.tracker.send(Track::Skip { seq });
        }
    }
}

/// One connection and its channels; replaced as a whole on reconnection.
struct Link {
    conn: Connection,
    publish: Channel,
    reply: Channel,
    consume: Channel,
    /// Serialises the numbering-and-queueing step of publishes (see the module docs); holds the
    /// sequence number of the next publish.
    order: Arc<Mutex<u64>>,
    confirms: mpsc::UnboundedSender<Track>,
    /// Cancelled when anything says this connection is broken.
    dead: CancellationToken,
}

impl Link {
    fn alive(&self) -> bool {
        !self.dead.is_cancelled()
    }

    /// Publishes on the confirm channel; the returned receiver says what the broker did with it.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<oneshot::Receiver<Outcome>, BusError> {
        let key = return_key(&props);
        let options = BasicPublishOptions { mandatory, immediate: false };
        let mut publish = std::pin::pin!(self.publish.basic_publish(exchange, routing_key, options, body, props));
        let mut guard = SeqGuard { tracker: &self.confirms, seq: None };
        // The first poll numbers the publish and queues its frames, with no await in between:
        // doing it under `order` keeps delivery tags in the order the frames reach the broker.
        let confirm = std::future::poll_fn(|cx| {
            if guard.seq.is_none() {
                let mut next = lock(&self.order);
                guard.seq = Some(*next);
                *next += 1;
                publish.as_mut().poll(cx)
            } else {
                publish.as_mut().poll(cx)
            }
        })
        .await
        .map_err(|e| {
            self.dead.cancel();
            unavailable(format!("publish failed: {e}"))
        })?;
        let (done, outcome) = oneshot::channel();
        let Some(seq) = guard.seq.take() else { return Err(unavailable("publish was not numbered")) };
        if self.confirms.send(Track::Confirm { seq, key, confirm, done }).is_err() {
            return Err(unavailable("the connection is closing"));
        }
        Ok(outcome)
    }
}

/// Where a pending call's answer arrives.
type ReplyReceiver = oneshot::Receiver<Result<Vec<u8>, BusError>>;

/// A call waiting for its reply.
struct PendingCall {
    node: Option<Uuid>,
    tx: oneshot::Sender<Result<Vec<u8>, BusError>>,
}

/// How a registered queue is declared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum QueueKind {
    /// `<prefix>.message.<service>.<node>`: exclusive, auto-delete.
    Service,
    /// `<prefix>.message.api.portal`: shared, auto-delete.
    Portal,
}

type HandlerSlot = Arc<RwLock<Arc<dyn Handler>>>;

/// The state shared by the transport, its supervisor, its consumer loops and reply sinks.
pub(crate) struct Shared {
    node: Uuid,
    prefix: String,
    uri: AMQPUri,
    /// The URL without its password, for logs.
    log_url: String,
    link: RwLock<Option<Arc<Link>>>,
    pending: Mutex<HashMap<u64, PendingCall>>,
    next_call: AtomicU64,
    failed: RwLock<HashSet<Uuid>>,
    /// Queue name → (kind, handler); re-declared and re-consumed on every reconnection.
    queues: Mutex<HashMap<String, (QueueKind, HandlerSlot)>>,
    events: broadcast::Sender<Event>,
    shutdown: CancellationToken,
}

impl Shared {
    fn current(&self) -> Result<Arc<Link>, BusError> {
        if self.shutdown.is_cancelled() {
            return Err(BusError::Unavailable("the bus is closed".into()));
        }
        match self.link.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
            Some(link) if link.alive() => Ok(link.clone()),
            _ => Err(BusError::Unavailable(format!("not connected to {}", self.log_url))),
        }
    }

    fn is_failed(&self, node: Uuid) -> bool {
        self.failed.read().unwrap_or_else(PoisonError::into_inner).contains(&node)
    }

    fn fail_all_pending(&self, err: &BusError) {
        let drained: Vec<PendingCall> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for call in drained {
            let _ = call.tx.send(Err(err.clone()));
        }
    }

    fn queue_options(kind: QueueKind) -> QueueDeclareOptions {
        match kind {
            QueueKind::Service => QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            QueueKind::Portal => QueueDeclareOptions { auto_delete: true, ..Default::default() },
        }
    }

    /// Declares `queue` and starts its consumer on `link`.
    async fn start_queue(
        self: &Arc<Self>,
        link: &Arc<Link>,
        queue: &str,
        kind: QueueKind,
        slot: HandlerSlot,
    ) -> Result<(), lapin::Error> {
        // Declared on a channel of its own: a refused declaration (a queue of that name with
        // other arguments) closes only that channel, not the consumers' one.
        let declare = link.conn.create_channel().await?;
        let declared = declare.queue_declare(queue, Self::queue_options(kind), FieldTable::default()).await;
        if declare.status().connected() {
            let _ = declare.close(200, "declared").await;
        }
        declared?;
        let tag = format!("{}.{}", self.node, queue);
        // A service queue lives and dies with this connection, so acknowledgements would buy
        // nothing (no other consumer could get a message back): it is consumed without them,
        // which saves the broker and this node a frame per message, and its concurrency is
        // bounded here. The portal is acknowledged per message (see request_loop).
        let no_ack = kind == QueueKind::Service;
        let options = BasicConsumeOptions { no_ack, ..Default::default() };
        let consumer = link.consume.basic_consume(queue, &tag, options, FieldTable::default()).await?;
        let limit = no_ack.then(|| Arc::new(Semaphore::new(usize::from(MAX_IN_FLIGHT))));
        tokio::spawn(request_loop(self.clone(), link.clone(), queue.to_owned(), consumer, slot, limit));
        Ok(())
    }

    /// Opens a connection and sets up everything this bus consumes.
    async fn establish(self: &Arc<Self>) -> Result<Arc<Link>, lapin::Error> {
        let name = format!("zone-node {} {}", self.prefix, self.node);
        let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
        let conn = Connection::connect_uri(self.uri.clone(), props).await?;
        let dead = CancellationToken::new();
        {
            let dead = dead.clone();
            let log_url = self.log_url.clone();
            conn.on_error(move |err| {
                warn!(url = %log_url, error = %err, "bus connection error");
                dead.cancel();
            });
        }
        let channels = async {
            let publish = conn.create_channel().await?;
            let reply = conn.create_channel().await?;
            let consume = conn.create_channel().await?;
            for channel in [&publish, &reply, &consume] {
                let dead = dead.clone();
                channel.on_error(move |err| {
                    warn!(error = %err, "bus channel error");
                    dead.cancel();
                });
            }
            publish.confirm_select(ConfirmSelectOptions::default()).await?;
            consume.basic_qos(MAX_IN_FLIGHT, BasicQosOptions::default()).await?;
            let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
            let replies = publish.basic_consume(DIRECT_REPLY_TO, "replies", no_ack, FieldTable::default()).await?;
            Ok::<_, lapin::Error>((publish, reply, consume, replies))
        };
        let (publish, reply, consume, replies) = match channels.await {
            Ok(channels) => channels,
            Err(err) => {
                // lapin keeps a connection open until it is closed: do not leak one per attempt.
                let _ = conn.close(200, "setup failed").await;
                return Err(err);
            }
        };
        let (confirms, confirms_rx) = mpsc::unbounded_channel();
        let order = Arc::new(Mutex::new(0));
        let link = Arc::new(Link { conn, publish, reply, consume, order: order.clone(), confirms, dead });
        tokio::spawn(track_confirms(confirms_rx, order, link.dead.clone()));
        tokio::spawn(reply_loop(self.clone(), link.clone(), replies));
        if let Err(err) = self.declare_all(&link).await {
            link.dead.cancel();
            let _ = link.conn.close(200, "setup failed").await;
            return Err(err);
        }
        Ok(link)
    }

    /// Declares the event exchange, this node's event queue and every served queue, and starts
    /// their consumers.
    async fn declare_all(self: &Arc<Self>, link: &Arc<Link>) -> Result<(), lapin::Error> {
        // Events: the topic exchange, and this node's own queue bound to every routing key.
        // Declared on a channel of its own (see start_queue).
        let exchange = event_exchange(&self.prefix);
        let event_queue = format!("{exchange}.{}", self.node);
        let declare = link.conn.create_channel().await?;
        let declared = async {
            declare
                .exchange_declare(
                    &exchange,
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            declare.queue_declare(&event_queue, options, FieldTable::default()).await?;
            declare.queue_bind(&event_queue, &exchange, "#", QueueBindOptions::default(), FieldTable::default()).await
        }
        .await;
        if declare.status().connected() {
            let _ = declare.close(200, "declared").await;
        }
        declared?;
        let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let events = link
            .consume
            .basic_consume(&event_queue, &format!("{}.events", self.node), no_ack, FieldTable::default())
            .await?;
        tokio::spawn(event_loop(self.clone(), link.clone(), events));

        let queues: Vec<(String, QueueKind, HandlerSlot)> =
            lock(&self.queues).iter().map(|(q, (k, s))| (q.clone(), *k, s.clone())).collect();
        for (queue, kind, slot) in queues {
            if let Err(err) = self.start_queue(link, &queue, kind, slot).await {
                if !link.alive() {
                    return Err(err);
                }
                // One refused queue must not keep the whole bus down: the others still work.
                error!(%queue, error = %err, "cannot declare queue; its handler gets no messages");
            }
        }
        Ok(())
    }

    /// Keeps the bus connected until shutdown.
    async fn supervise(self: Arc<Self>, mut link: Arc<Link>) {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {}
                _ = link.dead.cancelled() => {}
            }
            if self.shutdown.is_cancelled() {
                // close() or the last handle dropped: not a disconnection.
                let _ = link.conn.close(200, "bus closed").await;
                return;
            }
            warn!(url = %self.log_url, node = %self.node, "bus disconnected; failing pending calls and reconnecting");
            *self.link.write().unwrap_or_else(PoisonError::into_inner) = None;
            self.fail_all_pending(&BusError::Unavailable("the broker connection was lost".into()));
            // Best effort: the socket may already be gone; this only frees lapin's side.
            let _ = tokio::time::timeout(Duration::from_millis(500), link.conn.close(320, "reconnecting")).await;

            let mut backoff = BACKOFF_MIN;
            let mut attempt: u32 = 0;
            let mut warn_at: u32 = 1;
            link = loop {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.shutdown.cancelled() => return,
                }
                attempt += 1;
                // A broker that accepts TCP but never finishes the handshake (still booting)
                // must not stall reconnection.
                let attempt_result = match tokio::time::timeout(ESTABLISH_TIMEOUT, self.establish()).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {ESTABLISH_TIMEOUT:?}")),
                };
                match attempt_result {
                    Ok(new_link) => break new_link,
                    Err(err) => {
                        let next = (backoff * 2).min(BACKOFF_MAX);
                        let retry_in_ms = next.as_millis() as u64;
                        // Warn on the first failure and then about once a minute, not every 2 s.
                        if attempt >= warn_at {
                            warn_at = attempt + 30;
                            warn!(url = %self.log_url, attempt, error = %err, retry_in_ms, "bus reconnect failed; retrying");
                        } else {
                            debug!(url = %self.log_url, attempt, error = %err, retry_in_ms, "bus reconnect failed; retrying");
                        }
                        backoff = next;
                    }
                }
            };
            *self.link.write().unwrap_or_else(PoisonError::into_inner) = Some(link.clone());
            info!(url = %self.log_url, node = %self.node, attempts = attempt, "bus reconnected");
        }
    }
}

/// Settles every tracked confirmation: Routed, Returned (matched by key, see the module docs)
/// or Failed.
///
/// lapin gives each returned message to the next confirmation that completes after it arrived
/// (FIFO), which may be an earlier or a later publish's, and the broker may ack out of order.
/// Since a returned message always arrives before its own publish's ack, once every publish
/// numbered before an ack was seen has completed, every returned message of those publishes
/// has been handed to some completed confirmation; once every publish numbered before *that*
/// moment has been handed over and polled, its carrier has been seen. An acked publish is
/// settled in those two steps.
async fn track_confirms(mut rx: mpsc::UnboundedReceiver<Track>, order: Arc<Mutex<u64>>, dead: CancellationToken) {
    struct Open {
        seq: u64,
        key: ReturnKey,
        confirm: PublisherConfirm,
        done: oneshot::Sender<Outcome>,
    }
    /// Acked, waiting until every publish numbered below `bound` has completed (`settling`
    /// false), then until every publish numbered below the new `bound` is handed over and has
    /// been polled once more (`settling` true).
    struct Acked {
        key: ReturnKey,
        done: oneshot::Sender<Outcome>,
        bound: u64,
        settling: bool,
    }
    let mut open: Vec<Open> = Vec::new();
    let mut acked: Vec<Acked> = Vec::new();
    let mut returned: HashSet<ReturnKey> = HashSet::new();
    // Every sequence number below `handed` has been handed over; `early` holds those above it.
    let mut handed: u64 = 0;
    let mut early: BTreeSet<u64> = BTreeSet::new();
    let mut rx_open = true;
    std::future::poll_fn(|cx: &mut Context<'_>| {
        while rx_open {
            let seq = match rx.poll_recv(cx) {
                Poll::Ready(Some(Track::Confirm { seq, key, confirm, done })) => {
                    open.push(Open { seq, key, confirm, done });
                    seq
                }
                Poll::Ready(Some(Track::Skip { seq })) => seq,
                Poll::Ready(None) => {
                    rx_open = false;
                    break;
                }
                Poll::Pending => break,
            };
            early.insert(seq);
            while early.remove(&handed) {
                handed += 1;
            }
        }
        let mut i = 0;
        while i < open.len() {
            let Poll::Ready(result) = Pin::new(&mut open[i].confirm).poll(cx) else {
                i += 1;
                continue;
            };
            let Open { key, done, .. } = open.swap_remove(i);
            match result {
                Ok(Confirmation::Ack(carried)) => {
                    if let Some(msg) = carried {
                        returned.insert(return_key(&msg.delivery.properties));
                    }
                    let bound = *lock(&order);
                    acked.push(Acked { key, done, bound, settling: false });
                }
                Ok(Confirmation::NotRequested) => {
                    let _ = done.send(Outcome::Routed);
                }
                Ok(Confirmation::Nack(carried)) => {
                    if let Some(msg) = carried {
                        returned.insert(return_key(&msg.delivery.properties));
                    }
                    let _ = done.send(Outcome::Failed("the broker refused the message (nack)".into()));
                }
                Err(err) => {
                    let _ = done.send(Outcome::Failed(err.to_string()));
                }
            }
        }
        // Every publish numbered below `completed_below` has completed (or was skipped).
        let oldest_open = open.iter().map(|o| o.seq).min().unwrap_or(u64::MAX);
        let completed_below = handed.min(oldest_open);
        let mut again = false;
        let mut i = 0;
        while i < acked.len() {
            let entry = &mut acked[i];
            let dead_now = dead.is_cancelled();
            if !entry.settling {
                if entry.bound <= completed_below || dead_now {
                    // Poll once more before settling: a carrier may complete after this pass polled.
                    entry.settling = true;
                    entry.bound = *lock(&order);
                    again = true;
                }
                i += 1;
                continue;
            }
            if entry.bound > handed && !dead_now {
                i += 1;
                continue;
            }
            let Acked { key, done, .. } = acked.swap_remove(i);
            let outcome = if returned.remove(&key) { Outcome::Returned } else { Outcome::Routed };
            let _ = done.send(outcome);
        }
        if returned.len() > 10_000 {
            // Keys whose publish never matched (a foreign id scheme): do not grow forever.
            returned.clear();
        }
        if (!rx_open || dead.is_cancelled()) && open.is_empty() && acked.is_empty() {
            return Poll::Ready(());
        }
        if again {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}

/// Hands each reply on the direct reply-to pseudo-queue to its waiting call.
async fn reply_loop(shared: Arc<Shared>, link: Arc<Link>, mut replies: lapin::Consumer) {
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
        let version = header_int(props, headers::VERSION).unwrap_or(BUS_VERSION);
        let is_error = header_str(props, headers::STATUS).is_some_and(|s| s == "error");
        let result = if version != BUS_VERSION {
            Err(BusError::Remote {
                code: ErrorCode::Internal,
                message: format!("reply with unsupported x-bus-version {version}"),
            })
        } else if is_error {
            let (code, message) = parse_error_body(&delivery.data);
            Err(BusError::Remote { code, message })
        } else {
            Ok(delivery.data)
        };
        let _ = call.tx.send(result);
    }
    link.dead.cancel();
}

/// Receives the requests of one queue; each runs in its own task. With `limit` (a queue consumed
/// without acknowledgements) at most that many run at once; without it, a message is
/// acknowledged when its handler returns and the consumer prefetch bounds how many run at once
/// (so the broker hands the portal's next message to a less busy node).
async fn request_loop(
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
        match decode_request(&shared, raw) {
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
            Err(rejected) => {
                warn!(%queue, reason = %rejected.reason, "malformed message rejected");
                let sink = rejected.sink;
                tokio::spawn(async move {
                    sink.send(Err(ErrorBody::new(ErrorCode::InvalidBody, rejected.reason))).await;
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
async fn event_loop(shared: Arc<Shared>, link: Arc<Link>, mut consumer: lapin::Consumer) {
    while let Some(item) = consumer.next().await {
        let raw = match item {
            Ok(raw) => raw,
            Err(err) => {
                debug!(error = %err, "event consumer failed");
                break;
            }
        };
        let version = header_int(&raw.properties, headers::VERSION).unwrap_or(BUS_VERSION);
        if version != BUS_VERSION {
            warn!(version, kind = %raw.routing_key, "event with an unsupported bus version dropped");
            continue;
        }
        let source =
            header_str(&raw.properties, headers::SOURCE).and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_else(|| {
                debug!(kind = %raw.routing_key, "event without a valid x-source");
                Uuid::nil()
            });
        let event = Event { kind: raw.routing_key.as_str().to_owned(), source, body: raw.data };
        // No subscriber is fine: nobody listens yet.
        let _ = shared.events.send(event);
    }
    link.dead.cancel();
}

/// A message that cannot be handed to a handler, with where to say so.
struct Rejected {
    reason: String,
    sink: ReplySink,
}

/// Turns a broker delivery into a [`Delivery`], or says why it is malformed.
fn decode_request(shared: &Arc<Shared>, raw: AmqpDelivery) -> Result<Delivery, Rejected> {
    let props = &raw.properties;
    let reply_to = props.reply_to().as_ref().map(|r| r.as_str().to_owned()).filter(|r| !r.is_empty());
    let correlation_id = props.correlation_id().as_ref().map(|c| c.as_str().to_owned());
    let message_id = props.message_id().as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let sink = match reply_to {
        Some(reply_to) => ReplySink {
            inner: SinkInner::Amqp(AmqpReplyTo {
                shared: shared.clone(),
                reply_to,
                correlation_id,
                message_id: message_id.clone(),
            }),
        },
        None => ReplySink::none(),
    };
    let reject = |reason: String, sink: ReplySink| Rejected { reason, sink };
    let version = header_int(props, headers::VERSION).unwrap_or(BUS_VERSION);
    if version != BUS_VERSION {
        return Err(reject(format!("unsupported x-bus-version {version} (this node speaks {BUS_VERSION})"), sink));
    }
    let Some(kind) = props.kind().as_ref().map(|k| k.as_str().to_owned()).filter(|k| !k.is_empty()) else {
        return Err(reject("missing AMQP type (the message kind)".into(), sink));
    };
    if !is_json(&raw.data) {
        return Err(reject(format!("the body of {kind} is not JSON"), sink));
    }
    // A foreign client may use any string as message_id; keep it on the wire (AmqpReplyTo) and
    // give the handler a UUID: the same one when it is a UUID.
    let id = Uuid::parse_str(&message_id).unwrap_or_else(|_| Uuid::new_v4());
    let hops = header_int(props, headers::HOPS).map_or(0, |h| u32::try_from(h).unwrap_or(0));
    let msg = Message {
        id,
        kind,
        resource_id: header_str(props, headers::RESOURCE_ID).map(str::to_owned),
        deadline_ms: header_int(props, headers::DEADLINE),
        trace: header_str(props, headers::TRACEPARENT).map(str::to_owned),
        hops,
        body: raw.data,
    };
    Ok(Delivery { msg, reply: sink })
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref()?.inner().get(name)
}

/// A header as text, whichever string type the sender used.
fn header_str<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match header(props, name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A header as an integer, whichever integer type the sender used (clients in other languages
/// pick the width themselves).
fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    match header(props, name)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

fn put_str(table: &mut FieldTable, name: &str, value: &str) {
    table.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value)));
}

fn put_int(table: &mut FieldTable, name: &str, value: i64) {
    table.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
}

/// The properties of a request (call, send or forward).
fn request_properties(
    msg: &Message,
    message_id: &str,
    correlation_id: Option<&str>,
    reply_to: Option<&str>,
) -> BasicProperties {
    let mut table = FieldTable::default();
    put_int(&mut table, headers::VERSION, BUS_VERSION);
    put_int(&mut table, headers::HOPS, i64::from(msg.hops));
    if let Some(resource) = &msg.resource_id {
        put_str(&mut table, headers::RESOURCE_ID, resource);
    }
    if let Some(trace) = &msg.trace {
        put_str(&mut table, headers::TRACEPARENT, trace);
    }
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id))
        .with_type(ShortString::from(msg.kind.as_str()));
    if let Some(deadline) = msg.deadline_ms {
        put_int(&mut table, headers::DEADLINE, deadline);
        // Let the broker drop a request nobody waits for any more instead of delivering it.
        let remaining = (deadline - now_ms()).max(1);
        props = props.with_expiration(ShortString::from(remaining.to_string()));
    }
    if let Some(corr) = correlation_id {
        props = props.with_correlation_id(ShortString::from(corr));
    }
    if let Some(reply_to) = reply_to {
        props = props.with_reply_to(ShortString::from(reply_to));
    }
    props.with_headers(table)
}

/// Where the reply of a message received from RabbitMQ goes: the caller's `reply_to` address and
/// `correlation_id`. Also what `forward` keeps on the wire.
pub(crate) struct AmqpReplyTo {
    shared: Arc<Shared>,
    reply_to: String,
    correlation_id: Option<String>,
    message_id: String,
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
    pub(crate) async fn send(self, result: Result<Vec<u8>, ErrorBody>) {
        let link = match self.shared.current() {
            Ok(link) => link,
            Err(err) => {
                debug!(reply_to = %self.reply_to, error = %err, "reply dropped: bus disconnected");
                return;
            }
        };
        let (status, body) = match result {
            Ok(body) => ("ok", body),
            Err(err) => ("error", error_body_json(&err)),
        };
        let mut table = FieldTable::default();
        put_int(&mut table, headers::VERSION, BUS_VERSION);
        put_str(&mut table, headers::STATUS, status);
        let mut props = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_type(ShortString::from(REPLY_KIND))
            .with_headers(table);
        if let Some(corr) = &self.correlation_id {
            props = props.with_correlation_id(ShortString::from(corr.as_str()));
        }
        // Not mandatory and not confirmed: a reply to a caller that is gone is useless, and the
        // caller's own deadline covers a reply lost with a connection.
        let options = BasicPublishOptions::default();
        if let Err(err) = link.reply.basic_publish("", &self.reply_to, options, &body, props).await {
            debug!(reply_to = %self.reply_to, error = %err, "reply not sent");
        }
    }
}

/// The RabbitMQ transport of one node.
pub struct AmqpTransport {
    shared: Arc<Shared>,
}

impl AmqpTransport {
    /// Connects, declares the event exchange and queue, and starts the supervisor.
    pub async fn connect(url: &str, prefix: &str, node: Uuid) -> Result<AmqpTransport, BusError> {
        let log_url = redact_url(url);
        let mut uri: AMQPUri = url.parse().map_err(|e: String| BusError::InvalidUrl(format!("{log_url}: {e}")))?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_S);
        }
        let shared = Arc::new(Shared {
            node,
            prefix: prefix.to_owned(),
            uri,
            log_url: log_url.clone(),
            link: RwLock::new(None),
            pending: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            failed: RwLock::new(HashSet::new()),
            queues: Mutex::new(HashMap::new()),
            events: broadcast::channel(EVENT_CAPACITY).0,
            shutdown: CancellationToken::new(),
        });
        let link = match tokio::time::timeout(ESTABLISH_TIMEOUT, shared.establish()).await {
            Ok(Ok(link)) => link,
            Ok(Err(err)) => return Err(BusError::Unavailable(format!("cannot connect to {log_url}: {err}"))),
            Err(_) => {
                return Err(BusError::Unavailable(format!(
                    "cannot connect to {log_url}: no answer within {ESTABLISH_TIMEOUT:?}"
                )))
            }
        };
        *shared.link.write().unwrap_or_else(PoisonError::into_inner) = Some(link.clone());
        info!(url = %log_url, %prefix, %node, "bus connected");
        tokio::spawn(shared.clone().supervise(link));
        Ok(AmqpTransport { shared })
    }

    async fn serve_queue(&self, queue: String, kind: QueueKind, handler: Arc<dyn Handler>) -> Result<(), BusError> {
        let slot = {
            let mut queues = lock(&self.shared.queues);
            if let Some((_, slot)) = queues.get(&queue) {
                // Serving a queue again swaps its handler; the consumer stays.
                *slot.write().unwrap_or_else(PoisonError::into_inner) = handler;
                return Ok(());
            }
            let slot: HandlerSlot = Arc::new(RwLock::new(handler));
            queues.insert(queue.clone(), (kind, slot.clone()));
            slot
        };
        if self.shared.shutdown.is_cancelled() {
            lock(&self.shared.queues).remove(&queue);
            return Err(BusError::Unavailable("the bus is closed".into()));
        }
        // While disconnected, the supervisor declares it on reconnection.
        let Ok(link) = self.shared.current() else { return Ok(()) };
        match self.shared.start_queue(&link, &queue, kind, slot).await {
            Ok(()) => Ok(()),
            Err(err) if !link.alive() => {
                debug!(%queue, error = %err, "queue will be declared on reconnection");
                Ok(())
            }
            Err(err) => {
                lock(&self.shared.queues).remove(&queue);
                Err(unavailable(format!("cannot serve {queue}: {err}")))
            }
        }
    }

    fn register(&self, node: Option<Uuid>) -> (u64, PendingGuard<'_, PendingCall>, ReplyReceiver) {
        let (tx, rx) = oneshot::channel();
        let id = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.pending).insert(id, PendingCall { node, tx });
        (id, PendingGuard { pending: &self.shared.pending, id }, rx)
    }

    /// Publishes a request with `mandatory` and waits for its confirmation.
    async fn publish_confirmed(
        &self,
        link: &Link,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BusError> {
        let outcome = link.publish("", queue, true, body, props).await?;
        match outcome.await {
            Ok(Outcome::Routed) => Ok(()),
            Ok(Outcome::Returned) => Err(BusError::Unroutable(queue.to_owned())),
            Ok(Outcome::Failed(reason)) => Err(BusError::Unavailable(reason)),
            Err(_) => Err(unavailable("the connection closed before the broker confirmed")),
        }
    }
}

impl Drop for AmqpTransport {
    fn drop(&mut self) {
        // The last Bus handle is gone: let the supervisor close the connection.
        self.shared.shutdown.cancel();
    }
}

#[async_trait::async_trait]
impl Transport for AmqpTransport {
    fn node_id(&self) -> Uuid {
        self.shared.node
    }

    fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    async fn serve(&self, service: &str, handler: Arc<dyn Handler>) -> Result<(), BusError> {
        let queue = service_queue(&self.shared.prefix, service, self.shared.node);
        self.serve_queue(queue, QueueKind::Service, handler).await
    }

    async fn serve_portal(&self, handler: Arc<dyn Handler>) -> Result<(), BusError> {
        self.serve_queue(portal_queue(&self.shared.prefix), QueueKind::Portal, handler).await
    }

    async fn send(&self, to: Destination, msg: Message) -> Result<(), BusError> {
        if let Some(node) = to.node().filter(|n| self.shared.is_failed(*n)) {
            return Err(BusError::NodeUnavailable(node));
        }
        let link = self.shared.current()?;
        let queue = to.queue_name(&self.shared.prefix);
        let props = request_properties(&msg, &msg.id.to_string(), None, None);
        self.publish_confirmed(&link, &queue, &msg.body, props).await
    }

    async fn call(&self, to: Destination, mut msg: Message, timeout: Duration) -> Result<Vec<u8>, BusError> {
        let started = Instant::now();
        let deadline_ms = now_ms().saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        msg.deadline_ms = Some(msg.deadline_ms.map_or(deadline_ms, |d| d.min(deadline_ms)));
        let remaining = u64::try_from(msg.deadline_ms.unwrap_or(deadline_ms) - now_ms()).unwrap_or(0);
        let deadline = started + Duration::from_millis(remaining).min(timeout);
        let node = to.node();
        let link = self.shared.current()?;
        // Register before checking the failed set, so a concurrent fail_calls_to either sees
        // this call or this call sees its node in the set.
        let (id, _guard, reply) = self.register(node);
        if let Some(node) = node.filter(|n| self.shared.is_failed(*n)) {
            return Err(BusError::NodeUnavailable(node));
        }
        if remaining == 0 {
            return Err(BusError::Timeout(timeout));
        }
        let queue = to.queue_name(&self.shared.prefix);
        let correlation_id = format!("{id:x}");
        let props = request_properties(&msg, &msg.id.to_string(), Some(&correlation_id), Some(DIRECT_REPLY_TO));
        let outcome = link.publish("", &queue, true, &msg.body, props).await?;
        let mut reply = std::pin::pin!(reply);
        let sleep = tokio::time::sleep_until(deadline);
        let mut sleep = std::pin::pin!(sleep);
        // The confirmation and the reply race: a routed message is confirmed about when the
        // handler starts, so waiting for the confirmation first would only add latency.
        tokio::select! {
            result = &mut reply => return result.unwrap_or_else(|_| Err(unavailable("the call was abandoned"))),
            outcome = outcome => match outcome {
                Ok(Outcome::Routed) => {}
                Ok(Outcome::Returned) => return Err(BusError::Unroutable(queue)),
                Ok(Outcome::Failed(reason)) => return Err(BusError::Unavailable(reason)),
                Err(_) => return Err(unavailable("the connection closed before the broker confirmed")),
            },
            _ = &mut sleep => return Err(BusError::Timeout(timeout)),
        }
        tokio::select! {
            result = &mut reply => result.unwrap_or_else(|_| Err(unavailable("the call was abandoned"))),
            _ = &mut sleep => Err(BusError::Timeout(timeout)),
        }
    }

    async fn forward(&self, to: Destination, mut delivery: Delivery) -> Result<(), BusError> {
        delivery.msg.hops = delivery.msg.hops.saturating_add(1);
        let queue = to.queue_name(&self.shared.prefix);
        let result = match delivery.reply.inner {
            SinkInner::Amqp(origin) => {
                let sent = match to.node().filter(|n| self.shared.is_failed(*n)) {
                    Some(node) => Err(BusError::NodeUnavailable(node)),
                    None => match self.shared.current() {
                        Ok(link) => {
                            let props = request_properties(
                                &delivery.msg,
                                &origin.message_id,
                                origin.correlation_id.as_deref(),
                                Some(&origin.reply_to),
                            );
                            self.publish_confirmed(&link, &queue, &delivery.msg.body, props).await
                        }
                        Err(err) => Err(err),
                    },
                };
                if let Err(err) = &sent {
                    // The caller waits on the broker for this message's answer: tell it now.
                    origin.send(Err(ErrorBody::new(err.code(), err.to_string()))).await;
                }
                sent
            }
            SinkInner::None => self.send(to, delivery.msg).await,
            SinkInner::Local(tx) => {
                // A delivery built in-process (Delivery::local): its caller waits on a channel
                // the broker cannot carry, so call on its behalf and pass the answer back.
                let timeout = delivery.msg.deadline_ms.map_or(Duration::from_secs(30), |d| {
                    Duration::from_millis(u64::try_from(d - now_ms()).unwrap_or(0))
                });
                let result = self.call(to, delivery.msg, timeout).await;
                let answer = result.map_err(|e| match e {
                    BusError::Remote { code, message } => ErrorBody::new(code, message),
                    other => ErrorBody::new(other.code(), other.to_string()),
                });
                let _ = tx.send(answer);
                Ok(())
            }
        };
        result
    }

    async fn publish(&self, event: Event) -> Result<(), BusError> {
        let link = self.shared.current()?;
        let mut table = FieldTable::default();
        put_int(&mut table, headers::VERSION, BUS_VERSION);
        put_str(&mut table, headers::SOURCE, &event.source.to_string());
        let props = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(Uuid::new_v4().to_string()))
            .with_type(ShortString::from(event.kind.as_str()))
            .with_headers(table);
        let exchange = event_exchange(&self.shared.prefix);
        let outcome = link.publish(&exchange, &event.kind, false, &event.body, props).await?;
        match outcome.await {
            Ok(Outcome::Routed | Outcome::Returned) => Ok(()),
            Ok(Outcome::Failed(reason)) => Err(BusError::Unavailable(reason)),
            Err(_) => Err(unavailable("the connection closed before the broker confirmed")),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    fn fail_calls_to(&self, node: Uuid) {
        self.shared.failed.write().unwrap_or_else(PoisonError::into_inner).insert(node);
        let failed: Vec<PendingCall> = {
            let mut pending = lock(&self.shared.pending);
            let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.node == Some(node)).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| pending.remove(&id)).collect()
        };
        if !failed.is_empty() {
            info!(%node, calls = failed.len(), "failing pending calls to an unavailable node");
        }
        for call in failed {
            let _ = call.tx.send(Err(BusError::NodeUnavailable(node)));
        }
    }

    fn node_available(&self, node: Uuid) {
        self.shared.failed.write().unwrap_or_else(PoisonError::into_inner).remove(&node);
    }

    fn is_connected(&self) -> bool {
        self.shared.current().is_ok()
    }

    async fn close(&self) {
        if self.shared.shutdown.is_cancelled() {
            return;
        }
        self.shared.shutdown.cancel();
        self.shared.fail_all_pending(&BusError::Unavailable("the bus is closed".into()));
        let link = self.shared.link.write().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(link) = link {
            link.dead.cancel();
            if let Err(err) = link.conn.close(200, "bus closed").await {
                debug!(error = %err, "closing the bus connection");
            }
        }
        info!(url = %self.shared.log_url, node = %self.shared.node, "bus closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_ints_of_any_width() {
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::LongInt(7));
        table.insert("b".into(), AMQPValue::ShortShortUInt(3));
        table.insert("c".into(), AMQPValue::LongString("42".into()));
        table.insert("d".into(), AMQPValue::Boolean(true));
        let props = BasicProperties::default().with_headers(table);
        assert_eq!(header_int(&props, "a"), Some(7));
        assert_eq!(header_int(&props, "b"), Some(3));
        assert_eq!(header_int(&props, "c"), Some(42));
        assert_eq!(header_int(&props, "d"), None);
        assert_eq!(header_int(&props, "missing"), None);
    }
}
