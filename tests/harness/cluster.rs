//! One zone of several nodes: the shape most end-to-end tests start from.
//!
//! [`Cluster::start`] gives the zone a fresh PostgreSQL database and a bus prefix of its own on the
//! shared RabbitMQ broker, starts the first node alone (it creates the schema and the bootstrap admin),
//! then the others side by side, and returns once every node is ready and every node lists exactly the
//! running nodes as alive ([`Cluster::wait_converged`]).
//!
//! Nodes are indexed in start order and keep their index when stopped or restarted. Failures name the
//! zone, the condition and show every node's log tail.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::db::TestDb;
use crate::node::{NodeProcess, NodeSpec, DEFAULT_READY_TIMEOUT};
use crate::poll::{poll_until_detailed, Outcome, DEFAULT_POLL_INTERVAL};
use crate::services;

/// Heartbeat interval of test nodes: faster than the node's default (1 s) so failover tests are quick.
pub const TEST_HEARTBEAT_INTERVAL_MS: u64 = 500;
/// Eviction delay of test nodes: six missed heartbeats, slack enough for a loaded two-core machine.
pub const TEST_DEAD_AFTER_MS: u64 = 3_000;
/// How long starting a cluster may take until all nodes see each other.
pub const DEFAULT_CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of each node's log in a cluster failure message.
const CLUSTER_FAILURE_LOG_LINES: usize = 20;

/// How to start a [`Cluster`]. `Default` gives a fresh database, the shared broker with a unique prefix
/// and a generated zone name and admin password.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `ZONE_NAME`; `zone-<random>` when `None`.
    pub zone_name: Option<String>,
    /// The zone's database; a fresh [`TestDb`] (owned and dropped by the cluster) when `None`.
    pub database_url: Option<String>,
    /// The zone's bus; the shared broker ([`services::amqp_url`]) when `None`.
    pub bus_url: Option<String>,
    /// The zone's bus prefix; [`unique_prefix`](crate::unique_prefix) when `None`.
    pub bus_prefix: Option<String>,
    /// Bootstrap admin; `admin` when `None`.
    pub admin_username: Option<String>,
    /// Bootstrap admin password; generated when `None`.
    pub admin_password: Option<String>,
    /// `ZONE_HEARTBEAT_INTERVAL_MS` of every node.
    pub heartbeat_ms: u64,
    /// `ZONE_DEAD_AFTER_MS` of every node.
    pub dead_after_ms: u64,
    /// More environment variables for every node.
    pub env: Vec<(String, String)>,
    /// How long each node may take to become ready.
    pub ready_timeout: Duration,
    /// How long the nodes may take to list each other as alive.
    pub converge_timeout: Duration,
    /// A program to run instead of `zone-node` (the harness's own tests use a fake node).
    pub binary: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            zone_name: None,
            database_url: None,
            bus_url: None,
            bus_prefix: None,
            admin_username: None,
            admin_password: None,
            heartbeat_ms: TEST_HEARTBEAT_INTERVAL_MS,
            dead_after_ms: TEST_DEAD_AFTER_MS,
            env: Vec::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            converge_timeout: DEFAULT_CONVERGE_TIMEOUT,
            binary: None,
        }
    }
}

/// A zone of `zone-node` processes sharing one database and one bus prefix.
///
/// Dropping it kills every node, then drops the database it created.
#[derive(Debug)]
pub struct Cluster {
    // Field order matters: nodes are killed before their database is dropped.
    nodes: Vec<NodeProcess>,
    db: Option<TestDb>,
    template: NodeSpec,
    options: ClusterOptions,
}

impl Cluster {
    /// Starts `n` nodes (n ≥ 1) and waits until all are ready and list each other as alive.
    pub async fn start(n: usize, options: ClusterOptions) -> Cluster {
        assert!(n >= 1, "a cluster needs at least one node");
        let (db, database_url) = match &options.database_url {
            Some(url) => (None, url.clone()),
            None => {
                let db = TestDb::create().await;
                let url = db.url().to_owned();
                (Some(db), url)
            }
        };
        let bus_url = match &options.bus_url {
            Some(url) => url.clone(),
            None => {
                services::require_rabbitmq().await;
                services::amqp_url()
            }
        };
        let zone_name = options.zone_name.clone().unwrap_or_else(|| format!("zone-{}", crate::net::short_id()));
        let mut template = NodeSpec::new(zone_name);
        template.database_url = Some(database_url);
        template.bus_url = Some(bus_url);
        template.bus_prefix = Some(options.bus_prefix.clone().unwrap_or_else(crate::net::unique_prefix));
        if let Some(user) = &options.admin_username {
            template.admin_username = user.clone();
        }
        if let Some(password) = &options.admin_password {
            template.admin_password = password.clone();
        }
        template.heartbeat_interval_ms = Some(options.heartbeat_ms);
        template.dead_after_ms = Some(options.dead_after_ms);
        template.env = options.env.clone();
        template.binary = options.binary.clone();

        let mut cluster = Cluster { nodes: Vec::with_capacity(n), db, template, options };
        // The first node alone: it migrates the fresh database and creates the bootstrap admin.
        cluster.nodes.push(NodeProcess::spawn(cluster.spec_for(0)));
        cluster.wait_ready(0).await;
        for i in 1..n {
            cluster.nodes.push(NodeProcess::spawn(cluster.spec_for(i)));
        }
        futures::future::join_all((1..n).map(|i| cluster.wait_ready(i))).await;
        cluster.wait_converged(cluster.options.converge_timeout).await;
        cluster
    }

    /// Starts one more node of the zone (its index is the number of nodes before), waits until it is
    /// ready and every running node lists it as alive, and returns it.
    pub async fn add_node(&mut self) -> &NodeProcess {
        let i = self.nodes.len();
        self.nodes.push(NodeProcess::spawn(self.spec_for(i)));
        self.wait_ready(i).await;
        self.wait_converged(self.options.converge_timeout).await;
        &self.nodes[i]
    }

    /// Node `i`, in start order. Panics when there is no such node.
    pub fn node(&self, i: usize) -> &NodeProcess {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("{}: no node {i}, the cluster has {} nodes", self.name(), self.nodes.len()))
    }

    /// Node `i`, mutably. Every [`NodeProcess`] method takes `&self`, so [`node`](Self::node) does as
    /// well; this exists for callers that hold the cluster mutably anyway.
    pub fn node_mut(&mut self, i: usize) -> &mut NodeProcess {
        let (name, len) = (self.name().to_owned(), self.nodes.len());
        self.nodes.get_mut(i).unwrap_or_else(|| panic!("{name}: no node {i}, the cluster has {len} nodes"))
    }

    /// All nodes, running or not, in start order.
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    /// Indexes of the nodes whose process runs.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running()).collect()
    }

    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.template.zone_name
    }

    /// The zone's database URL.
    pub fn database_url(&self) -> &str {
        self.template.database_url.as_deref().expect("a cluster always has a database")
    }

    /// The database the cluster created, `None` when it was given one.
    pub fn db(&self) -> Option<&TestDb> {
        self.db.as_ref()
    }

    /// The zone's bus URL.
    pub fn bus_url(&self) -> &str {
        self.template.bus_url.as_deref().expect("a cluster always has a bus")
    }

    /// The zone's bus prefix.
    pub fn bus_prefix(&self) -> &str {
        self.template.bus_prefix.as_deref().expect("a cluster always has a bus prefix")
    }

    /// The spec every node is started from (with its own label).
    pub fn spec(&self) -> &NodeSpec {
        &self.template
    }

    /// The admin client of node `i` (see [`NodeProcess::client`]).
    pub async fn client(&self, i: usize) -> api::Client {
        self.node(i).client().await
    }

    /// The API URLs of the nodes that node `i` lists as alive, sorted.
    pub async fn alive_seen_by(&self, i: usize) -> Result<Vec<String>, String> {
        let node = self.node(i);
        let zone =
            node.try_client().await?.zone().await.map_err(|e| format!("{}: GET /v1/zone failed: {e}", node.label()))?;
        let mut alive: Vec<String> = zone
            .nodes
            .into_iter()
            .filter(|n| n.state == "alive")
            .map(|n| n.api_url.trim_end_matches('/').to_owned())
            .collect();
        alive.sort();
        Ok(alive)
    }

    /// How many nodes node `i` lists as alive; `None` when it cannot be asked.
    pub async fn alive_count_seen_by(&self, i: usize) -> Option<usize> {
        self.alive_seen_by(i).await.ok().map(|alive| alive.len())
    }

    /// Waits until every running node lists exactly the running nodes as alive: after a start, all see
    /// each other; after a kill, the survivors have evicted the dead node.
    pub async fn wait_converged(&self, timeout: Duration) {
        let what = "every running node lists exactly the running nodes as alive";
        self.wait_until(timeout, what, || async {
            let running = self.running();
            if running.is_empty() {
                return Err("no node is running".to_owned());
            }
            let expected: BTreeSet<String> = running.iter().map(|&i| self.nodes[i].url()).collect();
            let mut disagreements = Vec::new();
            for &i in &running {
                match self.alive_seen_by(i).await {
                    Ok(seen) => {
                        let seen: BTreeSet<String> = seen.into_iter().collect();
                        if seen != expected {
                            disagreements.push(format!("node {i} lists {seen:?}"));
                        }
                    }
                    Err(e) => disagreements.push(format!("node {i}: {e}")),
                }
            }
            if disagreements.is_empty() {
                Ok(())
            } else {
                Err(format!("expected {expected:?} alive; {}", disagreements.join("; ")))
            }
        })
        .await
    }

    /// Waits until every running node lists exactly `n` alive nodes.
    pub async fn wait_for_alive(&self, n: usize, timeout: Duration) {
        self.wait_until(timeout, &format!("every running node lists {n} alive nodes"), || async {
            let running = self.running();
            if running.is_empty() {
                return Err("no node is running".to_owned());
            }
            let mut report = Vec::new();
            let mut agreed = true;
            for i in running {
                match self.alive_seen_by(i).await {
                    Ok(alive) => {
                        agreed &= alive.len() == n;
                        report.push(format!("node {i} lists {} alive", alive.len()));
                    }
                    Err(e) => {
                        agreed = false;
                        report.push(e);
                    }
                }
            }
            if agreed {
                Ok(())
            } else {
                Err(report.join("; "))
            }
        })
        .await
    }

    /// The zone's probe counters, read from its database (`probe` table): per resource, the probes
    /// completed and the most handlers ever active at once. Sorted by resource id.
    pub async fn probe_stats(&self) -> Vec<ProbeStat> {
        use sqlx::Connection;
        let url = self.database_url();
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("zone {}: cannot open its database: {e}", self.name()));
        let rows: Vec<(String, i64, i64, i64)> =
            sqlx::query_as("SELECT resource_id, active, max_active, completed FROM probe ORDER BY resource_id")
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("zone {}: cannot read the probe table: {e}", self.name()));
        rows.into_iter()
            .map(|(resource_id, active, max_active, completed)| ProbeStat {
                resource_id,
                active,
                max_active,
                completed,
            })
            .collect()
    }

    /// Polls `condition` every 100 ms until it is done (see [`Outcome`]: `true`, `Some(v)` or
    /// `Ok(v)`), and returns its value. On timeout panics naming the zone, `what` was awaited, the last
    /// observation (a condition returning `Err(text)` reports `text`) and every node's log tail.
    pub async fn wait_until<F, Fut, O>(&self, timeout: Duration, what: &str, condition: F) -> O::Value
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = O>,
        O: Outcome,
    {
        match poll_until_detailed(timeout, DEFAULT_POLL_INTERVAL, condition).await {
            Ok(value) => value,
            Err(timed_out) => panic!("{}", self.failure(&format!("waiting until {what}: {timed_out}"))),
        }
    }

    /// A failure message about the zone, followed by every node's state and log tail.
    pub fn failure(&self, what: &str) -> String {
        let mut message = format!("zone {}: {what}", self.name());
        for (i, node) in self.nodes.iter().enumerate() {
            let state = match (node.pid(), node.exit_status()) {
                (Some(pid), _) => format!("running, pid {pid}"),
                (None, Some(status)) => format!("exited: {status}"),
                (None, None) => "stopped by the test".to_owned(),
            };
            if let Some(panic) = node.last_panic() {
                message.push_str(&format!("\nnode {i} panicked: {panic}"));
            }
            message.push_str(&format!(
                "\n--- node {i} ({}, {state}), last {CLUSTER_FAILURE_LOG_LINES} lines of {} ---\n{}",
                node.url(),
                node.log_path().display(),
                node.log_tail(CLUSTER_FAILURE_LOG_LINES)
            ));
        }
        message.push_str("\n--- end of logs ---");
        message
    }

    async fn wait_ready(&self, i: usize) {
        let node = &self.nodes[i];
        if let Err(why) = node.try_wait_ready(self.options.ready_timeout).await {
            panic!("{}", self.failure(&format!("node {i} ({}) did not become ready: {why}", node.url())));
        }
    }

    fn spec_for(&self, i: usize) -> NodeSpec {
        let mut spec = self.template.clone();
        spec.label = format!("{}/node-{i}", self.template.zone_name);
        spec
    }
}

/// One row of the zone's probe counters (see [`Cluster::probe_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStat {
    pub resource_id: String,
    /// Handlers active now.
    pub active: i64,
    /// The most handlers ever active at once on this resource (1 when it was always serial).
    pub max_active: i64,
    /// Probes completed on this resource.
    pub completed: i64,
}
