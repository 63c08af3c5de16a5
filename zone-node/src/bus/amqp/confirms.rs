//! Publisher confirms and returned messages: what the broker did with each publish.
//!
//! Every request, forward and event goes out on one channel in confirm mode; requests and
//! forwards also with `mandatory`, so the broker tells us at once (basic.return then basic.ack)
//! when no queue takes a message, and the caller gets `Unroutable` instead of a timeout.
//!
//! # Ordering of confirms
//! lapin numbers a publish (`delivery_tag`) before it queues its frames, so two tasks
//! publishing at once on one channel could queue their frames in the other order and have their
//! confirmations swapped; [`Publisher::publish`] therefore runs that synchronous first step under
//! a small mutex, which also gives every publish a sequence number. lapin hands a returned
//! message to the next confirmation that completes, not necessarily the returned message's own
//! (the broker batches and may reorder acks), and that carrier may belong to a publish whose task
//! has not yet picked up its confirmation. The confirm tracker (one task per connection)
//! therefore settles a confirmed publish only when every carrier that could hold its returned
//! message has been seen (see `track_confirms`), and matches returned messages to their publish
//! by (`message_id`, `correlation_id`), so `Unroutable` always reaches the right caller.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::unavailable;
use crate::bus::pending::lock;
use crate::bus::BusError;

/// What the broker said about one confirmed publish.
#[derive(Debug)]
pub(super) enum Outcome {
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

/// The confirm-mode channel of one connection, with its tracker task.
pub(super) struct Publisher {
    channel: Channel,
    /// Serialises the numbering-and-queueing step of publishes (see the module docs); holds the
    /// sequence number of the next publish.
    order: Arc<Mutex<u64>>,
    confirms: mpsc::UnboundedSender<Track>,
    /// The connection's: cancelled when a publish fails, and it ends the tracker.
    dead: CancellationToken,
}

impl Publisher {
    /// Takes `channel` (already in confirm mode) and starts its confirm tracker.
    pub(super) fn start(channel: Channel, dead: CancellationToken) -> Publisher {
        let (confirms, confirms_rx) = mpsc::unbounded_channel();
        let order = Arc::new(Mutex::new(0));
        tokio::spawn(track_confirms(confirms_rx, order.clone(), dead.clone()));
        Publisher { channel, order, confirms, dead }
    }

    /// Publishes; the returned receiver says what the broker did with the message.
    pub(super) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<oneshot::Receiver<Outcome>, BusError> {
        let key = return_key(&props);
        let options = BasicPublishOptions { mandatory, immediate: false };
        let (exchange, routing_key) = (ShortString::from(exchange), ShortString::from(routing_key));
        let mut publish = std::pin::pin!(self.channel.basic_publish(exchange, routing_key, options, body, props));
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
