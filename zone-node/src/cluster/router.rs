//! Resource services: the bus handler that puts every message about a resource through the ring
//! owner's work queue.
//!
//! A message reaches a node because some node's ring said this node owns the resource. By the
//! time its task starts that may no longer be true, so the decision is taken again then, with
//! [`Cluster::admit`]: run it, forward it to the owner (its reply still goes straight to the
//! original caller), or hold it until the previous owner has let go.

use std::sync::Arc;
use std::time::Duration;

use api::bus::Rpc;
use api::{CodedError, ErrorBody, ErrorCode};

use crate::bus::{Bus, Delivery, Destination, Handler, Message};
use crate::cluster::answered::Answered;
use crate::cluster::membership::{Admission, Cluster};
use crate::error::{Error, Result};
use crate::workqueue::WorkQueues;

/// Forwarded more than this many times, a message is failed with `ring_unstable`: the nodes'
/// views disagree for longer than any ring change should take.
const MAX_HOPS: u32 = 16;
/// After this many hops, wait a little before forwarding again, so views can settle.
const SETTLE_AFTER_HOPS: u32 = 3;
const SETTLE_DELAY: Duration = Duration::from_millis(100);

/// Where a message about resource `key` for `service` goes: the ring owner's service queue
/// (ZStack's rule for resource messages; creational and non-resource work runs on the node that
/// has it, and API messages from outside come in through the `api.portal` queue).
pub fn destination(cluster: &Cluster, service: &str, key: &str) -> Result<Destination> {
    cluster
        .route_owner(key)
        .map(|node| Destination::Node { service: service.to_owned(), node })
        .ok_or_else(|| Error::api(ErrorCode::RingUnstable, "this node has no ring yet; retry"))
}

/// Calls the ring owner of `resource` with `request` and waits, until `timeout`, for its reply.
/// The message carries its deadline, so an owner that gets it late does not start work nobody
/// waits for.
pub async fn call_owner<R: Rpc>(
    cluster: &Cluster,
    bus: &Bus,
    resource: &str,
    request: &R,
    timeout: Duration,
) -> Result<R::Reply> {
    let started = tokio::time::Instant::now();
    let deadline_ms = crate::time::local_now_ms() + timeout.as_millis() as i64;
    let mut attempt = 0u32;
    loop {
        let to = destination(cluster, R::SERVICE, resource)?;
        let mut msg = Message::rpc(request).with_resource(resource.to_owned());
        msg.deadline_ms = Some(deadline_ms);
        let left = timeout.saturating_sub(started.elapsed());
        match bus.call(to, msg, left).await {
            Ok(reply) => return Ok(crate::bus::decode_reply::<R>(&reply)?),
            // Unroutable, here or at a node that forwarded it: no queue took the message, so
            // nothing was done. The owner a view named has just left (its queue is gone before
            // every view moved on): try again on the owner of the newer view, a few times,
            // within the deadline. The same for a node this node already knows is gone (the
            // view named it a moment before it was applied): nothing was sent.
            Err(e)
                if (e.code() == ErrorCode::Unroutable || matches!(e, crate::bus::BusError::NodeGone(_)))
                    && attempt < UNROUTABLE_RETRIES
                    && left > UNROUTABLE_PAUSE * (attempt + 2) =>
            {
                attempt += 1;
                tracing::debug!(resource, attempt, error = %e, "owner's queue gone; retrying on the newer view");
                cluster.poke();
                tokio::time::sleep(UNROUTABLE_PAUSE * attempt).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How often, and after what pause (growing), a call the broker could not route is sent again.
const UNROUTABLE_RETRIES: u32 = 5;
const UNROUTABLE_PAUSE: Duration = Duration::from_millis(50);

/// The business logic of a resource service: handles one message whose resource this node owns,
/// with no other task on that resource running anywhere in the zone. It answers with the crate's
/// error; [`ResourceService`] alone turns that into the bus reply.
#[async_trait::async_trait]
pub trait ResourceHandler: Send + Sync + 'static {
    async fn handle(&self, msg: &Message) -> Result<Vec<u8>>;
}

/// A handler's outcome as the bus reply: the one place a service's error becomes an error body
/// (the resource services, and the portal for what it answers itself).
/// Internal errors are logged here in full; the caller gets the code and a generic message.
pub fn into_reply(service: &str, outcome: Result<Vec<u8>>) -> std::result::Result<Vec<u8>, ErrorBody> {
    outcome.map_err(|e| {
        if e.is_internal() {
            tracing::warn!(service, error = %e, code = %e.code(), "resource task failed");
        }
        ErrorBody::from(e)
    })
}

/// Adapts a [`ResourceHandler`] to the bus: queueing per resource, ownership checks, forwarding,
/// fencing, and answering a message delivered twice from its first run ([`Answered`]).
pub struct ResourceService<H> {
    service: String,
    cluster: Cluster,
    bus: Bus,
    work: WorkQueues,
    handler: Arc<H>,
    answered: Arc<Answered>,
}

impl<H: ResourceHandler> ResourceService<H> {
    pub fn new(service: &str, cluster: Cluster, bus: Bus, work: WorkQueues, handler: H) -> Self {
        ResourceService {
            service: service.to_owned(),
            cluster,
            bus,
            work,
            handler: Arc::new(handler),
            answered: Arc::new(Answered::new()),
        }
    }
}

#[async_trait::async_trait]
impl<H: ResourceHandler> Handler for ResourceService<H> {
    async fn handle(&self, delivery: Delivery) {
        let Some(key) = delivery.msg.resource_id.clone() else {
            let error = ErrorBody::new(
                ErrorCode::InvalidBody,
                format!("a {} message needs the x-resource-id header", self.service),
            );
            delivery.reply(Err(error)).await;
            return;
        };
        let (service, cluster, bus, handler, answered) =
            (self.service.clone(), self.cluster.clone(), self.bus.clone(), self.handler.clone(), self.answered.clone());
        self.work.submit(&key.clone(), move || async move {
            run_owned(&service, &key, cluster, bus, handler, &answered, delivery).await;
        });
    }
}

/// Runs one task, inside its resource's queue slot.
async fn run_owned<H: ResourceHandler>(
    service: &str,
    key: &str,
    cluster: Cluster,
    bus: Bus,
    handler: Arc<H>,
    answered: &Answered,
    delivery: Delivery,
) {
    let mut settled = false;
    loop {
        if expired(&delivery.msg) {
            // Nobody waits for the answer any more; doing the work now could surprise the caller.
            delivery
                .reply(Err(ErrorBody::new(ErrorCode::Timeout, "the message's deadline passed before it could run")))
                .await;
            return;
        }
        match cluster.admit(key) {
            Admission::Run => {
                if let Some(reply) = answered.get(&delivery.msg.id) {
                    tracing::debug!(service, resource = key, id = %delivery.msg.id, "delivered again; answered from its first run");
                    delivery.reply(Ok(reply)).await;
                    return;
                }
                let outcome = tokio::select! {
                    outcome = handler.handle(&delivery.msg) => outcome,
                    // Fenced mid-task: peers may take this resource over, so stop touching it.
                    _ = cluster.stopped_serving() => Err(Error::api(ErrorCode::NodeFenced, "the node stopped serving while the task ran")),
                };
                let reply = into_reply(service, outcome);
                // Only what was done is remembered: an error changed nothing (or says to retry),
                // so the message may run again.
                if let Ok(body) = &reply {
                    answered.remember(delivery.msg.id, body.clone());
                }
                delivery.reply(reply).await;
                return;
            }
            Admission::Forward(owner) => {
                if delivery.msg.hops >= MAX_HOPS {
                    let error = ErrorBody::new(ErrorCode::RingUnstable, "the zone's ring did not settle; retry");
                    delivery.reply(Err(error)).await;
                    return;
                }
                if delivery.msg.hops >= SETTLE_AFTER_HOPS && !settled {
                    // Bounced between nodes whose views differ: let the views settle, then decide
                    // again on the newer one (the owner named before the pause may be gone).
                    tokio::time::sleep(SETTLE_DELAY).await;
                    settled = true;
                    continue;
                }
                // The bus counts the hop (`x-hops`) as it forwards.
                tracing::debug!(service, resource = key, to = %owner, hops = delivery.msg.hops, "forwarding to the ring owner");
                // A failed forward already answered the caller with the bus error, or the bus
                // could not reach the caller either: nothing more to do here.
                if let Err(error) =
                    bus.forward(Destination::Node { service: service.to_owned(), node: owner }, delivery).await
                {
                    tracing::warn!(service, resource = key, to = %owner, %error, "forward failed");
                }
                return;
            }
            Admission::Hold => {
                // Wait for the view (or this node's serving state) to change, or the deadline.
                let wait = deadline_left(&delivery.msg).unwrap_or(Duration::from_secs(60));
                if tokio::time::timeout(wait, cluster.changed()).await.is_err() {
                    continue; // re-checked as expired at the top
                }
            }
            Admission::Stop => {
                let error = ErrorBody::new(ErrorCode::NodeFenced, "this node does not serve resources now; retry");
                delivery.reply(Err(error)).await;
                return;
            }
        }
    }
}

fn expired(msg: &Message) -> bool {
    matches!(deadline_left(msg), Some(left) if left.is_zero())
}

fn deadline_left(msg: &Message) -> Option<Duration> {
    let deadline = msg.deadline_ms?;
    let left = deadline - crate::time::local_now_ms();
    Some(Duration::from_millis(left.max(0) as u64))
}
