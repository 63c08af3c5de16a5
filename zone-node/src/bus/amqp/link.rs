//! The connection and its supervision: one [`Link`] (connection and channels) at a time,
//! replaced as a whole when the broker goes away.
//!
//! # Connection layout
//! One connection per bus, with three long-lived channels:
//! - `publisher`: in confirm mode (see `confirms`); every request, forward and event goes out
//!   here. The same channel consumes RabbitMQ's direct reply-to pseudo-queue
//!   `amq.rabbitmq.reply-to` (no queue to declare, no per-reply disk or queue work on the broker:
//!   the fastest reply path RabbitMQ has); a reply is matched to its call by `correlation_id`.
//! - `reply`: no confirms, used by handlers to answer; a reply whose caller is gone is simply
//!   dropped by the broker (it is not published with `mandatory`).
//! - `consume`: the service, portal and event consumers. The portal is consumed with
//!   acknowledgements (prefetch [`MAX_IN_FLIGHT`], a request is acknowledged when its handler
//!   returns); a node's own service queues and event queue without (they die with the
//!   connection, so an acknowledgement could never give a message to anyone else).
//!
//! # Reconnection
//! lapin's own recovery is left off: the supervisor task owns the connection. When lapin reports
//! a connection error, a publish or reply fails on a closed channel, or a consumer stream ends, it
//! marks the bus disconnected (new calls fail at once with `Unavailable`), fails every pending
//! call with `Unavailable`, and reconnects with backoff (100 ms doubling to 2 s, forever), then
//! re-declares the event exchange, every queue, binding and consumer with the same handlers.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::confirms::Publisher;
use super::consume::{event_loop, reply_loop, request_loop};
use super::{Shared, DIRECT_REPLY_TO};
use crate::bus::pending::lock;
use crate::bus::{event_exchange, BusError, Handler, MAX_IN_FLIGHT};

/// How long one connection attempt (TCP, handshake, declarations) may take.
pub(super) const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One connection and its channels; replaced as a whole on reconnection.
pub(super) struct Link {
    /// Which of the configured brokers this connection is to.
    pub broker: usize,
    pub(super) conn: Connection,
    pub(super) publisher: Publisher,
    pub(super) reply: Channel,
    consume: Channel,
    /// Cancelled when anything says this connection is broken.
    pub(super) dead: CancellationToken,
}

impl Link {
    pub(super) fn alive(&self) -> bool {
        !self.dead.is_cancelled()
    }
}

/// How a registered queue is declared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum QueueKind {
    /// `<prefix>.message.<service>.<node>`: exclusive, auto-delete.
    Service,
    /// `<prefix>.message.api.portal`: shared, auto-delete.
    Portal,
}

impl QueueKind {
    fn declare_options(self) -> QueueDeclareOptions {
        match self {
            QueueKind::Service => QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            QueueKind::Portal => QueueDeclareOptions { auto_delete: true, ..Default::default() },
        }
    }
}

/// The handler of a served queue; serving the queue again swaps it in place.
pub(super) type HandlerSlot = Arc<RwLock<Arc<dyn Handler>>>;

/// Closes a channel opened for declarations only, if the broker has not closed it already.
async fn close_declare_channel(channel: Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, ShortString::from("declared")).await;
    }
}

impl Shared {
    /// Declares `queue` and starts its consumer on `link`.
    pub(super) async fn start_queue(
        self: &Arc<Self>,
        link: &Arc<Link>,
        queue: &str,
        kind: QueueKind,
        slot: HandlerSlot,
    ) -> Result<(), lapin::Error> {
        // Declared on a channel of its own: a refused declaration (a queue of that name with
        // other arguments) closes only that channel, not the consumers' one.
        let declare = link.conn.create_channel().await?;
        let declared =
            declare.queue_declare(ShortString::from(queue), kind.declare_options(), FieldTable::default()).await;
        close_declare_channel(declare).await;
        declared?;
        let tag = format!("{}.{}", self.node, queue);
        // A service queue lives and dies with this connection, so acknowledgements would buy
        // nothing (no other consumer could get a message back): it is consumed without them,
        // which saves the broker and this node a frame per message, and its concurrency is
        // bounded here. The portal is acknowledged per message (see request_loop).
        let no_ack = kind == QueueKind::Service;
        let options = BasicConsumeOptions { no_ack, ..Default::default() };
        let consumer = link
            .consume
            .basic_consume(ShortString::from(queue), ShortString::from(tag), options, FieldTable::default())
            .await?;
        let limit = no_ack.then(|| Arc::new(Semaphore::new(usize::from(MAX_IN_FLIGHT))));
        tokio::spawn(request_loop(self.clone(), link.clone(), queue.to_owned(), consumer, slot, limit));
        Ok(())
    }

    /// Connects to the first broker that answers, in rotation from the one to try first (each
    /// bounded by [`ESTABLISH_TIMEOUT`]: a broker still booting must not stall the others); the
    /// error names every attempt.
    pub(super) async fn establish_any(self: &Arc<Self>) -> Result<Arc<Link>, String> {
        let mut errors = Vec::new();
        for (i, broker) in self.brokers.in_order() {
            match tokio::time::timeout(ESTABLISH_TIMEOUT, self.establish(i)).await {
                Ok(Ok(link)) => {
                    self.brokers.connected(i);
                    if self.brokers.len() > 1 {
                        info!(url = %broker.log_url, "bus connected to this broker");
                    }
                    return Ok(link);
                }
                Ok(Err(e)) => errors.push(format!("{}: {e}", broker.log_url)),
                Err(_) => errors.push(format!("{}: no answer within {ESTABLISH_TIMEOUT:?}", broker.log_url)),
            }
        }
        Err(errors.join("; "))
    }

    /// Opens a connection to broker `i` and sets up everything this bus consumes.
    async fn establish(self: &Arc<Self>, i: usize) -> Result<Arc<Link>, lapin::Error> {
        let name = format!("zone-node {} {}", self.prefix, self.node);
        let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
        let conn = Connection::connect_uri(self.brokers.uri(i), props).await?;
        let dead = CancellationToken::new();
        watch_connection(&conn, dead.clone(), self.brokers.log_url(i).to_owned());
        let channels = async {
            let publish = conn.create_channel().await?;
            let reply = conn.create_channel().await?;
            let consume = conn.create_channel().await?;
            publish.confirm_select(ConfirmSelectOptions::default()).await?;
            consume.basic_qos(MAX_IN_FLIGHT, BasicQosOptions::default()).await?;
            let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
            let replies = publish
                .basic_consume(
                    ShortString::from(DIRECT_REPLY_TO),
                    ShortString::from("replies"),
                    no_ack,
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((publish, reply, consume, replies))
        };
        let (publish, reply, consume, replies) = match channels.await {
            Ok(channels) => channels,
            Err(err) => {
                // lapin keeps a connection open until it is closed: do not leak one per attempt.
                dead.cancel();
                let _ = conn.close(200, ShortString::from("setup failed")).await;
                return Err(err);
            }
        };
        let publisher = Publisher::start(publish, dead.clone());
        let link = Arc::new(Link { broker: i, conn, publisher, reply, consume, dead });
        tokio::spawn(reply_loop(self.clone(), link.clone(), replies));
        if let Err(err) = self.declare_all(&link).await {
            link.dead.cancel();
            let _ = link.conn.close(200, ShortString::from("setup failed")).await;
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
            let options = ExchangeDeclareOptions::default();
            let (exchange, queue) = (ShortString::from(exchange.as_str()), ShortString::from(event_queue.as_str()));
            declare.exchange_declare(exchange.clone(), ExchangeKind::Topic, options, FieldTable::default()).await?;
            let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            declare.queue_declare(queue.clone(), options, FieldTable::default()).await?;
            let all = ShortString::from("#");
            declare.queue_bind(queue, exchange, all, QueueBindOptions::default(), FieldTable::default()).await
        }
        .await;
        close_declare_channel(declare).await;
        declared?;
        let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let tag = ShortString::from(format!("{}.events", self.node));
        let events =
            link.consume.basic_consume(ShortString::from(event_queue), tag, no_ack, FieldTable::default()).await?;
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
    pub(super) async fn supervise(self: Arc<Self>, mut link: Arc<Link>) {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {}
                _ = link.dead.cancelled() => {}
            }
            if self.shutdown.is_cancelled() {
                // close() or the last handle dropped: not a disconnection.
                let _ = link.conn.close(200, ShortString::from("bus closed")).await;
                return;
            }
            warn!(url = %self.log_url, node = %self.node, "bus disconnected; failing pending calls and reconnecting");
            *self.link.write().unwrap_or_else(PoisonError::into_inner) = None;
            self.fail_all_pending(&BusError::Unavailable("the broker connection was lost".into()));
            // Best effort: the socket may already be gone; this only frees lapin's side.
            let closing = link.conn.close(320, ShortString::from("reconnecting"));
            let _ = tokio::time::timeout(Duration::from_millis(500), closing).await;

            // The lost broker is tried last: with several, the next one is likely up.
            self.brokers.lost(link.broker);
            let mut backoff = BACKOFF_MIN;
            let mut attempt: u32 = 0;
            let mut warn_at: u32 = 1;
            link = loop {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.shutdown.cancelled() => return,
                }
                attempt += 1;
                match self.establish_any().await {
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

/// Marks the link dead on the first connection error lapin reports; ends with the link.
fn watch_connection(conn: &Connection, dead: CancellationToken, log_url: String) {
    let events = conn.events_listener();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                _ = dead.cancelled() => return,
                event = events.next() => match event {
                    // A soft error closes one channel, not the connection (a refused
                    // declaration on its own channel); a main channel closing shows up in
                    // its consumer or its next publish.
                    Some(lapin::Event::Error(err)) if err.is_amqp_soft_error() => {
                        debug!(error = %err, "bus channel error");
                    }
                    Some(lapin::Event::Error(err)) => {
                        warn!(url = %log_url, error = %err, "bus connection error");
                        dead.cancel();
                        return;
                    }
                    Some(_) => {}
                    None => {
                        dead.cancel();
                        return;
                    }
                },
            }
        }
    });
}
