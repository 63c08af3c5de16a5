//! Wires a node together: `Application::build` connects the store and the bus, registers the
//! node's services and joins the zone; `run_until_stopped` serves until SIGINT/SIGTERM (then
//! leaves the zone gracefully) or until peers evict this node.

use std::sync::Arc;

use anyhow::Context;
use api::bus::service;
use moka::future::Cache;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agent::client::Agents;
use crate::bus::Bus;
use crate::cluster::{Cluster, ClusterSettings, ResourceService};
use crate::config::Config;
use crate::http::{AppState, Shared};
use crate::redact::redact_url;
use crate::services::host::{HostService, Presence};
use crate::services::instance::InstanceService;
use crate::services::portal::Portal;
use crate::services::probe::Probe;
use crate::store::{AccountRow, Store};
use crate::workqueue::WorkQueues;

/// How the node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to stop (SIGINT/SIGTERM); left the zone gracefully.
    Shutdown,
    /// Peers evicted this node (it missed heartbeats): it must not serve again under this id.
    Evicted,
}

pub struct Application {
    state: AppState,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects, migrates, bootstraps the admin, registers services and joins the zone.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        // Before anything counts: counters bumped while no recorder is installed are lost.
        crate::http::health::prometheus();
        // Before any HTTP client is built: they take the extra roots when they are built.
        if let Some(ca) = &config.http.tls_ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {} (ZONE_TLS_CA_FILE)", ca.display()))?;
            let added = api::http::trust_roots(&pem)
                .map_err(|e| anyhow::anyhow!("{} (ZONE_TLS_CA_FILE): {e}", ca.display()))?;
            tracing::info!(file = %ca.display(), certificates = added, "trusting extra root certificates");
        }
        let tls = crate::http::server::tls_acceptor(&config.http).context("cannot set up TLS (ZONE_TLS_CERT_FILE)")?;
        let node_id = Uuid::new_v4();
        tracing::info!(
            node = %node_id,
            zone = %config.zone.name,
            database = %redact_url(config.database_url()),
            bus = %redact_url(config.bus.url.expose()),
            prefix = config.bus_prefix(),
            "starting node"
        );
        if config.database_url().starts_with("sqlite:") {
            // The data directory holds the database (password hashes, sealed child passwords) and
            // the secret key: only the node's own user may read it.
            crate::files::create_private_dir(&config.zone.data_dir)
                .with_context(|| format!("cannot create data directory {}", config.zone.data_dir.display()))?;
        }
        let store = Store::connect(config.database_url())
            .await
            .with_context(|| format!("cannot open the database {}", redact_url(config.database_url())))?;
        let zone = store.zone_identity(&config.zone.name).await.context("cannot read the zone's identity")?;
        bootstrap_admin(&store, &config).await?;

        let listener = TcpListener::bind(config.listen_addr())
            .await
            .with_context(|| format!("cannot listen on {} (ZONE_LISTEN)", config.zone.listen))?;

        let bus = Bus::connect(config.bus.url.expose(), config.bus_prefix(), node_id)
            .await
            .with_context(|| format!("cannot connect to the message bus {}", redact_url(config.bus.url.expose())))?;
        let work = WorkQueues::new();
        let settings = ClusterSettings {
            heartbeat_interval: config.heartbeat_interval(),
            dead_after: config.dead_after(),
            virtual_nodes: config.cluster.virtual_nodes,
        };
        let cluster =
            Cluster::new(store.clone(), bus.clone(), work.clone(), settings, node_id, config.api_url().to_owned());

        // Service queues first, then the row: peers route to this node as soon as they see it.
        let probe = ResourceService::new(
            service::PROBE,
            cluster.clone(),
            bus.clone(),
            work.clone(),
            Probe::new(store.clone(), node_id),
        );
        bus.serve(service::PROBE, Arc::new(probe)).await.context("cannot serve the probe service")?;
        let agents = Agents::new(config.api_url());
        let secrets = Arc::new(
            crate::secrets::SecretKey::load_from(
                config.federation.secret_key.as_ref(),
                config.federation.secret_key_file.as_deref(),
                &config.zone.data_dir,
            )
            .context("cannot load the secret key")?,
        );
        if !crate::agent::token::sealing(&secrets, store.backend()) {
            tracing::warn!("agent tokens are stored as given: this zone's nodes share PostgreSQL but no secret key (set ZONE_SECRET_KEY or ZONE_SECRET_KEY_FILE on every node)");
        }
        let instances = ResourceService::new(
            service::INSTANCE,
            cluster.clone(),
            bus.clone(),
            work.clone(),
            InstanceService::new(
                store.clone(),
                bus.clone(),
                cluster.clone(),
                agents.clone(),
                zone.clone(),
                config.agent_timeout(),
                secrets.clone(),
            ),
        );
        bus.serve(service::INSTANCE, Arc::new(instances)).await.context("cannot serve the instance service")?;
        let presence = Arc::new(Presence::new(config.host_report_interval(), config.hosts.max_missed_reports));
        let hosts = ResourceService::new(
            service::HOST,
            cluster.clone(),
            bus.clone(),
            work.clone(),
            HostService::new(store.clone(), bus.clone(), presence.clone()),
        );
        bus.serve(service::HOST, Arc::new(hosts)).await.context("cannot serve the host service")?;
        cluster.join().await.context("cannot join the zone")?;
        let portal = Portal::new(bus.clone(), cluster.clone(), zone.clone(), config.api_url().to_owned());
        bus.serve_portal(Arc::new(portal)).await.context("cannot join the api.portal queue")?;

        let (gateway, sync) = crate::gateway::build(&config, &store, &bus, &cluster, &zone, secrets.clone());
        // The children as last stored: the node serves at once, whatever state they are in.
        if let Err(e) = sync.refresh().await {
            tracing::warn!(error = %e, "cannot read the child zones yet; the refresh task retries");
        }

        let tokens =
            moka::sync::Cache::builder().time_to_live(crate::http::auth::TOKEN_CACHE_TTL).max_capacity(100_000).build();
        let state = AppState::new(Shared {
            config: Arc::new(config),
            store,
            bus,
            cluster,
            work,
            zone,
            tokens,
            host_credentials: Cache::builder()
                .time_to_live(crate::http::auth::HOST_CREDENTIAL_CACHE_TTL)
                .max_capacity(1_000_000)
                .build(),
            agents,
            gateway,
            sync,
            secrets,
            logins: crate::http::login_limit::LoginLimits::for_this_machine(),
            presence,
            lookup_answers: moka::sync::Cache::new(crate::http::clients::RENDERED_ANSWERS),
        });
        Ok(Application { state, listener, tls, shutdown: CancellationToken::new() })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A token that stops the node as SIGTERM would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until asked to stop or evicted.
    pub async fn run_until_stopped(self) -> anyhow::Result<Stopped> {
        let Application { state, listener, tls, shutdown } = self;
        let tasks = CancellationToken::new();
        let mut handles = state.cluster.spawn(tasks.clone());
        handles.push(tokio::spawn(purge_tokens(state.store.clone(), tasks.clone())));
        handles.push(tokio::spawn(forget_revoked_tokens(state.bus.clone(), state.tokens.clone(), tasks.clone())));
        handles.push(tokio::spawn(crate::services::instance::recover_orphans(
            state.store.clone(),
            state.bus.clone(),
            state.cluster.clone(),
            state.config.heartbeat_interval(),
            tasks.clone(),
        )));
        handles.push(tokio::spawn(crate::services::host::sweep_silent_hosts(
            state.store.clone(),
            state.bus.clone(),
            state.cluster.clone(),
            state.presence.clone(),
            state.config.host_report_interval(),
            state.config.hosts.max_missed_reports,
            tasks.clone(),
        )));

        handles.extend(crate::gateway::spawn(&state.config, state.sync.clone(), state.cluster.clone(), tasks.clone()));

        let evicted = state.cluster.evicted();
        let stop_http = CancellationToken::new();
        let reason = {
            let stop_http = stop_http.clone();
            let shutdown = shutdown.clone();
            let evicted = evicted.clone();
            let generation = state.sync.generation.clone();
            async move {
                let reason = tokio::select! {
                    _ = shutdown_signal() => Stopped::Shutdown,
                    _ = shutdown.cancelled() => Stopped::Shutdown,
                    _ = evicted.cancelled() => Stopped::Evicted,
                };
                stop_http.cancel();
                generation.close();
                reason
            }
        };
        let reason = tokio::spawn(reason);
        // The worker count (ZONE_WORKER_THREADS, else one per core) is said, as it sets the tail.
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(addr = %listener.local_addr()?, api_url = state.config.api_url(), workers, "serving the API");
        let app = crate::http::router(state.clone());
        // The header-read timeout, connection cap and client address: see `http::server`.
        crate::http::server::serve(listener, app, state.clone(), &state.config.http, tls, stop_http).await;
        let reason = reason.await.unwrap_or(Stopped::Shutdown);
        if reason == Stopped::Shutdown {
            state.cluster.leave().await;
        }
        tasks.cancel();
        for handle in handles {
            let _ = handle.await;
        }
        state.bus.close().await;
        state.store.close().await;
        tracing::info!(?reason, "node stopped");
        Ok(reason)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Creates the bootstrap admin on first start. With no configured password one is generated and
/// printed once to standard output (never to the log).
async fn bootstrap_admin(store: &Store, config: &Config) -> anyhow::Result<()> {
    let username = config.admin.username.clone();
    if store.account_get(&username).await?.is_some() {
        return Ok(());
    }
    let (password, generated) = match &config.admin.password {
        Some(p) => (p.expose().to_owned(), false),
        None => (crate::auth::generate_password(), true),
    };
    let to_hash = password.clone();
    let password_hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&to_hash)).await?;
    let row = AccountRow {
        username: username.clone(),
        password_hash,
        role: "admin".into(),
        client_id: None,
        client_ids: None,
        created_at_ms: 0,
    };
    if store.account_create_if_absent(&row).await? {
        tracing::info!(username = %username, "created the bootstrap admin");
        if generated {
            println!("bootstrap admin created: username {username} password {password}");
            println!("(shown once; set ZONE_ADMIN_PASSWORD to choose it yourself)");
        }
    }
    Ok(())
}

/// Drops the verified-token cache when any node revoked tokens (`auth.tokens_revoked`), so a
/// revoked token is refused here at once rather than when its cache entry expires. A lagging
/// subscription drops it too: a missed revocation must not keep a token alive.
async fn forget_revoked_tokens(
    bus: Bus,
    tokens: moka::sync::Cache<String, crate::store::TokenRow>,
    stop: CancellationToken,
) {
    use api::bus::BusEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut events = bus.subscribe();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) if event.kind == api::bus::TokensRevoked::KIND => tokens.invalidate_all(),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => tokens.invalidate_all(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Deletes expired tokens now and then, so the table does not grow without bound.
async fn purge_tokens(store: Store, stop: CancellationToken) {
    let every = std::time::Duration::from_secs(300);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.tokens_purge_expired().await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "purged expired tokens"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "purging expired tokens failed"),
        }
    }
}
