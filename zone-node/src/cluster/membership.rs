//! Membership: heartbeats, eviction, fencing, and ring handoff.
//!
//! Every node stamps a heartbeat row with the database clock each tick, evicts peers whose
//! heartbeat is older than `dead_after`, and re-reads the membership rows. Each membership change
//! bumps a zone-wide ring epoch in the same transaction, so a node knows at once whether its view
//! is current; join/leave events on the bus only make nodes look sooner.
//!
//! # One resource, one node
//! Two rings are derived from the rows: the *route* ring (alive and joining nodes: where new work
//! goes) and the *running* ring (alive and leaving nodes: who may be working right now).
//! [`Cluster::admit`] decides, at the moment a task is about to start, whether this node runs it,
//! forwards it to the route owner, or holds it:
//! - a joining node holds all its work until it is alive, and it becomes alive only when every
//!   other live node has acknowledged an epoch at least that of its join; a node acknowledges an
//!   epoch after applying it and draining in-flight tasks on keys it no longer owns. So the old
//!   owner has stopped before the new one starts.
//! - an alive node holds keys whose running-ring owner is a leaving node until that node is gone.
//! - a dead node was fenced first: a node that cannot stamp its heartbeat for `dead_after / 2`
//!   stops serving (its running tasks are cancelled) before peers, waiting `dead_after`, evict it.
//!   A node that finds its row evicted stops for good.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use api::bus::{NodeEvent, NodeEventKind};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Bus, Event};
use crate::cluster::ring::Ring;
use crate::store::{Membership, NodeRow, Store};
use crate::workqueue::WorkQueues;

/// How long dead and departed node rows stay visible in `GET /v1/zone`.
const PURGE_AFTER: Duration = Duration::from_secs(3600);
/// Purge old rows every this many ticks.
const PURGE_EVERY_TICKS: u64 = 60;
/// How often a node alone in its view reads the membership rows when nothing says they changed.
const SOLO_READ_EVERY_TICKS: u64 = 10;
/// How many heartbeat intervals a node on a private bus (`memory://`, the embedded default) lets
/// pass between ticks while it serves: no peer can reach it, so no peer reads its heartbeat to
/// evict it, and the heartbeat only tells the node that its database still answers. (Its
/// `SOLO_READ_EVERY_TICKS` and `PURGE_EVERY_TICKS` count these longer ticks.)
const PRIVATE_TICK_EVERY: u32 = 5;
/// How long a node that left keeps its bus open with no message arriving before it closes.
const LEAVE_QUIET: Duration = Duration::from_millis(300);

/// The longest a node that left keeps forwarding what still arrives.
const LEFT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long calls pending on a node that left on its own may still be answered (by the new owners
/// it forwarded them to) before they fail.
const LEFT_GRACE: Duration = Duration::from_secs(10);

/// The longest a graceful leave waits for in-flight work before leaving anyway.
const LEAVE_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum NodeState {
    Joining,
    Alive,
    Leaving,
    Left,
    Dead,
}

impl NodeState {
    /// The state's name in the `nodes` table (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Reads a stored state; one this node does not know counts as `Dead` (not live).
    pub fn parse(text: &str) -> NodeState {
        text.parse().unwrap_or(NodeState::Dead)
    }

    /// Still heartbeating and part of the zone.
    pub fn is_live(self) -> bool {
        matches!(self, NodeState::Joining | NodeState::Alive | NodeState::Leaving)
    }
}

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub heartbeat_interval: Duration,
    pub dead_after: Duration,
    pub virtual_nodes: u32,
}

/// One membership snapshot and the rings derived from it.
#[derive(Debug, Clone)]
pub struct View {
    pub epoch: i64,
    pub nodes: Vec<NodeRow>,
    /// Alive and joining nodes: where new work goes.
    pub route: Ring,
    /// Alive and leaving nodes: who may be running work now.
    pub running: Ring,
    pub leaving: HashSet<Uuid>,
}

impl View {
    fn from_membership(m: &Membership, virtual_nodes: u32) -> View {
        let state = |n: &NodeRow| NodeState::parse(&n.state);
        let route = Ring::new(
            m.nodes.iter().filter(|n| matches!(state(n), NodeState::Alive | NodeState::Joining)).map(|n| n.id),
            virtual_nodes,
        );
        let running = Ring::new(
            m.nodes.iter().filter(|n| matches!(state(n), NodeState::Alive | NodeState::Leaving)).map(|n| n.id),
            virtual_nodes,
        );
        let leaving = m.nodes.iter().filter(|n| state(n) == NodeState::Leaving).map(|n| n.id).collect();
        View { epoch: m.epoch, nodes: m.nodes.clone(), route, running, leaving }
    }

    pub fn state_of(&self, node: Uuid) -> Option<NodeState> {
        self.nodes.iter().find(|n| n.id == node).map(|n| NodeState::parse(&n.state))
    }
}

/// What a node does with a task on a resource, decided when the task is about to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// This node owns the resource and nobody else may be working on it.
    Run,
    /// Another node owns it: hand the message over.
    Forward(Uuid),
    /// This node will own it, but the previous owner may still be working on it: wait.
    Hold,
    /// This node does not serve (fenced, paused or gone).
    Stop,
}

struct Inner {
    me: Uuid,
    api_url: String,
    store: Store,
    bus: Bus,
    work: WorkQueues,
    settings: ClusterSettings,
    view: RwLock<Arc<View>>,
    /// The epoch of the applied view; receivers wake on every change.
    applied: watch::Sender<i64>,
    /// Whether this node serves resource work now; tasks are cancelled when it turns false.
    serving: watch::Sender<bool>,
    /// The epoch at which this node's row was inserted.
    join_epoch: AtomicI64,
    /// Set once peers have evicted this node: terminal.
    evicted: CancellationToken,
    /// Set when this node starts a graceful leave.
    leaving: AtomicBool,
    last_heartbeat_ok: Mutex<Instant>,
    /// This node evicts nobody before this instant. After a failed heartbeat it is unset (no
    /// eviction at all) until heartbeats succeed again, then set a full `dead_after` ahead: the
    /// peers that were cut off with this node (a database outage) get the same time to write
    /// theirs before anyone judges them by heartbeats none of them could write.
    evict_from: Mutex<Option<Instant>>,
    /// Wakes the tick loop early (membership events from peers).
    poke: Notify,
}

/// This node's membership in its zone. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl Cluster {
    /// A cluster handle with an empty view. Register this node's bus services next, then
    /// [`Cluster::join`], so peers never route to a queue that does not exist yet.
    pub fn new(
        store: Store,
        bus: Bus,
        work: WorkQueues,
        settings: ClusterSettings,
        me: Uuid,
        api_url: String,
    ) -> Cluster {
        let empty = Membership { epoch: -1, now_ms: 0, nodes: Vec::new() };
        let view = Arc::new(View::from_membership(&empty, settings.virtual_nodes));
        let (applied, _) = watch::channel(view.epoch);
        let (serving, _) = watch::channel(false);
        Cluster {
            inner: Arc::new(Inner {
                me,
                api_url,
                store,
                bus,
                work,
                settings,
                view: RwLock::new(view),
                applied,
                serving,
                join_epoch: AtomicI64::new(i64::MAX),
                evicted: CancellationToken::new(),
                leaving: AtomicBool::new(false),
                last_heartbeat_ok: Mutex::new(Instant::now()),
                evict_from: Mutex::new(Some(Instant::now())),
                poke: Notify::new(),
            }),
        }
    }

    /// Inserts this node's row (state `joining`) and reads the first view. Call
    /// [`Cluster::spawn`] next to start heartbeating; the node becomes alive once its peers have
    /// handed over.
    pub async fn join(&self) -> crate::error::Result<()> {
        let inner = &self.inner;
        let join_epoch = inner.store.node_join(inner.me, &inner.api_url, false).await?;
        inner.join_epoch.store(join_epoch, Ordering::SeqCst);
        *inner.last_heartbeat_ok.lock().expect("heartbeat lock poisoned") = Instant::now();
        self.refresh().await?;
        tracing::info!(node = %inner.me, epoch = join_epoch, "joined zone as joining");
        self.inner.poke.notify_one();
        self.publish(NodeEventKind::Joined).await;
        Ok(())
    }

    /// Starts the tick loop (heartbeat, eviction, reconcile, join completion), the drainer (acks
    /// epochs once moved work has drained) and the event listener. They stop on `shutdown`.
    pub fn spawn(&self, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let ticker = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { this.tick_loop(shutdown).await })
        };
        let drainer = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { this.drain_loop(shutdown).await })
        };
        let listener = {
            let this = self.clone();
            tokio::spawn(async move { this.event_loop(shutdown).await })
        };
        vec![ticker, drainer, listener]
    }

    pub fn me(&self) -> Uuid {
        self.inner.me
    }

    pub fn view(&self) -> Arc<View> {
        self.inner.view.read().expect("view lock poisoned").clone()
    }

    pub fn my_state(&self) -> NodeState {
        self.view().state_of(self.inner.me).unwrap_or(NodeState::Dead)
    }

    /// True from this node's first failed heartbeat until its next good one: the zone's database
    /// cannot be reached from here, so requests are answered 503 at once (`http::server::fence`)
    /// instead of each waiting out the connection pool.
    pub fn database_lost(&self) -> bool {
        self.inner.evict_from.lock().expect("eviction lock poisoned").is_none()
    }

    /// Runs the next membership tick now (re-reads the view), as a peer's event would.
    pub fn poke(&self) {
        self.inner.poke.notify_one();
    }

    /// Serving resource work: alive (or leaving) per the applied view, heartbeat fresh, not evicted.
    pub fn is_serving(&self) -> bool {
        *self.inner.serving.borrow()
    }

    /// Resolves when peers have evicted this node; the node must stop.
    pub fn evicted(&self) -> CancellationToken {
        self.inner.evicted.clone()
    }

    /// The node that should receive new work on `key`.
    pub fn route_owner(&self, key: &str) -> Option<Uuid> {
        self.view().route.owner(key)
    }

    /// Whether this node may start a task on `key` now (see the module docs).
    pub fn admit(&self, key: &str) -> Admission {
        let view = self.view();
        let me = self.inner.me;
        let Some(owner) = view.route.owner(key) else {
            // No ring yet: this node has inserted its row but not read its first view, and peers
            // that already read the row may route here. Wait for the view (the message's deadline
            // bounds the wait); without a ring after that, this node is gone.
            return if view.epoch < 0 && !self.inner.evicted.is_cancelled() {
                Admission::Hold
            } else {
                Admission::Stop
            };
        };
        if owner != me {
            return Admission::Forward(owner);
        }
        if !self.is_serving() {
            // Joining (not yet handed over) or paused (heartbeat stale): hold, bounded by the
            // message's deadline. Evicted or gone: refuse, the caller should use another node.
            return match view.state_of(me) {
                Some(state) if state.is_live() && !self.inner.evicted.is_cancelled() => Admission::Hold,
                _ => Admission::Stop,
            };
        }
        match view.running.owner(key) {
            Some(running) if running == me => Admission::Run,
            // The previous owner is leaving (or, in a view that is still settling, another node):
            // wait until it is gone.
            Some(_) => Admission::Hold,
            None => Admission::Hold,
        }
    }

    /// Resolves at the next applied view change or serving change, whichever first.
    pub async fn changed(&self) {
        let mut applied = self.inner.applied.subscribe();
        let mut serving = self.inner.serving.subscribe();
        tokio::select! {
            _ = applied.changed() => {}
            _ = serving.changed() => {}
        }
    }

    /// Resolves when this node stops serving (fenced, paused, evicted). Tasks select on it.
    pub async fn stopped_serving(&self) {
        let mut rx = self.inner.serving.subscribe();
        let _ = rx.wait_for(|serving| !serving).await;
    }

    /// The last heartbeat this node managed to write, for `/readyz`.
    pub fn heartbeat_age(&self) -> Duration {
        self.inner.last_heartbeat_ok.lock().expect("heartbeat lock poisoned").elapsed()
    }

    // ------------------------------------------------------------------------------------------
    // the loops

    async fn tick_loop(&self, shutdown: CancellationToken) {
        let mut ticks: u64 = 0;
        loop {
            self.tick(ticks).await;
            ticks += 1;
            if self.inner.evicted.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // On the process's tick grid, so the node's periodic loops wake together.
                _ = federation::ticks::next(self.tick_period()) => {}
                _ = self.inner.poke.notified() => {}
            }
        }
    }

    async fn tick(&self, ticks: u64) {
        let inner = &self.inner;
        // 0. Forget long-gone nodes.
        if ticks > 0 && ticks.is_multiple_of(PURGE_EVERY_TICKS) {
            if let Err(error) = inner.store.nodes_purge(PURGE_AFTER.as_millis() as i64).await {
                tracing::warn!(%error, "purging old node rows failed");
            }
        }
        // 1. Heartbeat. A node that cannot write it for half the eviction timeout stops serving
        //    before its peers (waiting the full timeout) could take over its resources.
        // Bounded below the pool's 5 s acquire timeout: with the database down every query waits
        // that long, and the node should know (and fence) sooner. Half of `dead_after`, the age at
        // which it pauses its work anyway, so a heartbeat merely queued behind a burst of writes
        // (SQLite has one writer) does not fence a healthy node.
        let bound = inner.settings.dead_after / 2;
        let heartbeat = match tokio::time::timeout(bound, inner.store.node_heartbeat(inner.me)).await {
            Ok(result) => result,
            Err(_) => Err(crate::store::StoreError::Unavailable(format!("no answer within {bound:?}"))),
        };
        let epoch = match heartbeat {
            Ok(Some(epoch)) => {
                *inner.last_heartbeat_ok.lock().expect("heartbeat lock poisoned") = Instant::now();
                let mut evict_from = inner.evict_from.lock().expect("eviction lock poisoned");
                if evict_from.is_none() {
                    tracing::warn!(node = %inner.me, wait_ms = inner.settings.dead_after.as_millis() as u64,
                        "heartbeats written again; evicting nobody until they have been for the eviction timeout");
                    *evict_from = Some(Instant::now() + inner.settings.dead_after);
                }
                epoch
            }
            Ok(None) => {
                tracing::error!(node = %inner.me, "this node was evicted by its peers; stopping");
                inner.serving.send_replace(false);
                inner.evicted.cancel();
                return;
            }
            Err(error) => {
                *inner.evict_from.lock().expect("eviction lock poisoned") = None;
                let age = self.heartbeat_age();
                tracing::warn!(node = %inner.me, %error, age_ms = age.as_millis() as u64, "heartbeat failed");
                if age >= inner.settings.dead_after / 2 && *inner.serving.borrow() {
                    tracing::error!(node = %inner.me, "heartbeat stale for half the eviction timeout; pausing work");
                    inner.serving.send_replace(false);
                }
                return;
            }
        };
        // 2–4. Reconcile the view with the database, evict, join. A node alone in its view whose
        //    epoch has not moved has nothing to learn from the rows: no peer to evict (a joiner's
        //    row moves the epoch), no join of its own to finish. It reads them only every
        //    `SOLO_READ_EVERY_TICKS`, as the safety net, which makes its tick one statement.
        if !self.alone_and_unchanged(epoch) || ticks.is_multiple_of(SOLO_READ_EVERY_TICKS) {
            self.reconcile().await;
        }
    }

    /// The time to the next tick: the heartbeat interval, or [`PRIVATE_TICK_EVERY`]
    /// of them for a node on a private bus that serves alone, alive, with its last heartbeat
    /// written (a tick after a failed one comes at the usual interval, to lift the fence soon).
    /// An idle embedded zone wakes for its heartbeat every 5 s instead of every second.
    fn tick_period(&self) -> Duration {
        let interval = self.inner.settings.heartbeat_interval;
        if self.inner.bus.is_private() && !self.database_lost() && self.alone_and_unchanged(self.view().epoch) {
            interval.saturating_mul(PRIVATE_TICK_EVERY)
        } else {
            interval
        }
    }

    /// Whether this node serves alone (no other live node in its view), alive, and `epoch` (the
    /// database's, as its heartbeat read it) is the one of its view.
    fn alone_and_unchanged(&self, epoch: i64) -> bool {
        let view = self.view();
        let me = self.inner.me;
        view.epoch == epoch
            && *self.inner.serving.borrow()
            && view.state_of(me) == Some(NodeState::Alive)
            && view.nodes.iter().all(|n| n.id == me || !NodeState::parse(&n.state).is_live())
    }

    /// Steps 2–4 of a tick: read the membership and apply it, evict stale peers, finish a join.
    async fn reconcile(&self) {
        let inner = &self.inner;
        // 2. Reconcile the view with the database: the safety net under the events.
        let mut membership = match self.refresh().await {
            Ok(membership) => membership,
            Err(error) => {
                tracing::warn!(%error, "membership read failed");
                return;
            }
        };
        // 3. Evict peers that stopped heartbeating, unless this node itself was cut off lately.
        //    The rows just read carry the database clock, so they say whether anyone is stale:
        //    the eviction (a locking transaction that checks again) runs only then, and the view
        //    is read again to apply it.
        let dead_after_ms = inner.settings.dead_after.as_millis() as i64;
        let evict_from = *inner.evict_from.lock().expect("eviction lock poisoned");
        if may_evict(evict_from, Instant::now()) && any_stale(&membership, dead_after_ms) {
            match inner.store.nodes_evict_stale(dead_after_ms).await {
                Ok(evicted) => {
                    for node in &evicted {
                        tracing::warn!(node = %node, "evicted a node that stopped heartbeating");
                        inner.bus.fail_calls_to(*node);
                        self.publish_about(NodeEventKind::Evicted, *node).await;
                    }
                    if !evicted.is_empty() {
                        match self.refresh().await {
                            Ok(fresh) => membership = fresh,
                            Err(error) => {
                                tracing::warn!(%error, "membership read failed");
                                return;
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "eviction check failed"),
            }
        }
        // 4. A joining node becomes alive once every other live node has applied its join.
        if self.my_state() == NodeState::Joining && !inner.leaving.load(Ordering::SeqCst) {
            self.try_become_alive(&membership).await;
        }
    }

    /// Reads membership and applies it if the epoch moved. Returns the rows read: fresher than
    /// the view, whose rows only change with the epoch (acknowledgements do not bump it).
    async fn refresh(&self) -> crate::error::Result<Membership> {
        let membership = self.inner.store.membership().await?;
        let current = self.view();
        let state = membership
            .nodes
            .iter()
            .find(|n| n.id == self.inner.me)
            .map_or(NodeState::Dead, |n| NodeState::parse(&n.state));
        // Serving follows the row: alive or leaving, and not evicted. It is switched before the
        // view is applied, because applying wakes held tasks, which must see both together.
        let should_serve = matches!(state, NodeState::Alive | NodeState::Leaving) && !self.inner.evicted.is_cancelled();
        if *self.inner.serving.borrow() != should_serve {
            tracing::info!(node = %self.inner.me, serving = should_serve, state = state.as_str(), "serving changed");
            self.inner.serving.send_replace(should_serve);
        }
        // The rings only change with the epoch: build them then, not on every heartbeat (two
        // rings of 128 virtual nodes per node, the larger part of an idle node's own work).
        if membership.epoch != current.epoch {
            let fresh = Arc::new(View::from_membership(&membership, self.inner.settings.virtual_nodes));
            self.apply(current, fresh);
        }
        Ok(membership)
    }

    fn apply(&self, old: Arc<View>, new: Arc<View>) {
        // The new view first: from here on no task picks a node that is gone, so a call or
        // forward refused below for such a node can only come from a decision made on the old
        // view (and `call_owner` sends it again on this one).
        let epoch = new.epoch;
        *self.inner.view.write().expect("view lock poisoned") = new.clone();
        // Calls still waiting on nodes that are gone fail now rather than at their deadline;
        // except on a node that left on its own: it forwards what it still receives to the new
        // owners, whose answers come straight back to the callers, so its calls are failed only
        // if still waiting a grace period later (a message lost with its queue).
        for node in old.nodes.iter().filter(|n| NodeState::parse(&n.state).is_live()) {
            let now = new.state_of(node.id);
            let gone = !now.map(NodeState::is_live).unwrap_or(false);
            if !gone || node.id == self.inner.me {
                continue;
            }
            if now == Some(NodeState::Left) {
                self.inner.bus.refuse_calls_to(node.id);
                let (bus, node) = (self.inner.bus.clone(), node.id);
                tokio::spawn(async move {
                    tokio::time::sleep(LEFT_GRACE).await;
                    bus.fail_calls_to(node);
                });
            } else {
                self.inner.bus.fail_calls_to(node.id);
            }
        }
        tracing::info!(
            node = %self.inner.me,
            epoch = new.epoch,
            route = new.route.nodes().len(),
            running = new.running.nodes().len(),
            "applied membership view"
        );
        self.inner.applied.send_replace(epoch);
    }

    async fn try_become_alive(&self, membership: &Membership) {
        let inner = &self.inner;
        let join_epoch = inner.join_epoch.load(Ordering::SeqCst);
        let waiting_on: Vec<Uuid> = membership
            .nodes
            .iter()
            .filter(|n| n.id != inner.me && NodeState::parse(&n.state).is_live() && n.applied_epoch < join_epoch)
            .map(|n| n.id)
            .collect();
        if !waiting_on.is_empty() {
            tracing::debug!(node = %inner.me, ?waiting_on, "waiting for peers to hand over");
            return;
        }
        match inner.store.node_transition(inner.me, &["joining"], "alive").await {
            Ok(true) => {
                tracing::info!(node = %inner.me, "peers handed over; this node is alive");
                self.publish(NodeEventKind::Alive).await;
                if let Err(error) = self.refresh().await {
                    tracing::warn!(%error, "membership read failed");
                }
            }
            Ok(false) => tracing::warn!(node = %inner.me, "could not become alive: row no longer joining"),
            Err(error) => tracing::warn!(%error, "becoming alive failed"),
        }
    }

    /// Acknowledges each applied epoch once no task runs here on a key this node no longer owns.
    async fn drain_loop(&self, shutdown: CancellationToken) {
        let mut applied = self.inner.applied.subscribe();
        let mut acked = i64::MIN;
        loop {
            let view = self.view();
            if view.epoch != acked {
                let me = self.inner.me;
                let route = view.route.clone();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.inner.work.wait_idle(move |key| route.owner(key) != Some(me)) => {}
                }
                match self.inner.store.node_ack_epoch(me, view.epoch).await {
                    Ok(()) => {
                        acked = view.epoch;
                        tracing::debug!(node = %me, epoch = view.epoch, "acknowledged epoch");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "acknowledging epoch failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(self.inner.settings.heartbeat_interval) => {}
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = applied.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Membership events from peers make this node reconcile at once instead of at its next tick.
    async fn event_loop(&self, shutdown: CancellationToken) {
        let mut events = self.inner.bus.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Ok(event) if NodeEventKind::of(&event.kind).is_some() && event.source != self.inner.me => {
                        self.inner.poke.notify_one();
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.inner.poke.notify_one(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // leaving

    /// Leaves the zone gracefully: stop taking new work (it is forwarded to the new owners, who
    /// hold it), drain what runs, then mark the row `left`.
    pub async fn leave(&self) {
        let inner = &self.inner;
        if inner.evicted.is_cancelled() || inner.leaving.swap(true, Ordering::SeqCst) {
            return;
        }
        match inner.store.node_transition(inner.me, &["joining", "alive"], "leaving").await {
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "marking this node leaving failed"),
        }
        self.publish(NodeEventKind::Leaving).await;
        let _ = self.refresh().await;
        if tokio::time::timeout(LEAVE_DRAIN_TIMEOUT, inner.work.wait_idle(|_| true)).await.is_err() {
            tracing::warn!(node = %inner.me, "in-flight work did not finish in time; leaving anyway");
        }
        inner.serving.send_replace(false);
        match inner.store.node_transition(inner.me, &["leaving", "joining", "alive"], "left").await {
            Ok(_) => tracing::info!(node = %inner.me, "left the zone"),
            Err(error) => tracing::warn!(%error, "marking this node left failed; peers will evict it"),
        }
        self.publish(NodeEventKind::Left).await;
        // Messages sent to this node before its peers saw it go may still arrive (in the queue,
        // or in the consumer's buffer). Each is forwarded to its new owner (`admit`: this node
        // owns nothing now), and the peers wait for those answers (`apply`), so keep the bus
        // open until nothing has arrived for a moment.
        let drained = async {
            loop {
                let seen = inner.work.submitted();
                inner.work.wait_idle(|_| true).await;
                tokio::time::sleep(LEAVE_QUIET).await;
                if inner.work.submitted() == seen {
                    return;
                }
            }
        };
        if tokio::time::timeout(LEFT_DRAIN_TIMEOUT, drained).await.is_err() {
            tracing::warn!(node = %inner.me, "messages kept arriving after leaving; closing anyway");
        }
    }

    async fn publish(&self, kind: NodeEventKind) {
        self.publish_about(kind, self.inner.me).await
    }

    async fn publish_about(&self, kind: NodeEventKind, node: Uuid) {
        let api_url = (node == self.inner.me).then(|| self.inner.api_url.clone());
        let body = serde_json::to_vec(&NodeEvent { node_id: node, api_url }).unwrap_or_default();
        let event = Event::new(kind.kind(), self.inner.me, body);
        if let Err(error) = self.inner.bus.publish(event).await {
            // Events only speed things up; the tick reconciles without them.
            tracing::debug!(%error, kind = kind.kind(), "publishing membership event failed");
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// Whether a node may evict peers now: it has not failed a heartbeat since `evict_from` was set
/// (`None`: it is failing now) and that instant has passed.
fn may_evict(evict_from: Option<Instant>, now: Instant) -> bool {
    evict_from.is_some_and(|from| now >= from)
}

/// Whether a live node's heartbeat is older than `dead_after_ms` by the clock of the same read
/// (the test `nodes_evict_stale` makes before it locks anything).
fn any_stale(membership: &Membership, dead_after_ms: i64) -> bool {
    membership
        .nodes
        .iter()
        .any(|n| NodeState::parse(&n.state).is_live() && n.heartbeat_ms < membership.now_ms - dead_after_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_cut_off_evicts_nobody_until_it_has_heartbeated_for_the_timeout() {
        let now = Instant::now();
        assert!(may_evict(Some(now), now), "a node that never failed evicts at once");
        assert!(!may_evict(None, now), "a node failing its heartbeats evicts nobody");
        let recovered = Some(now + Duration::from_secs(5));
        assert!(!may_evict(recovered, now + Duration::from_secs(4)), "nor within dead_after of recovering");
        assert!(may_evict(recovered, now + Duration::from_secs(5)));
    }

    #[test]
    fn only_a_live_node_past_the_timeout_by_the_database_clock_is_stale() {
        let row = |state: &str, heartbeat_ms: i64| NodeRow {
            id: Uuid::new_v4(),
            api_url: String::new(),
            state: state.into(),
            joined_at_ms: 0,
            heartbeat_ms,
            applied_epoch: 0,
        };
        let at = |nodes: Vec<NodeRow>| Membership { epoch: 1, now_ms: 10_000, nodes };
        assert!(!any_stale(&at(vec![row("alive", 5_000)]), 5_000), "exactly dead_after old is not stale yet");
        assert!(any_stale(&at(vec![row("alive", 5_000), row("joining", 4_999)]), 5_000));
        assert!(any_stale(&at(vec![row("leaving", 1)]), 5_000));
        assert!(!any_stale(&at(vec![row("dead", 1), row("left", 1)]), 5_000), "gone nodes are not evicted again");
        assert!(!any_stale(&at(vec![]), 5_000));
    }

    #[test]
    fn node_state_names_are_the_stored_ones() {
        use strum::IntoEnumIterator as _;
        let names: Vec<&str> = NodeState::iter().map(NodeState::as_str).collect();
        assert_eq!(names, ["joining", "alive", "leaving", "left", "dead"]);
        for state in NodeState::iter() {
            assert_eq!((NodeState::parse(state.as_str()), state.to_string()), (state, state.as_str().into()));
        }
        assert_eq!(NodeState::parse("from_a_newer_node"), NodeState::Dead);
    }

    #[tokio::test]
    async fn a_node_on_a_private_bus_ticks_every_fifth_interval_while_it_serves_alone() {
        let shared = format!("memory://shared-{}", Uuid::new_v4());
        let second = Duration::from_secs(1);
        for (url, settled) in [("memory://", 5 * second), (shared.as_str(), second)] {
            let me = Uuid::new_v4();
            let store = Store::connect("sqlite::memory:").await.unwrap();
            let bus = Bus::connect(url, "t", me).await.unwrap();
            let settings = ClusterSettings { heartbeat_interval: second, dead_after: 5 * second, virtual_nodes: 8 };
            let cluster = Cluster::new(store, bus, WorkQueues::new(), settings, me, "http://127.0.0.1:1".into());
            cluster.join().await.unwrap();
            assert_eq!(cluster.tick_period(), second, "{url}: joining, the node ticks every interval");
            let mut ticks = 0;
            while !cluster.is_serving() && ticks < 10 {
                cluster.tick(ticks).await;
                ticks += 1;
            }
            assert!(cluster.is_serving(), "{url}: alone, the node is alive after a few ticks");
            assert_eq!(cluster.tick_period(), settled, "{url}: serving alone");
            // A failed heartbeat (the database lost): every interval again, to lift the fence soon.
            *cluster.inner.evict_from.lock().unwrap() = None;
            assert_eq!(cluster.tick_period(), second, "{url}: after a failed heartbeat");
        }
    }

    #[tokio::test]
    async fn a_node_without_its_first_view_holds_work_instead_of_refusing_it() {
        let me = Uuid::new_v4();
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let bus = Bus::connect("memory://", "t", me).await.unwrap();
        let settings = ClusterSettings {
            heartbeat_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            virtual_nodes: 8,
        };
        let cluster = Cluster::new(store, bus, WorkQueues::new(), settings, me, "http://127.0.0.1:1".into());
        // Peers may route here between the row insert and the first view: hold, do not refuse.
        assert_eq!(cluster.admit("some-resource"), Admission::Hold);
        cluster.inner.evicted.cancel();
        assert_eq!(cluster.admit("some-resource"), Admission::Stop, "an evicted node refuses");
    }
}
