//! The in-process transport (`memory://`): the embedded default for a single-node zone, and what
//! tests use to run several nodes in one process (`memory://<name>`).
//!
//! It mirrors the RabbitMQ transport's semantics so code above the bus behaves the same on both:
//! queues have the same names, the portal queue hands each message to one of its consumers in
//! turn, a message to a queue nobody consumes is `Unroutable` at once, deadlines, hops and
//! `fail_calls_to` work the same way, and every event reaches every bus of the prefix (the
//! publisher's own included). A reply travels back on a oneshot channel carried by the delivery,
//! which `forward` moves along with the message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use api::{CodedError, ErrorBody, ErrorCode};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::envelope::{now_ms, ReplySink};
use super::pending::{lock, PendingGuard};
use super::{
    dispatch, event_exchange, portal_queue, service_queue, BusError, Delivery, Destination, Event, Handler, Message,
    Transport, MAX_IN_FLIGHT,
};

/// Capacity of each prefix's event channel; a subscriber that lags further loses the oldest.
const EVENT_CAPACITY: usize = 4096;

/// Named brokers of this process (`memory://<name>`). Weak, so a broker goes away with its last bus.
static NAMED: LazyLock<Mutex<HashMap<String, Weak<Broker>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The shared state of one in-process broker: its queues and its event channels.
#[derive(Default)]
pub(crate) struct Broker {
    queues: Mutex<HashMap<String, MemQueue>>,
    events: Mutex<HashMap<String, broadcast::Sender<Event>>>,
}

#[derive(Default)]
struct MemQueue {
    consumers: Vec<Consumer>,
    /// Round-robin position among the consumers (the portal's competing consumers).
    next: usize,
}

struct Consumer {
    owner: Uuid,
    tx: mpsc::UnboundedSender<Delivery>,
}

impl Broker {
    fn named(name: &str) -> Arc<Broker> {
        if name.is_empty() {
            return Arc::new(Broker::default());
        }
        let mut named = lock(&NAMED);
        if let Some(broker) = named.get(name).and_then(Weak::upgrade) {
            return broker;
        }
        named.retain(|_, b| b.strong_count() > 0);
        let broker = Arc::new(Broker::default());
        named.insert(name.to_owned(), Arc::downgrade(&broker));
        broker
    }

    /// Hands `delivery` to one consumer of `queue`, or gives it back when nobody consumes it.
    fn deliver(&self, queue: &str, mut delivery: Delivery) -> Result<(), Box<Delivery>> {
        let mut queues = lock(&self.queues);
        let Some(q) = queues.get_mut(queue) else { return Err(Box::new(delivery)) };
        while !q.consumers.is_empty() {
            let i = q.next % q.consumers.len();
            match q.consumers[i].tx.send(delivery) {
                Ok(()) => {
                    q.next = i + 1;
                    return Ok(());
                }
                Err(mpsc::error::SendError(back)) => {
                    // That consumer's bus is gone without closing: forget it, try the next.
                    delivery = back;
                    q.consumers.remove(i);
                }
            }
        }
        queues.remove(queue);
        Err(Box::new(delivery))
    }

    fn add_consumer(&self, queue: &str, owner: Uuid, tx: mpsc::UnboundedSender<Delivery>) {
        lock(&self.queues).entry(queue.to_owned()).or_default().consumers.push(Consumer { owner, tx });
    }

    fn remove_consumers(&self, owner: Uuid) {
        let mut queues = lock(&self.queues);
        for q in queues.values_mut() {
            q.consumers.retain(|c| c.owner != owner);
        }
        queues.retain(|_, q| !q.consumers.is_empty());
    }

    fn events(&self, prefix: &str) -> broadcast::Sender<Event> {
        lock(&self.events).entry(event_exchange(prefix)).or_insert_with(|| broadcast::channel(EVENT_CAPACITY).0).clone()
    }
}

/// A call waiting for its reply, so `fail_calls_to` and `close` can end it early.
struct PendingCall {
    node: Option<Uuid>,
    cancel: oneshot::Sender<BusError>,
}

type HandlerSlot = Arc<RwLock<Arc<dyn Handler>>>;

/// One node's handle on an in-process broker.
pub struct MemoryTransport {
    /// `memory://` with no name: a broker nobody else can connect to.
    private: bool,
    broker: Arc<Broker>,
    node: Uuid,
    prefix: String,
    events: broadcast::Sender<Event>,
    pending: Mutex<HashMap<u64, PendingCall>>,
    next_call: AtomicU64,
    failed: RwLock<HashSet<Uuid>>,
    /// Queue name → the handler its consumer loop runs; serving a queue again swaps the handler.
    served: Mutex<HashMap<String, HandlerSlot>>,
    loops: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl MemoryTransport {
    /// `name` empty: a private broker; otherwise the process-wide broker of that name.
    pub fn new(name: &str, prefix: &str, node: Uuid) -> MemoryTransport {
        let broker = Broker::named(name);
        let events = broker.events(prefix);
        MemoryTransport {
            private: name.is_empty(),
            broker,
            node,
            prefix: prefix.to_owned(),
            events,
            pending: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            failed: RwLock::new(HashSet::new()),
            served: Mutex::new(HashMap::new()),
            loops: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    fn check_open(&self) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Unavailable("the bus is closed".into()));
        }
        Ok(())
    }

    fn is_failed(&self, node: Option<Uuid>) -> bool {
        node.is_some_and(|n| self.failed.read().unwrap_or_else(PoisonError::into_inner).contains(&n))
    }

    fn serve_queue(&self, queue: String, handler: Arc<dyn Handler>) -> Result<(), BusError> {
        self.check_open()?;
        let mut served = lock(&self.served);
        if let Some(slot) = served.get(&queue) {
            *slot.write().unwrap_or_else(PoisonError::into_inner) = handler;
            return Ok(());
        }
        let slot: HandlerSlot = Arc::new(RwLock::new(handler));
        served.insert(queue.clone(), slot.clone());
        let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
        self.broker.add_consumer(&queue, self.node, tx);
        let limit = Arc::new(Semaphore::new(usize::from(MAX_IN_FLIGHT)));
        let consumer_loop = tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                // Closed only if the semaphore is dropped, which it is not while this loop runs.
                let Ok(permit) = limit.clone().acquire_owned().await else { break };
                let handler = slot.read().unwrap_or_else(PoisonError::into_inner).clone();
                tokio::spawn(async move {
                    dispatch(handler, delivery).await;
                    drop(permit);
                });
            }
        });
        lock(&self.loops).push(consumer_loop);
        Ok(())
    }

    fn register(&self, node: Option<Uuid>) -> (PendingGuard<'_, PendingCall>, oneshot::Receiver<BusError>) {
        let (cancel, cancelled) = oneshot::channel();
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(id, PendingCall { node, cancel });
        (PendingGuard { pending: &self.pending, id }, cancelled)
    }
}

/// The deadline of a call: its timeout from now, or the message's own deadline if earlier.
fn call_deadline(msg: &mut Message, timeout: Duration) -> Instant {
    let now = Instant::now();
    let by_timeout = now_ms().saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
    let deadline_ms = msg.deadline_ms.map_or(by_timeout, |d| d.min(by_timeout));
    msg.deadline_ms = Some(deadline_ms);
    let remaining = u64::try_from(deadline_ms - now_ms()).unwrap_or(0);
    now + Duration::from_millis(remaining).min(timeout)
}

#[async_trait::async_trait]
impl Transport for MemoryTransport {
    fn node_id(&self) -> Uuid {
        self.node
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn serve(&self, service: &str, handler: Arc<dyn Handler>) -> Result<(), BusError> {
        self.serve_queue(service_queue(&self.prefix, service, self.node), handler)
    }

    async fn serve_portal(&self, handler: Arc<dyn Handler>) -> Result<(), BusError> {
        self.serve_queue(portal_queue(&self.prefix), handler)
    }

    async fn send(&self, to: Destination, msg: Message) -> Result<(), BusError> {
        self.check_open()?;
        if let Some(node) = to.node().filter(|n| self.is_failed(Some(*n))) {
            return Err(BusError::NodeGone(node));
        }
        let queue = to.queue_name(&self.prefix);
        self.broker.deliver(&queue, Delivery { msg, reply: ReplySink::none() }).map_err(|_| BusError::Unroutable(queue))
    }

    async fn call(&self, to: Destination, mut msg: Message, timeout: Duration) -> Result<Vec<u8>, BusError> {
        self.check_open()?;
        let node = to.node();
        // Register before checking the failed set, so a concurrent fail_calls_to either sees
        // this call or this call sees its node in the set.
        let (_guard, cancelled) = self.register(node);
        if let Some(node) = node.filter(|n| self.is_failed(Some(*n))) {
            return Err(BusError::NodeGone(node));
        }
        let deadline = call_deadline(&mut msg, timeout);
        let (tx, rx) = oneshot::channel();
        let queue = to.queue_name(&self.prefix);
        self.broker
            .deliver(&queue, Delivery { msg, reply: ReplySink::local(tx) })
            .map_err(|_| BusError::Unroutable(queue))?;
        let mut cancelled = std::pin::pin!(cancelled);
        tokio::select! {
            reply = rx => match reply {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(err)) => Err(BusError::Remote { code: err.error.code, message: err.error.message }),
                // The handler dropped the delivery without replying: as on RabbitMQ, the
                // caller learns nothing more until its deadline.
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => Err(BusError::Timeout(timeout)),
                        err = &mut cancelled => Err(err.unwrap_or_else(|_| BusError::Unavailable("the bus is closed".into()))),
                    }
                }
            },
            err = &mut cancelled => Err(err.unwrap_or_else(|_| BusError::Unavailable("the bus is closed".into()))),
            _ = tokio::time::sleep_until(deadline) => Err(BusError::Timeout(timeout)),
        }
    }

    async fn forward(&self, to: Destination, mut delivery: Delivery) -> Result<(), BusError> {
        let refused = if let Err(err) = self.check_open() {
            Some(err)
        } else {
            to.node().filter(|n| self.is_failed(Some(*n))).map(BusError::NodeGone)
        };
        if let Some(err) = refused {
            delivery.reply(Err(err.to_body())).await;
            return Err(err);
        }
        delivery.msg.hops = delivery.msg.hops.saturating_add(1);
        let queue = to.queue_name(&self.prefix);
        if let Err(back) = self.broker.deliver(&queue, delivery) {
            let err = BusError::Unroutable(queue);
            (*back).reply(Err(ErrorBody::new(ErrorCode::Unroutable, err.to_string()))).await;
            return Err(err);
        }
        Ok(())
    }

    async fn publish(&self, event: Event) -> Result<(), BusError> {
        self.check_open()?;
        // No receiver is not an error: an event nobody listens to is simply gone, as on a
        // topic exchange with no bound queue.
        let _ = self.events.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn fail_calls_to(&self, node: Uuid) {
        self.failed.write().unwrap_or_else(PoisonError::into_inner).insert(node);
        let mut pending = lock(&self.pending);
        let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.node == Some(node)).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some(call) = pending.remove(&id) {
                let _ = call.cancel.send(BusError::NodeUnavailable(node));
            }
        }
    }

    fn refuse_calls_to(&self, node: Uuid) {
        self.failed.write().unwrap_or_else(PoisonError::into_inner).insert(node);
    }

    fn node_available(&self, node: Uuid) {
        self.failed.write().unwrap_or_else(PoisonError::into_inner).remove(&node);
    }

    fn is_private(&self) -> bool {
        self.private
    }

    fn is_connected(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.broker.remove_consumers(self.node);
        for consumer_loop in lock(&self.loops).drain(..) {
            consumer_loop.abort();
        }
        for (_, call) in lock(&self.pending).drain() {
            let _ = call.cancel.send(BusError::Unavailable("the bus is closed".into()));
        }
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        // The last Bus handle is gone: stop consuming, so the broker no longer routes here.
        self.broker.remove_consumers(self.node);
        for consumer_loop in lock(&self.loops).drain(..) {
            consumer_loop.abort();
        }
    }
}
