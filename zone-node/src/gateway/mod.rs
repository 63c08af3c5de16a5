//! This zone's gateway: the `federation` crate wired to this node.
//!
//! - [`local`]: [`federation::LocalZone`] over the store and the instance service
//! - [`sync`]: every node's view of the children, rebuilt from the database ([`RegistrySync`]);
//!   the poll sink

pub mod local;
pub mod sync;

pub use sync::RegistrySync;

use std::sync::Arc;

use federation::poll::PollSettings;
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
    let sync = RegistrySync { store: store.clone(), bus: bus.clone(), gateway: gateway.clone(), secrets };
    (gateway, sync)
}

/// Starts the registry refresh and the poller.
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
    let sink = sync::Sink { sync: sync.clone(), cluster, failure_threshold: config.federation.failure_threshold };
    let gateway = sync.gateway.clone();
    vec![
        tokio::spawn(sync::run_refresh(sync, config.federation.poll_interval(), stop.clone())),
        tokio::spawn(federation::poll::run(gateway, Arc::new(sink), poll, stop)),
    ]
}
