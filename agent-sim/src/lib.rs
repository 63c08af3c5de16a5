//! The host-agent simulator behind `zone-node agent-sim`: many simulated hosts in one process,
//! each a real HTTP agent.
//!
//! This crate depends on [`api`] only (the agent protocol, the zone's client, the input rules and
//! error codes), never on the node: the simulator plays the hosts' side of the contract and must
//! not share the zone's code to do so.
//!
//! [`run`] binds one listener, registers N hosts with the zone (`POST /v1/hosts`, or, for a name
//! already registered, `PUT /v1/hosts/{id}` with the new agent URL and token, so a restarted
//! simulator takes its hosts back), many at once ([`register`]), then serves the agent protocol
//! for all of them and reports each host's presence every report interval, spread evenly over it
//! ([`reports`]). It returns a [`SimHandle`] once every host is registered; the CLI
//! (`zone-node agent-sim`) fills a [`SimConfig`] and calls [`run_until_signal`], and an
//! in-process demo calls [`run`] the same way.
//!
//! **Built for 100,000 hosts in one process.** Everything is shared: one listener and accept
//! loop, one HTTP connection pool to the zone (registrations, reports and task callbacks), one
//! task that schedules every host's reports (not a task and a timer per host); per host there is
//! only its name, URLs, token, profile and a little state. Registration is concurrent with a
//! bound (`--register-concurrency`).
//!
//! **One listener, a path prefix per host.** Host `sim-007`'s agent URL is
//! `http://127.0.0.1:PORT/hosts/sim-007`. The zone only needs distinct agent URLs; one port for
//! all hosts keeps a simulator of 10,000 hosts to one socket and one accept loop instead of
//! 10,000 ports (and no port can be taken by someone else between two binds).
//!
//! The simulator keeps no state across restarts: an instance the zone placed before is unknown
//! to a new simulator process until a task names it, and is then taken as the task says.
//! Stopping (SIGINT/SIGTERM, or the shutdown token) stops reports and new tasks, posts the results
//! still due (for up to [`DRAIN_TIMEOUT`]) and leaves the hosts registered.
//!
//! # Layout
//! - [`profile`]: what each host announces and how big it is
//! - [`host`]: one host's instances, tasks, behaviour and counters
//! - `routes`: the HTTP side (tasks, control, stats)
//! - `error`: the agents' error answer and JSON body extractor
//! - [`session`]: the logged-in zone client, renewed when its token expires
//! - [`register`]: registering the hosts, a bounded number at once
//! - [`reports`]: every host's periodic report, from one scheduler
//! - `clock`, `signal`: the wall clock in milliseconds, SIGINT/SIGTERM
//! - this file: configuration, registration, reports, [`run`], [`run_until_signal`]

mod clock;
mod error;
pub mod host;
pub mod profile;
pub mod register;
pub mod reports;
mod routes;
pub mod session;
mod signal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::host::{Behaviour, SimHost};
use self::profile::{host_profile, Profile};
use self::routes::SimState;
pub use self::session::Credentials;
use self::session::ZoneSession;
use self::signal::shutdown_signal;

/// Most hosts one simulator runs.
pub const MAX_HOSTS: usize = 100_000;
/// Shortest report interval accepted (the zone's own lower bound).
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(50);
/// Longest any request to the zone may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for the results still due.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The zone's API, where hosts register and report.
    pub zone_url: String,
    pub credentials: Credentials,
    /// How many hosts to simulate.
    pub hosts: usize,
    /// How long each task takes (± 10 %).
    pub latency: Duration,
    /// Probability (0..=1) that a task fails.
    pub fail_rate: f64,
    pub profile: Profile,
    /// Hosts are named `<prefix>-000`, `<prefix>-001`, …
    pub name_prefix: String,
    /// How often each host reports its presence (the zone's `hosts.report_interval_ms`).
    pub report_interval: Duration,
    /// Bearer token the control and stats endpoints require; open without one.
    pub control_token: Option<SecretString>,
    /// Where the agents listen (port 0: any free port).
    pub listen: SocketAddr,
    /// The agents' base URL as the zone reaches it; `http://<listen>` when `None`.
    pub advertise_url: Option<String>,
    /// Capabilities every host announces on top of its profile's (replacing a profile key of
    /// the same name): a site name, a hypervisor, so one simulator per zone can make zones differ.
    pub capabilities: std::collections::BTreeMap<String, serde_json::Value>,
    /// How many registrations run at once (1 to [`register::MAX_REGISTER_CONCURRENCY`]).
    pub register_concurrency: usize,
}

impl SimConfig {
    /// Checks every setting, naming the flag that is wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=MAX_HOSTS).contains(&self.hosts), "--hosts must be 1 to {MAX_HOSTS}");
        anyhow::ensure!((0.0..=1.0).contains(&self.fail_rate), "--fail-rate must be between 0 and 1");
        anyhow::ensure!(
            (1..=register::MAX_REGISTER_CONCURRENCY).contains(&self.register_concurrency),
            "--register-concurrency must be 1 to {}",
            register::MAX_REGISTER_CONCURRENCY
        );
        anyhow::ensure!(
            self.report_interval >= MIN_REPORT_INTERVAL,
            "--report-interval-ms must be at least {} ms",
            MIN_REPORT_INTERVAL.as_millis()
        );
        let longest = host_name(&self.name_prefix, self.hosts - 1);
        anyhow::ensure!(
            api::validate::valid_key(&longest),
            "--name-prefix must make host names of at most 64 of [A-Za-z0-9_.:-] (e.g. {longest:?})"
        );
        if let Some(url) = &self.advertise_url {
            api::validate::validate_agent_url(url).map_err(|e| anyhow::anyhow!("--advertise-url: {e}"))?;
        }
        if let Some(t) = &self.control_token {
            api::validate::validate_agent_token(t.expose_secret())
                .map_err(|_| anyhow::anyhow!("the control token must be 16 to 256 printable ASCII characters"))?;
        }
        Ok(())
    }
}

/// Host number `index`'s name.
pub fn host_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:03}")
}

/// One registered host.
#[derive(Debug, Clone, PartialEq)]
pub struct SimHostInfo {
    pub name: String,
    /// The zone's id of the host at registration.
    pub host_id: String,
    pub agent_url: String,
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    agents_url: String,
    hosts: Vec<SimHostInfo>,
    registration: Duration,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SimHandle {
    /// The agents' base URL (`<it>/hosts/<name>` is each host's agent URL).
    pub fn agents_url(&self) -> &str {
        &self.agents_url
    }

    pub fn hosts(&self) -> &[SimHostInfo] {
        &self.hosts
    }

    /// How long registering every host took.
    pub fn registration_time(&self) -> Duration {
        self.registration
    }

    /// Waits until the simulator has stopped (its shutdown token was cancelled, or its listener
    /// failed).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await.context("the simulator's supervisor task failed")?
    }
}

/// Starts the simulator: binds, registers every host, starts the reports. Returns once all hosts
/// are registered; runs until `shutdown` is cancelled.
pub async fn run(config: SimConfig, shutdown: CancellationToken) -> anyhow::Result<SimHandle> {
    config.validate()?;
    // One connection pool for everything the simulator sends: registrations, reports and task
    // results, to every node of the zone.
    let http = api::http::client_builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(config.register_concurrency.max(reports::DEFAULT_REPORTS_IN_FLIGHT))
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    let session = Arc::new(
        ZoneSession::open_with(http.clone(), &config.zone_url, config.credentials.clone())
            .await
            .with_context(|| format!("cannot log in to the zone at {}", config.zone_url))?,
    );
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let local = listener.local_addr().context("the listener has no address")?;
    let agents_url = match &config.advertise_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let ip = if local.ip().is_unspecified() { "127.0.0.1".parse().expect("a valid IP") } else { local.ip() };
            format!("http://{}", SocketAddr::new(ip, local.port()))
        }
    };
    if config.control_token.is_none() && !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "the control endpoints are open to anyone who reaches this address; set a control token");
    }

    let behaviour = Behaviour { fail_rate: config.fail_rate, latency: config.latency, reporting: true };
    let hosts: Arc<[Arc<SimHost>]> = (0..config.hosts)
        .map(|i| {
            let name = host_name(&config.name_prefix, i);
            let agent_url = format!("{agents_url}/hosts/{name}");
            let mut profile = host_profile(config.profile, i);
            profile.capabilities.extend(config.capabilities.iter().map(|(k, v)| (k.clone(), v.clone())));
            Arc::new(SimHost::new(name, agent_url, profile, random_token(), behaviour))
        })
        .collect();
    let state = Arc::new(SimState {
        hosts: hosts.iter().map(|h| (h.name.clone(), h.clone())).collect(),
        by_url: hosts.iter().map(|h| (h.agent_url.clone(), h.clone())).collect(),
        http,
        control_token: config.control_token.clone(),
        work: TaskTracker::new(),
    });

    // Serve before registering: the zone may call an agent as soon as its host exists.
    let stop_http = shutdown.child_token();
    let app = routes::router(state.clone());
    let server = tokio::spawn({
        let stop = stop_http.clone();
        // TCP_NODELAY for the same reason as the node's own API (app.rs).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    tracing::info!(listen = %local, agents_url, hosts = config.hosts, profile = config.profile.as_str(),
        zone = %config.zone_url, "simulated agents listening");

    // Reports start now and skip the hosts not registered yet: with 100,000 hosts, the first
    // ones registered must not go silent (and down) while the last ones register.
    let stop_reports = shutdown.child_token();
    let reporter = tokio::spawn(reports::report_all(
        session.clone(),
        hosts.clone(),
        config.report_interval,
        reports::DEFAULT_REPORTS_IN_FLIGHT,
        stop_reports.clone(),
    ));

    let started = std::time::Instant::now();
    let registered = match register::register_all(&session, &hosts, config.register_concurrency).await {
        Ok(r) => r,
        Err(e) => {
            stop_reports.cancel();
            stop_http.cancel();
            let _ = reporter.await;
            let _ = server.await;
            return Err(e);
        }
    };
    let took = started.elapsed();
    tracing::info!(
        hosts = registered.len(),
        seconds = format!("{:.1}", took.as_secs_f64()),
        "simulated hosts registered"
    );

    let done = tokio::spawn(async move {
        let mut server = server;
        let early = tokio::select! {
            _ = shutdown.cancelled() => None,
            ended = &mut server => Some(ended),
        };
        // Asked, not seen first: a stop also ends the server (its token is a child of the stop's),
        // and the select above may see that end before the stop itself.
        let stopped_by_itself = !shutdown.is_cancelled();
        stop_reports.cancel();
        stop_http.cancel();
        let _ = reporter.await;
        let served = match early {
            Some(ended) => ended,
            None => server.await,
        };
        state.work.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, state.work.wait()).await.is_err() {
            tracing::warn!(left = state.work.len(), "stopping with task results still due");
        }
        tracing::info!("simulated agents stopped");
        match served {
            Ok(Ok(())) if !stopped_by_itself => Ok(()),
            Ok(Ok(())) => anyhow::bail!("the agents' HTTP server stopped by itself"),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the agents' HTTP server failed")),
            Err(e) => Err(anyhow::Error::new(e).context("the agents' HTTP server task failed")),
        }
    });
    Ok(SimHandle { agents_url, hosts: registered, registration: took, done })
}

/// Runs the simulator until SIGINT or SIGTERM (`zone-node agent-sim`), printing where its agents
/// listen once every host is registered.
pub async fn run_until_signal(config: SimConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let handle = run(config, shutdown.clone()).await?;
    // Scripts wait for this line (scripts/bench/scale.sh reads the time from it).
    println!(
        "agent-sim: {} hosts registered in {:.1} s; agents at {}/hosts/<name>",
        handle.hosts().len(),
        handle.registration_time().as_secs_f64(),
        handle.agents_url()
    );
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping the simulated agents");
        shutdown.cancel();
    });
    handle.wait().await
}

fn random_token() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    SecretString::from(hex::encode(bytes))
}
