//! Watching children: the push half of "children push, parents poll".
//!
//! The node that polls a child (the ring owner of its id) also holds one watch on it,
//! `GET /v1/zone/watch?since=<generation>`, a long poll the child answers as soon as its
//! generation passes `since` (or after `wait` with nothing new). On a new generation the node
//! re-reads the child at once through the poll path ([`Poller::poll`]), which records it and
//! moves this zone's own generation, which answers this zone's parents' watches in turn: a
//! change deep below climbs the tree one watch round trip and one poll per level, instead of
//! one poll interval per level.
//!
//! A watch that fails (the child is down, or does not serve watches) is retried after
//! [`WatchSettings::retry`]; polls stay the liveness check whatever the watches do, so a lost
//! watch costs speed, never correctness. It also speeds the liveness check up: a broken watch
//! of an online child polls the child at once (a dead child's refused connection is a failed
//! poll, and the poll loop then re-polls it within [`crate::poll::REPOLL_FAILING`]), and a
//! watch answered by an offline child polls it at once, which brings it back online. So a long
//! poll interval does not make a dead child slow to go offline, nor a restarted one to return.
//!
//! Cost at rest: one open request per child, answered every `wait` (25 s by default).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::poll::Poller;

/// How often the set of watched children is compared with the registry and the ring, besides
/// at once whenever the registry is replaced (a child added or removed: a new child is watched
/// from its zone-add, not up to a period later, or a change made at it meanwhile would wait for
/// the next poll) and whenever the sink says what it owns may have changed. Only the safety net:
/// once a second, it was a wake-up a second on every idle zone.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// How long a child is asked to hold a watch before answering "nothing new".
    pub wait: Duration,
    /// How long to wait before watching again after a watch failed.
    pub retry: Duration,
}

/// Holds one watch per child this node polls, until `stop`.
pub async fn run(poller: Arc<Poller>, settings: WatchSettings, stop: CancellationToken) {
    let mut watches: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut replaced = poller.gateway().registry().replacements();
    loop {
        replaced.borrow_and_update();
        let children = poller.gateway().registry().children();
        let mine: Vec<&str> = children.iter().filter(|c| poller.sink().owns(&c.id)).map(|c| c.id.as_str()).collect();
        watches.retain(|id, (token, task)| {
            let keep = mine.contains(&id.as_str()) && !task.is_finished();
            if !keep {
                token.cancel();
            }
            keep
        });
        for id in mine {
            if !watches.contains_key(id) {
                let token = stop.child_token();
                let task = tokio::spawn(watch_child(poller.clone(), id.to_owned(), settings.clone(), token.clone()));
                watches.insert(id.to_owned(), (token, task));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = crate::ticks::next(RECONCILE_EVERY) => {}
            Ok(()) = replaced.changed() => {}
            _ = poller.sink().ownership_changed() => {}
        }
    }
    for (_, (token, task)) in watches {
        token.cancel();
        let _ = task.await;
    }
}

/// Watches one child until it leaves the registry or `stop`.
async fn watch_child(poller: Arc<Poller>, id: String, settings: WatchSettings, stop: CancellationToken) {
    // The newest generation the child reported to a watch: what the next watch waits past, so a
    // re-read that could not be recorded does not make the watch answer at once again and again.
    let mut seen: Option<i64> = None;
    loop {
        let Some(child) = poller.gateway().registry().get(&id) else { return };
        let since = seen.map_or(child.generation, |s| s.max(child.generation));
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = poller.gateway().watch(&child, since, settings.wait, poller.timeout()) => a,
        };
        match answer {
            Ok(w) => {
                // A new generation, or one that went back (the child's database was replaced):
                // read the child again either way. An offline child that answers: read it too,
                // to bring it back now rather than at the next poll.
                if w.generation != child.generation || !child.online {
                    tracing::debug!(child = %child.name, from = child.generation, to = w.generation, "child changed; reading it");
                    let child = poller.gateway().registry().get(&id).unwrap_or(child);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = poller.poll(&child) => {}
                    }
                }
                seen = Some(w.generation);
            }
            Err(e) => {
                tracing::debug!(child = %child.name, error = %e, "watch failed; polling the child, then watching again");
                // Counts toward the failure threshold if the child is gone; costs a 304 if the
                // watch alone broke. An offline child is left to the poll loop.
                if child.online {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = poller.poll(&child) => {}
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(settings.retry) => {}
                }
            }
        }
    }
}
