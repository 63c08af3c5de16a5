//! One real `zone-node` process.
//!
//! [`NodeProcess`] runs the binary with a [`NodeSpec`] turned into `ZONE_*` environment variables (the
//! node's documented configuration), on a port of its own, with a private data directory and a log
//! file in a temporary directory. Its output goes to that log, so a failure can show what the node
//! said ([`NodeProcess::log_tail`]). A node never outlives its test: it is killed when the value is
//! dropped, and started under `setpriv --pdeathsig KILL` (when available) so even a test process that
//! dies without unwinding takes its nodes along. When a test panics, the node's directory is kept and
//! its path and log tail are printed.
//!
//! The binary is `$ZONE_NODE_BIN` or `<workspace>/target/debug/zone-node`; `scripts/test` builds it.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::net::free_port;
use crate::poll::{poll_until, poll_until_detailed, DEFAULT_POLL_INTERVAL};

/// Environment variable naming the `zone-node` binary to run.
pub const NODE_BIN_ENV: &str = "ZONE_NODE_BIN";
/// Environment variable with the log filter given to nodes (`ZONE_LOG`); `info` when unset.
pub const NODE_LOG_ENV: &str = "ZONE_TEST_LOG";
/// How long [`NodeProcess::start`] and [`NodeProcess::restart`] wait for `/readyz`. Generous: nodes
/// are debug builds sharing two cores with the rest of the suite.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`NodeProcess::terminate`] waits after SIGTERM before it sends SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(10);
/// Lines of log shown in failure messages.
pub const FAILURE_LOG_LINES: usize = 40;
/// How long [`NodeSpec::run_to_exit`] lets the process run before it is killed.
pub const RUN_TO_EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one `/readyz` request while waiting for readiness.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the harness looks for a node's exit.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);
const SETPRIV: &str = "/usr/bin/setpriv";

/// How to run one node. `None` fields leave the node's embedded default (SQLite under the data
/// directory, the in-process bus).
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Names the node in messages, such as `zone-a/node-2`.
    pub label: String,
    /// `ZONE_NAME`.
    pub zone_name: String,
    /// `ZONE_DATABASE_URL` (`postgres://…` or `sqlite://…`).
    pub database_url: Option<String>,
    /// `ZONE_BUS_URL` (`amqp://…` or `memory://`).
    pub bus_url: Option<String>,
    /// `ZONE_BUS_PREFIX`.
    pub bus_prefix: Option<String>,
    /// `ZONE_ADMIN_USERNAME`, also what [`NodeProcess::client`] logs in with.
    pub admin_username: String,
    /// `ZONE_ADMIN_PASSWORD`.
    pub admin_password: String,
    /// `ZONE_HEARTBEAT_INTERVAL_MS`.
    pub heartbeat_interval_ms: Option<u64>,
    /// `ZONE_DEAD_AFTER_MS`.
    pub dead_after_ms: Option<u64>,
    /// Port of `ZONE_LISTEN=127.0.0.1:<port>`; a [`free_port`] when `None`. Kept across restarts.
    pub port: Option<u16>,
    /// `ZONE_DATA_DIR`; a fresh directory in the node's temporary directory when `None`.
    pub data_dir: Option<PathBuf>,
    /// `ZONE_LOG`; `$ZONE_TEST_LOG` or `info` when `None`.
    pub log_filter: Option<String>,
    /// More environment variables, set last (they win over the fields above).
    pub env: Vec<(String, String)>,
    /// The subcommand to run: `serve` (the default), or another long-running one such as
    /// `agent-sim` ([`SimProcess`](crate::SimProcess) runs it through here). The methods that talk
    /// to a node's API (`wait_ready`, `client`, `node_id`, ...) assume `serve`.
    pub subcommand: String,
    /// Arguments after the subcommand, such as `--config FILE`.
    pub args: Vec<OsString>,
    /// The program to run instead of the `zone-node` binary (the harness's own tests use a fake).
    pub binary: Option<PathBuf>,
}

impl NodeSpec {
    /// A node of `zone_name` with the embedded defaults and a generated admin password.
    pub fn new(zone_name: impl Into<String>) -> NodeSpec {
        let zone_name = zone_name.into();
        NodeSpec {
            label: format!("{zone_name}/node"),
            zone_name,
            database_url: None,
            bus_url: None,
            bus_prefix: None,
            admin_username: "admin".to_owned(),
            admin_password: format!("e2e-{}", crate::net::short_id()),
            heartbeat_interval_ms: None,
            dead_after_ms: None,
            port: None,
            data_dir: None,
            log_filter: None,
            env: Vec::new(),
            subcommand: "serve".to_owned(),
            args: Vec::new(),
            binary: None,
        }
    }

    /// A single node on the embedded defaults (SQLite in its data directory, the in-process bus),
    /// in a zone of its own.
    pub fn embedded() -> NodeSpec {
        NodeSpec::new(format!("embedded-{}", crate::net::short_id()))
    }

    /// Sets one more environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> NodeSpec {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the node to its exit (for settings that must stop it at start), in a fresh data directory
    /// on a free port, and returns its exit code and output. Panics when it is still running after
    /// [`RUN_TO_EXIT_TIMEOUT`].
    pub async fn run_to_exit(&self) -> RunOutput {
        let binary = self.locate().unwrap_or_else(|message| panic!("{message}"));
        let dir = tempfile::Builder::new()
            .prefix("zone-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for {}: {e}", self.label));
        let data_dir = self.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
        fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("cannot create data directory {} for {}: {e}", data_dir.display(), self.label));
        let port = self.port.unwrap_or_else(free_port);
        let mut cmd = tokio::process::Command::from(self.command(&binary, port, &data_dir));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let output = match tokio::time::timeout(RUN_TO_EXIT_TIMEOUT, cmd.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("cannot run {} ({}): {e}", self.label, binary.display()),
            Err(_) => panic!("{} was still running after {RUN_TO_EXIT_TIMEOUT:?}; it was expected to exit", self.label),
        };
        RunOutput {
            code: output.status.code(),
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The binary this spec runs (see [`locate_binary`]).
    fn locate(&self) -> Result<PathBuf, String> {
        match &self.binary {
            Some(path) => locate_binary(Some(path.as_os_str()), Path::new("")),
            None => locate_binary(std::env::var_os(NODE_BIN_ENV).as_deref(), &default_binary_path()),
        }
    }

    /// The command line and environment of one process of this spec: the subcommand, the `ZONE_*`
    /// settings, nothing of the developer's own `ZONE_*` environment.
    fn command(&self, binary: &Path, port: u16, data_dir: &Path) -> Command {
        let mut cmd = if Path::new(SETPRIV).exists() {
            // The node gets SIGKILL when the thread that started it ends, even if the test process is
            // killed without running destructors.
            let mut c = Command::new(SETPRIV);
            c.args(["--pdeathsig", "KILL", "--"]).arg(binary);
            c
        } else {
            Command::new(binary)
        };
        cmd.arg(&self.subcommand).args(&self.args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ZONE_") {
                cmd.env_remove(&name);
            }
        }
        let log_filter =
            self.log_filter.clone().or_else(|| std::env::var(NODE_LOG_ENV).ok()).unwrap_or_else(|| "info".to_owned());
        cmd.env("ZONE_NAME", &self.zone_name)
            .env("ZONE_LISTEN", format!("127.0.0.1:{port}"))
            .env("ZONE_API_URL", format!("http://127.0.0.1:{port}"))
            .env("ZONE_DATA_DIR", data_dir)
            .env("ZONE_ADMIN_USERNAME", &self.admin_username)
            .env("ZONE_ADMIN_PASSWORD", &self.admin_password)
            .env("ZONE_LOG", &log_filter)
            // Plain text in the log files that failure messages quote.
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1");
        let optional = [
            ("ZONE_DATABASE_URL", self.database_url.clone()),
            ("ZONE_BUS_URL", self.bus_url.clone()),
            ("ZONE_BUS_PREFIX", self.bus_prefix.clone()),
            ("ZONE_HEARTBEAT_INTERVAL_MS", self.heartbeat_interval_ms.map(|v| v.to_string())),
            ("ZONE_DEAD_AFTER_MS", self.dead_after_ms.map(|v| v.to_string())),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                cmd.env(name, value);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// How a process run by [`NodeSpec::run_to_exit`] ended.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running (or stopped) `zone-node` process. Methods take `&self`, so a test can stop and restart
/// nodes it reaches through a [`Cluster`](crate::Cluster).
#[derive(Debug)]
pub struct NodeProcess {
    spec: NodeSpec,
    binary: PathBuf,
    port: u16,
    /// Holds the log and, unless the spec names one, the data directory. `None` once kept on failure.
    dir: Mutex<Option<tempfile::TempDir>>,
    dir_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// The current process. A std mutex: held for a syscall at most, never across `.await`.
    child: Mutex<Option<Child>>,
    /// Processes started so far (1 after the first start).
    starts: AtomicU32,
    /// The admin client of the current process, logged in once.
    admin: tokio::sync::Mutex<Option<(u32, api::Client)>>,
    /// The current process's node id, learnt when it became ready.
    node_id: Mutex<Option<String>>,
}

impl NodeProcess {
    /// Starts a node and waits until it is ready (panics with its log tail when it does not become
    /// ready within [`DEFAULT_READY_TIMEOUT`]).
    pub async fn start(spec: NodeSpec) -> NodeProcess {
        let node = NodeProcess::spawn(spec);
        node.wait_ready(DEFAULT_READY_TIMEOUT).await;
        node
    }

    /// Starts a node without waiting for it to be ready.
    pub fn spawn(spec: NodeSpec) -> NodeProcess {
        let binary = spec.locate().unwrap_or_else(|message| panic!("{message}"));
        let dir = tempfile::Builder::new()
            .prefix("zone-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for {}: {e}", spec.label));
        let dir_path = dir.path().to_path_buf();
        let data_dir = spec.data_dir.clone().unwrap_or_else(|| dir_path.join("data"));
        fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("cannot create data directory {} for {}: {e}", data_dir.display(), spec.label));
        let port = spec.port.unwrap_or_else(free_port);
        let node = NodeProcess {
            log_path: dir_path.join("node.log"),
            binary,
            port,
            dir: Mutex::new(Some(dir)),
            dir_path,
            data_dir,
            spec,
            child: Mutex::new(None),
            starts: AtomicU32::new(0),
            admin: tokio::sync::Mutex::new(None),
            node_id: Mutex::new(None),
        };
        node.respawn();
        node
    }

    /// The spec this node runs with.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Names the node in messages.
    pub fn label(&self) -> &str {
        &self.spec.label
    }

    /// The node's API root, `http://127.0.0.1:<port>` (also its `ZONE_API_URL`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's `ZONE_DATA_DIR`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file the node's stdout and stderr go to (all of its processes, one after the other).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id of the current process, `None` when it is not running.
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.lock_child();
        let c = child.as_mut()?;
        match c.try_wait() {
            Ok(None) => Some(c.id()),
            _ => None,
        }
    }

    /// Whether the current process is still running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// The last `n` lines of the node's log.
    pub fn log_tail(&self, n: usize) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.log_path.display()),
        }
    }

    /// A failure message about this node, followed by its last panic (when it panicked: a backtrace
    /// can push the message out of the tail) and its log tail.
    pub fn failure(&self, what: &str) -> String {
        let panic = self.last_panic().map(|p| format!("\nthe node panicked: {p}")).unwrap_or_default();
        format!(
            "{} ({}): {what}{panic}\n--- last {FAILURE_LOG_LINES} lines of {} ---\n{}\n--- end of log ---",
            self.spec.label,
            self.url(),
            self.log_path.display(),
            self.log_tail(FAILURE_LOG_LINES)
        )
    }

    /// The last Rust panic in the node's log: the `panicked at` line and the message after it.
    pub fn last_panic(&self) -> Option<String> {
        let text = fs::read(&self.log_path).ok()?;
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().rposition(|l| l.contains("panicked at "))?;
        Some(lines[at..(at + 2).min(lines.len())].join(" "))
    }

    /// Waits until `GET /readyz` answers 200 and the node tells its id; panics with the reason and the
    /// log tail otherwise, or as soon as the process exits.
    pub async fn wait_ready(&self, timeout: Duration) {
        if let Err(why) = self.try_wait_ready(timeout).await {
            panic!("{}", self.failure(&why));
        }
    }

    /// Like [`wait_ready`](Self::wait_ready), returning why the node is not ready instead of
    /// panicking (for tests that expect a node to refuse readiness).
    pub async fn try_wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let http = api::http::client_builder()
            .timeout(READY_PROBE_TIMEOUT)
            .build()
            .expect("the reqwest client builder only fails on a broken TLS backend");
        let url = format!("{}/readyz", self.url());
        let outcome = poll_until_detailed(timeout, DEFAULT_POLL_INTERVAL, || async {
            if let Some(status) = self.exit_status() {
                // Not a timeout: stop polling at once with the exit as the reason.
                return Ok(Err(format!("exited with {status} before it was ready")));
            }
            match http.get(&url).send().await {
                Ok(resp) if resp.status().is_success() => match self.fetch_node_id().await {
                    Ok(id) => Ok(Ok(id)),
                    Err(e) => Err(format!("ready, but its id is not known yet: {e}")),
                },
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    Err(format!("GET /readyz answered {status}: {}", truncate(&body, 300)))
                }
                Err(e) => Err(format!("GET /readyz failed: {e}")),
            }
        })
        .await;
        match outcome {
            Ok(Ok(id)) => {
                *self.node_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
                Ok(())
            }
            Ok(Err(exited)) => Err(exited),
            Err(timed_out) => Err(format!("not ready: {timed_out}")),
        }
    }

    /// How the current process ended on its own; `None` while it runs, and after the harness stopped
    /// it ([`kill9`](Self::kill9), [`terminate`](Self::terminate)).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.lock_child();
        child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the process to exit on its own (for example when it fences itself).
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, EXIT_POLL_INTERVAL, || async { self.exit_status() }).await
    }

    /// Kills the process with SIGKILL (a crash: no shutdown code runs) and waits until it has exited.
    /// Returns at once when it is not running.
    pub async fn kill9(&self) {
        {
            let mut child = self.lock_child();
            if let Some(c) = child.as_mut() {
                // Fails only when it already exited, which is what we want.
                let _ = c.kill();
            }
        }
        // Waiting without blocking the runtime; the kernel ends a SIGKILLed process at once.
        poll_until(Duration::from_secs(30), EXIT_POLL_INTERVAL, || async {
            let mut child = self.lock_child();
            child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
        })
        .await
        .unwrap_or_else(|| panic!("{} (pid {:?}) survived SIGKILL for 30s", self.spec.label, self.pid()));
        self.kill_now();
    }

    /// SIGKILL and reap, blocking (for `Drop`, which cannot await).
    fn kill_now(&self) {
        let mut child = self.lock_child();
        if let Some(c) = child.as_mut() {
            if c.try_wait().ok().flatten().is_none() {
                // Fails only when it already exited, which is what we want.
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        *child = None;
    }

    /// Stops the process with SIGTERM (a graceful shutdown), waits up to [`TERMINATE_GRACE`], then
    /// SIGKILLs it. Returns how it ended, `None` when it had to be killed or was not running.
    pub async fn terminate(&self) -> Option<ExitStatus> {
        let pid = self.pid()?;
        if let Err(e) = Command::new("kill").args(["-TERM", &pid.to_string()]).status() {
            panic!("cannot run `kill -TERM {pid}` for {}: {e}", self.spec.label);
        }
        let status = self.wait_exit(TERMINATE_GRACE).await;
        if status.is_none() {
            eprintln!(
                "warning: {} did not exit within {TERMINATE_GRACE:?} of SIGTERM; sending SIGKILL",
                self.spec.label
            );
            self.kill9().await;
        }
        *self.lock_child() = None;
        status
    }

    /// Stops the process if it runs (SIGTERM, see [`terminate`](Self::terminate)), starts a new one
    /// with the same spec, port and data directory, and waits until it is ready.
    pub async fn restart(&self) {
        self.terminate().await;
        self.respawn();
        self.wait_ready(DEFAULT_READY_TIMEOUT).await;
    }

    /// Starts a new process with the same spec, port and data directory, without waiting for it to be
    /// ready. Panics when one is still running.
    pub fn respawn(&self) {
        let mut child = self.lock_child();
        if let Some(c) = child.as_mut() {
            assert!(
                c.try_wait().ok().flatten().is_some(),
                "{} is still running; stop it before starting it again",
                self.spec.label
            );
        }
        let start = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        *self.node_id.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *child = Some(self.spawn_process(start));
    }

    /// An API client logged in as the zone's admin. Panics with the log tail when login fails.
    pub async fn client(&self) -> api::Client {
        self.try_client().await.unwrap_or_else(|e| panic!("{}", self.failure(&e)))
    }

    /// Like [`client`](Self::client), returning the failure (for use inside polled conditions).
    /// The login is made once per process and reused.
    pub async fn try_client(&self) -> Result<api::Client, String> {
        let start = self.starts.load(Ordering::SeqCst);
        let mut cached = self.admin.lock().await;
        if let Some((s, client)) = cached.as_ref() {
            if *s == start {
                return Ok(client.clone());
            }
        }
        let (client, _) = api::Client::new(&self.url())
            .login(&self.spec.admin_username, &self.spec.admin_password)
            .await
            .map_err(|e| format!("cannot log in as {}: {e}", self.spec.admin_username))?;
        *cached = Some((start, client.clone()));
        Ok(client)
    }

    /// An API client without credentials.
    pub fn anonymous_client(&self) -> api::Client {
        api::Client::new(&self.url())
    }

    /// The node's id (its UUID, new with every process), learnt when it last became ready. Panics when
    /// the current process has not been ready yet.
    pub fn node_id(&self) -> String {
        self.node_id.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| {
            panic!("{}: its node id is not known: it has not been ready since it was last started", self.spec.label)
        })
    }

    /// Asks the node for its id: the `node_id` of its `GET /v1/zone` (the node that answered), or else
    /// the listed node with this node's `api_url` that has not left.
    pub async fn fetch_node_id(&self) -> Result<String, String> {
        let zone: serde_json::Value =
            self.try_client().await?.get("/v1/zone").await.map_err(|e| format!("GET /v1/zone failed: {e}"))?;
        if let Some(id) = zone.get("node_id").and_then(|v| v.as_str()) {
            return Ok(id.to_owned());
        }
        let url = self.url();
        let mut mine: Vec<&serde_json::Value> = zone
            .get("nodes")
            .and_then(|n| n.as_array())
            .map(|nodes| {
                nodes
                    .iter()
                    .filter(|n| {
                        n.get("api_url").and_then(|u| u.as_str()).map(|u| u.trim_end_matches('/')) == Some(&url)
                    })
                    .filter(|n| !matches!(n.get("state").and_then(|s| s.as_str()), Some("dead" | "left")))
                    .collect()
            })
            .unwrap_or_default();
        mine.sort_by_key(|n| n.get("joined_at").and_then(|j| j.as_str()).unwrap_or_default().to_owned());
        mine.last()
            .and_then(|n| n.get("id").and_then(|id| id.as_str()))
            .map(str::to_owned)
            .ok_or_else(|| format!("GET /v1/zone has no node_id and lists no live node with api_url {url}"))
    }

    /// Ages a bearer token so the node sees it as expired, by setting its expiry in the node's
    /// database (tokens are stored as the SHA-256 hex of the token). Panics when the token is not there.
    pub async fn expire_token(&self, token: &str) {
        use sha2::Digest;
        use sqlx::Connection;
        let hash: String = sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let url = self.database_url();
        const SQL: &str = "UPDATE tokens SET expires_at_ms = 1 WHERE hash = $1";
        let updated = if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("{}: cannot open its database {url}: {e}", self.spec.label));
            sqlx::query(SQL).bind(&hash).execute(&mut conn).await.map(|r| r.rows_affected())
        } else {
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("{}: cannot open its database: {e}", self.spec.label));
            sqlx::query(SQL).bind(&hash).execute(&mut conn).await.map(|r| r.rows_affected())
        }
        .unwrap_or_else(|e| panic!("{}: cannot expire a token: {e}", self.spec.label));
        assert_eq!(updated, 1, "{}: the token to expire is not in its database", self.spec.label);
    }

    /// The node's database: the spec's, or the embedded default (`zone.db` in its data directory).
    pub fn database_url(&self) -> String {
        self.spec
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("zone.db").display()))
    }

    fn spawn_process(&self, start: u32) -> Child {
        let spec = &self.spec;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open log {} for {}: {e}", self.log_path.display(), spec.label));
        let listen = format!("127.0.0.1:{}", self.port);
        let mut cmd = spec.command(&self.binary, self.port, &self.data_dir);
        let _ = writeln!(
            log,
            "==== e2e harness: start #{start} of {} on {listen}: {} {} ====",
            spec.label,
            self.binary.display(),
            spec.subcommand
        );
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share log {} for {}: {e}", self.log_path.display(), spec.label));
        cmd.stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(stderr));
        cmd.spawn().unwrap_or_else(|e| panic!("cannot start {} ({}): {e}", spec.label, self.binary.display()))
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        // A panic while holding this lock cannot leave the Option inconsistent.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill_now();
        if std::thread::panicking() {
            let kept = self.dir.lock().unwrap_or_else(|e| e.into_inner()).take().map(tempfile::TempDir::keep);
            eprintln!(
                "{}\n(the node's directory is kept at {})",
                self.failure("state when the test failed"),
                kept.as_deref().unwrap_or(&self.dir_path).display()
            );
        }
    }
}

/// Where the workspace's debug build puts the binary: `<workspace>/target/debug/zone-node`.
pub fn default_binary_path() -> PathBuf {
    crate::workspace_root().join("target").join("debug").join("zone-node")
}

/// Resolves the binary to run: `configured` (the value of `$ZONE_NODE_BIN`, or a spec's override)
/// when set, `default` otherwise. The error tells how to get the binary.
pub fn locate_binary(configured: Option<&std::ffi::OsStr>, default: &Path) -> Result<PathBuf, String> {
    let (path, origin) = match configured {
        Some(p) if !p.is_empty() => (PathBuf::from(p), format!("${NODE_BIN_ENV} (or the node spec)")),
        _ => (default.to_path_buf(), "the workspace's debug build".to_owned()),
    };
    match fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err(format!("the zone-node binary from {origin} is not a file: {}", path.display())),
        Err(_) => Err(format!(
            "the zone-node binary was not found at {} (from {origin}). Build it first with \
             `cargo build -p zone-node` (scripts/test does this), or set ${NODE_BIN_ENV} to its path",
            path.display()
        )),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
