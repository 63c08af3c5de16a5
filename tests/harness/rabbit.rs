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
//! `start`/`stop` methods restart and stop that node.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::net::{free_port_where, port_bindable};

/// How long `scripts/rabbitmq-node start` may take (an Erlang VM boot on a loaded machine).
pub const RABBIT_START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `scripts/rabbitmq-node stop` may take.
pub const RABBIT_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// RabbitMQ's distribution listener is on the AMQP port plus this.
const DIST_PORT_OFFSET: u16 = 20_000;

/// A RabbitMQ node of one test: created running by [`RabbitInstance::start`], stopped and its
/// directory removed when dropped. Its methods are those of [`RabbitNode`].
#[derive(Debug)]
pub struct RabbitInstance {
    node: RabbitNode,
}

/// The node of a [`RabbitInstance`]: its address, and stopping and starting it.
#[derive(Debug)]
pub struct RabbitNode {
    name: String,
    port: u16,
    running: bool,
}

impl RabbitInstance {
    /// Starts a new node with a unique name on a free port (whose distribution port, 20000 above, is
    /// free too), and returns once it accepts AMQP connections.
    pub async fn start() -> RabbitInstance {
        let port = free_port_where(|p| p.checked_add(DIST_PORT_OFFSET).is_some_and(port_bindable));
        let mut node = RabbitNode { name: format!("zt_{}", crate::net::short_id()), port, running: false };
        node.start().await;
        RabbitInstance { node }
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

    /// Starts the node (again) and returns once it accepts AMQP connections. Panics with the script's
    /// output when it fails.
    pub async fn start(&mut self) {
        let port = self.port.to_string();
        self.run(&["start", &self.name, &port], RABBIT_START_TIMEOUT).await;
        self.running = true;
    }

    /// Stops the node. Panics with the script's output when it fails.
    pub async fn stop(&mut self) {
        self.run(&["stop", &self.name], RABBIT_STOP_TIMEOUT).await;
        self.running = false;
    }

    async fn run(&self, args: &[&str], timeout: Duration) {
        let script = script_path();
        assert!(
            script.is_file(),
            "{} is missing: RabbitInstance needs it to run an extra broker node",
            script.display()
        );
        let child = tokio::process::Command::new(&script)
            .args(args)
            .stdin(std::process::Stdio::null())
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

impl RabbitNode {
    fn drop_node(&self) {
        if self.is_running() && !self.stop_blocking() {
            return;
        }
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
        // Synchronous on purpose: the test process may end right after this.
        match Command::new(script_path()).args(["stop", &self.name]).stdin(std::process::Stdio::null()).output() {
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
