//! An extra RabbitMQ node that a test may stop and start, for tests about losing the broker.
//!
//! It wraps `scripts/rabbitmq-node start NAME PORT` / `stop NAME`, which run a separate broker node
//! `NAME@localhost` with AMQP on `PORT` (the shared broker on 5672 is never touched). Each instance has
//! a unique name and a free port, kept across stop and start so nodes can reconnect to the same URL.
//! The script keeps the node's data and logs in `${TMPDIR:-/tmp}/zone-rabbit-NAME`; the instance
//! removes that directory when dropped, unless the test is failing (then it prints where it is).
//!
//! ```no_run
//! # async fn f() {
//! let mut rabbit = e2e::RabbitInstance::start().await; // a new node, running
//! let url = rabbit.url();
//! rabbit.stop().await; // the same node, stopped ...
//! rabbit.start().await; // ... and started again on the same port
//! # }
//! ```
//!
//! `RabbitInstance::start()` makes a new node; the instance dereferences to its [`RabbitNode`], whose
//! `start`/`stop`/`kill` methods restart, stop and crash that node.
//!
//! [`RabbitCluster`] is several such nodes joined into one RabbitMQ cluster (`scripts/rabbitmq-node
//! join`), for tests that lose one node of the broker while the others go on. Its
//! [`urls`](RabbitCluster::urls) are a `ZONE_BUS_URL` naming every node:
//!
//! ```no_run
//! # async fn f() {
//! let mut rabbit = e2e::rabbit::RabbitCluster::start(3).await; // node 0, and nodes 1 and 2 joined to it
//! let bus_url = rabbit.urls(); // amqp://…:P0/%2f,amqp://…:P1/%2f,amqp://…:P2/%2f
//! rabbit.kill(0).await; // kill -9: nodes 1 and 2 go on without it
//! rabbit.node_mut(0).start().await; // it comes back into the cluster
//! # }
//! ```

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::net::free_port;

/// How long `scripts/rabbitmq-node start` may take (an Erlang VM boot on a loaded machine).
pub const RABBIT_START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `scripts/rabbitmq-node stop` (or `kill`) may take.
pub const RABBIT_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `scripts/rabbitmq-node join` may take: four rabbitmqctl calls, each an Erlang VM boot, and
/// the node's application started again.
pub const RABBIT_JOIN_TIMEOUT: Duration = Duration::from_secs(180);

/// A RabbitMQ node of one test: created running by [`RabbitInstance::start`], stopped and its
/// directory removed when dropped. Its methods are those of [`RabbitNode`].
#[derive(Debug)]
pub struct RabbitInstance {
    node: RabbitNode,
}

/// The node of a [`RabbitInstance`] or one of a [`RabbitCluster`]: its address, and stopping, killing
/// and starting it.
#[derive(Debug)]
pub struct RabbitNode {
    name: String,
    port: u16,
    /// Where its Erlang distribution listener is (`DIST_PORT` of the script), kept for restarts.
    dist_port: u16,
    running: bool,
}

impl RabbitInstance {
    /// Starts a new node with a unique name on free ports, and returns once it accepts AMQP
    /// connections.
    pub async fn start() -> RabbitInstance {
        let mut node = RabbitNode::new(format!("zt_{}", crate::net::short_id()));
        node.start().await;
        RabbitInstance { node }
    }
}

/// RabbitMQ nodes of one test joined into one cluster: created running by [`RabbitCluster::start`],
/// every node stopped and its directory removed when dropped. Nodes are numbered from 0; node 0 is the
/// one the others joined.
#[derive(Debug)]
pub struct RabbitCluster {
    nodes: Vec<RabbitNode>,
}

impl RabbitCluster {
    /// Starts `n` new nodes with unique names on free ports (as [`RabbitInstance::start`] picks them),
    /// joins nodes 1..n to node 0, and returns once every node accepts AMQP connections and is in the
    /// cluster. Nodes 1..n start with node 0's erlang cookie: nodes of one cluster, and the rabbitmqctl
    /// calls that reach them, must share it.
    pub async fn start(n: usize) -> RabbitCluster {
        assert!(n >= 1, "a RabbitMQ cluster needs at least one node");
        let id = crate::net::short_id();
        let nodes = (0..n).map(|i| RabbitNode::new(format!("zt_{id}_{i}"))).collect();
        // Made before any node starts, so that a failure half-way drops it and stops what did start.
        let mut cluster = RabbitCluster { nodes };
        let (seed, others) = cluster.nodes.split_first_mut().expect("the cluster has at least one node");
        seed.start().await;
        // The others boot side by side (each is seconds of Erlang VM start) but join one at a time, as
        // RabbitMQ's clustering guide does: a join changes the membership every node keeps, and joins
        // side by side were never tried here.
        futures::future::join_all(others.iter_mut().map(|node| node.start_with(Some(&seed.name)))).await;
        for node in others.iter() {
            node.run(&["join", &node.name, &seed.name], RABBIT_JOIN_TIMEOUT).await;
        }
        cluster
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: [`RabbitCluster::start`] makes at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`. Panics when there is no such node.
    pub fn node(&self, i: usize) -> &RabbitNode {
        let n = self.nodes.len();
        self.nodes.get(i).unwrap_or_else(|| panic!("the RabbitMQ cluster has no node {i} (it has {n})"))
    }

    /// Node `i`, to stop, kill or start it. Panics when there is no such node.
    pub fn node_mut(&mut self, i: usize) -> &mut RabbitNode {
        let n = self.nodes.len();
        self.nodes.get_mut(i).unwrap_or_else(|| panic!("the RabbitMQ cluster has no node {i} (it has {n})"))
    }

    /// Every node, in order.
    pub fn nodes(&self) -> &[RabbitNode] {
        &self.nodes
    }

    /// The AMQP URLs of all nodes, running or not, joined with `,`: a `ZONE_BUS_URL` that lets a client
    /// move to another node when its own is gone.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(RabbitNode::url).collect::<Vec<_>>().join(",")
    }

    /// Kills node `i` with SIGKILL (see [`RabbitNode::kill`]); the others go on as a cluster without it.
    pub async fn kill(&mut self, i: usize) {
        self.node_mut(i).kill().await;
    }
}

impl Deref for RabbitInstance {
    type Target = RabbitNode;
    fn deref(&self) -> &RabbitNode {
        &self.node
    }
}

impl DerefMut for RabbitInstance {
    fn deref_mut(&mut self) -> &mut RabbitNode {
        &mut self.node
    }
}

impl RabbitNode {
    /// A node not started yet, on two free ports of this process: AMQP and Erlang distribution. Both
    /// come from [`free_port`], below the kernel's ephemeral range: the script's default distribution
    /// port (AMQP + 20000) lies inside it, where an outgoing connection once took it between the check
    /// and the VM's bind, and the VM exited without a word (CI, 2026-12-04).
    fn new(name: String) -> RabbitNode {
        RabbitNode { name, port: free_port(), dist_port: free_port(), running: false }
    }

    /// The node's name (`NAME` in `NAME@localhost`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Where `scripts/rabbitmq-node` keeps the node's data and logs.
    pub fn data_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("zone-rabbit-{}", self.name))
    }

    /// Whether the harness started it and has not stopped it since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Starts the node (again) and returns once it accepts AMQP connections. A node of a
    /// [`RabbitCluster`] comes back into its cluster, provided another node of it runs (a cluster
    /// stopped whole wants the node stopped last started first). Panics with the script's output when it
    /// fails.
    pub async fn start(&mut self) {
        self.start_with(None).await;
    }

    /// Starts the node, the first time with the erlang cookie of node `cookie_from` when given (the
    /// script keeps the cookie in the node's directory, so later starts need not say it again).
    async fn start_with(&mut self, cookie_from: Option<&str>) {
        let port = self.port.to_string();
        let mut args = vec!["start", &self.name, &port];
        args.extend(cookie_from);
        self.run(&args, RABBIT_START_TIMEOUT).await;
        self.running = true;
    }

    /// Stops the node. Panics with the script's output when it fails.
    pub async fn stop(&mut self) {
        self.run(&["stop", &self.name], RABBIT_STOP_TIMEOUT).await;
        self.running = false;
    }

    /// Kills the node's Erlang VM with SIGKILL, as a crash would, and returns once it is gone: no
    /// goodbye to its clients or to the other nodes of its cluster. Its data stays, so
    /// [`start`](Self::start) brings it back. Panics with the script's output when it fails.
    pub async fn kill(&mut self) {
        self.run(&["kill", &self.name], RABBIT_STOP_TIMEOUT).await;
        self.running = false;
    }

    async fn run(&self, args: &[&str], timeout: Duration) {
        let script = script_path();
        assert!(
            script.is_file(),
            "{} is missing: RabbitInstance and RabbitCluster need it to run extra broker nodes",
            script.display()
        );
        let child = tokio::process::Command::new(&script)
            .args(args)
            .env("DIST_PORT", self.dist_port.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let command = format!("{} {}", script.display(), args.join(" "));
        match tokio::time::timeout(timeout, child).await {
            Ok(Ok(output)) if output.status.success() => {}
            Ok(Ok(output)) => panic!("`{command}` failed ({}):\n{}", output.status, show_output(&output)),
            Ok(Err(e)) => panic!("cannot run `{command}`: {e}"),
            Err(_) => panic!("`{command}` did not finish within {timeout:?}"),
        }
    }
}

impl Drop for RabbitInstance {
    fn drop(&mut self) {
        let node = &self.node;
        node.drop_node();
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        // Every node, whatever `running` says: one whose start failed half-way may still be booting,
        // and the script's stop is a no-op for a node that is down. All at once, since each stop is an
        // Erlang VM shutting down and they do not wait for each other.
        let stops: Vec<_> = self.nodes.iter().map(|node| (node, node.spawn_stop())).collect();
        for (node, stop) in stops {
            if node.finish_stop(stop) {
                node.remove_data_dir();
            }
        }
    }
}

impl RabbitNode {
    fn drop_node(&self) {
        if self.is_running() && !self.stop_blocking() {
            return;
        }
        self.remove_data_dir();
    }

    /// Removes the node's directory, or keeps it (and says where) when the test is failing.
    fn remove_data_dir(&self) {
        let dir = self.data_dir();
        if std::thread::panicking() {
            eprintln!("RabbitMQ node {}: data and logs kept at {}", self.name, dir.display());
        } else if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("warning: cannot remove {}: {e}", dir.display());
            }
        }
    }

    /// Stops the node from a destructor; false (with a warning) when that failed.
    fn stop_blocking(&self) -> bool {
        self.finish_stop(self.spawn_stop())
    }

    /// Starts `scripts/rabbitmq-node stop` for the node without waiting for it (see
    /// [`finish_stop`](Self::finish_stop)).
    fn spawn_stop(&self) -> std::io::Result<Child> {
        Command::new(script_path())
            .args(["stop", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    }

    /// Waits for a stop from [`spawn_stop`](Self::spawn_stop); false (with a warning) when it failed.
    fn finish_stop(&self, stop: std::io::Result<Child>) -> bool {
        // Synchronous on purpose: called from destructors, and the test process may end right after.
        match stop.and_then(Child::wait_with_output) {
            Ok(output) if output.status.success() => true,
            Ok(output) => {
                eprintln!(
                    "warning: stopping RabbitMQ node {} failed ({}):\n{}",
                    self.name,
                    output.status,
                    show_output(&output)
                );
                false
            }
            Err(e) => {
                eprintln!("warning: cannot stop RabbitMQ node {}: {e}", self.name);
                false
            }
        }
    }
}

fn script_path() -> PathBuf {
    crate::workspace_root().join("scripts").join("rabbitmq-node")
}

fn show_output(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}
