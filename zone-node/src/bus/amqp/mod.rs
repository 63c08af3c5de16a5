//! The RabbitMQ transport (`amqp://`), through lapin, with reconnection.
//!
//! - `link`: the connection, its channels, and the supervisor that reconnects and re-declares
//! - `confirms`: publisher confirms and returned messages (`Unroutable` at once)
//! - `consume`: the reply, request and event consumer loops
//! - `codec`: AMQP properties and headers ↔ messages, replies and events
//! - `reply`: the reply sink of a received message
//!
//! This file is the [`Transport`] itself: calls, sends, forwards and events on top of those.
//!
//! # Logging
//! lapin itself logs every returned (unroutable) message at WARN, body included, and every
//! connection loss at ERROR. Unroutable calls are a normal event here (a node left), and bodies
//! may hold secrets, so the node's log filter should include `lapin=error` (or at least
//! `lapin::returned_messages=error`); this module logs those events itself, without bodies.

pub(crate) mod brokers;
mod codec;
mod confirms;
mod consume;
mod link;
mod reply;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use api::{CodedError, ErrorBody};
use lapin::types::ShortString;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use uuid::Uuid;

use self::codec::{event_properties, request_properties};
use self::confirms::Outcome;
use self::link::{HandlerSlot, Link, QueueKind};
use self::reply::AmqpReplyTo;
use super::envelope::{now_ms, SinkInner};
use super::pending::{lock, PendingGuard};
use super::{
    event_exchange, portal_queue, service_queue, BusError, Delivery, Destination, Event, Handler, Message, Transport,
};

/// How long closing the bus waits for the broker to confirm.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// RabbitMQ's direct reply-to pseudo-queue.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Heartbeat asked for when the URL does not say: a silently dead broker is noticed within
/// about two intervals.
const DEFAULT_HEARTBEAT_S: u16 = 10;
/// Capacity of the local event channel; a subscriber that lags further loses the oldest.
const EVENT_CAPACITY: usize = 4096;

fn unavailable(err: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(err.to_string())
}

/// Where a pending call's answer arrives.
type ReplyReceiver = oneshot::Receiver<Result<Vec<u8>, BusError>>;

/// A call waiting for its reply.
struct PendingCall {
    node: Option<Uuid>,
    tx: oneshot::Sender<Result<Vec<u8>, BusError>>,
}

/// The state shared by the transport, its supervisor, its consumer loops and reply sinks.
struct Shared {
    node: Uuid,
    prefix: String,
    /// The broker addresses (`ZONE_BUS_URL` may name several), tried in rotation.
    brokers: brokers::Brokers,
    /// Every address without its password, for logs.
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
}

/// The RabbitMQ transport of one node.
pub struct AmqpTransport {
    shared: Arc<Shared>,
}

impl AmqpTransport {
    /// Connects, declares the event exchange and queue, and starts the supervisor.
    pub async fn connect(url: &str, prefix: &str, node: Uuid) -> Result<AmqpTransport, BusError> {
        let brokers = brokers::Brokers::parse(url, DEFAULT_HEARTBEAT_S)?;
        let log_url = brokers.describe();
        let shared = Arc::new(Shared {
            node,
            prefix: prefix.to_owned(),
            brokers,
            log_url: log_url.clone(),
            link: RwLock::new(None),
            pending: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            failed: RwLock::new(HashSet::new()),
            queues: Mutex::new(HashMap::new()),
            events: broadcast::channel(EVENT_CAPACITY).0,
            shutdown: CancellationToken::new(),
        });
        let link = shared
            .establish_any()
            .await
            .map_err(|err| BusError::Unavailable(format!("cannot connect to {log_url}: {err}")))?;
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
        props: lapin::BasicProperties,
    ) -> Result<(), BusError> {
        let outcome = link.publisher.publish("", queue, true, body, props).await?;
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
            return Err(BusError::NodeGone(node));
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
            return Err(BusError::NodeGone(node));
        }
        if remaining == 0 {
            return Err(BusError::Timeout(timeout));
        }
        let queue = to.queue_name(&self.shared.prefix);
        let correlation_id = format!("{id:x}");
        let props = request_properties(&msg, &msg.id.to_string(), Some(&correlation_id), Some(DIRECT_REPLY_TO));
        let outcome = link.publisher.publish("", &queue, true, &msg.body, props).await?;
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
            SinkInner::Remote(remote) => {
                // Only this transport makes remote sinks; anything else has no address to keep.
                let Some(origin) = remote.as_any().downcast_ref::<AmqpReplyTo>() else {
                    let err = BusError::Unavailable("the delivery came from another transport".into());
                    remote.send(Err(err.to_body())).await;
                    return Err(err);
                };
                let sent = match to.node().filter(|n| self.shared.is_failed(*n)) {
                    Some(node) => Err(BusError::NodeGone(node)),
                    // On the connection the message came on while it lives, as a reply would
                    // be (see `reply`): during a reconnection it is not current yet.
                    None => match origin.link() {
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
                    remote.send(Err(err.to_body())).await;
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
                    other => other.to_body(),
                });
                let _ = tx.send(answer);
                Ok(())
            }
        };
        result
    }

    async fn publish(&self, event: Event) -> Result<(), BusError> {
        let link = self.shared.current()?;
        let props = event_properties(&event);
        let exchange = event_exchange(&self.shared.prefix);
        let outcome = link.publisher.publish(&exchange, &event.kind, false, &event.body, props).await?;
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

    fn refuse_calls_to(&self, node: Uuid) {
        self.shared.failed.write().unwrap_or_else(PoisonError::into_inner).insert(node);
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
            // The broker's close-ok is a courtesy: a broker that does not answer must not keep a
            // node from stopping (the socket goes with the link either way).
            match tokio::time::timeout(CLOSE_TIMEOUT, link.conn.close(200, ShortString::from("bus closed"))).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => debug!(error = %err, "closing the bus connection"),
                Err(_) => {
                    debug!(timeout = ?CLOSE_TIMEOUT, "the broker did not confirm the close; dropping the connection")
                }
            }
        }
        info!(url = %self.shared.log_url, node = %self.shared.node, "bus closed");
    }
}
