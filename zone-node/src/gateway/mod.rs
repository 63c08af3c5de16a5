//! This zone's gateway: the `federation` crate wired to this node.
//!
//! - [`local`]: [`federation::LocalZone`] over the store and the instance service
//! - [`sync`]: every node's view of the children, rebuilt from the database ([`RegistrySync`]);
//!   the poll sink
//! - [`generation`]: this zone's generation as the parents' watches wait on it

pub mod generation;
pub mod local;
pub mod sync;

pub use generation::Generation;
pub use sync::RegistrySync;

use std::sync::Arc;

use federation::poll::{PollSettings, Poller};
use federation::watch::WatchSettings;
use federation::{Gateway, Identity, RestTransport, Settings};
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::secrets::SecretKey;
use crate::store::{Store, ZoneRow};

/// The gateway of this node, and what keeps its view current.
pub fn build(
    config: &Config,
    store: &Store,
    bus: &Bus,
    cluster: &Cluster,
    zone: &ZoneRow,
    secrets: Arc<SecretKey>,
) -> (Arc<Gateway>, RegistrySync) {
    let local = local::NodeZone {
        store: store.clone(),
        bus: bus.clone(),
        cluster: cluster.clone(),
        zone: zone.clone(),
        agent_timeout: config.agent_timeout(),
    };
    let me = Identity { id: zone.id.to_string(), name: zone.name.clone(), api_url: config.api_url().to_owned() };
    let f = &config.federation;
    let settings = Settings {
        hop_limit: f.hop_limit,
        forward_timeout: config.federation.forward_timeout(),
        scatter_deadline: config.federation.scatter_deadline(),
        lookup_cache_capacity: f.lookup_cache_capacity,
        route_cache_capacity: f.lookup_cache_capacity,
    };
    let gateway = Arc::new(Gateway::new(me, settings, Arc::new(RestTransport::new()), Arc::new(local)));
    let sync = RegistrySync {
        store: store.clone(),
        bus: bus.clone(),
        gateway: gateway.clone(),
        secrets,
        generation: Generation::new(0),
    };
    (gateway, sync)
}

/// Starts the registry refresh, the generation watch, the poller and the watches of the children,
/// and the reconciliation of creates cut off at children (after the forward timeout: a child frozen
/// mid-create finishes it when it resumes).
pub fn spawn(
    config: &Config,
    sync: RegistrySync,
    cluster: Cluster,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let poll = PollSettings {
        interval: config.federation.poll_interval(),
        timeout: config.federation.poll_timeout(),
        jitter: config.federation.poll_jitter(),
        max_concurrent: config.federation.max_concurrent_polls,
    };
    let watch = WatchSettings { wait: config.federation.watch_wait(), retry: config.federation.watch_retry() };
    let sink = sync::Sink { sync: sync.clone(), cluster, failure_threshold: config.federation.failure_threshold };
    let poller = Arc::new(Poller::new(sync.gateway.clone(), Arc::new(sink), poll.timeout));
    let gateway = sync.gateway.clone();
    vec![
        tokio::spawn(generation::run(sync.store.clone(), sync.bus.clone(), sync.generation.clone(), stop.clone())),
        tokio::spawn(sync::run_refresh(sync, config.federation.poll_interval(), stop.clone())),
        tokio::spawn(federation::reconcile::run(gateway, config.federation.forward_timeout(), stop.clone())),
        tokio::spawn(federation::poll::run(poller.clone(), poll, stop.clone())),
        tokio::spawn(federation::watch::run(poller, watch, stop)),
    ]
}
