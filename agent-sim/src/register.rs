//! Registering the simulated hosts with the zone: many at once, a bounded number in flight.
//!
//! A zone of 100,000 hosts must have them all registered within minutes, so registrations run
//! concurrently (`--register-concurrency`, [`DEFAULT_REGISTER_CONCURRENCY`] by default): one at a
//! time, each costs a round trip and a database commit on the node, and the node sits idle
//! between them. The bound keeps a simulator from opening thousands of connections to one node
//! at once; what finishes first frees its slot first (one slow registration never holds the
//! others back). A registration the zone could not take just then (it was unreachable, or
//! answered 5xx or 429) is tried again, [`REGISTER_ATTEMPTS`] times in all.
//!
//! A name the zone already holds (a restarted simulator) is taken over: its agent URL, token and
//! capabilities become this simulator's (`PUT /v1/hosts/{id}`). The zone's hosts are listed once,
//! a page at a time, the first time a name turns out to be taken.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::{ClientError, ErrorCode, HostEnroll, HostRegister, HostUpdate};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::host::SimHost;
use crate::session::ZoneSession;
use crate::SimHostInfo;

/// Registrations in flight at once unless `--register-concurrency` says otherwise: enough to keep
/// a node's database busy between round trips, few enough to stay well inside its connection and
/// request limits.
pub const DEFAULT_REGISTER_CONCURRENCY: usize = 64;
/// Most registrations in flight at once that the simulator accepts.
pub const MAX_REGISTER_CONCURRENCY: usize = 1024;
/// How often one registration is tried when the zone cannot take it just then.
pub const REGISTER_ATTEMPTS: u32 = 5;
/// Wait before the second attempt; doubled for each further one.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// How often progress is logged while hosts register.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Hosts per page when listing the zone's hosts (the API's largest page).
const LIST_PAGE: usize = 1000;

/// The zone's hosts by name, as last listed (`None` before the first conflict).
type Known = Mutex<Option<HashMap<String, api::Host>>>;

/// Registers every host, `concurrency` at a time, and returns them in the order given. Fails on
/// the first host the zone refuses (after retries for what may pass).
pub async fn register_all(
    session: &ZoneSession,
    hosts: &[std::sync::Arc<SimHost>],
    concurrency: usize,
) -> anyhow::Result<Vec<SimHostInfo>> {
    let known: Known = Mutex::new(None);
    let started = Instant::now();
    let mut last_log = started;
    let mut results: Vec<(usize, SimHostInfo)> = Vec::with_capacity(hosts.len());
    let mut stream = futures::stream::iter(hosts.iter().enumerate())
        .map(|(i, host)| {
            let known = &known;
            async move {
                let id = register_retrying(session, host, known).await?;
                Ok::<_, anyhow::Error>((
                    i,
                    SimHostInfo { name: host.name.clone(), host_id: id, agent_url: host.agent_url.clone() },
                ))
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = stream.next().await {
        results.push(result?);
        if last_log.elapsed() >= PROGRESS_EVERY {
            last_log = Instant::now();
            let n = results.len();
            let per_second = n as f64 / started.elapsed().as_secs_f64();
            tracing::info!(
                registered = n,
                hosts = hosts.len(),
                per_second = format!("{per_second:.0}"),
                "registering hosts"
            );
        }
    }
    results.sort_unstable_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, info)| info).collect())
}

/// True when the zone may take the same request a moment later: it was not reached, or it
/// answered that it is overloaded or unavailable.
fn may_pass_later(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Transport { .. }) => true,
        Some(c) => c.status().is_some_and(|s| s >= 500 || s == 429),
        None => false,
    }
}

async fn register_retrying(session: &ZoneSession, host: &SimHost, known: &Known) -> anyhow::Result<String> {
    let mut delay = RETRY_DELAY;
    let mut attempt = 1;
    loop {
        match register(session, host, Some(known)).await {
            Err(e) if attempt < REGISTER_ATTEMPTS && may_pass_later(&e) => {
                tracing::debug!(host = %host.name, attempt, error = format!("{e:#}"), "registration failed; retrying");
            }
            outcome => return outcome,
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

/// Registers one host, or takes over the registered host of that name (a restarted simulator):
/// its agent URL, agent token and capabilities become this simulator's. Returns its id.
/// `known` caches the zone's hosts across calls; `None` lists them afresh.
pub async fn register(session: &ZoneSession, host: &SimHost, known: Option<&Known>) -> anyhow::Result<String> {
    if let Some(token) = session.enrollment_token() {
        return enroll(session, host, token).await;
    }
    let capabilities = host.capabilities();
    let req = HostRegister {
        name: host.name.clone(),
        agent_url: host.agent_url.clone(),
        capabilities: capabilities.clone(),
        resources: host.profile.resources,
        agent_token: Some(host.agent_token.expose_secret().to_owned()),
    };
    let id = match session
        .call(|c| {
            let req = &req;
            async move { c.host_register(req).await }
        })
        .await
    {
        Ok(created) => created.id,
        Err(e) if e.code() == Some(ErrorCode::Conflict) => {
            let old = registered(session, &host.name, known).await?;
            if old.resources != host.profile.resources {
                tracing::warn!(host = %host.name, registered = ?old.resources, profile = ?host.profile.resources,
                    "the registered capacity differs from the profile's and cannot be changed through the API");
            }
            let update = HostUpdate {
                agent_url: Some(host.agent_url.clone()),
                agent_token: Some(host.agent_token.expose_secret().to_owned()),
                capabilities: Some(capabilities.clone()),
            };
            let id = old.id.clone();
            session
                .call(|c| {
                    let (id, update) = (&id, &update);
                    async move { c.host_update(id, update).await }
                })
                .await
                .map_err(anyhow::Error::new)
                .with_context(|| format!("cannot take over host {}", host.name))?;
            tracing::info!(host = %host.name, id = %old.id, "took over the registered host");
            id
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot register host {}", host.name))),
    };
    host.set_host_id(id.clone());
    host.reported(&capabilities);
    Ok(id)
}

/// Registers one host with the enrollment token and keeps the credential the zone gives it. A
/// host of that name registered already cannot be taken over this way (that needs an account).
async fn enroll(session: &ZoneSession, host: &SimHost, token: &SecretString) -> anyhow::Result<String> {
    let capabilities = host.capabilities();
    let req = HostEnroll {
        enrollment_token: token.expose_secret().to_owned(),
        name: host.name.clone(),
        agent_url: host.agent_url.clone(),
        capabilities: capabilities.clone(),
        resources: host.profile.resources,
        agent_token: Some(host.agent_token.expose_secret().to_owned()),
    };
    let enrolled = session
        .call(|c| {
            let req = &req;
            async move { c.host_enroll(req).await }
        })
        .await
        .map_err(|e| {
            let hint = match e.code() {
                Some(ErrorCode::Conflict) => {
                    "; a host of that name is registered already (delete it, or use another --name-prefix)"
                }
                Some(ErrorCode::InvalidToken) => "; the enrollment token is unknown, expired or used up",
                _ => "",
            };
            anyhow::Error::new(e).context(format!("cannot enroll host {}{hint}", host.name))
        })?;
    host.set_credential(SecretString::from(enrolled.credential));
    host.set_host_id(enrolled.host.id.clone());
    host.reported(&capabilities);
    Ok(enrolled.host.id)
}

/// The zone's host named `name`, from the cached list when it has it, else from a fresh one
/// (a host registered after the list was read: a retried registration that had gone through).
async fn registered(session: &ZoneSession, name: &str, known: Option<&Known>) -> anyhow::Result<api::Host> {
    let Some(known) = known else {
        let mut fresh = list_hosts(session).await?;
        return fresh
            .remove(name)
            .with_context(|| format!("host {name} is said to exist but the zone does not list it"));
    };
    let mut cache = known.lock().await;
    if let Some(host) = cache.as_ref().and_then(|hosts| hosts.get(name)) {
        return Ok(host.clone());
    }
    let fresh = list_hosts(session).await?;
    let host = fresh.get(name).cloned();
    *cache = Some(fresh);
    host.with_context(|| format!("host {name} is said to exist but the zone does not list it"))
}

/// Every host of the zone (and of the zones below it) by name, a page at a time.
pub async fn list_hosts(session: &ZoneSession) -> anyhow::Result<HashMap<String, api::Host>> {
    let mut hosts = HashMap::new();
    let mut marker: Option<String> = None;
    loop {
        let query = match &marker {
            None => format!("limit={LIST_PAGE}"),
            Some(m) => format!("limit={LIST_PAGE}&marker={m}"),
        };
        let page = session
            .call(|c| {
                let query = &query;
                async move { c.hosts_page(query).await }
            })
            .await
            .context("cannot list the zone's hosts")?;
        hosts.extend(page.hosts.into_iter().map(|h| (h.name.clone(), h)));
        match page.next_marker {
            Some(next) if marker.as_deref() != Some(next.as_str()) => marker = Some(next),
            _ => return Ok(hosts),
        }
    }
}
