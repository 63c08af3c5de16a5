//! Simulated hosts: `zone-node agent-sim` as a child process.
//!
//! [`SimProcess::start`] runs the real binary's simulator (through the same machinery as a node:
//! [`NodeProcess`] with the `agent-sim` subcommand, so it gets a log file, `setpriv --pdeathsig`,
//! kill on drop and log tails in failures) on a port of its own, and returns once the zone lists
//! every simulated host as up with an agent URL on that port. Operator credentials reach it
//! through `ZONE_USERNAME`/`ZONE_PASSWORD` and the control token through
//! `ZONE_SIM_CONTROL_TOKEN`, never on the command line.
//!
//! [`SimProcess::stats`] and [`SimProcess::control`] call one host's `GET {agent_url}/v1/stats`
//! and `POST {agent_url}/v1/control` (docs/wire-format.md, "Host agents").

use std::process::ExitStatus;
use std::time::Duration;

use crate::node::{NodeProcess, NodeSpec};
use crate::poll::{poll_until_detailed, DEFAULT_POLL_INTERVAL};

/// How long [`SimProcess::start`] waits for every host to be registered and up. Generous: a debug
/// build registers a hundred hosts on two busy cores.
pub const SIM_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one stats or control request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run the simulator (the flags of `zone-node agent-sim`).
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// The zone's API (`--zone-url`).
    pub zone_url: String,
    /// Operator credentials (`ZONE_USERNAME`, `ZONE_PASSWORD`).
    pub username: String,
    pub password: String,
    /// `--hosts`.
    pub hosts: usize,
    /// `--latency-ms`.
    pub latency_ms: u64,
    /// `--fail-rate`.
    pub fail_rate: f64,
    /// `--profile`: `uniform`, `mixed` or `big`.
    pub profile: String,
    /// `--name-prefix`: hosts are `<prefix>-000`, `<prefix>-001`, …
    pub name_prefix: String,
    /// `--report-interval-ms`.
    pub report_interval_ms: u64,
    /// `ZONE_SIM_CONTROL_TOKEN`: what [`SimProcess::stats`] and [`SimProcess::control`] present.
    pub control_token: Option<String>,
    /// `--capability KEY=VALUE` for each: what every host announces besides its profile.
    pub capabilities: Vec<(String, serde_json::Value)>,
}

/// A running `zone-node agent-sim`. Killed when dropped.
#[derive(Debug)]
pub struct SimProcess {
    spec: SimSpec,
    process: NodeProcess,
    http: reqwest::Client,
}

impl SimProcess {
    /// Starts the simulator and waits until the zone lists all its hosts as up (panics with the
    /// simulator's log tail otherwise, or as soon as it exits).
    pub async fn start(spec: SimSpec) -> SimProcess {
        let sim = SimProcess::spawn(spec, Vec::new());
        if let Err(why) = sim.wait_registered(SIM_READY_TIMEOUT).await {
            panic!("{}", sim.failure(&why));
        }
        sim
    }

    /// Starts the simulator with `extra_args` after the spec's flags (such as
    /// `--register-concurrency 128`), without waiting for anything.
    pub fn spawn(spec: SimSpec, extra_args: Vec<String>) -> SimProcess {
        let mut node = NodeSpec::new("agent-sim");
        node.label = format!("agent-sim/{}", spec.name_prefix);
        node.subcommand = "agent-sim".to_owned();
        // The port NodeProcess picks for the process is the simulator's listener.
        let port = crate::net::free_port();
        node.port = Some(port);
        node.args = [
            "--zone-url".to_owned(),
            spec.zone_url.clone(),
            "--hosts".to_owned(),
            spec.hosts.to_string(),
            "--latency-ms".to_owned(),
            spec.latency_ms.to_string(),
            "--fail-rate".to_owned(),
            spec.fail_rate.to_string(),
            "--profile".to_owned(),
            spec.profile.clone(),
            "--name-prefix".to_owned(),
            spec.name_prefix.clone(),
            "--report-interval-ms".to_owned(),
            spec.report_interval_ms.to_string(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
        ]
        .into_iter()
        .chain(spec.capabilities.iter().flat_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            ["--capability".to_owned(), format!("{k}={v}")]
        }))
        .chain(extra_args)
        .map(Into::into)
        .collect();
        node = node.with_env("ZONE_USERNAME", &spec.username).with_env("ZONE_PASSWORD", &spec.password);
        if let Some(token) = &spec.control_token {
            node = node.with_env("ZONE_SIM_CONTROL_TOKEN", token);
        }
        let http = api::http::client_builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("the reqwest client builder only fails on a broken TLS backend");
        SimProcess { process: NodeProcess::spawn(node), spec, http }
    }

    /// Waits until the zone lists `hosts` hosts of this simulator (name prefix and agent URL on
    /// its port) as up.
    async fn wait_registered(&self, timeout: Duration) -> Result<(), String> {
        let zone = api::Client::new(&self.spec.zone_url);
        let client = tokio::sync::OnceCell::new();
        let prefix = format!("{}-", self.spec.name_prefix);
        let agents = format!("{}/hosts/", self.url());
        let outcome = poll_until_detailed(timeout, DEFAULT_POLL_INTERVAL, || async {
            if let Some(status) = self.process.exit_status() {
                return Ok(Err(format!("exited with {status} before its hosts were up")));
            }
            let client = client
                .get_or_try_init(|| async {
                    zone.login(&self.spec.username, &self.spec.password).await.map(|(c, _)| c)
                })
                .await
                .map_err(|e| format!("cannot log in to the zone: {e}"))?;
            let hosts = all_hosts(client).await.map_err(|e| format!("GET /v1/hosts failed: {e}"))?;
            let mine: Vec<_> =
                hosts.iter().filter(|h| h.name.starts_with(&prefix) && h.agent_url.starts_with(&agents)).collect();
            let up = mine.iter().filter(|h| h.state == "up").count();
            if up == self.spec.hosts {
                Ok(Ok(()))
            } else {
                Err(format!("{} of its {} hosts registered, {up} up", mine.len(), self.spec.hosts))
            }
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(timed_out) => Err(format!("its hosts did not come up: {timed_out}")),
        }
    }

    /// The agents' base URL: host `<name>`'s agent URL is `<url>/hosts/<name>`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    pub fn spec(&self) -> &SimSpec {
        &self.spec
    }

    /// The simulator's process (pid, log, kill, terminate).
    pub fn process(&self) -> &NodeProcess {
        &self.process
    }

    /// One host's `GET {agent_url}/v1/stats`. Panics with the simulator's log tail on failure.
    pub async fn stats(&self, agent_url: &str) -> serde_json::Value {
        let url = format!("{}/v1/stats", agent_url.trim_end_matches('/'));
        self.request(self.http.get(&url), &url).await
    }

    /// One host's `POST {agent_url}/v1/control` with `body` (`{"fail_rate": 1.0}`,
    /// `{"reporting": false}`, `{"latency_ms": 500}`); returns the behaviour now in force.
    pub async fn control(&self, agent_url: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}/v1/control", agent_url.trim_end_matches('/'));
        self.request(self.http.post(&url).json(&body), &url).await
    }

    async fn request(&self, mut req: reqwest::RequestBuilder, url: &str) -> serde_json::Value {
        if let Some(token) = &self.spec.control_token {
            req = req.bearer_auth(token);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => panic!("{}", self.failure(&format!("{url} failed: {e}"))),
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            panic!("{}", self.failure(&format!("{url} answered {status}: {text}")));
        }
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}", self.failure(&format!("{url} answered something not JSON ({e}): {text}"))))
    }

    /// Stops the simulator with SIGTERM (see [`NodeProcess::terminate`]); its hosts stay
    /// registered.
    pub async fn terminate(&self) -> Option<ExitStatus> {
        self.process.terminate().await
    }

    /// A failure message about the simulator with its log tail.
    pub fn failure(&self, what: &str) -> String {
        self.process.failure(what)
    }
}

/// Every host the zone lists, every page read (a plain `GET /v1/hosts` holds the first 1,000).
pub async fn all_hosts(client: &api::Client) -> Result<Vec<api::Host>, api::ClientError> {
    Ok(client.all_hosts().await?.hosts)
}
